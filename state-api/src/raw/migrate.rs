//! Applying a value [`Migration`] to stored state: to a canonical block (heap, RocksDB's
//! restored blocks) or one stored value at a time (RocksDB's column families).

use crate::error::Result;
use crate::migration::Migration;
use crate::raw::format::{RawEntry, decode_block, put_raw_entry};
use crate::state::StateMeta;

/// Re-encodes a canonical block (`raw`, `count` entries of state `meta`) with every value
/// converted by `migration`: values, list elements and map values; keys, namespaces,
/// user keys and TTL timestamps are kept. `source_name` and `key_group` name the origin
/// in errors.
pub fn migrate_block(
    raw: &[u8],
    meta: &StateMeta,
    count: u64,
    source_name: &str,
    key_group: u32,
    migration: &Migration,
) -> Result<Vec<u8>> {
    let entries = decode_block(raw, meta, count, source_name, key_group)?;
    let ttl = meta.ttl.is_some();
    let mut out = Vec::with_capacity(raw.len());
    let convert = |v: &[u8]| migration.convert(v, &meta.name);
    for entry in &entries {
        match entry {
            RawEntry::Value {
                key,
                namespace,
                timestamp,
                value,
            } => {
                let value = convert(value)?;
                let migrated = RawEntry::Value {
                    key,
                    namespace,
                    timestamp: *timestamp,
                    value: &value,
                };
                put_raw_entry(&mut out, &migrated, ttl);
            }
            RawEntry::List { key, namespace, items } => {
                let values = items.iter().map(|(_, v)| convert(v)).collect::<Result<Vec<_>>>()?;
                let items = items.iter().zip(&values).map(|((ts, _), v)| (*ts, &v[..])).collect();
                put_raw_entry(&mut out, &RawEntry::List { key, namespace, items }, ttl);
            }
            RawEntry::Map {
                key,
                namespace,
                entries,
            } => {
                let values = entries.iter().map(|(_, _, v)| convert(v)).collect::<Result<Vec<_>>>()?;
                let entries = entries
                    .iter()
                    .zip(&values)
                    .map(|((uk, ts, _), v)| (*uk, *ts, &v[..]))
                    .collect();
                put_raw_entry(
                    &mut out,
                    &RawEntry::Map {
                        key,
                        namespace,
                        entries,
                    },
                    ttl,
                );
            }
        }
    }
    Ok(out)
}
