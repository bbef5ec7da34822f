//! Comparing two savepoints or checkpoints: operators and states on one side only,
//! changed schemas, and per state the entries ((key, namespace) pairs) only in one or
//! with different contents, with a few examples decoded by their schemas. TTL
//! timestamps (last-access times) are not compared.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Value, json};
use state_api::raw::StateMeta;
use state_api::raw::format::{RawEntry, put_bytes};
use state_api::{Result, Schema};

use crate::json::to_json;
use crate::reader::SavepointReader;

/// How many differing entries a [`StateDiff`] shows.
const EXAMPLES: usize = 5;

/// What differs between two snapshots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    /// Operators only in the first.
    pub operators_only_in_a: Vec<String>,
    /// Operators only in the second.
    pub operators_only_in_b: Vec<String>,
    /// Every keyed state of the operators both hold.
    pub states: Vec<StateDiff>,
}

impl Diff {
    /// Whether the two hold the same operators, states and entries.
    pub fn is_same(&self) -> bool {
        self.operators_only_in_a.is_empty()
            && self.operators_only_in_b.is_empty()
            && self.states.iter().all(|s| s.change == "same")
    }
}

/// One keyed state compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateDiff {
    /// The operator.
    pub operator: String,
    /// The state.
    pub state: String,
    /// `same`, `entries differ`, `schema changed`, `only in A` or `only in B`.
    pub change: String,
    /// Entries in the first.
    pub entries_a: u64,
    /// Entries in the second.
    pub entries_b: u64,
    /// Entries only in the first.
    pub only_in_a: u64,
    /// Entries only in the second.
    pub only_in_b: u64,
    /// Entries in both with other contents.
    pub changed: u64,
    /// A few differing entries, decoded: `{"side", "key", "namespace"}`.
    pub examples: Vec<Value>,
}

/// (key bytes, namespace bytes) -> contents bytes (timestamps left out).
type Contents = BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>;

fn contents(entry: &RawEntry<'_>) -> ((Vec<u8>, Vec<u8>), Vec<u8>) {
    let mut out = Vec::new();
    let (key, namespace) = match entry {
        RawEntry::Value {
            key, namespace, value, ..
        } => {
            put_bytes(&mut out, value);
            (key, namespace)
        }
        RawEntry::List { key, namespace, items } => {
            for (_, v) in items {
                put_bytes(&mut out, v);
            }
            (key, namespace)
        }
        RawEntry::Map {
            key,
            namespace,
            entries,
        } => {
            let mut sorted: Vec<(&[u8], &[u8])> = entries.iter().map(|(uk, _, v)| (*uk, *v)).collect();
            sorted.sort_unstable();
            for (uk, v) in sorted {
                put_bytes(&mut out, uk);
                put_bytes(&mut out, v);
            }
            (key, namespace)
        }
    };
    ((key.to_vec(), namespace.to_vec()), out)
}

fn read(reader: &SavepointReader, op: &str, state: &str) -> Result<(Contents, Schema)> {
    let mut map = Contents::new();
    let mut key_schema = Schema::Unit;
    reader.for_each_entry(op, state, |e| {
        key_schema = e.key_schema.clone();
        let (k, v) = contents(e.entry);
        map.insert(k, v);
        Ok(())
    })?;
    Ok((map, key_schema))
}

fn example(side: &str, key: &(Vec<u8>, Vec<u8>), key_schema: &Schema, meta: &StateMeta) -> Value {
    json!({
        "side": side,
        "key": to_json(key_schema, &key.0),
        "namespace": to_json(&meta.namespace_schema, &key.1),
    })
}

