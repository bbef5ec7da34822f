//! Operator (non-keyed) state: list state redistributed evenly or as a union on
//! restore, and broadcast map state (Flink's `OperatorStateBackend`).
//!
//! Operator state is small by nature (source offsets, buffered elements), so the one
//! implementation, [`DefaultOperatorStateBackend`], keeps it on the heap and copies it
//! in the synchronous part of a snapshot, as Flink's `DefaultOperatorStateBackend` does.
//! Every keyed backend pairs with it.
//!
//! ```
//! use state_api::{DefaultOperatorStateBackend, OperatorStateBackend};
//! let mut ops = DefaultOperatorStateBackend::new(0);
//! let offsets = ops.list_state::<u64>("offsets").unwrap();
//! ops.list(&offsets).add(42).unwrap();
//! assert_eq!(ops.list(&offsets).get().unwrap(), vec![42]);
//! ```
//!
//! Over 500 lines: the operator state backend and its snapshot encoding are one contract (what is written is what restores), kept together.

use crate::operator_views::{BroadcastView, OperatorListView};
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::assignment::{OperatorStatePartition, partition_operator_state};
use crate::error::{Result, StateError};
use crate::format::{deserialize, put_bytes, put_serialized};
use crate::schema::Schema;
use crate::snapshot::{AsyncSnapshot, CheckpointStorage, OperatorSnapshotHandle, OperatorStateInfo, Redistribution};
use crate::state::{StateKey, StateValue, type_name_of};

/// Magic bytes opening an operator state stream.
pub(crate) const OPERATOR_MAGIC: [u8; 8] = *b"\x89RSOPST\n";
/// Magic bytes closing an operator state stream.
const OPERATOR_END: [u8; 8] = *b"RSOPSEND";
const OPERATOR_VERSION: u32 = 2;

/// A registered operator list state.
#[derive(Debug)]
pub struct OperatorListHandle<T> {
    name: String,
    _p: PhantomData<fn() -> T>,
}

impl<T> Clone for OperatorListHandle<T> {
    fn clone(&self) -> Self {
        OperatorListHandle {
            name: self.name.clone(),
            _p: PhantomData,
        }
    }
}

/// A registered broadcast map state.
#[derive(Debug)]
pub struct BroadcastStateHandle<K, V> {
    name: String,
    _p: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for BroadcastStateHandle<K, V> {
    fn clone(&self) -> Self {
        BroadcastStateHandle {
            name: self.name.clone(),
            _p: PhantomData,
        }
    }
}

/// Operator state: what a subtask keeps that is not scoped to a key.
///
/// Operator code registers a state once and uses its view, as with keyed state:
/// `ops.list(&h).add(x)`, `ops.broadcast(&h).put(k, v)`. The `list_*` and `broadcast_*`
/// methods are what an implementation provides under the views.
///
/// ```
/// use state_api::{DefaultOperatorStateBackend, OperatorStateBackend};
///
/// let mut ops = DefaultOperatorStateBackend::new(0);
/// let offsets = ops.list_state::<u64>("offsets")?;
/// ops.list(&offsets).add(42)?;
/// let rules = ops.broadcast_state::<String, u32>("rules")?;
/// ops.broadcast(&rules).put("max".into(), 3)?;
/// assert_eq!(ops.list(&offsets).get()?, vec![42]);
/// assert_eq!(ops.broadcast(&rules).get(&"max".to_string())?, Some(3));
/// # Ok::<(), state_api::StateError>(())
/// ```
pub trait OperatorStateBackend: Send {
    /// A list state whose elements are split evenly among subtasks on restore.
    fn list_state<T: StateValue>(&mut self, name: &str) -> Result<OperatorListHandle<T>>;
    /// A list state whose elements all go to every subtask on restore.
    fn union_list_state<T: StateValue>(&mut self, name: &str) -> Result<OperatorListHandle<T>>;
    /// A broadcast map state: the same on every subtask.
    fn broadcast_state<K: StateKey, V: StateValue>(&mut self, name: &str) -> Result<BroadcastStateHandle<K, V>>;

