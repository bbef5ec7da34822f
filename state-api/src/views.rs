//! Typed views of one state for the current key and a namespace, as operator code uses
//! them: `backend.value(&h).get()`, `backend.map_in(&h, &window).put(k, v)`.
//!
//! The views implement defaults, reduce and aggregate functions and TTL (expiry,
//! visibility, timestamp refresh, cleanup on access) once, on top of the backends' raw
//! operations, so that every backend behaves the same.
//!
//! Over 500 lines: the five views and the map cursor share the TTL helpers at the top;
//! each view is short, and splitting them would scatter one set of TTL rules.

use crate::backend::{KeyedStateBackend, raw};
use crate::descriptor::{
    AggregatingStateHandle, ListStateHandle, MapStateHandle, ReducingStateHandle, RegisteredState, ValueStateHandle,
};
use crate::error::Result;
use crate::raw::RawKeyedBackend;
use crate::state::{Namespace, StateId, StateKey, StateValue, TtlValue};
use crate::ttl::{TtlConfig, TtlUpdateType, TtlVisibility};

/// TTL context of one access: the config (if the state has TTL) and the time.
struct Ttl<'c> {
    cfg: Option<&'c TtlConfig>,
    now: i64,
}

impl<'c> Ttl<'c> {
    fn of<B: RawKeyedBackend>(backend: &B, cfg: Option<&'c TtlConfig>) -> Self {
        let now = if cfg.is_some() { backend.clock().now_millis() } else { 0 };
        Ttl { cfg, now }
    }

    /// The timestamp a write stores.
    fn stamp<T>(&self, value: T) -> TtlValue<T> {
        TtlValue::new(value, self.now)
    }

    fn expired(&self, timestamp: i64) -> bool {
        self.cfg.is_some_and(|c| c.is_expired(timestamp, self.now))
    }

    fn refresh_on_read(&self) -> bool {
        self.cfg
            .is_some_and(|c| c.get_update_type() == TtlUpdateType::OnReadAndWrite)
    }

    fn return_expired(&self) -> bool {
        self.cfg
            .is_some_and(|c| c.get_visibility() == TtlVisibility::ReturnExpiredIfNotCleanedUp)
    }

    /// Incremental cleanup after an access.
    fn after_access<B: RawKeyedBackend>(&self, backend: &mut B, id: StateId) -> Result<()> {
        match self.cfg {
            Some(c) if c.incremental_cleanup_size() > 0 => backend.ttl_cleanup_step(id, c.incremental_cleanup_size()),
            _ => Ok(()),
        }
    }
}

/// Reads a value-shaped state with TTL semantics: expired values are removed (and
/// returned only under `ReturnExpiredIfNotCleanedUp`), live ones refreshed on read if so
/// configured.
fn read_value<B: RawKeyedBackend, V: StateValue, N: Namespace>(
    backend: &mut B,
    id: StateId,
    ns: &N,
    ttl: &Ttl<'_>,
) -> Result<Option<V>> {
    if ttl.cfg.is_none() {
        return backend.raw_value_read::<V, N, _>(id, ns, |tv| tv.value.clone());
    }
    let got = backend.raw_value_read::<V, N, _>(id, ns, |tv| (tv.value.clone(), tv.timestamp))?;
    let result = match got {
        None => None,
        Some((v, ts)) if ttl.expired(ts) => {
            backend.raw_clear(id, ns)?;
            ttl.return_expired().then_some(v)
        }
        Some((v, _)) => {
            if ttl.refresh_on_read() {
                backend.raw_value_write(id, ns, ttl.stamp(v.clone()))?;
            }
            Some(v)
        }
    };
    ttl.after_access(backend, id)?;
    Ok(result)
}

/// Takes the value of a value-shaped state in `ns` out (clears it); `None` when there
/// is none or it expired (an expired value counts as absent when merging, as in
/// Flink's TTL merge).
fn take_live_value<B: RawKeyedBackend, V: StateValue, N: Namespace>(
    backend: &mut B,
    id: StateId,
    ns: &N,
    ttl: &Ttl<'_>,
) -> Result<Option<V>> {
    let got = backend.raw_value_read::<V, N, _>(id, ns, |tv| (tv.value.clone(), tv.timestamp))?;
    match got {
        None => Ok(None),
        Some((v, ts)) => {
            backend.raw_clear(id, ns)?;
            Ok((!ttl.expired(ts)).then_some(v))
        }
    }
}

