//! # state-fs
//!
//! Checkpoint storage on any [`opendal`] operator: a local directory by default, S3
//! (feature `s3`) and HDFS (feature `hdfs`, via opendal's native HDFS client). Flink's
//! `FileSystemCheckpointStorage`: the heap backend with this storage is Flink's
//! `FsStateBackend` ([`FsStateBackend`], feature `heap`, on by default).
//!
//! - Flink's layout: `<root>/<job>/chk-<n>/`, `shared/`, `taskowned/`, and
//!   `chk-<n>/_metadata`, written last and atomically: a checkpoint without it does not exist.
//! - Streams below a threshold (20 KiB by default) are inlined into the metadata.
//! - Retention keeps the N latest checkpoints; shared files are deleted when no
//!   retained checkpoint references them (a persisted, reference-counted registry).
//! - Every file's CRC32C is recorded; downloads verify it, the canonical format checks
//!   each section it reads.
//! - Savepoints are self-contained directories that can be moved and restored anywhere.
//! - A job owns its directory through a lease with a fencing token ([`lease`]): a
//!   second job opening it fails naming the owner; a killed owner's lease is taken over.
//! - Checkpoints, loads and cleanups emit `tracing` events.
#![deny(missing_docs)]

mod checkpoint_storage;
mod coordinated;
mod counting;
#[cfg(feature = "heap")]
mod fs_backend;
pub mod layout;
pub mod lease;
mod metadata;
mod metadata_v2;
mod options;
pub mod store;
mod streams;
mod transfer;
mod uri;

pub use checkpoint_storage::{CompletedCheckpoint, FsCheckpointStorage};
#[cfg(feature = "heap")]
pub use counting::CountingStore;
pub use fs_backend::FsStateBackend;
pub use lease::{LeaseOptions, LeaseRecord};
pub use metadata::{CheckpointMetadata, LEGACY_OPERATOR_ID, SharedFile, SharedRegistry, SnapshotKind};
pub use options::{
    DEFAULT_INLINE_THRESHOLD, FsOptions, FsOptionsBuilder, MAX_INLINE_THRESHOLD, S3Config, S3Credentials,
};
pub use store::{ObjectStore, ObjectWriter, OpendalStore};
pub use uri::Location;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
