//! The RocksDB keyed state backend.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::compaction_filter::Decision;
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, MergeOperands, Options, WriteBatch, WriteOptions};
use state_api::format::{
    RawEntry, SectionBuilder, SnapshotHeader, decode_block, deserialize, open_for_restore, put_bytes, put_i64,
    put_varint, write_keyed_stream,
};
use state_api::state::type_name_of;
use state_api::{
    AsyncSnapshot, BackendContext, CheckpointStorage, Clock, KeyGroupRange, KeyedBackendFactory, KeyedSnapshotHandle,
    KeyedStateBackend, Namespace, RawMapIter, Result, SnapshotFile, StateError, StateId, StateKey, StateMeta,
    StateShape, StateValue, StreamHandle, TtlConfig, TtlValue, check_state_name,
};

use crate::keys::{
    corrupt, encoded_len, key_group_prefix_len, list_elements, prefix_successor, put_key_group, put_list_element,
    split_value,
};
use crate::options::RocksDbConfig;

pub(crate) fn db_err(context: impl Into<String>, e: rocksdb::Error) -> StateError {
    StateError::Storage {
        context: context.into(),
        detail: e.to_string(),
    }
}

/// The column family holding restored canonical blocks of states not registered yet.
pub(crate) const RAW_CF: &str = "_restored";

/// Key of a restored block in [`RAW_CF`]: `[name length u16][name][key group u32]`.
pub(crate) fn raw_key(state: &str, key_group: u32) -> Vec<u8> {
    let mut k = raw_prefix(state);
    k.extend_from_slice(&key_group.to_be_bytes());
    k
}

pub(crate) fn raw_prefix(state: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(state.len() + 6);
    k.extend_from_slice(&(state.len() as u16).to_be_bytes());
    k.extend_from_slice(state.as_bytes());
    k
}

/// Writes canonical entries of one key group into a state's column family.
fn put_entries(
    batch: &mut WriteBatch,
    cf: &rocksdb::ColumnFamily,
    kg: u32,
    prefix_len: usize,
    entries: &[RawEntry<'_>],
    ttl: bool,
) {
    let mut key = Vec::new();
    let mut value = Vec::new();
    for entry in entries {
        key.clear();
        put_key_group(&mut key, kg, prefix_len);
        match entry {
            RawEntry::Value {
                key: k,
                namespace,
                timestamp,
                value: v,
            } => {
                key.extend_from_slice(k);
                key.extend_from_slice(namespace);
                value.clear();
                if ttl {
                    value.extend_from_slice(&timestamp.to_be_bytes());
                }
                value.extend_from_slice(v);
                batch.put_cf(cf, &key, &value);
            }
            RawEntry::List {
                key: k,
                namespace,
                items,
            } => {
                key.extend_from_slice(k);
                key.extend_from_slice(namespace);
                value.clear();
                for (ts, v) in items {
                    put_list_element(&mut value, *ts, v, ttl);
                }
                batch.put_cf(cf, &key, &value);
            }
            RawEntry::Map {
                key: k,
                namespace,
                entries,
            } => {
                key.extend_from_slice(k);
                key.extend_from_slice(namespace);
                let base = key.len();
                for (uk, ts, v) in entries {
                    key.truncate(base);
                    key.extend_from_slice(uk);
                    value.clear();
                    if ttl {
                        value.extend_from_slice(&ts.to_be_bytes());
                    }
                    value.extend_from_slice(v);
                    batch.put_cf(cf, &key, &value);
                }
            }
        }
    }
}

/// The column family that holds state `state`.
pub fn column_family_name(state: &str) -> String {
    format!("s/{state}")
}

fn cf_name(state: &str) -> String {
    column_family_name(state)
}

/// Appends the operands to the existing value: list append without read-modify-write.
fn concat_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut out = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for op in operands.iter() {
        out.extend_from_slice(op);
    }
    Some(out)
}

/// Whether a stored value (of a state with TTL) has fully expired.
fn fully_expired(shape: StateShape, value: &[u8], ttl: &TtlConfig, now: i64) -> bool {
    match shape {
        StateShape::Value | StateShape::Map => {
            split_value(value, true, "").is_ok_and(|(ts, _)| ttl.is_expired(ts, now))
        }
        StateShape::List => list_elements(value, true, "").all(|e| e.is_ok_and(|(ts, _)| ttl.is_expired(ts, now))),
    }
}

