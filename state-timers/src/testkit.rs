//! Service-level timer cases (feature `testkit`), run on every storage: the heap and
//! LMDB storages here, the RocksDB storage in `state-rocksdb`. The queue-level cases are
//! in `state_api::testkit` (`timer_queue_conformance_tests!`).
//!
//! Over 500 lines: a list of independent test cases, one function each.
#![allow(missing_docs, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use state_api::testkit::{MemFiles, SplitMix64};
use state_api::{
    BackendContext, CheckpointStorage, Clock, KeyedSnapshotHandle, KeyedStateBackend, ManualClock, StateError,
    TimerQueue, TimerService, ValueStateDescriptor,
};

use crate::InternalTimerService;

const MAX_P: u32 = 128;

/// Creates backends and timer queues living in (or beside) them.
pub trait TimerHarness {
    type Backend: KeyedStateBackend<Key = u64>;
    type Queue: TimerQueue<Self::Backend>;
    fn backend(&self, ctx: &BackendContext) -> Self::Backend;
    /// A backend restored from keyed-state snapshots.
    fn backend_restored(
        &self,
        ctx: &BackendContext,
        handles: &[KeyedSnapshotHandle],
        storage: &dyn CheckpointStorage,
    ) -> Self::Backend;
    /// A queue named `name` (`event` or `processing`) for the backend's key groups.
    fn queue(&self, backend: &mut Self::Backend, name: &str) -> Self::Queue;
}

/// A window namespace: (start, end).
pub type Window = (i64, i64);

type Service<H> = InternalTimerService<u64, Window, <H as TimerHarness>::Queue>;

fn service<H: TimerHarness>(h: &H, backend: &mut H::Backend, clock: Arc<dyn Clock>) -> Service<H> {
    let event = h.queue(backend, "event");
    let processing = h.queue(backend, "processing");
    InternalTimerService::new(event, processing, clock, MAX_P).unwrap()
}

fn setup<H: TimerHarness>(h: &H, ctx: &BackendContext) -> (H::Backend, Service<H>, ManualClock) {
    let clock = ManualClock::new(0);
    let mut b = h.backend(ctx);
    let s = service(h, &mut b, Arc::new(clock.clone()));
    (b, s, clock)
}

fn register<H: TimerHarness>(b: &mut H::Backend, s: &mut Service<H>, key: u64, ts: i64) {
    b.set_current_key(&key).unwrap();
    s.register_event_time_timer(b, &(ts - 10, ts), ts).unwrap();
}

/// Timers queued: (event time, processing time).
fn counts<H: TimerHarness>(s: &Service<H>) -> (usize, usize) {
    (s.event_timer_count(), s.processing_timer_count())
}

/// Fires everything up to `wm`, returning (timestamp, key) in firing order.
fn fire<H: TimerHarness>(b: &mut H::Backend, s: &mut Service<H>, wm: i64) -> Vec<(i64, u64)> {
    let mut out = Vec::new();
    s.advance_watermark(b, wm, |b, _, t| {
        assert_eq!(b.current_key(), Some(&t.key), "the timer's key is the current key");
        assert_eq!(t.namespace.1, t.timestamp);
        out.push((t.timestamp, t.key));
        Ok(())
    })
    .unwrap();
    out
}

/// Fires event-time timers in timestamp order with the key set; the callback reads and
/// writes keyed state; later timers wait.
pub fn service_fires_event_time_timers_in_order<H: TimerHarness>(h: &H) {
    let (mut b, mut s, _) = setup(h, &BackendContext::single(MAX_P));
    let sums = b.register(ValueStateDescriptor::<u64>::new("sum")).unwrap();
    let mut rng = SplitMix64(3);
    let mut expected = Vec::new();
    for key in 0..200u64 {
        let ts = 10 * (1 + rng.below(20) as i64);
        b.set_current_key(&key).unwrap();
        b.value(&sums).update(key * 2).unwrap();
        register::<H>(&mut b, &mut s, key, ts);
        expected.push((ts, key));
    }
    assert_eq!(s.current_watermark(), i64::MIN);
    assert_eq!(s.next_event_time(), expected.iter().map(|e| e.0).min());
    let mut fired = Vec::new();
    let n = s
        .advance_watermark(&mut b, 100, |b, _, t| {
            assert_eq!(b.value(&sums).get()?, Some(t.key * 2), "keyed state of the timer's key");
            b.value(&sums).clear()?;
            fired.push((t.timestamp, t.key));
            Ok(())
        })
        .unwrap();
    assert_eq!(n, fired.len());
    assert!(fired.windows(2).all(|w| w[0].0 <= w[1].0), "timestamp order");
    let mut due: Vec<_> = expected.iter().filter(|e| e.0 <= 100).cloned().collect();
    due.sort();
    let mut got = fired.clone();
    got.sort();
    assert_eq!(got, due);
    assert_eq!(s.current_watermark(), 100);
    // A watermark never goes back; the rest fires later.
    assert!(fire::<H>(&mut b, &mut s, 50).is_empty());
    let rest = fire::<H>(&mut b, &mut s, i64::MAX);
    assert_eq!(rest.len() + fired.len(), 200);
    assert_eq!(counts::<H>(&s), (0, 0));
}

