//! The heap timer queue: timers in memory, partitioned by key group, copy-on-write so
//! that a snapshot pins them without copying.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;

use hashbrown::HashSet;
use state_api::{KeyGroupRange, PinnedTimers, Result, TimerEntry, TimerQueue, TimerQueueInfo};

/// Timers in memory (Flink's `HeapPriorityQueueSet`, partitioned by key group): per key
/// group a binary heap in firing order and a hash set of the queued timers, which
/// de-duplicates in O(1); and an ordered set of each key group's first (timestamp, key
/// group), so the next timer overall is found in O(log key groups). A removed timer
/// stays in its heap until it comes to the top (or the heap is rebuilt when such stale
/// entries outnumber the live ones), so removing is O(1) too.
///
/// Snapshots are asynchronous: [`TimerQueue::pin`] clones one `Arc` per key group; the
/// first change to a pinned key group afterwards copies that key group only.
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
    groups: Vec<Arc<Group>>,
    /// (timestamp, key group) of each non-empty key group's first timer.
    heads: BTreeSet<(i64, u32)>,
    len: usize,
}

/// One key group's timers.
#[derive(Debug, Clone, Default)]
struct Group {
    /// The queued timers, and removed ones not yet dropped (stale: not in `live`). The
    /// top is always live.
    heap: BinaryHeap<Reverse<TimerEntry>>,
    /// The queued timers.
    live: HashSet<TimerEntry>,
}

impl Group {
    fn head(&self) -> Option<&TimerEntry> {
        self.heap.peek().map(|Reverse(t)| t)
    }

    fn head_key(&self) -> Option<(i64, u32)> {
        self.head().map(|t| (t.timestamp, t.key_group))
    }

    /// Drops stale entries from the top, and rebuilds the heap when stale entries
    /// outnumber the live ones.
    fn drop_stale(&mut self) {
        if self.heap.len() == self.live.len() {
            return;
        }
        if self.heap.len() > 2 * self.live.len() + 32 {
            self.heap = self.live.iter().cloned().map(Reverse).collect();
            return;
        }
        while let Some(Reverse(top)) = self.heap.peek() {
            if self.live.contains(top) {
                break;
            }
            self.heap.pop();
        }
    }
}

impl HeapTimerQueue {
    /// An empty queue for the key groups of `range`.
    pub fn new(range: KeyGroupRange) -> Self {
        HeapTimerQueue {
            range,
            groups: (0..range.len()).map(|_| Arc::new(Group::default())).collect(),
            heads: BTreeSet::new(),
            len: 0,
        }
    }

    /// Keeps `heads` in step after key group `i`'s first timer may have changed from
    /// `old`.
    fn update_head(&mut self, i: usize, old: Option<(i64, u32)>) {
        let new = self.groups[i].head_key();
        if new != old {
            if let Some(o) = old {
                self.heads.remove(&o);
            }
            if let Some(n) = new {
                self.heads.insert(n);
            }
        }
    }
}

impl TimerQueueInfo for HeapTimerQueue {
    fn peek(&self) -> Option<&TimerEntry> {
        let &(_, key_group) = self.heads.first()?;
        self.groups[self.range.index_of(key_group)?].head()
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
        if self.groups[i].live.contains(timer) {
            return Ok(false);
        }
        TimerQueue::<H>::add_owned(self, host, timer.clone())
    }

    /// One hash-set insert and one heap push (O(1) on average); a pinned key group is
    /// copied only for a new timer.
    fn add_owned(&mut self, _host: &mut H, timer: TimerEntry) -> Result<bool> {
        let i = self.range.owned_index(timer.key_group)?;
        if Arc::strong_count(&self.groups[i]) > 1 && self.groups[i].live.contains(&timer) {
            return Ok(false);
        }
        let group = Arc::make_mut(&mut self.groups[i]);
        if !group.live.insert(timer.clone()) {
            return Ok(false);
        }
        let old = group.head_key();
        group.heap.push(Reverse(timer));
        self.len += 1;
        self.update_head(i, old);
        Ok(true)
    }

    fn remove(&mut self, _host: &mut H, timer: &TimerEntry) -> Result<bool> {
        let Some(i) = self.range.index_of(timer.key_group) else {
            return Ok(false);
        };
        if !self.groups[i].live.contains(timer) {
            return Ok(false);
        }
        let group = Arc::make_mut(&mut self.groups[i]);
        let old = group.head_key();
        group.live.remove(timer);
        group.drop_stale();
        self.len -= 1;
        self.update_head(i, old);
        Ok(true)
    }

    /// Pops the first key group's head; its next live timer becomes a head.
    fn poll(&mut self, _host: &mut H) -> Result<Option<TimerEntry>> {
        let Some(&(ts, key_group)) = self.heads.first() else {
            return Ok(None);
        };
        let i = self.range.owned_index(key_group)?;
        let group = Arc::make_mut(&mut self.groups[i]);
        let Some(Reverse(head)) = group.heap.pop() else {
            return Ok(None);
        };
        group.live.remove(&head);
        group.drop_stale();
        self.len -= 1;
        self.update_head(i, Some((ts, key_group)));
        Ok(Some(head))
    }

    fn pin(&mut self, _host: &mut H) -> Result<Box<dyn PinnedTimers>> {
        Ok(Box::new(PinnedHeap {
            range: self.range,
            groups: self.groups.clone(),
        }))
    }
}

struct PinnedHeap {
    range: KeyGroupRange,
    groups: Vec<Arc<Group>>,
}

impl PinnedTimers for PinnedHeap {
    /// The key group's timers in firing order (sorted here, on the snapshot's thread).
    fn key_group(&self, key_group: u32) -> Result<Vec<TimerEntry>> {
        let mut timers: Vec<TimerEntry> = self
            .range
            .index_of(key_group)
            .map(|i| self.groups[i].live.iter().cloned().collect())
            .unwrap_or_default();
        timers.sort_unstable();
        Ok(timers)
    }
}
