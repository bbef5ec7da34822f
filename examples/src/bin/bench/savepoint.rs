//! Savepoint tools (issue 18): the reader against restoring the same savepoint into the
//! heap backend, and the bootstrap writer against a full snapshot of the same entries.

use state_api::{BackendContext, KeyedStateBackend, Result, ValueStateDescriptor, VoidNamespace};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SnapshotKind};
use state_heap::HeapKeyedStateBackend;
use state_savepoint::{OperatorBuilder, SavepointReader, SavepointWriter};

use super::{Row, ns_per_op};

fn value(k: u64) -> (u64, String) {
    (k * 7, format!("user-{k}"))
}

/// The savepoint rows: (reader, heap restore) and (bootstrap writer, heap full snapshot).
pub fn savepoint_rows(entries: u64, rows: &mut Vec<Row>) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("state-bench-savepoint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.to_str().unwrap_or(".").to_string();
    // Writer: bootstrap from typed entries, against the heap backend's full snapshot of
    // the same entries (filling the backend is not timed).
    let boot = ns_per_op(entries, || {
        let mut op = OperatorBuilder::<u64>::new("op", 128).unwrap();
        op.value_state::<(u64, String)>("v", (0..entries).map(|k| (k, value(k))))
            .unwrap();
        SavepointWriter::new("bench").operator(op).write(&root, "boot").unwrap();
    });
    let ctx = BackendContext::single(128);
    let mut heap = HeapKeyedStateBackend::<u64>::new(&ctx)?;
    let h = heap.register(ValueStateDescriptor::<(u64, String)>::new("v"))?;
    for k in 0..entries {
        heap.set_current_key(&k)?;
        heap.value(&h).update(value(k))?;
    }
    let storage = FsCheckpointStorage::savepoint(&root, "snap", FsOptions::default())?;
    let snap = ns_per_op(entries, || {
        let handle = heap.snapshot(1).unwrap().run(&storage).unwrap();
        let mut meta = CheckpointMetadata::new("bench", 1, SnapshotKind::Savepoint);
        let state = state_api::SubtaskState {
            keyed: vec![handle],
            ..Default::default()
        };
        meta.add_subtask(&state_api::OperatorId::new("op").unwrap(), 1, 128, 0, state)
            .unwrap();
        storage.complete_checkpoint(meta).unwrap();
    });
    rows.push(Row {
        name: format!("bootstrap writer (OperatorBuilder + SavepointWriter), {entries} values"),
        ours: boot,
        baseline: snap,
        unit: "ns/entry",
        baseline_name: "heap full snapshot of the same entries (savepoint)",
        target: "reported",
    });
    // Reader: typed entries out of the savepoint, against restoring it into the heap.
    let reader = SavepointReader::open(&format!("{root}/snap"))?;
    let read = ns_per_op(entries, || {
        let values = reader
            .read_values::<u64, VoidNamespace, (u64, String)>("op", "v")
            .unwrap();
        assert_eq!(values.len() as u64, entries);
    });
    let handles: Vec<_> = reader.keyed_handles("op")?.into_iter().cloned().collect();
    let restore = ns_per_op(entries, || {
        let mut b = HeapKeyedStateBackend::<u64>::restore(&ctx, &handles, reader.storage()).unwrap();
        b.register(ValueStateDescriptor::<(u64, String)>::new("v")).unwrap();
    });
    rows.push(Row {
        name: format!("savepoint reader (read_values), {entries} values"),
        ours: read,
        baseline: restore,
        unit: "ns/entry",
        baseline_name: "restore into the heap backend",
        target: "reported",
    });
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
