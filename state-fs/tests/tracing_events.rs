//! Checkpoints emit tracing events (in its own test binary: tracing caches callsite
//! interest per process, so other tests running first could hide the events).

mod common;

use std::sync::{Arc, Mutex};

use common::LocalFs;
use state_api::{BackendContext, KeyedStateBackend, ValueStateDescriptor};
use state_fs::{CheckpointMetadata, SnapshotKind};
use state_heap::HeapKeyedStateBackend;

fn checkpoint(fs: &LocalFs) {
    let mut b = HeapKeyedStateBackend::<u64>::new(&BackendContext::single(128)).unwrap();
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    for k in 0..100 {
        b.set_current_key(&k).unwrap();
        b.value(&v).update(k).unwrap();
    }
    let mut meta = CheckpointMetadata::new("job", 1, SnapshotKind::Checkpoint);
    common::add_keyed(&mut meta, b.snapshot(1).unwrap().run(&fs.storage).unwrap());
    fs.storage.complete_checkpoint(meta).unwrap();
    fs.storage.latest_checkpoint().unwrap();
}

/// A minimal tracing subscriber that records event fields as text.
struct Recorder(Arc<Mutex<Vec<String>>>);

struct Fields(String);
impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn checkpoints_emit_tracing_events_with_id_files_bytes_and_duration() {
    let events = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::with_default(Recorder(Arc::clone(&events)), || {
        checkpoint(&LocalFs::files_only());
    });
    let events = events.lock().unwrap();
    let done = events
        .iter()
        .find(|e| e.contains("checkpoint completed"))
        .expect("completion event");
    for field in ["checkpoint_id=1", "files=1", "bytes=", "duration_ms="] {
        assert!(done.contains(field), "{done}");
    }
    assert!(
        events.iter().any(|e| e.contains("checkpoint metadata loaded")),
        "{events:?}"
    );
}
