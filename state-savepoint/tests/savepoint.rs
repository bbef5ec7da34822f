//! Bootstrap, restore on every backend at any parallelism, read back, verify, inspect,
//! and the `state-tool` command line.

use std::collections::BTreeMap;
use std::process::Command;

use serde::{Deserialize, Serialize};
use state_api::{
    BackendContext, CheckpointStorage, KeyedBackendFactory, KeyedStateBackend, ListStateDescriptor, MapStateDescriptor,
    StreamHandle, ValueStateDescriptor, VoidNamespace,
};
use state_savepoint::{OperatorBuilder, SavepointReader, SavepointTransform, SavepointWriter, diff, inspect, verify};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    owner: String,
    balance: i64,
    flags: Vec<bool>,
}

const KEYS: u64 = 100_000;

fn account(k: u64) -> Account {
    Account {
        owner: format!("owner-{k}"),
        balance: k as i64 * 3 - 1000,
        flags: vec![k.is_multiple_of(2)],
    }
}

/// 100k value entries, 100k/10 list entries and 100k map entries in namespace `i64`.
fn bootstrap(root: &str, name: &str) {
    let mut op = OperatorBuilder::<u64>::new("accounts", 128).unwrap();
    op.value_state::<Account>("account", (0..KEYS).map(|k| (k, account(k))))
        .unwrap();
    op.list_state_in::<VoidNamespace, u32>(
        "events",
        (0..KEYS / 10).map(|k| (k, VoidNamespace, vec![k as u32, k as u32 + 1])),
    )
    .unwrap();
    op.map_state_in::<i64, String, u64>(
        "by_day",
        (0..KEYS).map(|k| (k % 1000, (k % 7) as i64, format!("d{k}"), k)),
    )
    .unwrap();
    SavepointWriter::new("bank").operator(op).write(root, name).unwrap();
}

fn keyed_handles(reader: &SavepointReader) -> Vec<state_api::KeyedSnapshotHandle> {
    reader.keyed_handles("accounts").unwrap().into_iter().cloned().collect()
}

/// Restores on `factory` at `parallelism` and checks every entry.
fn restore_and_check<F: KeyedBackendFactory>(factory: &F, reader: &SavepointReader, parallelism: u32) {
    let handles = keyed_handles(reader);
    let (mut values, mut lists, mut maps) = (0u64, 0u64, 0u64);
    for i in 0..parallelism {
        let ctx = BackendContext::for_subtask(128, parallelism, i).unwrap();
        let mut b = factory.restore::<u64>(&ctx, &handles, reader.storage()).unwrap();
        let acc = b.register(ValueStateDescriptor::<Account>::new("account")).unwrap();
        let ev = b.register(ListStateDescriptor::<u32>::new("events")).unwrap();
        let days = b
            .register(MapStateDescriptor::<String, u64>::new("by_day").in_namespace::<i64>())
            .unwrap();
        for k in b.keys(&acc).unwrap() {
            b.set_current_key(&k).unwrap();
            assert_eq!(b.value(&acc).get().unwrap(), Some(account(k)));
            values += 1;
        }
        for k in b.keys(&ev).unwrap() {
            b.set_current_key(&k).unwrap();
            assert_eq!(b.list(&ev).get().unwrap(), vec![k as u32, k as u32 + 1]);
            lists += 1;
        }
        for (k, ns) in b.keys_and_namespaces(&days).unwrap() {
            b.set_current_key(&k).unwrap();
            for (day, v) in b.map_in(&days, &ns).entries().unwrap() {
                assert_eq!(day, format!("d{v}"));
                assert_eq!((v % 1000, (v % 7) as i64), (k, ns));
                maps += 1;
            }
        }
    }
    assert_eq!((values, lists, maps), (KEYS, KEYS / 10, KEYS));
}

