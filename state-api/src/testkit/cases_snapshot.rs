//! Cases: snapshots, restore, rescaling, operator state, bad input.
//!
//! Over 500 lines: a list of independent test cases, one function each.

use std::collections::BTreeSet;
use std::time::Duration;

use super::TestStorage;
use super::cases_ops::Average;
use super::{MAX_P, TestWindow, ctx_all, fresh, restore_all, restore_subtask, snap};
use crate::backend::{KeyedBackendFactory, KeyedStateBackend};
use crate::descriptor::{
    AggregatingStateDescriptor, AggregatingStateHandle, ListStateDescriptor, ListStateHandle, MapStateDescriptor,
    MapStateHandle, ReducingStateDescriptor, ReducingStateHandle, ValueStateDescriptor, ValueStateHandle,
};
use crate::error::StateError;
use crate::keygroup::{key_group_for_key, key_group_range_for_operator, operator_index_for_key_group};
use crate::operator::{DefaultOperatorStateBackend, OperatorStateBackend};
#[allow(unused_imports)]
use crate::snapshot::CheckpointStorage;
use crate::snapshot::{KeyedSnapshotHandle, OperatorSnapshotHandle, StreamHandle};
use crate::ttl::TtlConfig;

/// One state of every kind, registered on a backend keyed by `u64`.
pub struct AllStates {
    pub v: ValueStateHandle<u64>,
    pub l: ListStateHandle<String>,
    pub m: MapStateHandle<u32, u64, TestWindow>,
    pub r: ReducingStateHandle<u64>,
    pub a: AggregatingStateHandle<u64, (u64, u64), f64>,
    pub t: ValueStateHandle<String>,
}

const W: TestWindow = TestWindow { start: 100, end: 200 };

impl AllStates {
    pub fn register<B: KeyedStateBackend<Key = u64>>(b: &mut B) -> Self {
        Self::try_register(b).expect("register every state")
    }

    pub fn try_register<B: KeyedStateBackend<Key = u64>>(b: &mut B) -> crate::Result<Self> {
        Ok(AllStates {
            v: b.register(ValueStateDescriptor::<u64>::new("value"))?,
            l: b.register(ListStateDescriptor::<String>::new("list"))?,
            m: b.register(MapStateDescriptor::<u32, u64>::new("map").in_namespace::<TestWindow>())?,
            r: b.register(ReducingStateDescriptor::<u64>::new("reduce", |a, b| a + b))?,
            a: b.register(AggregatingStateDescriptor::new("avg", Average))?,
            t: b.register(
                ValueStateDescriptor::<String>::new("ttl").with_ttl(TtlConfig::new(Duration::from_secs(3600))),
            )?,
        })
    }

    /// Writes the deterministic state of `key`.
    pub fn write<B: KeyedStateBackend<Key = u64>>(&self, b: &mut B, key: u64) {
        b.set_current_key(&key).unwrap();
        b.value(&self.v).update(key * 10).unwrap();
        b.list(&self.l)
            .add_all((0..key % 4).map(|i| format!("{key}-{i}")))
            .unwrap();
        for uk in 0..(key % 3) as u32 {
            b.map_in(&self.m, &W).put(uk, key + u64::from(uk)).unwrap();
        }
        b.reducing(&self.r).add(key).unwrap();
        b.reducing(&self.r).add(1).unwrap();
        b.aggregating(&self.a).add(key).unwrap();
        b.value(&self.t).update(format!("t{key}")).unwrap();
    }

    /// Checks the state of `key` as [`Self::write`] left it, with `value` offset by `delta`.
    pub fn check<B: KeyedStateBackend<Key = u64>>(&self, b: &mut B, key: u64, delta: u64) {
        b.set_current_key(&key).unwrap();
        assert_eq!(
            b.value(&self.v).get().unwrap(),
            Some(key * 10 + delta),
            "value of key {key}"
        );
        let want: Vec<String> = (0..key % 4).map(|i| format!("{key}-{i}")).collect();
        assert_eq!(b.list(&self.l).get().unwrap(), want, "list of key {key}");
        let mut entries = b.map_in(&self.m, &W).entries().unwrap();
        entries.sort();
        let want: Vec<(u32, u64)> = (0..(key % 3) as u32).map(|uk| (uk, key + u64::from(uk))).collect();
        assert_eq!(entries, want, "map of key {key}");
        assert_eq!(
            b.reducing(&self.r).get().unwrap(),
            Some(key + 1),
            "reducing of key {key}"
        );
        assert_eq!(
            b.aggregating(&self.a).get().unwrap(),
            Some(key as f64),
            "aggregating of key {key}"
        );
        assert_eq!(
            b.value(&self.t).get().unwrap(),
            Some(format!("t{key}")),
            "ttl value of key {key}"
        );
    }
}

