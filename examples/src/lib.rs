//! Jobs shared by the main binary, the benchmarks and the tests: operator code written once
//! against `state-api`, run on whichever backend the features compile in.
#![allow(missing_docs)]

pub mod cli;
pub mod nexmark;
pub mod progress;

/// The workspace README's Rust examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct WorkspaceReadmeDoctests;
