//! Layouts written before schemas existed (canonical format version 1, checkpoint
//! metadata before version 3), read and upgraded: every type is then known by its name
//! only ([`Schema::Opaque`]), and restores compare names as those versions did.

use serde::Deserialize;

use crate::keygroup::KeyGroupRange;
use crate::raw::format::SnapshotHeader;
use crate::schema::Schema;
use crate::snapshot::{IncrementalKeyedHandle, SnapshotFile};
use crate::state::{StateKind, StateMeta, TtlMeta};

fn by_name(type_name: &str) -> Schema {
    Schema::Opaque {
        type_name: type_name.to_string(),
    }
}

/// A state's metadata as format version 1 recorded it (type names only).
#[derive(Debug, Clone, Deserialize)]
pub struct StateMetaV1 {
    name: String,
    kind: StateKind,
    namespace_type: String,
    user_key_type: Option<String>,
    value_type: String,
    ttl: Option<TtlMeta>,
}

impl From<StateMetaV1> for StateMeta {
    fn from(v1: StateMetaV1) -> Self {
        StateMeta {
            namespace_schema: by_name(&v1.namespace_type),
            user_key_schema: v1.user_key_type.as_deref().map(by_name),
            value_schema: by_name(&v1.value_type),
            name: v1.name,
            kind: v1.kind,
            namespace_type: v1.namespace_type,
            user_key_type: v1.user_key_type,
            value_type: v1.value_type,
            ttl: v1.ttl,
        }
    }
}

/// The header of a format version 1 keyed stream.
#[derive(Debug, Clone, Deserialize)]
pub struct SnapshotHeaderV1 {
    key_type: String,
    max_parallelism: u32,
    key_group_range: KeyGroupRange,
    checkpoint_id: u64,
    states: Vec<StateMetaV1>,
}

impl From<SnapshotHeaderV1> for SnapshotHeader {
    fn from(v1: SnapshotHeaderV1) -> Self {
        SnapshotHeader {
            key_schema: by_name(&v1.key_type),
            key_type: v1.key_type,
            max_parallelism: v1.max_parallelism,
            key_group_range: v1.key_group_range,
            checkpoint_id: v1.checkpoint_id,
            states: v1.states.into_iter().map(Into::into).collect(),
        }
    }
}

/// An incremental handle as checkpoint metadata before version 3 recorded it.
#[derive(Debug, Clone, Deserialize)]
pub struct IncrementalKeyedHandleV1 {
    checkpoint_id: u64,
    key_group_range: KeyGroupRange,
    max_parallelism: u32,
    key_type: String,
    states: Vec<StateMetaV1>,
    shared_files: Vec<SnapshotFile>,
    private_files: Vec<SnapshotFile>,
}

impl From<IncrementalKeyedHandleV1> for IncrementalKeyedHandle {
    fn from(v1: IncrementalKeyedHandleV1) -> Self {
        IncrementalKeyedHandle {
            checkpoint_id: v1.checkpoint_id,
            key_group_range: v1.key_group_range,
            max_parallelism: v1.max_parallelism,
            key_schema: by_name(&v1.key_type),
            key_type: v1.key_type,
            states: v1.states.into_iter().map(Into::into).collect(),
            shared_files: v1.shared_files,
            private_files: v1.private_files,
        }
    }
}
