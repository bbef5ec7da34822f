//! The raw keyed-state operations on RocksDB: reads and writes of the current key's
//! state, list append by merge, map iteration by prefix scan, TTL cleanup.

use std::collections::HashSet;

use rocksdb::{Direction, IteratorMode, WriteBatch};
use state_api::raw::format::deserialize;
use state_api::raw::{RawKeyedBackend, RawMapIter, append_postcard};
use state_api::raw::{StateId, StateMeta, StateShape, TtlValue};
use state_api::{
    AsyncSnapshot, Clock, KeyGroupRange, KeyedSnapshotHandle, Migrations, Namespace, Result, StateError, StateKey,
    StateValue, TtlConfig,
};

use crate::backend::{Current, RState, RocksDbKeyedStateBackend, unknown};
use crate::column_family::fully_expired;
use crate::instance::db_err;
use crate::layout::{corrupt, list_elements, prefix_successor, put_key_group, put_list_element, split_value};
use state_api::IncrementalKeyedHandle;

macro_rules! state_and_cf {
    ($self:ident, $id:expr) => {{
        let st = $self.states.get($id.0 as usize).ok_or_else(|| unknown($id))?;
        let cf = $self.db.cf_handle(&st.cf).ok_or_else(|| StateError::UnknownState {
            name: st.meta.name.clone(),
        })?;
        (st, cf)
    }};
}

/// Decodes a stored value-shaped entry (`[timestamp if TTL][postcard]`) of state `st`.
pub(crate) fn decode_stored<V: StateValue>(bytes: &[u8], st: &RState, role: &'static str) -> Result<TtlValue<V>> {
    let (ts, vb) = split_value(bytes, st.ttl.is_some(), &st.meta.name)?;
    Ok(TtlValue::new(deserialize(vb, &st.meta.name, role)?, ts))
}

/// Builds `[key group][key][namespace]` into `buf`.
pub(crate) fn make_key<K, N: Namespace>(
    buf: &mut Vec<u8>,
    current: &Option<Current<K>>,
    ns: &N,
    state: &str,
) -> Result<()> {
    let cur = current.as_ref().ok_or_else(|| StateError::NoCurrentKey)?;
    buf.clear();
    buf.extend_from_slice(&cur.prefix);
    append_postcard(ns, buf).map_err(|e| StateError::serialization(state.to_string(), "namespace", e))?;
    Ok(())
}

pub(crate) fn encode<T: serde::Serialize>(buf: &mut Vec<u8>, value: &T, state: &str, role: &'static str) -> Result<()> {
    append_postcard(value, buf).map_err(|e| StateError::serialization(state.to_string(), role, e))?;
    Ok(())
}

pub(crate) fn encode_value<V: serde::Serialize>(
    buf: &mut Vec<u8>,
    tv: &TtlValue<V>,
    ttl: bool,
    state: &str,
) -> Result<()> {
    buf.clear();
    if ttl {
        buf.extend_from_slice(&tv.timestamp.to_be_bytes());
    }
    encode(buf, &tv.value, state, "value")
}

