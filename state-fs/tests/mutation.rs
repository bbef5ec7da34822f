//! Seeded mutation tests of every reader that takes bytes from storage (the stable
//! stand-in for the `cargo fuzz` targets in `fuzz/`, which drive the same readers from
//! `tests/readers`): the canonical keyed stream, the timer stream, the operator stream,
//! `_metadata` v1 and v2 (with incremental handles), the shared-file registry, the
//! ownership lease and the coordinator's wire messages. From valid seeds, 10,000 inputs per reader: bit flips, truncation, splicing,
//! and length-field inflation. None may panic; every rejection must be a damage error
//! (corrupt, truncated, unsupported version, inconsistent checkpoint); and no single
//! allocation may exceed 64 MiB (length fields are checked before allocating), measured
//! by a counting global allocator.
#![allow(unsafe_code, clippy::unwrap_used, clippy::panic)]

mod readers;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use state_api::testkit::SplitMix64;

use readers::{NAMES, Reader, acceptable, named};

/// The largest single allocation any reader may make.
const MAX_ALLOCATION: usize = 64 << 20;
const INPUTS: u64 = 10_000;

struct Counting;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the wrapper only
// records the largest requested size.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One mutated copy of `seed` (with `other` for splicing).
fn mutate(rng: &mut SplitMix64, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let len = b.len().max(1) as u64;
    match rng.below(4) {
        0 => {
            for _ in 0..=rng.below(3) {
                let i = rng.below(len) as usize;
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.below(8);
                }
            }
        }
        1 => b.truncate(rng.below(len) as usize),
        2 => {
            let from = rng.below(other.len().max(1) as u64) as usize;
            let n = (rng.below(64) as usize).min(other.len().saturating_sub(from));
            let at = rng.below(len) as usize;
            let end = (at + n).min(b.len());
            b.splice(at..end, other[from..from + n].iter().copied()).for_each(drop);
        }
        _ => {
            // A length field blown up: 1, 2, 4 or 8 bytes of 0xff (or a varint's
            // continuation bits) somewhere.
            let width = 1usize << rng.below(4);
            let at = rng.below(len) as usize;
            for x in b.iter_mut().skip(at).take(width) {
                *x = 0xff;
            }
        }
    }
    b
}

/// Runs a reader on `INPUTS` mutations of its seed: no panic, every error a damage error.
fn run(mut reader: Reader) {
    let name = reader.name;
    let seed = std::mem::take(&mut reader.seed);
    let read = &mut reader.read;
    read(&seed).unwrap_or_else(|e| panic!("{name}: the seed itself does not read: {e}"));
    let mut rng = SplitMix64(name.len() as u64 * 7919);
    let mut rejected = 0;
    let reversed: Vec<u8> = seed.iter().rev().copied().collect();
    for i in 0..INPUTS {
        let input = mutate(&mut rng, &seed, &reversed);
        if let Err(e) = read(&input) {
            assert!(
                acceptable(&e),
                "{name}: input {i} gave an error that is not a damage error: {e:?}"
            );
            rejected += 1;
        }
    }
    assert!(
        !reader.mostly_rejects || rejected > INPUTS / 2,
        "{name}: only {rejected} of {INPUTS} mutations were rejected"
    );
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < MAX_ALLOCATION, "{name}: an allocation of {largest} bytes");
}

/// Every reader in `readers::NAMES`, so that a new reader cannot be left out.
#[test]
fn every_reader_survives_mutated_input() {
    for name in NAMES {
        run(named(name));
    }
}

/// Inputs `cargo fuzz` found crashing (`fuzz/artifacts/<target>/`), kept in
/// `tests/fixtures/fuzz-regressions/<target>/`: each must now read or fail with a damage
/// error. (The first two: a trailer's index offset near `u64::MAX` overflowed.)
#[test]
fn fuzz_regressions_stay_fixed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-regressions");
    let mut checked = 0;
    for name in NAMES {
        let dir = root.join(name.replace(", ", "_").replace(' ', "_"));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut reader = named(name);
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            if let Err(err) = (reader.read)(&bytes) {
                assert!(acceptable(&err), "{}: {err:?}", e.path().display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "the regression inputs are missing ({checked} found)");
}