/// Column family options: the profile, the list merge operator, and for TTL states a
/// compaction filter that drops expired values as RocksDB compacts.
pub(crate) fn cf_options(
    config: &RocksDbConfig,
    shape: StateShape,
    ttl: Option<TtlConfig>,
    clock: Arc<dyn Clock>,
) -> Options {
    let mut opts = config.options();
    opts.set_merge_operator_associative("state-list-append", concat_merge);
    if let Some(ttl) = ttl {
        opts.set_compaction_filter("state-ttl", move |_level: u32, _key: &[u8], value: &[u8]| {
            if fully_expired(shape, value, &ttl, clock.now_millis()) {
                Decision::Remove
            } else {
                Decision::Keep
            }
        });
    }
    opts
}

pub(crate) fn ttl_of(meta: &StateMeta) -> Option<TtlConfig> {
    meta.ttl.map(|t| TtlConfig::new(Duration::from_millis(t.ttl_millis)))
}

struct Current<K> {
    key: K,
    key_group: u32,
    /// `[key group][key bytes]`, serialized once per key switch.
    prefix: Vec<u8>,
}

struct RState {
    meta: StateMeta,
    /// The column family's name, computed once (looked up on every access).
    cf: String,
    ttl: Option<TtlConfig>,
    /// Length of the namespace at the start of `[namespace][user key]` (monomorphized at registration).
    ns_len: NsLenFn,
    cleanup_cursor: Option<Vec<u8>>,
}

/// Deletes the instance directory after the database is closed (declared after `db`)
/// and after every snapshot's asynchronous part that still reads from it (each holds a
/// clone): dropping a backend never pulls the files from under a running upload.
pub(crate) struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
    pub(crate) db: DB,
    /// Options of column families created after open. rust-rocksdb's `create_cf` does not
    /// keep them alive, but RocksDB calls their merge operator and compaction filter for
    /// as long as the database is open: they must be dropped after `db` (declared after it).
    cf_options_alive: Vec<Options>,
    pub(crate) dir_guard: Arc<DirGuard>,
    pub(crate) dir: PathBuf,
    pub(crate) config: RocksDbConfig,
    pub(crate) range: KeyGroupRange,
    pub(crate) max_parallelism: u32,
    pub(crate) prefix_len: usize,
    clock: Arc<dyn Clock>,
    pub(crate) key_type: String,
    current: Option<Current<K>>,
    states: Vec<RState>,
    by_name: HashMap<String, StateId>,
    /// States restored from a snapshot and not registered yet (their column families exist).
    restored: BTreeMap<String, StateMeta>,
    pub(crate) write_opts: WriteOptions,
    keybuf: Vec<u8>,
    scratch: Vec<u8>,
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

fn unknown(id: StateId) -> StateError {
    StateError::UnknownState {
        name: format!("#{}", id.0),
    }
}

/// Decodes a stored value-shaped entry (`[timestamp if TTL][postcard]`) of state `st`.
fn decode_stored<V: StateValue>(bytes: &[u8], st: &RState, role: &'static str) -> Result<TtlValue<V>> {
    let (ts, vb) = split_value(bytes, st.ttl.is_some(), &st.meta.name)?;
    Ok(TtlValue::new(deserialize(vb, &st.meta.name, role)?, ts))
}

/// Builds `[key group][key][namespace]` into `buf`.
fn make_key<K, N: Namespace>(buf: &mut Vec<u8>, current: &Option<Current<K>>, ns: &N, state: &str) -> Result<()> {
    let cur = current.as_ref().ok_or(StateError::NoCurrentKey)?;
    buf.clear();
    buf.extend_from_slice(&cur.prefix);
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(ns, taken).map_err(|e| StateError::Serialization {
        name: state.to_string(),
        role: "namespace",
        detail: e.to_string(),
    })?;
    Ok(())
}

fn encode<T: serde::Serialize>(buf: &mut Vec<u8>, value: &T, state: &str, role: &'static str) -> Result<()> {
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(value, taken).map_err(|e| StateError::Serialization {
        name: state.to_string(),
        role,
        detail: e.to_string(),
    })?;
    Ok(())
}

fn encode_value<V: serde::Serialize>(buf: &mut Vec<u8>, tv: &TtlValue<V>, ttl: bool, state: &str) -> Result<()> {
    buf.clear();
    if ttl {
        buf.extend_from_slice(&tv.timestamp.to_be_bytes());
    }
    encode(buf, &tv.value, state, "value")
}

fn encode_list<E: serde::Serialize>(
    buf: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    items: &[TtlValue<E>],
    ttl: bool,
    state: &str,
) -> Result<()> {
    buf.clear();
    for tv in items {
        scratch.clear();
        encode(scratch, &tv.value, state, "list element")?;
        put_list_element(buf, tv.timestamp, scratch, ttl);
    }
    Ok(())
}