fn populated<F: KeyedBackendFactory>(f: &F, keys: u64) -> (F::Backend<u64>, AllStates) {
    let mut b = fresh::<F, u64>(f);
    let s = AllStates::register(&mut b);
    for k in 0..keys {
        s.write(&mut b, k);
    }
    (b, s)
}

pub fn snapshot_restore_round_trips_every_kind<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let (mut b, _) = populated(f, 500);
    let storage = new_storage();
    let h = snap(&mut b, 1, &storage);
    assert_eq!(h.key_group_range, b.key_group_range());
    assert_eq!(h.key_group_offsets.len(), MAX_P as usize);
    let mut r = restore_all::<F, u64>(f, &[h], &storage);
    let s = AllStates::register(&mut r);
    for k in 0..500 {
        s.check(&mut r, k, 0);
    }
    assert_eq!(r.keys(&s.v).unwrap().len(), 500);
}

/// A backend either offers incremental snapshots (and one runs) or refuses them with
/// `ErrorKind::Unsupported`, as `supports_incremental` says: never a panic, never a
/// different error.
pub fn incremental_snapshot_is_offered_or_refused_as_unsupported<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let (mut b, _) = populated(f, 50);
    let storage = new_storage();
    match b.snapshot_incremental(1) {
        Ok(part) => {
            assert!(
                b.supports_incremental(),
                "an incremental snapshot ran but the backend says it has none"
            );
            let handle = part.run(&storage).unwrap();
            assert_eq!(handle.checkpoint_id, 1);
            assert_eq!(handle.key_group_range, b.key_group_range());
        }
        Err(e) => {
            assert!(
                !b.supports_incremental(),
                "the backend offers incremental snapshots but failed: {e}"
            );
            assert_eq!(e.kind(), crate::ErrorKind::Unsupported, "{e}");
        }
    }
    // Either way, a full snapshot still works afterwards.
    let h = snap(&mut b, 2, &storage);
    assert_eq!(h.key_group_range, b.key_group_range());
}

/// Wraps a storage and cancels a part right after its first stream is finished.
#[derive(Debug, Clone)]
struct CancelAfterFirstStream<S> {
    inner: S,
    cancel: crate::CancelHandle,
    finished: std::sync::Arc<std::sync::Mutex<Vec<StreamHandle>>>,
}

struct CancellingOutput {
    inner: Box<dyn crate::snapshot::CheckpointOutput>,
    cancel: crate::CancelHandle,
    finished: std::sync::Arc<std::sync::Mutex<Vec<StreamHandle>>>,
}

impl std::io::Write for CancellingOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl crate::snapshot::CheckpointOutput for CancellingOutput {
    fn finish(self: Box<Self>) -> crate::Result<StreamHandle> {
        let handle = self.inner.finish()?;
        self.finished.lock().unwrap().push(handle.clone());
        self.cancel.cancel();
        Ok(handle)
    }
}

impl<S: TestStorage> CheckpointStorage for CancelAfterFirstStream<S> {
    fn create_output(
        &self,
        checkpoint_id: u64,
        name: &str,
    ) -> crate::Result<Box<dyn crate::snapshot::CheckpointOutput>> {
        Ok(Box::new(CancellingOutput {
            inner: self.inner.create_output(checkpoint_id, name)?,
            cancel: self.cancel.clone(),
            finished: self.finished.clone(),
        }))
    }
    fn open_input(&self, handle: &StreamHandle) -> crate::Result<Box<dyn crate::snapshot::CheckpointInput>> {
        self.inner.open_input(handle)
    }
    fn discard(&self, handles: &[StreamHandle]) -> crate::Result<()> {
        self.inner.discard(handles)
    }
}