    /// The list's elements.
    fn list_get<T: StateValue>(&mut self, handle: &OperatorListHandle<T>) -> Result<Vec<T>>;
    /// Appends an element.
    fn list_add<T: StateValue>(&mut self, handle: &OperatorListHandle<T>, value: T) -> Result<()>;
    /// Replaces the list.
    fn list_update<T: StateValue>(&mut self, handle: &OperatorListHandle<T>, values: Vec<T>) -> Result<()>;
    /// Empties the list.
    fn list_clear<T: StateValue>(&mut self, handle: &OperatorListHandle<T>) -> Result<()> {
        self.list_update(handle, Vec::new())
    }

    /// A broadcast entry.
    fn broadcast_get<K: StateKey, V: StateValue>(
        &mut self,
        handle: &BroadcastStateHandle<K, V>,
        key: &K,
    ) -> Result<Option<V>>;
    /// Sets a broadcast entry.
    fn broadcast_put<K: StateKey, V: StateValue>(
        &mut self,
        handle: &BroadcastStateHandle<K, V>,
        key: K,
        value: V,
    ) -> Result<()>;
    /// Removes a broadcast entry.
    fn broadcast_remove<K: StateKey, V: StateValue>(
        &mut self,
        handle: &BroadcastStateHandle<K, V>,
        key: &K,
    ) -> Result<()>;
    /// Every broadcast entry.
    fn broadcast_entries<K: StateKey, V: StateValue>(
        &mut self,
        handle: &BroadcastStateHandle<K, V>,
    ) -> Result<Vec<(K, V)>>;

    /// The synchronous part of a snapshot; the returned part writes it.
    fn snapshot(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<OperatorSnapshotHandle>>;

    // ------------------------------------------------------------- provided

    /// The list state `handle`, as operator code uses it: `ops.list(&h).add(x)`.
    fn list<'a, T: StateValue>(&'a mut self, handle: &'a OperatorListHandle<T>) -> OperatorListView<'a, Self, T>
    where
        Self: Sized,
    {
        OperatorListView::new(self, handle)
    }

    /// The broadcast state `handle`: `ops.broadcast(&h).put(k, v)`.
    fn broadcast<'a, K: StateKey, V: StateValue>(
        &'a mut self,
        handle: &'a BroadcastStateHandle<K, V>,
    ) -> BroadcastView<'a, Self, K, V>
    where
        Self: Sized,
    {
        BroadcastView::new(self, handle)
    }
}

type Encoder = fn(&dyn Any, &str) -> Result<Vec<Vec<u8>>>;

enum Data {
    /// Registered: `Vec<T>` or `HashMap<K, V>`, with its encoder.
    Typed {
        value: Box<dyn Any + Send>,
        encode: Encoder,
    },
    /// Restored and not registered yet: encoded elements.
    Raw(Vec<Vec<u8>>),
}

struct OpState {
    mode: Redistribution,
    type_name: OpType,
    data: Data,
}

/// The type of an operator state's elements (for broadcast state, of its key and value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpType {
    name: String,
    schema: Schema,
}

impl OpType {
    fn of<T: StateValue>() -> Self {
        OpType {
            name: type_name_of::<T>(),
            schema: Schema::of::<T>(),
        }
    }

    fn of_map<K: StateKey, V: StateValue>() -> Self {
        OpType {
            name: format!("{} => {}", type_name_of::<K>(), type_name_of::<V>()),
            schema: Schema::Map {
                key: Box::new(Schema::of::<K>()),
                value: Box::new(Schema::of::<V>()),
            },
        }
    }

    /// Whether elements stored as `self` read as `requested`.
    fn reads_as(&self, requested: &OpType) -> bool {
        crate::compatibility::reads_as(&self.schema, &self.name, &requested.schema, &requested.name)
    }
}

/// The header of a version-2 stream (types with schemas).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpHeader {
    subtask_index: u32,
    states: Vec<(OperatorStateInfo, OpType)>,
}

/// The header of a version-1 stream: types by name only.
#[derive(Deserialize)]
struct OpHeaderV1 {
    subtask_index: u32,
    states: Vec<(OperatorStateInfo, String)>,
}

impl From<OpHeaderV1> for OpHeader {
    fn from(v1: OpHeaderV1) -> Self {
        OpHeader {
            subtask_index: v1.subtask_index,
            states: v1
                .states
                .into_iter()
                .map(|(info, name)| {
                    let schema = Schema::Opaque {
                        type_name: name.clone(),
                    };
                    (info, OpType { name, schema })
                })
                .collect(),
        }
    }
}

