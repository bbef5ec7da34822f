//! What a job's checkpoint holds beyond canonical keyed streams, read through the
//! reader: RocksDB incremental (native) snapshots, timers, and bootstrapped TTL state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use state_api::{
    BackendContext, KeyedBackendFactory, KeyedStateBackend, ListStateDescriptor, ManualClock, MapStateDescriptor,
    OperatorId, SubtaskState, TimerService, TtlConfig, ValueStateDescriptor, VoidNamespace,
};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SnapshotKind};
use state_heap::HeapKeyedStateBackend;
use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
use state_savepoint::{
    OperatorBuilder, SavepointReader, SavepointTransform, SavepointWriter, TimeDomain, inspect, verify,
};
use state_timers::{HeapTimerQueue, InternalTimerService};

/// Completes checkpoint `id` of job `job` under `root` with one subtask per state.
fn complete(storage: &FsCheckpointStorage, id: u64, parallelism: u32, subtasks: Vec<SubtaskState>) {
    let mut meta = CheckpointMetadata::new("job", id, SnapshotKind::Checkpoint);
    let op = OperatorId::new("op").unwrap();
    for (i, s) in subtasks.into_iter().enumerate() {
        meta.add_subtask(&op, parallelism, 128, i as u32, s).unwrap();
    }
    storage.complete_checkpoint(meta).unwrap();
}

