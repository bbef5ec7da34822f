//! The state-api conformance suite: heap backend, snapshots through the file system
//! checkpoint storage on local disk (snapshot → storage → restore).

mod common;

fn local_fs() -> common::LocalFs {
    common::LocalFs::files_only()
}

state_api::conformance_tests!(state_heap::HeapBackendFactory, local_fs);
