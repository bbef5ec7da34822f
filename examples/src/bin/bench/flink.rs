//! The side-by-side workloads of the Flink comparison (flink-benchmarks style, one
//! thread, `i64` keys and values, max parallelism 128), each against a raw baseline doing
//! the same operations in the same order in the same run: `hashbrown` (the heap tables'
//! own map and hash) for the heap backend, raw rust-rocksdb with the backend's options
//! for RocksDB, `std::collections::BinaryHeap` for timers.
//!
//! - value: 1,000,000 distinct keys, updated in a shuffled order into an empty state,
//!   then read in another shuffled order;
//! - list: 100,000 keys × 10 single-element adds, shuffled over all (key, add) pairs;
//!   get = the whole list of each key;
//! - map: 100,000 keys × 10 user keys the same way; get of every pair, shuffled;
//!   contains on 200,000 random existing pairs; iterate = every entry of each key;
//! - timers: 100,000 keys × 10 distinct random timestamps added in a shuffled order,
//!   then all polled in order.
//!
//! Reads repeat until at least 0.5 s was measured. RocksDB runs in a 512 MiB managed
//! memory slot with the default option profile.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::{HashMap, HashSet};
use state_api::testkit::SplitMix64;
use state_api::{
    BackendContext, KeyedStateBackend, ListStateDescriptor, MapStateDescriptor, Result, SystemClock, TimerQueue,
    TimerService, ValueStateDescriptor,
};
use state_heap::HeapKeyedStateBackend;
use state_timers::{HeapTimerQueue, InternalTimerService};

use super::Row;

/// The workload sizes (smaller with `--quick`).
#[derive(Clone, Copy)]
pub struct Sizes {
    value_keys: u64,
    keys: u64,
    per_key: u64,
    contains: u64,
    min_read: Duration,
}

impl Sizes {
    pub fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                value_keys: 20_000,
                keys: 2_000,
                per_key: 10,
                contains: 4_000,
                min_read: Duration::from_millis(20),
            }
        } else {
            Sizes {
                value_keys: 1_000_000,
                keys: 100_000,
                per_key: 10,
                contains: 200_000,
                min_read: Duration::from_millis(500),
            }
        }
    }
}

/// The inputs, shuffled with fixed seeds (the same for every backend and baseline).
struct Inputs {
    /// Value keys in update order, and in read order.
    value_writes: Vec<i64>,
    value_reads: Vec<i64>,
    /// (key, element or user key) pairs in add order, and in read order.
    pairs: Vec<(i64, i64)>,
    pair_reads: Vec<(i64, i64)>,
    /// Keys in list-get / map-iterate order.
    key_reads: Vec<i64>,
    /// Random existing (key, user key) pairs for `contains`.
    contains: Vec<(i64, i64)>,
    /// (key, timestamp): `per_key` distinct timestamps per key, shuffled.
    timers: Vec<(i64, i64)>,
}

/// `v` in a fixed pseudo-random order given by `seed`.
pub(crate) fn shuffle<T>(mut v: Vec<T>, seed: u64) -> Vec<T> {
    let mut rng = SplitMix64(seed);
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
    v
}

impl Inputs {
    fn new(s: Sizes) -> Self {
        let values: Vec<i64> = (0..s.value_keys as i64).collect();
        let pairs: Vec<(i64, i64)> = (0..s.keys as i64)
            .flat_map(|k| (0..s.per_key as i64).map(move |j| (k, j)))
            .collect();
        let mut rng = SplitMix64(7);
        let contains = (0..s.contains)
            .map(|_| (rng.below(s.keys) as i64, rng.below(s.per_key) as i64))
            .collect();
        let mut timers = Vec::with_capacity((s.keys * s.per_key) as usize);
        for k in 0..s.keys as i64 {
            let mut seen = HashSet::new();
            while seen.len() < s.per_key as usize {
                let ts = rng.below(10_000_000) as i64;
                if seen.insert(ts) {
                    timers.push((k, ts));
                }
            }
        }
        Inputs {
            value_writes: shuffle(values.clone(), 1),
            value_reads: shuffle(values, 2),
            pairs: shuffle(pairs.clone(), 3),
            pair_reads: shuffle(pairs, 4),
            key_reads: shuffle((0..s.keys as i64).collect(), 5),
            contains,
            timers: shuffle(timers, 6),
        }
    }
}

