//! The Rust peers of `cargo bench --bench calls` (benches/calls.rs), the same
//! functions as the C module benches/calls/refcalls.c:
//!
//! * `callbench_mlua`: written with plain mlua (`#[mlua::lua_module]`,
//!   `create_function` with typed arguments, a `UserData` with a method).
//! * `callbench_kit`: written with luahost-modules: native functions and a
//!   native method (`native_fn!`, `native_method!`), and the same with the
//!   mlua-based `Module::function` / `ClassBuilder::method` and `Args`.
//!
//! Every function: `bare()` does nothing; `check(s, i)` returns `#s + i`,
//! reading a string and an integer with luaL_check* semantics; `new(n)`
//! makes a counter object whose `o:add([n])` adds n (default 1) and returns
//! the sum.

use luahost_modules::{module, native_fn, native_method, Result};
use mlua::{Lua, UserData, UserDataMethods};

/// The counter of the plain mlua module: an mlua userdata.
struct MluaCounter(i64);

impl UserData for MluaCounter {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method_mut("add", |_, this, n: Option<i64>| {
            this.0 = this.0.wrapping_add(n.unwrap_or(1));
            Ok(this.0)
        });
    }
}

#[mlua::lua_module]
fn callbench_mlua(lua: &Lua) -> mlua::Result<mlua::Table> {
    let m = lua.create_table()?;
    m.set("bare", lua.create_function(|_, ()| Ok(()))?)?;
    m.set(
        "check",
        lua.create_function(|_, (s, i): (mlua::LuaString, i64)| {
            Ok((s.as_bytes().len() as i64).wrapping_add(i))
        })?,
    )?;
    m.set(
        "new",
        lua.create_function(|lua, n: Option<i64>| {
            lua.create_userdata(MluaCounter(n.unwrap_or(0)))
        })?,
    )?;
    Ok(m)
}

/// The counter of the toolkit module: the native value of an object table.
struct Counter {
    value: i64,
}

native_fn! {
    fn bare() -> Result<()> {
        Ok(())
    }
    fn check(s: &[u8], i: i64) -> Result<i64> {
        Ok((s.len() as i64).wrapping_add(i))
    }
}

native_method! {
    fn add(this: &mut Counter, n: Option<i64>) -> Result<i64> {
        this.value = this.value.wrapping_add(n.unwrap_or(1));
        Ok(this.value)
    }
}

module!(callbench_kit, |m| {
    m.native("bare", bare)?;
    m.native("check", check)?;
    // The same through the mlua-based API, for comparison.
    m.function("bare_args", |_, _| Ok(()))?;
    m.function("check_args", |_, a| {
        Ok((a.check_lstring(1)?.len() as i64).wrapping_add(a.check_integer(2)?))
    })?;
    // The same with the string as an mlua `LuaString` (a reference), as
    // the typed mlua function gets it.
    m.function("check_args_string", |_, a| {
        Ok((a.check_string(1)?.as_bytes().len() as i64).wrapping_add(a.check_integer(2)?))
    })?;
    let counter = m
        .class::<Counter>("Counter")?
        .native_method("add", add)?
        .method("add_args", |_, this, a| {
            this.value = this.value.wrapping_add(a.opt_integer(2, 1)?);
            Ok(this.value)
        })?
        .build();
    m.function("new", move |lua, a| {
        counter.wrap(
            lua,
            Counter {
                value: a.opt_integer(1, 0)?,
            },
        )
    })?;
    Ok(())
});
