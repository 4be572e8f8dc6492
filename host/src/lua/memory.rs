//! The process-wide Lua memory cap (`tune.lua.maxmem`).
//!
//! mlua's own limit is per state, but HAProxy's maxmem bounds all Lua states of
//! the process together. Each state's allocator is therefore wrapped: the
//! wrapper keeps one process-wide byte count and refuses an allocation that
//! would take it past the cap. Lua turns a refused allocation into its
//! "not enough memory" error (after an emergency collection), which fails only
//! the Lua context that asked; the host goes on. Native modules that allocate
//! through `lua_getallocf` (the concat builder does) are bounded as well.

use mlua::ffi;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes currently allocated by all wrapped states.
static USED: AtomicUsize = AtomicUsize::new(0);
/// The cap in bytes; 0 means unlimited.
static LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Sets the process-wide cap (0 = unlimited).
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// Whether buffering `extra` more bytes for Lua would pass the cap (used
/// by readers that collect data in Rust before handing it to Lua).
pub fn would_exceed(extra: usize) -> bool {
    let limit = LIMIT.load(Ordering::Relaxed);
    limit != 0 && USED.load(Ordering::Relaxed).saturating_add(extra) > limit
}

/// Bytes in use by all Lua states of the process.
pub fn used() -> usize {
    USED.load(Ordering::Relaxed)
}

/// The allocator a state had before it was wrapped.
struct Inner {
    alloc: ffi::lua_Alloc,
    ud: *mut c_void,
}

/// Wraps the allocator of `lua` so its allocations count against the cap.
///
/// Must be called right after the state is created, before it holds any
/// object, so that every later free matches a counted allocation.
pub fn install(lua: &mlua::Lua) {
    // SAFETY: exec_raw runs with the state locked, on the thread that owns it;
    // lua_getallocf/lua_setallocf only read and write the global allocator
    // fields. The Box is leaked on purpose: the state (and thus the wrapper,
    // which may be called until lua_close returns) never outlives the process
    // in a way that would let the Box be freed before its last use.
    let _ = unsafe {
        lua.exec_raw::<()>((), |state| {
            let mut ud = std::ptr::null_mut();
            let alloc = ffi::lua_getallocf(state, &mut ud);
            let inner = Box::into_raw(Box::new(Inner { alloc, ud }));
            ffi::lua_setallocf(state, counting_alloc, inner as *mut c_void);
            // Memory the state already holds (its initial objects) is counted
            // from here on by its own frees, so count it now as well.
            let kb = ffi::lua_gc(state, ffi::LUA_GCCOUNT, 0) as usize;
            let b = ffi::lua_gc(state, ffi::LUA_GCCOUNTB, 0) as usize;
            USED.fetch_add(kb * 1024 + b, Ordering::Relaxed);
        })
    };
}

/// The `lua_Alloc` installed by [`install`].
///
/// Contract of lua_Alloc: `nsize == 0` frees; otherwise (re)allocates and
/// returns null on failure, leaving the old block untouched. Shrinking and
/// freeing never fail.
unsafe extern "C" fn counting_alloc(
    ud: *mut c_void,
    ptr: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `ud` is the `Inner` leaked by `install` for this state.
    let inner = &*(ud as *const Inner);
    // When ptr is null, osize encodes the object type, not a size.
    let old = if ptr.is_null() { 0 } else { osize };
    if nsize > old {
        let grow = nsize - old;
        let limit = LIMIT.load(Ordering::Relaxed);
        if limit != 0 && USED.load(Ordering::Relaxed) + grow > limit {
            return std::ptr::null_mut();
        }
        let p = (inner.alloc)(inner.ud, ptr, osize, nsize);
        if !p.is_null() {
            USED.fetch_add(grow, Ordering::Relaxed);
        }
        p
    } else {
        let p = (inner.alloc)(inner.ud, ptr, osize, nsize);
        // A shrink or free always succeeds in the wrapped allocator.
        USED.fetch_sub(old - nsize, Ordering::Relaxed);
        p
    }
}
