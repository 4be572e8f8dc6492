//! `tune.lua.bytecode refuse|allow`: binary chunks at runtime.
//!
//! Lua trusts binary chunks (precompiled bytecode): a crafted one can crash
//! the process. At runtime (once start-up is over) only text chunks load by
//! default: `load` (string or reader function), `loadfile`, `dofile` and
//! `require` of a Lua file refuse a binary chunk with an error that names
//! the setting. While the lua-load files run their bodies and the init
//! functions, binary chunks load, so a precompiled lua-load file (or one it
//! requires) remains a deploy choice.
//!
//! The stock functions are kept only inside Rust closures (never in a place a
//! script can reach, such as an upvalue of a Lua function or the registry):
//! the check can't be bypassed from Lua.

use crate::lua::state::{Phase, StateInfo};
use mlua::{Function, Lua, MultiValue, Table, Value, Variadic};
use std::rc::Rc;

/// The refusal, as `load` returns it and `dofile`/`require` raise it.
pub const REFUSED: &str = "attempt to load a binary chunk at runtime \
    (refused by tune.lua.bytecode; 'tune.lua.bytecode allow' permits it)";

/// Lua's own message when a chunk does not match the mode.
const MODE_MISMATCH_BINARY: &str = "attempt to load a binary chunk";

/// Whether binary chunks are refused right now.
fn refused(info: &StateInfo) -> bool {
    info.phase.get() == Phase::Runtime && !info.settings.bytecode_allowed
}

/// `mode` without binary: the mode to load with while refusing.
fn text_only(mode: &Value) -> mlua::Result<String> {
    let given = match mode {
        Value::Nil => "bt".to_string(),
        Value::String(s) => s.to_str()?.to_string(),
        other => {
            return Err(mlua::Error::runtime(format!(
                "bad argument #3 to 'load' (string expected, got {})",
                other.type_name()
            )))
        }
    };
    Ok(given.replace('b', ""))
}

/// Rewrites Lua's mode-mismatch message for a binary chunk into ours.
fn explain(results: MultiValue, lua: &Lua) -> mlua::Result<MultiValue> {
    let mut v = results.into_vec();
    if let (Some(Value::Nil), Some(Value::String(msg))) = (v.first(), v.get(1)) {
        if msg.to_str()?.starts_with(MODE_MISMATCH_BINARY) {
            v[1] = Value::String(lua.create_string(REFUSED)?);
        }
    }
    Ok(MultiValue::from_vec(v))
}

/// Wraps `load`, `loadfile`, `dofile` and the Lua-file searcher of `lua`.
pub fn install(lua: &Lua, info: &Rc<StateInfo>) -> mlua::Result<()> {
    let globals = lua.globals();
    let raw_load: Function = globals.get("load")?;
    let raw_loadfile: Function = globals.get("loadfile")?;

    // load(chunk [, chunkname [, mode [, env]]]): env's presence matters
    // (an explicit nil env is an empty environment), so the arguments are
    // passed on as they came, only the mode narrowed.
    let i = info.clone();
    let load = lua.create_function(move |lua, args: Variadic<Value>| {
        if !refused(&i) {
            return raw_load.call::<MultiValue>(MultiValue::from_iter(args));
        }
        let mut args: Vec<Value> = args.into_iter().collect();
        args.resize(args.len().max(3), Value::Nil);
        args[2] = Value::String(lua.create_string(text_only(&args[2])?)?);
        explain(
            raw_load.call::<MultiValue>(MultiValue::from_vec(args))?,
            lua,
        )
    })?;
    globals.set("load", load)?;

    // loadfile([filename [, mode [, env]]]).
    let i = info.clone();
    let loadfile = lua.create_function(move |lua, args: Variadic<Value>| {
        if !refused(&i) {
            return raw_loadfile.call::<MultiValue>(MultiValue::from_iter(args));
        }
        let mut args: Vec<Value> = args.into_iter().collect();
        args.resize(args.len().max(2), Value::Nil);
        args[1] = Value::String(lua.create_string(text_only(&args[1])?)?);
        explain(
            raw_loadfile.call::<MultiValue>(MultiValue::from_vec(args))?,
            lua,
        )
    })?;
    globals.set("loadfile", loadfile.clone())?;

    // dofile([filename]): loadfile, then a call that may yield (a Lua
    // function, as the stock dofile continues across yields).
    let dofile: Function = lua
        .load(
            r#"
local loadfile, error = ...
return function(filename)
  local f, err = loadfile(filename)
  if not f then error(err, 0) end
  return f()
end
"#,
        )
        .set_name("=luahost-dofile")
        .call((loadfile.clone(), globals.get::<Function>("error")?))?;
    globals.set("dofile", dofile)?;

    // require's Lua-file searcher (package.searchers[2]).
    let package: Table = globals.get("package")?;
    let searchers: Table = package.get("searchers")?;
    let raw_searcher: Function = searchers.get(2)?;
    let searchpath: Function = package.get("searchpath")?;
    let i = info.clone();
    let pkg = package.clone();
    let searcher = lua.create_function(move |_, name: mlua::LuaString| {
        if !refused(&i) {
            return raw_searcher.call::<MultiValue>(name);
        }
        let path: Value = pkg.get("path")?;
        let found: (Value, Value) = searchpath.call((name.clone(), path))?;
        let filename = match found {
            (Value::String(f), _) => f,
            // Not found: the "no file ..." list for require's message.
            (_, not_found) => return Ok(MultiValue::from_vec(vec![not_found])),
        };
        let loaded = loadfile.call::<MultiValue>((filename.clone(), "t"))?;
        match loaded.into_vec().as_slice() {
            [Value::Function(f), ..] => Ok(MultiValue::from_vec(vec![
                Value::Function(f.clone()),
                Value::String(filename),
            ])),
            [_, msg, ..] => Err(mlua::Error::runtime(format!(
                "error loading module '{}' from file '{}':\n\t{}",
                name.to_string_lossy(),
                filename.to_string_lossy(),
                match msg {
                    Value::String(s) => s.to_string_lossy(),
                    other => format!("{other:?}"),
                }
            ))),
            _ => Err(mlua::Error::runtime("loadfile returned nothing")),
        }
    })?;
    searchers.set(2, searcher)?;
    Ok(())
}
