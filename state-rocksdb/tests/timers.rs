//! Timers on the RocksDB backend: the timer-queue conformance cases on the column-family
//! storage, and the service cases with RocksDB timers and with heap timers.

use state_api::testkit::TimerQueueFactory;
use state_api::{BackendContext, CheckpointStorage, KeyGroupRange, KeyedSnapshotHandle, KeyedStateBackend};
use state_rocksdb::{
    RocksDbBackendTimerQueue, RocksDbConfig, RocksDbKeyedStateBackend, RocksDbTimerQueue, RocksDbTimerStorage,
};
use state_timers::testkit::TimerHarness;

struct CfQueue;

impl TimerQueueFactory for CfQueue {
    type Host = RocksDbKeyedStateBackend<u64>;
    type Queue = RocksDbTimerQueue;
    fn create(&self, range: KeyGroupRange, max_parallelism: u32) -> (Self::Host, Self::Queue) {
        let ctx = BackendContext::new(range, max_parallelism).unwrap();
        let mut b = RocksDbKeyedStateBackend::new(&ctx, RocksDbConfig::default()).unwrap();
        let q = b.create_rocksdb_timer_queue("q").unwrap();
        (b, q)
    }
}

mod queue {
    state_api::timer_queue_conformance_tests!(super::CfQueue);
}

struct Rocks(RocksDbTimerStorage);

impl Rocks {
    fn config(&self) -> RocksDbConfig {
        RocksDbConfig {
            timer_storage: self.0,
            ..RocksDbConfig::default()
        }
    }
}

impl TimerHarness for Rocks {
    type Backend = RocksDbKeyedStateBackend<u64>;
    type Queue = RocksDbBackendTimerQueue;

    fn backend(&self, ctx: &BackendContext) -> Self::Backend {
        RocksDbKeyedStateBackend::new(ctx, self.config()).unwrap()
    }

    fn backend_restored(
        &self,
        ctx: &BackendContext,
        handles: &[KeyedSnapshotHandle],
        storage: &dyn CheckpointStorage,
    ) -> Self::Backend {
        RocksDbKeyedStateBackend::restore(ctx, self.config(), handles, storage).unwrap()
    }

    fn queue(&self, backend: &mut Self::Backend, name: &str) -> Self::Queue {
        let q = backend.create_timer_queue(name).unwrap();
        assert_eq!(
            matches!(q, state_timers::EitherQueue::Right(_)),
            self.0 == RocksDbTimerStorage::RocksDb,
            "the configured storage"
        );
        assert_eq!(
            backend.key_group_range(),
            state_api::TimerQueueInfo::key_group_range(&q)
        );
        q
    }
}

mod rocksdb_timers {
    state_timers::timer_service_tests!(super::Rocks(state_rocksdb::RocksDbTimerStorage::RocksDb));
}

mod heap_timers {
    state_timers::timer_service_tests!(super::Rocks(state_rocksdb::RocksDbTimerStorage::Heap));
}

#[test]
fn rocksdb_timers_use_the_frozen_key_layout() {
    use state_api::{TimerEntry, TimerQueue};
    let mut b = RocksDbKeyedStateBackend::<u64>::new(&BackendContext::single(128), RocksDbConfig::default()).unwrap();
    let mut q = b.create_rocksdb_timer_queue("layout").unwrap();
    let e = TimerEntry {
        timestamp: -2,
        key_group: 5,
        key: vec![9],
        namespace: vec![7, 7],
    };
    q.add(&mut b, &e).unwrap();
    let cf = b.db().cf_handle("_timers/layout").unwrap();
    let stored: Vec<_> = b
        .db()
        .iterator_cf(cf, rocksdb::IteratorMode::Start)
        .map(|r| r.unwrap())
        .collect();
    let mut key = vec![5u8];
    key.extend_from_slice(&((-2i64 as u64) ^ (1 << 63)).to_be_bytes());
    key.extend_from_slice(&[9, 7, 7]);
    assert_eq!(stored.len(), 1);
    assert_eq!(&*stored[0].0, key.as_slice(), "[kg][ts BE, sign flipped][key][ns]");
    assert_eq!(&*stored[0].1, &[1u8], "value: the key length");
    // A fresh queue of the same name starts empty.
    let q2 = b.create_rocksdb_timer_queue("layout").unwrap();
    assert!(state_api::TimerQueueInfo::is_empty(&q2));
}
