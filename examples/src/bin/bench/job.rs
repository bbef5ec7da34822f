//! Whole-job checkpoint benchmarks: the coordinator's overhead for a checkpoint of 3
//! operators × 8 subtasks against writing the same `_metadata` directly, and the restore
//! of a 128-subtask checkpoint at 100 subtasks (time against a restore at the same
//! parallelism; bytes each subtask reads against its share of the state).

use std::sync::Arc;
use std::time::Instant;

use state_api::keygroup::key_group_for_key;
use state_api::{
    Acknowledgement, BackendContext, CheckpointCoordinator, CoordinatorConfig, JobAssignment, KeyedSnapshotHandle,
    KeyedStateBackend, OperatorId, OperatorSpec, RestoreOptions, Result, StreamHandle, SubtaskState,
    ValueStateDescriptor,
};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SnapshotKind};
use state_heap::HeapKeyedStateBackend;

use super::Row;

/// An in-memory subtask state of about 1 KiB for subtask `i` of `p` (max parallelism 128).
fn subtask_state(p: u32, i: u32) -> Result<SubtaskState> {
    let range = state_api::keygroup::key_group_range_for_operator(128, p, i)?;
    Ok(SubtaskState {
        keyed: vec![KeyedSnapshotHandle {
            checkpoint_id: 0,
            key_group_range: range,
            key_group_offsets: (0..u64::from(range.len())).collect(),
            stream: StreamHandle::Inline { bytes: vec![7; 1024] },
        }],
        ..SubtaskState::default()
    })
}

