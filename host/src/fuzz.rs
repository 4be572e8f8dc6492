//! Seeded, bounded fuzzing for unit tests: a small PRNG and a case runner
//! that prints the seed of a failing case so it can be replayed.
//!
//! - `FUZZ_CASES=N` runs N generated cases per fuzz test instead of the
//!   default (a longer run: `FUZZ_CASES=100000 cargo test -p luahost fuzz`);
//! - `FUZZ_SEED=S` runs only the case with seed S (the number a failure
//!   prints), for replaying it under a debugger or with prints.
//!
//! Seeds that once found a bug are passed as `regressions` and run first,
//! every time. The same scheme lives in `src/lib.rs` for the integration
//! tests (the two crates share no test code).

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// splitmix64: tiny, fast, and every seed gives a good stream.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Up to `max_len` random bytes (the length is random too).
    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// The seed of case `i` of the test called `name`: fixed, so CI runs the
/// same cases every time, and different between tests.
fn case_seed(name: &str, i: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Rng::new(h ^ i).next_u64()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Runs `check` on the regression seeds, then on `default_cases` generated
/// seeds (see the module doc for the environment variables). A case fails
/// by returning Err or by panicking; either way the seed is printed.
pub fn run(
    name: &str,
    default_cases: u64,
    regressions: &[u64],
    check: impl Fn(&mut Rng) -> Result<(), String>,
) {
    let seeds: Vec<u64> = match env_u64("FUZZ_SEED") {
        Some(s) => vec![s],
        None => {
            let n = env_u64("FUZZ_CASES").unwrap_or(default_cases);
            let generated = (0..n).map(|i| case_seed(name, i));
            regressions.iter().copied().chain(generated).collect()
        }
    };
    for seed in seeds {
        let replay = format!("replay: FUZZ_SEED={seed} cargo test -p luahost {name}");
        match catch_unwind(AssertUnwindSafe(|| check(&mut Rng::new(seed)))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{name}: seed {seed}: {e}\n{replay}"),
            Err(p) => {
                eprintln!("{name}: seed {seed} panicked\n{replay}");
                resume_unwind(p)
            }
        }
    }
}
