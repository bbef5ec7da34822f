//! Cases: schema evolution. A restored state whose type changed is registered as is
//! (identical or compatible structure), through a migration, or refused with a typed
//! error at registration; never decoded into wrong values.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{TestStorage, TestWindow, ctx_all, restore_all, restore_subtask, snap};
use crate::backend::{BackendContext, KeyedBackendFactory, KeyedStateBackend};
use crate::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use crate::error::StateError;
use crate::keygroup::KeyGroupRange;
use crate::schema::Schema;
use crate::snapshot::{KeyedSnapshotHandle, StreamHandle};
use crate::state::StateValue;
use crate::ttl::{ManualClock, TtlConfig};

/// The type the states are written with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointV1 {
    pub x: i64,
    pub y: i64,
}

/// `PointV1` renamed: the same structure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenamedPoint {
    pub x: i64,
    pub y: i64,
}

/// A field added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointAdded {
    pub x: i64,
    pub y: i64,
    pub z: i64,
}

/// A field removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRemoved {
    pub x: i64,
}

/// The fields reordered: postcard would read `x` into `y` and `y` into `x`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointReordered {
    pub y: i64,
    pub x: i64,
}

/// A field's type changed (`i32` and `i64` share postcard's zigzag varint for small values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRetyped {
    pub x: i32,
    pub y: i64,
}

/// An enum as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShapeV1 {
    Circle(u32),
    Square(u32),
}

/// A variant appended: old values read as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShapeV2 {
    Circle(u32),
    Square(u32),
    Triangle(u32),
}

/// A variant inserted before the others: old variant indexes now mean other variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShapeInserted {
    Dot,
    Circle(u32),
    Square(u32),
}

const KEYS: u64 = 40;

fn point(k: u64) -> PointV1 {
    PointV1 {
        x: k as i64,
        y: -(k as i64) * 3,
    }
}

fn ttl() -> TtlConfig {
    TtlConfig::new(Duration::from_secs(3600))
}

/// Writes value, list, map and TTL value states of `PointV1` and an enum state for
/// `KEYS` keys; returns the snapshot.
fn written<F: KeyedBackendFactory, S: TestStorage>(f: &F, storage: &S) -> KeyedSnapshotHandle {
    let mut b = f.create::<u64>(&ctx_all().0).unwrap();
    let v = b.register(ValueStateDescriptor::<PointV1>::new("value")).unwrap();
    let l = b.register(ListStateDescriptor::<PointV1>::new("list")).unwrap();
    let m = b
        .register(MapStateDescriptor::<u32, PointV1>::new("map").in_namespace::<TestWindow>())
        .unwrap();
    let t = b
        .register(ValueStateDescriptor::<PointV1>::new("ttl").with_ttl(ttl()))
        .unwrap();
    let e = b.register(ValueStateDescriptor::<ShapeV1>::new("shape")).unwrap();
    let w = TestWindow { start: 0, end: 10 };
    for k in 0..KEYS {
        b.set_current_key(&k).unwrap();
        b.value(&v).update(point(k)).unwrap();
        b.list(&l).add_all([point(k), point(k + 1)]).unwrap();
        b.map_in(&m, &w).put_all([(1, point(k)), (2, point(k * 2))]).unwrap();
        b.value(&t).update(point(k)).unwrap();
        let shape = if k % 2 == 0 {
            ShapeV1::Circle(k as u32)
        } else {
            ShapeV1::Square(k as u32)
        };
        b.value(&e).update(shape).unwrap();
    }
    snap(&mut b, 1, storage)
}

fn expect_schema_error(err: StateError, role: &str, old: &str, new: &str) {
    match &err {
        StateError::IncompatibleSchema {
            role: r,
            existing,
            requested,
            ..
        } => {
            assert_eq!(*r, role, "{err}");
            assert_eq!(existing, old, "{err}");
            assert_eq!(requested, new, "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains(old) && msg.contains(new),
                "the message shows both schemas: {msg}"
            );
        }
        other => panic!("expected an incompatible {role} schema, got {other}"),
    }
}

