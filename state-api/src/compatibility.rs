//! Compatibility of a restored state with the descriptor that registers it, resolved as
//! Flink resolves `TypeSerializerSnapshot`s: compatible as is, compatible after a
//! migration, or incompatible (a typed error at registration, never garbage at first read).

use crate::error::{Result, StateError};
use crate::migration::{Migration, Migrations};
use crate::schema::Schema;
use crate::state::{StateMeta, TtlMeta};

/// What registering a restored state needs.
#[derive(Debug, Clone, Copy)]
pub enum Resolution<'m> {
    /// The stored values read as they are.
    AsIs,
    /// Every stored value must go through this migration first.
    Migrate(&'m Migration),
}

/// Whether values stored as (`existing`, named `existing_name`) read as
/// (`requested`, `requested_name`): structurally when both schemas are structural, by
/// equality for declared schemas, and by type name when either side is only known by
/// name (snapshots of format version 1, untraceable types).
pub fn reads_as(existing: &Schema, existing_name: &str, requested: &Schema, requested_name: &str) -> bool {
    match (existing, requested) {
        (Schema::Opaque { .. }, _) | (_, Schema::Opaque { .. }) => existing_name == requested_name,
        (Schema::Declared { .. }, _) | (_, Schema::Declared { .. }) => existing == requested,
        _ => existing.reads_as(requested),
    }
}

fn mismatch(name: &str, role: &'static str, existing: &Schema, requested: &Schema) -> StateError {
    StateError::IncompatibleSchema {
        name: name.to_string(),
        role,
        existing: existing.to_string(),
        requested: requested.to_string(),
    }
}

/// Checks that a backend's key type reads the keys of a snapshot.
pub fn check_key(existing: (&str, &Schema), requested: (&str, &Schema)) -> Result<()> {
    if reads_as(existing.1, existing.0, requested.1, requested.0) {
        Ok(())
    } else {
        Err(mismatch("<key>", "key", existing.1, requested.1))
    }
}

impl StateMeta {
    /// Resolves registering `requested` (from a descriptor, with its `migrations`) on
    /// state recorded as `self`. Kind, TTL, namespace and user key must read as they are;
    /// the value may need one of `migrations`.
    pub fn resolve<'m>(&self, requested: &StateMeta, migrations: &'m Migrations) -> Result<Resolution<'m>> {
        migrations.check(&requested.name)?;
        if self.kind != requested.kind {
            return Err(StateError::KindMismatch {
                name: self.name.clone(),
                existing: self.kind,
                requested: requested.kind,
            });
        }
        let on_off = |t: &Option<TtlMeta>| if t.is_some() { "enabled" } else { "disabled" };
        if self.ttl.is_some() != requested.ttl.is_some() {
            return Err(StateError::IncompatibleTtl {
                name: self.name.clone(),
                existing: on_off(&self.ttl),
                requested: on_off(&requested.ttl),
            });
        }
        if !reads_as(
            &self.namespace_schema,
            &self.namespace_type,
            &requested.namespace_schema,
            &requested.namespace_type,
        ) {
            return Err(mismatch(
                &self.name,
                "namespace",
                &self.namespace_schema,
                &requested.namespace_schema,
            ));
        }
        let user_keys_read = match (&self.user_key_schema, &requested.user_key_schema) {
            (Some(e), Some(r)) => reads_as(
                e,
                self.user_key_type.as_deref().unwrap_or_default(),
                r,
                requested.user_key_type.as_deref().unwrap_or_default(),
            ),
            (None, None) => true,
            _ => false,
        };
        if !user_keys_read {
            let none = Schema::Unit;
            return Err(mismatch(
                &self.name,
                "user key",
                self.user_key_schema.as_ref().unwrap_or(&none),
                requested.user_key_schema.as_ref().unwrap_or(&none),
            ));
        }
        if reads_as(
            &self.value_schema,
            &self.value_type,
            &requested.value_schema,
            &requested.value_type,
        ) {
            return Ok(Resolution::AsIs);
        }
        migrations
            .iter()
            .find(|m| reads_as(&self.value_schema, &self.value_type, m.from_schema(), m.from_type()))
            .map(Resolution::Migrate)
            .ok_or_else(|| mismatch(&self.name, "value", &self.value_schema, &requested.value_schema))
    }

    /// Checks that `requested` reads state recorded as `self` as it is (no migration):
    /// registering a state twice, or restoring one state from several snapshots.
    pub fn check_compatible(&self, requested: &StateMeta) -> Result<()> {
        match self.resolve(requested, Migrations::none())? {
            Resolution::AsIs => Ok(()),
            Resolution::Migrate(_) => Err(mismatch(
                &self.name,
                "value",
                &self.value_schema,
                &requested.value_schema,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{StateKind, VoidNamespace};

    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct Old {
        a: u32,
    }
    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct New {
        a: u64,
    }

    #[test]
    fn resolution_is_as_is_migrate_or_a_typed_error() {
        let old = StateMeta::of::<VoidNamespace, Old>("s", StateKind::Value, None);
        let new = StateMeta::of::<VoidNamespace, New>("s", StateKind::Value, None);
        assert!(matches!(old.resolve(&old, Migrations::none()), Ok(Resolution::AsIs)));
        let err = old.resolve(&new, Migrations::none()).unwrap_err();
        assert!(
            matches!(&err, StateError::IncompatibleSchema { role: "value", existing, requested, .. }
                if existing == "struct { a: u32 }" && requested == "struct { a: u64 }"),
            "{err}"
        );
        let mut m = Migrations::default();
        m.add(crate::Schema::of::<Old>(), |o: Old| New { a: u64::from(o.a) });
        let Ok(Resolution::Migrate(mig)) = old.resolve(&new, &m) else {
            panic!("expected a migration")
        };
        let bytes = mig.convert(&postcard::to_stdvec(&Old { a: 7 }).unwrap(), "s").unwrap();
        assert_eq!(postcard::from_bytes::<u64>(&bytes).unwrap(), 7);
        assert!(old.check_compatible(&new).is_err(), "no migration without migrations");
    }

    #[test]
    fn name_only_schemas_compare_names() {
        let mut v1 = StateMeta::of::<VoidNamespace, u64>("s", StateKind::Value, None);
        v1.value_schema = Schema::Opaque {
            type_name: "u64".into(),
        };
        let now = StateMeta::of::<VoidNamespace, u64>("s", StateKind::Value, None);
        assert!(v1.check_compatible(&now).is_ok());
        let other = StateMeta::of::<VoidNamespace, u32>("s", StateKind::Value, None);
        assert!(v1.check_compatible(&other).is_err());
    }
}
