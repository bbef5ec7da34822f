//! Views of one operator state, as operator code uses them — the same shape as keyed
//! state's views: `ops.list(&h).add(x)`, `ops.broadcast(&h).put(k, v)`.

use crate::error::Result;
use crate::operator::{BroadcastStateHandle, OperatorListHandle, OperatorStateBackend};
use crate::state::{StateKey, StateValue};

/// An operator list state (even-split or union).
pub struct OperatorListView<'a, B: ?Sized, T> {
    backend: &'a mut B,
    handle: &'a OperatorListHandle<T>,
}

impl<'a, B: OperatorStateBackend + ?Sized, T: StateValue> OperatorListView<'a, B, T> {
    /// The view of `handle` (usually obtained from [`OperatorStateBackend::list`]).
    pub fn new(backend: &'a mut B, handle: &'a OperatorListHandle<T>) -> Self {
        OperatorListView { backend, handle }
    }

    /// The elements, in order.
    pub fn get(&mut self) -> Result<Vec<T>> {
        self.backend.list_get(self.handle)
    }

    /// Appends an element.
    pub fn add(&mut self, value: T) -> Result<()> {
        self.backend.list_add(self.handle, value)
    }

    /// Appends elements.
    pub fn add_all(&mut self, values: impl IntoIterator<Item = T>) -> Result<()> {
        for v in values {
            self.backend.list_add(self.handle, v)?;
        }
        Ok(())
    }

    /// Replaces the list.
    pub fn update(&mut self, values: Vec<T>) -> Result<()> {
        self.backend.list_update(self.handle, values)
    }

    /// Empties the list.
    pub fn clear(&mut self) -> Result<()> {
        self.backend.list_clear(self.handle)
    }
}

/// A broadcast map state.
pub struct BroadcastView<'a, B: ?Sized, K, V> {
    backend: &'a mut B,
    handle: &'a BroadcastStateHandle<K, V>,
}

impl<'a, B: OperatorStateBackend + ?Sized, K: StateKey, V: StateValue> BroadcastView<'a, B, K, V> {
    /// The view of `handle` (usually obtained from [`OperatorStateBackend::broadcast`]).
    pub fn new(backend: &'a mut B, handle: &'a BroadcastStateHandle<K, V>) -> Self {
        BroadcastView { backend, handle }
    }

    /// The value for `key`.
    pub fn get(&mut self, key: &K) -> Result<Option<V>> {
        self.backend.broadcast_get(self.handle, key)
    }

    /// Whether `key` has a value.
    pub fn contains(&mut self, key: &K) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Sets the value for `key`.
    pub fn put(&mut self, key: K, value: V) -> Result<()> {
        self.backend.broadcast_put(self.handle, key, value)
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &K) -> Result<()> {
        self.backend.broadcast_remove(self.handle, key)
    }

    /// Every entry.
    pub fn entries(&mut self) -> Result<Vec<(K, V)>> {
        self.backend.broadcast_entries(self.handle)
    }
}
