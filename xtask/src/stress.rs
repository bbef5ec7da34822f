//! `cargo xtask stress [GIB]`: long runs kept out of CI (a RocksDB list larger than
//! 2^31 bytes).

use crate::exec::run_example;
use crate::system::ensure_system_packages;

/// Runs the `stress` binary with `args`.
pub fn stress(args: &[String]) -> Result<(), String> {
    ensure_system_packages()?;
    run_example("stress", &args.iter().map(String::as_str).collect::<Vec<_>>())
}
