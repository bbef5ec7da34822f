//! Cases: merging namespaces, enumerating keys and namespaces, visiting every key,
//! counting entries (Flink's `InternalMergingState`, `getKeysAndNamespaces`,
//! `applyToAllKeys`).

use std::collections::BTreeSet;

use super::cases_ops::Average;
use super::{TestStorage, TestWindow, fresh};
use crate::backend::{KeyedBackendFactory, KeyedStateBackend};
use crate::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor, ValueStateDescriptor,
};
use crate::error::StateError;

fn w(start: i64) -> TestWindow {
    TestWindow { start, end: start + 10 }
}

pub fn merging_list_namespaces_appends_and_removes_the_sources<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, u64>(f);
    let h = b
        .register(ListStateDescriptor::<u32>::new("l").in_namespace::<TestWindow>())
        .unwrap();
    b.set_current_key(&1).unwrap();
    b.list_in(&h, &w(0)).add_all([1, 2]).unwrap();
    b.list_in(&h, &w(10)).add(3).unwrap();
    b.list_in(&h, &w(20)).add_all([4, 5]).unwrap();
    // Another key's state in the same namespaces is not touched.
    b.set_current_key(&2).unwrap();
    b.list_in(&h, &w(10)).add(99).unwrap();
    b.set_current_key(&1).unwrap();
    // The target itself among the sources is ignored, as are empty sources.
    b.list_in(&h, &w(0))
        .merge_namespaces(&[w(10), w(0), w(30), w(20)])
        .unwrap();
    assert_eq!(b.list_in(&h, &w(0)).get().unwrap(), vec![1, 2, 3, 4, 5]);
    for gone in [w(10), w(20), w(30)] {
        assert!(b.list_in(&h, &gone).get().unwrap().is_empty());
    }
    assert_eq!(b.keys_in(&h, &w(10)).unwrap(), vec![2]);
    // Into an empty target.
    b.list_in(&h, &w(40)).merge_namespaces(&[w(0)]).unwrap();
    assert_eq!(b.list_in(&h, &w(40)).get().unwrap(), vec![1, 2, 3, 4, 5]);
    assert!(b.list_in(&h, &w(0)).get().unwrap().is_empty());
}

pub fn merging_only_empty_sources_creates_nothing<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, u64>(f);
    let l = b
        .register(ListStateDescriptor::<u32>::new("l").in_namespace::<TestWindow>())
        .unwrap();
    let r = b
        .register(ReducingStateDescriptor::<u64>::new("r", |a, b| a + b).in_namespace::<TestWindow>())
        .unwrap();
    let a = b
        .register(AggregatingStateDescriptor::new("a", Average).in_namespace::<TestWindow>())
        .unwrap();
    b.set_current_key(&1).unwrap();
    b.list_in(&l, &w(0)).merge_namespaces(&[w(10), w(20)]).unwrap();
    b.reducing_in(&r, &w(0)).merge_namespaces(&[w(10), w(20)]).unwrap();
    b.aggregating_in(&a, &w(0)).merge_namespaces(&[w(10)]).unwrap();
    assert_eq!(b.count_entries(&l).unwrap(), 0);
    assert_eq!(b.count_entries(&r).unwrap(), 0);
    assert_eq!(b.count_entries(&a).unwrap(), 0);
    assert_eq!(b.reducing_in(&r, &w(0)).get().unwrap(), None);
    assert_eq!(b.aggregating_in(&a, &w(0)).get().unwrap(), None);
}

