//! One RocksDB block cache and write-buffer manager per slot, shared by every RocksDB
//! instance (every state, every operator) in that slot (feature `rocksdb`).
//!
//! rust-rocksdb does not expose the high-priority pool ratio of an LRU cache, so the
//! cache and the write-buffer manager are made by a small C++ shim compiled against the
//! headers of the RocksDB that `librocksdb-sys` builds and links, and installed on a
//! `rocksdb::Options` through its raw pointer.
//!
//! ```no_run
//! use state_memory::{SlotMemory, rocksdb::RocksDbMemory, sizing::RocksDbMemoryConfig};
//!
//! let slot = SlotMemory::standalone(64 << 20);
//! let memory = RocksDbMemory::for_slot(&slot, &RocksDbMemoryConfig::default())?;
//! let mut opts = ::rocksdb::Options::default();
//! memory.apply(&mut opts); // every DB and column family of the slot gets the same cache
//! # Ok::<(), state_memory::MemoryError>(())
//! ```
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int};
use std::ptr::NonNull;

use ::rocksdb::{AsRawPtr, Options};

use crate::error::{MemoryError, Result};
use crate::manager::{SharedLease, SlotMemory};
use crate::sizing::{RocksDbMemoryConfig, RocksDbMemoryMode, RocksDbMemorySizes};

#[repr(C)]
struct RawShared {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn state_shared_memory_create(cache_capacity: usize, wbm_capacity: usize, high_pri: f64) -> *mut RawShared;
    fn state_shared_memory_destroy(shared: *mut RawShared);
    fn state_shared_memory_apply(shared: *const RawShared, opts: *mut librocksdb_sys::rocksdb_options_t);
    fn state_shared_memory_is_applied(
        shared: *const RawShared,
        opts: *const librocksdb_sys::rocksdb_options_t,
    ) -> c_int;
    fn state_shared_memory_cache_capacity(shared: *const RawShared) -> usize;
    fn state_shared_memory_cache_usage(shared: *const RawShared) -> usize;
    fn state_shared_memory_cache_pinned_usage(shared: *const RawShared) -> usize;
    fn state_shared_memory_wbm_capacity(shared: *const RawShared) -> usize;
    fn state_shared_memory_wbm_usage(shared: *const RawShared) -> usize;
    fn state_shared_memory_wbm_mutable_usage(shared: *const RawShared) -> usize;
    fn state_shared_memory_cache_options(shared: *const RawShared, buf: *mut c_char, len: usize) -> usize;
}

/// A block cache and a write-buffer manager charged to it, as sized by
/// [`RocksDbMemoryConfig::sizes`].
pub struct SharedRocksDbMemory {
    raw: NonNull<RawShared>,
    sizes: RocksDbMemorySizes,
}

// SAFETY: the shim object holds two `std::shared_ptr`s to RocksDB's thread-safe `Cache`
// and `WriteBufferManager`; it is never mutated after creation.
unsafe impl Send for SharedRocksDbMemory {}
// SAFETY: as above; every shim call only reads the pointers.
unsafe impl Sync for SharedRocksDbMemory {}

impl Drop for SharedRocksDbMemory {
    fn drop(&mut self) {
        // SAFETY: created by `state_shared_memory_create`, destroyed once. Databases that
        // still use the cache hold their own `shared_ptr`s.
        unsafe { state_shared_memory_destroy(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for SharedRocksDbMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRocksDbMemory")
            .field("sizes", &self.sizes)
            .field("usage", &self.usage())
            .finish()
    }
}

/// RocksDB's own figures for a shared cache and write-buffer manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RocksDbMemoryUsage {
    /// Block cache capacity.
    pub cache_capacity: u64,
    /// Bytes in the block cache, memtable reservations charged by the write-buffer
    /// manager included: the figure the budget bounds.
    pub cache_usage: u64,
    /// Bytes of pinned cache entries (index and filter blocks held by open tables,
    /// blocks held by iterators).
    pub cache_pinned_usage: u64,
    /// Write-buffer manager capacity.
    pub write_buffer_capacity: u64,
    /// Memtable memory of every instance using the write-buffer manager.
    pub memtable_usage: u64,
    /// The mutable part of it.
    pub mutable_memtable_usage: u64,
}

impl SharedRocksDbMemory {
    /// Creates the cache and the write-buffer manager.
    pub fn new(sizes: RocksDbMemorySizes) -> Result<Self> {
        // SAFETY: plain values in, an owned pointer (or null) out.
        let raw = unsafe {
            state_shared_memory_create(
                usize::try_from(sizes.cache_capacity).unwrap_or(usize::MAX),
                usize::try_from(sizes.write_buffer_manager_capacity).unwrap_or(usize::MAX),
                sizes.high_prio_pool_ratio,
            )
        };
        let raw = NonNull::new(raw)
            .ok_or_else(|| MemoryError::InvalidConfig(format!("RocksDB refused to create a cache of {sizes:?}")))?;
        Ok(SharedRocksDbMemory { raw, sizes })
    }

