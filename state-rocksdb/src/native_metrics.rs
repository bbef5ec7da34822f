//! RocksDB's own figures, sampled on demand into the `metrics` facade under Flink's
//! names (`state.backend.rocksdb.metric.<property>`, label `backend = rocksdb`).

use std::collections::BTreeMap;

use state_api::{Result, StateKey};

use crate::backend::RocksDbKeyedStateBackend;
use crate::instance::db_err;

/// Properties summed over the state's column families.
const PER_COLUMN_FAMILY: [&str; 5] = [
    "rocksdb.cur-size-all-mem-tables",
    "rocksdb.estimate-num-keys",
    "rocksdb.estimate-pending-compaction-bytes",
    "rocksdb.total-sst-files-size",
    "rocksdb.num-running-compactions",
];

/// Properties of the shared block cache (the same through every column family).
const CACHE: [&str; 2] = ["rocksdb.block-cache-usage", "rocksdb.block-cache-pinned-usage"];

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// Samples RocksDB's properties (memtable size, estimated keys, pending compaction
    /// bytes, SST bytes and file count, block-cache usage and pinned usage) over every
    /// state's column family, sets them as gauges named
    /// `state.backend.rocksdb.metric.<property>` and returns them by property name.
    pub fn report_native_metrics(&self) -> Result<BTreeMap<String, u64>> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        let mut files = 0u64;
        for state in &self.states {
            let Some(cf) = self.db.cf_handle(&state.cf) else {
                continue;
            };
            let read = |name: &str| {
                self.db
                    .property_int_value_cf(cf, name)
                    .map(Option::unwrap_or_default)
                    .map_err(|e| db_err(format!("reading `{name}`"), e))
            };
            for name in PER_COLUMN_FAMILY {
                *out.entry(name.to_string()).or_default() += read(name)?;
            }
            for name in CACHE {
                let v = read(name)?;
                let e = out.entry(name.to_string()).or_default();
                *e = (*e).max(v);
            }
        }
        if let Ok(live) = self.db.live_files() {
            files = live.len() as u64;
        }
        out.insert("rocksdb.num-sst-files".to_string(), files);
        for (name, v) in &out {
            let metric = format!("state.backend.rocksdb.metric.{}", name.trim_start_matches("rocksdb."));
            metrics::gauge!(metric, "backend" => "rocksdb").set(*v as f64);
        }
        Ok(out)
    }
}
