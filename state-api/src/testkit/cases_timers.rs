//! Cases: every timer storage (heap, LMDB, RocksDB) behaves as the same priority-queue
//! set of [`TimerEntry`]s: firing order, de-duplication, removal, key-group bounds,
//! snapshots pinned while the queue keeps changing, and a random model test.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;

use super::SplitMix64;
use super::model::{fail, proptest_runner};
use crate::keygroup::KeyGroupRange;
use crate::timer::{TimerEntry, TimerQueue, TimerQueueInfo};

/// Creates empty timer queues (and the host they live in) for the timer cases.
pub trait TimerQueueFactory {
    /// Where the queue lives (a RocksDB backend; `()` for stand-alone storages).
    type Host;
    /// The queue.
    type Queue: TimerQueue<Self::Host>;
    /// An empty queue for `range` of `max_parallelism` key groups.
    fn create(&self, range: KeyGroupRange, max_parallelism: u32) -> (Self::Host, Self::Queue);
}

fn t(ts: i64, kg: u32, key: &[u8], ns: &[u8]) -> TimerEntry {
    TimerEntry {
        timestamp: ts,
        key_group: kg,
        key: key.to_vec(),
        namespace: ns.to_vec(),
    }
}

fn drain<H, Q: TimerQueue<H>>(host: &mut H, q: &mut Q) -> Vec<TimerEntry> {
    let mut out = Vec::new();
    while let Some(e) = q.poll(host).expect("poll") {
        out.push(e);
    }
    assert!(q.is_empty());
    assert_eq!(q.peek(), None);
    out
}

/// Timers come out by timestamp, then key group, then key bytes, then namespace bytes.
pub fn timer_queue_fires_in_documented_order<F: TimerQueueFactory>(f: &F) {
    let (mut h, mut q) = f.create(KeyGroupRange::all(128), 128);
    let input = [
        t(5, 9, b"b", b"x"),
        t(5, 9, b"a", b"y"),
        t(5, 9, b"a", b"x"),
        t(5, 2, b"z", b"z"),
        t(-3, 100, b"k", b""),
        t(i64::MAX, 0, b"k", b""),
        t(i64::MIN, 127, b"k", b""),
        t(0, 64, b"k", b""),
    ];
    for e in &input {
        assert!(q.add(&mut h, e).unwrap());
    }
    assert_eq!(q.len(), input.len());
    let mut expected: Vec<_> = input.to_vec();
    expected.sort();
    assert_eq!(q.peek(), expected.first());
    assert_eq!(drain(&mut h, &mut q), expected);
}

/// At most one timer per (key group, key, namespace, timestamp).
pub fn timer_queue_deduplicates<F: TimerQueueFactory>(f: &F) {
    let (mut h, mut q) = f.create(KeyGroupRange::all(128), 128);
    assert!(q.add(&mut h, &t(10, 1, b"k", b"n")).unwrap());
    assert!(!q.add(&mut h, &t(10, 1, b"k", b"n")).unwrap());
    assert!(q.add(&mut h, &t(11, 1, b"k", b"n")).unwrap());
    assert!(q.add(&mut h, &t(10, 1, b"k", b"m")).unwrap());
    assert!(q.add(&mut h, &t(10, 1, b"j", b"n")).unwrap());
    assert_eq!(q.len(), 4);
    assert_eq!(drain(&mut h, &mut q).len(), 4);
}

/// A bulk add (a restore) is the same as adding one by one: duplicates and timers
/// already queued are skipped and counted out, firing order and the head are right.
pub fn timer_queue_add_all_is_one_by_one<F: TimerQueueFactory>(f: &F) {
    let (mut h, mut q) = f.create(KeyGroupRange::all(128), 128);
    assert!(q.add(&mut h, &t(50, 3, b"k", b"n")).unwrap());
    let mut rng = SplitMix64(11);
    let mut batch: Vec<TimerEntry> = (0..500)
        .map(|i| {
            t(
                rng.below(1000) as i64 - 100,
                rng.below(128) as u32,
                &[(i % 7) as u8],
                b"n",
            )
        })
        .collect();
    batch.push(t(50, 3, b"k", b"n")); // already queued
    batch.push(batch[0].clone()); // twice in the batch
    let distinct: BTreeSet<TimerEntry> = batch.iter().cloned().chain([t(50, 3, b"k", b"n")]).collect();
    let added = q.add_all(&mut h, &batch).unwrap();
    assert_eq!(added, distinct.len() - 1, "only timers not queued yet are counted");
    assert_eq!(q.len(), distinct.len());
    assert_eq!(q.peek(), distinct.first());
    assert_eq!(drain(&mut h, &mut q), distinct.into_iter().collect::<Vec<_>>());
}

