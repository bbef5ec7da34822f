//! The RocksDB key layout (frozen, as Flink's) and value encodings.
//!
//! Keys: `[key group: 1 byte if max parallelism <= 128, else 2, big-endian][key][namespace]`
//! and, for map state, the user key appended. Key, namespace and user key are their
//! canonical (postcard) bytes, which are self-delimiting for their type, so a key group,
//! a key and a (key, namespace) are contiguous ranges.
//!
//! Values: `[timestamp: i64 BE, only with TTL][postcard value]`. A list is the
//! concatenation of its elements, each `[timestamp, only with TTL][length: varint][bytes]`,
//! so appending is a RocksDB merge that concatenates operands (no read-modify-write).

use state_api::raw::format::put_varint;
use state_api::{Result, StateError};

pub use state_api::keygroup::{key_group_prefix_len, put_key_group, read_key_group};

/// The smallest key greater than every key starting with `prefix` (for range deletes
/// and iteration bounds); `None` when the prefix is all `0xff`.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last != 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// A corrupt value of state `name`.
pub fn corrupt(name: &str, detail: impl Into<String>) -> StateError {
    StateError::Corrupt {
        source_name: format!("RocksDB column family `{name}`"),
        section: "value".into(),
        detail: detail.into(),
        source: None,
    }
}

/// Splits a value-shaped RocksDB value into (timestamp, value bytes).
pub fn split_value<'a>(bytes: &'a [u8], ttl: bool, name: &str) -> Result<(i64, &'a [u8])> {
    if !ttl {
        return Ok((0, bytes));
    }
    let ts = bytes
        .get(..8)
        .ok_or_else(|| corrupt(name, "value shorter than its timestamp"))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(ts);
    Ok((i64::from_be_bytes(b), &bytes[8..]))
}

/// Appends one list element.
pub fn put_list_element(buf: &mut Vec<u8>, ts: i64, bytes: &[u8], ttl: bool) {
    if ttl {
        buf.extend_from_slice(&ts.to_be_bytes());
    }
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Iterates a list value's elements as (timestamp, bytes).
pub fn list_elements<'a>(
    mut bytes: &'a [u8],
    ttl: bool,
    name: &'a str,
) -> impl Iterator<Item = Result<(i64, &'a [u8])>> + 'a {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let mut step = || -> Result<(i64, &'a [u8])> {
            let (ts, rest) = split_value(bytes, ttl, name)?;
            let (len, used) = read_varint(rest).ok_or_else(|| corrupt(name, "bad list element length"))?;
            let start = used;
            let end = usize::try_from(len)
                .ok()
                .and_then(|l| start.checked_add(l))
                .filter(|&e| e <= rest.len())
                .ok_or_else(|| corrupt(name, "list element runs past the value"))?;
            bytes = &rest[end..];
            Ok((ts, &rest[start..end]))
        };
        let r = step();
        if r.is_err() {
            bytes = &[];
        }
        Some(r)
    })
}

pub use state_api::raw::format::read_varint;

/// Length of the canonical encoding of one `T` at the start of `bytes`.
pub fn encoded_len<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<usize> {
    postcard::take_from_bytes::<T>(bytes)
        .ok()
        .map(|(_, rest)| bytes.len() - rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_group_prefix_is_one_or_two_big_endian_bytes() {
        let mut b = Vec::new();
        put_key_group(&mut b, 127, key_group_prefix_len(128));
        assert_eq!(b, vec![127]);
        b.clear();
        put_key_group(&mut b, 0x1234, key_group_prefix_len(32768));
        assert_eq!(b, vec![0x12, 0x34]);
        assert_eq!(read_key_group(&b, 2), Some(0x1234));
        assert_eq!(read_key_group(&[], 1), None);
    }

    #[test]
    fn successor_and_list_codec() {
        assert_eq!(prefix_successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        let mut v = Vec::new();
        put_list_element(&mut v, 5, b"ab", true);
        put_list_element(&mut v, 6, b"", true);
        let items: Vec<_> = list_elements(&v, true, "l").collect::<Result<_>>().unwrap();
        assert_eq!(items, vec![(5, &b"ab"[..]), (6, &b""[..])]);
        // Truncated: an error, not a panic.
        let bad: Vec<_> = list_elements(&v[..v.len() - 3], true, "l").collect();
        assert!(bad.iter().any(|r| r.is_err()));
    }
}
