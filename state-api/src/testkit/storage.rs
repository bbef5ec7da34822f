//! An in-memory file storage for tests: streams become named "files" that tests can
//! corrupt, truncate and measure.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Result, StateError};
use crate::snapshot::{CheckpointInput, CheckpointOutput, CheckpointStorage, StreamHandle};

#[derive(Debug, Default)]
struct Inner {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
    next: AtomicU64,
    bytes_read: Arc<AtomicU64>,
}

/// Checkpoint storage that keeps every stream as an in-memory file. Clones share files.
#[derive(Debug, Default, Clone)]
pub struct MemFiles {
    inner: Arc<Inner>,
}

impl MemFiles {
    fn files(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.inner.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Paths of every file.
    pub fn paths(&self) -> Vec<String> {
        self.files().keys().cloned().collect()
    }

    /// Length of a file.
    pub fn len_of(&self, path: &str) -> Option<usize> {
        self.files().get(path).map(Vec::len)
    }

    /// Flips every bit of the byte at `offset`.
    pub fn corrupt(&self, path: &str, offset: usize) {
        if let Some(b) = self.files().get_mut(path).and_then(|f| f.get_mut(offset)) {
            *b ^= 0xff;
        }
    }

    /// Cuts a file to `len` bytes.
    pub fn truncate(&self, path: &str, len: usize) {
        if let Some(f) = self.files().get_mut(path) {
            f.truncate(len);
        }
    }

    /// Replaces a file's content.
    pub fn replace(&self, path: &str, content: Vec<u8>) {
        self.files().insert(path.to_string(), content);
    }

    /// A copy of a file's content.
    pub fn content(&self, path: &str) -> Option<Vec<u8>> {
        self.files().get(path).cloned()
    }

    /// Bytes read through [`CheckpointStorage::open_input`] since the last reset.
    pub fn bytes_read(&self) -> u64 {
        self.inner.bytes_read.load(Ordering::SeqCst)
    }

    /// Resets [`Self::bytes_read`].
    pub fn reset_bytes_read(&self) {
        self.inner.bytes_read.store(0, Ordering::SeqCst);
    }
}

struct Output {
    storage: MemFiles,
    path: String,
    buf: Vec<u8>,
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CheckpointOutput for Output {
    fn finish(self: Box<Self>) -> Result<StreamHandle> {
        let handle = StreamHandle::File {
            path: self.path.clone(),
            size: self.buf.len() as u64,
            crc32c: crc32c::crc32c(&self.buf),
        };
        self.storage.files().insert(self.path, self.buf);
        Ok(handle)
    }
}

struct CountingReader {
    inner: std::io::Cursor<Vec<u8>>,
    counter: Arc<AtomicU64>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

impl Seek for CountingReader {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl CheckpointStorage for MemFiles {
    fn create_output(&self, checkpoint_id: u64, name: &str) -> Result<Box<dyn CheckpointOutput>> {
        let n = self.inner.next.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(Output {
            storage: self.clone(),
            path: format!("chk-{checkpoint_id}/{name}-{n}"),
            buf: Vec::new(),
        }))
    }

    fn open_input(&self, handle: &StreamHandle) -> Result<Box<dyn CheckpointInput>> {
        if let Some(inline) = handle.open_inline() {
            return Ok(inline);
        }
        let StreamHandle::File { path, .. } = handle else {
            return Err(StateError::InvalidArgument("unknown handle".into()));
        };
        let content = self.files().get(path).cloned().ok_or_else(|| StateError::Io {
            context: format!("opening `{path}`"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        })?;
        Ok(Box::new(CountingReader {
            inner: std::io::Cursor::new(content),
            counter: Arc::clone(&self.inner.bytes_read),
        }))
    }
}
