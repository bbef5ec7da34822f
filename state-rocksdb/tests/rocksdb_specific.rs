//! What only the RocksDB backend has: the frozen key layout on disk, list append by
//! merge, TTL by compaction filter, option profiles, the working directory.

use std::sync::Arc;
use std::time::Duration;

use state_api::keygroup::key_group_for_key;
use state_api::{
    BackendContext, KeyedStateBackend, ListStateDescriptor, ManualClock, MapStateDescriptor, TtlConfig,
    ValueStateDescriptor,
};
use state_rocksdb::{PredefinedOptions, RocksDbConfig, RocksDbKeyedStateBackend, column_family_name};

fn raw_entries<K: state_api::StateKey>(b: &RocksDbKeyedStateBackend<K>, state: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let cf = b.db().cf_handle(&column_family_name(state)).expect("column family");
    b.db()
        .iterator_cf(cf, rocksdb::IteratorMode::Start)
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
        .collect()
}

#[test]
fn keys_follow_the_frozen_layout() {
    // max parallelism 128: one key-group byte.
    let mut b = RocksDbKeyedStateBackend::<u64>::new(&BackendContext::single(128), RocksDbConfig::default()).unwrap();
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    let m = b
        .register(MapStateDescriptor::<u32, u64>::new("m").in_namespace::<i64>())
        .unwrap();
    b.set_current_key(&300).unwrap();
    b.value(&v).update(7).unwrap();
    b.map_in(&m, &-1).put(5, 9).unwrap();
    let kg = key_group_for_key(&300u64, 128).unwrap();
    let mut want = vec![kg as u8];
    want.extend(postcard::to_stdvec(&300u64).unwrap());
    assert_eq!(
        raw_entries(&b, "v"),
        vec![(want.clone(), postcard::to_stdvec(&7u64).unwrap())]
    );
    want.extend(postcard::to_stdvec(&-1i64).unwrap());
    want.extend(postcard::to_stdvec(&5u32).unwrap());
    assert_eq!(raw_entries(&b, "m"), vec![(want, postcard::to_stdvec(&9u64).unwrap())]);

    // max parallelism 4096: two key-group bytes, big-endian.
    let mut b =
        RocksDbKeyedStateBackend::<String>::new(&BackendContext::single(4096), RocksDbConfig::default()).unwrap();
    let v = b.register(ValueStateDescriptor::<u8>::new("v")).unwrap();
    b.set_current_key(&"alice".to_string()).unwrap();
    b.value(&v).update(1).unwrap();
    let kg = key_group_for_key("alice", 4096).unwrap();
    let (k, _) = &raw_entries(&b, "v")[0];
    assert_eq!(&k[..2], &(kg as u16).to_be_bytes());
    assert_eq!(&k[2..], &postcard::to_stdvec("alice").unwrap()[..]);
}

#[test]
fn list_append_is_a_merge_on_one_key() {
    let mut b = RocksDbKeyedStateBackend::<u64>::new(&BackendContext::single(128), RocksDbConfig::default()).unwrap();
    let l = b.register(ListStateDescriptor::<u32>::new("l")).unwrap();
    b.set_current_key(&1).unwrap();
    for i in 0..1000 {
        b.list(&l).add(i).unwrap();
    }
    assert_eq!(raw_entries(&b, "l").len(), 1);
    assert_eq!(b.list(&l).get().unwrap(), (0..1000).collect::<Vec<_>>());
}

#[test]
fn compaction_filter_drops_expired_state_without_reads() {
    let clock = ManualClock::new(1_000_000);
    let ctx = BackendContext::single(128).with_clock(Arc::new(clock.clone()));
    let mut b = RocksDbKeyedStateBackend::<u64>::new(&ctx, RocksDbConfig::default()).unwrap();
    let ttl = TtlConfig::new(Duration::from_millis(1000)).cleanup_incrementally(0);
    let v = b
        .register(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl.clone()))
        .unwrap();
    let l = b.register(ListStateDescriptor::<u64>::new("l").with_ttl(ttl)).unwrap();
    for k in 0..200 {
        b.set_current_key(&k).unwrap();
        b.value(&v).update(k).unwrap();
        b.list(&l).add_all([k, k + 1]).unwrap();
    }
    clock.advance(500);
    b.set_current_key(&7).unwrap();
    b.value(&v).update(7).unwrap(); // refreshed: survives
    clock.advance(600);
    for state in ["v", "l"] {
        let cf = b.db().cf_handle(&column_family_name(state)).unwrap();
        b.db().flush_cf(cf).unwrap();
        b.db().compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
    }
    assert_eq!(
        raw_entries(&b, "v").len(),
        1,
        "only the refreshed value survives compaction"
    );
    assert_eq!(raw_entries(&b, "l").len(), 0);
    assert_eq!(b.value(&v).get().unwrap(), Some(7));
}

