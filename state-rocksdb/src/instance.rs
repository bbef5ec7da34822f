//! The open database and what must outlive it, dropped in one explicit order.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use rocksdb::{DB, Options};
use state_api::StateError;

/// A RocksDB error with what was being done; busy, try-again and timed-out are retryable.
pub(crate) fn db_err(context: impl Into<String>, e: rocksdb::Error) -> StateError {
    use rocksdb::ErrorKind as K;
    let retryable = matches!(e.kind(), K::Busy | K::TryAgain | K::TimedOut | K::Incomplete);
    StateError::storage(context, e, retryable)
}

/// Deletes the instance directory when dropped: after the database is closed and after
/// every snapshot's asynchronous part that still reads from it (each holds an `Arc` of
/// it): dropping a backend never pulls the files from under a running upload.
pub(crate) struct DirGuard(pub(crate) PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) static INSTANCE: AtomicU64 = AtomicU64::new(0);

/// The open database of one backend instance and everything that must outlive it.
///
/// Dropped in this order, by [`Drop`] rather than by field order:
/// 1. the database is closed;
/// 2. the options of column families created after open are dropped: rust-rocksdb's
///    `create_cf` does not keep them alive, but RocksDB calls their merge operator and
///    compaction filter for as long as the database is open;
/// 3. this instance's hold on the working directory is released; the directory is
///    deleted when the last asynchronous snapshot part that reads from it finishes too.
pub(crate) struct Instance {
    db: Option<DB>,
    cf_options: Vec<Options>,
    dir: Option<Arc<DirGuard>>,
}

impl Instance {
    /// `db`, opened in the working directory that `dir` deletes.
    pub(crate) fn new(db: DB, dir: DirGuard) -> Self {
        Instance {
            db: Some(db),
            cf_options: Vec::new(),
            dir: Some(Arc::new(dir)),
        }
    }

    /// Keeps the options of a column family created after open alive until the
    /// database is closed.
    pub(crate) fn keep_options(&mut self, options: Options) {
        self.cf_options.push(options);
    }

    /// A hold on the working directory, for an asynchronous snapshot part that reads
    /// from it after the backend may have been dropped.
    pub(crate) fn hold_dir(&self) -> Option<Arc<DirGuard>> {
        self.dir.clone()
    }
}

impl std::ops::Deref for Instance {
    type Target = DB;
    fn deref(&self) -> &DB {
        // `db` is only `None` inside `drop`.
        self.db
            .as_ref()
            .unwrap_or_else(|| unreachable!("the database is open until the instance is dropped"))
    }
}

impl std::ops::DerefMut for Instance {
    fn deref_mut(&mut self) -> &mut DB {
        self.db
            .as_mut()
            .unwrap_or_else(|| unreachable!("the database is open until the instance is dropped"))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        drop(self.db.take());
        self.cf_options.clear();
        drop(self.dir.take());
    }
}
