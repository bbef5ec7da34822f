//! Flink's RocksDB memory sizing (`RocksDBMemoryControllerUtils`), frozen: for a slot
//! budget `T` and write-buffer ratio `r`, the shared block cache holds `(3 - r) * T / 3`
//! bytes and the write-buffer manager `2 * r * T / 3` bytes charged to that cache, and
//! `high_prio_pool_ratio` of the cache is kept for index and filter blocks.
//!
//! Why `3`: RocksDB lets the mutable memtables of a write-buffer manager grow to 7/8 of
//! its size and in practice memory reaches about 1.5 times the manager's size; the
//! formula leaves the cache big enough that memtables plus blocks stay within `T`.
//!
//! ```
//! use state_memory::sizing::{RocksDbMemoryConfig, cache_capacity, write_buffer_manager_capacity};
//!
//! let t = 64 << 20;
//! assert_eq!(cache_capacity(t, 0.5), 55_924_053);          // (3 - 0.5) * T / 3
//! assert_eq!(write_buffer_manager_capacity(t, 0.5), 22_369_621); // 2 * 0.5 * T / 3
//! let sizes = RocksDbMemoryConfig::default().sizes(t)?;
//! assert_eq!(sizes.high_priority_bytes(), 5_592_405);     // 10% of the cache
//! # Ok::<(), state_memory::MemoryError>(())
//! ```

use crate::error::{MemoryError, Result};

/// Default share of the budget for the write path (Flink's `state.backend.rocksdb.memory.write-buffer-ratio`).
pub const DEFAULT_WRITE_BUFFER_RATIO: f64 = 0.5;
/// Default share of the cache for index and filter blocks (Flink's `state.backend.rocksdb.memory.high-prio-pool-ratio`).
pub const DEFAULT_HIGH_PRIO_POOL_RATIO: f64 = 0.1;
/// RocksDB's default write-buffer (memtable) size, 64 MiB.
pub const DEFAULT_WRITE_BUFFER_SIZE: u64 = 64 << 20;

/// Block cache capacity for budget `total` and write-buffer ratio `r`: `(3 - r) * total / 3`
/// (Flink's `calculateActualCacheCapacity`, with its truncation to whole bytes).
pub fn cache_capacity(total: u64, write_buffer_ratio: f64) -> u64 {
    ((3.0 - write_buffer_ratio) * total as f64 / 3.0) as u64
}

/// Write-buffer manager capacity for budget `total` and ratio `r`: `2 * r * total / 3`
/// (Flink's `calculateWriteBufferManagerCapacity`).
pub fn write_buffer_manager_capacity(total: u64, write_buffer_ratio: f64) -> u64 {
    ((2 * total) as f64 * write_buffer_ratio / 3.0) as u64
}

/// RocksDB's default arena block size for a write-buffer size: one eighth, aligned up to
/// 4 KiB (Flink's `calculateRocksDBDefaultArenaBlockSize`).
pub fn default_arena_block_size(write_buffer_size: u64) -> u64 {
    const ALIGN: u64 = 4 * 1024;
    (write_buffer_size / 8).div_ceil(ALIGN) * ALIGN
}

/// The mutable-memtable limit of a write-buffer manager: 7/8 of its size (Flink's
/// `calculateRocksDBMutableLimit`).
pub fn mutable_limit(write_buffer_manager_capacity: u64) -> u64 {
    write_buffer_manager_capacity * 7 / 8
}

/// How RocksDB's memory is bounded (Flink's `state.backend.rocksdb.memory.*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RocksDbMemoryMode {
    /// The slot's managed memory (times `fraction`) is reserved for one cache and one
    /// write-buffer manager shared by every RocksDB instance in the slot (the default).
    Managed {
        /// Share of the slot budget given to RocksDB, in (0, 1].
        fraction: f64,
    },
    /// A fixed amount per slot, shared by the slot's instances, outside the slot budget
    /// (Flink's `fixed-per-slot`).
    FixedPerSlot {
        /// Bytes per slot.
        bytes: u64,
    },
    /// No memory control: each instance keeps RocksDB's own defaults.
    Unmanaged,
}

