//! The keyed state backend trait that operator code is written against, the context a
//! backend runs in, and the factory trait that creates and restores backends.

use std::sync::Arc;

use crate::descriptor::{
    AggregatingStateHandle, ListStateHandle, MapStateHandle, ReducingStateHandle, RegisteredState, StateDescriptor,
    ValueStateHandle,
};
use crate::error::Result;
use crate::keygroup::KeyGroupRange;
use crate::raw::RawKeyedBackend;
use crate::snapshot::{AsyncSnapshot, CheckpointStorage, IncrementalKeyedHandle, KeyedSnapshotHandle};
use crate::state::{Namespace, StateKey, StateValue, VoidNamespace};
use crate::ttl::{Clock, SystemClock};
use crate::views::{AggregatingView, ListView, MapView, ReducingView, ValueView};

/// Keyed state as operator code and engines use it: state scoped to the current key
/// (set once per record) and a namespace, read and written through typed views.
///
/// Operator code is written once, generic over `B: KeyedStateBackend`, and uses the
/// accessors ([`value`](Self::value), [`list_in`](Self::list_in),
/// [`map_in`](Self::map_in), ...). The typed views ([`ValueView`](crate::ValueView), ...) add defaults,
/// reduce and aggregate functions and TTL, so every backend behaves the same; there is
/// no way around them from here. Engines call [`snapshot`](Self::snapshot) and the
/// checkpoint notifications.
///
/// Backends do not implement this trait: they implement
/// [`RawKeyedBackend`](crate::raw::RawKeyedBackend), and every raw backend is a
/// `KeyedStateBackend`. Code generic over `KeyedStateBackend` cannot reach the raw
/// operations, even with the raw trait imported, so it cannot write around TTL:
///
/// ```compile_fail,E0599
/// use state_api::raw::RawKeyedBackend;
/// use state_api::{KeyedStateBackend, RegisteredState, ValueStateHandle, VoidNamespace};
///
/// fn bypass<B: KeyedStateBackend<Key = u64>>(backend: &mut B, h: &ValueStateHandle<u64>) {
///     backend.raw_clear(h.id(), &VoidNamespace).unwrap(); // error: no method `raw_clear`
/// }
/// ```
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
    /// The raw backend underneath (the backend itself); only the views reach it.
    #[doc(hidden)]
    type Raw: RawKeyedBackend<Key = Self::Key>;
    /// The raw backend, for the views; the token cannot be built outside this crate.
    #[doc(hidden)]
    fn raw_mut(&mut self, token: Access) -> &mut Self::Raw;

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

    /// The synchronous part of a snapshot: cheap, on the task thread. The returned
    /// [`AsyncSnapshot`] writes the state as it was at this call, in the canonical
    /// format, to any storage, on any thread, while this backend keeps processing and
    /// updating state.
    fn snapshot(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<KeyedSnapshotHandle>>;
    /// Whether [`snapshot_incremental`](Self::snapshot_incremental) is supported.
    fn supports_incremental(&self) -> bool;
    /// A short name of the backend (`heap`, `rocksdb`): the `backend` label of its
    /// [`crate::metrics`].
    fn backend_name(&self) -> &'static str;
    /// The synchronous part of an incremental snapshot (only what changed since the last
    /// completed checkpoint is uploaded). Fails with [`crate::StateError::Unsupported`]
    /// on backends without incremental snapshots.
    fn snapshot_incremental(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<IncrementalKeyedHandle>>;
    /// Checkpoint `checkpoint_id` completed: every subtask of the job acknowledged it and
    /// its metadata is written. Engines call it on the coordinator's
    /// [`crate::CheckpointEvent::Completed`].
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64);
    /// Checkpoint `checkpoint_id` was aborted: what it uploaded is never reused.
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64);

    // ------------------------------------------------------------- provided

    /// Registers a state described by `descriptor` and returns its typed handle.
    /// Registering the same name again with the same kind and types returns a handle to
    /// the same state; a different kind or type is an error.
    fn register<D: StateDescriptor>(&mut self, descriptor: D) -> Result<D::Handle> {
        descriptor.register_in(self.raw_mut(Access(())))
    }

    /// Every key that has state for `handle` in the default namespace.
    fn keys<H: RegisteredState<Namespace = VoidNamespace>>(&mut self, handle: &H) -> Result<Vec<Self::Key>> {
        self.keys_in(handle, &VoidNamespace)
    }

    /// Every key that has state for `handle` in namespace `ns`, in no particular order
    /// (Flink's `getKeys`).
    fn keys_in<H: RegisteredState>(&mut self, handle: &H, ns: &H::Namespace) -> Result<Vec<Self::Key>> {
        RawKeyedBackend::keys_in(self.raw_mut(Access(())), handle.id(), ns)
    }

    /// Every (key, namespace) pair that has state for `handle`, once each, in no
    /// particular order (Flink's `getKeysAndNamespaces`): for cleaning up or migrating
    /// state. Entries that expired but were not cleaned up yet are included.
    fn keys_and_namespaces<H: RegisteredState>(&mut self, handle: &H) -> Result<Vec<(Self::Key, H::Namespace)>> {
        RawKeyedBackend::keys_and_namespaces(self.raw_mut(Access(())), handle.id())
    }

    /// Calls `f` for every key that has state for `handle` in `ns`, with that key set as
    /// the current key (Flink's `applyToAllKeys`). The keys are listed before the first
    /// call, so `f` may update or clear the visited key's state, of this state or any
    /// other. The current key from before the call is set again afterwards; the first
    /// error of `f` stops the visit and is returned.
    fn apply_to_all_keys<H: RegisteredState>(
        &mut self,
        ns: &H::Namespace,
        handle: &H,
        mut f: impl FnMut(&mut Self, &Self::Key) -> Result<()>,
    ) -> Result<()> {
        let keys = self.keys_in(handle, ns)?;
        let previous = self.current_key().cloned();
        let mut result = Ok(());
        for key in &keys {
            result = self.set_current_key(key).and_then(|()| f(self, key));
            if result.is_err() {
                break;
            }
        }
        if let Some(previous) = previous {
            self.set_current_key(&previous)?;
        }
        result
    }

    /// The exact number of (key, namespace) pairs that hold state for `handle`. It reads
    /// every key of the state: for tests and checks ("clear leaves nothing behind"), not
    /// per record.
    fn count_entries<H: RegisteredState>(&mut self, handle: &H) -> Result<u64> {
        Ok(self.keys_and_namespaces(handle)?.len() as u64)
    }

    /// About how many entries `handle` holds, cheaply, for metrics: (key, namespace)
    /// pairs on the heap; RocksDB's estimate of its stored entries (a map's user keys
    /// one by one).
    fn approximate_entries<H: RegisteredState>(&mut self, handle: &H) -> Result<u64> {
        RawKeyedBackend::approximate_entries(self.raw_mut(Access(())), handle.id())
    }

    /// About how many bytes `handle` takes, for metrics sampled now and then: on the
    /// heap, the serialized size of its entries plus their keys (a walk over the state);
    /// in RocksDB, the estimated live data of its column family plus its memtables.
    fn approximate_size<H: RegisteredState>(&mut self, handle: &H) -> Result<u64> {
        RawKeyedBackend::approximate_size(self.raw_mut(Access(())), handle.id())
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

/// The token that keeps the raw backend out of operator code's reach.
mod sealed {
    /// Built only inside `state-api`.
    #[derive(Debug)]
    pub struct Access(pub(crate) ());
}
use sealed::Access;

impl<B: RawKeyedBackend> KeyedStateBackend for B {
    type Key = <B as RawKeyedBackend>::Key;
    type Raw = B;
    fn raw_mut(&mut self, _token: Access) -> &mut B {
        self
    }
    fn key_group_range(&self) -> KeyGroupRange {
        RawKeyedBackend::key_group_range(self)
    }
    fn max_parallelism(&self) -> u32 {
        RawKeyedBackend::max_parallelism(self)
    }
    fn set_current_key(&mut self, key: &Self::Key) -> Result<()> {
        RawKeyedBackend::set_current_key(self, key)
    }
    fn current_key(&self) -> Option<&Self::Key> {
        RawKeyedBackend::current_key(self)
    }
    fn current_key_group(&self) -> Option<u32> {
        RawKeyedBackend::current_key_group(self)
    }
    fn clock(&self) -> &dyn Clock {
        RawKeyedBackend::clock(self)
    }
    fn snapshot(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<KeyedSnapshotHandle>> {
        let started = std::time::Instant::now();
        let part = RawKeyedBackend::snapshot(self, checkpoint_id)?;
        let name = RawKeyedBackend::backend_name(self);
        crate::metrics::sync_part(name, started.elapsed());
        Ok(part.measured(name, "full", |h| h.stream.size()))
    }
    fn supports_incremental(&self) -> bool {
        RawKeyedBackend::supports_incremental(self)
    }
    fn backend_name(&self) -> &'static str {
        RawKeyedBackend::backend_name(self)
    }
    fn snapshot_incremental(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<IncrementalKeyedHandle>> {
        let started = std::time::Instant::now();
        let part = RawKeyedBackend::snapshot_incremental(self, checkpoint_id)?;
        let name = RawKeyedBackend::backend_name(self);
        crate::metrics::sync_part(name, started.elapsed());
        Ok(part.measured(name, "incremental", IncrementalKeyedHandle::size))
    }
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) {
        RawKeyedBackend::notify_checkpoint_complete(self, checkpoint_id)
    }
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        RawKeyedBackend::notify_checkpoint_aborted(self, checkpoint_id)
    }
}

