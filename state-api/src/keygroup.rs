//! Key groups: the unit in which keyed state is partitioned, snapshotted and rescaled.
//!
//! These are Flink's `KeyGroupRangeAssignment` formulas, frozen (see DESIGN.md):
//!
//! - `key_group = murmur_finalize(stable_hash(serialized key)) % max_parallelism`, where
//!   `stable_hash` is MurmurHash3 x86 32-bit (seed 0) of the key's canonical (postcard)
//!   bytes and `murmur_finalize` is Flink's `MathUtils.murmurHash(int)`;
//! - operator index of a key group: `kg * parallelism / max_parallelism`;
//! - key-group range of operator `i`: `ceil(i * maxP / p) ..= ceil((i + 1) * maxP / p) - 1`;
//! - default max parallelism: `min(max(round_up_pow2(p + p / 2), 128), 32768)`.
//!
//! ```
//! use state_api::keygroup::{key_group_for_key, key_group_range_for_operator, operator_index_for_key_group};
//! let kg = key_group_for_key(&"alice".to_string(), 128).unwrap();
//! let op = operator_index_for_key_group(128, 3, kg).unwrap();
//! assert!(key_group_range_for_operator(128, 3, op).unwrap().contains(kg));
//! ```
//!
//! Over 500 lines: 200 of them are the unit tests pinning Flink's formulas.

use serde::{Deserialize, Serialize};

use crate::error::{Result, StateError};

/// The smallest max parallelism chosen by default.
pub const DEFAULT_LOWER_BOUND_MAX_PARALLELISM: u32 = 128;
/// The largest max parallelism there can be (key groups are at most 2 bytes in RocksDB keys).
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 32768;

/// An inclusive, possibly empty range of key groups `[start, end]` (Flink's `KeyGroupRange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawKeyGroupRange")]
pub struct KeyGroupRange {
    start: u32,
    /// One past the last key group (exclusive end), so that the empty range is representable.
    end_exclusive: u32,
}

/// [`KeyGroupRange`] as stored (the same fields, in the same order), checked when read:
/// a range that ends before it starts is refused, never computed with.
#[derive(Deserialize)]
struct RawKeyGroupRange {
    start: u32,
    end_exclusive: u32,
}

impl TryFrom<RawKeyGroupRange> for KeyGroupRange {
    type Error = String;

    fn try_from(raw: RawKeyGroupRange) -> std::result::Result<Self, String> {
        if raw.end_exclusive < raw.start {
            return Err(format!(
                "key-group range ends ({}) before it starts ({})",
                raw.end_exclusive, raw.start
            ));
        }
        Ok(KeyGroupRange {
            start: raw.start,
            end_exclusive: raw.end_exclusive,
        })
    }
}

impl KeyGroupRange {
    /// The range `start..=end`. `end < start` gives the empty range.
    pub fn new(start: u32, end: u32) -> Self {
        if end < start {
            Self::EMPTY
        } else {
            KeyGroupRange {
                start,
                end_exclusive: end + 1,
            }
        }
    }

    /// The range of every key group for a max parallelism: `0..=max_parallelism - 1`.
    pub fn all(max_parallelism: u32) -> Self {
        KeyGroupRange::new(0, max_parallelism.saturating_sub(1))
    }

    /// The empty range.
    pub const EMPTY: KeyGroupRange = KeyGroupRange {
        start: 0,
        end_exclusive: 0,
    };

    /// First key group. Meaningless for the empty range.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// Last key group (inclusive). Meaningless for the empty range.
    pub fn end(&self) -> u32 {
        self.end_exclusive.saturating_sub(1)
    }

    /// Number of key groups in the range.
    pub fn len(&self) -> u32 {
        self.end_exclusive.saturating_sub(self.start)
    }

    /// `true` for the empty range.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key_group` lies in the range.
    pub fn contains(&self, key_group: u32) -> bool {
        key_group >= self.start && key_group < self.end_exclusive
    }

    /// The key groups both ranges hold.
    pub fn intersection(&self, other: &KeyGroupRange) -> KeyGroupRange {
        let start = self.start.max(other.start);
        let end_exclusive = self.end_exclusive.min(other.end_exclusive);
        if start >= end_exclusive {
            Self::EMPTY
        } else {
            KeyGroupRange { start, end_exclusive }
        }
    }

    /// Iterates over the key groups in order.
    pub fn iter(&self) -> std::ops::Range<u32> {
        self.start..self.end_exclusive
    }

    /// Index of `key_group` within the range, or [`StateError::KeyGroupOutOfRange`]: what
    /// a backend checks when the current key is set.
    pub fn owned_index(&self, key_group: u32) -> Result<usize> {
        self.index_of(key_group).ok_or_else(|| StateError::KeyGroupOutOfRange {
            key_group,
            range: *self,
        })
    }

