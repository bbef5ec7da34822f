//! Incremental checkpoints: RocksDB's native files, uploading only data (SST) files that
//! the last completed checkpoint did not already have.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, FlushOptions, IteratorMode, WriteBatch};
use state_api::raw::{check_key, type_name_of};
use state_api::{
    AsyncSnapshot, BackendContext, CheckpointStorage, IncrementalKeyedHandle, KeyGroupRange, Result, Schema,
    SnapshotFile, StateError, StateKey, StreamHandle,
};

use crate::backend::RocksDbKeyedStateBackend;
use crate::column_family::{cf_options, column_family_name, ttl_of};
use crate::instance::{INSTANCE, db_err};
use crate::layout::{prefix_successor, put_key_group};
use crate::options::RocksDbConfig;

fn io(context: String) -> impl FnOnce(std::io::Error) -> StateError {
    move |e| StateError::from_io(context, e)
}

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// The synchronous part of an incremental checkpoint: a native RocksDB checkpoint
    /// (memtable flush and hard links). The asynchronous part uploads the data files the
    /// last completed checkpoint did not have to the storage's shared area, and the small
    /// descriptor files (MANIFEST, CURRENT, OPTIONS) as files of this checkpoint. Call
    /// `notify_checkpoint_complete` or `notify_checkpoint_aborted` after. Reached through
    /// the trait method `snapshot_incremental`.
    pub(crate) fn incremental_snapshot(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<IncrementalKeyedHandle>> {
        self.native_snapshot(checkpoint_id, true)
    }

    /// A **native full checkpoint** (Flink 2.x's full snapshot of RocksDB): the
    /// synchronous part is the same native RocksDB checkpoint as an incremental one, and
    /// the asynchronous part uploads *every* file as this checkpoint's own (exclusive)
    /// file: nothing is reused from earlier checkpoints, and nothing later reuses it, so
    /// the checkpoint stands alone and is deleted with it.
    ///
    /// It is restored like an incremental checkpoint, by opening the files
    /// ([`restore_incremental`](Self::restore_incremental)), which is much faster than
    /// replaying the canonical stream of [`snapshot`](state_api::KeyedStateBackend::snapshot);
    /// rescaling works the same way (key groups outside the range are range-deleted or
    /// copied). Savepoint tools read it as an incremental checkpoint (state-savepoint's
    /// feature `rocksdb`). A canonical snapshot stays the portable choice: any backend
    /// restores it.
    ///
    /// ```
    /// use state_api::{BackendContext, KeyedStateBackend, ValueStateDescriptor};
    /// use state_heap::MemoryCheckpointStorage;
    /// use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
    ///
    /// let ctx = BackendContext::single(128);
    /// let mut b = RocksDbKeyedStateBackend::<u64>::new(&ctx, RocksDbConfig::default())?;
    /// let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    /// b.set_current_key(&7)?;
    /// b.value(&v).update(42)?;
    /// let storage = MemoryCheckpointStorage::default();
    /// let handle = b.native_full_snapshot(1)?.run(&storage)?;
    /// assert!(handle.shared_files.is_empty(), "every file belongs to this checkpoint");
    ///
    /// let mut r = RocksDbKeyedStateBackend::<u64>::restore_incremental(&ctx, RocksDbConfig::default(), &[handle], &storage)?;
    /// let v = r.register(ValueStateDescriptor::<u64>::new("v"))?;
    /// r.set_current_key(&7)?;
    /// assert_eq!(r.value(&v).get()?, Some(42));
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    pub fn native_full_snapshot(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<IncrementalKeyedHandle>> {
        self.native_snapshot(checkpoint_id, false)
    }

    /// Starts flushing every column family's memtables to SST files in the background
    /// and returns at once. Called some time before a checkpoint barrier (an engine knows
    /// its checkpoint interval), it leaves the synchronous part of the next native
    /// checkpoint ([`snapshot_incremental`](state_api::KeyedStateBackend::snapshot_incremental),
    /// [`native_full_snapshot`](Self::native_full_snapshot)) only what was written after
    /// it to flush, instead of whole memtables: with the write-ahead log off, a RocksDB
    /// checkpoint must flush every memtable, and that flush is most of its synchronous
    /// part (see `bench --only checkpoints`). A barrier that comes while the background
    /// flush still runs waits for it; the checkpoint is complete either way.
    ///
    /// ```
    /// use state_api::{BackendContext, KeyedStateBackend, ValueStateDescriptor};
    /// use state_heap::MemoryCheckpointStorage;
    /// use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
    ///
    /// let mut b = RocksDbKeyedStateBackend::<u64>::new(&BackendContext::single(128), RocksDbConfig::default())?;
    /// let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    /// for k in 0..1000 {
    ///     b.set_current_key(&k)?;
    ///     b.value(&v).update(k)?;
    /// }
    /// b.flush_ahead()?; // ahead of the barrier: the flush runs in the background
    /// b.set_current_key(&5)?;
    /// b.value(&v).update(50)?; // processing goes on meanwhile
    /// let handle = b.snapshot_incremental(1)?.run(&MemoryCheckpointStorage::default())?;
    /// assert!(!handle.shared_files.is_empty());
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    pub fn flush_ahead(&self) -> Result<()> {
        let mut background = FlushOptions::default();
        background.set_wait(false);
        let families = DB::list_cf(&rocksdb::Options::default(), self.db.path()).map_err(|e| {
            db_err(
                format!("listing the column families of `{}`", self.db.path().display()),
                e,
            )
        })?;
        for name in families {
            if let Some(cf) = self.db.cf_handle(&name) {
                self.db
                    .flush_cf_opt(cf, &background)
                    .map_err(|e| db_err(format!("starting a flush of column family `{name}`"), e))?;
            }
        }
        Ok(())
    }

    /// A native RocksDB checkpoint, uploaded incrementally (`incremental`: data files
    /// shared with, and reused by, other checkpoints) or as a standalone full checkpoint.
    fn native_snapshot(
        &mut self,
        checkpoint_id: u64,
        incremental: bool,
    ) -> Result<AsyncSnapshot<IncrementalKeyedHandle>> {
        let (db, range, max_parallelism) = (&self.db, self.range, self.max_parallelism);
        let snap_dir = self.dir.join(format!(
            "{}-{checkpoint_id}-{}",
            if incremental { "incremental" } else { "native-full" },
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        ));
        Checkpoint::new(db)
            .and_then(|c| c.create_checkpoint(&snap_dir))
            .map_err(|e| db_err(format!("creating a RocksDB checkpoint at `{}`", snap_dir.display()), e))?;
        // A full checkpoint neither reuses the confirmed files nor becomes the base.
        let confirmed = incremental.then(|| self.confirmed.clone());
        let pending = incremental.then(|| Arc::clone(&self.pending));
        let base = IncrementalKeyedHandle {
            checkpoint_id,
            key_group_range: range,
            max_parallelism,
            key_type: self.key_type.clone(),
            key_schema: self.key_schema.clone(),
            states: self.all_metas(),
            shared_files: Vec::new(),
            private_files: Vec::new(),
        };
        let keep_dir = self.db.hold_dir();
        Ok(AsyncSnapshot::new(checkpoint_id, move |storage| {
            let result = upload(&snap_dir, base, confirmed.as_ref(), storage);
            let _ = std::fs::remove_dir_all(&snap_dir);
            drop(keep_dir);
            let handle = result?;
            if let Some(Ok(mut p)) = pending.as_ref().map(|p| p.lock()) {
                p.insert(checkpoint_id, handle.shared_files.clone());
            }
            tracing::debug!(
                checkpoint_id,
                incremental,
                files = handle.shared_files.len() + handle.private_files.len(),
                "native snapshot uploaded"
            );
            Ok(handle)
        }))
    }

    /// Checkpoint `checkpoint_id` completed: its data files become the base that later
    /// incremental checkpoints reuse; earlier pending checkpoints are forgotten.
    pub(crate) fn confirm_checkpoint(&mut self, checkpoint_id: u64) {
        let Ok(mut pending) = self.pending.lock() else { return };
        if let Some(files) = pending.remove(&checkpoint_id) {
            self.confirmed = files.into_iter().map(|f| (f.local_name, f.stream)).collect();
        }
        pending.retain(|id, _| *id > checkpoint_id);
    }

    /// Checkpoint `checkpoint_id` was aborted: its uploads are never reused.
    pub(crate) fn forget_checkpoint(&mut self, checkpoint_id: u64) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&checkpoint_id);
        }
    }

    /// Restores from incremental handles. When one handle holds every key group of
    /// `ctx`, its files are downloaded (concurrently, verified) and opened directly, the
    /// key groups outside the range deleted, and its data files reused by the next
    /// incremental checkpoint. Otherwise (rescaling down, or up across handles) each
    /// handle is opened aside and only the owned key groups are copied in.
    pub fn restore_incremental(
        ctx: &BackendContext,
        config: RocksDbConfig,
        handles: &[IncrementalKeyedHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        let range = ctx.key_group_range;
        let relevant: Vec<&IncrementalKeyedHandle> = handles
            .iter()
            .filter(|h| !h.key_group_range.intersection(&range).is_empty())
            .collect();
        for h in &relevant {
            check_key((&h.key_type, &h.key_schema), (&type_name_of::<K>(), &Schema::of::<K>()))?;
            if h.max_parallelism != ctx.max_parallelism {
                return Err(StateError::InvalidArgument(format!(
                    "incremental checkpoint {} has max parallelism {}, this backend {}",
                    h.checkpoint_id, h.max_parallelism, ctx.max_parallelism
                )));
            }
        }
        let covering = relevant
            .iter()
            .find(|h| h.key_group_range.intersection(&range) == range)
            .copied();
        if let Some(h) = covering {
            let mut b = Self::open_with(ctx, config, |db_path| {
                download(h, db_path, storage)?;
                Ok(h.states.clone())
            })?;
            b.delete_outside_range(h.key_group_range)?;
            b.confirmed = h
                .shared_files
                .iter()
                .map(|f| (f.local_name.clone(), f.stream.clone()))
                .collect();
            state_api::metrics::restore("rocksdb", started.elapsed());
            return Ok(b);
        }
        let mut b = Self::new(ctx, config)?;
        for (i, h) in relevant.iter().enumerate() {
            let tmp = b.dir.join(format!("restore-{i}"));
            download(h, &tmp, storage)?;
            let (config, prefix_len) = (&b.config, b.prefix_len);
            let clock = Arc::clone(&ctx.clock);
            let cfs: Vec<ColumnFamilyDescriptor> = h
                .states
                .iter()
                .map(|m| {
                    ColumnFamilyDescriptor::new(
                        column_family_name(&m.name),
                        cf_options(config, m.kind.shape(), ttl_of(m), Arc::clone(&clock)),
                    )
                })
                .collect();
            let src = DB::open_cf_descriptors(&config.options(), &tmp, cfs)
                .map_err(|e| db_err(format!("opening downloaded checkpoint `{}`", tmp.display()), e))?;
            let mine = h.key_group_range.intersection(&range);
            for meta in &h.states {
                b.ensure_restored_cf(meta)?;
                copy_key_groups(&src, &b, &meta.name, mine, prefix_len)?;
            }
            drop(src);
            std::fs::remove_dir_all(&tmp).map_err(io(format!("removing `{}`", tmp.display())))?;
        }
        state_api::metrics::restore("rocksdb", started.elapsed());
        Ok(b)
    }

    /// Deletes every key outside this backend's key-group range from every column family.
    fn delete_outside_range(&mut self, held: KeyGroupRange) -> Result<()> {
        let (db, range, max_parallelism, prefix_len, wo) = (
            &self.db,
            self.range,
            self.max_parallelism,
            self.prefix_len,
            &self.write_opts,
        );
        if held == range {
            return Ok(());
        }
        let bound = |kg: u32| {
            let mut p = Vec::new();
            put_key_group(&mut p, kg, prefix_len);
            p
        };
        let mut cuts = Vec::new();
        if range.start() > 0 {
            cuts.push((Vec::new(), bound(range.start())));
        }
        if range.end() + 1 < max_parallelism {
            let top = prefix_successor(&bound(max_parallelism - 1)).unwrap_or_else(|| vec![0xff; prefix_len + 1]);
            cuts.push((bound(range.end() + 1), top));
        }
        for meta in self.all_metas() {
            let Some(cf) = db.cf_handle(&column_family_name(&meta.name)) else {
                continue;
            };
            for (from, to) in &cuts {
                db.delete_range_cf_opt(cf, from, to, wo)
                    .map_err(|e| db_err(format!("dropping key groups outside {range} from `{}`", meta.name), e))?;
            }
        }
        Ok(())
    }
}

