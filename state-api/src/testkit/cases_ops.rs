//! Cases: every state kind and operation, scoping, registration.

use super::TestStorage;
use super::{MAX_P, TestWindow, fresh};
use crate::backend::{KeyedBackendFactory, KeyedStateBackend};
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use crate::error::StateError;
use crate::keygroup::{key_group_for_key, key_group_range_for_operator};
#[allow(unused_imports)]
use crate::snapshot::CheckpointStorage;

fn key(s: &str) -> String {
    s.to_string()
}

pub fn value_get_without_value_is_none<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    assert_eq!(b.value(&h).get().unwrap(), None);
}

pub fn value_update_then_get<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(ValueStateDescriptor::<String>::new("v")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    b.value(&h).update("one".into()).unwrap();
    assert_eq!(b.value(&h).get().unwrap().as_deref(), Some("one"));
    b.value(&h).update("two".into()).unwrap();
    assert_eq!(b.value(&h).get().unwrap().as_deref(), Some("two"));
}

pub fn value_default_is_returned_when_empty<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, String>(f);
    let h = b
        .register(ValueStateDescriptor::<u64>::new("v").with_default(7))
        .unwrap();
    b.set_current_key(&key("a")).unwrap();
    assert_eq!(b.value(&h).get().unwrap(), Some(7));
    b.value(&h).update(9).unwrap();
    assert_eq!(b.value(&h).get().unwrap(), Some(9));
    b.value(&h).clear().unwrap();
    assert_eq!(b.value(&h).get().unwrap(), Some(7));
}

pub fn value_clear_removes<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    b.value(&h).update(1).unwrap();
    b.value(&h).clear().unwrap();
    assert_eq!(b.value(&h).get().unwrap(), None);
    assert!(b.keys(&h).unwrap().is_empty());
    // Clearing what is not there is fine.
    b.value(&h).clear().unwrap();
}

pub fn values_are_isolated_per_key<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    for i in 0..200u64 {
        b.set_current_key(&format!("k{i}")).unwrap();
        b.value(&h).update(i * 3).unwrap();
    }
    for i in 0..200u64 {
        b.set_current_key(&format!("k{i}")).unwrap();
        assert_eq!(b.value(&h).get().unwrap(), Some(i * 3));
    }
    let mut keys = b.keys(&h).unwrap();
    keys.sort();
    let mut want: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    want.sort();
    assert_eq!(keys, want);
}

pub fn list_add_and_get_keep_order<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(ListStateDescriptor::<u32>::new("l")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    assert!(b.list(&h).get().unwrap().is_empty());
    for i in 0..10 {
        b.list(&h).add(i).unwrap();
    }
    assert_eq!(b.list(&h).get().unwrap(), (0..10).collect::<Vec<_>>());
}

pub fn list_add_all_appends<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(ListStateDescriptor::<u32>::new("l")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    b.list(&h).add(1).unwrap();
    b.list(&h).add_all(vec![2, 3]).unwrap();
    b.list(&h).add_all(Vec::new()).unwrap();
    assert_eq!(b.list(&h).get().unwrap(), vec![1, 2, 3]);
}

pub fn list_update_replaces<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(ListStateDescriptor::<String>::new("l")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    b.list(&h).add_all(vec!["x".to_string(), "y".to_string()]).unwrap();
    b.list(&h).update(vec!["z".to_string()]).unwrap();
    assert_eq!(b.list(&h).get().unwrap(), vec!["z".to_string()]);
}

pub fn list_update_with_nothing_clears<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(ListStateDescriptor::<u8>::new("l")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    b.list(&h).add(1).unwrap();
    b.list(&h).update(Vec::new()).unwrap();
    assert!(b.list(&h).get().unwrap().is_empty());
    assert!(b.keys(&h).unwrap().is_empty());
}

