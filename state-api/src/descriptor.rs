//! State descriptors (what a state is called and holds) and the typed handles that
//! registering one returns.
//!
//! ```
//! use std::time::Duration;
//! use state_api::{ListStateDescriptor, MapStateDescriptor, TtlConfig, ValueStateDescriptor};
//!
//! #[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
//! struct Window { start: i64, end: i64 }
//!
//! let count = ValueStateDescriptor::<u64>::new("count").with_default(0);
//! let recent = ListStateDescriptor::<String>::new("recent").with_ttl(TtlConfig::new(Duration::from_secs(60)));
//! let per_window = MapStateDescriptor::<u64, u64>::new("bids").in_namespace::<Window>();
//! assert_eq!(per_window.name(), "bids");
//! # let _ = (count, recent);
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::migration::Migrations;
use crate::raw::RawKeyedBackend;
use crate::schema::Schema;
use crate::state::{
    Namespace, StateId, StateKey, StateKind, StateMeta, StateValue, TtlMeta, VoidNamespace, type_name_of,
};
use crate::ttl::TtlConfig;

/// A description of a keyed state that a backend can register.
pub trait StateDescriptor {
    /// The typed handle that registration returns.
    type Handle;
    /// Registers the state on `backend` (called by
    /// [`KeyedStateBackend::register`](crate::KeyedStateBackend::register)).
    fn register_in<B: RawKeyedBackend>(self, backend: &mut B) -> Result<Self::Handle>;
}

/// What every registered-state handle offers.
pub trait RegisteredState {
    /// The namespace type of the state.
    type Namespace: Namespace;
    /// The state's id within its backend.
    fn id(&self) -> StateId;
    /// The state's metadata.
    fn meta(&self) -> &StateMeta;
    /// The state's TTL, if any.
    fn ttl(&self) -> Option<&TtlConfig>;
}

/// Fields every descriptor has.
#[derive(Debug, Clone)]
struct Common {
    meta: StateMeta,
    ttl: Option<TtlConfig>,
    migrations: Migrations,
}

impl Common {
    fn new<V: StateValue>(name: &str, kind: StateKind, user_key: Option<(String, Schema)>) -> Self {
        Common {
            meta: StateMeta::of::<VoidNamespace, V>(name, kind, user_key),
            ttl: None,
            migrations: Migrations::default(),
        }
    }

    fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.meta.ttl = Some(TtlMeta::from(&ttl));
        self.ttl = Some(ttl);
        self
    }

    fn in_namespace<N2: Namespace>(mut self) -> Self {
        self.meta.namespace_type = type_name_of::<N2>();
        self.meta.namespace_schema = Schema::of::<N2>();
        self
    }
}

macro_rules! descriptor_common {
    ($v:ident) => {
        /// The state name.
        pub fn name(&self) -> &str {
            &self.common.meta.name
        }

        /// Gives the state a time-to-live.
        pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
            self.common = self.common.with_ttl(ttl);
            self
        }

        /// Pins the value type's recorded name (by default `std::any::type_name`). Restores
        /// compare names only where a schema is known by name alone: snapshots of format
        /// version 1, and types whose structure cannot be traced ([`Schema::Opaque`]).
        pub fn with_type_name(mut self, name: impl Into<String>) -> Self {
            let name = name.into();
            if let Schema::Opaque { type_name } = &mut self.common.meta.value_schema {
                *type_name = name.clone();
            }
            self.common.meta.value_type = name;
            self
        }

        /// Pins the namespace type's recorded name (see [`Self::with_type_name`]).
        pub fn with_namespace_type_name(mut self, name: impl Into<String>) -> Self {
            let name = name.into();
            if let Schema::Opaque { type_name } = &mut self.common.meta.namespace_schema {
                *type_name = name.clone();
            }
            self.common.meta.namespace_type = name;
            self
        }

        /// Declares the value type's schema instead of tracing it (for a type that cannot
        /// be traced, or to manage compatibility by hand): typically
        /// [`Schema::declared`]`("my.Type", version)`, with the version bumped whenever
        /// the type's encoding changes and a [`Self::with_migration_from`] from the older one.
        pub fn with_value_schema(mut self, schema: Schema) -> Self {
            self.common.meta.value_schema = schema;
            self
        }

        /// Declares the namespace type's schema (see [`Self::with_value_schema`]).
        pub fn with_namespace_schema(mut self, schema: Schema) -> Self {
            self.common.meta.namespace_schema = schema;
            self
        }

        /// Converts values stored as `Old` (recognised by `Old`'s traced schema) into the
        /// current type with `f` when a restored state is registered.
        pub fn with_migration<Old: DeserializeOwned + 'static>(
            mut self,
            f: impl Fn(Old) -> $v + Send + Sync + 'static,
        ) -> Self {
            self.common.migrations.add(Schema::of::<Old>(), f);
            self
        }

        /// As [`Self::with_migration`], for values stored with the schema `from` (a
        /// declared schema of an older version, say), decoded as `Old`.
        pub fn with_migration_from<Old: DeserializeOwned + 'static>(
            mut self,
            from: Schema,
            f: impl Fn(Old) -> $v + Send + Sync + 'static,
        ) -> Self {
            self.common.migrations.add(from, f);
            self
        }

        /// A step of a chain: converts values stored as `Old` into `Mid` with `f`, then
        /// through the migration from `Mid` added before (an error at registration if
        /// there is none).
        pub fn with_migration_via<Old: DeserializeOwned + 'static, Mid: Serialize + DeserializeOwned + 'static>(
            mut self,
            f: impl Fn(Old) -> Mid + Send + Sync + 'static,
        ) -> Self {
            self.common.migrations.add_via(f);
            self
        }

        /// The value type's migrations.
        pub fn migrations(&self) -> &Migrations {
            &self.common.migrations
        }

        /// The metadata a snapshot records for this state.
        pub fn meta(&self) -> &StateMeta {
            &self.common.meta
        }
    };
}