pub(crate) fn download(
    h: &IncrementalKeyedHandle,
    dir: &std::path::Path,
    storage: &dyn CheckpointStorage,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating `{}`", dir.display())))?;
    let files: Vec<(StreamHandle, PathBuf)> = h
        .files()
        .map(|f| {
            if f.local_name.contains('/') || f.local_name.contains("..") || f.local_name.is_empty() {
                return Err(StateError::Corrupt {
                    source_name: format!("incremental checkpoint {}", h.checkpoint_id),
                    section: "file list".into(),
                    detail: format!("bad local file name {:?}", f.local_name),
                    source: None,
                });
            }
            Ok((f.stream.clone(), dir.join(&f.local_name)))
        })
        .collect::<Result<_>>()?;
    storage.download_to_local(&files)
}

fn copy_key_groups<K: StateKey>(
    src: &DB,
    dst: &RocksDbKeyedStateBackend<K>,
    state: &str,
    mine: KeyGroupRange,
    prefix_len: usize,
) -> Result<()> {
    let (db, wo) = (&dst.db, &dst.write_opts);
    let (Some(from), Some(to)) = (
        src.cf_handle(&column_family_name(state)),
        db.cf_handle(&column_family_name(state)),
    ) else {
        return Ok(());
    };
    let mut start = Vec::new();
    put_key_group(&mut start, mine.start(), prefix_len);
    let mut end = Vec::new();
    put_key_group(&mut end, mine.end(), prefix_len);
    let end = prefix_successor(&end);
    let mut batch = WriteBatch::default();
    for r in src.iterator_cf(from, IteratorMode::From(&start, Direction::Forward)) {
        let (k, v) = r.map_err(|e| db_err("reading a downloaded checkpoint", e))?;
        if end.as_ref().is_some_and(|e| k.as_ref() >= e.as_slice()) {
            break;
        }
        batch.put_cf(to, &k, &v);
        if batch.len() >= 10_000 {
            db.write_opt(std::mem::take(&mut batch), wo)
                .map_err(|e| db_err("restoring key groups", e))?;
        }
    }
    db.write_opt(batch, wo).map_err(|e| db_err("restoring key groups", e))
}

