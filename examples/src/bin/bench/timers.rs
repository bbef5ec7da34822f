//! Timer benchmarks: register then fire timers on each storage against a plain
//! `BinaryHeap` doing the same work, and snapshot + restore of the timers against a raw
//! write and read of the same bytes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::sync::Arc;

use state_api::testkit::{MemFiles, SplitMix64};
use state_api::{BackendContext, KeyedStateBackend, Result, SystemClock, TimerQueue, TimerService};
use state_heap::HeapKeyedStateBackend;
use state_timers::{InternalTimerService, LmdbConfig, TimerStorage};

use super::{Row, ns_per_op};

/// (key, timestamp) of timer `i`: random timestamps, `keys` distinct keys.
fn timers(n: u64, keys: u64) -> Vec<(u64, i64)> {
    let mut r = SplitMix64(99);
    (0..n).map(|_| (r.below(keys), r.below(10_000_000) as i64)).collect()
}

/// Registers every timer, then fires them all; returns ns per timer (register + fire).
fn run_service<B, Q>(backend: &mut B, service: &mut InternalTimerService<u64, (), Q>, input: &[(u64, i64)]) -> f64
where
    B: KeyedStateBackend<Key = u64>,
    Q: TimerQueue<B>,
{
    let mut fired = 0u64;
    let ns = ns_per_op(input.len() as u64, || {
        for (key, ts) in input {
            backend.set_current_key(key).unwrap();
            service.register_event_time_timer(backend, &(), *ts).unwrap();
        }
        service
            .advance_watermark(backend, i64::MAX, |_, _, t| {
                fired += black_box(t.timestamp) as u64 & 1;
                Ok(())
            })
            .unwrap();
    });
    black_box(fired);
    ns
}

fn binary_heap(input: &[(u64, i64)]) -> f64 {
    ns_per_op(input.len() as u64, || {
        let mut heap = BinaryHeap::with_capacity(input.len());
        for (key, ts) in input {
            heap.push(Reverse((*ts, *key)));
        }
        let mut sum = 0u64;
        while let Some(Reverse((ts, key))) = heap.pop() {
            sum = sum.wrapping_add(ts as u64 ^ key);
        }
        black_box(sum);
    })
}

pub fn timer_rows(n: u64, keys: u64, rows: &mut Vec<Row>) -> Result<()> {
    let input = timers(n, keys);
    let ctx = BackendContext::single(128);
    let mut row = |name: String, ours: f64, base: f64| {
        rows.push(Row {
            name,
            ours,
            baseline: base,
            unit: "ns/timer",
            baseline_name: "std BinaryHeap",
            target: "reported",
        });
    };
    let lmdb = TimerStorage::Lmdb(LmdbConfig::default());
    for (label, storage) in [("heap", TimerStorage::Heap), ("LMDB", lmdb)] {
        let base = binary_heap(&input);
        let mut b = HeapKeyedStateBackend::<u64>::new(&ctx)?;
        let mut s = InternalTimerService::<u64, (), _>::new(
            storage.create_queue(ctx.key_group_range, 128)?,
            storage.create_queue(ctx.key_group_range, 128)?,
            Arc::new(SystemClock),
            128,
        )?;
        let ours = run_service(&mut b, &mut s, &input);
        row(
            format!("timers register + fire, {n} timers / {keys} keys, {label} storage"),
            ours,
            base,
        );
    }
    #[cfg(feature = "rocksdb")]
    {
        use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
        let base = binary_heap(&input);
        let mut b = RocksDbKeyedStateBackend::<u64>::new(&ctx, RocksDbConfig::default())?;
        let (e, p) = (b.create_timer_queue("e")?, b.create_timer_queue("p")?);
        let mut s = InternalTimerService::<u64, (), _>::new(e, p, Arc::new(SystemClock), 128)?;
        let ours = run_service(&mut b, &mut s, &input);
        row(
            format!("timers register + fire, {n} timers / {keys} keys, RocksDB storage"),
            ours,
            base,
        );
    }
    snapshot_restore(&input, rows)
}

/// Snapshot (synchronous + asynchronous part) and restore of heap timers, against a raw
/// write and read of the same number of bytes.
fn snapshot_restore(input: &[(u64, i64)], rows: &mut Vec<Row>) -> Result<()> {
    let ctx = BackendContext::single(128);
    let mut b = HeapKeyedStateBackend::<u64>::new(&ctx)?;
    let storage = TimerStorage::Heap;
    let make = |storage: &TimerStorage| -> Result<InternalTimerService<u64, (), _>> {
        InternalTimerService::new(
            storage.create_queue(ctx.key_group_range, 128)?,
            storage.create_queue(ctx.key_group_range, 128)?,
            Arc::new(SystemClock),
            128,
        )
    };
    let mut s = make(&storage)?;
    for (key, ts) in input {
        b.set_current_key(key)?;
        s.register_event_time_timer(&mut b, &(), *ts)?;
    }
    let count = s.event_timer_count();
    let files = MemFiles::default();
    let t = std::time::Instant::now();
    let sync = std::time::Instant::now();
    let pending = s.snapshot(&mut b, 1)?;
    let sync_us = sync.elapsed().as_secs_f64() * 1e6;
    let handle = pending.run(&files)?;
    let write = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let mut restored = make(&storage)?;
    let n = restored.restore(&mut b, std::slice::from_ref(&handle), &files)?;
    let read = t.elapsed().as_secs_f64();
    assert_eq!(n, count);
    let bytes = handle.stream.size() as usize;
    let payload = vec![7u8; bytes];
    let t = std::time::Instant::now();
    let mut copy = Vec::with_capacity(bytes);
    copy.extend_from_slice(black_box(&payload));
    let raw_write = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let sum: u64 = black_box(&copy).iter().map(|b| u64::from(*b)).sum();
    black_box(sum);
    let raw_read = t.elapsed().as_secs_f64();
    rows.push(Row {
        name: format!("heap timers snapshot synchronous part, {count} timers"),
        ours: sync_us,
        baseline: 1000.0,
        unit: "µs",
        baseline_name: "1 ms target",
        target: "< 1×",
    });
    rows.push(Row {
        name: format!("timers snapshot, {count} timers ({bytes} bytes, in-memory storage)"),
        ours: bytes as f64 / write / 1e6,
        baseline: bytes as f64 / raw_write.max(1e-9) / 1e6,
        unit: "MB/s",
        baseline_name: "memcpy of the same bytes",
        target: "reported",
    });
    rows.push(Row {
        name: format!("timers restore, {count} timers (into heap storage)"),
        ours: bytes as f64 / read / 1e6,
        baseline: bytes as f64 / raw_read.max(1e-9) / 1e6,
        unit: "MB/s",
        baseline_name: "sequential read of the same bytes",
        target: "reported",
    });
    Ok(())
}