/// Keys of variable length (strings), namespaces of variable length (strings) and every
/// state kind, in two subtasks' incremental snapshots: the reader gives back every
/// entry, as the model holds them.
#[test]
fn incremental_checkpoints_read_back_entry_by_entry() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let storage = FsCheckpointStorage::open(root, "job", FsOptions::default()).unwrap();
    let (mut values, mut lists, mut maps) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let mut subtasks = Vec::new();
    for i in 0..2 {
        let ctx = BackendContext::for_subtask(128, 2, i).unwrap();
        let mut b = RocksDbKeyedStateBackend::<String>::new(&ctx, RocksDbConfig::default()).unwrap();
        let v = b
            .register(ValueStateDescriptor::<(u64, String)>::new("v").in_namespace::<String>())
            .unwrap();
        let l = b.register(ListStateDescriptor::<i32>::new("l")).unwrap();
        let m = b
            .register(MapStateDescriptor::<String, u64>::new("m").in_namespace::<String>())
            .unwrap();
        for k in 0..3000u64 {
            let key = format!("user-{}", k * 37);
            if ctx
                .key_group_range
                .contains(state_api::keygroup::key_group_for_key(&key, 128).unwrap())
            {
                b.set_current_key(&key).unwrap();
                let ns = "n".repeat(1 + (k % 3) as usize);
                b.value_in(&v, &ns).update((k, format!("v{k}"))).unwrap();
                values.insert((key.clone(), ns.clone()), (k, format!("v{k}")));
                b.list(&l).add(k as i32).unwrap();
                b.list(&l).add(-(k as i32)).unwrap();
                lists.insert(key.clone(), vec![k as i32, -(k as i32)]);
                for uk in 0..(k % 4) {
                    b.map_in(&m, &ns).put(format!("u{uk}"), uk * k).unwrap();
                    maps.insert((key.clone(), ns.clone(), format!("u{uk}")), uk * k);
                }
            }
        }
        let handle = b.snapshot_incremental(1).unwrap().run(&storage).unwrap();
        subtasks.push(SubtaskState {
            incremental: vec![handle],
            ..SubtaskState::default()
        });
    }
    complete(&storage, 1, 2, subtasks);
    let reader = SavepointReader::open(&format!("{root}/job/chk-1")).unwrap();
    assert!(verify(&reader).is_intact());
    let got: BTreeMap<_, _> = reader
        .read_values::<String, String, (u64, String)>("op", "v")
        .unwrap()
        .into_iter()
        .map(|(k, n, v)| ((k, n), v))
        .collect();
    assert_eq!(got, values);
    let got: BTreeMap<_, _> = reader
        .read_lists::<String, VoidNamespace, i32>("op", "l")
        .unwrap()
        .into_iter()
        .map(|(k, _, v)| (k, v))
        .collect();
    assert_eq!(got, lists);
    let got: BTreeMap<_, _> = reader
        .read_maps::<String, String, String, u64>("op", "m")
        .unwrap()
        .into_iter()
        .map(|(k, n, uk, uv)| ((k, n, uk), uv))
        .collect();
    assert_eq!(got, maps);
    // Raw entries (what `state-tool dump` prints) decode by the stored schemas.
    let mut raw = 0;
    reader
        .for_each_entry("op", "v", |e| {
            if let state_api::raw::format::RawEntry::Value { key, .. } = e.entry {
                let json = state_savepoint::json::to_json(e.key_schema, key);
                assert!(json.as_str().is_some_and(|s| s.starts_with("user-")), "{json}");
            }
            raw += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(raw, values.len());
    // Asking for another key type is refused before anything is decoded.
    assert!(reader.read_lists::<u64, VoidNamespace, i32>("op", "l").is_err());
    let report = inspect(&reader).unwrap();
    assert!(report.operators[0].states.iter().all(|s| s.in_native_files));
    assert!(
        report.to_string().contains("entries + those in RocksDB files"),
        "{report}"
    );

    // The checkpoint becomes a savepoint of canonical streams (one state left out) that
    // the heap backend restores.
    SavepointTransform::new(&reader)
        .drop_state("op", "l")
        .write(root, "from-checkpoint")
        .unwrap();
    let sp = SavepointReader::open(&format!("{root}/from-checkpoint")).unwrap();
    assert!(verify(&sp).is_intact());
    let subtasks = &sp.metadata().snapshot.operators[0].subtasks;
    assert!(
        subtasks
            .iter()
            .all(|s| s.state.incremental.is_empty() && !s.state.keyed.is_empty())
    );
    assert!(sp.read_lists::<String, VoidNamespace, i32>("op", "l").is_err());
    let handles: Vec<_> = sp.keyed_handles("op").unwrap().into_iter().cloned().collect();
    let mut heap =
        HeapKeyedStateBackend::<String>::restore(&BackendContext::single(128), &handles, sp.storage()).unwrap();
    let m = heap
        .register(MapStateDescriptor::<String, u64>::new("m").in_namespace::<String>())
        .unwrap();
    let mut restored = BTreeMap::new();
    for (k, ns) in heap.keys_and_namespaces(&m).unwrap() {
        heap.set_current_key(&k).unwrap();
        for (uk, uv) in heap.map_in(&m, &ns).entries().unwrap() {
            restored.insert((k.clone(), ns.clone(), uk), uv);
        }
    }
    assert_eq!(restored, maps);
}

/// Timers of both queues in a checkpoint read back typed, with their queue.
#[test]
fn timers_read_back_with_their_queue() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let storage = FsCheckpointStorage::open(root, "job", FsOptions::default()).unwrap();
    let ctx = BackendContext::single(128);
    let mut b = HeapKeyedStateBackend::<u64>::new(&ctx).unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let range = ctx.key_group_range;
    let mut timers = InternalTimerService::<u64, (i64, i64), HeapTimerQueue>::new(
        HeapTimerQueue::new(range),
        HeapTimerQueue::new(range),
        clock,
        128,
    )
    .unwrap();
    let mut want = Vec::new();
    for k in 0..500u64 {
        b.set_current_key(&k).unwrap();
        let window = (k as i64 * 10, k as i64 * 10 + 10);
        timers.register_event_time_timer(&mut b, &window, window.1 - 1).unwrap();
        want.push((TimeDomain::EventTime, window.1 - 1, k, window));
        if k % 5 == 0 {
            timers
                .register_processing_time_timer(&mut b, &window, 1000 + k as i64)
                .unwrap();
            want.push((TimeDomain::ProcessingTime, 1000 + k as i64, k, window));
        }
    }
    let handle = timers.snapshot(&mut b, 1).unwrap().run(&storage).unwrap();
    complete(
        &storage,
        1,
        1,
        vec![SubtaskState {
            timers: vec![handle],
            ..SubtaskState::default()
        }],
    );
    let reader = SavepointReader::open(&format!("{root}/job/chk-1")).unwrap();
    let mut got: Vec<_> = reader
        .read_timers::<u64, (i64, i64)>("op")
        .unwrap()
        .into_iter()
        .map(|t| (t.domain, t.timestamp, t.key, t.namespace))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // The queues are pseudo-states that raw reads (and `state-tool dump`) see too.
    let names: Vec<String> = reader.keyed_states("op").unwrap().into_iter().map(|m| m.name).collect();
    assert!(names.contains(&state_timers::EVENT_TIME.to_string()), "{names:?}");
    let mut n = 0;
    reader
        .for_each_entry("op", state_timers::PROCESSING_TIME, |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(n, 100);
    // `state-tool dump` gives a timer's firing time as a number.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_state-tool"))
        .args([
            "dump",
            &format!("{root}/job/chk-1"),
            "--state",
            state_timers::PROCESSING_TIME,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 100);
    for l in &lines {
        let (ts, key) = (l["timestamp"].as_i64().unwrap(), l["key"].as_i64().unwrap());
        assert_eq!(ts, 1000 + key, "{l}");
    }
    // Other key or namespace types are refused.
    assert!(reader.read_timers::<String, (i64, i64)>("op").is_err());
    assert!(reader.read_timers::<u64, i64>("op").is_err());
}

/// A bootstrapped TTL state: live on every backend until its TTL has passed since the
/// bootstrap time, then gone; a restore without the TTL is refused.
#[test]
fn bootstrapped_ttl_state_expires_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let ttl = TtlConfig::new(Duration::from_secs(60));
    let mut op = OperatorBuilder::<u64>::new("sessions", 128).unwrap();
    op.value_state::<String>("last_page", (0..1000).map(|k| (k, format!("p{k}"))))
        .unwrap();
    op.list_state_in::<VoidNamespace, u32>("clicks", (0..1000).map(|k| (k, VoidNamespace, vec![k as u32])))
        .unwrap();
    op.with_ttl("last_page", &ttl, 1_000_000).unwrap();
    op.with_ttl("clicks", &ttl, 1_000_000).unwrap();
    assert!(op.with_ttl("nope", &ttl, 0).is_err());
    SavepointWriter::new("job").operator(op).write(root, "sp").unwrap();
    let reader = SavepointReader::open(&format!("{root}/sp")).unwrap();
    let handles: Vec<_> = reader.keyed_handles("sessions").unwrap().into_iter().cloned().collect();
    let states = reader.keyed_states("sessions").unwrap();
    assert!(states.iter().all(|m| m.ttl.is_some_and(|t| t.ttl_millis == 60_000)));
    expires_after_ttl(&state_heap::HeapBackendFactory, &handles, &reader, &ttl);
    expires_after_ttl(
        &state_rocksdb::RocksDbBackendFactory::default(),
        &handles,
        &reader,
        &ttl,
    );
}

/// Restores the bootstrapped state on `factory`'s backend: key 7 is live 59 s after the
/// bootstrap time and gone 61 s after it.
fn expires_after_ttl<F: KeyedBackendFactory>(
    factory: &F,
    handles: &[state_api::KeyedSnapshotHandle],
    reader: &SavepointReader,
    ttl: &TtlConfig,
) {
    let clock = Arc::new(ManualClock::new(1_000_000 + 59_000));
    let mut ctx = BackendContext::single(128);
    ctx.clock = clock.clone() as Arc<dyn state_api::Clock>;
    let mut b = factory.restore::<u64>(&ctx, handles, reader.storage()).unwrap();
    check_without_ttl_refused(&mut b);
    let v = b
        .register(ValueStateDescriptor::<String>::new("last_page").with_ttl(ttl.clone()))
        .unwrap();
    let l = b
        .register(ListStateDescriptor::<u32>::new("clicks").with_ttl(ttl.clone()))
        .unwrap();
    b.set_current_key(&7).unwrap();
    assert_eq!(b.value(&v).get().unwrap(), Some("p7".to_string()));
    assert_eq!(b.list(&l).get().unwrap(), vec![7]);
    clock.set(1_000_000 + 61_000);
    assert_eq!(b.value(&v).get().unwrap(), None);
    assert_eq!(b.list(&l).get().unwrap(), Vec::<u32>::new());
}

/// Registering a bootstrapped TTL state without a TTL is refused (it would misread the
/// timestamps as values).
fn check_without_ttl_refused<B: KeyedStateBackend<Key = u64>>(b: &mut B) {
    assert!(b.register(ValueStateDescriptor::<String>::new("last_page")).is_err());
}
