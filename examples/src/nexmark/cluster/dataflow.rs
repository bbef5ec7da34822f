//! The Nexmark dataflows on timely: source → keyed operators (exchanged by key group
//! under Flink's formulas) → exactly-once sink, every operator written against
//! `state-api` and the timer service only.
//!
//! Epoch `e` (a timely timestamp) holds events `(e-1)·N .. e·N`. An operator handles an
//! epoch once its input frontier has passed it (every worker's records of it arrived):
//! it applies the records in arrival order, advances the event-time watermark to the
//! epoch's (deterministic: the first event time of the next epoch minus the lag; the last
//! epoch closes everything) and takes its part of checkpoint `e`. Records of later epochs
//! wait in a stash, so a snapshot holds exactly epochs `..=e`.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use state_api::keygroup::{key_group_for_key, operator_index_for_key_group};
use state_api::{KeyedStateBackend, Result, StateError, TimerService, ValueStateDescriptor};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::progress::frontier::MutableAntichain;

use super::control::{ClusterPart, Down, Up};
use super::subtask::Subtask;
use crate::nexmark::events::{Bid, Event, WATERMARK_LAG_MS, stream};
use crate::nexmark::queries::{Query, QueryKind, WINDOW_MS, fire_window_counts, q5_line};
use crate::nexmark::runtime::Runtime;

/// A dataflow's input (records at epochs) and the probe of its progress.
pub type Source<D> = (InputHandle<u64, CapacityContainerBuilder<Vec<D>>>, ProbeHandle<u64>);

/// Where the epochs of one run lie.
#[derive(Debug, Clone, Copy)]
pub struct EpochPlan {
    /// Events per epoch.
    pub size: u64,
    /// Events in the whole job.
    pub events: u64,
    /// The first epoch this run processes (one after the restored checkpoint).
    pub first: u64,
    /// The last epoch.
    pub last: u64,
}

impl EpochPlan {
    /// The plan of a job of `events` events in epochs of `size`, resuming after `restored`.
    pub fn new(events: u64, size: u64, restored: u64) -> Self {
        let size = size.max(1);
        EpochPlan {
            size,
            events,
            first: restored + 1,
            last: events.div_ceil(size).max(1),
        }
    }

    /// The event indices of epoch `e`.
    pub fn range(&self, e: u64) -> std::ops::Range<u64> {
        ((e - 1) * self.size).min(self.events)..(e * self.size).min(self.events)
    }

    /// The watermark at the end of epoch `e`: the first event time of the next epoch
    /// minus the lag (more than the stream's disorder), and everything after the last.
    pub fn watermark(&self, e: u64) -> i64 {
        if e >= self.last {
            return i64::MAX;
        }
        stream(e * self.size)
            .next()
            .map_or(i64::MAX, |ev| ev.ts() - WATERMARK_LAG_MS)
    }
}

/// Records stashed by epoch, handed over in epoch order once the frontier passed them;
/// holds a capability at the next epoch so that it can emit at each (epochs without
/// records are handed over too: each ends in a checkpoint).
struct Epochs<D> {
    cap: Option<Capability<u64>>,
    next: u64,
    last: u64,
    stash: BTreeMap<u64, Vec<D>>,
}

impl<D> Epochs<D> {
    fn new(cap: Option<Capability<u64>>, plan: &EpochPlan) -> Self {
        let cap = cap.map(|mut c| {
            c.downgrade(&plan.first);
            c
        });
        Epochs {
            cap,
            next: plan.first,
            last: plan.last,
            stash: BTreeMap::new(),
        }
    }

    /// Stashes records sent at `epoch` (records sent under no time make no progress
    /// claim and cannot occur in these dataflows: they are dropped).
    fn stash(&mut self, epoch: Option<u64>, data: &mut Vec<D>) {
        if let Some(e) = epoch {
            self.stash.entry(e).or_default().append(data);
        }
    }

    /// The epochs the frontier has passed, each with its records and a capability.
    fn ready(&mut self, frontier: &MutableAntichain<u64>) -> Vec<(u64, Option<Capability<u64>>, Vec<D>)> {
        let mut out = Vec::new();
        while self.next <= self.last && !frontier.less_equal(&self.next) {
            let e = self.next;
            let cap = self.cap.as_ref().map(|c| c.delayed(&e));
            out.push((e, cap, self.stash.remove(&e).unwrap_or_default()));
            self.next += 1;
            if self.next > self.last {
                self.cap = None;
            } else if let Some(c) = self.cap.as_mut() {
                c.downgrade(&self.next);
            }
        }
        out
    }
}