pub fn list_clear_removes<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(ListStateDescriptor::<u8>::new("l")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    b.list(&h).add(1).unwrap();
    b.set_current_key(&key("b")).unwrap();
    b.list(&h).add(2).unwrap();
    b.list(&h).clear().unwrap();
    assert!(b.list(&h).get().unwrap().is_empty());
    b.set_current_key(&key("a")).unwrap();
    assert_eq!(b.list(&h).get().unwrap(), vec![1]);
}

pub fn map_put_and_get<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(MapStateDescriptor::<String, u64>::new("m")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    assert_eq!(b.map(&h).get(&key("x")).unwrap(), None);
    b.map(&h).put(key("x"), 1).unwrap();
    b.map(&h).put(key("y"), 2).unwrap();
    assert_eq!(b.map(&h).get(&key("x")).unwrap(), Some(1));
    assert_eq!(b.map(&h).get(&key("y")).unwrap(), Some(2));
    assert_eq!(b.map(&h).get(&key("z")).unwrap(), None);
}

pub fn map_put_all_and_overwrite<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(MapStateDescriptor::<u32, u64>::new("m")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    b.map(&h).put_all((0..50).map(|i| (i, u64::from(i)))).unwrap();
    b.map(&h).put(7, 700).unwrap();
    assert_eq!(b.map(&h).get(&7).unwrap(), Some(700));
    assert_eq!(b.map(&h).get(&49).unwrap(), Some(49));
    assert_eq!(b.map(&h).entries().unwrap().len(), 50);
}

pub fn map_remove_entry<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(MapStateDescriptor::<u32, u64>::new("m")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    b.map(&h).put(1, 1).unwrap();
    b.map(&h).put(2, 2).unwrap();
    b.map(&h).remove(&1).unwrap();
    b.map(&h).remove(&99).unwrap();
    assert_eq!(b.map(&h).get(&1).unwrap(), None);
    assert_eq!(b.map(&h).entries().unwrap(), vec![(2, 2)]);
    b.map(&h).remove(&2).unwrap();
    assert!(
        b.keys(&h).unwrap().is_empty(),
        "a map emptied by removals leaves no key behind"
    );
}

pub fn map_contains<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(MapStateDescriptor::<u32, Option<u64>>::new("m")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    b.map(&h).put(1, None).unwrap();
    assert!(
        b.map(&h).contains(&1).unwrap(),
        "an entry whose value is None still exists"
    );
    assert!(!b.map(&h).contains(&2).unwrap());
}

pub fn map_iterates_entries_keys_and_values<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(MapStateDescriptor::<u32, String>::new("m")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    for i in 0..20 {
        b.map(&h).put(i, format!("v{i}")).unwrap();
    }
    let mut entries = Vec::new();
    for e in b.map(&h).iter().unwrap() {
        entries.push(e.unwrap());
    }
    entries.sort();
    let mut want: Vec<(u32, String)> = (0..20).map(|i| (i, format!("v{i}"))).collect();
    want.sort();
    assert_eq!(entries, want);
    let mut keys: Vec<u32> = b.map(&h).keys().unwrap().map(|k| k.unwrap()).collect();
    keys.sort();
    assert_eq!(keys, (0..20).collect::<Vec<_>>());
    let mut values: Vec<String> = b.map(&h).values().unwrap().map(|v| v.unwrap()).collect();
    values.sort();
    let mut want_values: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    want_values.sort();
    assert_eq!(values, want_values);
}

pub fn map_is_empty_tracks_entries<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(MapStateDescriptor::<u32, u32>::new("m")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    assert!(b.map(&h).is_empty().unwrap());
    b.map(&h).put(1, 1).unwrap();
    assert!(!b.map(&h).is_empty().unwrap());
    b.map(&h).remove(&1).unwrap();
    assert!(b.map(&h).is_empty().unwrap());
}

pub fn map_clear_removes_all<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(MapStateDescriptor::<u32, u32>::new("m")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    b.map(&h).put_all([(1, 1), (2, 2)]).unwrap();
    b.map(&h).clear().unwrap();
    assert!(b.map(&h).is_empty().unwrap());
    assert_eq!(b.map(&h).get(&1).unwrap(), None);
}