fn compare(a: &SavepointReader, b: &SavepointReader, op: &str, ma: &StateMeta, mb: &StateMeta) -> Result<StateDiff> {
    let (ca, key_schema) = read(a, op, &ma.name)?;
    let (cb, _) = read(b, op, &mb.name)?;
    let mut d = StateDiff {
        operator: op.to_string(),
        state: ma.name.clone(),
        change: String::new(),
        entries_a: ca.len() as u64,
        entries_b: cb.len() as u64,
        only_in_a: 0,
        only_in_b: 0,
        changed: 0,
        examples: Vec::new(),
    };
    for (k, v) in &ca {
        let side = match cb.get(k) {
            None => {
                d.only_in_a += 1;
                "only in A"
            }
            Some(w) if w != v => {
                d.changed += 1;
                "changed"
            }
            Some(_) => continue,
        };
        if d.examples.len() < EXAMPLES {
            d.examples.push(example(side, k, &key_schema, ma));
        }
    }
    for k in cb.keys().filter(|k| !ca.contains_key(*k)) {
        d.only_in_b += 1;
        if d.examples.len() < EXAMPLES {
            d.examples.push(example("only in B", k, &key_schema, mb));
        }
    }
    let schemas_equal = ma.kind == mb.kind
        && ma.value_schema == mb.value_schema
        && ma.namespace_schema == mb.namespace_schema
        && ma.user_key_schema == mb.user_key_schema;
    d.change = if !schemas_equal {
        "schema changed".into()
    } else if d.only_in_a + d.only_in_b + d.changed > 0 {
        "entries differ".into()
    } else {
        "same".into()
    };
    Ok(d)
}

fn only(operator: &str, state: &str, side: &str, entries: u64) -> StateDiff {
    let (entries_a, entries_b) = if side == "only in A" {
        (entries, 0)
    } else {
        (0, entries)
    };
    StateDiff {
        operator: operator.to_string(),
        state: state.to_string(),
        change: side.to_string(),
        entries_a,
        entries_b,
        only_in_a: entries_a,
        only_in_b: entries_b,
        changed: 0,
        examples: Vec::new(),
    }
}

fn count(reader: &SavepointReader, op: &str, state: &str) -> Result<u64> {
    let mut n = 0;
    reader.for_each_entry(op, state, |_| {
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// Compares `a` with `b` (keyed state of canonical streams).
pub fn diff(a: &SavepointReader, b: &SavepointReader) -> Result<Diff> {
    let ids = |r: &SavepointReader| -> Vec<String> {
        r.metadata()
            .snapshot
            .operators
            .iter()
            .map(|o| o.id.to_string())
            .collect()
    };
    let (ia, ib) = (ids(a), ids(b));
    let mut out = Diff {
        operators_only_in_a: ia.iter().filter(|o| !ib.contains(o)).cloned().collect(),
        operators_only_in_b: ib.iter().filter(|o| !ia.contains(o)).cloned().collect(),
        states: Vec::new(),
    };
    for op in ia.iter().filter(|o| ib.contains(o)) {
        let (sa, sb) = (a.keyed_states(op)?, b.keyed_states(op)?);
        for ma in &sa {
            match sb.iter().find(|m| m.name == ma.name) {
                Some(mb) => out.states.push(compare(a, b, op, ma, mb)?),
                None => out
                    .states
                    .push(only(op, &ma.name, "only in A", count(a, op, &ma.name)?)),
            }
        }
        for mb in sb.iter().filter(|m| !sa.iter().any(|ma| ma.name == m.name)) {
            out.states
                .push(only(op, &mb.name, "only in B", count(b, op, &mb.name)?));
        }
    }
    Ok(out)
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in &self.operators_only_in_a {
            writeln!(f, "operator `{o}`: only in A")?;
        }
        for o in &self.operators_only_in_b {
            writeln!(f, "operator `{o}`: only in B")?;
        }
        for s in &self.states {
            write!(
                f,
                "operator `{}` state `{}`: {} ({} / {} entries",
                s.operator, s.state, s.change, s.entries_a, s.entries_b
            )?;
            if s.change != "same" {
                write!(
                    f,
                    "; {} only in A, {} only in B, {} changed",
                    s.only_in_a, s.only_in_b, s.changed
                )?;
            }
            writeln!(f, ")")?;
            for e in &s.examples {
                writeln!(f, "    {e}")?;
            }
        }
        write!(f, "{}", if self.is_same() { "same" } else { "different" })
    }
}
