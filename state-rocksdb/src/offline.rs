//! Reading an incremental (native) snapshot without a job: its files are downloaded and
//! opened read-only, and written out in the canonical format, as a full snapshot of the
//! same state would have been. Savepoint tools read and compare that stream like any
//! other; the key type need not be known at compile time.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rocksdb::DB;
use state_api::raw::StateMeta;
use state_api::raw::format::SnapshotHeader;
use state_api::{CheckpointStorage, IncrementalKeyedHandle, KeyedSnapshotHandle, Result, StateError, SystemClock};

pub use crate::full_snapshot::EncodedLen;
use crate::full_snapshot::{FullSnapshot, SnapState};
use crate::incremental::download;
use crate::instance::{DirGuard, INSTANCE, db_err};
use crate::layout::key_group_prefix_len;
use crate::options::RocksDbConfig;
use crate::restore::RAW_CF;

/// Writes the state of incremental snapshot `handle` (read from `storage`) to `target` in
/// the canonical format: every key group the handle holds, every state (those restored
/// and never registered included), entries as written, TTL timestamps kept, nothing
/// expired dropped.
///
/// The files are downloaded (and checked) into a new directory under `work_dir`, which
/// is removed again. `key_len` tells how many bytes of a stored key the key takes (for
/// a key type `K`, `state_rocksdb::layout::encoded_len::<K>`; without the type, a
/// decoder driven by the stored key schema); `namespace_len(meta)` does the same for a
/// map state's namespaces (`None` when the namespace cannot be measured, which makes a
/// map state with entries an error).
pub fn incremental_to_canonical(
    handle: &IncrementalKeyedHandle,
    storage: &dyn CheckpointStorage,
    work_dir: &Path,
    key_len: EncodedLen,
    namespace_len: &dyn Fn(&StateMeta) -> Option<EncodedLen>,
    target: &dyn CheckpointStorage,
) -> Result<KeyedSnapshotHandle> {
    if handle.max_parallelism == 0 {
        return Err(StateError::InvalidArgument(format!(
            "incremental checkpoint {} has max parallelism 0",
            handle.checkpoint_id
        )));
    }
    let guard = DirGuard(work_dir.join(format!(
        "offline-{}-{}-{}",
        handle.checkpoint_id,
        std::process::id(),
        INSTANCE.fetch_add(1, Ordering::Relaxed)
    )));
    let dir = guard.0.as_path();
    download(handle, dir, storage)?;
    let config = RocksDbConfig::default();
    let families = DB::list_cf(&config.options(), dir)
        .map_err(|e| db_err(format!("listing the column families of `{}`", dir.display()), e))?;
    let job = FullSnapshot {
        dir: dir.to_path_buf(),
        config,
        clock: Arc::new(SystemClock),
        header: SnapshotHeader {
            key_type: handle.key_type.clone(),
            key_schema: handle.key_schema.clone(),
            max_parallelism: handle.max_parallelism,
            key_group_range: handle.key_group_range,
            checkpoint_id: handle.checkpoint_id,
            states: handle.states.clone(),
        },
        states: handle
            .states
            .iter()
            .map(|meta| SnapState {
                meta: meta.clone(),
                cleanup: None,
                ns_len: namespace_len(meta),
                raw: true,
            })
            .collect(),
        has_raw: families.iter().any(|f| f == RAW_CF),
        prefix_len: key_group_prefix_len(handle.max_parallelism),
        now: 0,
        key_len,
    };
    job.write(target)
}