/// A cancelled asynchronous part stops, deletes the streams it finished and reports
/// `Cancelled`; cancelled before it runs, it writes nothing; the backend goes on, and
/// cancelling a part that already finished changes nothing.
pub fn cancelling_a_snapshot_stops_it_and_deletes_what_it_wrote<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let (mut b, _) = populated(f, 300);
    let storage = new_storage();
    let part = b.snapshot(1).unwrap();
    part.cancel_handle().cancel();
    let err = part.run(&storage).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Cancelled, "{err}");
    // Cancelled while it runs, right after its first stream was finished.
    let part = b.snapshot(2).unwrap();
    let spy = CancelAfterFirstStream {
        inner: storage.clone(),
        cancel: part.cancel_handle(),
        finished: Default::default(),
    };
    let err = part.run(&spy).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Cancelled, "{err}");
    let finished = spy.finished.lock().unwrap().clone();
    assert!(
        !finished.is_empty(),
        "the part finished no stream before it was cancelled"
    );
    for h in finished.iter().filter(|h| matches!(h, StreamHandle::File { .. })) {
        assert!(storage.open_input(h).is_err(), "`{}` was not deleted", h.describe());
    }
    // The backend goes on: the next snapshot completes and restores.
    let h = snap(&mut b, 3, &storage);
    let mut r = restore_all::<F, u64>(f, &[h], &storage);
    let s = AllStates::register(&mut r);
    for k in 0..300 {
        s.check(&mut r, k, 0);
    }
    // Cancelling a part that already finished changes nothing.
    let part = b.snapshot(4).unwrap();
    let late = part.cancel_handle();
    let h4 = part.run(&storage).unwrap();
    late.cancel();
    assert!(late.is_cancelled());
    let r4 = restore_all::<F, u64>(f, &[h4], &storage);
    drop(r4);
}

fn mutate_everything<B: KeyedStateBackend<Key = u64>>(b: &mut B, s: &AllStates, keys: u64) {
    for k in 0..keys {
        b.set_current_key(&k).unwrap();
        b.value(&s.v).update(999_999).unwrap();
        b.list(&s.l).add("new".into()).unwrap();
        b.map_in(&s.m, &W).clear().unwrap();
        b.reducing(&s.r).add(1000).unwrap();
        b.value(&s.t).clear().unwrap();
    }
    for k in keys..keys + 100 {
        s.write(b, k);
    }
}

pub fn snapshot_holds_state_as_of_sync_part<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let (mut b, s) = populated(f, 300);
    let pending = b.snapshot(1).unwrap();
    mutate_everything(&mut b, &s, 300);
    let storage = new_storage();
    let h = pending.run(&storage).unwrap();
    b.set_current_key(&5).unwrap();
    assert_eq!(
        b.value(&s.v).get().unwrap(),
        Some(999_999),
        "the task's writes went through"
    );
    let mut r = restore_all::<F, u64>(f, &[h], &storage);
    let rs = AllStates::register(&mut r);
    for k in 0..300 {
        rs.check(&mut r, k, 0);
    }
    assert_eq!(
        r.keys(&rs.v).unwrap().len(),
        300,
        "keys written after the sync part are not in the snapshot"
    );
}

pub fn async_part_runs_on_another_thread_while_task_writes<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let (mut b, s) = populated(f, 2000);
    let pending = b.snapshot(1).unwrap();
    let storage = new_storage();
    let thread_storage = storage.clone();
    let worker = std::thread::spawn(move || pending.run(&thread_storage));
    for round in 0..3 {
        for k in 0..2000 {
            b.set_current_key(&k).unwrap();
            b.value(&s.v).update(round).unwrap();
            b.map_in(&s.m, &W).put(7, round).unwrap();
        }
    }
    let h = worker.join().expect("async part panicked").unwrap();
    let mut r = restore_all::<F, u64>(f, &[h], &storage);
    let rs = AllStates::register(&mut r);
    for k in 0..2000 {
        rs.check(&mut r, k, 0);
    }
}

/// The asynchronous part still completes when the backend was dropped after the
/// synchronous part (an engine shutting an operator down while its last checkpoint
/// uploads): it must own or keep alive everything it reads.
pub fn async_part_completes_after_the_backend_is_dropped<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let (mut b, _) = populated(f, 1500);
    let pending = b.snapshot(1).unwrap();
    drop(b);
    let storage = new_storage();
    let h = pending
        .run(&storage)
        .expect("the asynchronous part after the backend was dropped");
    let mut r = restore_all::<F, u64>(f, &[h], &storage);
    let rs = AllStates::register(&mut r);
    for k in 0..1500 {
        rs.check(&mut r, k, 0);
    }
}

