//! Running programs: every command the tasks start goes through [`run`], which prints
//! it and turns a non-zero exit status into an error.

use std::process::Command;

use crate::{CI_FEATURES, PROFILE};

/// Runs `program args` with extra environment variables `env`, passing its output
/// through; fails unless it exits with success.
pub fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("==> {program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().map_err(|e| format!("cannot start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed with {status}", args.join(" ")))
    }
}

/// The cargo that runs this task (`$CARGO`), or `cargo`.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Whether `cargo <tool>` works, trying `rustup component add` once if it does not.
pub fn cargo_tool(tool: &str, component: &str) -> bool {
    let works = || {
        Command::new(cargo())
            .args([tool, "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if works() {
        return true;
    }
    let _ = Command::new("rustup").args(["component", "add", component]).status();
    works()
}

/// Runs binary `bin` of the examples crate with `args`, in the CI profile and with the
/// CI features, so that it shares the tests' RocksDB build (a release build would compile
/// RocksDB from source a second time).
pub fn run_example(bin: &str, args: &[&str]) -> Result<(), String> {
    let mut cmd: Vec<&str> = vec![
        "run",
        "-p",
        "state-examples",
        "--features",
        CI_FEATURES,
        "--bin",
        bin,
        "--profile",
        PROFILE,
        "--",
    ];
    cmd.extend(args);
    run(&cargo(), &cmd, &[])
}