macro_rules! handle_common {
    ($handle:ident < $($p:ident),* > , $desc:ident) => {
        /// A registered state; pass it to the backend's accessor methods. Cheap to clone.
        pub struct $handle<$($p,)* N = VoidNamespace> {
            id: StateId,
            desc: Arc<$desc<$($p,)* N>>,
        }

        impl<$($p,)* N> Clone for $handle<$($p,)* N> {
            fn clone(&self) -> Self {
                $handle { id: self.id, desc: Arc::clone(&self.desc) }
            }
        }

        impl<$($p,)* N> std::fmt::Debug for $handle<$($p,)* N> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($handle)).field("id", &self.id).field("meta", &self.desc.common.meta).finish()
            }
        }

        impl<$($p,)* N> $handle<$($p,)* N> {
            /// The descriptor the state was registered with.
            pub fn descriptor(&self) -> &$desc<$($p,)* N> {
                &self.desc
            }
        }
    };
}

// ---------------------------------------------------------------- value

/// Describes a value state: one `T` per key and namespace.
pub struct ValueStateDescriptor<T, N = VoidNamespace> {
    common: Common,
    default: Option<T>,
    _ns: PhantomData<fn() -> N>,
}

impl<T: StateValue> ValueStateDescriptor<T, VoidNamespace> {
    /// A value state called `name`.
    pub fn new(name: &str) -> Self {
        ValueStateDescriptor {
            common: Common::new::<T>(name, StateKind::Value, None),
            default: None,
            _ns: PhantomData,
        }
    }
}

impl<T: StateValue, N: Namespace> ValueStateDescriptor<T, N> {
    descriptor_common!(T);

    /// The value `get` returns when there is none.
    pub fn with_default(mut self, default: T) -> Self {
        self.default = Some(default);
        self
    }

    /// The default value, if any.
    pub fn default_value(&self) -> Option<&T> {
        self.default.as_ref()
    }

    /// The same state scoped to namespaces of type `N2` (windows, for example).
    pub fn in_namespace<N2: Namespace>(self) -> ValueStateDescriptor<T, N2> {
        ValueStateDescriptor {
            common: self.common.in_namespace::<N2>(),
            default: self.default,
            _ns: PhantomData,
        }
    }
}

handle_common!(ValueStateHandle<T>, ValueStateDescriptor);

impl<T: StateValue, N: Namespace> StateDescriptor for ValueStateDescriptor<T, N> {
    type Handle = ValueStateHandle<T, N>;
    fn register_in<B: RawKeyedBackend>(self, backend: &mut B) -> Result<Self::Handle> {
        let id = backend.register_value::<T, N>(
            self.common.meta.clone(),
            self.common.ttl.clone(),
            &self.common.migrations,
        )?;
        Ok(ValueStateHandle {
            id,
            desc: Arc::new(self),
        })
    }
}

// ---------------------------------------------------------------- list

/// Describes a list state: a list of `T` per key and namespace.
pub struct ListStateDescriptor<T, N = VoidNamespace> {
    common: Common,
    _p: PhantomData<fn() -> (T, N)>,
}

impl<T: StateValue> ListStateDescriptor<T, VoidNamespace> {
    /// A list state called `name`.
    pub fn new(name: &str) -> Self {
        ListStateDescriptor {
            common: Common::new::<T>(name, StateKind::List, None),
            _p: PhantomData,
        }
    }
}

