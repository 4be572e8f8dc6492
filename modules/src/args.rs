//! Argument access with the checks of Lua's auxiliary library.
//!
//! Each `check_*`/`opt_*` accepts what the `luaL_check*`/`luaL_opt*` function
//! of the same name accepts (numbers convert to strings, numeric strings to
//! numbers, floats with an exact integer value to integers) and fails with
//! the same [`Error`] kind, so the message Lua shows is the stock one.

use mlua::{FromLua, Function, Integer, Lua, LuaString, MultiValue, Number, Table, Value};

use crate::error::{Error, Result};
use crate::module::{Class, NotBorrowed};
use crate::object::ObjectMut;

/// The arguments of a call, numbered from 1 as in the Lua C API.
///
/// For a method called as `obj:m(x)`, the object is argument 1 and `x` is
/// argument 2; Lua's error messages then renumber them the way they do for C
/// methods ("bad argument #1 to 'm'" for `x`, "calling 'm' on bad self").
pub struct Args {
    lua: Lua,
    values: Vec<Value>,
}

impl Args {
    pub(crate) fn new(lua: &Lua, values: MultiValue) -> Args {
        Args {
            lua: lua.clone(),
            values: values.into_vec(),
        }
    }

    /// The Lua state the call runs in.
    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    /// Number of arguments passed (`lua_gettop`).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the function was called without arguments.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// All arguments, in order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Takes the arguments out.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }

    /// Argument `n` (1-based); nil when it was not passed.
    pub fn get(&self, n: usize) -> Value {
        self.slot(n).cloned().unwrap_or(Value::Nil)
    }

    fn slot(&self, n: usize) -> Option<&Value> {
        n.checked_sub(1).and_then(|i| self.values.get(i))
    }

    /// True when argument `n` was not passed at all (`lua_isnone`).
    pub fn is_none(&self, n: usize) -> bool {
        self.slot(n).is_none()
    }

    /// True when argument `n` is absent or nil (`lua_isnoneornil`): the
    /// condition under which the `opt_*` helpers return their default.
    pub fn is_none_or_nil(&self, n: usize) -> bool {
        matches!(self.slot(n), None | Some(Value::Nil))
    }

    /// Any value, including nil, but it must be present (`luaL_checkany`:
    /// "value expected").
    pub fn check_any(&self, n: usize) -> Result<Value> {
        self.slot(n)
            .cloned()
            .ok_or_else(|| Error::arg(n, "value expected"))
    }

