//! The snapshot model: what a snapshot yields (handles), where its bytes go (a
//! [`CheckpointStorage`]), and the asynchronous part that writes them.
//!
//! A snapshot has two parts, as in Flink. The synchronous part
//! ([`crate::KeyedStateBackend::snapshot`]) runs on the task thread and only pins the
//! current state (copy-on-write, a RocksDB snapshot). The [`AsyncSnapshot`] it returns
//! can run on any thread while the task keeps processing; it writes streams to a
//! storage and yields a handle that a restore reads back.
//!
//! ```
//! # #[cfg(feature = "testkit")] {
//! # use state_api::testkit::MemFiles;
//! use state_api::{AsyncSnapshot, CheckpointStorage, StreamHandle};
//! let job: AsyncSnapshot<StreamHandle> = AsyncSnapshot::new(7, |storage| {
//!     let mut out = storage.create_output(7, "example")?;
//!     std::io::Write::write_all(&mut out, b"hello").map_err(|e| state_api::StateError::from_io("writing", e))?;
//!     out.finish()
//! });
//! let storage = MemFiles::default();
//! let handle = std::thread::spawn(move || job.run(&storage)).join().unwrap().unwrap();
//! assert_eq!(handle.size(), 5);
//! # }
//! ```

use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::error::StateError;
use crate::keygroup::KeyGroupRange;
use crate::schema::Schema;
use crate::state::StateMeta;

/// Where the bytes of one written stream are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamHandle {
    /// Small state kept inline (in the checkpoint metadata, or in memory).
    Inline {
        /// The stream's bytes.
        bytes: Vec<u8>,
    },
    /// A file (or object) of a checkpoint storage.
    File {
        /// The path, relative to the storage's root or absolute, as the storage defines it.
        path: String,
        /// Size in bytes.
        size: u64,
        /// CRC32C of the whole file.
        crc32c: u32,
    },
}

impl StreamHandle {
    /// Size of the stream in bytes.
    pub fn size(&self) -> u64 {
        match self {
            StreamHandle::Inline { bytes } => bytes.len() as u64,
            StreamHandle::File { size, .. } => *size,
        }
    }

    /// A name for error messages: the path, or `<inline N bytes>`.
    pub fn describe(&self) -> String {
        match self {
            StreamHandle::Inline { bytes } => format!("<inline {} bytes>", bytes.len()),
            StreamHandle::File { path, .. } => path.clone(),
        }
    }

    /// A reader over an inline handle's bytes; `None` for files. Storages call this first
    /// in [`CheckpointStorage::open_input`] so that inline state works everywhere.
    pub fn open_inline(&self) -> Option<Box<dyn CheckpointInput>> {
        match self {
            StreamHandle::Inline { bytes } => Some(Box::new(std::io::Cursor::new(bytes.clone()))),
            StreamHandle::File { .. } => None,
        }
    }
}

/// What a keyed backend's snapshot wrote: one stream in the canonical format covering a
/// key-group range, with the offset of each key group's section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedSnapshotHandle {
    /// The checkpoint the snapshot belongs to.
    pub checkpoint_id: u64,
    /// The key groups the stream holds.
    pub key_group_range: KeyGroupRange,
    /// Offset of each key group's section in the stream (index `kg - range.start()`).
    pub key_group_offsets: Vec<u64>,
    /// The stream.
    pub stream: StreamHandle,
}

impl KeyedSnapshotHandle {
    /// Bytes of the sections of the key groups of `range` that this stream holds: what a
    /// restore owning `range` reads besides the stream's header and index. (The last
    /// section of the stream is counted up to the stream's end, so its index and trailer
    /// are included.)
    pub fn section_bytes(&self, range: KeyGroupRange) -> u64 {
        let mine = range.intersection(&self.key_group_range);
        mine.iter()
            .filter_map(|kg| {
                let i = (kg - self.key_group_range.start()) as usize;
                let start = *self.key_group_offsets.get(i)?;
                let end = self.key_group_offsets.get(i + 1).copied().unwrap_or(self.stream.size());
                Some(end.saturating_sub(start))
            })
            .sum()
    }
}

/// A file that several incremental checkpoints may reference (a RocksDB SST file).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SharedFile {
    /// Path relative to the storage's root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC32C of the content.
    pub crc32c: u32,
}