impl<T: StateValue, N: Namespace> ListStateDescriptor<T, N> {
    descriptor_common!(T);

    /// The same state scoped to namespaces of type `N2`.
    pub fn in_namespace<N2: Namespace>(self) -> ListStateDescriptor<T, N2> {
        ListStateDescriptor {
            common: self.common.in_namespace::<N2>(),
            _p: PhantomData,
        }
    }
}

handle_common!(ListStateHandle<T>, ListStateDescriptor);

impl<T: StateValue, N: Namespace> StateDescriptor for ListStateDescriptor<T, N> {
    type Handle = ListStateHandle<T, N>;
    fn register_in<B: RawKeyedBackend>(self, backend: &mut B) -> Result<Self::Handle> {
        let id = backend.register_list::<T, N>(
            self.common.meta.clone(),
            self.common.ttl.clone(),
            &self.common.migrations,
        )?;
        Ok(ListStateHandle {
            id,
            desc: Arc::new(self),
        })
    }
}

// ---------------------------------------------------------------- map

/// Marker for a map state's types.
type MapTypes<UK, UV, N> = PhantomData<fn() -> (UK, UV, N)>;

/// Describes a map state: a map from `UK` to `UV` per key and namespace.
pub struct MapStateDescriptor<UK, UV, N = VoidNamespace> {
    common: Common,
    _p: MapTypes<UK, UV, N>,
}

impl<UK: StateKey, UV: StateValue> MapStateDescriptor<UK, UV, VoidNamespace> {
    /// A map state called `name`.
    pub fn new(name: &str) -> Self {
        MapStateDescriptor {
            common: Common::new::<UV>(name, StateKind::Map, Some((type_name_of::<UK>(), Schema::of::<UK>()))),
            _p: PhantomData,
        }
    }
}

impl<UK: StateKey, UV: StateValue, N: Namespace> MapStateDescriptor<UK, UV, N> {
    descriptor_common!(UV);

    /// Pins the user key type's recorded name (see [`Self::with_type_name`]).
    pub fn with_user_key_type_name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if let Some(Schema::Opaque { type_name }) = &mut self.common.meta.user_key_schema {
            *type_name = name.clone();
        }
        self.common.meta.user_key_type = Some(name);
        self
    }

    /// Declares the user key type's schema (see [`Self::with_value_schema`]).
    pub fn with_user_key_schema(mut self, schema: Schema) -> Self {
        self.common.meta.user_key_schema = Some(schema);
        self
    }

    /// The same state scoped to namespaces of type `N2`.
    pub fn in_namespace<N2: Namespace>(self) -> MapStateDescriptor<UK, UV, N2> {
        MapStateDescriptor {
            common: self.common.in_namespace::<N2>(),
            _p: PhantomData,
        }
    }
}

handle_common!(MapStateHandle<UK, UV>, MapStateDescriptor);

impl<UK: StateKey, UV: StateValue, N: Namespace> StateDescriptor for MapStateDescriptor<UK, UV, N> {
    type Handle = MapStateHandle<UK, UV, N>;
    fn register_in<B: RawKeyedBackend>(self, backend: &mut B) -> Result<Self::Handle> {
        let id = backend.register_map::<UK, UV, N>(
            self.common.meta.clone(),
            self.common.ttl.clone(),
            &self.common.migrations,
        )?;
        Ok(MapStateHandle {
            id,
            desc: Arc::new(self),
        })
    }
}

// ---------------------------------------------------------------- reducing

/// The reduce function of a reducing state.
pub type ReduceFn<T> = Arc<dyn Fn(&T, &T) -> T + Send + Sync>;

/// Describes a reducing state: one `T` per key and namespace, combined with each added value.
pub struct ReducingStateDescriptor<T, N = VoidNamespace> {
    common: Common,
    reduce: ReduceFn<T>,
    _ns: PhantomData<fn() -> N>,
}

impl<T: StateValue> ReducingStateDescriptor<T, VoidNamespace> {
    /// A reducing state called `name` with `reduce(accumulated, added)`.
    pub fn new(name: &str, reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static) -> Self {
        ReducingStateDescriptor {
            common: Common::new::<T>(name, StateKind::Reducing, None),
            reduce: Arc::new(reduce),
            _ns: PhantomData,
        }
    }
}

impl<T: StateValue, N: Namespace> ReducingStateDescriptor<T, N> {
    descriptor_common!(T);

    /// The reduce function.
    pub fn reduce_fn(&self) -> &ReduceFn<T> {
        &self.reduce
    }

    /// The same state scoped to namespaces of type `N2`.
    pub fn in_namespace<N2: Namespace>(self) -> ReducingStateDescriptor<T, N2> {
        ReducingStateDescriptor {
            common: self.common.in_namespace::<N2>(),
            reduce: self.reduce,
            _ns: PhantomData,
        }
    }
}