/// The worker that owns `key` among `workers`: its key group's operator index.
pub fn route(key: u64, max_parallelism: u32, workers: u32) -> u64 {
    key_group_for_key(&key, max_parallelism)
        .and_then(|kg| operator_index_for_key_group(max_parallelism, workers, kg))
        .map_or(0, u64::from)
}

/// What a worker needs inside its operators.
pub struct Env<R: Runtime> {
    pub rt: Rc<R>,
    pub plan: EpochPlan,
    pub worker: u32,
    pub workers: u32,
    pub max_parallelism: u32,
    pub storage: state_fs::FsCheckpointStorage,
    pub up: std::sync::mpsc::Sender<Up>,
    /// Notices for each stateful operator (the worker loop fills them).
    pub notices: Vec<Rc<RefCell<VecDeque<Down>>>>,
    /// The first error an operator met (the worker loop stops on it).
    pub error: Rc<RefCell<Option<StateError>>>,
}

fn record<T>(error: &Rc<RefCell<Option<StateError>>>, r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            error.borrow_mut().get_or_insert(e);
            None
        }
    }
}

fn apply_notices<R: Runtime>(queue: &Rc<RefCell<VecDeque<Down>>>, sub: &mut Subtask<R>) {
    while let Some(n) = queue.borrow_mut().pop_front() {
        match n {
            Down::Completed(id) => sub.notify(true, id),
            Down::Aborted(id) => sub.notify(false, id),
            Down::Start { .. } => {}
        }
    }
}

/// The sink: writes each epoch's lines as this worker's part of it, then reports it.
fn sink<'s>(lines: timely::dataflow::Stream<'s, u64, Vec<String>>, env: &Env<impl Runtime>) {
    let mut epochs: Epochs<String> = Epochs::new(None, &env.plan);
    let (storage, up, worker, error) = (env.storage.clone(), env.up.clone(), env.worker, Rc::clone(&env.error));
    lines.sink(Pipeline, "sink", move |(input, frontier)| {
        input.for_each(|c, data| epochs.stash(c.least().copied(), data));
        for (e, _, mut lines) in epochs.ready(frontier) {
            let part = if lines.is_empty() {
                None
            } else {
                lines.sort_unstable();
                let mut body = lines.join("\n");
                body.push('\n');
                let name = format!("results/e{e:08}-w{worker:04}");
                let part = ClusterPart {
                    epoch: e,
                    name: name.clone(),
                    size: body.len() as u64,
                    crc32c: crc32c::crc32c(body.as_bytes()),
                };
                if record(
                    &error,
                    storage.store().write_all(&storage.store_path(&name), body.into_bytes()),
                )
                .is_none()
                {
                    return;
                }
                Some(part)
            };
            let _ = up.send(Up::Part { epoch: e, worker, part });
        }
    });
}

