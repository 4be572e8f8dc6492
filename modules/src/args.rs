//! Argument access with the checks of Lua's auxiliary library.
//!
//! Each `check_*`/`opt_*` accepts what the `luaL_check*`/`luaL_opt*` function
//! of the same name accepts (numbers convert to strings, numeric strings to
//! numbers, floats with an exact integer value to integers) and fails with
//! the same [`Error`] kind, so the message Lua shows is the stock one.
//!
//! # Reading the arguments where they are
//!
//! A general function's arguments are not converted into mlua values up
//! front: [`CallFrame`] (the argument type of the inner mlua function, see
//! `module.rs`) only records where they sit on the running thread's stack,
//! and each accessor reads the one slot it is asked for, with the C API
//! calls a C function would make. Only what a body asks for as an mlua
//! value (a `LuaString`, a `Table`, `values()`) becomes an mlua reference.
//!
//! Invariants the unsafe code here relies on:
//!
//! 1. An [`Args`] lives only during the call it describes: it borrows the
//!    call's `&Lua` (lifetime `'a`), so a body cannot keep it (or a slice it
//!    lent) past its return. During the call, slots `base + 1 ..= base +
//!    nargs` of `state` hold the arguments: mlua's callback leaves them in
//!    place, and everything a body can do on that thread (mlua calls, Lua
//!    calls) works above them and restores the top.
//! 2. Only C API functions that cannot raise a Lua error are called here
//!    (`lua_type`, `lua_tolstring` on a string, `lua_tointegerx`,
//!    `lua_tonumberx`, `lua_toboolean`, `lua_getmetatable`, `lua_rawgeti`,
//!    `lua_touserdata`, `lua_topointer`, `lua_checkstack`, `lua_settop` to a
//!    lower top): no longjmp can cross these Rust frames. Conversions that
//!    allocate (a number to a string) go through mlua's protected calls.
//! 3. Values pushed by an accessor are popped before it returns, except the
//!    native value `check_object` leaves on the stack as the borrow's
//!    anchor until the call returns (mlua takes the results from the top).
//!    Room is made first (see `FREE_ANCHORS`).
//! 4. `raw` is the `RawLua` of the running callback (from mlua's
//!    `from_stack_args`); it outlives the call.

use std::cell::{Cell, OnceCell, RefCell};
use std::ffi::c_int;

use mlua::ffi::{self, lua_State};
use mlua::state::RawLua;
use mlua::{
    FromLua, FromLuaMulti, Function, Integer, Lua, LuaString, MultiValue, Number, Table, Value,
};

use crate::error::{Error, Result};
use crate::module::Class;
use crate::object::{self, ObjectMut};

/// Where the arguments of the running general function are: the argument
/// type of its inner mlua function. Built by mlua's `from_stack_args` from
/// the running thread's stack, which it leaves untouched.
pub(crate) struct CallFrame {
    raw: *const RawLua,
    state: *mut lua_State,
    base: c_int,
    nargs: c_int,
}

impl FromLuaMulti for CallFrame {
    fn from_lua_multi(_: MultiValue, _: &Lua) -> mlua::Result<Self> {
        // mlua builds a callback's arguments with from_stack_args (below);
        // this would mean an mlua release that no longer does.
        Err(mlua::Error::runtime(
            "luahost_modules: this mlua version passes arguments differently (unsupported)",
        ))
    }

    unsafe fn from_stack_args(
        nargs: c_int,
        _: usize,
        _: Option<&str>,
        lua: &RawLua,
    ) -> mlua::Result<Self> {
        let state = lua.state();
        // SAFETY: the running callback's state; the arguments are its top
        // `nargs` values (mlua may keep a value of its own below them).
        let top = unsafe { ffi::lua_gettop(state) };
        Ok(CallFrame {
            raw: lua,
            state,
            base: top - nargs,
            nargs,
        })
    }
}

/// The arguments of a call, numbered from 1 as in the Lua C API.
///
/// For a method called as `obj:m(x)`, the object is argument 1 and `x` is
/// argument 2; Lua's error messages then renumber them the way they do for C
/// methods ("bad argument #1 to 'm'" for `x`, "calling 'm' on bad self").
///
/// An `Args` is valid for the call it was given to: it borrows the call
/// (lifetime `'a`) and reads the arguments on the Lua stack where they are.
pub struct Args<'a> {
    lua: &'a Lua,
    raw: &'a RawLua,
    state: *mut lua_State,
    base: c_int,
    nargs: c_int,
    /// All arguments as mlua values, made on the first `values()`.
    values: OnceCell<Vec<Value>>,
    /// Strings made from number arguments by `check_lstring`, kept alive
    /// for the slices it lent.
    converted: RefCell<Vec<LuaString>>,
    /// How many objects `check_object` left on the stack.
    anchors: Cell<c_int>,
}