/// Registering `T` for value, list and map state written as `PointV1` is refused with
/// an error naming both schemas; nothing is lost.
fn refused<F: KeyedBackendFactory, T: StateValue>(b: &mut F::Backend<u64>) {
    let (old, new) = (Schema::of::<PointV1>().to_string(), Schema::of::<T>().to_string());
    let err = b.register(ValueStateDescriptor::<T>::new("value")).unwrap_err();
    expect_schema_error(err, "value", &old, &new);
    let err = b.register(ListStateDescriptor::<T>::new("list")).unwrap_err();
    expect_schema_error(err, "value", &old, &new);
    let err = b
        .register(MapStateDescriptor::<u32, T>::new("map").in_namespace::<TestWindow>())
        .unwrap_err();
    expect_schema_error(err, "value", &old, &new);
    let err = b
        .register(ValueStateDescriptor::<T>::new("ttl").with_ttl(ttl()))
        .unwrap_err();
    expect_schema_error(err, "value", &old, &new);
}

pub fn changed_value_types_without_migration_are_refused_at_registration<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let storage = new_storage();
    let h = written(f, &storage);
    let mut b = restore_all::<F, u64>(f, &[h], &storage);
    refused::<F, PointAdded>(&mut b);
    refused::<F, PointRemoved>(&mut b);
    refused::<F, PointReordered>(&mut b);
    refused::<F, PointRetyped>(&mut b);
    let err = b
        .register(ValueStateDescriptor::<ShapeInserted>::new("shape"))
        .unwrap_err();
    expect_schema_error(
        err,
        "value",
        "enum { Circle(u32), Square(u32) }",
        "enum { Dot, Circle(u32), Square(u32) }",
    );
    // Nothing was lost: the written type still reads every value.
    let v = b.register(ValueStateDescriptor::<PointV1>::new("value")).unwrap();
    let l = b.register(ListStateDescriptor::<PointV1>::new("list")).unwrap();
    for k in 0..KEYS {
        b.set_current_key(&k).unwrap();
        assert_eq!(b.value(&v).get().unwrap(), Some(point(k)));
        assert_eq!(b.list(&l).get().unwrap(), vec![point(k), point(k + 1)]);
    }
}

pub fn renamed_types_and_appended_variants_restore_as_is<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let storage = new_storage();
    let h = written(f, &storage);
    let mut b = restore_all::<F, u64>(f, &[h], &storage);
    let v = b.register(ValueStateDescriptor::<RenamedPoint>::new("value")).unwrap();
    let e = b.register(ValueStateDescriptor::<ShapeV2>::new("shape")).unwrap();
    for k in 0..KEYS {
        b.set_current_key(&k).unwrap();
        let p = point(k);
        assert_eq!(b.value(&v).get().unwrap(), Some(RenamedPoint { x: p.x, y: p.y }));
        let shape = if k % 2 == 0 {
            ShapeV2::Circle(k as u32)
        } else {
            ShapeV2::Square(k as u32)
        };
        assert_eq!(b.value(&e).get().unwrap(), Some(shape));
    }
    // The next snapshot records the new types; the appended variant is usable.
    b.set_current_key(&0).unwrap();
    b.value(&e).update(ShapeV2::Triangle(3)).unwrap();
    let h2 = snap(&mut b, 2, &storage);
    let mut r = restore_all::<F, u64>(f, &[h2], &storage);
    let err = r.register(ValueStateDescriptor::<ShapeV1>::new("shape")).unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleSchema { .. }),
        "removing the variant again is refused: {err}"
    );
    let e = r.register(ValueStateDescriptor::<ShapeV2>::new("shape")).unwrap();
    r.set_current_key(&0).unwrap();
    assert_eq!(r.value(&e).get().unwrap(), Some(ShapeV2::Triangle(3)));
}

fn added(p: PointV1) -> PointAdded {
    PointAdded {
        x: p.x,
        y: p.y,
        z: p.x + p.y,
    }
}

