//! # state-api
//!
//! The contract of the state-backends workspace: everything a Rust stream processor
//! needs to keep Flink-grade state, independent of where the state lives.
//!
//! - [`keygroup`]: keys → key groups → subtasks, Flink's formulas, frozen.
//! - Keyed state: [`ValueStateDescriptor`], [`ListStateDescriptor`],
//!   [`MapStateDescriptor`], [`ReducingStateDescriptor`], [`AggregatingStateDescriptor`]
//!   registered on a [`KeyedStateBackend`], scoped to the current key and a namespace,
//!   with optional [`TtlConfig`].
//! - Operator state: [`OperatorStateBackend`] (even-split and union list state,
//!   broadcast state), implemented once by [`DefaultOperatorStateBackend`].
//! - Snapshots: [`AsyncSnapshot`] (the asynchronous part), [`CheckpointStorage`]
//!   (where bytes go), [`KeyedSnapshotHandle`] / [`OperatorSnapshotHandle`] (what was
//!   written), and the canonical savepoint format ([`raw::format`]).
//! - Schemas: every state records the structural [`Schema`] of its types; a restore
//!   accepts a changed type only as is or through a descriptor's [`Migration`]s.
//! - Timers: [`TimerService`] (what operators call) and [`TimerQueue`] (what timer
//!   storages implement), implemented in `state-timers`.
//! - Jobs: [`JobSnapshot`] (every operator's subtasks' handles), the
//!   [`CheckpointCoordinator`] (acknowledgements → completed checkpoints) and
//!   [`JobAssignment`] (restore at any parallelism per operator).
//! - [`testkit`] (feature `testkit`): the conformance suite every backend runs.
//!
//! Operator code is written once, generic over the backend:
//!
//! ```
//! use state_api::{KeyedStateBackend, MapStateDescriptor, Result, ValueStateDescriptor};
//!
//! #[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
//! struct Window { start: i64, end: i64 }
//!
//! struct BidCounter<B: KeyedStateBackend<Key = String>> {
//!     counts: state_api::ValueStateHandle<u64>,
//!     per_window: state_api::MapStateHandle<u64, u64, Window>,
//!     _b: std::marker::PhantomData<B>,
//! }
//!
//! impl<B: KeyedStateBackend<Key = String>> BidCounter<B> {
//!     fn open(backend: &mut B) -> Result<Self> {
//!         Ok(BidCounter {
//!             counts: backend.register(ValueStateDescriptor::<u64>::new("count"))?,
//!             per_window: backend.register(MapStateDescriptor::<u64, u64>::new("bids").in_namespace::<Window>())?,
//!             _b: std::marker::PhantomData,
//!         })
//!     }
//!
//!     fn on_bid(&self, backend: &mut B, bidder: &String, auction: u64, window: &Window) -> Result<()> {
//!         backend.set_current_key(bidder)?;
//!         let n = backend.value(&self.counts).get()?.unwrap_or(0) + 1;
//!         backend.value(&self.counts).update(n)?;
//!         backend.map_in(&self.per_window, window).put(auction, n)
//!     }
//! }
//! ```
#![deny(missing_docs)]

mod assignment;
mod backend;
mod cancel;
mod checkpoint;
mod compatibility;
mod coordinator;
mod descriptor;
mod error;
pub mod keygroup;
pub mod metrics;
mod migration;
mod operator;
mod operator_views;
pub mod process;
pub mod raw;
mod schema;
mod schema_encoding;
mod schema_trace;
pub(crate) use raw::{format, framing};
mod snapshot;
mod state;
mod timer;
mod ttl;
mod views;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use assignment::{JobAssignment, OperatorSpec, OperatorStatePartition, RestoreOptions, SubtaskAssignment};
pub use backend::{BackendContext, KeyedBackendFactory, KeyedStateBackend};
pub use cancel::CancelHandle;
pub use checkpoint::{JobSnapshot, OperatorId, OperatorSnapshot, SubtaskSnapshot, SubtaskState};
pub use coordinator::{
    AbortReason, AckOutcome, Acknowledgement, CheckpointCoordinator, CheckpointEvent, CheckpointMessage,
    CompletedCheckpointStore, CoordinatorConfig, Decline, InMemoryCheckpointStore,
};
pub use descriptor::{
    AggregateFunction, AggregatingStateDescriptor, AggregatingStateHandle, ListStateDescriptor, ListStateHandle,
    MapStateDescriptor, MapStateHandle, ReduceFn, ReducingStateDescriptor, ReducingStateHandle, RegisteredState,
    StateDescriptor, ValueStateDescriptor, ValueStateHandle,
};
pub use error::{BoxError, ErrorKind, Result, StateError};
pub use keygroup::KeyGroupRange;
pub use migration::{Migration, Migrations};
pub use operator::{BroadcastStateHandle, DefaultOperatorStateBackend, OperatorListHandle, OperatorStateBackend};
pub use operator_views::{BroadcastView, OperatorListView};
pub use schema::{Field, Schema, SchemaTraceError, Variant, VariantShape};
pub use snapshot::{
    AsyncSnapshot, CheckpointInput, CheckpointOutput, CheckpointStorage, IncrementalKeyedHandle, KeyedSnapshotHandle,
    OperatorSnapshotHandle, OperatorStateInfo, Redistribution, SharedFile, SnapshotFile, StreamHandle,
};
pub use state::{Namespace, StateKey, StateKind, StateValue, VoidNamespace};
pub use timer::{PinnedTimers, Timer, TimerEntry, TimerQueue, TimerQueueInfo, TimerService};
pub use ttl::{Clock, ManualClock, SystemClock, TtlConfig, TtlUpdateType, TtlVisibility};
pub use views::{AggregatingView, ListView, MapCursor, MapIter, MapView, ReducingView, ValueView};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
