//! The `_metadata` file of a checkpoint or savepoint: every handle of the snapshot,
//! small state inline, the shared files it references, and engine data.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
pub use state_api::SharedFile;
use state_api::{
    IncrementalKeyedHandle, KeyedSnapshotHandle, OperatorSnapshotHandle, Result, StateError, StreamHandle,
};

const MAGIC: [u8; 8] = *b"\x89RSMETA\n";
const REGISTRY_MAGIC: [u8; 8] = *b"\x89RSSREG\n";
const VERSION: u32 = 1;

/// Whether a snapshot is a checkpoint (owned by the storage, subject to retention) or a
/// savepoint (owned by the user, self-contained, never deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// A checkpoint.
    Checkpoint,
    /// A savepoint.
    Savepoint,
}

/// Everything needed to restore a checkpoint or savepoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// The job.
    pub job_id: String,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// When the checkpoint was triggered (milliseconds since the epoch).
    pub timestamp_millis: i64,
    /// Keyed state of every subtask (canonical format).
    pub keyed: Vec<KeyedSnapshotHandle>,
    /// Keyed state of every subtask (incremental, backend-native).
    pub incremental: Vec<IncrementalKeyedHandle>,
    /// Operator state of every subtask.
    pub operator: Vec<OperatorSnapshotHandle>,
    /// Timers of every subtask (canonical format, written by `state-timers`).
    pub timers: Vec<KeyedSnapshotHandle>,
    /// Shared files this checkpoint references.
    pub shared: Vec<SharedFile>,
    /// Engine data (source positions, timers, ...), by name.
    pub extra: BTreeMap<String, Vec<u8>>,
}

