//! The lazy proxy index: `core.proxies`, `core.frontends`, `core.backends`,
//! and the `servers` and `listeners` tables of a Proxy.
//!
//! Each is an empty table whose metatable resolves `t[name]` against the
//! live model when it is read (`__index`), enumerates it for `pairs()`
//! (`__pairs`, an iterator that walks the model), and ignores assignment
//! (`__newindex`). Nothing is built per proxy or per server until a script
//! asks for it, so a configuration with hundreds of thousands of backends
//! costs nothing here at start-up; servers added at run time are visible,
//! deleted ones vanish. Each lookup returns a fresh object (`#t` is 0), as
//! in HAProxy.

use crate::backend::{Backend, Registry, Server};
use crate::lua::class::Class;
use crate::lua::{listener_class, proxy_class, server_class};
use mlua::{Function, LightUserData, Lua, Table, Value};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

/// The native side of a Proxy object: a position in the registry.
pub struct ProxyHandle {
    pub reg: Arc<Registry>,
    pub at: usize,
}

/// The native side of a Server object.
pub struct ServerHandle {
    pub reg: Arc<Registry>,
    pub be: Arc<Backend>,
    pub srv: Arc<Server>,
}

/// The native side of a Listener object: listener `idx` of proxy `at`.
pub struct ListenerHandle {
    pub reg: Arc<Registry>,
    pub at: usize,
    pub idx: usize,
}

/// The classes and index metatables of one Lua state (app data).
pub struct ProxyClasses {
    pub proxy: Class,
    pub server: Class,
    pub listener: Class,
    /// Metatable of a Proxy's `servers` table ([0] holds a ProxyHandle).
    servers_meta: Table,
    /// Metatable of a Proxy's `listeners` table.
    listeners_meta: Table,
}

/// Which proxies a core table lists.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Proxies = 1,
    Frontends,
    Backends,
}

impl Kind {
    /// The kind whose code (`kind as i64`) is `code`.
    pub(crate) fn from_code(code: i64) -> Option<Kind> {
        [Kind::Proxies, Kind::Frontends, Kind::Backends]
            .into_iter()
            .find(|k| *k as i64 == code)
    }
}

/// The low byte of a Proxy object's [0]: tells it apart from the handles
/// of per-transaction objects (`handles.rs`, whose kinds are 1 to 8) and
/// from any other light userdata a script could make.
const PROXY_TAG: usize = 0x50;

/// The value at [0] of a Proxy object: a light userdata naming the proxy's
/// position in the state's registry (tagged). The registry of a state is
/// set once, before its files load (`HostState::set_registry`), so the
/// position always names the same proxy; an object costs no userdata
/// allocation and no finalizer, which matters when a script walks 300,000
/// backends.
pub(crate) fn proxy_ref(at: usize) -> LightUserData {
    LightUserData(((at << 8) | PROXY_TAG) as *mut std::ffi::c_void)
}

/// The position a Proxy object's [0] names, if it is one.
fn proxy_ref_position(p: LightUserData) -> Option<usize> {
    let v = p.0 as usize;
    (v & 0xff == PROXY_TAG).then_some(v >> 8)
}

/// The proxy `this` (a method's self) names; a wrong `self` raises
/// "bad argument #1 to 'method' (Proxy expected, got ...)".
pub fn proxy_handle(lua: &Lua, this: &Value, method: &str) -> mlua::Result<ProxyHandle> {
    let bad = |got: &str| {
        mlua::Error::runtime(format!(
            "bad argument #1 to '{method}' (Proxy expected, got {got})"
        ))
    };
    let Value::Table(t) = this else {
        return Err(bad(this.type_name()));
    };
    match t.raw_get::<Value>(0)? {
        Value::LightUserData(p) => match proxy_ref_position(p) {
            Some(at) => Ok(ProxyHandle {
                reg: registry(lua)?,
                at,
            }),
            None => Err(bad("userdata")),
        },
        other => Err(bad(other.type_name())),
    }
}

/// The state's live model (empty in states outside the proxy).
pub fn registry(lua: &Lua) -> mlua::Result<Arc<Registry>> {
    let info = crate::lua::txn_methods::state_info(lua)?;
    let reg = info.registry.borrow().clone();
    Ok(reg)
}

