//! The memory manager: a total budget split into slots, RAII reservations, and shared
//! resources (one per slot and name, created on first use, released with the last user).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::error::{MemoryError, Result};

/// A total budget split evenly into slots (Flink's per-slot managed memory).
///
/// ```
/// use state_memory::MemoryManager;
///
/// let manager = MemoryManager::new(64 << 20, 2)?; // 64 MiB, two slots of 32 MiB
/// let slot = manager.slot(0)?;
/// let mut reservation = slot.reserve("my-operator", 1 << 20)?;
/// reservation.grow(1 << 20)?;
/// assert_eq!(slot.stats().reserved, 2 << 20);
/// drop(reservation); // released
/// assert_eq!(slot.stats().reserved, 0);
/// assert!(slot.reserve("too-big", 33 << 20).is_err());
/// # Ok::<(), state_memory::MemoryError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MemoryManager {
    slots: Arc<[SlotMemory]>,
    total: u64,
}

impl MemoryManager {
    /// A manager of `total` bytes split evenly into `slots` slots.
    pub fn new(total: u64, slots: usize) -> Result<Self> {
        if slots == 0 {
            return Err(MemoryError::InvalidConfig(
                "a memory manager needs at least one slot".into(),
            ));
        }
        let per_slot = total / slots as u64;
        Ok(MemoryManager {
            slots: (0..slots).map(|i| SlotMemory::new(i, per_slot)).collect(),
            total,
        })
    }

    /// The total budget.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Slot `index`: a cheap handle, cloned freely.
    pub fn slot(&self, index: usize) -> Result<SlotMemory> {
        self.slots.get(index).cloned().ok_or(MemoryError::NoSuchSlot {
            index,
            slots: self.slots.len(),
        })
    }

    /// Figures of every slot, for metrics.
    pub fn stats(&self) -> Vec<SlotStats> {
        self.slots.iter().map(SlotMemory::stats).collect()
    }
}

/// Figures of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotStats {
    /// The slot index.
    pub slot: usize,
    /// The slot's budget in bytes.
    pub budget: u64,
    /// Bytes held by reservations.
    pub reserved: u64,
    /// Bytes the holders report actually using (at most what they reserved, for holders
    /// that reserve ahead in chunks).
    pub used: u64,
    /// Bytes not reserved.
    pub free: u64,
}

#[derive(Debug)]
struct SlotInner {
    index: usize,
    budget: u64,
    reserved: AtomicU64,
    used: AtomicU64,
    shared: Mutex<HashMap<String, Weak<dyn Any + Send + Sync>>>,
}

/// One slot's budget. Reservations take from it and give back when dropped.
#[derive(Debug, Clone)]
pub struct SlotMemory {
    inner: Arc<SlotInner>,
}

