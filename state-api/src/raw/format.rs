//! The canonical snapshot (savepoint) format, frozen: every keyed backend's full
//! snapshot writes it, so a savepoint moves between backends and parallelisms.
//!
//! ```text
//! stream   := MAGIC(8) version:u32 header_len:u32 header header_crc:u32
//!             section* index index_crc:u32
//!             index_offset:u64 index_len:u32 END_MAGIC(8)
//! header   := postcard(SnapshotHeader)        key type, max parallelism, range, state metadata
//! section  := block* crc:u32                  one per key group of the range, in order
//! block    := state_index:varint entry_count:varint entry*
//! entry    := key:bytes namespace:bytes payload
//! payload  := value:  [ts:i64] bytes
//!           | list:   count:varint ([ts:i64] bytes)*
//!           | map:    count:varint (user_key:bytes [ts:i64] bytes)*
//! bytes    := len:varint data                 postcard encoding of the typed value
//! index    := postcard(Vec<u64>)              offset of every section, then of the index
//! ```
//!
//! Fixed-width integers are big-endian; `varint` is LEB128 (as postcard's). `[ts]` is
//! present only for states with TTL. Every section and the header carry a CRC32C, so a
//! restore verifies exactly what it reads, and reads only the key groups it owns.
//!
//! Over 500 lines: the frozen format's writer and reader kept side by side, so they cannot drift apart.

use std::io::{BufWriter, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

use crate::error::{Result, StateError};
use crate::keygroup::KeyGroupRange;
use crate::schema::Schema;
use crate::snapshot::CheckpointInput;
use crate::state::{StateMeta, StateShape};

/// Magic bytes opening a keyed snapshot stream.
pub const MAGIC: [u8; 8] = *b"\x89RSTATE\n";
/// Magic bytes closing a keyed snapshot stream.
pub const END_MAGIC: [u8; 8] = *b"RSTATEND";
/// The format version this build writes and the newest it reads. Version 2 added the
/// schemas of the key and of every state's types to the header; version 1 headers are
/// read with [`Schema::Opaque`] schemas (type names), see [`super::legacy`].
pub const FORMAT_VERSION: u32 = 2;
const TRAILER_LEN: u64 = 8 + 4 + 8;

/// The header of a keyed snapshot stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// Type name of the backend's key.
    pub key_type: String,
    /// Schema of the backend's key.
    pub key_schema: Schema,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// The key groups the stream holds.
    pub key_group_range: KeyGroupRange,
    /// The checkpoint the stream belongs to.
    pub checkpoint_id: u64,
    /// Every state in the stream; blocks refer to them by index.
    pub states: Vec<StateMeta>,
}

// ------------------------------------------------------------------ encoding helpers

/// Appends `v` as a LEB128 varint.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads a LEB128 varint: (value, bytes used); `None` if truncated or over 10 bytes.
pub fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    super::encode::append_bytes(buf, bytes);
}

/// Appends a big-endian `i64` (a TTL timestamp).
pub fn put_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Serializes `value` with postcard and appends it length-prefixed. `scratch` is reused
/// between calls to avoid allocations.
pub fn put_serialized<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    value: &T,
    state: &str,
    role: &'static str,
) -> Result<()> {
    scratch.clear();
    super::append_postcard(value, scratch).map_err(|e| StateError::serialization(state.to_string(), role, e))?;
    put_bytes(buf, scratch);
    Ok(())
}

/// Postcard-deserializes `bytes` (one value of the canonical format).
pub fn deserialize<T: serde::de::DeserializeOwned>(bytes: &[u8], state: &str, role: &'static str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| StateError::serialization(state.to_string(), role, e))
}

/// Builds one key group's section: blocks of entries, one block per state.
#[derive(Debug, Default)]
pub struct SectionBuilder {
    section: Vec<u8>,
    block: Vec<u8>,
    count: u64,
    /// Reusable buffer for [`put_serialized`].
    pub scratch: Vec<u8>,
}

impl SectionBuilder {
    /// The buffer that the current block's entries are appended to.
    pub fn block(&mut self) -> &mut Vec<u8> {
        &mut self.block
    }

    /// Counts one entry appended to [`Self::block`].
    pub fn entry_done(&mut self) {
        self.count += 1;
    }