/// A file of an incremental snapshot: its local name in the backend's directory and where
/// the storage keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// The file's name in the backend's working directory (`000042.sst`, `CURRENT`).
    pub local_name: String,
    /// Where the storage keeps it.
    pub stream: StreamHandle,
}

/// What an incremental snapshot of a keyed backend wrote (RocksDB's native format):
/// the immutable data files, shared with earlier checkpoints where unchanged, and the
/// small files describing the database, exclusive to this checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementalKeyedHandle {
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// The key groups the snapshot holds.
    pub key_group_range: KeyGroupRange,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// Type name of the key.
    pub key_type: String,
    /// Schema of the key.
    pub key_schema: Schema,
    /// Every state in the snapshot.
    pub states: Vec<StateMeta>,
    /// Data files shared between checkpoints (empty in a native full checkpoint).
    pub shared_files: Vec<SnapshotFile>,
    /// Files owned by this checkpoint only: MANIFEST, CURRENT, OPTIONS, and in a native
    /// full checkpoint the data files too.
    pub private_files: Vec<SnapshotFile>,
}

impl IncrementalKeyedHandle {
    /// Every file of the snapshot.
    pub fn files(&self) -> impl Iterator<Item = &SnapshotFile> {
        self.shared_files.iter().chain(self.private_files.iter())
    }

    /// Bytes of the snapshot's files.
    pub fn size(&self) -> u64 {
        self.files().map(|f| f.stream.size()).sum()
    }
}

/// How operator list state is redistributed when restoring at another parallelism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Redistribution {
    /// The elements of all old subtasks are split evenly among the new ones (Flink's `getListState`).
    EvenSplit,
    /// Every new subtask gets every element (Flink's `getUnionListState`).
    Union,
    /// Broadcast state: every subtask holds the same map; a restore takes one copy.
    Broadcast,
}

/// Which operator states a stream holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateInfo {
    /// The state name.
    pub name: String,
    /// Its redistribution mode.
    pub mode: Redistribution,
    /// Number of elements (list) or entries (broadcast map).
    pub elements: u64,
}

/// What an operator (non-keyed) backend's snapshot wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorSnapshotHandle {
    /// The checkpoint the snapshot belongs to.
    pub checkpoint_id: u64,
    /// The subtask that wrote it.
    pub subtask_index: u32,
    /// The states in the stream.
    pub states: Vec<OperatorStateInfo>,
    /// The stream.
    pub stream: StreamHandle,
}

/// A stream being written to a checkpoint storage.
pub trait CheckpointOutput: Write + Send {
    /// Completes the stream and returns where it is. Errors from the storage (a size
    /// limit, a failed upload) surface here or from `write`.
    fn finish(self: Box<Self>) -> Result<StreamHandle>;
}

/// A stream being read back from a checkpoint storage.
pub trait CheckpointInput: Read + Seek + Send {}
impl<T: Read + Seek + Send> CheckpointInput for T {}

/// Where snapshot streams go: memory, a directory, an object store. Backends write
/// through it without knowing which.
pub trait CheckpointStorage: Send + Sync + std::fmt::Debug {
    /// Opens a new stream for state owned by checkpoint `checkpoint_id`; `name` is a hint
    /// (a file-name stem) that storages may use.
    fn create_output(&self, checkpoint_id: u64, name: &str) -> Result<Box<dyn CheckpointOutput>>;
    /// Opens a stream that an earlier [`CheckpointOutput::finish`] returned.
    fn open_input(&self, handle: &StreamHandle) -> Result<Box<dyn CheckpointInput>>;

    /// Uploads local files for checkpoint `checkpoint_id`; `shared` files may be
    /// referenced by later checkpoints too (storages with a shared area put them there).
    /// The default streams each file through [`Self::create_output`].
    fn upload_local_files(
        &self,
        checkpoint_id: u64,
        files: &[(PathBuf, String)],
        shared: bool,
    ) -> Result<Vec<StreamHandle>> {
        let _ = shared;
        files
            .iter()
            .map(|(local, name)| {
                let io = |e| StateError::from_io(format!("uploading `{}`", local.display()), e);
                let mut f = std::fs::File::open(local).map_err(io)?;
                let mut out = self.create_output(checkpoint_id, name)?;
                std::io::copy(&mut f, &mut out).map_err(io)?;
                out.finish()
            })
            .collect()
    }

