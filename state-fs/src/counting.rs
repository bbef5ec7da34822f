//! [`CountingStore`]: an [`ObjectStore`] wrapper that counts the bytes read and written
//! through it, as OpenDAL's layers wrap an operator. [`FsCheckpointStorage`]
//! (crate::FsCheckpointStorage) wraps its store in one for `bytes_read`/`bytes_written`;
//! retries are opendal's `RetryLayer` on remote stores, and the tests' fault injection is
//! another wrapper of the same trait.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use state_api::{CheckpointInput, Result};

use crate::store::{ObjectStore, ObjectWriter};

/// Counts the bytes read from and written to the store it wraps (successful reads and
/// writes; a failed upload counts what was sent before it failed).
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl CountingStore {
    /// Wraps `inner`, with both counters at zero.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        CountingStore {
            inner,
            read: Arc::new(AtomicU64::new(0)),
            written: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

impl ObjectStore for CountingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn writer(&self, path: &str) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(CountingWriter {
            inner: self.inner.writer(path)?,
            counter: Arc::clone(&self.written),
        }))
    }
    fn write_all(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let n = bytes.len() as u64;
        self.inner.write_all(path, bytes)?;
        add(&self.written, true, n);
        Ok(())
    }
    fn reader(&self, path: &str) -> Result<Box<dyn CheckpointInput>> {
        Ok(Box::new(CountingInput {
            inner: self.inner.reader(path)?,
            counter: Arc::clone(&self.read),
        }))
    }
    fn create_new(&self, path: &str, bytes: Vec<u8>) -> Result<bool> {
        let n = bytes.len() as u64;
        let created = self.inner.create_new(path, bytes)?;
        if created {
            add(&self.written, true, n);
        }
        Ok(created)
    }
    fn read_all(&self, path: &str) -> Result<Vec<u8>> {
        let bytes = self.inner.read_all(path)?;
        add(&self.read, false, bytes.len() as u64);
        Ok(bytes)
    }
    fn size(&self, path: &str) -> Result<Option<u64>> {
        self.inner.size(path)
    }
    fn can_rename(&self) -> bool {
        self.inner.can_rename()
    }
    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.inner.rename(from, to)
    }
    fn delete(&self, path: &str) -> Result<()> {
        self.inner.delete(path)
    }
    fn delete_dir(&self, dir: &str) -> Result<()> {
        self.inner.delete_dir(dir)
    }
    fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.inner.list(dir)
    }
}

/// Counts `n` bytes moved to (`uploaded`) or from the store, here and in the
/// [`state_api::metrics`] counters.
fn add(counter: &AtomicU64, uploaded: bool, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
    state_api::metrics::storage_bytes(uploaded, n);
}

struct CountingWriter {
    inner: Box<dyn ObjectWriter>,
    counter: Arc<AtomicU64>,
}

impl ObjectWriter for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> Result<()> {
        self.inner.write(buf)?;
        add(&self.counter, true, buf.len() as u64);
        Ok(())
    }
    fn close(self: Box<Self>) -> Result<()> {
        self.inner.close()
    }
}

struct CountingInput {
    inner: Box<dyn CheckpointInput>,
    counter: Arc<AtomicU64>,
}

impl Read for CountingInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        add(&self.counter, false, n as u64);
        Ok(n)
    }
}

impl Seek for CountingInput {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OpendalStore;

    #[test]
    fn reads_and_writes_are_counted_and_failures_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let op = opendal::Operator::new(opendal::services::Fs::default().root(dir.path().to_str().unwrap())).unwrap();
        let store = CountingStore::new(Arc::new(OpendalStore::new(op, "test").unwrap()));
        store.write_all("a", vec![1; 10]).unwrap();
        let mut w = store.writer("b").unwrap();
        w.write(&[2; 5]).unwrap();
        w.close().unwrap();
        assert!(store.create_new("c", vec![3; 7]).unwrap());
        assert!(
            !store.create_new("c", vec![3; 7]).unwrap(),
            "an existing file is not written"
        );
        assert_eq!(store.bytes_written(), 22);
        assert_eq!(store.read_all("a").unwrap().len(), 10);
        let mut r = store.reader("b").unwrap();
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).unwrap();
        assert!(store.read_all("missing").is_err());
        assert_eq!(store.bytes_read(), 15);
    }
}
