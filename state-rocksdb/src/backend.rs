//! The RocksDB keyed state backend: its state, opening it, and its factory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteOptions};
use state_api::raw::type_name_of;
use state_api::raw::{StateId, StateMeta};
use state_api::{
    BackendContext, CheckpointStorage, Clock, KeyGroupRange, KeyedBackendFactory, KeyedSnapshotHandle, Result, Schema,
    SnapshotFile, StateError, StateKey, StreamHandle, TtlConfig,
};

use crate::column_family::{cf_name, cf_options, ttl_of};
use crate::instance::{DirGuard, Instance, db_err};
use crate::layout::key_group_prefix_len;
use crate::options::RocksDbConfig;
use crate::restore::RAW_CF;

/// Length of a namespace's encoding at the start of a slice (monomorphized per state).
pub(crate) type NsLenFn = fn(&[u8]) -> Option<usize>;

pub(crate) struct Current<K> {
    pub(crate) key: K,
    pub(crate) key_group: u32,
    /// `[key group][key bytes]`, serialized once per key switch.
    pub(crate) prefix: Vec<u8>,
}

pub(crate) struct RState {
    pub(crate) meta: StateMeta,
    /// The column family's name, computed once (looked up on every access).
    pub(crate) cf: String,
    pub(crate) ttl: Option<TtlConfig>,
    /// Length of the namespace at the start of `[namespace][user key]` (monomorphized at registration).
    pub(crate) ns_len: NsLenFn,
    pub(crate) cleanup_cursor: Option<Vec<u8>>,
}

/// Keyed state in RocksDB (Flink's `EmbeddedRocksDBStateBackend`): one column family per
/// state, keys laid out as Flink's, list append by merge, map iteration by prefix scan,
/// TTL by compaction filter and on access. Every read and write (de)serializes; state
/// can be far larger than memory.
///
/// ```
/// use state_api::{BackendContext, KeyedStateBackend, ListStateDescriptor};
/// use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
///
/// let mut backend = RocksDbKeyedStateBackend::<String>::new(&BackendContext::single(128), RocksDbConfig::default())?;
/// let recent = backend.register(ListStateDescriptor::<u32>::new("recent"))?;
/// backend.set_current_key(&"alice".to_string())?;
/// backend.list(&recent).add(7)?; // a RocksDB merge: no read-modify-write
/// backend.list(&recent).add(8)?;
/// assert_eq!(backend.list(&recent).get()?, vec![7, 8]);
/// # Ok::<(), state_api::StateError>(())
/// ```
pub struct RocksDbKeyedStateBackend<K: StateKey> {
    /// The database, its column families' options and the working directory, dropped
    /// in that order.
    pub(crate) db: Instance,
    pub(crate) dir: PathBuf,
    pub(crate) config: RocksDbConfig,
    pub(crate) range: KeyGroupRange,
    pub(crate) max_parallelism: u32,
    pub(crate) prefix_len: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) key_type: String,
    pub(crate) key_schema: Schema,
    pub(crate) current: Option<Current<K>>,
    pub(crate) states: Vec<RState>,
    pub(crate) by_name: HashMap<String, StateId>,
    /// States restored from a snapshot and not registered yet (their column families exist).
    pub(crate) restored: BTreeMap<String, StateMeta>,
    pub(crate) write_opts: WriteOptions,
    pub(crate) keybuf: Vec<u8>,
    pub(crate) scratch: Vec<u8>,
    /// Data files of the last completed incremental checkpoint: reused, not uploaded again.
    pub(crate) confirmed: HashMap<String, StreamHandle>,
    /// Data files of incremental checkpoints whose completion is not known yet.
    pub(crate) pending: Arc<Mutex<BTreeMap<u64, Vec<SnapshotFile>>>>,
}

impl<K: StateKey> std::fmt::Debug for RocksDbKeyedStateBackend<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbKeyedStateBackend")
            .field("dir", &self.dir)
            .field("key_group_range", &self.range)
            .field("states", &self.states.iter().map(|s| &s.meta.name).collect::<Vec<_>>())
            .finish()
    }
}

