//! Cases: TTL semantics (Flink's `StateTtlConfig`).

use std::time::Duration;

use super::TestStorage;
use super::{ctx_all, snap};
use crate::backend::{KeyedBackendFactory, KeyedStateBackend};
use crate::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
#[allow(unused_imports)]
use crate::snapshot::CheckpointStorage;
use crate::ttl::{TtlConfig, TtlUpdateType, TtlVisibility};

fn ttl(ms: u64) -> TtlConfig {
    TtlConfig::new(Duration::from_millis(ms)).cleanup_incrementally(0)
}

pub fn ttl_value_expires<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let (ctx, clock) = ctx_all();
    let mut b = f.create::<String>(&ctx).unwrap();
    let h = b
        .register(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl(1000)))
        .unwrap();
    b.set_current_key(&"a".to_string()).unwrap();
    b.value(&h).update(1).unwrap();
    clock.advance(999);
    assert_eq!(b.value(&h).get().unwrap(), Some(1), "alive just before the TTL");
    clock.advance(1);
    assert_eq!(b.value(&h).get().unwrap(), None, "expired at last access + TTL");
    assert!(b.keys(&h).unwrap().is_empty(), "reading an expired value cleans it up");
}

pub fn ttl_read_refreshes_when_configured<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let (ctx, clock) = ctx_all();
    let mut b = f.create::<String>(&ctx).unwrap();
    let on_read = b
        .register(ValueStateDescriptor::<u64>::new("r").with_ttl(ttl(1000).update_type(TtlUpdateType::OnReadAndWrite)))
        .unwrap();
    let on_write = b
        .register(ValueStateDescriptor::<u64>::new("w").with_ttl(ttl(1000)))
        .unwrap();
    b.set_current_key(&"a".to_string()).unwrap();
    b.value(&on_read).update(1).unwrap();
    b.value(&on_write).update(2).unwrap();
    clock.advance(600);
    assert_eq!(b.value(&on_read).get().unwrap(), Some(1));
    assert_eq!(b.value(&on_write).get().unwrap(), Some(2));
    clock.advance(600);
    assert_eq!(
        b.value(&on_read).get().unwrap(),
        Some(1),
        "the read 600 ms ago refreshed it"
    );
    assert_eq!(
        b.value(&on_write).get().unwrap(),
        None,
        "reads do not refresh OnCreateAndWrite"
    );
}

pub fn ttl_return_expired_if_not_cleaned_up<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let (ctx, clock) = ctx_all();
    let mut b = f.create::<String>(&ctx).unwrap();
    let h = b
        .register(
            ValueStateDescriptor::<u64>::new("v")
                .with_ttl(ttl(1000).visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp)),
        )
        .unwrap();
    b.set_current_key(&"a".to_string()).unwrap();
    b.value(&h).update(5).unwrap();
    clock.advance(5000);
    assert_eq!(b.value(&h).get().unwrap(), Some(5), "returned while not cleaned up");
    assert_eq!(b.value(&h).get().unwrap(), None, "the read cleaned it up");
}

pub fn ttl_list_elements_expire_individually<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let (ctx, clock) = ctx_all();
    let mut b = f.create::<String>(&ctx).unwrap();
    let h = b
        .register(ListStateDescriptor::<u32>::new("l").with_ttl(ttl(1000)))
        .unwrap();
    b.set_current_key(&"a".to_string()).unwrap();
    b.list(&h).add(1).unwrap();
    clock.advance(600);
    b.list(&h).add(2).unwrap();
    clock.advance(500);
    assert_eq!(b.list(&h).get().unwrap(), vec![2]);
    clock.advance(600);
    assert!(b.list(&h).get().unwrap().is_empty());
    assert!(b.keys(&h).unwrap().is_empty());
}

pub fn ttl_map_entries_expire_individually<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let (ctx, clock) = ctx_all();
    let mut b = f.create::<String>(&ctx).unwrap();
    let h = b
        .register(MapStateDescriptor::<u32, u32>::new("m").with_ttl(ttl(1000)))
        .unwrap();
    b.set_current_key(&"a".to_string()).unwrap();
    b.map(&h).put(1, 10).unwrap();
    clock.advance(600);
    b.map(&h).put(2, 20).unwrap();
    clock.advance(500);
    assert_eq!(b.map(&h).get(&1).unwrap(), None);
    assert!(!b.map(&h).contains(&1).unwrap());
    assert_eq!(b.map(&h).entries().unwrap(), vec![(2, 20)]);
    clock.advance(600);
    assert!(b.map(&h).is_empty().unwrap());
}

pub fn ttl_full_snapshot_cleanup_leaves_expired_out<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let (ctx, clock) = ctx_all();
    let mut b = f.create::<u64>(&ctx).unwrap();
    let clean = b
        .register(ValueStateDescriptor::<u64>::new("clean").with_ttl(ttl(1000).cleanup_full_snapshot()))
        .unwrap();
    let keep = b
        .register(ValueStateDescriptor::<u64>::new("keep").with_ttl(ttl(1000)))
        .unwrap();
    for k in 0..20u64 {
        if k == 10 {
            clock.advance(600);
        }
        b.set_current_key(&k).unwrap();
        b.value(&clean).update(k).unwrap();
        b.value(&keep).update(k).unwrap();
    }
    clock.advance(500); // keys 0..10 are expired now
    let storage = new_storage();
    let handle = snap(&mut b, 1, &storage);
    assert_eq!(
        b.keys(&clean).unwrap().len(),
        20,
        "the live state keeps expired entries until accessed"
    );
    let mut r = f.restore::<u64>(&ctx, &[handle], &storage).unwrap();
    let clean = r
        .register(ValueStateDescriptor::<u64>::new("clean").with_ttl(ttl(1000).cleanup_full_snapshot()))
        .unwrap();
    let keep = r
        .register(ValueStateDescriptor::<u64>::new("keep").with_ttl(ttl(1000)))
        .unwrap();
    let mut restored = r.keys(&clean).unwrap();
    restored.sort();
    assert_eq!(restored, (10..20).collect::<Vec<_>>());
    assert_eq!(
        r.keys(&keep).unwrap().len(),
        20,
        "without the option, snapshots keep expired entries"
    );
    r.set_current_key(&15).unwrap();
    assert_eq!(
        r.value(&clean).get().unwrap(),
        Some(15),
        "timestamps survive the snapshot"
    );
}

pub fn ttl_incremental_cleanup_removes_untouched_entries<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let (ctx, clock) = ctx_all();
    let mut b = f.create::<u64>(&ctx).unwrap();
    let h = b
        .register(
            ValueStateDescriptor::<u64>::new("v")
                .with_ttl(TtlConfig::new(Duration::from_millis(1000)).cleanup_incrementally(5)),
        )
        .unwrap();
    for k in 0..100u64 {
        b.set_current_key(&k).unwrap();
        b.value(&h).update(k).unwrap();
    }
    clock.advance(2000);
    // Only key 1000 is ever accessed again; the other 100 expire untouched.
    b.set_current_key(&1000).unwrap();
    for i in 0..300u64 {
        b.value(&h).update(i).unwrap();
    }
    assert_eq!(
        b.keys(&h).unwrap(),
        vec![1000u64],
        "incremental cleanup removed the expired keys"
    );
}
