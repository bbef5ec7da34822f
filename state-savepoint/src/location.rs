//! Where a savepoint or checkpoint is, from one URI: `<root>/<name>` is the savepoint
//! `name` under `root`; `<root>/<job>/chk-<n>` is checkpoint `n` of job `job`.

use state_api::{Result, StateError};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions};

/// A savepoint or a checkpoint of a job, under a storage root (`file:///…`, a path,
/// `s3://…`, `hdfs://…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The savepoint directory `name` under `root`.
    Savepoint {
        /// The storage root.
        root: String,
        /// The savepoint's directory name.
        name: String,
    },
    /// Checkpoint `id` of job `job` under `root`.
    Checkpoint {
        /// The storage root.
        root: String,
        /// The job id.
        job: String,
        /// The checkpoint id.
        id: u64,
    },
}

impl Location {
    /// Parses `<root>/<name>` (a savepoint) or `<root>/<job>/chk-<n>` (a checkpoint).
    pub fn parse(uri: &str) -> Result<Self> {
        let trimmed = uri.trim_end_matches('/');
        let split = |s: &str| match s.rfind('/') {
            Some(i) if i > 0 && !s[..i].ends_with(':') && !s[..i].ends_with(":/") => {
                (s[..i].to_string(), s[i + 1..].to_string())
            }
            _ => (".".to_string(), s.to_string()),
        };
        let (parent, last) = split(trimmed);
        if last.is_empty() {
            return Err(StateError::InvalidArgument(format!(
                "`{uri}` names no savepoint or checkpoint directory"
            )));
        }
        if let Some(id) = last.strip_prefix("chk-").and_then(|n| n.parse::<u64>().ok()) {
            let (root, job) = split(&parent);
            if job.is_empty() || job == "." {
                return Err(StateError::InvalidArgument(format!(
                    "`{uri}`: a checkpoint directory must be `<root>/<job>/chk-<n>`"
                )));
            }
            return Ok(Location::Checkpoint { root, job, id });
        }
        Ok(Location::Savepoint {
            root: parent,
            name: last,
        })
    }

    /// Opens the storage without taking it over (no lease, nothing cleaned up) and
    /// loads the metadata.
    pub fn open(&self, options: FsOptions) -> Result<(FsCheckpointStorage, CheckpointMetadata)> {
        match self {
            Location::Savepoint { root, name } => {
                let storage = FsCheckpointStorage::savepoint(root, name, options)?;
                let meta = storage.load_checkpoint(0)?;
                Ok((storage, meta))
            }
            Location::Checkpoint { root, job, id } => {
                let storage = FsCheckpointStorage::participant(root, job, options)?;
                let meta = storage.load_checkpoint(*id)?;
                Ok((storage, meta))
            }
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Savepoint { root, name } => write!(f, "savepoint `{name}` under `{root}`"),
            Location::Checkpoint { root, job, id } => write!(f, "checkpoint {id} of job `{job}` under `{root}`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_savepoints_and_checkpoints() {
        assert_eq!(
            Location::parse("/data/sp-1/").unwrap(),
            Location::Savepoint {
                root: "/data".into(),
                name: "sp-1".into()
            }
        );
        assert_eq!(
            Location::parse("s3://bucket/jobs/job-a/chk-42").unwrap(),
            Location::Checkpoint {
                root: "s3://bucket/jobs".into(),
                job: "job-a".into(),
                id: 42
            }
        );
        assert_eq!(
            Location::parse("sp").unwrap(),
            Location::Savepoint {
                root: ".".into(),
                name: "sp".into()
            }
        );
        assert!(Location::parse("chk-3").is_err());
        assert!(Location::parse("/").is_err());
    }
}
