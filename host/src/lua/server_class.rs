//! The Lua `Server` class (HAProxy 3.0), reached through a Proxy's
//! `servers` table or `Server:tracking()`.
//!
//! An object is a table holding a [`ServerHandle`] at [0]: the live server,
//! so every read sees its current state. Changes go through the model
//! (`backend/runtime.rs`), which keeps load balancing in step and publishes
//! the server events. Once the server is deleted, its methods return nil
//! (or nothing), as HAProxy's do. The deprecated `name` and `puid` fields
//! still answer, with a warning logged once per process.

use crate::backend::stat_fields;
use crate::backend::{AdminState, CheckFlags, OperCause, OperState};
use crate::lua::class::{native, Class};
use crate::lua::proxy_class::stat_table;
use crate::lua::proxy_index::{self, ServerHandle};
use mlua::{Lua, Table, UserDataRef, Value};
use std::sync::atomic::AtomicBool;

static WARNED_NAME: AtomicBool = AtomicBool::new(false);
static WARNED_PUID: AtomicBool = AtomicBool::new(false);

/// The handle of a live (not deleted) server; None once deleted.
fn live(this: &Value, method: &str) -> mlua::Result<Option<UserDataRef<ServerHandle>>> {
    let h = native::<ServerHandle>(this, "Server", method)?;
    Ok((!h.srv.is_deleted()).then_some(h))
}

