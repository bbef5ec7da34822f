//! The keyed state backend trait that every backend implements and operator code is
//! written against, and the factory trait that creates and restores backends.

use std::sync::Arc;

use crate::descriptor::{
    AggregatingStateHandle, ListStateHandle, MapStateHandle, ReducingStateHandle, RegisteredState, StateDescriptor,
    ValueStateHandle,
};
use crate::error::Result;
use crate::keygroup::KeyGroupRange;
use crate::snapshot::{AsyncSnapshot, CheckpointStorage, KeyedSnapshotHandle};
use crate::state::{Namespace, StateId, StateKey, StateMeta, StateValue, TtlValue, VoidNamespace};
use crate::ttl::{Clock, SystemClock, TtlConfig};
use crate::views::{AggregatingView, ListView, MapView, ReducingView, ValueView};

/// A boxed iterator over map entries, as backends return them.
pub type RawMapIter<'a, UK, UV> = Box<dyn Iterator<Item = Result<(UK, TtlValue<UV>)>> + 'a>;

/// Keyed state: state scoped to the current key (set once per record) and a namespace.
///
/// Operator code is written once, generic over `B: KeyedStateBackend`, and uses the
/// provided accessors ([`value`](Self::value), [`list_in`](Self::list_in),
/// [`map_in`](Self::map_in), ...). The `raw_*` and `register_*` methods are what a
/// backend implements; the typed views in [`crate::views`] add defaults, reduce and
/// aggregate functions and TTL on top of them, so every backend behaves the same.
///
/// ```
/// use state_api::{KeyedStateBackend, Result, ValueStateDescriptor, ValueStateHandle};
///
/// /// Counts records per key; runs unchanged on every backend.
/// fn count<B: KeyedStateBackend<Key = String>>(
///     backend: &mut B,
///     counts: &ValueStateHandle<u64>,
///     key: &String,
/// ) -> Result<u64> {
///     backend.set_current_key(key)?;
///     let n = backend.value(counts).get()?.unwrap_or(0) + 1;
///     backend.value(counts).update(n)?;
///     Ok(n)
/// }
/// ```
pub trait KeyedStateBackend: Send + Sized + std::fmt::Debug {
    /// The key type.
    type Key: StateKey;

    /// The key groups this backend owns.
    fn key_group_range(&self) -> KeyGroupRange;
    /// The job's max parallelism (number of key groups).
    fn max_parallelism(&self) -> u32;
    /// Sets the key that following state accesses are scoped to. Fails with
    /// [`crate::StateError::KeyGroupOutOfRange`] if this backend does not own the key.
    fn set_current_key(&mut self, key: &Self::Key) -> Result<()>;
    /// The current key, if one was set.
    fn current_key(&self) -> Option<&Self::Key>;
    /// The current key's key group, if a key was set.
    fn current_key_group(&self) -> Option<u32>;
    /// The clock that TTL reads.
    fn clock(&self) -> &dyn Clock;

