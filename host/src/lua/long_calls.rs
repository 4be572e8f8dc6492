//! Budgets inside long C calls of the standard library.
//!
//! The budget hook (exec.rs) runs between Lua instructions, never inside a C
//! function: `string.rep("x", 1 << 30)` copies for seconds in one call and
//! then allocates the result, whatever the context's budget says. What such
//! a call does reach is the allocator. While a large `string.rep` or
//! `table.concat` runs, [`in_long_call`] is true, and the allocator refuses
//! large allocations (memory.rs) once the running context's budget is spent:
//! the call fails with "not enough memory", its buffers are freed, and the
//! context ends with its timeout as usual (the hook or the runner sees the
//! expiry).
//!
//! Only these calls, and only with arguments that leave them nothing else to
//! fail on: refusing an allocation that mlua or luahost's Rust code makes
//! (where a failure is not expected without `tune.lua.maxmem`) would raise a
//! Lua error across Rust frames. So the wrapper checks the arguments first
//! (anything odd goes to the stock function unguarded, which raises the stock
//! error), sets the flag only when the result is large, and runs the stock
//! function in a protected call, so the flag is always reset before an error
//! goes on. `table.concat` is guarded only on a plain table (no metatable)
//! of strings and numbers: no Lua code (which could call back into Rust) runs
//! inside it then; and only from 33 pieces on: with fewer, its work is a few
//! copies bounded by the pieces' own size, and the scan of the pieces would
//! cost more than the concatenation of a few short strings.

use mlua::ffi::{self, lua_CFunction, lua_State};
use mlua::Lua;
use std::cell::Cell;
use std::ffi::c_int;
use std::sync::OnceLock;

/// Results at least this large are built with the guard on; the allocator
/// refuses only allocations at least this large.
pub const LARGE: usize = 1 << 20;

/// `table.concat` of fewer pieces than this is not guarded (see
/// [`concat_length`]).
const MIN_GUARDED_PARTS: i64 = 32;

/// Lua's largest string (MAX_SIZE for a 64-bit lua_Integer).
const MAX_SIZE: usize = i64::MAX as usize;

thread_local! {
    static IN_LONG_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Whether a guarded standard-library call is running on this thread.
pub fn in_long_call() -> bool {
    IN_LONG_CALL.with(|c| c.get())
}

/// The stock functions (the same C functions in every state).
static STOCK_REP: OnceLock<lua_CFunction> = OnceLock::new();
static STOCK_CONCAT: OnceLock<lua_CFunction> = OnceLock::new();

/// Replaces `string.rep` and `table.concat` in `lua` with guarded ones.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let string: mlua::Table = lua.globals().get("string")?;
    let table: mlua::Table = lua.globals().get("table")?;
    // SAFETY: lua_tocfunction reads a value of the protected call's stack;
    // string.rep and table.concat are C functions without upvalues
    // (luaL_setfuncs with nup = 0), so calling them from another C function
    // with their arguments on the stack is what Lua does itself.
    unsafe {
        lua.exec_raw::<()>(
            (
                string.get::<mlua::Value>("rep")?,
                table.get::<mlua::Value>("concat")?,
            ),
            |state| {
                if let Some(f) = ffi::lua_tocfunction(state, 1) {
                    let _ = STOCK_REP.set(f);
                }
                if let Some(f) = ffi::lua_tocfunction(state, 2) {
                    let _ = STOCK_CONCAT.set(f);
                }
            },
        )?;
        if STOCK_REP.get().is_some() {
            string.set("rep", lua.create_c_function(guarded_rep)?)?;
        }
        if STOCK_CONCAT.get().is_some() {
            table.set("concat", lua.create_c_function(guarded_concat)?)?;
        }
    }
    Ok(())
}

