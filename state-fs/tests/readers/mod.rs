//! Every reader that takes bytes from storage, each with a valid seed input: driven by
//! the seeded mutation tests (`tests/mutation.rs`, stable, in CI) and by the `cargo fuzz`
//! targets (`fuzz/`, nightly), so both exercise exactly the same code.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use state_api::testkit::{MemFiles, TestStorage};
use state_api::{
    Acknowledgement, BackendContext, CheckpointMessage, DefaultOperatorStateBackend, IncrementalKeyedHandle,
    KeyGroupRange, KeyedStateBackend, ListStateDescriptor, ManualClock, MapStateDescriptor, OperatorId,
    OperatorStateBackend, Result, SnapshotFile, StateError, StreamHandle, SubtaskState, TimerService, TtlConfig,
    ValueStateDescriptor,
};
use state_fs::{CheckpointMetadata, LeaseRecord, SharedRegistry, SnapshotKind};
use state_heap::HeapKeyedStateBackend;
use state_timers::{InternalTimerService, TimerStorage};

/// Reads bytes as the storage would hand them over.
pub type ReadFn = Box<dyn FnMut(&[u8]) -> Result<()>>;

/// A reader of stored bytes and an input it accepts.
pub struct Reader {
    /// Its name, as in [`NAMES`].
    pub name: &'static str,
    /// A valid input.
    pub seed: Vec<u8>,
    /// Reads `bytes` as the storage would hand them over.
    pub read: ReadFn,
    /// Whether most damaged inputs must be rejected (false where the input is resealed:
    /// a changed number in a body with a valid checksum is a valid record).
    pub mostly_rejects: bool,
}

/// Whether `e` is an error a reader may give for bad input: a damage error, or a
/// type/kind mismatch with what the test registers.
pub fn acceptable(e: &StateError) -> bool {
    e.is_damage()
        || matches!(
            e,
            StateError::IncompatibleType { .. }
                | StateError::IncompatibleSchema { .. }
                | StateError::KindMismatch { .. }
        )
}

/// A framed record (magic, version, length, body, CRC32C; `state_api::framing`) with its
/// length field and checksum recomputed, so that damage inside the body reaches the
/// decoder and the validation behind the checksum.
pub fn reseal(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.len() >= 24 {
        let end = out.len() - 4;
        let len = (end - 20) as u64;
        out[12..20].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&out[20..end]);
        out[end..].copy_from_slice(&crc.to_be_bytes());
    }
    out
}

/// `reader` with each input resealed first.
fn resealed(reader: Reader, name: &'static str) -> Reader {
    let mut read = reader.read;
    Reader {
        name,
        seed: reader.seed,
        read: Box::new(move |bytes| read(&reseal(bytes))),
        mostly_rejects: false,
    }
}

/// The readers, by name.
pub const NAMES: &[&str] = &[
    "keyed stream",
    "timer stream",
    "operator stream",
    "metadata v2",
    "metadata v1",
    "shared registry",
    "lease",
    "checkpoint message",
    "metadata v2, resealed",
    "shared registry, resealed",
    "lease, resealed",
    "checkpoint message, resealed",
];

/// The reader called `name` (one of [`NAMES`]).
pub fn named(name: &str) -> Reader {
    match name {
        "keyed stream" => keyed_stream(),
        "timer stream" => timer_stream(),
        "operator stream" => operator_stream(),
        "metadata v2" => metadata_v2(),
        "metadata v1" => metadata_v1(),
        "shared registry" => shared_registry(),
        "lease" => lease(),
        "checkpoint message" => checkpoint_message(),
        "metadata v2, resealed" => resealed(metadata_v2(), "metadata v2, resealed"),
        "shared registry, resealed" => resealed(shared_registry(), "shared registry, resealed"),
        "lease, resealed" => resealed(lease(), "lease, resealed"),
        "checkpoint message, resealed" => resealed(checkpoint_message(), "checkpoint message, resealed"),
        other => panic!("no reader named `{other}`"),
    }
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

fn keyed_stream() -> Reader {
    let storage = MemFiles::default();
    let ctx = BackendContext::single(128).with_clock(Arc::new(ManualClock::new(0)));
    let ttl = || TtlConfig::new(std::time::Duration::from_secs(60));
    let mut b = HeapKeyedStateBackend::<u64>::new(&ctx).unwrap();
    let v = b
        .register(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl()))
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
    Reader {
        name: "keyed stream",
        seed: storage.content(&path).unwrap(),
        read: Box::new(move |bytes| {
            storage.replace(&path, bytes.to_vec());
            let mut r = HeapKeyedStateBackend::<u64>::restore(&ctx, std::slice::from_ref(&handle), &storage)?;
            r.register(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl()))?;
            r.register(ListStateDescriptor::<String>::new("l").in_namespace::<i64>())?;
            r.register(MapStateDescriptor::<u32, Vec<u8>>::new("m"))?;
            Ok(())
        }),
        mostly_rejects: true,
    }
}

