//! What a savepoint or checkpoint holds, for people (`Display`) and scripts (serde):
//! operators, subtasks, streams (inline or file, size, key groups and their sizes),
//! states (kind, types, schemas, TTL), shared files and how many handles reference them.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use state_api::raw::StateMeta;
use state_api::raw::format::KeyedStreamReader;
use state_api::{CheckpointStorage, KeyedSnapshotHandle, Result, StreamHandle};

use crate::reader::SavepointReader;

/// The whole savepoint or checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inspection {
    /// Where it is.
    pub location: String,
    /// `checkpoint` or `savepoint`.
    pub kind: String,
    /// The job.
    pub job_id: String,
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// Bytes of state, inline and in files.
    pub state_bytes: u64,
    /// Every operator.
    pub operators: Vec<OperatorInfo>,
    /// Files shared between checkpoints (RocksDB incremental data files), with how many
    /// handles of this snapshot reference each.
    pub shared_files: Vec<SharedFileInfo>,
    /// Job-level engine data: name and size.
    pub engine_data: BTreeMap<String, usize>,
}

/// One operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperatorInfo {
    /// Its id.
    pub id: String,
    /// Parallelism when the snapshot was taken.
    pub parallelism: u32,
    /// Max parallelism (number of key groups).
    pub max_parallelism: u32,
    /// Its keyed states (from the first stream that records each).
    pub states: Vec<StateInfo>,
    /// Every subtask's streams.
    pub subtasks: Vec<SubtaskInfo>,
}

/// One keyed state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateInfo {
    /// Its name.
    pub name: String,
    /// Value, List, Map, Reducing or Aggregating.
    pub kind: String,
    /// The namespace type's name and schema.
    pub namespace: String,
    /// The user key type's name and schema (map state).
    pub user_key: Option<String>,
    /// The value type's name and schema.
    pub value: String,
    /// Time to live in milliseconds, if any.
    pub ttl_millis: Option<u64>,
    /// Entries ((key, namespace) pairs) in the canonical streams.
    pub entries: u64,
    /// Whether some of its entries are in RocksDB incremental (native) files, which
    /// `entries` does not count (reading them means downloading the files).
    pub in_native_files: bool,
}

/// One subtask.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubtaskInfo {
    /// Its index.
    pub index: u32,
    /// Its streams.
    pub streams: Vec<StreamInfo>,
}

/// One stream (or native file set) of a subtask.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamInfo {
    /// `keyed`, `timers`, `operator` or `incremental`.
    pub role: String,
    /// `inline` or the file's path.
    pub location: String,
    /// Bytes.
    pub size: u64,
    /// The key groups it holds (keyed, timers, incremental).
    pub key_groups: Option<String>,
    /// Key groups holding any entries.
    pub non_empty_key_groups: Option<usize>,
    /// The largest key group: (key group, bytes).
    pub largest_key_group: Option<(u32, u64)>,
    /// The key type (keyed streams and incremental snapshots).
    pub key_type: Option<String>,
    /// Files of an incremental snapshot (shared + private).
    pub files: Option<usize>,
}

/// A shared file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharedFileInfo {
    /// Its path.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Handles of this snapshot that reference it.
    pub references: usize,
}

fn place(stream: &StreamHandle) -> String {
    match stream {
        StreamHandle::Inline { .. } => "inline".into(),
        StreamHandle::File { path, .. } => path.clone(),
    }
}

fn typed(name: &str, schema: &state_api::Schema) -> String {
    if schema.is_structural() {
        format!("{name} = {schema}")
    } else {
        format!("{name} ({schema})")
    }
}

fn state_info(m: &StateMeta) -> StateInfo {
    StateInfo {
        name: m.name.clone(),
        kind: format!("{:?}", m.kind),
        namespace: typed(&m.namespace_type, &m.namespace_schema),
        user_key: m
            .user_key_type
            .as_ref()
            .zip(m.user_key_schema.as_ref())
            .map(|(t, s)| typed(t, s)),
        value: typed(&m.value_type, &m.value_schema),
        ttl_millis: m.ttl.map(|t| t.ttl_millis),
        entries: 0,
        in_native_files: false,
    }
}

fn keyed_stream(
    reader: &SavepointReader,
    role: &str,
    h: &KeyedSnapshotHandle,
    states: &mut Vec<StateInfo>,
) -> Result<StreamInfo> {
    let mut stream = KeyedStreamReader::open(reader.storage().open_input(&h.stream)?, &h.stream.describe())?;
    // A section without entries is its checksum alone.
    let sizes: Vec<(u32, u64)> = h
        .key_group_range
        .iter()
        .zip(stream.section_sizes())
        .map(|(kg, bytes)| (kg, bytes.saturating_sub(4)))
        .collect();
    let header = stream.header().clone();
    if role == "keyed" {
        for m in &header.states {
            if !states.iter().any(|s| s.name == m.name) {
                states.push(state_info(m));
            }
        }
        for kg in h.key_group_range.iter() {
            for block in stream.read_section(kg)?.blocks()? {
                if let Some(s) = states.iter_mut().find(|s| s.name == block.meta.name) {
                    s.entries += block.entries.len() as u64;
                }
            }
        }
    }
    Ok(StreamInfo {
        role: role.into(),
        location: place(&h.stream),
        size: h.stream.size(),
        key_groups: Some(h.key_group_range.to_string()),
        non_empty_key_groups: Some(sizes.iter().filter(|(_, b)| *b > 0).count()),
        largest_key_group: sizes.iter().copied().max_by_key(|(kg, b)| (*b, u32::MAX - kg)),
        key_type: Some(typed(&header.key_type, &header.key_schema)),
        files: None,
    })
}