/// Merges the values of `sources` into `target` with `combine` (reducing and
/// aggregating state): sources are removed; the target is written only when a source
/// had a live value, stamped now.
fn merge_values<B: RawKeyedBackend, V: StateValue, N: Namespace>(
    backend: &mut B,
    id: StateId,
    target: &N,
    sources: &[N],
    ttl: &Ttl<'_>,
    combine: impl Fn(V, V) -> V,
) -> Result<()> {
    let mut merged: Option<V> = None;
    for source in sources.iter().filter(|s| *s != target) {
        if let Some(v) = take_live_value::<B, V, N>(backend, id, source, ttl)? {
            merged = Some(match merged {
                Some(m) => combine(m, v),
                None => v,
            });
        }
    }
    let Some(merged) = merged else {
        return Ok(());
    };
    let current = backend.raw_value_read::<V, N, _>(id, target, |tv| (tv.value.clone(), tv.timestamp))?;
    let next = match current {
        Some((c, ts)) if !ttl.expired(ts) => combine(c, merged),
        _ => merged,
    };
    backend.raw_value_write(id, target, ttl.stamp(next))
}

// ---------------------------------------------------------------- value

/// A value state for the current key and a namespace.
pub struct ValueView<'a, B, T, N> {
    backend: &'a mut B,
    handle: &'a ValueStateHandle<T, N>,
    ns: &'a N,
}

impl<'a, B: KeyedStateBackend, T: StateValue, N: Namespace> ValueView<'a, B, T, N> {
    /// The view of `handle` in `ns` (usually obtained from the backend's accessors).
    pub fn new(backend: &'a mut B, handle: &'a ValueStateHandle<T, N>, ns: &'a N) -> Self {
        ValueView { backend, handle, ns }
    }

    /// The value, or the descriptor's default, or `None`.
    pub fn get(&mut self) -> Result<Option<T>> {
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        let v = read_value::<B::Raw, T, N>(raw(self.backend), self.handle.id(), self.ns, &ttl)?;
        Ok(v.or_else(|| self.handle.descriptor().default_value().cloned()))
    }

    /// Sets the value.
    pub fn update(&mut self, value: T) -> Result<()> {
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        raw(self.backend).raw_value_write(self.handle.id(), self.ns, ttl.stamp(value))?;
        ttl.after_access(raw(self.backend), self.handle.id())
    }

    /// Removes the value.
    pub fn clear(&mut self) -> Result<()> {
        raw(self.backend).raw_clear(self.handle.id(), self.ns)
    }
}

// ---------------------------------------------------------------- reducing

/// A reducing state for the current key and a namespace.
pub struct ReducingView<'a, B, T, N> {
    backend: &'a mut B,
    handle: &'a ReducingStateHandle<T, N>,
    ns: &'a N,
}

impl<'a, B: KeyedStateBackend, T: StateValue, N: Namespace> ReducingView<'a, B, T, N> {
    /// The view of `handle` in `ns`.
    pub fn new(backend: &'a mut B, handle: &'a ReducingStateHandle<T, N>, ns: &'a N) -> Self {
        ReducingView { backend, handle, ns }
    }

    /// The reduced value, if anything was added.
    pub fn get(&mut self) -> Result<Option<T>> {
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        read_value::<B::Raw, T, N>(raw(self.backend), self.handle.id(), self.ns, &ttl)
    }

    /// Reduces `value` into the state.
    pub fn add(&mut self, value: T) -> Result<()> {
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        let id = self.handle.id();
        let next = match read_value::<B::Raw, T, N>(raw(self.backend), id, self.ns, &ttl)? {
            Some(current) => (self.handle.descriptor().reduce_fn())(&current, &value),
            None => value,
        };
        raw(self.backend).raw_value_write(id, self.ns, ttl.stamp(next))
    }

