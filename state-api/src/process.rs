//! Who is running: this host's name and whether a process still runs, for files that a
//! crashed process leaves behind (working directories, checkpoint-directory leases).
//!
//! A process is identified by its PID and its start time (Linux `/proc/<pid>/stat`
//! field 22, in clock ticks since boot), so a PID reused by another process is not
//! mistaken for the one that wrote the file. Where `/proc` is not available the answer
//! is "unknown" (`None`), and callers must then keep what may still be in use.
//!
//! ```
//! use state_api::process::{ProcessId, Liveness};
//! let me = ProcessId::current();
//! assert_eq!(me.liveness(), Liveness::Running);
//! assert!(!state_api::process::hostname().is_empty());
//! ```

use std::path::Path;

/// A process: its PID and, where known, its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessId {
    /// The PID.
    pub pid: u32,
    /// Start time in clock ticks since boot (`0` when unknown).
    pub start_ticks: u64,
}

/// Whether a process still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It runs (or a process with its PID runs and its start time is unknown).
    Running,
    /// It has ended.
    Gone,
    /// This platform cannot tell.
    Unknown,
}

impl ProcessId {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        ProcessId {
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
        }
    }

    /// A process known by its PID only (start time unknown).
    pub fn from_pid(pid: u32) -> Self {
        ProcessId { pid, start_ticks: 0 }
    }

    /// Whether this process still runs on this host.
    pub fn liveness(&self) -> Liveness {
        if self.pid == std::process::id() {
            return if self.start_ticks == 0 || start_ticks(self.pid) == Some(self.start_ticks) {
                Liveness::Running
            } else {
                Liveness::Gone
            };
        }
        if !Path::new("/proc/self").exists() {
            return Liveness::Unknown;
        }
        match start_ticks(self.pid) {
            None => Liveness::Gone,
            Some(t) if self.start_ticks != 0 && t != self.start_ticks => Liveness::Gone,
            Some(_) => Liveness::Running,
        }
    }
}

/// The start time of `pid` in clock ticks since boot, if it runs and `/proc` exists.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so count the
    // fields after the last `)`. starttime is field 22 overall, the 20th after comm.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This host's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `"unknown"`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_child_is_gone_and_a_reused_start_time_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        if Path::new("/proc/self").exists() {
            assert_eq!(ProcessId::from_pid(pid).liveness(), Liveness::Gone);
            let me = ProcessId::current();
            assert_ne!(me.start_ticks, 0);
            let impostor = ProcessId {
                pid: me.pid,
                start_ticks: me.start_ticks + 1,
            };
            assert_eq!(impostor.liveness(), Liveness::Gone);
        }
    }
}
