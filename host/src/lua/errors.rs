//! Turning mlua errors into the plain messages HAProxy prints, and the
//! signal behind `core.done()`.

use std::fmt;

/// Raised by `core.done()` / `txn:done()`: ends the current context without
/// an error. Like HAProxy's, it travels as a Lua error (a pcall around
/// `core.done()` catches it).
#[derive(Debug)]
pub struct DoneSignal;

impl fmt::Display for DoneSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("done")
    }
}

impl std::error::Error for DoneSignal {}

pub fn done_error() -> mlua::Error {
    mlua::Error::external(DoneSignal)
}

/// Whether `e` is (or wraps) the `core.done()` signal.
pub fn is_done(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::CallbackError { cause, .. } => is_done(cause),
        mlua::Error::WithContext { cause, .. } => is_done(cause),
        mlua::Error::ExternalError(inner) => inner.downcast_ref::<DoneSignal>().is_some(),
        _ => false,
    }
}

/// The message of a Lua error as Lua would print it: "file:line: text",
/// without mlua's "runtime error:" prefix or its tracebacks.
///
/// An error raised by one of the host's functions gets the location of the
/// Lua code that called it, as `luaL_error` adds it in C (and nothing when
/// the caller is a C function such as `pcall`).
pub fn message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(s) => first_part(s),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::MemoryError(_) => "not enough memory".to_string(),
        mlua::Error::CallbackError { cause, traceback } => {
            let inner = message(cause);
            match caller_location(traceback) {
                Some(loc)
                    if !has_location(&inner) && !matches!(**cause, mlua::Error::MemoryError(_)) =>
                {
                    format!("{loc} {inner}")
                }
                _ => inner,
            }
        }
        mlua::Error::WithContext { cause, .. } => message(cause),
        mlua::Error::ExternalError(inner) => inner.to_string(),
        other => first_part(&other.to_string()),
    }
}

/// "src:line:" of the function that called the failing host function: the
/// first frame of mlua's traceback after the host function itself.
fn caller_location(traceback: &str) -> Option<String> {
    let mut frames = traceback
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "stack traceback:");
    let mut first = frames.next()?;
    if first == "[C]: in ?" {
        // The host function itself.
        first = frames.next()?;
    }
    if first.starts_with("[C]") || first.starts_with("(...tail calls") {
        return None;
    }
    let (src, rest) = first.split_once(':')?;
    let (line, _) = rest.split_once(':')?;
    line.parse::<u32>().ok()?;
    Some(format!("{src}:{line}:"))
}

/// Whether a message already starts with "something:123:".
fn has_location(msg: &str) -> bool {
    let mut parts = msg.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(src), Some(line), Some(_)) => {
            !src.is_empty() && !src.contains(' ') && line.parse::<u32>().is_ok()
        }
        _ => false,
    }
}

/// Makes errors raised by host functions plain strings where Lua code can
/// see them (pcall, xpcall handlers, coroutine.resume), as HAProxy's are.
/// mlua raises a Rust function's error as a userdata; the conversion
/// function receives it as `Value::Error` and returns the message.
///
/// `coroutine.resume` is not wrapped here: coroutines.rs replaces it with a
/// function that normalizes its errors with [`to_message_function`] in the
/// same Lua frame that passes luahost's waits through (one layer per resume
/// instead of two).
pub fn install_normalizer(lua: &mlua::Lua) -> mlua::Result<()> {
    let to_message = to_message_function(lua)?;
    lua.load(NORMALIZER)
        .set_name("=luahost-errors")
        .call::<()>(to_message)
}

/// A Lua function turning an mlua error value into its message (other
/// values are returned as they are).
pub fn to_message_function(lua: &mlua::Lua) -> mlua::Result<mlua::Function> {
    lua.create_function(|lua, v: mlua::Value| match v {
        mlua::Value::Error(e) => Ok(mlua::Value::String(lua.create_string(message(&e))?)),
        other => Ok(other),
    })
}

const NORMALIZER: &str = r#"
local to_message = ...
local raw_pcall, raw_xpcall = pcall, xpcall
local type, select = type, select
local function fix(ok, ...)
  if ok then return ok, ... end
  local e = ...
  if type(e) == "userdata" then e = to_message(e) end
  return false, e, select(2, ...)
end
pcall = function(f, ...) return fix(raw_pcall(f, ...)) end
xpcall = function(f, handler, ...)
  return raw_xpcall(f, function(e)
    if type(e) == "userdata" then e = to_message(e) end
    return handler(e)
  end, ...)
end
"#;

/// Drops a trailing "stack traceback:" section.
fn first_part(s: &str) -> String {
    match s.find("\nstack traceback:") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

#[cfg(test)]
// mlua's CallbackError holds its cause in an Arc of a non-Send error type.
#[allow(clippy::arc_with_non_send_sync)]
mod tests {
    use super::*;

    #[test]
    fn done_is_recognised_through_wrappers() {
        let e = mlua::Error::CallbackError {
            traceback: String::new(),
            cause: std::sync::Arc::new(done_error()),
        };
        assert!(is_done(&e));
        assert!(!is_done(&mlua::Error::runtime("x")));
    }

    #[test]
    fn messages_lose_decorations() {
        let e = mlua::Error::RuntimeError("a.lua:3: boom\nstack traceback:\n\t[C]: in ?".into());
        assert_eq!(message(&e), "a.lua:3: boom");
        let wrapped = mlua::Error::CallbackError {
            traceback: "tb".into(),
            cause: std::sync::Arc::new(mlua::Error::runtime("bad argument")),
        };
        assert_eq!(message(&wrapped), "bad argument");
    }

    #[test]
    fn host_errors_get_the_caller_location() {
        let from_lua = mlua::Error::CallbackError {
            traceback: "stack traceback:\n\t[C]: in ?\n\tsvc.lua:22: in function <svc.lua:4>"
                .into(),
            cause: std::sync::Arc::new(mlua::Error::runtime("register_service: not available")),
        };
        assert_eq!(
            message(&from_lua),
            "svc.lua:22: register_service: not available"
        );
        let from_pcall = mlua::Error::CallbackError {
            traceback:
                "stack traceback:\n\t[C]: in ?\n\t[C]: in function 'pcall'\n\tsvc.lua:22: in f"
                    .into(),
            cause: std::sync::Arc::new(mlua::Error::runtime("register_service: not available")),
        };
        assert_eq!(message(&from_pcall), "register_service: not available");
        let nested = mlua::Error::CallbackError {
            traceback: "stack traceback:\n\t[C]: in ?\n\tsvc.lua:22: in f".into(),
            cause: std::sync::Arc::new(mlua::Error::runtime("other.lua:3: boom")),
        };
        assert_eq!(message(&nested), "other.lua:3: boom");
    }
}
