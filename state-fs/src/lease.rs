//! Exclusive ownership of a job's checkpoint directory: a lease with a fencing token.
//!
//! The model is Delta Lake's commit log (and SlateDB's writer epochs): ownership is an
//! append-only sequence of epoch files `<job>/_lease/<epoch>`, each created with a
//! **conditional create** (`O_EXCL` on a file system, `If-None-Match: *` on S3), so of
//! two processes taking over the same stale lease exactly one creates the next epoch.
//! The newest epoch file names the owner (owner token, host, PID and its start time)
//! and carries a heartbeat that a background thread renews.
//!
//! - **Opening** when the newest lease is live fails with [`StateError::LeaseHeld`]
//!   naming the owner. A lease is live unless it was released (the owner dropped its
//!   storage), or its owner ran on this host and its process is gone (a `kill -9` is
//!   taken over at once), or its heartbeat is older than its time to live (an owner on
//!   another host: clocks are assumed to agree within the time to live).
//! - **Fencing**: the epoch is a fencing token. Before committing a checkpoint or
//!   deleting one, the owner checks that no newer epoch exists; a job whose lease was
//!   taken over (it stalled longer than the time to live, for instance) gets
//!   [`StateError::Fenced`] and writes nothing more. The check and the commit are two
//!   requests, so a takeover between them is possible; the window is one request long.
//! - HDFS has no conditional create in opendal: there, creation is a check and a write,
//!   and two processes starting within one request of each other can both succeed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use state_api::process::{Liveness, ProcessId, hostname};
use state_api::raw::framing::{decode_body, frame, unframe};
use state_api::{Result, StateError};

use crate::store::{ObjectStore, write_atomically};

const MAGIC: [u8; 8] = *b"\x89RSLEAS\n";
const VERSION: u32 = 1;

/// How a job owns its checkpoint directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOptions {
    /// How long a lease whose owner stopped renewing it stays valid for owners on other
    /// hosts (default 30 s).
    pub ttl: Duration,
    /// How often the owner renews it (default 10 s; must be below `ttl`).
    pub heartbeat: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            ttl: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
        }
    }
}

impl LeaseOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.heartbeat.is_zero() || self.heartbeat >= self.ttl {
            return Err(StateError::InvalidArgument(format!(
                "lease heartbeat {:?} must be above zero and below the time to live {:?}",
                self.heartbeat, self.ttl
            )));
        }
        Ok(())
    }
}

/// One epoch of ownership, as stored in `_lease/<epoch>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The fencing token: one more than the previous owner's.
    pub epoch: u64,
    /// A token unique to the owning storage instance.
    pub owner: String,
    /// The owner's host name.
    pub host: String,
    /// The owner's process.
    pub process: ProcessId,
    /// When the owner last renewed the lease (ms since the Unix epoch).
    pub heartbeat_millis: u64,
    /// The owner's time to live (ms).
    pub ttl_millis: u64,
    /// Whether the owner gave the lease up.
    pub released: bool,
}

impl LeaseRecord {
    /// Encodes with the common framing (magic, version, length, postcard, CRC32C).
    pub fn encode(&self) -> Result<Vec<u8>> {
        frame(&MAGIC, VERSION, self, "lease")
    }

    /// Decodes and verifies; `name` names the file in errors.
    pub fn decode(bytes: &[u8], name: &str) -> Result<Self> {
        let (_, body) = unframe(&MAGIC, VERSION, bytes, name, "lease")?;
        decode_body(body, name, "lease")
    }

    /// Whether the owner still holds the lease at `now_millis`, seen from this host.
    pub fn is_live(&self, now_millis: u64) -> bool {
        if self.released {
            return false;
        }
        if self.host == hostname() {
            match self.process.liveness() {
                Liveness::Gone => return false,
                Liveness::Running => return true,
                Liveness::Unknown => {}
            }
        }
        now_millis.saturating_sub(self.heartbeat_millis) <= self.ttl_millis
    }

