//! Logging in HAProxy's shapes:
//! - process messages on stderr (runtime events, Lua messages without a
//!   logger): `[alert] 324/230954 (4242) : message`;
//! - `log` targets (`logger`, `sender`, `syslog`): syslog lines over UDP,
//!   unix datagram sockets, stdout or stderr, never blocking a worker;
//! - the traffic log (`traffic`): one line per transaction, httplog,
//!   tcplog or `log-format`, sent to the frontend's loggers;
//! - Lua messages (`lua`): `core.log` to the global loggers, `txn:log` to
//!   the transaction's proxy's;
//! - with `-d`, a short access line per request on stderr.

pub mod capture;
mod logger;
mod lua;
mod sender;
mod syslog;
mod time;
mod traffic;

pub use logger::{install as install_loggers, Loggers};
pub use lua::{lua, set_lua_routing};
pub use sender::dropped;
pub use time::UtcTime;
pub use traffic::{TrafficLog, TxnFacts};

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Syslog levels as HAProxy numbers them (core.emerg .. core.debug).
pub const LEVEL_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

pub const EMERG: i32 = 0;
pub const ALERT: i32 = 1;
pub const ERR: i32 = 3;
pub const WARNING: i32 = 4;
pub const NOTICE: i32 = 5;
pub const INFO: i32 = 6;
pub const DEBUG: i32 = 7;

/// Messages above this level are dropped.
static MAX_LEVEL: AtomicI32 = AtomicI32::new(INFO);
static ACCESS_LOG: AtomicBool = AtomicBool::new(false);

/// Sets the most verbose level printed.
pub fn set_max_level(level: i32) {
    MAX_LEVEL.store(level.clamp(-1, DEBUG), Ordering::Relaxed);
}

pub fn max_level() -> i32 {
    MAX_LEVEL.load(Ordering::Relaxed)
}

/// Turns the per-request access log on or off.
pub fn set_access_log(on: bool) {
    ACCESS_LOG.store(on, Ordering::Relaxed);
}

pub fn access_log_enabled() -> bool {
    ACCESS_LOG.load(Ordering::Relaxed)
}

/// Logs `msg` at `level` (0..=7). Out-of-range levels are clamped.
pub fn log(level: i32, msg: &str) {
    let level = level.clamp(EMERG, DEBUG);
    if level > max_level() {
        return;
    }
    let line = format_line(level, msg);
    // One write per line so lines of concurrent workers do not interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `[level] ddd/hhmmss (pid) : message\n`.
fn format_line(level: i32, msg: &str) -> String {
    let t = UtcTime::now();
    format!(
        "[{}] {:03}/{:02}{:02}{:02} ({}) : {}\n",
        LEVEL_NAMES[level.clamp(EMERG, DEBUG) as usize],
        t.yday,
        t.hour,
        t.min,
        t.sec,
        std::process::id(),
        msg.trim_end_matches('\n')
    )
}

pub fn alert(msg: &str) {
    log(ALERT, msg);
}
pub fn warning(msg: &str) {
    log(WARNING, msg);
}
pub fn notice(msg: &str) {
    log(NOTICE, msg);
}
pub fn debug(msg: &str) {
    log(DEBUG, msg);
}

/// Writes an access log line (already formatted) when enabled.
pub fn access(line: &str) {
    if access_log_enabled() {
        let _ = std::io::stderr()
            .lock()
            .write_all(format!("{line}\n").as_bytes());
    }
}