impl CheckpointMetadata {
    /// Empty metadata for checkpoint `checkpoint_id` of `job_id`.
    pub fn new(job_id: &str, checkpoint_id: u64, kind: SnapshotKind) -> Self {
        CheckpointMetadata {
            checkpoint_id,
            job_id: job_id.to_string(),
            kind,
            timestamp_millis: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            keyed: Vec::new(),
            incremental: Vec::new(),
            operator: Vec::new(),
            timers: Vec::new(),
            shared: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Every exclusive stream handle (keyed, operator, timers, private files of
    /// incremental snapshots).
    pub fn streams(&self) -> impl Iterator<Item = &StreamHandle> {
        self.keyed
            .iter()
            .map(|h| &h.stream)
            .chain(self.operator.iter().map(|h| &h.stream))
            .chain(self.timers.iter().map(|h| &h.stream))
            .chain(
                self.incremental
                    .iter()
                    .flat_map(|h| h.private_files.iter().map(|f| &f.stream)),
            )
    }

    /// Adds an incremental snapshot; its data files become shared-file references of
    /// this checkpoint (reference-counted by the storage's registry).
    pub fn add_incremental(&mut self, handle: IncrementalKeyedHandle) {
        for f in &handle.shared_files {
            if let StreamHandle::File { path, size, crc32c } = &f.stream {
                let shared = SharedFile {
                    path: path.clone(),
                    size: *size,
                    crc32c: *crc32c,
                };
                if !self.shared.contains(&shared) {
                    self.shared.push(shared);
                }
            }
        }
        self.incremental.push(handle);
    }

    /// Paths of every file the metadata references (exclusive and shared).
    pub fn files(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .streams()
            .filter_map(|s| match s {
                StreamHandle::File { path, .. } => Some(path.clone()),
                StreamHandle::Inline { .. } => None,
            })
            .collect();
        out.extend(self.shared.iter().map(|s| s.path.clone()));
        out.sort();
        out.dedup();
        out
    }

    /// Bytes of state: inline and in files.
    pub fn state_size(&self) -> u64 {
        self.streams().map(StreamHandle::size).sum::<u64>() + self.shared.iter().map(|s| s.size).sum::<u64>()
    }

    /// Encodes: magic, version, length, postcard body, CRC32C.
    pub fn encode(&self) -> Result<Vec<u8>> {
        frame(&MAGIC, self, "checkpoint metadata")
    }

    /// Decodes and verifies; `name` names the file in errors.
    pub fn decode(bytes: &[u8], name: &str) -> Result<Self> {
        unframe(&MAGIC, bytes, name, "checkpoint metadata")
    }
}

/// Reference counts of shared files: which retained checkpoints use each file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedRegistry {
    refs: BTreeMap<String, BTreeSet<u64>>,
}

impl SharedRegistry {
    /// Records that checkpoint `id` references `paths`.
    pub fn register(&mut self, id: u64, paths: impl IntoIterator<Item = String>) {
        for p in paths {
            self.refs.entry(p).or_default().insert(id);
        }
    }

    /// Drops checkpoint `id`'s references; returns the files nothing references any more.
    pub fn release(&mut self, id: u64) -> Vec<String> {
        let mut unreferenced = Vec::new();
        self.refs.retain(|path, ids| {
            ids.remove(&id);
            if ids.is_empty() {
                unreferenced.push(path.clone());
                false
            } else {
                true
            }
        });
        unreferenced
    }

    /// Whether any retained checkpoint references `path`.
    pub fn is_referenced(&self, path: &str) -> bool {
        self.refs.contains_key(path)
    }

    /// Number of checkpoints referencing `path`.
    pub fn ref_count(&self, path: &str) -> usize {
        self.refs.get(path).map_or(0, BTreeSet::len)
    }

    /// Every referenced path.
    pub fn paths(&self) -> impl Iterator<Item = &String> {
        self.refs.keys()
    }

    /// Encodes like the metadata.
    pub fn encode(&self) -> Result<Vec<u8>> {
        frame(&REGISTRY_MAGIC, self, "shared registry")
    }

    /// Decodes and verifies.
    pub fn decode(bytes: &[u8], name: &str) -> Result<Self> {
        unframe(&REGISTRY_MAGIC, bytes, name, "shared registry")
    }
}

fn frame<T: Serialize>(magic: &[u8; 8], value: &T, what: &'static str) -> Result<Vec<u8>> {
    let body = postcard::to_stdvec(value).map_err(|e| StateError::Serialization {
        name: what.into(),
        role: "body",
        detail: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(body.len() + 24);
    out.extend_from_slice(magic);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    Ok(out)
}

fn unframe<T: serde::de::DeserializeOwned>(magic: &[u8; 8], bytes: &[u8], name: &str, what: &str) -> Result<T> {
    let corrupt = |detail: String| StateError::Corrupt {
        source_name: name.to_string(),
        section: what.to_string(),
        detail,
    };
    if bytes.len() < 20 {
        return Err(StateError::Truncated {
            source_name: name.to_string(),
            section: what.to_string(),
        });
    }
    if bytes[..8] != magic[..] {
        return Err(corrupt("wrong magic bytes (not a file of this kind)".into()));
    }
    let version = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version == 0 || version > VERSION {
        return Err(StateError::UnsupportedVersion {
            source_name: name.to_string(),
            found: version,
            supported: VERSION,
        });
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[12..20]);
    let len = u64::from_be_bytes(len_bytes);
    let end = usize::try_from(len).ok().and_then(|l| l.checked_add(20));
    let Some(end) = end.filter(|&e| e.checked_add(4).is_some_and(|t| t <= bytes.len())) else {
        return Err(StateError::Truncated {
            source_name: name.to_string(),
            section: what.to_string(),
        });
    };
    if end + 4 != bytes.len() {
        return Err(corrupt(format!("{} bytes after the end", bytes.len() - end - 4)));
    }
    let body = &bytes[20..end];
    let crc = u32::from_be_bytes([bytes[end], bytes[end + 1], bytes[end + 2], bytes[end + 3]]);
    if crc32c::crc32c(body) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    postcard::from_bytes(body).map_err(|e| corrupt(format!("does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CheckpointMetadata {
        let mut m = CheckpointMetadata::new("job", 3, SnapshotKind::Checkpoint);
        m.shared.push(SharedFile {
            path: "shared/a.sst".into(),
            size: 10,
            crc32c: 1,
        });
        m.extra.insert("source".into(), vec![1, 2, 3]);
        m
    }

    #[test]
    fn metadata_round_trips_and_every_damage_is_an_error() {
        let m = sample();
        let bytes = m.encode().unwrap();
        assert_eq!(CheckpointMetadata::decode(&bytes, "x").unwrap(), m);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x55;
            assert!(
                CheckpointMetadata::decode(&b, "chk-3/_metadata").is_err(),
                "flip at {i}"
            );
        }
        for cut in 0..bytes.len() {
            let err = CheckpointMetadata::decode(&bytes[..cut], "chk-3/_metadata").unwrap_err();
            assert!(err.to_string().contains("chk-3/_metadata"), "{err}");
        }
        assert!(
            SharedRegistry::decode(&bytes, "r").is_err(),
            "a metadata file is not a registry"
        );
    }

    #[test]
    fn registry_counts_references() {
        let mut r = SharedRegistry::default();
        r.register(1, ["shared/a".to_string(), "shared/b".to_string()]);
        r.register(2, ["shared/b".to_string(), "shared/c".to_string()]);
        assert_eq!(r.ref_count("shared/b"), 2);
        assert_eq!(r.release(1), vec!["shared/a".to_string()]);
        assert!(r.is_referenced("shared/b"));
        let mut gone = r.release(2);
        gone.sort();
        assert_eq!(gone, vec!["shared/b".to_string(), "shared/c".to_string()]);
        let bytes = r.encode().unwrap();
        assert_eq!(SharedRegistry::decode(&bytes, "r").unwrap(), r);
    }
}
