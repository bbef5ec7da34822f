//! Migrating a restored state's column family to the registered value type, eagerly at
//! registration: every stored value (list element, map value) is converted by the
//! descriptor's migration into a new SST file, which is then ingested into the column
//! family in one atomic step. A conversion that fails leaves the state as it was; after
//! success the state never holds two encodings, and the next snapshot (full or
//! incremental) holds the new schema only.

use std::sync::atomic::Ordering;

use rocksdb::{IngestExternalFileOptions, IteratorMode, SstFileWriter};
use state_api::raw::{StateMeta, StateShape};
use state_api::{Migration, Result, StateError, StateKey};

use crate::backend::RocksDbKeyedStateBackend;
use crate::column_family::cf_name;
use crate::instance::{INSTANCE, db_err};
use crate::layout::{list_elements, put_list_element, split_value};

/// Rows between progress events.
const PROGRESS_EVERY: u64 = 256 * 1024;

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// Rewrites every value of state `meta` (already materialized in its column family)
    /// through `migration`. Returns the number of values converted.
    pub(crate) fn migrate_column_family(&mut self, meta: &StateMeta, migration: &Migration) -> Result<u64> {
        let name = &meta.name;
        let cf = self
            .db
            .cf_handle(&cf_name(name))
            .ok_or_else(|| StateError::UnknownState { name: name.clone() })?;
        let path = self
            .dir
            .join(format!("migrate-{}.sst", INSTANCE.fetch_add(1, Ordering::Relaxed)));
        let opts = self.config.options();
        let mut writer = SstFileWriter::create(&opts);
        writer
            .open(&path)
            .map_err(|e| db_err(format!("creating `{}` to migrate state `{name}`", path.display()), e))?;
        let ttl = meta.ttl.is_some();
        let list = meta.kind.shape() == StateShape::List;
        let (mut rows, mut converted) = (0u64, 0u64);
        let mut value = Vec::new();
        let mut convert_all = || -> Result<()> {
            for row in self.db.iterator_cf(cf, IteratorMode::Start) {
                let (key, old) = row.map_err(|e| db_err(format!("reading state `{name}` to migrate it"), e))?;
                value.clear();
                if list {
                    for element in list_elements(&old, ttl, name) {
                        let (ts, bytes) = element?;
                        put_list_element(&mut value, ts, &migration.convert(bytes, name)?, ttl);
                        converted += 1;
                    }
                } else {
                    let (ts, bytes) = split_value(&old, ttl, name)?;
                    if ttl {
                        value.extend_from_slice(&ts.to_be_bytes());
                    }
                    value.extend_from_slice(&migration.convert(bytes, name)?);
                    converted += 1;
                }
                writer
                    .put(&key, &value)
                    .map_err(|e| db_err(format!("writing migrated state `{name}`"), e))?;
                rows += 1;
                if rows % PROGRESS_EVERY == 0 {
                    tracing::info!(state = %name, rows, values = converted, "migrating state");
                }
            }
            if rows > 0 {
                writer
                    .finish()
                    .map_err(|e| db_err(format!("finishing migrated state `{name}`"), e))?;
                let mut ingest = IngestExternalFileOptions::default();
                ingest.set_move_files(true);
                self.db
                    .ingest_external_file_cf_opts(cf, &ingest, vec![&path])
                    .map_err(|e| db_err(format!("ingesting migrated state `{name}`"), e))?;
            }
            Ok(())
        };
        let result = convert_all();
        let _ = std::fs::remove_file(&path);
        result.map(|()| converted)
    }
}
