//! Timers stored in the RocksDB backend's database: one column family per timer queue
//! (`_timers/<name>`), keys in the frozen layout `[key group][timestamp][key][namespace]`,
//! with an in-memory cache of each key group's first timers (Flink's
//! `RocksDBCachingPriorityQueueSet`). Or, by configuration, heap timers beside the
//! RocksDB state (Flink's `state.backend.rocksdb.timer-service.factory`).

use rocksdb::{Direction, IteratorMode, WriteOptions};
use state_api::{Result, StateError, StateKey};
use state_timers::{CachedTimerQueue, EitherQueue, HeapTimerQueue, OrderedTimerStore, PinnedStore, StoreEntries};

use crate::backend::RocksDbKeyedStateBackend;
use crate::instance::db_err;
use crate::layout::prefix_successor;

/// Where the RocksDB backend keeps timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RocksDbTimerStorage {
    /// In a column family of the backend's database (the default): timer counts beyond
    /// memory; every change is a RocksDB write.
    #[default]
    RocksDb,
    /// In memory beside the RocksDB state: faster with few timers; snapshots stay
    /// asynchronous (copy-on-write), unlike Flink's heap timers with RocksDB.
    Heap,
}

/// The prefix of timer column families.
pub const TIMER_CF_PREFIX: &str = "_timers/";

/// Timers of one queue in a column family of a [`RocksDbKeyedStateBackend`].
#[derive(Debug)]
pub struct RocksDbTimerStore {
    cf: String,
    name: String,
}

/// A RocksDB timer queue.
pub type RocksDbTimerQueue = CachedTimerQueue<RocksDbTimerStore>;

/// The timer queue a RocksDB backend creates: heap or RocksDB, as configured.
pub type RocksDbBackendTimerQueue = EitherQueue<HeapTimerQueue, RocksDbTimerQueue>;

fn cf<'a, K: StateKey>(
    host: &'a RocksDbKeyedStateBackend<K>,
    store: &RocksDbTimerStore,
) -> Result<&'a rocksdb::ColumnFamily> {
    host.db
        .cf_handle(&store.cf)
        .ok_or_else(|| StateError::storage_message(store.name.clone(), "the timer column family is missing"))
}

fn contains<K: StateKey>(host: &RocksDbKeyedStateBackend<K>, store: &RocksDbTimerStore, key: &[u8]) -> Result<bool> {
    Ok(host
        .db
        .get_pinned_cf(cf(host, store)?, key)
        .map_err(|e| db_err(format!("reading {}", store.name), e))?
        .is_some())
}

fn scan<K: StateKey>(
    host: &RocksDbKeyedStateBackend<K>,
    store: &RocksDbTimerStore,
    snapshot: Option<&rocksdb::Snapshot<'_>>,
    prefix: &[u8],
    from: &[u8],
    limit: usize,
) -> Result<StoreEntries> {
    let cf = cf(host, store)?;
    let mut opts = rocksdb::ReadOptions::default();
    if let Some(upper) = prefix_successor(prefix) {
        opts.set_iterate_upper_bound(upper);
    }
    if let Some(s) = snapshot {
        opts.set_snapshot(s);
    }
    let mut out = Vec::new();
    for item in host
        .db
        .iterator_cf_opt(cf, opts, IteratorMode::From(from.max(prefix), Direction::Forward))
        .take(limit)
    {
        let (k, v) = item.map_err(|e| db_err(format!("reading {}", store.name), e))?;
        if !k.starts_with(prefix) {
            break;
        }
        out.push((k.into_vec(), v.into_vec()));
    }
    Ok(out)
}

