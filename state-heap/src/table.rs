//! Typed, key-group partitioned, copy-on-write state tables.
//!
//! A table holds one state: per key group a hash map from (key, namespace) to the
//! stored value, owned or shared with snapshots ([`Cow`]). The synchronous part of a
//! snapshot moves each map into an `Arc` and clones it (a few hundred pointer copies,
//! whatever the state size); the first write to a key group that a snapshot still holds
//! copies that key group's map, so the snapshot keeps the old values while the task
//! keeps writing.

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::{Equivalent, HashMap};
use state_api::raw::format::{RawEntry, SectionBuilder, deserialize, put_i64, put_serialized, put_varint};
use state_api::raw::{SnapshotCow as Cow, StateMeta, TtlValue};
use state_api::{Namespace, Result, StateKey, StateValue, TtlConfig};

use crate::estimate::{MAP_ENTRY_OVERHEAD, TABLE_ENTRY_OVERHEAD, TIMESTAMP, estimate};

/// One key group's map.
pub(crate) type KgMap<K, N, S> = HashMap<(K, N), S>;

/// Borrowed (key, namespace) that looks up a `(K, N)` without cloning either.
pub(crate) struct KeyNs<'a, K, N>(pub &'a K, pub &'a N);

impl<K: Hash, N: Hash> Hash for KeyNs<'_, K, N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Same as the tuple's Hash: fields in order.
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl<K: Eq, N: Eq> Equivalent<(K, N)> for KeyNs<'_, K, N> {
    fn equivalent(&self, key: &(K, N)) -> bool {
        *self.0 == key.0 && *self.1 == key.1
    }
}

/// The owned key of a vacant entry found by a borrowed lookup (`entry_ref`): the key
/// and namespace are cloned only when an entry is inserted, and hashed once.
impl<K: Clone, N: Clone> From<&KeyNs<'_, K, N>> for (K, N) {
    fn from(k: &KeyNs<'_, K, N>) -> Self {
        (k.0.clone(), k.1.clone())
    }
}

/// What a table stores per (key, namespace): a value, a list or a map, each element
/// with its TTL timestamp.
pub(crate) trait Stored: Clone + Send + Sync + 'static {
    /// Appends the canonical payload; with `expired_filter`, leaves expired elements out.
    /// Returns `false` (and appends nothing) when nothing is left to write.
    fn encode(
        &self,
        buf: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        meta: &StateMeta,
        expired_filter: Option<(&TtlConfig, i64)>,
    ) -> Result<bool>;
    /// Builds the stored form from a decoded entry.
    fn decode(entry: &RawEntry<'_>, meta: &StateMeta) -> Result<Self>;
    /// Removes expired elements; `false` when nothing is left.
    fn retain_live(&mut self, ttl: &TtlConfig, now: i64) -> bool;
    /// Whether any element has expired.
    fn has_expired(&self, ttl: &TtlConfig, now: i64) -> bool;
    /// Estimated bytes (see [`crate::estimate`]).
    fn estimate(&self) -> u64;
}

fn wrong_shape(meta: &StateMeta) -> state_api::StateError {
    state_api::StateError::Corrupt {
        source_name: format!("state `{}`", meta.name),
        section: "entry".into(),
        detail: "entry shape does not match the state kind".into(),
        source: None,
    }
}

impl<V: StateValue> Stored for TtlValue<V> {
    fn encode(
        &self,
        buf: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        meta: &StateMeta,
        filter: Option<(&TtlConfig, i64)>,
    ) -> Result<bool> {
        if filter.is_some_and(|(ttl, now)| ttl.is_expired(self.timestamp, now)) {
            return Ok(false);
        }
        if meta.ttl.is_some() {
            put_i64(buf, self.timestamp);
        }
        put_serialized(buf, scratch, &self.value, &meta.name, "value")?;
        Ok(true)
    }

    fn decode(entry: &RawEntry<'_>, meta: &StateMeta) -> Result<Self> {
        match entry {
            RawEntry::Value { timestamp, value, .. } => {
                Ok(TtlValue::new(deserialize(value, &meta.name, "value")?, *timestamp))
            }
            _ => Err(wrong_shape(meta)),
        }
    }

