//! Where Lua messages go (`core.log` & co., `txn:log` & co.), as HAProxy
//! routes them: `core.*` to the global loggers, `txn:*` to the loggers of
//! the transaction's proxy (its backend once chosen, else its frontend),
//! and to stderr per `tune.lua.log.stderr`.

use crate::config::LuaLogStderr;
use std::sync::RwLock;

/// `tune.lua.log.loggers` and `tune.lua.log.stderr`.
struct LuaRouting {
    loggers: bool,
    stderr: LuaLogStderr,
}

static LUA_ROUTING: RwLock<LuaRouting> = RwLock::new(LuaRouting {
    loggers: true,
    stderr: LuaLogStderr::Auto,
});

/// Sets the routing of Lua messages.
pub fn set_lua_routing(loggers: bool, stderr: LuaLogStderr) {
    if let Ok(mut r) = LUA_ROUTING.write() {
        *r = LuaRouting { loggers, stderr };
    }
}

/// Logs a message from a Lua script at `level`. `proxy` is the proxy of
/// the transaction for `txn:log` and its kin, none for `core.log`.
pub fn lua(proxy: Option<&str>, level: i32, msg: &str) {
    let level = level.clamp(super::EMERG, super::DEBUG);
    let (loggers_on, stderr) = match LUA_ROUTING.read() {
        Ok(r) => (r.loggers, r.stderr),
        Err(_) => (true, LuaLogStderr::Auto),
    };
    // As HAProxy: unprintable bytes become '.'.
    let clean: String = msg
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    let loggers = match proxy {
        Some(name) => super::logger::proxy(name),
        None => super::logger::global(),
    };
    let has_loggers = loggers.as_ref().is_some_and(|l| !l.is_empty());
    if loggers_on {
        if let Some(l) = &loggers {
            l.send(level, clean.as_bytes());
        }
    }
    let to_stderr = match stderr {
        LuaLogStderr::On => true,
        LuaLogStderr::Off => false,
        // "auto": stderr only when the message had no logger to go to.
        LuaLogStderr::Auto => !loggers_on || !has_loggers,
    };
    if to_stderr {
        super::log(level, &clean);
    }
}
