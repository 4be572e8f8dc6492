//! Functions, module tables and HAProxy-style classes.

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use mlua::state::RawLua;
use mlua::{Function, IntoLua, IntoLuaMulti, Lua, MultiValue, Table, Value};

use crate::args::{Args, CallFrame};
use crate::error::{Error, Result};
use crate::native::{NativeFunction, NativeMethod};
use crate::object;
use crate::raw::{self, Status};

/// Makes a Lua function from a Rust body. Errors the body returns, and
/// panics, reach Lua as plain strings worded like Lua's C library (see
/// [`Error`]); the argument numbering and the function name in messages come
/// from the call site, as for any C function.
///
/// Bodies cannot yield (they run under a plain `lua_call`); register async
/// functions with mlua directly.
pub fn function<F, R>(lua: &Lua, body: F) -> Result<Function>
where
    F: Fn(&Lua, Args<'_>) -> Result<R> + 'static,
    R: IntoLuaMulti,
{
    let inner = inner_function(lua, body)?;
    Ok(raw::wrap_inner(lua, inner)?)
}

/// The mlua half of a function: runs the body and returns its results, or
/// an error record that `raw::finish` raises. It never returns an mlua error
/// for the body's own failures, so mlua never raises its error userdata for
/// them; by the time it returns, every Rust value of the call is dropped.
///
/// Its arguments stay on the stack where mlua's callback found them
/// ([`CallFrame`]); [`Args`] reads them there.
pub(crate) fn inner_function<F, R>(lua: &Lua, body: F) -> mlua::Result<Function>
where
    F: Fn(&Lua, Args<'_>) -> Result<R> + 'static,
    R: IntoLuaMulti,
{
    lua.create_function(move |lua, frame: CallFrame| {
        // No panic may cross into Lua (the trampoline is a C frame): turn it
        // into an error message here.
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `frame` is this callback's, and the Args is dropped
            // before the callback returns.
            body(lua, unsafe { Args::new(lua, &frame) })
        }));
        Ok(match outcome {
            Ok(Ok(values)) => Outcome::Values(values),
            Ok(Err(err)) => Outcome::Failed(err),
            Err(panic) => Outcome::Failed(Error::from_panic(&*panic)),
        })
    })
}

/// What the inner function returns: the body's results, or the error
/// record that describes its failure (see `raw::Status`).
enum Outcome<R> {
    Values(R),
    Failed(Error),
}

/// The three parts of an error record after its marker.
fn record_parts(err: Error) -> (Status, i64, String) {
    let (status, arg, text) = match err {
        Error::Type { arg, expected } => (Status::Type, arg, expected),
        Error::Arg { arg, message } => (Status::Arg, arg, message),
        Error::Runtime(m) => (Status::Runtime, 0, m),
        Error::Message(m) => (Status::Message, 0, m),
    };
    // An absurd argument number becomes 0 rather than wrapping.
    let arg = i64::try_from(arg)
        .ok()
        .filter(|a| *a <= i64::from(c_int::MAX))
        .unwrap_or(0);
    (status, arg, text)
}

/// Pushes the error record of `err` (four values); returns 4.
///
/// # Safety
/// `lua` is the RawLua of the running callback.
unsafe fn push_record(lua: &RawLua, err: Error) -> mlua::Result<c_int> {
    let (status, arg, text) = record_parts(err);
    // SAFETY: room is made first (lua_checkstack cannot raise); mlua's
    // pushes are its own (the string one protected against memory errors).
    unsafe {
        if mlua::ffi::lua_checkstack(lua.state(), 4) == 0 {
            return Err(mlua::Error::StackError);
        }
        lua.push(Value::LightUserData(mlua::LightUserData(
            raw::error_marker(),
        )))?;
        lua.push(status as i64)?;
        lua.push(arg)?;
        lua.push(text)?;
    }
    Ok(4)
}