    fn retain_live(&mut self, ttl: &TtlConfig, now: i64) -> bool {
        !ttl.is_expired(self.timestamp, now)
    }

    fn has_expired(&self, ttl: &TtlConfig, now: i64) -> bool {
        ttl.is_expired(self.timestamp, now)
    }

    fn estimate(&self) -> u64 {
        estimate(&self.value) + TIMESTAMP
    }
}

impl<E: StateValue> Stored for Vec<TtlValue<E>> {
    fn encode(
        &self,
        buf: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        meta: &StateMeta,
        filter: Option<(&TtlConfig, i64)>,
    ) -> Result<bool> {
        let live = |tv: &&TtlValue<E>| !filter.is_some_and(|(ttl, now)| ttl.is_expired(tv.timestamp, now));
        let n = self.iter().filter(live).count();
        if n == 0 {
            return Ok(false);
        }
        put_varint(buf, n as u64);
        for tv in self.iter().filter(live) {
            if meta.ttl.is_some() {
                put_i64(buf, tv.timestamp);
            }
            put_serialized(buf, scratch, &tv.value, &meta.name, "list element")?;
        }
        Ok(true)
    }

    fn decode(entry: &RawEntry<'_>, meta: &StateMeta) -> Result<Self> {
        match entry {
            RawEntry::List { items, .. } => items
                .iter()
                .map(|(ts, bytes)| Ok(TtlValue::new(deserialize(bytes, &meta.name, "list element")?, *ts)))
                .collect(),
            _ => Err(wrong_shape(meta)),
        }
    }

    fn retain_live(&mut self, ttl: &TtlConfig, now: i64) -> bool {
        self.retain(|tv| !ttl.is_expired(tv.timestamp, now));
        !self.is_empty()
    }

    fn has_expired(&self, ttl: &TtlConfig, now: i64) -> bool {
        self.iter().any(|tv| ttl.is_expired(tv.timestamp, now))
    }

    fn estimate(&self) -> u64 {
        std::mem::size_of::<Self>() as u64 + self.iter().map(Stored::estimate).sum::<u64>()
    }
}

impl<UK: StateKey, UV: StateValue> Stored for HashMap<UK, TtlValue<UV>> {
    fn encode(
        &self,
        buf: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        meta: &StateMeta,
        filter: Option<(&TtlConfig, i64)>,
    ) -> Result<bool> {
        let live = |(_, tv): &(&UK, &TtlValue<UV>)| !filter.is_some_and(|(ttl, now)| ttl.is_expired(tv.timestamp, now));
        let n = self.iter().filter(live).count();
        if n == 0 {
            return Ok(false);
        }
        put_varint(buf, n as u64);
        for (uk, tv) in self.iter().filter(live) {
            put_serialized(buf, scratch, uk, &meta.name, "user key")?;
            if meta.ttl.is_some() {
                put_i64(buf, tv.timestamp);
            }
            put_serialized(buf, scratch, &tv.value, &meta.name, "user value")?;
        }
        Ok(true)
    }

    fn decode(entry: &RawEntry<'_>, meta: &StateMeta) -> Result<Self> {
        match entry {
            RawEntry::Map { entries, .. } => {
                let mut map = HashMap::with_capacity(entries.len());
                for (uk, ts, uv) in entries {
                    map.insert(
                        deserialize(uk, &meta.name, "user key")?,
                        TtlValue::new(deserialize(uv, &meta.name, "user value")?, *ts),
                    );
                }
                Ok(map)
            }
            _ => Err(wrong_shape(meta)),
        }
    }

    fn retain_live(&mut self, ttl: &TtlConfig, now: i64) -> bool {
        self.retain(|_, tv| !ttl.is_expired(tv.timestamp, now));
        !self.is_empty()
    }

    fn has_expired(&self, ttl: &TtlConfig, now: i64) -> bool {
        self.values().any(|tv| ttl.is_expired(tv.timestamp, now))
    }

