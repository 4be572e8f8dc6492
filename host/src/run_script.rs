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

use mlua::ffi;
use std::os::raw::c_int;
use std::path::Path;
use std::process::ExitCode;

/// The driver runs in Lua so that loading and its messages are exactly
/// Lua's own; the message handler is lua.c's, in C ([`msghandler`]). It
/// returns nil on success or the message to report.
const DRIVER: &str = r#"
local script, args, argv, script_index, handler = ...
-- Kept before any script code runs: a script may remove or replace them.
local xpcall, load, loadfile, getenv, unpack = xpcall, load, loadfile, os.getenv, table.unpack

-- lua.c runs scripts with the generational collector.
collectgarbage("generational")

local function dochunk(chunk, err, ...)
  if not chunk then return err end
  local ok, msg = xpcall(chunk, handler, ...)
  if not ok then return msg end
end

local init_name, init = "LUA_INIT_5_4", getenv("LUA_INIT_5_4")
if not init then init_name, init = "LUA_INIT", getenv("LUA_INIT") end
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
return dochunk(chunk, err, unpack(args, 1, args.n))
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

    // SAFETY: msghandler follows the Lua C API contract (see its comment).
    let handler = unsafe { lua.create_c_function(msghandler)? };
    let driver = lua.load(DRIVER).set_name(DRIVER_CHUNK).into_function()?;
    driver.call::<Option<String>>((script_str, script_args, argv, script_index, handler))
}

/// The driver's chunk name: its frames, at the bottom of every traceback,
/// are cut there (lua.c's traceback ends in its own C frame, `[C]: in ?`).
const DRIVER_CHUNK: &str = "=luahost-run-driver";

/// lua.c's message handler: a string (or number) message gets a traceback
/// from the level that raised; another value its `__tostring` result, else
/// "(error object is a T value)" with a traceback. Written in C as lua.c's
/// is, so that it works whatever the script did to `debug`, `string` or
/// `tostring` (a Lua handler calling `debug.traceback` fails once a script
/// sets `debug = nil`, and Lua then reports "error in error handling").
///
/// It may raise (out of memory) through its own frame only: it holds no Rust
/// value with a destructor across a Lua API call.
unsafe extern "C-unwind" fn msghandler(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: Lua calls the handler with the error object at index 1.
    unsafe {
        let mut msg = ffi::lua_tolstring(l, 1, std::ptr::null_mut());
        if msg.is_null() {
            if ffi::luaL_callmeta(l, 1, c"__tostring".as_ptr()) != 0
                && ffi::lua_type(l, -1) == ffi::LUA_TSTRING
            {
                return 1;
            }
            msg = ffi::lua_pushfstring(
                l,
                c"(error object is a %s value)".as_ptr(),
                ffi::luaL_typename(l, 1),
            );
        }
        ffi::luaL_traceback(l, l, msg, 1);
        cut_driver_frames(l);
    }
    1
}

/// Replaces the traceback on top of the stack by the same text without the
/// driver's frames (and the C frame that called into the script), ending
/// as lua.c's does.
///
/// # Safety
/// The top of `l`'s stack must be a string.
unsafe fn cut_driver_frames(l: *mut ffi::lua_State) {
    let marker = format!("\n\t{}:", &DRIVER_CHUNK[1..]);
    let mut len = 0usize;
    // SAFETY: the top is a string; its bytes stay valid while it is on the
    // stack, which it is until this function returns.
    let cut = unsafe {
        let p = ffi::lua_tolstring(l, -1, &mut len);
        if p.is_null() {
            return;
        }
        let text = std::slice::from_raw_parts(p.cast::<u8>(), len);
        let Some(driver) = find(text, marker.as_bytes()) else {
            return;
        };
        // The line before the driver's first frame is the C function that
        // called the script (xpcall).
        match text[..driver].windows(2).rposition(|w| w == b"\n\t") {
            Some(caller) => caller,
            None => return,
        }
    };
    drop(marker);
    // SAFETY: as above; lua_pushlstring copies the bytes before any
    // collection could free the source, which stays on the stack anyway.
    unsafe {
        let p = ffi::lua_tolstring(l, -1, std::ptr::null_mut());
        ffi::lua_pushlstring(l, p, cut);
        ffi::lua_pushstring(l, c"\n\t[C]: in ?".as_ptr());
        ffi::lua_concat(l, 2);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