/// How many objects `check_object` anchors before it asks Lua for stack
/// room: a C function starts with `LUA_MINSTACK` (20) free slots, mlua's
/// callback takes at most one, and each check needs 3 while it runs.
const FREE_ANCHORS: c_int = 8;

impl<'a> Args<'a> {
    /// # Safety
    /// `frame` was made by mlua for the callback that runs now and that
    /// gave `lua`; the result must not outlive that callback (invariant 1).
    pub(crate) unsafe fn new(lua: &'a Lua, frame: &CallFrame) -> Args<'a> {
        Args {
            lua,
            // SAFETY: invariant 4.
            raw: unsafe { &*frame.raw },
            state: frame.state,
            base: frame.base,
            nargs: frame.nargs,
            values: OnceCell::new(),
            converted: RefCell::new(Vec::new()),
            anchors: Cell::new(0),
        }
    }

    /// The Lua state the call runs in.
    pub fn lua(&self) -> &Lua {
        self.lua
    }

    /// Number of arguments passed (`lua_gettop`).
    pub fn len(&self) -> usize {
        usize::try_from(self.nargs).unwrap_or(0)
    }

    /// True when the function was called without arguments.
    pub fn is_empty(&self) -> bool {
        self.nargs <= 0
    }

    /// The stack index of argument `n`, when it was passed.
    #[inline]
    fn index(&self, n: usize) -> Option<c_int> {
        let n = c_int::try_from(n).ok()?;
        (n >= 1 && n <= self.nargs).then_some(self.base + n)
    }

    /// The Lua type of argument `n` (`LUA_TNONE` when absent).
    #[inline]
    fn type_of(&self, n: usize) -> c_int {
        match self.index(n) {
            // SAFETY: a slot of the call (invariant 1); lua_type cannot raise.
            Some(i) => unsafe { ffi::lua_type(self.state, i) },
            None => ffi::LUA_TNONE,
        }
    }

    /// Argument `n` as an mlua value (a reference for strings, tables...).
    fn value_at(&self, n: usize) -> Result<Value> {
        match self.index(n) {
            // SAFETY: a slot of the call, read by mlua's own conversion
            // (which may only fail, not raise).
            Some(i) => Ok(unsafe { <Value as FromLua>::from_stack(i, self.raw) }?),
            None => Ok(Value::Nil),
        }
    }

    /// The bytes of argument `n`, which must be a string (not a number).
    #[inline]
    fn string_bytes(&self, n: usize) -> Option<&[u8]> {
        let i = self.index(n)?;
        // SAFETY: invariant 1 and 2: lua_tolstring on a string neither
        // allocates nor raises; the bytes live as long as the string stays
        // in its slot, which is for the call, and `self` does not outlive it.
        unsafe {
            if ffi::lua_type(self.state, i) != ffi::LUA_TSTRING {
                return None;
            }
            let mut len = 0usize;
            let data = ffi::lua_tolstring(self.state, i, &mut len);
            if data.is_null() {
                return None;
            }
            Some(std::slice::from_raw_parts(data.cast::<u8>(), len))
        }
    }

    /// A number argument as a value, for mlua's protected conversions.
    fn number_value(&self, n: usize) -> Option<Value> {
        let i = self.index(n)?;
        // SAFETY: invariant 1 and 2 (lua_isinteger/lua_to* on a number).
        unsafe {
            if ffi::lua_type(self.state, i) != ffi::LUA_TNUMBER {
                return None;
            }
            Some(if ffi::lua_isinteger(self.state, i) != 0 {
                Value::Integer(ffi::lua_tointeger(self.state, i))
            } else {
                Value::Number(ffi::lua_tonumber(self.state, i))
            })
        }
    }

    /// All arguments, in order, as mlua values. Made on the first call: a
    /// value mlua cannot keep (out of reference slots) reads as nil.
    pub fn values(&self) -> &[Value] {
        self.values.get_or_init(|| {
            (1..=self.len())
                .map(|n| self.value_at(n).unwrap_or(Value::Nil))
                .collect()
        })
    }

    /// Takes the arguments out.
    pub fn into_values(self) -> Vec<Value> {
        self.values();
        self.values.into_inner().unwrap_or_default()
    }

    /// Argument `n` (1-based); nil when it was not passed (or when mlua has
    /// no reference slot left for it).
    pub fn get(&self, n: usize) -> Value {
        if let Some(values) = self.values.get() {
            return n
                .checked_sub(1)
                .and_then(|i| values.get(i))
                .cloned()
                .unwrap_or(Value::Nil);
        }
        self.value_at(n).unwrap_or(Value::Nil)
    }

    /// True when argument `n` was not passed at all (`lua_isnone`).
    pub fn is_none(&self, n: usize) -> bool {
        self.index(n).is_none()
    }

    /// True when argument `n` is absent or nil (`lua_isnoneornil`): the
    /// condition under which the `opt_*` helpers return their default.
    pub fn is_none_or_nil(&self, n: usize) -> bool {
        matches!(self.type_of(n), ffi::LUA_TNONE | ffi::LUA_TNIL)
    }

    /// Any value, including nil, but it must be present (`luaL_checkany`:
    /// "value expected").
    pub fn check_any(&self, n: usize) -> Result<Value> {
        if self.is_none(n) {
            return Err(Error::arg(n, "value expected"));
        }
        self.value_at(n)
    }

    /// A string or a number converted to one (`luaL_checklstring`). The bytes
    /// need not be UTF-8.
    pub fn check_string(&self, n: usize) -> Result<LuaString> {
        match (self.type_of(n), self.index(n)) {
            // SAFETY: a string slot of the call, read by mlua's conversion.
            (ffi::LUA_TSTRING, Some(i)) => {
                Ok(unsafe { <LuaString as FromLua>::from_stack(i, self.raw) }?)
            }
            (ffi::LUA_TNUMBER, _) => {
                let v = self.number_value(n).unwrap_or(Value::Nil);
                self.lua
                    .coerce_string(v)?
                    .ok_or_else(|| Error::type_error(n, "string"))
            }
            _ => Err(Error::type_error(n, "string")),
        }
    }

    /// The bytes of a string argument, or of a number converted to one
    /// (`luaL_checklstring`), borrowed from Lua for the call: no copy, no
    /// reference. The cheapest way to read a string argument.
    pub fn check_lstring(&self, n: usize) -> Result<&[u8]> {
        if let Some(bytes) = self.string_bytes(n) {
            return Ok(bytes);
        }
        let s = self.check_string(n)?;
        let bytes = s.as_bytes();
        let (data, len) = (bytes.as_ptr(), bytes.len());
        drop(bytes);
        self.converted.borrow_mut().push(s);
        // SAFETY: the Lua string is kept alive by the reference just stored
        // in `self.converted` (never removed while `self` lives), and Lua
        // strings do not move: its bytes stay valid for `&self`.
        Ok(unsafe { std::slice::from_raw_parts(data, len) })
    }

    /// Like [`Args::check_string`], as an owned Rust `String`; bytes that are
    /// not UTF-8 are rejected with "bad argument #n to 'f' (invalid UTF-8
    /// string)".
    pub fn check_str(&self, n: usize) -> Result<String> {
        let bytes = self.check_lstring(n)?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::arg(n, "invalid UTF-8 string"))?
            .to_owned();
        Ok(text)
    }

