//! The main job: bids per auction per window, on the heap backend, with periodic
//! asynchronous checkpoints, a simulated failure and recovery from the last completed
//! checkpoint, checked against a reference implementation.
//!
//! `cargo xtask demo -- --events 2000000 --checkpoint-every 250000`

use std::time::Instant;

use state_api::{
    BackendContext, DefaultOperatorStateBackend, KeyedSnapshotHandle, KeyedStateBackend, OperatorSnapshotHandle,
    OperatorStateBackend, Result,
};
use state_examples::{AuctionWindows, MAX_OUT_OF_ORDER_MS, bid, reference};
use state_heap::{HeapKeyedStateBackend, MemoryCheckpointStorage};

const WINDOW: i64 = 10_000;
const WATERMARK_EVERY: u64 = 1_000;

struct Checkpoint {
    id: u64,
    next_event: u64,
    keyed: KeyedSnapshotHandle,
    operator: OperatorSnapshotHandle,
    results: usize,
    max_ts: i64,
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    let events = arg("--events", 2_000_000);
    let every = arg("--checkpoint-every", 250_000).max(WATERMARK_EVERY);
    let fail_at = arg("--fail-at", events * 7 / 10);
    let lag = MAX_OUT_OF_ORDER_MS;
    let storage = MemoryCheckpointStorage::with_max_state_size(256 * 1024 * 1024);
    let ctx = BackendContext::single(128);

    println!(
        "demo: {events} bids, tumbling {WINDOW} ms windows, checkpoint every {every} events, failure after {fail_at}"
    );
    let started = Instant::now();
    let mut backend = HeapKeyedStateBackend::<u64>::new(&ctx)?;
    let mut ops = DefaultOperatorStateBackend::new(0);
    let mut job = AuctionWindows::open(&mut backend, &mut ops, WINDOW)?;
    let mut results = Vec::new();
    let mut last: Option<Checkpoint> = None;
    let mut checkpoints = 0;
    let mut checkpoint_bytes = 0;
    let mut max_ts = i64::MIN;
    let mut i = 0;
    let mut failed = false;
    while i < events {
        if i == fail_at && !failed {
            // Simulated crash: everything in memory is lost; restore the last checkpoint.
            failed = true;
            let t = Instant::now();
            let cp = last
                .as_ref()
                .ok_or_else(|| state_api::StateError::InvalidArgument("failure before the first checkpoint".into()))?;
            backend = HeapKeyedStateBackend::<u64>::restore(&ctx, std::slice::from_ref(&cp.keyed), &storage)?;
            ops = DefaultOperatorStateBackend::restore(std::slice::from_ref(&cp.operator), 0, 1, &storage)?;
            job = AuctionWindows::open(&mut backend, &mut ops, WINDOW)?;
            results.truncate(cp.results);
            i = cp.next_event;
            max_ts = cp.max_ts;
            println!(
                "  failure at event {fail_at}: restored checkpoint {} (event {i}) in {:?}",
                cp.id,
                t.elapsed()
            );
            continue;
        }
        let b = bid(i);
        max_ts = max_ts.max(b.ts);
        job.process(&mut backend, &mut ops, &b)?;
        i += 1;
        if i % WATERMARK_EVERY == 0 {
            job.on_watermark(&mut backend, &mut ops, max_ts - lag, &mut results)?;
        }
        if i % every == 0 {
            checkpoints += 1;
            let id = checkpoints;
            let keyed = backend.snapshot(id)?;
            let operator = ops.snapshot(id)?;
            // The asynchronous part runs on another thread while the job goes on; here we
            // join at once for simplicity of bookkeeping.
            let st = storage;
            let (keyed, operator) =
                std::thread::spawn(move || -> Result<_> { Ok((keyed.run(&st)?, operator.run(&st)?)) })
                    .join()
                    .map_err(|_| state_api::StateError::InvalidArgument("snapshot thread panicked".into()))??;
            checkpoint_bytes += keyed.stream.size() + operator.stream.size();
            last = Some(Checkpoint {
                id,
                next_event: i,
                keyed,
                operator,
                results: results.len(),
                max_ts,
            });
        }
    }
    job.on_watermark(&mut backend, &mut ops, i64::MAX, &mut results)?;
    let elapsed = started.elapsed();
    results.sort();
    let expected = reference(events, WINDOW, lag, WATERMARK_EVERY);
    println!(
        "done: {} results in {:.2?} ({:.0} events/s), {checkpoints} checkpoints, {} bytes written",
        results.len(),
        elapsed,
        events as f64 / elapsed.as_secs_f64(),
        checkpoint_bytes
    );
    if results == expected {
        println!("results match the reference implementation (exactly-once state across the failure)");
        Ok(())
    } else {
        let first = results.iter().zip(&expected).position(|(a, b)| a != b);
        Err(state_api::StateError::InvalidArgument(format!(
            "results differ from the reference: {} vs {} results, first difference at {first:?}",
            results.len(),
            expected.len()
        )))
    }
}
