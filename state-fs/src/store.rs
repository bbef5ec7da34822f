//! The object-store operations the checkpoint storage needs, implemented once for any
//! `opendal` operator. The trait is public so that tests (and users) can wrap a store,
//! for example to inject faults.

use std::io::Write;
use std::sync::Arc;

use opendal::blocking;
use state_api::{CheckpointInput, Result, StateError};

/// A streaming upload. Nothing is visible at the path until `close` succeeds on stores
/// whose single PUT is atomic (S3); on a file system the file grows while written, which
/// is why completion is marked by `_metadata` alone.
pub trait ObjectWriter: Send {
    /// Appends bytes.
    fn write(&mut self, buf: &[u8]) -> Result<()>;
    /// Completes the upload.
    fn close(self: Box<Self>) -> Result<()>;
}

/// What the checkpoint storage needs from a file system or object store.
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// A human-readable location for errors and logs (`file:///data`, `s3://bucket/prefix`).
    fn describe(&self) -> String;
    /// Starts a streaming upload to `path`.
    fn writer(&self, path: &str) -> Result<Box<dyn ObjectWriter>>;
    /// Writes `bytes` to `path` in one request.
    fn write_all(&self, path: &str, bytes: Vec<u8>) -> Result<()>;
    /// Opens `path` for reading with seeks (ranged reads on object stores).
    fn reader(&self, path: &str) -> Result<Box<dyn CheckpointInput>>;
    /// Writes `bytes` to `path` only if nothing is there: `Ok(true)` when this call
    /// created it, `Ok(false)` when it already existed. Atomic where the store has a
    /// conditional create (a local file system's `O_EXCL`, S3's `If-None-Match: *`);
    /// elsewhere (HDFS) a check followed by a write, which a concurrent creator can race.
    fn create_new(&self, path: &str, bytes: Vec<u8>) -> Result<bool>;
    /// Reads all of `path`.
    fn read_all(&self, path: &str) -> Result<Vec<u8>>;
    /// Size of `path`, or `None` if it does not exist.
    fn size(&self, path: &str) -> Result<Option<u64>>;
    /// Whether `rename` is supported (file systems, HDFS; not S3).
    fn can_rename(&self) -> bool;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> Result<()>;
    /// Deletes a file (missing is fine).
    fn delete(&self, path: &str) -> Result<()>;
    /// Deletes a directory and everything in it (missing is fine).
    fn delete_dir(&self, dir: &str) -> Result<()>;
    /// Names directly under `dir` (directories end with `/`); empty if `dir` is missing.
    fn list(&self, dir: &str) -> Result<Vec<String>>;
}

/// Writes `bytes` so that `path` appears complete or not at all: write-then-rename
/// where the store can rename, a single PUT otherwise (atomic on object stores).
pub fn write_atomically(store: &dyn ObjectStore, path: &str, bytes: Vec<u8>) -> Result<()> {
    if store.can_rename() {
        let tmp = format!("{path}{}", crate::layout::IN_PROGRESS);
        store.write_all(&tmp, bytes)?;
        store.rename(&tmp, path)
    } else {
        store.write_all(path, bytes)
    }
}

/// An object-store error with what was being done: a missing object is an I/O
/// `NotFound` (so damage checks see it), anything else a storage error, retryable when
/// opendal calls it temporary; either way opendal's error stays the source.
fn storage_err(context: String, e: opendal::Error) -> StateError {
    if e.kind() == opendal::ErrorKind::NotFound {
        return StateError::Io {
            context,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, e),
        };
    }
    let retryable = e.is_temporary();
    StateError::storage(context, e, retryable)
}

/// An [`ObjectStore`] over an `opendal` operator, driven by a private tokio runtime.
pub struct OpendalStore {
    op: blocking::Operator,
    location: String,
    // Keeps the runtime that the blocking operator drives alive.
    _runtime: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for OpendalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpendalStore")
            .field("location", &self.location)
            .finish()
    }
}

