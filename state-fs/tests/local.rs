//! state-fs on a local directory: layout, atomic completion, inlining, retention with
//! shared files, discovery, savepoints, integrity, concurrent transfers, path safety,
//! (tracing events: tracing_events.rs).

mod common;

use common::{LocalFs, tree};
use state_api::{
    BackendContext, CheckpointStorage, KeyedStateBackend, OperatorId, StateError, StreamHandle, SubtaskState,
};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SharedFile, SnapshotKind};
use state_heap::HeapKeyedStateBackend;

fn backend_with(n: u64, base: u64) -> HeapKeyedStateBackend<u64> {
    common::heap_backend(n, base)
}

fn check(storage: &FsCheckpointStorage, meta: &CheckpointMetadata, n: u64, base: u64) {
    common::check_restore(storage, meta, n, base, 1);
}

fn checkpoint(storage: &FsCheckpointStorage, id: u64, b: &mut HeapKeyedStateBackend<u64>) -> CheckpointMetadata {
    let mut meta = CheckpointMetadata::new("job", id, SnapshotKind::Checkpoint);
    common::add_keyed(&mut meta, b.snapshot(id).unwrap().run(storage).unwrap());
    meta
}

#[test]
fn checkpoint_layout_completion_and_discovery_after_restart() {
    let mut fs = LocalFs::new(FsOptions::default());
    let mut b = backend_with(5000, 0);
    let meta = checkpoint(&fs.storage, 1, &mut b);
    assert!(
        matches!(
            meta.snapshot.operators[0].subtasks[0].state.keyed[0].stream,
            StreamHandle::File { .. }
        ),
        "5000 entries exceed the inline threshold"
    );
    // Before completion the checkpoint does not exist.
    assert!(fs.storage.latest_checkpoint().unwrap().is_none());
    let files = tree(&fs.job_dir);
    assert!(
        files.iter().all(|f| f.starts_with("chk-1/") || f == "_shared_registry")
            && !files.iter().any(|f| f.ends_with("_metadata")),
        "{files:?}"
    );
    fs.storage.complete_checkpoint(meta.clone()).unwrap();
    let files = tree(&fs.job_dir);
    assert!(files.contains(&"chk-1/_metadata".to_string()), "{files:?}");
    assert!(files.contains(&"_shared_registry".to_string()), "{files:?}");
    assert!(!files.iter().any(|f| f.ends_with(".inprogress")), "{files:?}");

    // A restart: a new storage object finds checkpoint 1 and restores it.
    let reopened = fs.restart(FsOptions::default());
    let latest = reopened.latest_checkpoint().unwrap().unwrap();
    assert_eq!(latest, meta);
    check(&reopened, &latest, 5000, 0);
    assert!(reopened.bytes_read() > 0);
    // Ids must grow.
    assert!(
        reopened
            .complete_checkpoint(CheckpointMetadata::new("job", 1, SnapshotKind::Checkpoint))
            .is_err()
    );
    // Another job's metadata is refused.
    assert!(
        reopened
            .complete_checkpoint(CheckpointMetadata::new("other", 2, SnapshotKind::Checkpoint))
            .is_err()
    );
}

#[test]
fn small_state_is_inlined_into_the_metadata() {
    let fs = LocalFs::new(FsOptions::default());
    let mut b = backend_with(10, 0);
    let meta = checkpoint(&fs.storage, 1, &mut b);
    assert!(
        matches!(&meta.snapshot.operators[0].subtasks[0].state.keyed[0].stream, StreamHandle::Inline { bytes } if bytes.len() < 20 * 1024)
    );
    fs.storage.complete_checkpoint(meta).unwrap();
    assert_eq!(
        tree(&fs.job_dir),
        vec!["_shared_registry".to_string(), "chk-1/_metadata".to_string()]
    );
    let latest = fs.storage.latest_checkpoint().unwrap().unwrap();
    check(&fs.storage, &latest, 10, 0);
    // The threshold is configurable, with a maximum.
    // An inline threshold above the maximum is refused when the options are built.
    assert!(matches!(
        FsOptions::builder().inline_threshold(2 * 1024 * 1024).build(),
        Err(StateError::InvalidArgument(_))
    ));
    let zero = LocalFs::files_only();
    let meta = checkpoint(&zero.storage, 1, &mut b);
    assert!(matches!(
        meta.snapshot.operators[0].subtasks[0].state.keyed[0].stream,
        StreamHandle::File { .. }
    ));
}

