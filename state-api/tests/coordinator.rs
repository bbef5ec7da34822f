//! The checkpoint coordinator: completion only when every subtask of every operator
//! acknowledged, acknowledgements from many threads in any order, declines, timeouts,
//! late and duplicate acknowledgements, concurrent checkpoints, failed commits, and the
//! wire format of its messages.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use state_api::testkit::SplitMix64;
use state_api::{
    AbortReason, AckOutcome, Acknowledgement, CheckpointCoordinator, CheckpointEvent, CheckpointMessage,
    CompletedCheckpointStore, CoordinatorConfig, Decline, InMemoryCheckpointStore, JobSnapshot, KeyGroupRange,
    KeyedSnapshotHandle, OperatorId, OperatorSpec, Result, StateError, StreamHandle, SubtaskState,
};

fn job() -> Vec<OperatorSpec> {
    vec![
        OperatorSpec::new("join", 2, 128).unwrap(),
        OperatorSpec::new("window", 3, 128).unwrap(),
        OperatorSpec::new("topk", 4, 128).unwrap(),
    ]
}

/// A subtask state that names its writer in its engine data.
fn state(op: &str, subtask: u32, id: u64) -> SubtaskState {
    SubtaskState {
        engine: BTreeMap::from([("writer".to_string(), format!("{op}/{subtask}@{id}").into_bytes())]),
        ..SubtaskState::default()
    }
}

fn ack(op: &str, subtask: u32, id: u64) -> Acknowledgement {
    Acknowledgement {
        checkpoint_id: id,
        operator: OperatorId::new(op).unwrap(),
        subtask,
        state: state(op, subtask, id),
    }
}

fn all_acks(id: u64) -> Vec<Acknowledgement> {
    job()
        .iter()
        .flat_map(|s| (0..s.parallelism).map(move |i| ack(s.id.as_str(), i, id)))
        .collect()
}

fn coordinator(config: CoordinatorConfig) -> (Arc<CheckpointCoordinator>, Arc<InMemoryCheckpointStore>) {
    let store = Arc::new(InMemoryCheckpointStore::new(2));
    let c = CheckpointCoordinator::new(&job(), store.clone(), config).unwrap();
    (Arc::new(c), store)
}