#[test]
fn a_bootstrapped_savepoint_restores_everywhere_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    bootstrap(root, "sp");
    let reader = SavepointReader::open(&format!("{root}/sp")).unwrap();
    for p in [1, 3] {
        restore_and_check(&state_heap::HeapBackendFactory, &reader, p);
        restore_and_check(&state_rocksdb::RocksDbBackendFactory::default(), &reader, p);
    }
    // Read back through the reader: the same entries.
    let mut values = reader
        .read_values::<u64, VoidNamespace, Account>("accounts", "account")
        .unwrap();
    values.sort_by_key(|(k, _, _)| *k);
    assert_eq!(values.len() as u64, KEYS);
    assert!(values.iter().all(|(k, _, v)| *v == account(*k)));
    let lists = reader
        .read_lists::<u64, VoidNamespace, u32>("accounts", "events")
        .unwrap();
    assert!(lists.iter().all(|(k, _, v)| *v == vec![*k as u32, *k as u32 + 1]));
    let maps = reader.read_maps::<u64, i64, String, u64>("accounts", "by_day").unwrap();
    let by_value: BTreeMap<u64, (u64, i64, String)> = maps.into_iter().map(|(k, n, d, v)| (v, (k, n, d))).collect();
    assert_eq!(by_value.len() as u64, KEYS);
    assert_eq!(by_value[&12345], (345, (12345 % 7) as i64, "d12345".to_string()));
    // Asking for other types is refused, not decoded.
    assert!(
        reader
            .read_values::<u64, VoidNamespace, String>("accounts", "account")
            .is_err()
    );
    assert!(
        reader
            .read_lists::<u64, VoidNamespace, u32>("accounts", "account")
            .is_err()
    );
    // ... and so is another key type.
    assert!(
        reader
            .read_values::<i32, VoidNamespace, Account>("accounts", "account")
            .is_err()
    );
}

#[test]
fn a_job_savepoint_reads_back_and_inspects() {
    // A savepoint taken by a running heap backend (not bootstrapped).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let storage = state_fs::FsCheckpointStorage::savepoint(root, "taken", state_fs::FsOptions::default()).unwrap();
    let mut b = state_heap::HeapKeyedStateBackend::<String>::new(&BackendContext::single(128)).unwrap();
    let h = b.register(ValueStateDescriptor::<u64>::new("count")).unwrap();
    for name in ["a", "b", "c"] {
        b.set_current_key(&name.to_string()).unwrap();
        b.value(&h).update(name.len() as u64 * 10).unwrap();
    }
    let handle = b.snapshot(5).unwrap().run(&storage).unwrap();
    let mut meta = state_fs::CheckpointMetadata::new("job", 5, state_fs::SnapshotKind::Savepoint);
    let state = state_api::SubtaskState {
        keyed: vec![handle],
        ..Default::default()
    };
    meta.add_subtask(&state_api::OperatorId::new("counter").unwrap(), 1, 128, 0, state)
        .unwrap();
    storage.complete_checkpoint(meta).unwrap();
    let reader = SavepointReader::open(&format!("{root}/taken")).unwrap();
    let values = reader
        .read_values::<String, VoidNamespace, u64>("counter", "count")
        .unwrap();
    assert_eq!(values.len(), 3);
    let report = inspect(&reader).unwrap();
    assert_eq!(report.operators[0].states[0].entries, 3);
    assert_eq!(report.operators[0].states[0].value, "u64 = u64");
    assert!(verify(&reader).is_intact());
}

fn keyed_file(reader: &SavepointReader) -> String {
    match &keyed_handles(reader)[0].stream {
        StreamHandle::File { path, .. } => path.clone(),
        StreamHandle::Inline { .. } => panic!("100k entries are written to a file"),
    }
}

