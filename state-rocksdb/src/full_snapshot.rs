//! Full snapshots: a RocksDB checkpoint (hard links) taken synchronously, written in
//! the canonical format by the asynchronous part, key group by key group.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode};
use state_api::raw::format::{SectionBuilder, SnapshotHeader, put_bytes, put_i64, put_varint, write_keyed_stream};
use state_api::raw::{StateMeta, StateShape};
use state_api::{
    AsyncSnapshot, CheckpointStorage, Clock, KeyedSnapshotHandle, Result, StateError, StateKey, TtlConfig,
};

use crate::backend::RocksDbKeyedStateBackend;
use crate::column_family::{cf_name, cf_options};
use crate::instance::{INSTANCE, db_err};
use crate::layout::{corrupt, encoded_len, list_elements, put_key_group, split_value};
use crate::options::RocksDbConfig;
use crate::restore::{RAW_CF, raw_key};

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// The synchronous part of a full snapshot in the canonical format.
    pub(crate) fn full_snapshot(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<KeyedSnapshotHandle>> {
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
                ns_len: Some(Arc::new(s.ns_len) as EncodedLen),
                raw: false,
            })
            .collect();
        states.extend(self.restored.values().map(|m| SnapState {
            meta: m.clone(),
            cleanup: None,
            ns_len: None,
            raw: true,
        }));
        let has_raw = self.db.cf_handle(RAW_CF).is_some();
        let job = FullSnapshot {
            dir: snap_dir,
            config: self.config.clone(),
            clock: Arc::clone(&self.clock),
            header: SnapshotHeader {
                key_type: self.key_type.clone(),
                key_schema: self.key_schema.clone(),
                max_parallelism: self.max_parallelism,
                key_group_range: self.range,
                checkpoint_id,
                states: states.iter().map(|s| s.meta.clone()).collect(),
            },
            states,
            has_raw,
            prefix_len: self.prefix_len,
            now,
            key_len: Arc::new(encoded_len::<K>),
        };
        let keep_dir = self.db.hold_dir();
        Ok(AsyncSnapshot::new(checkpoint_id, move |storage| {
            let result = job.write(storage);
            let _ = std::fs::remove_dir_all(&job.dir);
            drop(keep_dir);
            result
        }))
    }
}

/// A canonical map entry being assembled: key, namespace, (user key, timestamp, value)s.
pub(crate) type MapGroup = (Vec<u8>, Vec<u8>, Vec<(Vec<u8>, i64, Vec<u8>)>);

/// How many bytes of a key (or of what follows the key: a namespace) one encoded value
/// takes; `None` when they do not decode.
pub type EncodedLen = Arc<dyn Fn(&[u8]) -> Option<usize> + Send + Sync>;

pub(crate) struct SnapState {
    pub(crate) meta: StateMeta,
    pub(crate) cleanup: Option<TtlConfig>,
    /// Splits a map entry's namespace from its user key (`None`: a restored state not
    /// registered, whose map entries cannot be split).
    pub(crate) ns_len: Option<EncodedLen>,
    /// Whether restored canonical blocks of this state may wait in the `_restored`
    /// column family (passed through unchanged).
    pub(crate) raw: bool,
}

/// The asynchronous part of a full snapshot: reads the RocksDB checkpoint and writes the
/// canonical format, key group by key group.
pub(crate) struct FullSnapshot {
    pub(crate) dir: PathBuf,
    pub(crate) config: RocksDbConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) header: SnapshotHeader,
    pub(crate) states: Vec<SnapState>,
    /// Whether the `_restored` column family exists.
    pub(crate) has_raw: bool,
    pub(crate) prefix_len: usize,
    pub(crate) now: i64,
    /// The length of a key's encoding.
    pub(crate) key_len: EncodedLen,
}

impl FullSnapshot {
    pub(crate) fn write(&self, storage: &dyn CheckpointStorage) -> Result<KeyedSnapshotHandle> {
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
                if s.raw
                    && let Some(raw_cf) = db.cf_handle(RAW_CF)
                {
                    let got = db
                        .get_cf(raw_cf, raw_key(&s.meta.name, kg))
                        .map_err(|e| db_err("reading restored state", e))?;
                    if let Some(v) = got {
                        let (count, used) = crate::layout::read_varint(&v)
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
            let klen = (self.key_len)(rest).ok_or_else(|| corrupt(name, "key does not decode"))?;
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
                    let ns_len = s.ns_len.as_ref().ok_or_else(|| {
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
