//! The process-wide Lua memory cap (`tune.lua.maxmem`).
//!
//! mlua's own limit is per state, but HAProxy's maxmem bounds all Lua states of
//! the process together. Each state's allocator is therefore wrapped: the
//! wrapper keeps one process-wide byte count and refuses an allocation that
//! would take it past the cap. Lua turns a refused allocation into its
//! "not enough memory" error (after an emergency collection), which fails only
//! the Lua context that asked; the host goes on. Native modules that allocate
//! through `lua_getallocf` (the concat builder does) are bounded as well.

use crate::lua::long_calls;
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

/// The cap in bytes (0: unlimited).
pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Whether buffering `extra` more bytes for Lua would pass the cap (used
/// by readers that collect data in Rust before handing it to Lua).
pub fn would_exceed(extra: usize) -> bool {
    let limit = LIMIT.load(Ordering::Relaxed);
    limit != 0 && USED.load(Ordering::Relaxed).saturating_add(extra) > limit
}

/// Charges `bytes` that a native module holds for Lua (native_async.rs) as
/// if Lua had allocated them; false, charging nothing, past the cap.
pub fn try_charge(bytes: usize) -> bool {
    let limit = LIMIT.load(Ordering::Relaxed);
    let before = USED.fetch_add(bytes, Ordering::Relaxed);
    if limit != 0 && before.saturating_add(bytes) > limit {
        USED.fetch_sub(bytes, Ordering::Relaxed);
        return false;
    }
    true
}

/// The error of a read that would pass the cap: Lua's own message for a
/// failed allocation, as HAProxy's `luaL_Buffer` raises it.
pub fn not_enough_memory() -> mlua::Error {
    mlua::Error::MemoryError("not enough memory".to_string())
}

/// Gives back bytes charged with [`try_charge`].
pub fn uncharge(bytes: usize) {
    USED.fetch_sub(bytes, Ordering::Relaxed);
}

/// Bytes in use by all Lua states of the process.
pub fn used() -> usize {
    USED.load(Ordering::Relaxed)
}

extern "C" {
    /// mimalloc's collection: with `force`, freed memory goes back to the
    /// system now rather than on later allocation activity. (Declared here:
    /// libmimalloc-sys exposes it only with its `extended` feature.)
    fn mi_collect(force: bool);
}

/// Returns freed memory to the system at once. For the rare moments when a
/// large amount was just freed (a long C call stopped by its budget): an idle
/// worker would otherwise keep it resident.
pub fn give_back() {
    // SAFETY: mi_collect takes no pointer and may be called at any time.
    unsafe { mi_collect(true) }
}

/// Replaces the allocator of `lua` with one whose allocations count against
/// the cap.
///
/// Must be called right after the state is created, before it holds any
/// object that would be freed through a different allocator's bookkeeping.
pub fn install(lua: &mlua::Lua) {
    // SAFETY: exec_raw runs with the state locked, on the thread that owns it;
    // lua_setallocf only writes the global allocator fields. The blocks the
    // state already holds came from mlua's allocator, i.e. from the global
    // allocator, which is mimalloc in this program (main.rs): mi_free and
    // mi_realloc accept them.
    let _ = unsafe {
        lua.exec_raw::<()>((), |state| {
            ffi::lua_setallocf(state, counting_alloc, std::ptr::null_mut());
            // Memory the state already holds (its initial objects) is counted
            // from here on by its own frees, so count it now as well.
            let kb = ffi::lua_gc(state, ffi::LUA_GCCOUNT, 0) as usize;
            let b = ffi::lua_gc(state, ffi::LUA_GCCOUNTB, 0) as usize;
            USED.fetch_add(kb * 1024 + b, Ordering::Relaxed);
        })
    };
}

/// The `lua_Alloc` installed by [`install`]: mimalloc, called directly
/// (mlua's allocator, which it replaces, went through Rust's aligned
/// allocation entry point and kept a per-state count of its own).
///
/// Contract of lua_Alloc: `nsize == 0` frees; otherwise (re)allocates and
/// returns null on failure, leaving the old block untouched. Shrinking and
/// freeing never fail. mimalloc aligns every block to 16 bytes, which covers
/// Lua's needs (LUAI_MAXALIGN).
unsafe extern "C" fn counting_alloc(
    _ud: *mut c_void,
    ptr: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    use libmimalloc_sys::{mi_free, mi_realloc};
    // When ptr is null, osize encodes the object type, not a size.
    let old = if ptr.is_null() { 0 } else { osize };
    if nsize == 0 {
        if !ptr.is_null() {
            mi_free(ptr);
            USED.fetch_sub(old, Ordering::Relaxed);
        }
        return std::ptr::null_mut();
    }
    if nsize > old {
        // A large allocation inside a guarded long C call (string.rep,
        // table.concat) is where an exhausted budget can stop that call
        // (long_calls.rs). One compare on the common path.
        if nsize >= long_calls::LARGE
            && long_calls::in_long_call()
            && crate::lua::exec::budget_spent_now()
        {
            return std::ptr::null_mut();
        }
        let grow = nsize - old;
        let limit = LIMIT.load(Ordering::Relaxed);
        if limit != 0 && USED.load(Ordering::Relaxed) + grow > limit {
            return std::ptr::null_mut();
        }
        let p = mi_realloc(ptr, nsize);
        if !p.is_null() {
            USED.fetch_add(grow, Ordering::Relaxed);
        }
        p
    } else {
        let p = mi_realloc(ptr, nsize);
        if p.is_null() {
            // A shrink must not fail (Lua assumes it); keep the old block.
            return ptr;
        }
        USED.fetch_sub(old - nsize, Ordering::Relaxed);
        p
    }
}

/// Bytes held in Rust on behalf of a Lua context (a request body being
/// collected for `applet:receive()`), charged to the same process-wide
/// count as the Lua heaps, so that `tune.lua.maxmem` bounds them too.
/// Dropping the charge releases it.
#[derive(Debug, Default)]
pub struct Charge {
    bytes: usize,
}

impl Charge {
    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Charges `extra` more bytes; false, charging nothing, when that would
    /// pass the cap.
    pub fn try_grow(&mut self, extra: usize) -> bool {
        let limit = LIMIT.load(Ordering::Relaxed);
        let grown = USED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            let n = used.checked_add(extra)?;
            (limit == 0 || n <= limit).then_some(n)
        });
        if grown.is_ok() {
            self.bytes += extra;
        }
        grown.is_ok()
    }

    /// Moves `bytes` of this charge (at most all of it) into a charge of
    /// its own, e.g. for data handed over together with its charge.
    pub fn split(&mut self, bytes: usize) -> Charge {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Charge { bytes }
    }

    /// Releases `bytes` of the charge (data handed over to Lua, whose own
    /// allocator charges the string made of it, or dropped).
    pub fn release(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        USED.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release(self.bytes);
    }
}
