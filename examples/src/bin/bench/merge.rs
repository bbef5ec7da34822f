//! Merging namespaces (session windows): `merge_namespaces` of 10 namespaces × 10
//! list elements into one, per key, against the hand-written way (read each source
//! list through the view, add its elements to the target, clear the source), on the
//! same data, heap and RocksDB.

use state_api::{BackendContext, KeyedStateBackend, ListStateDescriptor, ListStateHandle, Result};
use state_heap::HeapKeyedStateBackend;

use super::{Row, ns_per_op};

const NAMESPACES: i64 = 10;
const ELEMENTS: u64 = 10;

fn fill<B: KeyedStateBackend<Key = u64>>(b: &mut B, h: &ListStateHandle<u64, i64>, keys: u64) -> Result<()> {
    for k in 0..keys {
        b.set_current_key(&k)?;
        for ns in 0..NAMESPACES {
            b.list_in(h, &ns).add_all((0..ELEMENTS).map(|e| k + e))?;
        }
    }
    Ok(())
}

/// ns per key: (merge_namespaces, hand-written), each on freshly filled state.
fn measure<B: KeyedStateBackend<Key = u64>>(mut make: impl FnMut() -> Result<B>, keys: u64) -> Result<(f64, f64)> {
    let sources: Vec<i64> = (1..NAMESPACES).collect();
    let mut b = make()?;
    let h = b.register(ListStateDescriptor::<u64>::new("l").in_namespace::<i64>())?;
    fill(&mut b, &h, keys)?;
    let ours = ns_per_op(keys, || {
        for k in 0..keys {
            b.set_current_key(&k).unwrap();
            b.list_in(&h, &0).merge_namespaces(&sources).unwrap();
        }
    });
    b.set_current_key(&0)?;
    assert_eq!(b.list_in(&h, &0).get()?.len() as u64, NAMESPACES as u64 * ELEMENTS);
    let mut c = make()?;
    let h = c.register(ListStateDescriptor::<u64>::new("l").in_namespace::<i64>())?;
    fill(&mut c, &h, keys)?;
    let base = ns_per_op(keys, || {
        for k in 0..keys {
            c.set_current_key(&k).unwrap();
            for ns in &sources {
                let items = c.list_in(&h, ns).get().unwrap();
                c.list_in(&h, &0).add_all(items).unwrap();
                c.list_in(&h, ns).clear().unwrap();
            }
        }
    });
    c.set_current_key(&0)?;
    assert_eq!(c.list_in(&h, &0).get()?.len() as u64, NAMESPACES as u64 * ELEMENTS);
    Ok((ours, base))
}

/// The merge rows for the heap and (with the feature) RocksDB.
pub fn merge_rows(keys: u64, rows: &mut Vec<Row>) -> Result<()> {
    let ctx = BackendContext::single(128);
    let (ours, base) = measure(|| HeapKeyedStateBackend::<u64>::new(&ctx), keys)?;
    rows.push(row("heap", keys, ours, base));
    #[cfg(feature = "rocksdb")]
    {
        use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
        let (ours, base) = measure(
            || RocksDbKeyedStateBackend::<u64>::new(&ctx, RocksDbConfig::default()),
            keys,
        )?;
        rows.push(row("RocksDB", keys, ours, base));
    }
    Ok(())
}

fn row(backend: &str, keys: u64, ours: f64, base: f64) -> Row {
    Row {
        name: format!(
            "merge_namespaces, {NAMESPACES} namespaces × {ELEMENTS} elements into one, {backend}, {keys} keys"
        ),
        ours,
        baseline: base,
        unit: "ns/key",
        baseline_name: "read, re-add and clear through the views",
        target: "≤ 1.0",
    }
}