/// Calls `stock` with the arguments on the stack, with the flag set, in a
/// protected call; re-raises its error after resetting the flag.
///
/// # Safety
/// A lua_CFunction body: `state` is the running thread, the arguments are
/// the whole stack, and at least LUA_MINSTACK free slots are available.
unsafe fn call_guarded(state: *mut lua_State, stock: lua_CFunction) -> c_int {
    let nargs = ffi::lua_gettop(state);
    ffi::lua_pushcfunction(state, stock);
    ffi::lua_insert(state, 1);
    let prev = IN_LONG_CALL.with(|c| c.replace(true));
    let status = ffi::lua_pcall(state, nargs, ffi::LUA_MULTRET, 0);
    IN_LONG_CALL.with(|c| c.set(prev));
    if status != ffi::LUA_OK {
        // The protected call closed the stock function's buffer (a
        // to-be-closed box): hand its memory back to the system.
        crate::lua::memory::give_back();
        // This frame owns nothing: the longjmp skips no destructor.
        ffi::lua_error(state);
    }
    ffi::lua_gettop(state)
}

/// The length of string-or-number argument `idx`, if it is one.
unsafe fn str_len(state: *mut lua_State, idx: c_int) -> Option<usize> {
    match ffi::lua_type(state, idx) {
        ffi::LUA_TSTRING => Some(ffi::lua_rawlen(state, idx)),
        // At most 44 bytes as text (LUAI_MAXSHORTLEN does not apply).
        ffi::LUA_TNUMBER => Some(44),
        _ => None,
    }
}

/// An optional integer argument as `luaL_optinteger` reads it.
unsafe fn opt_integer(state: *mut lua_State, idx: c_int, default: i64) -> Option<i64> {
    if ffi::lua_isnoneornil(state, idx) != 0 {
        return Some(default);
    }
    let mut isnum = 0;
    let v = ffi::lua_tointegerx(state, idx, &mut isnum);
    (isnum != 0).then_some(v)
}

/// `string.rep(s, n [, sep])`: the stock function for small results and
/// odd arguments; [`large_rep`], guarded, for large results.
unsafe extern "C-unwind" fn guarded_rep(state: *mut lua_State) -> c_int {
    let Some(&stock) = STOCK_REP.get() else {
        return 0;
    };
    if let Some(total) = rep_length(state) {
        if total >= LARGE {
            return call_guarded(state, large_rep);
        }
    }
    stock(state)
}

/// Bytes copied between two budget checks in [`large_rep`].
const REP_STEP: usize = 64 << 20;

/// A large `string.rep` with valid arguments (checked by [`rep_length`]).
///
/// The stock function copies the string once per repetition: a billion
/// one-byte copies take seconds, out of the budget's reach. This one copies
/// the first repetition, then doubles what is written (the result is
/// periodic), so a gigabyte takes a fraction of a second; between steps of
/// at most [`REP_STEP`] bytes it checks the running context's budget and
/// stops with "execution timeout". The buffer is Lua's own (a `luaL_Buffer`,
/// counted by the memory cap and freed as a to-be-closed value when an error
/// unwinds).
unsafe extern "C-unwind" fn large_rep(state: *mut lua_State) -> c_int {
    let Some(total) = rep_length(state) else {
        return 0;
    };
    let mut l = 0;
    let s = ffi::lua_tolstring(state, 1, &mut l);
    let n = ffi::lua_tointegerx(state, 2, std::ptr::null_mut()) as usize;
    let (sep, lsep) = if ffi::lua_isnoneornil(state, 3) != 0 {
        (std::ptr::null(), 0)
    } else {
        let mut lsep = 0;
        (ffi::lua_tolstring(state, 3, &mut lsep), lsep)
    };
    if s.is_null() || (lsep > 0 && sep.is_null()) || n == 0 {
        return 0;
    }
    // SAFETY: luaL_Buffer is a plain C struct; it must not move once
    // initialised (it may point into itself), and it stays in this frame.
    let mut b: ffi::luaL_Buffer = std::mem::zeroed();
    let p = ffi::luaL_buffinitsize(state, &mut b, total) as *mut u8;
    // SAFETY: luaL_buffinitsize returned room for `total` bytes; s and sep
    // point to `l` and `lsep` bytes of strings on the stack (kept alive by
    // it); the regions copied from and to never overlap.
    let out = std::slice::from_raw_parts_mut(p, total);
    let unit = l + lsep;
    let first = unit.min(total);
    let head = l.min(first);
    out[..head].copy_from_slice(std::slice::from_raw_parts(s as *const u8, head));
    if first > head {
        out[head..first]
            .copy_from_slice(std::slice::from_raw_parts(sep as *const u8, first - head));
    }
    // Doubling keeps `filled` a multiple of `unit` (steps are whole units)
    // until the last, partial copy.
    let max_step = (REP_STEP / unit).max(1) * unit;
    let mut filled = first;
    while filled < total {
        if crate::lua::exec::budget_spent_now() {
            push_str(state, "execution timeout");
            ffi::lua_error(state);
        }
        let step = filled.min(max_step).min(total - filled);
        out.copy_within(0..step, filled);
        filled += step;
    }
    ffi::luaL_pushresultsize(&mut b, total);
    1
}