#[test]
fn incomplete_checkpoints_are_removed_on_restart_and_by_the_next_checkpoint() {
    let mut fs = LocalFs::files_only();
    let mut b = backend_with(100, 0);
    let m1 = checkpoint(&fs.storage, 1, &mut b);
    fs.storage.complete_checkpoint(m1).unwrap();
    // Checkpoint 2 writes its files but never completes (a crash).
    let _m2 = checkpoint(&fs.storage, 2, &mut b);
    assert!(tree(&fs.job_dir).iter().any(|f| f.starts_with("chk-2/")));
    let reopened = fs.restart(FsOptions::default());
    assert!(
        !tree(&fs.job_dir).iter().any(|f| f.starts_with("chk-2/")),
        "restart removed the leftover"
    );
    assert_eq!(reopened.latest_checkpoint().unwrap().unwrap().checkpoint_id, 1);
    // Without a restart: checkpoint 3 fails midway, checkpoint 4 completes and removes it.
    let _m3 = checkpoint(&reopened, 3, &mut b);
    let m4 = checkpoint(&reopened, 4, &mut b);
    reopened.complete_checkpoint(m4).unwrap();
    let files = tree(&fs.job_dir);
    assert!(
        !files.iter().any(|f| f.starts_with("chk-3/") || f.starts_with("chk-1/")),
        "{files:?}"
    );
    assert_eq!(reopened.completed_checkpoints(), vec![4]);
}