pub fn merging_reducing_and_aggregating_namespaces_combines_the_values<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, u64>(f);
    let r = b
        .register(ReducingStateDescriptor::<u64>::new("r", |a, b| a + b).in_namespace::<TestWindow>())
        .unwrap();
    let a = b
        .register(AggregatingStateDescriptor::new("a", Average).in_namespace::<TestWindow>())
        .unwrap();
    b.set_current_key(&7).unwrap();
    for (ns, values) in [(w(0), vec![1u64, 2]), (w(10), vec![3]), (w(20), vec![10, 20])] {
        for v in values {
            b.reducing_in(&r, &ns).add(v).unwrap();
            b.aggregating_in(&a, &ns).add(v).unwrap();
        }
    }
    b.reducing_in(&r, &w(0)).merge_namespaces(&[w(10), w(20)]).unwrap();
    b.aggregating_in(&a, &w(0)).merge_namespaces(&[w(10), w(20)]).unwrap();
    assert_eq!(b.reducing_in(&r, &w(0)).get().unwrap(), Some(36));
    assert_eq!(b.aggregating_in(&a, &w(0)).get().unwrap(), Some(36.0 / 5.0));
    for gone in [w(10), w(20)] {
        assert_eq!(b.reducing_in(&r, &gone).get().unwrap(), None);
        assert_eq!(b.aggregating_in(&a, &gone).get().unwrap(), None);
    }
    // Into an empty target: the sources' combined value.
    b.reducing_in(&r, &w(30)).merge_namespaces(&[w(0)]).unwrap();
    assert_eq!(b.reducing_in(&r, &w(30)).get().unwrap(), Some(36));
    assert_eq!(b.count_entries(&r).unwrap(), 1);
}

pub fn keys_and_namespaces_lists_every_pair_once<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, u64>(f);
    let v = b
        .register(ValueStateDescriptor::<u64>::new("v").in_namespace::<TestWindow>())
        .unwrap();
    let m = b
        .register(MapStateDescriptor::<u32, u32>::new("m").in_namespace::<TestWindow>())
        .unwrap();
    let mut expected = BTreeSet::new();
    for k in 0..40u64 {
        b.set_current_key(&k).unwrap();
        for ns in [w(0), w(10)].iter().take(1 + (k % 2) as usize) {
            b.value_in(&v, ns).update(k).unwrap();
            // Several user keys per (key, namespace): still one pair.
            b.map_in(&m, ns).put_all([(1, 1), (2, 2), (3, 3)]).unwrap();
            expected.insert((k, ns.start));
        }
    }
    let pairs = |mut got: Vec<(u64, TestWindow)>| {
        let n = got.len();
        let set: BTreeSet<(u64, i64)> = got.drain(..).map(|(k, ns)| (k, ns.start)).collect();
        assert_eq!(set.len(), n, "a pair was listed twice");
        set
    };
    assert_eq!(pairs(b.keys_and_namespaces(&v).unwrap()), expected);
    assert_eq!(pairs(b.keys_and_namespaces(&m).unwrap()), expected);
    assert_eq!(b.count_entries(&v).unwrap(), expected.len() as u64);
    assert!(b.approximate_entries(&v).unwrap() > 0);
}

/// The metrics estimates: entries and bytes grow as a state grows.
pub fn approximate_entries_and_size_grow_with_the_state<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, u64>(f);
    let big = b
        .register(ValueStateDescriptor::<Vec<u8>>::new("big").in_namespace::<TestWindow>())
        .unwrap();
    let empty = b.approximate_size(&big).unwrap();
    assert_eq!(b.approximate_entries(&big).unwrap(), 0);
    for k in 0..1000u64 {
        b.set_current_key(&k).unwrap();
        b.value_in(&big, &w(0)).update(vec![7u8; 1024]).unwrap();
    }
    let grown = b.approximate_size(&big).unwrap();
    assert!(
        grown >= empty + 500 * 1024,
        "1 MiB written, size estimate {empty} -> {grown}"
    );
    assert!(b.approximate_entries(&big).unwrap() > 0);
}

