//! The timer service (Flink's `InternalTimerServiceImpl`).

use std::marker::PhantomData;
use std::sync::Arc;

use state_api::raw::format::SnapshotHeader;
use state_api::raw::{append_postcard, type_name_of};
use state_api::{
    AsyncSnapshot, CheckpointStorage, Clock, KeyGroupRange, KeyedSnapshotHandle, KeyedStateBackend, Namespace, Result,
    Schema, StateError, StateKey, Timer, TimerEntry, TimerQueue, TimerQueueInfo, TimerService,
};

use crate::snapshot::{EVENT_TIME, PROCESSING_TIME, PinnedQueues, timer_meta};

/// Event-time and processing-time timers of one operator, keyed by the backend's key and
/// a namespace `N`, stored in queues `Q` (heap, LMDB or RocksDB storage).
///
/// - At most one timer per (key, namespace, timestamp) and time domain.
/// - [`advance_watermark`](Self::advance_watermark) fires every event-time timer with
///   timestamp ≤ the watermark in firing order: timestamp, then key group, then
///   serialized key, then serialized namespace. Before each callback the timer's key is
///   set as the backend's current key; timers the callback registers that are already
///   due fire in the same advance.
/// - Processing time comes from an injectable [`Clock`]; [`advance_processing_time`]
///   fires what is due, and [`next_processing_time`] says when to wake up next.
/// - [`snapshot`](Self::snapshot) pins the queues in its synchronous part (heap queues:
///   an `Arc` per key group; LMDB: a read transaction) and writes the canonical format in
///   the asynchronous part while timers keep being registered and fired.
///
/// [`advance_processing_time`]: Self::advance_processing_time
/// [`next_processing_time`]: Self::next_processing_time
///
/// ```
/// use std::sync::Arc;
/// use state_api::{BackendContext, KeyedStateBackend, ManualClock, TimerService, ValueStateDescriptor};
/// use state_heap::HeapKeyedStateBackend;
/// use state_timers::{HeapTimerQueue, InternalTimerService};
///
/// let ctx = BackendContext::single(128);
/// let mut backend = HeapKeyedStateBackend::<String>::new(&ctx)?;
/// let sums = backend.register(ValueStateDescriptor::<u64>::new("sum"))?;
/// let mut timers = InternalTimerService::<String, i64, _>::new(
///     HeapTimerQueue::new(ctx.key_group_range),
///     HeapTimerQueue::new(ctx.key_group_range),
///     Arc::new(ManualClock::new(0)),
///     128,
/// )?;
/// backend.set_current_key(&"alice".to_string())?;
/// backend.value(&sums).update(5)?;
/// timers.register_event_time_timer(&mut backend, &10, 10)?; // namespace: the window end
///
/// let mut closed = Vec::new();
/// timers.advance_watermark(&mut backend, 10, |backend, _timers, timer| {
///     // The timer's key is the current key.
///     closed.push((timer.key.clone(), backend.value(&sums).get()?));
///     backend.value(&sums).clear()
/// })?;
/// assert_eq!(closed, vec![("alice".to_string(), Some(5))]);
/// # Ok::<(), state_api::StateError>(())
/// ```
pub struct InternalTimerService<K, N, Q> {
    event: Q,
    processing: Q,
    watermark: i64,
    clock: Arc<dyn Clock>,
    max_parallelism: u32,
    range: KeyGroupRange,
    key_type: String,
    key_schema: Schema,
    namespace_type: String,
    namespace_schema: Schema,
    _types: PhantomData<fn() -> (K, N)>,
}

impl<K, N, Q> std::fmt::Debug for InternalTimerService<K, N, Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalTimerService")
            .field("range", &self.range)
            .field("watermark", &self.watermark)
            .finish()
    }
}

/// The postcard encoding of `value` in a new `Vec`.
fn encoded<T: serde::Serialize + ?Sized>(value: &T) -> postcard::Result<Vec<u8>> {
    let mut out = Vec::new();
    append_postcard(value, &mut out)?;
    Ok(out)
}

fn serialization(role: &'static str, e: postcard::Error) -> StateError {
    StateError::serialization("timers", role, e)
}

/// Which clock a timer follows (Flink's `TimeDomain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// The watermark.
    EventTime,
    /// The wall clock.
    ProcessingTime,
}

impl<K: StateKey, N: Namespace, Q> InternalTimerService<K, N, Q> {
    /// A service over two empty queues (event time, processing time) of the same key
    /// groups, reading processing time from `clock`.
    pub fn new(event: Q, processing: Q, clock: Arc<dyn Clock>, max_parallelism: u32) -> Result<Self>
    where
        Q: TimerQueueInfo,
    {
        let range = event.key_group_range();
        if processing.key_group_range() != range {
            return Err(StateError::InvalidArgument(format!(
                "event-time queue holds key groups {range}, processing-time queue {}",
                processing.key_group_range()
            )));
        }
        Ok(InternalTimerService {
            event,
            processing,
            watermark: i64::MIN,
            clock,
            max_parallelism,
            range,
            key_type: type_name_of::<K>(),
            key_schema: Schema::of::<K>(),
            namespace_type: type_name_of::<N>(),
            namespace_schema: Schema::of::<N>(),
            _types: PhantomData,
        })
    }