fn classes(lua: &Lua) -> mlua::Result<Rc<ProxyClasses>> {
    lua.app_data_ref::<Rc<ProxyClasses>>()
        .map(|c| c.clone())
        .ok_or_else(|| mlua::Error::runtime("proxy classes not installed"))
}

/// A new Proxy object for the proxy at position `at` of the state's
/// registry.
pub fn new_proxy(lua: &Lua, at: usize) -> mlua::Result<Table> {
    classes(lua)?.proxy.build(lua, proxy_ref(at), &[])
}

/// A new Server object.
pub fn new_server(
    lua: &Lua,
    reg: &Arc<Registry>,
    be: &Arc<Backend>,
    srv: &Arc<Server>,
) -> mlua::Result<Table> {
    let handle = ServerHandle {
        reg: reg.clone(),
        be: be.clone(),
        srv: srv.clone(),
    };
    classes(lua)?.server.instantiate(lua, handle)
}

/// A new Listener object.
pub fn new_listener(lua: &Lua, reg: &Arc<Registry>, at: usize, idx: usize) -> mlua::Result<Table> {
    let handle = ListenerHandle {
        reg: reg.clone(),
        at,
        idx,
    };
    classes(lua)?.listener.instantiate(lua, handle)
}

/// A Proxy's `servers` table (lazy; see the module comment).
pub fn servers_table(lua: &Lua, reg: &Arc<Registry>, at: usize) -> mlua::Result<Table> {
    lazy_table(lua, reg, at, |c| &c.servers_meta)
}

/// A Proxy's `listeners` table (lazy).
pub fn listeners_table(lua: &Lua, reg: &Arc<Registry>, at: usize) -> mlua::Result<Table> {
    lazy_table(lua, reg, at, |c| &c.listeners_meta)
}

fn lazy_table(
    lua: &Lua,
    reg: &Arc<Registry>,
    at: usize,
    meta: impl Fn(&ProxyClasses) -> &Table,
) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let ud = lua.create_any_userdata(ProxyHandle {
        reg: reg.clone(),
        at,
    })?;
    t.raw_set(0, ud)?;
    let c = classes(lua)?;
    t.set_metatable(Some(meta(&c).clone()))?;
    Ok(t)
}

fn handle_of(t: &Table) -> mlua::Result<mlua::UserDataRef<ProxyHandle>> {
    t.raw_get::<mlua::UserDataRef<ProxyHandle>>(0)
}

/// Installs the classes and `core.proxies`, `core.frontends`,
/// `core.backends`.
pub fn install(lua: &Lua, core: &Table) -> mlua::Result<()> {
    let classes = Rc::new(ProxyClasses {
        proxy: proxy_class::class(lua)?,
        server: server_class::class(lua)?,
        listener: listener_class::class(lua)?,
        servers_meta: servers_meta(lua)?,
        listeners_meta: listeners_meta(lua)?,
    });
    lua.set_app_data(classes);
    for (name, kind) in [
        ("proxies", Kind::Proxies),
        ("frontends", Kind::Frontends),
        ("backends", Kind::Backends),
    ] {
        core.set(name, core_table(lua, kind)?)?;
    }
    Ok(())
}

/// Assignment to an index table is ignored, as in HAProxy.
fn ignore_assignment(lua: &Lua) -> mlua::Result<Function> {
    lua.create_function(|_, _: mlua::MultiValue| Ok(()))
}

/// The position of the proxy `name` in the list of `kind`.
fn lookup(reg: &Registry, kind: Kind, name: &str) -> Option<usize> {
    match kind {
        Kind::Backends => reg.backend_position(name),
        Kind::Frontends => reg.frontend_position(name),
        Kind::Proxies => reg.proxy_position(name),
    }
}

