//! [`FsOptions`]: the settings of a checkpoint storage, and their limits.

use std::collections::BTreeMap;

use state_api::{Result, StateError};

use crate::lease::LeaseOptions;

/// The default inline threshold: streams below 20 KiB go into the metadata.
pub const DEFAULT_INLINE_THRESHOLD: usize = 20 * 1024;
/// The largest inline threshold allowed.
pub const MAX_INLINE_THRESHOLD: usize = 1024 * 1024;

/// Settings of a [`FsCheckpointStorage`](crate::FsCheckpointStorage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsOptions {
    /// Streams smaller than this are inlined into the metadata (default 20 KiB, max 1 MiB).
    pub inline_threshold: usize,
    /// Completed checkpoints to keep (default 1).
    pub retained_checkpoints: usize,
    /// Concurrent uploads and downloads (default 4).
    pub transfer_concurrency: usize,
    /// Options of the remote store (S3 endpoint, credentials, ...).
    pub store_options: BTreeMap<String, String>,
    /// Whether [`FsCheckpointStorage::latest_checkpoint`](crate::FsCheckpointStorage::latest_checkpoint) reads every file of a
    /// checkpoint to verify its CRC32C before choosing it (default true); without it,
    /// only presence and sizes are checked and damage is found during the restore.
    pub verify_before_restore: bool,
    /// Exclusive ownership of the job directory (default: a lease with a 30 s time to
    /// live, see [`LeaseOptions`]); `None` turns it off, for a directory that only one
    /// process can ever reach.
    pub lease: Option<LeaseOptions>,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            retained_checkpoints: 1,
            transfer_concurrency: 4,
            store_options: BTreeMap::new(),
            verify_before_restore: true,
            lease: Some(LeaseOptions::default()),
        }
    }
}

impl FsOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.inline_threshold > MAX_INLINE_THRESHOLD {
            return Err(StateError::InvalidArgument(format!(
                "inline threshold {} exceeds the maximum of {MAX_INLINE_THRESHOLD} bytes",
                self.inline_threshold
            )));
        }
        if self.retained_checkpoints == 0 {
            return Err(StateError::InvalidArgument(
                "at least one completed checkpoint must be retained".into(),
            ));
        }
        if let Some(lease) = &self.lease {
            lease.validate()?;
        }
        if self.transfer_concurrency == 0 {
            return Err(StateError::InvalidArgument(
                "transfer concurrency must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
