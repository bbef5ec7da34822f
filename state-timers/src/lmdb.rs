//! The LMDB timer store (via `heed`): timers on disk, ordered by their key bytes, for
//! timer counts beyond memory, usable with any backend.
#![allow(unsafe_code)]

use std::ops::Bound;
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, PutFlags, WithoutTls};
use state_api::{KeyGroupRange, Result, StateError};

use crate::cached::{CachedTimerQueue, DEFAULT_CACHE_SIZE, OrderedTimerStore, PinnedStore, StoreEntries};

/// Default LMDB map size: the most the store can grow to (address space only; disk is
/// used as timers are written).
pub const DEFAULT_MAP_SIZE: usize = 64 << 30;

/// A timer queue on LMDB.
pub type LmdbTimerQueue = CachedTimerQueue<LmdbTimerStore>;

/// Where and how an LMDB timer store is created.
#[derive(Debug, Clone)]
pub struct LmdbConfig {
    /// Directory under which each store creates its own sub-directory `timers-<pid>-<n>`
    /// (deleted when the store is dropped; left by a crashed process, it is removed by
    /// the next process's first store here, see [`crate::workdir`]). Default: the system
    /// temp dir.
    pub local_dir: PathBuf,
    /// The LMDB map size (maximum store size).
    pub map_size: usize,
    /// Timers cached in memory per key group.
    pub cache_size: usize,
}

impl Default for LmdbConfig {
    fn default() -> Self {
        LmdbConfig {
            local_dir: std::env::temp_dir().join("state-timers-lmdb"),
            map_size: DEFAULT_MAP_SIZE,
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }
}

fn lmdb_err(context: &str, path: &Path, e: heed::Error) -> StateError {
    StateError::storage(format!("{context} in LMDB timer store `{}`", path.display()), e, false)
}

/// Timers in an LMDB environment of their own (one file in a fresh directory).
pub struct LmdbTimerStore {
    env: Env<WithoutTls>,
    db: Database<'static, Bytes, Bytes>,
    dir: PathBuf,
    name: String,
}

impl std::fmt::Debug for LmdbTimerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmdbTimerStore").field("dir", &self.dir).finish()
    }
}

impl LmdbTimerStore {
    /// Creates an empty store in a new directory under `config.local_dir`.
    pub fn create(config: &LmdbConfig) -> Result<Self> {
        let dir = crate::workdir::create(&config.local_dir, "timers")?;
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(config.map_size).max_dbs(1);
        // SAFETY: the flags trade durability for speed, which is right for a store that
        // is rebuilt from checkpoints and deleted on drop: nothing relies on it surviving
        // a crash. `open` is unsafe because an environment must not be opened twice in a
        // process; this directory was just created for this store alone.
        let env = unsafe {
            options.flags(EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC | EnvFlags::NO_READ_AHEAD);
            options.open(&dir)
        }
        .map_err(|e| lmdb_err("opening", &dir, e))?;
        let wtxn = env.write_txn().map_err(|e| lmdb_err("starting a write", &dir, e))?;
        let db = env
            .create_databases_and_commit(wtxn, |opener, wtxn| {
                opener
                    .create_database::<Bytes, Bytes>(wtxn, None)
                    .map(CommitOrAbort::<_, ()>::Commit)
            })
            .map_err(|e| lmdb_err("creating the database", &dir, e))?
            .unwrap_commit();
        let name = format!("LMDB timer store `{}`", dir.display());
        Ok(LmdbTimerStore { env, db, dir, name })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A queue over a new store, for the key groups of `range`.
    pub fn queue(config: &LmdbConfig, range: KeyGroupRange, max_parallelism: u32) -> Result<LmdbTimerQueue> {
        CachedTimerQueue::open(
            Self::create(config)?,
            &mut (),
            range,
            max_parallelism,
            config.cache_size,
        )
    }

    fn write<R>(&self, context: &str, f: impl FnOnce(&mut heed::RwTxn<'_>) -> heed::Result<R>) -> Result<R> {
        let mut wtxn = self.env.write_txn().map_err(|e| lmdb_err(context, &self.dir, e))?;
        let r = f(&mut wtxn).map_err(|e| lmdb_err(context, &self.dir, e))?;
        wtxn.commit().map_err(|e| lmdb_err(context, &self.dir, e))?;
        Ok(r)
    }
}

impl Drop for LmdbTimerStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Up to `limit` entries with `prefix`, from key `from` (≥ `prefix`) on.
fn scan(
    db: &Database<'static, Bytes, Bytes>,
    rtxn: &heed::RoTxn<'_, WithoutTls>,
    prefix: &[u8],
    from: &[u8],
    limit: usize,
    dir: &Path,
) -> Result<StoreEntries> {
    let range = (Bound::Included(from), Bound::Unbounded);
    let iter = db.range(rtxn, &range).map_err(|e| lmdb_err("scanning", dir, e))?;
    let mut out = Vec::new();
    for item in iter {
        let (k, v) = item.map_err(|e| lmdb_err("scanning", dir, e))?;
        if out.len() == limit || !k.starts_with(prefix) {
            break;
        }
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

impl<H: ?Sized> OrderedTimerStore<H> for LmdbTimerStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn insert(&mut self, _host: &mut H, key: &[u8], value: &[u8]) -> Result<bool> {
        let db = self.db;
        self.write("adding a timer", |wtxn| {
            match db.put_with_flags(wtxn, PutFlags::NO_OVERWRITE, key, value) {
                Ok(()) => Ok(true),
                Err(heed::Error::Mdb(heed::MdbError::KeyExist)) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    fn remove(&mut self, _host: &mut H, key: &[u8]) -> Result<bool> {
        let db = self.db;
        self.write("removing a timer", |wtxn| db.delete(wtxn, key))
    }

    fn scan_prefix(&mut self, _host: &mut H, prefix: &[u8], from: &[u8], limit: usize) -> Result<StoreEntries> {
        let rtxn = self.env.read_txn().map_err(|e| lmdb_err("reading", &self.dir, e))?;
        scan(&self.db, &rtxn, prefix, from, limit, &self.dir)
    }

    fn pin(&mut self, _host: &mut H) -> Result<Box<dyn PinnedStore>> {
        // An LMDB read transaction is a consistent snapshot (MVCC): writers go on.
        let rtxn = self
            .env
            .clone()
            .static_read_txn()
            .map_err(|e| lmdb_err("pinning", &self.dir, e))?;
        Ok(Box::new(PinnedLmdb {
            rtxn,
            db: self.db,
            dir: self.dir.clone(),
        }))
    }
}

struct PinnedLmdb {
    rtxn: heed::RoTxn<'static, WithoutTls>,
    db: Database<'static, Bytes, Bytes>,
    dir: PathBuf,
}

impl PinnedStore for PinnedLmdb {
    fn scan_prefix(&self, prefix: &[u8]) -> Result<StoreEntries> {
        scan(&self.db, &self.rtxn, prefix, prefix, usize::MAX, &self.dir)
    }
}