    /// Closes the current block as state `state_index`'s entries (nothing if it is empty).
    pub fn finish_block(&mut self, state_index: u32) {
        if self.count > 0 {
            put_varint(&mut self.section, u64::from(state_index));
            put_varint(&mut self.section, self.count);
            self.section.extend_from_slice(&self.block);
        }
        self.block.clear();
        self.count = 0;
    }

    /// Appends an already encoded block (entries exactly as a reader returned them).
    pub fn raw_block(&mut self, state_index: u32, count: u64, entries: &[u8]) {
        if count > 0 {
            put_varint(&mut self.section, u64::from(state_index));
            put_varint(&mut self.section, count);
            self.section.extend_from_slice(entries);
        }
    }

    /// The finished section; the builder is ready for the next key group.
    pub fn take_section(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.section)
    }
}

// ------------------------------------------------------------------ writer

/// Writes a keyed snapshot stream: header, one section per key group in order, index.
pub struct KeyedStreamWriter<'w> {
    out: BufWriter<&'w mut dyn Write>,
    pos: u64,
    range: KeyGroupRange,
    offsets: Vec<u64>,
}

impl<'w> KeyedStreamWriter<'w> {
    /// Starts a stream with `header`.
    pub fn new(out: &'w mut dyn Write, header: &SnapshotHeader) -> Result<Self> {
        let header_bytes =
            postcard::to_stdvec(header).map_err(|e| StateError::serialization("<snapshot header>", "header", e))?;
        let mut w = KeyedStreamWriter {
            out: BufWriter::with_capacity(256 * 1024, out),
            pos: 0,
            range: header.key_group_range,
            offsets: Vec::with_capacity(header.key_group_range.len() as usize + 1),
        };
        w.put(&MAGIC)?;
        w.put(&FORMAT_VERSION.to_be_bytes())?;
        w.put(&(header_bytes.len() as u32).to_be_bytes())?;
        w.put(&header_bytes)?;
        w.put(&crc32c::crc32c(&header_bytes).to_be_bytes())?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| StateError::from_io("writing a snapshot stream", e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// The key group whose section comes next.
    pub fn next_key_group(&self) -> Option<u32> {
        let kg = self.range.start() + self.offsets.len() as u32;
        self.range.contains(kg).then_some(kg)
    }

    /// Writes the next key group's section.
    pub fn write_section(&mut self, section: &[u8]) -> Result<()> {
        if self.next_key_group().is_none() {
            return Err(StateError::InvalidArgument(format!(
                "more sections written than the key-group range {} holds",
                self.range
            )));
        }
        self.offsets.push(self.pos);
        self.put(section)?;
        self.put(&crc32c::crc32c(section).to_be_bytes())
    }

    /// Writes the index and trailer; returns the per-key-group offsets.
    pub fn finish(mut self) -> Result<Vec<u64>> {
        while self.next_key_group().is_some() {
            self.write_section(&[])?;
        }
        let index_offset = self.pos;
        let mut index = self.offsets.clone();
        index.push(index_offset);
        let index_bytes =
            postcard::to_stdvec(&index).map_err(|e| StateError::serialization("<snapshot index>", "index", e))?;
        self.put(&index_bytes)?;
        self.put(&crc32c::crc32c(&index_bytes).to_be_bytes())?;
        self.put(&index_offset.to_be_bytes())?;
        self.put(&(index_bytes.len() as u32).to_be_bytes())?;
        self.put(&END_MAGIC)?;
        self.out
            .flush()
            .map_err(|e| StateError::from_io("flushing a snapshot stream", e))?;
        Ok(self.offsets)
    }
}

// ------------------------------------------------------------------ reader

/// Writes a whole keyed stream for `header` (its key-group range, in order) to `storage`
/// as `name`: `fill(kg, section)` appends key group `kg`'s blocks. Every full snapshot
/// (heap, RocksDB, timers) goes through this.
pub fn write_keyed_stream(
    storage: &dyn crate::CheckpointStorage,
    header: &SnapshotHeader,
    name: &str,
    mut fill: impl FnMut(u32, &mut SectionBuilder) -> Result<()>,
) -> Result<crate::KeyedSnapshotHandle> {
    let mut out = storage.create_output(header.checkpoint_id, name)?;
    let offsets = {
        let mut writer = KeyedStreamWriter::new(&mut *out, header)?;
        let mut section = SectionBuilder::default();
        for kg in header.key_group_range.iter() {
            fill(kg, &mut section)?;
            writer.write_section(&section.take_section())?;
        }
        writer.finish()?
    };
    Ok(crate::KeyedSnapshotHandle {
        checkpoint_id: header.checkpoint_id,
        key_group_range: header.key_group_range,
        key_group_offsets: offsets,
        stream: out.finish()?,
    })
}

/// Opens a handle's stream for a restore into a backend that owns `range`, with key type
/// `key` (name and schema) and `max_parallelism`: checks that the snapshot's keys read as
/// the key type, that it was written with the same max parallelism and that the stream holds what its handle says. Returns
/// `None` when the handle holds none of `range`'s key groups (nothing is read), else the
/// reader and the key groups to read. Every backend's restore goes through this.
pub fn open_for_restore(
    handle: &crate::KeyedSnapshotHandle,
    storage: &dyn crate::CheckpointStorage,
    key: (&str, &Schema),
    max_parallelism: u32,
    range: KeyGroupRange,
) -> Result<Option<(KeyedStreamReader, KeyGroupRange)>> {
    let mine = handle.key_group_range.intersection(&range);
    if mine.is_empty() {
        return Ok(None);
    }
    let name = handle.stream.describe();
    let reader = KeyedStreamReader::open(storage.open_input(&handle.stream)?, &name)?;
    let header = reader.header();
    crate::compatibility::check_key((&header.key_type, &header.key_schema), key)?;
    if header.max_parallelism != max_parallelism {
        return Err(StateError::InvalidArgument(format!(
            "`{name}` was written with max parallelism {}, but this backend has {max_parallelism}; \
             the max parallelism of a job cannot change",
            header.max_parallelism
        )));
    }
    if header.key_group_range != handle.key_group_range {
        return Err(corrupt(
            &name,
            "header",
            format!(
                "stream holds key groups {} but its handle says {}",
                header.key_group_range, handle.key_group_range
            ),
        ));
    }
    Ok(Some((reader, mine)))
}

/// Reads a keyed snapshot stream: validates magic, version, header and index on open,
/// then reads (and checksums) single key-group sections on demand.
pub struct KeyedStreamReader {
    name: String,
    input: Box<dyn CheckpointInput>,
    header: SnapshotHeader,
    /// Offsets of every section, then of the index.
    offsets: Vec<u64>,
}

impl std::fmt::Debug for KeyedStreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStreamReader")
            .field("name", &self.name)
            .field("header", &self.header)
            .finish()
    }
}

