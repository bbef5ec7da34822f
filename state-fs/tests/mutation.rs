//! Seeded mutation tests of every reader that takes bytes from storage (the stable
//! stand-in for `cargo fuzz`): the canonical keyed stream, the timer stream, the operator
//! stream, `_metadata` v1 and v2, the shared-file registry and the coordinator's wire
//! messages. From valid seeds, 10,000 inputs per reader: bit flips, truncation, splicing,
//! and length-field inflation. None may panic; every rejection must be a damage error
//! (corrupt, truncated, unsupported version, inconsistent checkpoint); and no single
//! allocation may exceed 64 MiB (length fields are checked before allocating), measured
//! by a counting global allocator.
#![allow(unsafe_code, clippy::unwrap_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use state_api::testkit::{MemFiles, SplitMix64, TestStorage};
use state_api::{
    Acknowledgement, BackendContext, CheckpointMessage, DefaultOperatorStateBackend, KeyedStateBackend,
    ListStateDescriptor, ManualClock, MapStateDescriptor, OperatorId, OperatorStateBackend, Result, StateError,
    StreamHandle, SubtaskState, TimerService, TtlConfig, ValueStateDescriptor,
};
use state_fs::{CheckpointMetadata, LeaseRecord, SharedRegistry, SnapshotKind};
use state_heap::HeapKeyedStateBackend;
use state_timers::{InternalTimerService, TimerStorage};

/// The largest single allocation any reader may make.
const MAX_ALLOCATION: usize = 64 << 20;
const INPUTS: u64 = 10_000;

struct Counting;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the wrapper only
// records the largest requested size.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One mutated copy of `seed` (with `other` for splicing).
fn mutate(rng: &mut SplitMix64, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let len = b.len().max(1) as u64;
    match rng.below(4) {
        0 => {
            for _ in 0..=rng.below(3) {
                let i = rng.below(len) as usize;
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.below(8);
                }
            }
        }
        1 => b.truncate(rng.below(len) as usize),
        2 => {
            let from = rng.below(other.len().max(1) as u64) as usize;
            let n = (rng.below(64) as usize).min(other.len().saturating_sub(from));
            let at = rng.below(len) as usize;
            let end = (at + n).min(b.len());
            b.splice(at..end, other[from..from + n].iter().copied()).for_each(drop);
        }
        _ => {
            // A length field blown up: 1, 2, 4 or 8 bytes of 0xff (or a varint's
            // continuation bits) somewhere.
            let width = 1usize << rng.below(4);
            let at = rng.below(len) as usize;
            for x in b.iter_mut().skip(at).take(width) {
                *x = 0xff;
            }
        }
    }
    b
}

/// Runs `read` on `INPUTS` mutations of `seed`: no panic, every error a damage error.
fn run(name: &str, seed: &[u8], mut read: impl FnMut(&[u8]) -> Result<()>) {
    read(seed).unwrap_or_else(|e| panic!("{name}: the seed itself does not read: {e}"));
    let mut rng = SplitMix64(name.len() as u64 * 7919);
    let mut rejected = 0;
    let reversed: Vec<u8> = seed.iter().rev().copied().collect();
    for i in 0..INPUTS {
        let input = mutate(&mut rng, seed, &reversed);
        if let Err(e) = read(&input) {
            assert!(
                e.is_damage() || matches!(e, StateError::IncompatibleType { .. } | StateError::KindMismatch { .. }),
                "{name}: input {i} gave an error that is not a damage error: {e:?}"
            );
            rejected += 1;
        }
    }
    assert!(
        rejected > INPUTS / 2,
        "{name}: only {rejected} of {INPUTS} mutations were rejected"
    );
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < MAX_ALLOCATION, "{name}: an allocation of {largest} bytes");
}

fn only_file(storage: &MemFiles, handle: &StreamHandle) -> String {
    match handle {
        StreamHandle::File { path, .. } => {
            assert!(storage.content(path).is_some());
            path.clone()
        }
        StreamHandle::Inline { .. } => panic!("MemFiles writes files"),
    }
}

#[test]
fn canonical_keyed_stream() {
    let storage = MemFiles::default();
    let ctx = BackendContext::single(128).with_clock(Arc::new(ManualClock::new(0)));
    let mut b = HeapKeyedStateBackend::<u64>::new(&ctx).unwrap();
    let v = b
        .register(ValueStateDescriptor::<u64>::new("v").with_ttl(TtlConfig::new(std::time::Duration::from_secs(60))))
        .unwrap();
    let l = b
        .register(ListStateDescriptor::<String>::new("l").in_namespace::<i64>())
        .unwrap();
    let m = b.register(MapStateDescriptor::<u32, Vec<u8>>::new("m")).unwrap();
    for k in 0..40u64 {
        b.set_current_key(&k).unwrap();
        b.value(&v).update(k).unwrap();
        b.list_in(&l, &(k as i64 % 3)).add(format!("e{k}")).unwrap();
        b.map(&m).put(k as u32, vec![k as u8; 5]).unwrap();
    }
    let handle = b.snapshot(1).unwrap().run(&storage).unwrap();
    let path = only_file(&storage, &handle.stream);
    let seed = storage.content(&path).unwrap();
    run("keyed stream", &seed, |bytes| {
        storage.replace(&path, bytes.to_vec());
        let mut r = HeapKeyedStateBackend::<u64>::restore(&ctx, std::slice::from_ref(&handle), &storage)?;
        r.register(ValueStateDescriptor::<u64>::new("v").with_ttl(TtlConfig::new(std::time::Duration::from_secs(60))))?;
        r.register(ListStateDescriptor::<String>::new("l").in_namespace::<i64>())?;
        r.register(MapStateDescriptor::<u32, Vec<u8>>::new("m"))?;
        Ok(())
    });
}