    /// Registers (or looks up) a state stored as one value per key and namespace
    /// (value, reducing and aggregating state).
    fn register_value<V: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
    ) -> Result<StateId>;
    /// Registers (or looks up) a list state.
    fn register_list<E: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
    ) -> Result<StateId>;
    /// Registers (or looks up) a map state.
    fn register_map<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
    ) -> Result<StateId>;

    /// Reads the value for the current key and `ns`, passing it to `f`.
    fn raw_value_read<V: StateValue, N: Namespace, R>(
        &mut self,
        id: StateId,
        ns: &N,
        f: impl FnOnce(&TtlValue<V>) -> R,
    ) -> Result<Option<R>>;
    /// Writes the value for the current key and `ns`.
    fn raw_value_write<V: StateValue, N: Namespace>(&mut self, id: StateId, ns: &N, value: TtlValue<V>) -> Result<()>;
    /// Reads the list for the current key and `ns`; `None` when there is none (or it is empty).
    fn raw_list_read<E: StateValue, N: Namespace, R>(
        &mut self,
        id: StateId,
        ns: &N,
        f: impl FnOnce(&[TtlValue<E>]) -> R,
    ) -> Result<Option<R>>;
    /// Appends to the list for the current key and `ns`.
    fn raw_list_append<E: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        values: Vec<TtlValue<E>>,
    ) -> Result<()>;
    /// Replaces the list for the current key and `ns`; an empty list removes it.
    fn raw_list_write<E: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        values: Vec<TtlValue<E>>,
    ) -> Result<()>;
    /// Reads one map entry for the current key and `ns`.
    fn raw_map_read<UK: StateKey, UV: StateValue, N: Namespace, R>(
        &mut self,
        id: StateId,
        ns: &N,
        user_key: &UK,
        f: impl FnOnce(&TtlValue<UV>) -> R,
    ) -> Result<Option<R>>;
    /// Writes one map entry for the current key and `ns`.
    fn raw_map_write<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        user_key: UK,
        value: TtlValue<UV>,
    ) -> Result<()>;
    /// Removes one map entry for the current key and `ns`.
    fn raw_map_remove<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        user_key: &UK,
    ) -> Result<()>;
    /// Iterates over the map for the current key and `ns`.
    fn raw_map_iter<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
    ) -> Result<RawMapIter<'_, UK, UV>>;
    /// Removes whatever the state holds for the current key and `ns`.
    fn raw_clear<N: Namespace>(&mut self, id: StateId, ns: &N) -> Result<()>;
    /// Checks about `entries` entries of a TTL state for expiry, anywhere in the backend,
    /// and removes the expired ones (incremental cleanup). Backends that clean up in
    /// another way (a compaction filter) may do nothing.
    fn ttl_cleanup_step(&mut self, id: StateId, entries: usize) -> Result<()>;

    /// Every key that has state in `ns` for the state `id`, in no particular order
    /// (Flink's `getKeys`).
    fn keys_in<N: Namespace>(&mut self, id: StateId, ns: &N) -> Result<Vec<Self::Key>>;

    /// The synchronous part of a snapshot: cheap, on the task thread. The returned
    /// [`AsyncSnapshot`] writes the state as it was at this call, to any storage, on
    /// any thread, while this backend keeps processing and updating state.
    fn snapshot(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<KeyedSnapshotHandle>>;

    /// Checkpoint `checkpoint_id` completed: every subtask of the job acknowledged it and
    /// its metadata is written. Backends with incremental checkpoints make its files the
    /// base of the next one. Engines call it on the coordinator's
    /// [`crate::CheckpointEvent::Completed`]; the default does nothing.
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) {
        let _ = checkpoint_id;
    }

    /// Checkpoint `checkpoint_id` was aborted: what it uploaded is never reused. The
    /// default does nothing.
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        let _ = checkpoint_id;
    }

    // ------------------------------------------------------------- provided

    /// Registers a state described by `descriptor` and returns its typed handle.
    /// Registering the same name again with the same kind and types returns a handle to
    /// the same state; a different kind or type is an error.
    fn register<D: StateDescriptor>(&mut self, descriptor: D) -> Result<D::Handle> {
        descriptor.register_in(self)
    }

    /// Every key that has state for `handle` in the default namespace.
    fn keys<H: RegisteredState<Namespace = VoidNamespace>>(&mut self, handle: &H) -> Result<Vec<Self::Key>> {
        self.keys_in(handle.id(), &VoidNamespace)
    }

    /// The value state `handle` for the current key.
    fn value<'a, T: StateValue>(
        &'a mut self,
        handle: &'a ValueStateHandle<T>,
    ) -> ValueView<'a, Self, T, VoidNamespace> {
        ValueView::new(self, handle, &VoidNamespace)
    }
    /// The value state `handle` for the current key in namespace `ns`.
    fn value_in<'a, T: StateValue, N: Namespace>(
        &'a mut self,
        handle: &'a ValueStateHandle<T, N>,
        ns: &'a N,
    ) -> ValueView<'a, Self, T, N> {
        ValueView::new(self, handle, ns)
    }
    /// The list state `handle` for the current key.
    fn list<'a, T: StateValue>(&'a mut self, handle: &'a ListStateHandle<T>) -> ListView<'a, Self, T, VoidNamespace> {
        ListView::new(self, handle, &VoidNamespace)
    }
    /// The list state `handle` for the current key in namespace `ns`.
    fn list_in<'a, T: StateValue, N: Namespace>(
        &'a mut self,
        handle: &'a ListStateHandle<T, N>,
        ns: &'a N,
    ) -> ListView<'a, Self, T, N> {
        ListView::new(self, handle, ns)
    }
    /// The map state `handle` for the current key.
    fn map<'a, UK: StateKey, UV: StateValue>(
        &'a mut self,
        handle: &'a MapStateHandle<UK, UV>,
    ) -> MapView<'a, Self, UK, UV, VoidNamespace> {
        MapView::new(self, handle, &VoidNamespace)
    }
    /// The map state `handle` for the current key in namespace `ns`.
    fn map_in<'a, UK: StateKey, UV: StateValue, N: Namespace>(
        &'a mut self,
        handle: &'a MapStateHandle<UK, UV, N>,
        ns: &'a N,
    ) -> MapView<'a, Self, UK, UV, N> {
        MapView::new(self, handle, ns)
    }
    /// The reducing state `handle` for the current key.
    fn reducing<'a, T: StateValue>(
        &'a mut self,
        handle: &'a ReducingStateHandle<T>,
    ) -> ReducingView<'a, Self, T, VoidNamespace> {
        ReducingView::new(self, handle, &VoidNamespace)
    }
    /// The reducing state `handle` for the current key in namespace `ns`.
    fn reducing_in<'a, T: StateValue, N: Namespace>(
        &'a mut self,
        handle: &'a ReducingStateHandle<T, N>,
        ns: &'a N,
    ) -> ReducingView<'a, Self, T, N> {
        ReducingView::new(self, handle, ns)
    }
    /// The aggregating state `handle` for the current key.
    fn aggregating<'a, IN: 'static, ACC: StateValue, OUT: 'static>(
        &'a mut self,
        handle: &'a AggregatingStateHandle<IN, ACC, OUT>,
    ) -> AggregatingView<'a, Self, IN, ACC, OUT, VoidNamespace> {
        AggregatingView::new(self, handle, &VoidNamespace)
    }
    /// The aggregating state `handle` for the current key in namespace `ns`.
    fn aggregating_in<'a, IN: 'static, ACC: StateValue, OUT: 'static, N: Namespace>(
        &'a mut self,
        handle: &'a AggregatingStateHandle<IN, ACC, OUT, N>,
        ns: &'a N,
    ) -> AggregatingView<'a, Self, IN, ACC, OUT, N> {
        AggregatingView::new(self, handle, ns)
    }
}