fn corrupt(name: &str, section: impl Into<String>, detail: impl Into<String>) -> StateError {
    StateError::Corrupt {
        source_name: name.to_string(),
        section: section.into(),
        detail: detail.into(),
        source: None,
    }
}

fn read_exact_or(input: &mut dyn CheckpointInput, buf: &mut [u8], name: &str, section: &str) -> Result<()> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            StateError::Truncated {
                source_name: name.to_string(),
                section: section.to_string(),
            }
        } else {
            StateError::from_io(format!("reading {section} of `{name}`"), e)
        }
    })
}

fn read_vec(input: &mut dyn CheckpointInput, len: u64, name: &str, section: &str, remaining: u64) -> Result<Vec<u8>> {
    if len > remaining {
        return Err(StateError::Truncated {
            source_name: name.to_string(),
            section: section.to_string(),
        });
    }
    let len = usize::try_from(len).map_err(|_| corrupt(name, section, "length does not fit in memory"))?;
    let mut buf = vec![0; len];
    read_exact_or(input, &mut buf, name, section)?;
    Ok(buf)
}

impl KeyedStreamReader {
    /// Opens a stream; `name` is used in error messages (the file name).
    pub fn open(mut input: Box<dyn CheckpointInput>, name: &str) -> Result<Self> {
        let io = |e| StateError::from_io(format!("reading `{name}`"), e);
        let total = input.seek(SeekFrom::End(0)).map_err(io)?;
        input.seek(SeekFrom::Start(0)).map_err(io)?;
        // Magic and version first, so a foreign file is named as such.
        let mut magic = [0u8; 8];
        read_exact_or(&mut *input, &mut magic, name, "magic")?;
        if magic != MAGIC {
            return Err(corrupt(name, "magic", "not a keyed state snapshot (wrong magic bytes)"));
        }
        let mut word = [0u8; 4];
        read_exact_or(&mut *input, &mut word, name, "version")?;
        let version = u32::from_be_bytes(word);
        if version == 0 || version > FORMAT_VERSION {
            return Err(StateError::UnsupportedVersion {
                source_name: name.to_string(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        read_exact_or(&mut *input, &mut word, name, "header length")?;
        let header_len = u64::from(u32::from_be_bytes(word));
        let header_bytes = read_vec(&mut *input, header_len, name, "header", total.saturating_sub(16))?;
        read_exact_or(&mut *input, &mut word, name, "header checksum")?;
        if crc32c::crc32c(&header_bytes) != u32::from_be_bytes(word) {
            return Err(corrupt(name, "header", "checksum mismatch"));
        }
        let decoded = if version == 1 {
            postcard::from_bytes::<super::legacy::SnapshotHeaderV1>(&header_bytes).map(Into::into)
        } else {
            postcard::from_bytes::<SnapshotHeader>(&header_bytes)
        };
        let header = decoded.map_err(|e| corrupt(name, "header", format!("does not decode: {e}")).with_source(e))?;
        let header_end = 20 + header_len;

        // Trailer and index.
        if total < header_end + TRAILER_LEN {
            return Err(StateError::Truncated {
                source_name: name.to_string(),
                section: "trailer".into(),
            });
        }
        input.seek(SeekFrom::Start(total - TRAILER_LEN)).map_err(io)?;
        let mut trailer = [0u8; TRAILER_LEN as usize];
        read_exact_or(&mut *input, &mut trailer, name, "trailer")?;
        if trailer[12..20] != END_MAGIC {
            return Err(StateError::Truncated {
                source_name: name.to_string(),
                section: "trailer (end marker missing)".into(),
            });
        }
        let index_offset = u64::from_be_bytes(trailer[0..8].try_into().unwrap_or_default());
        let index_len = u64::from(u32::from_be_bytes(trailer[8..12].try_into().unwrap_or_default()));
        // Every field read from the stream is checked before use: a huge offset must not
        // overflow (found by `cargo fuzz`, fuzz/ keyed_stream and timer_stream).
        let index_end = index_offset
            .checked_add(index_len)
            .and_then(|e| e.checked_add(4 + TRAILER_LEN));
        if index_offset < header_end || index_end != Some(total) {
            return Err(corrupt(
                name,
                "trailer",
                "index position does not match the stream length",
            ));
        }
        input.seek(SeekFrom::Start(index_offset)).map_err(io)?;
        let index_bytes = read_vec(&mut *input, index_len, name, "index", total)?;
        read_exact_or(&mut *input, &mut word, name, "index checksum")?;
        if crc32c::crc32c(&index_bytes) != u32::from_be_bytes(word) {
            return Err(corrupt(name, "index", "checksum mismatch"));
        }
        let offsets: Vec<u64> = postcard::from_bytes(&index_bytes)
            .map_err(|e| corrupt(name, "index", format!("does not decode: {e}")).with_source(e))?;
        if offsets.len() != header.key_group_range.len() as usize + 1 {
            return Err(corrupt(
                name,
                "index",
                format!(
                    "{} offsets for a range of {} key groups",
                    offsets.len().saturating_sub(1),
                    header.key_group_range.len()
                ),
            ));
        }
        let ordered = offsets.windows(2).all(|w| w[0] + 4 <= w[1]);
        if offsets.first() != Some(&header_end) || offsets.last() != Some(&index_offset) || !ordered {
            return Err(corrupt(name, "index", "section offsets are out of order"));
        }
        for meta in &header.states {
            if header.states.iter().filter(|m| m.name == meta.name).count() > 1 {
                return Err(corrupt(name, "header", format!("state `{}` appears twice", meta.name)));
            }
        }
        Ok(KeyedStreamReader {
            name: name.to_string(),
            input,
            header,
            offsets,
        })
    }

    /// The stream's header.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// The name used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Offsets of each key group's section (as [`crate::KeyedSnapshotHandle::key_group_offsets`]).
    pub fn key_group_offsets(&self) -> &[u64] {
        &self.offsets[..self.offsets.len() - 1]
    }

    /// Bytes of each key group's section, checksum included, in key-group order.
    pub fn section_sizes(&self) -> Vec<u64> {
        self.offsets.windows(2).map(|w| w[1].saturating_sub(w[0])).collect()
    }

    /// Reads and checksums the section of `key_group`.
    pub fn read_section(&mut self, key_group: u32) -> Result<Section<'_>> {
        let section_name = format!("key group {key_group}");
        let Some(i) = self.header.key_group_range.index_of(key_group) else {
            return Err(StateError::InvalidArgument(format!(
                "key group {key_group} is not in `{}` (range {})",
                self.name, self.header.key_group_range
            )));
        };
        let (start, end) = (self.offsets[i], self.offsets[i + 1]);
        self.input
            .seek(SeekFrom::Start(start))
            .map_err(|e| StateError::from_io(format!("seeking to {section_name} of `{}`", self.name), e))?;
        let mut data = read_vec(&mut *self.input, end - start - 4, &self.name, &section_name, u64::MAX)?;
        let mut word = [0u8; 4];
        read_exact_or(&mut *self.input, &mut word, &self.name, &section_name)?;
        if crc32c::crc32c(&data) != u32::from_be_bytes(word) {
            return Err(corrupt(&self.name, section_name, "checksum mismatch"));
        }
        data.shrink_to_fit();
        Ok(Section {
            data,
            key_group,
            reader: self,
        })
    }
}

/// One key group's verified section.
#[derive(Debug)]
pub struct Section<'r> {
    data: Vec<u8>,
    key_group: u32,
    reader: &'r KeyedStreamReader,
}

/// One entry of a section, as byte slices of the canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEntry<'a> {
    /// A value-shaped entry.
    Value {
        /// Serialized key.
        key: &'a [u8],
        /// Serialized namespace.
        namespace: &'a [u8],
        /// TTL timestamp (0 without TTL).
        timestamp: i64,
        /// Serialized value.
        value: &'a [u8],
    },
    /// A list entry.
    List {
        /// Serialized key.
        key: &'a [u8],
        /// Serialized namespace.
        namespace: &'a [u8],
        /// (timestamp, serialized element) in order.
        items: Vec<(i64, &'a [u8])>,
    },
    /// A map entry.
    Map {
        /// Serialized key.
        key: &'a [u8],
        /// Serialized namespace.
        namespace: &'a [u8],
        /// (serialized user key, timestamp, serialized user value).
        entries: Vec<(&'a [u8], i64, &'a [u8])>,
    },
}

/// One state's entries within a section.
#[derive(Debug)]
pub struct Block<'a> {
    /// The state's metadata (from the header).
    pub meta: &'a StateMeta,
    /// The entries.
    pub entries: Vec<RawEntry<'a>>,
    /// The entries' encoded bytes, to copy a block without decoding it.
    pub raw: &'a [u8],
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    name: &'a str,
    key_group: u32,
}

impl<'a> Cursor<'a> {
    fn err(&self, detail: &str) -> StateError {
        corrupt(
            self.name,
            format!("key group {}", self.key_group),
            format!("{detail} at byte {}", self.pos),
        )
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.data.get(self.pos) else {
                return Err(self.err("varint runs past the end"));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint too long"))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.varint()?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| self.pos.checked_add(l))
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.err("length runs past the end"))?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn i64(&mut self) -> Result<i64> {
        let end = self.pos + 8;
        let Some(b) = self.data.get(self.pos..end) else {
            return Err(self.err("timestamp runs past the end"));
        };
        self.pos = end;
        Ok(i64::from_be_bytes(b.try_into().unwrap_or_default()))
    }

    fn count(&mut self) -> Result<usize> {
        let n = self.varint()?;
        // Every element takes at least one byte: a count beyond the data is corrupt, and
        // checking it first keeps a bad count from allocating huge vectors.
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.data.len() - self.pos.min(self.data.len()))
            .ok_or_else(|| self.err("count exceeds the section"))
    }
}

impl<'r> Section<'r> {
    /// The key group.
    pub fn key_group(&self) -> u32 {
        self.key_group
    }