#[test]
fn verify_finds_every_planted_damage() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    bootstrap(root, "sp");
    let reader = SavepointReader::open(&format!("{root}/sp")).unwrap();
    let v = verify(&reader);
    assert!(v.is_intact(), "{v}");
    assert!(v.bytes > 1_000_000);
    let file = dir.path().join("sp").join(keyed_file(&reader));
    let original = std::fs::read(&file).unwrap();
    let len = original.len();
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let damages: Vec<(&str, Damage)> = vec![
        ("a flipped magic byte", Box::new(|b: &mut Vec<u8>| b[0] ^= 0xff)),
        ("a flipped header byte", Box::new(|b: &mut Vec<u8>| b[30] ^= 0x01)),
        (
            "a flipped byte mid-stream",
            Box::new(move |b: &mut Vec<u8>| b[len / 2] ^= 0x10),
        ),
        (
            "a flipped trailer byte",
            Box::new(move |b: &mut Vec<u8>| b[len - 3] ^= 0x01),
        ),
        (
            "a truncated file",
            Box::new(move |b: &mut Vec<u8>| b.truncate(len - 100)),
        ),
        ("an appended byte", Box::new(|b: &mut Vec<u8>| b.push(0))),
        ("an emptied file", Box::new(|b: &mut Vec<u8>| b.clear())),
    ];
    for (what, damage) in &damages {
        let mut bytes = original.clone();
        damage(&mut bytes);
        std::fs::write(&file, &bytes).unwrap();
        let v = verify(&reader);
        assert_eq!(v.problems.len(), 1, "{what}: {v}");
        assert!(v.problems[0].what.contains("keyed stream"), "{what}: {v}");
    }
    std::fs::remove_file(&file).unwrap();
    assert!(!verify(&reader).is_intact(), "a missing file");
    std::fs::write(&file, &original).unwrap();
    assert!(verify(&reader).is_intact());
}

#[test]
fn inspect_output_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let mut op = OperatorBuilder::<String>::new("sessions", 128).unwrap();
    op.value_state::<Account>("account", (0..3).map(|k| (format!("user-{k}"), account(k))))
        .unwrap();
    op.map_state_in::<i64, u32, String>("pages", [("user-1".to_string(), 7, 1, "home".to_string())])
        .unwrap();
    SavepointWriter::new("web").operator(op).write(root, "golden").unwrap();
    let reader = SavepointReader::open(&format!("{root}/golden")).unwrap();
    let text = inspect(&reader).unwrap().to_string().replace(root, "<root>");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inspect.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(text, std::fs::read_to_string(&path).unwrap());
}

