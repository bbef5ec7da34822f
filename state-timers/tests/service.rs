//! The service-level timer cases on the heap backend with heap and with LMDB timers.

use state_api::{BackendContext, CheckpointStorage, KeyedSnapshotHandle};
use state_heap::HeapKeyedStateBackend;
use state_timers::testkit::TimerHarness;
use state_timers::{LmdbConfig, StandaloneTimerQueue, TimerStorage};

struct Heap(TimerStorage);

impl TimerHarness for Heap {
    type Backend = HeapKeyedStateBackend<u64>;
    type Queue = StandaloneTimerQueue;

    fn backend(&self, ctx: &BackendContext) -> Self::Backend {
        HeapKeyedStateBackend::new(ctx).unwrap()
    }

    fn backend_restored(
        &self,
        ctx: &BackendContext,
        handles: &[KeyedSnapshotHandle],
        storage: &dyn CheckpointStorage,
    ) -> Self::Backend {
        HeapKeyedStateBackend::restore(ctx, handles, storage).unwrap()
    }

    fn queue(&self, backend: &mut Self::Backend, _name: &str) -> Self::Queue {
        use state_api::KeyedStateBackend;
        self.0
            .create_queue(backend.key_group_range(), backend.max_parallelism())
            .unwrap()
    }
}

mod heap_timers {
    state_timers::timer_service_tests!(super::Heap(state_timers::TimerStorage::Heap));
}

mod lmdb_timers {
    state_timers::timer_service_tests!(super::Heap(state_timers::TimerStorage::Lmdb(super::LmdbConfig {
        cache_size: 8,
        map_size: 1 << 30,
        ..Default::default()
    })));
}
