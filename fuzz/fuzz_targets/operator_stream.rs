//! Fuzzes the reader "operator stream" (see state-fs/tests/readers): no panic, no error but a damage error.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| state_fuzz::check("operator stream", data));
