//! Seeded, bounded fuzzing for unit tests: the case runner, which prints the
//! seed of a failing case so it can be replayed. The PRNG and the choice of
//! seeds (`FUZZ_CASES=N`, `FUZZ_SEED=S`) are the `luahost-fuzzing` crate's,
//! shared with the integration tests.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

pub use luahost_fuzzing::Rng;

/// Runs `check` on the regression seeds, then on `default_cases` generated
/// seeds (see `luahost_fuzzing::seeds` for the environment variables). A
/// case fails by returning Err or by panicking; either way the seed is
/// printed.
pub fn run(
    name: &str,
    default_cases: u64,
    regressions: &[u64],
    check: impl Fn(&mut Rng) -> Result<(), String>,
) {
    for seed in luahost_fuzzing::seeds(name, default_cases, regressions) {
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
