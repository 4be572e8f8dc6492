//! `luahost run FILE [ARGS...]`: runs a script the way the stock `lua`
//! interpreter (lua.c) does, so that scripts, their error messages and their
//! exit statuses behave the same in both.
//!
//! What lua.c does and this mirrors: all standard libraries open; the global
//! `arg` table (script at 0, interpreter words at negative indices, script
//! arguments from 1) and the same arguments as `...`; LUA_INIT_5_4 / LUA_INIT;
//! the generational GC mode; a message handler that adds a traceback (or uses
//! an error object's `__tostring`); "PROG: message" on stderr and status 1 on
//! error. The search paths and LUA_PATH/LUA_CPATH handling come from the Lua
//! library itself (see ffi/build.rs).

use std::path::Path;
use std::process::ExitCode;

/// The driver runs in Lua so that error handling is exactly Lua's own
/// (loadfile messages, debug.traceback). It returns nil on success or the
/// message to report.
const DRIVER: &str = r#"
local script, args, argv, script_index = ...

-- lua.c runs scripts with the generational collector.
collectgarbage("generational")

local function handler(msg)
  if type(msg) ~= "string" then
    local mt = debug.getmetatable(msg)
    if mt and mt.__tostring then
      local s = tostring(msg)
      if type(s) == "string" then return s end
    end
    msg = string.format("(error object is a %s value)", type(msg))
  end
  -- Cut the driver's own frames so the traceback ends where lua.c's does.
  local tb = debug.traceback(msg, 2)
  local cut = tb:find("\n\t%[C%]: in function 'xpcall'")
  if cut then tb = tb:sub(1, cut - 1) .. "\n\t[C]: in ?" end
  return tb
end

local function dochunk(chunk, err, ...)
  if not chunk then return err end
  local ok, msg = xpcall(chunk, handler, ...)
  if not ok then return msg end
end

local init_name, init = "LUA_INIT_5_4", os.getenv("LUA_INIT_5_4")
if not init then init_name, init = "LUA_INIT", os.getenv("LUA_INIT") end
if init then
  local err
  if init:sub(1, 1) == "@" then
    local chunk, lerr = loadfile(init:sub(2))
    err = dochunk(chunk, lerr)
  else
    local chunk, lerr = load(init, "=" .. init_name)
    err = dochunk(chunk, lerr)
  end
  if err then return err end
end

local t = {}
for i = 1, #argv do t[i - 1 - script_index] = argv[i] end
_G.arg = t

local path = script
if script == "-" then path = nil end
local chunk, err = loadfile(path)
return dochunk(chunk, err, table.unpack(args, 1, args.n))
"#;

pub fn run(script: &Path, args: &[String]) -> ExitCode {
    match run_inner(script, args) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(message)) => {
            eprintln!("luahost: {message}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("luahost: {e}");
            ExitCode::from(1)
        }
    }
}

/// Returns the error message to report, if the script failed.
fn run_inner(script: &Path, args: &[String]) -> mlua::Result<Option<String>> {
    // SAFETY: `unsafe_new` opens the debug library and allows C modules, which
    // is what a stock interpreter does; the script is the user's own program.
    let lua = unsafe { mlua::Lua::unsafe_new() };

    let script_str = script.to_string_lossy().into_owned();
    let script_args = lua.create_sequence_from(args.iter().map(String::as_str))?;
    script_args.set("n", args.len())?;
    // The words of the command line as lua.c sees its argv: interpreter words,
    // then the script, then its arguments.
    let mut argv: Vec<String> = std::env::args().collect();
    let script_index = argv.len() - args.len() - 1;
    argv.truncate(script_index);
    argv.push(script_str.clone());
    argv.extend(args.iter().cloned());
    let argv = lua.create_sequence_from(argv)?;

    let driver = lua.load(DRIVER).set_name("=luahost").into_function()?;
    driver.call::<Option<String>>((script_str, script_args, argv, script_index))
}
