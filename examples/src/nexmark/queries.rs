//! Nexmark Q3, Q5, Q8 and Q11 as keyed operators, written once against `state-api`
//! (keyed state and the timer service) and run unchanged on every backend.

use std::collections::BTreeMap;

use state_api::{
    KeyedStateBackend, ListStateDescriptor, ListStateHandle, MapStateDescriptor, MapStateHandle,
    ReducingStateDescriptor, ReducingStateHandle, Result, TimerQueue, TimerService, ValueStateDescriptor,
    ValueStateHandle,
};
use state_timers::InternalTimerService;

use super::events::{Auction, Bid, Event, Person};

/// Window size of Q5's sliding windows and Q8's tumbling windows (ms).
pub const WINDOW_MS: i64 = 10_000;
/// Q5's slide (ms).
pub const SLIDE_MS: i64 = 2_000;
/// Q11's session gap (ms).
pub const SESSION_GAP_MS: i64 = 10_000;
/// Q3's auction category and seller states.
pub const Q3_CATEGORY: u64 = 10;
pub const Q3_STATES: [&str; 3] = ["or", "id", "ca"];

/// The timer service every query uses: keys are person, auction or bidder ids, the
/// namespace a window (or session) start.
pub type Timers<Q> = InternalTimerService<u64, i64, Q>;

/// Which query runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Q3,
    Q5,
    Q8,
    Q11,
}

impl QueryKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q3" => Some(QueryKind::Q3),
            "q5" => Some(QueryKind::Q5),
            "q8" => Some(QueryKind::Q8),
            "q11" => Some(QueryKind::Q11),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QueryKind::Q3 => "q3",
            QueryKind::Q5 => "q5",
            QueryKind::Q8 => "q8",
            QueryKind::Q11 => "q11",
        }
    }

    /// The `n` results that matter most: Q5's hottest auctions (most bids in a window),
    /// Q11's longest sessions (most bids), else the first in order.
    pub fn top(self, results: &[String], n: usize) -> Vec<String> {
        let measure = |line: &String| -> u64 {
            let fields: Vec<&str> = line.split(',').collect();
            let at = match self {
                QueryKind::Q5 => fields.len().checked_sub(1),
                QueryKind::Q11 => Some(2),
                QueryKind::Q3 | QueryKind::Q8 => None,
            };
            at.and_then(|i| fields.get(i)).and_then(|f| f.parse().ok()).unwrap_or(0)
        };
        let mut sorted: Vec<&String> = results.iter().collect();
        sorted.sort_by(|a, b| measure(b).cmp(&measure(a)).then_with(|| a.cmp(b)));
        sorted.into_iter().take(n).cloned().collect()
    }
}

/// A query's registered states.
pub enum Query {
    /// Persons ⋈ auctions by seller (unbounded keyed state, no timers).
    Q3 {
        person: ValueStateHandle<(String, String, String)>,
        pending: ListStateHandle<u64>,
    },
    /// Hot items: bids per auction per sliding window; the top auctions per window.
    Q5 {
        count: ValueStateHandle<u64, i64>,
        closing: BTreeMap<i64, (u64, Vec<u64>)>,
    },
    /// New users: persons who opened an auction in the tumbling window they joined in.
    Q8 {
        joined: ValueStateHandle<String, i64>,
        sold: ValueStateHandle<bool, i64>,
    },
    /// User sessions: bids per bidder per session window (gap 10 s), merged as bids
    /// come, as Flink's merging windows do: the key's windows (start → end) and a
    /// count per window namespace, whose namespaces are merged when windows merge.
    Q11 {
        windows: MapStateHandle<i64, i64>,
        count: ReducingStateHandle<u64, i64>,
    },
}