pub fn migrations_convert_values_and_next_snapshot_has_new_type<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let storage = new_storage();
    let h = written(f, &storage);
    let w = TestWindow { start: 0, end: 10 };
    // At parallelism 3, each subtask migrating its own key groups.
    let mut next = Vec::new();
    for i in 0..3 {
        let mut b = restore_subtask::<F, u64>(f, std::slice::from_ref(&h), &storage, 3, i);
        let v = b
            .register(ValueStateDescriptor::<PointAdded>::new("value").with_migration(added))
            .unwrap();
        let l = b
            .register(
                ListStateDescriptor::<PointRemoved>::new("list").with_migration(|p: PointV1| PointRemoved { x: p.x }),
            )
            .unwrap();
        let m = b
            .register(
                MapStateDescriptor::<u32, PointReordered>::new("map")
                    .in_namespace::<TestWindow>()
                    .with_migration(|p: PointV1| PointReordered { y: p.y, x: p.x }),
            )
            .unwrap();
        let t = b
            .register(
                ValueStateDescriptor::<PointRetyped>::new("ttl")
                    .with_ttl(ttl())
                    .with_migration(|p: PointV1| PointRetyped { x: p.x as i32, y: p.y }),
            )
            .unwrap();
        let range = b.key_group_range();
        for k in 0..KEYS {
            if !range.contains(crate::keygroup::key_group_for_key(&k, super::MAX_P).unwrap()) {
                continue;
            }
            b.set_current_key(&k).unwrap();
            assert_eq!(b.value(&v).get().unwrap(), Some(added(point(k))));
            assert_eq!(
                b.list(&l).get().unwrap(),
                vec![PointRemoved { x: point(k).x }, PointRemoved { x: point(k + 1).x }]
            );
            let mut entries = b.map_in(&m, &w).entries().unwrap();
            entries.sort_by_key(|(uk, _)| *uk);
            let re = |p: PointV1| PointReordered { y: p.y, x: p.x };
            assert_eq!(entries, vec![(1, re(point(k))), (2, re(point(k * 2)))]);
            let p = point(k);
            assert_eq!(b.value(&t).get().unwrap(), Some(PointRetyped { x: p.x as i32, y: p.y }));
        }
        next.push(snap(&mut b, 2, &storage));
    }
    // The next snapshots hold the new types only: they restore (at parallelism 1) with
    // no migration, and the old type is now the one refused.
    let mut r = restore_all::<F, u64>(f, &next, &storage);
    let err = r.register(ValueStateDescriptor::<PointV1>::new("value")).unwrap_err();
    expect_schema_error(
        err,
        "value",
        &Schema::of::<PointAdded>().to_string(),
        &Schema::of::<PointV1>().to_string(),
    );
    let v = r.register(ValueStateDescriptor::<PointAdded>::new("value")).unwrap();
    let t = r
        .register(ValueStateDescriptor::<PointRetyped>::new("ttl").with_ttl(ttl()))
        .unwrap();
    for k in 0..KEYS {
        r.set_current_key(&k).unwrap();
        assert_eq!(r.value(&v).get().unwrap(), Some(added(point(k))));
        assert!(
            r.value(&t).get().unwrap().is_some(),
            "TTL timestamps survive the migration"
        );
    }
}

/// Three versions of one type, for a chain of migrations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceV2 {
    pub cents: u64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceV3 {
    pub amount: i64,
    pub currency: String,
    pub discounted: bool,
}

fn v3(p: PriceV2) -> PriceV3 {
    PriceV3 {
        amount: p.cents as i64,
        currency: p.currency,
        discounted: false,
    }
}

