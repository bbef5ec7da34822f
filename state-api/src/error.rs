//! The error type shared by every backend and storage.

use crate::keygroup::KeyGroupRange;
use crate::state::StateKind;

/// Result alias used throughout the state crates.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// The source of an error from another crate (an object store, RocksDB, LMDB, postcard,
/// the memory manager), kept so `std::error::Error::source` reaches it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure a [`StateError`] is, for callers that decide what to do about
/// it (retry, give up on a checkpoint, fix the code) without matching every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Something named does not exist: a state, a file, a restorable checkpoint.
    NotFound,
    /// The caller passed something out of range or called at the wrong time (no
    /// current key, a key of another subtask).
    InvalidArgument,
    /// What was registered or restored does not match what exists (kind, type, TTL,
    /// format version).
    Incompatible,
    /// Stored bytes are damaged, cut short, of another kind, or do not decode.
    Corrupt,
    /// A value could not be serialized.
    Serialization,
    /// A budget or limit is exhausted (managed memory, the in-memory checkpoint size).
    ResourceExhausted,
    /// The storage or the local database failed; see [`StateError::is_retryable`].
    Storage,
    /// Another party owns or already did it: a live lease, a newer owner (fencing), a
    /// checkpoint the coordinator rejects or an acknowledgement it already has.
    Conflict,
    /// The operation was cancelled.
    Cancelled,
    /// The backend or storage does not offer the operation.
    Unsupported,
    /// A bug or a crashed thread: not the caller's fault, not retryable.
    Internal,
}