    fn estimate(&self) -> u64 {
        std::mem::size_of::<Self>() as u64 + self.iter().map(|(k, v)| map_entry_estimate(k, v)).sum::<u64>()
    }
}

/// Estimated bytes of one map-state entry.
pub(crate) fn map_entry_estimate<UK: StateKey, UV: StateValue>(user_key: &UK, value: &TtlValue<UV>) -> u64 {
    estimate(user_key) + value.estimate() + MAP_ENTRY_OVERHEAD
}

/// Estimated bytes of a (key, namespace) table entry without its stored value.
pub(crate) fn key_ns_estimate<K: StateKey, N: Namespace>(key: &K, ns: &N) -> u64 {
    estimate(key) + estimate(ns) + TABLE_ENTRY_OVERHEAD
}

/// A typed state table.
pub(crate) struct Table<K, N, S> {
    pub(crate) kgs: Vec<Cow<KgMap<K, N, S>>>,
}

impl<K: StateKey, N: Namespace, S: Stored> Table<K, N, S> {
    pub(crate) fn new(key_groups: usize) -> Self {
        Table {
            kgs: (0..key_groups).map(|_| Cow::default()).collect(),
        }
    }

    /// Inserts decoded entries of one key group.
    pub(crate) fn load(&mut self, kg_index: usize, entries: &[RawEntry<'_>], meta: &StateMeta) -> Result<()> {
        let map = self.kgs[kg_index].get_mut();
        map.reserve(entries.len());
        for entry in entries {
            let (key, namespace) = match entry {
                RawEntry::Value { key, namespace, .. }
                | RawEntry::List { key, namespace, .. }
                | RawEntry::Map { key, namespace, .. } => (key, namespace),
            };
            let k: K = deserialize(key, &meta.name, "key")?;
            let n: N = deserialize(namespace, &meta.name, "namespace")?;
            map.insert((k, n), S::decode(entry, meta)?);
        }
        Ok(())
    }
}

/// A table with its types erased, as the backend holds it.
pub(crate) trait ErasedTable<K>: Send {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Pins every key group for a snapshot (the synchronous part: owned maps move into
    /// `Arc`s, then `Arc` clones only).
    fn pin(&mut self) -> Box<dyn PinnedTable>;
    /// Keys with an entry in namespace `ns` (which must be a `&N`).
    fn keys_in(&self, ns: &dyn Any) -> Vec<K>;
    /// Every (key, namespace) pair with an entry, as a `Vec<(K, N)>`.
    fn keys_and_namespaces(&self) -> Box<dyn Any>;
    /// Entries in key group `kg_index`.
    fn key_group_len(&self, kg_index: usize) -> usize;
    /// Removes expired entries of key group `kg_index`; with `measure`, returns the
    /// estimated bytes freed (0 otherwise).
    fn cleanup_key_group(&mut self, kg_index: usize, ttl: &TtlConfig, now: i64, measure: bool) -> u64;
    /// Estimated bytes of every entry.
    fn estimate_bytes(&self) -> u64;
    /// Estimated bytes of (key, ns)'s entry in key group `kg_index` (0 when absent).
    fn entry_estimate(&self, kg_index: usize, key: &K, ns: &dyn Any) -> u64;
    /// Number of (key, namespace) entries.
    fn len(&self) -> usize;
    /// Whether (key, ns) has an entry in key group `kg_index` (`ns` must be a `&N`).
    fn contains(&self, kg_index: usize, key: &K, ns: &dyn Any) -> bool;
    /// Removes (key, ns) from key group `kg_index`.
    fn remove(&mut self, kg_index: usize, key: &K, ns: &dyn Any);
}

impl<K: StateKey, N: Namespace, S: Stored> ErasedTable<K> for Table<K, N, S> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn pin(&mut self) -> Box<dyn PinnedTable> {
        Box::new(Pinned {
            kgs: self.kgs.iter_mut().map(Cow::share).collect(),
        })
    }

    fn keys_and_namespaces(&self) -> Box<dyn Any> {
        let pairs: Vec<(K, N)> = self
            .kgs
            .iter()
            .flat_map(|m| m.get().keys().map(|(k, n)| (k.clone(), n.clone())))
            .collect();
        Box::new(pairs)
    }