    /// Deletes streams this storage wrote for a checkpoint that will never complete (a
    /// cancelled asynchronous part). Inline streams need nothing; the default does
    /// nothing.
    fn discard(&self, handles: &[StreamHandle]) -> Result<()> {
        let _ = handles;
        Ok(())
    }

    /// Downloads streams to local files, verifying the size (and, for files, the CRC32C).
    fn download_to_local(&self, files: &[(StreamHandle, PathBuf)]) -> Result<()> {
        for (handle, local) in files {
            let mut input = self.open_input(handle)?;
            let mut bytes = Vec::with_capacity(handle.size() as usize);
            input
                .read_to_end(&mut bytes)
                .map_err(|e| StateError::from_io(format!("reading `{}`", handle.describe()), e))?;
            let crc_ok = match handle {
                StreamHandle::File { crc32c, .. } => crc32c::crc32c(&bytes) == *crc32c,
                StreamHandle::Inline { .. } => true,
            };
            if bytes.len() as u64 != handle.size() || !crc_ok {
                return Err(StateError::Corrupt {
                    source_name: handle.describe(),
                    section: "file".into(),
                    detail: "size or checksum mismatch".into(),
                    source: None,
                });
            }
            std::fs::write(local, &bytes)
                .map_err(|e| StateError::from_io(format!("writing `{}`", local.display()), e))?;
        }
        Ok(())
    }
}

/// The work of an asynchronous snapshot part.
type SnapshotJob<H> = Box<dyn FnOnce(&dyn CheckpointStorage) -> Result<H> + Send>;

/// The asynchronous part of a snapshot: writes what the synchronous part pinned.
/// `Send`, so it can run on another thread while the task keeps going.
#[must_use = "a snapshot is only written when its asynchronous part runs"]
pub struct AsyncSnapshot<H> {
    checkpoint_id: u64,
    job: SnapshotJob<H>,
    cancel: crate::cancel::CancelHandle,
}

impl<H> AsyncSnapshot<H> {
    /// Wraps the work of an asynchronous snapshot part.
    pub fn new(checkpoint_id: u64, job: impl FnOnce(&dyn CheckpointStorage) -> Result<H> + Send + 'static) -> Self {
        AsyncSnapshot {
            checkpoint_id,
            job: Box::new(job),
            cancel: crate::cancel::CancelHandle::default(),
        }
    }

    /// A handle that cancels this part, from any thread: it stops at its next write,
    /// deletes what it wrote and [`run`](Self::run) returns
    /// [`StateError::Cancelled`](crate::StateError::Cancelled).
    pub fn cancel_handle(&self) -> crate::cancel::CancelHandle {
        self.cancel.clone()
    }

    /// The checkpoint this snapshot belongs to.
    pub fn checkpoint_id(&self) -> u64 {
        self.checkpoint_id
    }

    /// The same part, recording its duration and size (or its failure) in
    /// [`crate::metrics`] when it runs.
    pub(crate) fn measured(self, backend: &'static str, kind: &'static str, size: fn(&H) -> u64) -> Self
    where
        H: 'static,
    {
        let job = self.job;
        AsyncSnapshot {
            checkpoint_id: self.checkpoint_id,
            job: Box::new(move |storage| {
                let started = std::time::Instant::now();
                let result = job(storage);
                crate::metrics::async_part(backend, kind, started.elapsed(), result.as_ref().ok().map(size));
                result
            }),
            cancel: self.cancel,
        }
    }

    /// Writes the snapshot to `storage` and returns its handle; if it was cancelled
    /// (before or while running), deletes what it wrote and fails with
    /// [`StateError::Cancelled`](crate::StateError::Cancelled).
    pub fn run(self, storage: &dyn CheckpointStorage) -> Result<H> {
        let id = self.checkpoint_id;
        self.cancel.check(id)?;
        let guarded = crate::cancel::CancellableStorage::new(storage, id, self.cancel.clone());
        let result = (self.job)(&guarded);
        if self.cancel.is_cancelled() {
            guarded.discard_written()?;
            return Err(crate::cancel::cancelled(id));
        }
        result
    }
}

impl<H> std::fmt::Debug for AsyncSnapshot<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSnapshot")
            .field("checkpoint_id", &self.checkpoint_id)
            .finish()
    }
}
