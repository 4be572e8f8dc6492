//! The `core` global and the `act` table, as HAProxy's Lua API defines them.

use crate::log;
use crate::lua::core_util::{self, DateFormat, Network};
use crate::lua::errors::done_error;
use crate::lua::state::{ActionReg, Phase, ServiceMode, ServiceReg, StateInfo};
use crate::lua::vars;
use mlua::{Function, Lua, MultiValue, Table, Value, Variadic};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The action kinds `core.register_action` accepts.
pub const ACTION_KINDS: [&str; 5] = [
    "tcp-req",
    "tcp-res",
    "http-req",
    "http-res",
    "http-after-res",
];

/// Action return codes (the `act` table).
const ACT_CODES: [(&str, i64); 8] = [
    ("CONTINUE", 0),
    ("STOP", 1),
    ("YIELD", 2),
    ("ERROR", 3),
    ("DONE", 4),
    ("DENY", 5),
    ("ABORT", 6),
    ("INVALID", 7),
];

/// Creates `core` and `act` in the globals of `lua`.
pub fn install(lua: &Lua, info: &Rc<StateInfo>) -> mlua::Result<()> {
    let core = lua.create_table()?;
    for (i, name) in log::LEVEL_NAMES.iter().enumerate() {
        core.set(*name, i as i64)?;
    }
    core.set("silent", -1)?;
    core.set("thread", info.thread_num as i64)?;

    install_logging(lua, &core)?;
    install_registration(lua, &core, info)?;
    install_flow(lua, &core)?;
    crate::lua::event_sub::install(lua, &core, info)?;
    install_info(lua, &core, info)?;
    install_parsers(lua, &core)?;

    // core.concat(): the concat crate's builder, the same code that
    // `require "concat"` loads in a stock interpreter.
    // SAFETY: new_builder is a lua_CFunction that follows the Lua C API
    // contract (checks its stack, raises errors only via lua_error).
    let concat = unsafe { lua.create_c_function(concat::new_builder)? };
    core.set("concat", concat)?;

    crate::lua::map_class::install(lua, &core)?;
    crate::lua::regex_class::install(lua, &core)?;
    crate::lua::proxy_index::install(lua, &core)?;
    crate::lua::socket_class::install(lua, &core)?;
    crate::lua::queue_class::install(lua, &core)?;
    crate::lua::httpclient_class::install(lua, &core, info)?;

    let act = lua.create_table()?;
    for (name, code) in ACT_CODES {
        act.set(name, code)?;
    }
    // act:wake_time(ms): when an action returns act.YIELD, run it again
    // after this delay.
    let i = info.clone();
    act.set(
        "wake_time",
        lua.create_function(move |_, (_act, ms): (Value, i64)| {
            i.wake_time.set(Some(ms.max(0) as u64));
            Ok(())
        })?,
    )?;
    lua.globals().set("act", act)?;
    lua.globals().set("core", core)?;
    Ok(())
}

fn install_logging(lua: &Lua, core: &Table) -> mlua::Result<()> {
    core.set(
        "log",
        lua.create_function(|_, (level, msg): (i64, mlua::LuaString)| {
            if level >= 0 {
                log::lua(None, level.min(7) as i32, &msg.to_string_lossy());
            }
            Ok(())
        })?,
    )?;
    for (name, level) in [
        ("Debug", log::DEBUG),
        ("Info", log::INFO),
        ("Warning", log::WARNING),
        ("Alert", log::ALERT),
    ] {
        core.set(
            name,
            lua.create_function(move |_, msg: mlua::LuaString| {
                log::lua(None, level, &msg.to_string_lossy());
                Ok(())
            })?,
        )?;
    }
    Ok(())
}

/// Fails unless the state is still running its body.
fn body_only(info: &StateInfo, what: &str) -> mlua::Result<()> {
    if info.phase.get() != Phase::Body {
        return Err(mlua::Error::runtime(format!(
            "{what}: not available outside of body context"
        )));
    }
    Ok(())
}

