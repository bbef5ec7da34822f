//! Working directories of crashed processes are removed by the next start; those of
//! running processes (this one, pid 1) are kept.

use state_timers::{LmdbConfig, LmdbTimerStore, workdir};

#[test]
fn orphaned_working_directories_are_removed_at_the_next_start() {
    let root = tempfile::tempdir().unwrap();
    // A PID above Linux's maximum (2^22) never runs.
    let orphan = root.path().join("timers-4194305-0");
    let orphan_deep = root.path().join("timers-4194306-3");
    std::fs::create_dir_all(orphan.join("data")).unwrap();
    std::fs::write(orphan.join("data/data.mdb"), vec![0u8; 4096]).unwrap();
    std::fs::create_dir_all(&orphan_deep).unwrap();
    let live = root.path().join("timers-1-0");
    let mine = root.path().join(format!("timers-{}-999", std::process::id()));
    let other_kind = root.path().join("db-4194305-0");
    let unrelated = root.path().join("timers-notes");
    for d in [&live, &mine, &other_kind, &unrelated] {
        std::fs::create_dir_all(d).unwrap();
    }
    let config = LmdbConfig {
        local_dir: root.path().to_path_buf(),
        ..LmdbConfig::default()
    };
    let store = LmdbTimerStore::create(&config).unwrap();
    assert!(
        !orphan.exists() && !orphan_deep.exists(),
        "a crashed process's directories are gone"
    );
    for d in [&live, &mine, &other_kind, &unrelated] {
        assert!(d.exists(), "{} is kept", d.display());
    }
    drop(store);
    assert!(workdir::remove_orphans(root.path(), "db").contains(&other_kind));
}
