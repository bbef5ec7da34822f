//! Debian packages the build needs (the C toolchain for the -sys crates).

use std::process::Command;

use crate::exec::run;

/// Debian packages the workspace needs to build (the C toolchain for -sys crates).
const SYSTEM_PACKAGES: &[&str] = &["pkg-config", "g++", "libclang-dev"];

/// Installs the Debian packages the build needs when they are missing (CI machines and
/// fresh developer machines); does nothing where they are present.
pub fn ensure_system_packages() -> Result<(), String> {
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
