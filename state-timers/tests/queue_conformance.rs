//! The timer-queue conformance cases on the heap and LMDB storages.

use state_api::KeyGroupRange;
use state_api::testkit::TimerQueueFactory;
use state_timers::{HeapTimerQueue, LmdbConfig, LmdbTimerQueue, LmdbTimerStore};

struct Heap;

impl TimerQueueFactory for Heap {
    type Host = ();
    type Queue = HeapTimerQueue;
    fn create(&self, range: KeyGroupRange, _max_parallelism: u32) -> ((), HeapTimerQueue) {
        ((), HeapTimerQueue::new(range))
    }
}

/// LMDB with a small per-key-group cache, so the cases exercise refills from disk.
struct Lmdb;

impl TimerQueueFactory for Lmdb {
    type Host = ();
    type Queue = LmdbTimerQueue;
    fn create(&self, range: KeyGroupRange, max_parallelism: u32) -> ((), LmdbTimerQueue) {
        let config = LmdbConfig {
            cache_size: 4,
            map_size: 1 << 30,
            ..LmdbConfig::default()
        };
        ((), LmdbTimerStore::queue(&config, range, max_parallelism).unwrap())
    }
}

mod heap {
    state_api::timer_queue_conformance_tests!(super::Heap);
}

mod lmdb {
    state_api::timer_queue_conformance_tests!(super::Lmdb);
}

/// An ordered store in memory that counts the reads the queue asks of it.
#[derive(Default)]
struct CountingStore {
    map: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    counts: std::sync::Arc<std::sync::Mutex<Counts>>,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Counts {
    /// `insert` / `remove`: the store is asked whether the key is there.
    checked_inserts: usize,
    checked_removes: usize,
    /// `insert_new` / `remove_known`: written without a read.
    blind_inserts: usize,
    blind_removes: usize,
    /// The start key of every scan that began past its prefix.
    scans_from_inside: Vec<Vec<u8>>,
}

impl state_timers::OrderedTimerStore<()> for CountingStore {
    fn name(&self) -> &str {
        "counting store"
    }
    fn insert(&mut self, _: &mut (), key: &[u8], value: &[u8]) -> state_api::Result<bool> {
        self.counts.lock().unwrap().checked_inserts += 1;
        if self.map.contains_key(key) {
            return Ok(false);
        }
        self.map.insert(key.to_vec(), value.to_vec());
        Ok(true)
    }
    fn insert_new(&mut self, _: &mut (), key: &[u8], value: &[u8]) -> state_api::Result<()> {
        self.counts.lock().unwrap().blind_inserts += 1;
        assert!(
            self.map.insert(key.to_vec(), value.to_vec()).is_none(),
            "insert_new of a stored key"
        );
        Ok(())
    }
    fn remove(&mut self, _: &mut (), key: &[u8]) -> state_api::Result<bool> {
        self.counts.lock().unwrap().checked_removes += 1;
        Ok(self.map.remove(key).is_some())
    }
    fn remove_known(&mut self, _: &mut (), key: &[u8]) -> state_api::Result<()> {
        self.counts.lock().unwrap().blind_removes += 1;
        assert!(self.map.remove(key).is_some(), "remove_known of a key not stored");
        Ok(())
    }
    fn scan_prefix(
        &mut self,
        _: &mut (),
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> state_api::Result<state_timers::StoreEntries> {
        assert!(from >= prefix, "a scan starts inside its prefix");
        if from != prefix {
            self.counts.lock().unwrap().scans_from_inside.push(from.to_vec());
        }
        Ok(self
            .map
            .range(from.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn pin(&mut self, _: &mut ()) -> state_api::Result<Box<dyn state_timers::PinnedStore>> {
        Ok(Box::new(PinnedMap(self.map.clone())))
    }
}

struct PinnedMap(std::collections::BTreeMap<Vec<u8>, Vec<u8>>);

impl state_timers::PinnedStore for PinnedMap {
    fn scan_prefix(&self, prefix: &[u8]) -> state_api::Result<state_timers::StoreEntries> {
        Ok(self
            .0
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// The cached queue over the counting store, with a cache of 4 timers per key group.
struct Counting;

impl TimerQueueFactory for Counting {
    type Host = ();
    type Queue = state_timers::CachedTimerQueue<CountingStore>;
    fn create(&self, range: KeyGroupRange, max_parallelism: u32) -> ((), Self::Queue) {
        let q = state_timers::CachedTimerQueue::open(CountingStore::default(), &mut (), range, max_parallelism, 4);
        ((), q.unwrap())
    }
}

mod cached_in_memory {
    state_api::timer_queue_conformance_tests!(super::Counting);
}

/// The cache answers what it can: adds below the cached timers and every poll write
/// without reading, and a key group's refill starts after the timer just polled.
#[test]
fn the_cache_spares_store_reads_and_refills_past_deleted_timers() {
    use state_api::{TimerEntry, TimerQueue, TimerQueueInfo};
    let store = CountingStore::default();
    let counts = store.counts.clone();
    let range = KeyGroupRange::new(5, 5);
    let mut q = state_timers::CachedTimerQueue::open(store, &mut (), range, 128, 4).unwrap();
    let t = |ts: i64| TimerEntry {
        timestamp: ts,
        key_group: 5,
        key: vec![1],
        namespace: vec![],
    };
    // The empty key group's cache is complete: the first four adds need no read.
    for ts in [40, 30, 20, 10] {
        assert!(q.add(&mut (), &t(ts)).unwrap());
    }
    assert_eq!(counts.lock().unwrap().blind_inserts, 4);
    // A fifth timer overflows the cache (which drops 40 and becomes incomplete).
    assert!(q.add(&mut (), &t(50)).unwrap());
    // Past the cached timers the store must be asked; below them it need not.
    assert!(q.add(&mut (), &t(60)).unwrap());
    assert!(
        !q.add(&mut (), &t(50)).unwrap(),
        "a duplicate past the cache is found in the store"
    );
    assert!(q.add(&mut (), &t(15)).unwrap());
    assert!(
        !q.add(&mut (), &t(15)).unwrap(),
        "a duplicate in the cache is found there"
    );
    {
        let c = counts.lock().unwrap();
        assert_eq!(c.checked_inserts, 2, "{c:?}");
        assert_eq!(c.blind_inserts, 6, "{c:?}");
    }
    let mut polled = Vec::new();
    while let Some(e) = q.poll(&mut ()).unwrap() {
        polled.push(e.timestamp);
    }
    assert_eq!(polled, vec![10, 15, 20, 30, 40, 50, 60]);
    assert_eq!(q.len(), 0);
    let c = counts.lock().unwrap().clone();
    assert_eq!((c.blind_removes, c.checked_removes), (7, 0), "{c:?}");
    // Refills began at the timer whose deletion emptied the cache, not at the key
    // group's start (where a store like RocksDB keeps the tombstones of polled timers).
    assert!(!c.scans_from_inside.is_empty(), "{c:?}");
    for from in &c.scans_from_inside {
        let key = t(0).encode_key(128);
        assert_eq!(&from[..2], &key[..2], "a refill stays in its key group");
        assert!(polled.iter().any(|&ts| t(ts).encode_key(128) == *from), "{from:?}");
    }
}