impl<R: IntoLuaMulti> IntoLuaMulti for Outcome<R> {
    fn into_lua_multi(self, lua: &Lua) -> mlua::Result<MultiValue> {
        let err = match self {
            Outcome::Values(values) => {
                match catch_unwind(AssertUnwindSafe(|| values.into_lua_multi(lua))) {
                    Ok(Ok(values)) => return Ok(values),
                    Ok(Err(e)) => Error::from(e),
                    Err(panic) => Error::from_panic(&*panic),
                }
            }
            Outcome::Failed(err) => err,
        };
        let (status, arg, text) = record_parts(err);
        Ok(MultiValue::from_vec(vec![
            Value::LightUserData(mlua::LightUserData(raw::error_marker())),
            Value::Integer(status as i64),
            Value::Integer(arg),
            Value::String(lua.create_string(text)?),
        ]))
    }

    // mlua's own path for a callback's results: pushes them without making
    // a MultiValue first (what a typed mlua function does).
    unsafe fn push_into_stack_multi(self, lua: &RawLua) -> mlua::Result<c_int> {
        let err = match self {
            Outcome::Values(values) => {
                // SAFETY: forwarded from mlua's contract for this method (the
                // running callback's RawLua).
                let pushed = catch_unwind(AssertUnwindSafe(|| unsafe {
                    values.push_into_stack_multi(lua)
                }));
                match pushed {
                    Ok(Ok(n)) => return Ok(n),
                    Ok(Err(e)) => Error::from(e),
                    Err(panic) => Error::from_panic(&*panic),
                }
            }
            Outcome::Failed(err) => err,
        };
        // Lua takes the top values as the results: the record goes above
        // anything a failed conversion left.
        // SAFETY: as above.
        unsafe { push_record(lua, err) }
    }
}

#[cfg(feature = "async")]
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// What a module's init closure gets: the Lua state and the table that
/// `require` returns.
pub struct Module<'lua> {
    lua: &'lua Lua,
    exports: Table,
    name: Option<String>,
}

impl<'lua> Module<'lua> {
    /// The Lua state the module is loaded into.
    pub fn lua(&self) -> &'lua Lua {
        self.lua
    }

    /// The module table (the value `require` returns).
    pub fn exports(&self) -> &Table {
        &self.exports
    }

    /// The name `require` was called with, when the module is loaded through
    /// `require` (e.g. "hello_rs", or "v2-hello_rs" for a versioned file).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Adds a function (see [`function`]) to the module table.
    pub fn function<F, R>(&self, name: &str, body: F) -> Result<()>
    where
        F: Fn(&Lua, Args<'_>) -> Result<R> + 'static,
        R: IntoLuaMulti,
    {
        let f = function(self.lua, body)?;
        self.exports.raw_set(name, f)?;
        Ok(())
    }

    /// Adds a native function (see [`crate::native_fn!`]) to the module
    /// table: a plain C function, as fast as one written in C.
    pub fn native(&self, name: &str, f: NativeFunction) -> Result<()> {
        // SAFETY: a NativeFunction is sound to call with any arguments and
        // no upvalues (the contract of NativeFunction::from_entry).
        let f = unsafe { self.lua.create_c_function(f.c_function()) }?;
        self.exports.raw_set(name, f)?;
        Ok(())
    }

    /// Sets any other field of the module table (constants, sub-tables).
    pub fn set(&self, key: &str, value: impl IntoLua) -> Result<()> {
        self.exports.raw_set(key, value)?;
        Ok(())
    }

    /// Starts a class whose instances are HAProxy-style object tables (see
    /// [`Class`]). `name` is the metatable's `__name`, which Lua shows in
    /// messages ("Counter expected, got nil", "got Counter") and `tostring`.
    pub fn class<T: 'static>(&self, name: &str) -> Result<ClassBuilder<'lua, T>> {
        let methods = self.lua.create_table()?;
        let metatable = self.lua.create_table()?;
        metatable.raw_set("__index", &methods)?;
        metatable.raw_set("__name", name)?;
        let native_metatable = object::native_metatable::<T>(self.lua, &metatable)?;
        object::register_class_name::<T>(name);
        Ok(ClassBuilder {
            lua: self.lua,
            class: Class {
                shared: Rc::new(ClassShared {
                    name: name.to_owned(),
                    metatable_ptr: metatable.to_pointer(),
                    native_metatable_ptr: native_metatable.to_pointer(),
                    metatable,
                    native_metatable,
                    methods,
                }),
                _type: PhantomData,
            },
        })
    }
}