pub fn reducing_adds_with_reduce_function<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b
        .register(ReducingStateDescriptor::<i64>::new("max", |a, b| *a.max(b)))
        .unwrap();
    b.set_current_key(&key("a")).unwrap();
    assert_eq!(b.reducing(&h).get().unwrap(), None);
    for v in [3, -1, 10, 4] {
        b.reducing(&h).add(v).unwrap();
    }
    assert_eq!(b.reducing(&h).get().unwrap(), Some(10));
    b.set_current_key(&key("b")).unwrap();
    b.reducing(&h).add(-5).unwrap();
    assert_eq!(b.reducing(&h).get().unwrap(), Some(-5));
}

pub fn reducing_clear_removes<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b
        .register(ReducingStateDescriptor::<u64>::new("sum", |a, b| a + b))
        .unwrap();
    b.set_current_key(&key("a")).unwrap();
    b.reducing(&h).add(1).unwrap();
    b.reducing(&h).clear().unwrap();
    assert_eq!(b.reducing(&h).get().unwrap(), None);
    b.reducing(&h).add(2).unwrap();
    assert_eq!(b.reducing(&h).get().unwrap(), Some(2));
}

/// Average of `u64`s with a (sum, count) accumulator.
pub struct Average;

impl AggregateFunction<u64, (u64, u64), f64> for Average {
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, value: u64, acc: &mut (u64, u64)) {
        acc.0 += value;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(u64, u64)) -> f64 {
        acc.0 as f64 / acc.1.max(1) as f64
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

pub fn aggregating_adds_with_accumulator<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(AggregatingStateDescriptor::new("avg", Average)).unwrap();
    b.set_current_key(&key("a")).unwrap();
    assert_eq!(b.aggregating(&h).get().unwrap(), None);
    for v in [1, 2, 3, 6] {
        b.aggregating(&h).add(v).unwrap();
    }
    assert_eq!(b.aggregating(&h).get().unwrap(), Some(3.0));
}

pub fn aggregating_clear_removes<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(AggregatingStateDescriptor::new("avg", Average)).unwrap();
    b.set_current_key(&key("a")).unwrap();
    b.aggregating(&h).add(10).unwrap();
    b.aggregating(&h).clear().unwrap();
    assert_eq!(b.aggregating(&h).get().unwrap(), None);
    b.aggregating(&h).add(4).unwrap();
    assert_eq!(b.aggregating(&h).get().unwrap(), Some(4.0));
}

pub fn namespaces_are_isolated<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, String>(f);
    let v = b
        .register(ValueStateDescriptor::<u64>::new("v").in_namespace::<TestWindow>())
        .unwrap();
    let l = b
        .register(ListStateDescriptor::<u64>::new("l").in_namespace::<TestWindow>())
        .unwrap();
    let m = b
        .register(MapStateDescriptor::<u64, u64>::new("m").in_namespace::<TestWindow>())
        .unwrap();
    let r = b
        .register(ReducingStateDescriptor::<u64>::new("r", |a, b| a + b).in_namespace::<TestWindow>())
        .unwrap();
    let w1 = TestWindow { start: 0, end: 10 };
    let w2 = TestWindow { start: 10, end: 20 };
    b.set_current_key(&key("a")).unwrap();
    b.value_in(&v, &w1).update(1).unwrap();
    b.list_in(&l, &w1).add(1).unwrap();
    b.map_in(&m, &w1).put(1, 1).unwrap();
    b.reducing_in(&r, &w1).add(5).unwrap();
    assert_eq!(b.value_in(&v, &w2).get().unwrap(), None);
    assert!(b.list_in(&l, &w2).get().unwrap().is_empty());
    assert!(b.map_in(&m, &w2).is_empty().unwrap());
    assert_eq!(b.reducing_in(&r, &w2).get().unwrap(), None);
    b.value_in(&v, &w2).update(2).unwrap();
    b.map_in(&m, &w1).clear().unwrap();
    assert_eq!(b.value_in(&v, &w1).get().unwrap(), Some(1));
    assert_eq!(b.value_in(&v, &w2).get().unwrap(), Some(2));
    assert_eq!(b.list_in(&l, &w1).get().unwrap(), vec![1]);
    assert_eq!(b.reducing_in(&r, &w1).get().unwrap(), Some(5));
}