pub fn empty_backend_snapshot_restores<F: KeyedBackendFactory, S: TestStorage>(f: &F, new_storage: &dyn Fn() -> S) {
    let mut b = fresh::<F, u64>(f);
    let storage = new_storage();
    let h = snap(&mut b, 1, &storage);
    let mut r = restore_all::<F, u64>(f, &[h], &storage);
    let s = AllStates::register(&mut r);
    r.set_current_key(&1).unwrap();
    assert_eq!(r.value(&s.v).get().unwrap(), None);
    assert!(r.keys(&s.v).unwrap().is_empty());
    // And a backend with registered but empty states.
    let mut b = fresh::<F, u64>(f);
    let _ = AllStates::register(&mut b);
    let h = snap(&mut b, 2, &storage);
    let mut r = restore_all::<F, u64>(f, &[h], &storage);
    let s = AllStates::register(&mut r);
    assert!(r.keys(&s.r).unwrap().is_empty());
}

pub fn unregistered_restored_state_survives_next_snapshot<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let (mut b, _) = populated(f, 200);
    let storage = new_storage();
    let h1 = snap(&mut b, 1, &storage);
    let mut r1 = restore_all::<F, u64>(f, &[h1], &storage);
    // Only one state is registered after this restore; the others must carry over.
    let v = r1.register(ValueStateDescriptor::<u64>::new("value")).unwrap();
    r1.set_current_key(&3).unwrap();
    r1.value(&v).update(31).unwrap();
    let h2 = snap(&mut r1, 2, &storage);
    let mut r2 = restore_all::<F, u64>(f, &[h2], &storage);
    let s = AllStates::register(&mut r2);
    for k in (0..200).filter(|&k| k != 3) {
        s.check(&mut r2, k, 0);
    }
    r2.set_current_key(&3).unwrap();
    assert_eq!(r2.value(&s.v).get().unwrap(), Some(31));
}

pub fn restore_reads_only_owned_key_groups<F: KeyedBackendFactory, S: TestStorage>(f: &F, new_storage: &dyn Fn() -> S) {
    let (mut b, _) = populated(f, 4000);
    let storage = new_storage();
    let h = snap(&mut b, 1, &storage);
    let size = h.stream.size();
    storage.reset_bytes_read();
    let mut r = restore_subtask::<F, u64>(f, std::slice::from_ref(&h), &storage, 8, 3);
    let read = storage.bytes_read();
    assert!(read > 0);
    assert!(
        read * 4 < size,
        "restoring 1/8 of the key groups read {read} of {size} bytes"
    );
    let s = AllStates::register(&mut r);
    let range = key_group_range_for_operator(MAX_P, 8, 3).unwrap();
    let mut owned = 0;
    for k in 0..4000u64 {
        if range.contains(key_group_for_key(&k, MAX_P).unwrap()) {
            s.check(&mut r, k, 0);
            owned += 1;
        }
    }
    assert_eq!(r.keys(&s.v).unwrap().len(), owned);
}

/// Checks that each of `backends` (subtasks of `parallelism`) holds exactly its keys.
fn check_partitioned<B: KeyedStateBackend<Key = u64>>(
    backends: &mut [(B, AllStates)],
    parallelism: u32,
    keys: u64,
    delta: u64,
) {
    let mut seen = BTreeSet::new();
    for (i, (b, s)) in backends.iter_mut().enumerate() {
        for k in b.keys(&s.v).unwrap() {
            let owner =
                operator_index_for_key_group(MAX_P, parallelism, key_group_for_key(&k, MAX_P).unwrap()).unwrap();
            assert_eq!(
                owner as usize, i,
                "key {k} restored on subtask {i} but belongs to {owner}"
            );
            assert!(seen.insert(k), "key {k} restored twice");
        }
        for k in 0..keys {
            let owner =
                operator_index_for_key_group(MAX_P, parallelism, key_group_for_key(&k, MAX_P).unwrap()).unwrap();
            if owner as usize == i {
                s.check(b, k, delta);
            } else {
                assert!(matches!(
                    b.set_current_key(&k),
                    Err(StateError::KeyGroupOutOfRange { .. })
                ));
            }
        }
    }
    assert_eq!(seen.len() as u64, keys, "every key is restored exactly once");
}