/// Everything that can go wrong when using or restoring state.
///
/// Each variant carries the context a user needs to act: the state name, the
/// file or section that was bad, the sizes involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A state was used that was never registered on this backend.
    #[error("unknown state `{name}`: register it with `register(...)` before using it")]
    UnknownState {
        /// The state name.
        name: String,
    },
    /// A state was registered again (or restored) as a different kind.
    #[error("state `{name}` is a {existing:?} state and cannot be used as a {requested:?} state")]
    KindMismatch {
        /// The state name.
        name: String,
        /// The kind it has.
        existing: StateKind,
        /// The kind that was asked for.
        requested: StateKind,
    },
    /// A state was registered again (or restored) with a different type.
    #[error(
        "state `{name}`: incompatible {role} type: the state holds `{existing}` but `{requested}` was requested \
         (pin a stable name with the descriptor's `with_type_name` if the type was only renamed)"
    )]
    IncompatibleType {
        /// The state name (or `<key>` for the backend's key type).
        name: String,
        /// Which type: key, namespace, value, user key, user value.
        role: &'static str,
        /// The type recorded for the state.
        existing: String,
        /// The type that was asked for.
        requested: String,
    },
    /// A restored state's stored values do not read as the registered type: its schema
    /// changed and no migration of the descriptor starts from the stored schema.
    #[error(
        "state `{name}`: the {role} schema changed from {existing} to {requested}; the stored values \
         cannot be read as the new type (register a migration from the old type with the descriptor's \
         `with_migration`, or keep the old type)"
    )]
    IncompatibleSchema {
        /// The state name (or `<key>` for the backend's key type).
        name: String,
        /// Which type: key, namespace, value, user key.
        role: &'static str,
        /// The stored schema, readable.
        existing: String,
        /// The requested type's schema, readable.
        requested: String,
    },
    /// A state was registered again (or restored) with a different TTL setting.
    #[error("state `{name}`: TTL was {existing} in the snapshot but is {requested} in the descriptor")]
    IncompatibleTtl {
        /// The state name.
        name: String,
        /// `"enabled"` or `"disabled"`.
        existing: &'static str,
        /// `"enabled"` or `"disabled"`.
        requested: &'static str,
    },
    /// Keyed state was accessed before `set_current_key`.
    #[error("no current key: call `set_current_key` before accessing keyed state")]
    NoCurrentKey,
    /// The key belongs to a key group this backend does not own.
    #[error("key group {key_group} is outside this backend's key-group range {range}")]
    KeyGroupOutOfRange {
        /// The key's key group.
        key_group: u32,
        /// The range the backend owns.
        range: KeyGroupRange,
    },
    /// A snapshot stream is corrupt: a bad checksum, a bad length, bytes that do not decode.
    #[error("corrupt snapshot `{source_name}` in {section}: {detail}")]
    Corrupt {
        /// The file or stream that was read.
        source_name: String,
        /// The section of the format (header, key group 17, index, ...).
        section: String,
        /// What was wrong.
        detail: String,
        /// The decoder's error, where one said what was wrong.
        #[source]
        source: Option<BoxError>,
    },
    /// A snapshot stream ended before the format said it would.
    #[error("truncated snapshot `{source_name}`: {section} ends early")]
    Truncated {
        /// The file or stream that was read.
        source_name: String,
        /// The section that was cut off.
        section: String,
    },
    /// A snapshot stream was written in a format version this build cannot read.
    #[error("snapshot `{source_name}` has format version {found}; this build reads versions up to {supported}")]
    UnsupportedVersion {
        /// The file or stream that was read.
        source_name: String,
        /// The version in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A snapshot does not fit the storage it is written to.
    #[error(
        "state of {size} bytes exceeds the maximum of {max} bytes of this checkpoint storage; \
         raise the limit or use a file system checkpoint storage"
    )]
    StateTooLarge {
        /// Bytes written so far.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// A value could not be serialized or deserialized.
    #[error("state `{name}`: cannot (de)serialize {role}: {detail}")]
    Serialization {
        /// The state name.
        name: String,
        /// What was being (de)serialized.
        role: &'static str,
        /// The serializer's message.
        detail: String,
        /// The serializer's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The state of a job checkpoint does not fit the job: an unknown operator, a
    /// subtask index not below the parallelism, a subtask twice, a max parallelism that
    /// differs from the restoring job's, handles outside a subtask's key groups.
    #[error("checkpoint state of operator `{operator}`{}: {detail}", subtask.map(|s| format!(" subtask {s}")).unwrap_or_default())]
    InvalidCheckpoint {
        /// The operator id.
        operator: String,
        /// The subtask, where one is concerned.
        subtask: Option<u32>,
        /// What was wrong.
        detail: String,
        /// The error that showed it, where there was one.
        #[source]
        source: Option<BoxError>,
    },
    /// A checkpoint coordinator refused a call: a trigger while too many checkpoints are
    /// pending or with an id not above the last one, an acknowledgement of a checkpoint
    /// that was never triggered.
    #[error("checkpoint {checkpoint_id}: {reason}")]
    CheckpointRejected {
        /// The checkpoint id.
        checkpoint_id: u64,
        /// Why.
        reason: String,
    },
    /// A subtask acknowledged the same checkpoint twice; the first acknowledgement stands.
    #[error("checkpoint {checkpoint_id}: operator `{operator}` subtask {subtask} acknowledged twice")]
    DuplicateAcknowledgement {
        /// The checkpoint id.
        checkpoint_id: u64,
        /// The operator id.
        operator: String,
        /// The subtask.
        subtask: u32,
    },
    /// No retained checkpoint could be restored: each was damaged or incomplete.
    #[error("no retained checkpoint of `{location}` can be restored: {}", reasons.join("; "))]
    NoRestorableCheckpoint {
        /// The storage location (job directory).
        location: String,
        /// Per checkpoint, why it was skipped.
        reasons: Vec<String>,
    },
    /// Another running job owns the checkpoint directory (its lease is live).
    #[error("`{location}` is owned by another running job: {owner}")]
    LeaseHeld {
        /// The checkpoint (job) directory.
        location: String,
        /// Who holds the lease: owner token, host, PID, epoch and last heartbeat.
        owner: String,
    },
    /// This job lost the ownership of its checkpoint directory: a newer owner took the
    /// lease over (fencing), so this job must not commit or delete anything there.
    #[error("`{location}` was taken over by another owner (its epoch {newer}, ours {epoch}); this job is fenced off")]
    Fenced {
        /// The checkpoint (job) directory.
        location: String,
        /// Our lease epoch (fencing token).
        epoch: u64,
        /// The newer owner's epoch.
        newer: u64,
    },
    /// The backend or storage does not offer an operation (an incremental snapshot of a
    /// heap backend, for example).
    #[error("unsupported: {what}")]
    Unsupported {
        /// What was asked for.
        what: String,
    },
    /// A caller passed an argument that is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The managed-memory budget does not allow the update.
    #[error("memory budget exhausted: {requested} bytes requested, {available} of {budget} bytes available")]
    MemoryExhausted {
        /// Bytes the operation needed.
        requested: u64,
        /// Bytes still free.
        available: u64,
        /// The total budget.
        budget: u64,
        /// The memory manager's error, naming the slot and the owner.
        #[source]
        source: Option<BoxError>,
    },
    /// The memory manager refused a request other than for lack of memory (a bad
    /// configuration, an unknown slot).
    #[error("memory manager: {source}")]
    Memory {
        /// The memory manager's error.
        #[source]
        source: BoxError,
    },
    /// An asynchronous part or a transfer was cancelled before it finished.
    #[error("cancelled: {what}")]
    Cancelled {
        /// What was cancelled.
        what: String,
    },
    /// A bug or a crashed thread (a panic in a worker): the operation cannot go on.
    #[error("internal error: {what}")]
    Internal {
        /// What failed.
        what: String,
    },
    /// An I/O error, with what was being done.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A storage-specific failure (an object store, a remote file system, the local
    /// database).
    #[error("storage error while {context}: {detail}")]
    Storage {
        /// What was being done.
        context: String,
        /// The storage's message.
        detail: String,
        /// Whether the storage said the failure is temporary (a timeout, throttling, a
        /// busy database): the same call may succeed later.
        retryable: bool,
        /// The storage's error.
        #[source]
        source: Option<BoxError>,
    },
}

impl StateError {
    /// A storage failure caused by `source`, with what was being done; `retryable` says
    /// whether the storage called it temporary.
    pub fn storage(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
        retryable: bool,
    ) -> Self {
        StateError::Storage {
            context: context.into(),
            detail: source.to_string(),
            retryable,
            source: Some(Box::new(source)),
        }
    }

    /// A storage failure found by our own checks (no underlying error), not retryable.
    pub fn storage_message(context: impl Into<String>, detail: impl Into<String>) -> Self {
        StateError::Storage {
            context: context.into(),
            detail: detail.into(),
            retryable: false,
            source: None,
        }
    }

    /// A (de)serialization failure of `role` in state `name`, keeping the serializer's
    /// error as the source.
    pub fn serialization(
        name: impl Into<String>,
        role: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StateError::Serialization {
            name: name.into(),
            role,
            detail: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// The same error with `source` as its cause, for the variants that carry one
    /// (corrupt data, serialization, storage); other variants are returned unchanged.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        match &mut self {
            StateError::Corrupt { source: s, .. }
            | StateError::InvalidCheckpoint { source: s, .. }
            | StateError::Serialization { source: s, .. }
            | StateError::Storage { source: s, .. } => *s = Some(Box::new(source)),
            _ => {}
        }
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        use StateError as E;
        match self {
            E::UnknownState { .. } | E::NoRestorableCheckpoint { .. } => ErrorKind::NotFound,
            E::KindMismatch { .. }
            | E::IncompatibleType { .. }
            | E::IncompatibleSchema { .. }
            | E::IncompatibleTtl { .. } => ErrorKind::Incompatible,
            E::UnsupportedVersion { .. } => ErrorKind::Incompatible,
            E::NoCurrentKey | E::KeyGroupOutOfRange { .. } | E::InvalidArgument(_) | E::Memory { .. } => {
                ErrorKind::InvalidArgument
            }
            E::Corrupt { .. } | E::Truncated { .. } | E::InvalidCheckpoint { .. } => ErrorKind::Corrupt,
            E::Serialization { .. } => ErrorKind::Serialization,
            E::StateTooLarge { .. } | E::MemoryExhausted { .. } => ErrorKind::ResourceExhausted,
            E::CheckpointRejected { .. }
            | E::DuplicateAcknowledgement { .. }
            | E::LeaseHeld { .. }
            | E::Fenced { .. } => ErrorKind::Conflict,
            E::Cancelled { .. } => ErrorKind::Cancelled,
            E::Unsupported { .. } => ErrorKind::Unsupported,
            E::Internal { .. } => ErrorKind::Internal,
            E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            E::Io { .. } | E::Storage { .. } => ErrorKind::Storage,
        }
    }

    /// Whether the same call may succeed if retried later: a storage failure the storage
    /// called temporary, an I/O error that is a timeout or an interruption, a lease whose
    /// owner may yet let it lapse.
    pub fn is_retryable(&self) -> bool {
        use std::io::ErrorKind as Io;
        match self {
            StateError::Storage { retryable, .. } => *retryable,
            StateError::Io { source, .. } => matches!(
                source.kind(),
                Io::Interrupted
                    | Io::TimedOut
                    | Io::WouldBlock
                    | Io::ConnectionReset
                    | Io::ConnectionAborted
                    | Io::ConnectionRefused
            ),
            StateError::LeaseHeld { .. } => true,
            _ => false,
        }
    }

    /// Wraps an I/O error, unless it carries a [`StateError`] (as writers do for
    /// [`StateError::StateTooLarge`]), which is then returned as it was.
    pub fn from_io(context: impl Into<String>, err: std::io::Error) -> Self {
        match err.downcast::<StateError>() {
            Ok(state_err) => state_err,
            Err(source) => StateError::Io {
                context: context.into(),
                source,
            },
        }
    }

    /// Whether the error says that stored bytes are damaged, missing or of another kind
    /// (as opposed to a failing device or network, which may pass): what makes a
    /// checkpoint unusable rather than temporarily unreadable.
    pub fn is_damage(&self) -> bool {
        match self {
            StateError::Corrupt { .. }
            | StateError::Truncated { .. }
            | StateError::UnsupportedVersion { .. }
            | StateError::InvalidCheckpoint { .. } => true,
            StateError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }

    /// Wraps this error into an [`std::io::Error`] so it can pass through [`std::io::Write`];
    /// [`StateError::from_io`] unwraps it again.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_retryability_follow_the_cause() {
        let missing = StateError::from_io("reading `x`", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert!(!missing.is_retryable());
        let timeout = StateError::from_io("reading `x`", std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(timeout.kind(), ErrorKind::Storage);
        assert!(timeout.is_retryable());
        let corrupt = StateError::Corrupt {
            source_name: "f".into(),
            section: "header".into(),
            detail: "bad".into(),
            source: None,
        };
        assert_eq!(corrupt.kind(), ErrorKind::Corrupt);
        assert_eq!(StateError::NoCurrentKey.kind(), ErrorKind::InvalidArgument);
        let held = StateError::LeaseHeld {
            location: "j".into(),
            owner: "o".into(),
        };
        assert_eq!(held.kind(), ErrorKind::Conflict);
        assert!(held.is_retryable());
        assert_eq!(StateError::Cancelled { what: "c".into() }.kind(), ErrorKind::Cancelled);
        assert_eq!(StateError::Internal { what: "p".into() }.kind(), ErrorKind::Internal);
        assert_eq!(
            StateError::Unsupported { what: "u".into() }.kind(),
            ErrorKind::Unsupported
        );
    }

    #[test]
    fn storage_and_serialization_errors_keep_their_source() {
        let cause = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow down");
        let e = StateError::storage("uploading `chk-3/a`", cause, true);
        assert!(e.is_retryable());
        assert_eq!(e.kind(), ErrorKind::Storage);
        let source = std::error::Error::source(&e).expect("source kept");
        assert_eq!(
            source.downcast_ref::<std::io::Error>().map(|s| s.kind()),
            Some(std::io::ErrorKind::TimedOut)
        );
        assert!(
            e.to_string().contains("chk-3/a") && e.to_string().contains("slow down"),
            "{e}"
        );
        assert!(!StateError::storage_message("x", "y").is_retryable());
        assert!(std::error::Error::source(&StateError::storage_message("x", "y")).is_none());

        let decode = postcard::from_bytes::<u64>(&[]).unwrap_err();
        let e = StateError::serialization("counts", "value", decode);
        assert_eq!(e.kind(), ErrorKind::Serialization);
        assert!(std::error::Error::source(&e).is_some_and(|s| s.downcast_ref::<postcard::Error>().is_some()));

        // Bytes that do not decode are corrupt, naming the file, with the decoder's error kept.
        let e = crate::raw::framing::decode_body::<String>(&[0xff], "chk-1/_metadata", "body").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("chk-1/_metadata"), "{e}");
        assert!(std::error::Error::source(&e).is_some_and(|s| s.downcast_ref::<postcard::Error>().is_some()));
    }
}