fn timer_stream() -> Reader {
    let storage = MemFiles::default();
    let ctx = BackendContext::single(128);
    let service = move || {
        InternalTimerService::<u64, i64, _>::new(
            TimerStorage::Heap.create_queue(ctx.key_group_range, 128).unwrap(),
            TimerStorage::Heap.create_queue(ctx.key_group_range, 128).unwrap(),
            Arc::new(ManualClock::new(0)),
            128,
        )
        .unwrap()
    };
    let mut b = HeapKeyedStateBackend::<u64>::new(&ctx).unwrap();
    let mut s = service();
    for k in 0..60u64 {
        b.set_current_key(&k).unwrap();
        s.register_event_time_timer(&mut b, &(k as i64), 1000 + k as i64)
            .unwrap();
        s.register_processing_time_timer(&mut b, &0, 50 + k as i64).unwrap();
    }
    let handle = s.snapshot(&mut b, 1).unwrap().run(&storage).unwrap();
    let path = only_file(&storage, &handle.stream);
    Reader {
        name: "timer stream",
        seed: storage.content(&path).unwrap(),
        read: Box::new(move |bytes| {
            storage.replace(&path, bytes.to_vec());
            let mut b = HeapKeyedStateBackend::<u64>::new(&ctx)?;
            let mut s = service();
            s.restore(&mut b, std::slice::from_ref(&handle), &storage).map(|_| ())
        }),
        mostly_rejects: true,
    }
}

fn operator_stream() -> Reader {
    let storage = MemFiles::default();
    let mut ops = DefaultOperatorStateBackend::new(0);
    let list = ops.list_state::<u64>("offsets").unwrap();
    let union = ops.union_list_state::<String>("names").unwrap();
    let bc = ops.broadcast_state::<u32, String>("rules").unwrap();
    for i in 0..30u64 {
        ops.list(&list).add(i).unwrap();
        ops.list(&union).add(format!("n{i}")).unwrap();
        ops.broadcast(&bc).put(i as u32, format!("r{i}")).unwrap();
    }
    let handle = ops.snapshot(1).unwrap().run(&storage).unwrap();
    let path = only_file(&storage, &handle.stream);
    Reader {
        name: "operator stream",
        seed: storage.content(&path).unwrap(),
        read: Box::new(move |bytes| {
            storage.replace(&path, bytes.to_vec());
            let mut r = DefaultOperatorStateBackend::restore(std::slice::from_ref(&handle), 0, 1, &storage)?;
            r.list_state::<u64>("offsets")?;
            r.union_list_state::<String>("names")?;
            r.broadcast_state::<u32, String>("rules")?;
            Ok(())
        }),
        mostly_rejects: true,
    }
}

/// What one subtask of an incremental RocksDB-style job writes: a keyed stream, an
/// incremental handle with shared and private files, and engine data.
fn sample_state() -> SubtaskState {
    let storage = MemFiles::default();
    let mut b = HeapKeyedStateBackend::<u64>::new(&BackendContext::for_subtask(128, 2, 1).unwrap()).unwrap();
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    b.set_current_key(&3).ok();
    b.value(&v).update(1).ok();
    let file = |path: &str, size: u64| SnapshotFile {
        local_name: path.rsplit('/').next().unwrap_or(path).to_string(),
        stream: StreamHandle::File {
            path: path.into(),
            size,
            crc32c: size as u32 * 31,
        },
    };
    SubtaskState {
        keyed: vec![b.snapshot(4).unwrap().run(&storage).unwrap()],
        incremental: vec![IncrementalKeyedHandle {
            checkpoint_id: 4,
            key_group_range: KeyGroupRange::new(64, 127),
            max_parallelism: 128,
            key_type: "u64".into(),
            key_schema: state_api::Schema::U64,
            states: Vec::new(),
            shared_files: vec![file("shared/000012.sst", 4096), file("shared/000013.sst", 812)],
            private_files: vec![file("chk-4/MANIFEST-000005", 220), file("chk-4/OPTIONS-000007", 6100)],
        }],
        engine: BTreeMap::from([("offset".to_string(), vec![1, 2, 3])]),
        ..SubtaskState::default()
    }
}

fn metadata_v2() -> Reader {
    let mut meta = CheckpointMetadata::new("job", 4, SnapshotKind::Checkpoint);
    meta.add_subtask(&OperatorId::new("window").unwrap(), 2, 128, 1, sample_state())
        .unwrap();
    meta.snapshot.engine.insert("source".into(), vec![9; 16]);
    Reader {
        name: "metadata v2",
        seed: meta.encode().unwrap(),
        read: Box::new(|bytes| CheckpointMetadata::decode(bytes, "chk-4/_metadata").map(|_| ())),
        mostly_rejects: true,
    }
}

fn metadata_v1() -> Reader {
    let v1 = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../state-fs/tests/fixtures/v1/fixture-job/chk-7/_metadata"),
    )
    .unwrap();
    Reader {
        name: "metadata v1",
        seed: v1,
        read: Box::new(|bytes| CheckpointMetadata::decode(bytes, "chk-7/_metadata").map(|_| ())),
        mostly_rejects: true,
    }
}

fn shared_registry() -> Reader {
    let mut r = SharedRegistry::default();
    for id in 1..6u64 {
        r.register(id, (0..id).map(|i| format!("shared/{i:06}.sst-{id}")));
    }
    Reader {
        name: "shared registry",
        seed: r.encode().unwrap(),
        read: Box::new(|bytes| SharedRegistry::decode(bytes, "_shared_registry").map(|_| ())),
        mostly_rejects: true,
    }
}

fn lease() -> Reader {
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
    };
    Reader {
        name: "lease",
        seed: seed.encode().unwrap(),
        read: Box::new(|bytes| LeaseRecord::decode(bytes, "_lease/00000000000000000007").map(|_| ())),
        mostly_rejects: true,
    }
}

fn checkpoint_message() -> Reader {
    let seed = CheckpointMessage::Acknowledge(Acknowledgement {
        checkpoint_id: 4,
        operator: OperatorId::new("window").unwrap(),
        subtask: 1,
        state: sample_state(),
    })
    .encode()
    .unwrap();
    Reader {
        name: "checkpoint message",
        seed,
        read: Box::new(|bytes| CheckpointMessage::decode(bytes, "peer").map(|_| ())),
        mostly_rejects: true,
    }
}
