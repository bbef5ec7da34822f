//! What can be stored as state: the bounds on keys, namespaces and values, the state
//! kinds, the type names recorded in snapshots, and the per-state metadata.

use std::fmt::Debug;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::schema::Schema;

/// A value that can live in state: serde-serializable (postcard is the canonical
/// encoding), cloneable and shareable with the asynchronous snapshot thread.
pub trait StateValue: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> StateValue for T {}

/// A key of keyed state or of a map state: a [`StateValue`] that can be hashed and compared.
pub trait StateKey: StateValue + Eq + Hash + Debug {}
impl<T: StateValue + Eq + Hash + Debug> StateKey for T {}

/// A namespace (a window, for example). Non-windowed state uses [`VoidNamespace`].
pub trait Namespace: StateKey {}
impl<T: StateKey> Namespace for T {}

/// The namespace of state that is not scoped to a window. Serializes to zero bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VoidNamespace;

/// The kinds of keyed state (Flink's `StateDescriptor.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateKind {
    /// One value per key and namespace.
    Value,
    /// A list of values per key and namespace.
    List,
    /// A map per key and namespace.
    Map,
    /// One value, combined on `add` by a reduce function.
    Reducing,
    /// One accumulator, combined on `add` by an aggregate function.
    Aggregating,
}

impl StateKind {
    /// How a backend stores this kind: one value, a list, or a map.
    pub fn shape(self) -> StateShape {
        match self {
            StateKind::Value | StateKind::Reducing | StateKind::Aggregating => StateShape::Value,
            StateKind::List => StateShape::List,
            StateKind::Map => StateShape::Map,
        }
    }
}

/// How a state is laid out by a backend and in the canonical format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateShape {
    /// One value per (key, namespace).
    Value,
    /// A list per (key, namespace).
    List,
    /// A map per (key, namespace).
    Map,
}

/// The type name recorded for `T` unless a descriptor pins another with `with_type_name`.
pub fn type_name_of<T: ?Sized>() -> String {
    std::any::type_name::<T>().to_string()
}

/// The TTL part of a state's metadata as recorded in snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlMeta {
    /// Time to live in milliseconds.
    pub ttl_millis: u64,
}

impl From<&crate::ttl::TtlConfig> for TtlMeta {
    /// What a snapshot records of a TTL configuration (a negative TTL as 0).
    fn from(ttl: &crate::ttl::TtlConfig) -> Self {
        TtlMeta {
            ttl_millis: ttl.ttl_millis().max(0) as u64,
        }
    }
}

/// What a snapshot records about a keyed state: enough to refuse a restore with
/// incompatible types instead of decoding garbage, and to pick a migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMeta {
    /// The state name, unique per backend.
    pub name: String,
    /// The state kind.
    pub kind: StateKind,
    /// Type name of the namespace.
    pub namespace_type: String,
    /// Type name of the user key (map state only).
    pub user_key_type: Option<String>,
    /// Type name of the value: the value, the list element, the map value or the accumulator.
    pub value_type: String,
    /// TTL, when the state has one: timestamps are then stored with every value.
    pub ttl: Option<TtlMeta>,
    /// Schema of the namespace.
    pub namespace_schema: Schema,
    /// Schema of the user key (map state only).
    pub user_key_schema: Option<Schema>,
    /// Schema of the value (as [`Self::value_type`]).
    pub value_schema: Schema,
}

impl StateMeta {
    /// Metadata of a state whose types are named and traced from `N`, `V` and `UK`.
    pub fn of<N: Namespace, V: StateValue>(name: &str, kind: StateKind, user_key: Option<(String, Schema)>) -> Self {
        let (user_key_type, user_key_schema) = match user_key {
            Some((t, s)) => (Some(t), Some(s)),
            None => (None, None),
        };
        StateMeta {
            name: name.to_string(),
            kind,
            namespace_type: type_name_of::<N>(),
            user_key_type,
            value_type: type_name_of::<V>(),
            ttl: None,
            namespace_schema: Schema::of::<N>(),
            user_key_schema,
            value_schema: Schema::of::<V>(),
        }
    }
}

/// Identifies a registered state within one backend. Obtained from a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId(pub u32);

/// A value with the time it was last written (or read, depending on the TTL update
/// type), as Flink's `TtlValue`. Backends store every value in this form; for states
/// without TTL the timestamp is 0 and is not written to snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlValue<T> {
    /// The user's value.
    pub value: T,
    /// Last access time in milliseconds (0 when the state has no TTL).
    pub timestamp: i64,
}

impl<T> TtlValue<T> {
    /// A value stamped with `timestamp`.
    pub fn new(value: T, timestamp: i64) -> Self {
        TtlValue { value, timestamp }
    }
}
