//! The Lua C API side of general (mlua-based) functions and of the module
//! entry point. Native functions have their own in `native.rs`, `stack.rs`
//! and `object.rs`, and share [`raise_record`] with this file.
//!
//! # Why a trampoline
//!
//! An error returned from an mlua `create_function` callback reaches Lua as a
//! userdata (mlua's wrapped error), not a string, and its text is mlua's
//! `Display` ("runtime error: ..." plus a traceback). Lua code expects the
//! strings that `luaL_argerror`/`luaL_error` produce, e.g.
//! `input:3: bad argument #1 to 'greet' (string expected, got nil)`.
//!
//! A body written in Rust cannot call `lua_error` itself: that longjmps, and a
//! longjmp must never skip Rust frames that own values with destructors. So
//! every function is split in two:
//!
//! * the *inner* function, an ordinary mlua function: it runs the Rust body
//!   (with `&Lua`, conversions, everything mlua offers), catches its error or
//!   panic, and *returns* the outcome as plain values: the body's results,
//!   or an error record (see [`Status`]). mlua drops every Rust value before
//!   that function returns.
//! * the *trampoline*, a raw C closure: the function Lua code sees and
//!   calls. It runs the inner function and then, with no Rust value alive
//!   in its frame, raises the error with lauxlib's own functions
//!   (`luaL_typeerror`, `luaL_argerror`, `luaL_where`) so the wording, the
//!   function name ('greet', "calling 'x' on bad self") and the caller's
//!   position are exactly what stock Lua produces.
//!
//! The usual trampoline, [`direct_trampoline`], holds the inner function's
//! own upvalue (mlua's record of the Rust closure) and runs mlua's C
//! function for it as a plain Rust call in the trampoline's own frame: one
//! Lua call instead of two, and the arguments are read where Lua put them.
//! [`wrap_inner`] checks at creation that the inner function has the shape
//! this needs; otherwise [`trampoline`] holds the inner function and calls
//! it with `lua_call` on copies of the arguments.
//!
//! Why not run the body in the trampoline itself: mlua may only be used
//! inside its own callbacks, where it knows which thread (coroutine) is
//! running; a `Lua` obtained outside one can point at another thread, even a
//! dead coroutine. The inner function gives bodies that context for free.
//! (Native functions have no `&Lua`, which is what lets them be one C
//! function.)
//!
//! # Invariants the unsafe code here relies on
//!
//! 1. `trampoline` and `finish` hold only `Copy` values (integers, raw
//!    pointers) while calling any Lua function that may raise (`lua_call`,
//!    `luaL_checkstack`, `luaL_argerror`, `luaL_typeerror`, `lua_error`,
//!    `lua_pushfstring`). Their frames are "plain old frames": a longjmp across
//!    them skips no destructor.
//! 2. No Rust panic can leave these functions: they contain no code that
//!    panics, and the Rust bodies run under `catch_unwind` inside the inner
//!    function (see `crate::function`).
//! 3. Every `const char *` handed to Lua points into a Lua string that stays on
//!    the stack until Lua has copied it (strings from `lua_tolstring` are
//!    NUL-terminated), or into a `'static` C string literal.
//! 4. A trampoline's upvalues may have been swapped by `debug.setupvalue`.
//!    [`trampoline`] only calls its upvalue and checks the shape of an
//!    error record, never trusting it; [`direct_trampoline`] runs mlua's C
//!    function only when upvalue 1 is the full userdata whose address
//!    upvalue 2 holds as a light userdata, which Lua code cannot make (a
//!    pair copied from another toolkit function runs that function). The
//!    record's marker (a light userdata holding the address of a private
//!    static) is not something Lua code can make, so what a replacement
//!    returns is passed on as results; and a record forged anyway (by C
//!    code, or by reading a C function's temporaries with the debug
//!    library) can only raise an error.
//! 5. mlua's C function, run by [`direct_trampoline`], leaves the
//!    arguments at `1..=nargs` and its results on top, and raises its own
//!    errors (panics included) as Lua errors: as when Lua calls it.

use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::OnceLock;

use crate::error::Error;
use crate::stack::{push_message, PushError};

use mlua::ffi::{self, lua_State};

// lauxlib's `luaL_typeerror` (Lua 5.4) is not declared by mlua-sys. It is part
// of every Lua 5.4 library and of the API luahost exports (luaL_*).
unsafe extern "C-unwind" {
    pub(crate) fn luaL_typeerror(state: *mut lua_State, arg: c_int, tname: *const c_char) -> c_int;
}