/// Uploads a native checkpoint's files: incrementally (`confirmed`: the data files of the
/// last completed checkpoint, which are reused; new ones go to the shared area), or with
/// `None` every file as this checkpoint's own.
fn upload(
    snap_dir: &std::path::Path,
    mut handle: IncrementalKeyedHandle,
    confirmed: Option<&HashMap<String, StreamHandle>>,
    storage: &dyn CheckpointStorage,
) -> Result<IncrementalKeyedHandle> {
    let mut names: Vec<String> = std::fs::read_dir(snap_dir)
        .map_err(io(format!("listing `{}`", snap_dir.display())))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .map_err(io(format!("listing `{}`", snap_dir.display())))?;
    names.sort();
    let mut new_shared = Vec::new();
    let mut private = Vec::new();
    for name in names {
        let path = snap_dir.join(&name);
        if let Some(confirmed) = confirmed.filter(|_| name.ends_with(".sst")) {
            match confirmed.get(&name) {
                Some(stream) => handle.shared_files.push(SnapshotFile {
                    local_name: name,
                    stream: stream.clone(),
                }),
                None => new_shared.push((path, name)),
            }
        } else {
            private.push((path, name));
        }
    }
    let id = handle.checkpoint_id;
    let uploaded = storage.upload_local_files(id, &new_shared, true)?;
    handle.shared_files.extend(
        new_shared
            .into_iter()
            .zip(uploaded)
            .map(|((_, local_name), stream)| SnapshotFile { local_name, stream }),
    );
    let uploaded = storage.upload_local_files(id, &private, false)?;
    handle.private_files = private
        .into_iter()
        .zip(uploaded)
        .map(|((_, local_name), stream)| SnapshotFile { local_name, stream })
        .collect();
    Ok(handle)
}