fn write_local(dir: &std::path::Path, name: &str, content: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn retention_keeps_n_checkpoints_and_deletes_unreferenced_shared_files() {
    let mut fs = LocalFs::new(FsOptions::builder().retained_checkpoints(2).build().unwrap());
    let local = tempfile::tempdir().unwrap();
    let mut b = backend_with(50, 0);
    // Incremental-style chain: each checkpoint uploads one new shared file and keeps
    // referencing every earlier one whose index is even.
    let mut all_shared: Vec<SharedFile> = Vec::new();
    for id in 1..=5u64 {
        let src = write_local(
            local.path(),
            &format!("sst-{id}"),
            format!("sst {id} ").repeat(1000).as_bytes(),
        );
        let uploaded = fs
            .storage
            .upload_files(&[(src, fs.storage.shared_path(&format!("{id}.sst")))])
            .unwrap();
        all_shared.extend(uploaded.clone());
        let mut meta = checkpoint(&fs.storage, id, &mut b);
        meta.snapshot.operators[0].subtasks[0].state.incremental = vec![common::shared_handle(
            all_shared
                .iter()
                .enumerate()
                .filter(|(i, _)| (*i as u64) + 1 == id || i % 2 == 0)
                .map(|(_, s)| s.clone())
                .collect(),
        )];
        let done = fs.storage.complete_checkpoint(meta).unwrap();
        if id >= 3 {
            assert_eq!(done.subsumed, vec![id - 2]);
        }
    }
    assert_eq!(fs.storage.completed_checkpoints(), vec![4, 5]);
    let files = tree(&fs.job_dir);
    assert!(
        files
            .iter()
            .all(|f| !f.starts_with("chk-1/") && !f.starts_with("chk-2/") && !f.starts_with("chk-3/")),
        "{files:?}"
    );
    // Shared files: 1, 3, 5 (even indices 0, 2, 4) are referenced by both; 4 by checkpoint 4; 2 by none.
    let shared: Vec<&String> = files.iter().filter(|f| f.starts_with("shared/")).collect();
    assert_eq!(shared.len(), 4, "{shared:?}");
    assert!(
        !files.contains(&all_shared[1].path),
        "shared file of checkpoint 2 only is deleted"
    );
    assert_eq!(fs.storage.shared_ref_count(&all_shared[0].path), 2);
    assert_eq!(fs.storage.shared_ref_count(&all_shared[3].path), 1);
    // The registry survives a restart.
    let reopened = fs.restart(FsOptions::builder().retained_checkpoints(2).build().unwrap());
    assert_eq!(reopened.shared_ref_count(&all_shared[0].path), 2);
    assert_eq!(tree(&fs.job_dir), files, "a clean restart deletes nothing");
    // Every retained shared file downloads intact.
    let targets: Vec<(SharedFile, std::path::PathBuf)> = reopened
        .latest_checkpoint()
        .unwrap()
        .unwrap()
        .shared()
        .into_iter()
        .enumerate()
        .map(|(i, s)| (s, local.path().join(format!("back-{i}"))))
        .collect();
    reopened.download_files(&targets).unwrap();
    for (s, p) in &targets {
        assert_eq!(crc32c::crc32c(&std::fs::read(p).unwrap()), s.crc32c);
    }
}

#[test]
fn an_unreferenced_shared_upload_is_removed_on_restart_and_on_abort() {
    let mut fs = LocalFs::new(FsOptions::default());
    let local = tempfile::tempdir().unwrap();
    let src = write_local(local.path(), "x", b"orphan");
    let up = fs
        .storage
        .upload_files(&[(src.clone(), fs.storage.shared_path("x.sst"))])
        .unwrap();
    assert!(tree(&fs.job_dir).contains(&up[0].path));
    fs.restart(FsOptions::default());
    assert!(!tree(&fs.job_dir).contains(&up[0].path), "restart removed the orphan");
    let up = fs
        .storage
        .upload_files(&[(src, fs.storage.shared_path("y.sst"))])
        .unwrap();
    fs.storage.abort_checkpoint(9, &[up[0].path.clone()]).unwrap();
    assert!(!tree(&fs.job_dir).contains(&up[0].path), "abort removed its upload");
}

#[test]
fn savepoints_are_self_contained_relocatable_and_survive_retention() {
    let root = tempfile::tempdir().unwrap();
    let root_s = root.path().to_str().unwrap();
    let sp = FsCheckpointStorage::savepoint(root_s, "savepoint-1", FsOptions::default()).unwrap();
    let mut b = backend_with(3000, 7);
    let mut meta = CheckpointMetadata::new("job", 42, SnapshotKind::Savepoint);
    common::add_keyed(&mut meta, b.snapshot(42).unwrap().run(&sp).unwrap());
    assert!(
        sp.complete_checkpoint(CheckpointMetadata::new("job", 1, SnapshotKind::Checkpoint))
            .is_err()
    );
    sp.complete_checkpoint(meta).unwrap();
    // Job checkpoints with retention 1 run next to it.
    let job = FsCheckpointStorage::open(root_s, "job", FsOptions::default()).unwrap();
    for id in 1..=3 {
        let m = checkpoint(&job, id, &mut b);
        job.complete_checkpoint(m).unwrap();
    }
    // Move the savepoint somewhere else entirely and restore from there.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::rename(root.path().join("savepoint-1"), elsewhere.path().join("moved")).unwrap();
    let moved =
        FsCheckpointStorage::savepoint(elsewhere.path().to_str().unwrap(), "moved", FsOptions::default()).unwrap();
    let restored_meta = moved.latest_checkpoint().unwrap().unwrap();
    assert_eq!(restored_meta.checkpoint_id, 42);
    check(&moved, &restored_meta, 3000, 7);
}

#[test]
fn damaged_files_are_typed_errors_naming_the_file() {
    let fs = LocalFs::files_only();
    let mut b = backend_with(2000, 0);
    let meta = checkpoint(&fs.storage, 1, &mut b);
    fs.storage.complete_checkpoint(meta.clone()).unwrap();
    let StreamHandle::File { path, .. } = &meta.snapshot.operators[0].subtasks[0].state.keyed[0].stream else {
        unreachable!()
    };
    // Corrupted state file: the section checksum catches it.
    let original = std::fs::read(fs.job_dir.join(path)).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(fs.job_dir.join(path), &bad).unwrap();
    let err = HeapKeyedStateBackend::<u64>::restore(
        &BackendContext::single(128),
        &meta.snapshot.operators[0].keyed(),
        &fs.storage,
    )
    .unwrap_err();
    assert!(
        matches!(err, StateError::Corrupt { .. }) && err.to_string().contains(path.as_str()),
        "{err}"
    );
    assert!(
        fs.storage
            .read_verified(&meta.snapshot.operators[0].subtasks[0].state.keyed[0].stream)
            .unwrap_err()
            .to_string()
            .contains(path.as_str())
    );
    // Missing file.
    std::fs::remove_file(fs.job_dir.join(path)).unwrap();
    let err = HeapKeyedStateBackend::<u64>::restore(
        &BackendContext::single(128),
        &meta.snapshot.operators[0].keyed(),
        &fs.storage,
    )
    .unwrap_err();
    assert!(err.to_string().contains(path.as_str()), "{err}");
    // Corrupted metadata.
    let md = fs.job_dir.join("chk-1/_metadata");
    let mut m = std::fs::read(&md).unwrap();
    let last = m.len() - 1;
    m[last] ^= 1;
    std::fs::write(&md, m).unwrap();
    let err = fs.storage.load_checkpoint(1).unwrap_err();
    assert!(
        matches!(err, StateError::Corrupt { .. }) && err.to_string().contains("chk-1/_metadata"),
        "{err}"
    );
    // The only retained checkpoint is damaged: recovery says so, naming the file.
    let err = fs.storage.latest_checkpoint().unwrap_err();
    assert!(
        matches!(err, StateError::NoRestorableCheckpoint { .. }) && err.to_string().contains("chk-1/_metadata"),
        "{err}"
    );
}

#[test]
fn paths_never_escape_the_root() {
    let root = tempfile::tempdir().unwrap();
    let root_s = root.path().to_str().unwrap();
    for bad in ["..", "../x", "a/b", "", "x\u{7}", "a\\b"] {
        assert!(
            FsCheckpointStorage::open(root_s, bad, FsOptions::default()).is_err(),
            "job id {bad:?}"
        );
        assert!(
            FsCheckpointStorage::savepoint(root_s, bad, FsOptions::default()).is_err(),
            "savepoint {bad:?}"
        );
    }
    let fs = LocalFs::new(FsOptions::default());
    // A file name hint cannot climb out either.
    let mut out = fs.storage.create_output(1, "../../../etc/passwd").unwrap();
    std::io::Write::write_all(&mut out, &vec![1u8; 64 * 1024]).unwrap();
    let StreamHandle::File { path, .. } = out.finish().unwrap() else {
        unreachable!()
    };
    assert!(path.starts_with("chk-1/") && !path.contains(".."), "{path}");
    // Metadata referencing a path outside the root is refused.
    let mut meta = CheckpointMetadata::new("job", 1, SnapshotKind::Checkpoint);
    let outside = SharedFile {
        path: "../../outside".into(),
        size: 1,
        crc32c: 0,
    };
    let state = SubtaskState {
        incremental: vec![common::shared_handle(vec![outside])],
        ..SubtaskState::default()
    };
    meta.add_subtask(&OperatorId::new("op").unwrap(), 1, 128, 0, state)
        .unwrap();
    assert!(matches!(
        fs.storage.complete_checkpoint(meta),
        Err(StateError::Corrupt { .. })
    ));
}

#[test]
fn uploads_and_downloads_run_concurrently_and_stream() {
    let fs = LocalFs::new(FsOptions::builder().transfer_concurrency(4).build().unwrap());
    let local = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..12)
        .map(|i| {
            let content: Vec<u8> = (0..(300_000 + i * 1000)).map(|j| (j * 7 + i) as u8).collect();
            (
                write_local(local.path(), &format!("f{i}"), &content),
                fs.storage.shared_path(&format!("f{i}")),
            )
        })
        .collect();
    let up = fs.storage.upload_files(&files).unwrap();
    assert_eq!(up.len(), 12);
    let back: Vec<_> = up
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), local.path().join(format!("b{i}"))))
        .collect();
    fs.storage.download_files(&back).unwrap();
    for (i, (_, p)) in back.iter().enumerate() {
        assert_eq!(std::fs::read(p).unwrap(), std::fs::read(&files[i].0).unwrap());
    }
    // A corrupted download is refused, naming the file.
    let target = fs.job_dir.join(&up[3].path);
    let mut c = std::fs::read(&target).unwrap();
    c[10] ^= 1;
    std::fs::write(&target, c).unwrap();
    let err = fs.storage.download_files(&back).unwrap_err();
    assert!(err.to_string().contains(&up[3].path), "{err}");
}
