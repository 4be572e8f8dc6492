//! `coroutine.resume` and `coroutine.wrap` that let luahost's own yields
//! through.
//!
//! `core.sleep`, `core.msleep`, `core.yield` and the other waiting functions
//! are mlua async functions: when they must wait, they yield an internal
//! "pending" value to whoever resumed the running coroutine. In a host
//! coroutine that is luahost's runner, which parks the request until the wait
//! is over. In a coroutine the script created itself, it was the script's own
//! `coroutine.resume`, which received the internal value as if the coroutine
//! had yielded it, and the wait never happened.
//!
//! The replacements below are C functions that call the stock `resume` and,
//! when the inner coroutine yielded that value, yield it on to their own
//! resumer (`lua_yieldk`, level after level up to the host coroutine); when
//! they are resumed (the wait is over), their continuation resumes the inner
//! coroutine with what they were given. So the wait happens and the script
//! only ever sees its own values. Where the host coroutine cannot yield (a
//! sample fetch or converter), the outer yield fails as calling `core.msleep`
//! there directly does.
//!
//! Everything else is the stock behaviour: `wrap`'s error handling is the
//! stock `auxwrap`'s (close the coroutine, prefix a string error with the
//! caller's position), and `resume` also turns an error a host function
//! raised into its message, as `pcall` does (errors.rs). A script can't
//! obtain the internal value from them (their only upvalues are the
//! coroutine of a wrap function and the error converter).
//!
//! Every function here follows the C function contract: no Rust value with
//! a destructor lives across a call that may raise or yield (both longjmp).

use mlua::ffi::{self, lua_CFunction, lua_KContext, lua_State};
use mlua::Lua;
use std::ffi::c_int;
use std::sync::OnceLock;

/// The stock `coroutine.resume` and `coroutine.create` (light C functions,
/// the same in every state).
static STOCK_RESUME: OnceLock<lua_CFunction> = OnceLock::new();
static STOCK_CREATE: OnceLock<lua_CFunction> = OnceLock::new();

extern "C-unwind" {
    /// Lua 5.4.6+ (the host links 5.4.9); mlua-sys declares it only for its
    /// vendored builds. It may run `__close` methods, which may raise.
    fn lua_closethread(co: *mut lua_State, from: *mut lua_State) -> c_int;
}

/// mlua's "pending" value (a light userdata at a fixed address).
fn pending() -> *mut std::ffi::c_void {
    Lua::poll_pending().0
}

/// Replaces `coroutine.resume` and `coroutine.wrap` in `lua`.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let coroutine: mlua::Table = lua.globals().get("coroutine")?;
    let to_message = crate::lua::errors::to_message_function(lua)?;
    // SAFETY: lua_tocfunction reads values of the protected call's stack;
    // the stock functions are C functions without upvalues, callable from
    // another C function with their arguments on the stack. The closure is
    // built with its one upvalue (to_message) on the stack.
    let resume: mlua::Function = unsafe {
        lua.exec_raw(
            (
                coroutine.get::<mlua::Value>("resume")?,
                coroutine.get::<mlua::Value>("create")?,
                to_message,
            ),
            |state| {
                if let Some(f) = ffi::lua_tocfunction(state, 1) {
                    let _ = STOCK_RESUME.set(f);
                }
                if let Some(f) = ffi::lua_tocfunction(state, 2) {
                    let _ = STOCK_CREATE.set(f);
                }
                ffi::lua_pushvalue(state, 3);
                // Upvalue 2: the coroutines waiting, by the thread that
                // resumed them (weak keys: a thread dropped while waiting
                // takes its entry with it).
                ffi::lua_createtable(state, 0, 0);
                ffi::lua_createtable(state, 0, 1);
                ffi::lua_pushstring(state, c"k".as_ptr());
                ffi::lua_setfield(state, -2, c"__mode".as_ptr());
                ffi::lua_setmetatable(state, -2);
                ffi::lua_pushcclosure(state, forwarding_resume, 2);
                // The closure is the only result.
                ffi::lua_replace(state, 1);
                ffi::lua_settop(state, 1);
            },
        )?
    };
    if STOCK_RESUME.get().is_none() || STOCK_CREATE.get().is_none() {
        return Err(mlua::Error::runtime(
            "coroutine.resume or coroutine.create is not the stock C function",
        ));
    }
    // SAFETY: forwarding_wrap follows the C function contract.
    let wrap = unsafe { lua.create_c_function(forwarding_wrap)? };
    coroutine.set("resume", resume)?;
    coroutine.set("wrap", wrap)?;
    Ok(())
}

/// Whether a resume's results (`ok` at `ok_idx`, one value after it up to
/// the top) are the pending value of a coroutine `co` that is still
/// suspended in the wait.
unsafe fn is_wait(state: *mut lua_State, ok_idx: c_int, co: *mut lua_State) -> bool {
    ffi::lua_gettop(state) == ok_idx + 1
        && ffi::lua_toboolean(state, ok_idx) != 0
        && ffi::lua_type(state, ok_idx + 1) == ffi::LUA_TLIGHTUSERDATA
        && ffi::lua_touserdata(state, ok_idx + 1) == pending()
        && !co.is_null()
        && ffi::lua_status(co) == ffi::LUA_YIELD
}

