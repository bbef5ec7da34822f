//! The memory manager: budgets, reservations, shared resources, configuration checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use state_memory::sizing::{RocksDbMemoryConfig, RocksDbMemoryMode};
use state_memory::{HeapAccounting, MemoryError, MemoryManager, SlotMemory};

#[test]
fn slots_split_the_budget_and_reservations_are_released_on_drop() {
    let m = MemoryManager::new(1000, 3).unwrap();
    assert_eq!(m.slot_count(), 3);
    let s0 = m.slot(0).unwrap();
    let s1 = m.slot(1).unwrap();
    assert_eq!(s0.budget(), 333);
    let mut a = s0.reserve("a", 200).unwrap();
    let _b = s1.reserve("b", 333).unwrap();
    assert_eq!(s0.stats().reserved, 200);
    assert_eq!(s0.stats().free, 133);
    assert_eq!(s1.stats().free, 0);
    a.grow(133).unwrap();
    assert!(a.grow(1).is_err(), "the slot is full");
    assert_eq!(a.size(), 333, "a failed grow changes nothing");
    a.shrink(100);
    assert_eq!(s0.stats().reserved, 233);
    a.resize(50).unwrap();
    assert_eq!(s0.stats().reserved, 50);
    drop(a);
    assert_eq!(s0.stats().reserved, 0);
    assert!(matches!(m.slot(3), Err(MemoryError::NoSuchSlot { index: 3, slots: 3 })));
    assert!(MemoryManager::new(1, 0).is_err());
}

#[test]
fn exhaustion_is_a_typed_error_with_the_figures() {
    let slot = SlotMemory::standalone(100);
    let _held = slot.reserve("first", 70).unwrap();
    match slot.reserve("second", 40) {
        Err(MemoryError::Exhausted {
            slot: 0,
            owner,
            requested: 40,
            available: 30,
            budget: 100,
        }) => assert_eq!(owner, "second"),
        other => panic!("expected exhaustion, got {other:?}"),
    }
    assert_eq!(slot.stats().reserved, 70, "a refused reservation takes nothing");
}

#[test]
fn used_figures_follow_what_holders_report() {
    let slot = SlotMemory::standalone(1000);
    let mut r = slot.reserve("r", 500).unwrap();
    r.set_used(120);
    assert_eq!(slot.stats().used, 120);
    r.set_used(80);
    assert_eq!(slot.stats().used, 80);
    r.shrink(450);
    assert_eq!(slot.stats().used, 50, "used never exceeds the reservation");
    drop(r);
    assert_eq!(slot.stats().used, 0);
}

#[test]
fn reservations_from_many_threads_never_exceed_the_budget() {
    let slot = SlotMemory::standalone(10_000);
    let granted = Arc::new(AtomicUsize::new(0));
    let holders: Vec<_> = (0..8)
        .map(|_| {
            let slot = slot.clone();
            let granted = Arc::clone(&granted);
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for _ in 0..1000 {
                    if let Ok(r) = slot.reserve("t", 7) {
                        granted.fetch_add(7, Ordering::Relaxed);
                        held.push(r);
                    }
                }
                held
            })
        })
        .collect();
    let held: Vec<_> = holders.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let total = granted.load(Ordering::Relaxed) as u64;
    assert!(total <= 10_000);
    assert!(
        total > 10_000 - 7,
        "the budget is used up to the last whole reservation"
    );
    assert_eq!(slot.stats().reserved, total);
    drop(held);
    assert_eq!(slot.stats().reserved, 0);
}