pub(crate) static INSTANCE: AtomicU64 = AtomicU64::new(0);

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
            db,
            cf_options_alive: Vec::new(),
            dir_guard: Arc::new(guard),
            dir,
            config,
            range: ctx.key_group_range,
            max_parallelism: ctx.max_parallelism,
            prefix_len: key_group_prefix_len(ctx.max_parallelism),
            clock,
            key_type: type_name_of::<K>(),
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

    pub(crate) fn ensure_restored_cf(&mut self, meta: &StateMeta) -> Result<()> {
        match self.restored.get(&meta.name) {
            Some(existing) => existing.check_compatible(meta),
            None => {
                self.ensure_cf(meta, ttl_of(meta))?;
                self.restored.insert(meta.name.clone(), meta.clone());
                Ok(())
            }
        }
    }

    /// The working directory of this instance.
    pub fn working_dir(&self) -> &Path {
        &self.dir
    }

    /// The underlying database (for metrics and tests).
    pub fn db(&self) -> &DB {
        &self.db
    }

    fn ensure_cf(&mut self, meta: &StateMeta, ttl: Option<TtlConfig>) -> Result<()> {
        let name = cf_name(&meta.name);
        if self.db.cf_handle(&name).is_none() {
            let opts = cf_options(&self.config, meta.kind.shape(), ttl, Arc::clone(&self.clock));
            self.db
                .create_cf(&name, &opts)
                .map_err(|e| db_err(format!("creating column family for state `{}`", meta.name), e))?;
            self.cf_options_alive.push(opts);
        }
        Ok(())
    }

    pub(crate) fn ensure_raw_cf(&mut self) -> Result<()> {
        if self.db.cf_handle(RAW_CF).is_none() {
            let opts = self.config.options();
            self.db
                .create_cf(RAW_CF, &opts)
                .map_err(|e| db_err("creating the column family of restored state", e))?;
            self.cf_options_alive.push(opts);
        }
        Ok(())
    }

    /// Moves a restored state's canonical blocks from [`RAW_CF`] into its own column
    /// family (now that it is registered), key group by key group.
    fn materialize(&mut self, meta: &StateMeta) -> Result<()> {
        let Some(raw_cf) = self.db.cf_handle(RAW_CF) else {
            return Ok(());
        };
        let cf = self
            .db
            .cf_handle(&cf_name(&meta.name))
            .ok_or_else(|| StateError::UnknownState {
                name: meta.name.clone(),
            })?;
        let prefix = raw_prefix(&meta.name);
        let source = format!("restored state `{}`", meta.name);
        let mut found = Vec::new();
        for r in self
            .db
            .iterator_cf(raw_cf, IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, v) = r.map_err(|e| db_err("reading restored state", e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let kg_bytes = k
                .get(prefix.len()..)
                .filter(|b| b.len() == 4)
                .ok_or_else(|| corrupt(&meta.name, "bad restored-block key"))?;
            let kg = u32::from_be_bytes([kg_bytes[0], kg_bytes[1], kg_bytes[2], kg_bytes[3]]);
            let (count, used) =
                crate::keys::read_varint(&v).ok_or_else(|| corrupt(&meta.name, "bad restored-block count"))?;
            let entries = decode_block(&v[used..], meta, count, &source, kg)?;
            let mut batch = WriteBatch::default();
            put_entries(&mut batch, cf, kg, self.prefix_len, &entries, meta.ttl.is_some());
            self.db
                .write_opt(batch, &self.write_opts)
                .map_err(|e| db_err("materializing restored state", e))?;
            found.push(k);
        }
        for k in found {
            self.db
                .delete_cf_opt(raw_cf, &k, &self.write_opts)
                .map_err(|e| db_err("materializing restored state", e))?;
        }
        Ok(())
    }

    fn register_shape<N: Namespace>(&mut self, meta: StateMeta, ttl: Option<TtlConfig>) -> Result<StateId> {
        check_state_name(&meta.name)?;
        if let Some(&id) = self.by_name.get(&meta.name) {
            self.states[id.0 as usize].meta.check_compatible(&meta)?;
            return Ok(id);
        }
        if let Some(restored) = self.restored.get(&meta.name) {
            restored.check_compatible(&meta)?;
        }
        self.ensure_cf(&meta, ttl.clone())?;
        if self.restored.contains_key(&meta.name) {
            self.materialize(&meta)?;
        }
        self.restored.remove(&meta.name);
        let id = StateId(self.states.len() as u32);
        self.by_name.insert(meta.name.clone(), id);
        self.states.push(RState {
            cf: cf_name(&meta.name),
            meta,
            ttl,
            ns_len: encoded_len::<N>,
            cleanup_cursor: None,
        });
        Ok(id)
    }

    /// A backend restored from canonical snapshots (any backend's full snapshots and
    /// savepoints), keeping only the key groups of `ctx`: only those sections are read.
    pub fn restore(
        ctx: &BackendContext,
        config: RocksDbConfig,
        handles: &[KeyedSnapshotHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<Self> {
        let mut b = Self::new(ctx, config)?;
        for handle in handles {
            let Some((mut reader, mine)) = open_for_restore(handle, storage, &b.key_type, b.max_parallelism, b.range)?
            else {
                continue;
            };
            let name = reader.name().to_string();
            let header = reader.header().clone();
            for meta in &header.states {
                b.ensure_restored_cf(meta)?;
            }
            b.ensure_raw_cf()?;
            let raw_cf =
                b.db.cf_handle(RAW_CF)
                    .ok_or_else(|| StateError::UnknownState { name: RAW_CF.into() })?;
            for kg in mine.iter() {
                let section = reader.read_section(kg)?;
                let mut batch = WriteBatch::default();
                for block in section.blocks()? {
                    let mut value = Vec::with_capacity(block.raw.len() + 10);
                    put_varint(&mut value, block.entries.len() as u64);
                    value.extend_from_slice(block.raw);
                    batch.put_cf(raw_cf, raw_key(&block.meta.name, kg), &value);
                }
                b.db.write_opt(batch, &b.write_opts)
                    .map_err(|e| db_err(format!("restoring key group {kg} from `{name}`"), e))?;
            }
        }
        Ok(b)
    }
}

macro_rules! state_and_cf {
    ($self:ident, $id:expr) => {{
        let st = $self.states.get($id.0 as usize).ok_or_else(|| unknown($id))?;
        let cf = $self.db.cf_handle(&st.cf).ok_or_else(|| StateError::UnknownState {
            name: st.meta.name.clone(),
        })?;
        (st, cf)
    }};
}

impl<K: StateKey> KeyedStateBackend for RocksDbKeyedStateBackend<K> {
    type Key = K;

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    fn set_current_key(&mut self, key: &K) -> Result<()> {
        let key_group = state_api::keygroup::key_group_and_bytes(key, self.max_parallelism, &mut self.scratch)?;
        self.range.owned_index(key_group)?;
        // Reuse the previous key's buffer: no allocation per key switch.
        let mut prefix = self.current.take().map(|c| c.prefix).unwrap_or_default();
        prefix.clear();
        put_key_group(&mut prefix, key_group, self.prefix_len);
        prefix.extend_from_slice(&self.scratch);
        self.current = Some(Current {
            key: key.clone(),
            key_group,
            prefix,
        });
        Ok(())
    }

    fn current_key(&self) -> Option<&K> {
        self.current.as_ref().map(|c| &c.key)
    }

    fn current_key_group(&self) -> Option<u32> {
        self.current.as_ref().map(|c| c.key_group)
    }

    fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    fn register_value<V: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
    ) -> Result<StateId> {
        self.register_shape::<N>(meta, ttl)
    }

    fn register_list<E: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
    ) -> Result<StateId> {
        self.register_shape::<N>(meta, ttl)
    }

    fn register_map<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
    ) -> Result<StateId> {
        self.register_shape::<N>(meta, ttl)
    }

    fn raw_value_read<V: StateValue, N: Namespace, R>(
        &mut self,
        id: StateId,
        ns: &N,
        f: impl FnOnce(&TtlValue<V>) -> R,
    ) -> Result<Option<R>> {
        let (st, cf) = state_and_cf!(self, id);
        make_key(&mut self.keybuf, &self.current, ns, &st.meta.name)?;
        let got = self
            .db
            .get_pinned_cf(cf, &self.keybuf)
            .map_err(|e| db_err("reading a value", e))?;
        got.map(|bytes| decode_stored::<V>(&bytes, st, "value").map(|tv| f(&tv)))
            .transpose()
    }

    fn raw_value_write<V: StateValue, N: Namespace>(&mut self, id: StateId, ns: &N, value: TtlValue<V>) -> Result<()> {
        let (st, cf) = state_and_cf!(self, id);
        make_key(&mut self.keybuf, &self.current, ns, &st.meta.name)?;
        encode_value(&mut self.scratch, &value, st.ttl.is_some(), &st.meta.name)?;
        self.db
            .put_cf_opt(cf, &self.keybuf, &self.scratch, &self.write_opts)
            .map_err(|e| db_err("writing a value", e))
    }

    fn raw_list_read<E: StateValue, N: Namespace, R>(
        &mut self,
        id: StateId,
        ns: &N,
        f: impl FnOnce(&[TtlValue<E>]) -> R,
    ) -> Result<Option<R>> {
        let (st, cf) = state_and_cf!(self, id);
        make_key(&mut self.keybuf, &self.current, ns, &st.meta.name)?;
        let got = self
            .db
            .get_pinned_cf(cf, &self.keybuf)
            .map_err(|e| db_err("reading a list", e))?;
        let Some(bytes) = got else { return Ok(None) };
        let mut items = Vec::new();
        for e in list_elements(&bytes, st.ttl.is_some(), &st.meta.name) {
            let (ts, b) = e?;
            items.push(TtlValue::new(deserialize::<E>(b, &st.meta.name, "list element")?, ts));
        }
        Ok((!items.is_empty()).then(|| f(&items)))
    }

    fn raw_list_append<E: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        values: Vec<TtlValue<E>>,
    ) -> Result<()> {
        let (st, cf) = state_and_cf!(self, id);
        make_key(&mut self.keybuf, &self.current, ns, &st.meta.name)?;
        let mut buf = Vec::new();
        encode_list(&mut buf, &mut self.scratch, &values, st.ttl.is_some(), &st.meta.name)?;
        if st.ttl.is_some() {
            // RocksDB does not run compaction filters on merge operands, so a TTL list is
            // kept as a full value (read, append, write) for the TTL compaction filter to see.
            let existing = self
                .db
                .get_pinned_cf(cf, &self.keybuf)
                .map_err(|e| db_err("appending to a list", e))?;
            let mut full = existing.map(|e| e.to_vec()).unwrap_or_default();
            full.extend_from_slice(&buf);
            return self
                .db
                .put_cf_opt(cf, &self.keybuf, &full, &self.write_opts)
                .map_err(|e| db_err("appending to a list", e));
        }
        self.db
            .merge_cf_opt(cf, &self.keybuf, &buf, &self.write_opts)
            .map_err(|e| db_err("appending to a list", e))
    }

    fn raw_list_write<E: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        values: Vec<TtlValue<E>>,
    ) -> Result<()> {
        if values.is_empty() {
            return self.raw_clear(id, ns);
        }
        let (st, cf) = state_and_cf!(self, id);
        make_key(&mut self.keybuf, &self.current, ns, &st.meta.name)?;
        let mut buf = Vec::new();
        encode_list(&mut buf, &mut self.scratch, &values, st.ttl.is_some(), &st.meta.name)?;
        self.db
            .put_cf_opt(cf, &self.keybuf, &buf, &self.write_opts)
            .map_err(|e| db_err("writing a list", e))
    }

    fn raw_map_read<UK: StateKey, UV: StateValue, N: Namespace, R>(
        &mut self,
        id: StateId,
        ns: &N,
        user_key: &UK,
        f: impl FnOnce(&TtlValue<UV>) -> R,
    ) -> Result<Option<R>> {
        let (st, cf) = state_and_cf!(self, id);
        make_key(&mut self.keybuf, &self.current, ns, &st.meta.name)?;
        encode(&mut self.keybuf, user_key, &st.meta.name, "user key")?;
        let got = self
            .db
            .get_pinned_cf(cf, &self.keybuf)
            .map_err(|e| db_err("reading a map entry", e))?;
        got.map(|bytes| decode_stored::<UV>(&bytes, st, "user value").map(|tv| f(&tv)))
            .transpose()
    }

    fn raw_map_write<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        user_key: UK,
        value: TtlValue<UV>,
    ) -> Result<()> {
        let (st, cf) = state_and_cf!(self, id);
        make_key(&mut self.keybuf, &self.current, ns, &st.meta.name)?;
        encode(&mut self.keybuf, &user_key, &st.meta.name, "user key")?;
        encode_value(&mut self.scratch, &value, st.ttl.is_some(), &st.meta.name)?;
        self.db
            .put_cf_opt(cf, &self.keybuf, &self.scratch, &self.write_opts)
            .map_err(|e| db_err("writing a map entry", e))
    }

    fn raw_map_remove<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        user_key: &UK,
    ) -> Result<()> {
        let (st, cf) = state_and_cf!(self, id);
        make_key(&mut self.keybuf, &self.current, ns, &st.meta.name)?;
        encode(&mut self.keybuf, user_key, &st.meta.name, "user key")?;
        self.db
            .delete_cf_opt(cf, &self.keybuf, &self.write_opts)
            .map_err(|e| db_err("removing a map entry", e))
    }

    fn raw_map_iter<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
    ) -> Result<RawMapIter<'_, UK, UV>> {
        let (st, cf) = state_and_cf!(self, id);
        make_key(&mut self.keybuf, &self.current, ns, &st.meta.name)?;
        let prefix = self.keybuf.clone();
        let ttl = st.ttl.is_some();
        let name = st.meta.name.clone();
        let iter = self.db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward));
        let plen = prefix.len();
        Ok(Box::new(
            iter.take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
                .map(move |r| {
                    let (k, v) = r.map_err(|e| db_err("iterating a map", e))?;
                    let uk: UK = deserialize(&k[plen..], &name, "user key")?;
                    let (ts, vb) = split_value(&v, ttl, &name)?;
                    let uv: UV = deserialize(vb, &name, "user value")?;
                    Ok((uk, TtlValue::new(uv, ts)))
                }),
        ))
    }

    fn raw_clear<N: Namespace>(&mut self, id: StateId, ns: &N) -> Result<()> {
        let (st, cf) = state_and_cf!(self, id);
        make_key(&mut self.keybuf, &self.current, ns, &st.meta.name)?;
        if st.meta.kind.shape() != StateShape::Map {
            return self
                .db
                .delete_cf_opt(cf, &self.keybuf, &self.write_opts)
                .map_err(|e| db_err("clearing a value", e));
        }
        // Every entry of the (key, namespace): a range delete.
        match prefix_successor(&self.keybuf) {
            Some(end) => self
                .db
                .delete_range_cf_opt(cf, &self.keybuf, &end, &self.write_opts)
                .map_err(|e| db_err("clearing a map", e)),
            None => {
                let keys: Vec<Box<[u8]>> = self
                    .db
                    .iterator_cf(cf, IteratorMode::From(&self.keybuf, Direction::Forward))
                    .map_while(|r| r.ok().filter(|(k, _)| k.starts_with(&self.keybuf)).map(|(k, _)| k))
                    .collect();
                for k in keys {
                    self.db
                        .delete_cf_opt(cf, &k, &self.write_opts)
                        .map_err(|e| db_err("clearing a map", e))?;
                }
                Ok(())
            }
        }
    }

    fn ttl_cleanup_step(&mut self, id: StateId, entries: usize) -> Result<()> {
        let now = self.clock.now_millis();
        let (st, cf) = state_and_cf!(self, id);
        let Some(ttl) = st.ttl.clone() else { return Ok(()) };
        let shape = st.meta.kind.shape();
        let name = st.meta.name.clone();
        let start = st.cleanup_cursor.clone().unwrap_or_default();
        let mut expired = Vec::new();
        let mut partial = Vec::new();
        let mut next = None;
        for (n, r) in self
            .db
            .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward))
            .enumerate()
        {
            let (k, v) = r.map_err(|e| db_err("incremental TTL cleanup", e))?;
            if n >= entries {
                next = Some(k.to_vec());
                break;
            }
            if fully_expired(shape, &v, &ttl, now) {
                expired.push(k);
            } else if shape == StateShape::List {
                let live: Vec<(i64, &[u8])> = list_elements(&v, true, &name)
                    .filter_map(|e| e.ok())
                    .filter(|(ts, _)| !ttl.is_expired(*ts, now))
                    .collect();
                if live.len() != list_elements(&v, true, &name).count() {
                    let mut buf = Vec::new();
                    for (ts, b) in live {
                        put_list_element(&mut buf, ts, b, true);
                    }
                    partial.push((k, buf));
                }
            }
        }
        for k in expired {
            self.db
                .delete_cf_opt(cf, &k, &self.write_opts)
                .map_err(|e| db_err("incremental TTL cleanup", e))?;
        }
        for (k, v) in partial {
            self.db
                .put_cf_opt(cf, &k, &v, &self.write_opts)
                .map_err(|e| db_err("incremental TTL cleanup", e))?;
        }
        self.states[id.0 as usize].cleanup_cursor = next;
        Ok(())
    }

    fn keys_in<N: Namespace>(&mut self, id: StateId, ns: &N) -> Result<Vec<K>> {
        let (st, cf) = state_and_cf!(self, id);
        let mut ns_bytes = Vec::new();
        encode(&mut ns_bytes, ns, &st.meta.name, "namespace")?;
        let is_map = st.meta.kind.shape() == StateShape::Map;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for r in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, _) = r.map_err(|e| db_err("listing keys", e))?;
            let rest = k
                .get(self.prefix_len..)
                .ok_or_else(|| corrupt(&st.meta.name, "key shorter than its key group"))?;
            let (key, after) = postcard::take_from_bytes::<K>(rest)
                .map_err(|e| corrupt(&st.meta.name, format!("key does not decode: {e}")))?;
            let matches = if is_map {
                after.starts_with(&ns_bytes)
            } else {
                after == ns_bytes.as_slice()
            };
            if matches && seen.insert(rest[..rest.len() - after.len()].to_vec()) {
                out.push(key);
            }
        }
        Ok(out)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) {
        self.confirm_checkpoint(checkpoint_id);
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        self.forget_checkpoint(checkpoint_id);
    }

    fn snapshot(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<KeyedSnapshotHandle>> {
        // Synchronous part: a RocksDB checkpoint (memtable flush + hard links): cheap,
        // and a consistent image the asynchronous part reads while the task writes on.
        let snap_dir = self.dir.join(format!(
            "snapshot-{checkpoint_id}-{}",
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        ));
        Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(&snap_dir))
            .map_err(|e| db_err(format!("creating a RocksDB checkpoint at `{}`", snap_dir.display()), e))?;
        let now = self.clock.now_millis();
        let mut states: Vec<SnapState> = self
            .states
            .iter()
            .map(|s| SnapState {
                meta: s.meta.clone(),
                cleanup: s.ttl.clone().filter(TtlConfig::is_cleanup_full_snapshot),
                ns_len: Some(s.ns_len),
            })
            .collect();
        states.extend(self.restored.values().map(|m| SnapState {
            meta: m.clone(),
            cleanup: None,
            ns_len: None,
        }));
        let has_raw = self.db.cf_handle(RAW_CF).is_some();
        let job = FullSnapshot::<K> {
            dir: snap_dir,
            config: self.config.clone(),
            clock: Arc::clone(&self.clock),
            header: SnapshotHeader {
                key_type: self.key_type.clone(),
                max_parallelism: self.max_parallelism,
                key_group_range: self.range,
                checkpoint_id,
                states: states.iter().map(|s| s.meta.clone()).collect(),
            },
            states,
            has_raw,
            prefix_len: self.prefix_len,
            now,
            _k: PhantomData,
        };
        let keep_dir = Arc::clone(&self.dir_guard);
        Ok(AsyncSnapshot::new(checkpoint_id, move |storage| {
            let result = job.write(storage);
            let _ = std::fs::remove_dir_all(&job.dir);
            drop(keep_dir);
            result
        }))
    }
}