    fn keys_in(&self, ns: &dyn Any) -> Vec<K> {
        let Some(ns) = ns.downcast_ref::<N>() else {
            return Vec::new();
        };
        self.kgs
            .iter()
            .flat_map(|m| m.get().keys().filter(|(_, n)| n == ns).map(|(k, _)| k.clone()))
            .collect()
    }

    fn key_group_len(&self, kg_index: usize) -> usize {
        self.kgs.get(kg_index).map_or(0, |m| m.get().len())
    }

    fn cleanup_key_group(&mut self, kg_index: usize, ttl: &TtlConfig, now: i64, measure: bool) -> u64 {
        let Some(kg) = self.kgs.get_mut(kg_index) else {
            return 0;
        };
        if !kg.get().values().any(|s| s.has_expired(ttl, now)) {
            return 0;
        }
        let mut freed = 0;
        kg.get_mut().retain(|(k, n), s| {
            let before = if measure { s.estimate() } else { 0 };
            let keep = s.retain_live(ttl, now);
            if measure {
                freed += if keep {
                    before.saturating_sub(s.estimate())
                } else {
                    before + key_ns_estimate(k, n)
                };
            }
            keep
        });
        freed
    }

    fn estimate_bytes(&self) -> u64 {
        self.kgs
            .iter()
            .flat_map(|m| m.get().iter())
            .map(|((k, n), s)| key_ns_estimate(k, n) + s.estimate())
            .sum()
    }

    fn entry_estimate(&self, kg_index: usize, key: &K, ns: &dyn Any) -> u64 {
        match (ns.downcast_ref::<N>(), self.kgs.get(kg_index)) {
            (Some(ns), Some(map)) => map
                .get()
                .get(&KeyNs(key, ns))
                .map_or(0, |s| key_ns_estimate(key, ns) + s.estimate()),
            _ => 0,
        }
    }

    fn len(&self) -> usize {
        self.kgs.iter().map(|m| m.get().len()).sum()
    }

    fn contains(&self, kg_index: usize, key: &K, ns: &dyn Any) -> bool {
        match (ns.downcast_ref::<N>(), self.kgs.get(kg_index)) {
            (Some(ns), Some(map)) => map.get().contains_key(&KeyNs(key, ns)),
            _ => false,
        }
    }

    fn remove(&mut self, kg_index: usize, key: &K, ns: &dyn Any) {
        if let (Some(ns), Some(map)) = (ns.downcast_ref::<N>(), self.kgs.get_mut(kg_index)) {
            map.get_mut().remove(&KeyNs(key, ns));
        }
    }
}

/// A table pinned by a snapshot: writes key groups on the asynchronous thread.
pub(crate) trait PinnedTable: Send {
    /// Appends key group `kg_index`'s entries to the current block of `out`.
    fn write_key_group(
        &self,
        kg_index: usize,
        out: &mut SectionBuilder,
        meta: &StateMeta,
        filter: Option<(&TtlConfig, i64)>,
    ) -> Result<()>;
}

struct Pinned<K, N, S> {
    kgs: Vec<Arc<KgMap<K, N, S>>>,
}

impl<K: StateKey, N: Namespace, S: Stored> PinnedTable for Pinned<K, N, S> {
    fn write_key_group(
        &self,
        kg_index: usize,
        out: &mut SectionBuilder,
        meta: &StateMeta,
        filter: Option<(&TtlConfig, i64)>,
    ) -> Result<()> {
        let mut scratch = std::mem::take(&mut out.scratch);
        let mut entry = Vec::new();
        for ((k, n), s) in self.kgs[kg_index].iter() {
            entry.clear();
            put_serialized(&mut entry, &mut scratch, k, &meta.name, "key")?;
            put_serialized(&mut entry, &mut scratch, n, &meta.name, "namespace")?;
            if s.encode(&mut entry, &mut scratch, meta, filter)? {
                out.block().extend_from_slice(&entry);
                out.entry_done();
            }
        }
        out.scratch = scratch;
        Ok(())
    }
}