    /// Removes the value.
    pub fn clear(&mut self) -> Result<()> {
        raw(self.backend).raw_clear(self.handle.id(), self.ns)
    }

    /// Merges the values of the `sources` namespaces into this one with the reduce
    /// function and removes them (Flink's `mergeNamespaces`, as session windows merge).
    /// Merging only empty sources creates nothing; expired values count as absent.
    pub fn merge_namespaces(&mut self, sources: &[N]) -> Result<()> {
        let backend = raw(self.backend);
        let ttl = Ttl::of(backend, self.handle.ttl());
        let reduce = self.handle.descriptor().reduce_fn();
        merge_values::<_, T, N>(backend, self.handle.id(), self.ns, sources, &ttl, |a, b| reduce(&a, &b))
    }
}

// ---------------------------------------------------------------- aggregating

/// An aggregating state for the current key and a namespace.
pub struct AggregatingView<'a, B, IN, ACC, OUT, N> {
    backend: &'a mut B,
    handle: &'a AggregatingStateHandle<IN, ACC, OUT, N>,
    ns: &'a N,
}

impl<'a, B: KeyedStateBackend, IN: 'static, ACC: StateValue, OUT: 'static, N: Namespace>
    AggregatingView<'a, B, IN, ACC, OUT, N>
{
    /// The view of `handle` in `ns`.
    pub fn new(backend: &'a mut B, handle: &'a AggregatingStateHandle<IN, ACC, OUT, N>, ns: &'a N) -> Self {
        AggregatingView { backend, handle, ns }
    }

    /// The aggregate's result, if anything was added.
    pub fn get(&mut self) -> Result<Option<OUT>> {
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        let acc = read_value::<B::Raw, ACC, N>(raw(self.backend), self.handle.id(), self.ns, &ttl)?;
        Ok(acc.map(|a| self.handle.descriptor().function().get_result(&a)))
    }

    /// Adds `value` to the accumulator.
    pub fn add(&mut self, value: IN) -> Result<()> {
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        let id = self.handle.id();
        let function = self.handle.descriptor().function();
        let mut acc = read_value::<B::Raw, ACC, N>(raw(self.backend), id, self.ns, &ttl)?
            .unwrap_or_else(|| function.create_accumulator());
        function.add(value, &mut acc);
        raw(self.backend).raw_value_write(id, self.ns, ttl.stamp(acc))
    }

    /// Removes the accumulator.
    pub fn clear(&mut self) -> Result<()> {
        raw(self.backend).raw_clear(self.handle.id(), self.ns)
    }

    /// Merges the accumulators of the `sources` namespaces into this one with
    /// [`AggregateFunction::merge`](crate::AggregateFunction::merge) and removes them
    /// (Flink's `mergeNamespaces`). Merging only empty sources creates nothing; expired
    /// accumulators count as absent.
    pub fn merge_namespaces(&mut self, sources: &[N]) -> Result<()> {
        let backend = raw(self.backend);
        let ttl = Ttl::of(backend, self.handle.ttl());
        let function = self.handle.descriptor().function();
        merge_values::<_, ACC, N>(backend, self.handle.id(), self.ns, sources, &ttl, |a, b| {
            function.merge(a, b)
        })
    }
}

// ---------------------------------------------------------------- list

/// A list state for the current key and a namespace.
pub struct ListView<'a, B, T, N> {
    backend: &'a mut B,
    handle: &'a ListStateHandle<T, N>,
    ns: &'a N,
}

impl<'a, B: KeyedStateBackend, T: StateValue, N: Namespace> ListView<'a, B, T, N> {
    /// The view of `handle` in `ns`.
    pub fn new(backend: &'a mut B, handle: &'a ListStateHandle<T, N>, ns: &'a N) -> Self {
        ListView { backend, handle, ns }
    }

