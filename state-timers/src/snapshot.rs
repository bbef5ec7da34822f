//! Timer snapshots in the canonical format: one stream per subtask holding both queues
//! as two pseudo-states (`_timers/event_time`, `_timers/processing_time`) whose entries
//! are `(key, namespace, timestamp)`, partitioned by key group with an offset index and a
//! CRC32C per section, so a restore reads only the key groups it owns, from any number of
//! old subtasks, into any timer storage.

use state_api::raw::StateMeta;
use state_api::raw::format::{RawEntry, SnapshotHeader, open_for_restore, put_bytes, write_keyed_stream};
use state_api::{
    CheckpointStorage, KeyGroupRange, KeyedSnapshotHandle, PinnedTimers, Result, Schema, StateError, StateKind,
    TimerEntry, TimerQueue,
};

/// Name of the event-time queue's pseudo-state.
pub const EVENT_TIME: &str = "_timers/event_time";
/// Name of the processing-time queue's pseudo-state.
pub const PROCESSING_TIME: &str = "_timers/processing_time";
const TIMESTAMP_TYPE: &str = "timer timestamp (i64, big-endian)";

/// The pseudo-state metadata of a timer queue.
pub(crate) fn timer_meta(name: &str, namespace: (&str, &Schema)) -> StateMeta {
    StateMeta {
        name: name.to_string(),
        kind: StateKind::Value,
        namespace_type: namespace.0.to_string(),
        user_key_type: None,
        value_type: TIMESTAMP_TYPE.to_string(),
        ttl: None,
        namespace_schema: namespace.1.clone(),
        user_key_schema: None,
        // Not postcard: eight big-endian bytes, declared.
        value_schema: Schema::declared(TIMESTAMP_TYPE, 1),
    }
}

/// The timer an entry of a timer stream's key group `key_group` holds (`None` for an
/// entry that is not value-shaped); `source_name` names the stream in errors.
pub fn timer_of(entry: &RawEntry<'_>, key_group: u32, source_name: &str) -> Result<Option<TimerEntry>> {
    let RawEntry::Value {
        key, namespace, value, ..
    } = entry
    else {
        return Ok(None);
    };
    let ts: [u8; 8] = (*value).try_into().map_err(|_| StateError::Corrupt {
        source_name: source_name.to_string(),
        section: format!("key group {key_group}"),
        detail: format!("timer timestamp of {} bytes", value.len()),
        source: None,
    })?;
    Ok(Some(TimerEntry {
        timestamp: i64::from_be_bytes(ts),
        key_group,
        key: key.to_vec(),
        namespace: namespace.to_vec(),
    }))
}

/// What the synchronous part pinned.
pub(crate) struct PinnedQueues {
    pub header: SnapshotHeader,
    pub queues: Vec<Box<dyn PinnedTimers>>,
}

/// The asynchronous part: writes every key group of the pinned queues.
pub(crate) fn write(pinned: PinnedQueues, storage: &dyn CheckpointStorage) -> Result<KeyedSnapshotHandle> {
    let PinnedQueues { header, queues } = pinned;
    write_keyed_stream(storage, &header, "timers", |kg, section| {
        for (si, queue) in queues.iter().enumerate() {
            for timer in queue.key_group(kg)? {
                let block = section.block();
                put_bytes(block, &timer.key);
                put_bytes(block, &timer.namespace);
                put_bytes(block, &timer.timestamp.to_be_bytes());
                section.entry_done();
            }
            section.finish_block(si as u32);
        }
        Ok(())
    })
}

/// Adds the timers of `handles` in the key groups of `range` to the queues (event time
/// first, processing time second). Types are checked against `key` and `namespace`
/// (name and schema); a stream that is not a timer snapshot is refused.
#[allow(clippy::too_many_arguments)]
pub(crate) fn restore<H: ?Sized, Q: TimerQueue<H>>(
    handles: &[KeyedSnapshotHandle],
    storage: &dyn CheckpointStorage,
    key: (&str, &Schema),
    namespace: (&str, &Schema),
    max_parallelism: u32,
    range: KeyGroupRange,
    host: &mut H,
    queues: [&mut Q; 2],
) -> Result<usize> {
    let [event, processing] = queues;
    let mut restored = 0;
    // Per handle and key group, the timers of each queue, added in bulk.
    let (mut event_timers, mut processing_timers) = (Vec::new(), Vec::new());
    for handle in handles {
        let Some((mut reader, mine)) = open_for_restore(handle, storage, key, max_parallelism, range)? else {
            continue;
        };
        let name = reader.name().to_string();
        let states = reader.header().states.clone();
        for expected in [EVENT_TIME, PROCESSING_TIME] {
            match states.iter().find(|m| m.name == expected) {
                Some(meta) => meta.check_compatible(&timer_meta(expected, namespace))?,
                None => {
                    return Err(StateError::Corrupt {
                        source_name: name.clone(),
                        section: "header".into(),
                        detail: format!("not a timer snapshot: no `{expected}` state"),
                        source: None,
                    });
                }
            }
        }
        for kg in mine.iter() {
            let section = reader.read_section(kg)?;
            for block in section.blocks()? {
                let batch = if block.meta.name == EVENT_TIME {
                    &mut event_timers
                } else if block.meta.name == PROCESSING_TIME {
                    &mut processing_timers
                } else {
                    continue;
                };
                for entry in &block.entries {
                    if let Some(timer) = timer_of(entry, kg, &name)? {
                        batch.push(timer);
                    }
                }
            }
            restored += event.add_all(host, &event_timers)?;
            restored += processing.add_all(host, &processing_timers)?;
            event_timers.clear();
            processing_timers.clear();
        }
    }
    Ok(restored)
}
