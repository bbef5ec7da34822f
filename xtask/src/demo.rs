//! `cargo xtask demo [ARGS]`: the main job, a Nexmark query (default Q5 on RocksDB with
//! incremental checkpoints to `./checkpoints`); ARGS go to `examples/src/bin/nexmark.rs`.

use crate::exec::run_example;
use crate::system::ensure_system_packages;

/// Runs the `nexmark` binary with `args` (the CI profile: see [`run_example`]).
pub fn demo(args: &[String]) -> Result<(), String> {
    ensure_system_packages()?;
    run_example("nexmark", &args.iter().map(String::as_str).collect::<Vec<_>>())
}
