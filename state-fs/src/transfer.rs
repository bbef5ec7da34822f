//! Paths of new files, and concurrent, streaming uploads and downloads of whole files
//! (incremental checkpoints' SST files), each verified by size and CRC32C.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use state_api::{CheckpointStorage, Result, StateError, StreamHandle};

use crate::checkpoint_storage::FsCheckpointStorage;
use crate::layout::{SHARED_DIR, TASK_OWNED_DIR, check_relative_path, checkpoint_dir, file_stem, unique_suffix};
use crate::metadata::SharedFile;

impl FsCheckpointStorage {
    /// A path for a file of checkpoint `checkpoint_id` (exclusive), relative to this storage.
    pub fn exclusive_path(&self, checkpoint_id: u64, hint: &str) -> String {
        if self.is_savepoint() {
            format!("{}-{}", file_stem(hint), unique_suffix())
        } else {
            format!(
                "{}{}-{}",
                checkpoint_dir(checkpoint_id),
                file_stem(hint),
                unique_suffix()
            )
        }
    }

    /// A path in `shared/` for `name` (made unique), relative to this storage. On a
    /// savepoint storage, files stay in the savepoint directory.
    pub fn shared_path(&self, name: &str) -> String {
        if self.is_savepoint() {
            format!("{}-{}", file_stem(name), unique_suffix())
        } else {
            format!("{SHARED_DIR}{}-{}", file_stem(name), unique_suffix())
        }
    }

    /// A path in `taskowned/` for `name`, relative to this storage.
    pub fn task_owned_path(&self, name: &str) -> String {
        format!("{TASK_OWNED_DIR}{}", file_stem(name))
    }

    /// Uploads local files to the given relative paths, `transfer_concurrency` at a time,
    /// streaming each file. Returns each file's size and CRC32C, in input order.
    pub fn upload_files(&self, files: &[(PathBuf, String)]) -> Result<Vec<SharedFile>> {
        self.parallel(files, |(local, rel)| {
            check_relative_path(rel)?;
            let mut f = std::fs::File::open(local)
                .map_err(|e| StateError::from_io(format!("opening `{}`", local.display()), e))?;
            let mut w = self.inner.store.writer(&self.full(rel))?;
            let mut buf = vec![0u8; 1024 * 1024];
            let (mut size, mut crc) = (0u64, 0u32);
            loop {
                let n = f
                    .read(&mut buf)
                    .map_err(|e| StateError::from_io(format!("reading `{}`", local.display()), e))?;
                if n == 0 {
                    break;
                }
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                size += n as u64;
                w.write(&buf[..n])?;
            }
            w.close()?;
            Ok(SharedFile {
                path: rel.clone(),
                size,
                crc32c: crc,
            })
        })
    }

    /// Downloads files to local paths, `transfer_concurrency` at a time, streaming each
    /// and verifying its size and CRC32C; a mismatch is an error naming the file.
    pub fn download_files(&self, files: &[(SharedFile, PathBuf)]) -> Result<()> {
        self.parallel(files, |(file, local)| {
            let mut input = self.open_input(&StreamHandle::File {
                path: file.path.clone(),
                size: file.size,
                crc32c: file.crc32c,
            })?;
            let mut out = std::fs::File::create(local)
                .map_err(|e| StateError::from_io(format!("creating `{}`", local.display()), e))?;
            let mut buf = vec![0u8; 1024 * 1024];
            let (mut size, mut crc) = (0u64, 0u32);
            loop {
                let n = input
                    .read(&mut buf)
                    .map_err(|e| StateError::from_io(format!("reading `{}`", file.path), e))?;
                if n == 0 {
                    break;
                }
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                size += n as u64;
                out.write_all(&buf[..n])
                    .map_err(|e| StateError::from_io(format!("writing `{}`", local.display()), e))?;
            }
            if size != file.size || crc != file.crc32c {
                return Err(StateError::Corrupt {
                    source_name: file.path.clone(),
                    section: "file".into(),
                    detail: format!(
                        "checksum or size mismatch ({size} bytes, crc {crc:08x}; expected {} bytes, crc {:08x})",
                        file.size, file.crc32c
                    ),
                    source: None,
                });
            }
            Ok(())
        })
        .map(|_| ())
    }

    /// Reads a whole file and verifies its CRC32C.
    pub fn read_verified(&self, handle: &StreamHandle) -> Result<Vec<u8>> {
        let mut input = self.open_input(handle)?;
        let mut bytes = Vec::with_capacity(handle.size() as usize);
        input
            .read_to_end(&mut bytes)
            .map_err(|e| StateError::from_io(format!("reading `{}`", handle.describe()), e))?;
        if let StreamHandle::File { path, crc32c, .. } = handle
            && crc32c::crc32c(&bytes) != *crc32c
        {
            return Err(StateError::Corrupt {
                source_name: path.clone(),
                section: "file".into(),
                detail: "checksum mismatch".into(),
                source: None,
            });
        }
        Ok(bytes)
    }

    fn parallel<T: Sync, R: Send>(&self, items: &[T], work: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<R>>>> = Mutex::new((0..items.len()).map(|_| None).collect());
        let workers = self.inner.options.transfer_concurrency().min(items.len()).max(1);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        let r = work(item);
                        let failed = r.is_err();
                        if let Ok(mut all) = results.lock() {
                            all[i] = Some(r);
                        }
                        if failed {
                            // Stop handing out work; others finish their current item.
                            next.store(items.len(), Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let all = results.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(items.len());
        for r in all {
            match r {
                Some(Ok(v)) => out.push(v),
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        if out.len() != items.len() {
            return Err(StateError::storage_message("transferring files", "a transfer failed"));
        }
        Ok(out)
    }
}