/// Removing a queued timer (the head or not) takes it out; removing an absent one is a no-op.
pub fn timer_queue_removes<F: TimerQueueFactory>(f: &F) {
    let (mut h, mut q) = f.create(KeyGroupRange::all(128), 128);
    for ts in 0..10 {
        q.add(&mut h, &t(ts, (ts as u32) % 3, b"k", b"")).unwrap();
    }
    assert!(q.remove(&mut h, &t(0, 0, b"k", b"")).unwrap(), "the head");
    assert_eq!(q.peek().map(|e| e.timestamp), Some(1));
    assert!(q.remove(&mut h, &t(5, 2, b"k", b"")).unwrap(), "a middle timer");
    assert!(!q.remove(&mut h, &t(5, 2, b"k", b"")).unwrap(), "already gone");
    assert!(!q.remove(&mut h, &t(5, 1, b"k", b"")).unwrap(), "never there");
    assert_eq!(q.len(), 8);
    let left: Vec<i64> = drain(&mut h, &mut q).iter().map(|e| e.timestamp).collect();
    assert_eq!(left, vec![1, 2, 3, 4, 6, 7, 8, 9]);
}

/// A timer of a key group the queue does not hold is refused; nothing changes.
pub fn timer_queue_rejects_foreign_key_groups<F: TimerQueueFactory>(f: &F) {
    let (mut h, mut q) = f.create(KeyGroupRange::new(10, 19), 128);
    assert!(q.add(&mut h, &t(1, 9, b"k", b"")).is_err());
    assert!(q.add(&mut h, &t(1, 20, b"k", b"")).is_err());
    assert!(q.add(&mut h, &t(1, 10, b"k", b"")).unwrap());
    assert!(!q.remove(&mut h, &t(1, 20, b"k", b"")).unwrap());
    assert_eq!(q.len(), 1);
    assert_eq!(q.key_group_range(), KeyGroupRange::new(10, 19));
}

/// With more than 128 key groups the key-group prefix takes two bytes; order still holds.
pub fn timer_queue_with_many_key_groups<F: TimerQueueFactory>(f: &F) {
    let (mut h, mut q) = f.create(KeyGroupRange::new(0, 4095), 4096);
    let mut rng = SplitMix64(7);
    let mut model = BTreeSet::new();
    for i in 0..2000u32 {
        let e = t(rng.below(50) as i64, rng.below(4096) as u32, &i.to_be_bytes(), b"");
        q.add(&mut h, &e).unwrap();
        model.insert(e);
    }
    assert_eq!(drain(&mut h, &mut q), model.into_iter().collect::<Vec<_>>());
}

/// A pinned queue reads the timers as they were at `pin`, on another thread, while the
/// queue is changed (added to, removed from, polled).
pub fn timer_queue_pin_is_consistent_while_mutating<F: TimerQueueFactory>(f: &F) {
    let range = KeyGroupRange::all(128);
    let (mut h, mut q) = f.create(range, 128);
    let mut rng = SplitMix64(11);
    let mut model = BTreeSet::new();
    for i in 0..3000u32 {
        let e = t(rng.below(1000) as i64, rng.below(8) as u32 * 16, &i.to_be_bytes(), b"w");
        q.add(&mut h, &e).unwrap();
        model.insert(e);
    }
    let pinned = q.pin(&mut h).unwrap();
    for i in 0..500u32 {
        q.poll(&mut h).unwrap();
        q.add(&mut h, &t(i as i64, 16, b"new", b"")).unwrap();
    }
    let reader = std::thread::spawn(move || {
        range
            .iter()
            .flat_map(|kg| pinned.key_group(kg).expect("pinned read"))
            .collect::<Vec<_>>()
    });
    let mut seen = reader.join().unwrap();
    for pair in seen.windows(2) {
        if pair[0].key_group == pair[1].key_group {
            assert!(pair[0] < pair[1], "a key group's timers come in firing order");
        }
    }
    seen.sort();
    assert_eq!(seen, model.into_iter().collect::<Vec<_>>());
    assert_eq!(q.len(), 3000);
}

/// One operation of the timer-queue model test.
#[derive(Debug, Clone)]
enum TimerOp {
    Add(TimerEntry),
    /// Removes the model's `n % (len + 1)`-th timer, or an absent one when that is `len`.
    Remove(u64),
    Poll,
}

fn timer_op() -> impl Strategy<Value = TimerOp> {
    prop_oneof![
        6 => (-100..200i64, 0..4u32, 0..40u8, 0..3u8).prop_map(|(ts, kg, k, n)| TimerOp::Add(t(ts, kg, &[k], &[n]))),
        2 => any::<u64>().prop_map(TimerOp::Remove),
        2 => Just(TimerOp::Poll),
    ]
}

