//! The job's control plane: workers report to one [`CheckpointCoordinator`] in process 0
//! and hear back when checkpoints complete or abort.
//!
//! Within a process the messages travel over channels; between processes over one small
//! loopback TCP connection per process to process 0 (timely's own channels carry the
//! records). Every message is framed and checksummed with `state_api::framing`, and its
//! length is checked before anything is allocated.
//!
//! The coordinator triggers checkpoint `c` (the end of epoch `c`) once every worker has
//! written its result part of epoch `c` and checkpoint `c - 1` is resolved, so that the
//! part manifest it records (every part written so far: parts of an aborted checkpoint
//! are committed by the next one) is complete. Acknowledgements that arrive earlier wait.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use state_api::raw::framing::{decode_body, frame, unframe};
use state_api::{CheckpointCoordinator, CheckpointEvent, CheckpointMessage, Result, StateError};

const MAGIC: [u8; 8] = *b"\x89NXCTRL\n";
const VERSION: u32 = 1;
/// The largest control message accepted (an acknowledgement with inlined state).
const MAX_MESSAGE: u64 = 512 << 20;

/// A committed result part: one worker's lines of one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPart {
    /// The epoch (= checkpoint) that produced it.
    pub epoch: u64,
    /// Its path relative to the job directory.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its CRC32C.
    pub crc32c: u32,
}

/// From a worker to the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Up {
    /// A process joins (first message on its connection).
    Hello { process: u32 },
    /// An acknowledgement or decline of a subtask.
    Checkpoint(CheckpointMessage),
    /// A worker finished the result part of an epoch (`None`: it had no results).
    Part {
        epoch: u64,
        worker: u32,
        part: Option<ClusterPart>,
    },
}

/// From the coordinator to every worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Down {
    /// Start, restoring from this checkpoint (or fresh).
    Start { restore_from: Option<u64> },
    /// A checkpoint completed.
    Completed(u64),
    /// A checkpoint was aborted.
    Aborted(u64),
}

/// Writes one framed message.
pub fn send<T: Serialize>(stream: &mut TcpStream, msg: &T) -> Result<()> {
    let bytes = frame(&MAGIC, VERSION, msg, "control message")?;
    stream
        .write_all(&bytes)
        .map_err(|e| StateError::from_io("sending a control message", e))
}

/// Reads one framed message; `None` at a clean end of the stream.
pub fn receive<T: for<'de> Deserialize<'de>>(stream: &mut TcpStream, peer: &str) -> Result<Option<T>> {
    let mut header = [0u8; 20];
    match stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(StateError::from_io(format!("reading from {peer}"), e)),
    }
    let len = u64::from_be_bytes(header[12..20].try_into().unwrap_or([0; 8]));
    if len > MAX_MESSAGE {
        return Err(StateError::Corrupt {
            source_name: peer.to_string(),
            section: "control message".into(),
            detail: format!("length {len} exceeds {MAX_MESSAGE}"),
            source: None,
        });
    }
    let mut bytes = header.to_vec();
    bytes.resize(20 + len as usize + 4, 0);
    stream
        .read_exact(&mut bytes[20..])
        .map_err(|e| StateError::from_io(format!("reading from {peer}"), e))?;
    let (_, body) = unframe(&MAGIC, VERSION, &bytes, peer, "control message")?;
    decode_body(body, peer, "control message").map(Some)
}

/// Connects to process 0's control address, retrying for up to `patience`.
pub fn connect(addr: &str, patience: Duration) -> Result<TcpStream> {
    let deadline = Instant::now() + patience;
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(StateError::from_io(
                    format!("connecting to the coordinator at {addr}"),
                    e,
                ));
            }
        }
    }
}

/// Accepts one connection from each of processes `1..processes`; returns them by process.
pub fn accept(listener: &TcpListener, processes: u32, patience: Duration) -> Result<BTreeMap<u32, TcpStream>> {
    listener
        .set_nonblocking(true)
        .map_err(|e| StateError::from_io("configuring the control listener", e))?;
    let deadline = Instant::now() + patience;
    let mut peers = BTreeMap::new();
    while (peers.len() as u32) < processes.saturating_sub(1) {
        match listener.accept() {
            Ok((mut s, addr)) => {
                s.set_nonblocking(false)
                    .map_err(|e| StateError::from_io("configuring a control connection", e))?;
                let _ = s.set_nodelay(true);
                match receive::<Up>(&mut s, &addr.to_string())? {
                    Some(Up::Hello { process }) if process > 0 && process < processes => {
                        peers.insert(process, s);
                    }
                    other => {
                        return Err(StateError::InvalidArgument(format!(
                            "unexpected first control message from {addr}: {other:?}"
                        )));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(StateError::from_io(
                    format!("waiting for {} processes to connect", processes - 1),
                    e,
                ));
            }
        }
    }
    Ok(peers)
}

/// Forwards every message read from `stream` into `to` until the stream ends.
pub fn forward<T: for<'de> Deserialize<'de> + Send + 'static>(
    mut stream: TcpStream,
    peer: String,
    to: impl Fn(T) + Send + 'static,
) -> std::thread::JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        while let Some(msg) = receive::<T>(&mut stream, &peer)? {
            to(msg);
        }
        Ok(())
    })
}