#[test]
fn timer_stream() {
    let storage = MemFiles::default();
    let ctx = BackendContext::single(128);
    let service = |b: &mut HeapKeyedStateBackend<u64>| {
        let _ = b;
        InternalTimerService::<u64, i64, _>::new(
            TimerStorage::Heap.create_queue(ctx.key_group_range, 128).unwrap(),
            TimerStorage::Heap.create_queue(ctx.key_group_range, 128).unwrap(),
            Arc::new(ManualClock::new(0)),
            128,
        )
        .unwrap()
    };
    let mut b = HeapKeyedStateBackend::<u64>::new(&ctx).unwrap();
    let mut s = service(&mut b);
    for k in 0..60u64 {
        b.set_current_key(&k).unwrap();
        s.register_event_time_timer(&mut b, &(k as i64), 1000 + k as i64)
            .unwrap();
        s.register_processing_time_timer(&mut b, &0, 50 + k as i64).unwrap();
    }
    let handle = s.snapshot(&mut b, 1).unwrap().run(&storage).unwrap();
    let path = only_file(&storage, &handle.stream);
    let seed = storage.content(&path).unwrap();
    run("timer stream", &seed, |bytes| {
        storage.replace(&path, bytes.to_vec());
        let mut b = HeapKeyedStateBackend::<u64>::new(&ctx)?;
        let mut s = service(&mut b);
        s.restore(&mut b, std::slice::from_ref(&handle), &storage).map(|_| ())
    });
}

#[test]
fn operator_stream() {
    let storage = MemFiles::default();
    let mut ops = DefaultOperatorStateBackend::new(0);
    let list = ops.list_state::<u64>("offsets").unwrap();
    let union = ops.union_list_state::<String>("names").unwrap();
    let bc = ops.broadcast_state::<u32, String>("rules").unwrap();
    for i in 0..30u64 {
        ops.list_add(&list, i).unwrap();
        ops.list_add(&union, format!("n{i}")).unwrap();
        ops.broadcast_put(&bc, i as u32, format!("r{i}")).unwrap();
    }
    let handle = ops.snapshot(1).unwrap().run(&storage).unwrap();
    let path = only_file(&storage, &handle.stream);
    let seed = storage.content(&path).unwrap();
    run("operator stream", &seed, |bytes| {
        storage.replace(&path, bytes.to_vec());
        let mut r = DefaultOperatorStateBackend::restore(std::slice::from_ref(&handle), 0, 1, &storage)?;
        r.list_state::<u64>("offsets")?;
        r.union_list_state::<String>("names")?;
        r.broadcast_state::<u32, String>("rules")?;
        Ok(())
    });
}

fn sample_state() -> SubtaskState {
    let storage = MemFiles::default();
    let mut b = HeapKeyedStateBackend::<u64>::new(&BackendContext::for_subtask(128, 2, 1).unwrap()).unwrap();
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    b.set_current_key(&3).ok();
    b.value(&v).update(1).ok();
    SubtaskState {
        keyed: vec![b.snapshot(4).unwrap().run(&storage).unwrap()],
        engine: BTreeMap::from([("offset".to_string(), vec![1, 2, 3])]),
        ..SubtaskState::default()
    }
}

#[test]
fn metadata_version_2_and_version_1() {
    let mut meta = CheckpointMetadata::new("job", 4, SnapshotKind::Checkpoint);
    meta.add_subtask(&OperatorId::new("window").unwrap(), 2, 128, 1, sample_state())
        .unwrap();
    meta.snapshot.engine.insert("source".into(), vec![9; 16]);
    let seed = meta.encode().unwrap();
    run("metadata v2", &seed, |bytes| {
        CheckpointMetadata::decode(bytes, "chk-4/_metadata").map(|_| ())
    });
    let v1 = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/fixture-job/chk-7/_metadata"),
    )
    .unwrap();
    run("metadata v1", &v1, |bytes| {
        CheckpointMetadata::decode(bytes, "chk-7/_metadata").map(|_| ())
    });
}

#[test]
fn shared_registry() {
    let mut r = SharedRegistry::default();
    for id in 1..6u64 {
        r.register(id, (0..id).map(|i| format!("shared/{i:06}.sst-{id}")));
    }
    let seed = r.encode().unwrap();
    run("shared registry", &seed, |bytes| {
        SharedRegistry::decode(bytes, "_shared_registry").map(|_| ())
    });
}

#[test]
fn lease_record() {
    let seed = LeaseRecord {
        epoch: 7,
        owner: "host-a/4242/1764547200000000000".into(),
        host: "host-a".into(),
        process: state_api::process::ProcessId {
            pid: 4242,
            start_ticks: 99_123,
        },
        heartbeat_millis: 1_764_547_200_000,
        ttl_millis: 30_000,
        released: false,
    }
    .encode()
    .unwrap();
    run("lease", &seed, |bytes| {
        LeaseRecord::decode(bytes, "_lease/00000000000000000007").map(|_| ())
    });
}

#[test]
fn coordinator_messages() {
    let seed = CheckpointMessage::Acknowledge(Acknowledgement {
        checkpoint_id: 4,
        operator: OperatorId::new("window").unwrap(),
        subtask: 1,
        state: sample_state(),
    })
    .encode()
    .unwrap();
    run("checkpoint message", &seed, |bytes| {
        CheckpointMessage::decode(bytes, "peer").map(|_| ())
    });
}