/// Entry used by [`crate::module!`]; not a public API.
///
/// # Safety
/// `state` must be the state Lua passed to the `luaopen_*` function.
#[doc(hidden)]
pub unsafe fn open_module<F>(state: *mut mlua::lua_State, init: F) -> c_int
where
    F: FnOnce(&Module<'_>) -> Result<()> + 'static,
{
    let init = Cell::new(Some(init));
    let make_inner = move |lua: &Lua| {
        inner_function(lua, move |lua, args| {
            let init = init
                .take()
                .ok_or_else(|| Error::message("module initialisation entered twice"))?;
            let name = match args.get(1) {
                Value::String(s) => s.to_str().ok().map(|s| s.to_owned()),
                _ => None,
            };
            let module = Module {
                lua,
                exports: lua.create_table()?,
                name,
            };
            init(&module)?;
            Ok(module.exports)
        })
    };
    // SAFETY: forwarded from the caller's contract.
    unsafe { raw::open(state, make_inner) }
}

/// A class of HAProxy-style objects: each instance is a Lua table whose `[0]`
/// holds the native value (a userdata owning the `T`, dropped by its
/// finalizer) and whose metatable has `__index` = the methods table and
/// `__name` = the class name.
///
/// Scripts can add their own fields to an instance, as with HAProxy's
/// objects. A method finds its object with [`Args::check_object`], which
/// checks the metatable *and* the Rust type of `[0]`, so a hand-made table
/// (`setmetatable({[0] = x}, getmetatable(obj))`) can never pass for an
/// instance unless `x` really is a `T`.
///
/// A class lives as long as the Lua state: its methods refer back to it.
pub struct Class<T> {
    shared: Rc<ClassShared>,
    _type: PhantomData<fn() -> T>,
}

struct ClassShared {
    name: String,
    /// The instance tables' metatable.
    metatable: Table,
    /// The metatable of the userdata at `[0]`: identifies a `T` (object.rs).
    native_metatable: Table,
    methods: Table,
    /// `metatable.to_pointer()` and `native_metatable.to_pointer()`: the
    /// tables live as long as the class (it holds them), and Lua objects do
    /// not move, so these identify them.
    metatable_ptr: *const c_void,
    native_metatable_ptr: *const c_void,
}

impl<T> Clone for Class<T> {
    fn clone(&self) -> Self {
        Class {
            shared: Rc::clone(&self.shared),
            _type: PhantomData,
        }
    }
}

impl<T: 'static> Class<T> {
    /// The class name (`__name`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The metatable shared by all instances.
    pub fn metatable(&self) -> &Table {
        &self.shared.metatable
    }

    /// The methods table (the metatable's `__index`).
    pub fn methods(&self) -> &Table {
        &self.shared.methods
    }

    /// A new instance holding `value` at `[0]`.
    pub fn wrap(&self, lua: &Lua, value: T) -> Result<Table> {
        let native = object::new_native(lua, &self.shared.native_metatable, value)?;
        let object = lua.create_table_with_capacity(0, 1)?;
        object.raw_set(0, native)?;
        object.set_metatable(Some(self.shared.metatable.clone()))?;
        Ok(object)
    }

    /// True when `object` has this class's metatable.
    pub fn is_instance(&self, object: &Table) -> bool {
        object
            .metatable()
            .is_some_and(|mt| mt.to_pointer() == self.shared.metatable.to_pointer())
    }

    /// The identities of the instances' metatable and of the native
    /// values' metatable, for comparing with `lua_topointer`.
    pub(crate) fn metatable_pointers(&self) -> (*const c_void, *const c_void) {
        (self.shared.metatable_ptr, self.shared.native_metatable_ptr)
    }
}

