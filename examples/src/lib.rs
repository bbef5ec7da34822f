//! Jobs shared by the demo, the benchmarks and the tests: operator code written once
//! against `state-api`, run on whichever backend the features compile in.
#![allow(missing_docs)]

pub mod nexmark;

/// The value after flag `name` on the command line, if any.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use state_api::testkit::SplitMix64;
use state_api::{
    KeyedStateBackend, OperatorListHandle, OperatorStateBackend, ReducingStateDescriptor, ReducingStateHandle, Result,
    ValueStateDescriptor, ValueStateHandle,
};

/// A bid on an auction (the Nexmark shape, trimmed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    pub auction: u64,
    pub bidder: u64,
    pub price: u64,
    pub ts: i64,
}

/// Deterministic bid stream: event `i` is always the same bid.
pub fn bid(i: u64) -> Bid {
    let mut r = SplitMix64(i.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let hot = r.below(10) < 3;
    Bid {
        auction: if hot { r.below(100) } else { r.below(20_000) },
        bidder: r.below(50_000),
        price: 1 + r.below(10_000),
        // 1000 events per second of event time, up to 2 s out of order.
        ts: (i as i64) - r.below(MAX_OUT_OF_ORDER_MS as u64) as i64,
    }
}

/// A tumbling event-time window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    pub fn of(ts: i64, size: i64) -> Window {
        let start = ts.div_euclid(size) * size;
        Window {
            start,
            end: start + size,
        }
    }
}

/// One result: per window and auction, the number of bids and the highest price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WindowResult {
    pub window_end: i64,
    pub auction: u64,
    pub bids: u64,
    pub max_price: u64,
}

/// Bids per auction per tumbling window, with the highest price: keyed value and
/// reducing state scoped to windows (namespaces), windows closed by the watermark.
pub struct AuctionWindows {
    pub window_size: i64,
    count: ValueStateHandle<u64, Window>,
    max_price: ReducingStateHandle<u64, Window>,
    open: OperatorListHandle<Window>,
}

impl AuctionWindows {
    pub fn open<B: KeyedStateBackend<Key = u64>, O: OperatorStateBackend>(
        backend: &mut B,
        ops: &mut O,
        window_size: i64,
    ) -> Result<Self> {
        Ok(AuctionWindows {
            window_size,
            count: backend.register(ValueStateDescriptor::<u64>::new("bids").in_namespace::<Window>())?,
            max_price: backend.register(
                ReducingStateDescriptor::<u64>::new("max-price", |a, b| *a.max(b)).in_namespace::<Window>(),
            )?,
            open: ops.union_list_state::<Window>("open-windows")?,
        })
    }

    pub fn process<B: KeyedStateBackend<Key = u64>, O: OperatorStateBackend>(
        &self,
        backend: &mut B,
        ops: &mut O,
        bid: &Bid,
    ) -> Result<()> {
        let window = Window::of(bid.ts, self.window_size);
        backend.set_current_key(&bid.auction)?;
        let n = backend.value_in(&self.count, &window).get()?.unwrap_or(0);
        if n == 0 {
            let mut open = ops.list_get(&self.open)?;
            if !open.contains(&window) {
                open.push(window);
                ops.list_update(&self.open, open)?;
            }
        }
        backend.value_in(&self.count, &window).update(n + 1)?;
        backend.reducing_in(&self.max_price, &window).add(bid.price)
    }

    /// Fires every window that ends at or before `watermark`.
    pub fn on_watermark<B: KeyedStateBackend<Key = u64>, O: OperatorStateBackend>(
        &self,
        backend: &mut B,
        ops: &mut O,
        watermark: i64,
        out: &mut Vec<WindowResult>,
    ) -> Result<()> {
        let (due, keep): (Vec<Window>, Vec<Window>) =
            ops.list_get(&self.open)?.into_iter().partition(|w| w.end <= watermark);
        for window in due {
            let mut auctions = backend.keys_in(state_api::RegisteredState::id(&self.count), &window)?;
            auctions.sort_unstable();
            for auction in auctions {
                backend.set_current_key(&auction)?;
                let bids = backend.value_in(&self.count, &window).get()?.unwrap_or(0);
                let max_price = backend.reducing_in(&self.max_price, &window).get()?.unwrap_or(0);
                out.push(WindowResult {
                    window_end: window.end,
                    auction,
                    bids,
                    max_price,
                });
                backend.value_in(&self.count, &window).clear()?;
                backend.reducing_in(&self.max_price, &window).clear()?;
            }
        }
        ops.list_update(&self.open, keep)
    }
}

/// Events are at most this far out of order, so a watermark lag of at least this
/// much never makes an event late.
pub const MAX_OUT_OF_ORDER_MS: i64 = 2000;

/// The same query with plain collections: the reference the job is checked against.
/// `watermark_lag` must be at least [`MAX_OUT_OF_ORDER_MS`].
pub fn reference(events: u64, window_size: i64, watermark_lag: i64, watermark_every: u64) -> Vec<WindowResult> {
    let mut windows: BTreeMap<Window, BTreeMap<u64, (u64, u64)>> = BTreeMap::new();
    let mut out = Vec::new();
    let mut max_ts = i64::MIN;
    let fire = |windows: &mut BTreeMap<Window, BTreeMap<u64, (u64, u64)>>, wm: i64, out: &mut Vec<WindowResult>| {
        let due: BTreeSet<Window> = windows.keys().filter(|w| w.end <= wm).copied().collect();
        for w in due {
            for (auction, (bids, max_price)) in windows.remove(&w).unwrap_or_default() {
                out.push(WindowResult {
                    window_end: w.end,
                    auction,
                    bids,
                    max_price,
                });
            }
        }
    };
    for i in 0..events {
        let b = bid(i);
        max_ts = max_ts.max(b.ts);
        let e = windows
            .entry(Window::of(b.ts, window_size))
            .or_default()
            .entry(b.auction)
            .or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(b.price);
        if (i + 1) % watermark_every == 0 {
            fire(&mut windows, max_ts - watermark_lag, &mut out);
        }
    }
    fire(&mut windows, i64::MAX, &mut out);
    out.sort();
    out
}

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct RootReadmeDoctests;