    /// Index of `key_group` within the range (`key_group - start`), if it is in the range.
    pub fn index_of(&self, key_group: u32) -> Option<usize> {
        self.contains(key_group).then(|| (key_group - self.start) as usize)
    }
}

impl std::fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            write!(f, "[]")
        } else {
            write!(f, "[{}, {}]", self.start, self.end())
        }
    }
}

/// MurmurHash3 x86 32-bit with seed 0 over `data`: the stable hash of a key's bytes.
pub fn stable_hash(data: &[u8]) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h: u32 = 0;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k: u32 = 0;
        for (i, b) in tail.iter().enumerate() {
            k ^= u32::from(*b) << (8 * i);
        }
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    fmix32(h)
}

fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Flink's `MathUtils.murmurHash(int)`: scrambles a 32-bit hash code into a non-negative int.
pub fn murmur_finalize(code: i32) -> i32 {
    let mut c = code as u32;
    c = c.wrapping_mul(0xcc9e_2d51);
    c = c.rotate_left(15);
    c = c.wrapping_mul(0x1b87_3593);
    c = c.rotate_left(13);
    c = c.wrapping_mul(5).wrapping_add(0xe654_6b64);
    c ^= 4;
    let c = fmix32(c) as i32;
    if c >= 0 {
        c
    } else if c != i32::MIN {
        -c
    } else {
        0
    }
}

fn check_max_parallelism(max_parallelism: u32) -> Result<()> {
    if max_parallelism == 0 || max_parallelism > UPPER_BOUND_MAX_PARALLELISM {
        return Err(StateError::InvalidArgument(format!(
            "max parallelism must be in 1..={UPPER_BOUND_MAX_PARALLELISM}, got {max_parallelism}"
        )));
    }
    Ok(())
}

fn check_parallelism(max_parallelism: u32, parallelism: u32) -> Result<()> {
    check_max_parallelism(max_parallelism)?;
    if parallelism == 0 || parallelism > max_parallelism {
        return Err(StateError::InvalidArgument(format!(
            "parallelism must be in 1..={max_parallelism} (the max parallelism), got {parallelism}"
        )));
    }
    Ok(())
}

/// Key group of a key given its canonical serialized bytes.
pub fn key_group_for_bytes(key_bytes: &[u8], max_parallelism: u32) -> Result<u32> {
    check_max_parallelism(max_parallelism)?;
    Ok(key_group_for_hash(stable_hash(key_bytes), max_parallelism))
}

/// Key group of a hash code (Flink's `computeKeyGroupForKeyHash`). `max_parallelism` must be > 0.
pub fn key_group_for_hash(hash: u32, max_parallelism: u32) -> u32 {
    murmur_finalize(hash as i32) as u32 % max_parallelism.max(1)
}

/// Key group of a key: serializes it canonically (postcard) and hashes the bytes.
pub fn key_group_for_key<K: serde::Serialize + ?Sized>(key: &K, max_parallelism: u32) -> Result<u32> {
    key_group_and_bytes(key, max_parallelism, &mut Vec::new())
}

/// Serializes `key` canonically into `buf` (replacing its content) and returns the key's
/// key group. Backends call this once per key switch and keep the bytes (RocksDB
/// prefixes its keys with them).
pub fn key_group_and_bytes<K: serde::Serialize + ?Sized>(
    key: &K,
    max_parallelism: u32,
    buf: &mut Vec<u8>,
) -> Result<u32> {
    check_max_parallelism(max_parallelism)?;
    buf.clear();
    crate::raw::append_postcard(key, buf).map_err(|e| StateError::serialization("<key>", "key", e))?;
    Ok(key_group_for_hash(stable_hash(buf), max_parallelism))
}

/// Index of the operator (subtask) that owns `key_group` (Flink's `computeOperatorIndexForKeyGroup`).
pub fn operator_index_for_key_group(max_parallelism: u32, parallelism: u32, key_group: u32) -> Result<u32> {
    check_parallelism(max_parallelism, parallelism)?;
    if key_group >= max_parallelism {
        return Err(StateError::InvalidArgument(format!(
            "key group {key_group} is not below the max parallelism {max_parallelism}"
        )));
    }
    Ok((u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32)
}

/// Key-group range owned by operator `operator_index` of `parallelism` (Flink's
/// `computeKeyGroupRangeForOperatorIndex`).
pub fn key_group_range_for_operator(
    max_parallelism: u32,
    parallelism: u32,
    operator_index: u32,
) -> Result<KeyGroupRange> {
    check_parallelism(max_parallelism, parallelism)?;
    if operator_index >= parallelism {
        return Err(StateError::InvalidArgument(format!(
            "operator index {operator_index} is not below the parallelism {parallelism}"
        )));
    }
    let (max_p, p, i) = (
        u64::from(max_parallelism),
        u64::from(parallelism),
        u64::from(operator_index),
    );
    let start = (i * max_p).div_ceil(p);
    let end = ((i + 1) * max_p).div_ceil(p) - 1;
    Ok(KeyGroupRange::new(start as u32, end as u32))
}

/// The default max parallelism for an operator parallelism (Flink's `computeDefaultMaxParallelism`).
pub fn default_max_parallelism(parallelism: u32) -> u32 {
    let p = u64::from(parallelism);
    let wanted = (p + p / 2).max(1).next_power_of_two();
    wanted.clamp(
        u64::from(DEFAULT_LOWER_BOUND_MAX_PARALLELISM),
        u64::from(UPPER_BOUND_MAX_PARALLELISM),
    ) as u32
}

/// Bytes of the key-group prefix of a stored key for a max parallelism: 1 up to 128 key
/// groups, else 2 (Flink's layout, frozen).
pub fn key_group_prefix_len(max_parallelism: u32) -> usize {
    if max_parallelism <= 128 { 1 } else { 2 }
}

/// Appends the big-endian key-group prefix of `prefix_len` bytes.
pub fn put_key_group(buf: &mut Vec<u8>, key_group: u32, prefix_len: usize) {
    if prefix_len == 1 {
        buf.push(key_group as u8);
    } else {
        buf.extend_from_slice(&(key_group as u16).to_be_bytes());
    }
}

/// Reads the key-group prefix of `prefix_len` bytes.
pub fn read_key_group(key: &[u8], prefix_len: usize) -> Option<u32> {
    match prefix_len {
        1 => key.first().map(|b| u32::from(*b)),
        _ => key.get(..2).map(|b| u32::from(u16::from_be_bytes([b[0], b[1]]))),
    }
}

#[cfg(test)]
mod tests {
    //! Golden values computed by an independent Java program with Flink's own
    //! `MathUtils.murmurHash` and `KeyGroupRangeAssignment` code and Guava's
    //! `murmur3_32_fixed` (see the note on issue 2). They must never change.
    use super::*;

    #[test]
    fn a_stored_range_that_ends_before_it_starts_is_refused() {
        let ok = postcard::to_stdvec(&KeyGroupRange::new(3, 9)).unwrap();
        assert_eq!(
            postcard::from_bytes::<KeyGroupRange>(&ok).unwrap(),
            KeyGroupRange::new(3, 9)
        );
        // start 5, end_exclusive 2: found by the resealed mutation test (it made `len` overflow).
        let bad = postcard::to_stdvec(&(5u32, 2u32)).unwrap();
        assert!(postcard::from_bytes::<KeyGroupRange>(&bad).is_err());
    }

    #[test]
    fn murmur3_matches_reference_vectors() {
        assert_eq!(stable_hash(b""), 0);
        assert_eq!(stable_hash(b"hello"), 0x248b_fa47);
        assert_eq!(stable_hash(b"The quick brown fox jumps over the lazy dog"), 0x2e4f_f723);
    }

    #[test]
    fn murmur_finalize_matches_flink() {
        let golden: [(i32, i32); 8] = [
            (0, 593689054),
            (1, 68075478),
            (2, 1085422463),
            (42, 1134849565),
            (-1, 1982413648),
            (i32::MAX, 1653689534),
            (i32::MIN, 1718298732),
            (123456789, 1088346449),
        ];
        for (input, want) in golden {
            assert_eq!(murmur_finalize(input), want, "murmurHash({input})");
        }
    }

    #[test]
    fn string_keys_map_to_pinned_key_groups() {
        let golden: [(&str, u32, u32); 8] = [
            ("", 104, 2152),
            ("a", 56, 31288),
            ("alice", 96, 1760),
            ("bob", 98, 14818),
            ("user-42", 125, 27389),
            ("Zürich", 22, 11670),
            ("🦀 crab", 94, 6238),
            ("the quick brown fox", 123, 8187),
        ];
        for (key, kg128, kg32768) in golden {
            assert_eq!(key_group_for_key(key, 128).unwrap(), kg128, "{key:?} at 128");
            assert_eq!(
                key_group_for_key(&key.to_string(), 32768).unwrap(),
                kg32768,
                "{key:?} at 32768"
            );
        }
    }

    #[test]
    fn integer_keys_map_to_pinned_key_groups() {
        let golden: [(u64, u32, u32); 7] = [
            (0, 104, 2152),
            (1, 72, 584),
            (127, 30, 1694),
            (128, 93, 733),
            (300, 32, 3744),
            (1_000_000, 81, 3153),
            (4_294_967_296, 65, 2881),
        ];
        for (key, kg128, kg4096) in golden {
            assert_eq!(key_group_for_key(&key, 128).unwrap(), kg128, "{key} at 128");
            assert_eq!(key_group_for_key(&key, 4096).unwrap(), kg4096, "{key} at 4096");
        }
    }

    fn ranges(max_p: u32, p: u32) -> Vec<(u32, u32)> {
        (0..p.min(8))
            .map(|i| {
                let r = key_group_range_for_operator(max_p, p, i).unwrap();
                (r.start(), r.end())
            })
            .collect()
    }

    #[test]
    fn operator_ranges_match_flink() {
        assert_eq!(ranges(128, 1), vec![(0, 127)]);
        assert_eq!(ranges(128, 3), vec![(0, 42), (43, 85), (86, 127)]);
        assert_eq!(
            ranges(128, 7),
            vec![(0, 18), (19, 36), (37, 54), (55, 73), (74, 91), (92, 109), (110, 127)]
        );
        assert_eq!(ranges(128, 128), (0..8).map(|i| (i, i)).collect::<Vec<_>>());
        assert_eq!(
            ranges(32768, 5),
            vec![(0, 6553), (6554, 13107), (13108, 19660), (19661, 26214), (26215, 32767)]
        );
        assert_eq!(
            ranges(4096, 10),
            vec![
                (0, 409),
                (410, 819),
                (820, 1228),
                (1229, 1638),
                (1639, 2047),
                (2048, 2457),
                (2458, 2867),
                (2868, 3276)
            ]
        );
    }

    #[test]
    fn operator_index_matches_flink() {
        let kgs = [0, 1, 42, 63, 64, 127];
        let golden: [(u32, [u32; 6]); 4] = [
            (1, [0, 0, 0, 0, 0, 0]),
            (3, [0, 0, 0, 1, 1, 2]),
            (7, [0, 0, 2, 3, 3, 6]),
            (128, [0, 1, 42, 63, 64, 127]),
        ];
        for (p, want) in golden {
            let got: Vec<u32> = kgs
                .iter()
                .map(|&kg| operator_index_for_key_group(128, p, kg).unwrap())
                .collect();
            assert_eq!(got, want, "p={p}");
        }
    }

    #[test]
    fn ranges_and_operator_index_agree_and_cover_everything() {
        for max_p in [1, 7, 128, 1000, 32768] {
            for p in [1, 2, 3, 7, 64, 128] {
                if p > max_p {
                    continue;
                }
                let mut next = 0;
                for i in 0..p {
                    let r = key_group_range_for_operator(max_p, p, i).unwrap();
                    assert_eq!(r.start(), next, "ranges are contiguous");
                    for kg in [r.start(), r.end()] {
                        if !r.is_empty() {
                            assert_eq!(operator_index_for_key_group(max_p, p, kg).unwrap(), i);
                        }
                    }
                    next = r.start() + r.len();
                }
                assert_eq!(next, max_p, "ranges cover every key group");
            }
        }
    }

    #[test]
    fn default_max_parallelism_matches_flink() {
        let golden = [
            (1, 128),
            (2, 128),
            (50, 128),
            (85, 128),
            (86, 256),
            (100, 256),
            (1000, 2048),
            (21846, 32768),
            (30000, 32768),
        ];
        for (p, want) in golden {
            assert_eq!(default_max_parallelism(p), want, "p={p}");
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(key_group_for_bytes(b"x", 0).is_err());
        assert!(key_group_for_bytes(b"x", 32769).is_err());
        assert!(key_group_range_for_operator(128, 0, 0).is_err());
        assert!(key_group_range_for_operator(128, 3, 3).is_err());
        assert!(key_group_range_for_operator(128, 129, 0).is_err());
        assert!(operator_index_for_key_group(128, 3, 128).is_err());
    }

    #[test]
    fn range_operations() {
        let r = KeyGroupRange::new(10, 20);
        assert_eq!(r.len(), 11);
        assert!(r.contains(10) && r.contains(20) && !r.contains(21) && !r.contains(9));
        assert_eq!(r.intersection(&KeyGroupRange::new(15, 30)), KeyGroupRange::new(15, 20));
        assert!(r.intersection(&KeyGroupRange::new(21, 30)).is_empty());
        assert!(KeyGroupRange::new(5, 4).is_empty());
        assert_eq!(r.index_of(12), Some(2));
        assert_eq!(r.index_of(21), None);
        assert_eq!(r.to_string(), "[10, 20]");
    }
}
