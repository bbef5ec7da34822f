//! `cargo xtask <command>`: the project's automation, one module per command.
//!
//! - `ci` ([`mod@ci`]): installs missing system packages, then runs fmt, clippy, tests, docs,
//!   the bench harness and the crates.io packaging check; the README's test command and
//!   what `.ci/run` calls.
//! - `bench [--quick] [ARGS]` ([`mod@bench`]): the benchmarks in the release profile.
//! - `demo [ARGS]` ([`mod@demo`]): the main job, a Nexmark query.
//! - `stress [GIB]` ([`mod@stress`]): long runs kept out of CI.
//!
//! Flags are parsed by clap; `cargo xtask --help` lists them. Every step passes or fails
//! by the exit code of what it runs.

mod bench;
mod ci;
mod demo;
mod exec;
mod stress;
mod system;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Optional features built, linted and tested in CI (remote checkpoint storages).
const CI_FEATURES: &str = "state-fs/s3,state-fs/hdfs";

/// The cargo profile of every CI command (clippy, tests, docs, the bench harness) and of
/// the demo: one profile for all. Together with `[profile.dev.build-override] debug = 1`
/// in the workspace manifest (which makes `cargo check`/`clippy` and `cargo test` build
/// the build-dependencies of librocksdb-sys alike), every command resolves to the same
/// librocksdb-sys build, so RocksDB's C++ (25 minutes on 2 cores) compiles once.
const PROFILE: &str = "test";

/// The project's automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

/// One task.
#[derive(Debug, Subcommand)]
enum Task {
    /// fmt, clippy, tests, docs, bench harness and packaging: what CI runs.
    Ci,
    /// The benchmarks (release profile).
    Bench {
        /// Check the harness only (dev profile, tiny sizes).
        #[arg(long)]
        quick: bool,
        /// Passed to the bench binary (`--group NAME`, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The main job: a Nexmark query on the embedded default, local disk.
    Demo {
        /// Passed to the `nexmark` binary (`--query`, `--backend`, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Long stress runs kept out of CI.
    Stress {
        /// Passed to the `stress` binary (the list size in GiB).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Task::Ci => ci::ci(),
        Task::Bench { quick, args } => bench::bench(*quick, args),
        Task::Demo { args } => demo::demo(args),
        Task::Stress { args } => stress::stress(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed_and_passes_extra_flags_through() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["xtask", "bench", "--quick", "--group", "cluster"]).unwrap();
        match cli.command {
            Task::Bench { quick, args } => {
                assert!(quick);
                assert_eq!(args, ["--group", "cluster"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["xtask", "demo", "--query", "q8"]).unwrap();
        assert!(matches!(cli.command, Task::Demo { args } if args == ["--query", "q8"]));
        assert!(Cli::try_parse_from(["xtask", "deploy"]).is_err());
        assert!(Cli::try_parse_from(["xtask"]).is_err());
    }
}
