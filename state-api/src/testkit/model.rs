//! Case: random operation sequences against a `BTreeMap` model, interleaved with
//! snapshots and restores: a `proptest` property (a failing sequence shrinks to a minimal
//! one), after the fixed seed list of the hand-written test it replaced, kept as
//! regressions.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestCaseResult, TestRunner};

use super::TestStorage;
use super::{ctx_all, snap};
use crate::backend::{KeyedBackendFactory, KeyedStateBackend};
use crate::descriptor::{
    ListStateDescriptor, ListStateHandle, MapStateDescriptor, MapStateHandle, ValueStateDescriptor, ValueStateHandle,
};
#[allow(unused_imports)]
use crate::snapshot::CheckpointStorage;

/// A small, reproducible PRNG (SplitMix64) so failures replay from the printed seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    values: BTreeMap<(u32, u8), u64>,
    lists: BTreeMap<(u32, u8), Vec<u32>>,
    maps: BTreeMap<(u32, u8), BTreeMap<u16, u64>>,
}

struct Handles {
    v: ValueStateHandle<u64, u8>,
    l: ListStateHandle<u32, u8>,
    m: MapStateHandle<u16, u64, u8>,
}

fn register<B: KeyedStateBackend<Key = u32>>(b: &mut B) -> Handles {
    Handles {
        v: b.register(ValueStateDescriptor::<u64>::new("v").in_namespace::<u8>())
            .unwrap(),
        l: b.register(ListStateDescriptor::<u32>::new("l").in_namespace::<u8>())
            .unwrap(),
        m: b.register(MapStateDescriptor::<u16, u64>::new("m").in_namespace::<u8>())
            .unwrap(),
    }
}

const KEYS: u64 = 40;
const NAMESPACES: u64 = 3;

fn check_all<B: KeyedStateBackend<Key = u32>>(b: &mut B, h: &Handles, model: &Model, step: usize) -> TestCaseResult {
    for key in 0..KEYS as u32 {
        b.set_current_key(&key).map_err(fail)?;
        for ns in 0..NAMESPACES as u8 {
            let at = format!("step {step} key {key} ns {ns}");
            prop_assert_eq!(
                b.value_in(&h.v, &ns).get().map_err(fail)?,
                model.values.get(&(key, ns)).copied(),
                "value, {}",
                at
            );
            prop_assert_eq!(
                b.list_in(&h.l, &ns).get().map_err(fail)?,
                model.lists.get(&(key, ns)).cloned().unwrap_or_default(),
                "list, {}",
                at
            );
            let mut entries = b.map_in(&h.m, &ns).entries().map_err(fail)?;
            entries.sort();
            let want: Vec<(u16, u64)> = model
                .maps
                .get(&(key, ns))
                .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
                .unwrap_or_default();
            prop_assert_eq!(entries, want, "map, {}", at);
        }
    }
    Ok(())
}

