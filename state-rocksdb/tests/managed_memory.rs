//! Managed memory wired into the RocksDB backend: one cache and write-buffer manager per
//! slot shared by every instance, the high-priority pool in effect, release with the last
//! instance, and RocksDB's usage bounded by the budget.

use state_api::{BackendContext, KeyedStateBackend, ValueStateDescriptor};
use state_memory::rocksdb::RocksDbMemory;
use state_memory::sizing::{RocksDbMemoryConfig, RocksDbMemoryMode};
use state_memory::{MemoryManager, SlotMemory};
use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};

fn backend(memory: &RocksDbMemory) -> RocksDbKeyedStateBackend<u64> {
    RocksDbKeyedStateBackend::new(
        &BackendContext::single(128),
        RocksDbConfig::default().with_memory(memory.clone()),
    )
    .unwrap()
}

#[test]
fn instances_in_a_slot_share_one_cache_and_write_buffer_manager() {
    let manager = MemoryManager::new(128 << 20, 2).unwrap();
    let slot = manager.slot(0).unwrap();
    let config = RocksDbMemoryConfig::default();
    let m1 = RocksDbMemory::for_slot(&slot, &config).unwrap();
    let m2 = RocksDbMemory::for_slot(&slot, &config).unwrap();
    let other = RocksDbMemory::for_slot(&manager.slot(1).unwrap(), &config).unwrap();
    let (s1, s2) = (m1.shared().unwrap(), m2.shared().unwrap());
    assert!(std::ptr::eq(s1, s2), "one shared resource per slot");
    assert!(!std::ptr::eq(s1, other.shared().unwrap()), "slots do not share");
    assert_eq!(
        slot.stats().reserved,
        64 << 20,
        "the slot's managed memory is reserved once"
    );
    let usage = s1.usage();
    assert_eq!(usage.cache_capacity, 55_924_053);
    assert_eq!(usage.write_buffer_capacity, 22_369_621);

    let mut a = backend(&m1);
    let mut b = backend(&m2);
    for backend in [&mut a, &mut b] {
        let v = backend.register(ValueStateDescriptor::<Vec<u8>>::new("v")).unwrap();
        for k in 0..200u64 {
            backend.set_current_key(&k).unwrap();
            backend.value(&v).update(vec![1; 1000]).unwrap();
        }
    }
    let mem_a = a
        .db()
        .property_int_value("rocksdb.cur-size-all-mem-tables")
        .unwrap()
        .unwrap();
    let mem_b = b
        .db()
        .property_int_value("rocksdb.cur-size-all-mem-tables")
        .unwrap()
        .unwrap();
    let shared = s1.usage();
    assert!(
        shared.memtable_usage >= mem_a + mem_b,
        "the write-buffer manager counts both instances' memtables: {} < {mem_a} + {mem_b}",
        shared.memtable_usage
    );
    assert!(
        shared.cache_usage >= shared.memtable_usage / 2,
        "memtables are charged to the cache: {shared:?}"
    );

    // Released when the last user (backends hold clones of the lease) is gone.
    drop((m1, m2));
    assert_eq!(slot.shared_resource_count(), 1, "the backends still hold it");
    drop(a);
    assert_eq!(slot.stats().reserved, 64 << 20);
    drop(b);
    assert_eq!(slot.shared_resource_count(), 0);
    assert_eq!(slot.stats().reserved, 0);
}

#[test]
fn the_high_priority_pool_ratio_takes_effect_in_rocksdb() {
    for ratio in [0.1, 0.25] {
        let slot = SlotMemory::standalone(64 << 20);
        let memory = RocksDbMemory::for_slot(
            &slot,
            &RocksDbMemoryConfig::builder()
                .write_buffer_ratio(0.5)
                .high_prio_pool_ratio(ratio)
                .build()
                .unwrap(),
        )
        .unwrap();
        let shared = memory.shared().unwrap();
        // Read back from RocksDB's own description of the cache, not from our config.
        assert_eq!(
            shared.high_prio_pool_ratio_in_effect(),
            Some(ratio),
            "{}",
            shared.cache_printable_options()
        );
        let config = RocksDbConfig::default().with_memory(memory.clone());
        assert!(shared.is_applied(&config.options()));
        assert!(!shared.is_applied(&RocksDbConfig::default().options()));
    }
}

#[test]
fn index_and_filter_blocks_are_cached_in_the_shared_cache() {
    let slot = SlotMemory::standalone(64 << 20);
    let memory = RocksDbMemory::for_slot(&slot, &RocksDbMemoryConfig::default()).unwrap();
    let mut b = backend(&memory);
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    for k in 0..20_000u64 {
        b.set_current_key(&k).unwrap();
        b.value(&v).update(k).unwrap();
    }
    b.db().flush_cf(b.db().cf_handle("s/v").unwrap()).unwrap();
    let before = memory.shared().unwrap().usage().cache_usage;
    for k in (0..20_000u64).step_by(97) {
        b.set_current_key(&k).unwrap();
        assert_eq!(b.value(&v).get().unwrap(), Some(k));
    }
    let after = memory.shared().unwrap().usage();
    assert!(
        after.cache_usage > before,
        "reads load blocks into the shared cache: {before} -> {after:?}"
    );
    let block_cache = b.db().property_int_value("rocksdb.block-cache-usage").unwrap().unwrap();
    assert_eq!(block_cache, after.cache_usage, "the DB reports the shared cache");
}

#[test]
fn fixed_per_slot_and_unmanaged_modes() {
    let slot = SlotMemory::standalone(64 << 20);
    let fixed = RocksDbMemoryConfig::builder()
        .mode(RocksDbMemoryMode::FixedPerSlot { bytes: 48 << 20 })
        .build()
        .unwrap();
    let m = RocksDbMemory::for_slot(&slot, &fixed).unwrap();
    assert_eq!(m.shared().unwrap().usage().cache_capacity, 41_943_040);
    assert_eq!(
        slot.stats().reserved,
        0,
        "fixed-per-slot memory is outside the slot budget"
    );
    let unmanaged = RocksDbMemoryConfig::builder()
        .mode(RocksDbMemoryMode::Unmanaged)
        .build()
        .unwrap();
    let u = RocksDbMemory::for_slot(&slot, &unmanaged).unwrap();
    assert!(u.shared().is_none());
    let mut b = backend(&u);
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    b.set_current_key(&1).unwrap();
    b.value(&v).update(1).unwrap();
    // A budget too small for the write-buffer size is a clear error, not a silent misconfiguration.
    let tiny = SlotMemory::standalone(4 << 20);
    let err = RocksDbMemory::for_slot(&tiny, &RocksDbMemoryConfig::default()).unwrap_err();
    assert!(err.to_string().contains("arena block size"), "{err}");
    assert_eq!(tiny.stats().reserved, 0);
}