/// Length of a namespace's encoding at the start of a slice (monomorphized per state).
type NsLenFn = fn(&[u8]) -> Option<usize>;

/// A canonical map entry being assembled: key, namespace, (user key, timestamp, value)s.
type MapGroup = (Vec<u8>, Vec<u8>, Vec<(Vec<u8>, i64, Vec<u8>)>);

struct SnapState {
    meta: StateMeta,
    cleanup: Option<TtlConfig>,
    ns_len: Option<NsLenFn>,
}

/// The asynchronous part of a full snapshot: reads the RocksDB checkpoint and writes the
/// canonical format, key group by key group.
struct FullSnapshot<K> {
    dir: PathBuf,
    config: RocksDbConfig,
    clock: Arc<dyn Clock>,
    header: SnapshotHeader,
    states: Vec<SnapState>,
    /// Whether the `_restored` column family exists.
    has_raw: bool,
    prefix_len: usize,
    now: i64,
    _k: PhantomData<fn() -> K>,
}

impl<K: StateKey> FullSnapshot<K> {
    fn write(&self, storage: &dyn CheckpointStorage) -> Result<KeyedSnapshotHandle> {
        let mut cfs: Vec<ColumnFamilyDescriptor> = self
            .states
            .iter()
            .map(|s| {
                ColumnFamilyDescriptor::new(
                    cf_name(&s.meta.name),
                    cf_options(&self.config, s.meta.kind.shape(), None, Arc::clone(&self.clock)),
                )
            })
            .collect();
        if self.has_raw {
            cfs.push(ColumnFamilyDescriptor::new(RAW_CF, self.config.options()));
        }
        let db = DB::open_cf_descriptors_read_only(&self.config.options(), &self.dir, cfs, false)
            .map_err(|e| db_err(format!("opening the RocksDB checkpoint `{}`", self.dir.display()), e))?;
        let mut kg_prefix = Vec::new();
        write_keyed_stream(storage, &self.header, "keyed-state", |kg, section| {
            kg_prefix.clear();
            put_key_group(&mut kg_prefix, kg, self.prefix_len);
            for (si, s) in self.states.iter().enumerate() {
                let cf = db
                    .cf_handle(&cf_name(&s.meta.name))
                    .ok_or_else(|| StateError::UnknownState {
                        name: s.meta.name.clone(),
                    })?;
                let iter = db
                    .iterator_cf(cf, IteratorMode::From(&kg_prefix, Direction::Forward))
                    .map(|r| r.map_err(|e| db_err("reading a RocksDB checkpoint", e)))
                    .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&kg_prefix)));
                self.write_block(iter, s, section)?;
                section.finish_block(si as u32);
                // Restored, unregistered: its canonical block passes through unchanged.
                if s.ns_len.is_none()
                    && let Some(raw_cf) = db.cf_handle(RAW_CF)
                {
                    let got = db
                        .get_cf(raw_cf, raw_key(&s.meta.name, kg))
                        .map_err(|e| db_err("reading restored state", e))?;
                    if let Some(v) = got {
                        let (count, used) = crate::keys::read_varint(&v)
                            .ok_or_else(|| corrupt(&s.meta.name, "bad restored-block count"))?;
                        section.raw_block(si as u32, count, &v[used..]);
                    }
                }
            }
            Ok(())
        })
    }

    fn write_block(
        &self,
        iter: impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>)>>,
        s: &SnapState,
        out: &mut SectionBuilder,
    ) -> Result<()> {
        let name = &s.meta.name;
        let ttl = s.meta.ttl.is_some();
        let live = |ts: i64| s.cleanup.as_ref().is_none_or(|c| !c.is_expired(ts, self.now));
        let shape = s.meta.kind.shape();
        // Map state: consecutive entries of one (key, namespace) form one canonical entry.
        let mut group: Option<MapGroup> = None;
        let flush = |group: &mut Option<MapGroup>, out: &mut SectionBuilder| {
            if let Some((k, n, entries)) = group.take()
                && !entries.is_empty()
            {
                let b = out.block();
                put_bytes(b, &k);
                put_bytes(b, &n);
                put_varint(b, entries.len() as u64);
                for (uk, ts, v) in &entries {
                    put_bytes(b, uk);
                    if ttl {
                        put_i64(b, *ts);
                    }
                    put_bytes(b, v);
                }
                out.entry_done();
            }
        };
        for r in iter {
            let (k, v) = r?;
            let rest = k
                .get(self.prefix_len..)
                .ok_or_else(|| corrupt(name, "key shorter than its key group"))?;
            let klen = encoded_len::<K>(rest).ok_or_else(|| corrupt(name, "key does not decode"))?;
            let (key, after) = rest.split_at(klen);
            match shape {
                StateShape::Value => {
                    let (ts, vb) = split_value(&v, ttl, name)?;
                    if live(ts) {
                        let b = out.block();
                        put_bytes(b, key);
                        put_bytes(b, after);
                        if ttl {
                            put_i64(b, ts);
                        }
                        put_bytes(b, vb);
                        out.entry_done();
                    }
                }
                StateShape::List => {
                    let items: Vec<(i64, &[u8])> = list_elements(&v, ttl, name)
                        .collect::<Result<Vec<_>>>()?
                        .into_iter()
                        .filter(|(ts, _)| live(*ts))
                        .collect();
                    if !items.is_empty() {
                        let b = out.block();
                        put_bytes(b, key);
                        put_bytes(b, after);
                        put_varint(b, items.len() as u64);
                        for (ts, e) in items {
                            if ttl {
                                put_i64(b, ts);
                            }
                            put_bytes(b, e);
                        }
                        out.entry_done();
                    }
                }
                StateShape::Map => {
                    let ns_len = s.ns_len.ok_or_else(|| {
                        StateError::InvalidArgument(format!(
                            "map state `{name}` was restored but not registered: register it before taking a full snapshot"
                        ))
                    })?;
                    let nl = ns_len(after).ok_or_else(|| corrupt(name, "namespace does not decode"))?;
                    let (ns, uk) = after.split_at(nl);
                    let same = group
                        .as_ref()
                        .is_some_and(|(gk, gn, _)| gk.as_slice() == key && gn.as_slice() == ns);
                    if !same {
                        flush(&mut group, out);
                        group = Some((key.to_vec(), ns.to_vec(), Vec::new()));
                    }
                    let (ts, vb) = split_value(&v, ttl, name)?;
                    if live(ts)
                        && let Some((_, _, entries)) = group.as_mut()
                    {
                        entries.push((uk.to_vec(), ts, vb.to_vec()));
                    }
                }
            }
        }
        flush(&mut group, out);
        Ok(())
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
