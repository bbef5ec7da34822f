//! Choosing a timer storage by configuration: one queue type over two storages.

use state_api::{KeyGroupRange, PinnedTimers, Result, TimerEntry, TimerQueue, TimerQueueInfo};

use crate::heap_queue::HeapTimerQueue;
use crate::lmdb::{LmdbConfig, LmdbTimerQueue, LmdbTimerStore};

/// One of two timer storages, chosen at run time.
#[derive(Debug)]
pub enum EitherQueue<A, B> {
    /// The first storage.
    Left(A),
    /// The second storage.
    Right(B),
}

macro_rules! either {
    ($self:expr, $q:ident => $e:expr) => {
        match $self {
            EitherQueue::Left($q) => $e,
            EitherQueue::Right($q) => $e,
        }
    };
}

impl<A: TimerQueueInfo, B: TimerQueueInfo> TimerQueueInfo for EitherQueue<A, B> {
    fn peek(&self) -> Option<&TimerEntry> {
        either!(self, q => q.peek())
    }
    fn len(&self) -> usize {
        either!(self, q => q.len())
    }
    fn key_group_range(&self) -> KeyGroupRange {
        either!(self, q => q.key_group_range())
    }
}

impl<H: ?Sized, A: TimerQueue<H>, B: TimerQueue<H>> TimerQueue<H> for EitherQueue<A, B> {
    fn add(&mut self, host: &mut H, timer: &TimerEntry) -> Result<bool> {
        either!(self, q => q.add(host, timer))
    }
    fn add_owned(&mut self, host: &mut H, timer: TimerEntry) -> Result<bool> {
        either!(self, q => q.add_owned(host, timer))
    }
    fn add_all(&mut self, host: &mut H, timers: &[TimerEntry]) -> Result<usize> {
        either!(self, q => q.add_all(host, timers))
    }
    fn remove(&mut self, host: &mut H, timer: &TimerEntry) -> Result<bool> {
        either!(self, q => q.remove(host, timer))
    }
    fn poll(&mut self, host: &mut H) -> Result<Option<TimerEntry>> {
        either!(self, q => q.poll(host))
    }
    fn pin(&mut self, host: &mut H) -> Result<Box<dyn PinnedTimers>> {
        either!(self, q => q.pin(host))
    }
}

/// Where a stand-alone timer service keeps its timers.
#[derive(Debug, Clone, Default)]
pub enum TimerStorage {
    /// In memory (the default): fastest, bounded by memory.
    #[default]
    Heap,
    /// On local disk in LMDB: timer counts beyond memory.
    Lmdb(LmdbConfig),
}

/// A heap or LMDB timer queue, as [`TimerStorage`] chose.
pub type StandaloneTimerQueue = EitherQueue<HeapTimerQueue, LmdbTimerQueue>;

impl TimerStorage {
    /// An empty queue for the key groups of `range`.
    pub fn create_queue(&self, range: KeyGroupRange, max_parallelism: u32) -> Result<StandaloneTimerQueue> {
        Ok(match self {
            TimerStorage::Heap => EitherQueue::Left(HeapTimerQueue::new(range)),
            TimerStorage::Lmdb(config) => EitherQueue::Right(LmdbTimerStore::queue(config, range, max_parallelism)?),
        })
    }
}
