//! The C-level contract between a native module and the luahost host,
//! version 1 (docs/modules.md, "The host contract").
//!
//! A module links no Lua and may be built with another mlua or tokio than
//! the host, so nothing Rust-specific crosses the boundary: only the
//! `#[repr(C)]` structs below, plain function pointers and two entries in the
//! Lua registry that the host sets on each of its states:
//!
//! * [`API_KEY`] (`"luahost.async.v1"`): a light userdata pointing at a
//!   [`HostApiV1`] that lives as long as the process;
//! * [`AWAIT_KEY`] (`"luahost.async.v1.await"`): a Lua function `await(op)`
//!   that suspends the calling coroutine until the [`OpV1`] behind the light
//!   userdata `op` is ready, then returns nothing. It may only be called
//!   where [`HostApiV1::wait_mode`] said [`WAIT_YIELD`], and only through
//!   `lua_callk` (it yields).
//!
//! Under the stock `lua5.4` (or any host without these entries) a module
//! behaves as if the host had answered [`WAIT_BLOCK`].
//!
//! Later versions only append fields to [`HostApiV1`] and raise `version`;
//! a module checks `version >= 1` and `size >= size_of::<HostApiV1>()`.

use std::ffi::{c_int, c_void, CStr};

use mlua::ffi::{self, lua_State};

/// Registry key of the light userdata pointing at the [`HostApiV1`].
pub const API_KEY: &CStr = c"luahost.async.v1";
/// Registry key of the host's `await(op)` function.
pub const AWAIT_KEY: &CStr = c"luahost.async.v1.await";

/// [`HostApiV1::wait_mode`]: the caller runs in the host's own yieldable
/// coroutine (action, service, task, init or event callback): hand the work
/// to the host's `await` function and let the coroutine be suspended.
pub const WAIT_YIELD: c_int = 0;
/// No Lua context is running (the body of a `lua-load` file): block the
/// thread until the work is done, nothing is being served yet.
pub const WAIT_BLOCK: c_int = 1;
/// Refused: the caller is a sample fetch or converter, which cannot yield.
pub const WAIT_REFUSED_FETCH: c_int = 2;
/// Refused: the caller runs in a coroutine the script created itself; a
/// yield would reach the script's own `coroutine.resume`.
pub const WAIT_REFUSED_COROUTINE: c_int = 3;
/// Refused: the host's coroutine cannot yield here (the call is under a C
/// function, e.g. a `table.sort` comparator or a `string.gsub` callback).
pub const WAIT_REFUSED_C_CALL: c_int = 4;

/// [`OpVtableV1::poll`]: the operation is finished; its result can be taken.
pub const POLL_READY: c_int = 1;
/// [`OpVtableV1::poll`]: not finished; the waker was kept and will be woken.
pub const POLL_PENDING: c_int = 0;

/// What the host offers to native modules. All functions are safe to call
/// from the thread running the Lua state; the memory functions from any
/// thread. None of them raises a Lua error or unwinds.
#[repr(C)]
#[derive(Debug)]
pub struct HostApiV1 {
    /// 1 for this layout.
    pub version: u32,
    /// `size_of::<HostApiV1>()` as the host built it.
    pub size: u32,
    /// May the function running in `state` (a coroutine) wait? One of the
    /// `WAIT_*` values.
    pub wait_mode: unsafe extern "C" fn(state: *mut lua_State) -> c_int,
    /// 1 when the native code running now should return to Lua soon: the
    /// context is out of budget, or its current uninterrupted run has lasted
    /// long enough that a forced yield is due. 0 otherwise (and when no
    /// context runs).
    pub should_yield: unsafe extern "C" fn() -> c_int,
    /// Fills `out` with the running context's budget; returns 0 when no
    /// context runs (out untouched), 1 otherwise.
    pub budget: unsafe extern "C" fn(out: *mut BudgetV1) -> c_int,
    /// Adds `nanos` of execution time (work a module did for the running
    /// context elsewhere, e.g. on its own thread) to the context's budget.
    pub charge_time: unsafe extern "C" fn(nanos: u64),
    /// Charges `bytes` to `tune.lua.maxmem`, the cap shared with every Lua
    /// allocation of the process. 1: charged; 0: refused, nothing charged.
    pub mem_charge: unsafe extern "C" fn(bytes: usize) -> c_int,
    /// Gives back bytes charged by `mem_charge`.
    pub mem_uncharge: unsafe extern "C" fn(bytes: usize),
}

/// The budget of the running context (all durations in nanoseconds; 0 for
/// a limit means none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetV1 {
    /// Execution time charged so far, including the current run.
    pub used_ns: u64,
    /// The total budget (`tune.lua.service-timeout` and friends).
    pub total_ns: u64,
    /// How long the current uninterrupted run has lasted.
    pub run_ns: u64,
    /// The longest uninterrupted run allowed (`tune.lua.burst-timeout`).
    pub burst_ns: u64,
}

/// A waker handed from the host to a module, as a data pointer and the
/// functions that act on it. Callable from any thread.
#[repr(C)]
pub struct WakerV1 {
    pub data: *const c_void,
    pub vtable: *const WakerVtableV1,
}

/// The functions of a [`WakerV1`]. The waker given to
/// [`OpVtableV1::poll`] is borrowed for the call: the module may only
/// `clone` it. A clone is owned: it must be consumed exactly once, by
/// `wake` or by `drop`.
#[repr(C)]
pub struct WakerVtableV1 {
    pub clone: unsafe extern "C" fn(data: *const c_void) -> WakerV1,
    pub wake: unsafe extern "C" fn(data: *const c_void),
    pub drop: unsafe extern "C" fn(data: *const c_void),
}

/// The header of a module's pending operation; the module's own data
/// follows it in the same allocation. The host owns the operation from the
/// moment `await(op)` is called until it calls `release`, exactly once.
#[repr(C)]
pub struct OpV1 {
    pub vtable: *const OpVtableV1,
}

/// The functions of an [`OpV1`].
#[repr(C)]
pub struct OpVtableV1 {
    /// [`POLL_READY`] or [`POLL_PENDING`]; on pending, the module keeps a
    /// clone of `waker` and wakes it (from any thread) when the operation
    /// finishes.
    pub poll: unsafe extern "C" fn(op: *mut OpV1, waker: *const WakerV1) -> c_int,
    /// The host is done with `op`. If it is not finished, it is cancelled:
    /// the module drops its future (promptly, possibly on its own thread).
    pub release: unsafe extern "C" fn(op: *mut OpV1),
}

/// The host API of `state`'s host, if it provides a compatible one.
///
/// # Safety
/// `state` is a valid Lua state with one free stack slot.
pub unsafe fn lookup(state: *mut lua_State) -> Option<&'static HostApiV1> {
    unsafe {
        ffi::lua_getfield(state, ffi::LUA_REGISTRYINDEX, API_KEY.as_ptr());
        let ptr = if ffi::lua_type(state, -1) == ffi::LUA_TLIGHTUSERDATA {
            ffi::lua_touserdata(state, -1) as *const HostApiV1
        } else {
            std::ptr::null()
        };
        ffi::lua_settop(state, -2);
        // SAFETY: a light userdata under this key is set by the host to a
        // HostApiV1 that lives for the whole process (contract above).
        let api = ptr.as_ref()?;
        (api.version >= 1 && api.size as usize >= std::mem::size_of::<HostApiV1>()).then_some(api)
    }
}
