//! Managed memory under load: four RocksDB backend instances in one slot with a 64 MiB
//! budget, a write-heavy then a read-heavy phase, RocksDB's own usage figures sampled
//! throughout; the same load without managed memory for comparison.

use state_api::testkit::SplitMix64;
use state_api::{BackendContext, KeyedStateBackend, Result, ValueStateDescriptor};
use state_memory::SlotMemory;
use state_memory::rocksdb::RocksDbMemory;
use state_memory::sizing::RocksDbMemoryConfig;
use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};

use super::Row;

const BUDGET: u64 = 64 << 20;
const INSTANCES: usize = 4;

#[derive(Debug, Default, Clone, Copy)]
struct Peak {
    total: u64,
    memtables: u64,
    pinned: u64,
}

fn prop(b: &RocksDbKeyedStateBackend<u64>, name: &str) -> u64 {
    ["s/v", "default"]
        .iter()
        .filter_map(|cf| b.db().cf_handle(cf))
        .map(|cf| b.db().property_int_value_cf(cf, name).ok().flatten().unwrap_or(0))
        .sum()
}

/// RocksDB's figures now: (total, memtables, pinned).
fn sample(backends: &[RocksDbKeyedStateBackend<u64>], memory: &RocksDbMemory) -> Peak {
    let readers: u64 = backends
        .iter()
        .map(|b| prop(b, "rocksdb.estimate-table-readers-mem"))
        .sum();
    match memory.shared() {
        Some(shared) => {
            // Memtables are charged to the shared cache: its usage covers them.
            let u = shared.usage();
            Peak {
                total: u.cache_usage + readers,
                memtables: u.memtable_usage,
                pinned: u.cache_pinned_usage,
            }
        }
        None => {
            let cache: u64 = backends.iter().map(|b| prop(b, "rocksdb.block-cache-usage")).sum();
            let mem: u64 = backends
                .iter()
                .map(|b| prop(b, "rocksdb.cur-size-all-mem-tables"))
                .sum();
            let pinned: u64 = backends
                .iter()
                .map(|b| prop(b, "rocksdb.block-cache-pinned-usage"))
                .sum();
            Peak {
                total: cache + mem + readers,
                memtables: mem,
                pinned,
            }
        }
    }
}

fn load(memory: RocksDbMemory, per_instance: u64) -> Result<Peak> {
    let ctx = BackendContext::single(128);
    let config = RocksDbConfig::default().with_memory(memory.clone());
    let mut backends = (0..INSTANCES)
        .map(|_| RocksDbKeyedStateBackend::<u64>::new(&ctx, config.clone()))
        .collect::<Result<Vec<_>>>()?;
    let handles = backends
        .iter_mut()
        .map(|b| b.register(ValueStateDescriptor::<Vec<u8>>::new("v")))
        .collect::<Result<Vec<_>>>()?;
    let mut peak = Peak::default();
    let mut observe = |backends: &[RocksDbKeyedStateBackend<u64>]| {
        let s = sample(backends, &memory);
        peak.total = peak.total.max(s.total);
        peak.memtables = peak.memtables.max(s.memtables);
        peak.pinned = peak.pinned.max(s.pinned);
    };
    let value = vec![0xabu8; 1024];
    // Write-heavy: 1 KiB values, round-robin over the instances.
    for i in 0..per_instance {
        for (b, h) in backends.iter_mut().zip(&handles) {
            b.set_current_key(&i)?;
            b.value(h).update(value.clone())?;
        }
        if i % 2000 == 0 {
            observe(&backends);
        }
    }
    // Read-heavy: random point reads.
    let mut r = SplitMix64(5);
    for i in 0..per_instance {
        for (b, h) in backends.iter_mut().zip(&handles) {
            b.set_current_key(&r.below(per_instance))?;
            std::hint::black_box(b.value(h).get()?);
        }
        if i % 2000 == 0 {
            observe(&backends);
        }
    }
    observe(&backends);
    Ok(peak)
}

pub fn rocksdb_memory_rows(quick: bool, rows: &mut Vec<Row>) -> Result<()> {
    let per_instance = if quick { 4_000 } else { 150_000 };
    let slot = SlotMemory::standalone(BUDGET);
    let managed = RocksDbMemory::for_slot(&slot, &RocksDbMemoryConfig::default())
        .map_err(|e| state_api::StateError::Memory { source: Box::new(e) })?;
    let m = load(managed, per_instance)?;
    let u = load(RocksDbMemory::unmanaged(), per_instance)?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let load_name = format!("{INSTANCES} RocksDB instances, {per_instance} × 1 KiB writes then reads each");
    let mut row = |name: String, ours: u64, target: &'static str| {
        rows.push(Row {
            name,
            ours: mib(ours),
            baseline: mib(BUDGET),
            unit: "MiB",
            baseline_name: "64 MiB slot budget",
            target,
        });
    };
    row(
        format!("managed memory: peak RocksDB usage (cache incl. charged memtables + table readers), {load_name}"),
        m.total,
        "≤ 1.1×",
    );
    row(
        format!("managed memory: peak memtable usage, {load_name}"),
        m.memtables,
        "reported",
    );
    row(
        format!(
            "managed memory: peak pinned cache usage (memtable reservations + pinned index/filter blocks), {load_name}"
        ),
        m.pinned,
        "reported",
    );
    row(
        format!("no managed memory: peak RocksDB usage (caches + memtables + table readers), {load_name}"),
        u.total,
        "reported (unbounded)",
    );
    row(
        format!("no managed memory: peak memtable usage, {load_name}"),
        u.memtables,
        "reported",
    );
    Ok(())
}