#[test]
fn a_shared_resource_is_created_once_per_slot_and_released_with_the_last_lease() {
    let m = MemoryManager::new(200, 2).unwrap();
    let created = AtomicUsize::new(0);
    let make = |bytes: u64| {
        created.fetch_add(1, Ordering::SeqCst);
        Ok::<_, MemoryError>(bytes)
    };
    let s0 = m.slot(0).unwrap();
    let a = s0.shared_resource("cache", 80, make).unwrap();
    let b = s0.shared_resource("cache", 80, make).unwrap();
    let other_slot = m.slot(1).unwrap().shared_resource("cache", 80, make).unwrap();
    assert_eq!(created.load(Ordering::SeqCst), 2, "one per slot");
    assert!(std::ptr::eq(a.get(), b.get()));
    assert!(!std::ptr::eq(a.get(), other_slot.get()));
    assert_eq!(*a.get(), 80);
    assert_eq!(a.lease_count(), 2);
    assert_eq!(s0.stats().reserved, 80);
    assert!(
        s0.shared_resource::<String, MemoryError>("cache", 1, |_| Ok(String::new()))
            .is_err()
    );
    drop(a);
    assert_eq!(s0.shared_resource_count(), 1);
    drop(b);
    assert_eq!(s0.shared_resource_count(), 0);
    assert_eq!(s0.stats().reserved, 0);
    let _again = s0.shared_resource("cache", 80, make).unwrap();
    assert_eq!(created.load(Ordering::SeqCst), 3, "recreated after release");
    // A resource larger than the slot is refused before it is created.
    assert!(m.slot(1).unwrap().shared_resource("big", 101, make).is_err());
    assert_eq!(created.load(Ordering::SeqCst), 3);
}

#[test]
fn heap_accounting_reserves_ahead_and_refuses_what_does_not_fit() {
    let slot = SlotMemory::standalone(64 * 1000);
    let mut acc = HeapAccounting::new(&slot, "heap");
    acc.charge(10).unwrap();
    assert_eq!(acc.used(), 10);
    assert_eq!(acc.reserved(), 1000, "reserved a chunk (budget / 64) ahead");
    acc.charge(62_990).unwrap();
    assert_eq!(acc.used(), 63_000);
    // 1500 more would need 64_500 > budget: refused, nothing charged.
    assert!(matches!(acc.charge(1500), Err(MemoryError::Exhausted { .. })));
    assert_eq!(acc.used(), 63_000);
    // Up to the exact budget still fits even though a whole chunk would not.
    acc.charge(1000).unwrap();
    assert_eq!(acc.reserved(), 64_000);
    acc.release(60_000);
    assert_eq!(acc.used(), 4000);
    assert!(acc.reserved() <= 5000, "whole unused chunks are given back");
    assert_eq!(slot.stats().used, 4000);
    drop(acc);
    assert_eq!(slot.stats().reserved, 0);
}

#[test]
fn rocksdb_configuration_is_validated() {
    assert!(RocksDbMemoryConfig::builder().build().is_ok());
    for (w, h) in [
        (0.0, 0.1),
        (1.0, 0.1),
        (-0.5, 0.1),
        (0.5, 0.0),
        (0.5, 1.0),
        (f64::NAN, 0.1),
        (0.6, 0.4),
    ] {
        let err = RocksDbMemoryConfig::builder()
            .write_buffer_ratio(w)
            .high_prio_pool_ratio(h)
            .build()
            .unwrap_err();
        assert!(matches!(err, MemoryError::InvalidConfig(_)), "{w} {h}: {err}");
    }
    let bad_fraction = RocksDbMemoryConfig::builder().mode(RocksDbMemoryMode::Managed { fraction: 1.5 });
    assert!(bad_fraction.build().is_err());
    let zero_fixed = RocksDbMemoryConfig::builder().mode(RocksDbMemoryMode::FixedPerSlot { bytes: 0 });
    assert!(zero_fixed.build().is_err());
}

#[test]
fn a_budget_too_small_for_the_write_buffer_size_is_refused() {
    let config = RocksDbMemoryConfig::default(); // 64 MiB write buffers: 8 MiB arena blocks
    let err = config.sizes(8 << 20).unwrap_err().to_string();
    assert!(err.contains("arena block size"), "{err}");
    assert!(err.contains("give at least"), "{err}");
    // The suggested budget is enough.
    let needed: u64 = err
        .split("give at least ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(config.sizes(needed).is_ok());
    assert!(config.sizes(needed - 1).is_err());
    // Smaller write buffers fit smaller budgets.
    let small = RocksDbMemoryConfig::builder()
        .write_buffer_size(1 << 20)
        .build()
        .unwrap();
    let sizes = small.sizes(8 << 20).unwrap();
    assert_eq!(sizes.cache_capacity, 6_990_506);
    assert_eq!(sizes.write_buffer_manager_capacity, 2_796_202);
    assert_eq!(sizes.high_priority_bytes(), 699_050);
}
