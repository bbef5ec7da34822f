//! The backends the job runs on, chosen at run time among those compiled in (cargo
//! features `heap` and `rocksdb`). The operator code in `queries` is the same for all.

use state_api::{
    AsyncSnapshot, BackendContext, IncrementalKeyedHandle, KeyedSnapshotHandle, KeyedStateBackend, Result, StateError,
    SubtaskAssignment, TimerQueue,
};
use state_fs::FsCheckpointStorage;
use state_heap::HeapKeyedStateBackend;
use state_timers::{StandaloneTimerQueue, TimerStorage};

/// What a checkpoint's synchronous part of the keyed backend returns.
pub enum KeyedPart {
    /// A full snapshot in the canonical format.
    Full(AsyncSnapshot<KeyedSnapshotHandle>),
    /// A RocksDB incremental snapshot.
    Incremental(AsyncSnapshot<IncrementalKeyedHandle>),
}

/// A backend configuration the job can run on.
pub trait Runtime {
    type Backend: KeyedStateBackend<Key = u64>;
    type Queue: TimerQueue<Self::Backend>;
    /// Its `--backend` name.
    fn name(&self) -> &'static str;
    /// Whether state snapshots go to memory (inlined into the checkpoint metadata, Flink's
    /// `JobManagerCheckpointStorage`) rather than to files.
    fn in_memory(&self) -> bool {
        false
    }
    fn create(&self, ctx: &BackendContext) -> Result<Self::Backend>;
    /// The backend of a subtask restored from the handles its assignment holds.
    fn restore(&self, assignment: &SubtaskAssignment, fs: &FsCheckpointStorage) -> Result<Self::Backend>;
    fn queue(&self, backend: &mut Self::Backend, name: &str) -> Result<Self::Queue>;
    fn snapshot(&self, backend: &mut Self::Backend, id: u64) -> Result<KeyedPart> {
        Ok(KeyedPart::Full(backend.snapshot(id)?))
    }
    /// Whether checkpoints are incremental.
    fn incremental(&self) -> bool {
        false
    }
}

/// Heap state; snapshots to memory (`heap-memory`) or to the checkpoint directory
/// (`heap-fs`); timers on the heap, or in LMDB (`heap-lmdb`: timer counts beyond memory).
#[derive(Debug, Clone, Copy)]
pub struct Heap {
    pub memory: bool,
    pub lmdb_timers: bool,
}

impl Runtime for Heap {
    type Backend = HeapKeyedStateBackend<u64>;
    type Queue = StandaloneTimerQueue;
    fn name(&self) -> &'static str {
        match (self.memory, self.lmdb_timers) {
            (_, true) => "heap-lmdb",
            (true, false) => "heap-memory",
            (false, false) => "heap-fs",
        }
    }
    fn in_memory(&self) -> bool {
        self.memory
    }
    fn create(&self, ctx: &BackendContext) -> Result<Self::Backend> {
        HeapKeyedStateBackend::new(ctx)
    }
    fn restore(&self, assignment: &SubtaskAssignment, fs: &FsCheckpointStorage) -> Result<Self::Backend> {
        HeapKeyedStateBackend::restore(&assignment.context(), &assignment.keyed, fs)
    }
    fn queue(&self, backend: &mut Self::Backend, _name: &str) -> Result<Self::Queue> {
        let storage = if self.lmdb_timers {
            TimerStorage::Lmdb(Default::default())
        } else {
            TimerStorage::Heap
        };
        storage.create_queue(backend.key_group_range(), backend.max_parallelism())
    }
}

#[cfg(feature = "rocksdb")]
pub use rocks::RocksDb;

#[cfg(feature = "rocksdb")]
mod rocks {
    use super::*;
    use state_rocksdb::{RocksDbBackendTimerQueue, RocksDbConfig, RocksDbKeyedStateBackend, RocksDbTimerStorage};

    /// RocksDB state: full or incremental checkpoints, RocksDB or heap timers.
    #[derive(Debug, Clone, Copy)]
    pub struct RocksDb {
        pub incremental: bool,
        pub heap_timers: bool,
    }

    impl RocksDb {
        fn config(&self) -> RocksDbConfig {
            RocksDbConfig {
                local_dir: std::env::temp_dir().join("nexmark-rocksdb"),
                timer_storage: if self.heap_timers {
                    RocksDbTimerStorage::Heap
                } else {
                    RocksDbTimerStorage::RocksDb
                },
                ..RocksDbConfig::default()
            }
        }
    }

    impl Runtime for RocksDb {
        type Backend = RocksDbKeyedStateBackend<u64>;
        type Queue = RocksDbBackendTimerQueue;
        fn name(&self) -> &'static str {
            match (self.incremental, self.heap_timers) {
                (false, false) => "rocksdb-full",
                (true, false) => "rocksdb-incremental",
                (_, true) => "rocksdb-heap-timers",
            }
        }
        fn create(&self, ctx: &BackendContext) -> Result<Self::Backend> {
            RocksDbKeyedStateBackend::new(ctx, self.config())
        }
        fn restore(&self, assignment: &SubtaskAssignment, fs: &FsCheckpointStorage) -> Result<Self::Backend> {
            let ctx = assignment.context();
            if assignment.incremental.is_empty() {
                RocksDbKeyedStateBackend::restore(&ctx, self.config(), &assignment.keyed, fs)
            } else {
                RocksDbKeyedStateBackend::restore_incremental(&ctx, self.config(), &assignment.incremental, fs)
            }
        }
        fn queue(&self, backend: &mut Self::Backend, name: &str) -> Result<Self::Queue> {
            backend.create_timer_queue(name)
        }
        fn snapshot(&self, backend: &mut Self::Backend, id: u64) -> Result<KeyedPart> {
            if self.incremental {
                Ok(KeyedPart::Incremental(backend.snapshot_incremental(id)?))
            } else {
                Ok(KeyedPart::Full(backend.snapshot(id)?))
            }
        }
        fn incremental(&self) -> bool {
            self.incremental
        }
    }
}

/// The `--backend` names compiled in.
pub fn backend_names() -> Vec<&'static str> {
    let mut v = vec!["heap-memory", "heap-fs", "heap-lmdb"];
    if cfg!(feature = "rocksdb") {
        v.extend(["rocksdb-full", "rocksdb-incremental", "rocksdb-heap-timers"]);
    }
    v
}

/// The error for an unknown backend name.
pub fn unknown_backend(name: &str) -> StateError {
    StateError::InvalidArgument(format!(
        "unknown or not compiled-in backend `{name}`; choose one of {}",
        backend_names().join(", ")
    ))
}