handle_common!(ReducingStateHandle<T>, ReducingStateDescriptor);

impl<T: StateValue, N: Namespace> StateDescriptor for ReducingStateDescriptor<T, N> {
    type Handle = ReducingStateHandle<T, N>;
    fn register_in<B: RawKeyedBackend>(self, backend: &mut B) -> Result<Self::Handle> {
        let id = backend.register_value::<T, N>(
            self.common.meta.clone(),
            self.common.ttl.clone(),
            &self.common.migrations,
        )?;
        Ok(ReducingStateHandle {
            id,
            desc: Arc::new(self),
        })
    }
}

// ---------------------------------------------------------------- aggregating

/// An aggregate function (Flink's `AggregateFunction`): folds `IN` values into an
/// accumulator `ACC` and reads an `OUT` result from it.
pub trait AggregateFunction<IN, ACC, OUT>: Send + Sync {
    /// A fresh accumulator.
    fn create_accumulator(&self) -> ACC;
    /// Adds `value` to `acc`.
    fn add(&self, value: IN, acc: &mut ACC);
    /// The result for an accumulator.
    fn get_result(&self, acc: &ACC) -> OUT;
    /// Merges two accumulators into one (for merging namespaces: session windows).
    fn merge(&self, a: ACC, b: ACC) -> ACC;
}

/// Describes an aggregating state: one accumulator `ACC` per key and namespace.
pub struct AggregatingStateDescriptor<IN, ACC, OUT, N = VoidNamespace> {
    common: Common,
    function: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
    _ns: PhantomData<fn() -> N>,
}

impl<IN: 'static, ACC: StateValue, OUT: 'static> AggregatingStateDescriptor<IN, ACC, OUT, VoidNamespace> {
    /// An aggregating state called `name` with `function`.
    pub fn new(name: &str, function: impl AggregateFunction<IN, ACC, OUT> + 'static) -> Self {
        AggregatingStateDescriptor {
            common: Common::new::<ACC>(name, StateKind::Aggregating, None),
            function: Arc::new(function),
            _ns: PhantomData,
        }
    }
}

impl<IN: 'static, ACC: StateValue, OUT: 'static, N: Namespace> AggregatingStateDescriptor<IN, ACC, OUT, N> {
    descriptor_common!(ACC);

    /// The aggregate function.
    pub fn function(&self) -> &dyn AggregateFunction<IN, ACC, OUT> {
        &*self.function
    }

    /// The same state scoped to namespaces of type `N2`.
    pub fn in_namespace<N2: Namespace>(self) -> AggregatingStateDescriptor<IN, ACC, OUT, N2> {
        AggregatingStateDescriptor {
            common: self.common.in_namespace::<N2>(),
            function: self.function,
            _ns: PhantomData,
        }
    }
}

handle_common!(AggregatingStateHandle<IN, ACC, OUT>, AggregatingStateDescriptor);

impl<IN: 'static, ACC: StateValue, OUT: 'static, N: Namespace> StateDescriptor
    for AggregatingStateDescriptor<IN, ACC, OUT, N>
{
    type Handle = AggregatingStateHandle<IN, ACC, OUT, N>;
    fn register_in<B: RawKeyedBackend>(self, backend: &mut B) -> Result<Self::Handle> {
        let id = backend.register_value::<ACC, N>(
            self.common.meta.clone(),
            self.common.ttl.clone(),
            &self.common.migrations,
        )?;
        Ok(AggregatingStateHandle {
            id,
            desc: Arc::new(self),
        })
    }
}

// ---------------------------------------------------------------- RegisteredState impls

macro_rules! registered_state {
    ($handle:ident < $($p:ident),* > where $($bounds:tt)*) => {
        impl<$($p),*> RegisteredState for $handle<$($p),*> where $($bounds)* {
            type Namespace = N;
            fn id(&self) -> StateId { self.id }
            fn meta(&self) -> &StateMeta { &self.desc.common.meta }
            fn ttl(&self) -> Option<&TtlConfig> { self.desc.common.ttl.as_ref() }
        }
    };
}

registered_state!(ValueStateHandle<T, N> where T: StateValue, N: Namespace);
registered_state!(ListStateHandle<T, N> where T: StateValue, N: Namespace);
registered_state!(MapStateHandle<UK, UV, N> where UK: StateKey, UV: StateValue, N: Namespace);
registered_state!(ReducingStateHandle<T, N> where T: StateValue, N: Namespace);
registered_state!(AggregatingStateHandle<IN, ACC, OUT, N> where IN: 'static, ACC: StateValue, OUT: 'static, N: Namespace);