/// ns per op of `f` over `ops` operations, once.
fn once(ops: usize, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as f64 / ops.max(1) as f64
}

/// ns per op of `f` (one round of `ops` operations) repeated until `min` has passed.
fn repeated(min: Duration, ops: usize, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    let mut rounds = 0u64;
    while rounds == 0 || t.elapsed() < min {
        f();
        rounds += 1;
    }
    t.elapsed().as_nanos() as f64 / (ops.max(1) as u64 * rounds) as f64
}

/// Figures of one backend (or baseline) over the state workloads, ns per op.
#[derive(Default, Clone, Copy)]
struct StateFigures {
    value_update: f64,
    value_get: f64,
    list_add: f64,
    list_get: f64,
    map_put: f64,
    map_get: f64,
    map_contains: f64,
    map_iterate: f64,
}

/// The workloads through our typed API on any keyed backend.
fn ours<B: KeyedStateBackend<Key = i64>>(b: &mut B, input: &Inputs, s: Sizes) -> Result<StateFigures> {
    let v = b.register(ValueStateDescriptor::<i64>::new("value"))?;
    let l = b.register(ListStateDescriptor::<i64>::new("list"))?;
    let m = b.register(MapStateDescriptor::<i64, i64>::new("map"))?;
    let mut f = StateFigures {
        value_update: once(input.value_writes.len(), || {
            for k in &input.value_writes {
                b.set_current_key(k).unwrap();
                b.value(&v).update(*k).unwrap();
            }
        }),
        ..StateFigures::default()
    };
    f.value_get = repeated(s.min_read, input.value_reads.len(), || {
        for k in &input.value_reads {
            b.set_current_key(k).unwrap();
            black_box(b.value(&v).get().unwrap());
        }
    });
    f.list_add = once(input.pairs.len(), || {
        for (k, e) in &input.pairs {
            b.set_current_key(k).unwrap();
            b.list(&l).add(*e).unwrap();
        }
    });
    f.list_get = repeated(s.min_read, input.key_reads.len(), || {
        for k in &input.key_reads {
            b.set_current_key(k).unwrap();
            black_box(b.list(&l).get().unwrap());
        }
    });
    f.map_put = once(input.pairs.len(), || {
        for (k, uk) in &input.pairs {
            b.set_current_key(k).unwrap();
            b.map(&m).put(*uk, *k).unwrap();
        }
    });
    f.map_get = repeated(s.min_read, input.pair_reads.len(), || {
        for (k, uk) in &input.pair_reads {
            b.set_current_key(k).unwrap();
            black_box(b.map(&m).get(uk).unwrap());
        }
    });
    f.map_contains = repeated(s.min_read, input.contains.len(), || {
        for (k, uk) in &input.contains {
            b.set_current_key(k).unwrap();
            black_box(b.map(&m).contains(uk).unwrap());
        }
    });
    f.map_iterate = repeated(s.min_read, input.key_reads.len(), || {
        for k in &input.key_reads {
            b.set_current_key(k).unwrap();
            let sum: i64 = b.map(&m).iter().unwrap().map(|e| e.map(|(a, b)| a ^ b).unwrap()).sum();
            black_box(sum);
        }
    });
    Ok(f)
}