pub fn rescale_one_to_three_to_two<F: KeyedBackendFactory, S: TestStorage>(f: &F, new_storage: &dyn Fn() -> S) {
    let keys = 600;
    let (mut b, _) = populated(f, keys);
    let storage = new_storage();
    let h = snap(&mut b, 1, &storage);
    let mut three: Vec<_> = (0..3)
        .map(|i| {
            let mut r = restore_subtask::<F, u64>(f, std::slice::from_ref(&h), &storage, 3, i);
            let s = AllStates::register(&mut r);
            (r, s)
        })
        .collect();
    check_partitioned(&mut three, 3, keys, 0);
    // Change state on the three subtasks, then scale to two.
    for (b, s) in three.iter_mut() {
        for k in b.keys(&s.v).unwrap() {
            b.set_current_key(&k).unwrap();
            b.value(&s.v).update(k * 10 + 7).unwrap();
        }
    }
    let handles: Vec<KeyedSnapshotHandle> = three.iter_mut().map(|(b, _)| snap(b, 2, &storage)).collect();
    let mut two: Vec<_> = (0..2)
        .map(|i| {
            let mut r = restore_subtask::<F, u64>(f, &handles, &storage, 2, i);
            let s = AllStates::register(&mut r);
            (r, s)
        })
        .collect();
    check_partitioned(&mut two, 2, keys, 7);
}

pub fn rescale_four_to_one<F: KeyedBackendFactory, S: TestStorage>(f: &F, new_storage: &dyn Fn() -> S) {
    let keys = 400u64;
    let storage = new_storage();
    let mut handles = Vec::new();
    for i in 0..4 {
        let ctx = super::ctx_subtask(4, i);
        let mut b = f.create::<u64>(&ctx).unwrap();
        let s = AllStates::register(&mut b);
        for k in 0..keys {
            if operator_index_for_key_group(MAX_P, 4, key_group_for_key(&k, MAX_P).unwrap()).unwrap() == i {
                s.write(&mut b, k);
            }
        }
        handles.push(snap(&mut b, 1, &storage));
    }
    let mut one = restore_all::<F, u64>(f, &handles, &storage);
    let s = AllStates::register(&mut one);
    let mut both = vec![(one, s)];
    check_partitioned(&mut both, 1, keys, 0);
}

fn operator_snapshots(lists: &[Vec<u64>], storage: &dyn CheckpointStorage) -> Vec<OperatorSnapshotHandle> {
    lists
        .iter()
        .enumerate()
        .map(|(i, list)| {
            let mut ops = DefaultOperatorStateBackend::new(i as u32);
            let even = ops.list_state::<u64>("even").unwrap();
            let union = ops.union_list_state::<u64>("union").unwrap();
            let bcast = ops.broadcast_state::<String, u64>("rules").unwrap();
            ops.list(&even).update(list.clone()).unwrap();
            for v in list {
                ops.list(&union).add(*v).unwrap();
            }
            ops.broadcast(&bcast).put("limit".into(), 10).unwrap();
            ops.broadcast(&bcast).put("window".into(), 60).unwrap();
            ops.snapshot(1).unwrap().run(storage).unwrap()
        })
        .collect()
}