/// Where and how a keyed backend runs: which key groups it owns and its TTL clock.
#[derive(Debug, Clone)]
pub struct BackendContext {
    /// The key groups the backend owns.
    pub key_group_range: KeyGroupRange,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// The clock that TTL reads.
    pub clock: Arc<dyn Clock>,
}

impl BackendContext {
    /// A backend owning every key group of `max_parallelism`, with the system clock.
    pub fn single(max_parallelism: u32) -> Self {
        BackendContext {
            key_group_range: KeyGroupRange::all(max_parallelism),
            max_parallelism,
            clock: Arc::new(SystemClock),
        }
    }

    /// The backend of subtask `index` of `parallelism`, with the system clock.
    pub fn for_subtask(max_parallelism: u32, parallelism: u32, index: u32) -> Result<Self> {
        Ok(BackendContext {
            key_group_range: crate::keygroup::key_group_range_for_operator(max_parallelism, parallelism, index)?,
            max_parallelism,
            clock: Arc::new(SystemClock),
        })
    }

    /// The same context with another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks that the range fits the max parallelism.
    pub fn validate(&self) -> Result<()> {
        use crate::StateError;
        if self.max_parallelism == 0 || self.max_parallelism > crate::keygroup::UPPER_BOUND_MAX_PARALLELISM {
            return Err(StateError::InvalidArgument(format!(
                "max parallelism must be in 1..={}, got {}",
                crate::keygroup::UPPER_BOUND_MAX_PARALLELISM,
                self.max_parallelism
            )));
        }
        if !self.key_group_range.is_empty() && self.key_group_range.end() >= self.max_parallelism {
            return Err(StateError::InvalidArgument(format!(
                "key-group range {} does not fit max parallelism {}",
                self.key_group_range, self.max_parallelism
            )));
        }
        Ok(())
    }
}

/// Creates and restores keyed backends of one kind. The conformance kit and engines
/// use it to build backends without naming the backend type.
pub trait KeyedBackendFactory: Send + Sync {
    /// The backend for keys of type `K`.
    type Backend<K: StateKey>: KeyedStateBackend<Key = K>;

    /// A short name for logs and test output.
    fn name(&self) -> &str;

    /// An empty backend.
    fn create<K: StateKey>(&self, ctx: &BackendContext) -> Result<Self::Backend<K>>;

    /// A backend restored from snapshot handles: one per old subtask whose key groups
    /// intersect `ctx.key_group_range` (more when rescaling down); only the owned key
    /// groups are read.
    fn restore<K: StateKey>(
        &self,
        ctx: &BackendContext,
        handles: &[KeyedSnapshotHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<Self::Backend<K>>;
}
