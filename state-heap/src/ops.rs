//! The raw keyed-state operations of the heap backend: reads and writes of the current
//! key's state in copy-on-write tables, memory accounting, TTL cleanup, snapshots.

use state_api::raw::format::{SnapshotHeader, write_keyed_stream};
use state_api::raw::{RawKeyedBackend, RawMapIter};
use state_api::raw::{StateId, StateMeta, TtlValue};
use state_api::{
    AsyncSnapshot, Clock, KeyGroupRange, KeyedSnapshotHandle, Migrations, Namespace, Result, StateError, StateKey,
    StateValue, TtlConfig,
};

use crate::table::{KeyNs, PinnedTable, Stored, key_ns_estimate, map_entry_estimate};

use crate::keyed::{CurrentKey, HeapKeyedStateBackend, RawBlock, unknown_id};

impl<K: StateKey> RawKeyedBackend for HeapKeyedStateBackend<K> {
    type Key = K;

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    fn set_current_key(&mut self, key: &K) -> Result<()> {
        // The same key again (a timer firing for it, several states per record): its
        // key group is known.
        if self.current.as_ref().is_some_and(|c| c.key == *key) {
            return Ok(());
        }
        let key_group = state_api::keygroup::key_group_and_bytes(key, self.max_parallelism, &mut self.key_scratch)?;
        let kg_index = self.range.owned_index(key_group)?;
        self.current = Some(CurrentKey {
            key: key.clone(),
            key_group,
            kg_index,
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
        "heap"
    }

    fn register_value<V: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
        migrations: &Migrations,
    ) -> Result<StateId> {
        self.register_shape::<N, TtlValue<V>>(meta, ttl, migrations)
    }

    fn register_list<E: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
        migrations: &Migrations,
    ) -> Result<StateId> {
        self.register_shape::<N, Vec<TtlValue<E>>>(meta, ttl, migrations)
    }

