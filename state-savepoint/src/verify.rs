//! Verifying a savepoint or checkpoint: every file's size and CRC32C against its
//! handle, every canonical stream's header, sections and index (each with its own
//! checksum), every operator state stream.

use std::io::Read;

use serde::Serialize;
use state_api::raw::format::KeyedStreamReader;
use state_api::{CheckpointStorage, DefaultOperatorStateBackend, KeyedSnapshotHandle, StateError, StreamHandle};

use crate::reader::SavepointReader;

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The stream or file (and operator, subtask).
    pub what: String,
    /// What is wrong.
    pub error: String,
}

/// What [`verify`] checked and found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Verification {
    /// Streams and files checked.
    pub checked: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Everything wrong (empty: intact).
    pub problems: Vec<Problem>,
}

impl Verification {
    /// Whether nothing was found wrong.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.problems {
            writeln!(f, "DAMAGED {}: {}", p.what, p.error)?;
        }
        write!(
            f,
            "{} streams and files, {} bytes checked: {}",
            self.checked,
            self.bytes,
            if self.is_intact() {
                "intact".to_string()
            } else {
                format!("{} problem(s)", self.problems.len())
            }
        )
    }
}

/// Reads a whole stream and checks its size and CRC32C against the handle.
fn check_file(storage: &dyn CheckpointStorage, stream: &StreamHandle) -> Result<u64, StateError> {
    let mut input = storage.open_input(stream)?;
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| StateError::from_io(format!("reading `{}`", stream.describe()), e))?;
    if let StreamHandle::File { path, size, crc32c } = stream {
        let corrupt = |detail: String| StateError::Corrupt {
            source_name: path.clone(),
            section: "file".into(),
            detail,
            source: None,
        };
        if bytes.len() as u64 != *size {
            return Err(corrupt(format!("{} bytes, its handle says {size}", bytes.len())));
        }
        let actual = crc32c_of(&bytes);
        if actual != *crc32c {
            return Err(corrupt(format!("CRC32C {actual:08x}, its handle says {crc32c:08x}")));
        }
    }
    Ok(bytes.len() as u64)
}

fn crc32c_of(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

fn check_keyed(storage: &dyn CheckpointStorage, h: &KeyedSnapshotHandle) -> Result<u64, StateError> {
    let bytes = check_file(storage, &h.stream)?;
    let mut reader = KeyedStreamReader::open(storage.open_input(&h.stream)?, &h.stream.describe())?;
    for kg in h.key_group_range.iter() {
        reader.read_section(kg)?.blocks()?;
    }
    Ok(bytes)
}

/// Verifies everything `reader` references; never stops at the first problem.
pub fn verify(reader: &SavepointReader) -> Verification {
    let storage = reader.storage();
    let mut v = Verification::default();
    let mut record = |what: String, result: Result<u64, StateError>| {
        v.checked += 1;
        match result {
            Ok(bytes) => v.bytes += bytes,
            Err(e) => v.problems.push(Problem {
                what,
                error: e.to_string(),
            }),
        }
    };
    for op in &reader.metadata().snapshot.operators {
        for s in &op.subtasks {
            let at = |role: &str, stream: &StreamHandle| {
                format!(
                    "operator `{}` subtask {} {role} `{}`",
                    op.id,
                    s.index,
                    stream.describe()
                )
            };
            for h in &s.state.keyed {
                record(at("keyed stream", &h.stream), check_keyed(storage, h));
            }
            for h in &s.state.timers {
                record(at("timer stream", &h.stream), check_keyed(storage, h));
            }
            for h in &s.state.operator {
                let result = check_file(storage, &h.stream).and_then(|bytes| {
                    DefaultOperatorStateBackend::restore(std::slice::from_ref(h), 0, 1, storage).map(|_| bytes)
                });
                record(at("operator stream", &h.stream), result);
            }
            for h in &s.state.incremental {
                for file in h.files() {
                    record(at("incremental file", &file.stream), check_file(storage, &file.stream));
                }
            }
        }
    }
    v
}