impl<K: StateKey> OrderedTimerStore<RocksDbKeyedStateBackend<K>> for RocksDbTimerStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn insert(&mut self, host: &mut RocksDbKeyedStateBackend<K>, key: &[u8], value: &[u8]) -> Result<bool> {
        if contains(host, self, key)? {
            return Ok(false);
        }
        self.insert_new(host, key, value)?;
        Ok(true)
    }

    fn insert_new(&mut self, host: &mut RocksDbKeyedStateBackend<K>, key: &[u8], value: &[u8]) -> Result<()> {
        let cf = cf(host, self)?;
        host.db
            .put_cf_opt(cf, key, value, &host.write_opts)
            .map_err(|e| db_err(format!("adding a timer to {}", self.name), e))
    }

    fn remove(&mut self, host: &mut RocksDbKeyedStateBackend<K>, key: &[u8]) -> Result<bool> {
        if !contains(host, self, key)? {
            return Ok(false);
        }
        self.remove_known(host, key)?;
        Ok(true)
    }

    fn remove_known(&mut self, host: &mut RocksDbKeyedStateBackend<K>, key: &[u8]) -> Result<()> {
        let cf = cf(host, self)?;
        host.db
            .delete_cf_opt(cf, key, &host.write_opts)
            .map_err(|e| db_err(format!("removing a timer from {}", self.name), e))
    }

    fn scan_prefix(
        &mut self,
        host: &mut RocksDbKeyedStateBackend<K>,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<StoreEntries> {
        scan(host, self, None, prefix, from, limit)
    }

    fn pin(&mut self, host: &mut RocksDbKeyedStateBackend<K>) -> Result<Box<dyn PinnedStore>> {
        // rust-rocksdb ties a snapshot to the database's lifetime, so it cannot move to
        // the asynchronous part: the timers are copied here, from one consistent snapshot.
        let snapshot = host.db.snapshot();
        let entries = scan(host, self, Some(&snapshot), &[], &[], usize::MAX)?;
        Ok(Box::new(CopiedTimers(entries)))
    }
}

struct CopiedTimers(StoreEntries);

impl PinnedStore for CopiedTimers {
    fn scan_prefix(&self, prefix: &[u8]) -> Result<StoreEntries> {
        let start = self.0.partition_point(|(k, _)| k.as_slice() < prefix);
        Ok(self.0[start..]
            .iter()
            .take_while(|(k, _)| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// An empty timer queue named `name` (one per time domain and operator) in the
    /// storage the configuration chose ([`crate::RocksDbConfig::timer_storage`]). A RocksDB
    /// queue's column family is created, or emptied if an earlier run left one.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use state_api::{BackendContext, KeyedStateBackend, SystemClock, TimerService};
    /// use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
    /// use state_timers::InternalTimerService;
    ///
    /// let mut backend = RocksDbKeyedStateBackend::<u64>::new(&BackendContext::single(128), RocksDbConfig::default())?;
    /// let event = backend.create_timer_queue("window-event")?;
    /// let processing = backend.create_timer_queue("window-processing")?;
    /// let mut timers = InternalTimerService::<u64, (), _>::new(event, processing, Arc::new(SystemClock), 128)?;
    /// backend.set_current_key(&3)?;
    /// timers.register_event_time_timer(&mut backend, &(), 100)?;
    /// let fired = timers.advance_watermark(&mut backend, 100, |_, _, _| Ok(()))?;
    /// assert_eq!(fired, 1);
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    pub fn create_timer_queue(&mut self, name: &str) -> Result<RocksDbBackendTimerQueue> {
        match self.config.timer_storage {
            RocksDbTimerStorage::Heap => Ok(EitherQueue::Left(HeapTimerQueue::new(self.range))),
            RocksDbTimerStorage::RocksDb => Ok(EitherQueue::Right(self.create_rocksdb_timer_queue(name)?)),
        }
    }

    /// An empty timer queue in a column family of this backend's database, whatever
    /// the configuration says.
    pub fn create_rocksdb_timer_queue(&mut self, name: &str) -> Result<RocksDbTimerQueue> {
        state_api::raw::check_state_name(name)?;
        let cf_name = format!("{TIMER_CF_PREFIX}{name}");
        if self.db.cf_handle(&cf_name).is_none() {
            let mut opts = self.config.options();
            // A timer add the key group's cache cannot decide reads the key first; most
            // are new, and a whole-key memtable bloom filter answers those without a
            // skiplist walk.
            opts.set_memtable_prefix_bloom_ratio(0.1);
            opts.set_memtable_whole_key_filtering(true);
            self.db
                .create_cf(&cf_name, &opts)
                .map_err(|e| db_err(format!("creating the timer column family `{cf_name}`"), e))?;
        } else {
            let cf = self
                .db
                .cf_handle(&cf_name)
                .ok_or_else(|| StateError::storage_message(cf_name.clone(), "column family vanished"))?;
            // Every timer key starts with a key group below 0x8000: [0xff] bounds them all.
            self.db
                .delete_range_cf_opt(cf, &[][..], &[0xffu8][..], &WriteOptions::default())
                .map_err(|e| db_err(format!("emptying `{cf_name}`"), e))?;
        }
        let store = RocksDbTimerStore {
            name: format!("RocksDB timer column family `{cf_name}` in `{}`", self.dir.display()),
            cf: cf_name,
        };
        let (range, max_p) = (self.range, self.max_parallelism);
        CachedTimerQueue::open(store, self, range, max_p, state_timers::DEFAULT_CACHE_SIZE)
    }
}
