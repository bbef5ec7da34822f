//! Restore assignment: key-group ranges and the keyed/timer handles that intersect them,
//! operator-state slices as Flink redistributes them (reading only contributing
//! streams), engine data, and typed errors for snapshots that do not fit the job.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;

use state_api::keygroup::key_group_range_for_operator;
use state_api::testkit::{MemFiles, TestStorage};
use state_api::{
    DefaultOperatorStateBackend, JobAssignment, JobSnapshot, KeyGroupRange, KeyedSnapshotHandle, OperatorId,
    OperatorSnapshot, OperatorSpec, OperatorStateBackend, RestoreOptions, StateError, StreamHandle, SubtaskSnapshot,
    SubtaskState,
};

fn handle(range: KeyGroupRange) -> KeyedSnapshotHandle {
    KeyedSnapshotHandle {
        checkpoint_id: 1,
        key_group_range: range,
        key_group_offsets: vec![0; range.len() as usize],
        stream: StreamHandle::Inline {
            bytes: format!("{range}").into_bytes(),
        },
    }
}

/// A snapshot of operator `op` at `parallelism` (max parallelism `max_p`) whose subtasks
/// each wrote one keyed and one timer handle for their range, and engine data.
fn keyed_snapshot(op: &str, parallelism: u32, max_p: u32) -> JobSnapshot {
    let id = OperatorId::new(op).unwrap();
    let mut s = JobSnapshot::default();
    for i in 0..parallelism {
        let range = key_group_range_for_operator(max_p, parallelism, i).unwrap();
        let state = SubtaskState {
            keyed: vec![handle(range)],
            timers: vec![handle(range)],
            engine: BTreeMap::from([("offset".to_string(), vec![i as u8])]),
            ..SubtaskState::default()
        };
        s.add_subtask(&id, parallelism, max_p, i, state).unwrap();
    }
    s
}

#[test]
fn every_new_subtask_gets_exactly_the_handles_that_intersect_its_key_groups() {
    for (old_p, new_p) in [(4, 3), (3, 4), (128, 100), (1, 5), (5, 1), (7, 7)] {
        let max_p = 128;
        let snapshot = keyed_snapshot("op", old_p, max_p);
        let plan = JobAssignment::new(
            &snapshot,
            &[OperatorSpec::new("op", new_p, max_p).unwrap()],
            RestoreOptions::default(),
        )
        .unwrap();
        let subs = plan.operator("op");
        assert_eq!(subs.len(), new_p as usize);
        let mut covered = 0;
        for (i, a) in subs.iter().enumerate() {
            assert_eq!(a.index, i as u32);
            assert!(a.restored);
            let range = key_group_range_for_operator(max_p, new_p, i as u32).unwrap();
            assert_eq!(a.key_group_range, range);
            assert_eq!(a.context().key_group_range, range);
            covered += range.len();
            // Exactly the intersecting handles, no more.
            let expected: Vec<_> = (0..old_p)
                .map(|j| key_group_range_for_operator(max_p, old_p, j).unwrap())
                .filter(|r| !r.intersection(&range).is_empty())
                .collect();
            let got: Vec<_> = a.keyed.iter().map(|h| h.key_group_range).collect();
            assert_eq!(got, expected, "{old_p} -> {new_p}, subtask {i}");
            let timers: Vec<_> = a.timers.iter().map(|h| h.key_group_range).collect();
            assert_eq!(timers, expected);
            // Engine data: its own at the same parallelism, every old subtask's otherwise.
            if old_p == new_p {
                assert_eq!(a.engine.keys().copied().collect::<Vec<_>>(), vec![i as u32]);
            } else {
                assert_eq!(a.engine.len(), old_p as usize);
            }
        }
        assert_eq!(covered, max_p, "the new ranges cover every key group once");
    }
}

