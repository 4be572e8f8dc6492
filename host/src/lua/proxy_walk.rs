//! The `pairs()` step of `core.proxies`, `core.frontends` and
//! `core.backends`, as a C function.
//!
//! Why: with 300,000 backends, `for _ in pairs(core.backends)` in an init
//! function was the largest part of the start-up after the parse (about
//! 280 ms). Each step went through an mlua callback (its arguments and
//! results converted to reference-counted values, the call protected), an
//! app-data lookup of the classes, and a full userdata with a finalizer for
//! the Proxy object's [0]. The step is now a C closure whose upvalues hold
//! everything it needs, and the object's [0] is a light userdata naming the
//! proxy's position (see `proxy_index::proxy_ref`): a step allocates the
//! name string and the object's table, nothing else. docs/benchmarks.md
//! ("## startup") has the measurements.

use crate::backend::Registry;
use crate::lua::proxy_index::{proxy_ref, Kind};
use mlua::ffi::{self, lua_State};
use mlua::{Function, LightUserData, Lua, Table};
use std::ffi::{c_int, c_void};
use std::sync::Arc;

/// Upvalue: the position to look at next (an integer).
const UP_POS: c_int = 1;
/// Upvalue: which proxies are listed (`Kind` as an integer).
const UP_KIND: c_int = 2;
/// Upvalue: a light userdata pointing at the registry.
const UP_REG: c_int = 3;
/// Upvalue: an mlua userdata owning an `Arc<Registry>` of that same
/// registry; as an upvalue it lives as long as the closure, which keeps the
/// pointer of `UP_REG` valid.
const UP_KEEP: c_int = 4;
/// Upvalue: the Proxy class's metatable.
const UP_META: c_int = 5;
// The upvalues are pushed in this order (see `step_function`).
const _: () =
    assert!(UP_POS < UP_KIND && UP_KIND < UP_REG && UP_REG < UP_KEEP && UP_KEEP < UP_META);

/// The `next` function of one `pairs()` loop over the proxies of `kind`.
pub fn step_function(
    lua: &Lua,
    reg: Arc<Registry>,
    kind: Kind,
    proxy_meta: &Table,
) -> mlua::Result<Function> {
    let ptr = LightUserData(Arc::as_ptr(&reg) as *mut c_void);
    let keep = lua.create_any_userdata(reg)?;
    // SAFETY: exec_raw pushes the five values and runs the closure in
    // protected mode; lua_pushcclosure pops them as the upvalues `step`
    // expects (in the order of the UP_* constants) and pushes the closure,
    // which exec_raw returns.
    unsafe {
        lua.exec_raw::<Function>((0i64, kind as i64, ptr, keep, proxy_meta), |state| {
            ffi::lua_pushcclosure(state, step, 5)
        })
    }
}

/// The next listed proxy at or after position `from`: its position and
/// name. Plain reads of the registry: nothing here can panic.
fn next_listed(reg: &Registry, kind: Kind, from: usize) -> Option<(usize, &str)> {
    let mut at = from;
    while let Some(p) = reg.proxy_at(at) {
        let listed = match kind {
            Kind::Backends => p.cap.is_backend(),
            Kind::Frontends => p.cap.is_frontend(),
            // A frontend and a backend may share a name: the name is
            // listed once, for the proxy it resolves to.
            Kind::Proxies => reg.proxy_position(&p.name) == Some(at),
        };
        if listed {
            return Some((at, &p.name));
        }
        at += 1;
    }
    None
}

/// One step: returns the next proxy's name and a new Proxy object, or nil
/// at the end.
unsafe extern "C-unwind" fn step(state: *mut lua_State) -> c_int {
    // SAFETY: called by Lua with the upvalues set by `step_function`. The
    // registry pointer is valid while UP_KEEP holds its Arc (as long as this
    // closure exists, and it is running). Only Copy values and borrows of
    // the registry live in this frame, so the calls that may raise (the
    // string and table allocations) longjmp over nothing that needs
    // dropping; no Rust code here can panic (`next_listed` only reads).
    unsafe {
        let pos = ffi::lua_tointeger(state, ffi::lua_upvalueindex(UP_POS));
        let kind = Kind::from_code(ffi::lua_tointeger(state, ffi::lua_upvalueindex(UP_KIND)));
        let reg = ffi::lua_touserdata(state, ffi::lua_upvalueindex(UP_REG)) as *const Registry;
        let found = match (reg.as_ref(), kind, usize::try_from(pos)) {
            (Some(reg), Some(kind), Ok(pos)) => next_listed(reg, kind, pos),
            _ => None,
        };
        let Some((at, name)) = found else {
            ffi::lua_pushnil(state);
            return 1;
        };
        ffi::lua_pushinteger(state, at as ffi::lua_Integer + 1);
        ffi::lua_replace(state, ffi::lua_upvalueindex(UP_POS));
        ffi::lua_pushlstring(state, name.as_ptr() as *const _, name.len());
        crate::lua::raw::push_object(state, proxy_ref(at), ffi::lua_upvalueindex(UP_META));
        2
    }
}
