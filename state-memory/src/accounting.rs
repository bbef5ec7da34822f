//! Heap-state accounting: the bytes a heap backend's state uses, reserved from a slot's
//! budget ahead in chunks, so an update that does not fit fails with a typed error
//! instead of the process running out of memory.

use crate::error::Result;
use crate::manager::{MemoryReservation, SlotMemory};

/// Largest chunk reserved ahead of use.
const MAX_CHUNK: u64 = 1 << 20;

/// Tracks the estimated bytes of a heap backend's state against a slot's budget.
///
/// ```
/// use state_memory::{HeapAccounting, SlotMemory};
///
/// let slot = SlotMemory::standalone(10_000);
/// let mut acc = HeapAccounting::new(&slot, "heap backend");
/// acc.charge(6_000)?;
/// assert!(acc.charge(6_000).is_err()); // nothing charged: the update is refused
/// assert_eq!(acc.used(), 6_000);
/// acc.release(6_000);
/// assert_eq!(acc.used(), 0);
/// # Ok::<(), state_memory::MemoryError>(())
/// ```
#[derive(Debug)]
pub struct HeapAccounting {
    reservation: MemoryReservation,
    used: u64,
    chunk: u64,
}

impl HeapAccounting {
    /// Accounting against `slot`, reserving in chunks of up to 1 MiB (a 64th of the
    /// budget for small budgets) so most updates touch no shared counter.
    pub fn new(slot: &SlotMemory, owner: &str) -> Self {
        let reservation = slot
            .reserve(owner, 0)
            .unwrap_or_else(|_| unreachable!("a reservation of 0 bytes always fits"));
        HeapAccounting {
            reservation,
            used: 0,
            chunk: (slot.budget() / 64).clamp(1, MAX_CHUNK),
        }
    }

    /// Adds `bytes` to the state's use, reserving more of the budget when needed. When the
    /// budget cannot cover it, fails with [`crate::MemoryError::Exhausted`] and charges nothing.
    pub fn charge(&mut self, bytes: u64) -> Result<()> {
        let needed = self.used.saturating_add(bytes);
        let held = self.reservation.size();
        if needed > held {
            let ahead = needed.div_ceil(self.chunk).saturating_mul(self.chunk);
            if self.reservation.resize(ahead).is_err() {
                self.reservation.resize(needed)?;
            }
        }
        self.used = needed;
        self.reservation.set_used(self.used);
        Ok(())
    }

    /// Removes `bytes` from the state's use, giving back whole chunks that are no longer needed.
    pub fn release(&mut self, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
        let keep = self
            .used
            .div_ceil(self.chunk)
            .saturating_add(1)
            .saturating_mul(self.chunk);
        if self.reservation.size() > keep {
            self.reservation.shrink(self.reservation.size() - keep);
        }
        self.reservation.set_used(self.used);
    }

    /// Estimated bytes in use.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Bytes reserved from the slot (at least [`Self::used`]).
    pub fn reserved(&self) -> u64 {
        self.reservation.size()
    }

    /// The slot.
    pub fn slot(&self) -> &SlotMemory {
        self.reservation.slot()
    }
}