    /// The sizes it was made with.
    pub fn sizes(&self) -> &RocksDbMemorySizes {
        &self.sizes
    }

    /// Installs the cache (index and filter blocks cached with high priority, top-level
    /// index pinned), the write-buffer manager and the write-buffer size on `opts`,
    /// keeping its other table options. Apply it after any other change to the table factory.
    pub fn apply(&self, opts: &mut Options) {
        opts.set_write_buffer_size(usize::try_from(self.sizes.write_buffer_size).unwrap_or(usize::MAX));
        // SAFETY: `opts` is alive and exclusively borrowed for the call; the shim only
        // replaces two shared pointers in its `rocksdb::Options`.
        unsafe { state_shared_memory_apply(self.raw.as_ptr(), opts.as_raw_ptr()) }
    }

    /// Whether `opts` uses this cache and write-buffer manager.
    pub fn is_applied(&self, opts: &Options) -> bool {
        // SAFETY: read-only access to live options.
        unsafe { state_shared_memory_is_applied(self.raw.as_ptr(), opts.as_raw_ptr()) == 1 }
    }

    /// RocksDB's current figures.
    pub fn usage(&self) -> RocksDbMemoryUsage {
        let p = self.raw.as_ptr();
        // SAFETY: read-only calls on a live shim object.
        unsafe {
            RocksDbMemoryUsage {
                cache_capacity: state_shared_memory_cache_capacity(p) as u64,
                cache_usage: state_shared_memory_cache_usage(p) as u64,
                cache_pinned_usage: state_shared_memory_cache_pinned_usage(p) as u64,
                write_buffer_capacity: state_shared_memory_wbm_capacity(p) as u64,
                memtable_usage: state_shared_memory_wbm_usage(p) as u64,
                mutable_memtable_usage: state_shared_memory_wbm_mutable_usage(p) as u64,
            }
        }
    }

    /// The cache's own description of its options, as RocksDB prints it.
    pub fn cache_printable_options(&self) -> String {
        let mut buf = vec![0u8; 4096];
        // SAFETY: `buf` is writable for `buf.len()` bytes; the shim NUL-terminates.
        let full = unsafe { state_shared_memory_cache_options(self.raw.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        buf.truncate(full.min(buf.len() - 1));
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The high-priority pool ratio the cache reports (read back from RocksDB, not from
    /// the configuration).
    pub fn high_prio_pool_ratio_in_effect(&self) -> Option<f64> {
        self.cache_printable_options()
            .lines()
            .find_map(|l| l.trim().strip_prefix("high_pri_pool_ratio:"))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// What a RocksDB backend instance uses: a lease on its slot's shared cache and
/// write-buffer manager, or nothing (RocksDB's defaults). Clone it into every instance
/// of the slot.
#[derive(Debug, Clone, Default)]
pub struct RocksDbMemory {
    lease: Option<SharedLease<SharedRocksDbMemory>>,
}

impl RocksDbMemory {
    /// The slot's shared resources under `config`, created on first use (reserving the
    /// managed share of the slot budget) and released when the last user drops them.
    pub fn for_slot(slot: &SlotMemory, config: &RocksDbMemoryConfig) -> Result<Self> {
        config.validate()?;
        let lease = match config.mode() {
            RocksDbMemoryMode::Unmanaged => None,
            RocksDbMemoryMode::Managed { fraction } => {
                let bytes = (slot.budget() as f64 * fraction) as u64;
                Some(slot.shared_resource("rocksdb-managed", bytes, |b| SharedRocksDbMemory::new(config.sizes(b)?))?)
            }
            RocksDbMemoryMode::FixedPerSlot { bytes } => Some(
                // Outside the slot's managed budget, as Flink's fixed-per-slot.
                slot.shared_resource("rocksdb-fixed-per-slot", 0, |_| {
                    SharedRocksDbMemory::new(config.sizes(bytes)?)
                })?,
            ),
        };
        Ok(RocksDbMemory { lease })
    }

    /// No memory control: each instance keeps RocksDB's defaults.
    pub fn unmanaged() -> Self {
        RocksDbMemory { lease: None }
    }

    /// The shared resources, unless unmanaged.
    pub fn shared(&self) -> Option<&SharedRocksDbMemory> {
        self.lease.as_ref().map(SharedLease::get)
    }

    /// Installs the shared cache and write-buffer manager on `opts` (nothing when unmanaged).
    pub fn apply(&self, opts: &mut Options) {
        if let Some(shared) = self.shared() {
            shared.apply(opts);
        }
    }
}