pub fn migration_chains_and_declared_schemas<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let storage = new_storage();
    // Version 1 is a bare u64 of cents; a declared-schema state beside it.
    let mut b = f.create::<u64>(&ctx_all().0).unwrap();
    let price = b.register(ValueStateDescriptor::<u64>::new("price")).unwrap();
    let declared = b
        .register(ValueStateDescriptor::<u64>::new("declared").with_value_schema(Schema::declared("cents", 1)))
        .unwrap();
    for k in 0..KEYS {
        b.set_current_key(&k).unwrap();
        b.value(&price).update(k * 100).unwrap();
        b.value(&declared).update(k).unwrap();
    }
    let h = snap(&mut b, 1, &storage);

    let chained = || {
        ValueStateDescriptor::<PriceV3>::new("price")
            .with_migration(v3)
            .with_migration_via(|cents: u64| PriceV2 {
                cents,
                currency: "EUR".into(),
            })
    };
    let mut r = restore_all::<F, u64>(f, std::slice::from_ref(&h), &storage);
    // A step through a type without a migration of its own is a typed error.
    let broken = ValueStateDescriptor::<PriceV3>::new("price").with_migration_via(|cents: u64| PriceV2 {
        cents,
        currency: "EUR".into(),
    });
    assert!(matches!(
        r.register(broken).unwrap_err(),
        StateError::InvalidArgument(_)
    ));
    let p = r.register(chained()).unwrap();
    // Declared schemas: the same id and version read as is; a new version needs a
    // migration from the old one.
    let err = r
        .register(ValueStateDescriptor::<i64>::new("declared").with_value_schema(Schema::declared("cents", 2)))
        .unwrap_err();
    expect_schema_error(err, "value", "declared `cents` version 1", "declared `cents` version 2");
    let d = r
        .register(
            ValueStateDescriptor::<i64>::new("declared")
                .with_value_schema(Schema::declared("cents", 2))
                .with_migration_from(Schema::declared("cents", 1), |c: u64| -(c as i64)),
        )
        .unwrap();
    for k in 0..KEYS {
        r.set_current_key(&k).unwrap();
        assert_eq!(
            r.value(&p).get().unwrap(),
            Some(PriceV3 {
                amount: (k * 100) as i64,
                currency: "EUR".into(),
                discounted: false
            })
        );
        assert_eq!(r.value(&d).get().unwrap(), Some(-(k as i64)));
    }
    // The chain also serves a snapshot of the middle version.
    let mut mid = f.create::<u64>(&ctx_all().0).unwrap();
    let p2 = mid.register(ValueStateDescriptor::<PriceV2>::new("price")).unwrap();
    mid.set_current_key(&1).unwrap();
    mid.value(&p2)
        .update(PriceV2 {
            cents: 5,
            currency: "USD".into(),
        })
        .unwrap();
    let h2 = snap(&mut mid, 2, &storage);
    let mut r2 = restore_all::<F, u64>(f, &[h2], &storage);
    let p = r2.register(chained()).unwrap();
    r2.set_current_key(&1).unwrap();
    assert_eq!(r2.value(&p).get().unwrap().unwrap().currency, "USD");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OtherWindow {
    pub begin: i64,
    pub end: i64,
}

pub fn changed_key_namespace_and_user_key_types_are_refused<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let storage = new_storage();
    let h = written(f, &storage);
    let mut b = restore_all::<F, u64>(f, std::slice::from_ref(&h), &storage);
    let err = b
        .register(MapStateDescriptor::<u32, PointV1>::new("map").in_namespace::<OtherWindow>())
        .unwrap_err();
    expect_schema_error(
        err,
        "namespace",
        "struct { start: i64, end: i64 }",
        "struct { begin: i64, end: i64 }",
    );
    let err = b
        .register(
            MapStateDescriptor::<u64, PointV1>::new("map")
                .in_namespace::<TestWindow>()
                .with_migration(|p: PointV1| p),
        )
        .unwrap_err();
    expect_schema_error(err, "user key", "u32", "u64");
    // A key type of another structure is refused when the backend is restored.
    let err = f.restore::<(u64, u8)>(&ctx_all().0, &[h], &storage).unwrap_err();
    expect_schema_error(err, "key", "u64", "(u64, u8)");
}