/// Operator states live in two name spaces, as in Flink: list (even-split and union)
/// states, and broadcast states. A list `"x"` and a broadcast `"x"` are two states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Space {
    List,
    Broadcast,
}

impl Space {
    fn of(mode: Redistribution) -> Space {
        match mode {
            Redistribution::EvenSplit | Redistribution::Union => Space::List,
            Redistribution::Broadcast => Space::Broadcast,
        }
    }
}

/// A restored state being assembled: its mode, type and the elements taken, in
/// old-subtask order.
type Merged = (Redistribution, OpType, Vec<Vec<u8>>);

/// The heap operator state backend every keyed backend pairs with.
pub struct DefaultOperatorStateBackend {
    subtask_index: u32,
    states: BTreeMap<(Space, String), OpState>,
}

impl std::fmt::Debug for DefaultOperatorStateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultOperatorStateBackend")
            .field("subtask_index", &self.subtask_index)
            .field("states", &self.states.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn encode_list<T: StateValue>(value: &dyn Any, name: &str) -> Result<Vec<Vec<u8>>> {
    let list = value.downcast_ref::<Vec<T>>().ok_or_else(|| type_confusion(name))?;
    list.iter()
        .map(|v| postcard::to_stdvec(v).map_err(|e| StateError::serialization(name, "list element", e)))
        .collect()
}

fn encode_map<K: StateKey, V: StateValue>(value: &dyn Any, name: &str) -> Result<Vec<Vec<u8>>> {
    let map = value
        .downcast_ref::<HashMap<K, V>>()
        .ok_or_else(|| type_confusion(name))?;
    let mut scratch = Vec::new();
    map.iter()
        .map(|(k, v)| {
            let mut buf = Vec::new();
            put_serialized(&mut buf, &mut scratch, k, name, "broadcast key")?;
            put_serialized(&mut buf, &mut scratch, v, name, "broadcast value")?;
            Ok(buf)
        })
        .collect()
}

fn type_confusion(name: &str) -> StateError {
    StateError::InvalidArgument(format!(
        "operator state `{name}` was accessed through a handle of another type"
    ))
}

fn split_pair(bytes: &[u8], name: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let bad = || StateError::Corrupt {
        source_name: format!("operator state `{name}`"),
        section: "broadcast entry".into(),
        detail: "entry does not decode".into(),
        source: None,
    };
    let mut pos = 0;
    let mut field = || -> Result<Vec<u8>> {
        let mut len: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *bytes.get(pos).ok_or_else(bad)?;
            pos += 1;
            len |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(bad());
            }
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(bad)?;
        let out = bytes[pos..end].to_vec();
        pos = end;
        Ok(out)
    };
    let k = field()?;
    let v = field()?;
    Ok((k, v))
}

impl DefaultOperatorStateBackend {
    /// An empty backend for subtask `subtask_index`.
    pub fn new(subtask_index: u32) -> Self {
        DefaultOperatorStateBackend {
            subtask_index,
            states: BTreeMap::new(),
        }
    }

    /// Restores subtask `subtask_index` of `parallelism` from the handles of every old
    /// subtask (even-split and union state need every old subtask's part): the slices
    /// slices the round-robin partitioning (Flink's) gives it.
    pub fn restore(
        handles: &[OperatorSnapshotHandle],
        subtask_index: u32,
        parallelism: u32,
        storage: &dyn CheckpointStorage,
    ) -> Result<Self> {
        let partitions = partition_operator_state(handles, subtask_index, parallelism)?;
        Self::restore_partitions(&partitions, subtask_index, storage)
    }

