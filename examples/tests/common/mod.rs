//! Helpers shared by the examples' process tests.
#![allow(dead_code)]

use std::path::Path;

/// The lines of a results file, sorted.
pub fn read_sorted(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}