/// What the coordinator loop reports when the job's last checkpoint resolved.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Checkpoints completed in this run.
    pub completed: u64,
    /// Checkpoints aborted in this run.
    pub aborted: u64,
    /// The part manifest of the last completed checkpoint.
    pub manifest: Vec<ClusterPart>,
    /// Whether the last epoch's checkpoint completed.
    pub finished: bool,
    /// Per checkpoint, from trigger to completion.
    pub durations: Vec<Duration>,
}

/// The engine data a checkpoint records: the next epoch and the part manifest.
pub fn engine_data(epoch: u64, manifest: &[ClusterPart]) -> Result<BTreeMap<String, Vec<u8>>> {
    let parts = postcard::to_stdvec(manifest).map_err(|e| StateError::serialization("parts", "engine data", e))?;
    Ok(BTreeMap::from([
        ("epoch".to_string(), epoch.to_be_bytes().to_vec()),
        ("parts".to_string(), parts),
    ]))
}

/// Reads [`engine_data`] back.
pub fn read_engine_data(engine: &BTreeMap<String, Vec<u8>>, checkpoint: u64) -> Result<(u64, Vec<ClusterPart>)> {
    let bad = |what: &str| StateError::Corrupt {
        source_name: format!("checkpoint {checkpoint}"),
        section: format!("engine data `{what}`"),
        detail: "missing or malformed".into(),
        source: None,
    };
    let epoch = engine
        .get("epoch")
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| bad("epoch"))?;
    let parts = engine
        .get("parts")
        .and_then(|b| postcard::from_bytes(b).ok())
        .ok_or_else(|| bad("parts"))?;
    Ok((epoch, parts))
}

/// The coordinator loop of process 0: feeds acknowledgements to `coordinator`,
/// triggers each epoch's checkpoint when its parts are in, and tells every worker
/// (`notify`) what completed or aborted. Returns when checkpoint `last` resolved.
pub fn coordinate(
    coordinator: &CheckpointCoordinator,
    up: Receiver<Up>,
    workers: u32,
    first: u64,
    last: u64,
    mut manifest: Vec<ClusterPart>,
    notify: impl Fn(Down),
) -> Result<Outcome> {
    let events = coordinator.subscribe();
    let mut outcome = Outcome::default();
    if first > last {
        // The restored checkpoint is the last one: the job had finished.
        outcome.manifest = manifest;
        outcome.finished = true;
        return Ok(outcome);
    }
    let mut parts: BTreeMap<u64, Vec<Option<ClusterPart>>> = BTreeMap::new();
    let mut waiting: BTreeMap<u64, Vec<CheckpointMessage>> = BTreeMap::new();
    let mut next = first;
    let mut current: Option<(u64, Instant)> = None;
    // A late or duplicate message is reported and dropped; it never stops the job.
    let deliver = |msg: CheckpointMessage| {
        let result = match msg {
            CheckpointMessage::Acknowledge(ack) => coordinator.acknowledge(ack).map(|_| ()),
            CheckpointMessage::Decline(d) => coordinator.decline(d),
        };
        if let Err(e) = result {
            eprintln!("nexmark-timely: {e}");
        }
    };
    loop {
        // Resolve the current checkpoint.
        while let Ok(event) = events.try_recv() {
            let (id, done) = match event {
                CheckpointEvent::Completed { checkpoint_id } => {
                    outcome.completed += 1;
                    outcome.manifest = manifest.clone();
                    (checkpoint_id, Down::Completed(checkpoint_id))
                }
                CheckpointEvent::Aborted { checkpoint_id, reason } => {
                    eprintln!("nexmark-timely: checkpoint {checkpoint_id} aborted: {reason:?}");
                    outcome.aborted += 1;
                    (checkpoint_id, Down::Aborted(checkpoint_id))
                }
            };
            if let Some((c, started)) = current
                && c == id
            {
                outcome.durations.push(started.elapsed());
                current = None;
            }
            notify(done);
            if id == last {
                outcome.finished = matches!(done, Down::Completed(_));
                return Ok(outcome);
            }
        }
        // Trigger the next checkpoint once all its parts are in.
        if current.is_none() && parts.get(&next).is_some_and(|p| p.len() as u32 == workers) {
            let epoch_parts = parts.remove(&next).unwrap_or_default();
            manifest.extend(epoch_parts.into_iter().flatten());
            coordinator.trigger_with(next, engine_data(next, &manifest)?)?;
            current = Some((next, Instant::now()));
            for msg in waiting.remove(&next).unwrap_or_default() {
                deliver(msg);
            }
            next += 1;
            continue;
        }
        match up.recv_timeout(Duration::from_millis(20)) {
            Ok(Up::Part { epoch, part, .. }) => parts.entry(epoch).or_default().push(part),
            Ok(Up::Checkpoint(msg)) => {
                let id = match &msg {
                    CheckpointMessage::Acknowledge(a) => a.checkpoint_id,
                    CheckpointMessage::Decline(d) => d.checkpoint_id,
                };
                if current.is_some_and(|(c, _)| c == id) {
                    deliver(msg);
                } else {
                    waiting.entry(id).or_default().push(msg);
                }
            }
            Ok(Up::Hello { .. }) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(StateError::InvalidArgument(format!(
                    "every worker stopped before checkpoint {last} resolved"
                )));
            }
        }
    }
}

/// The senders of every local worker's notices, shared with the network threads.
pub type Notices = Arc<Mutex<Vec<Sender<Down>>>>;

/// Sends `msg` to every local worker.
pub fn broadcast(notices: &Notices, msg: Down) {
    if let Ok(list) = notices.lock() {
        for s in list.iter() {
            let _ = s.send(msg);
        }
    }
}