    /// Restores subtask `subtask_index` from the slices of old streams a
    /// [`crate::JobAssignment`] gave it; only those streams are read.
    pub fn restore_partitions(
        partitions: &[OperatorStatePartition],
        subtask_index: u32,
        storage: &dyn CheckpointStorage,
    ) -> Result<Self> {
        // (space, name) -> (mode, type, the elements taken, in old-subtask order)
        let mut merged: BTreeMap<(Space, String), Merged> = BTreeMap::new();
        for part in partitions {
            let handle = &part.handle;
            for (info, type_name, elements) in read_stream(handle, storage)? {
                let Some(range) = part.ranges.get(&(info.mode, info.name.clone())) else {
                    continue;
                };
                let (start, end) = (
                    usize::try_from(range.start).unwrap_or(usize::MAX),
                    usize::try_from(range.end).unwrap_or(usize::MAX),
                );
                let Some(taken) = elements.get(start..end) else {
                    return Err(StateError::Corrupt {
                        source_name: handle.stream.describe(),
                        section: format!("operator state `{}`", info.name),
                        detail: format!(
                            "elements {start}..{end} were assigned but the stream holds {}",
                            elements.len()
                        ),
                        source: None,
                    });
                };
                let key = (Space::of(info.mode), info.name.clone());
                match merged.get_mut(&key) {
                    None => {
                        merged.insert(key, (info.mode, type_name, taken.to_vec()));
                    }
                    Some((mode, existing_type, all)) => {
                        if *mode != info.mode || *existing_type != type_name {
                            return Err(StateError::Corrupt {
                                source_name: handle.stream.describe(),
                                section: format!("operator state `{}`", info.name),
                                detail: "old subtasks disagree on its mode or type".into(),
                                source: None,
                            });
                        }
                        all.extend_from_slice(taken);
                    }
                }
            }
        }
        let mut backend = DefaultOperatorStateBackend::new(subtask_index);
        for (key, (mode, type_name, mine)) in merged {
            backend.states.insert(
                key,
                OpState {
                    mode,
                    type_name,
                    data: Data::Raw(mine),
                },
            );
        }
        Ok(backend)
    }

    /// Registers a new state, or checks that an existing one has the same mode and type.
    /// (Restored states of the right type were already decoded by the caller.)
    fn register(
        &mut self,
        name: &str,
        mode: Redistribution,
        type_name: OpType,
        empty: Box<dyn Any + Send>,
        encode: Encoder,
    ) -> Result<()> {
        crate::raw::check_state_name(name)?;
        let key = (Space::of(mode), name.to_string());
        match self.states.get(&key) {
            Some(state) if state.mode != mode => Err(StateError::InvalidArgument(format!(
                "operator state `{name}` is registered as {:?}, not {mode:?}",
                state.mode
            ))),
            Some(state) if !state.type_name.reads_as(&type_name) => Err(StateError::IncompatibleSchema {
                name: name.into(),
                role: "operator state",
                existing: state.type_name.schema.to_string(),
                requested: type_name.schema.to_string(),
            }),
            Some(_) => Ok(()),
            None => {
                self.states.insert(
                    key,
                    OpState {
                        mode,
                        type_name,
                        data: Data::Typed { value: empty, encode },
                    },
                );
                Ok(())
            }
        }
    }

    fn typed<T: 'static>(&mut self, space: Space, name: &str) -> Result<&mut T> {
        let state = self
            .states
            .get_mut(&(space, name.to_string()))
            .ok_or_else(|| StateError::UnknownState { name: name.into() })?;
        match &mut state.data {
            Data::Typed { value, .. } => value.downcast_mut::<T>().ok_or_else(|| type_confusion(name)),
            Data::Raw(_) => Err(StateError::UnknownState { name: name.into() }),
        }
    }
}

impl DefaultOperatorStateBackend {
    fn register_list<T: StateValue>(&mut self, name: &str, mode: Redistribution) -> Result<OperatorListHandle<T>> {
        let type_name = OpType::of::<T>();
        if let Some(OpState {
            data: Data::Raw(elements),
            type_name: existing,
            mode: m,
        }) = self.states.get(&(Space::List, name.to_string()))
            && existing.reads_as(&type_name)
            && *m == mode
        {
            let list = elements
                .iter()
                .map(|e| deserialize::<T>(e, name, "list element"))
                .collect::<Result<Vec<T>>>()?;
            self.states.insert(
                (Space::List, name.to_string()),
                OpState {
                    mode,
                    type_name,
                    data: Data::Typed {
                        value: Box::new(list),
                        encode: encode_list::<T>,
                    },
                },
            );
            return Ok(OperatorListHandle {
                name: name.into(),
                _p: PhantomData,
            });
        }
        self.register(name, mode, type_name, Box::new(Vec::<T>::new()), encode_list::<T>)?;
        // A registration of an existing typed state must be of the same type.
        self.typed::<Vec<T>>(Space::List, name)?;
        Ok(OperatorListHandle {
            name: name.into(),
            _p: PhantomData,
        })
    }
}

impl OperatorStateBackend for DefaultOperatorStateBackend {
    fn list_state<T: StateValue>(&mut self, name: &str) -> Result<OperatorListHandle<T>> {
        self.register_list(name, Redistribution::EvenSplit)
    }