/// The same workloads on `hashbrown` maps (the heap tables' map and hash).
fn hashbrown_baseline(input: &Inputs, s: Sizes) -> StateFigures {
    let mut values: HashMap<i64, i64> = HashMap::new();
    let mut lists: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut maps: HashMap<i64, HashMap<i64, i64>> = HashMap::new();
    let mut f = StateFigures {
        value_update: once(input.value_writes.len(), || {
            for k in &input.value_writes {
                values.insert(*k, *k);
            }
        }),
        ..StateFigures::default()
    };
    f.value_get = repeated(s.min_read, input.value_reads.len(), || {
        for k in &input.value_reads {
            black_box(values.get(k));
        }
    });
    f.list_add = once(input.pairs.len(), || {
        for (k, e) in &input.pairs {
            lists.entry(*k).or_default().push(*e);
        }
    });
    f.list_get = repeated(s.min_read, input.key_reads.len(), || {
        for k in &input.key_reads {
            // A copy, as a state read returns an owned list.
            black_box(lists.get(k).cloned());
        }
    });
    f.map_put = once(input.pairs.len(), || {
        for (k, uk) in &input.pairs {
            maps.entry(*k).or_default().insert(*uk, *k);
        }
    });
    f.map_get = repeated(s.min_read, input.pair_reads.len(), || {
        for (k, uk) in &input.pair_reads {
            black_box(maps.get(k).and_then(|m| m.get(uk)));
        }
    });
    f.map_contains = repeated(s.min_read, input.contains.len(), || {
        for (k, uk) in &input.contains {
            black_box(maps.get(k).is_some_and(|m| m.contains_key(uk)));
        }
    });
    f.map_iterate = repeated(s.min_read, input.key_reads.len(), || {
        for k in &input.key_reads {
            let sum: i64 = maps.get(k).map_or(0, |m| m.iter().map(|(a, b)| a ^ b).sum());
            black_box(sum);
        }
    });
    f
}

/// Timer figures, ns per timer.
#[derive(Default, Clone, Copy)]
struct TimerFigures {
    add: f64,
    poll: f64,
}

fn timers_ours<B, Q>(b: &mut B, service: &mut InternalTimerService<i64, (), Q>, input: &Inputs) -> TimerFigures
where
    B: KeyedStateBackend<Key = i64>,
    Q: TimerQueue<B>,
{
    let add = once(input.timers.len(), || {
        for (k, ts) in &input.timers {
            b.set_current_key(k).unwrap();
            service.register_event_time_timer(b, &(), *ts).unwrap();
        }
    });
    let mut fired = 0usize;
    let poll = once(input.timers.len(), || {
        service
            .advance_watermark(b, i64::MAX, |_, _, t| {
                fired += 1;
                black_box(t.timestamp);
                Ok(())
            })
            .unwrap();
    });
    assert_eq!(fired, input.timers.len(), "every timer fires once");
    TimerFigures { add, poll }
}

fn timers_binary_heap(input: &Inputs) -> TimerFigures {
    let mut heap = BinaryHeap::with_capacity(input.timers.len());
    let add = once(input.timers.len(), || {
        for (k, ts) in &input.timers {
            heap.push(Reverse((*ts, *k)));
        }
    });
    let poll = once(input.timers.len(), || {
        while let Some(Reverse(t)) = heap.pop() {
            black_box(t);
        }
    });
    TimerFigures { add, poll }
}

/// Flink 2.3.0's figures from the side-by-side run (ops/s, release, this
/// machine kind): (name, heap, RocksDB); `None` where Flink has no such row.
pub const FLINK: &[(&str, Option<f64>, Option<f64>)] = &[
    ("value.update", Some(4.29e6), Some(320e3)),
    ("value.get", Some(3.53e6), Some(309e3)),
    ("list.add", Some(5.08e6), Some(326e3)),
    ("list.get", Some(2.56e6), Some(164e3)),
    ("map.put", Some(4.53e6), Some(348e3)),
    ("map.get", Some(2.95e6), Some(313e3)),
    ("map.contains", Some(4.04e6), Some(334e3)),
    ("map.iterate (per key)", Some(1.09e6), Some(99e3)),
    ("timers.add", Some(3.24e6), Some(342e3)),
    ("timers.poll", Some(675e3), Some(419e3)),
];