    /// A string or a number converted to one (`luaL_checklstring`). The bytes
    /// need not be UTF-8.
    pub fn check_string(&self, n: usize) -> Result<LuaString> {
        match self.slot(n) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v @ (Value::Integer(_) | Value::Number(_))) => self
                .lua
                .coerce_string(v.clone())?
                .ok_or_else(|| Error::type_error(n, "string")),
            _ => Err(Error::type_error(n, "string")),
        }
    }

    /// Like [`Args::check_string`], as an owned Rust `String`; bytes that are
    /// not UTF-8 are rejected with "bad argument #n to 'f' (invalid UTF-8
    /// string)".
    pub fn check_str(&self, n: usize) -> Result<String> {
        let s = self.check_string(n)?;
        let text = s
            .to_str()
            .map_err(|_| Error::arg(n, "invalid UTF-8 string"))?
            .to_owned();
        Ok(text)
    }

    /// The raw bytes of a string argument (numbers converted).
    pub fn check_bytes(&self, n: usize) -> Result<Vec<u8>> {
        Ok(self.check_string(n)?.as_bytes().to_vec())
    }

    /// An integer (`luaL_checkinteger`): integers, floats with an exact
    /// integer value and strings that convert to one. A float like 1.5 gives
    /// "number has no integer representation"; a non-number gives "number
    /// expected, got <type>".
    pub fn check_integer(&self, n: usize) -> Result<Integer> {
        match self.slot(n) {
            Some(Value::Integer(i)) => Ok(*i),
            Some(v @ (Value::Number(_) | Value::String(_))) => {
                if let Some(i) = self.lua.coerce_integer(v.clone())? {
                    Ok(i)
                } else if self.lua.coerce_number(v.clone())?.is_some() {
                    Err(Error::arg(n, "number has no integer representation"))
                } else {
                    Err(Error::type_error(n, "number"))
                }
            }
            _ => Err(Error::type_error(n, "number")),
        }
    }

    /// A number (`luaL_checknumber`): numbers and numeric strings.
    pub fn check_number(&self, n: usize) -> Result<Number> {
        match self.slot(n) {
            Some(Value::Number(x)) => Ok(*x),
            Some(Value::Integer(i)) => Ok(*i as Number),
            Some(v @ Value::String(_)) => self
                .lua
                .coerce_number(v.clone())?
                .ok_or_else(|| Error::type_error(n, "number")),
            _ => Err(Error::type_error(n, "number")),
        }
    }

    /// A table (`luaL_checktype(L, n, LUA_TTABLE)`).
    pub fn check_table(&self, n: usize) -> Result<Table> {
        match self.slot(n) {
            Some(Value::Table(t)) => Ok(t.clone()),
            _ => Err(Error::type_error(n, "table")),
        }
    }

    /// A function (`luaL_checktype(L, n, LUA_TFUNCTION)`).
    pub fn check_function(&self, n: usize) -> Result<Function> {
        match self.slot(n) {
            Some(Value::Function(f)) => Ok(f.clone()),
            _ => Err(Error::type_error(n, "function")),
        }
    }

    /// The truth value of argument `n` (`lua_toboolean`): only nil, false and
    /// absent are false. Like the C API, this never fails.
    pub fn to_boolean(&self, n: usize) -> bool {
        !matches!(
            self.slot(n),
            None | Some(Value::Nil) | Some(Value::Boolean(false))
        )
    }

    /// One of `options` (`luaL_checkoption`); returns its index. With a
    /// default, an absent or nil argument selects the default.
    pub fn check_option(&self, n: usize, default: Option<&str>, options: &[&str]) -> Result<usize> {
        let name = match default {
            Some(d) if self.is_none_or_nil(n) => d.to_owned(),
            _ => {
                let s = self.check_string(n)?;
                s.to_string_lossy()
            }
        };
        options
            .iter()
            .position(|o| *o == name)
            .ok_or_else(|| Error::arg(n, format!("invalid option '{name}'")))
    }

    /// [`Args::check_string`], or `None` when the argument is absent or nil.
    pub fn opt_string(&self, n: usize) -> Result<Option<LuaString>> {
        if self.is_none_or_nil(n) {
            Ok(None)
        } else {
            self.check_string(n).map(Some)
        }
    }

    /// [`Args::check_str`], or `default` when absent or nil.
    pub fn opt_str(&self, n: usize, default: &str) -> Result<String> {
        if self.is_none_or_nil(n) {
            Ok(default.to_owned())
        } else {
            self.check_str(n)
        }
    }

    /// [`Args::check_integer`], or `default` when absent or nil
    /// (`luaL_optinteger`).
    pub fn opt_integer(&self, n: usize, default: Integer) -> Result<Integer> {
        if self.is_none_or_nil(n) {
            Ok(default)
        } else {
            self.check_integer(n)
        }
    }

    /// [`Args::check_number`], or `default` when absent or nil
    /// (`luaL_optnumber`).
    pub fn opt_number(&self, n: usize, default: Number) -> Result<Number> {
        if self.is_none_or_nil(n) {
            Ok(default)
        } else {
            self.check_number(n)
        }
    }

    /// Any type mlua can convert to. A failed conversion is reported as
    /// "bad argument #n to 'f' (<mlua's conversion message>)"; prefer the
    /// `check_*` helpers where a stock wording exists.
    pub fn arg<T: FromLua>(&self, n: usize) -> Result<T> {
        T::from_lua(self.get(n), &self.lua).map_err(|e| match e {
            mlua::Error::FromLuaConversionError { from, to, message } => {
                let mut text = format!("{to} expected, got {from}");
                if let Some(m) = message {
                    text.push_str(": ");
                    text.push_str(&m);
                }
                Error::arg(n, text)
            }
            other => Error::from(other),
        })
    }

    /// The native object of a class instance (see [`Class`]): argument `n`
    /// must be a table whose metatable is the class's and whose `[0]` holds
    /// the object; otherwise "bad argument #n to 'f' (<Class> expected, got
    /// <type>)". The object stays mutably borrowed while the returned guard
    /// lives; a second borrow (the same object passed twice, or a re-entrant
    /// call) fails with an error instead of aliasing.
    pub fn check_object<T: 'static>(&self, n: usize, class: &Class<T>) -> Result<ObjectMut<T>> {
        match self.slot(n) {
            Some(Value::Table(t)) => class.borrow_mut(&self.lua, t).map_err(|why| match why {
                NotBorrowed::NotInstance => Error::type_error(n, class.name()),
                NotBorrowed::NoNativeValue => Error::arg(
                    n,
                    format!(
                        "{0} expected, got {0} without its native value at [0]",
                        class.name()
                    ),
                ),
                NotBorrowed::Failed(e) => e,
            }),
            _ => Err(Error::type_error(n, class.name())),
        }
    }
}