impl OpendalStore {
    /// Wraps an operator; `location` names it in errors.
    pub fn new(op: opendal::Operator, location: impl Into<String>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("state-fs-io")
            .enable_all()
            .build()
            .map_err(|e| StateError::from_io("starting the I/O runtime", e))?;
        let op = {
            let _guard = runtime.enter();
            blocking::Operator::new(op).map_err(|e| storage_err("creating a blocking operator".into(), e))?
        };
        Ok(OpendalStore {
            op,
            location: location.into(),
            _runtime: Arc::new(runtime),
        })
    }
}

struct OpendalWriter {
    inner: blocking::StdWriter,
    path: String,
}

impl ObjectWriter for OpendalWriter {
    fn write(&mut self, buf: &[u8]) -> Result<()> {
        self.inner
            .write_all(buf)
            .map_err(|e| StateError::from_io(format!("writing `{}`", self.path), e))
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.inner
            .close()
            .map_err(|e| StateError::from_io(format!("completing `{}`", self.path), e))
    }
}

impl ObjectStore for OpendalStore {
    fn describe(&self) -> String {
        self.location.clone()
    }

    fn writer(&self, path: &str) -> Result<Box<dyn ObjectWriter>> {
        let w = self
            .op
            .writer(path)
            .map_err(|e| storage_err(format!("creating `{path}`"), e))?;
        Ok(Box::new(OpendalWriter {
            inner: w.into_std_write(),
            path: path.to_string(),
        }))
    }

    fn write_all(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        self.op
            .write(path, bytes)
            .map(|_| ())
            .map_err(|e| storage_err(format!("writing `{path}`"), e))
    }

    fn create_new(&self, path: &str, bytes: Vec<u8>) -> Result<bool> {
        if !self.op.info().capability().write_with_if_not_exists {
            if self.size(path)?.is_some() {
                return Ok(false);
            }
            self.write_all(path, bytes)?;
            return Ok(true);
        }
        let opts = opendal::options::WriteOptions {
            if_not_exists: true,
            ..Default::default()
        };
        match self.op.write_options(path, bytes, opts) {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    opendal::ErrorKind::ConditionNotMatch | opendal::ErrorKind::AlreadyExists
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(storage_err(format!("creating `{path}`"), e)),
        }
    }

    fn reader(&self, path: &str) -> Result<Box<dyn CheckpointInput>> {
        let size = self.size(path)?.ok_or_else(|| StateError::Io {
            context: format!("opening `{path}`"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
        })?;
        let r = self
            .op
            .reader(path)
            .and_then(|r| r.into_std_read(0..size))
            .map_err(|e| storage_err(format!("opening `{path}`"), e))?;
        Ok(Box::new(r))
    }

    fn read_all(&self, path: &str) -> Result<Vec<u8>> {
        self.op
            .read(path)
            .map(|b| b.to_vec())
            .map_err(|e| storage_err(format!("reading `{path}`"), e))
    }

    fn size(&self, path: &str) -> Result<Option<u64>> {
        match self.op.stat(path) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage_err(format!("inspecting `{path}`"), e)),
        }
    }

    fn can_rename(&self) -> bool {
        self.op.info().capability().rename
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.op
            .rename(from, to)
            .map_err(|e| storage_err(format!("renaming `{from}` to `{to}`"), e))
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.op
            .delete(path)
            .map_err(|e| storage_err(format!("deleting `{path}`"), e))
    }

    fn delete_dir(&self, dir: &str) -> Result<()> {
        let opts = opendal::options::DeleteOptions {
            recursive: true,
            ..Default::default()
        };
        self.op
            .delete_options(dir, opts)
            .or_else(|e| {
                if e.kind() == opendal::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| storage_err(format!("deleting `{dir}`"), e))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        match self.op.list(dir) {
            Ok(entries) => Ok(entries
                .into_iter()
                .map(|e| e.name().to_string())
                .filter(|n| !n.is_empty() && n != "/" && n != dir)
                .collect()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(storage_err(format!("listing `{dir}`"), e)),
        }
    }
}
