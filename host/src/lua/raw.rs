//! Host methods that Lua calls as plain C functions, reading their arguments
//! straight off the Lua stack.
//!
//! Why: an mlua callback costs 1,500 to 2,500 instructions per call (each
//! argument becomes a reference-counted value, an error slot is allocated in
//! advance, the call is protected), several times the work of a method such as
//! `applet:set_status`. The methods every request calls (AppletHTTP's
//! `set_status`, `add_header`, `start_response` and `send`, and the method
//! lookup of per-transaction objects) are written against the C API instead;
//! docs/benchmarks.md has the measurements. Everything else stays an mlua
//! function.
//!
//! # Invariants the unsafe code relies on
//!
//! 1. A body (the Rust part of a C function, run by [`entry`] under
//!    `catch_unwind`) never calls a Lua function that may raise an error:
//!    nothing that allocates (`lua_pushlstring`, `lua_tolstring` on a number,
//!    `lua_createtable`, ...). It reads its arguments (numbers are converted
//!    to text in Rust, see [`str_arg`]) and returns what to push as a [`Ret`]
//!    of plain values. A raised Lua error longjmps, and must never skip a
//!    frame that owns a value with a destructor, nor `catch_unwind`'s.
//! 2. [`entry`] pushes the [`Ret`] (or raises the body's error message) after
//!    the body has returned. Bytes to push and error messages are moved into
//!    thread-local storage first, so that when Lua raises (out of memory)
//!    the frames it skips own nothing.
//! 3. No panic leaves a C function: bodies run under `catch_unwind`; the
//!    C functions written without a body ([`lazy_index`], the pushing part
//!    of [`entry`]) contain no Rust code that can panic.
//! 4. Byte slices borrowed from the stack are used only while their value is
//!    still on the stack, i.e. within the body.

use mlua::ffi::{self, lua_State};
use mlua::LightUserData;
use std::borrow::Cow;
use std::cell::UnsafeCell;
use std::ffi::{c_int, CStr};

/// What a body asks [`entry`] to push.
pub enum Ret {
    /// No results.
    Nothing,
    Nil,
    Bool(bool),
    /// A new object: a table with `at0` at [0] and the metatable found at
    /// stack index `meta` (an upvalue index).
    Object {
        at0: LightUserData,
        meta: c_int,
    },
}

/// What a body returns: the results to push, or an error message.
pub type Outcome = Result<Ret, String>;

thread_local! {
    /// The message of the error being raised (invariant 2). Overwritten by
    /// the next error; never borrowed across a call into Lua.
    static ERROR_TEXT: UnsafeCell<String> = const { UnsafeCell::new(String::new()) };
}

/// Runs `body` as a C function's body and pushes its results, or turns its
/// failure into a Lua error.
///
/// # Safety
/// `state` is the state Lua passed to the C function; `body` follows the
/// module's invariants.
pub unsafe fn entry(state: *mut lua_State, body: fn(*mut lua_State) -> Outcome) -> c_int {
    let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(state))) {
        Ok(outcome) => outcome,
        // The panic's payload is dropped here, before any call into Lua.
        Err(_) => Err("internal error in a luahost function".to_string()),
    };
    // Each arm moves the whole value out: nothing is left to drop in this
    // frame when Lua longjmps out of `push` or `raise` (invariant 2).
    match outcome {
        // SAFETY: `ret` holds only plain values.
        Ok(ret) => unsafe { push(state, ret) },
        // SAFETY: `raise` stores the message before calling into Lua.
        Err(message) => unsafe { raise(state, message) },
    }
}

/// Pushes a body's results; returns their number. May raise out-of-memory.
///
/// # Safety
/// `state` is the running state of a C function.
unsafe fn push(state: *mut lua_State, ret: Ret) -> c_int {
    // SAFETY: pushes onto the C function's stack, which has LUA_MINSTACK free
    // slots; `meta` is the upvalue index the body named.
    unsafe {
        match ret {
            Ret::Nothing => 0,
            Ret::Nil => {
                ffi::lua_pushnil(state);
                1
            }
            Ret::Bool(b) => {
                ffi::lua_pushboolean(state, c_int::from(b));
                1
            }
            Ret::Object { at0, meta } => {
                push_object(state, at0, meta);
                1
            }
        }
    }
}