impl SlotMemory {
    fn new(index: usize, budget: u64) -> Self {
        SlotMemory {
            inner: Arc::new(SlotInner {
                index,
                budget,
                reserved: AtomicU64::new(0),
                used: AtomicU64::new(0),
                shared: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A stand-alone slot of `budget` bytes (a manager with one slot).
    pub fn standalone(budget: u64) -> Self {
        SlotMemory::new(0, budget)
    }

    /// The slot index.
    pub fn index(&self) -> usize {
        self.inner.index
    }

    /// The slot's budget.
    pub fn budget(&self) -> u64 {
        self.inner.budget
    }

    /// Current figures.
    pub fn stats(&self) -> SlotStats {
        let reserved = self.inner.reserved.load(Ordering::Acquire);
        SlotStats {
            slot: self.inner.index,
            budget: self.inner.budget,
            reserved,
            used: self.inner.used.load(Ordering::Acquire),
            free: self.inner.budget.saturating_sub(reserved),
        }
    }

    /// Whether two handles are the same slot.
    pub fn same_slot(&self, other: &SlotMemory) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Takes `bytes` from the budget, or fails with [`MemoryError::Exhausted`] and takes
    /// nothing.
    fn take(&self, owner: &str, bytes: u64) -> Result<()> {
        let inner = &self.inner;
        let mut current = inner.reserved.load(Ordering::Acquire);
        loop {
            let next = current.checked_add(bytes).filter(|n| *n <= inner.budget);
            let Some(next) = next else {
                return Err(MemoryError::Exhausted {
                    slot: inner.index,
                    owner: owner.to_string(),
                    requested: bytes,
                    available: inner.budget.saturating_sub(current),
                    budget: inner.budget,
                });
            };
            match inner
                .reserved
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    fn give_back(&self, bytes: u64) {
        self.inner.reserved.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Reserves `bytes` for `owner` (a name for errors and metrics). The memory returns
    /// to the slot when the reservation is dropped.
    pub fn reserve(&self, owner: &str, bytes: u64) -> Result<MemoryReservation> {
        self.take(owner, bytes)?;
        Ok(MemoryReservation {
            slot: self.clone(),
            owner: owner.to_string(),
            size: bytes,
            used: 0,
        })
    }

    /// The shared resource `name` of this slot: created by `init` on first use (after
    /// reserving `bytes` from the budget for it), handed out again while any lease is
    /// alive, and released, memory included, when the last lease drops (Flink's
    /// `getSharedMemoryResourceForManagedMemory`). `bytes` only matters on creation.
    ///
    /// ```
    /// use state_memory::SlotMemory;
    ///
    /// let slot = SlotMemory::standalone(100);
    /// let a = slot.shared_resource("cache", 60, |bytes| Ok::<_, state_memory::MemoryError>(vec![0u8; bytes as usize]))?;
    /// let b = slot.shared_resource("cache", 60, |_| unreachable!("created once"))?;
    /// assert!(std::ptr::eq(a.get(), b.get()));
    /// assert_eq!(slot.stats().reserved, 60);
    /// drop((a, b));
    /// assert_eq!(slot.stats().reserved, 0);
    /// # Ok::<(), state_memory::MemoryError>(())
    /// ```
    pub fn shared_resource<T, E>(
        &self,
        name: &str,
        bytes: u64,
        init: impl FnOnce(u64) -> std::result::Result<T, E>,
    ) -> std::result::Result<SharedLease<T>, E>
    where
        T: Send + Sync + 'static,
        E: From<MemoryError>,
    {
        let mut shared = self.inner.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = shared.get(name).and_then(Weak::upgrade) {
            return match existing.downcast::<SharedInner<T>>() {
                Ok(inner) => Ok(SharedLease { inner }),
                Err(_) => Err(MemoryError::SharedResourceType { name: name.to_string() }.into()),
            };
        }
        let reservation = self.reserve(&format!("shared resource `{name}`"), bytes)?;
        let value = init(bytes)?;
        let inner = Arc::new(SharedInner {
            value,
            _reservation: reservation,
        });
        let erased: Arc<dyn Any + Send + Sync> = inner.clone();
        shared.insert(name.to_string(), Arc::downgrade(&erased));
        Ok(SharedLease { inner })
    }

    /// Number of live shared resources in this slot.
    pub fn shared_resource_count(&self) -> usize {
        let shared = self.inner.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.values().filter(|w| w.strong_count() > 0).count()
    }
}

struct SharedInner<T> {
    value: T,
    _reservation: MemoryReservation,
}

/// A lease on a slot's shared resource; the resource lives while any lease does.
pub struct SharedLease<T> {
    inner: Arc<SharedInner<T>>,
}

impl<T> Clone for SharedLease<T> {
    fn clone(&self) -> Self {
        SharedLease {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> SharedLease<T> {
    /// The resource.
    pub fn get(&self) -> &T {
        &self.inner.value
    }

    /// Bytes reserved for the resource.
    pub fn reserved_bytes(&self) -> u64 {
        self.inner._reservation.size()
    }

    /// Number of leases alive (this one included).
    pub fn lease_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for SharedLease<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLease").field("value", &self.inner.value).finish()
    }
}

/// Memory held from a slot's budget; given back when dropped.
#[derive(Debug)]
pub struct MemoryReservation {
    slot: SlotMemory,
    owner: String,
    size: u64,
    used: u64,
}

impl MemoryReservation {
    /// Bytes held.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The slot it was taken from.
    pub fn slot(&self) -> &SlotMemory {
        &self.slot
    }

    /// The owner's name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Takes `bytes` more; on failure the reservation is unchanged.
    pub fn grow(&mut self, bytes: u64) -> Result<()> {
        self.slot.take(&self.owner, bytes)?;
        self.size += bytes;
        Ok(())
    }

    /// Gives back up to `bytes` (never more than held).
    pub fn shrink(&mut self, bytes: u64) {
        let bytes = bytes.min(self.size);
        self.slot.give_back(bytes);
        self.size -= bytes;
        if self.used > self.size {
            self.set_used(self.size);
        }
    }

    /// Grows or shrinks to exactly `bytes`; on failure the reservation is unchanged.
    pub fn resize(&mut self, bytes: u64) -> Result<()> {
        if bytes > self.size {
            self.grow(bytes - self.size)
        } else {
            self.shrink(self.size - bytes);
            Ok(())
        }
    }

    /// Reports how much of the reservation is actually in use (for [`SlotStats::used`]).
    pub fn set_used(&mut self, bytes: u64) {
        let used = &self.slot.inner.used;
        if bytes >= self.used {
            used.fetch_add(bytes - self.used, Ordering::AcqRel);
        } else {
            used.fetch_sub(self.used - bytes, Ordering::AcqRel);
        }
        self.used = bytes;
    }

    /// What was reported by [`Self::set_used`].
    pub fn used(&self) -> u64 {
        self.used
    }
}

impl Drop for MemoryReservation {
    fn drop(&mut self) {
        self.set_used(0);
        self.slot.give_back(self.size);
    }
}
