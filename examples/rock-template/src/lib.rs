//! `my_module`: a Lua 5.4 native module written with the luahost-modules
//! toolkit, packaged for LuaRocks (`luarocks make`, see README.md).
//!
//! ```lua
//! local m = require "my_module"
//! print(m.greet("world"))   --> hello from my_module, world!
//! print(m.version)          --> 0.1.0
//! ```

use luahost_modules::module;

// The name here must be the file's name without ".so" (the lib name in
// Cargo.toml, the module name in the rockspec): require "my_module" calls
// luaopen_my_module, which this defines.
module!(my_module, |m| {
    m.set("version", env!("CARGO_PKG_VERSION"))?;

    // greet(name) -> "hello from my_module, <name>!"; the argument is checked
    // as luaL_checkstring checks it (strings and numbers).
    m.function("greet", |_, args| {
        let who = args.check_str(1)?;
        Ok(format!("hello from my_module, {who}!"))
    })?;

    Ok(())
});