/// The committed format-version-1 snapshot (`state-api/tests/fixtures/keyed-v1.bin`:
/// key `String`; `count: u64`, `recent: List<String>` with TTL 60 s, `bids: Map<u32,
/// u64>` in namespace `i64`; keys "🦀 crab", "alice", "bob") restores: its types are
/// known by name, so the same types read as is and a migration names its source type.
pub fn format_v1_snapshot_restores_by_type_name<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let storage = new_storage();
    let handle = KeyedSnapshotHandle {
        checkpoint_id: 7,
        key_group_range: KeyGroupRange::new(94, 98),
        key_group_offsets: Vec::new(),
        stream: StreamHandle::Inline {
            bytes: include_bytes!("../../tests/fixtures/keyed-v1.bin").to_vec(),
        },
    };
    let ctx = BackendContext::single(super::MAX_P).with_clock(Arc::new(ManualClock::new(10_000)));
    let mut b = f
        .restore::<String>(&ctx, std::slice::from_ref(&handle), &storage)
        .unwrap();
    let err = b.register(ValueStateDescriptor::<i64>::new("count")).unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleSchema { role: "value", .. }),
        "{err}"
    );
    let count = b
        .register(ValueStateDescriptor::<String>::new("count").with_migration(|n: u64| format!("{n} chars")))
        .unwrap();
    let recent = b
        .register(ListStateDescriptor::<String>::new("recent").with_ttl(TtlConfig::new(Duration::from_secs(60))))
        .unwrap();
    let bids = b
        .register(MapStateDescriptor::<u32, u64>::new("bids").in_namespace::<i64>())
        .unwrap();
    for key in ["🦀 crab", "alice", "bob"] {
        b.set_current_key(&key.to_string()).unwrap();
        assert_eq!(b.value(&count).get().unwrap(), Some(format!("{} chars", key.len())));
        assert_eq!(b.list(&recent).get().unwrap(), vec![key.to_string(), format!("{key}!")]);
        let mut entries = b.map_in(&bids, &-5).entries().unwrap();
        entries.sort();
        assert_eq!(entries, vec![(1, 10), (2, 20)]);
    }
    // Snapshotted again, the state carries structural schemas.
    let h2 = snap(&mut b, 8, &storage);
    let mut r = f.restore::<String>(&ctx, &[h2], &storage).unwrap();
    let err = r.register(ValueStateDescriptor::<u64>::new("count")).unwrap_err();
    expect_schema_error(err, "value", "string", "u64");
    let count = r.register(ValueStateDescriptor::<String>::new("count")).unwrap();
    r.set_current_key(&"bob".to_string()).unwrap();
    assert_eq!(r.value(&count).get().unwrap(), Some("3 chars".to_string()));
}

/// Operator list and broadcast states record schemas too: a changed element type is a
/// typed error when the state is registered, a renamed one reads as is.
pub fn changed_operator_state_types_are_refused<F: KeyedBackendFactory, S: TestStorage>(
    _f: &F,
    new_storage: &dyn Fn() -> S,
) {
    use crate::operator::{DefaultOperatorStateBackend, OperatorStateBackend};
    let storage = new_storage();
    let mut ops = DefaultOperatorStateBackend::new(0);
    let points = ops.list_state::<PointV1>("points").unwrap();
    let rules = ops.broadcast_state::<String, PointV1>("rules").unwrap();
    ops.list(&points).update(vec![point(1), point(2)]).unwrap();
    ops.broadcast(&rules).put("a".into(), point(3)).unwrap();
    let h = ops.snapshot(1).unwrap().run(&storage).unwrap();
    let mut r = DefaultOperatorStateBackend::restore(std::slice::from_ref(&h), 0, 1, &storage).unwrap();
    for err in [
        r.list_state::<PointAdded>("points").unwrap_err(),
        r.list_state::<PointReordered>("points").unwrap_err(),
        r.broadcast_state::<String, PointRemoved>("rules").unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                StateError::IncompatibleSchema {
                    role: "operator state",
                    ..
                }
            ),
            "{err}"
        );
    }
    let renamed = r.list_state::<RenamedPoint>("points").unwrap();
    assert_eq!(
        r.list(&renamed).get().unwrap(),
        vec![RenamedPoint { x: 1, y: -3 }, RenamedPoint { x: 2, y: -6 }]
    );
    let rules = r.broadcast_state::<String, PointV1>("rules").unwrap();
    assert_eq!(r.broadcast(&rules).get(&"a".to_string()).unwrap(), Some(point(3)));
}
