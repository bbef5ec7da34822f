//! # state-savepoint
//!
//! Savepoints and checkpoints of the state-backends workspace, offline (Flink's State
//! Processor API): open one from any storage URI, list its operators and states, read
//! keyed state as typed entries (or raw, decoded by the stored schemas), read timers and
//! operator state, verify every file and checksum, compare two snapshots, write a new
//! savepoint from typed entries (bootstrap, TTL states included) that every backend
//! restores at any parallelism, and transform one savepoint into another (drop
//! operators or states, rewrite values).
//!
//! Feature `rocksdb` (compiles RocksDB) reads the entries of RocksDB incremental
//! (native) checkpoints too, and transforms such a checkpoint into a savepoint.
//!
//! The `state-tool` binary (`cargo install state-savepoint --features rocksdb`) puts the same on the
//! command line: `state-tool inspect URI`, `state-tool verify URI`,
//! `state-tool dump URI --operator OP --state NAME` (JSON lines), `state-tool diff A B`,
//! each with `--json`.
//!
//! ```
//! use state_savepoint::{OperatorBuilder, SavepointReader, SavepointWriter, inspect, verify};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let root = dir.path().to_str().unwrap();
//! let mut op = OperatorBuilder::<u64>::new("window-counts", 128)?;
//! op.map_state_in::<i64, String, u64>("counts", (0..100).map(|k| (k, 0, format!("page-{}", k % 7), k)))?;
//! SavepointWriter::new("job").operator(op).write(root, "bootstrap")?;
//!
//! let reader = SavepointReader::open(&format!("{root}/bootstrap"))?;
//! assert!(verify(&reader).is_intact());
//! let report = inspect(&reader)?;
//! assert_eq!(report.operators[0].states[0].entries, 100);
//! assert_eq!(reader.read_maps::<u64, i64, String, u64>("window-counts", "counts")?.len(), 100);
//! # Ok::<(), state_api::StateError>(())
//! ```
#![deny(missing_docs)]

mod diff;
mod incremental;
mod inspect;
pub mod json;
mod location;
mod reader;
mod transform;
mod verify;
mod writer;

pub use diff::{Diff, StateDiff, diff};
pub use inspect::{Inspection, OperatorInfo, SharedFileInfo, StateInfo, StreamInfo, SubtaskInfo, inspect};
pub use location::Location;
pub use reader::{RawKeyedEntry, SavepointReader, TimerRecord};
pub use state_timers::TimeDomain;
pub use transform::SavepointTransform;
pub use verify::{Problem, Verification, verify};
pub use writer::{OperatorBuilder, SavepointWriter};
