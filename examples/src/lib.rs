//! Jobs shared by the main binary, the benchmarks and the tests: operator code written once
//! against `state-api`, run on whichever backend the features compile in.
#![allow(missing_docs)]

pub mod nexmark;

/// The value after flag `name` on the command line, if any.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}
