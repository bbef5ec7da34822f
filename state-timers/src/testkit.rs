//! Service-level timer cases (feature `testkit`), run on every storage: the heap and
//! LMDB storages here, the RocksDB storage in `state-rocksdb`. The queue-level cases are
//! in `state_api::testkit` (`timer_queue_conformance_tests!`).
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
    assert_eq!(s.len(), (0, 0));
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
        s.len(),
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
    assert_eq!(s.len(), (2, 0));
    let mut got = fire::<H>(&mut b, &mut s, 100);
    got.sort();
    assert_eq!(got, vec![(10, 1), (10, 2)]);
    // Without a current key, registering is an error.
    let mut fresh = h.backend(&BackendContext::single(MAX_P));
    let mut s2 = service(h, &mut fresh, Arc::new(ManualClock::new(0)));
    let err = s2.register_event_time_timer(&mut fresh, &(0, 1), 1).unwrap_err();
    assert!(matches!(err, StateError::NoCurrentKey));
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
    assert_eq!(rs.len(), (300, 300));
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
    assert!(matches!(err, StateError::IncompatibleType { .. }), "{err}");
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

/// Expands to one `#[test]` per service case for a [`TimerHarness`].
#[macro_export]
macro_rules! timer_service_tests {
    ($harness:expr) => {
        $crate::timer_service_tests!(@cases $harness;
            service_fires_event_time_timers_in_order,
            service_timers_registered_while_firing,
            service_deduplicates_and_deletes,
            service_processing_time_with_injected_clock,
            service_snapshot_is_asynchronous_and_restores,
            service_restore_rescales,
            service_restore_checks_types,
            service_windowed_aggregation_survives_rescaling,
        );
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