    fn union_list_state<T: StateValue>(&mut self, name: &str) -> Result<OperatorListHandle<T>> {
        self.register_list(name, Redistribution::Union)
    }

    fn broadcast_state<K: StateKey, V: StateValue>(&mut self, name: &str) -> Result<BroadcastStateHandle<K, V>> {
        let type_name = OpType::of_map::<K, V>();
        let mode = Redistribution::Broadcast;
        if let Some(OpState {
            data: Data::Raw(elements),
            type_name: existing,
            ..
        }) = self.states.get(&(Space::Broadcast, name.to_string()))
            && existing.reads_as(&type_name)
        {
            let mut map = HashMap::with_capacity(elements.len());
            for e in elements {
                let (k, v) = split_pair(e, name)?;
                map.insert(
                    deserialize::<K>(&k, name, "broadcast key")?,
                    deserialize::<V>(&v, name, "broadcast value")?,
                );
            }
            self.states.insert(
                (Space::Broadcast, name.to_string()),
                OpState {
                    mode,
                    type_name,
                    data: Data::Typed {
                        value: Box::new(map),
                        encode: encode_map::<K, V>,
                    },
                },
            );
            return Ok(BroadcastStateHandle {
                name: name.into(),
                _p: PhantomData,
            });
        }
        self.register(
            name,
            mode,
            type_name,
            Box::new(HashMap::<K, V>::new()),
            encode_map::<K, V>,
        )?;
        self.typed::<HashMap<K, V>>(Space::Broadcast, name)?;
        Ok(BroadcastStateHandle {
            name: name.into(),
            _p: PhantomData,
        })
    }

    fn list_get<T: StateValue>(&mut self, handle: &OperatorListHandle<T>) -> Result<Vec<T>> {
        Ok(self.typed::<Vec<T>>(Space::List, &handle.name)?.clone())
    }

    fn list_add<T: StateValue>(&mut self, handle: &OperatorListHandle<T>, value: T) -> Result<()> {
        self.typed::<Vec<T>>(Space::List, &handle.name)?.push(value);
        Ok(())
    }

    fn list_update<T: StateValue>(&mut self, handle: &OperatorListHandle<T>, values: Vec<T>) -> Result<()> {
        *self.typed::<Vec<T>>(Space::List, &handle.name)? = values;
        Ok(())
    }

    fn broadcast_get<K: StateKey, V: StateValue>(
        &mut self,
        handle: &BroadcastStateHandle<K, V>,
        key: &K,
    ) -> Result<Option<V>> {
        Ok(self
            .typed::<HashMap<K, V>>(Space::Broadcast, &handle.name)?
            .get(key)
            .cloned())
    }

    fn broadcast_put<K: StateKey, V: StateValue>(
        &mut self,
        handle: &BroadcastStateHandle<K, V>,
        key: K,
        value: V,
    ) -> Result<()> {
        self.typed::<HashMap<K, V>>(Space::Broadcast, &handle.name)?
            .insert(key, value);
        Ok(())
    }

    fn broadcast_remove<K: StateKey, V: StateValue>(
        &mut self,
        handle: &BroadcastStateHandle<K, V>,
        key: &K,
    ) -> Result<()> {
        self.typed::<HashMap<K, V>>(Space::Broadcast, &handle.name)?.remove(key);
        Ok(())
    }

