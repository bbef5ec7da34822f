//! In-memory checkpoint storage (Flink's `JobManagerCheckpointStorage`): snapshot
//! streams are kept as bytes by the coordinator, bounded by a maximum size per stream.

use std::io::Write;

use state_api::{CheckpointInput, CheckpointOutput, CheckpointStorage, Result, StateError, StreamHandle};

/// The default maximum size of one state stream: 5 MiB, as Flink's `MemoryStateBackend`.
pub const DEFAULT_MAX_STATE_SIZE: usize = 5 * 1024 * 1024;

/// Keeps snapshot streams in memory, inline in their handles. Heap backend + this
/// storage = Flink's `MemoryStateBackend`: for tests and small state only.
///
/// ```
/// use std::io::Write;
/// use state_api::{CheckpointStorage, StateError};
/// use state_heap::MemoryCheckpointStorage;
///
/// let storage = MemoryCheckpointStorage::with_max_state_size(4);
/// let mut out = storage.create_output(1, "state").unwrap();
/// assert!(out.write_all(b"too large").is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MemoryCheckpointStorage {
    max_state_size: usize,
}

impl Default for MemoryCheckpointStorage {
    fn default() -> Self {
        MemoryCheckpointStorage {
            max_state_size: DEFAULT_MAX_STATE_SIZE,
        }
    }
}

impl MemoryCheckpointStorage {
    /// A storage whose streams may hold at most `max_state_size` bytes each.
    pub fn with_max_state_size(max_state_size: usize) -> Self {
        MemoryCheckpointStorage { max_state_size }
    }

    /// The maximum size of one stream.
    pub fn max_state_size(&self) -> usize {
        self.max_state_size
    }
}

struct MemoryOutput {
    bytes: Vec<u8>,
    max: usize,
    exceeded: Option<u64>,
}

impl Write for MemoryOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let size = self.bytes.len() + buf.len();
        if size > self.max {
            self.exceeded = Some(size as u64);
            return Err(StateError::StateTooLarge {
                size: size as u64,
                max: self.max as u64,
            }
            .into_io());
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CheckpointOutput for MemoryOutput {
    fn finish(self: Box<Self>) -> Result<StreamHandle> {
        if let Some(size) = self.exceeded {
            return Err(StateError::StateTooLarge {
                size,
                max: self.max as u64,
            });
        }
        Ok(StreamHandle::Inline { bytes: self.bytes })
    }
}

impl CheckpointStorage for MemoryCheckpointStorage {
    fn create_output(&self, _checkpoint_id: u64, _name: &str) -> Result<Box<dyn CheckpointOutput>> {
        Ok(Box::new(MemoryOutput {
            bytes: Vec::new(),
            max: self.max_state_size,
            exceeded: None,
        }))
    }

    fn open_input(&self, handle: &StreamHandle) -> Result<Box<dyn CheckpointInput>> {
        handle.open_inline().ok_or_else(|| {
            StateError::InvalidArgument(format!(
                "in-memory checkpoint storage cannot read file `{}`; restore it with the file system storage that wrote it",
                handle.describe()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limit_is_five_mib() {
        assert_eq!(MemoryCheckpointStorage::default().max_state_size(), 5 * 1024 * 1024);
    }

    #[test]
    fn exceeding_the_limit_is_a_typed_error_and_within_it_round_trips() {
        let storage = MemoryCheckpointStorage::with_max_state_size(10);
        let mut out = storage.create_output(1, "s").unwrap();
        out.write_all(b"0123456789").unwrap();
        let handle = out.finish().unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut storage.open_input(&handle).unwrap(), &mut back).unwrap();
        assert_eq!(back, b"0123456789");

        let mut out = storage.create_output(1, "s").unwrap();
        let err = out.write_all(b"0123456789A").unwrap_err();
        match StateError::from_io("writing", err) {
            StateError::StateTooLarge { size: 11, max: 10 } => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(out.finish(), Err(StateError::StateTooLarge { max: 10, .. })));
    }

    #[test]
    fn files_are_refused_with_a_clear_error() {
        let storage = MemoryCheckpointStorage::default();
        let handle = StreamHandle::File {
            path: "chk-1/x".into(),
            size: 1,
            crc32c: 0,
        };
        assert!(matches!(storage.open_input(&handle), Err(StateError::InvalidArgument(m)) if m.contains("chk-1/x")));
    }
}