#[test]
fn operator_state_slices_match_flink_and_only_contributing_streams_are_read() {
    let storage = MemFiles::default();
    let old_p = 4u32;
    let mut snapshot = JobSnapshot::default();
    let op = OperatorId::new("src").unwrap();
    let mut global = Vec::new();
    for i in 0..old_p {
        let mut ops = DefaultOperatorStateBackend::new(i);
        let offsets = ops.list_state::<u64>("offsets").unwrap();
        let all = ops.union_list_state::<u32>("all").unwrap();
        let rules = ops.broadcast_state::<u8, String>("rules").unwrap();
        for j in 0..(3 + u64::from(i)) {
            let v = 100 * u64::from(i) + j;
            ops.list(&offsets).add(v).unwrap();
            global.push(v);
        }
        ops.list(&all).add(i).unwrap();
        ops.broadcast(&rules).put(1, "r".into()).unwrap();
        let h = ops.snapshot(1).unwrap().run(&storage).unwrap();
        let state = SubtaskState {
            operator: vec![h],
            ..SubtaskState::default()
        };
        snapshot.add_subtask(&op, old_p, 128, i, state).unwrap();
    }
    for new_p in [1u32, 2, 3, 5, 18, 40] {
        let plan = JobAssignment::new(
            &snapshot,
            &[OperatorSpec::new("src", new_p, 128).unwrap()],
            RestoreOptions::default(),
        )
        .unwrap();
        let mut concatenated = Vec::new();
        for a in plan.operator("src") {
            let mut restored = a.restore_operator_state(&storage).unwrap();
            let via_old_api = DefaultOperatorStateBackend::restore(
                &snapshot.operator("src").unwrap().operator_state(),
                a.index,
                new_p,
                &storage,
            )
            .unwrap();
            let mut old = via_old_api;
            let offsets = restored.list_state::<u64>("offsets").unwrap();
            let mine = restored.list(&offsets).get().unwrap();
            let old_offsets = old.list_state::<u64>("offsets").unwrap();
            assert_eq!(
                mine,
                old.list(&old_offsets).get().unwrap(),
                "same as a restore from every stream"
            );
            let (n, p, i) = (global.len(), new_p as usize, a.index as usize);
            assert_eq!(mine.len(), n / p + usize::from(i < n % p), "p={new_p} subtask {i}");
            concatenated.extend(mine);
            let all = restored.union_list_state::<u32>("all").unwrap();
            let mut all_got = restored.list(&all).get().unwrap();
            all_got.sort();
            assert_eq!(all_got, vec![0, 1, 2, 3], "union state to every subtask");
            let rules = restored.broadcast_state::<u8, String>("rules").unwrap();
            assert_eq!(
                restored.broadcast(&rules).entries().unwrap(),
                vec![(1, "r".to_string())]
            );
        }
        assert_eq!(
            concatenated, global,
            "p={new_p}: contiguous slices in old-subtask order"
        );
    }
    // Without union state, a subtask reads only the streams its even-split slice spans.
    let mut lists = JobSnapshot::default();
    for i in 0..old_p {
        let mut ops = DefaultOperatorStateBackend::new(i);
        let offsets = ops.list_state::<u64>("offsets").unwrap();
        for j in 0..1000 {
            ops.list(&offsets).add(j).unwrap();
        }
        let h = ops.snapshot(1).unwrap().run(&storage).unwrap();
        let state = SubtaskState {
            operator: vec![h],
            ..SubtaskState::default()
        };
        lists.add_subtask(&op, old_p, 128, i, state).unwrap();
    }
    let total: u64 = lists.exclusive_streams().map(StreamHandle::size).sum();
    let plan = JobAssignment::new(
        &lists,
        &[OperatorSpec::new("src", 8, 128).unwrap()],
        RestoreOptions::default(),
    )
    .unwrap();
    for a in plan.operator("src") {
        assert_eq!(
            a.operator_state.len(),
            1,
            "an eighth of the elements lies in one old stream"
        );
        storage.reset_bytes_read();
        a.restore_operator_state(&storage).unwrap();
        assert!(
            storage.bytes_read() * 3 < total,
            "read {} of {total} bytes",
            storage.bytes_read()
        );
    }
}

