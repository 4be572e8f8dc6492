//! A toolkit for writing Lua 5.4 native modules in Rust, on mlua's module
//! mode, that behave like modules written in C.
//!
//! ```
//! use luahost_modules::{module, native_fn, Result};
//!
//! native_fn! {
//!     fn add(a: i64, b: i64) -> Result<i64> {
//!         Ok(a.wrapping_add(b))
//!     }
//! }
//!
//! module!(hello_rs, |m| {
//!     m.function("greet", |_, args| Ok(format!("hello, {}!", args.check_str(1)?)))?;
//!     m.native("add", add)?;
//!     Ok(())
//! });
//! # fn main() { luahost_ffi::link() } // the doctest is a program: give it a Lua
//! ```
//!
//! That defines the C entry point `luaopen_hello_rs`, which `require
//! "hello_rs"` calls. In Lua, `hello_rs.greet(nil)` raises the *string*
//! `input:3: bad argument #1 to 'greet' (string expected, got nil)`, word for
//! word what a C module using `luaL_checkstring` raises, in luahost and in
//! the stock `lua5.4` alike.
//!
//! What this adds over plain mlua (`#[mlua::lua_module]` + `create_function`):
//!
//! * **String errors in the standard wording.** mlua raises a callback's
//!   error as a userdata whose text is "runtime error: ..." plus a traceback;
//!   Lua code that does `pcall` and `string.find` on the message, or a host
//!   that expects strings, gets something else. Here every error is raised by
//!   Lua's auxiliary library itself (`luaL_typeerror`, `luaL_argerror`,
//!   `luaL_where`), so the function name, the method renumbering ("calling
//!   'add' on bad self") and the caller's `chunk:line:` prefix are exact.
//!   See [`Error`] and `raw.rs` for how this is done without a longjmp ever
//!   crossing a Rust frame that owns something.
//! * **Native functions and methods** ([`native_fn!`], [`native_method!`]):
//!   typed Rust bodies compiled into plain `lua_CFunction`s that cost what a
//!   hand-written C function costs (a third of a typed mlua function).
//! * **Argument checks** ([`Args`], and the argument types of native
//!   functions, [`Arg`]) with the semantics of `luaL_check*`.
//! * **HAProxy-style classes** ([`Class`]): objects are tables with the
//!   native value at `[0]` and methods reached through the metatable, as in
//!   HAProxy's Lua API.
//! * **Panics** in a body become Lua errors instead of aborting the host.
//!
//! General functions ([`Module::function`]) still get `&Lua` and all of
//! mlua's conversions, and read their arguments where Lua put them: less
//! than a typed mlua function costs when strings are read as borrowed bytes
//! ([`Args::check_lstring`]); native functions get their typed arguments
//! only. See docs/modules.md for measurements.
//!
//! mlua's public API is used, plus the argument and result fast path that
//! mlua's own typed functions run on (`FromLuaMulti::from_stack_args`,
//! `FromLua::from_stack`, `IntoLuaMulti::push_into_stack_multi`,
//! `RawLua::state`: hidden from mlua's documentation, see `args.rs` and
//! docs/modules.md), tested with mlua 0.12.0 to 0.12.2.
//!
//! * **Functions that wait without blocking** (feature `async`,
//!   [`Module::async_function`]): a future run on the module's own thread;
//!   in luahost only the calling coroutine waits (see docs/modules.md).
//! * **Budget-aware natives** ([`host`]): memory charged to luahost's
//!   `tune.lua.maxmem`, and `should_yield` for long computations.
//!
//! Limits: bodies of plain functions cannot yield (async functions wait
//! instead).
//!
//! A module crate is a `cdylib` depending on `mlua` (features `lua54`,
//! `module`) and this crate, and never on a crate that links Lua: the `.so`
//! must take `lua_*` from the host (see docs/modules.md).

mod args;
#[cfg(feature = "async")]
mod async_fn;
mod error;
pub mod host;
pub mod host_abi;
mod module;
mod native;
mod object;
mod raw;
mod stack;

#[cfg(feature = "async")]
pub use async_fn::async_function;

pub use args::Args;
pub use error::{Error, Result};
pub use module::{function, Class, ClassBuilder, Module};
pub use native::{NativeFunction, NativeMethod};
pub use object::ObjectMut;
pub use stack::{Arg, Push, PushError};

/// Re-exported so module crates and the macro name the same mlua.
pub use mlua;

#[doc(hidden)]
pub mod __private {
    pub use crate::module::open_module;
    pub use crate::native::{call, complete_err, complete_ok, finish};
    pub use crate::object::{anchor_self, check_self};
    pub use crate::stack::Returns;

    /// Gives the init closure its signature (so `|m|` needs no annotation).
    pub fn init_fn<F>(f: F) -> F
    where
        F: FnOnce(&crate::Module<'_>) -> crate::Result<()> + 'static,
    {
        f
    }
    pub use mlua::lua_State;
}

/// Defines a module's C entry point.
///
/// `module!(name, |m| { ...; Ok(()) })` exports `luaopen_<name>`, the
/// function `require "<name>"` looks for. The closure gets a [`Module`] to
/// fill; its table is what `require` returns. An error from the closure makes
/// `require` fail with that error as a plain string.
///
/// The name must be what Lua derives from the require name: dots become
/// underscores (`require "a.b"` calls `luaopen_a_b`), so a module loaded as
/// `require "hello_rs"` is `module!(hello_rs, ...)`.
#[macro_export]
macro_rules! module {
    ($name:ident, $init:expr $(,)?) => {
        const _: () = {
            #[unsafe(export_name = concat!("luaopen_", stringify!($name)))]
            unsafe extern "C-unwind" fn luahost_module_open(
                state: *mut $crate::__private::lua_State,
            ) -> ::core::ffi::c_int {
                // Evaluated outside the unsafe block: the init closure is
                // safe code and must stay checked as such.
                let init = $crate::__private::init_fn($init);
                // SAFETY: Lua calls luaopen_* functions with a valid state.
                unsafe { $crate::__private::open_module(state, init) }
            }
        };
    };
}

#[cfg(test)]
mod tests;
