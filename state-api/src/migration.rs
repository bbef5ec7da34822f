//! Migrations of a state's value type: how values written with an older type become
//! values of the type a descriptor registers now.
//!
//! A descriptor carries them (`with_migration`, `with_migration_from`,
//! `with_migration_via`); a backend restoring the state applies the one whose source
//! schema is the snapshot's, to every stored value, when the state is registered. The
//! next snapshot then holds the new schema only.
//!
//! ```
//! use state_api::ValueStateDescriptor;
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct PriceV1 { cents: u64 }
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct PriceV2 { cents: u64, currency: String }
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct Price { amount: i64, currency: String }
//!
//! // A chain: v1 -> v2 -> current. A v1 snapshot goes through both functions.
//! let price = ValueStateDescriptor::<Price>::new("price")
//!     .with_migration(|v2: PriceV2| Price { amount: v2.cents as i64, currency: v2.currency })
//!     .with_migration_via(|v1: PriceV1| PriceV2 { cents: v1.cents, currency: "EUR".into() });
//! assert_eq!(price.migrations().len(), 2);
//! ```

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Result, StateError};
use crate::schema::Schema;
use crate::state::type_name_of;

type Convert = Arc<dyn Fn(&[u8], &str) -> Result<Vec<u8>> + Send + Sync>;

/// One migration: from values of an older type (known by its schema and type name) to
/// the canonical bytes of the current type.
#[derive(Clone)]
pub struct Migration {
    from_type: String,
    from_schema: Schema,
    convert: Convert,
}

impl fmt::Debug for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migration")
            .field("from_type", &self.from_type)
            .field("from_schema", &self.from_schema.to_string())
            .finish()
    }
}

impl Migration {
    /// A migration from values of `Old` (recognised by its traced schema) to `New` by
    /// `f`, for tools that convert stored state outside a descriptor (savepoint
    /// transformations); descriptors build theirs with `with_migration`.
    pub fn new<Old, New>(f: impl Fn(Old) -> New + Send + Sync + 'static) -> Migration
    where
        Old: DeserializeOwned + 'static,
        New: Serialize + 'static,
    {
        let mut m = Migrations::default();
        m.add(Schema::of::<Old>(), f);
        m.list.remove(0)
    }

    /// The type name of the older type.
    pub fn from_type(&self) -> &str {
        &self.from_type
    }

    /// The schema of the older type.
    pub fn from_schema(&self) -> &Schema {
        &self.from_schema
    }

    /// Converts one value's canonical bytes of the older type into the current type's.
    /// `state` names the state in errors.
    pub fn convert(&self, old: &[u8], state: &str) -> Result<Vec<u8>> {
        (self.convert)(old, state)
    }
}

/// The migrations of one descriptor's value type.
#[derive(Debug, Clone, Default)]
pub struct Migrations {
    list: Vec<Migration>,
    /// A misuse found while building (reported at registration).
    error: Option<String>,
}

impl Migrations {
    /// No migrations.
    pub fn none() -> &'static Migrations {
        static NONE: Migrations = Migrations {
            list: Vec::new(),
            error: None,
        };
        &NONE
    }

    /// The migrations, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &Migration> {
        self.list.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Fails if the descriptor's migrations were built wrongly (a `with_migration_via`
    /// whose intermediate type has no migration).
    pub fn check(&self, state: &str) -> Result<()> {
        match &self.error {
            Some(e) => Err(StateError::InvalidArgument(format!("state `{state}`: {e}"))),
            None => Ok(()),
        }
    }

    /// Adds a migration from `Old` (schema `from_schema`) to `New` by `f`.
    pub(crate) fn add<Old, New>(&mut self, from_schema: Schema, f: impl Fn(Old) -> New + Send + Sync + 'static)
    where
        Old: DeserializeOwned + 'static,
        New: Serialize + 'static,
    {
        let convert: Convert = Arc::new(move |bytes, state| {
            let old: Old = postcard::from_bytes(bytes)
                .map_err(|e| StateError::serialization(state.to_string(), "value (migrating the old type)", e))?;
            postcard::to_stdvec(&f(old))
                .map_err(|e| StateError::serialization(state.to_string(), "value (migrated)", e))
        });
        self.list.push(Migration {
            from_type: type_name_of::<Old>(),
            from_schema,
            convert,
        });
    }

    /// Adds a migration from `Old` to `Mid` followed by the existing migration from `Mid`.
    pub(crate) fn add_via<Old, Mid>(&mut self, f: impl Fn(Old) -> Mid + Send + Sync + 'static)
    where
        Old: DeserializeOwned + 'static,
        Mid: Serialize + DeserializeOwned + 'static,
    {
        let mid_schema = Schema::of::<Mid>();
        let mid_type = type_name_of::<Mid>();
        let Some(next) = self
            .list
            .iter()
            .find(|m| m.from_schema == mid_schema && (mid_schema.is_structural() || m.from_type == mid_type))
            .cloned()
        else {
            self.error = Some(format!(
                "`with_migration_via` from `{}` goes through `{mid_type}`, which has no migration yet \
                 (add the migration from `{mid_type}` first)",
                type_name_of::<Old>()
            ));
            return;
        };
        let convert: Convert = Arc::new(move |bytes, state| {
            let old: Old = postcard::from_bytes(bytes)
                .map_err(|e| StateError::serialization(state.to_string(), "value (migrating the old type)", e))?;
            let mid = postcard::to_stdvec(&f(old))
                .map_err(|e| StateError::serialization(state.to_string(), "value (migrated)", e))?;
            next.convert(&mid, state)
        });
        self.list.push(Migration {
            from_type: type_name_of::<Old>(),
            from_schema: Schema::of::<Old>(),
            convert,
        });
    }
}
