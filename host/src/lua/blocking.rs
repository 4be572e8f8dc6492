//! `tune.lua.blocking-calls warn|deny|allow` (a luahost extension).
//!
//! A worker runs many Lua contexts on one event loop; a call that blocks the
//! OS thread (file or process I/O, print, loading a module from disk) stalls
//! every one of them. The body and init functions may block freely (nothing is
//! being served yet). At runtime, each such call first asks [`check`], which
//! logs a warning once per call site, or raises an error in `deny` mode.

use crate::lua::state::{Phase, StateInfo};
use mlua::Lua;
use std::rc::Rc;

/// What to do with a blocking call at runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlockingMode {
    #[default]
    Warn,
    Deny,
    Allow,
}

/// Wraps the blocking functions of the standard library with a call to the
/// check function (passed as the chunk's argument).
const GUARD: &str = r#"
local check = ...
local function wrap(tbl, prefix, name)
  local f = tbl and rawget(tbl, name)
  if type(f) ~= "function" then return end
  local what = prefix .. name
  rawset(tbl, name, function(...) check(what) return f(...) end)
end
for _, n in ipairs{"close", "input", "lines", "open", "output", "popen", "read", "tmpfile", "write"} do
  wrap(io, "io.", n)
end
for _, n in ipairs{"execute", "remove", "rename", "tmpname", "exit"} do
  wrap(os, "os.", n)
end
local file_meta = debug.getregistry()["FILE*"]
if file_meta and type(file_meta.__index) == "table" then
  for _, n in ipairs{"close", "flush", "lines", "read", "seek", "setvbuf", "write"} do
    wrap(file_meta.__index, "file:", n)
  end
end
wrap(_G, "", "print")
local loaded, plain_require = package.loaded, require
_G.require = function(name, ...)
  if loaded[name] == nil then check("require") end
  return plain_require(name, ...)
end
"#;

/// Installs the guard in `lua`.
pub fn install(lua: &Lua, info: &Rc<StateInfo>) -> mlua::Result<()> {
    let info = info.clone();
    let check = lua.create_function(move |lua, what: String| check(lua, &info, &what))?;
    lua.load(GUARD).set_name("=luahost-guard").call::<()>(check)
}

fn check(lua: &Lua, info: &StateInfo, what: &str) -> mlua::Result<()> {
    if info.phase.get() != Phase::Runtime || info.settings.blocking == BlockingMode::Allow {
        return Ok(());
    }
    // Level 0 is this function, 1 the wrapper; the call site is the first
    // Lua function above (skipping C functions such as pcall).
    let site = (2..12)
        .map_while(|level| {
            lua.inspect_stack(level, |d| {
                let line = d.current_line()?;
                let src = d.source().short_src?.into_owned();
                Some(format!("{src}:{line}"))
            })
        })
        .flatten()
        .next()
        .unwrap_or_else(|| "?".to_string());
    match info.settings.blocking {
        BlockingMode::Deny => Err(mlua::Error::runtime(format!(
            "{site}: blocking call to '{what}' refused at runtime (tune.lua.blocking-calls deny)"
        ))),
        _ => {
            if info.blocking_sites.borrow_mut().insert(site.clone()) {
                crate::log::warning(&format!(
                    "Lua: blocking call to '{what}' at {site} stalls the worker thread at runtime \
                     (logged once per call site; see tune.lua.blocking-calls)"
                ));
            }
            Ok(())
        }
    }
}
