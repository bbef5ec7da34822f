//! The state-api conformance suite on the heap backend.

state_api::conformance_tests!(state_heap::HeapBackendFactory);