    fn broadcast_entries<K: StateKey, V: StateValue>(
        &mut self,
        handle: &BroadcastStateHandle<K, V>,
    ) -> Result<Vec<(K, V)>> {
        Ok(self
            .typed::<HashMap<K, V>>(Space::Broadcast, &handle.name)?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn snapshot(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<OperatorSnapshotHandle>> {
        // Synchronous part: encode every state (operator state is small; Flink copies it too).
        let mut states = Vec::with_capacity(self.states.len());
        for ((_, name), state) in &self.states {
            let elements = match &state.data {
                Data::Typed { value, encode } => encode(&**value, name)?,
                Data::Raw(elements) => elements.clone(),
            };
            states.push((
                OperatorStateInfo {
                    name: name.clone(),
                    mode: state.mode,
                    elements: elements.len() as u64,
                },
                state.type_name.clone(),
                elements,
            ));
        }
        let subtask_index = self.subtask_index;
        Ok(AsyncSnapshot::new(checkpoint_id, move |storage| {
            write_stream(storage, checkpoint_id, subtask_index, states)
        }))
    }
}

type StateData = (OperatorStateInfo, OpType, Vec<Vec<u8>>);

fn write_stream(
    storage: &dyn CheckpointStorage,
    checkpoint_id: u64,
    subtask_index: u32,
    states: Vec<StateData>,
) -> Result<OperatorSnapshotHandle> {
    let header = OpHeader {
        subtask_index,
        states: states.iter().map(|(info, t, _)| (info.clone(), t.clone())).collect(),
    };
    let header_bytes =
        postcard::to_stdvec(&header).map_err(|e| StateError::serialization("<operator header>", "header", e))?;
    let mut buf = Vec::new();
    buf.extend_from_slice(&OPERATOR_MAGIC);
    buf.extend_from_slice(&OPERATOR_VERSION.to_be_bytes());
    put_bytes(&mut buf, &header_bytes);
    for (_, _, elements) in &states {
        for e in elements {
            put_bytes(&mut buf, e);
        }
    }
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_be_bytes());
    buf.extend_from_slice(&OPERATOR_END);
    let mut out = storage.create_output(checkpoint_id, &format!("op-{subtask_index}"))?;
    out.write_all(&buf)
        .map_err(|e| StateError::from_io("writing operator state", e))?;
    let stream = out.finish()?;
    Ok(OperatorSnapshotHandle {
        checkpoint_id,
        subtask_index,
        states: header.states.into_iter().map(|(info, _)| info).collect(),
        stream,
    })
}

fn read_stream(handle: &OperatorSnapshotHandle, storage: &dyn CheckpointStorage) -> Result<Vec<StateData>> {
    let name = handle.stream.describe();
    let mut input = storage.open_input(&handle.stream)?;
    let mut buf = Vec::new();
    input
        .read_to_end(&mut buf)
        .map_err(|e| StateError::from_io(format!("reading `{name}`"), e))?;
    let corrupt = |section: &str, detail: &str| StateError::Corrupt {
        source_name: name.clone(),
        section: section.into(),
        detail: detail.into(),
        source: None,
    };
    if buf.len() < 8 || buf[..8] != OPERATOR_MAGIC {
        return Err(if buf.len() < 8 {
            StateError::Truncated {
                source_name: name.clone(),
                section: "magic".into(),
            }
        } else {
            corrupt("magic", "not an operator state snapshot (wrong magic bytes)")
        });
    }
    if buf.len() < 8 + 4 + 4 + 8 || buf[buf.len() - 8..] != OPERATOR_END {
        return Err(StateError::Truncated {
            source_name: name.clone(),
            section: "trailer".into(),
        });
    }
    let version = u32::from_be_bytes(buf[8..12].try_into().unwrap_or_default());
    if version == 0 || version > OPERATOR_VERSION {
        return Err(StateError::UnsupportedVersion {
            source_name: name.clone(),
            found: version,
            supported: OPERATOR_VERSION,
        });
    }
    let body_end = buf.len() - 12;
    let crc = u32::from_be_bytes(buf[body_end..body_end + 4].try_into().unwrap_or_default());
    if crc32c::crc32c(&buf[..body_end]) != crc {
        return Err(corrupt("body", "checksum mismatch"));
    }
    let body = &buf[12..body_end];
    let mut pos = 0;
    let mut next = |what: &str| -> Result<&[u8]> {
        let mut len: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *body.get(pos).ok_or_else(|| corrupt(what, "runs past the end"))?;
            pos += 1;
            len |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(corrupt(what, "bad length"));
            }
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= body.len())
            .ok_or_else(|| corrupt(what, "runs past the end"))?;
        let out = &body[pos..end];
        pos = end;
        Ok(out)
    };
    let header_bytes = next("header")?;
    let header: OpHeader = if version == 1 {
        postcard::from_bytes::<OpHeaderV1>(header_bytes).map(Into::into)
    } else {
        postcard::from_bytes(header_bytes)
    }
    .map_err(|e| corrupt("header", &e.to_string()).with_source(e))?;
    let mut out = Vec::with_capacity(header.states.len());
    for (info, type_name) in header.states {
        let mut elements = Vec::new();
        for _ in 0..info.elements {
            elements.push(next(&format!("operator state `{}`", info.name))?.to_vec());
        }
        out.push((info, type_name, elements));
    }
    Ok(out)
}