pub fn apply_to_all_keys_may_update_and_clear_the_visited_state<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, u64>(f);
    let v = b
        .register(ValueStateDescriptor::<u64>::new("v").in_namespace::<TestWindow>())
        .unwrap();
    let l = b
        .register(ListStateDescriptor::<u64>::new("l").in_namespace::<TestWindow>())
        .unwrap();
    for k in 0..100u64 {
        b.set_current_key(&k).unwrap();
        b.value_in(&v, &w(0)).update(k).unwrap();
        b.list_in(&l, &w(0)).add(k).unwrap();
        b.value_in(&v, &w(10)).update(k).unwrap();
    }
    b.set_current_key(&5).unwrap();
    // Flink's testConcurrentModificationWithApplyToAllKeys: clear every visited key's
    // state of the state being visited, and update another.
    let mut visited = BTreeSet::new();
    b.apply_to_all_keys(&w(0), &v, |b, key| {
        assert_eq!(b.current_key(), Some(key), "the visited key is the current key");
        assert_eq!(b.value_in(&v, &w(0)).get()?, Some(*key));
        b.value_in(&v, &w(0)).clear()?;
        b.list_in(&l, &w(0)).add(1000 + key)?;
        visited.insert(*key);
        Ok(())
    })
    .unwrap();
    assert_eq!(visited, (0..100).collect::<BTreeSet<u64>>());
    assert_eq!(b.current_key(), Some(&5), "the current key from before is set again");
    assert!(b.keys_in(&v, &w(0)).unwrap().is_empty());
    assert_eq!(
        b.keys_in(&v, &w(10)).unwrap().len(),
        100,
        "another namespace is untouched"
    );
    b.set_current_key(&42).unwrap();
    assert_eq!(b.list_in(&l, &w(0)).get().unwrap(), vec![42, 1042]);
    // The first error stops the visit and is returned.
    let mut calls = 0;
    let err = b
        .apply_to_all_keys(&w(10), &v, |_, _| {
            calls += 1;
            Err(StateError::InvalidArgument("stop".into()))
        })
        .unwrap_err();
    assert!(matches!(err, StateError::InvalidArgument(_)) && calls == 1, "{err}");
}

pub fn clearing_every_state_leaves_no_entries<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, u64>(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    let l = b.register(ListStateDescriptor::<u64>::new("l")).unwrap();
    let m = b.register(MapStateDescriptor::<u64, u64>::new("m")).unwrap();
    for k in 0..50u64 {
        b.set_current_key(&k).unwrap();
        b.value(&v).update(k).unwrap();
        b.list(&l).add_all([k, k]).unwrap();
        b.map(&m).put_all([(k, k), (k + 1, k)]).unwrap();
    }
    assert_eq!(
        [
            b.count_entries(&v).unwrap(),
            b.count_entries(&l).unwrap(),
            b.count_entries(&m).unwrap()
        ],
        [50, 50, 50]
    );
    for k in 0..50u64 {
        b.set_current_key(&k).unwrap();
        b.value(&v).clear().unwrap();
        b.list(&l).update(Vec::new()).unwrap();
        b.map(&m).remove(&k).unwrap();
        b.map(&m).remove(&(k + 1)).unwrap();
    }
    assert_eq!(
        [
            b.count_entries(&v).unwrap(),
            b.count_entries(&l).unwrap(),
            b.count_entries(&m).unwrap()
        ],
        [0, 0, 0],
        "clearing and removing left entries behind"
    );
}

