//! The Lua `Proxy` class (HAProxy 3.0): a frontend, backend or listen
//! section, reached through `core.proxies`, `core.frontends`,
//! `core.backends` or `Server:get_proxy()`.
//!
//! An object is a table holding at [0] a light userdata naming the proxy
//! (`proxy_index::proxy_ref`). Its `servers` and
//! `listeners` fields are lazy index tables built on first access; the
//! deprecated `name` and `uuid` fields still answer, with a warning logged
//! once per process, as HAProxy does.

use crate::backend::stat_fields::{self, StatLine, StatValue};
use crate::backend::ProxyEntry;
use crate::lua::class::Class;
use crate::lua::proxy_index::{self, proxy_handle, ProxyHandle};
use mlua::{Lua, Table, Value};
use std::sync::atomic::AtomicBool;

static WARNED_NAME: AtomicBool = AtomicBool::new(false);
static WARNED_UUID: AtomicBool = AtomicBool::new(false);

fn entry<'a>(h: &'a ProxyHandle, method: &str) -> mlua::Result<&'a ProxyEntry> {
    h.reg
        .proxy_at(h.at)
        .ok_or_else(|| mlua::Error::runtime(format!("{method}: no such proxy")))
}

/// A statistics line as a Lua table (field name -> value).
pub fn stat_table(lua: &Lua, line: StatLine) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, line.len())?;
    for (name, v) in line {
        match v {
            StatValue::Int(i) => t.raw_set(name, i)?,
            StatValue::Str(s) => t.raw_set(name, s)?,
        }
    }
    Ok(t)
}

/// The run-time controls of `Proxy`: as HAProxy's, they return nothing,
/// and a change that does not apply (pausing a paused frontend, pausing a
/// backend, which has no listeners) does nothing.
fn control(what: &'static str) -> impl Fn(&Lua, Value) -> mlua::Result<()> {
    move |lua, this| {
        let h = proxy_handle(lua, &this, what)?;
        let e = entry(&h, what)?;
        match what {
            "shut_bcksess" => {
                if let Some(be) = e.backend() {
                    be.kill_backup_streams();
                }
            }
            _ => {
                let Some(ctl) = e.control() else {
                    return Ok(());
                };
                let _ = match what {
                    "pause" => ctl.pause(),
                    "resume" => ctl.resume(),
                    _ => ctl.stop(cumulated_conns(e)),
                };
            }
        }
        Ok(())
    }
}

/// The cumulated connections of a proxy's frontend and backend sides, for
/// the log line of a stop.
pub fn cumulated_conns(e: &ProxyEntry) -> (u64, u64) {
    use std::sync::atomic::Ordering;
    let fe = e
        .frontend_counters()
        .map_or(0, |c| c.total.load(Ordering::Relaxed) as u64);
    let be = e.backend().map_or(0, |b| {
        b.servers()
            .servers
            .iter()
            .map(|s| s.counters.total.load(Ordering::Relaxed))
            .sum()
    });
    (fe, be)
}

/// Builds the class (once per Lua state).
pub fn class(lua: &Lua) -> mlua::Result<Class> {
    let class = Class::new(lua, "Proxy")?;
    class.method(
        "get_name",
        lua.create_function(|lua, this: Value| {
            let h = proxy_handle(lua, &this, "get_name")?;
            Ok(entry(&h, "get_name")?.name.to_string())
        })?,
    )?;
    class.method(
        "get_uuid",
        lua.create_function(|lua, this: Value| {
            let h = proxy_handle(lua, &this, "get_uuid")?;
            // HAProxy returns the id as a string.
            Ok(entry(&h, "get_uuid")?.uuid.to_string())
        })?,
    )?;
    class.method(
        "get_cap",
        lua.create_function(|lua, this: Value| {
            let h = proxy_handle(lua, &this, "get_cap")?;
            Ok(entry(&h, "get_cap")?.cap.name())
        })?,
    )?;
    class.method(
        "get_mode",
        lua.create_function(|lua, this: Value| {
            let h = proxy_handle(lua, &this, "get_mode")?;
            Ok(match entry(&h, "get_mode")?.mode {
                crate::config::Mode::Http => "http",
                crate::config::Mode::Tcp => "tcp",
            })
        })?,
    )?;
    class.method(
        "get_srv_act",
        lua.create_function(|lua, this: Value| {
            let h = proxy_handle(lua, &this, "get_srv_act")?;
            let e = entry(&h, "get_srv_act")?;
            Ok(e.backend().map(|b| b.up_servers().0).unwrap_or(0))
        })?,
    )?;
    class.method(
        "get_srv_bck",
        lua.create_function(|lua, this: Value| {
            let h = proxy_handle(lua, &this, "get_srv_bck")?;
            let e = entry(&h, "get_srv_bck")?;
            Ok(e.backend().map(|b| b.up_servers().1).unwrap_or(0))
        })?,
    )?;
    class.method(
        "get_stats",
        lua.create_function(|lua, this: Value| {
            let h = proxy_handle(lua, &this, "get_stats")?;
            let e = entry(&h, "get_stats")?;
            // A proxy with a backend side reports its backend line.
            let line = match e.backend() {
                Some(be) => stat_fields::backend_line(be),
                None => stat_fields::frontend_line(e, None),
            };
            stat_table(lua, line)
        })?,
    )?;
    // No `mailers` section support: HAProxy returns nothing then.
    class.method(
        "get_mailers",
        lua.create_function(|lua, this: Value| {
            proxy_handle(lua, &this, "get_mailers")?;
            Ok(())
        })?,
    )?;
    for what in ["pause", "resume", "stop", "shut_bcksess"] {
        class.method(what, lua.create_function(control(what))?)?;
    }
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
            let h = proxy_handle(lua, &Value::Table(this.clone()), "index")?;
            let value = match &*k.to_str()? {
                "servers" => Value::Table(proxy_index::servers_table(lua, &h.reg, h.at)?),
                "listeners" => Value::Table(proxy_index::listeners_table(lua, &h.reg, h.at)?),
                "name" => {
                    proxy_index::warn_deprecated(lua, &WARNED_NAME, "proxy", "name", "get_name");
                    return Ok(Value::String(lua.create_string(&*entry(&h, "name")?.name)?));
                }
                "uuid" => {
                    proxy_index::warn_deprecated(lua, &WARNED_UUID, "proxy", "uuid", "get_uuid");
                    let uuid = entry(&h, "uuid")?.uuid.to_string();
                    return Ok(Value::String(lua.create_string(&uuid)?));
                }
                _ => return Ok(Value::Nil),
            };
            // Kept in the object: later reads find the same table.
            this.raw_set(key, &value)?;
            Ok(value)
        })?,
    )?;
    Ok(class)
}
