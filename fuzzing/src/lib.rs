//! Seeded, bounded fuzzing: one small PRNG and one way of choosing the
//! cases, shared by the host crate's unit-test fuzzers (a dev-dependency of
//! `luahost`, host/src/fuzz.rs) and the integration tests' fuzzers (the
//! suite's `luahost_suite::fuzz`). A crate of its own, with no dependency,
//! so that both can use it without one depending on the other.
//!
//! - `FUZZ_CASES=N` runs N generated cases instead of a test's default (a
//!   longer run: `FUZZ_CASES=100000 cargo test -p luahost fuzz`);
//! - `FUZZ_SEED=S` runs only the case with seed S (the number a failure
//!   prints), for replaying it under a debugger or with prints.
//!
//! Seeds that once found a bug are kept in the test as regression cases and
//! run first, every time.

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
pub fn case_seed(name: &str, i: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Rng::new(h ^ i).next_u64()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// The seeds to run: `FUZZ_SEED` alone, or the regression seeds then
/// `FUZZ_CASES` (default `default_cases`) generated ones.
pub fn seeds(name: &str, default_cases: u64, regressions: &[u64]) -> Vec<u64> {
    if let Some(s) = env_u64("FUZZ_SEED") {
        return vec![s];
    }
    let n = env_u64("FUZZ_CASES").unwrap_or(default_cases);
    regressions
        .iter()
        .copied()
        .chain((0..n).map(|i| case_seed(name, i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_name_and_case_give_the_same_stream() {
        assert_eq!(case_seed("a", 3), case_seed("a", 3));
        assert_ne!(case_seed("a", 3), case_seed("b", 3));
        let (mut x, mut y) = (Rng::new(7), Rng::new(7));
        assert_eq!(x.bytes(64), y.bytes(64));
        assert_eq!(Rng::new(1).below(0), 0);
    }
}
