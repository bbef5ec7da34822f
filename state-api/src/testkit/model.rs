//! Case: random operation sequences against a `BTreeMap` model, interleaved with
//! snapshots and restores (a property test with a fixed, reproducible seed list).

use std::collections::BTreeMap;

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

fn check_all<B: KeyedStateBackend<Key = u32>>(b: &mut B, h: &Handles, model: &Model, seed: u64, step: usize) {
    for key in 0..KEYS as u32 {
        b.set_current_key(&key).unwrap();
        for ns in 0..NAMESPACES as u8 {
            let at = format!("seed {seed} step {step} key {key} ns {ns}");
            assert_eq!(
                b.value_in(&h.v, &ns).get().unwrap(),
                model.values.get(&(key, ns)).copied(),
                "value, {at}"
            );
            assert_eq!(
                b.list_in(&h.l, &ns).get().unwrap(),
                model.lists.get(&(key, ns)).cloned().unwrap_or_default(),
                "list, {at}"
            );
            let mut entries = b.map_in(&h.m, &ns).entries().unwrap();
            entries.sort();
            let want: Vec<(u16, u64)> = model
                .maps
                .get(&(key, ns))
                .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
                .unwrap_or_default();
            assert_eq!(entries, want, "map, {at}");
        }
    }
}

pub fn model_random_operations_with_snapshots<F: KeyedBackendFactory, S: TestStorage>(
    f: &F,
    new_storage: &dyn Fn() -> S,
) {
    for seed in 0..12u64 {
        let mut rng = SplitMix64(seed);
        let ctx = ctx_all().0;
        let storage = new_storage();
        let mut b = f.create::<u32>(&ctx).unwrap();
        let mut h = register(&mut b);
        let mut model = Model::default();
        // A snapshot taken earlier and the model as of then, restored later.
        let mut pending: Option<(crate::AsyncSnapshot<crate::KeyedSnapshotHandle>, Model)> = None;
        let mut checkpoint = 0;
        for step in 0..600 {
            let key = rng.below(KEYS) as u32;
            let ns = rng.below(NAMESPACES) as u8;
            b.set_current_key(&key).unwrap();
            let k = (key, ns);
            match rng.below(100) {
                0..=14 => {
                    let v = rng.next_u64();
                    b.value_in(&h.v, &ns).update(v).unwrap();
                    model.values.insert(k, v);
                }
                15..=19 => {
                    b.value_in(&h.v, &ns).clear().unwrap();
                    model.values.remove(&k);
                }
                20..=34 => {
                    let v = rng.below(1000) as u32;
                    b.list_in(&h.l, &ns).add(v).unwrap();
                    model.lists.entry(k).or_default().push(v);
                }
                35..=39 => {
                    let vs: Vec<u32> = (0..rng.below(4)).map(|i| i as u32).collect();
                    b.list_in(&h.l, &ns).update(vs.clone()).unwrap();
                    if vs.is_empty() {
                        model.lists.remove(&k);
                    } else {
                        model.lists.insert(k, vs);
                    }
                }
                40..=42 => {
                    b.list_in(&h.l, &ns).clear().unwrap();
                    model.lists.remove(&k);
                }
                43..=62 => {
                    let (uk, v) = (rng.below(8) as u16, rng.next_u64());
                    b.map_in(&h.m, &ns).put(uk, v).unwrap();
                    model.maps.entry(k).or_default().insert(uk, v);
                }
                63..=70 => {
                    let uk = rng.below(8) as u16;
                    b.map_in(&h.m, &ns).remove(&uk).unwrap();
                    if let Some(m) = model.maps.get_mut(&k) {
                        m.remove(&uk);
                        if m.is_empty() {
                            model.maps.remove(&k);
                        }
                    }
                }
                71..=73 => {
                    b.map_in(&h.m, &ns).clear().unwrap();
                    model.maps.remove(&k);
                }
                74..=89 => {
                    let uk = rng.below(8) as u16;
                    let want = model.maps.get(&k).and_then(|m| m.get(&uk)).copied();
                    assert_eq!(b.map_in(&h.m, &ns).get(&uk).unwrap(), want, "seed {seed} step {step}");
                    assert_eq!(b.map_in(&h.m, &ns).contains(&uk).unwrap(), want.is_some());
                    assert_eq!(b.value_in(&h.v, &ns).get().unwrap(), model.values.get(&k).copied());
                }
                90..=94 => {
                    // Snapshot now, restore from it later (state keeps changing meanwhile).
                    if pending.is_none() {
                        checkpoint += 1;
                        pending = Some((b.snapshot(checkpoint).unwrap(), model.clone()));
                    }
                }
                _ => {
                    // Restore: either the pending snapshot (rolling the model back) or a fresh one.
                    let (handle, as_of) = match pending.take() {
                        Some((p, m)) => (p.run(&storage).unwrap(), m),
                        None => {
                            checkpoint += 1;
                            (snap(&mut b, checkpoint, &storage), model.clone())
                        }
                    };
                    b = f.restore::<u32>(&ctx, &[handle], &storage).unwrap();
                    h = register(&mut b);
                    model = as_of;
                    check_all(&mut b, &h, &model, seed, step);
                }
            }
        }
        check_all(&mut b, &h, &model, seed, 600);
    }
}