    /// The key groups the service holds timers of.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// The event-time queue.
    pub fn event_queue(&self) -> &Q {
        &self.event
    }

    /// The processing-time queue.
    pub fn processing_queue(&self) -> &Q {
        &self.processing
    }

    fn entry<B: KeyedStateBackend<Key = K>>(&self, backend: &B, namespace: &N, timestamp: i64) -> Result<TimerEntry> {
        let key = backend.current_key().ok_or_else(|| StateError::NoCurrentKey)?;
        let key_group = backend.current_key_group().ok_or_else(|| StateError::NoCurrentKey)?;
        Ok(TimerEntry {
            timestamp,
            key_group,
            key: encoded(key).map_err(|e| serialization("key", e))?,
            namespace: encoded(namespace).map_err(|e| serialization("namespace", e))?,
        })
    }

    fn decode(entry: &TimerEntry) -> Result<Timer<K, N>> {
        Ok(Timer {
            timestamp: entry.timestamp,
            key: postcard::from_bytes(&entry.key).map_err(|e| serialization("key", e))?,
            namespace: postcard::from_bytes(&entry.namespace).map_err(|e| serialization("namespace", e))?,
        })
    }

    /// The timestamp of the next event-time timer.
    pub fn next_event_time(&self) -> Option<i64>
    where
        Q: TimerQueueInfo,
    {
        self.event.peek().map(|t| t.timestamp)
    }

    /// The timestamp of the next processing-time timer: when an engine should wake up
    /// and call [`Self::advance_processing_time`].
    pub fn next_processing_time(&self) -> Option<i64>
    where
        Q: TimerQueueInfo,
    {
        self.processing.peek().map(|t| t.timestamp)
    }

    /// Event-time timers queued.
    pub fn event_timer_count(&self) -> usize
    where
        Q: TimerQueueInfo,
    {
        self.event.len()
    }

    /// Processing-time timers queued.
    pub fn processing_timer_count(&self) -> usize
    where
        Q: TimerQueueInfo,
    {
        self.processing.len()
    }

    /// Fires every timer of `domain` due at `until`, in order; see the type's docs.
    fn fire_due<B, F>(&mut self, backend: &mut B, domain: TimeDomain, until: i64, mut on_timer: F) -> Result<usize>
    where
        B: KeyedStateBackend<Key = K>,
        Q: TimerQueue<B>,
        F: FnMut(&mut B, &mut Self, Timer<K, N>) -> Result<()>,
    {
        let mut fired = 0;
        loop {
            let queue = match domain {
                TimeDomain::ProcessingTime => &mut self.processing,
                TimeDomain::EventTime => &mut self.event,
            };
            if queue.peek().is_none_or(|t| t.timestamp > until) {
                return Ok(fired);
            }
            let Some(entry) = queue.poll(backend)? else {
                return Ok(fired);
            };
            let timer = Self::decode(&entry)?;
            backend.set_current_key(&timer.key)?;
            on_timer(backend, self, timer)?;
            fired += 1;
        }
    }

