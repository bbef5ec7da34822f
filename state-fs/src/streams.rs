//! The [`CheckpointStorage`] implementation: streams written to files (or inlined into
//! the metadata when small) and read back.

use std::io::Write;
use std::path::PathBuf;

use state_api::{CheckpointInput, CheckpointOutput, CheckpointStorage, Result, StateError, StreamHandle};

use crate::checkpoint_storage::FsCheckpointStorage;
use crate::metadata::SharedFile;
use crate::store::ObjectWriter;

/// A stream being written: buffered in memory up to the inline threshold, then streamed
/// to a file.
struct FsOutput {
    storage: FsCheckpointStorage,
    rel: String,
    buf: Vec<u8>,
    writer: Option<Box<dyn ObjectWriter>>,
    size: u64,
    crc: u32,
}

impl Write for FsOutput {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.size += data.len() as u64;
        if self.writer.is_none() && self.buf.len() + data.len() < self.storage.inner.options.inline_threshold().max(1) {
            self.buf.extend_from_slice(data);
            return Ok(data.len());
        }
        let result = (|| {
            if self.writer.is_none() {
                let mut w = self.storage.inner.store.writer(&self.storage.full(&self.rel))?;
                if !self.buf.is_empty() {
                    w.write(&self.buf)?;
                    self.buf = Vec::new();
                }
                self.writer = Some(w);
            }
            match self.writer.as_mut() {
                Some(w) => w.write(data),
                None => Ok(()),
            }
        })();
        result.map(|()| data.len()).map_err(StateError::into_io)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CheckpointOutput for FsOutput {
    fn finish(self: Box<Self>) -> Result<StreamHandle> {
        let this = *self;
        match this.writer {
            None => Ok(StreamHandle::Inline { bytes: this.buf }),
            Some(w) => {
                w.close()?;
                Ok(StreamHandle::File {
                    path: this.rel,
                    size: this.size,
                    crc32c: this.crc,
                })
            }
        }
    }
}

impl CheckpointStorage for FsCheckpointStorage {
    /// Uploads concurrently (`transfer_concurrency` at a time), streaming; shared files go
    /// to `shared/`, the others into the checkpoint's directory. Never inlined.
    fn upload_local_files(
        &self,
        checkpoint_id: u64,
        files: &[(PathBuf, String)],
        shared: bool,
    ) -> Result<Vec<StreamHandle>> {
        let targets: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(local, name)| {
                let rel = if shared {
                    self.shared_path(name)
                } else {
                    self.exclusive_path(checkpoint_id, name)
                };
                (local.clone(), rel)
            })
            .collect();
        Ok(self
            .upload_files(&targets)?
            .into_iter()
            .map(|f| StreamHandle::File {
                path: f.path,
                size: f.size,
                crc32c: f.crc32c,
            })
            .collect())
    }

    /// Downloads concurrently, verifying sizes and CRC32C.
    fn download_to_local(&self, files: &[(StreamHandle, PathBuf)]) -> Result<()> {
        let mut remote = Vec::new();
        for (handle, local) in files {
            match handle {
                StreamHandle::File { path, size, crc32c } => remote.push((
                    SharedFile {
                        path: path.clone(),
                        size: *size,
                        crc32c: *crc32c,
                    },
                    local.clone(),
                )),
                StreamHandle::Inline { bytes } => std::fs::write(local, bytes)
                    .map_err(|e| StateError::from_io(format!("writing `{}`", local.display()), e))?,
            }
        }
        self.download_files(&remote)
    }

    /// Deletes the private files among `handles` (a cancelled part's); shared files
    /// are left to the reference-counted cleanup, since another pending checkpoint may
    /// name the same file.
    fn discard(&self, handles: &[StreamHandle]) -> Result<()> {
        for handle in handles {
            if let StreamHandle::File { path, .. } = handle
                && !path.starts_with(crate::layout::SHARED_DIR)
            {
                crate::layout::check_relative_path(path)?;
                self.inner.store.delete(&self.full(path))?;
            }
        }
        Ok(())
    }

    fn create_output(&self, checkpoint_id: u64, name: &str) -> Result<Box<dyn CheckpointOutput>> {
        Ok(Box::new(FsOutput {
            storage: self.clone(),
            rel: self.exclusive_path(checkpoint_id, name),
            buf: Vec::new(),
            writer: None,
            size: 0,
            crc: 0,
        }))
    }

    /// Opens a stream. The file's size is checked against the handle (a missing or
    /// truncated file is an error naming it); content is verified by the format's
    /// per-section checksums as it is read (use [`FsCheckpointStorage::read_verified`]
    /// for a whole-file CRC check).
    fn open_input(&self, handle: &StreamHandle) -> Result<Box<dyn CheckpointInput>> {
        if let Some(inline) = handle.open_inline() {
            return Ok(inline);
        }
        let StreamHandle::File { path, size, .. } = handle else {
            return Err(StateError::InvalidArgument("unsupported stream handle".into()));
        };
        self.check_file(path, *size)?;
        let input = self.inner.store.reader(&self.full(path))?;
        tracing::debug!(path = %path, size, "opened checkpoint file");
        Ok(input)
    }
}