/// List and broadcast operator states have separate name spaces (as in Flink): a list
/// `"x"` and a broadcast `"x"` coexist, snapshot and restore at any parallelism apart.
pub fn operator_list_and_broadcast_states_have_separate_names<F: KeyedBackendFactory, S: TestStorage>(
    _f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let storage = new_storage();
    let handles: Vec<OperatorSnapshotHandle> = (0..2u32)
        .map(|i| {
            let mut ops = DefaultOperatorStateBackend::new(i);
            let list = ops.list_state::<u64>("x").unwrap();
            let bcast = ops.broadcast_state::<String, u64>("x").unwrap();
            ops.list(&list)
                .add_all([u64::from(i) * 10, u64::from(i) * 10 + 1])
                .unwrap();
            ops.broadcast(&bcast).put("limit".into(), 7).unwrap();
            assert_eq!(
                ops.list(&list).get().unwrap().len(),
                2,
                "the broadcast `x` did not touch the list `x`"
            );
            // Within the list name space, even-split and union still conflict.
            assert!(ops.union_list_state::<u64>("x").is_err());
            ops.snapshot(1).unwrap().run(&storage).unwrap()
        })
        .collect();
    for parallelism in [1u32, 3] {
        let mut all = Vec::new();
        for i in 0..parallelism {
            let mut ops = DefaultOperatorStateBackend::restore(&handles, i, parallelism, &storage).unwrap();
            let list = ops.list_state::<u64>("x").unwrap();
            let bcast = ops.broadcast_state::<String, u64>("x").unwrap();
            all.extend(ops.list(&list).get().unwrap());
            assert_eq!(ops.broadcast(&bcast).entries().unwrap(), vec![("limit".to_string(), 7)]);
        }
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 10, 11], "parallelism {parallelism}");
    }
}

pub fn operator_list_even_split_on_rescale<F: KeyedBackendFactory, S: TestStorage>(
    _f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let storage = new_storage();
    let handles = operator_snapshots(&[(0..5).collect(), (5..12).collect()], &storage);
    let mut all = Vec::new();
    for i in 0..3 {
        let mut ops = DefaultOperatorStateBackend::restore(&handles, i, 3, &storage).unwrap();
        let even = ops.list_state::<u64>("even").unwrap();
        let part = ops.list(&even).get().unwrap();
        assert_eq!(part.len(), 4, "12 elements split evenly over 3 subtasks");
        all.extend(part);
    }
    assert_eq!(all, (0..12).collect::<Vec<_>>(), "every element exactly once, in order");
    let mut one = DefaultOperatorStateBackend::restore(&handles, 0, 1, &storage).unwrap();
    let even = one.list_state::<u64>("even").unwrap();
    assert_eq!(one.list(&even).get().unwrap(), (0..12).collect::<Vec<_>>());
    let mut five: Vec<usize> = Vec::new();
    for i in 0..5 {
        let mut ops = DefaultOperatorStateBackend::restore(&handles, i, 5, &storage).unwrap();
        let even = ops.list_state::<u64>("even").unwrap();
        five.push(ops.list(&even).get().unwrap().len());
    }
    assert_eq!(five, vec![3, 3, 2, 2, 2]);
}

pub fn operator_union_list_on_rescale<F: KeyedBackendFactory, S: TestStorage>(_f: &F, new_storage: &dyn Fn() -> S) {
    let storage = new_storage();
    let handles = operator_snapshots(&[(0..5).collect(), (5..12).collect()], &storage);
    for p in [1, 3] {
        for i in 0..p {
            let mut ops = DefaultOperatorStateBackend::restore(&handles, i, p, &storage).unwrap();
            let union = ops.union_list_state::<u64>("union").unwrap();
            assert_eq!(ops.list(&union).get().unwrap(), (0..12).collect::<Vec<_>>());
            // Registering a union state as even-split is refused.
            assert!(ops.list_state::<u64>("union").is_err());
        }
    }
}

pub fn operator_broadcast_state_on_rescale<F: KeyedBackendFactory, S: TestStorage>(
    _f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let storage = new_storage();
    let handles = operator_snapshots(&[vec![1], vec![2]], &storage);
    for i in 0..3 {
        let mut ops = DefaultOperatorStateBackend::restore(&handles, i, 3, &storage).unwrap();
        let rules = ops.broadcast_state::<String, u64>("rules").unwrap();
        let mut entries = ops.broadcast(&rules).entries().unwrap();
        entries.sort();
        assert_eq!(entries, vec![("limit".to_string(), 10), ("window".to_string(), 60)]);
        assert_eq!(ops.broadcast(&rules).get(&"limit".to_string()).unwrap(), Some(10));
        assert!(
            ops.broadcast_state::<String, String>("rules").is_err(),
            "another value type is refused"
        );
    }
}

