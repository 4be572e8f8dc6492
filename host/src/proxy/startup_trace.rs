//! The start-up phase trace: with `LUAHOST_STARTUP_TRACE` set in the
//! environment, each start-up phase prints one line on stderr with the wall
//! time since the process started, the process's CPU time (user + system,
//! which a loaded machine does not inflate) and its resident memory (VmRSS).
//! The start-up benchmark (`benches/startup.rs`) uses it for its breakdown.

use std::sync::OnceLock;
use std::time::Instant;

/// When tracing is on: the moment the trace started (the process's start,
/// near enough: `proxy::run` calls [`start`] first thing).
static STARTED: OnceLock<Option<Instant>> = OnceLock::new();

/// Starts the trace if `LUAHOST_STARTUP_TRACE` is set.
pub fn start() {
    STARTED.get_or_init(|| std::env::var_os("LUAHOST_STARTUP_TRACE").map(|_| Instant::now()));
}

/// Prints the line for the phase that just ended.
pub fn mark(phase: &str) {
    let Some(Some(at)) = STARTED.get() else {
        return;
    };
    eprintln!(
        "[startup] {phase:<24} wall {:>8.1} ms  cpu {:>8.1} ms  rss {:>7} kB",
        at.elapsed().as_secs_f64() * 1000.0,
        cpu_ms(),
        rss_kb()
    );
}

/// User + system CPU time of the whole process, in milliseconds.
fn cpu_ms() -> f64 {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

/// VmRSS of the process, in kB (0 when /proc is not readable).
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
