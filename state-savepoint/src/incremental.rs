//! The entries of RocksDB incremental (native) snapshots, read through their canonical
//! form: with the `rocksdb` feature, each snapshot's files are downloaded to a temporary
//! directory, opened read-only and written out as a full snapshot would write them, key
//! and namespace lengths measured by the stored schemas.

use state_api::{CheckpointStorage, IncrementalKeyedHandle, KeyedSnapshotHandle, Result};
use state_fs::FsCheckpointStorage;

/// Canonical streams converted from incremental snapshots, in a temporary directory
/// removed on drop.
#[cfg(feature = "rocksdb")]
pub(crate) struct Converted {
    storage: FsCheckpointStorage,
    handles: Vec<KeyedSnapshotHandle>,
    // Last: the directory goes after the storage that writes into it.
    _dir: tempfile::TempDir,
}

/// Without the `rocksdb` feature nothing is converted.
#[cfg(not(feature = "rocksdb"))]
pub(crate) enum Converted {}

#[cfg(feature = "rocksdb")]
impl Converted {
    /// The converted streams and the storage they are read from.
    pub(crate) fn streams(&self) -> impl Iterator<Item = (&KeyedSnapshotHandle, &dyn CheckpointStorage)> {
        self.handles
            .iter()
            .map(|h| (h, &self.storage as &dyn CheckpointStorage))
    }
}

#[cfg(not(feature = "rocksdb"))]
impl Converted {
    /// Nothing: there is no value of this type.
    pub(crate) fn streams(&self) -> std::iter::Empty<(&KeyedSnapshotHandle, &dyn CheckpointStorage)> {
        match *self {}
    }
}

/// The canonical form of `handles` (incremental snapshots of operator `id`, read from
/// `storage`), or `None` when there are none.
#[cfg(feature = "rocksdb")]
pub(crate) fn canonical(
    _id: &str,
    handles: &[IncrementalKeyedHandle],
    storage: &FsCheckpointStorage,
) -> Result<Option<Converted>> {
    use std::sync::Arc;

    use state_api::StateError;
    use state_api::raw::StateMeta;
    use state_fs::FsOptions;
    use state_rocksdb::EncodedLen;

    if handles.is_empty() {
        return Ok(None);
    }
    let dir = tempfile::tempdir().map_err(|e| StateError::from_io("creating a temporary directory", e))?;
    let root = dir.path().join("canonical");
    let root = root
        .to_str()
        .ok_or_else(|| StateError::InvalidArgument(format!("temporary directory `{}` is not UTF-8", root.display())))?;
    let target = FsCheckpointStorage::open(root, "converted", FsOptions::default())?;
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        let key_schema = h.key_schema.clone();
        if !key_schema.is_structural() {
            return Err(StateError::Unsupported {
                what: format!(
                    "reading incremental checkpoint {}: its key type `{}` has no structural schema, so keys cannot be \
                     told from namespaces; restore a RocksDB backend from it instead",
                    h.checkpoint_id, h.key_type
                ),
            });
        }
        let key_len: EncodedLen = Arc::new(move |b: &[u8]| crate::json::encoded_len(&key_schema, b));
        let namespace_len = |meta: &StateMeta| -> Option<EncodedLen> {
            let schema = meta.namespace_schema.clone();
            schema
                .is_structural()
                .then(|| Arc::new(move |b: &[u8]| crate::json::encoded_len(&schema, b)) as EncodedLen)
        };
        out.push(state_rocksdb::incremental_to_canonical(
            h,
            storage,
            dir.path(),
            key_len,
            &namespace_len,
            &target,
        )?);
    }
    Ok(Some(Converted {
        storage: target,
        handles: out,
        _dir: dir,
    }))
}

/// Without the `rocksdb` feature: an error naming the feature when there is anything to
/// read.
#[cfg(not(feature = "rocksdb"))]
pub(crate) fn canonical(
    id: &str,
    handles: &[IncrementalKeyedHandle],
    _storage: &FsCheckpointStorage,
) -> Result<Option<Converted>> {
    if handles.is_empty() {
        return Ok(None);
    }
    Err(state_api::StateError::Unsupported {
        what: format!(
            "reading the entries of operator `{id}`: it holds RocksDB incremental (native) snapshots, which need \
             state-savepoint's `rocksdb` feature (`cargo install state-savepoint --features rocksdb`)"
        ),
    })
}
