//! # state-rocksdb
//!
//! The RocksDB keyed state backend (Flink's `EmbeddedRocksDBStateBackend`): state larger
//! than memory, one column family per state, Flink's key layout
//! (`[key group][key][namespace][user key]`), list append by merge operator, map
//! iteration by prefix scan, TTL by compaction filter, on access and incrementally,
//! Flink's predefined option profiles, and full snapshots in the canonical format
//! taken from a RocksDB checkpoint so the task keeps writing during the asynchronous
//! part. Savepoints move between this backend and the heap backend at any parallelism.
//! Timers live in a column family per queue (or on the heap, by configuration), and the
//! slot's managed memory bounds RocksDB through one shared cache and write-buffer manager.
#![deny(missing_docs)]

mod backend;
mod column_family;
mod full_snapshot;
mod incremental;
mod instance;
pub mod layout;
mod migrate;
mod native_metrics;
mod offline;
mod ops;
mod options;
mod restore;
mod timers;

pub use backend::{RocksDbBackendFactory, RocksDbKeyedStateBackend};
pub use column_family::column_family_name;
pub use offline::{EncodedLen, incremental_to_canonical};
pub use options::{OptionsOverride, PredefinedOptions, RocksDbConfig};
pub use timers::{
    RocksDbBackendTimerQueue, RocksDbTimerQueue, RocksDbTimerStorage, RocksDbTimerStore, TIMER_CF_PREFIX,
};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