/// The raw backend under `backend`, for the views.
pub(crate) fn raw<B: KeyedStateBackend>(backend: &mut B) -> &mut B::Raw {
    backend.raw_mut(Access(()))
}

/// Where and how a keyed backend runs: which key groups it owns and its TTL clock.
///
/// Built by [`new`](Self::new) (checked), [`single`](Self::single),
/// [`for_subtask`](Self::for_subtask) or a restore assignment's `context()`; backends
/// check it again when they open.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BackendContext {
    /// The key groups the backend owns.
    pub key_group_range: KeyGroupRange,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// The clock that TTL reads.
    pub clock: Arc<dyn Clock>,
}

impl BackendContext {
    /// A backend owning `key_group_range` of `max_parallelism`, with the system clock;
    /// an error if the range does not fit.
    pub fn new(key_group_range: KeyGroupRange, max_parallelism: u32) -> Result<Self> {
        let ctx = BackendContext {
            key_group_range,
            max_parallelism,
            clock: Arc::new(SystemClock),
        };
        ctx.validate()?;
        Ok(ctx)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_is_checked_when_built() {
        let ctx = BackendContext::new(KeyGroupRange::new(0, 63), 128).unwrap();
        assert_eq!((ctx.key_group_range.end(), ctx.max_parallelism), (63, 128));
        assert!(BackendContext::new(KeyGroupRange::new(0, 200), 128).is_err());
        assert!(BackendContext::new(KeyGroupRange::all(1), 0).is_err());
    }
}