#[test]
fn every_profile_and_an_override_work() {
    for profile in [
        PredefinedOptions::Default,
        PredefinedOptions::SpinningDisk,
        PredefinedOptions::SpinningDiskHighMem,
        PredefinedOptions::FlashSsd,
    ] {
        let config = RocksDbConfig {
            profile,
            options_override: Some(Arc::new(|o: &mut rocksdb::Options| {
                o.set_write_buffer_size(8 * 1024 * 1024)
            })),
            ..RocksDbConfig::default()
        };
        let mut b = RocksDbKeyedStateBackend::<u64>::new(&BackendContext::single(128), config).unwrap();
        let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
        b.set_current_key(&1).unwrap();
        b.value(&v).update(2).unwrap();
        assert_eq!(b.value(&v).get().unwrap(), Some(2), "{profile:?}");
        let wb = b.db().property_int_value("rocksdb.cur-size-all-mem-tables").unwrap();
        assert!(wb.is_some(), "{profile:?}");
    }
}

/// Bytes of filter blocks in the state's SST files, from RocksDB's aggregated table
/// properties (`... filter block size=N; ...`).
fn filter_block_bytes(b: &RocksDbKeyedStateBackend<u64>, state: &str) -> u64 {
    let cf = b.db().cf_handle(&column_family_name(state)).unwrap();
    let props = b
        .db()
        .property_value_cf(&cf, "rocksdb.aggregated-table-properties")
        .unwrap()
        .unwrap();
    let at = props
        .find("filter block size")
        .unwrap_or_else(|| panic!("no filter size in {props}"));
    let digits: String = props[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or_else(|_| panic!("filter size in {props}"))
}

#[test]
fn every_profile_writes_bloom_filters_and_an_override_can_drop_them() {
    let written = |profile, options_override| {
        let config = RocksDbConfig {
            profile,
            options_override,
            ..RocksDbConfig::default()
        };
        let mut b = RocksDbKeyedStateBackend::<u64>::new(&BackendContext::single(128), config).unwrap();
        let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
        for k in 0..2000u64 {
            b.set_current_key(&k).unwrap();
            b.value(&v).update(k).unwrap();
        }
        let cf = b.db().cf_handle(&column_family_name("v")).unwrap();
        b.db().flush_cf(&cf).unwrap();
        filter_block_bytes(&b, "v")
    };
    for profile in [
        PredefinedOptions::Default,
        PredefinedOptions::SpinningDisk,
        PredefinedOptions::SpinningDiskHighMem,
        PredefinedOptions::FlashSsd,
    ] {
        // 10 bits per key: about 2500 bytes for 2000 keys.
        let bytes = written(profile, None);
        assert!((2000..4000).contains(&bytes), "{profile:?}: {bytes} filter bytes");
    }
    let no_filter: state_rocksdb::OptionsOverride = Arc::new(|o: &mut rocksdb::Options| {
        o.set_block_based_table_factory(&rocksdb::BlockBasedOptions::default());
    });
    assert_eq!(written(PredefinedOptions::Default, Some(no_filter)), 0);
}

#[test]
fn working_directory_is_configurable_and_removed_on_drop() {
    let base = tempfile::tempdir().unwrap();
    let config = RocksDbConfig {
        local_dir: base.path().to_path_buf(),
        ..RocksDbConfig::default()
    };
    let b = RocksDbKeyedStateBackend::<u64>::new(&BackendContext::single(128), config).unwrap();
    let dir = b.working_dir().to_path_buf();
    assert!(dir.starts_with(base.path()) && dir.join("db").exists());
    drop(b);
    assert!(!dir.exists());
}
