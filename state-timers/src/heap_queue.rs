//! The heap timer queue: timers in memory, partitioned by key group, copy-on-write so
//! that a snapshot pins them without copying.

use std::collections::BTreeSet;
use std::sync::Arc;

use state_api::raw::SnapshotCow;
use state_api::{KeyGroupRange, PinnedTimers, Result, TimerEntry, TimerQueue, TimerQueueInfo};

/// Timers in memory (Flink's `HeapPriorityQueueSet` partitioned by key group): one
/// ordered set per key group (so adding, removing and de-duplicating are O(log n)), and
/// an ordered set of each key group's first timer, as (timestamp, key group) — enough
/// to order the heads of distinct key groups, and no copy of the timer — so the next
/// timer overall is found in O(log key groups).
///
/// Snapshots are asynchronous: [`TimerQueue::pin`] shares each key group's set through an
/// `Arc` ([`SnapshotCow`]); the first change to a key group a snapshot still holds copies
/// that key group only.
///
/// ```
/// use state_api::{KeyGroupRange, TimerEntry, TimerQueue, TimerQueueInfo};
/// use state_timers::HeapTimerQueue;
///
/// let mut q = HeapTimerQueue::new(KeyGroupRange::all(128));
/// let t = |ts, kg| TimerEntry { timestamp: ts, key_group: kg, key: vec![kg as u8], namespace: vec![] };
/// assert!(q.add(&mut (), &t(20, 3))?);
/// assert!(q.add(&mut (), &t(10, 7))?);
/// assert!(!q.add(&mut (), &t(10, 7))?, "at most one timer per (key, namespace, timestamp)");
/// assert_eq!(q.poll(&mut ())?.map(|e| e.timestamp), Some(10));
/// assert_eq!(q.len(), 1);
/// # Ok::<(), state_api::StateError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HeapTimerQueue {
    range: KeyGroupRange,
    groups: Vec<SnapshotCow<BTreeSet<TimerEntry>>>,
    /// (timestamp, index in `range`) of each non-empty key group's first timer.
    heads: BTreeSet<(i64, usize)>,
    len: usize,
}

impl HeapTimerQueue {
    /// An empty queue for the key groups of `range`.
    pub fn new(range: KeyGroupRange) -> Self {
        HeapTimerQueue {
            range,
            groups: (0..range.len()).map(|_| SnapshotCow::default()).collect(),
            heads: BTreeSet::new(),
            len: 0,
        }
    }
}

impl TimerQueueInfo for HeapTimerQueue {
    fn peek(&self) -> Option<&TimerEntry> {
        self.heads.first().and_then(|&(_, i)| self.groups[i].get().first())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }
}

impl<H: ?Sized> TimerQueue<H> for HeapTimerQueue {
    fn add(&mut self, host: &mut H, timer: &TimerEntry) -> Result<bool> {
        let i = self.range.owned_index(timer.key_group)?;
        if self.groups[i].get().contains(timer) {
            return Ok(false);
        }
        TimerQueue::<H>::add_owned(self, host, timer.clone())
    }

    /// One ordered-set insert; the entry is copied only when it becomes its key group's
    /// head (and a pinned key group is copied only for a new timer).
    fn add_owned(&mut self, _host: &mut H, timer: TimerEntry) -> Result<bool> {
        let i = self.range.owned_index(timer.key_group)?;
        if matches!(self.groups[i], SnapshotCow::Shared(_)) && self.groups[i].get().contains(&timer) {
            return Ok(false);
        }
        let group = self.groups[i].get_mut();
        // An equal timer is never below the head, so a new head is never a duplicate.
        if group.first().is_none_or(|head| timer < *head) {
            if let Some(old) = group.first() {
                self.heads.remove(&(old.timestamp, i));
            }
            self.heads.insert((timer.timestamp, i));
        }
        if !group.insert(timer) {
            return Ok(false);
        }
        self.len += 1;
        Ok(true)
    }

    /// Inserts into each key group's set directly and fixes each touched group's head
    /// once, instead of per timer.
    fn add_all(&mut self, _host: &mut H, timers: &[TimerEntry]) -> Result<usize> {
        let mut old_heads: Vec<(usize, Option<i64>)> = Vec::new();
        let mut added = 0;
        for timer in timers {
            let i = self.range.owned_index(timer.key_group)?;
            if self.groups[i].get().contains(timer) {
                continue;
            }
            if !old_heads.iter().any(|(j, _)| *j == i) {
                old_heads.push((i, self.groups[i].get().first().map(|t| t.timestamp)));
            }
            self.groups[i].get_mut().insert(timer.clone());
            added += 1;
        }
        for (i, old) in old_heads {
            if let Some(ts) = old {
                self.heads.remove(&(ts, i));
            }
            if let Some(h) = self.groups[i].get().first() {
                self.heads.insert((h.timestamp, i));
            }
        }
        self.len += added;
        Ok(added)
    }

    fn remove(&mut self, _host: &mut H, timer: &TimerEntry) -> Result<bool> {
        let Some(i) = self.range.index_of(timer.key_group) else {
            return Ok(false);
        };
        if !self.groups[i].get().contains(timer) {
            return Ok(false);
        }
        let group = self.groups[i].get_mut();
        let was_head = group.first() == Some(timer);
        group.remove(timer);
        if was_head {
            self.heads.remove(&(timer.timestamp, i));
            if let Some(next) = group.first() {
                self.heads.insert((next.timestamp, i));
            }
        }
        self.len -= 1;
        Ok(true)
    }

    /// Takes the first head's key group's first timer without copying it; the key
    /// group's next timer becomes a head.
    fn poll(&mut self, _host: &mut H) -> Result<Option<TimerEntry>> {
        while let Some((_, i)) = self.heads.pop_first() {
            let group = self.groups[i].get_mut();
            if let Some(first) = group.pop_first() {
                if let Some(next) = group.first() {
                    self.heads.insert((next.timestamp, i));
                }
                self.len -= 1;
                return Ok(Some(first));
            }
        }
        Ok(None)
    }

    fn pin(&mut self, _host: &mut H) -> Result<Box<dyn PinnedTimers>> {
        Ok(Box::new(PinnedHeap {
            range: self.range,
            groups: self.groups.iter_mut().map(SnapshotCow::share).collect(),
        }))
    }
}

struct PinnedHeap {
    range: KeyGroupRange,
    groups: Vec<Arc<BTreeSet<TimerEntry>>>,
}

impl PinnedTimers for PinnedHeap {
    fn key_group(&self, key_group: u32) -> Result<Vec<TimerEntry>> {
        Ok(self
            .range
            .index_of(key_group)
            .map(|i| self.groups[i].iter().cloned().collect())
            .unwrap_or_default())
    }
}