pub fn keys_lists_keys_of_a_namespace<F: KeyedBackendFactory, S: TestStorage>(f: &F, _new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, u64>(f);
    let v = b
        .register(ValueStateDescriptor::<u64>::new("v").in_namespace::<TestWindow>())
        .unwrap();
    let w1 = TestWindow { start: 0, end: 10 };
    let w2 = TestWindow { start: 10, end: 20 };
    for k in 0..30u64 {
        b.set_current_key(&k).unwrap();
        b.value_in(&v, if k % 3 == 0 { &w1 } else { &w2 }).update(k).unwrap();
    }
    let mut in_w1 = b.keys_in(&v, &w1).unwrap();
    in_w1.sort();
    assert_eq!(in_w1, (0..30).filter(|k| k % 3 == 0).collect::<Vec<_>>());
    assert_eq!(b.keys_in(&v, &w2).unwrap().len(), 20);
}

pub fn access_without_current_key_is_an_error<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, String>(f);
    let h = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    assert!(matches!(b.value(&h).get(), Err(StateError::NoCurrentKey)));
    assert!(matches!(b.value(&h).update(1), Err(StateError::NoCurrentKey)));
}

pub fn key_outside_key_group_range_is_rejected<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let ctx = super::ctx_subtask(4, 1);
    let range = key_group_range_for_operator(MAX_P, 4, 1).unwrap();
    let mut b = f.create::<String>(&ctx).unwrap();
    let mut accepted = 0;
    for i in 0..100 {
        let k = format!("key-{i}");
        let kg = key_group_for_key(&k, MAX_P).unwrap();
        match b.set_current_key(&k) {
            Ok(()) => {
                assert!(range.contains(kg));
                assert_eq!(b.current_key_group(), Some(kg));
                accepted += 1;
            }
            Err(StateError::KeyGroupOutOfRange { key_group, range: r }) => {
                assert_eq!((key_group, r), (kg, range));
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(accepted > 0 && accepted < 100);
}

pub fn registering_twice_returns_the_same_state<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, String>(f);
    let h1 = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    let h2 = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    b.set_current_key(&key("a")).unwrap();
    b.value(&h1).update(5).unwrap();
    assert_eq!(b.value(&h2).get().unwrap(), Some(5));
}

pub fn registering_with_another_kind_is_an_error<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, String>(f);
    b.register(ValueStateDescriptor::<u64>::new("s")).unwrap();
    let err = b.register(ListStateDescriptor::<u64>::new("s")).unwrap_err();
    assert!(matches!(err, StateError::KindMismatch { .. }), "{err}");
    assert!(err.to_string().contains("`s`"));
}

pub fn registering_with_another_type_is_an_error<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    _new_storage: &dyn Fn() -> S,
) {
    let mut b = fresh::<F, String>(f);
    b.register(ValueStateDescriptor::<u64>::new("s")).unwrap();
    let err = b.register(ValueStateDescriptor::<String>::new("s")).unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleSchema { role: "value", .. }),
        "{err}"
    );
    let err = b
        .register(ValueStateDescriptor::<u64>::new("s").in_namespace::<TestWindow>())
        .unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleSchema { role: "namespace", .. }),
        "{err}"
    );
    let err = b.register(ValueStateDescriptor::<u64>::new("")).unwrap_err();
    assert!(matches!(err, StateError::InvalidArgument(_)), "{err}");
}