/// The kind of an error record. The inner function returns, on failure,
/// exactly four values: the [`error_marker`], the kind, an argument number
/// (0 when none) and a message; on success, the body's results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub(crate) enum Status {
    /// Argument number and expected type name: raised with `luaL_typeerror`.
    Type = 1,
    /// Argument number and message: `luaL_argerror`.
    Arg = 2,
    /// Message raised with the caller's position in front, as `luaL_error`
    /// does.
    Runtime = 3,
    /// Message raised as it is, like `error(msg, 0)`.
    Message = 4,
}

impl Status {
    fn from_code(code: ffi::lua_Integer) -> Option<Status> {
        Some(match code {
            1 => Status::Type,
            2 => Status::Arg,
            3 => Status::Runtime,
            4 => Status::Message,
            _ => return None,
        })
    }
}

/// Its address marks an error record; nothing else can produce it.
static ERROR_MARKER: u8 = 0;

/// The light userdata value that starts an error record.
pub(crate) fn error_marker() -> *mut std::ffi::c_void {
    ptr::addr_of!(ERROR_MARKER).cast_mut().cast()
}

/// The C function Lua code calls: upvalue 1 is the inner mlua function.
pub(crate) unsafe extern "C-unwind" fn trampoline(state: *mut lua_State) -> c_int {
    // SAFETY: Lua calls C functions with a valid state; this closure was made
    // by `crate::function` with the inner function as upvalue 1. Only Copy
    // values live in this frame (invariant 1).
    unsafe {
        let nargs = ffi::lua_gettop(state);
        // Room for the inner function and a copy of each argument. Raises a
        // Lua error (no Rust resources in flight) if the stack cannot grow.
        ffi::luaL_checkstack(state, nargs + 1, c"too many arguments".as_ptr());
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
        // The inner function gets copies: the originals stay at 1..=nargs so
        // that luaL_typeerror can inspect the offending value (__name, light
        // userdata) exactly as a C function's own luaL_check* would.
        for i in 1..=nargs {
            ffi::lua_pushvalue(state, i);
        }
        ffi::lua_call(state, nargs, ffi::LUA_MULTRET);
        finish(state, nargs)
    }
}

/// Turns the inner function's results, which start at `nargs + 1`, into the
/// C function's results or a raised error.
///
/// # Safety
/// `state` is the running state; the values above `nargs` are what the inner
/// function returned. May longjmp (invariant 1 holds: only Copy locals).
pub(crate) unsafe fn finish(state: *mut lua_State, nargs: c_int) -> c_int {
    unsafe { finish_top(state, nargs, ffi::lua_gettop(state) - nargs) }
}

/// Like [`finish`] for results that are the top `nresults` values, with
/// the C function's `nargs` arguments still at `1..=nargs` below them.
///
/// # Safety
/// As for [`finish`].
pub(crate) unsafe fn finish_top(state: *mut lua_State, nargs: c_int, nresults: c_int) -> c_int {
    unsafe {
        let first = ffi::lua_gettop(state) - nresults + 1;
        let is_error = nresults == 4
            && ffi::lua_type(state, first) == ffi::LUA_TLIGHTUSERDATA
            && ffi::lua_touserdata(state, first) == error_marker();
        if !is_error {
            // Lua takes the top `nresults` values as the results.
            return nresults;
        }

        let (kind_index, arg_index, msg_index) = (first + 1, first + 2, first + 3);
        let status = if ffi::lua_isinteger(state, kind_index) != 0 {
            Status::from_code(ffi::lua_tointeger(state, kind_index))
        } else {
            None
        };
        let Some(status) = status else {
            protocol_error(state)
        };
        if ffi::lua_isinteger(state, arg_index) == 0
            || ffi::lua_type(state, msg_index) != ffi::LUA_TSTRING
        {
            protocol_error(state);
        }
        let arg = c_int::try_from(ffi::lua_tointeger(state, arg_index)).unwrap_or(0);
        raise_record(state, status, arg, nargs, msg_index)
    }
}