/// The RocksDB memory configuration, valid by construction: the default, or
/// [`RocksDbMemoryConfig::builder`], which checks the values when it builds (Flink's
/// `RocksDBMemoryConfiguration.validate`).
///
/// ```
/// use state_memory::sizing::{RocksDbMemoryConfig, RocksDbMemoryMode};
///
/// let config = RocksDbMemoryConfig::builder()
///     .mode(RocksDbMemoryMode::FixedPerSlot { bytes: 256 << 20 })
///     .write_buffer_ratio(0.4)
///     .build()?;
/// assert_eq!(config.write_buffer_ratio(), 0.4);
/// assert!(RocksDbMemoryConfig::builder().write_buffer_ratio(1.5).build().is_err());
/// # Ok::<(), state_memory::MemoryError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RocksDbMemoryConfig {
    mode: RocksDbMemoryMode,
    write_buffer_ratio: f64,
    high_prio_pool_ratio: f64,
    write_buffer_size: u64,
}

/// Builds a [`RocksDbMemoryConfig`]; [`build`](Self::build) checks it.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct RocksDbMemoryConfigBuilder {
    config: RocksDbMemoryConfig,
}

impl RocksDbMemoryConfigBuilder {
    /// Where the budget comes from (default: all of the slot's managed memory).
    pub fn mode(mut self, mode: RocksDbMemoryMode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Share of the budget for the write path, in (0, 1) (default 0.5).
    pub fn write_buffer_ratio(mut self, ratio: f64) -> Self {
        self.config.write_buffer_ratio = ratio;
        self
    }

    /// Share of the cache kept for index and filter blocks, in (0, 1) (default 0.1).
    pub fn high_prio_pool_ratio(mut self, ratio: f64) -> Self {
        self.config.high_prio_pool_ratio = ratio;
        self
    }

    /// The write-buffer (memtable) size of every column family (default 64 MiB).
    pub fn write_buffer_size(mut self, bytes: u64) -> Self {
        self.config.write_buffer_size = bytes;
        self
    }

    /// The configuration, or [`MemoryError::InvalidConfig`] naming the bad value.
    pub fn build(self) -> Result<RocksDbMemoryConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

impl Default for RocksDbMemoryConfig {
    fn default() -> Self {
        RocksDbMemoryConfig {
            mode: RocksDbMemoryMode::Managed { fraction: 1.0 },
            write_buffer_ratio: DEFAULT_WRITE_BUFFER_RATIO,
            high_prio_pool_ratio: DEFAULT_HIGH_PRIO_POOL_RATIO,
            write_buffer_size: DEFAULT_WRITE_BUFFER_SIZE,
        }
    }
}

/// The sizes derived from a budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RocksDbMemorySizes {
    /// The budget they were derived from.
    pub total: u64,
    /// Block cache capacity.
    pub cache_capacity: u64,
    /// Write-buffer manager capacity (charged to the cache).
    pub write_buffer_manager_capacity: u64,
    /// Share of the cache for index and filter blocks.
    pub high_prio_pool_ratio: f64,
    /// The write-buffer (memtable) size of every column family.
    pub write_buffer_size: u64,
    /// The arena block size RocksDB will use for that write-buffer size.
    pub arena_block_size: u64,
}

impl RocksDbMemorySizes {
    /// Bytes of the cache's high-priority pool.
    pub fn high_priority_bytes(&self) -> u64 {
        (self.cache_capacity as f64 * self.high_prio_pool_ratio) as u64
    }
}

fn check_ratio(name: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 && v < 1.0 {
        Ok(())
    } else {
        Err(MemoryError::InvalidConfig(format!("{name} must be in (0, 1), got {v}")))
    }
}

impl RocksDbMemoryConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> RocksDbMemoryConfigBuilder {
        RocksDbMemoryConfigBuilder {
            config: RocksDbMemoryConfig::default(),
        }
    }

