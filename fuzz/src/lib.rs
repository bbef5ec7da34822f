//! What every fuzz target does: feed the input to one reader of `state-fs/tests/readers`
//! and require that it returns (no panic) and that an error is a damage error.

#[path = "../../state-fs/tests/readers/mod.rs"]
pub mod readers;

use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    static READERS: RefCell<HashMap<&'static str, readers::Reader>> = RefCell::new(HashMap::new());
}

/// Reads `data` with the reader `name`; panics (a finding) when it returns an error
/// that is not a damage error.
pub fn check(name: &'static str, data: &[u8]) {
    READERS.with(|r| {
        let mut r = r.borrow_mut();
        let reader = r.entry(name).or_insert_with(|| readers::named(name));
        if let Err(e) = (reader.read)(data) {
            assert!(readers::acceptable(&e), "{name}: not a damage error: {e:?}");
        }
    });
}
