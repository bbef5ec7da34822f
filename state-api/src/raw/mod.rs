//! What a backend author implements: the raw keyed-state operations, below the typed
//! views that operator code uses.
//!
//! A keyed state backend implements [`RawKeyedBackend`]; it then is a
//! [`KeyedStateBackend`](crate::KeyedStateBackend) (a blanket implementation), which is
//! all that operator code sees. The raw operations store and return values as they are
//! (with their TTL timestamp, [`TtlValue`]); defaults, reduce and aggregate functions
//! and TTL expiry are applied once, by the views ([`crate::ValueView`], ...), so every backend
//! behaves the same and operator code cannot bypass TTL.
//!
//! The contract, per method, is what the conformance suite in `state_api::testkit`
//! (feature `testkit`) checks; run it from the backend's tests with
//! [`conformance_tests!`](crate::conformance_tests).
//!
//! The module also gathers what only backends need: state metadata and ids
//! ([`StateMeta`], [`StateId`]), the canonical snapshot format ([`crate::format`]) and
//! the length-prefixed framing ([`crate::framing`]).

use crate::error::Result;
use crate::keygroup::KeyGroupRange;
use crate::migration::Migrations;
use crate::snapshot::{AsyncSnapshot, IncrementalKeyedHandle, KeyedSnapshotHandle};
use crate::state::{Namespace, StateKey, StateValue};
use crate::ttl::{Clock, TtlConfig};

mod cow;
mod encode;
pub mod format;
pub mod framing;
pub mod legacy;
mod migrate;

pub use crate::checkpoint::check_identifier;
pub use crate::compatibility::{Resolution, check_key, reads_as};
pub use crate::schema_encoding::MAX_DEPTH as SCHEMA_MAX_DEPTH;
pub use crate::state::{StateId, StateMeta, StateShape, TtlMeta, TtlValue, type_name_of};
pub use crate::timer::{decode_timestamp, encode_timestamp};
pub use cow::SnapshotCow;
pub use encode::append_postcard;
pub use migrate::migrate_block;

/// A boxed iterator over map entries, as backends return them.
pub type RawMapIter<'a, UK, UV> = Box<dyn Iterator<Item = Result<(UK, TtlValue<UV>)>> + 'a>;

/// The keyed-state operations a backend implements.
///
/// Every method works on the current key (set by
/// [`set_current_key`](Self::set_current_key)) unless it says otherwise. Values are
/// stored as given, TTL timestamp included; the views above apply defaults and expiry.
pub trait RawKeyedBackend: Send + Sized + std::fmt::Debug {
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
    ///
    /// A state restored from a snapshot is resolved against `meta` with
    /// [`StateMeta::resolve`]: as is, or after converting every stored value with the one
    /// of `migrations` that starts from the stored schema (then `meta` is what the next
    /// snapshot records), or an error that changes nothing.
    fn register_value<V: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
        migrations: &Migrations,
    ) -> Result<StateId>;
    /// Registers (or looks up) a list state.
    fn register_list<E: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
        migrations: &Migrations,
    ) -> Result<StateId>;
    /// Registers (or looks up) a map state.
    fn register_map<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
        migrations: &Migrations,
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
    /// Appends one element to the list for the current key and `ns` (a list's `add`).
    /// The default wraps it in a vector for [`raw_list_append`](Self::raw_list_append);
    /// a backend holding lists in memory pushes it without that allocation.
    fn raw_list_push<E: StateValue, N: Namespace>(&mut self, id: StateId, ns: &N, value: TtlValue<E>) -> Result<()> {
        self.raw_list_append(id, ns, vec![value])
    }
    /// Appends the lists of `sources` (for the current key) to the list in `target`, in
    /// order, and removes the sources; elements keep their timestamps, and empty or
    /// missing sources create nothing. `target` is never among `sources`. The default
    /// reads and re-appends through the other raw operations; backends that can move
    /// the encoded bytes override it (RocksDB: no decoding, one write batch).
    fn raw_list_merge<E: StateValue, N: Namespace>(&mut self, id: StateId, target: &N, sources: &[N]) -> Result<()> {
        for source in sources {
            let items = self.raw_list_read::<E, N, _>(id, source, |items| items.to_vec())?;
            if let Some(items) = items {
                if !items.is_empty() {
                    self.raw_list_append(id, target, items)?;
                }
                self.raw_clear(id, source)?;
            }
        }
        Ok(())
    }

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

    /// Every (key, namespace) pair that has state in `id`, once each, in no particular
    /// order (Flink's `getKeysAndNamespaces`). Entries that expired but were not cleaned
    /// up yet are included.
    fn keys_and_namespaces<N: Namespace>(&mut self, id: StateId) -> Result<Vec<(Self::Key, N)>>;

    /// About how many entries `id` holds, cheaply (for metrics): (key, namespace) pairs
    /// on the heap, stored entries (a map's user keys counted one by one) as RocksDB
    /// estimates them.
    fn approximate_entries(&mut self, id: StateId) -> Result<u64>;

    /// About how many bytes `id` takes (for metrics, sampled now and then): on the heap,
    /// the serialized size of its entries plus their keys (a walk over the state); in
    /// RocksDB, the estimated live data of its column family plus its memtables (two
    /// property reads).
    fn approximate_size(&mut self, id: StateId) -> Result<u64>;

    /// The synchronous part of a snapshot: cheap, on the task thread. The returned
    /// [`AsyncSnapshot`] writes the state as it was at this call, to any storage, on
    /// any thread, while this backend keeps processing and updating state.
    fn snapshot(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<KeyedSnapshotHandle>>;

    /// Whether [`snapshot_incremental`](Self::snapshot_incremental) is supported.
    /// The default says no.
    fn supports_incremental(&self) -> bool {
        false
    }

    /// A short name of the backend (`heap`, `rocksdb`), the `backend` label of its
    /// [`crate::metrics`]. The default is `custom`.
    fn backend_name(&self) -> &'static str {
        "custom"
    }

    /// The synchronous part of an incremental snapshot: only what changed since the
    /// last completed checkpoint is uploaded, the rest is referenced. The default fails
    /// with [`crate::StateError::Unsupported`]; backends that can (RocksDB) override it
    /// together with [`supports_incremental`](Self::supports_incremental).
    fn snapshot_incremental(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<IncrementalKeyedHandle>> {
        let _ = checkpoint_id;
        Err(crate::StateError::Unsupported {
            what: format!("incremental snapshots on {}", std::any::type_name::<Self>()),
        })
    }

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
}

/// Checks a state name: non-empty, at most 255 bytes, no control characters. State names
/// end up in file names and metadata, so they are checked once, here, for every backend.
pub fn check_state_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(crate::StateError::InvalidArgument(format!(
            "state name {name:?} must be 1 to 255 bytes without control characters"
        )));
    }
    Ok(())
}