fn tool(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_state-tool"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_line_inspects_verifies_and_dumps() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    bootstrap(root, "sp");
    let uri = format!("{root}/sp");
    let (code, out, err) = tool(&["inspect", &uri, "--json"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["operators"][0]["id"], "accounts");
    assert_eq!(report["operators"][0]["states"][0]["entries"], KEYS);
    let (code, out, _) = tool(&["inspect", &uri]);
    assert_eq!(code, 0);
    assert!(out.contains("state `account` (Value, 100000 entries)"), "{out}");
    let (code, out, _) = tool(&["dump", &uri, "--state", "account", "--limit", "3"]);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    let k = lines[0]["key"].as_u64().unwrap();
    assert_eq!(lines[0]["value"]["owner"], format!("owner-{k}"));
    assert_eq!(lines[0]["value"]["balance"], k as i64 * 3 - 1000);
    let (code, out, _) = tool(&["dump", &uri, "--state", "by_day", "--limit", "1"]);
    assert_eq!(code, 0);
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(line["entries"][0]["user_key"].as_str().unwrap().starts_with('d'));
    let (code, out, _) = tool(&["verify", &uri]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact"));
    // Damage the keyed stream: verify says so and exits with 1.
    let reader = SavepointReader::open(&uri).unwrap();
    let file = dir.path().join("sp").join(keyed_file(&reader));
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let (code, out, _) = tool(&["verify", &uri, "--json"]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["problems"].as_array().unwrap().len(), 1);
    // A location that is not a savepoint: exit code 2 and a message.
    let (code, _, err) = tool(&["inspect", &format!("{root}/nothing-here")]);
    assert_eq!(code, 2);
    assert!(err.starts_with("state-tool: "), "{err}");
}

#[test]
fn storage_used_by_the_tests_is_the_real_one() {
    // The reader's storage opens inline and file streams alike.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let mut op = OperatorBuilder::<u64>::new("tiny", 128).unwrap();
    op.value_state::<u8>("v", [(1, 2)]).unwrap();
    SavepointWriter::new("j").operator(op).write(root, "tiny").unwrap();
    let reader = SavepointReader::open(&format!("{root}/tiny")).unwrap();
    let h = keyed_handles_of(&reader, "tiny");
    assert!(
        matches!(h.stream, StreamHandle::Inline { .. }),
        "small state is inlined"
    );
    assert!(reader.storage().open_input(&h.stream).is_ok());
    assert_eq!(
        reader.read_values::<u64, VoidNamespace, u8>("tiny", "v").unwrap(),
        vec![(1, VoidNamespace, 2)]
    );
}

fn keyed_handles_of(reader: &SavepointReader, op: &str) -> state_api::KeyedSnapshotHandle {
    reader.keyed_handles(op).unwrap()[0].clone()
}

#[test]
fn diff_finds_what_changed_between_two_savepoints() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let write = |name: &str, changed: u64, extra_state: bool| {
        let mut op = OperatorBuilder::<u64>::new("accounts", 128).unwrap();
        op.value_state::<u64>("balance", (0..1000).map(|k| (k, if k < changed { k + 1 } else { k })))
            .unwrap();
        if extra_state {
            op.value_state::<u8>("flags", [(1, 1)]).unwrap();
        }
        SavepointWriter::new("bank").operator(op).write(root, name).unwrap();
    };
    write("a", 0, false);
    write("b", 3, true);
    let (a, b) = (
        SavepointReader::open(&format!("{root}/a")).unwrap(),
        SavepointReader::open(&format!("{root}/b")).unwrap(),
    );
    assert!(diff(&a, &a).unwrap().is_same());
    let d = diff(&a, &b).unwrap();
    assert!(!d.is_same());
    let balance = d.states.iter().find(|s| s.state == "balance").unwrap();
    assert_eq!(
        (
            balance.change.as_str(),
            balance.changed,
            balance.only_in_a,
            balance.only_in_b
        ),
        ("entries differ", 3, 0, 0)
    );
    let mut keys: Vec<u64> = balance.examples.iter().map(|e| e["key"].as_u64().unwrap()).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec![0, 1, 2]);
    let flags = d.states.iter().find(|s| s.state == "flags").unwrap();
    assert_eq!((flags.change.as_str(), flags.entries_b), ("only in B", 1));
    let (code, out, _) = tool(&["diff", &format!("{root}/a"), &format!("{root}/b")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("state `balance`: entries differ (1000 / 1000 entries; 0 only in A, 0 only in B, 3 changed)"),
        "{out}"
    );
    let (code, _, _) = tool(&["diff", &format!("{root}/a"), &format!("{root}/a")]);
    assert_eq!(code, 0);
}

#[test]
fn a_transformed_savepoint_drops_rewrites_and_copies() {
    use state_api::{DefaultOperatorStateBackend, OperatorStateBackend};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    // A job's savepoint at parallelism 2: keyed state and operator state per subtask.
    let storage = state_fs::FsCheckpointStorage::savepoint(root, "job-sp", state_fs::FsOptions::default()).unwrap();
    let mut meta = state_fs::CheckpointMetadata::new("job", 9, state_fs::SnapshotKind::Savepoint);
    for i in 0..2 {
        let ctx = BackendContext::for_subtask(128, 2, i).unwrap();
        let mut b = state_heap::HeapKeyedStateBackend::<u64>::new(&ctx).unwrap();
        let v = b.register(ValueStateDescriptor::<u64>::new("cents")).unwrap();
        let l = b.register(ListStateDescriptor::<u8>::new("scratch")).unwrap();
        for k in 0..2000u64 {
            if b.set_current_key(&k).is_ok() {
                b.value(&v).update(k * 100).unwrap();
                b.list(&l).add(1).unwrap();
            }
        }
        let mut ops = DefaultOperatorStateBackend::new(i);
        let offsets = ops.list_state::<u64>("offsets").unwrap();
        ops.list(&offsets).add(u64::from(i) + 40).unwrap();
        let state = state_api::SubtaskState {
            keyed: vec![b.snapshot(9).unwrap().run(&storage).unwrap()],
            operator: vec![ops.snapshot(9).unwrap().run(&storage).unwrap()],
            ..Default::default()
        };
        meta.add_subtask(&state_api::OperatorId::new("shop").unwrap(), 2, 128, i, state)
            .unwrap();
    }
    storage.complete_checkpoint(meta).unwrap();
    let old = SavepointReader::open(&format!("{root}/job-sp")).unwrap();
    // Rewriting with the wrong source type is refused; naming a missing state too.
    let wrong = SavepointTransform::new(&old).map_values("shop", "cents", |s: String| s);
    assert!(wrong.write(root, "bad").is_err());
    assert!(
        SavepointTransform::new(&old)
            .drop_state("shop", "nope")
            .write(root, "bad2")
            .is_err()
    );

    SavepointTransform::new(&old)
        .drop_state("shop", "scratch")
        .map_values("shop", "cents", |c: u64| format!("{}.{:02} EUR", c / 100, c % 100))
        .write(root, "job-sp-2")
        .unwrap();
    let new = SavepointReader::open(&format!("{root}/job-sp-2")).unwrap();
    assert!(verify(&new).is_intact());
    assert_eq!(new.metadata().snapshot.operator("shop").unwrap().subtasks.len(), 2);
    let names: Vec<String> = new.keyed_states("shop").unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, vec!["cents".to_string()]);
    let mut values = new.read_values::<u64, VoidNamespace, String>("shop", "cents").unwrap();
    values.sort_by_key(|(k, _, _)| *k);
    assert_eq!(values.len(), 2000);
    assert_eq!(values[1234].2, "1234.00 EUR");
    let mut ops = new.operator_state("shop").unwrap();
    let offsets = ops.list_state::<u64>("offsets").unwrap();
    let mut got = ops.list(&offsets).get().unwrap();
    got.sort_unstable();
    assert_eq!(got, vec![40, 41]);
    // A backend restores the new savepoint with the new type.
    let handles: Vec<_> = new.keyed_handles("shop").unwrap().into_iter().cloned().collect();
    let mut b =
        state_heap::HeapKeyedStateBackend::<u64>::restore(&BackendContext::single(128), &handles, new.storage())
            .unwrap();
    let cents = b.register(ValueStateDescriptor::<String>::new("cents")).unwrap();
    b.set_current_key(&7).unwrap();
    assert_eq!(b.value(&cents).get().unwrap(), Some("7.00 EUR".to_string()));
}