pub fn restore_with_incompatible_value_type_is_an_error<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let (mut b, _) = populated(f, 50);
    let storage = new_storage();
    let h = snap(&mut b, 1, &storage);
    let mut r = restore_all::<F, u64>(f, &[h], &storage);
    let err = r.register(ValueStateDescriptor::<String>::new("value")).unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleSchema { role: "value", .. }),
        "{err}"
    );
    let err = r.register(ListStateDescriptor::<u64>::new("value")).unwrap_err();
    assert!(matches!(err, StateError::KindMismatch { .. }), "{err}");
    let err = r.register(ValueStateDescriptor::<String>::new("ttl")).unwrap_err();
    assert!(matches!(err, StateError::IncompatibleTtl { .. }), "{err}");
    // Nothing was lost: the right types still restore everything.
    let s = AllStates::register(&mut r);
    for k in 0..50 {
        s.check(&mut r, k, 0);
    }
}

pub fn restore_with_incompatible_key_type_is_an_error<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    let (mut b, _) = populated(f, 10);
    let storage = new_storage();
    let h = snap(&mut b, 1, &storage);
    let err = f.restore::<String>(&ctx_all().0, &[h], &storage).unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleSchema { role: "key", .. }),
        "{err}"
    );
}

fn file_of(h: &KeyedSnapshotHandle) -> String {
    match &h.stream {
        StreamHandle::File { path, .. } => path.clone(),
        StreamHandle::Inline { .. } => panic!("MemFiles writes files"),
    }
}

/// Restores from `storage` and uses every state; must fail with an error naming `path`.
fn expect_bad<F: KeyedBackendFactory>(
    f: &F,
    h: &KeyedSnapshotHandle,
    storage: &dyn CheckpointStorage,
    path: &str,
    what: &str,
) {
    let result = f
        .restore::<u64>(&ctx_all().0, std::slice::from_ref(h), storage)
        .and_then(|mut r| {
            let s = AllStates::try_register(&mut r)?;
            for k in 0..300 {
                s.check(&mut r, k, 0);
            }
            Ok(())
        });
    match result {
        Err(
            e @ (StateError::Corrupt { .. }
            | StateError::Truncated { .. }
            | StateError::UnsupportedVersion { .. }
            | StateError::Serialization { .. }),
        ) => {
            let msg = e.to_string();
            if !matches!(e, StateError::Serialization { .. }) {
                assert!(msg.contains(path), "{what}: error does not name the file: {msg}");
            }
        }
        Err(e) => panic!("{what}: unexpected error kind: {e}"),
        Ok(()) => panic!("{what}: restore succeeded on a damaged snapshot"),
    }
}

pub fn corrupted_snapshot_is_an_error<F: KeyedBackendFactory, S: TestStorage>(f: &F, new_storage: &dyn Fn() -> S) {
    let (mut b, _) = populated(f, 300);
    let storage = new_storage();
    let h = snap(&mut b, 1, &storage);
    let path = file_of(&h);
    let original = storage.content(&path).unwrap();
    let len = original.len();
    let mut offsets: BTreeSet<usize> = (0..48.min(len)).collect();
    offsets.extend((len.saturating_sub(48)..len).collect::<Vec<_>>());
    offsets.extend((0..64).map(|i| i * len / 64));
    for off in offsets {
        storage.replace(&path, original.clone());
        storage.corrupt(&path, off);
        expect_bad(f, &h, &storage, &path, &format!("byte {off} of {len} flipped"));
    }
}

pub fn truncated_snapshot_is_an_error<F: KeyedBackendFactory, S: TestStorage>(f: &F, new_storage: &dyn Fn() -> S) {
    let (mut b, _) = populated(f, 300);
    let storage = new_storage();
    let h = snap(&mut b, 1, &storage);
    let path = file_of(&h);
    let original = storage.content(&path).unwrap();
    let len = original.len();
    for cut in [
        0,
        1,
        7,
        8,
        12,
        20,
        len / 3,
        len / 2,
        len - 21,
        len - 20,
        len - 8,
        len - 1,
    ] {
        storage.replace(&path, original.clone());
        storage.truncate(&path, cut);
        expect_bad(f, &h, &storage, &path, &format!("cut to {cut} of {len} bytes"));
    }
}