    /// Decodes every block of the section.
    pub fn blocks(&self) -> Result<Vec<Block<'_>>> {
        let mut c = Cursor {
            data: &self.data,
            pos: 0,
            name: &self.reader.name,
            key_group: self.key_group,
        };
        let states = &self.reader.header.states;
        let mut blocks = Vec::new();
        while c.pos < c.data.len() {
            let idx = c.varint()?;
            let meta = usize::try_from(idx)
                .ok()
                .and_then(|i| states.get(i))
                .ok_or_else(|| c.err(&format!("state index {idx} not in the header")))?;
            let count = c.count()?;
            let start = c.pos;
            let entries = parse_entries(&mut c, meta, count)?;
            blocks.push(Block {
                meta,
                entries,
                raw: &c.data[start..c.pos],
            });
        }
        Ok(blocks)
    }
}

fn parse_entries<'a>(c: &mut Cursor<'a>, meta: &StateMeta, count: usize) -> Result<Vec<RawEntry<'a>>> {
    let ttl = meta.ttl.is_some();
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let key = c.bytes()?;
        let namespace = c.bytes()?;
        let entry = match meta.kind.shape() {
            StateShape::Value => {
                let timestamp = if ttl { c.i64()? } else { 0 };
                RawEntry::Value {
                    key,
                    namespace,
                    timestamp,
                    value: c.bytes()?,
                }
            }
            StateShape::List => {
                let n = c.count()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let ts = if ttl { c.i64()? } else { 0 };
                    items.push((ts, c.bytes()?));
                }
                RawEntry::List { key, namespace, items }
            }
            StateShape::Map => {
                let n = c.count()?;
                let mut map_entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let uk = c.bytes()?;
                    let ts = if ttl { c.i64()? } else { 0 };
                    map_entries.push((uk, ts, c.bytes()?));
                }
                RawEntry::Map {
                    key,
                    namespace,
                    entries: map_entries,
                }
            }
        };
        entries.push(entry);
    }
    Ok(entries)
}

