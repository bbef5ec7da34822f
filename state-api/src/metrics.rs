//! Metrics through the [`metrics`] facade: every backend's checkpoint and restore
//! durations and sizes are recorded as they happen; gauges (entries, backend-specific
//! figures such as RocksDB's native properties, managed memory) are sampled on demand.
//! No exporter is bundled: install any `metrics` recorder (Prometheus, StatsD, …) in the
//! application, and the names below appear there.
//!
//! ```ignore
//! metrics_exporter_prometheus::PrometheusBuilder::new().install()?;  // the application's choice
//! ```
//!
//! Names follow Flink's where Flink has one (its checkpoint statistics and
//! `state.backend.rocksdb.metric.*`). Every metric has a `backend` label (`heap`,
//! `rocksdb`, …); state gauges also have `state`.

use std::time::Duration;

use crate::backend::KeyedStateBackend;
use crate::descriptor::RegisteredState;
use crate::error::Result;

/// Histogram, milliseconds: the synchronous part of a snapshot (Flink's sync duration).
pub const CHECKPOINT_SYNC_DURATION: &str = "checkpointSyncDuration";
/// Histogram, milliseconds: the asynchronous part of a snapshot (Flink's async duration).
pub const CHECKPOINT_ASYNC_DURATION: &str = "checkpointAsyncDuration";
/// Gauge, bytes: what the last snapshot wrote (Flink's `lastCheckpointSize`); label
/// `kind` is `full` or `incremental`.
pub const LAST_CHECKPOINT_SIZE: &str = "lastCheckpointSize";
/// Counter: snapshots whose asynchronous part failed or was cancelled.
pub const CHECKPOINT_FAILURES: &str = "numberOfFailedCheckpoints";
/// Histogram, milliseconds: restoring a backend from snapshot handles.
pub const RESTORE_DURATION: &str = "restoreDuration";
/// Gauge: a state's estimated entries ([`KeyedStateBackend::approximate_entries`]).
pub const ESTIMATED_ENTRIES: &str = "state.estimatedEntries";
/// Gauge, bytes: a state's estimated size ([`KeyedStateBackend::approximate_size`]).
pub const ESTIMATED_SIZE: &str = "state.estimatedSize";
/// Counter, bytes: written to checkpoint storage.
pub const BYTES_UPLOADED: &str = "state.checkpoint.bytesUploaded";
/// Counter, bytes: read from checkpoint storage.
pub const BYTES_DOWNLOADED: &str = "state.checkpoint.bytesDownloaded";
/// Gauge, bytes: managed memory reserved in a slot (Flink's `Managed.Used`).
pub const MANAGED_MEMORY_USED: &str = "Status.Flink.Memory.Managed.Used";
/// Gauge, bytes: a slot's managed memory (Flink's `Managed.Total`).
pub const MANAGED_MEMORY_TOTAL: &str = "Status.Flink.Memory.Managed.Total";

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Records a snapshot's synchronous part.
pub(crate) fn sync_part(backend: &'static str, took: Duration) {
    metrics::histogram!(CHECKPOINT_SYNC_DURATION, "backend" => backend).record(millis(took));
}

/// Records a snapshot's asynchronous part: its duration and size, or its failure.
pub(crate) fn async_part(backend: &'static str, kind: &'static str, took: Duration, size: Option<u64>) {
    match size {
        Some(bytes) => {
            metrics::histogram!(CHECKPOINT_ASYNC_DURATION, "backend" => backend).record(millis(took));
            metrics::gauge!(LAST_CHECKPOINT_SIZE, "backend" => backend, "kind" => kind).set(bytes as f64);
        }
        None => metrics::counter!(CHECKPOINT_FAILURES, "backend" => backend).increment(1),
    }
}

/// Records a restore's duration (backends call it at the end of their restore).
pub fn restore(backend: &'static str, took: Duration) {
    metrics::histogram!(RESTORE_DURATION, "backend" => backend).record(millis(took));
}

/// Records bytes moved to (`uploaded`) or from checkpoint storage.
pub fn storage_bytes(uploaded: bool, bytes: u64) {
    metrics::counter!(if uploaded { BYTES_UPLOADED } else { BYTES_DOWNLOADED }).increment(bytes);
}

/// Samples the estimated entries of `state` into [`ESTIMATED_ENTRIES`].
pub fn report_entries<B: KeyedStateBackend, H: RegisteredState>(backend: &mut B, state: &H) -> Result<u64> {
    let entries = backend.approximate_entries(state)?;
    let name = state.meta().name.clone();
    metrics::gauge!(ESTIMATED_ENTRIES, "backend" => backend.backend_name(), "state" => name).set(entries as f64);
    Ok(entries)
}

/// Samples the estimated size in bytes of `state` into [`ESTIMATED_SIZE`].
pub fn report_size<B: KeyedStateBackend, H: RegisteredState>(backend: &mut B, state: &H) -> Result<u64> {
    let bytes = backend.approximate_size(state)?;
    let name = state.meta().name.clone();
    metrics::gauge!(ESTIMATED_SIZE, "backend" => backend.backend_name(), "state" => name).set(bytes as f64);
    Ok(bytes)
}

/// Samples a managed-memory slot's figures into [`MANAGED_MEMORY_USED`] (bytes reserved)
/// and [`MANAGED_MEMORY_TOTAL`] (its budget), labelled `slot` (from
/// `state_memory::SlotMemory::stats`, which this crate does not depend on).
pub fn report_managed_memory(slot: usize, budget: u64, reserved: u64) {
    let slot = slot.to_string();
    metrics::gauge!(MANAGED_MEMORY_USED, "slot" => slot.clone()).set(reserved as f64);
    metrics::gauge!(MANAGED_MEMORY_TOTAL, "slot" => slot).set(budget as f64);
}