/// Hash slots of a sub-object: room for [0] and the fields built later, as
/// for the objects `Class::build` makes.
const OBJECT_HASH_SLOTS: c_int = crate::lua::class::SPARE_SLOTS as c_int;

/// Pushes a new object: a table with `at0` at [0] and the metatable at
/// stack index `meta`. May raise out-of-memory.
///
/// # Safety
/// `state` is the running state; `meta` a valid index (not relative to the
/// top) holding a table.
pub(crate) unsafe fn push_object(state: *mut lua_State, at0: LightUserData, meta: c_int) {
    // SAFETY: as documented; three stack slots are used at most.
    unsafe {
        ffi::lua_createtable(state, 0, OBJECT_HASH_SLOTS);
        ffi::lua_pushlightuserdata(state, at0.0);
        ffi::lua_rawseti(state, -2, 0);
        ffi::lua_pushvalue(state, meta);
        ffi::lua_setmetatable(state, -2);
    }
}

/// Raises `message` as a Lua error with the caller's position in front.
///
/// # Safety
/// `state` is the running state of a C function.
unsafe fn raise(state: *mut lua_State, message: String) -> ! {
    // The text lives in the thread-local until the next error: nothing in
    // this frame needs dropping when lua_error longjmps.
    let (ptr, len) = ERROR_TEXT.with(|text| {
        // SAFETY: the only access to ERROR_TEXT, and not reentrant: the
        // reference ends before any call into Lua.
        let text = unsafe { &mut *text.get() };
        *text = message;
        (text.as_ptr(), text.len())
    });
    // SAFETY: pointer and length of the thread-local string, unchanged until
    // lua_pushlstring has copied it. These calls may raise out-of-memory,
    // which also longjmps over frames that own nothing.
    unsafe {
        ffi::luaL_where(state, 1);
        ffi::lua_pushlstring(state, ptr.cast(), len);
        ffi::lua_concat(state, 2);
        ffi::lua_error(state)
    }
}

/// The type name of argument `arg` as Lua's messages give it ("no value"
/// when absent).
///
/// # Safety
/// `state` is the running state of a C function.
pub unsafe fn type_name(state: *mut lua_State, arg: c_int) -> &'static str {
    // SAFETY: lua_typename returns static strings for every type tag.
    unsafe {
        let name = ffi::lua_typename(state, ffi::lua_type(state, arg));
        CStr::from_ptr(name).to_str().unwrap_or("?")
    }
}

/// "bad argument #arg to 'method' (expected expected, got ...)".
///
/// # Safety
/// `state` is the running state of a C function.
pub unsafe fn type_error(
    state: *mut lua_State,
    arg: c_int,
    method: &str,
    expected: &str,
) -> String {
    // SAFETY: as type_name.
    let got = unsafe { type_name(state, arg) };
    format!("bad argument #{arg} to '{method}' ({expected} expected, got {got})")
}

/// Argument `arg` as bytes: a string, or a number converted to text as Lua
/// converts it (by Rust, without allocating in Lua: invariant 1).
///
/// # Safety
/// `state` is the running state of a C function; a borrowed result is valid
/// while argument `arg` stays on the stack (invariant 4).
pub unsafe fn str_arg<'a>(
    state: *mut lua_State,
    arg: c_int,
    method: &str,
) -> Result<Cow<'a, [u8]>, String> {
    // SAFETY: lua_tolstring on a string returns a pointer into the Lua
    // string anchored at `arg`, with its length, and does not allocate.
    unsafe {
        match ffi::lua_type(state, arg) {
            ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let p = ffi::lua_tolstring(state, arg, &mut len);
                Ok(Cow::Borrowed(std::slice::from_raw_parts(p.cast(), len)))
            }
            ffi::LUA_TNUMBER => Ok(Cow::Owned(number_text(state, arg).into_bytes())),
            _ => Err(type_error(state, arg, method, "string")),
        }
    }
}