fn core_table(lua: &Lua, kind: Kind) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.raw_set(
        "__index",
        lua.create_function(move |lua, (_t, key): (Value, Value)| {
            let Value::String(name) = key else {
                return Ok(Value::Nil);
            };
            let reg = registry(lua)?;
            let name = name.to_str()?;
            match lookup(&reg, kind, &name) {
                Some(at) => Ok(Value::Table(new_proxy(lua, at)?)),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    meta.raw_set("__newindex", ignore_assignment(lua)?)?;
    meta.raw_set(
        "__pairs",
        lua.create_function(move |lua, t: Table| {
            let meta = classes(lua)?.proxy.meta.clone();
            let next = crate::lua::proxy_walk::step_function(lua, registry(lua)?, kind, &meta)?;
            Ok((next, t, Value::Nil))
        })?,
    )?;
    t.set_metatable(Some(meta))?;
    Ok(t)
}

fn servers_meta(lua: &Lua) -> mlua::Result<Table> {
    let meta = lua.create_table()?;
    meta.raw_set(
        "__index",
        lua.create_function(|lua, (t, key): (Table, Value)| {
            let Value::String(name) = key else {
                return Ok(Value::Nil);
            };
            let h = handle_of(&t)?;
            let Some(be) = h.reg.proxy_at(h.at).and_then(|p| p.backend().cloned()) else {
                return Ok(Value::Nil);
            };
            match be.server(&name.to_str()?) {
                Some(srv) => Ok(Value::Table(new_server(lua, &h.reg, &be, &srv)?)),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    meta.raw_set("__newindex", ignore_assignment(lua)?)?;
    meta.raw_set(
        "__pairs",
        lua.create_function(|lua, t: Table| {
            let h = handle_of(&t)?;
            let reg = h.reg.clone();
            let be = reg.proxy_at(h.at).and_then(|p| p.backend().cloned());
            // The servers as they are now; later changes are not seen by
            // this loop, as with a snapshot.
            let farm = be.as_ref().map(|b| b.servers());
            let pos = Cell::new(0usize);
            let next = lua.create_function(move |lua, _: mlua::MultiValue| {
                let (Some(be), Some(farm)) = (&be, &farm) else {
                    return Ok((Value::Nil, Value::Nil));
                };
                let Some(srv) = farm.servers.get(pos.get()) else {
                    return Ok((Value::Nil, Value::Nil));
                };
                pos.set(pos.get() + 1);
                let obj = new_server(lua, &reg, be, srv)?;
                Ok((
                    Value::String(lua.create_string(&*srv.name)?),
                    Value::Table(obj),
                ))
            })?;
            Ok((next, t, Value::Nil))
        })?,
    )?;
    Ok(meta)
}

fn listeners_meta(lua: &Lua) -> mlua::Result<Table> {
    let meta = lua.create_table()?;
    meta.raw_set(
        "__index",
        lua.create_function(|lua, (t, key): (Table, Value)| {
            let Value::String(name) = key else {
                return Ok(Value::Nil);
            };
            let h = handle_of(&t)?;
            let name = name.to_str()?;
            let Some(p) = h.reg.proxy_at(h.at) else {
                return Ok(Value::Nil);
            };
            let idx = (0..p.listeners().len())
                .find(|&i| crate::backend::ProxyEntry::listener_name(i) == *name);
            match idx {
                Some(i) => Ok(Value::Table(new_listener(lua, &h.reg, h.at, i)?)),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    meta.raw_set("__newindex", ignore_assignment(lua)?)?;
    meta.raw_set(
        "__pairs",
        lua.create_function(|lua, t: Table| {
            let h = handle_of(&t)?;
            let reg = h.reg.clone();
            let at = h.at;
            let count = reg.proxy_at(at).map(|p| p.listeners().len()).unwrap_or(0);
            let pos = Cell::new(0usize);
            let next = lua.create_function(move |lua, _: mlua::MultiValue| {
                let i = pos.get();
                if i >= count {
                    return Ok((Value::Nil, Value::Nil));
                }
                pos.set(i + 1);
                let name = crate::backend::ProxyEntry::listener_name(i);
                let obj = new_listener(lua, &reg, at, i)?;
                Ok((Value::String(lua.create_string(&name)?), Value::Table(obj)))
            })?;
            Ok((next, t, Value::Nil))
        })?,
    )?;
    Ok(meta)
}

/// Logs a deprecation warning once per process for each attribute, with
/// the calling script location, in HAProxy's words.
pub fn warn_deprecated(
    lua: &Lua,
    flag: &std::sync::atomic::AtomicBool,
    class: &str,
    attr: &str,
    method: &str,
) {
    if flag.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let site = (1..12)
        .map_while(|level| {
            lua.inspect_stack(level, |d| {
                let line = d.current_line()?;
                let src = d.source().short_src?.into_owned();
                Some(format!("{src}:{line}"))
            })
        })
        .flatten()
        .next()
        .unwrap_or_else(|| "?".to_string());
    crate::log::warning(&format!(
        "hlua: use of {class} '{attr}' attribute is deprecated and will eventually be removed, \
         please use {method}() function instead: {site}"
    ));
}