#[test]
fn snapshots_that_do_not_fit_the_job_are_typed_errors() {
    let snapshot = keyed_snapshot("op", 4, 128);
    // Another max parallelism.
    let err = JobAssignment::new(
        &snapshot,
        &[OperatorSpec::new("op", 4, 256).unwrap()],
        RestoreOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, StateError::InvalidCheckpoint { operator, .. } if operator == "op"),
        "{err}"
    );
    assert!(err.to_string().contains("max parallelism 128"), "{err}");
    // State of an operator the job lacks: refused unless allowed.
    let other = [OperatorSpec::new("other", 2, 128).unwrap()];
    let err = JobAssignment::new(&snapshot, &other, RestoreOptions::default()).unwrap_err();
    assert!(
        matches!(&err, StateError::InvalidCheckpoint { operator, .. } if operator == "op"),
        "{err}"
    );
    let plan = JobAssignment::new(
        &snapshot,
        &other,
        RestoreOptions::default().allow_non_restored_state(true),
    )
    .unwrap();
    // An operator without state starts empty.
    assert!(plan.operator("other").iter().all(|a| !a.restored && a.keyed.is_empty()));
    // The same operator twice in the job.
    let twice = [
        OperatorSpec::new("op", 1, 128).unwrap(),
        OperatorSpec::new("op", 2, 128).unwrap(),
    ];
    assert!(JobAssignment::new(&snapshot, &twice, RestoreOptions::default()).is_err());

    // Damaged snapshots: a subtask index not below the parallelism, a subtask twice, a
    // handle outside its subtask's key groups, an operator twice.
    let job = [OperatorSpec::new("op", 2, 128).unwrap()];
    let mut bad = snapshot.clone();
    bad.operators[0].subtasks[3].index = 4;
    let err = JobAssignment::new(&bad, &job, RestoreOptions::default()).unwrap_err();
    assert!(
        matches!(&err, StateError::InvalidCheckpoint { subtask: Some(4), .. }),
        "{err}"
    );
    let mut bad = snapshot.clone();
    bad.operators[0].subtasks[3].index = 2;
    let err = JobAssignment::new(&bad, &job, RestoreOptions::default()).unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
    let mut bad = snapshot.clone();
    bad.operators[0].subtasks[0].state.keyed[0] = handle(KeyGroupRange::new(0, 40));
    let err = JobAssignment::new(&bad, &job, RestoreOptions::default()).unwrap_err();
    assert!(
        matches!(&err, StateError::InvalidCheckpoint { subtask: Some(0), .. }),
        "{err}"
    );
    let mut bad = snapshot.clone();
    bad.operators.push(OperatorSnapshot {
        id: OperatorId::new("op").unwrap(),
        parallelism: 1,
        max_parallelism: 128,
        subtasks: vec![SubtaskSnapshot {
            index: 0,
            state: SubtaskState::default(),
        }],
    });
    assert!(JobAssignment::new(&bad, &job, RestoreOptions::default()).is_err());
}

#[test]
fn renaming_an_operator_maps_old_state_to_a_new_id() {
    let mut snapshot = keyed_snapshot("legacy", 2, 128);
    snapshot
        .rename_operator("legacy", &OperatorId::new("counts").unwrap())
        .unwrap();
    let plan = JobAssignment::new(
        &snapshot,
        &[OperatorSpec::new("counts", 2, 128).unwrap()],
        RestoreOptions::default(),
    )
    .unwrap();
    assert_eq!(plan.operator("counts")[1].keyed.len(), 1);
    assert!(
        snapshot
            .rename_operator("missing", &OperatorId::new("x").unwrap())
            .is_err()
    );
}