/// Adds methods to a [`Class`]; from [`Module::class`].
pub struct ClassBuilder<'lua, T> {
    lua: &'lua Lua,
    class: Class<T>,
}

impl<'lua, T: 'static> ClassBuilder<'lua, T> {
    /// Adds a method called as `obj:name(...)`. The body gets the native
    /// value, mutably borrowed for the call, and all arguments with the
    /// object as #1 (so the first parameter is `args.check_*(2)`).
    pub fn method<F, R>(self, name: &str, body: F) -> Result<Self>
    where
        F: Fn(&Lua, &mut T, Args<'_>) -> Result<R> + 'static,
        R: IntoLuaMulti,
    {
        let f = self.bound_function(body)?;
        self.class.shared.methods.raw_set(name, f)?;
        Ok(self)
    }

    /// Adds a metamethod such as `__tostring`, `__len` or `__eq`, with the
    /// same body signature as [`ClassBuilder::method`]. `__index` and
    /// `__name` belong to the class machinery and are refused.
    pub fn metamethod<F, R>(self, name: &str, body: F) -> Result<Self>
    where
        F: Fn(&Lua, &mut T, Args<'_>) -> Result<R> + 'static,
        R: IntoLuaMulti,
    {
        self.check_metamethod_name(name)?;
        let f = self.bound_function(body)?;
        self.class.shared.metatable.raw_set(name, f)?;
        Ok(self)
    }

    /// Adds a native method (see [`crate::native_method!`]): a plain C
    /// function that finds its object at `[0]` like a C method does.
    pub fn native_method(self, name: &str, method: NativeMethod<T>) -> Result<Self> {
        let f = self.native_closure(method)?;
        self.class.shared.methods.raw_set(name, f)?;
        Ok(self)
    }

    /// Adds a native metamethod such as `__len` or `__tostring`; `__index`
    /// and `__name` are refused as for [`ClassBuilder::metamethod`].
    pub fn native_metamethod(self, name: &str, method: NativeMethod<T>) -> Result<Self> {
        self.check_metamethod_name(name)?;
        let f = self.native_closure(method)?;
        self.class.shared.metatable.raw_set(name, f)?;
        Ok(self)
    }

    fn check_metamethod_name(&self, name: &str) -> Result<()> {
        if name == "__index" || name == "__name" {
            return Err(Error::message(format!(
                "class {}: {name} is set by luahost_modules",
                self.class.name()
            )));
        }
        Ok(())
    }

    /// The method's C function as a closure over the class's two metatables
    /// (upvalue 1: instances', upvalue 2: native values').
    fn native_closure(&self, method: NativeMethod<T>) -> Result<Function> {
        let shared = &self.class.shared;
        // SAFETY: exec_raw pushes the two tables at indexes 1 and 2 of a
        // protected call; lua_pushcclosure pops them as upvalues and pushes
        // the closure (may raise out-of-memory: protected; the closure owns
        // nothing). These are the upvalues the NativeMethod<T> contract
        // names, and T is this class's type.
        let f = unsafe {
            self.lua
                .exec_raw::<Function>((&shared.metatable, &shared.native_metatable), |state| {
                    mlua::ffi::lua_pushcclosure(state, method.entry(), 2);
                })
        }?;
        Ok(f)
    }

    fn bound_function<F, R>(&self, body: F) -> Result<Function>
    where
        F: Fn(&Lua, &mut T, Args<'_>) -> Result<R> + 'static,
        R: IntoLuaMulti,
    {
        let class = self.class.clone();
        function(self.lua, move |lua, args| {
            let mut this = args.check_object(1, &class)?;
            body(lua, &mut this, args)
        })
    }

    /// The finished class, used to make instances with [`Class::wrap`].
    pub fn build(self) -> Class<T> {
        self.class
    }
}