    /// The owner, for error messages.
    pub fn describe(&self, now_millis: u64) -> String {
        format!(
            "owner `{}` on host `{}`, pid {}, epoch {}, last heartbeat {} ms ago (time to live {} ms)",
            self.owner,
            self.host,
            self.process.pid,
            self.epoch,
            now_millis.saturating_sub(self.heartbeat_millis),
            self.ttl_millis
        )
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The lease directory of a job directory `prefix` (ending in `/`).
pub(crate) fn lease_dir(prefix: &str) -> String {
    format!("{prefix}{}", crate::layout::LEASE_DIR)
}

fn epoch_file(dir: &str, epoch: u64) -> String {
    format!("{dir}{epoch:020}")
}

/// Epochs present under `dir`, ascending.
fn epochs(store: &dyn ObjectStore, dir: &str) -> Result<Vec<u64>> {
    let mut out: Vec<u64> = store
        .list(dir)?
        .iter()
        .filter_map(|n| (n.len() == 20).then(|| n.parse().ok()).flatten())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Reads the newest lease record under `dir`, if any (`Err` when it cannot be decoded).
pub fn newest_lease(store: &dyn ObjectStore, dir: &str) -> Result<Option<LeaseRecord>> {
    let Some(&epoch) = epochs(store, dir)?.last() else {
        return Ok(None);
    };
    let path = epoch_file(dir, epoch);
    LeaseRecord::decode(&store.read_all(&path)?, &path).map(Some)
}

/// The epoch of an owner that replaced the one holding `ours`, or 0: a newer epoch
/// file, or our own epoch file naming another owner (the directory was wiped and the
/// epochs started over).
fn newer_owner(store: &dyn ObjectStore, dir: &str, ours: &Mutex<LeaseRecord>) -> Result<u64> {
    let (epoch, owner) = {
        let r = ours.lock().unwrap_or_else(|e| e.into_inner());
        (r.epoch, r.owner.clone())
    };
    let newest = epochs(store, dir)?.last().copied().unwrap_or(0);
    if newest > epoch {
        return Ok(newest);
    }
    let path = epoch_file(dir, epoch);
    match store.read_all(&path).and_then(|b| LeaseRecord::decode(&b, &path)) {
        Ok(r) if r.owner != owner => Ok(epoch),
        _ => Ok(0),
    }
}

/// A held lease; renewed by a background thread, released when dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    store: Arc<dyn ObjectStore>,
    dir: String,
    location: String,
    epoch: u64,
    record: Arc<Mutex<LeaseRecord>>,
    /// A newer epoch seen by the heartbeat (0: none).
    fenced_by: Arc<AtomicU64>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Lease {
    /// Takes the lease of the job directory `prefix`, or fails with
    /// [`StateError::LeaseHeld`] when a live owner holds it.
    pub(crate) fn acquire(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        location: &str,
        options: &LeaseOptions,
    ) -> Result<Lease> {
        let dir = lease_dir(prefix);
        let me = ProcessId::current();
        let host = hostname();
        let owner = format!(
            "{host}/{}/{}",
            me.pid,
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        // A newest file that does not decode may be a creation in flight (a file system
        // writes after creating): look again a few times before treating it as stale.
        let mut undecodable = 0;
        loop {
            let existing = epochs(store.as_ref(), &dir)?;
            let newest = existing.last().copied().unwrap_or(0);
            if newest > 0 {
                let path = epoch_file(&dir, newest);
                let now = now_millis();
                match store.read_all(&path).and_then(|b| LeaseRecord::decode(&b, &path)) {
                    Ok(rec) if rec.is_live(now) => {
                        return Err(StateError::LeaseHeld {
                            location: location.to_string(),
                            owner: rec.describe(now),
                        });
                    }
                    Ok(rec) => {
                        tracing::info!(location, previous = %rec.describe(now), "taking over a released or stale lease");
                    }
                    Err(e) if e.is_damage() && undecodable < 3 => {
                        undecodable += 1;
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    Err(e) if e.is_damage() => {
                        tracing::warn!(location, file = %path, error = %e, "unreadable lease; taking it over");
                    }
                    Err(e) => return Err(e),
                }
            }
            let epoch = newest + 1;
            let record = LeaseRecord {
                epoch,
                owner: owner.clone(),
                host: host.clone(),
                process: me,
                heartbeat_millis: now_millis(),
                ttl_millis: options.ttl.as_millis() as u64,
                released: false,
            };
            if !store.create_new(&epoch_file(&dir, epoch), record.encode()?)? {
                // Another process created this epoch first: look at it again.
                continue;
            }
            // A listing that raced with another owner's creation may have missed a newer
            // epoch: if one exists now, that owner holds the lease, not us.
            if let Some(&newer) = epochs(store.as_ref(), &dir)?.last()
                && newer > epoch
            {
                let path = epoch_file(&dir, newer);
                let owner = store
                    .read_all(&path)
                    .and_then(|b| LeaseRecord::decode(&b, &path))
                    .map(|r| r.describe(now_millis()))
                    .unwrap_or_else(|_| format!("epoch {newer}"));
                return Err(StateError::LeaseHeld {
                    location: location.to_string(),
                    owner,
                });
            }
            // Epochs before the previous one (the previous one stays, so that a
            // concurrent listing, which may miss files created or deleted meanwhile,
            // always sees an epoch no one touches and can never start over at 1), and
            // renewals a killed owner left half done.
            let leftovers = store
                .list(&dir)?
                .into_iter()
                .filter(|n| n.ends_with(crate::layout::IN_PROGRESS))
                .map(|n| format!("{dir}{n}"));
            let older = existing.iter().filter(|&&old| old + 1 < epoch);
            for path in older.map(|&old| epoch_file(&dir, old)).chain(leftovers) {
                if let Err(e) = store.delete(&path) {
                    tracing::warn!(location, file = %path, error = %e, "could not delete an old lease file");
                }
            }
            tracing::info!(location, epoch, owner = %owner, "lease acquired");
            return Ok(Self::start(store, dir, location.to_string(), record, options.heartbeat));
        }
    }

    fn start(
        store: Arc<dyn ObjectStore>,
        dir: String,
        location: String,
        record: LeaseRecord,
        heartbeat: Duration,
    ) -> Lease {
        let epoch = record.epoch;
        let record = Arc::new(Mutex::new(record));
        let fenced_by = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = {
            let (store, dir, location, record, fenced_by) = (
                Arc::clone(&store),
                dir.clone(),
                location.clone(),
                Arc::clone(&record),
                Arc::clone(&fenced_by),
            );
            std::thread::Builder::new()
                .name("state-fs-lease".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(heartbeat) {
                        match newer_owner(store.as_ref(), &dir, &record) {
                            Ok(newer) if newer > 0 => {
                                tracing::error!(location = %location, epoch, newer, "lease taken over by a newer owner; fenced");
                                fenced_by.store(newer, Ordering::SeqCst);
                                return;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(location = %location, error = %e, "could not check the lease");
                                continue;
                            }
                        }
                        let bytes = {
                            let mut r = record.lock().unwrap_or_else(|e| e.into_inner());
                            r.heartbeat_millis = now_millis();
                            r.encode()
                        };
                        if let Err(e) = bytes.and_then(|b| write_atomically(store.as_ref(), &epoch_file(&dir, epoch), b)) {
                            tracing::warn!(location = %location, error = %e, "could not renew the lease");
                        }
                    }
                })
                .ok()
        };
        if thread.is_none() {
            tracing::warn!(location = %location, "could not start the lease heartbeat; the lease expires after its time to live");
        }
        Lease {
            store,
            dir,
            location,
            epoch,
            record,
            fenced_by,
            stop: Some(stop),
            thread,
        }
    }

    /// The fencing token.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Fails with [`StateError::Fenced`] when a newer owner exists.
    pub(crate) fn check(&self) -> Result<()> {
        let seen = self.fenced_by.load(Ordering::SeqCst);
        let newer = if seen >= self.epoch {
            seen
        } else {
            newer_owner(self.store.as_ref(), &self.dir, &self.record)?
        };
        if newer >= self.epoch {
            self.fenced_by.store(newer, Ordering::SeqCst);
            return Err(StateError::Fenced {
                location: self.location.clone(),
                epoch: self.epoch,
                newer,
            });
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.check().is_err() {
            return; // Someone else owns it now: leave their lease alone.
        }
        let bytes = {
            let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
            r.released = true;
            r.heartbeat_millis = now_millis();
            r.encode()
        };
        match bytes.and_then(|b| write_atomically(self.store.as_ref(), &epoch_file(&self.dir, self.epoch), b)) {
            Ok(()) => tracing::info!(location = %self.location, epoch = self.epoch, "lease released"),
            Err(e) => {
                tracing::warn!(location = %self.location, error = %e, "could not release the lease; it expires after its time to live")
            }
        }
    }
}
