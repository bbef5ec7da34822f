//! # state-memory
//!
//! Managed memory for state backends, as Flink's per-slot managed memory:
//!
//! - [`MemoryManager`]: a total budget split into slots; [`SlotMemory::reserve`] hands out
//!   [`MemoryReservation`]s (RAII: dropped, they give the memory back) and fails with a
//!   typed [`MemoryError::Exhausted`] when a reservation does not fit; [`SlotStats`] has
//!   the figures (budget, reserved, used, free) for metrics.
//! - Shared resources ([`SlotMemory::shared_resource`]): one per slot and name, created
//!   on first use, released with the last lease.
//! - [`sizing`]: Flink's RocksDB formulas (block cache `(3 - r) * T / 3`, write-buffer
//!   manager `2 * r * T / 3`, high-priority pool) and configuration checks.
//! - [`rocksdb`] (feature `rocksdb`): the slot's shared RocksDB block cache and
//!   write-buffer manager, installed on every instance's options.
//! - [`HeapAccounting`]: how the heap backend bounds its state by a slot's budget.
//!
//! ```
//! use state_memory::{MemoryManager, MemoryError};
//!
//! let manager = MemoryManager::new(1 << 30, 4)?;     // 1 GiB, 4 slots of 256 MiB
//! let slot = manager.slot(1)?;
//! let held = slot.reserve("window-operator", 200 << 20)?;
//! match slot.reserve("join-operator", 100 << 20) {
//!     Err(MemoryError::Exhausted { available, .. }) => assert_eq!(available, 56 << 20),
//!     other => panic!("expected exhaustion, got {other:?}"),
//! }
//! drop(held);
//! assert_eq!(slot.stats().free, 256 << 20);
//! # Ok::<(), MemoryError>(())
//! ```
#![deny(missing_docs)]

mod accounting;
mod error;
mod manager;
#[cfg(feature = "rocksdb")]
pub mod rocksdb;
pub mod sizing;

pub use accounting::HeapAccounting;
pub use error::{MemoryError, Result};
pub use manager::{MemoryManager, MemoryReservation, SharedLease, SlotMemory, SlotStats};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
