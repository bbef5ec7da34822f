//! `cargo xtask <command>`: the project's automation.
//!
//! - `ci`: installs missing system packages, then runs fmt, clippy, tests, docs and the
//!   crates.io packaging check; this is the README's test command and what `.ci/run` calls.
//! - `bench [--quick]`: the benchmarks (release build: the first run compiles RocksDB in
//!   release mode, 20-30 minutes on 2 cores); `--quick` checks the harness only.
//! - `demo [ARGS]`: the main job from `examples/`: a Nexmark query (default Q5 on RocksDB
//!   with incremental checkpoints to `./checkpoints`); `--help`-style flags in `examples/src/bin/nexmark.rs`.
//! - `stress [GIB]`: long runs kept out of CI (a RocksDB list larger than 2^31 bytes).

use std::process::{Command, ExitCode};

/// Optional features built, linted and tested in CI (remote checkpoint storages).
const CI_FEATURES: &str = "state-fs/s3,state-fs/hdfs";

/// The cargo profile of every CI command (clippy, tests, docs, the bench harness) and of
/// the demo: one profile for all. Together with `[profile.dev.build-override] debug = 1`
/// in the workspace manifest (which makes `cargo check`/`clippy` and `cargo test` build
/// the build-dependencies of librocksdb-sys alike), every command resolves to the same
/// librocksdb-sys build, so RocksDB's C++ (25 minutes on 2 cores) compiles once.
const PROFILE: &str = "test";

