//! The error type of module bodies, and how each kind reaches Lua.

use std::fmt;

/// The result type of module bodies.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error raised to Lua as a plain string, worded as Lua's own C library
/// words it.
///
/// The position prefix and the function name are added by Lua's auxiliary
/// library at the moment the error is raised (see the crate docs), so a body
/// only says *what* went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `bad argument #<arg> to '<f>' (<expected> expected, got <type>)`,
    /// as `luaL_typeerror`/`luaL_check*` raise it. `<type>` is computed by
    /// Lua from the actual argument (its `__name`, "no value", ...).
    Type { arg: usize, expected: String },
    /// `bad argument #<arg> to '<f>' (<message>)`, as `luaL_argerror`.
    Arg { arg: usize, message: String },
    /// `<chunk>:<line>: <message>` with the calling Lua code's position, as
    /// `luaL_error` (and `error(msg)` in Lua) produce.
    Runtime(String),
    /// The message exactly as given, like `error(msg, 0)`. Errors coming back
    /// from Lua code a body called are re-raised this way, unchanged.
    Message(String),
}

impl Error {
    /// A `luaL_error`-style error: the caller's position is prepended.
    pub fn runtime(message: impl Into<String>) -> Error {
        Error::Runtime(message.into())
    }

    /// An error raised verbatim, without position.
    pub fn message(message: impl Into<String>) -> Error {
        Error::Message(message.into())
    }

    /// `bad argument #arg to 'f' (message)`.
    pub fn arg(arg: usize, message: impl Into<String>) -> Error {
        Error::Arg {
            arg,
            message: message.into(),
        }
    }

    /// `bad argument #arg to 'f' (expected expected, got <actual type>)`.
    pub fn type_error(arg: usize, expected: impl Into<String>) -> Error {
        Error::Type {
            arg,
            expected: expected.into(),
        }
    }

    /// The error a panic in a body becomes: `panic in native function: <message>`
    /// with the caller's position.
    pub(crate) fn from_panic(payload: &(dyn std::any::Any + Send)) -> Error {
        let text = if let Some(s) = payload.downcast_ref::<&str>() {
            s
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s
        } else {
            "(no message)"
        };
        Error::Runtime(format!("panic in native function: {text}"))
    }
}

impl fmt::Display for Error {
    /// For Rust-side logs; the text Lua sees is built by lauxlib.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Type { arg, expected } => write!(f, "bad argument #{arg} ({expected} expected)"),
            Error::Arg { arg, message } => write!(f, "bad argument #{arg} ({message})"),
            Error::Runtime(m) | Error::Message(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// mlua appends "\nstack traceback:\n..." to errors of Lua code called from
/// Rust; the error Lua code raised is what comes before it.
fn strip_traceback(message: &str) -> &str {
    match message.rfind("\nstack traceback:\n") {
        Some(cut) => &message[..cut],
        None => message,
    }
}

impl From<mlua::Error> for Error {
    /// Lets bodies use `?` on mlua calls. An error raised by Lua code the body
    /// called (a callback, `Function::call`) is passed on unchanged, as a C
    /// function that lets `lua_call` propagate would; mlua's own failures
    /// (conversions, borrows) get the caller's position like `luaL_error`.
    fn from(err: mlua::Error) -> Error {
        match err {
            mlua::Error::CallbackError { cause, .. } => Error::from((*cause).clone()),
            mlua::Error::RuntimeError(m) => Error::Message(strip_traceback(&m).to_owned()),
            mlua::Error::MemoryError(m) => Error::Message(m),
            mlua::Error::ExternalError(e) => match e.downcast_ref::<Error>() {
                Some(ours) => ours.clone(),
                None => Error::Runtime(e.to_string()),
            },
            other => Error::Runtime(other.to_string()),
        }
    }
}

impl From<Error> for mlua::Error {
    /// For using the argument helpers inside plain mlua functions. mlua then
    /// raises its own error userdata; only functions made by this crate raise
    /// the standard strings.
    fn from(err: Error) -> mlua::Error {
        mlua::Error::external(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceback_is_cut_at_the_last_marker() {
        assert_eq!(
            strip_traceback("x.lua:1: boom\nstack traceback:\n\t[C]: in ?"),
            "x.lua:1: boom"
        );
        assert_eq!(strip_traceback("plain"), "plain");
    }

    #[test]
    // mlua's CallbackError holds its cause in an Arc by definition.
    #[allow(clippy::arc_with_non_send_sync)]
    fn round_trip_through_mlua_keeps_the_kind() {
        let e = Error::arg(2, "out of range");
        let back = Error::from(mlua::Error::from(e.clone()));
        assert_eq!(back, e);
        let wrapped = mlua::Error::CallbackError {
            traceback: String::new(),
            cause: std::sync::Arc::new(mlua::Error::RuntimeError(
                "f.lua:2: oops\nstack traceback:\n\tf.lua:2: in main chunk".into(),
            )),
        };
        assert_eq!(Error::from(wrapped), Error::message("f.lua:2: oops"));
    }
}