/// Raises an error record whose message is the string at `msg_index`, the
/// way lauxlib raises it, so the wording, the function name and the position
/// are stock Lua's. `nargs` is how many arguments the C function was called
/// with (the slots above belong to the caller of this function).
///
/// # Safety
/// `state` is the running state of a C function; `msg_index` holds a string
/// that stays there until Lua copies it (invariant 3). Longjmps: the caller's
/// frame must hold only Copy values (invariant 1).
pub(crate) unsafe fn raise_record(
    state: *mut lua_State,
    status: Status,
    arg: c_int,
    nargs: c_int,
    msg_index: c_int,
) -> ! {
    unsafe {
        // Make sure lauxlib has the stack space a C function normally starts
        // with (raises "stack overflow" otherwise).
        ffi::luaL_checkstack(state, ffi::LUA_MINSTACK, ptr::null());
        let msg = ffi::lua_tolstring(state, msg_index, ptr::null_mut());
        match status {
            Status::Type if arg >= 1 && arg <= nargs => {
                luaL_typeerror(state, arg, msg);
            }
            Status::Type => {
                // The argument is absent. luaL_typeerror would look at stack
                // slot `arg`, which now holds our own values, so build the
                // same message it would build for a missing value.
                let full = ffi::lua_pushfstring(state, c"%s expected, got no value".as_ptr(), msg);
                ffi::luaL_argerror(state, arg, full);
            }
            Status::Arg => {
                ffi::luaL_argerror(state, arg, msg);
            }
            Status::Runtime => {
                ffi::luaL_where(state, 1);
                ffi::lua_pushvalue(state, msg_index);
                ffi::lua_concat(state, 2);
                ffi::lua_error(state);
            }
            Status::Message => {
                ffi::lua_pushvalue(state, msg_index);
                ffi::lua_error(state);
            }
        }
        // luaL_typeerror and luaL_argerror do not return.
        ffi::lua_error(state)
    }
}

/// A marked error record with a malformed body: only C code could build one.
unsafe fn protocol_error(state: *mut lua_State) -> ! {
    unsafe {
        ffi::lua_settop(state, 0);
        ffi::lua_pushstring(state, c"luahost_modules: malformed error record".as_ptr());
        ffi::lua_error(state)
    }
}

/// The C function mlua's `create_function` closures run, when they have the
/// shape [`direct_trampoline`] relies on (see [`wrap_inner`]): set by the
/// first inner function of this copy of the toolkit.
static MLUA_CALLBACK: OnceLock<ffi::lua_CFunction> = OnceLock::new();

/// The C function Lua code calls when the inner function's C function can
/// be run in this frame (see [`wrap_inner`]): upvalue 1 is the inner
/// function's own upvalue (mlua's callback record), upvalue 2 a light
/// userdata with its address.
///
/// The inner function's C function is called directly, as a Rust call, in
/// this C function's frame: it finds its upvalue at `lua_upvalueindex(1)`
/// and its arguments at `1..=nargs`, as when Lua calls it, and returns how
/// many results it left on top. That saves a second Lua call and a copy of
/// every argument, and the arguments stay where `finish_top` needs them.
pub(crate) unsafe extern "C-unwind" fn direct_trampoline(state: *mut lua_State) -> c_int {
    // SAFETY: made by wrap_inner with these two upvalues. Only Copy values
    // live in this frame (invariant 1). `debug.setupvalue` could replace
    // upvalue 1 with a userdata that is not mlua's record: the address in
    // upvalue 2 must match (Lua code cannot make light userdata; copying
    // another trampoline's pair only calls that function). mlua's C
    // function raises its own errors (and turns panics into Lua errors)
    // with only Copy values in this frame.
    unsafe {
        let nargs = ffi::lua_gettop(state);
        let record = ffi::lua_touserdata(state, ffi::lua_upvalueindex(1));
        if record.is_null() || record != ffi::lua_touserdata(state, ffi::lua_upvalueindex(2)) {
            ffi::lua_pushstring(
                state,
                c"luahost_modules: function upvalues replaced".as_ptr(),
            );
            ffi::lua_error(state);
        }
        let Some(callback) = MLUA_CALLBACK.get() else {
            ffi::lua_pushstring(state, c"luahost_modules: no mlua callback".as_ptr());
            ffi::lua_error(state)
        };
        let nresults = callback(state);
        finish_top(state, nargs, nresults)
    }
}

/// Wraps an inner function into the closure Lua code calls.
///
/// When the inner function is what mlua's `create_function` makes for Lua
/// 5.4 (a C closure with exactly one upvalue, a full userdata, running the
/// same C function as every other such closure), the result is a
/// [`direct_trampoline`] holding that upvalue; otherwise a [`trampoline`]
/// that calls the inner function with `lua_call`.
pub(crate) fn wrap_inner(lua: &mlua::Lua, inner: mlua::Function) -> mlua::Result<mlua::Function> {
    // SAFETY: exec_raw pushes `inner` (one value, index 1) on the stack of
    // the running state and runs the closure in protected mode. The
    // closure reads the inner function's C function and upvalues
    // (lua_getupvalue pushes the value when it returns a name), builds the
    // closure with lua_pushcclosure (pops its upvalues, may raise
    // out-of-memory: protected) and leaves it alone at index 1, which
    // exec_raw converts back.
    unsafe {
        lua.exec_raw::<mlua::Function>(inner, |state| {
            let callback = ffi::lua_tocfunction(state, 1);
            let direct = match callback {
                Some(f) => {
                    let same = *MLUA_CALLBACK.get_or_init(|| f) as usize == f as usize;
                    same && ffi::lua_getupvalue(state, 1, 2).is_null()
                        && !ffi::lua_getupvalue(state, 1, 1).is_null()
                }
                None => false,
            };
            if direct && ffi::lua_type(state, -1) == ffi::LUA_TUSERDATA {
                let record = ffi::lua_touserdata(state, -1);
                ffi::lua_pushlightuserdata(state, record);
                ffi::lua_pushcclosure(state, direct_trampoline, 2);
            } else {
                ffi::lua_settop(state, 1);
                ffi::lua_pushvalue(state, 1);
                ffi::lua_pushcclosure(state, trampoline, 1);
            }
            ffi::lua_replace(state, 1);
            ffi::lua_settop(state, 1);
        })
    }
}