    /// Where the budget comes from.
    pub fn mode(&self) -> RocksDbMemoryMode {
        self.mode
    }

    /// Share of the budget for the write path.
    pub fn write_buffer_ratio(&self) -> f64 {
        self.write_buffer_ratio
    }

    /// Share of the cache kept for index and filter blocks.
    pub fn high_prio_pool_ratio(&self) -> f64 {
        self.high_prio_pool_ratio
    }

    /// The write-buffer (memtable) size of every column family (set on their options),
    /// checked against the write-buffer manager's mutable limit.
    pub fn write_buffer_size(&self) -> u64 {
        self.write_buffer_size
    }

    /// Checks the ratios and the mode (Flink's `RocksDBMemoryConfiguration.validate`).
    pub(crate) fn validate(&self) -> Result<()> {
        check_ratio("write_buffer_ratio", self.write_buffer_ratio)?;
        check_ratio("high_prio_pool_ratio", self.high_prio_pool_ratio)?;
        if self.write_buffer_ratio + self.high_prio_pool_ratio >= 1.0 {
            return Err(MemoryError::InvalidConfig(format!(
                "write_buffer_ratio ({}) plus high_prio_pool_ratio ({}) must be below 1",
                self.write_buffer_ratio, self.high_prio_pool_ratio
            )));
        }
        match self.mode {
            RocksDbMemoryMode::Managed { fraction } if !(fraction.is_finite() && fraction > 0.0 && fraction <= 1.0) => {
                Err(MemoryError::InvalidConfig(format!(
                    "managed memory fraction must be in (0, 1], got {fraction}"
                )))
            }
            RocksDbMemoryMode::FixedPerSlot { bytes: 0 } => Err(MemoryError::InvalidConfig(
                "fixed memory per slot must be more than 0 bytes".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The smallest budget whose write-buffer manager's mutable limit holds one arena
    /// block of the configured write-buffer size.
    pub fn min_budget(&self) -> u64 {
        let arena = default_arena_block_size(self.write_buffer_size);
        let fits = |t: u64| mutable_limit(write_buffer_manager_capacity(t, self.write_buffer_ratio)) >= arena;
        let (mut lo, mut hi) = (0u64, 1u64 << 62);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) { hi = mid } else { lo = mid + 1 }
        }
        lo
    }

    /// The cache and write-buffer manager sizes for a budget of `total` bytes. Fails when
    /// the budget is too small for the write-buffer size: RocksDB would flush on every
    /// arena block (Flink's `validateArenaBlockSize`, which only warns).
    pub fn sizes(&self, total: u64) -> Result<RocksDbMemorySizes> {
        self.validate()?;
        let wbm = write_buffer_manager_capacity(total, self.write_buffer_ratio);
        let arena = default_arena_block_size(self.write_buffer_size);
        let limit = mutable_limit(wbm);
        if arena > limit {
            let needed = self.min_budget();
            return Err(MemoryError::InvalidConfig(format!(
                "a RocksDB budget of {total} bytes gives a write-buffer manager of {wbm} bytes whose mutable limit \
                 ({limit} bytes) is below the arena block size ({arena} bytes, for a {} byte write buffer): give at \
                 least {needed} bytes, raise write_buffer_ratio, or lower the write-buffer size",
                self.write_buffer_size
            )));
        }
        Ok(RocksDbMemorySizes {
            total,
            cache_capacity: cache_capacity(total, self.write_buffer_ratio),
            write_buffer_manager_capacity: wbm,
            high_prio_pool_ratio: self.high_prio_pool_ratio,
            write_buffer_size: self.write_buffer_size,
            arena_block_size: arena,
        })
    }
}