/// Prints our rate beside Flink's from the issue (not a same-run baseline: Flink does
/// not run here, so this is a line on stdout, not a report row).
fn print_against_flink(backend: &str, name: &str, ns_per_op: f64) {
    let ours = 1e9 / ns_per_op.max(f64::MIN_POSITIVE);
    let flink = FLINK
        .iter()
        .find(|(n, _, _)| *n == name)
        .and_then(|(_, heap, rocks)| if backend == "heap" { *heap } else { *rocks });
    if let Some(flink) = flink {
        println!(
            "flink comparison: {backend} {name}: ours {:.0} ops/s, Flink (issue 14's run) {flink:.0} ops/s, ours/Flink {:.2}×",
            ours,
            ours / flink
        );
    }
}

fn state_rows(
    backend: &str,
    ours: StateFigures,
    base: StateFigures,
    baseline_name: &'static str,
    target: &'static str,
    rows: &mut Vec<Row>,
) {
    let pairs = [
        ("value.update", ours.value_update, base.value_update),
        ("value.get", ours.value_get, base.value_get),
        ("list.add", ours.list_add, base.list_add),
        ("list.get", ours.list_get, base.list_get),
        ("map.put", ours.map_put, base.map_put),
        ("map.get", ours.map_get, base.map_get),
        ("map.contains", ours.map_contains, base.map_contains),
        ("map.iterate (per key)", ours.map_iterate, base.map_iterate),
    ];
    for (name, o, b) in pairs {
        print_against_flink(backend, name, o);
        rows.push(Row {
            name: format!("flink workload {backend} {name}"),
            ours: o,
            baseline: b,
            unit: "ns/op",
            baseline_name,
            target,
        });
    }
}

fn timer_rows(label: &str, ours: TimerFigures, base: TimerFigures, target: &'static str, rows: &mut Vec<Row>) {
    for (name, o, b) in [
        ("timers.add", ours.add, base.add),
        ("timers.poll", ours.poll, base.poll),
    ] {
        print_against_flink(label, name, o);
        rows.push(Row {
            name: format!("flink workload {label} {name}"),
            ours: o,
            baseline: b,
            unit: "ns/timer",
            baseline_name: "std BinaryHeap",
            target,
        });
    }
}

fn heap_service(ctx: &BackendContext) -> Result<InternalTimerService<i64, (), HeapTimerQueue>> {
    InternalTimerService::new(
        HeapTimerQueue::new(ctx.key_group_range),
        HeapTimerQueue::new(ctx.key_group_range),
        Arc::new(SystemClock),
        128,
    )
}

/// Every row of the comparison.
pub fn flink_rows(quick: bool, rows: &mut Vec<Row>) -> Result<()> {
    let s = Sizes::new(quick);
    let input = Inputs::new(s);
    let ctx = BackendContext::single(128);

    let base = hashbrown_baseline(&input, s);
    let mut heap = HeapKeyedStateBackend::<i64>::new(&ctx)?;
    let figures = ours(&mut heap, &input, s)?;
    drop(heap);
    state_rows("heap", figures, base, "hashbrown, same hash", "≤ 1.5×", rows);

    let timer_base = timers_binary_heap(&input);
    let mut b = HeapKeyedStateBackend::<i64>::new(&ctx)?;
    let mut service = heap_service(&ctx)?;
    let heap_timers = timers_ours(&mut b, &mut service, &input);
    drop((b, service));
    timer_rows("heap", heap_timers, timer_base, "≤ 2×", rows);

    #[cfg(feature = "rocksdb")]
    rocksdb::rows(&input, s, heap_timers, rows)?;
    Ok(())
}

#[cfg(feature = "rocksdb")]
pub(crate) mod rocksdb {
    //! The RocksDB side: the backend in a 512 MiB managed-memory slot, against raw
    //! rust-rocksdb with the same options doing the same reads and writes.