#[test]
fn completes_only_when_every_subtask_acknowledged_from_many_threads_in_any_order() {
    for seed in 0..20 {
        let (c, store) = coordinator(CoordinatorConfig::default());
        let events = c.subscribe();
        c.trigger_with(1, BTreeMap::from([("source".to_string(), vec![seed as u8])]))
            .unwrap();
        let mut acks = all_acks(1);
        let mut rng = SplitMix64(seed);
        for i in (1..acks.len()).rev() {
            acks.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let outcomes: Vec<AckOutcome> = std::thread::scope(|s| {
            let handles: Vec<_> = acks
                .into_iter()
                .map(|a| {
                    let c = &c;
                    s.spawn(move || c.acknowledge(a).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            outcomes.iter().filter(|o| **o == AckOutcome::Completed).count(),
            1,
            "seed {seed}"
        );
        assert_eq!(outcomes.len(), 9);
        let (id, snapshot) = store.latest().unwrap();
        assert_eq!(id, 1);
        assert_eq!(snapshot.engine["source"], vec![seed as u8]);
        for spec in job() {
            let op = snapshot.operator(spec.id.as_str()).unwrap();
            assert_eq!((op.parallelism, op.max_parallelism), (spec.parallelism, 128));
            let indexes: Vec<u32> = op.subtasks.iter().map(|s| s.index).collect();
            assert_eq!(indexes, (0..spec.parallelism).collect::<Vec<_>>());
            for s in &op.subtasks {
                assert_eq!(s.state, state(spec.id.as_str(), s.index, 1), "each subtask's own state");
            }
        }
        assert_eq!(
            events.try_recv().unwrap(),
            CheckpointEvent::Completed { checkpoint_id: 1 }
        );
        assert!(c.pending().is_empty());
    }
}

#[test]
fn nothing_completes_while_one_subtask_is_missing() {
    let (c, store) = coordinator(CoordinatorConfig::default());
    c.trigger(1).unwrap();
    let mut acks = all_acks(1);
    let last = acks.pop().unwrap();
    for (i, a) in acks.into_iter().enumerate() {
        assert_eq!(c.acknowledge(a).unwrap(), AckOutcome::Pending { remaining: 8 - i });
    }
    assert!(store.latest().is_none());
    assert_eq!(c.acknowledge(last).unwrap(), AckOutcome::Completed);
    assert_eq!(store.completed_ids(), vec![1]);
}

#[test]
fn duplicate_acknowledgements_are_errors_and_the_first_stands() {
    let (c, store) = coordinator(CoordinatorConfig::default());
    c.trigger(1).unwrap();
    let mut acks = all_acks(1);
    let first = acks.remove(0);
    c.acknowledge(first.clone()).unwrap();
    let mut other = first.clone();
    other.state = state("impostor", 9, 1);
    let err = c.acknowledge(other).unwrap_err();
    assert!(
        matches!(&err, StateError::DuplicateAcknowledgement { checkpoint_id: 1, operator, subtask: 0 } if operator == "join"),
        "{err}"
    );
    for a in acks {
        c.acknowledge(a).unwrap();
    }
    let (_, snapshot) = store.latest().unwrap();
    assert_eq!(snapshot.operator("join").unwrap().subtask(0), Some(&first.state));
    // After completion a repeat is still a duplicate, and nothing is discarded.
    assert!(matches!(
        c.acknowledge(first).unwrap_err(),
        StateError::DuplicateAcknowledgement { .. }
    ));
    assert!(store.discarded().is_empty());
}

#[test]
fn a_decline_aborts_and_late_acknowledgements_are_discarded() {
    let (c, store) = coordinator(CoordinatorConfig::default());
    let events = c.subscribe();
    c.trigger(1).unwrap();
    for a in all_acks(1) {
        c.acknowledge(a).unwrap();
    }
    c.trigger(2).unwrap();
    let acks = all_acks(2);
    c.acknowledge(acks[0].clone()).unwrap();
    c.decline(Decline {
        checkpoint_id: 2,
        operator: OperatorId::new("window").unwrap(),
        subtask: 1,
        reason: "disk full".into(),
    })
    .unwrap();
    assert!(c.pending().is_empty());
    assert_eq!(store.discarded(), vec![2]);
    // Late acknowledgements of the aborted checkpoint: discarded, not errors.
    for a in acks.into_iter().skip(1) {
        assert_eq!(c.acknowledge(a).unwrap(), AckOutcome::Discarded);
    }
    assert_eq!(store.discarded().len(), 9);
    assert_eq!(store.completed_ids(), vec![1], "the previous checkpoint stands");
    let got: Vec<CheckpointEvent> = events.try_iter().collect();
    assert_eq!(got.len(), 2);
    assert!(matches!(
        &got[1],
        CheckpointEvent::Aborted { checkpoint_id: 2, reason: AbortReason::Declined { subtask: 1, reason, .. } }
            if reason == "disk full"
    ));
    // The next checkpoint completes.
    c.trigger(3).unwrap();
    for a in all_acks(3) {
        c.acknowledge(a).unwrap();
    }
    assert_eq!(store.completed_ids(), vec![1, 3]);
}

#[test]
fn a_checkpoint_past_its_timeout_aborts() {
    let (c, store) = coordinator(CoordinatorConfig::default().with_timeout(Duration::from_millis(40)));
    let events = c.subscribe();
    c.trigger(1).unwrap();
    c.acknowledge(ack("join", 0, 1)).unwrap();
    assert!(c.check_timeouts().is_empty(), "not yet");
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(c.check_timeouts(), vec![1]);
    assert!(matches!(
        events.try_recv().unwrap(),
        CheckpointEvent::Aborted {
            checkpoint_id: 1,
            reason: AbortReason::Expired
        }
    ));
    assert_eq!(c.acknowledge(ack("join", 1, 1)).unwrap(), AckOutcome::Discarded);
    assert!(store.latest().is_none());
    // A trigger also expires what is overdue, so a stuck checkpoint never blocks the next.
    c.trigger(2).unwrap();
    std::thread::sleep(Duration::from_millis(80));
    c.trigger(3).unwrap();
    assert_eq!(c.pending(), vec![3]);
}

#[test]
fn concurrent_checkpoints_are_bounded_and_a_newer_completion_subsumes_older_ones() {
    let (c, _) = coordinator(CoordinatorConfig::default());
    c.trigger(1).unwrap();
    assert!(
        matches!(
            c.trigger(2).unwrap_err(),
            StateError::CheckpointRejected { checkpoint_id: 2, .. }
        ),
        "one pending at a time by default"
    );
    let (c, store) = coordinator(CoordinatorConfig::default().with_max_concurrent_checkpoints(2));
    let events = c.subscribe();
    c.trigger(1).unwrap();
    c.trigger(2).unwrap();
    assert!(c.trigger(3).is_err());
    let early = all_acks(1);
    c.acknowledge(early[0].clone()).unwrap();
    for a in all_acks(2) {
        c.acknowledge(a).unwrap();
    }
    assert_eq!(store.completed_ids(), vec![2]);
    let got: Vec<_> = events.try_iter().collect();
    assert_eq!(
        got,
        vec![
            CheckpointEvent::Aborted {
                checkpoint_id: 1,
                reason: AbortReason::Subsumed { by: 2 }
            },
            CheckpointEvent::Completed { checkpoint_id: 2 },
        ]
    );
    assert_eq!(c.acknowledge(early[1].clone()).unwrap(), AckOutcome::Discarded);
    // Ids only go up.
    assert!(matches!(
        c.trigger(2).unwrap_err(),
        StateError::CheckpointRejected { .. }
    ));
    assert!(matches!(
        c.acknowledge(ack("join", 0, 7)).unwrap_err(),
        StateError::CheckpointRejected { .. }
    ));
}

#[test]
fn acknowledgements_that_do_not_fit_the_job_are_refused() {
    let (c, _) = coordinator(CoordinatorConfig::default());
    c.trigger(1).unwrap();
    let err = c.acknowledge(ack("nope", 0, 1)).unwrap_err();
    assert!(
        matches!(&err, StateError::InvalidCheckpoint { operator, .. } if operator == "nope"),
        "{err}"
    );
    let err = c.acknowledge(ack("join", 2, 1)).unwrap_err();
    assert!(
        matches!(&err, StateError::InvalidCheckpoint { operator, subtask: Some(2), .. } if operator == "join"),
        "{err}"
    );
    // A keyed handle outside the subtask's key groups (join/0 owns 0..=63 of 128).
    let mut bad = ack("join", 0, 1);
    bad.state.keyed.push(KeyedSnapshotHandle {
        checkpoint_id: 1,
        key_group_range: KeyGroupRange::new(60, 70),
        key_group_offsets: vec![0; 11],
        stream: StreamHandle::Inline { bytes: Vec::new() },
    });
    let err = c.acknowledge(bad).unwrap_err();
    assert!(err.to_string().contains("outside the subtask's range"), "{err}");
    assert_eq!(
        c.acknowledge(ack("join", 0, 1)).unwrap(),
        AckOutcome::Pending { remaining: 8 }
    );
}

/// A store whose commits fail on demand.
#[derive(Debug, Default)]
struct FailingStore {
    fail: Mutex<bool>,
    discarded: Mutex<Vec<(u64, usize)>>,
}

impl CompletedCheckpointStore for FailingStore {
    fn commit(&self, checkpoint_id: u64, _snapshot: &JobSnapshot) -> Result<()> {
        if *self.fail.lock().unwrap() {
            return Err(StateError::storage_message(
                format!("writing checkpoint {checkpoint_id}"),
                "injected",
            ));
        }
        Ok(())
    }
    fn discard(&self, checkpoint_id: u64, states: &[SubtaskState], _sweep: bool) -> Result<()> {
        self.discarded.lock().unwrap().push((checkpoint_id, states.len()));
        Ok(())
    }
}

#[test]
fn a_failed_commit_aborts_and_discards_every_acknowledged_state() {
    let store = Arc::new(FailingStore::default());
    *store.fail.lock().unwrap() = true;
    let c = CheckpointCoordinator::new(&job(), store.clone(), CoordinatorConfig::default()).unwrap();
    let events = c.subscribe();
    c.trigger(1).unwrap();
    let mut acks = all_acks(1);
    let last = acks.pop().unwrap();
    for a in acks {
        c.acknowledge(a).unwrap();
    }
    let err = c.acknowledge(last).unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(*store.discarded.lock().unwrap(), vec![(1, 9)]);
    assert!(matches!(
        events.try_recv().unwrap(),
        CheckpointEvent::Aborted {
            checkpoint_id: 1,
            reason: AbortReason::CommitFailed { .. }
        }
    ));
    assert_eq!(c.latest_completed(), None);
    *store.fail.lock().unwrap() = false;
    c.trigger(2).unwrap();
    for a in all_acks(2) {
        c.acknowledge(a).unwrap();
    }
    assert_eq!(c.latest_completed(), Some(2));
}

#[test]
fn listeners_may_call_the_coordinator() {
    let (c, store) = coordinator(CoordinatorConfig::default());
    let weak = Arc::downgrade(&c);
    // On each completion, trigger the next checkpoint from inside the listener.
    c.on_event(move |e| {
        if let (CheckpointEvent::Completed { checkpoint_id }, Some(c)) = (e, weak.upgrade()) {
            c.trigger(checkpoint_id + 1).unwrap();
        }
    });
    c.trigger(1).unwrap();
    for a in all_acks(1) {
        c.acknowledge(a).unwrap();
    }
    assert_eq!(c.pending(), vec![2]);
    for a in all_acks(2) {
        c.acknowledge(a).unwrap();
    }
    assert_eq!(store.completed_ids(), vec![1, 2]);
    assert_eq!(c.pending(), vec![3]);
}

#[test]
fn messages_round_trip_and_damage_is_a_typed_error() {
    let mut a = ack("window", 2, 5);
    a.state.keyed.push(KeyedSnapshotHandle {
        checkpoint_id: 5,
        key_group_range: KeyGroupRange::new(86, 127),
        key_group_offsets: vec![0; 42],
        stream: StreamHandle::File {
            path: "chk-5/window-2".into(),
            size: 10,
            crc32c: 7,
        },
    });
    for message in [
        CheckpointMessage::Acknowledge(a),
        CheckpointMessage::Decline(Decline {
            checkpoint_id: 5,
            operator: OperatorId::new("topk").unwrap(),
            subtask: 3,
            reason: "cancelled".into(),
        }),
    ] {
        let bytes = message.encode().unwrap();
        assert_eq!(CheckpointMessage::decode(&bytes, "peer 2").unwrap(), message);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let err = CheckpointMessage::decode(&b, "peer 2").unwrap_err();
            assert!(err.to_string().contains("peer 2"), "{err}");
        }
        for cut in 0..bytes.len() {
            assert!(CheckpointMessage::decode(&bytes[..cut], "peer 2").is_err());
        }
    }
    // Received messages drive the coordinator like direct calls.
    let (c, store) = coordinator(CoordinatorConfig::default());
    c.trigger(1).unwrap();
    for a in all_acks(1) {
        let bytes = CheckpointMessage::Acknowledge(a).encode().unwrap();
        c.receive(CheckpointMessage::decode(&bytes, "wire").unwrap()).unwrap();
    }
    assert_eq!(store.completed_ids(), vec![1]);
}

#[test]
fn bad_configurations_are_refused() {
    let store = Arc::new(InMemoryCheckpointStore::new(1));
    assert!(CheckpointCoordinator::new(&[], store.clone(), CoordinatorConfig::default()).is_err());
    let twice = [
        OperatorSpec::new("a", 1, 128).unwrap(),
        OperatorSpec::new("a", 2, 128).unwrap(),
    ];
    assert!(CheckpointCoordinator::new(&twice, store.clone(), CoordinatorConfig::default()).is_err());
    let zero = CoordinatorConfig::default().with_max_concurrent_checkpoints(0);
    assert!(CheckpointCoordinator::new(&job(), store.clone(), zero).is_err());
    let instant = CoordinatorConfig::default().with_timeout(Duration::ZERO);
    assert!(CheckpointCoordinator::new(&job(), store, instant).is_err());
    assert!(OperatorSpec::new("bad/id", 1, 128).is_err());
    assert!(OperatorSpec::new("ok", 0, 128).is_err());
    assert!(OperatorSpec::new("ok", 200, 128).is_err());
}
