//! Process logging to stderr, in HAProxy's shapes:
//! - messages (Lua's core.log & co, runtime events):
//!   `[alert] 324/230954 (4242) : message`
//! - access log lines (with `-d`), one per request or connection.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Where Lua messages (`core.log` & co., `txn:log`) go, from
/// `tune.lua.log.loggers` and `tune.lua.log.stderr` (HAProxy 2.9+).
struct LuaRouting {
    /// The `log` targets of `global` that receive Lua messages, with the
    /// most verbose level each takes; empty when `tune.lua.log.loggers off`.
    loggers: Vec<(crate::config::LogDest, i32)>,
    /// Also print the message on stderr.
    stderr: bool,
}

static LUA_ROUTING: std::sync::RwLock<LuaRouting> = std::sync::RwLock::new(LuaRouting {
    loggers: Vec::new(),
    stderr: true,
});

/// Sets the routing of Lua messages. As in HAProxy, `auto` prints on stderr
/// only when the message has no logger: loggers are off or none is
/// configured. luahost's loggers are the global `log` lines (proxies use
/// them through `log global`); each writes to its stream (stdout or
/// stderr) in the same line format as the stderr output.
pub fn set_lua_routing(
    loggers_on: bool,
    stderr: crate::config::LuaLogStderr,
    targets: &[crate::config::LogTarget],
) {
    use crate::config::LuaLogStderr;
    let loggers: Vec<_> = if loggers_on {
        targets
            .iter()
            .map(|t| (t.dest, t.level.map(|l| l as i32).unwrap_or(DEBUG)))
            .collect()
    } else {
        Vec::new()
    };
    let stderr = match stderr {
        LuaLogStderr::On => true,
        LuaLogStderr::Off => false,
        LuaLogStderr::Auto => loggers.is_empty(),
    };
    if let Ok(mut r) = LUA_ROUTING.write() {
        *r = LuaRouting { loggers, stderr };
    }
}

/// Logs a message from a Lua script at `level`, routed as configured.
pub fn lua(level: i32, msg: &str) {
    let level = level.clamp(EMERG, DEBUG);
    let Ok(routing) = LUA_ROUTING.read() else {
        return log(level, msg);
    };
    for &(dest, max) in &routing.loggers {
        if level <= max && level <= max_level() {
            let line = format_line(level, msg);
            let _ = match dest {
                crate::config::LogDest::Stdout => {
                    std::io::stdout().lock().write_all(line.as_bytes())
                }
                crate::config::LogDest::Stderr => {
                    std::io::stderr().lock().write_all(line.as_bytes())
                }
            };
        }
    }
    if routing.stderr {
        log(level, msg);
    }
}

/// Writes an access log line (already formatted) when enabled.
pub fn access(line: &str) {
    if access_log_enabled() {
        let _ = std::io::stderr()
            .lock()
            .write_all(format!("{line}\n").as_bytes());
    }
}

/// A broken-down UTC time.
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub yday: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub millis: u32,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl UtcTime {
    pub fn now() -> UtcTime {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UtcTime::from_unix(d.as_secs() as i64, d.subsec_millis())
    }

    pub fn from_unix(secs: i64, millis: u32) -> UtcTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        let yday = (days - days_from_civil(year, 1, 1)) as u32;
        UtcTime {
            year,
            month,
            day,
            yday,
            hour: rem / 3600,
            min: rem / 60 % 60,
            sec: rem % 60,
            millis,
        }
    }

    /// HAProxy's access-log date: `20/Nov/2026:23:09:54.123`.
    pub fn log_date(&self) -> String {
        format!(
            "{:02}/{}/{}:{:02}:{:02}:{:02}.{:03}",
            self.day,
            MONTHS[(self.month - 1) as usize],
            self.year,
            self.hour,
            self.min,
            self.sec,
            self.millis
        )
    }
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month 1..=12, day) to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for days in [-1000, 0, 59, 365, 10_957, 20_412, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        let t = UtcTime::from_unix(1_763_680_194, 5); // 2025-11-20 23:09:54 UTC
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.min, t.sec),
            (2025, 11, 20, 23, 9, 54)
        );
        assert_eq!(t.yday, 323);
        assert_eq!(t.log_date(), "20/Nov/2025:23:09:54.005");
    }
}