fn window_start(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

impl Query {
    /// Registers the query's states (idempotent: also after a restore).
    pub fn open<B: KeyedStateBackend<Key = u64>>(kind: QueryKind, b: &mut B) -> Result<Self> {
        Ok(match kind {
            QueryKind::Q3 => Query::Q3 {
                person: b.register(ValueStateDescriptor::new("q3-person"))?,
                pending: b.register(ListStateDescriptor::new("q3-pending-auctions"))?,
            },
            QueryKind::Q5 => Query::Q5 {
                count: b.register(ValueStateDescriptor::new("q5-bids").in_namespace::<i64>())?,
                closing: BTreeMap::new(),
            },
            QueryKind::Q8 => Query::Q8 {
                joined: b.register(ValueStateDescriptor::new("q8-joined").in_namespace::<i64>())?,
                sold: b.register(ValueStateDescriptor::new("q8-sold").in_namespace::<i64>())?,
            },
            QueryKind::Q11 => Query::Q11 {
                windows: b.register(MapStateDescriptor::new("q11-windows"))?,
                count: b.register(
                    ReducingStateDescriptor::new("q11-count", |a: &u64, b: &u64| a + b).in_namespace::<i64>(),
                )?,
            },
        })
    }

    /// Processes one event.
    pub fn process<B, Q>(&mut self, b: &mut B, t: &mut Timers<Q>, e: &Event, out: &mut Vec<String>) -> Result<()>
    where
        B: KeyedStateBackend<Key = u64>,
        Q: TimerQueue<B>,
    {
        match (self, e) {
            (Query::Q3 { person, pending }, Event::Person(p)) if Q3_STATES.contains(&p.state.as_str()) => {
                b.set_current_key(&p.id)?;
                b.value(person)
                    .update((p.name.clone(), p.city.clone(), p.state.clone()))?;
                for auction in b.list(pending).get()? {
                    out.push(q3_line(p, auction));
                }
                b.list(pending).clear()
            }
            (Query::Q3 { person, pending }, Event::Auction(a)) if a.category == Q3_CATEGORY => {
                b.set_current_key(&a.seller)?;
                match b.value(person).get()? {
                    Some((name, city, state)) => {
                        out.push(format!("q3,{name},{city},{state},{}", a.id));
                        Ok(())
                    }
                    None => b.list(pending).add(a.id),
                }
            }
            (Query::Q5 { count, .. }, Event::Bid(bid)) => {
                b.set_current_key(&bid.auction)?;
                let mut start = window_start(bid.ts, SLIDE_MS);
                while start > bid.ts - WINDOW_MS {
                    let n = b.value_in(count, &start).get()?.unwrap_or(0);
                    b.value_in(count, &start).update(n + 1)?;
                    if n == 0 {
                        t.register_event_time_timer(b, &start, start + WINDOW_MS - 1)?;
                    }
                    start -= SLIDE_MS;
                }
                Ok(())
            }
            (Query::Q8 { joined, .. }, Event::Person(p)) => {
                let w = window_start(p.ts, WINDOW_MS);
                b.set_current_key(&p.id)?;
                b.value_in(joined, &w).update(p.name.clone())?;
                t.register_event_time_timer(b, &w, w + WINDOW_MS - 1)
            }
            (Query::Q8 { sold, .. }, Event::Auction(a)) => {
                let w = window_start(a.ts, WINDOW_MS);
                b.set_current_key(&a.seller)?;
                b.value_in(sold, &w).update(true)?;
                t.register_event_time_timer(b, &w, w + WINDOW_MS - 1)
            }
            (Query::Q11 { windows, count }, Event::Bid(bid)) => {
                b.set_current_key(&bid.bidder)?;
                // The bid's own window, then every window of the key it overlaps.
                let (mut start, mut end) = (bid.ts, bid.ts + SESSION_GAP_MS);
                b.reducing_in(count, &bid.ts).add(1)?;
                let mut merged = Vec::new();
                for entry in b.map(windows).iter()? {
                    let (s, e) = entry?;
                    if s < end && start < e {
                        merged.push((s, e));
                        start = start.min(s);
                        end = end.max(e);
                    }
                }
                for &(s, e) in &merged {
                    b.map(windows).remove(&s)?;
                    t.delete_event_time_timer(b, &s, e - 1)?;
                }
                // The merged window's count: the counts of every window it covers.
                let sources: Vec<i64> = merged.iter().map(|&(s, _)| s).chain([bid.ts]).collect();
                b.reducing_in(count, &start).merge_namespaces(&sources)?;
                b.map(windows).put(start, end)?;
                t.register_event_time_timer(b, &start, end - 1)
            }
            _ => Ok(()),
        }
    }

    /// Advances the watermark: fires due timers, emits what they close.
    pub fn on_watermark<B, Q>(&mut self, b: &mut B, t: &mut Timers<Q>, wm: i64, out: &mut Vec<String>) -> Result<()>
    where
        B: KeyedStateBackend<Key = u64>,
        Q: TimerQueue<B>,
    {
        match self {
            Query::Q3 { .. } => {
                t.advance_watermark(b, wm, |_, _, _| Ok(()))?;
            }
            Query::Q5 { count, closing } => {
                fire_window_counts(count, b, t, wm, |start, auction, n| {
                    let top = closing.entry(start).or_insert((0, Vec::new()));
                    if n > top.0 {
                        *top = (n, vec![auction]);
                    } else if n == top.0 {
                        top.1.push(auction);
                    }
                })?;
                // Every timer of a window has the same timestamp, so a window's auctions
                // all fired in this advance: emit the hot ones.
                for (start, (n, mut auctions)) in std::mem::take(closing) {
                    auctions.sort_unstable();
                    for a in auctions {
                        out.push(q5_line(start, a, n));
                    }
                }
            }
            Query::Q8 { joined, sold } => {
                t.advance_watermark(b, wm, |b, _, timer| {
                    let w = timer.namespace;
                    let name = b.value_in(joined, &w).get()?;
                    let s = b.value_in(sold, &w).get()?.unwrap_or(false);
                    if let (Some(name), true) = (name, s) {
                        out.push(format!("q8,{},{name},{w}", timer.key));
                    }
                    b.value_in(joined, &w).clear()?;
                    b.value_in(sold, &w).clear()
                })?;
            }
            Query::Q11 { windows, count } => {
                t.advance_watermark(b, wm, |b, _, timer| {
                    let start = timer.namespace;
                    if let Some(end) = b.map(windows).get(&start)?
                        && end - 1 == timer.timestamp
                    {
                        let n = b.reducing_in(count, &start).get()?.unwrap_or(0);
                        out.push(format!("q11,{},{n},{start},{end}", timer.key));
                        b.map(windows).remove(&start)?;
                        b.reducing_in(count, &start).clear()?;
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }
}

/// Q5's first half: fires the sliding windows the watermark `wm` closes, handing each
/// window's `(start, auction, bids)` to `emit`, and clears their counts.
pub fn fire_window_counts<B, Q>(
    count: &ValueStateHandle<u64, i64>,
    b: &mut B,
    t: &mut Timers<Q>,
    wm: i64,
    mut emit: impl FnMut(i64, u64, u64),
) -> Result<()>
where
    B: KeyedStateBackend<Key = u64>,
    Q: TimerQueue<B>,
{
    t.advance_watermark(b, wm, |b, _, timer| {
        let n = b.value_in(count, &timer.namespace).get()?.unwrap_or(0);
        b.value_in(count, &timer.namespace).clear()?;
        emit(timer.namespace, timer.key, n);
        Ok(())
    })?;
    Ok(())
}

/// Q5's result line for one hot auction of the window starting at `start`.
pub fn q5_line(start: i64, auction: u64, bids: u64) -> String {
    format!("q5,{},{auction},{bids}", start + WINDOW_MS)
}

fn q3_line(p: &Person, auction: u64) -> String {
    format!("q3,{},{},{},{auction}", p.name, p.city, p.state)
}

/// The same queries with plain collections: what the job's output is checked against.
pub fn reference(kind: QueryKind, events: u64) -> Vec<String> {
    let mut out = Vec::new();
    let all = super::events::stream(0).take(events as usize);
    match kind {
        QueryKind::Q3 => {
            let mut persons: BTreeMap<u64, Person> = BTreeMap::new();
            let mut pending: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            for e in all {
                match e {
                    Event::Person(p) if Q3_STATES.contains(&p.state.as_str()) => {
                        for a in pending.remove(&p.id).unwrap_or_default() {
                            out.push(q3_line(&p, a));
                        }
                        persons.insert(p.id, p);
                    }
                    Event::Auction(Auction {
                        id, seller, category, ..
                    }) if category == Q3_CATEGORY => match persons.get(&seller) {
                        Some(p) => out.push(q3_line(p, id)),
                        None => pending.entry(seller).or_default().push(id),
                    },
                    _ => {}
                }
            }
        }
        QueryKind::Q5 => {
            let mut counts: BTreeMap<i64, BTreeMap<u64, u64>> = BTreeMap::new();
            for e in all {
                if let Event::Bid(Bid { auction, ts, .. }) = e {
                    let mut start = window_start(ts, SLIDE_MS);
                    while start > ts - WINDOW_MS {
                        *counts.entry(start).or_default().entry(auction).or_default() += 1;
                        start -= SLIDE_MS;
                    }
                }
            }
            for (start, per_auction) in counts {
                let max = per_auction.values().copied().max().unwrap_or(0);
                for (a, n) in per_auction {
                    if n == max {
                        out.push(q5_line(start, a, n));
                    }
                }
            }
        }
        QueryKind::Q8 => {
            let mut joined: BTreeMap<(u64, i64), String> = BTreeMap::new();
            let mut sold: BTreeMap<(u64, i64), bool> = BTreeMap::new();
            for e in all {
                match e {
                    Event::Person(p) => {
                        joined.insert((p.id, window_start(p.ts, WINDOW_MS)), p.name);
                    }
                    Event::Auction(a) => {
                        sold.insert((a.seller, window_start(a.ts, WINDOW_MS)), true);
                    }
                    Event::Bid(_) => {}
                }
            }
            for ((id, w), name) in joined {
                if sold.contains_key(&(id, w)) {
                    out.push(format!("q8,{id},{name},{w}"));
                }
            }
        }
        QueryKind::Q11 => {
            let mut bids: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
            for e in all {
                if let Event::Bid(b) = e {
                    bids.entry(b.bidder).or_default().push(b.ts);
                }
            }
            for (bidder, mut ts) in bids {
                ts.sort_unstable();
                let mut session: Option<(i64, i64, u64)> = None;
                for t in ts {
                    session = match session {
                        Some((s, e, n)) if t < e => Some((s, e.max(t + SESSION_GAP_MS), n + 1)),
                        Some((s, e, n)) => {
                            out.push(format!("q11,{bidder},{n},{s},{e}"));
                            Some((t, t + SESSION_GAP_MS, 1))
                        }
                        None => Some((t, t + SESSION_GAP_MS, 1)),
                    };
                }
                if let Some((s, e, n)) = session {
                    out.push(format!("q11,{bidder},{n},{s},{e}"));
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod top_tests {
    use super::QueryKind;

    #[test]
    fn top_results_are_the_largest_measures() {
        let r = |s: &str| s.to_string();
        let q5 = [r("q5,2000,7,3"), r("q5,2000,8,12"), r("q5,4000,1,5")];
        assert_eq!(QueryKind::Q5.top(&q5, 2), vec![r("q5,2000,8,12"), r("q5,4000,1,5")]);
        let q11 = [r("q11,1,4,0,10"), r("q11,2,9,0,10")];
        assert_eq!(QueryKind::Q11.top(&q11, 1), vec![r("q11,2,9,0,10")]);
        let q3 = [r("q3,b"), r("q3,a")];
        assert_eq!(QueryKind::Q3.top(&q3, 5), vec![r("q3,a"), r("q3,b")]);
    }
}
