//! Timers: the service trait operators call, and the queue trait timer storages
//! implement (Flink's `InternalTimerService` and `KeyGroupedInternalPriorityQueue`).
//!
//! Timers are keyed state: each belongs to a key (so to a key group) and a namespace,
//! and fires at a timestamp. Queues store them as [`TimerEntry`]s, byte-level and
//! type-agnostic, ordered by `(timestamp, key group, serialized key, serialized
//! namespace)`: timestamp order, ties broken deterministically by key group and then by
//! the serialized key and namespace bytes. Every storage (heap, LMDB, RocksDB) fires in
//! exactly this order.
//!
//! The persistent layout (frozen, as Flink's RocksDB timers) is
//! `[key group, big-endian, 1 byte if max_parallelism <= 128 else 2][timestamp, big-endian,
//! sign bit flipped][key][namespace]`, so byte order is time order within a key group.

use crate::backend::KeyedStateBackend;
use crate::error::{Result, StateError};
use crate::format::read_varint;
use crate::keygroup::{KeyGroupRange, key_group_prefix_len, put_key_group, read_key_group};
use crate::state::Namespace;

/// One timer as queues store it.
///
/// The derived order is the firing order: timestamp, then key group, then key bytes,
/// then namespace bytes. (Postcard encodings of one type are prefix-free, so ordering the
/// concatenation `key ++ namespace` is the same as ordering the pair.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerEntry {
    /// When the timer fires (milliseconds, event or processing time).
    pub timestamp: i64,
    /// The key's key group.
    pub key_group: u32,
    /// The postcard-serialized key.
    pub key: Vec<u8>,
    /// The postcard-serialized namespace.
    pub namespace: Vec<u8>,
}

/// A timestamp as 8 big-endian bytes with the sign bit flipped, so that byte order is
/// numeric order (negative timestamps first).
pub fn encode_timestamp(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`encode_timestamp`].
pub fn decode_timestamp(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

impl TimerEntry {
    /// The persistent key: `[key group][timestamp][key][namespace]`.
    pub fn encode_key(&self, max_parallelism: u32) -> Vec<u8> {
        let mut buf = Vec::with_capacity(2 + 8 + self.key.len() + self.namespace.len());
        put_key_group(&mut buf, self.key_group, key_group_prefix_len(max_parallelism));
        buf.extend_from_slice(&encode_timestamp(self.timestamp));
        buf.extend_from_slice(&self.key);
        buf.extend_from_slice(&self.namespace);
        buf
    }

    /// The persistent value: the key's length as a LEB128 varint, to split key from
    /// namespace without knowing their types.
    pub fn encode_value(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(3);
        crate::format::put_varint(&mut buf, self.key.len() as u64);
        buf
    }

    /// Decodes a persistent key and value; `source` names the store for errors.
    pub fn decode(key: &[u8], value: &[u8], max_parallelism: u32, source: &str) -> Result<Self> {
        let bad = |detail: String| StateError::Corrupt {
            source_name: source.to_string(),
            section: "timer".into(),
            detail,
            source: None,
        };
        let p = key_group_prefix_len(max_parallelism);
        if key.len() < p + 8 {
            return Err(bad(format!(
                "timer key of {} bytes is shorter than its prefix",
                key.len()
            )));
        }
        let key_group = read_key_group(key, p).unwrap_or_default();
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&key[p..p + 8]);
        let rest = &key[p + 8..];
        let key_len = match read_varint(value) {
            Some((n, used)) if used == value.len() => n,
            _ => {
                return Err(bad(format!(
                    "timer value of {} bytes is not one key length",
                    value.len()
                )));
            }
        };
        let key_len = usize::try_from(key_len)
            .ok()
            .filter(|n| *n <= rest.len())
            .ok_or_else(|| {
                bad(format!(
                    "timer key length {key_len} exceeds the {} bytes after the timestamp",
                    rest.len()
                ))
            })?;
        Ok(TimerEntry {
            timestamp: decode_timestamp(ts),
            key_group,
            key: rest[..key_len].to_vec(),
            namespace: rest[key_len..].to_vec(),
        })
    }
}