pub(crate) fn encode_list<E: serde::Serialize>(
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

impl<K: StateKey> RawKeyedBackend for RocksDbKeyedStateBackend<K> {
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

    fn backend_name(&self) -> &'static str {
        "rocksdb"
    }

    fn register_value<V: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
        migrations: &Migrations,
    ) -> Result<StateId> {
        self.register_shape::<N>(meta, ttl, migrations)
    }

    fn register_list<E: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
        migrations: &Migrations,
    ) -> Result<StateId> {
        self.register_shape::<N>(meta, ttl, migrations)
    }

    fn register_map<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
        migrations: &Migrations,
    ) -> Result<StateId> {
        self.register_shape::<N>(meta, ttl, migrations)
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

    /// Moves the encoded bytes: each source value is appended to the target as it is
    /// stored (no decoding), by the merge operator (or, for TTL lists, which are kept
    /// as full values, by one read and one put), and the sources deleted, in one batch.
    fn raw_list_merge<E: StateValue, N: Namespace>(&mut self, id: StateId, target: &N, sources: &[N]) -> Result<()> {
        let (st, cf) = state_and_cf!(self, id);
        let mut target_key = Vec::new();
        make_key(&mut target_key, &self.current, target, &st.meta.name)?;
        let mut batch = WriteBatch::default();
        let mut appended = Vec::new();
        let mut source_key = Vec::new();
        for source in sources {
            make_key(&mut source_key, &self.current, source, &st.meta.name)?;
            let bytes = self
                .db
                .get_pinned_cf(cf, &source_key)
                .map_err(|e| db_err("merging lists", e))?;
            if let Some(bytes) = bytes {
                appended.extend_from_slice(&bytes);
                batch.delete_cf(cf, &source_key);
            }
        }
        if !appended.is_empty() {
            if st.ttl.is_some() {
                let existing = self
                    .db
                    .get_pinned_cf(cf, &target_key)
                    .map_err(|e| db_err("merging lists", e))?;
                let mut full = existing.map(|e| e.to_vec()).unwrap_or_default();
                full.extend_from_slice(&appended);
                batch.put_cf(cf, &target_key, &full);
            } else {
                batch.merge_cf(cf, &target_key, &appended);
            }
        }
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(|e| db_err("merging lists", e))
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
                .map_err(|e| corrupt(&st.meta.name, format!("key does not decode: {e}")).with_source(e))?;
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

    fn keys_and_namespaces<N: Namespace>(&mut self, id: StateId) -> Result<Vec<(K, N)>> {
        let (st, cf) = state_and_cf!(self, id);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for r in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, _) = r.map_err(|e| db_err("listing keys and namespaces", e))?;
            let rest = k
                .get(self.prefix_len..)
                .ok_or_else(|| corrupt(&st.meta.name, "key shorter than its key group"))?;
            let (key, after_key) = postcard::take_from_bytes::<K>(rest)
                .map_err(|e| corrupt(&st.meta.name, format!("key does not decode: {e}")).with_source(e))?;
            let (ns, after_ns) = postcard::take_from_bytes::<N>(after_key)
                .map_err(|e| corrupt(&st.meta.name, format!("namespace does not decode: {e}")).with_source(e))?;
            // A map has one entry per user key: report its (key, namespace) once.
            if seen.insert(rest[..rest.len() - after_ns.len()].to_vec()) {
                out.push((key, ns));
            }
        }
        Ok(out)
    }

    fn approximate_entries(&mut self, id: StateId) -> Result<u64> {
        let (_, cf) = state_and_cf!(self, id);
        Ok(self
            .db
            .property_int_value_cf(cf, "rocksdb.estimate-num-keys")
            .map_err(|e| db_err("estimating the number of keys", e))?
            .unwrap_or(0))
    }

    fn approximate_size(&mut self, id: StateId) -> Result<u64> {
        let (_, cf) = state_and_cf!(self, id);
        let mut bytes = 0;
        for property in ["rocksdb.estimate-live-data-size", "rocksdb.cur-size-all-mem-tables"] {
            bytes += self
                .db
                .property_int_value_cf(cf, property)
                .map_err(|e| db_err(format!("reading `{property}`"), e))?
                .unwrap_or(0);
        }
        Ok(bytes)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) {
        self.confirm_checkpoint(checkpoint_id);
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        self.forget_checkpoint(checkpoint_id);
    }

    fn snapshot(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<KeyedSnapshotHandle>> {
        self.full_snapshot(checkpoint_id)
    }

    fn supports_incremental(&self) -> bool {
        true
    }

    fn snapshot_incremental(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<IncrementalKeyedHandle>> {
        self.incremental_snapshot(checkpoint_id)
    }
}
