//! `hello_rs`: an example Lua module written with luahost-modules.
//!
//! Build with `cargo build -p hello-rs`; cargo writes
//! `target/debug/libhello_rs.so`. Load it with `require "hello_rs"` after
//! adding `<dir>/lib?.so` to package.cpath, or after renaming (or
//! symlinking) the file to `hello_rs.so` (docs/modules.md).
//!
//! ```lua
//! local hello = require "hello_rs"
//! print(hello.greet("world"))          --> hello, world!
//! print(hello.add(2, 3))               --> 5
//! local c = hello.counter(10)
//! c:add(5)                             -- methods on a HAProxy-style object
//! print(c:get(), tostring(c))          --> 15    Counter(15)
//! print(hello.greet())  -- error: bad argument #1 to 'greet' (string expected, got no value)
//! ```

use luahost_modules::{module, native_fn, native_method, Error, Result};

/// The native state of a `hello_rs.counter()` object.
struct Counter {
    value: i64,
}

// Native functions: typed arguments read straight from the Lua stack, as
// fast as the same functions written in C (docs/modules.md).
native_fn! {
    /// greet(name) -> "hello, <name>!"; numbers are accepted as strings, as
    /// luaL_checkstring accepts them.
    fn greet(who: &str) -> Result<String> {
        Ok(format!("hello, {who}!"))
    }

    /// add(a, b): integer addition with Lua's wrap-around semantics.
    fn add(a: i64, b: i64) -> Result<i64> {
        Ok(a.wrapping_add(b))
    }
}

native_method! {
    /// c:add([n]): adds n (default 1), returns the new value.
    fn counter_add(this: &mut Counter, n: Option<i64>) -> Result<i64> {
        this.value = this.value.wrapping_add(n.unwrap_or(1));
        Ok(this.value)
    }

    /// c:get()
    fn counter_get(this: &mut Counter) -> Result<i64> {
        Ok(this.value)
    }
}

module!(hello_rs, |m| {
    m.set("version", env!("CARGO_PKG_VERSION"))?;

    m.native("greet", greet)?;
    m.native("add", add)?;

    // The functions below use the general API: a closure with `&Lua` (for
    // tables, callbacks, anything mlua offers) and an argument list.

    // fail(message): raises `message` with the caller's position, as
    // luaL_error (or error(message) in Lua) would.
    m.function("fail", |_, args| -> luahost_modules::Result<()> {
        Err(Error::runtime(args.check_str(1)?))
    })?;

    // pick(option [, fallback]): luaL_checkoption-style choice.
    m.function("pick", |_, args| {
        let i = args.check_option(1, Some("first"), &["first", "second", "third"])?;
        Ok(i + 1)
    })?;

    // map(t, f): calls f on each element; an error raised by f propagates
    // unchanged.
    m.function("map", |lua, args| {
        let t = args.check_table(1)?;
        let f = args.check_function(2)?;
        let out = lua.create_table()?;
        for (i, v) in t.sequence_values::<mlua::Value>().enumerate() {
            let mapped: mlua::Value = f.call(v?)?;
            out.raw_set(i + 1, mapped)?;
        }
        Ok(out)
    })?;

    let counter = m
        .class::<Counter>("Counter")?
        .native_method("add", counter_add)?
        .native_method("get", counter_get)?
        .metamethod("__tostring", |_, this, _| {
            Ok(format!("Counter({})", this.value))
        })?
        .build();

    // counter([start]) -> a Counter object: { [0] = <native> } with methods.
    m.function("counter", move |lua, args| {
        let start = args.opt_integer(1, 0)?;
        counter.wrap(lua, Counter { value: start })
    })?;

    Ok(())
});