pub fn map_cursor_removes_and_updates_the_current_entry<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, u64>(f);
    let m = b.register(MapStateDescriptor::<u32, u64>::new("m")).unwrap();
    b.set_current_key(&3).unwrap();
    b.map(&m).put_all((0..20).map(|k| (k, u64::from(k)))).unwrap();
    let mut map = b.map(&m);
    let mut cursor = map.cursor().unwrap();
    assert!(
        matches!(cursor.remove(), Err(StateError::InvalidArgument(_))),
        "remove before next"
    );
    let mut seen = 0;
    while let Some((&k, &v)) = cursor.next() {
        assert_eq!(u64::from(k), v);
        seen += 1;
        if k % 2 == 0 {
            cursor.remove().unwrap();
            // Removing twice, or updating a removed entry, is an error, not a panic.
            assert!(matches!(cursor.remove(), Err(StateError::InvalidArgument(_))));
            assert!(matches!(cursor.set_value(1), Err(StateError::InvalidArgument(_))));
        } else {
            cursor.set_value(v * 100).unwrap();
            cursor.set_value(v * 1000).unwrap();
        }
    }
    assert_eq!(seen, 20);
    let mut left = b.map(&m).entries().unwrap();
    left.sort_unstable();
    let expected: Vec<(u32, u64)> = (0..20)
        .filter(|k| k % 2 == 1)
        .map(|k| (k, u64::from(k) * 1000))
        .collect();
    assert_eq!(left, expected);
    // Another key's map is untouched.
    b.set_current_key(&4).unwrap();
    assert!(b.map(&m).entries().unwrap().is_empty());
}

/// Flink's `testReducingStateMergingOverThreeNamespaces`, with its values: per key,
/// 33 and 55 in one namespace, 22 and 11 in a second, 44 in a third; merging the second
/// and third into the first gives 165, and clearing leaves no entry.
pub fn merging_reducing_state_gives_flinks_values<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, String>(f);
    let r = b
        .register(ReducingStateDescriptor::<u64>::new("r", |a, b| a + b).in_namespace::<TestWindow>())
        .unwrap();
    let l = b
        .register(ListStateDescriptor::<u64>::new("l").in_namespace::<TestWindow>())
        .unwrap();
    let keys = ["abc", "def", "jkl", "mno"];
    for key in keys {
        b.set_current_key(&key.to_string()).unwrap();
        for (ns, values) in [(w(0), vec![33u64, 55]), (w(10), vec![22, 11]), (w(20), vec![44])] {
            for v in values {
                b.reducing_in(&r, &ns).add(v).unwrap();
                b.list_in(&l, &ns).add(v).unwrap();
            }
        }
    }
    for key in keys {
        b.set_current_key(&key.to_string()).unwrap();
        b.reducing_in(&r, &w(0)).merge_namespaces(&[w(10), w(20)]).unwrap();
        b.list_in(&l, &w(0)).merge_namespaces(&[w(10), w(20)]).unwrap();
        assert_eq!(b.reducing_in(&r, &w(0)).get().unwrap(), Some(165));
        assert_eq!(b.list_in(&l, &w(0)).get().unwrap().iter().sum::<u64>(), 165);
    }
    assert_eq!(
        b.count_entries(&r).unwrap(),
        4,
        "one entry per key, in the target namespace"
    );
    for key in keys {
        b.set_current_key(&key.to_string()).unwrap();
        b.reducing_in(&r, &w(0)).clear().unwrap();
        b.list_in(&l, &w(0)).clear().unwrap();
    }
    assert_eq!(b.count_entries(&r).unwrap(), 0);
    assert_eq!(b.count_entries(&l).unwrap(), 0);
}

/// Merging lists with TTL (stored as full values on RocksDB, not merge operands) keeps
/// every live element, in order, and removes the sources.
pub fn merging_lists_with_ttl_keeps_their_elements<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, u64>(f);
    let ttl = crate::TtlConfig::new(std::time::Duration::from_secs(3600));
    let l = b
        .register(
            ListStateDescriptor::<u32>::new("l")
                .in_namespace::<TestWindow>()
                .with_ttl(ttl),
        )
        .unwrap();
    b.set_current_key(&9).unwrap();
    b.list_in(&l, &w(0)).add(1).unwrap();
    b.list_in(&l, &w(10)).add_all([2, 3]).unwrap();
    b.list_in(&l, &w(20)).add(4).unwrap();
    b.list_in(&l, &w(0)).merge_namespaces(&[w(10), w(20)]).unwrap();
    assert_eq!(b.list_in(&l, &w(0)).get().unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(b.count_entries(&l).unwrap(), 1);
}
