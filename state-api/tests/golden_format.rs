//! Golden test of the canonical snapshot format (DESIGN.md "Frozen contracts"): the
//! bytes of a fixed snapshot are committed; writing the same content must reproduce
//! them exactly, and reading them must give the same entries, forever.
//!
//! Version 1 (before schemas) is committed as `keyed-v1.bin` and must keep reading, with
//! every type known by name; version 2 is `keyed-v2.bin`. Regenerate the newest (only
//! for a deliberate new format version, after committing a fixture of the old one):
//! `STATE_GOLDEN_REGENERATE=1 cargo test -p state-api --test golden_format`

use state_api::raw::format::{
    KeyedStreamReader, KeyedStreamWriter, RawEntry, SectionBuilder, SnapshotHeader, put_i64, put_serialized, put_varint,
};
use state_api::raw::{StateMeta, TtlMeta};
use state_api::{KeyGroupRange, Schema, StateKind};

const FIXTURE_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keyed-v1.bin");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keyed-v2.bin");

/// The header as version 1 recorded it: every schema is the type's name.
fn header_v1() -> SnapshotHeader {
    let mut h = header();
    let by_name = |name: &str| Schema::Opaque { type_name: name.into() };
    h.key_schema = by_name(&h.key_type);
    for s in &mut h.states {
        s.namespace_schema = by_name(&s.namespace_type);
        s.value_schema = by_name(&s.value_type);
        s.user_key_schema = s.user_key_type.as_deref().map(by_name);
    }
    h
}

fn header() -> SnapshotHeader {
    SnapshotHeader {
        key_type: "alloc::string::String".into(),
        key_schema: Schema::Str,
        max_parallelism: 128,
        key_group_range: KeyGroupRange::new(94, 98),
        checkpoint_id: 7,
        states: vec![
            StateMeta {
                name: "count".into(),
                kind: StateKind::Value,
                namespace_type: "state_api::state::VoidNamespace".into(),
                user_key_type: None,
                value_type: "u64".into(),
                ttl: None,
                namespace_schema: Schema::UnitStruct,
                user_key_schema: None,
                value_schema: Schema::U64,
            },
            StateMeta {
                name: "recent".into(),
                kind: StateKind::List,
                namespace_type: "state_api::state::VoidNamespace".into(),
                user_key_type: None,
                value_type: "alloc::string::String".into(),
                ttl: Some(TtlMeta { ttl_millis: 60_000 }),
                namespace_schema: Schema::UnitStruct,
                user_key_schema: None,
                value_schema: Schema::Str,
            },
            StateMeta {
                name: "bids".into(),
                kind: StateKind::Map,
                namespace_type: "i64".into(),
                user_key_type: Some("u32".into()),
                value_type: "u64".into(),
                ttl: None,
                namespace_schema: Schema::I64,
                user_key_schema: Some(Schema::U32),
                value_schema: Schema::U64,
            },
        ],
    }
}