/// Pushes a Rust string.
unsafe fn push_str(state: *mut lua_State, s: &str) {
    ffi::lua_pushlstring(state, s.as_ptr() as *const std::ffi::c_char, s.len());
}

/// The length of `string.rep`'s result, when its arguments are valid.
unsafe fn rep_length(state: *mut lua_State) -> Option<usize> {
    let l = str_len(state, 1)?;
    let mut isnum = 0;
    let n = ffi::lua_tointegerx(state, 2, &mut isnum);
    if isnum == 0 {
        return None;
    }
    let lsep = if ffi::lua_isnoneornil(state, 3) != 0 {
        0
    } else {
        str_len(state, 3)?
    };
    if n <= 0 {
        return Some(0);
    }
    let n = n as usize;
    let unit = l.checked_add(lsep)?;
    if unit > MAX_SIZE / n {
        return None;
    }
    Some(n * l + (n - 1) * lsep)
}

/// `table.concat(list [, sep [, i [, j]]])`, guarded when its result is
/// large and the list is a plain table of strings and numbers.
unsafe extern "C-unwind" fn guarded_concat(state: *mut lua_State) -> c_int {
    let Some(&stock) = STOCK_CONCAT.get() else {
        return 0;
    };
    if let Some(total) = concat_length(state) {
        if total >= LARGE {
            return call_guarded(state, stock);
        }
    }
    stock(state)
}

/// The length of `table.concat`'s result, when nothing in it can run Lua
/// code or fail other than by allocation.
unsafe fn concat_length(state: *mut lua_State) -> Option<usize> {
    if ffi::lua_type(state, 1) != ffi::LUA_TTABLE {
        return None;
    }
    if ffi::lua_getmetatable(state, 1) != 0 {
        ffi::lua_pop(state, 1);
        return None;
    }
    let lsep = if ffi::lua_isnoneornil(state, 2) != 0 {
        0
    } else {
        str_len(state, 2)?
    };
    let first = opt_integer(state, 3, 1)?;
    let last = opt_integer(state, 4, ffi::lua_rawlen(state, 1) as i64)?;
    if first > last {
        return Some(0);
    }
    if last
        .checked_sub(first)
        .is_none_or(|d| d < MIN_GUARDED_PARTS)
    {
        // A few pieces: a few copies, bounded by the pieces' own size; not
        // worth a scan on every call (the common, small case).
        return None;
    }
    let mut total: usize = 0;
    let mut i = first;
    loop {
        ffi::lua_rawgeti(state, 1, i);
        let len = str_len(state, -1);
        ffi::lua_pop(state, 1);
        total = total.checked_add(len?)?;
        if i == last {
            break;
        }
        total = total.checked_add(lsep)?;
        i += 1;
    }
    Some(total)
}