/// `coroutine.resume(co, ...)`. Upvalue 1: the error converter; upvalue 2:
/// the waiting coroutines by resuming thread.
unsafe extern "C-unwind" fn forwarding_resume(state: *mut lua_State) -> c_int {
    let Some(&stock) = STOCK_RESUME.get() else {
        return 0;
    };
    if ffi::lua_type(state, 1) != ffi::LUA_TTHREAD {
        // The stock function raises its own argument error (named after
        // this frame, i.e. 'resume').
        return stock(state);
    }
    resume_step(state, stock)
}

/// Resumes the coroutine at index 1 with the values above it; the stack
/// becomes: co, ok, results...
///
/// The stock function runs in this frame (a plain C call): it moves the
/// arguments into the coroutine and leaves co, ok, results on this stack.
unsafe fn resume_step(state: *mut lua_State, stock: lua_CFunction) -> c_int {
    ffi::luaL_checkstack(state, 3, std::ptr::null());
    stock(state);
    let co = ffi::lua_tothread(state, 1);
    if is_wait(state, 2, co) {
        // Pass the wait on; resume_continue resumes `co` afterwards. The
        // stack of a yielded frame is not kept (mlua's runner clears it), so
        // `co` waits in the table, under this thread.
        ffi::lua_settop(state, 1);
        ffi::lua_pushthread(state);
        ffi::lua_insert(state, 1);
        ffi::lua_rawset(state, ffi::lua_upvalueindex(2));
        ffi::lua_pushlightuserdata(state, pending());
        return ffi::lua_yieldk(state, 1, 0, Some(resume_continue));
    }
    let top = ffi::lua_gettop(state);
    if ffi::lua_toboolean(state, 2) == 0 && ffi::lua_type(state, 3) == ffi::LUA_TUSERDATA {
        ffi::luaL_checkstack(state, 2, std::ptr::null());
        // An error raised by a host function: its message, as pcall gives.
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
        ffi::lua_pushvalue(state, 3);
        ffi::lua_call(state, 1, 1);
        ffi::lua_replace(state, 3);
    }
    top - 1
}

/// After a passed-on wait: the stack holds what our resumer gave (nothing,
/// when it is mlua's runner); the coroutine waits in the table.
unsafe extern "C-unwind" fn resume_continue(
    state: *mut lua_State,
    _status: c_int,
    _ctx: lua_KContext,
) -> c_int {
    let Some(&stock) = STOCK_RESUME.get() else {
        return 0;
    };
    ffi::luaL_checkstack(state, 3, std::ptr::null());
    ffi::lua_pushthread(state);
    ffi::lua_pushvalue(state, -1);
    ffi::lua_rawget(state, ffi::lua_upvalueindex(2));
    // ..., thread, co -> forget the entry, keep co at index 1.
    ffi::lua_insert(state, 1);
    ffi::lua_pushnil(state);
    ffi::lua_rawset(state, ffi::lua_upvalueindex(2));
    if ffi::lua_type(state, 1) != ffi::LUA_TTHREAD {
        return 0;
    }
    resume_step(state, stock)
}

/// `coroutine.wrap(f)`: a new coroutine and the function that resumes it.
unsafe extern "C-unwind" fn forwarding_wrap(state: *mut lua_State) -> c_int {
    let Some(&create) = STOCK_CREATE.get() else {
        return 0;
    };
    // The stock create checks the argument (named after this frame, 'wrap',
    // as the stock wrap's own call of it is) and pushes the coroutine.
    create(state);
    ffi::lua_pushcclosure(state, wrap_call, 1);
    1
}

/// A wrap function. Upvalue 1: its coroutine.
unsafe extern "C-unwind" fn wrap_call(state: *mut lua_State) -> c_int {
    wrap_step(state)
}

/// Resumes the wrap function's coroutine with the values on the stack.
unsafe fn wrap_step(state: *mut lua_State) -> c_int {
    let Some(&stock) = STOCK_RESUME.get() else {
        return 0;
    };
    ffi::luaL_checkstack(state, 3, std::ptr::null());
    // args -> co, args -> (stock, in this frame) co, ok, results
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
    ffi::lua_insert(state, 1);
    stock(state);
    let co = ffi::lua_tothread(state, 1);
    if is_wait(state, 2, co) {
        // The coroutine is this closure's upvalue; nothing on the stack
        // needs to outlive the yield.
        ffi::lua_settop(state, 0);
        ffi::lua_pushlightuserdata(state, pending());
        return ffi::lua_yieldk(state, 1, 0, Some(wrap_continue));
    }
    let top = ffi::lua_gettop(state);
    if ffi::lua_toboolean(state, 2) != 0 {
        // The results are the values above co and ok.
        return top - 2;
    }
    // The stock auxwrap's error path: close a coroutine that failed (its
    // to-be-closed variables), take the error object that leaves, prefix a
    // string error with the caller's position, raise it.
    let mut stat = if co.is_null() {
        ffi::LUA_OK
    } else {
        ffi::lua_status(co)
    };
    if !co.is_null() && stat != ffi::LUA_OK && stat != ffi::LUA_YIELD {
        stat = lua_closethread(co, state);
        ffi::lua_xmove(co, state, 1);
    }
    if stat != ffi::LUA_ERRMEM && ffi::lua_type(state, -1) == ffi::LUA_TSTRING {
        ffi::luaL_where(state, 1);
        ffi::lua_insert(state, -2);
        ffi::lua_concat(state, 2);
    }
    ffi::lua_error(state)
}

/// After a passed-on wait: the stack is what our resumer gave.
unsafe extern "C-unwind" fn wrap_continue(
    state: *mut lua_State,
    _status: c_int,
    _ctx: lua_KContext,
) -> c_int {
    wrap_step(state)
}
