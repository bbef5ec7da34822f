//! The Nexmark event stream (from the `nexmark` crate), deterministic: event `i` is
//! always the same event, so a job resumes from a source offset.

use serde::{Deserialize, Serialize};

/// A new person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: u64,
    pub name: String,
    pub city: String,
    pub state: String,
    pub ts: i64,
}

/// A new auction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auction {
    pub id: u64,
    pub seller: u64,
    pub category: u64,
    pub ts: i64,
}

/// A bid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    pub auction: u64,
    pub bidder: u64,
    pub price: u64,
    pub ts: i64,
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

impl Event {
    /// Event time (milliseconds).
    pub fn ts(&self) -> i64 {
        match self {
            Event::Person(p) => p.ts,
            Event::Auction(a) => a.ts,
            Event::Bid(b) => b.ts,
        }
    }
}

/// Events are out of order within groups of this many (about 20 ms of event time at the
/// generator's 10 000 events/s).
pub const OUT_OF_ORDER_GROUP: usize = 200;
/// The watermark lags the largest timestamp seen by this much: more than the stream's
/// disorder, so no event is late.
pub const WATERMARK_LAG_MS: i64 = 1_000;

/// The stream from event `offset` on.
pub fn stream(offset: u64) -> impl Iterator<Item = Event> {
    let config = nexmark::config::NexmarkConfig {
        base_time: 0,
        out_of_order_group_size: OUT_OF_ORDER_GROUP,
        ..Default::default()
    };
    nexmark::EventGenerator::new(config)
        .with_offset(offset)
        .map(|e| match e {
            nexmark::event::Event::Person(p) => Event::Person(Person {
                id: p.id as u64,
                name: p.name,
                city: p.city,
                state: p.state,
                ts: p.date_time as i64,
            }),
            nexmark::event::Event::Auction(a) => Event::Auction(Auction {
                id: a.id as u64,
                seller: a.seller as u64,
                category: a.category as u64,
                ts: a.date_time as i64,
            }),
            nexmark::event::Event::Bid(b) => Event::Bid(Bid {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price: b.price as u64,
                ts: b.date_time as i64,
            }),
        })
}