/// Timers registered by a callback that are already due fire in the same advance.
pub fn service_timers_registered_while_firing<H: TimerHarness>(h: &H) {
    let (mut b, mut s, _) = setup(h, &BackendContext::single(MAX_P));
    register::<H>(&mut b, &mut s, 1, 10);
    let mut fired = Vec::new();
    s.advance_watermark(&mut b, 50, |b, s, t| {
        fired.push((t.timestamp, t.key));
        if t.timestamp < 40 {
            // Chain: the same key, 10 later (due up to 40), and one for key 2 beyond the watermark.
            s.register_event_time_timer(b, &(t.timestamp, t.timestamp + 10), t.timestamp + 10)?;
            b.set_current_key(&2)?;
            s.register_event_time_timer(b, &(90, 100), 100)?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(fired, vec![(10, 1), (20, 1), (30, 1), (40, 1)]);
    assert_eq!(
        counts::<H>(&s),
        (1, 0),
        "the timer at 100 waits, registered once (deduplicated)"
    );
    assert_eq!(fire::<H>(&mut b, &mut s, 100), vec![(100, 2)]);
}

/// At most one timer per (key, namespace, timestamp); deleting removes it.
pub fn service_deduplicates_and_deletes<H: TimerHarness>(h: &H) {
    let (mut b, mut s, _) = setup(h, &BackendContext::single(MAX_P));
    register::<H>(&mut b, &mut s, 1, 10);
    register::<H>(&mut b, &mut s, 1, 10);
    register::<H>(&mut b, &mut s, 1, 20);
    register::<H>(&mut b, &mut s, 2, 10);
    b.set_current_key(&1).unwrap();
    s.delete_event_time_timer(&mut b, &(10, 20), 20).unwrap();
    s.delete_event_time_timer(&mut b, &(0, 5), 5).unwrap(); // not there: no-op
    assert_eq!(counts::<H>(&s), (2, 0));
    let mut got = fire::<H>(&mut b, &mut s, 100);
    got.sort();
    assert_eq!(got, vec![(10, 1), (10, 2)]);
    // Without a current key, registering is an error.
    let mut fresh = h.backend(&BackendContext::single(MAX_P));
    let mut s2 = service(h, &mut fresh, Arc::new(ManualClock::new(0)));
    let err = s2.register_event_time_timer(&mut fresh, &(0, 1), 1).unwrap_err();
    assert!(matches!(err, StateError::NoCurrentKey));
}

/// Every queued timer is visited once with its key set as the current key, and the
/// queues are left as they were (Flink's `forEachEventTimeTimer`).
pub fn service_for_each_timer_visits_every_timer_with_its_key<H: TimerHarness>(h: &H) {
    let (mut b, mut s, _) = setup(h, &BackendContext::single(MAX_P));
    let mut expected = Vec::new();
    for key in 0..50u64 {
        for ts in [100 + key as i64, 500] {
            register::<H>(&mut b, &mut s, key, ts);
            expected.push((ts, key));
        }
        b.set_current_key(&key).unwrap();
        s.register_processing_time_timer(&mut b, &(0, 0), 1000 + key as i64)
            .unwrap();
    }
    b.set_current_key(&7).unwrap();
    let mut seen = Vec::new();
    s.for_each_event_time_timer(&mut b, |b, t| {
        assert_eq!(b.current_key(), Some(&t.key), "the timer's key is the current key");
        assert_eq!(t.namespace.1, t.timestamp);
        seen.push((t.timestamp, t.key));
        Ok(())
    })
    .unwrap();
    seen.sort_unstable();
    expected.sort_unstable();
    assert_eq!(seen, expected);
    let mut processing = 0;
    s.for_each_processing_time_timer(&mut b, |b, t| {
        assert_eq!(b.current_key(), Some(&t.key));
        assert_eq!(t.timestamp, 1000 + t.key as i64);
        processing += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(processing, 50);
    assert_eq!(b.current_key(), Some(&7), "the current key from before is set again");
    assert_eq!(counts::<H>(&s), (100, 50), "visiting removes nothing");
    // The first error stops the visit.
    let mut calls = 0;
    let err = s
        .for_each_event_time_timer(&mut b, |_, _| {
            calls += 1;
            Err(StateError::InvalidArgument("stop".into()))
        })
        .unwrap_err();
    assert!(matches!(err, StateError::InvalidArgument(_)) && calls == 1);
    assert_eq!(fire::<H>(&mut b, &mut s, 10_000).len(), 100);
}

/// Processing time comes from the injected clock; the next due time is queryable.
pub fn service_processing_time_with_injected_clock<H: TimerHarness>(h: &H) {
    let (mut b, mut s, clock) = setup(h, &BackendContext::single(MAX_P));
    for (key, ts) in [(1u64, 300i64), (2, 100), (3, 200)] {
        b.set_current_key(&key).unwrap();
        s.register_processing_time_timer(&mut b, &(0, 0), ts).unwrap();
    }
    b.set_current_key(&3).unwrap();
    s.delete_processing_time_timer(&mut b, &(0, 0), 200).unwrap();
    assert_eq!(s.next_processing_time(), Some(100));
    assert_eq!(s.current_processing_time(), 0);
    let mut fired = Vec::new();
    let mut step = |b: &mut H::Backend, s: &mut Service<H>| {
        s.advance_processing_time(b, |b, _, t| {
            fired.push((t.timestamp, *b.current_key().unwrap()));
            Ok(())
        })
        .unwrap()
    };
    assert_eq!(step(&mut b, &mut s), 0);
    clock.advance(150);
    assert_eq!(step(&mut b, &mut s), 1);
    assert_eq!(s.next_processing_time(), Some(300));
    clock.advance(1000);
    assert_eq!(step(&mut b, &mut s), 1);
    assert_eq!(fired, vec![(100, 2), (300, 1)]);
    assert_eq!(s.next_processing_time(), None);
    assert_eq!(s.next_event_time(), None, "processing and event timers are separate");
}

fn snapshot<H: TimerHarness>(
    b: &mut H::Backend,
    s: &mut Service<H>,
    id: u64,
    st: &dyn CheckpointStorage,
) -> KeyedSnapshotHandle {
    s.snapshot(b, id).unwrap().run(st).unwrap()
}

fn restore<H: TimerHarness>(
    h: &H,
    ctx: &BackendContext,
    handles: &[KeyedSnapshotHandle],
    st: &dyn CheckpointStorage,
) -> (H::Backend, Service<H>, usize) {
    let (mut b, mut s, _) = setup(h, ctx);
    let n = s.restore(&mut b, handles, st).unwrap();
    (b, s, n)
}

/// The synchronous part pins; registering and firing go on; the asynchronous part (on
/// another thread) writes the timers as they were; a restore gets exactly those.
pub fn service_snapshot_is_asynchronous_and_restores<H: TimerHarness>(h: &H) {
    let storage = MemFiles::default();
    let (mut b, mut s, _) = setup(h, &BackendContext::single(MAX_P));
    for key in 0..300u64 {
        register::<H>(&mut b, &mut s, key, 10 + (key as i64 % 7) * 10);
        b.set_current_key(&key).unwrap();
        s.register_processing_time_timer(&mut b, &(1, 2), 1000 + key as i64)
            .unwrap();
    }
    let pending = s.snapshot(&mut b, 1).unwrap();
    // The task goes on: fires some, registers others.
    let fired_after = fire::<H>(&mut b, &mut s, 30);
    assert!(!fired_after.is_empty());
    for key in 1000..1100u64 {
        register::<H>(&mut b, &mut s, key, 5);
    }
    let handle = std::thread::scope(|scope| scope.spawn(|| pending.run(&storage)).join().unwrap()).unwrap();
    let (mut rb, mut rs, n) = restore::<H>(h, &BackendContext::single(MAX_P), &[handle], &storage);
    assert_eq!(n, 600);
    assert_eq!(counts::<H>(&rs), (300, 300));
    let mut got = fire::<H>(&mut rb, &mut rs, i64::MAX);
    got.sort();
    let mut expected: Vec<_> = (0..300u64).map(|k| (10 + (k as i64 % 7) * 10, k)).collect();
    expected.sort();
    assert_eq!(got, expected, "exactly the timers at the synchronous part");
    assert_eq!(rs.next_processing_time(), Some(1000));
}

/// Restoring at another parallelism: each subtask gets exactly the timers of its key
/// groups; several old subtasks merge into one.
pub fn service_restore_rescales<H: TimerHarness>(h: &H) {
    let storage = MemFiles::default();
    let (mut b, mut s, _) = setup(h, &BackendContext::single(MAX_P));
    let mut all = Vec::new();
    for key in 0..500u64 {
        let ts = 1 + (key as i64 * 37) % 100;
        register::<H>(&mut b, &mut s, key, ts);
        all.push((ts, key));
    }
    all.sort();
    let one = snapshot::<H>(&mut b, &mut s, 1, &storage);
    // 1 -> 3
    let mut thirds = Vec::new();
    let mut union = Vec::new();
    for i in 0..3 {
        let ctx = BackendContext::for_subtask(MAX_P, 3, i).unwrap();
        let (mut rb, mut rs, _) = restore::<H>(h, &ctx, std::slice::from_ref(&one), &storage);
        let range = ctx.key_group_range;
        let got = fire::<H>(&mut rb, &mut rs, i64::MAX);
        for (_, key) in &got {
            let kg = state_api::keygroup::key_group_for_key(key, MAX_P).unwrap();
            assert!(
                range.contains(kg),
                "subtask {i} got a timer of key group {kg} outside {range}"
            );
        }
        union.extend(got);
        // Re-register what this subtask holds, then snapshot it for the merge below.
        let (mut rb, mut rs, _) = restore::<H>(h, &ctx, std::slice::from_ref(&one), &storage);
        thirds.push(snapshot::<H>(&mut rb, &mut rs, 2, &storage));
    }
    union.sort();
    assert_eq!(union, all, "every timer exactly once across the subtasks");
    // 3 -> 1
    let (mut rb, mut rs, n) = restore::<H>(h, &BackendContext::single(MAX_P), &thirds, &storage);
    assert_eq!(n, 500);
    let merged = fire::<H>(&mut rb, &mut rs, i64::MAX);
    let mut sorted = merged.clone();
    sorted.sort();
    assert_eq!(sorted, all);
    assert!(merged.windows(2).all(|w| w[0].0 <= w[1].0));
}

/// A restore with another namespace type, or from a stream that is not a timer
/// snapshot, is a typed error.
pub fn service_restore_checks_types<H: TimerHarness>(h: &H) {
    let storage = MemFiles::default();
    let (mut b, mut s, _) = setup(h, &BackendContext::single(MAX_P));
    register::<H>(&mut b, &mut s, 1, 10);
    let handle = snapshot::<H>(&mut b, &mut s, 1, &storage);
    let mut b2 = h.backend(&BackendContext::single(MAX_P));
    let (e, p) = (h.queue(&mut b2, "event"), h.queue(&mut b2, "processing"));
    let mut wrong =
        InternalTimerService::<u64, String, H::Queue>::new(e, p, Arc::new(ManualClock::new(0)), MAX_P).unwrap();
    let err = wrong
        .restore(&mut b2, std::slice::from_ref(&handle), &storage)
        .unwrap_err();
    assert!(matches!(err, StateError::IncompatibleSchema { .. }), "{err}");
    // A keyed-state snapshot is not a timer snapshot.
    let state_handle = b.snapshot(2).unwrap().run(&storage).unwrap();
    let (mut b3, mut s3, _) = setup(h, &BackendContext::single(MAX_P));
    let err = s3.restore(&mut b3, &[state_handle], &storage).unwrap_err();
    assert!(err.to_string().contains("not a timer snapshot"), "{err}");
}

/// End to end: a windowed aggregation (sum per key per tumbling window of 10) whose
/// windows close by event-time timers, snapshotted mid-stream (state and timers),
/// restored at parallelism 3, and finished there: the results equal a plain reference.
pub fn service_windowed_aggregation_survives_rescaling<H: TimerHarness>(h: &H) {
    let storage = MemFiles::default();
    let mut rng = SplitMix64(42);
    let events: Vec<(u64, i64, u64)> = (0..3000)
        .map(|i| (rng.below(50), i as i64 / 10 + rng.below(5) as i64, rng.below(100)))
        .collect();
    // Reference: sum per (key, window), emitted when the watermark passes the window end.
    let mut reference: BTreeMap<(u64, i64), u64> = BTreeMap::new();
    for (k, ts, v) in &events {
        *reference.entry((*k, ts - ts.rem_euclid(10))).or_default() += v;
    }
    let mut results: BTreeMap<(u64, i64), u64> = BTreeMap::new();

    // Run one subtask over its share of `events[from..to]` with watermark = max ts - 5.
    fn run<H: TimerHarness>(
        b: &mut H::Backend,
        s: &mut Service<H>,
        events: &[(u64, i64, u64)],
        results: &mut BTreeMap<(u64, i64), u64>,
        close_all: bool,
    ) {
        let sums = b
            .register(ValueStateDescriptor::<u64>::new("sum").in_namespace::<Window>())
            .unwrap();
        let range = b.key_group_range();
        let mut max_ts = i64::MIN;
        let emit = |b: &mut H::Backend, s: &mut Service<H>, wm: i64, results: &mut BTreeMap<(u64, i64), u64>| {
            s.advance_watermark(b, wm, |b, _, t| {
                let sum = b.value_in(&sums, &t.namespace).get()?.unwrap_or(0);
                b.value_in(&sums, &t.namespace).clear()?;
                assert!(
                    results.insert((t.key, t.namespace.0), sum).is_none(),
                    "a window closes once"
                );
                Ok(())
            })
            .unwrap();
        };
        for (k, ts, v) in events {
            let kg = state_api::keygroup::key_group_for_key(k, MAX_P).unwrap();
            max_ts = max_ts.max(*ts);
            if range.contains(kg) {
                let window = (ts - ts.rem_euclid(10), ts - ts.rem_euclid(10) + 10);
                b.set_current_key(k).unwrap();
                let sum = b.value_in(&sums, &window).get().unwrap().unwrap_or(0);
                b.value_in(&sums, &window).update(sum + v).unwrap();
                s.register_event_time_timer(b, &window, window.1 - 1).unwrap();
            }
            emit(b, s, max_ts - 5, results);
        }
        if close_all {
            emit(b, s, i64::MAX, results);
        }
    }

    let (mut b, mut s, _) = setup(h, &BackendContext::single(MAX_P));
    run::<H>(&mut b, &mut s, &events[..1700], &mut results, false);
    let state = b.snapshot(1).unwrap().run(&storage).unwrap();
    let timers = snapshot::<H>(&mut b, &mut s, 1, &storage);
    drop((b, s));
    for i in 0..3 {
        let ctx = BackendContext::for_subtask(MAX_P, 3, i).unwrap();
        let mut rb = h.backend_restored(&ctx, std::slice::from_ref(&state), &storage);
        let mut rs = service(h, &mut rb, Arc::new(ManualClock::new(0)));
        rs.restore(&mut rb, std::slice::from_ref(&timers), &storage).unwrap();
        // The watermark before the snapshot, then the rest of the stream.
        let wm = events[..1700].iter().map(|e| e.1).max().unwrap() - 5;
        rs.advance_watermark(&mut rb, wm, |_, _, _| {
            panic!("nothing due before the snapshot's watermark")
        })
        .unwrap();
        run::<H>(&mut rb, &mut rs, &events[1700..], &mut results, true);
    }
    assert_eq!(results, reference);
}

const JOB_KEYS: u64 = 300;

/// What one subtask of the test job holds, read back after a restore.
struct SubtaskView {
    range: state_api::KeyGroupRange,
    values: BTreeMap<u64, u64>,
    timers: Vec<(i64, u64)>,
    offsets: Vec<u64>,
    names: Vec<String>,
    config: Vec<(u32, String)>,
}

/// Runs every subtask of `plan` (restoring what it assigns), checks what each holds,
/// then checkpoints the whole job through a coordinator as checkpoint `id` with the
/// subtasks acknowledging from threads of their own, in shuffled order. Returns the
/// completed snapshot and what each subtask held, per operator.
fn run_job<H: TimerHarness>(
    h: &H,
    storage: &MemFiles,
    plan: &state_api::JobAssignment,
    id: u64,
    fresh: bool,
) -> (state_api::JobSnapshot, BTreeMap<String, Vec<SubtaskView>>) {
    use state_api::{
        Acknowledgement, CheckpointCoordinator, CoordinatorConfig, InMemoryCheckpointStore, OperatorSpec,
        OperatorStateBackend, SubtaskState,
    };
    let specs: Vec<OperatorSpec> = plan
        .operators
        .iter()
        .map(|(op, subs)| OperatorSpec::new(op.as_str(), subs.len() as u32, MAX_P).unwrap())
        .collect();
    let store = Arc::new(InMemoryCheckpointStore::new(1));
    let coordinator = CheckpointCoordinator::new(&specs, store.clone(), CoordinatorConfig::default())
        .unwrap()
        .resume_after(id - 1);
    coordinator.trigger(id).unwrap();
    let mut views: BTreeMap<String, Vec<SubtaskView>> = BTreeMap::new();
    let mut parts = Vec::new();
    for (op_index, (op, subs)) in plan.operators.iter().enumerate() {
        for a in subs {
            let ctx = a.context();
            let mut b = if fresh {
                h.backend(&ctx)
            } else {
                h.backend_restored(&ctx, &a.keyed, storage)
            };
            let mut s = service(h, &mut b, Arc::new(ManualClock::new(0)));
            let mut ops = if fresh {
                state_api::DefaultOperatorStateBackend::new(a.index)
            } else {
                a.restore_operator_state(storage).unwrap()
            };
            if !fresh {
                s.restore(&mut b, &a.timers, storage).unwrap();
            }
            let count = b.register(ValueStateDescriptor::<u64>::new("count")).unwrap();
            let offsets = ops.list_state::<u64>("offsets").unwrap();
            let names = ops.union_list_state::<String>("names").unwrap();
            let config = ops.broadcast_state::<u32, String>("config").unwrap();
            if fresh {
                let factor = op_index as u64 + 1;
                for key in 0..JOB_KEYS {
                    let kg = state_api::keygroup::key_group_for_key(&key, MAX_P).unwrap();
                    if ctx.key_group_range.contains(kg) {
                        b.set_current_key(&key).unwrap();
                        b.value(&count).update(key * factor).unwrap();
                        let ts = 1000 * factor as i64 + key as i64;
                        s.register_event_time_timer(&mut b, &(ts - 10, ts), ts).unwrap();
                    }
                }
                for j in 0..u64::from(a.index) + 2 {
                    ops.list(&offsets)
                        .add(10_000 * factor + 100 * u64::from(a.index) + j)
                        .unwrap();
                }
                ops.list(&names).add(format!("{op}-{}", a.index)).unwrap();
                ops.broadcast(&config).put(1, format!("{op}-config")).unwrap();
            }
            // What the subtask holds (keys from the backend, timers by a pinned copy).
            let mut values = BTreeMap::new();
            for key in b.keys(&count).unwrap() {
                b.set_current_key(&key).unwrap();
                values.insert(key, b.value(&count).get().unwrap().unwrap());
            }
            let timer_handle = s.snapshot(&mut b, id).unwrap();
            let state_handle = b.snapshot(id).unwrap();
            let op_handle = ops.snapshot(id).unwrap();
            let mut config_entries = ops.broadcast(&config).entries().unwrap();
            config_entries.sort();
            views.entry(op.to_string()).or_default().push(SubtaskView {
                range: ctx.key_group_range,
                values,
                timers: Vec::new(),
                offsets: ops.list(&offsets).get().unwrap(),
                names: ops.list(&names).get().unwrap(),
                config: config_entries,
            });
            parts.push((op.clone(), a.index, state_handle, timer_handle, op_handle, b, s));
        }
    }
    // Asynchronous parts on threads of their own, acknowledging in shuffled order.
    let mut rng = SplitMix64(id);
    let mut order: Vec<usize> = (0..parts.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut slots: Vec<Option<_>> = parts.into_iter().map(Some).collect();
    let mut holders = Vec::new();
    std::thread::scope(|scope| {
        let mut joins = Vec::new();
        for i in order {
            let (op, index, state_handle, timer_handle, op_handle, b, s) = slots[i].take().unwrap();
            holders.push((op.clone(), index, b, s));
            let coordinator = &coordinator;
            joins.push(scope.spawn(move || {
                let state = SubtaskState {
                    keyed: vec![state_handle.run(storage).unwrap()],
                    timers: vec![timer_handle.run(storage).unwrap()],
                    operator: vec![op_handle.run(storage).unwrap()],
                    ..SubtaskState::default()
                };
                coordinator
                    .acknowledge(Acknowledgement {
                        checkpoint_id: id,
                        operator: op,
                        subtask: index,
                        state,
                    })
                    .unwrap()
            }));
        }
        let outcomes: Vec<_> = joins.into_iter().map(|j| j.join().unwrap()).collect();
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == state_api::AckOutcome::Completed)
                .count(),
            1,
            "exactly one acknowledgement completes the checkpoint"
        );
    });
    // Fire every subtask's timers: each must be in its key groups.
    for (op, index, mut b, mut s) in holders {
        let view = &mut views.get_mut(op.as_str()).unwrap()[index as usize];
        view.timers = fire::<H>(&mut b, &mut s, i64::MAX);
        for (_, key) in &view.timers {
            let kg = state_api::keygroup::key_group_for_key(key, MAX_P).unwrap();
            assert!(view.range.contains(kg), "{op}/{index} fired a timer of key group {kg}");
        }
    }
    let (completed, snapshot) = store.latest().unwrap();
    assert_eq!(completed, id);
    assert_eq!(coordinator.latest_completed(), Some(id));
    (snapshot, views)
}

/// Checks what every subtask of every operator held after a restore against the
/// original job (operators `a`, `b`, `c` at parallelism 1/2/3).
/// `restored`: the lists were redistributed by a restore (else each subtask wrote its own).
fn check_job(views: &BTreeMap<String, Vec<SubtaskView>>, original_lists: &BTreeMap<String, Vec<u64>>, restored: bool) {
    for (op_index, op) in ["a", "b", "c"].iter().enumerate() {
        let factor = op_index as u64 + 1;
        let subs = &views[*op];
        let p = subs.len();
        let mut keys = Vec::new();
        let mut timers = Vec::new();
        let mut offsets = Vec::new();
        for (i, v) in subs.iter().enumerate() {
            for (key, value) in &v.values {
                let kg = state_api::keygroup::key_group_for_key(key, MAX_P).unwrap();
                assert!(
                    v.range.contains(kg),
                    "{op}/{i} holds key {key} of key group {kg} outside {}",
                    v.range
                );
                assert_eq!(*value, key * factor, "{op}/{i} key {key}");
                keys.push(*key);
            }
            timers.extend(v.timers.iter().copied());
            // Even split: contiguous slices, the first n % p one element longer.
            let n = original_lists[*op].len();
            if restored {
                assert_eq!(
                    v.offsets.len(),
                    n / p + usize::from(i < n % p),
                    "{op}/{i} even-split share"
                );
            }
            offsets.extend(v.offsets.iter().copied());
            // Union lists grow on every restore (each subtask gets every old subtask's
            // elements, as in Flink); each subtask must hold every original element.
            let mut names = v.names.clone();
            names.sort();
            names.dedup();
            let expected_names: Vec<String> = (0..[1, 2, 3][op_index]).map(|j| format!("{op}-{j}")).collect();
            if restored {
                assert_eq!(names, expected_names, "{op}/{i}: union state goes to every subtask");
            } else {
                assert_eq!(names, vec![format!("{op}-{i}")], "{op}/{i}: its own union element");
            }
            assert_eq!(v.config, vec![(1, format!("{op}-config"))], "{op}/{i} broadcast state");
        }
        keys.sort();
        assert_eq!(keys, (0..JOB_KEYS).collect::<Vec<_>>(), "{op}: every key exactly once");
        timers.sort();
        let mut expected: Vec<(i64, u64)> = (0..JOB_KEYS).map(|k| (1000 * factor as i64 + k as i64, k)).collect();
        expected.sort();
        assert_eq!(timers, expected, "{op}: every timer exactly once");
        assert_eq!(&offsets, &original_lists[*op], "{op}: the even-split list, in order");
    }
}

/// A job of three operators at parallelism 1/2/3 with keyed, timer and operator state
/// (even-split, union, broadcast), checkpointed through the coordinator, restored at
/// (3, 1, 4), checkpointed again and restored at (1, 3, 2): every key and timer exactly
/// once, each subtask holding only its key groups, operator lists redistributed as
/// Flink does.
pub fn job_checkpoint_and_rescale<H: TimerHarness>(h: &H) {
    use state_api::{JobAssignment, JobSnapshot, OperatorSpec, RestoreOptions};
    let storage = MemFiles::default();
    let job = |p: [u32; 3]| -> Vec<OperatorSpec> {
        ["a", "b", "c"]
            .iter()
            .zip(p)
            .map(|(op, p)| OperatorSpec::new(op, p, MAX_P).unwrap())
            .collect()
    };
    let start = JobAssignment::new(&JobSnapshot::default(), &job([1, 2, 3]), RestoreOptions::default()).unwrap();
    let (first, views) = run_job(h, &storage, &start, 1, true);
    let original: BTreeMap<String, Vec<u64>> = views
        .iter()
        .map(|(op, subs)| {
            (
                op.clone(),
                subs.iter().flat_map(|v| v.offsets.iter().copied()).collect(),
            )
        })
        .collect();
    check_job(&views, &original, false);
    assert_eq!(first.operators.len(), 3);
    let mut second = None;
    for (id, p) in [(2, [3, 1, 4]), (3, [1, 3, 2])] {
        let from = second.as_ref().unwrap_or(&first);
        let plan = JobAssignment::new(from, &job(p), RestoreOptions::default()).unwrap();
        let (snapshot, views) = run_job(h, &storage, &plan, id, false);
        check_job(&views, &original, true);
        second = Some(snapshot);
    }
    // A job without operator `c` refuses its state unless told to drop it.
    let three = job([1, 1, 1]);
    let partial = &three[..2];
    let err = JobAssignment::new(&first, partial, RestoreOptions::default()).unwrap_err();
    assert!(
        matches!(&err, StateError::InvalidCheckpoint { operator, .. } if operator == "c"),
        "{err}"
    );
    JobAssignment::new(
        &first,
        partial,
        RestoreOptions::default().allow_non_restored_state(true),
    )
    .unwrap();
}

/// The one list of the timer-service cases: `((path::to::m) { prefix })` expands to
/// `path::to::m! { prefix case, … }`; [`SERVICE_CASES`] and `timer_service_tests!` are
/// made from it.
#[doc(hidden)]
#[macro_export]
macro_rules! __timer_service_cases {
    (($($callback:tt)*) { $($prefix:tt)* }) => {
        $($callback)*! { $($prefix)*
            service_fires_event_time_timers_in_order,
            service_timers_registered_while_firing,
            service_deduplicates_and_deletes,
            service_for_each_timer_visits_every_timer_with_its_key,
            service_processing_time_with_injected_clock,
            service_snapshot_is_asynchronous_and_restores,
            service_restore_rescales,
            service_restore_checks_types,
            service_windowed_aggregation_survives_rescaling,
            job_checkpoint_and_rescale,
        }
    };
}

/// Expands a list of case names into a `&[&str]` of their names.
#[doc(hidden)]
#[macro_export]
macro_rules! __service_case_names {
    ($($case:ident),* $(,)?) => {
        &[$(stringify!($case)),*]
    };
}

/// Every timer-service case, by name.
pub const SERVICE_CASES: &[&str] = crate::__timer_service_cases!((crate::__service_case_names) {});

/// Expands to one `#[test]` per service case for a [`TimerHarness`].
#[macro_export]
macro_rules! timer_service_tests {
    ($harness:expr) => {
        $crate::__timer_service_cases!(($crate::timer_service_tests) { @cases $harness; });
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testkit::$case(&$harness);
            }
        )*
    };
}

#[cfg(test)]
mod list_tests {
    /// Every `pub fn` case of this file is in the one list.
    #[test]
    fn every_timer_service_case_is_listed() {
        let mut defined: Vec<&str> = include_str!("testkit.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub fn "))
            .filter(|l| l.contains("<H: TimerHarness>"))
            .filter_map(|l| l.split('<').next())
            .collect();
        defined.sort_unstable();
        let mut listed = super::SERVICE_CASES.to_vec();
        listed.sort_unstable();
        assert_eq!(defined, listed);
    }
}