/// Keys "🦀 crab" (key group 94), "alice" (96) and "bob" (98) at max parallelism 128.
fn write() -> Vec<u8> {
    let h = header();
    let mut out = Vec::new();
    let mut w = KeyedStreamWriter::new(&mut out, &h).unwrap();
    let mut s = SectionBuilder::default();
    let mut scratch = Vec::new();
    for kg in h.key_group_range.iter() {
        let key = match kg {
            94 => "🦀 crab",
            96 => "alice",
            98 => "bob",
            _ => {
                w.write_section(&s.take_section()).unwrap();
                continue;
            }
        };
        // count = key length
        put_serialized(s.block(), &mut scratch, key, "count", "key").unwrap();
        put_serialized(s.block(), &mut scratch, &(), "count", "namespace").unwrap();
        put_serialized(s.block(), &mut scratch, &(key.len() as u64), "count", "value").unwrap();
        s.entry_done();
        s.finish_block(0);
        // recent = [key, key!] with timestamps 1000, 2000
        put_serialized(s.block(), &mut scratch, key, "recent", "key").unwrap();
        put_serialized(s.block(), &mut scratch, &(), "recent", "namespace").unwrap();
        put_varint(s.block(), 2);
        put_i64(s.block(), 1000);
        put_serialized(s.block(), &mut scratch, key, "recent", "element").unwrap();
        put_i64(s.block(), 2000);
        put_serialized(s.block(), &mut scratch, &format!("{key}!"), "recent", "element").unwrap();
        s.entry_done();
        s.finish_block(1);
        // bids in namespace -5: {1: 10, 2: 20}
        put_serialized(s.block(), &mut scratch, key, "bids", "key").unwrap();
        put_serialized(s.block(), &mut scratch, &-5i64, "bids", "namespace").unwrap();
        put_varint(s.block(), 2);
        for (uk, uv) in [(1u32, 10u64), (2, 20)] {
            put_serialized(s.block(), &mut scratch, &uk, "bids", "user key").unwrap();
            put_serialized(s.block(), &mut scratch, &uv, "bids", "user value").unwrap();
        }
        s.entry_done();
        s.finish_block(2);
        w.write_section(&s.take_section()).unwrap();
    }
    w.finish().unwrap();
    out
}

#[test]
fn writing_reproduces_the_committed_bytes() {
    let bytes = write();
    if std::env::var_os("STATE_GOLDEN_REGENERATE").is_some() {
        std::fs::write(FIXTURE, &bytes).unwrap();
    }
    let golden = std::fs::read(FIXTURE).expect("fixture is committed");
    assert_eq!(
        bytes, golden,
        "the canonical format changed: that needs a new format version"
    );
    assert_eq!(&golden[..8], b"\x89RSTATE\n");
    assert_eq!(&golden[8..12], &2u32.to_be_bytes());
    assert_eq!(&golden[golden.len() - 8..], b"RSTATEND");
}

#[test]
fn reading_the_committed_bytes_gives_the_entries() {
    for (path, expected) in [(FIXTURE, header()), (FIXTURE_V1, header_v1())] {
        read_fixture(path, &expected);
    }
}

/// Version 1 and 2 hold the same entries; only the header differs.
fn read_fixture(path: &str, expected: &SnapshotHeader) {
    let golden = std::fs::read(path).expect("fixture is committed");
    let mut r = KeyedStreamReader::open(Box::new(std::io::Cursor::new(golden)), path).unwrap();
    assert_eq!(r.header(), expected);
    assert_eq!(r.key_group_offsets().len(), 5);
    for (kg, key) in [(94u32, "🦀 crab"), (96, "alice"), (98, "bob")] {
        let key_bytes = postcard::to_stdvec(key).unwrap();
        let section = r.read_section(kg).unwrap();
        let blocks = section.blocks().unwrap();
        assert_eq!(blocks.len(), 3);
        match &blocks[0].entries[..] {
            [
                RawEntry::Value {
                    key: k,
                    value,
                    timestamp: 0,
                    ..
                },
            ] => {
                assert_eq!(*k, &key_bytes[..]);
                assert_eq!(postcard::from_bytes::<u64>(value).unwrap(), key.len() as u64);
            }
            other => panic!("unexpected {other:?}"),
        }
        match &blocks[1].entries[..] {
            [RawEntry::List { items, .. }] => {
                assert_eq!(items.iter().map(|(ts, _)| *ts).collect::<Vec<_>>(), vec![1000, 2000]);
                assert_eq!(postcard::from_bytes::<String>(items[1].1).unwrap(), format!("{key}!"));
            }
            other => panic!("unexpected {other:?}"),
        }
        match &blocks[2].entries[..] {
            [RawEntry::Map { namespace, entries, .. }] => {
                assert_eq!(postcard::from_bytes::<i64>(namespace).unwrap(), -5);
                assert_eq!(entries.len(), 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for empty in [95, 97] {
        assert!(r.read_section(empty).unwrap().blocks().unwrap().is_empty());
    }
}
