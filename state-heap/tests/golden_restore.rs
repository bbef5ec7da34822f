//! The heap backend restores the committed canonical-format fixture of state-api
//! (written once by format version 1) into typed state.

use std::sync::Arc;
use std::time::Duration;

use state_api::{
    BackendContext, KeyGroupRange, KeyedSnapshotHandle, KeyedStateBackend, ListStateDescriptor, ManualClock,
    MapStateDescriptor, StreamHandle, TtlConfig, ValueStateDescriptor,
};
use state_heap::{HeapKeyedStateBackend, MemoryCheckpointStorage};

#[test]
fn heap_restores_the_v1_fixture() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../state-api/tests/fixtures/keyed-v1.bin"
    ))
    .unwrap();
    let handle = KeyedSnapshotHandle {
        checkpoint_id: 7,
        key_group_range: KeyGroupRange::new(94, 98),
        key_group_offsets: Vec::new(),
        stream: StreamHandle::Inline { bytes },
    };
    let ctx = BackendContext::single(128).with_clock(Arc::new(ManualClock::new(10_000)));
    let mut b = HeapKeyedStateBackend::<String>::restore(&ctx, &[handle], &MemoryCheckpointStorage::default()).unwrap();
    let count = b.register(ValueStateDescriptor::<u64>::new("count")).unwrap();
    let recent = b
        .register(ListStateDescriptor::<String>::new("recent").with_ttl(TtlConfig::new(Duration::from_secs(60))))
        .unwrap();
    let bids = b
        .register(MapStateDescriptor::<u32, u64>::new("bids").in_namespace::<i64>())
        .unwrap();
    for key in ["🦀 crab", "alice", "bob"] {
        b.set_current_key(&key.to_string()).unwrap();
        assert_eq!(b.value(&count).get().unwrap(), Some(key.len() as u64));
        assert_eq!(b.list(&recent).get().unwrap(), vec![key.to_string(), format!("{key}!")]);
        let mut entries = b.map_in(&bids, &-5).entries().unwrap();
        entries.sort();
        assert_eq!(entries, vec![(1, 10), (2, 20)]);
    }
}