/// A string argument as `luaL_checkstring` takes it (numbers converted).
fn string_arg(v: &Value, n: usize, method: &str) -> mlua::Result<String> {
    match v {
        Value::String(s) => Ok(s.to_str()?.to_string()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Number(f) => Ok(f.to_string()),
        other => Err(mlua::Error::runtime(format!(
            "bad argument #{n} to '{method}' (string expected, got {})",
            other.type_name()
        ))),
    }
}

/// A getter: `f(handle)` for a live server, nil once deleted.
fn getter<R: mlua::IntoLua>(
    lua: &Lua,
    class: &Class,
    name: &'static str,
    f: impl Fn(&Lua, &ServerHandle) -> mlua::Result<R> + 'static,
) -> mlua::Result<()> {
    class.method(
        name,
        lua.create_function(move |lua, this: Value| match live(&this, name)? {
            Some(h) => f(lua, &h)?.into_lua(lua),
            None => Ok(Value::Nil),
        })?,
    )
}

/// An action returning nothing: `f(handle)` for a live server.
fn action(
    lua: &Lua,
    class: &Class,
    name: &'static str,
    f: impl Fn(&ServerHandle) + 'static,
) -> mlua::Result<()> {
    class.method(
        name,
        lua.create_function(move |_, this: Value| {
            if let Some(h) = live(&this, name)? {
                f(&h);
            }
            Ok(())
        })?,
    )
}

/// `check_force_*`: HAProxy's Lua leaves a tracking server alone (it
/// follows the server it tracks).
fn force_oper(h: &ServerHandle, state: OperState) {
    if !h.srv.track.is_tracking() {
        h.be.force_oper_state(&h.srv, state, OperCause::Lua);
    }
}

/// Builds the class (once per Lua state).
pub fn class(lua: &Lua) -> mlua::Result<Class> {
    let class = Class::new(lua, "Server")?;
    getter(lua, &class, "get_name", |_, h| Ok(h.srv.name.to_string()))?;
    // HAProxy returns both ids as strings.
    getter(lua, &class, "get_puid", |_, h| Ok(h.srv.puid.to_string()))?;
    getter(lua, &class, "get_rid", |_, h| Ok(h.srv.rid.to_string()))?;
    // "ip:port", IPv6 without brackets, as HAProxy prints it.
    getter(lua, &class, "get_addr", |_, h| {
        let a = h.srv.addr();
        Ok(format!("{}:{}", a.ip(), a.port()))
    })?;
    getter(lua, &class, "get_weight", |_, h| Ok(h.srv.weight()))?;
    getter(lua, &class, "get_maxconn", |_, h| Ok(h.srv.maxconn()))?;
    getter(lua, &class, "get_cur_sess", |_, h| Ok(h.srv.current()))?;
    getter(lua, &class, "get_pend_conn", |_, h| Ok(h.srv.pending()))?;
    getter(lua, &class, "is_draining", |_, h| Ok(h.srv.is_draining()))?;
    getter(lua, &class, "is_backup", |_, h| Ok(h.srv.backup))?;
    getter(lua, &class, "is_dynamic", |_, h| Ok(h.srv.dynamic))?;
    getter(lua, &class, "get_stats", |lua, h| {
        stat_table(lua, stat_fields::server_line(&h.be, &h.srv))
    })?;
    getter(lua, &class, "get_proxy", |lua, h| {
        match h.reg.backend_position(h.be.name()) {
            Some(at) => Ok(Value::Table(proxy_index::new_proxy(lua, at)?)),
            None => Ok(Value::Nil),
        }
    })?;
    getter(lua, &class, "tracking", |lua, h| {
        match h.srv.track.tracked() {
            Some((be, srv)) => Ok(Value::Table(proxy_index::new_server(
                lua, &h.reg, &be, &srv,
            )?)),
            None => Ok(Value::Nil),
        }
    })?;
    // An array, newest tracker first, as HAProxy's list is walked.
    getter(lua, &class, "get_trackers", |lua, h| {
        let t = lua.create_table()?;
        for (i, (be, srv)) in h.srv.track.trackers().iter().enumerate() {
            t.raw_set(i + 1, proxy_index::new_server(lua, &h.reg, be, srv)?)?;
        }
        Ok(t)
    })?;
    crate::lua::event_sub::server_method(lua, &class)?;

    class.method(
        "set_addr",
        lua.create_function(|_, (this, addr, port): (Value, Value, Option<Value>)| {
            let Some(h) = live(&this, "set_addr")? else {
                return Ok(None);
            };
            let addr = string_arg(&addr, 2, "set_addr")?;
            let port = match &port {
                Some(p) => Some(string_arg(p, 3, "set_addr")?),
                None => None,
            };
            Ok(Some(h.be.update_addr_port(
                &h.srv,
                Some(&addr),
                port.as_deref(),
                "Lua script",
            )))
        })?,
    )?;
    class.method(
        "set_weight",
        lua.create_function(|_, (this, w): (Value, Value)| {
            let Some(h) = live(&this, "set_weight")? else {
                return Ok(None);
            };
            Ok(h.be.set_weight_request(&h.srv, &string_arg(&w, 2, "set_weight")?))
        })?,
    )?;
    class.method(
        "set_maxconn",
        lua.create_function(|_, (this, n): (Value, Value)| {
            let Some(h) = live(&this, "set_maxconn")? else {
                return Ok(None);
            };
            Ok(h.be.set_maxconn_request(&h.srv, &string_arg(&n, 2, "set_maxconn")?))
        })?,
    )?;
    action(lua, &class, "set_drain", |h| {
        h.be.set_admin_state(&h.srv, AdminState::Drain)
    })?;
    action(lua, &class, "set_maint", |h| {
        h.be.set_admin_state(&h.srv, AdminState::Maint)
    })?;
    action(lua, &class, "set_ready", |h| {
        h.be.set_admin_state(&h.srv, AdminState::Ready)
    })?;
    // Enabling or disabling checks only applies to configured checks.
    action(lua, &class, "check_enable", |h| {
        if h.srv.check_flags() & CheckFlags::CONFIGURED != 0 {
            h.srv.set_check_flags(CheckFlags::ENABLED, true);
        }
    })?;
    action(lua, &class, "check_disable", |h| {
        if h.srv.check_flags() & CheckFlags::CONFIGURED != 0 {
            h.srv.set_check_flags(CheckFlags::ENABLED, false);
        }
    })?;
    action(lua, &class, "agent_enable", |h| {
        if h.srv.check_flags() & CheckFlags::AGENT_CONFIGURED != 0 {
            h.srv.set_check_flags(CheckFlags::AGENT_ENABLED, true);
        }
    })?;
    action(lua, &class, "agent_disable", |h| {
        if h.srv.check_flags() & CheckFlags::AGENT_CONFIGURED != 0 {
            h.srv.set_check_flags(CheckFlags::AGENT_ENABLED, false);
        }
    })?;
    action(lua, &class, "check_force_up", |h| {
        force_oper(h, OperState::Running)
    })?;
    action(lua, &class, "check_force_nolb", |h| {
        force_oper(h, OperState::Stopping)
    })?;
    action(lua, &class, "check_force_down", |h| {
        force_oper(h, OperState::Stopped)
    })?;
    // Agent forcing applies only while the agent check runs (HAProxy).
    action(lua, &class, "agent_force_up", |h| {
        if h.srv.check_flags() & CheckFlags::AGENT_ENABLED != 0 {
            force_oper(h, OperState::Running);
        }
    })?;
    action(lua, &class, "agent_force_down", |h| {
        if h.srv.check_flags() & CheckFlags::AGENT_ENABLED != 0 {
            force_oper(h, OperState::Stopped);
        }
    })?;
    // Kills the streams using the server now (HAProxy's SF_ERR_KILLED).
    action(lua, &class, "shut_sess", |h| {
        h.be.kill_server_streams(&h.srv)
    })?;

    let methods = class.methods.clone();
    class.meta.raw_set(
        "__index",
        lua.create_function(move |lua, (this, key): (Table, Value)| {
            let m: Value = methods.raw_get(&key)?;
            if !m.is_nil() {
                return Ok(m);
            }
            let Value::String(k) = &key else {
                return Ok(Value::Nil);
            };
            let this = Value::Table(this);
            match &*k.to_str()? {
                "name" => {
                    proxy_index::warn_deprecated(lua, &WARNED_NAME, "server", "name", "get_name");
                    match live(&this, "name")? {
                        Some(h) => Ok(Value::String(lua.create_string(&*h.srv.name)?)),
                        None => Ok(Value::Nil),
                    }
                }
                "puid" => {
                    proxy_index::warn_deprecated(lua, &WARNED_PUID, "server", "puid", "get_puid");
                    match live(&this, "puid")? {
                        Some(h) => Ok(Value::String(lua.create_string(h.srv.puid.to_string())?)),
                        None => Ok(Value::Nil),
                    }
                }
                _ => Ok(Value::Nil),
            }
        })?,
    )?;
    Ok(class)
}
