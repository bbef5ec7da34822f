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
    /// Called a fifth of a checkpoint interval before each barrier: work the next
    /// checkpoint's synchronous part can be spared (RocksDB starts flushing its
    /// memtables in the background).
    fn ahead_of_barrier(&self, _backend: &mut Self::Backend) -> Result<()> {
        Ok(())
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
pub use rocks::{RocksDb, RocksDbCheckpoints};

#[cfg(feature = "rocksdb")]
mod rocks {
    use super::*;
    use state_rocksdb::{RocksDbBackendTimerQueue, RocksDbConfig, RocksDbKeyedStateBackend, RocksDbTimerStorage};

    /// How the RocksDB runtime checkpoints its keyed state.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum RocksDbCheckpoints {
        /// Canonical full snapshots (`rocksdb-full`).
        Full,
        /// Incremental: SST files shared between checkpoints (`rocksdb-incremental`).
        Incremental,
        /// Native full: every SST file uploaded as the checkpoint's own, restored by
        /// opening the files (`rocksdb-native`, Flink 2.x's full RocksDB checkpoint).
        NativeFull,
    }

    /// RocksDB state: full, incremental or native full checkpoints, RocksDB or heap
    /// timers.
    #[derive(Debug, Clone, Copy)]
    pub struct RocksDb {
        pub checkpoints: RocksDbCheckpoints,
        pub heap_timers: bool,
    }

    impl RocksDb {
        /// The `--backend` names of the RocksDB runtimes.
        pub const NAMES: [&'static str; 4] = [
            "rocksdb-full",
            "rocksdb-incremental",
            "rocksdb-native",
            "rocksdb-heap-timers",
        ];

        /// The runtime of a `--backend` name, if it is a RocksDB one.
        pub fn from_name(name: &str) -> Option<Self> {
            let (checkpoints, heap_timers) = match name {
                "rocksdb-full" => (RocksDbCheckpoints::Full, false),
                "rocksdb-incremental" => (RocksDbCheckpoints::Incremental, false),
                "rocksdb-native" => (RocksDbCheckpoints::NativeFull, false),
                "rocksdb-heap-timers" => (RocksDbCheckpoints::Incremental, true),
                _ => return None,
            };
            Some(RocksDb {
                checkpoints,
                heap_timers,
            })
        }

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
            match (self.checkpoints, self.heap_timers) {
                (_, true) => "rocksdb-heap-timers",
                (RocksDbCheckpoints::Full, false) => "rocksdb-full",
                (RocksDbCheckpoints::Incremental, false) => "rocksdb-incremental",
                (RocksDbCheckpoints::NativeFull, false) => "rocksdb-native",
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
            Ok(match self.checkpoints {
                RocksDbCheckpoints::Full => KeyedPart::Full(backend.snapshot(id)?),
                RocksDbCheckpoints::Incremental => KeyedPart::Incremental(backend.snapshot_incremental(id)?),
                // Its handle has the incremental handle's shape (no shared files).
                RocksDbCheckpoints::NativeFull => KeyedPart::Incremental(backend.native_full_snapshot(id)?),
            })
        }
        fn incremental(&self) -> bool {
            self.checkpoints == RocksDbCheckpoints::Incremental
        }
        fn ahead_of_barrier(&self, backend: &mut Self::Backend) -> Result<()> {
            match self.checkpoints {
                RocksDbCheckpoints::Full => Ok(()),
                RocksDbCheckpoints::Incremental | RocksDbCheckpoints::NativeFull => backend.flush_ahead(),
            }
        }
    }
}

/// The `--backend` names compiled in.
pub fn backend_names() -> Vec<&'static str> {
    let mut v = vec!["heap-memory", "heap-fs", "heap-lmdb"];
    #[cfg(feature = "rocksdb")]
    v.extend(RocksDb::NAMES);
    v
}

/// The error for an unknown backend name.
pub fn unknown_backend(name: &str) -> StateError {
    StateError::InvalidArgument(format!(
        "unknown or not compiled-in backend `{name}`; choose one of {}",
        backend_names().join(", ")
    ))
}