    fn register_map<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
        migrations: &Migrations,
    ) -> Result<StateId> {
        self.register_shape::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(meta, ttl, migrations)
    }

    fn raw_value_read<V: StateValue, N: Namespace, R>(
        &mut self,
        id: StateId,
        ns: &N,
        f: impl FnOnce(&TtlValue<V>) -> R,
    ) -> Result<Option<R>> {
        let (key, map) = self.kg::<N, TtlValue<V>>(id)?;
        Ok(map.get(&KeyNs(key, ns)).map(f))
    }

    fn raw_value_write<V: StateValue, N: Namespace>(&mut self, id: StateId, ns: &N, value: TtlValue<V>) -> Result<()> {
        if self.memory.is_some() {
            self.kg::<N, TtlValue<V>>(id)?;
            let old = self.current_entry_estimate(id, ns);
            let new = self.new_entry_estimate(ns) + value.estimate();
            self.account(old, new)?;
        }
        let (key, map) = self.kg_mut::<N, TtlValue<V>>(id)?;
        map.entry_ref(&KeyNs(key, ns)).insert(value);
        Ok(())
    }

    fn raw_list_read<E: StateValue, N: Namespace, R>(
        &mut self,
        id: StateId,
        ns: &N,
        f: impl FnOnce(&[TtlValue<E>]) -> R,
    ) -> Result<Option<R>> {
        let (key, map) = self.kg::<N, Vec<TtlValue<E>>>(id)?;
        Ok(map.get(&KeyNs(key, ns)).filter(|l| !l.is_empty()).map(|l| f(l)))
    }

    fn raw_list_append<E: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        values: Vec<TtlValue<E>>,
    ) -> Result<()> {
        let estimate = self.memory.is_some().then(|| values.iter().map(Stored::estimate).sum());
        self.list_add(id, ns, estimate, |list| match list {
            Some(list) => {
                list.extend(values);
                None
            }
            None => Some(values),
        })
    }

    fn raw_list_push<E: StateValue, N: Namespace>(&mut self, id: StateId, ns: &N, value: TtlValue<E>) -> Result<()> {
        let estimate = self.memory.is_some().then(|| value.estimate());
        self.list_add(id, ns, estimate, |list| match list {
            Some(list) => {
                list.push(value);
                None
            }
            None => Some(vec![value]),
        })
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
        if self.memory.is_some() {
            self.kg::<N, Vec<TtlValue<E>>>(id)?;
            let old = self.current_entry_estimate(id, ns);
            let new = self.new_entry_estimate(ns) + values.estimate();
            self.account(old, new)?;
        }
        let (key, map) = self.kg_mut::<N, Vec<TtlValue<E>>>(id)?;
        map.entry_ref(&KeyNs(key, ns)).insert(values);
        Ok(())
    }

    fn raw_map_read<UK: StateKey, UV: StateValue, N: Namespace, R>(
        &mut self,
        id: StateId,
        ns: &N,
        user_key: &UK,
        f: impl FnOnce(&TtlValue<UV>) -> R,
    ) -> Result<Option<R>> {
        let (key, map) = self.kg::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(id)?;
        Ok(map.get(&KeyNs(key, ns)).and_then(|m| m.get(user_key)).map(f))
    }

    fn raw_map_write<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        user_key: UK,
        value: TtlValue<UV>,
    ) -> Result<()> {
        if self.memory.is_some() {
            let (old_entry, has_map) = {
                let (key, map) = self.kg::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(id)?;
                match map.get(&KeyNs(key, ns)) {
                    Some(m) => (m.get(&user_key).map_or(0, |v| map_entry_estimate(&user_key, v)), true),
                    None => (0, false),
                }
            };
            let mut new = map_entry_estimate(&user_key, &value);
            if !has_map {
                new += self.new_entry_estimate(ns) + std::mem::size_of::<hashbrown::HashMap<UK, TtlValue<UV>>>() as u64;
            }
            self.account(old_entry, new)?;
        }
        let (key, map) = self.kg_mut::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(id)?;
        map.entry_ref(&KeyNs(key, ns)).or_default().insert(user_key, value);
        Ok(())
    }

    fn raw_map_remove<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        user_key: &UK,
    ) -> Result<()> {
        let present = {
            let (key, map) = self.kg::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(id)?;
            map.get(&KeyNs(key, ns)).is_some_and(|m| m.contains_key(user_key))
        };
        if !present {
            return Ok(());
        }
        let measure = self.memory.is_some();
        let (key, map) = self.kg_mut::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(id)?;
        let mut freed = 0;
        let now_empty = match map.get_mut(&KeyNs(key, ns)) {
            Some(m) => {
                if let Some(v) = m.remove(user_key).filter(|_| measure) {
                    freed += map_entry_estimate(user_key, &v);
                }
                m.is_empty()
            }
            None => false,
        };
        if now_empty {
            if measure {
                freed += key_ns_estimate(key, ns) + std::mem::size_of::<hashbrown::HashMap<UK, TtlValue<UV>>>() as u64;
            }
            map.remove(&KeyNs(key, ns));
        }
        self.release(freed);
        Ok(())
    }

    fn raw_map_iter<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
    ) -> Result<RawMapIter<'_, UK, UV>> {
        let (key, map) = self.kg::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(id)?;
        match map.get(&KeyNs(key, ns)) {
            Some(m) => Ok(Box::new(m.iter().map(|(k, v)| Ok((k.clone(), v.clone()))))),
            None => Ok(Box::new(std::iter::empty())),
        }
    }

    fn raw_clear<N: Namespace>(&mut self, id: StateId, ns: &N) -> Result<()> {
        let freed = if self.memory.is_some() {
            self.current_entry_estimate(id, ns)
        } else {
            0
        };
        let cur = self.current.as_ref().ok_or_else(|| StateError::NoCurrentKey)?;
        let state = self.states.get_mut(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        // Checked first so that clearing nothing never copies a key group a snapshot holds.
        if state.table.contains(cur.kg_index, &cur.key, ns) {
            state.table.remove(cur.kg_index, &cur.key, ns);
        }
        self.release(freed);
        Ok(())
    }

    fn ttl_cleanup_step(&mut self, id: StateId, entries: usize) -> Result<()> {
        let now = self.clock.now_millis();
        let n = self.range.len() as usize;
        let measure = self.memory.is_some();
        let mut freed = 0;
        let state = self.states.get_mut(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        let Some(ttl) = state.ttl.clone() else {
            return Ok(());
        };
        // Amortized: every access earns `entries` credits; a key group is cleaned once
        // the credits cover its size, so on average `entries` entries are checked per access.
        state.cleanup.credit = state.cleanup.credit.saturating_add(entries);
        for _ in 0..n {
            let kg = state.cleanup.kg_index % n.max(1);
            let len = state.table.key_group_len(kg);
            if len > state.cleanup.credit {
                break;
            }
            state.cleanup.credit -= len;
            freed += state.table.cleanup_key_group(kg, &ttl, now, measure);
            state.cleanup.kg_index = (kg + 1) % n.max(1);
        }
        self.release(freed);
        Ok(())
    }

    fn keys_in<N: Namespace>(&mut self, id: StateId, ns: &N) -> Result<Vec<K>> {
        let state = self.states.get(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        Ok(state.table.keys_in(ns))
    }

    fn keys_and_namespaces<N: Namespace>(&mut self, id: StateId) -> Result<Vec<(K, N)>> {
        let state = self.states.get(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        state
            .table
            .keys_and_namespaces()
            .downcast::<Vec<(K, N)>>()
            .map(|pairs| *pairs)
            .map_err(|_| StateError::IncompatibleType {
                name: state.meta.name.clone(),
                role: "namespace",
                existing: state.meta.namespace_type.clone(),
                requested: state_api::raw::type_name_of::<N>(),
            })
    }

    fn approximate_entries(&mut self, id: StateId) -> Result<u64> {
        let state = self.states.get(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        Ok(state.table.len() as u64)
    }

    fn approximate_size(&mut self, id: StateId) -> Result<u64> {
        let state = self.states.get(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        Ok(state.table.estimate_bytes())
    }

    fn snapshot(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<KeyedSnapshotHandle>> {
        // Synchronous part: pin every key group (Arc clones) and the restored raw blocks.
        let now = self.clock.now_millis();
        let mut metas: Vec<StateMeta> = Vec::with_capacity(self.states.len() + self.restored.len());
        let mut pinned: Vec<(Box<dyn PinnedTable>, Option<TtlConfig>)> = Vec::with_capacity(self.states.len());
        for state in &mut self.states {
            metas.push(state.meta.clone());
            pinned.push((
                state.table.pin(),
                state.ttl.clone().filter(TtlConfig::is_cleanup_full_snapshot),
            ));
        }
        let raw: Vec<Vec<Option<RawBlock>>> = self
            .restored
            .values()
            .map(|r| {
                metas.push(r.meta.clone());
                r.blocks.clone()
            })
            .collect();
        let header = SnapshotHeader {
            key_type: self.key_type.clone(),
            key_schema: self.key_schema.clone(),
            max_parallelism: self.max_parallelism,
            key_group_range: self.range,
            checkpoint_id,
            states: metas,
        };
        let range = self.range;
        Ok(AsyncSnapshot::new(checkpoint_id, move |storage| {
            write_keyed_stream(storage, &header, "keyed-state", |kg, section| {
                let i = range.index_of(kg).unwrap_or_default();
                for (si, (table, cleanup)) in pinned.iter().enumerate() {
                    let filter = cleanup.as_ref().map(|t| (t, now));
                    table.write_key_group(i, section, &header.states[si], filter)?;
                    section.finish_block(si as u32);
                }
                for (ri, blocks) in raw.iter().enumerate() {
                    if let Some(b) = &blocks[i] {
                        section.raw_block((pinned.len() + ri) as u32, b.count, &b.raw);
                    }
                }
                Ok(())
            })
        }))
    }
}
