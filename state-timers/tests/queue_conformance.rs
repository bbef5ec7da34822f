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