/// The sequence the hand-written test drew from SplitMix64 `seed` (4000 operations).
fn seeded_timer_ops(seed: u64) -> Vec<TimerOp> {
    let mut rng = SplitMix64(seed);
    (0..4000)
        .map(|_| match rng.below(10) {
            0..=5 => TimerOp::Add(t(
                rng.below(300) as i64 - 100,
                rng.below(4) as u32,
                &[rng.below(40) as u8],
                &[rng.below(3) as u8],
            )),
            6 | 7 => TimerOp::Remove(rng.next_u64()),
            _ => TimerOp::Poll,
        })
        .collect()
}

fn run_timer_ops<F: TimerQueueFactory>(f: &F, ops: &[TimerOp]) -> TestCaseResult {
    let (mut h, mut q) = f.create(KeyGroupRange::new(0, 63), 128);
    let mut model: BTreeSet<TimerEntry> = BTreeSet::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            TimerOp::Add(e) => {
                // By reference and owned (a timer service's register), alternately.
                let added = if step % 2 == 0 {
                    q.add(&mut h, e)
                } else {
                    q.add_owned(&mut h, e.clone())
                };
                prop_assert_eq!(added.map_err(fail)?, model.insert(e.clone()), "add, step {}", step);
            }
            TimerOp::Remove(n) => {
                let candidate = model.iter().nth((n % (model.len() as u64 + 1)) as usize).cloned();
                let e = candidate.unwrap_or_else(|| t(1, 1, b"absent", b""));
                prop_assert_eq!(
                    q.remove(&mut h, &e).map_err(fail)?,
                    model.remove(&e),
                    "remove, step {}",
                    step
                );
            }
            TimerOp::Poll => {
                prop_assert_eq!(q.poll(&mut h).map_err(fail)?, model.pop_first(), "poll, step {}", step);
            }
        }
        prop_assert_eq!(q.len(), model.len(), "len, step {}", step);
        prop_assert_eq!(q.peek(), model.first(), "peek, step {}", step);
    }
    let mut rest = Vec::new();
    while let Some(e) = q.poll(&mut h).map_err(fail)? {
        rest.push(e);
    }
    prop_assert!(q.is_empty());
    prop_assert_eq!(rest, model.into_iter().collect::<Vec<_>>());
    Ok(())
}

/// Random adds, removes and polls against a `BTreeSet` model, with many timers in few
/// key groups (more than a storage's per-key-group cache). The three seeds of the earlier
/// hand-written test run first, as regressions; then `proptest` draws 32 sequences and
/// shrinks a failing one (see [`model_random_operations_with_snapshots`](super::model_random_operations_with_snapshots)
/// for the environment variables).
pub fn timer_queue_model_random_operations<F: TimerQueueFactory>(f: &F) {
    for seed in [1u64, 2, 3] {
        if let Err(e) = run_timer_ops(f, &seeded_timer_ops(seed)) {
            panic!("regression seed {seed}: {e}");
        }
    }
    let strategy = proptest::collection::vec(timer_op(), 1..2000);
    if let Err(e) = proptest_runner(32).run(&strategy, |ops| run_timer_ops(f, &ops)) {
        panic!("timer-queue model test failed: {e}");
    }
}

/// The one list of the timer-queue cases (see `__keyed_conformance_cases`).
#[doc(hidden)]
#[macro_export]
macro_rules! __timer_queue_cases {
    (($($callback:tt)*) { $($prefix:tt)* }) => {
        $($callback)*! { $($prefix)*
            timer_queue_fires_in_documented_order,
            timer_queue_deduplicates,
            timer_queue_add_all_is_one_by_one,
            timer_queue_removes,
            timer_queue_rejects_foreign_key_groups,
            timer_queue_with_many_key_groups,
            timer_queue_pin_is_consistent_while_mutating,
            timer_queue_model_random_operations,
        }
    };
}

/// Every timer-queue case, by name.
pub const TIMER_CASES: &[&str] = crate::__timer_queue_cases!((crate::__case_names) {});

/// Expands to one `#[test]` per timer-queue case for a [`TimerQueueFactory`].
#[macro_export]
macro_rules! timer_queue_conformance_tests {
    ($factory:expr) => {
        $crate::__timer_queue_cases!(($crate::timer_queue_conformance_tests) { @cases $factory; });
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testkit::$case(&$factory);
            }
        )*
    };
}

#[cfg(test)]
mod list_tests {
    /// Every `pub fn` timer-queue case of this file is in the one list.
    #[test]
    fn every_timer_queue_case_is_listed() {
        let mut defined: Vec<&str> = include_str!("cases_timers.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub fn "))
            .filter(|l| l.contains("<F: TimerQueueFactory"))
            .filter_map(|l| l.split('<').next())
            .collect();
        defined.sort_unstable();
        let mut listed = super::TIMER_CASES.to_vec();
        listed.sort_unstable();
        assert_eq!(defined, listed);
    }
}
