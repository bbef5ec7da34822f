//! `cargo xtask stress [GIB]`: long runs kept out of CI (a RocksDB list larger than
//! 2^31 bytes).

use crate::exec::{cargo, run};
use crate::system::ensure_system_packages;
use crate::{CI_FEATURES, PROFILE};

/// Runs the `stress` binary with `args`.
pub fn stress(args: &[String]) -> Result<(), String> {
    ensure_system_packages()?;
    let mut cmd: Vec<&str> = vec![
        "run",
        "-p",
        "state-examples",
        "--features",
        CI_FEATURES,
        "--bin",
        "stress",
        "--profile",
        PROFILE,
        "--",
    ];
    cmd.extend(args.iter().map(String::as_str));
    run(&cargo(), &cmd, &[])
}