pub fn foreign_file_is_an_error<F: KeyedBackendFactory, S: TestStorage>(f: &F, new_storage: &dyn Fn() -> S) {
    let (mut b, _) = populated(f, 10);
    let storage = new_storage();
    let h = snap(&mut b, 1, &storage);
    let path = file_of(&h);
    storage.replace(
        &path,
        b"{\"this\": \"is a JSON file, not a snapshot\", \"padding\": \"................\"}".to_vec(),
    );
    expect_bad(f, &h, &storage, &path, "a JSON file");
    // An operator state stream handed to a keyed restore.
    let op = DefaultOperatorStateBackend::new(0)
        .snapshot(1)
        .unwrap()
        .run(&storage)
        .unwrap();
    if let StreamHandle::File { path: op_path, .. } = &op.stream {
        storage.replace(&path, storage.content(op_path).unwrap());
    }
    expect_bad(f, &h, &storage, &path, "an operator state stream");
    // A future format version.
    let (mut b, _) = populated(f, 10);
    let h = snap(&mut b, 2, &storage);
    let path = file_of(&h);
    let mut content = storage.content(&path).unwrap();
    content[8..12].copy_from_slice(&99u32.to_be_bytes());
    storage.replace(&path, content);
    let err = f.restore::<u64>(&ctx_all().0, &[h], &storage).unwrap_err();
    assert!(matches!(err, StateError::UnsupportedVersion { found: 99, .. }), "{err}");
}

pub fn large_values_round_trip<F: KeyedBackendFactory, S: TestStorage>(f: &F, new_storage: &dyn Fn() -> S) {
    const MIB16: usize = 16 * 1024 * 1024;
    let big = |c: char, extra: usize| -> String { std::iter::repeat_n(c, MIB16 + extra).collect() };
    let mut b = fresh::<F, u64>(f);
    let v = b.register(ValueStateDescriptor::<String>::new("big-value")).unwrap();
    let l = b.register(ListStateDescriptor::<String>::new("big-list")).unwrap();
    let m = b.register(MapStateDescriptor::<u8, String>::new("big-map")).unwrap();
    b.set_current_key(&1).unwrap();
    b.value(&v).update(big('v', 1)).unwrap();
    b.list(&l).add(big('l', 0)).unwrap();
    b.list(&l).add("small".into()).unwrap();
    b.map(&m).put(1, big('m', 3)).unwrap();
    let storage = new_storage();
    let h = snap(&mut b, 1, &storage);
    assert!(h.stream.size() > 3 * MIB16 as u64);
    let mut r = restore_all::<F, u64>(f, &[h], &storage);
    let v = r.register(ValueStateDescriptor::<String>::new("big-value")).unwrap();
    let l = r.register(ListStateDescriptor::<String>::new("big-list")).unwrap();
    let m = r.register(MapStateDescriptor::<u8, String>::new("big-map")).unwrap();
    r.set_current_key(&1).unwrap();
    let got = r.value(&v).get().unwrap().unwrap();
    assert!(got.len() == MIB16 + 1 && got.bytes().all(|c| c == b'v'));
    let list = r.list(&l).get().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list[0].len() == MIB16 && list[1] == "small");
    assert_eq!(r.map(&m).get(&1).unwrap().map(|s| s.len()), Some(MIB16 + 3));
}

/// A savepoint written by backend `a` restores on backend `b` (at parallelism 2) and
/// back on `a` (at parallelism 1), with every state kind intact.
pub fn savepoint_moves_between<A: KeyedBackendFactory, B: KeyedBackendFactory>(
    a: &A,
    b: &B,
    storage: &dyn CheckpointStorage,
) {
    let keys = 300;
    let (mut src, _) = populated(a, keys);
    let h = snap(&mut src, 1, storage);
    let mut on_b: Vec<_> = (0..2)
        .map(|i| {
            let mut r = restore_subtask::<B, u64>(b, std::slice::from_ref(&h), storage, 2, i);
            let s = AllStates::register(&mut r);
            (r, s)
        })
        .collect();
    check_partitioned(&mut on_b, 2, keys, 0);
    let handles: Vec<_> = on_b.iter_mut().map(|(r, _)| snap(r, 2, storage)).collect();
    let mut back = restore_all::<A, u64>(a, &handles, storage);
    let s = AllStates::register(&mut back);
    let mut one = vec![(back, s)];
    check_partitioned(&mut one, 1, keys, 0);
}

pub fn savepoint_restores_on_same_backend_kind<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    savepoint_moves_between(f, f, &new_storage());
}