#[test]
fn bootstrap_merges_entries_of_one_key_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let mut op = OperatorBuilder::<u64>::new("op", 128).unwrap();
    op.value_state::<u32>("v", [(1, 10), (2, 20), (1, 11)]).unwrap();
    op.list_state_in::<VoidNamespace, u32>("l", [(1, VoidNamespace, vec![1, 2]), (1, VoidNamespace, vec![3])])
        .unwrap();
    op.map_state_in::<VoidNamespace, u8, u8>(
        "m",
        [
            (1, VoidNamespace, 1, 1),
            (1, VoidNamespace, 2, 2),
            (1, VoidNamespace, 1, 9),
        ],
    )
    .unwrap();
    assert!(op.value_state::<u32>("v", [(1, 1)]).is_err(), "a state written twice");
    SavepointWriter::new("j").operator(op).write(root, "sp").unwrap();
    let r = SavepointReader::open(&format!("{root}/sp")).unwrap();
    let mut v = r.read_values::<u64, VoidNamespace, u32>("op", "v").unwrap();
    v.sort_by_key(|e| e.0);
    assert_eq!(v, vec![(1, VoidNamespace, 11), (2, VoidNamespace, 20)]);
    assert_eq!(
        r.read_lists::<u64, VoidNamespace, u32>("op", "l").unwrap(),
        vec![(1, VoidNamespace, vec![1, 2, 3])]
    );
    let mut m = r.read_maps::<u64, VoidNamespace, u8, u8>("op", "m").unwrap();
    m.sort_by_key(|e| e.2);
    assert_eq!(m, vec![(1, VoidNamespace, 1, 9), (1, VoidNamespace, 2, 2)]);
}