/// The body of every `luaopen_*` function generated by [`crate::module!`]:
/// `make_inner` builds the inner function that runs the module's init.
///
/// Only public mlua API is used: [`mlua::Lua::get_or_init_from_ptr`] sets up
/// (or finds) mlua for this Lua state, the inner function is an ordinary
/// `create_function`, and it reaches `state`'s stack through the registry
/// ([`mlua::RegistryKey::id`] is the `luaL_ref` reference). mlua is set up
/// on the state's *main thread*: `require` may run in a coroutine, and mlua
/// keeps the thread it was set up with for its work outside callbacks, so a
/// coroutine that later dies and is collected must never be that thread.
/// The init itself runs inside the inner function's callback, where mlua
/// works on the running thread.
///
/// # Safety
/// `state` must be the state Lua passed to the `luaopen_*` C function.
pub(crate) unsafe fn open<F>(state: *mut lua_State, make_inner: F) -> c_int
where
    F: FnOnce(&mlua::Lua) -> mlua::Result<mlua::Function>,
{
    unsafe {
        // Only Copy values live in this frame (invariant 1): the Rust work
        // happens in push_init_function, which has returned (dropping all it
        // owned) before anything here raises.
        match push_init_function(state, make_inner) {
            Ok(()) => {}
            Err(PushError::Raised) => ffi::lua_error(state),
            Err(PushError::StackOverflow) => {
                ffi::luaL_checkstack(state, 3, c"module entry".as_ptr());
                ffi::lua_error(state)
            }
        }
        // Call it with whatever arguments require passed (name, file name);
        // the results start at index 1.
        ffi::lua_insert(state, 1);
        let nargs = ffi::lua_gettop(state) - 1;
        ffi::lua_call(state, nargs, ffi::LUA_MULTRET);
        finish(state, 0)
    }
}

/// Pushes the module's inner (init) function on `state`; on failure pushes
/// the error to raise instead (see [`push_message`]). Never raises.
unsafe fn push_init_function<F>(state: *mut lua_State, make_inner: F) -> Result<(), PushError>
where
    F: FnOnce(&mlua::Lua) -> mlua::Result<mlua::Function>,
{
    unsafe {
        // The main thread lives as long as the state (LUA_RIDX_MAINTHREAD is
        // set by lua_newstate). lua_rawgeti on the registry cannot raise.
        ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_MAINTHREAD);
        let main = ffi::lua_tothread(state, -1);
        ffi::lua_pop(state, 1);
        if main.is_null() {
            return Err(push_message(state, "luahost_modules: no main thread"));
        }
        let built = catch_unwind(AssertUnwindSafe(|| -> mlua::Result<mlua::RegistryKey> {
            // SAFETY: `main` is a live thread of this state; the `Lua` mlua
            // keeps for a state it does not own lives until lua_close.
            let lua = mlua::Lua::get_or_init_from_ptr(main);
            let inner = make_inner(lua)?;
            lua.create_registry_value(inner)
        }));
        match built {
            Ok(Ok(key)) => {
                // Cannot raise: a registry read of an integer key. Dropping
                // `key` afterwards lets mlua release the reference.
                ffi::lua_rawgeti(
                    state,
                    ffi::LUA_REGISTRYINDEX,
                    ffi::lua_Integer::from(key.id()),
                );
                drop(key);
                if ffi::lua_type(state, -1) == ffi::LUA_TFUNCTION {
                    Ok(())
                } else {
                    ffi::lua_pop(state, 1);
                    Err(push_message(state, "luahost_modules: module entry lost"))
                }
            }
            Ok(Err(e)) => Err(push_message(state, &e.to_string())),
            Err(panic) => Err(push_message(state, &Error::from_panic(&*panic).to_string())),
        }
    }
}
