//! RocksDB read options (issue 14, point 3), chosen by measurement: value gets served
//! from SST files rather than memtables, with and without a bloom filter, in one run.
//!
//! `n` values of `i64` keys are written in four shuffled quarters, each flushed to its
//! own level-0 file (automatic compactions off, so every variant reads the same file
//! layout); then every key is read in another shuffled order (hits), and as many keys
//! that were never written (misses: the first record of a new key in a stream job).
//! The backend runs in a 512 MiB managed-memory slot, index and filter blocks cached
//! there. The variants set their block-based table options on RocksDB's defaults and
//! differ only in the filter policy.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use rocksdb::{BlockBasedOptions, Options};
use state_api::{BackendContext, KeyedStateBackend, Result, StateError, ValueStateDescriptor};
use state_rocksdb::{OptionsOverride, RocksDbConfig, RocksDbKeyedStateBackend, column_family_name};

use super::Row;
use super::flink::shuffle;

/// ns per get of hits and of misses.
struct ReadFigures {
    hit: f64,
    miss: f64,
}

fn shuffled(n: u64, offset: i64, seed: u64) -> Vec<i64> {
    shuffle((0..n as i64).map(|k| k + offset).collect(), seed)
}

/// The configuration of one variant: managed memory, automatic compactions off, and the
/// table options `table` sets on RocksDB's defaults.
fn config(table: fn(&mut BlockBasedOptions)) -> Result<RocksDbConfig> {
    let hook: OptionsOverride = Arc::new(move |opts: &mut Options| {
        opts.set_disable_auto_compactions(true);
        let mut t = BlockBasedOptions::default();
        table(&mut t);
        opts.set_block_based_table_factory(&t);
    });
    let mut config = super::flink::rocksdb::config()?;
    config.options_override = Some(hook);
    Ok(config)
}

fn run(n: u64, table: fn(&mut BlockBasedOptions)) -> Result<ReadFigures> {
    let ctx = BackendContext::single(128);
    let mut b = RocksDbKeyedStateBackend::<i64>::new(&ctx, config(table)?)?;
    let v = b.register(ValueStateDescriptor::<i64>::new("value"))?;
    let writes = shuffled(n, 0, 11);
    for quarter in writes.chunks(writes.len().div_ceil(4).max(1)) {
        for k in quarter {
            b.set_current_key(k)?;
            b.value(&v).update(*k)?;
        }
        let db = b.db();
        let cf = db
            .cf_handle(&column_family_name("value"))
            .ok_or_else(|| StateError::InvalidArgument("no column family for state `value`".into()))?;
        db.flush_cf(&cf)
            .map_err(|e| StateError::storage("bench flush", e, false))?;
    }
    let mut time = |keys: &[i64], expect_found: bool| -> Result<f64> {
        let t = Instant::now();
        for k in keys {
            b.set_current_key(k)?;
            let got = b.value(&v).get()?;
            if got.is_some() != expect_found {
                return Err(StateError::InvalidArgument(format!("key {k}: found {got:?}")));
            }
            black_box(got);
        }
        Ok(t.elapsed().as_nanos() as f64 / keys.len().max(1) as f64)
    };
    let hits = shuffled(n, 0, 12);
    let misses = shuffled(n, n as i64, 13);
    // Warm the cache with one pass of each, then measure.
    time(&hits, true)?;
    time(&misses, false)?;
    Ok(ReadFigures {
        hit: time(&hits, true)?,
        miss: time(&misses, false)?,
    })
}

/// RocksDB's table defaults: no filter (Flink's `DEFAULT` profile).
fn no_filter(_: &mut BlockBasedOptions) {}

/// A full-key bloom filter, 10 bits per key (about 1% false positives).
fn bloom(t: &mut BlockBasedOptions) {
    t.set_bloom_filter(10.0, false);
}

/// The rows: gets with a bloom filter against gets without, in the same run.
pub fn read_option_rows(n: u64, rows: &mut Vec<Row>) -> Result<()> {
    let base = run(n, no_filter)?;
    let with_bloom = run(n, bloom)?;
    for (what, ours, baseline) in [("hit", with_bloom.hit, base.hit), ("miss", with_bloom.miss, base.miss)] {
        rows.push(Row {
            name: format!("rocksdb value.get ({what}) from 4 level-0 files of {n} keys, bloom filter 10 bits/key"),
            ours,
            baseline,
            unit: "ns/op",
            baseline_name: "no filter (Flink's DEFAULT), same run",
            target: "< 1× to keep",
        });
    }
    Ok(())
}
