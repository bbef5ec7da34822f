//! Flink's checkpoint directory layout and the path rules that keep every path inside
//! the storage's root.
//!
//! ```text
//! <root>/<job-id>/chk-<n>/            state owned by checkpoint n
//! <root>/<job-id>/chk-<n>/_metadata   written last: without it, checkpoint n does not exist
//! <root>/<job-id>/shared/             files referenced by several incremental checkpoints
//! <root>/<job-id>/taskowned/          state owned by the tasks (never deleted by retention)
//! <root>/<job-id>/_shared_registry    reference counts of shared files
//! <root>/<job-id>/_lease/<epoch>      who owns the job directory (see `lease`)
//! <savepoint-dir>/_metadata + files   a savepoint: self-contained, relocatable
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use state_api::{Result, StateError};

/// The metadata file that marks a checkpoint (or savepoint) complete.
pub const METADATA: &str = "_metadata";
/// Suffix of a metadata file being written (renamed into place when complete).
pub const IN_PROGRESS: &str = ".inprogress";
/// Directory of shared files.
pub const SHARED_DIR: &str = "shared/";
/// Directory of task-owned files.
pub const TASK_OWNED_DIR: &str = "taskowned/";
/// Directory of the ownership lease's epoch files.
pub const LEASE_DIR: &str = "_lease/";
/// The persisted shared-state registry.
pub const REGISTRY: &str = "_shared_registry";

/// Directory of checkpoint `id`, relative to the job directory.
pub fn checkpoint_dir(id: u64) -> String {
    format!("chk-{id}/")
}

/// The checkpoint id of a directory name `chk-<n>/`.
pub fn parse_checkpoint_dir(name: &str) -> Option<u64> {
    name.strip_prefix("chk-")?.trim_end_matches('/').parse().ok()
}

/// Checks a job id or savepoint name: 1 to 128 characters of `[A-Za-z0-9._-]`, not
/// `.` or `..`, so it can never name a path outside the root.
pub fn check_segment(what: &str, s: &str) -> Result<()> {
    state_api::raw::check_identifier(what, s)
}

/// Checks a relative path read from metadata before it is used: no absolute paths, no
/// `..`, no empty segments, no control characters or backslashes.
pub fn check_relative_path(path: &str) -> Result<()> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.chars().any(char::is_control)
        && path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(StateError::Corrupt {
            source_name: path.to_string(),
            section: "file reference".into(),
            detail: "path escapes the checkpoint root or is malformed".into(),
            source: None,
        })
    }
}

/// A file-name stem from a caller's hint (a state or operator name): characters outside
/// `[A-Za-z0-9_-]` become `_`, at most 64 characters.
pub fn file_stem(hint: &str) -> String {
    let stem: String = hint
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() { "state".into() } else { stem }
}

/// A 16-hex-digit suffix unique within this process and very likely across processes.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", z ^ (z >> 31))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_escape() {
        for bad in ["", ".", "..", "a/b", "../x", "a\\b", "a b", "x\n", "é"] {
            assert!(check_segment("job id", bad).is_err(), "{bad:?}");
        }
        for good in ["job-1", "my_job.v2", "A"] {
            check_segment("job id", good).unwrap();
        }
    }

    #[test]
    fn relative_paths_cannot_escape() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "chk-1/../../x",
            "a//b",
            "a\\b",
            "a/./b",
            "a\u{0}b",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?}");
        }
        for good in ["chk-1/keyed-00ff", "shared/abc.sst", "x"] {
            check_relative_path(good).unwrap();
        }
    }

    #[test]
    fn stems_and_dirs() {
        assert_eq!(file_stem("../my state/é"), "___my_state__");
        assert_eq!(file_stem(""), "state");
        assert_eq!(checkpoint_dir(12), "chk-12/");
        assert_eq!(parse_checkpoint_dir("chk-12/"), Some(12));
        assert_eq!(parse_checkpoint_dir("chk-x/"), None);
        assert_ne!(unique_suffix(), unique_suffix());
    }
}
