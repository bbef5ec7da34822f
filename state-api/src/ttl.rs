//! State time-to-live (Flink's `StateTtlConfig`) and the injectable clock it reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// When the last-access timestamp of a value is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlUpdateType {
    /// Only creating and writing refresh the timestamp (Flink's default).
    #[default]
    OnCreateAndWrite,
    /// Reading refreshes it too.
    OnReadAndWrite,
}

/// Whether an expired value that has not been cleaned up yet may be returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlVisibility {
    /// Expired values are never returned (Flink's default).
    #[default]
    NeverReturnExpired,
    /// An expired value is returned once if it has not been cleaned up yet; reading it cleans it up.
    ReturnExpiredIfNotCleanedUp,
}

/// Time-to-live of a state (Flink's `StateTtlConfig`).
///
/// ```
/// use std::time::Duration;
/// use state_api::{TtlConfig, TtlUpdateType, TtlVisibility};
/// let ttl = TtlConfig::new(Duration::from_secs(3600))
///     .update_type(TtlUpdateType::OnReadAndWrite)
///     .visibility(TtlVisibility::NeverReturnExpired)
///     .cleanup_full_snapshot()
///     .cleanup_incrementally(10);
/// assert_eq!(ttl.ttl_millis(), 3_600_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlConfig {
    ttl: Duration,
    update_type: TtlUpdateType,
    visibility: TtlVisibility,
    cleanup_full_snapshot: bool,
    incremental_cleanup_size: usize,
}

impl TtlConfig {
    /// A TTL of `ttl`, refreshed on create and write, never returning expired values,
    /// with incremental cleanup of 5 entries per state access (Flink's defaults).
    pub fn new(ttl: Duration) -> Self {
        TtlConfig {
            ttl,
            update_type: TtlUpdateType::default(),
            visibility: TtlVisibility::default(),
            cleanup_full_snapshot: false,
            incremental_cleanup_size: 5,
        }
    }

    /// Sets when timestamps are refreshed.
    pub fn update_type(mut self, update_type: TtlUpdateType) -> Self {
        self.update_type = update_type;
        self
    }

    /// Sets whether expired values may be returned.
    pub fn visibility(mut self, visibility: TtlVisibility) -> Self {
        self.visibility = visibility;
        self
    }

    /// Leaves expired entries out of full snapshots (the live state keeps them until accessed).
    pub fn cleanup_full_snapshot(mut self) -> Self {
        self.cleanup_full_snapshot = true;
        self
    }

    /// Checks about `entries` entries for expiry on every access to the state (0 disables).
    pub fn cleanup_incrementally(mut self, entries: usize) -> Self {
        self.incremental_cleanup_size = entries;
        self
    }

    /// The time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The time to live in milliseconds, saturated to `i64::MAX`.
    pub fn ttl_millis(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// When timestamps are refreshed.
    pub fn get_update_type(&self) -> TtlUpdateType {
        self.update_type
    }

    /// Whether expired values may be returned.
    pub fn get_visibility(&self) -> TtlVisibility {
        self.visibility
    }

    /// Whether full snapshots leave expired entries out.
    pub fn is_cleanup_full_snapshot(&self) -> bool {
        self.cleanup_full_snapshot
    }

    /// Entries checked per access by incremental cleanup (0: off).
    pub fn incremental_cleanup_size(&self) -> usize {
        self.incremental_cleanup_size
    }

    /// Whether a value last accessed at `timestamp` has expired at `now` (Flink: `ts + ttl <= now`).
    pub fn is_expired(&self, timestamp: i64, now: i64) -> bool {
        timestamp.saturating_add(self.ttl_millis()) <= now
    }
}

/// The clock TTL reads, in milliseconds. Injectable so tests are deterministic.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time in milliseconds.
    fn now_millis(&self) -> i64;
}

/// Wall-clock time since the Unix epoch.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to; clones share the same time.
///
/// ```
/// use state_api::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance(500);
/// assert_eq!(clock.now_millis(), 1_500);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock at `millis`.
    pub fn new(millis: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(millis)))
    }

    /// Sets the time.
    pub fn set(&self, millis: i64) {
        self.0.store(millis, Ordering::SeqCst);
    }

    /// Moves the time forward by `millis`.
    pub fn advance(&self, millis: i64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
