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

/// A checkpoint storage the conformance suite can damage and measure. Implemented by
/// [`MemFiles`]; storage crates implement it for their own storage to run the suite on it.
pub trait TestStorage: CheckpointStorage + Clone + 'static {
    /// The content of a file written by this storage (path as in its handles).
    fn content(&self, path: &str) -> Option<Vec<u8>>;
    /// Replaces the content of a file.
    fn replace(&self, path: &str, content: Vec<u8>);
    /// Bytes read through `open_input` since the last reset.
    fn bytes_read(&self) -> u64;
    /// Resets [`Self::bytes_read`].
    fn reset_bytes_read(&self);
    /// Flips every bit of the byte at `offset`.
    fn corrupt(&self, path: &str, offset: usize) {
        if let Some(mut c) = self.content(path) {
            if let Some(b) = c.get_mut(offset) {
                *b ^= 0xff;
            }
            self.replace(path, c);
        }
    }
    /// Cuts a file to `len` bytes.
    fn truncate(&self, path: &str, len: usize) {
        if let Some(mut c) = self.content(path) {
            c.truncate(len);
            self.replace(path, c);
        }
    }
}

impl TestStorage for MemFiles {
    fn content(&self, path: &str) -> Option<Vec<u8>> {
        self.files().get(path).cloned()
    }
    fn replace(&self, path: &str, content: Vec<u8>) {
        self.files().insert(path.to_string(), content);
    }
    fn bytes_read(&self) -> u64 {
        self.inner.bytes_read.load(Ordering::SeqCst)
    }
    fn reset_bytes_read(&self) {
        self.inner.bytes_read.store(0, Ordering::SeqCst);
    }
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

    fn discard(&self, handles: &[StreamHandle]) -> Result<()> {
        let mut files = self.files();
        for handle in handles {
            if let StreamHandle::File { path, .. } = handle {
                files.remove(path);
            }
        }
        Ok(())
    }
}