    /// The elements, in insertion order (empty when there are none).
    pub fn get(&mut self) -> Result<Vec<T>> {
        let id = self.handle.id();
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        if ttl.cfg.is_none() {
            let got = raw(self.backend)
                .raw_list_read::<T, N, _>(id, self.ns, |items| items.iter().map(|tv| tv.value.clone()).collect())?;
            return Ok(got.unwrap_or_default());
        }
        let items = raw(self.backend)
            .raw_list_read::<T, N, _>(id, self.ns, |items| items.to_vec())?
            .unwrap_or_default();
        let total = items.len();
        let mut result = Vec::with_capacity(total);
        let mut keep = Vec::with_capacity(total);
        for tv in items {
            if ttl.expired(tv.timestamp) {
                if ttl.return_expired() {
                    result.push(tv.value);
                }
            } else {
                result.push(tv.value.clone());
                keep.push(if ttl.refresh_on_read() { ttl.stamp(tv.value) } else { tv });
            }
        }
        if keep.len() != total || (ttl.refresh_on_read() && !keep.is_empty()) {
            raw(self.backend).raw_list_write(id, self.ns, keep)?;
        }
        ttl.after_access(raw(self.backend), id)?;
        Ok(result)
    }

    /// Appends one element.
    pub fn add(&mut self, value: T) -> Result<()> {
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        raw(self.backend).raw_list_push(self.handle.id(), self.ns, ttl.stamp(value))?;
        ttl.after_access(raw(self.backend), self.handle.id())
    }

    /// Appends elements.
    pub fn add_all(&mut self, values: impl IntoIterator<Item = T>) -> Result<()> {
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        let values: Vec<_> = values.into_iter().map(|v| ttl.stamp(v)).collect();
        if values.is_empty() {
            return Ok(());
        }
        raw(self.backend).raw_list_append(self.handle.id(), self.ns, values)?;
        ttl.after_access(raw(self.backend), self.handle.id())
    }

    /// Replaces the list; an empty list clears it.
    pub fn update(&mut self, values: impl IntoIterator<Item = T>) -> Result<()> {
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        let values: Vec<_> = values.into_iter().map(|v| ttl.stamp(v)).collect();
        raw(self.backend).raw_list_write(self.handle.id(), self.ns, values)?;
        ttl.after_access(raw(self.backend), self.handle.id())
    }

    /// Removes the list.
    pub fn clear(&mut self) -> Result<()> {
        raw(self.backend).raw_clear(self.handle.id(), self.ns)
    }

    /// Appends the elements of the `sources` namespaces to this one, in order, and
    /// removes them (Flink's `mergeNamespaces`, as session windows merge). Elements keep
    /// their TTL timestamps; merging only empty sources creates nothing. The target list
    /// is not read: on RocksDB the elements are appended by the merge operator.
    pub fn merge_namespaces(&mut self, sources: &[N]) -> Result<()> {
        let sources: Vec<N> = sources.iter().filter(|s| *s != self.ns).cloned().collect();
        raw(self.backend).raw_list_merge::<T, N>(self.handle.id(), self.ns, &sources)
    }
}

// ---------------------------------------------------------------- map

/// An iterator over map entries (or keys, or values). Each item is a `Result` because a
/// backend that reads from disk can fail midway.
pub struct MapIter<'a, T>(Box<dyn Iterator<Item = Result<T>> + 'a>);

impl<T> Iterator for MapIter<'_, T> {
    type Item = Result<T>;
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

/// A map state for the current key and a namespace.
pub struct MapView<'a, B, UK, UV, N> {
    backend: &'a mut B,
    handle: &'a MapStateHandle<UK, UV, N>,
    ns: &'a N,
}

impl<'a, B: KeyedStateBackend, UK: StateKey, UV: StateValue, N: Namespace> MapView<'a, B, UK, UV, N> {
    /// The view of `handle` in `ns`.
    pub fn new(backend: &'a mut B, handle: &'a MapStateHandle<UK, UV, N>, ns: &'a N) -> Self {
        MapView { backend, handle, ns }
    }

