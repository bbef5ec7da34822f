//! `cargo xtask demo [ARGS]`: the main job, a Nexmark query (default Q5 on RocksDB with
//! incremental checkpoints to `./checkpoints`); ARGS go to `examples/src/bin/nexmark.rs`.

use crate::exec::{cargo, run};
use crate::system::ensure_system_packages;
use crate::{CI_FEATURES, PROFILE};

/// Runs the `nexmark` binary with `args`.
pub fn demo(args: &[String]) -> Result<(), String> {
    ensure_system_packages()?;
    // The dev profile (dependencies at opt-level 2, ours at 1) shares the RocksDB build
    // with the tests: a release build would compile RocksDB from source a second time.
    // The same features as `ci`, so that the demo and the tests share one RocksDB build.
    let mut cmd: Vec<&str> = vec![
        "run",
        "-p",
        "state-examples",
        "--features",
        CI_FEATURES,
        "--bin",
        "nexmark",
        "--profile",
        PROFILE,
        "--",
    ];
    cmd.extend(args.iter().map(String::as_str));
    run(&cargo(), &cmd, &[])
}