/// Decodes the entries of a block kept as raw bytes ([`Block::raw`]) with `count` entries.
/// `source_name` and `key_group` name the origin in errors.
pub fn decode_block<'a>(
    raw: &'a [u8],
    meta: &StateMeta,
    count: u64,
    source_name: &'a str,
    key_group: u32,
) -> Result<Vec<RawEntry<'a>>> {
    let mut c = Cursor {
        data: raw,
        pos: 0,
        name: source_name,
        key_group,
    };
    let count = usize::try_from(count).map_err(|_| c.err("count does not fit in memory"))?;
    let entries = parse_entries(&mut c, meta, count)?;
    if c.pos != raw.len() {
        return Err(c.err("bytes left after the last entry"));
    }
    Ok(entries)
}

/// Appends a value-shaped entry (for backends that hold bytes, such as RocksDB).
pub fn put_raw_entry(buf: &mut Vec<u8>, entry: &RawEntry<'_>, ttl: bool) {
    match entry {
        RawEntry::Value {
            key,
            namespace,
            timestamp,
            value,
        } => {
            put_bytes(buf, key);
            put_bytes(buf, namespace);
            if ttl {
                put_i64(buf, *timestamp);
            }
            put_bytes(buf, value);
        }
        RawEntry::List { key, namespace, items } => {
            put_bytes(buf, key);
            put_bytes(buf, namespace);
            put_varint(buf, items.len() as u64);
            for (ts, v) in items {
                if ttl {
                    put_i64(buf, *ts);
                }
                put_bytes(buf, v);
            }
        }
        RawEntry::Map {
            key,
            namespace,
            entries,
        } => {
            put_bytes(buf, key);
            put_bytes(buf, namespace);
            put_varint(buf, entries.len() as u64);
            for (uk, ts, v) in entries {
                put_bytes(buf, uk);
                if ttl {
                    put_i64(buf, *ts);
                }
                put_bytes(buf, v);
            }
        }
    }
}
