//! Cancelling the asynchronous part of a snapshot: a [`CancelHandle`] stops it at its
//! next write, and what it already wrote is discarded.
//!
//! Every asynchronous part (keyed, operator, timers, incremental uploads) runs through
//! [`AsyncSnapshot::run`](crate::AsyncSnapshot::run), which writes through a storage
//! wrapper that checks the handle before every stream, every write and every upload,
//! and remembers the streams that were finished. Once cancelled, the part fails with
//! [`StateError::Cancelled`] and the finished private streams are discarded with
//! [`CheckpointStorage::discard`]. Shared files (incremental uploads) are left to the
//! storage's reference-counted cleanup, since another pending checkpoint may name the
//! same file; a stream cut mid-write is left to the storage's cleanup of checkpoints
//! that never completed, as after any failed part.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Result, StateError};
use crate::snapshot::{CheckpointInput, CheckpointOutput, CheckpointStorage, StreamHandle};

/// Stops an asynchronous snapshot part; cheap to clone and to send to another thread.
#[derive(Debug, Clone, Default)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    /// Asks the part to stop. It stops at its next write, deletes what it wrote and
    /// reports [`StateError::Cancelled`]; a part that already finished is not affected.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    pub(crate) fn check(&self, checkpoint_id: u64) -> Result<()> {
        if self.is_cancelled() {
            return Err(cancelled(checkpoint_id));
        }
        Ok(())
    }
}

pub(crate) fn cancelled(checkpoint_id: u64) -> StateError {
    StateError::Cancelled {
        what: format!("the asynchronous part of checkpoint {checkpoint_id}"),
    }
}

/// The storage an asynchronous part writes through while it can be cancelled.
#[derive(Debug)]
pub(crate) struct CancellableStorage<'a> {
    inner: &'a dyn CheckpointStorage,
    checkpoint_id: u64,
    cancel: CancelHandle,
    /// Private streams finished so far (discarded when the part is cancelled).
    written: Arc<Mutex<Vec<StreamHandle>>>,
}

impl<'a> CancellableStorage<'a> {
    pub(crate) fn new(inner: &'a dyn CheckpointStorage, checkpoint_id: u64, cancel: CancelHandle) -> Self {
        CancellableStorage {
            inner,
            checkpoint_id,
            cancel,
            written: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Discards the private streams finished so far.
    pub(crate) fn discard_written(&self) -> Result<()> {
        let written = std::mem::take(&mut *self.written.lock().unwrap_or_else(|e| e.into_inner()));
        self.inner.discard(&written)
    }

    fn record(&self, handles: &[StreamHandle]) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(handles.iter().cloned());
    }
}

impl CheckpointStorage for CancellableStorage<'_> {
    fn create_output(&self, checkpoint_id: u64, name: &str) -> Result<Box<dyn CheckpointOutput>> {
        self.cancel.check(self.checkpoint_id)?;
        Ok(Box::new(CancellableOutput {
            inner: self.inner.create_output(checkpoint_id, name)?,
            checkpoint_id: self.checkpoint_id,
            cancel: self.cancel.clone(),
            written: Arc::clone(&self.written),
        }))
    }

    fn open_input(&self, handle: &StreamHandle) -> Result<Box<dyn CheckpointInput>> {
        self.inner.open_input(handle)
    }

    fn upload_local_files(
        &self,
        checkpoint_id: u64,
        files: &[(PathBuf, String)],
        shared: bool,
    ) -> Result<Vec<StreamHandle>> {
        self.cancel.check(self.checkpoint_id)?;
        let handles = self.inner.upload_local_files(checkpoint_id, files, shared)?;
        if !shared {
            self.record(&handles);
        }
        self.cancel.check(self.checkpoint_id)?;
        Ok(handles)
    }

    fn download_to_local(&self, files: &[(StreamHandle, PathBuf)]) -> Result<()> {
        self.inner.download_to_local(files)
    }

    fn discard(&self, handles: &[StreamHandle]) -> Result<()> {
        self.inner.discard(handles)
    }
}

struct CancellableOutput {
    inner: Box<dyn CheckpointOutput>,
    checkpoint_id: u64,
    cancel: CancelHandle,
    written: Arc<Mutex<Vec<StreamHandle>>>,
}

impl Write for CancellableOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.cancel.check(self.checkpoint_id).map_err(StateError::into_io)?;
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl CheckpointOutput for CancellableOutput {
    fn finish(self: Box<Self>) -> Result<StreamHandle> {
        self.cancel.check(self.checkpoint_id)?;
        let handle = self.inner.finish()?;
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle.clone());
        Ok(handle)
    }
}
