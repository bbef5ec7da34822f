//! A timer queue over an ordered byte store (LMDB, a RocksDB column family), with a
//! small in-memory cache of the head of each key group (Flink's
//! `RocksDBCachingPriorityQueueSet` inside a `KeyGroupPartitionedPriorityQueue`).

use std::collections::BTreeSet;

use state_api::keygroup::{key_group_prefix_len, put_key_group};
use state_api::{KeyGroupRange, PinnedTimers, Result, TimerEntry, TimerQueue, TimerQueueInfo};

/// Default number of timers cached per key group.
pub const DEFAULT_CACHE_SIZE: usize = 128;

/// Entries of an ordered store: (key, value) pairs in key order.
pub type StoreEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// An ordered byte store that timers are kept in, keyed by
/// [`TimerEntry::encode_key`]. `H` is the host the store lives in (see [`TimerQueue`]).
pub trait OrderedTimerStore<H: ?Sized>: Send {
    /// A name for errors (a path, a column family).
    fn name(&self) -> &str;
    /// Writes `key` → `value` unless `key` is stored; `false` when it was.
    fn insert(&mut self, host: &mut H, key: &[u8], value: &[u8]) -> Result<bool>;
    /// Writes `key` → `value` where the caller knows `key` is not stored (the queue's
    /// cache proved it), so a store may skip the read [`insert`](Self::insert) needs.
    fn insert_new(&mut self, host: &mut H, key: &[u8], value: &[u8]) -> Result<()> {
        self.insert(host, key, value).map(drop)
    }
    /// Deletes `key`; `false` when it was not stored.
    fn remove(&mut self, host: &mut H, key: &[u8]) -> Result<bool>;
    /// Deletes `key` where the caller knows it is stored, so a store may skip the read
    /// [`remove`](Self::remove) needs.
    fn remove_known(&mut self, host: &mut H, key: &[u8]) -> Result<()> {
        self.remove(host, key).map(drop)
    }
    /// Up to `limit` entries whose key starts with `prefix` and is ≥ `from`, in key
    /// order. `from` lets a queue start after the timers it just deleted instead of
    /// stepping over their tombstones.
    fn scan_prefix(&mut self, host: &mut H, prefix: &[u8], from: &[u8], limit: usize) -> Result<StoreEntries>;
    /// Pins the current content for a snapshot, readable on any thread.
    fn pin(&mut self, host: &mut H) -> Result<Box<dyn PinnedStore>>;
}

/// A store's content pinned by [`OrderedTimerStore::pin`].
pub trait PinnedStore: Send {
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<StoreEntries>;
}

#[derive(Debug, Default)]
struct GroupCache {
    /// The smallest timers of the key group (all of them when `complete`).
    cache: BTreeSet<TimerEntry>,
    complete: bool,
    count: usize,
}

/// A [`TimerQueue`] over an [`OrderedTimerStore`]: the store holds every timer; memory
/// holds at most `cache_size` timers per key group (the first ones) and the first timer
/// of each key group in an ordered set, so `peek` never reads the store and `poll` reads
/// it only when a key group's cache runs dry.
pub struct CachedTimerQueue<S> {
    store: S,
    range: KeyGroupRange,
    max_parallelism: u32,
    groups: Vec<GroupCache>,
    /// (timestamp, index in `range`) of each key group's first cached timer: enough to
    /// order the heads of distinct key groups, without a copy of the timer.
    heads: BTreeSet<(i64, usize)>,
    len: usize,
    cache_size: usize,
}

impl<S> std::fmt::Debug for CachedTimerQueue<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedTimerQueue")
            .field("range", &self.range)
            .field("len", &self.len)
            .field("cache_size", &self.cache_size)
            .finish()
    }
}

fn prefix(key_group: u32, max_parallelism: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(2);
    put_key_group(&mut p, key_group, key_group_prefix_len(max_parallelism));
    p
}

fn decode_all(entries: StoreEntries, max_parallelism: u32, name: &str) -> Result<Vec<TimerEntry>> {
    entries
        .into_iter()
        .map(|(k, v)| TimerEntry::decode(&k, &v, max_parallelism, name))
        .collect()
}

