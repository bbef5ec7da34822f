//! The heap backend bounded by a managed-memory budget: updates that do not fit fail
//! with a typed error and lose nothing; clearing and removing give memory back; the
//! whole conformance suite passes with a budget.

use state_api::{
    BackendContext, CheckpointStorage, ErrorKind, KeyedBackendFactory, KeyedSnapshotHandle, KeyedStateBackend,
    ListStateDescriptor, MapStateDescriptor, Result, StateError, StateKey, ValueStateDescriptor,
};
use state_heap::{HeapKeyedStateBackend, MemoryCheckpointStorage};
use state_memory::{MemoryError, SlotMemory};

/// The heap backend with a generous budget: the conformance suite must behave the same.
struct BudgetedHeap(SlotMemory);

impl BudgetedHeap {
    fn new() -> Self {
        BudgetedHeap(SlotMemory::standalone(4 << 30))
    }
}

impl KeyedBackendFactory for BudgetedHeap {
    type Backend<K: StateKey> = HeapKeyedStateBackend<K>;

    fn name(&self) -> &str {
        "heap with a memory budget"
    }

    fn create<K: StateKey>(&self, ctx: &BackendContext) -> Result<HeapKeyedStateBackend<K>> {
        HeapKeyedStateBackend::new(ctx)?.with_memory(&self.0)
    }

    fn restore<K: StateKey>(
        &self,
        ctx: &BackendContext,
        handles: &[KeyedSnapshotHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<HeapKeyedStateBackend<K>> {
        HeapKeyedStateBackend::restore(ctx, handles, storage)?.with_memory(&self.0)
    }
}

state_api::conformance_tests!(BudgetedHeap::new());

fn backend(budget: u64) -> (SlotMemory, HeapKeyedStateBackend<u32>) {
    let slot = SlotMemory::standalone(budget);
    let b = HeapKeyedStateBackend::new(&BackendContext::single(128))
        .unwrap()
        .with_memory(&slot)
        .unwrap();
    (slot, b)
}

fn is_exhausted(e: &StateError) -> bool {
    // The memory manager's own error (naming the slot and the owner) stays the source.
    let source = std::error::Error::source(e).and_then(|s| s.downcast_ref::<MemoryError>());
    e.kind() == ErrorKind::ResourceExhausted
        && matches!(source, Some(MemoryError::Exhausted { .. }))
        && matches!(e, StateError::MemoryExhausted { requested, available, budget, .. } if requested > available && *budget > 0)
}

#[test]
fn value_updates_stop_at_the_budget_and_lose_nothing() {
    let (slot, mut b) = backend(1 << 20);
    let v = b.register(ValueStateDescriptor::<Vec<u8>>::new("v")).unwrap();
    let mut stored = 0u32;
    let err = loop {
        b.set_current_key(&stored).unwrap();
        match b.value(&v).update(vec![7u8; 10_000]) {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 1000, "the budget never stopped the writes");
    };
    assert!(is_exhausted(&err), "{err}");
    assert!((90..=104).contains(&stored), "about 1 MiB of 10 KB values: {stored}");
    // The refused key has nothing, every earlier key still has its value.
    b.set_current_key(&stored).unwrap();
    assert_eq!(b.value(&v).get().unwrap(), None);
    for k in 0..stored {
        b.set_current_key(&k).unwrap();
        assert_eq!(b.value(&v).get().unwrap().map(|x| x.len()), Some(10_000));
    }
    assert!(slot.stats().reserved <= slot.budget());
    assert!(slot.stats().used >= u64::from(stored) * 10_000);
    // Overwriting with a smaller value frees room for one more key.
    b.set_current_key(&0).unwrap();
    b.value(&v).update(vec![1]).unwrap();
    b.set_current_key(&stored).unwrap();
    b.value(&v).update(vec![7u8; 9_000]).unwrap();
    // Clearing gives memory back.
    let before = b.memory_used().unwrap();
    for k in 0..=stored {
        b.set_current_key(&k).unwrap();
        b.value(&v).clear().unwrap();
    }
    assert!(
        b.memory_used().unwrap() < before / 50,
        "{} of {before}",
        b.memory_used().unwrap()
    );
    assert_eq!(b.memory_used().unwrap(), b.estimated_bytes());
}

#[test]
fn list_and_map_updates_are_bounded_too() {
    let (_slot, mut b) = backend(256 << 10);
    let list = b.register(ListStateDescriptor::<String>::new("l")).unwrap();
    let map = b.register(MapStateDescriptor::<u64, String>::new("m")).unwrap();
    b.set_current_key(&1).unwrap();
    let mut n = 0;
    let err = loop {
        match b.list(&list).add("x".repeat(1000)) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(is_exhausted(&err));
    assert_eq!(
        b.list(&list).get().unwrap().len(),
        n,
        "the refused element was not added"
    );
    b.list(&list).clear().unwrap();
    let mut m = 0u64;
    let err = loop {
        match b.map(&map).put(m, "y".repeat(1000)) {
            Ok(()) => m += 1,
            Err(e) => break e,
        }
    };
    assert!(is_exhausted(&err));
    assert!(
        m as usize >= n / 2,
        "the list's memory was given back: {m} map entries after {n} list elements"
    );
    assert_eq!(b.map(&map).get(&m).unwrap(), None);
    assert_eq!(b.map(&map).get(&0).unwrap().map(|s| s.len()), Some(1000));
    for k in 0..m / 2 {
        b.map(&map).remove(&k).unwrap();
    }
    b.map(&map).put(m, "y".repeat(1000)).unwrap();
    assert_eq!(b.memory_used().unwrap(), b.estimated_bytes());
}

#[test]
fn restored_state_is_charged_and_a_too_small_budget_is_refused() {
    let (_slot, mut b) = backend(64 << 20);
    let v = b.register(ValueStateDescriptor::<String>::new("v")).unwrap();
    for k in 0..2000u32 {
        b.set_current_key(&k).unwrap();
        b.value(&v).update("z".repeat(500)).unwrap();
    }
    let storage = MemoryCheckpointStorage::with_max_state_size(64 << 20);
    let handle = b.snapshot(1).unwrap().run(&storage).unwrap();
    let ctx = BackendContext::single(128);
    let small = SlotMemory::standalone(100 << 10);
    let err = HeapKeyedStateBackend::<u32>::restore(&ctx, std::slice::from_ref(&handle), &storage)
        .unwrap()
        .with_memory(&small)
        .unwrap_err();
    assert!(is_exhausted(&err), "{err}");
    assert_eq!(small.stats().reserved, 0, "a refused restore holds nothing");
    let big = SlotMemory::standalone(64 << 20);
    let mut r = HeapKeyedStateBackend::<u32>::restore(&ctx, &[handle], &storage)
        .unwrap()
        .with_memory(&big)
        .unwrap();
    let raw = r.memory_used().unwrap();
    assert!(raw >= 1_000_000, "the restored bytes are charged: {raw}");
    let v = r.register(ValueStateDescriptor::<String>::new("v")).unwrap();
    assert_eq!(r.memory_used().unwrap(), r.estimated_bytes());
    r.set_current_key(&5).unwrap();
    assert_eq!(r.value(&v).get().unwrap().map(|s| s.len()), Some(500));
    drop(r);
    assert_eq!(big.stats().reserved, 0, "dropping the backend gives its memory back");
}