fn install_registration(lua: &Lua, core: &Table, info: &Rc<StateInfo>) -> mlua::Result<()> {
    let i = info.clone();
    core.set(
        "register_service",
        lua.create_function(move |_, (name, mode, func): (String, String, Function)| {
            body_only(&i, "register_service")?;
            let mode = match mode.as_str() {
                "http" => ServiceMode::Http,
                "tcp" => ServiceMode::Tcp,
                other => {
                    return Err(mlua::Error::runtime(format!(
                    "Lua service environment '{other}' is unknown. 'tcp' and 'http' are expected."
                )))
                }
            };
            i.regs
                .borrow_mut()
                .services
                .insert(name, ServiceReg { func, mode });
            Ok(())
        })?,
    )?;

    let i = info.clone();
    core.set(
        "register_action",
        lua.create_function(move |_, (name, kinds, func, nb_args): (String, Table, Function, Option<i64>)| {
            body_only(&i, "register_action")?;
            let mut list: Vec<&'static str> = Vec::new();
            for kind in kinds.sequence_values::<String>() {
                let kind = kind?;
                let Some(known) = ACTION_KINDS.iter().find(|k| **k == kind) else {
                    return Err(mlua::Error::runtime(format!(
                        "Lua action environment '{kind}' is unknown. 'tcp-req', 'tcp-res', 'http-req', \
                         'http-res' or 'http-after-res' are expected."
                    )));
                };
                list.push(known);
            }
            let nb_args = nb_args.unwrap_or(0).max(0) as usize;
            // One registration per kind: registering the name again for a
            // kind replaces that kind's function and leaves the others.
            let mut regs = i.regs.borrow_mut();
            let by_kind = regs.actions.entry(name).or_default();
            for kind in list {
                let reg = ActionReg { kind, func: func.clone(), nb_args };
                match by_kind.iter_mut().find(|r| r.kind == kind) {
                    Some(old) => *old = reg,
                    None => by_kind.push(reg),
                }
            }
            Ok(())
        })?,
    )?;

    let i = info.clone();
    core.set(
        "register_cli",
        lua.create_function(move |_, (path, usage, func): (Value, Value, Value)| {
            body_only(&i, "register_cli")?;
            let reg = cli_registration(path, usage, func)?;
            let mut regs = i.regs.borrow_mut();
            // As HAProxy: registering the same words again replaces the
            // function (with a warning); the first usage text stays.
            if let Some(old) = regs.clis.iter_mut().find(|c| c.path == reg.path) {
                crate::log::warning(&format!(
                    "Trying to register CLI keyword 'lua.{}' more than once. \
                     This will become a hard error in version 2.5.",
                    reg.path.join(" ")
                ));
                old.func = reg.func;
            } else {
                regs.clis.push(reg);
            }
            Ok(())
        })?,
    )?;

    let i = info.clone();
    core.set(
        "register_fetches",
        lua.create_function(move |_, (name, func): (String, Function)| {
            body_only(&i, "register_fetches")?;
            i.regs.borrow_mut().fetches.insert(name, func);
            Ok(())
        })?,
    )?;

    let i = info.clone();
    core.set(
        "register_converters",
        lua.create_function(move |_, (name, func): (String, Function)| {
            body_only(&i, "register_converters")?;
            i.regs.borrow_mut().converters.insert(name, func);
            Ok(())
        })?,
    )?;

    let i = info.clone();
    core.set(
        "register_init",
        lua.create_function(move |_, func: Function| {
            body_only(&i, "register_init")?;
            i.regs.borrow_mut().inits.push(func);
            Ok(())
        })?,
    )?;

    // register_task is allowed at any time: from the body, tasks start after
    // the init functions; later, they start at once on the current worker.
    let i = info.clone();
    core.set(
        "register_task",
        lua.create_function(move |lua, (func, args): (Function, Variadic<Value>)| {
            if args.len() > 4 {
                return Err(mlua::Error::runtime(
                    "register_task: at most 4 arguments are allowed",
                ));
            }
            let args: Vec<Value> = args.into_iter().collect();
            if i.phase.get() == Phase::Body {
                i.regs.borrow_mut().pending_tasks.push((func, args));
            } else {
                crate::lua::state::spawn_task(lua.clone(), i.clone(), func, args);
            }
            Ok(())
        })?,
    )?;
    Ok(())
}

fn install_flow(lua: &Lua, core: &Table) -> mlua::Result<()> {
    core.set(
        "sleep",
        lua.create_async_function(|_, secs: i64| async move {
            tokio::time::sleep(Duration::from_secs(secs.max(0) as u64)).await;
            Ok(())
        })?,
    )?;
    core.set(
        "msleep",
        lua.create_async_function(|_, ms: i64| async move {
            tokio::time::sleep(Duration::from_millis(ms.max(0) as u64)).await;
            Ok(())
        })?,
    )?;
    core.set(
        "yield",
        lua.create_async_function(|_, ()| async move {
            tokio::task::yield_now().await;
            Ok(())
        })?,
    )?;
    core.set(
        "done",
        lua.create_function(|_, _: MultiValue| -> mlua::Result<()> { Err(done_error()) })?,
    )?;
    core.set(
        "set_nice",
        // Accepted for compatibility; luahost's scheduler has no priorities.
        lua.create_function(|_, nice: i64| {
            if !(-1024..=1024).contains(&nice) {
                return Err(mlua::Error::runtime(
                    "set_nice: the nice value must be between -1024 and 1024",
                ));
            }
            Ok(())
        })?,
    )?;
    Ok(())
}