    /// The raw bytes of a string argument (numbers converted).
    pub fn check_bytes(&self, n: usize) -> Result<Vec<u8>> {
        Ok(self.check_lstring(n)?.to_vec())
    }

    /// An integer (`luaL_checkinteger`): integers, floats with an exact
    /// integer value and strings that convert to one. A float like 1.5 gives
    /// "number has no integer representation"; a non-number gives "number
    /// expected, got <type>".
    pub fn check_integer(&self, n: usize) -> Result<Integer> {
        let Some(i) = self.index(n) else {
            return Err(Error::type_error(n, "number"));
        };
        // SAFETY: invariant 1 and 2: lua_tointegerx and lua_tonumberx
        // convert strings into a temporary, without touching the slot,
        // allocating or raising.
        unsafe {
            let mut ok = 0;
            let value = ffi::lua_tointegerx(self.state, i, &mut ok);
            if ok != 0 {
                return Ok(value);
            }
            ffi::lua_tonumberx(self.state, i, &mut ok);
            if ok != 0 {
                Err(Error::arg(n, "number has no integer representation"))
            } else {
                Err(Error::type_error(n, "number"))
            }
        }
    }

    /// A number (`luaL_checknumber`): numbers and numeric strings.
    pub fn check_number(&self, n: usize) -> Result<Number> {
        let Some(i) = self.index(n) else {
            return Err(Error::type_error(n, "number"));
        };
        // SAFETY: as in check_integer.
        unsafe {
            let mut ok = 0;
            let value = ffi::lua_tonumberx(self.state, i, &mut ok);
            if ok != 0 {
                Ok(value)
            } else {
                Err(Error::type_error(n, "number"))
            }
        }
    }