/// A backend error as a test failure (so the sequence still shrinks).
pub(crate) fn fail(e: crate::StateError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// The runner of the testkit's property tests: `cases` random cases (`PROPTEST_CASES`
/// overrides), from a fixed seed unless `PROPTEST_RNG_SEED` is set, so that CI runs are
/// repeatable; no regression files (the cases live in a library, run from other crates).
pub(crate) fn proptest_runner(cases: u32) -> TestRunner {
    let mut config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_some() {
        config.cases = Config::default().cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(20_261_201);
    }
    TestRunner::new(config)
}

/// One operation of a sequence: on the current key `key` in namespace `ns`.
#[derive(Debug, Clone)]
enum Op {
    ValueUpdate(u32, u8, u64),
    ValueClear(u32, u8),
    ListAdd(u32, u8, u32),
    ListUpdate(u32, u8, Vec<u32>),
    ListClear(u32, u8),
    MapPut(u32, u8, u16, u64),
    MapRemove(u32, u8, u16),
    MapClear(u32, u8),
    /// Point reads of the map, its `contains`, and the value, checked against the model.
    Read(u32, u8, u16),
    /// Snapshot now; a later `Restore` goes back to it (state keeps changing meanwhile).
    Snapshot,
    /// Restore from the pending snapshot (rolling the model back) or from a fresh one.
    Restore,
}

/// Operations in the proportions of the hand-written test.
fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS as u32;
    let ns = 0..NAMESPACES as u8;
    let kn = (key, ns);
    prop_oneof![
        15 => (kn.clone(), any::<u64>()).prop_map(|((k, n), v)| Op::ValueUpdate(k, n, v)),
        5 => kn.clone().prop_map(|(k, n)| Op::ValueClear(k, n)),
        15 => (kn.clone(), 0..1000u32).prop_map(|((k, n), v)| Op::ListAdd(k, n, v)),
        5 => (kn.clone(), 0..4u32).prop_map(|((k, n), len)| Op::ListUpdate(k, n, (0..len).collect())),
        3 => kn.clone().prop_map(|(k, n)| Op::ListClear(k, n)),
        20 => (kn.clone(), 0..8u16, any::<u64>()).prop_map(|((k, n), uk, v)| Op::MapPut(k, n, uk, v)),
        8 => (kn.clone(), 0..8u16).prop_map(|((k, n), uk)| Op::MapRemove(k, n, uk)),
        3 => kn.clone().prop_map(|(k, n)| Op::MapClear(k, n)),
        16 => (kn, 0..8u16).prop_map(|((k, n), uk)| Op::Read(k, n, uk)),
        5 => Just(Op::Snapshot),
        5 => Just(Op::Restore),
    ]
}

/// The sequence the hand-written test drew from SplitMix64 `seed` (600 operations).
fn seeded_ops(seed: u64) -> Vec<Op> {
    let mut rng = SplitMix64(seed);
    (0..600)
        .map(|_| {
            let key = rng.below(KEYS) as u32;
            let ns = rng.below(NAMESPACES) as u8;
            match rng.below(100) {
                0..=14 => Op::ValueUpdate(key, ns, rng.next_u64()),
                15..=19 => Op::ValueClear(key, ns),
                20..=34 => Op::ListAdd(key, ns, rng.below(1000) as u32),
                35..=39 => Op::ListUpdate(key, ns, (0..rng.below(4)).map(|i| i as u32).collect()),
                40..=42 => Op::ListClear(key, ns),
                43..=62 => {
                    let uk = rng.below(8) as u16;
                    Op::MapPut(key, ns, uk, rng.next_u64())
                }
                63..=70 => Op::MapRemove(key, ns, rng.below(8) as u16),
                71..=73 => Op::MapClear(key, ns),
                74..=89 => Op::Read(key, ns, rng.below(8) as u16),
                90..=94 => Op::Snapshot,
                _ => Op::Restore,
            }
        })
        .collect()
}

