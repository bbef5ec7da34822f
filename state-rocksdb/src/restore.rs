//! Restoring canonical snapshots: key groups are copied as raw blocks and materialized
//! into a state's column family when the state is registered.

use rocksdb::{Direction, IteratorMode, WriteBatch};
use state_api::raw::StateMeta;
use state_api::raw::format::{RawEntry, decode_block, open_for_restore, put_varint};
use state_api::{BackendContext, CheckpointStorage, KeyedSnapshotHandle, Result, StateError, StateKey};

use crate::backend::RocksDbKeyedStateBackend;
use crate::column_family::{cf_name, ttl_of};
use crate::instance::db_err;
use crate::layout::{corrupt, put_key_group, put_list_element};
use crate::options::RocksDbConfig;

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
pub(crate) fn put_entries(
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

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// A backend restored from canonical snapshots (any backend's full snapshots and
    /// savepoints), keeping only the key groups of `ctx`: only those sections are read.
    pub fn restore(
        ctx: &BackendContext,
        config: RocksDbConfig,
        handles: &[KeyedSnapshotHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        let mut b = Self::new(ctx, config)?;
        for handle in handles {
            let Some((mut reader, mine)) = open_for_restore(
                handle,
                storage,
                (&b.key_type, &b.key_schema),
                b.max_parallelism,
                b.range,
            )?
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
        state_api::metrics::restore("rocksdb", started.elapsed());
        Ok(b)
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

    /// Moves a restored state's canonical blocks from [`RAW_CF`] into its own column
    /// family (now that it is registered), key group by key group.
    pub(crate) fn materialize(&mut self, meta: &StateMeta) -> Result<()> {
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
                crate::layout::read_varint(&v).ok_or_else(|| corrupt(&meta.name, "bad restored-block count"))?;
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
}