impl<S> CachedTimerQueue<S> {
    /// Opens a queue over `store` for the key groups of `range`, loading the head of each
    /// key group and counting the timers already stored (a persistent store reopened).
    pub fn open<H: ?Sized>(
        mut store: S,
        host: &mut H,
        range: KeyGroupRange,
        max_parallelism: u32,
        cache_size: usize,
    ) -> Result<Self>
    where
        S: OrderedTimerStore<H>,
    {
        let cache_size = cache_size.max(1);
        let mut groups = Vec::with_capacity(range.len() as usize);
        let mut heads = BTreeSet::new();
        let mut len = 0;
        for (i, kg) in range.iter().enumerate() {
            let p = prefix(kg, max_parallelism);
            let all = store.scan_prefix(host, &p, &p, usize::MAX)?;
            let count = all.len();
            let cached = decode_all(
                all.into_iter().take(cache_size).collect(),
                max_parallelism,
                store.name(),
            )?;
            if let Some(first) = cached.first() {
                heads.insert((first.timestamp, i));
            }
            len += count;
            groups.push(GroupCache {
                cache: cached.into_iter().collect(),
                complete: count <= cache_size,
                count,
            });
        }
        Ok(CachedTimerQueue {
            store,
            range,
            max_parallelism,
            groups,
            heads,
            len,
            cache_size,
        })
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Timers of key group index `i` held in memory.
    pub fn cached_in_key_group(&self, key_group: u32) -> usize {
        self.range.index_of(key_group).map_or(0, |i| self.groups[i].cache.len())
    }

    /// Loads key group `i`'s first timers after its cache ran dry by deleting the timer
    /// stored at `deleted`: every timer left in the store sorts after it.
    fn refill<H: ?Sized>(&mut self, host: &mut H, i: usize, key_group: u32, deleted: &[u8]) -> Result<()>
    where
        S: OrderedTimerStore<H>,
    {
        let entries = self.store.scan_prefix(
            host,
            &prefix(key_group, self.max_parallelism),
            deleted,
            self.cache_size + 1,
        )?;
        let g = &mut self.groups[i];
        g.complete = entries.len() <= self.cache_size;
        g.cache = decode_all(entries, self.max_parallelism, self.store.name())?
            .into_iter()
            .take(self.cache_size)
            .collect();
        Ok(())
    }

    /// Keeps `heads` in step after key group `i`'s first timer may have changed.
    /// `old` is the timestamp of its first timer before.
    fn update_head(&mut self, i: usize, old: Option<i64>) {
        let new = self.groups[i].cache.first().map(|t| t.timestamp);
        if old != new {
            if let Some(ts) = old {
                self.heads.remove(&(ts, i));
            }
            if let Some(ts) = new {
                self.heads.insert((ts, i));
            }
        }
    }
}

impl<S: Send> TimerQueueInfo for CachedTimerQueue<S> {
    fn peek(&self) -> Option<&TimerEntry> {
        self.heads.first().and_then(|&(_, i)| self.groups[i].cache.first())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }
}

impl<S> CachedTimerQueue<S> {
    /// Whether key group `i`'s cache knows if `timer` is stored: it holds every timer of
    /// the key group, or `timer` sorts within the cached ones (the cache holds the
    /// smallest timers).
    fn cache_decides(&self, i: usize, timer: &TimerEntry) -> bool {
        let g = &self.groups[i];
        g.complete || g.cache.last().is_some_and(|last| timer <= last)
    }

    /// Removes `timer` from the store and key group `i`'s cache; `cached`: the cache
    /// holds it, so the store does not need to be asked. `false` when it was not stored.
    fn remove_stored<H: ?Sized>(&mut self, host: &mut H, i: usize, timer: &TimerEntry, cached: bool) -> Result<bool>
    where
        S: OrderedTimerStore<H>,
    {
        let key = timer.encode_key(self.max_parallelism);
        if cached {
            self.store.remove_known(host, &key)?;
        } else if !self.store.remove(host, &key)? {
            return Ok(false);
        }
        let g = &mut self.groups[i];
        let old = g.cache.first().map(|t| t.timestamp);
        g.cache.remove(timer);
        g.count -= 1;
        if g.count == 0 {
            g.complete = true;
        } else if g.cache.is_empty() {
            self.refill(host, i, timer.key_group, &key)?;
        }
        self.len -= 1;
        self.update_head(i, old);
        Ok(true)
    }
}

impl<H: ?Sized, S: OrderedTimerStore<H>> TimerQueue<H> for CachedTimerQueue<S> {
    /// Reads the store only when the key group's cache cannot tell whether `timer` is
    /// already queued (it sorts after every cached timer of an incomplete cache).
    fn add(&mut self, host: &mut H, timer: &TimerEntry) -> Result<bool> {
        let i = self.range.owned_index(timer.key_group)?;
        let key = timer.encode_key(self.max_parallelism);
        // A new timer the cache decides on belongs in it: the cache is complete, or the
        // timer sorts below its last one.
        let in_cache = self.cache_decides(i, timer);
        if in_cache {
            if self.groups[i].cache.contains(timer) {
                return Ok(false);
            }
            self.store.insert_new(host, &key, &timer.encode_value())?;
        } else if !self.store.insert(host, &key, &timer.encode_value())? {
            return Ok(false);
        }
        let g = &mut self.groups[i];
        let old = g.cache.first().map(|t| t.timestamp);
        g.count += 1;
        if in_cache {
            g.cache.insert(timer.clone());
            if g.cache.len() > self.cache_size {
                g.cache.pop_last();
                g.complete = false;
            }
        }
        self.len += 1;
        self.update_head(i, old);
        Ok(true)
    }

    fn remove(&mut self, host: &mut H, timer: &TimerEntry) -> Result<bool> {
        let Some(i) = self.range.index_of(timer.key_group) else {
            return Ok(false);
        };
        if !self.cache_decides(i, timer) {
            return self.remove_stored(host, i, timer, false);
        }
        if !self.groups[i].cache.contains(timer) {
            return Ok(false);
        }
        self.remove_stored(host, i, timer, true)
    }

    /// Deletes the first head without reading it back from the store.
    fn poll(&mut self, host: &mut H) -> Result<Option<TimerEntry>> {
        let Some(&(_, i)) = self.heads.first() else {
            return Ok(None);
        };
        let Some(head) = self.groups[i].cache.first().cloned() else {
            return Ok(None);
        };
        self.remove_stored(host, i, &head, true)?;
        Ok(Some(head))
    }

    fn pin(&mut self, host: &mut H) -> Result<Box<dyn PinnedTimers>> {
        Ok(Box::new(PinnedCached {
            pinned: self.store.pin(host)?,
            max_parallelism: self.max_parallelism,
            name: self.store.name().to_string(),
        }))
    }
}

struct PinnedCached {
    pinned: Box<dyn PinnedStore>,
    max_parallelism: u32,
    name: String,
}

impl PinnedTimers for PinnedCached {
    fn key_group(&self, key_group: u32) -> Result<Vec<TimerEntry>> {
        let entries = self.pinned.scan_prefix(&prefix(key_group, self.max_parallelism))?;
        decode_all(entries, self.max_parallelism, &self.name)
    }
}
