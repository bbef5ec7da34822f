//! Estimates of the bytes heap state uses, for the managed-memory budget.
//!
//! A Rust value's heap footprint is not knowable in general; the estimate is its inline
//! size plus its compact serialized size (a proxy for what it owns on the heap: string
//! and vector contents), plus a fixed overhead per hash-table entry. It is computed only
//! when the backend has a budget.

use serde::Serialize;

/// Per (key, namespace) entry of a key group's hash table: control bytes, padding, the
/// bucket's share of the load factor.
pub(crate) const TABLE_ENTRY_OVERHEAD: u64 = 24;
/// Per entry of a map state's inner hash map.
pub(crate) const MAP_ENTRY_OVERHEAD: u64 = 16;
/// A TTL timestamp stored with every value, list element and map entry.
pub(crate) const TIMESTAMP: u64 = 8;

/// Estimated bytes of `value`: inline size plus serialized size.
pub(crate) fn estimate<T: Serialize + ?Sized>(value: &T) -> u64 {
    let inline = std::mem::size_of_val(value) as u64;
    let serialized = postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(
        value,
        postcard::ser_flavors::Size::default(),
    )
    .unwrap_or(0) as u64;
    inline + serialized
}
