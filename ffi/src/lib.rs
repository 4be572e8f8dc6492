//! The Lua 5.4 ABI for luahost.
//!
//! Depending on this crate links a complete Lua 5.4 (built from lua-src's
//! sources, whole-archive) into the final artifact. The raw declarations come
//! from bindgen over the very headers that Lua was compiled with, so they cannot
//! drift from the library; `tests/abi.rs` checks that they also agree with the
//! declarations mlua uses, which is what the rest of the workspace calls.
//!
//! Only binaries (the `luahost` host, test harnesses) may depend on this crate
//! normally. A native module must not: a `.so` carrying its own Lua would run
//! two Lua copies in one process. Module crates list it as a dev-dependency.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all)]

#[allow(unnecessary_transmutes)]
mod bindings;
pub use bindings::*;

/// `lua_upvalueindex` is a macro in C.
pub const fn lua_upvalueindex(i: i32) -> i32 {
    LUA_REGISTRYINDEX - i
}

/// Version of the Lua library linked in, e.g. "Lua 5.4.9" (LUA_RELEASE is a
/// macro built from pieces, which bindgen can't evaluate).
pub fn lua_release() -> String {
    let n = LUA_VERSION_RELEASE_NUM;
    format!("Lua {}.{}.{}", n / 10000, n / 100 % 100, n % 100)
}

/// Keeps the linker from discarding this crate (and with it the Lua archive)
/// when a binary uses no item from it directly. Call it from `main`.
#[inline(never)]
pub fn link() {
    let f: unsafe extern "C" fn() -> *mut lua_State = luaL_newstate;
    std::hint::black_box(f);
}

/// LUA_EXTRASPACE is `sizeof(void *)` in luaconf.h; bindgen can't evaluate it.
pub const LUA_EXTRASPACE_SIZE: usize = std::mem::size_of::<*const std::ffi::c_void>();
