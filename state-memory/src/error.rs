//! Errors of the memory manager.

/// What went wrong with a budget, a reservation or a memory configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MemoryError {
    /// A reservation did not fit in what is left of the slot's budget.
    #[error("slot {slot}: {owner} needs {requested} more bytes, but only {available} of {budget} bytes are free")]
    Exhausted {
        /// The slot index.
        slot: usize,
        /// Who asked (a reservation's owner name).
        owner: String,
        /// Bytes the reservation needed.
        requested: u64,
        /// Bytes still free in the slot.
        available: u64,
        /// The slot's total budget.
        budget: u64,
    },
    /// A configuration value is out of range; the message says which and why.
    #[error("invalid memory configuration: {0}")]
    InvalidConfig(String),
    /// A slot index outside the manager's slots.
    #[error("no slot {index}: the memory manager has {slots} slots")]
    NoSuchSlot {
        /// The requested index.
        index: usize,
        /// Number of slots.
        slots: usize,
    },
    /// A shared resource was asked for with a type other than the one it was created with.
    #[error("shared resource `{name}` exists with another type")]
    SharedResourceType {
        /// The resource name.
        name: String,
    },
}

/// The memory manager's result type.
pub type Result<T> = std::result::Result<T, MemoryError>;