/// A timer storage: a priority queue of unique timers, partitioned by key group (Flink's
/// `KeyGroupedInternalPriorityQueue`), implemented by the heap, LMDB and RocksDB storages.
///
/// `H` is the host the storage lives in: storages inside a keyed backend (RocksDB's
/// column family) use the backend passed by the timer service; stand-alone storages
/// (heap, LMDB) implement the trait for every `H` and ignore it.
pub trait TimerQueue<H: ?Sized>: TimerQueueInfo {
    /// Adds a timer; `false` (and no change) when it is already queued.
    fn add(&mut self, host: &mut H, timer: &TimerEntry) -> Result<bool>;
    /// [`add`](Self::add) of a timer the caller no longer needs (a timer service's
    /// register): a storage that keeps entries in memory keeps this one instead of a
    /// copy. The default adds by reference.
    fn add_owned(&mut self, host: &mut H, timer: TimerEntry) -> Result<bool> {
        self.add(host, &timer)
    }
    /// Adds many timers at once (a restore); returns how many were not queued yet.
    /// The default adds them one by one; storages override it where a bulk insert is
    /// cheaper.
    fn add_all(&mut self, host: &mut H, timers: &[TimerEntry]) -> Result<usize> {
        let mut added = 0;
        for timer in timers {
            added += usize::from(self.add(host, timer)?);
        }
        Ok(added)
    }
    /// Removes a timer; `false` when it was not queued.
    fn remove(&mut self, host: &mut H, timer: &TimerEntry) -> Result<bool>;
    /// Removes and returns the first timer in firing order.
    fn poll(&mut self, host: &mut H) -> Result<Option<TimerEntry>>;
    /// The synchronous part of a snapshot: pins the current timers so that
    /// [`PinnedTimers::key_group`] reads them, as they are now, on any thread while the
    /// queue keeps changing.
    fn pin(&mut self, host: &mut H) -> Result<Box<dyn PinnedTimers>>;
}

/// What a timer queue tells without its host: the next timer and the count.
pub trait TimerQueueInfo: Send {
    /// The first timer in firing order, without removing it.
    fn peek(&self) -> Option<&TimerEntry>;
    /// Number of queued timers.
    fn len(&self) -> usize;
    /// Whether no timer is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The key groups this queue holds.
    fn key_group_range(&self) -> KeyGroupRange;
}

/// Timers pinned by [`TimerQueue::pin`].
pub trait PinnedTimers: Send {
    /// The timers of `key_group`, in firing order.
    fn key_group(&self, key_group: u32) -> Result<Vec<TimerEntry>>;
}

/// A fired timer, with its key and namespace deserialized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Timer<K, N> {
    /// When it was due.
    pub timestamp: i64,
    /// Its key (set as the backend's current key while the callback runs).
    pub key: K,
    /// Its namespace.
    pub namespace: N,
}

/// The timer service operators call (Flink's `InternalTimerService`): timers for the
/// backend's current key and a namespace, at most one per (key, namespace, timestamp).
///
/// ```
/// use state_api::{KeyedStateBackend, Result, TimerService};
///
/// /// Closes a window when the watermark passes its end; generic over backend and timer storage.
/// fn on_element<B: KeyedStateBackend<Key = u64>, T: TimerService<B, i64>>(
///     backend: &mut B,
///     timers: &mut T,
///     key: u64,
///     window_end: i64,
/// ) -> Result<()> {
///     backend.set_current_key(&key)?;
///     timers.register_event_time_timer(backend, &window_end, window_end)
/// }
/// ```
pub trait TimerService<B: KeyedStateBackend, N: Namespace> {
    /// Registers an event-time timer for the backend's current key and `namespace`.
    fn register_event_time_timer(&mut self, backend: &mut B, namespace: &N, timestamp: i64) -> Result<()>;
    /// Deletes an event-time timer of the current key and `namespace` (nothing if none).
    fn delete_event_time_timer(&mut self, backend: &mut B, namespace: &N, timestamp: i64) -> Result<()>;
    /// Registers a processing-time timer for the backend's current key and `namespace`.
    fn register_processing_time_timer(&mut self, backend: &mut B, namespace: &N, timestamp: i64) -> Result<()>;
    /// Deletes a processing-time timer of the current key and `namespace`.
    fn delete_processing_time_timer(&mut self, backend: &mut B, namespace: &N, timestamp: i64) -> Result<()>;
    /// The current event-time watermark (`i64::MIN` before the first).
    fn current_watermark(&self) -> i64;
    /// The current processing time of the service's clock.
    fn current_processing_time(&self) -> i64;
}