/// A number argument as Lua's `tostring` writes it: integers in decimal,
/// floats with "%.14g" and ".0" added when that looks like an integer.
///
/// # Safety
/// `state` is the running state of a C function; `arg` holds a number.
unsafe fn number_text(state: *mut lua_State, arg: c_int) -> String {
    // SAFETY: plain reads of a number on the stack.
    unsafe {
        if ffi::lua_isinteger(state, arg) != 0 {
            return ffi::lua_tointeger(state, arg).to_string();
        }
        let n = ffi::lua_tonumber(state, arg);
        let mut buf = [0u8; 64];
        // SAFETY: snprintf writes at most buf.len() bytes, NUL included, with
        // a format that takes exactly one double.
        let len = libc::snprintf(buf.as_mut_ptr().cast(), buf.len(), c"%.14g".as_ptr(), n);
        let len = usize::try_from(len).unwrap_or(0).min(buf.len() - 1);
        let mut text = String::from_utf8_lossy(&buf[..len]).into_owned();
        if text.bytes().all(|b| b == b'-' || b.is_ascii_digit()) {
            text.push_str(".0");
        }
        text
    }
}

/// Argument `arg` as an integer: an integer, or a float or string with an
/// integer value, as `luaL_checkinteger` accepts.
///
/// # Safety
/// `state` is the running state of a C function.
pub unsafe fn int_arg(state: *mut lua_State, arg: c_int, method: &str) -> Result<i64, String> {
    // SAFETY: plain reads of the stack.
    unsafe {
        let mut ok = 0;
        let v = ffi::lua_tointegerx(state, arg, &mut ok);
        if ok != 0 {
            return Ok(v);
        }
        if ffi::lua_type(state, arg) == ffi::LUA_TNUMBER {
            return Err(format!(
                "bad argument #{arg} to '{method}' (number has no integer representation)"
            ));
        }
        Err(type_error(state, arg, method, "number"))
    }
}

/// The light userdata at [0] of argument 1, if it is a table holding one.
///
/// # Safety
/// `state` is the running state of a C function.
pub unsafe fn self_handle(state: *mut lua_State) -> Option<LightUserData> {
    // SAFETY: lua_rawgeti on a table reads without metamethods and cannot
    // raise; the pushed value is popped before returning.
    unsafe {
        if ffi::lua_type(state, 1) != ffi::LUA_TTABLE {
            return None;
        }
        let p = if ffi::lua_rawgeti(state, 1, 0) == ffi::LUA_TLIGHTUSERDATA {
            Some(LightUserData(ffi::lua_touserdata(state, -1)))
        } else {
            None
        };
        ffi::lua_pop(state, 1);
        p
    }
}

/// Defines `extern "C-unwind" fn $name`, a C function running `$body` under
/// [`entry`].
#[macro_export]
macro_rules! raw_function {
    ($name:ident, $body:path) => {
        unsafe extern "C-unwind" fn $name(state: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
            // SAFETY: called by Lua as a C function; the body follows the
            // invariants of lua/raw.rs.
            unsafe { $crate::lua::raw::entry(state, $body) }
        }
    };
}

/// A Lua function value for the C function `f`.
pub fn function(lua: &mlua::Lua, f: ffi::lua_CFunction) -> mlua::Result<mlua::Function> {
    // SAFETY: `f` is a C function defined with raw_function!, which follows
    // this module's invariants.
    unsafe { lua.create_c_function(f) }
}

/// The `__index` of a class with lazy fields (see `Class::lazy_fields`):
/// upvalue 1 is the methods table, upvalue 2 the table of field builders.
/// A method is returned as it is; a field is built by calling its builder
/// with the object, stored in the object and returned.
pub unsafe extern "C-unwind" fn lazy_index(state: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as `__index(t, k)` with the two upvalues set by
    // Class::lazy_fields. Only Copy values live in this frame, so the calls
    // that may raise (the builder, rawset's allocation) longjmp over nothing
    // that needs dropping; no Rust code here can panic.
    unsafe {
        ffi::lua_settop(state, 2);
        ffi::lua_pushvalue(state, 2);
        if ffi::lua_rawget(state, ffi::lua_upvalueindex(1)) != ffi::LUA_TNIL {
            return 1;
        }
        ffi::lua_pushvalue(state, 2);
        if ffi::lua_rawget(state, ffi::lua_upvalueindex(2)) == ffi::LUA_TNIL {
            return 1;
        }
        ffi::lua_pushvalue(state, 1);
        ffi::lua_call(state, 1, 1);
        // rawset(t, k, v), leaving v on top as the result. The builders
        // only succeed on a table, but a script can call this function
        // itself (getmetatable(obj).__index): rawset needs a table.
        if ffi::lua_type(state, 1) == ffi::LUA_TTABLE {
            ffi::lua_pushvalue(state, 2);
            ffi::lua_pushvalue(state, -2);
            ffi::lua_rawset(state, 1);
        }
        1
    }
}