/// Coordinator overhead: trigger, 24 acknowledgements and the commit (`_metadata` to
/// local disk) against building the same metadata and completing it directly.
pub fn coordinator_rows(quick: bool, rows: &mut Vec<Row>) -> Result<()> {
    let checkpoints: u64 = if quick { 20 } else { 300 };
    let dir = std::env::temp_dir().join(format!("state-bench-job-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let uri = dir.to_string_lossy().into_owned();
    let specs: Vec<OperatorSpec> = ["join", "window", "topk"]
        .iter()
        .map(|op| OperatorSpec::new(op, 8, 128))
        .collect::<Result<_>>()?;
    let states: Vec<(OperatorId, u32, SubtaskState)> = specs
        .iter()
        .flat_map(|s| (0..8).map(move |i| (s.id.clone(), i)))
        .map(|(op, i)| subtask_state(8, i).map(|st| (op, i, st)))
        .collect::<Result<_>>()?;

    let direct = FsCheckpointStorage::open(&uri, "direct", FsOptions::default())?;
    let t = Instant::now();
    for id in 1..=checkpoints {
        let mut meta = CheckpointMetadata::new("direct", id, SnapshotKind::Checkpoint);
        for (op, i, st) in &states {
            meta.add_subtask(op, 8, 128, *i, st.clone())?;
        }
        direct.complete_checkpoint(meta)?;
    }
    let base = t.elapsed().as_secs_f64() * 1e6 / checkpoints as f64;

    let fs = FsCheckpointStorage::open(&uri, "coordinated", FsOptions::default())?;
    let coordinator = CheckpointCoordinator::new(&specs, Arc::new(fs), CoordinatorConfig::default())?;
    let t = Instant::now();
    for id in 1..=checkpoints {
        coordinator.trigger(id)?;
        for (op, i, st) in &states {
            coordinator.acknowledge(Acknowledgement {
                checkpoint_id: id,
                operator: op.clone(),
                subtask: *i,
                state: st.clone(),
            })?;
        }
    }
    let ours = t.elapsed().as_secs_f64() * 1e6 / checkpoints as f64;
    let _ = std::fs::remove_dir_all(&dir);
    rows.push(Row {
        name: "coordinated checkpoint, 3 operators × 8 subtasks (24 acks + `_metadata`)".into(),
        ours,
        baseline: base,
        unit: "µs/checkpoint",
        baseline_name: "same `_metadata` written directly",
        target: "≤ 1.2×",
    });
    Ok(())
}

/// A checkpoint of operator `counts` at 128 subtasks (max parallelism 1024, `keys` keys),
/// restored at 100 and at 128 subtasks.
pub fn rescale_rows(keys: u64, rows: &mut Vec<Row>) -> Result<()> {
    const MAX_P: u32 = 1024;
    let dir = std::env::temp_dir().join(format!("state-bench-rescale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage = FsCheckpointStorage::open(
        &dir.to_string_lossy(),
        "job",
        FsOptions::builder().inline_threshold(0).build()?,
    )?;
    let op = OperatorId::new("counts")?;
    let mut backends: Vec<HeapKeyedStateBackend<u64>> = (0..128)
        .map(|i| HeapKeyedStateBackend::new(&BackendContext::for_subtask(MAX_P, 128, i)?))
        .collect::<Result<_>>()?;
    let handles: Vec<_> = backends
        .iter_mut()
        .map(|b| b.register(ValueStateDescriptor::<u64>::new("v")))
        .collect::<Result<_>>()?;
    for k in 0..keys {
        let owner = state_api::keygroup::operator_index_for_key_group(MAX_P, 128, key_group_for_key(&k, MAX_P)?)?;
        let b = &mut backends[owner as usize];
        b.set_current_key(&k)?;
        b.value(&handles[owner as usize]).update(k)?;
    }
    let mut meta = CheckpointMetadata::new("job", 1, SnapshotKind::Checkpoint);
    for (i, b) in backends.iter_mut().enumerate() {
        let state = SubtaskState {
            keyed: vec![b.snapshot(1)?.run(&storage)?],
            ..SubtaskState::default()
        };
        meta.add_subtask(&op, 128, MAX_P, i as u32, state)?;
    }
    storage.complete_checkpoint(meta)?;
    drop(backends);
    let latest = storage
        .latest_checkpoint()?
        .ok_or_else(|| state_api::StateError::InvalidArgument("no checkpoint".into()))?;

    let restore_all = |p: u32| -> Result<(f64, f64, u64, u64, f64)> {
        let t = Instant::now();
        let plan = JobAssignment::new(
            &latest.snapshot,
            &[OperatorSpec::new("counts", p, MAX_P)?],
            RestoreOptions::default(),
        )?;
        let assign_us = t.elapsed().as_secs_f64() * 1e6;
        let (mut read_total, mut share_total, mut worst) = (0u64, 0u64, 0f64);
        let t = Instant::now();
        for a in plan.operator("counts") {
            let before = storage.bytes_read();
            let mut b = HeapKeyedStateBackend::<u64>::restore(&a.context(), &a.keyed, &storage)?;
            b.register(ValueStateDescriptor::<u64>::new("v"))?;
            let read = storage.bytes_read() - before;
            let share = a.keyed.iter().map(|h| h.section_bytes(a.key_group_range)).sum::<u64>();
            read_total += read;
            share_total += share;
            worst = worst.max(read as f64 / share.max(1) as f64);
        }
        Ok((
            t.elapsed().as_secs_f64() * 1e3,
            assign_us,
            read_total,
            share_total,
            worst,
        ))
    };
    let (same_ms, same_assign_us, ..) = restore_all(128)?;
    let (rescale_ms, rescale_assign_us, read, share, worst) = restore_all(100)?;
    let _ = std::fs::remove_dir_all(&dir);
    rows.push(Row {
        name: format!("restore 128 → 100 subtasks, {keys} keys (all subtasks)"),
        ours: rescale_ms,
        baseline: same_ms,
        unit: "ms",
        baseline_name: "restore 128 → 128",
        target: "reported",
    });
    rows.push(Row {
        name: "restore assignment 128 → 100 (compute)".into(),
        ours: rescale_assign_us,
        baseline: same_assign_us,
        unit: "µs",
        baseline_name: "assignment 128 → 128",
        target: "reported",
    });
    rows.push(Row {
        name: format!("bytes read by 100 subtasks restoring 128 (worst subtask {worst:.3}× its share)"),
        ours: read as f64,
        baseline: share as f64,
        unit: "bytes",
        baseline_name: "their key groups' sections",
        target: "≤ 1.1× + index",
    });
    Ok(())
}