    use super::*;
    use ::rocksdb::{DB, MergeOperands, WriteOptions};
    use state_memory::SlotMemory;
    use state_memory::rocksdb::RocksDbMemory;
    use state_memory::sizing::RocksDbMemoryConfig;
    use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};

    /// The default configuration in a 512 MiB managed-memory slot of its own.
    pub(crate) fn config() -> Result<RocksDbConfig> {
        let slot = SlotMemory::standalone(512 << 20);
        let memory = RocksDbMemory::for_slot(&slot, &RocksDbMemoryConfig::default())
            .map_err(|e| state_api::StateError::Memory { source: Box::new(e) })?;
        Ok(RocksDbConfig::default().with_memory(memory))
    }

    fn storage_err(e: ::rocksdb::Error) -> state_api::StateError {
        state_api::StateError::storage("raw rocksdb", e, false)
    }

    /// Raw rust-rocksdb doing the same work: one column family per state, keys of
    /// `[key group][key][user key]` bytes as the backend writes them, postcard values,
    /// the list merge operator, WAL off.
    fn raw_baseline(input: &Inputs, s: Sizes, config: &RocksDbConfig) -> Result<StateFigures> {
        let dir = tempfile_dir("raw");
        let mut opts = config.options();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let mut list_opts = config.options();
        list_opts.set_merge_operator_associative(
            "concat",
            |_k: &[u8], existing: Option<&[u8]>, ops: &MergeOperands| {
                let mut out = existing.map(<[u8]>::to_vec).unwrap_or_default();
                for op in ops.iter() {
                    out.extend_from_slice(op);
                }
                Some(out)
            },
        );
        let cfs = vec![
            ::rocksdb::ColumnFamilyDescriptor::new("value", config.options()),
            ::rocksdb::ColumnFamilyDescriptor::new("list", list_opts),
            ::rocksdb::ColumnFamilyDescriptor::new("map", config.options()),
        ];
        let db = DB::open_cf_descriptors(&opts, &dir, cfs).map_err(storage_err)?;
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        let (vcf, lcf, mcf) = (
            db.cf_handle("value").expect("created"),
            db.cf_handle("list").expect("created"),
            db.cf_handle("map").expect("created"),
        );
        let key = |k: i64| {
            let mut out = vec![(k as u64 % 128) as u8];
            out.extend(postcard::to_stdvec(&k).unwrap_or_default());
            out
        };
        let pair_key = |k: i64, uk: i64| {
            let mut out = key(k);
            out.extend(postcard::to_stdvec(&uk).unwrap_or_default());
            out
        };
        let val = |v: i64| postcard::to_stdvec(&v).unwrap_or_default();
        let mut f = StateFigures {
            value_update: once(input.value_writes.len(), || {
                for k in &input.value_writes {
                    db.put_cf_opt(vcf, key(*k), val(*k), &wo).unwrap();
                }
            }),
            ..StateFigures::default()
        };
        f.value_get = repeated(s.min_read, input.value_reads.len(), || {
            for k in &input.value_reads {
                let got = db.get_pinned_cf(vcf, key(*k)).unwrap();
                black_box(got.and_then(|g| postcard::from_bytes::<i64>(&g).ok()));
            }
        });
        f.list_add = once(input.pairs.len(), || {
            for (k, e) in &input.pairs {
                let e = val(*e);
                let mut op = vec![e.len() as u8];
                op.extend(e);
                db.merge_cf_opt(lcf, key(*k), op, &wo).unwrap();
            }
        });
        f.list_get = repeated(s.min_read, input.key_reads.len(), || {
            for k in &input.key_reads {
                let got = db.get_pinned_cf(lcf, key(*k)).unwrap();
                let mut out = Vec::new();
                let mut rest: &[u8] = got.as_deref().unwrap_or_default();
                while let Some((&len, tail)) = rest.split_first() {
                    let (e, tail) = tail.split_at(usize::from(len).min(tail.len()));
                    out.push(postcard::from_bytes::<i64>(e).unwrap_or_default());
                    rest = tail;
                }
                black_box(out);
            }
        });
        f.map_put = once(input.pairs.len(), || {
            for (k, uk) in &input.pairs {
                db.put_cf_opt(mcf, pair_key(*k, *uk), val(*k), &wo).unwrap();
            }
        });
        f.map_get = repeated(s.min_read, input.pair_reads.len(), || {
            for (k, uk) in &input.pair_reads {
                let got = db.get_pinned_cf(mcf, pair_key(*k, *uk)).unwrap();
                black_box(got.and_then(|g| postcard::from_bytes::<i64>(&g).ok()));
            }
        });
        f.map_contains = repeated(s.min_read, input.contains.len(), || {
            for (k, uk) in &input.contains {
                black_box(db.get_pinned_cf(mcf, pair_key(*k, *uk)).unwrap().is_some());
            }
        });
        f.map_iterate = repeated(s.min_read, input.key_reads.len(), || {
            for k in &input.key_reads {
                let prefix = key(*k);
                let mut sum = 0i64;
                for item in db.prefix_iterator_cf(mcf, &prefix) {
                    let (kb, vb) = item.unwrap();
                    if !kb.starts_with(&prefix) {
                        break;
                    }
                    let uk: i64 = postcard::from_bytes(&kb[prefix.len()..]).unwrap_or_default();
                    let v: i64 = postcard::from_bytes(&vb).unwrap_or_default();
                    sum += uk ^ v;
                }
                black_box(sum);
            }
        });
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(f)
    }

    fn tempfile_dir(label: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("state-bench-flink-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    pub(super) fn rows(input: &Inputs, s: Sizes, heap_timers: TimerFigures, rows: &mut Vec<Row>) -> Result<()> {
        let config = config()?;
        let base = raw_baseline(input, s, &config)?;
        let ctx = BackendContext::single(128);
        let mut b = RocksDbKeyedStateBackend::<i64>::new(&ctx, config.clone())?;
        let figures = ours(&mut b, input, s)?;
        drop(b);
        state_rows(
            "rocksdb",
            figures,
            base,
            "raw rust-rocksdb, same options",
            "≤ 1.1×",
            rows,
        );

        // RocksDB timers against the heap timers of this run (the target).
        let mut b = RocksDbKeyedStateBackend::<i64>::new(&ctx, config.clone())?;
        let (e, p) = (b.create_timer_queue("e")?, b.create_timer_queue("p")?);
        let mut service = InternalTimerService::<i64, (), _>::new(e, p, Arc::new(SystemClock), 128)?;
        let rocks_timers = timers_ours(&mut b, &mut service, input);
        drop((service, b));
        for (name, o, h) in [
            ("timers.add", rocks_timers.add, heap_timers.add),
            ("timers.poll", rocks_timers.poll, heap_timers.poll),
        ] {
            print_against_flink("rocksdb", name, o);
            rows.push(Row {
                name: format!("flink workload rocksdb {name}"),
                ours: o,
                baseline: h,
                unit: "ns/timer",
                baseline_name: "heap timers, same run",
                target: "≤ 3×",
            });
        }
        // Heap timers beside a RocksDB backend (Flink's RocksDB backend with heap timers).
        let mut b = RocksDbKeyedStateBackend::<i64>::new(&ctx, config)?;
        let mut service = heap_service(&ctx)?;
        let mixed = timers_ours(&mut b, &mut service, input);
        rows.push(Row {
            name: "flink workload rocksdb backend + heap timers timers.add".into(),
            ours: mixed.add,
            baseline: heap_timers.add,
            unit: "ns/timer",
            baseline_name: "heap timers, heap backend, same run",
            target: "reported",
        });
        Ok(())
    }
}
