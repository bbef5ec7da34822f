//! # state-heap
//!
//! The heap state backend: keyed state as Rust values in key-group partitioned,
//! copy-on-write tables, with asynchronous snapshots in the canonical format
//! (Flink's `HashMapStateBackend`), and the in-memory checkpoint storage (Flink's
//! `JobManagerCheckpointStorage`; together they are Flink's `MemoryStateBackend`).
//!
//! ```
//! use state_api::{BackendContext, KeyedStateBackend, ValueStateDescriptor};
//! use state_heap::HeapKeyedStateBackend;
//!
//! let mut backend = HeapKeyedStateBackend::<u64>::new(&BackendContext::single(128))?;
//! let count = backend.register(ValueStateDescriptor::<u64>::new("count").with_default(0))?;
//! for user in [1, 2, 1] {
//!     backend.set_current_key(&user)?;
//!     let n = backend.value(&count).get()?.unwrap_or_default();
//!     backend.value(&count).update(n + 1)?;
//! }
//! backend.set_current_key(&1)?;
//! assert_eq!(backend.value(&count).get()?, Some(2));
//! # Ok::<(), state_api::StateError>(())
//! ```
#![deny(missing_docs)]

mod estimate;
mod keyed;
mod memory_storage;
mod ops;
mod table;

pub use keyed::{HeapBackendFactory, HeapKeyedStateBackend};
pub use memory_storage::{DEFAULT_MAX_STATE_SIZE, MemoryCheckpointStorage};
/// The heap operator state backend (shared by every keyed backend; defined in state-api).
pub use state_api::DefaultOperatorStateBackend as HeapOperatorStateBackend;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