    /// The value for `user_key`.
    pub fn get(&mut self, user_key: &UK) -> Result<Option<UV>> {
        let id = self.handle.id();
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        if ttl.cfg.is_none() {
            return raw(self.backend).raw_map_read::<UK, UV, N, _>(id, self.ns, user_key, |tv| tv.value.clone());
        }
        let got = raw(self.backend)
            .raw_map_read::<UK, UV, N, _>(id, self.ns, user_key, |tv| (tv.value.clone(), tv.timestamp))?;
        let result = match got {
            None => None,
            Some((v, ts)) if ttl.expired(ts) => {
                raw(self.backend).raw_map_remove::<UK, UV, N>(id, self.ns, user_key)?;
                ttl.return_expired().then_some(v)
            }
            Some((v, _)) => {
                if ttl.refresh_on_read() {
                    raw(self.backend).raw_map_write(id, self.ns, user_key.clone(), ttl.stamp(v.clone()))?;
                }
                Some(v)
            }
        };
        ttl.after_access(raw(self.backend), id)?;
        Ok(result)
    }

    /// Whether `user_key` has a (live) value.
    pub fn contains(&mut self, user_key: &UK) -> Result<bool> {
        if self.handle.ttl().is_none() {
            let id = self.handle.id();
            return Ok(raw(self.backend)
                .raw_map_read::<UK, UV, N, _>(id, self.ns, user_key, |_| ())?
                .is_some());
        }
        Ok(self.get(user_key)?.is_some())
    }

    /// Sets the value for `user_key`.
    pub fn put(&mut self, user_key: UK, value: UV) -> Result<()> {
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        raw(self.backend).raw_map_write(self.handle.id(), self.ns, user_key, ttl.stamp(value))?;
        ttl.after_access(raw(self.backend), self.handle.id())
    }

    /// Sets several entries.
    pub fn put_all(&mut self, entries: impl IntoIterator<Item = (UK, UV)>) -> Result<()> {
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        for (k, v) in entries {
            raw(self.backend).raw_map_write(self.handle.id(), self.ns, k, ttl.stamp(v))?;
        }
        ttl.after_access(raw(self.backend), self.handle.id())
    }

    /// Removes `user_key`.
    pub fn remove(&mut self, user_key: &UK) -> Result<()> {
        raw(self.backend).raw_map_remove::<UK, UV, N>(self.handle.id(), self.ns, user_key)
    }

    /// Whether the map has no (live) entry.
    pub fn is_empty(&mut self) -> Result<bool> {
        match self.iter()?.next() {
            None => Ok(true),
            Some(Ok(_)) => Ok(false),
            Some(Err(e)) => Err(e),
        }
    }

    /// Removes the whole map.
    pub fn clear(&mut self) -> Result<()> {
        raw(self.backend).raw_clear(self.handle.id(), self.ns)
    }

    /// Iterates over the entries, in no particular order (backend-specific).
    pub fn iter(&mut self) -> Result<MapIter<'_, (UK, UV)>> {
        let id = self.handle.id();
        let ttl = Ttl::of(raw(self.backend), self.handle.ttl());
        if ttl.cfg.is_none() {
            let raw = raw(self.backend).raw_map_iter::<UK, UV, N>(id, self.ns)?;
            return Ok(MapIter(Box::new(raw.map(|r| r.map(|(k, tv)| (k, tv.value))))));
        }
        let entries = raw(self.backend)
            .raw_map_iter::<UK, UV, N>(id, self.ns)?
            .collect::<Result<Vec<_>>>()?;
        let mut live = Vec::with_capacity(entries.len());
        for (k, tv) in entries {
            if ttl.expired(tv.timestamp) {
                raw(self.backend).raw_map_remove::<UK, UV, N>(id, self.ns, &k)?;
                if ttl.return_expired() {
                    live.push((k, tv.value));
                }
            } else {
                if ttl.refresh_on_read() {
                    raw(self.backend).raw_map_write(id, self.ns, k.clone(), ttl.stamp(tv.value.clone()))?;
                }
                live.push((k, tv.value));
            }
        }
        ttl.after_access(raw(self.backend), id)?;
        Ok(MapIter(Box::new(live.into_iter().map(Ok))))
    }

    /// Iterates over the keys.
    pub fn keys(&mut self) -> Result<MapIter<'_, UK>> {
        let it = self.iter()?;
        Ok(MapIter(Box::new(it.map(|r| r.map(|(k, _)| k)))))
    }

    /// Iterates over the values.
    pub fn values(&mut self) -> Result<MapIter<'_, UV>> {
        let it = self.iter()?;
        Ok(MapIter(Box::new(it.map(|r| r.map(|(_, v)| v)))))
    }

    /// All entries, collected.
    pub fn entries(&mut self) -> Result<Vec<(UK, UV)>> {
        self.iter()?.collect()
    }

    /// A cursor over the entries whose current entry can be removed or given a new
    /// value (Flink's map iterator with `remove` and `Entry.setValue`). It walks the
    /// entries as they were when it was made, so changing them on the way is safe.
    pub fn cursor(&mut self) -> Result<MapCursor<'_, B, UK, UV, N>> {
        let entries = self.entries()?;
        Ok(MapCursor {
            backend: &mut *self.backend,
            handle: self.handle,
            ns: self.ns,
            entries: entries.into_iter(),
            current: None,
            removed: false,
        })
    }
}

