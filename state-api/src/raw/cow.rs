//! Copy-on-write for state a snapshot pins: owned while no snapshot holds it, an `Arc`
//! once one does.
//!
//! Writing through `Arc::make_mut` costs an atomic compare-and-swap per write, and on
//! x86 that locked instruction also stops the processor from overlapping the write's
//! cache misses with the next record's. A value no snapshot has pinned since its last
//! write is owned here and written without atomics; [`SnapshotCow::share`] moves it into
//! an `Arc` (no copy) when a snapshot pins it, and the first write after that takes it
//! back, copying only if the snapshot still holds it.

use std::sync::Arc;

/// A value (a key group's map, say) owned, or shared with the snapshots that pinned it.
/// The heap state tables and the heap timer queue keep one per key group.
///
/// ```
/// use state_api::raw::SnapshotCow;
///
/// let mut timers: SnapshotCow<Vec<i64>> = SnapshotCow::default();
/// timers.get_mut().push(10);
/// let pinned = timers.share(); // the synchronous part of a snapshot
/// timers.get_mut().push(20); // copies: the snapshot still holds the value
/// assert_eq!(*pinned, [10]);
/// assert_eq!(timers.get(), &[10, 20]);
/// ```
#[derive(Debug, Clone)]
pub enum SnapshotCow<M> {
    /// No snapshot holds it.
    Owned(M),
    /// A snapshot pinned it (and may still hold it).
    Shared(Arc<M>),
}

impl<M: Clone + Default> SnapshotCow<M> {
    /// The value, to read.
    #[inline]
    pub fn get(&self) -> &M {
        match self {
            SnapshotCow::Owned(m) => m,
            SnapshotCow::Shared(m) => m,
        }
    }

    /// The value, to write: a shared value is taken back first, copied only if a
    /// snapshot still holds it.
    #[inline]
    pub fn get_mut(&mut self) -> &mut M {
        if matches!(self, SnapshotCow::Shared(_))
            && let SnapshotCow::Shared(shared) = std::mem::take(self)
        {
            *self = SnapshotCow::Owned(Arc::try_unwrap(shared).unwrap_or_else(|still_held| (*still_held).clone()));
        }
        match self {
            SnapshotCow::Owned(m) => m,
            SnapshotCow::Shared(_) => unreachable!("a shared value was just taken back"),
        }
    }

    /// The value as an `Arc` a snapshot can hold: an owned value moves into a new `Arc`.
    pub fn share(&mut self) -> Arc<M> {
        if let SnapshotCow::Owned(m) = self {
            let m = std::mem::take(m);
            *self = SnapshotCow::Shared(Arc::new(m));
        }
        match self {
            SnapshotCow::Shared(m) => Arc::clone(m),
            SnapshotCow::Owned(_) => unreachable!("an owned value was just shared"),
        }
    }
}

impl<M: Default> Default for SnapshotCow<M> {
    fn default() -> Self {
        SnapshotCow::Owned(M::default())
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotCow;

    #[test]
    fn a_shared_value_is_copied_only_while_a_snapshot_holds_it() {
        let mut cow: SnapshotCow<Vec<u32>> = SnapshotCow::default();
        cow.get_mut().push(1);
        let pinned = cow.share();
        cow.get_mut().push(2);
        assert_eq!(*pinned, vec![1], "the snapshot keeps what it pinned");
        assert_eq!(cow.get(), &vec![1, 2]);
        drop(cow.share());
        // Nobody holds it any more: taken back without a copy (the same allocation's data).
        let data = cow.get().as_ptr() as usize;
        cow.get_mut();
        assert!(matches!(cow, SnapshotCow::Owned(_)));
        assert_eq!(cow.get().as_ptr() as usize, data, "no copy once the snapshot is gone");
    }
}
