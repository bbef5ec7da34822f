//! One column family per state: names, options (list merge operator, TTL compaction
//! filter) and registration.

use std::sync::Arc;
use std::time::Duration;

use rocksdb::compaction_filter::Decision;
use rocksdb::{MergeOperands, Options};
use state_api::raw::{Resolution, StateId, StateMeta, StateShape, check_state_name};
use state_api::{Clock, Migrations, Namespace, Result, StateKey, TtlConfig};

use crate::backend::{RState, RocksDbKeyedStateBackend};
use crate::instance::db_err;
use crate::layout::{encoded_len, list_elements, split_value};
use crate::options::RocksDbConfig;
use crate::restore::RAW_CF;

/// The column family that holds state `state`.
pub fn column_family_name(state: &str) -> String {
    format!("s/{state}")
}

pub(crate) fn cf_name(state: &str) -> String {
    column_family_name(state)
}

/// Appends the operands to the existing value: list append without read-modify-write.
pub(crate) fn concat_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut out = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for op in operands.iter() {
        out.extend_from_slice(op);
    }
    Some(out)
}

/// Whether a stored value (of a state with TTL) has fully expired.
pub(crate) fn fully_expired(shape: StateShape, value: &[u8], ttl: &TtlConfig, now: i64) -> bool {
    match shape {
        StateShape::Value | StateShape::Map => {
            split_value(value, true, "").is_ok_and(|(ts, _)| ttl.is_expired(ts, now))
        }
        StateShape::List => list_elements(value, true, "").all(|e| e.is_ok_and(|(ts, _)| ttl.is_expired(ts, now))),
    }
}

/// Column family options: the profile, the list merge operator, and for TTL states a
/// compaction filter that drops expired values as RocksDB compacts.
pub(crate) fn cf_options(
    config: &RocksDbConfig,
    shape: StateShape,
    ttl: Option<TtlConfig>,
    clock: Arc<dyn Clock>,
) -> Options {
    let mut opts = config.options();
    opts.set_merge_operator_associative("state-list-append", concat_merge);
    if let Some(ttl) = ttl {
        opts.set_compaction_filter("state-ttl", move |_level: u32, _key: &[u8], value: &[u8]| {
            if fully_expired(shape, value, &ttl, clock.now_millis()) {
                Decision::Remove
            } else {
                Decision::Keep
            }
        });
    }
    opts
}

pub(crate) fn ttl_of(meta: &StateMeta) -> Option<TtlConfig> {
    meta.ttl.map(|t| TtlConfig::new(Duration::from_millis(t.ttl_millis)))
}

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    pub(crate) fn ensure_cf(&mut self, meta: &StateMeta, ttl: Option<TtlConfig>) -> Result<()> {
        let name = cf_name(&meta.name);
        if self.db.cf_handle(&name).is_none() {
            let opts = cf_options(&self.config, meta.kind.shape(), ttl, Arc::clone(&self.clock));
            self.db
                .create_cf(&name, &opts)
                .map_err(|e| db_err(format!("creating column family for state `{}`", meta.name), e))?;
            self.db.keep_options(opts);
        }
        Ok(())
    }

    pub(crate) fn ensure_raw_cf(&mut self) -> Result<()> {
        if self.db.cf_handle(RAW_CF).is_none() {
            let opts = self.config.options();
            self.db
                .create_cf(RAW_CF, &opts)
                .map_err(|e| db_err("creating the column family of restored state", e))?;
            self.db.keep_options(opts);
        }
        Ok(())
    }

    pub(crate) fn register_shape<N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
        migrations: &Migrations,
    ) -> Result<StateId> {
        check_state_name(&meta.name)?;
        if let Some(&id) = self.by_name.get(&meta.name) {
            self.states[id.0 as usize].meta.check_compatible(&meta)?;
            return Ok(id);
        }
        // Resolved before anything changes, so a refused registration loses nothing.
        let resolution = match self.restored.get(&meta.name) {
            Some(restored) => Some(restored.resolve(&meta, migrations)?),
            None => None,
        };
        self.ensure_cf(&meta, ttl.clone())?;
        if let Some(resolution) = resolution {
            self.materialize(&meta)?;
            if let Resolution::Migrate(m) = resolution {
                let values = self.migrate_column_family(&meta, m)?;
                tracing::info!(
                    state = %meta.name,
                    from = %m.from_schema(),
                    to = %meta.value_schema,
                    values,
                    "migrated restored state to the registered type"
                );
            }
        }
        self.restored.remove(&meta.name);
        let id = StateId(self.states.len() as u32);
        self.by_name.insert(meta.name.clone(), id);
        self.states.push(RState {
            cf: cf_name(&meta.name),
            meta,
            ttl,
            ns_len: encoded_len::<N>,
            cleanup_cursor: None,
        });
        Ok(id)
    }
}