/// Inspects everything `reader` holds (reads every keyed stream's header and sections).
pub fn inspect(reader: &SavepointReader) -> Result<Inspection> {
    let meta = reader.metadata();
    let mut operators = Vec::new();
    let mut refs: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    for op in &meta.snapshot.operators {
        let mut states = Vec::new();
        let mut subtasks = Vec::new();
        for s in &op.subtasks {
            let mut streams = Vec::new();
            for h in &s.state.keyed {
                streams.push(keyed_stream(reader, "keyed", h, &mut states)?);
            }
            for h in &s.state.timers {
                streams.push(keyed_stream(reader, "timers", h, &mut states)?);
            }
            for h in &s.state.operator {
                streams.push(StreamInfo {
                    role: "operator".into(),
                    location: place(&h.stream),
                    size: h.stream.size(),
                    key_groups: None,
                    non_empty_key_groups: None,
                    largest_key_group: None,
                    key_type: None,
                    files: None,
                });
            }
            for h in &s.state.incremental {
                for m in &h.states {
                    if !states.iter().any(|x| x.name == m.name) {
                        states.push(state_info(m));
                    }
                    if let Some(x) = states.iter_mut().find(|x| x.name == m.name) {
                        x.in_native_files = true;
                    }
                }
                for f in &h.shared_files {
                    let entry = refs.entry(place(&f.stream)).or_insert((f.stream.size(), 0));
                    entry.1 += 1;
                }
                streams.push(StreamInfo {
                    role: "incremental".into(),
                    location: format!(
                        "{} shared + {} private files",
                        h.shared_files.len(),
                        h.private_files.len()
                    ),
                    size: h.size(),
                    key_groups: Some(h.key_group_range.to_string()),
                    non_empty_key_groups: None,
                    largest_key_group: None,
                    key_type: Some(typed(&h.key_type, &h.key_schema)),
                    files: Some(h.shared_files.len() + h.private_files.len()),
                });
            }
            subtasks.push(SubtaskInfo {
                index: s.index,
                streams,
            });
        }
        operators.push(OperatorInfo {
            id: op.id.to_string(),
            parallelism: op.parallelism,
            max_parallelism: op.max_parallelism,
            states,
            subtasks,
        });
    }
    Ok(Inspection {
        location: reader.location().to_string(),
        kind: format!("{:?}", meta.kind).to_lowercase(),
        job_id: meta.job_id.clone(),
        checkpoint_id: meta.checkpoint_id,
        state_bytes: meta.state_size(),
        operators,
        shared_files: refs
            .into_iter()
            .map(|(path, (size, references))| SharedFileInfo { path, size, references })
            .collect(),
        engine_data: meta.snapshot.engine.iter().map(|(k, v)| (k.clone(), v.len())).collect(),
    })
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: job `{}`, id {}, {} bytes of state",
            self.location, self.job_id, self.checkpoint_id, self.state_bytes
        )?;
        for op in &self.operators {
            writeln!(
                f,
                "operator `{}`: parallelism {}, max parallelism {}",
                op.id, op.parallelism, op.max_parallelism
            )?;
            for s in &op.states {
                if s.in_native_files {
                    write!(
                        f,
                        "  state `{}` ({}, {} entries + those in RocksDB files)",
                        s.name, s.kind, s.entries
                    )?;
                } else {
                    write!(f, "  state `{}` ({}, {} entries)", s.name, s.kind, s.entries)?;
                }
                if let Some(ttl) = s.ttl_millis {
                    write!(f, ", TTL {ttl} ms")?;
                }
                writeln!(f)?;
                writeln!(f, "    namespace: {}", s.namespace)?;
                if let Some(uk) = &s.user_key {
                    writeln!(f, "    user key:  {uk}")?;
                }
                writeln!(f, "    value:     {}", s.value)?;
            }
            for t in &op.subtasks {
                writeln!(f, "  subtask {}", t.index)?;
                for s in &t.streams {
                    write!(f, "    {:<11} {:>10} bytes  {}", s.role, s.size, s.location)?;
                    if let Some(kg) = &s.key_groups {
                        write!(f, ", key groups {kg}")?;
                    }
                    if let Some(n) = s.non_empty_key_groups {
                        write!(f, " ({n} non-empty")?;
                        if let Some((kg, b)) = s.largest_key_group {
                            write!(f, ", largest {kg}: {b} bytes")?;
                        }
                        write!(f, ")")?;
                    }
                    writeln!(f)?;
                }
            }
        }
        if !self.shared_files.is_empty() {
            writeln!(f, "shared files:")?;
            for s in &self.shared_files {
                writeln!(f, "  {} ({} bytes, {} references)", s.path, s.size, s.references)?;
            }
        }
        for (name, len) in &self.engine_data {
            writeln!(f, "engine data `{name}`: {len} bytes")?;
        }
        Ok(())
    }
}
