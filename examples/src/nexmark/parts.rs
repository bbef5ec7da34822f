//! Committed result parts of the exactly-once sinks: read back and checked against the
//! size and CRC32C their checkpoint recorded.

use state_api::{Result, StateError};
use state_fs::FsCheckpointStorage;

/// Reads the committed part `rel` of `fs` and, when its checkpoint recorded one
/// (`(size, CRC32C)`; checkpoints of an older release did not), verifies it. A missing
/// or damaged part is [`StateError::Corrupt`] naming it.
pub fn read_committed(fs: &FsCheckpointStorage, rel: &str, recorded: Option<(u64, u32)>) -> Result<Vec<u8>> {
    let bad = |detail: String| StateError::Corrupt {
        source_name: rel.to_string(),
        section: "committed result part".into(),
        detail,
        source: None,
    };
    let path = fs.store_path(rel);
    if fs.store().size(&path)?.is_none() {
        return Err(bad("missing: the checkpoint that committed it records it".into()));
    }
    let bytes = fs.store().read_all(&path)?;
    if let Some((size, crc32c)) = recorded {
        let crc = crc32c::crc32c(&bytes);
        if bytes.len() as u64 != size || crc != crc32c {
            return Err(bad(format!(
                "{} bytes with CRC32C {crc:08x}; the checkpoint recorded {size} bytes with {crc32c:08x}",
                bytes.len()
            )));
        }
    }
    Ok(bytes)
}