crate::raw_function!(sub_object, sub_object_body);

/// A field builder for `Class::lazy_fields` that makes the sub-object `key`
/// of an object of class `parent` (`txn.sf`, `txn.http`, `applet.f`, ...):
/// an object of the class whose metatable is `meta`, sharing its parent's
/// slot under class `kind`. With `http_only`, it is nil for a TCP
/// transaction (`txn.http`).
pub fn sub_object_builder(
    lua: &mlua::Lua,
    meta: &mlua::Table,
    parent: crate::lua::handles::Kind,
    kind: crate::lua::handles::Kind,
    key: &'static str,
    http_only: bool,
) -> mlua::Result<mlua::Function> {
    // SAFETY: exec_raw pushes the five upvalues sub_object_body reads and
    // runs the closure in protected mode; lua_pushcclosure pops them and
    // pushes the closure, which exec_raw returns.
    unsafe {
        lua.exec_raw::<mlua::Function>(
            (meta, parent as i64, kind as i64, key, http_only),
            |state| ffi::lua_pushcclosure(state, sub_object, 5),
        )
    }
}

/// The body of a [`sub_object_builder`] closure: argument 1 is the parent.
fn sub_object_body(state: *mut lua_State) -> Outcome {
    use crate::lua::handles::{sub_object_of, Kind};
    // SAFETY: the upvalues are those sub_object_builder sets: a metatable,
    // two kind codes, the key (a string, read without conversion) and a
    // boolean.
    unsafe {
        let kind_at =
            |i| Kind::from_code(ffi::lua_tointeger(state, ffi::lua_upvalueindex(i)) as u64);
        let (Some(parent), Some(kind)) = (kind_at(2), kind_at(3)) else {
            return Err("internal error: bad sub-object builder".to_string());
        };
        let mut len = 0usize;
        let key = ffi::lua_tolstring(state, ffi::lua_upvalueindex(4), &mut len);
        let key = std::str::from_utf8(std::slice::from_raw_parts(key.cast(), len)).unwrap_or("?");
        let http_only = ffi::lua_toboolean(state, ffi::lua_upvalueindex(5)) != 0;
        let type_name = || type_name(state, 1);
        let (handle, http) = sub_object_of(self_handle(state), type_name, parent, key)?;
        if http_only && !http {
            // TCP transactions have no HTTP object (nil, as in HAProxy).
            return Ok(Ret::Nil);
        }
        Ok(Ret::Object {
            at0: handle.with_kind(kind),
            meta: ffi::lua_upvalueindex(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::{Lua, Value};

    #[test]
    fn numbers_become_text_as_lua_writes_them() {
        let lua = Lua::new();
        let to_text: mlua::Function = lua.globals().get("tostring").unwrap();
        let values = [
            Value::Integer(42),
            Value::Integer(i64::MIN),
            Value::Number(1.5),
            Value::Number(10.0),
            Value::Number(-0.0),
            Value::Number(1e100),
            Value::Number(1e15),
            Value::Number(0.1),
            Value::Number(2f64.powi(63)),
            Value::Number(f64::INFINITY),
            Value::Number(f64::NEG_INFINITY),
        ];
        for v in values {
            let lua_text: String = to_text.call(v.clone()).unwrap();
            let ours = std::cell::RefCell::new(String::new());
            // SAFETY: the closure runs with the number pushed at index 1.
            unsafe {
                lua.exec_raw::<()>(v.clone(), |state| {
                    *ours.borrow_mut() = number_text(state, 1);
                })
                .unwrap();
            }
            assert_eq!(*ours.borrow(), lua_text, "{v:?}");
        }
    }
}
