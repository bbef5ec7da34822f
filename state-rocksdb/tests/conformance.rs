//! The state-api conformance suite on the RocksDB backend, and savepoints moving
//! between RocksDB and the heap backend.

use state_rocksdb::RocksDbBackendFactory;

state_api::conformance_tests!(RocksDbBackendFactory::default());

#[test]
fn savepoint_heap_to_rocksdb_and_back() {
    state_api::testkit::savepoint_moves_between(
        &state_heap::HeapBackendFactory,
        &RocksDbBackendFactory::default(),
        &state_api::testkit::MemFiles::default(),
    );
}

#[test]
fn savepoint_rocksdb_to_heap_and_back() {
    state_api::testkit::savepoint_moves_between(
        &RocksDbBackendFactory::default(),
        &state_heap::HeapBackendFactory,
        &state_api::testkit::MemFiles::default(),
    );
}