/// Runs `ops` on a new backend and the model side by side.
fn run_ops<F: KeyedBackendFactory, S: TestStorage>(f: &F, new_storage: &dyn Fn() -> S, ops: &[Op]) -> TestCaseResult {
    let ctx = ctx_all().0;
    let storage = new_storage();
    let mut b = f.create::<u32>(&ctx).map_err(fail)?;
    let mut h = register(&mut b);
    let mut model = Model::default();
    // A snapshot taken earlier and the model as of then, restored later.
    let mut pending: Option<(crate::AsyncSnapshot<crate::KeyedSnapshotHandle>, Model)> = None;
    let mut checkpoint = 0;
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::ValueUpdate(key, ns, v) => {
                b.set_current_key(key).map_err(fail)?;
                b.value_in(&h.v, ns).update(*v).map_err(fail)?;
                model.values.insert((*key, *ns), *v);
            }
            Op::ValueClear(key, ns) => {
                b.set_current_key(key).map_err(fail)?;
                b.value_in(&h.v, ns).clear().map_err(fail)?;
                model.values.remove(&(*key, *ns));
            }
            Op::ListAdd(key, ns, v) => {
                b.set_current_key(key).map_err(fail)?;
                b.list_in(&h.l, ns).add(*v).map_err(fail)?;
                model.lists.entry((*key, *ns)).or_default().push(*v);
            }
            Op::ListUpdate(key, ns, vs) => {
                b.set_current_key(key).map_err(fail)?;
                b.list_in(&h.l, ns).update(vs.clone()).map_err(fail)?;
                if vs.is_empty() {
                    model.lists.remove(&(*key, *ns));
                } else {
                    model.lists.insert((*key, *ns), vs.clone());
                }
            }
            Op::ListClear(key, ns) => {
                b.set_current_key(key).map_err(fail)?;
                b.list_in(&h.l, ns).clear().map_err(fail)?;
                model.lists.remove(&(*key, *ns));
            }
            Op::MapPut(key, ns, uk, v) => {
                b.set_current_key(key).map_err(fail)?;
                b.map_in(&h.m, ns).put(*uk, *v).map_err(fail)?;
                model.maps.entry((*key, *ns)).or_default().insert(*uk, *v);
            }
            Op::MapRemove(key, ns, uk) => {
                b.set_current_key(key).map_err(fail)?;
                b.map_in(&h.m, ns).remove(uk).map_err(fail)?;
                if let Some(m) = model.maps.get_mut(&(*key, *ns)) {
                    m.remove(uk);
                    if m.is_empty() {
                        model.maps.remove(&(*key, *ns));
                    }
                }
            }
            Op::MapClear(key, ns) => {
                b.set_current_key(key).map_err(fail)?;
                b.map_in(&h.m, ns).clear().map_err(fail)?;
                model.maps.remove(&(*key, *ns));
            }
            Op::Read(key, ns, uk) => {
                b.set_current_key(key).map_err(fail)?;
                let k = (*key, *ns);
                let want = model.maps.get(&k).and_then(|m| m.get(uk)).copied();
                prop_assert_eq!(
                    b.map_in(&h.m, ns).get(uk).map_err(fail)?,
                    want,
                    "map get, step {}",
                    step
                );
                prop_assert_eq!(b.map_in(&h.m, ns).contains(uk).map_err(fail)?, want.is_some());
                prop_assert_eq!(b.value_in(&h.v, ns).get().map_err(fail)?, model.values.get(&k).copied());
            }
            Op::Snapshot => {
                if pending.is_none() {
                    checkpoint += 1;
                    pending = Some((b.snapshot(checkpoint).map_err(fail)?, model.clone()));
                }
            }
            Op::Restore => {
                let (handle, as_of) = match pending.take() {
                    Some((p, m)) => (p.run(&storage).map_err(fail)?, m),
                    None => {
                        checkpoint += 1;
                        (snap(&mut b, checkpoint, &storage), model.clone())
                    }
                };
                b = f.restore::<u32>(&ctx, &[handle], &storage).map_err(fail)?;
                h = register(&mut b);
                model = as_of;
                check_all(&mut b, &h, &model, step)?;
            }
        }
    }
    check_all(&mut b, &h, &model, ops.len())
}

/// Random sequences of value, list and map operations, snapshots and restores agree with a
/// `BTreeMap` model. The twelve seeds of the earlier hand-written test run first, as
/// regressions; then `proptest` draws 16 sequences (`PROPTEST_CASES` changes how many,
/// `PROPTEST_RNG_SEED` which; the default seed is fixed so CI runs are repeatable). A
/// failure reports the shrunk, minimal sequence.
pub fn model_random_operations_with_snapshots<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    for seed in 0..12u64 {
        if let Err(e) = run_ops(f, new_storage, &seeded_ops(seed)) {
            panic!("regression seed {seed}: {e}");
        }
    }
    let mut runner = proptest_runner(16);
    let strategy = proptest::collection::vec(op(), 1..400);
    if let Err(e) = runner.run(&strategy, |ops| run_ops(f, new_storage, &ops)) {
        panic!("model test failed: {e}");
    }
}
