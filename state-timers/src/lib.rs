//! # state-timers
//!
//! The timer service behind state-api's [`TimerService`](state_api::TimerService) trait
//! (Flink's `InternalTimerService`), and timer storages behind its
//! [`TimerQueue`](state_api::TimerQueue) trait (Flink's `KeyGroupedInternalPriorityQueue`):
//!
//! - [`InternalTimerService`]: event-time and processing-time timers per key and
//!   namespace, firing in timestamp order with the key set, injectable processing-time
//!   clock, asynchronous snapshots in the canonical format, restore at any parallelism.
//! - [`HeapTimerQueue`]: in memory, key-group partitioned, copy-on-write.
//! - [`LmdbTimerQueue`]: on disk via `heed`, for timer counts beyond memory.
//! - [`CachedTimerQueue`] over any [`OrderedTimerStore`]: how LMDB and RocksDB (in
//!   `state-rocksdb`) keep the head of each key group in memory.
//! - [`TimerStorage`]: heap or LMDB, chosen by configuration.
//!
//! ```
//! use std::sync::Arc;
//! use state_api::{BackendContext, KeyedStateBackend, ManualClock, TimerService};
//! use state_heap::HeapKeyedStateBackend;
//! use state_timers::{InternalTimerService, TimerStorage};
//!
//! let ctx = BackendContext::single(128);
//! let mut backend = HeapKeyedStateBackend::<u64>::new(&ctx)?;
//! let storage = TimerStorage::Heap; // or TimerStorage::Lmdb(Default::default())
//! let clock = ManualClock::new(0);
//! let mut timers = InternalTimerService::<u64, (), _>::new(
//!     storage.create_queue(ctx.key_group_range, 128)?,
//!     storage.create_queue(ctx.key_group_range, 128)?,
//!     Arc::new(clock.clone()),
//!     128,
//! )?;
//! backend.set_current_key(&7)?;
//! timers.register_processing_time_timer(&mut backend, &(), 1_000)?;
//! assert_eq!(timers.next_processing_time(), Some(1_000)); // sleep until then
//! clock.advance(1_000);
//! let fired = timers.advance_processing_time(&mut backend, |backend, _, timer| {
//!     assert_eq!(backend.current_key(), Some(&7));
//!     assert_eq!(timer.timestamp, 1_000);
//!     Ok(())
//! })?;
//! assert_eq!(fired, 1);
//! # Ok::<(), state_api::StateError>(())
//! ```
#![deny(missing_docs)]

mod cached;
mod heap_queue;
mod lmdb;
mod service;
mod snapshot;
#[cfg(feature = "testkit")]
pub mod testkit;
mod timer_storage;
pub mod workdir;

pub use cached::{CachedTimerQueue, DEFAULT_CACHE_SIZE, OrderedTimerStore, PinnedStore, StoreEntries};
pub use heap_queue::HeapTimerQueue;
pub use lmdb::{DEFAULT_MAP_SIZE, LmdbConfig, LmdbTimerQueue, LmdbTimerStore};
pub use service::{InternalTimerService, TimeDomain};
pub use snapshot::{EVENT_TIME, PROCESSING_TIME, timer_of};
pub use timer_storage::{EitherQueue, StandaloneTimerQueue, TimerStorage};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
