//! Helpers shared by state-rocksdb tests.
#![allow(dead_code)]

use std::collections::BTreeSet;

/// The files in `shared/` of job `job` under the storage root `root`, as relative paths.
pub fn shared_on_disk(root: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(root.join("job/shared"))
        .map(|rd| {
            rd.flatten()
                .map(|e| format!("shared/{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}