/// Debian packages the workspace needs to build (the C toolchain for -sys crates).
const SYSTEM_PACKAGES: &[&str] = &["pkg-config", "g++", "libclang-dev"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(&args[1..]),
        Some("demo") => demo(&args[1..]),
        Some("stress") => {
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
            cmd.extend(args[1..].iter().map(String::as_str));
            ensure_system_packages().and_then(|()| run(&cargo(), &cmd, &[]))
        }
        _ => {
            eprintln!("usage: cargo xtask <ci | bench [--quick] | demo [ARGS] | stress [GIB]>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
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

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Installs the Debian packages the build needs when they are missing (CI machines and
/// fresh developer machines); does nothing where they are present.
fn ensure_system_packages() -> Result<(), String> {
    let missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .filter(|pkg| {
            !Command::new("dpkg")
                .args(["-s", pkg])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .copied()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        return Err(format!(
            "missing system packages {missing:?} and no apt-get to install them"
        ));
    }
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let mut update: Vec<&str> = sudo.to_vec();
    update.extend(["apt-get", "update", "-q"]);
    run(update[0], &update[1..], &[])?;
    let mut install: Vec<&str> = sudo.to_vec();
    install.extend(["apt-get", "install", "-y", "-q", "--no-install-recommends"]);
    install.extend(missing.iter().copied());
    run(install[0], &install[1..], &[("DEBIAN_FRONTEND", "noninteractive")])
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether `cargo <tool>` works, trying `rustup component add` once if it does not.
fn cargo_tool(tool: &str, component: &str) -> bool {
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

/// Runs `cargo test` with its output passed through, and sums the per-binary results.
fn test_and_count(cargo: &str) -> Result<(u64, u64), String> {
    use std::io::{BufRead, BufReader};
    eprintln!("==> {cargo} test --workspace --features {CI_FEATURES}");
    let mut child = Command::new(cargo)
        .args(["test", "--workspace", "--features", CI_FEATURES])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start cargo test: {e}"))?;
    let (mut passed, mut failed) = (0, 0);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |word: &str| -> u64 {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim()
                                .trim_start_matches("ok. ")
                                .trim_start_matches("FAILED. ")
                                .strip_suffix(word)
                        })
                        .and_then(|n| n.trim().parse().ok())
                        .unwrap_or(0)
                };
                passed += count(" passed");
                failed += count(" failed");
            }
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() || failed > 0 {
        println!("tests: {passed} passed, {failed} failed");
        return Err(format!("cargo test failed ({status})"));
    }
    Ok((passed, failed))
}

fn ci() -> Result<(), String> {
    ensure_system_packages()?;
    let cargo = cargo();
    if cargo_tool("fmt", "rustfmt") {
        run(&cargo, &["fmt", "--all", "--check"], &[])?;
    } else {
        eprintln!("==> WARNING: rustfmt is not installed and cannot be installed here; format check skipped");
    }
    if cargo_tool("clippy", "clippy") {
        run(
            &cargo,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--features",
                CI_FEATURES,
                "--profile",
                PROFILE,
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )?;
    } else {
        eprintln!("==> WARNING: clippy is not installed and cannot be installed here; lint check skipped");
    }
    let (passed, failed) = test_and_count(&cargo)?;
    run(
        &cargo,
        &[
            "doc",
            "--workspace",
            "--no-deps",
            "--features",
            CI_FEATURES,
            "--profile",
            PROFILE,
        ],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    run(
        &cargo,
        &[
            "run",
            "-p",
            "state-examples",
            "--features",
            CI_FEATURES,
            "--bin",
            "bench",
            "--profile",
            PROFILE,
            "--",
            "--quick",
        ],
        &[],
    )?;
    package(&cargo)?;
    eprintln!("==> ci: fmt, clippy, tests, docs, bench harness and packaging are green");
    println!("tests: {passed} passed, {failed} failed");
    Ok(())
}

/// The crates.io packaging check. Every crate is packaged (manifest, metadata, file list,
/// dependency resolution); the crates that do not link RocksDB are also built from their
/// tarballs. Building state-rocksdb from its tarball would compile RocksDB a second time
/// (outside the workspace, the workspace's dependency profile does not apply), which
/// the CI time budget cannot afford; its sources are the ones just built and tested.
fn package(cargo: &str) -> Result<(), String> {
    // Cargo unpacks the workspace's own crates from a local overlay registry into
    // `$CARGO_HOME/registry/src/-<hash>/` and never refreshes a version it unpacked
    // before: a stale copy of an unreleased 0.1.0 would be verified instead of the
    // current sources. Remove those copies (crates.io's own directories are untouched).
    let home =
        std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    if let Ok(dirs) = std::fs::read_dir(format!("{home}/registry/src")) {
        for dir in dirs
            .flatten()
            .filter(|d| d.file_name().to_string_lossy().starts_with('-'))
        {
            if let Ok(crates) = std::fs::read_dir(dir.path()) {
                for c in crates
                    .flatten()
                    .filter(|c| c.file_name().to_string_lossy().starts_with("state-"))
                {
                    let _ = std::fs::remove_dir_all(c.path());
                }
            }
        }
    }
    run(cargo, &["package", "--workspace", "--allow-dirty", "--no-verify"], &[])?;
    // Cargo also treats compiled registry crates as immutable: an artifact of an older
    // state-api 0.1.0 in a reused target directory would count as fresh. Verify in a
    // throwaway target directory.
    let verify_dir = std::env::temp_dir().join(format!("state-package-verify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&verify_dir);
    let dir = verify_dir.to_string_lossy().into_owned();
    let args = [
        "package",
        "-p",
        "state-api",
        "-p",
        "state-heap",
        "-p",
        "state-fs",
        "-p",
        "state-memory",
        "-p",
        "state-timers",
        "--allow-dirty",
        "--target-dir",
        &dir,
    ];
    let result = run(cargo, &args, &[]);
    let _ = std::fs::remove_dir_all(&verify_dir);
    result
}

fn bench(args: &[String]) -> Result<(), String> {
    ensure_system_packages()?;
    let quick = args.iter().any(|a| a == "--quick");
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
    cmd.extend(args.iter().map(String::as_str));
    run(&cargo(), &cmd, &[])
}

fn demo(args: &[String]) -> Result<(), String> {
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
