//! `cargo xtask bench [--quick] [BENCH ARGS]`: the benchmarks in the release profile
//! (the first run compiles RocksDB in release mode, 20-30 minutes on 2 cores);
//! `--quick` checks the harness only, in the dev profile.

use crate::exec::{cargo, run};
use crate::system::ensure_system_packages;

/// Builds the timely binary the 2-process rows start, then runs the bench binary with
/// `args`.
pub fn bench(quick: bool, args: &[String]) -> Result<(), String> {
    ensure_system_packages()?;
    // The 2-process rows start `nexmark-timely` from beside the bench binary.
    let mut build: Vec<&str> = vec!["build", "-p", "state-examples", "--bin", "nexmark-timely"];
    if !quick {
        build.push("--release");
    }
    run(&cargo(), &build, &[])?;
    let mut cmd: Vec<&str> = vec!["run"];
    if !quick {
        cmd.push("--release");
    }
    cmd.extend(["-p", "state-examples", "--bin", "bench", "--"]);
    if quick {
        cmd.push("--quick");
    }
    cmd.extend(args.iter().map(String::as_str));
    run(&cargo(), &cmd, &[])
}
