//! Replays the committed fuzz corpus (`fuzz/corpus/TARGET/`) and every input a fuzzer found a
//! crash with (`fuzz/regressions/TARGET/`) through the fuzz targets' own bodies, so what the
//! fuzzers found stays fixed in the normal test suite, without a fuzzing toolchain.
//!
//! `cargo test --test all -- --ignored fuzz_replay::write_seeds` rewrites the seed files of the
//! corpus (`fuzz/corpus/TARGET/seed-*`) from the current writers.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "../fuzz/src/lib.rs"]
mod fuzz_bodies;

fn fuzz_dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target)
}

/// Runs `body` on every file of the target's corpus and regressions; a panic names the file.
fn replay(target: &str, body: fn(&[u8])) {
    let mut seen = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir(kind, target)) else { continue };
        let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            if std::panic::catch_unwind(|| body(&bytes)).is_err() {
                panic!("{target}: {} fails (its panic is printed above)", file.display());
            }
            seen += 1;
        }
    }
    assert!(seen > 0, "no corpus for fuzz target {target}");
}

/// Mutants of each seed file made per target by [`mutants`]: a fixed count, so the test's
/// time is known (the fuzzers, not this test, are what explores; this keeps a stable-only
/// machine exercising the bodies beyond the committed inputs).
const MUTANTS_PER_SEED: u64 = 24;

/// `count` mutants of `seed`, each from one to four edits a fuzzer makes: a byte set to a
/// random or boundary value, a cut, a run of bytes inserted or removed, a slice copied over
/// another, a little-endian `u64` set to a boundary value. Deterministic in `rng_seed`.
fn mutants(seed: &[u8], count: u64, rng_seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(rng_seed);
    (0..count)
        .map(|_| {
            let mut m = seed.to_vec();
            for _ in 0..rng.random_range(1..=4) {
                let n = m.len().max(1);
                let at = rng.random_range(0..n);
                match rng.random_range(0..6) {
                    0 if !m.is_empty() => m[at] = rng.random(),
                    1 if !m.is_empty() => m[at] = [0, 1, 0x7f, 0x80, 0xff][rng.random_range(0..5)],
                    2 => m.truncate(at),
                    3 => {
                        let run: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                        m.splice(at.min(m.len())..at.min(m.len()), run);
                    }
                    4 if at + 1 < m.len() => {
                        let end = rng.random_range(at + 1..=m.len().min(at + 64));
                        m.drain(at..end);
                    }
                    5 if at + 8 <= m.len() => {
                        let v: u64 = [0, 1, u64::from(u32::MAX), 1 << 31, 1 << 40, u64::MAX][rng.random_range(0..6)];
                        m[at..at + 8].copy_from_slice(&v.to_le_bytes());
                    }
                    _ => {
                        let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
                        let len = rng.random_range(0..=16).min(n - a.max(b));
                        if len > 0 && m.len() >= n {
                            m.copy_within(a..a + len, b);
                        }
                    }
                }
            }
            m
        })
        .collect()
}

/// Runs `body` on [`MUTANTS_PER_SEED`] mutants of each `seed-*` file of the target's corpus; a
/// panic names the seed and the mutant's number.
fn mutate(target: &str, body: fn(&[u8])) {
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(fuzz_dir("corpus", target))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seed-"))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seed files for fuzz target {target}");
    for (s, seed) in seeds.iter().enumerate() {
        let bytes = std::fs::read(seed).unwrap();
        for (i, m) in mutants(&bytes, MUTANTS_PER_SEED, s as u64).into_iter().enumerate() {
            if std::panic::catch_unwind(|| body(&m)).is_err() {
                panic!("{target}: mutant {i} of {} fails (its panic is printed above)", seed.display());
            }
        }
    }
}

macro_rules! targets {
    ($($name:ident),*) => {$(
        mod $name {
            #[test]
            fn corpus_and_regressions_replay() {
                super::replay(stringify!($name), super::fuzz_bodies::$name);
            }

            #[test]
            fn mutated_seeds_give_typed_errors() {
                super::mutate(stringify!($name), super::fuzz_bodies::$name);
            }
        }
    )*};
}

targets!(idx, idx_gz, module, quant, optim_state, study);

#[test]
fn mutants_are_deterministic_and_differ_from_the_seed() {
    let seed: Vec<u8> = (0..100).collect();
    let a = mutants(&seed, 16, 7);
    assert_eq!(a, mutants(&seed, 16, 7));
    assert!(a.iter().filter(|m| **m != seed).count() >= 12, "most mutants change the seed");
}

#[test]
#[ignore = "rewrites the seed files of fuzz/corpus; run by hand when a file format changes"]
fn write_seeds() {
    for (target, name, bytes) in fuzz_bodies::seeds() {
        let dir = fuzz_dir("corpus", target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}