pub(crate) fn unknown(id: StateId) -> StateError {
    StateError::UnknownState {
        name: format!("#{}", id.0),
    }
}

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// An empty backend in a fresh working directory under `config.local_dir`.
    pub fn new(ctx: &BackendContext, config: RocksDbConfig) -> Result<Self> {
        Self::open_with(ctx, config, |_| Ok(Vec::new()))
    }

    /// Creates the working directory, lets `prepare` fill `<dir>/db` (downloaded files)
    /// and name the states it holds, then opens the database with those column families.
    pub(crate) fn open_with(
        ctx: &BackendContext,
        config: RocksDbConfig,
        prepare: impl FnOnce(&Path) -> Result<Vec<StateMeta>>,
    ) -> Result<Self> {
        ctx.validate()?;
        // `<local_dir>/db-<pid>-<n>`; directories of crashed processes are removed.
        let dir = state_timers::workdir::create(&config.local_dir, "db")?;
        let guard = DirGuard(dir.clone());
        let db_path = dir.join("db");
        let metas = prepare(&db_path)?;
        let clock = Arc::clone(&ctx.clock);
        let mut db_opts = config.options();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        let mut cfs: Vec<ColumnFamilyDescriptor> = metas
            .iter()
            .map(|m| {
                ColumnFamilyDescriptor::new(
                    cf_name(&m.name),
                    cf_options(&config, m.kind.shape(), ttl_of(m), Arc::clone(&clock)),
                )
            })
            .collect();
        // Column families that are not states: restored raw blocks, and timers (a
        // restored incremental snapshot carries them; a timer queue empties its own).
        for name in DB::list_cf(&Options::default(), &db_path).unwrap_or_default() {
            if name == RAW_CF || name.starts_with(crate::timers::TIMER_CF_PREFIX) {
                cfs.push(ColumnFamilyDescriptor::new(name, config.options()));
            }
        }
        let db = DB::open_cf_descriptors(&db_opts, &db_path, cfs)
            .map_err(|e| db_err(format!("opening RocksDB at `{}`", db_path.display()), e))?;
        let mut write_opts = WriteOptions::default();
        write_opts.disable_wal(true);
        Ok(RocksDbKeyedStateBackend {
            db: Instance::new(db, guard),
            dir,
            config,
            range: ctx.key_group_range,
            max_parallelism: ctx.max_parallelism,
            prefix_len: key_group_prefix_len(ctx.max_parallelism),
            clock,
            key_type: type_name_of::<K>(),
            key_schema: Schema::of::<K>(),
            current: None,
            states: Vec::new(),
            by_name: HashMap::new(),
            restored: metas.into_iter().map(|m| (m.name.clone(), m)).collect(),
            write_opts,
            keybuf: Vec::new(),
            scratch: Vec::new(),
            confirmed: HashMap::new(),
            pending: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// Metadata of every state in the database (registered or restored).
    pub(crate) fn all_metas(&self) -> Vec<StateMeta> {
        let mut out: Vec<StateMeta> = self.states.iter().map(|s| s.meta.clone()).collect();
        out.extend(self.restored.values().cloned());
        out
    }

    /// The working directory of this instance.
    pub fn working_dir(&self) -> &Path {
        &self.dir
    }

    /// The underlying database (for metrics and tests).
    pub fn db(&self) -> &DB {
        &self.db
    }
}

/// Creates and restores [`RocksDbKeyedStateBackend`]s.
#[derive(Debug, Clone, Default)]
pub struct RocksDbBackendFactory {
    /// The configuration of every backend created.
    pub config: RocksDbConfig,
}

impl KeyedBackendFactory for RocksDbBackendFactory {
    type Backend<K: StateKey> = RocksDbKeyedStateBackend<K>;

    fn name(&self) -> &str {
        "rocksdb"
    }

    fn create<K: StateKey>(&self, ctx: &BackendContext) -> Result<RocksDbKeyedStateBackend<K>> {
        RocksDbKeyedStateBackend::new(ctx, self.config.clone())
    }

    fn restore<K: StateKey>(
        &self,
        ctx: &BackendContext,
        handles: &[KeyedSnapshotHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<RocksDbKeyedStateBackend<K>> {
        RocksDbKeyedStateBackend::restore(ctx, self.config.clone(), handles, storage)
    }
}
