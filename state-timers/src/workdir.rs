//! Local working directories (RocksDB instances, LMDB timer stores) that a crash can
//! leave behind. Each is named `<kind>-<pid>-<n>` under its root, so a later start can
//! tell whose it was: the first directory a process creates under a root sweeps that
//! root of `<kind>-*` directories whose process no longer runs.
//!
//! A process counts as running while `/proc/<pid>` exists (Linux). Where `/proc` is not
//! available nothing is swept (never a directory that may be in use). A dead process's
//! PID reused by another process keeps its directory until that one ends too.
//!
//! ```
//! let root = std::env::temp_dir().join(format!("workdir-doc-{}", std::process::id()));
//! let dir = state_timers::workdir::create(&root, "db")?;
//! assert!(dir.file_name().unwrap().to_string_lossy().starts_with(&format!("db-{}-", std::process::id())));
//! # std::fs::remove_dir_all(&root).ok();
//! # Ok::<(), state_api::StateError>(())
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use state_api::process::{Liveness, ProcessId};
use state_api::{Result, StateError};

static NEXT: AtomicU64 = AtomicU64::new(0);
static SWEPT: Mutex<Option<HashSet<(PathBuf, String)>>> = Mutex::new(None);

/// Creates a fresh, empty working directory `<root>/<kind>-<pid>-<n>`; the first call per
/// root and kind in this process removes the directories of processes that are gone.
pub fn create(root: &Path, kind: &str) -> Result<PathBuf> {
    let first = SWEPT
        .lock()
        .map(|mut s| {
            s.get_or_insert_with(HashSet::new)
                .insert((root.to_path_buf(), kind.to_string()))
        })
        .unwrap_or(false);
    if first {
        remove_orphans(root, kind);
    }
    let dir = root.join(format!(
        "{kind}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| StateError::from_io(format!("creating `{}`", dir.display()), e))?;
    Ok(dir)
}

/// Removes `<root>/<kind>-<pid>-*` directories whose process is not running; returns
/// what it removed.
pub fn remove_orphans(root: &Path, kind: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return removed;
    };
    let prefix = format!("{kind}-");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id()
            && ProcessId::from_pid(pid).liveness() == Liveness::Gone
            && e.file_type().is_ok_and(|t| t.is_dir())
            && std::fs::remove_dir_all(e.path()).is_ok()
        {
            removed.push(e.path());
        }
    }
    removed
}
