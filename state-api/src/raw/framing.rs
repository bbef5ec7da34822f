//! One framing for small self-describing records (checkpoint metadata, the shared-file
//! registry, coordinator messages): 8 magic bytes, a big-endian `u32` version, a
//! big-endian `u64` body length, a postcard body and the body's CRC32C.
//!
//! ```
//! use state_api::raw::framing::{frame, unframe};
//! const MAGIC: [u8; 8] = *b"\x89EXAMPL\n";
//! let bytes = frame(&MAGIC, 1, &(7u32, "seven"), "example")?;
//! let (version, body) = unframe(&MAGIC, 1, &bytes, "example.bin", "example")?;
//! assert_eq!(version, 1);
//! let value: (u32, String) = state_api::raw::framing::decode_body(body, "example.bin", "example")?;
//! assert_eq!(value, (7, "seven".to_string()));
//! // Every damage is a typed error naming the source.
//! assert!(unframe(&MAGIC, 1, &bytes[..bytes.len() - 1], "example.bin", "example").is_err());
//! # Ok::<(), state_api::StateError>(())
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Result, StateError};

/// Bytes before the body: magic, version, length.
const HEADER: usize = 20;

/// Frames `value` as `what` with `magic` and `version`.
pub fn frame<T: Serialize>(magic: &[u8; 8], version: u32, value: &T, what: &str) -> Result<Vec<u8>> {
    let body = postcard::to_stdvec(value).map_err(|e| StateError::serialization(what, "body", e))?;
    let mut out = Vec::with_capacity(body.len() + HEADER + 4);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    Ok(out)
}

/// Checks a framed record (`name` names its source in errors) and returns its version
/// (1 to `max_version`) and body. Wrong magic, an unknown version, a length that does not
/// match, trailing bytes or a bad checksum are typed errors; nothing is allocated.
pub fn unframe<'a>(
    magic: &[u8; 8],
    max_version: u32,
    bytes: &'a [u8],
    name: &str,
    what: &str,
) -> Result<(u32, &'a [u8])> {
    let corrupt = |detail: String| StateError::Corrupt {
        source_name: name.to_string(),
        section: what.to_string(),
        detail,
        source: None,
    };
    let truncated = || StateError::Truncated {
        source_name: name.to_string(),
        section: what.to_string(),
    };
    if bytes.len() < HEADER {
        return Err(truncated());
    }
    if bytes[..8] != magic[..] {
        return Err(corrupt("wrong magic bytes (not a file of this kind)".into()));
    }
    let version = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version == 0 || version > max_version {
        return Err(StateError::UnsupportedVersion {
            source_name: name.to_string(),
            found: version,
            supported: max_version,
        });
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[12..HEADER]);
    let len = u64::from_be_bytes(len_bytes);
    let end = usize::try_from(len).ok().and_then(|l| l.checked_add(HEADER));
    let Some(end) = end.filter(|&e| e.checked_add(4).is_some_and(|t| t <= bytes.len())) else {
        return Err(truncated());
    };
    if end + 4 != bytes.len() {
        return Err(corrupt(format!("{} bytes after the end", bytes.len() - end - 4)));
    }
    let body = &bytes[HEADER..end];
    let crc = u32::from_be_bytes([bytes[end], bytes[end + 1], bytes[end + 2], bytes[end + 3]]);
    if crc32c::crc32c(body) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    Ok((version, body))
}

/// Decodes a body that [`unframe`] returned; a body that does not decode is
/// [`StateError::Corrupt`] naming `name`.
pub fn decode_body<T: DeserializeOwned>(body: &[u8], name: &str, what: &str) -> Result<T> {
    postcard::from_bytes(body).map_err(|e| StateError::Corrupt {
        source_name: name.to_string(),
        section: what.to_string(),
        detail: format!("does not decode: {e}"),
        source: Some(Box::new(e)),
    })
}