fn install_info(lua: &Lua, core: &Table, info: &Rc<StateInfo>) -> mlua::Result<()> {
    core.set(
        "now",
        lua.create_function(|lua, ()| {
            let d = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let t = lua.create_table()?;
            t.set("sec", d.as_secs() as i64)?;
            t.set("usec", d.subsec_micros() as i64)?;
            Ok(t)
        })?,
    )?;
    let nbthread = info.settings.nbthread;
    core.set(
        "get_info",
        lua.create_function(move |lua, ()| {
            let s = crate::stats::snapshot();
            let t = lua.create_table()?;
            t.set("Name", "luahost")?;
            t.set("Version", env!("CARGO_PKG_VERSION"))?;
            t.set("Release_date", "")?;
            t.set("Nbthread", nbthread as i64)?;
            t.set("Pid", std::process::id() as i64)?;
            t.set("Uptime_sec", s.uptime.as_secs() as i64)?;
            t.set("Uptime", format_uptime(s.uptime))?;
            t.set("CurrConns", s.curr_conns as i64)?;
            t.set("CumConns", s.cum_conns as i64)?;
            t.set("CumReq", s.cum_req as i64)?;
            t.set("Maxconn", s.maxconn as i64)?;
            t.set("Lua_mem_bytes", crate::lua::memory::used() as i64)?;
            // Log lines dropped because their socket was full (show info's field).
            t.set("DroppedLogs", crate::log::dropped() as i64)?;
            // `node` and `description` from global (show info's fields).
            t.set("node", crate::stats::node())?;
            if let Some(d) = crate::stats::description() {
                t.set("description", d)?;
            }
            Ok(t)
        })?,
    )?;
    core.set(
        "get_var",
        lua.create_function(|lua, name: String| match vars::get_proc(&name) {
            Some(v) => v.into_lua(lua),
            None => Ok(Value::Nil),
        })?,
    )?;
    Ok(())
}

/// "0d 0h01m05s", as HAProxy's show info prints uptime.
fn format_uptime(d: Duration) -> String {
    let s = d.as_secs();
    format!(
        "{}d {}h{:02}m{:02}s",
        s / 86_400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

fn install_parsers(lua: &Lua, core: &Table) -> mlua::Result<()> {
    core.set(
        "tokenize",
        lua.create_function(
            |lua, (s, seps, noblank): (mlua::LuaString, mlua::LuaString, Option<bool>)| {
                let s = s.as_bytes();
                let seps = seps.as_bytes();
                let t = lua.create_table()?;
                for (i, field) in core_util::tokenize(&s, &seps, noblank.unwrap_or(false))
                    .into_iter()
                    .enumerate()
                {
                    t.raw_set(i + 1, lua.create_string(field)?)?;
                }
                Ok(t)
            },
        )?,
    )?;
    core.set(
        "parse_addr",
        lua.create_function(|lua, s: String| match Network::parse(&s) {
            Some(n) => Ok(Value::UserData(lua.create_any_userdata(n)?)),
            None => Ok(Value::Nil),
        })?,
    )?;
    core.set(
        "match_addr",
        lua.create_function(|_, (a, b): (mlua::AnyUserData, mlua::AnyUserData)| {
            let a = a.borrow::<Network>()?;
            let b = b.borrow::<Network>()?;
            Ok(a.matches(&b))
        })?,
    )?;
    for (name, fmt) in [
        ("http_date", None),
        ("imf_date", Some(DateFormat::Imf)),
        ("rfc850_date", Some(DateFormat::Rfc850)),
        ("asctime_date", Some(DateFormat::Asctime)),
    ] {
        core.set(
            name,
            lua.create_function(move |_, s: String| Ok(core_util::parse_http_date(&s, fmt)))?,
        )?;
    }
    Ok(())
}

/// Checks `core.register_cli`'s arguments with HAProxy's messages.
fn cli_registration(
    path: Value,
    usage: Value,
    func: Value,
) -> mlua::Result<crate::lua::state::CliReg> {
    let bad = |n: usize, why: &str| {
        mlua::Error::runtime(format!("bad argument #{n} to 'register_cli' ({why})"))
    };
    let Value::Table(t) = path else {
        return Err(bad(1, "1st argument must be a table"));
    };
    let mut words = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let (_, v) = pair?;
        if words.len() >= 5 {
            return Err(bad(
                1,
                "1st argument must be a table with a maximum of 5 entries",
            ));
        }
        match v {
            Value::String(s) => words.push(s.to_string_lossy()),
            _ => return Err(bad(1, "1st argument must be a table filled with strings")),
        }
    }
    let usage = match usage {
        Value::String(s) => s.to_string_lossy(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err(bad(
                2,
                &format!("string expected, got {}", other.type_name()),
            ))
        }
    };
    let Value::Function(func) = func else {
        return Err(bad(3, "function expected"));
    };
    Ok(crate::lua::state::CliReg {
        path: words,
        usage,
        func,
    })
}