/// A cursor over a map state's entries (see [`MapView::cursor`]):
///
/// ```
/// # use state_api::{BackendContext, KeyedStateBackend, MapStateDescriptor};
/// # fn demo<B: KeyedStateBackend<Key = u64>>(b: &mut B) -> state_api::Result<()> {
/// let prices = b.register(MapStateDescriptor::<String, u64>::new("prices"))?;
/// b.set_current_key(&1)?;
/// b.map(&prices).put_all([("a".into(), 5), ("b".into(), 0)])?;
/// let mut map = b.map(&prices);
/// let mut cursor = map.cursor()?;
/// while let Some((_, price)) = cursor.next() {
///     if *price == 0 {
///         cursor.remove()?;
///     } else {
///         let doubled = price * 2;
///         cursor.set_value(doubled)?;
///     }
/// }
/// assert_eq!(b.map(&prices).entries()?, vec![("a".to_string(), 10)]);
/// # Ok(())
/// # }
/// ```
pub struct MapCursor<'v, B, UK, UV, N> {
    backend: &'v mut B,
    handle: &'v MapStateHandle<UK, UV, N>,
    ns: &'v N,
    entries: std::vec::IntoIter<(UK, UV)>,
    current: Option<(UK, UV)>,
    removed: bool,
}

impl<B: KeyedStateBackend, UK: StateKey, UV: StateValue, N: Namespace> MapCursor<'_, B, UK, UV, N> {
    /// Moves to the next entry and returns it; `None` after the last.
    #[allow(clippy::should_implement_trait)] // a lending cursor: the entry borrows it
    pub fn next(&mut self) -> Option<(&UK, &UV)> {
        self.current = self.entries.next();
        self.removed = false;
        self.current.as_ref().map(|(k, v)| (k, v))
    }

    fn current_key(&self, action: &str) -> Result<UK> {
        match (&self.current, self.removed) {
            (None, _) => Err(crate::StateError::InvalidArgument(format!(
                "map cursor of `{}`: no current entry to {action} (call next first)",
                self.handle.descriptor().name()
            ))),
            (Some(_), true) => Err(crate::StateError::InvalidArgument(format!(
                "map cursor of `{}`: the current entry was already removed; cannot {action} it",
                self.handle.descriptor().name()
            ))),
            (Some((k, _)), false) => Ok(k.clone()),
        }
    }

    /// Removes the current entry. Removing it twice, or before the first `next`, is an
    /// error.
    pub fn remove(&mut self) -> Result<()> {
        let key = self.current_key("remove")?;
        MapView::new(&mut *self.backend, self.handle, self.ns).remove(&key)?;
        self.removed = true;
        Ok(())
    }

    /// Gives the current entry a new value (with a fresh TTL timestamp). An error after
    /// the entry was removed.
    pub fn set_value(&mut self, value: UV) -> Result<()> {
        let key = self.current_key("update")?;
        MapView::new(&mut *self.backend, self.handle, self.ns).put(key, value.clone())?;
        if let Some((_, v)) = &mut self.current {
            *v = value;
        }
        Ok(())
    }
}