    /// Visits every timer of `domain` with its key set as the current key: in key-group
    /// order, then firing order, over the timers as they were when the visit started.
    fn visit<B, F>(&mut self, backend: &mut B, domain: TimeDomain, mut f: F) -> Result<()>
    where
        B: KeyedStateBackend<Key = K>,
        Q: TimerQueue<B>,
        F: FnMut(&mut B, &Timer<K, N>) -> Result<()>,
    {
        let queue = match domain {
            TimeDomain::ProcessingTime => &mut self.processing,
            TimeDomain::EventTime => &mut self.event,
        };
        let range = queue.key_group_range();
        let pinned = queue.pin(backend)?;
        let previous = backend.current_key().cloned();
        let mut result = Ok(());
        'groups: for key_group in range.iter() {
            for entry in pinned.key_group(key_group)? {
                result = Self::decode(&entry)
                    .and_then(|timer| backend.set_current_key(&timer.key).and_then(|()| f(backend, &timer)));
                if result.is_err() {
                    break 'groups;
                }
            }
        }
        if let Some(previous) = previous {
            backend.set_current_key(&previous)?;
        }
        result
    }

    /// Visits every event-time timer with its key set as the current key (Flink's
    /// `forEachEventTimeTimer`), without removing any: in key-group order, then firing
    /// order, over the timers as they were when the visit started. The current key from
    /// before is set again afterwards; the first error of `f` stops the visit.
    pub fn for_each_event_time_timer<B>(
        &mut self,
        backend: &mut B,
        f: impl FnMut(&mut B, &Timer<K, N>) -> Result<()>,
    ) -> Result<()>
    where
        B: KeyedStateBackend<Key = K>,
        Q: TimerQueue<B>,
    {
        self.visit(backend, TimeDomain::EventTime, f)
    }

    /// Visits every processing-time timer, as
    /// [`for_each_event_time_timer`](Self::for_each_event_time_timer) does.
    pub fn for_each_processing_time_timer<B>(
        &mut self,
        backend: &mut B,
        f: impl FnMut(&mut B, &Timer<K, N>) -> Result<()>,
    ) -> Result<()>
    where
        B: KeyedStateBackend<Key = K>,
        Q: TimerQueue<B>,
    {
        self.visit(backend, TimeDomain::ProcessingTime, f)
    }

    /// Advances event time to `watermark` (never backwards) and fires every event-time
    /// timer with timestamp ≤ it. Returns how many fired. A timer is removed before its
    /// callback runs; if the callback fails, the error is returned and the remaining
    /// timers stay queued.
    pub fn advance_watermark<B>(
        &mut self,
        backend: &mut B,
        watermark: i64,
        on_timer: impl FnMut(&mut B, &mut Self, Timer<K, N>) -> Result<()>,
    ) -> Result<usize>
    where
        B: KeyedStateBackend<Key = K>,
        Q: TimerQueue<B>,
    {
        self.watermark = self.watermark.max(watermark);
        let until = self.watermark;
        self.fire_due(backend, TimeDomain::EventTime, until, on_timer)
    }

    /// Fires every processing-time timer due at the clock's current time.
    pub fn advance_processing_time<B>(
        &mut self,
        backend: &mut B,
        on_timer: impl FnMut(&mut B, &mut Self, Timer<K, N>) -> Result<()>,
    ) -> Result<usize>
    where
        B: KeyedStateBackend<Key = K>,
        Q: TimerQueue<B>,
    {
        let now = self.clock.now_millis();
        self.fire_due(backend, TimeDomain::ProcessingTime, now, on_timer)
    }

    /// The synchronous part of a snapshot of both queues: pins them (cheap for heap and
    /// LMDB queues). The returned [`AsyncSnapshot`] writes them in the canonical format
    /// on any thread while timers keep being registered and fired.
    pub fn snapshot<B: ?Sized>(
        &mut self,
        backend: &mut B,
        checkpoint_id: u64,
    ) -> Result<AsyncSnapshot<KeyedSnapshotHandle>>
    where
        Q: TimerQueue<B>,
    {
        let queues = vec![self.event.pin(backend)?, self.processing.pin(backend)?];
        let header = SnapshotHeader {
            key_type: self.key_type.clone(),
            key_schema: self.key_schema.clone(),
            max_parallelism: self.max_parallelism,
            key_group_range: self.range,
            checkpoint_id,
            states: vec![
                timer_meta(EVENT_TIME, (&self.namespace_type, &self.namespace_schema)),
                timer_meta(PROCESSING_TIME, (&self.namespace_type, &self.namespace_schema)),
            ],
        };
        let pinned = PinnedQueues { header, queues };
        Ok(AsyncSnapshot::new(checkpoint_id, move |storage| {
            crate::snapshot::write(pinned, storage)
        }))
    }

    /// Adds the timers of snapshot `handles` (any number of old subtasks, any storage
    /// they were taken from) in this service's key groups; only those key groups are
    /// read. Returns how many timers were restored.
    pub fn restore<B: ?Sized>(
        &mut self,
        backend: &mut B,
        handles: &[KeyedSnapshotHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<usize>
    where
        Q: TimerQueue<B>,
    {
        crate::snapshot::restore(
            handles,
            storage,
            (&self.key_type, &self.key_schema),
            (&self.namespace_type, &self.namespace_schema),
            self.max_parallelism,
            self.range,
            backend,
            [&mut self.event, &mut self.processing],
        )
    }
}

impl<B, N, Q> TimerService<B, N> for InternalTimerService<B::Key, N, Q>
where
    B: KeyedStateBackend,
    N: Namespace,
    Q: TimerQueue<B>,
{
    fn register_event_time_timer(&mut self, backend: &mut B, namespace: &N, timestamp: i64) -> Result<()> {
        let entry = self.entry(backend, namespace, timestamp)?;
        self.event.add_owned(backend, entry).map(|_| ())
    }

    fn delete_event_time_timer(&mut self, backend: &mut B, namespace: &N, timestamp: i64) -> Result<()> {
        let entry = self.entry(backend, namespace, timestamp)?;
        self.event.remove(backend, &entry).map(|_| ())
    }

    fn register_processing_time_timer(&mut self, backend: &mut B, namespace: &N, timestamp: i64) -> Result<()> {
        let entry = self.entry(backend, namespace, timestamp)?;
        self.processing.add_owned(backend, entry).map(|_| ())
    }

    fn delete_processing_time_timer(&mut self, backend: &mut B, namespace: &N, timestamp: i64) -> Result<()> {
        let entry = self.entry(backend, namespace, timestamp)?;
        self.processing.remove(backend, &entry).map(|_| ())
    }

    fn current_watermark(&self) -> i64 {
        self.watermark
    }

    fn current_processing_time(&self) -> i64 {
        self.clock.now_millis()
    }
}
