//! `state-tool`: inspect, verify and dump savepoints and checkpoints.
//!
//! ```text
//! state-tool inspect <ROOT>/<savepoint>            operators, states, streams, sizes
//! state-tool verify  <ROOT>/<job>/chk-<n>          every file's size and CRC, every checksum
//! state-tool dump    <URI> --state NAME            entries as JSON lines
//! state-tool diff    <URI-A> <URI-B>               operators, states and entries that differ
//! ```
//! Every command takes `--json` for scripts. `verify` exits with 1 when anything is
//! damaged, `diff` when the two differ; any error exits with 2.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use state_api::raw::format::RawEntry;
use state_savepoint::json::to_json;
use state_savepoint::{SavepointReader, diff, inspect, verify};

#[derive(Parser)]
#[command(
    name = "state-tool",
    version,
    about = "Inspect, verify and dump state-backends savepoints and checkpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Operators, states (types, schemas, TTL, entries), streams and key groups, shared files.
    Inspect {
        /// `<root>/<savepoint>` or `<root>/<job>/chk-<n>` (a path, file://, s3://, hdfs://).
        uri: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Checks every file's size and CRC32C and every section's checksum; exit code 1 if damaged.
    Verify {
        /// `<root>/<savepoint>` or `<root>/<job>/chk-<n>`.
        uri: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Compares two savepoints or checkpoints: operators, states, schemas and entries; exit code 1 if they differ.
    Diff {
        /// The first.
        a: String,
        /// The second.
        b: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Prints the entries of one keyed state as JSON lines, decoded by the stored schemas
    /// (hex where a type is not traced).
    Dump {
        /// `<root>/<savepoint>` or `<root>/<job>/chk-<n>`.
        uri: String,
        /// The state's name.
        #[arg(long)]
        state: String,
        /// The operator (may be left out when there is one).
        #[arg(long)]
        operator: Option<String>,
        /// Stop after this many entries.
        #[arg(long)]
        limit: Option<u64>,
    },
}

fn entry_json(e: &state_savepoint::RawKeyedEntry<'_>) -> Value {
    let m = e.meta;
    let ttl = m.ttl.is_some();
    let mut out = serde_json::Map::new();
    out.insert("key_group".into(), json!(e.key_group));
    let (key, namespace) = match e.entry {
        RawEntry::Value { key, namespace, .. }
        | RawEntry::List { key, namespace, .. }
        | RawEntry::Map { key, namespace, .. } => (key, namespace),
    };
    out.insert("key".into(), to_json(e.key_schema, key));
    out.insert("namespace".into(), to_json(&m.namespace_schema, namespace));
    match e.entry {
        RawEntry::Value { value, timestamp, .. } => {
            // A timer queue's entries are timers: their value is the firing time.
            let timer = [state_timers::EVENT_TIME, state_timers::PROCESSING_TIME]
                .contains(&m.name.as_str())
                .then(|| state_timers::timer_of(e.entry, e.key_group, &m.name).ok().flatten())
                .flatten();
            match timer {
                Some(t) => out.insert("timestamp".into(), json!(t.timestamp)),
                None => out.insert("value".into(), to_json(&m.value_schema, value)),
            };
            if ttl {
                out.insert("timestamp".into(), json!(timestamp));
            }
        }
        RawEntry::List { items, .. } => {
            let items: Vec<Value> = items
                .iter()
                .map(|(ts, v)| {
                    let v = to_json(&m.value_schema, v);
                    if ttl { json!({ "value": v, "timestamp": ts }) } else { v }
                })
                .collect();
            out.insert("elements".into(), Value::Array(items));
        }
        RawEntry::Map { entries, .. } => {
            let unit = state_api::Schema::Unit;
            let uk_schema = m.user_key_schema.as_ref().unwrap_or(&unit);
            let items: Vec<Value> = entries
                .iter()
                .map(|(uk, ts, v)| {
                    let mut o = json!({ "user_key": to_json(uk_schema, uk), "value": to_json(&m.value_schema, v) });
                    if ttl {
                        o["timestamp"] = json!(ts);
                    }
                    o
                })
                .collect();
            out.insert("entries".into(), Value::Array(items));
        }
    }
    Value::Object(out)
}

fn run(cli: Cli) -> state_api::Result<ExitCode> {
    match cli.command {
        Command::Inspect { uri, json } => {
            let reader = SavepointReader::open(&uri)?;
            let report = inspect(&reader)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print!("{report}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { uri, json } => {
            let reader = SavepointReader::open(&uri)?;
            let v = verify(&reader);
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("{v}");
            }
            Ok(if v.is_intact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Diff { a, b, json } => {
            let d = diff(&SavepointReader::open(&a)?, &SavepointReader::open(&b)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
            } else {
                println!("{d}");
            }
            Ok(if d.is_same() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Dump {
            uri,
            state,
            operator,
            limit,
        } => {
            let reader = SavepointReader::open(&uri)?;
            let operator = match operator {
                Some(op) => op,
                None => {
                    let ops = &reader.metadata().snapshot.operators;
                    match ops.as_slice() {
                        [one] => one.id.to_string(),
                        _ => {
                            return Err(state_api::StateError::InvalidArgument(format!(
                                "{} operators: name one with --operator ({})",
                                ops.len(),
                                ops.iter().map(|o| o.id.to_string()).collect::<Vec<_>>().join(", ")
                            )));
                        }
                    }
                }
            };
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let mut n = 0u64;
            let result = reader.for_each_entry(&operator, &state, |e| {
                if limit.is_some_and(|l| n >= l) {
                    return Ok(());
                }
                n += 1;
                writeln!(out, "{}", entry_json(&e)).map_err(|e| state_api::StateError::from_io("writing to stdout", e))
            });
            match result {
                // A closed pipe (`| head`) ends the dump quietly.
                Err(state_api::StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("state-tool: {e}");
            ExitCode::from(2)
        }
    }
}