/// Q5 as two chained keyed operators: bids per auction per sliding window (keyed by
/// auction) → exchange by window → the hot auctions of each window (keyed by window).
pub fn q5<R: Runtime + 'static>(
    scope: timely::dataflow::Scope<'_, u64>,
    env: &Env<R>,
    counts: Rc<RefCell<Subtask<R>>>,
    top: Rc<RefCell<Subtask<R>>>,
) -> Result<Source<Bid>> {
    let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Bid>>>::new();
    let (mp, workers) = (env.max_parallelism, env.workers);
    let mut query = Query::open(QueryKind::Q5, &mut counts.borrow_mut().backend)?;
    let top_state = top
        .borrow_mut()
        .backend
        .register(ValueStateDescriptor::<(u64, Vec<u64>)>::new("q5-top"))?;
    let (plan, rt, error, notices) = (env.plan, Rc::clone(&env.rt), Rc::clone(&env.error), env.notices.clone());
    let windows = input
        .to_stream(scope)
        .unary_frontier::<CapacityContainerBuilder<Vec<(i64, u64, u64)>>, _, _, _>(
            Exchange::new(move |b: &Bid| route(b.auction, mp, workers)),
            "q5-counts",
            move |cap, _| {
                let mut epochs = Epochs::new(Some(cap), &plan);
                let (rt, error, queue) = (Rc::clone(&rt), Rc::clone(&error), Rc::clone(&notices[0]));
                move |(input, frontier), output| {
                    let mut counts = counts.borrow_mut();
                    let counts = &mut *counts;
                    apply_notices(&queue, counts);
                    input.for_each(|c, data| epochs.stash(c.least().copied(), data));
                    for (e, cap, bids) in epochs.ready(frontier) {
                        let Some(cap) = cap else { continue };
                        let mut session = output.session(&cap);
                        let mut none = Vec::new();
                        let step = (|| {
                            for bid in bids {
                                query.process(&mut counts.backend, &mut counts.timers, &Event::Bid(bid), &mut none)?;
                            }
                            let Query::Q5 { count, .. } = &query else {
                                return Ok(());
                            };
                            fire_window_counts(
                                count,
                                &mut counts.backend,
                                &mut counts.timers,
                                plan.watermark(e),
                                |s, a, n| session.give((s, a, n)),
                            )?;
                            counts.checkpoint(&rt, e)
                        })();
                        record(&error, step);
                    }
                }
            },
        );
    let (rt, error, notices) = (Rc::clone(&env.rt), Rc::clone(&env.error), env.notices.clone());
    let lines = windows.unary_frontier::<CapacityContainerBuilder<Vec<String>>, _, _, _>(
        Exchange::new(move |w: &(i64, u64, u64)| route(w.0 as u64, mp, workers)),
        "q5-top",
        move |cap, _| {
            let mut epochs = Epochs::new(Some(cap), &plan);
            let queue = Rc::clone(&notices[1]);
            move |(input, frontier), output| {
                let mut top = top.borrow_mut();
                let top = &mut *top;
                apply_notices(&queue, top);
                input.for_each(|c, data| epochs.stash(c.least().copied(), data));
                for (e, cap, windows) in epochs.ready(frontier) {
                    let Some(cap) = cap else { continue };
                    let mut session = output.session(&cap);
                    let step = (|| {
                        let (b, t) = (&mut top.backend, &mut top.timers);
                        for (start, auction, n) in windows {
                            b.set_current_key(&(start as u64))?; // a window start, as bits (starts may be negative)
                            let current = b.value(&top_state).get()?;
                            let next = match current {
                                None => {
                                    t.register_event_time_timer(b, &start, start + WINDOW_MS - 1)?;
                                    (n, vec![auction])
                                }
                                Some((m, mut list)) if n == m => {
                                    list.push(auction);
                                    (m, list)
                                }
                                Some((m, _)) if n > m => (n, vec![auction]),
                                Some(kept) => kept,
                            };
                            b.value(&top_state).update(next)?;
                        }
                        t.advance_watermark(b, plan.watermark(e), |b, _, timer| {
                            if let Some((n, mut auctions)) = b.value(&top_state).get()? {
                                auctions.sort_unstable();
                                for a in auctions {
                                    session.give(q5_line(timer.namespace, a, n));
                                }
                            }
                            b.value(&top_state).clear()
                        })?;
                        top.checkpoint(&rt, e)
                    })();
                    record(&error, step);
                }
            }
        },
    );
    let (probe, lines) = lines.probe();
    sink(lines, env);
    Ok((input, probe))
}

/// Q8 as one keyed join: persons and the auctions they open, by person id.
pub fn q8<R: Runtime + 'static>(
    scope: timely::dataflow::Scope<'_, u64>,
    env: &Env<R>,
    join: Rc<RefCell<Subtask<R>>>,
) -> Result<Source<Event>> {
    let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Event>>>::new();
    let (mp, workers) = (env.max_parallelism, env.workers);
    let mut query = Query::open(QueryKind::Q8, &mut join.borrow_mut().backend)?;
    let (plan, rt, error, notices) = (env.plan, Rc::clone(&env.rt), Rc::clone(&env.error), env.notices.clone());
    let key = |e: &Event| match e {
        Event::Person(p) => p.id,
        Event::Auction(a) => a.seller,
        Event::Bid(b) => b.bidder,
    };
    let lines = input
        .to_stream(scope)
        .unary_frontier::<CapacityContainerBuilder<Vec<String>>, _, _, _>(
            Exchange::new(move |e: &Event| route(key(e), mp, workers)),
            "q8-join",
            move |cap, _| {
                let mut epochs = Epochs::new(Some(cap), &plan);
                let queue = Rc::clone(&notices[0]);
                move |(input, frontier), output| {
                    let mut join = join.borrow_mut();
                    let join = &mut *join;
                    apply_notices(&queue, join);
                    input.for_each(|c, data| epochs.stash(c.least().copied(), data));
                    for (e, cap, events) in epochs.ready(frontier) {
                        let Some(cap) = cap else { continue };
                        let mut out = Vec::new();
                        let step = (|| {
                            for ev in &events {
                                query.process(&mut join.backend, &mut join.timers, ev, &mut out)?;
                            }
                            query.on_watermark(&mut join.backend, &mut join.timers, plan.watermark(e), &mut out)?;
                            join.checkpoint(&rt, e)
                        })();
                        record(&error, step);
                        output.session(&cap).give_iterator(out.into_iter());
                    }
                }
            },
        );
    let (probe, lines) = lines.probe();
    sink(lines, env);
    Ok((input, probe))
}