    /// A table (`luaL_checktype(L, n, LUA_TTABLE)`).
    pub fn check_table(&self, n: usize) -> Result<Table> {
        match self.type_of(n) {
            ffi::LUA_TTABLE => match self.value_at(n)? {
                Value::Table(t) => Ok(t),
                _ => Err(Error::type_error(n, "table")),
            },
            _ => Err(Error::type_error(n, "table")),
        }
    }

    /// A function (`luaL_checktype(L, n, LUA_TFUNCTION)`).
    pub fn check_function(&self, n: usize) -> Result<Function> {
        match self.type_of(n) {
            ffi::LUA_TFUNCTION => match self.value_at(n)? {
                Value::Function(f) => Ok(f),
                _ => Err(Error::type_error(n, "function")),
            },
            _ => Err(Error::type_error(n, "function")),
        }
    }

    /// The truth value of argument `n` (`lua_toboolean`): only nil, false and
    /// absent are false. Like the C API, this never fails.
    pub fn to_boolean(&self, n: usize) -> bool {
        match self.index(n) {
            // SAFETY: invariant 1 and 2.
            Some(i) => unsafe { ffi::lua_toboolean(self.state, i) != 0 },
            None => false,
        }
    }

    /// One of `options` (`luaL_checkoption`); returns its index. With a
    /// default, an absent or nil argument selects the default.
    pub fn check_option(&self, n: usize, default: Option<&str>, options: &[&str]) -> Result<usize> {
        let name: &[u8] = match default {
            Some(d) if self.is_none_or_nil(n) => d.as_bytes(),
            _ => self.check_lstring(n)?,
        };
        options
            .iter()
            .position(|o| o.as_bytes() == name)
            .ok_or_else(|| {
                Error::arg(
                    n,
                    format!("invalid option '{}'", String::from_utf8_lossy(name)),
                )
            })
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
        T::from_lua(self.get(n), self.lua).map_err(|e| match e {
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
    pub fn check_object<T: 'static>(&self, n: usize, class: &Class<T>) -> Result<ObjectMut<'a, T>> {
        let Some(i) = self.index(n) else {
            return Err(Error::type_error(n, class.name()));
        };
        let (object_mt, native_mt) = class.metatable_pointers();
        // SAFETY: invariants 1 to 3, except for the one value deliberately
        // left pushed: room is made for the 3 values pushed below (Lua gives
        // a C function LUA_MINSTACK free slots, of which mlua's callback
        // takes at most one, so only a body that already anchored several
        // objects needs lua_checkstack); on failure they are popped; none
        // of these calls raises. The slot is only used as a Slot<T> once
        // its metatable proved it is one of this class's native values.
        unsafe {
            let state = self.state;
            if ffi::lua_type(state, i) != ffi::LUA_TTABLE {
                return Err(Error::type_error(n, class.name()));
            }
            let anchors = self.anchors.get();
            if anchors >= FREE_ANCHORS && ffi::lua_checkstack(state, 3) == 0 {
                return Err(Error::message("stack overflow"));
            }
            if ffi::lua_getmetatable(state, i) == 0 {
                return Err(Error::type_error(n, class.name()));
            }
            if ffi::lua_topointer(state, -1) != object_mt {
                ffi::lua_pop(state, 1);
                return Err(Error::type_error(n, class.name()));
            }
            // The instance metatable, [0], then [0]'s metatable.
            let has_mt = ffi::lua_rawgeti(state, i, 0) == ffi::LUA_TUSERDATA
                && ffi::lua_getmetatable(state, -1) != 0;
            if !has_mt || ffi::lua_topointer(state, -1) != native_mt {
                ffi::lua_pop(state, if has_mt { 3 } else { 2 });
                return Err(Error::arg(
                    n,
                    format!(
                        "{0} expected, got {0} without its native value at [0]",
                        class.name()
                    ),
                ));
            }
            let slot = ffi::lua_touserdata(state, -2).cast::<object::Slot<T>>();
            // The userdata stays on the call's stack, above the arguments,
            // until the call returns: it cannot be collected while borrowed
            // (a script could replace [0] during the call). mlua and Lua
            // only work above it and restore the top, and the callback's
            // results are taken from the top. Stack: mt, [0], its mt.
            ffi::lua_pop(state, 1);
            ffi::lua_replace(state, -2);
            self.anchors.set(anchors + 1);
            ObjectMut::new(slot).map_err(|why| why.into_error())
        }
    }
}
