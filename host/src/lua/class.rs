//! HAProxy's object model: a Lua object is a table whose index [0] holds the
//! native object (a userdata) and whose metatable is the class's, shared by
//! all its objects. Methods live in the class table (`__index`), so
//! `obj:method()` finds them without a per-object copy; `tostring(obj)` names
//! the class.

use mlua::{ffi, AnyUserData, FromLua, IntoLua, Lua, Table, UserDataRef, Value};
use std::ffi::CStr;

/// A field set when an object is built (see [`Class::build`]).
pub enum Field<'a> {
    Str(&'a [u8]),
    Int(i64),
}

/// Hash slots reserved in every object beyond its initial fields: room for
/// [0] and for the fields built on first access (`txn.http`, `txn.sf`, ...),
/// so that filling them does not rehash the table.
pub const SPARE_SLOTS: usize = 4;

/// A class: its metatable, with the methods table at `__index`.
#[derive(Clone)]
pub struct Class {
    pub meta: Table,
    pub methods: Table,
}

impl Class {
    /// Creates a class; `__tostring` prints "Name: 0x...".
    pub fn new(lua: &Lua, name: &'static str) -> mlua::Result<Class> {
        let meta = lua.create_table()?;
        let methods = lua.create_table()?;
        meta.raw_set("__index", &methods)?;
        meta.raw_set("__name", name)?;
        let tostring = lua.create_function(move |_, this: Table| {
            Ok(format!("{name}: {:p}", this.to_pointer()))
        })?;
        meta.raw_set("__tostring", tostring)?;
        Ok(Class { meta, methods })
    }

    /// Adds a method.
    pub fn method(&self, name: &str, f: mlua::Function) -> mlua::Result<()> {
        self.methods.raw_set(name, f)
    }

    /// Declares fields that are built on first access by `make(obj)` and
    /// then stored in the object (e.g. `txn.http`, `txn.sf`). Most scripts
    /// touch one or two of a TXN's seven sub-objects; building all of them
    /// for every transaction was the largest cost of a Lua action (objects
    /// to allocate and then collect). Reading the field gives the same value
    /// every time, as an eagerly built field would.
    ///
    /// Method lookups then go through a C function (`raw::lazy_index`)
    /// instead of a table, which costs far less than the objects it saves.
    pub fn lazy_fields(&self, lua: &Lua, fields: Vec<(&str, mlua::Function)>) -> mlua::Result<()> {
        let lazy = lua.create_table()?;
        for (k, f) in fields {
            lazy.raw_set(k, f)?;
        }
        // SAFETY: exec_raw pushes the two tables and runs the closure in
        // protected mode; lua_pushcclosure pops them as the upvalues that
        // lazy_index expects and pushes the closure, which exec_raw returns.
        let index = unsafe {
            lua.exec_raw::<mlua::Function>((&self.methods, lazy), |state| {
                ffi::lua_pushcclosure(state, crate::lua::raw::lazy_index, 2);
            })?
        };
        self.meta.raw_set("__index", index)
    }

    /// A new object of this class around `native`.
    pub fn instantiate<T: 'static>(&self, lua: &Lua, native: T) -> mlua::Result<Table> {
        let ud = lua.create_any_userdata(native)?;
        self.build(lua, ud, &[])
    }

    /// A new object of this class with `native` at [0] (a userdata, or a
    /// handle: see handles.rs) and `fields` set.
    ///
    /// Objects are built for every transaction, so this is a hot path: the
    /// table is created pre-sized and filled in one protected call, instead
    /// of one protected call (and possibly a rehash) per field.
    pub fn build(
        &self,
        lua: &Lua,
        native: impl IntoLua,
        fields: &[(&CStr, Field)],
    ) -> mlua::Result<Table> {
        let hash_size = (fields.len() + SPARE_SLOTS).min(i32::MAX as usize) as i32;
        if crate::lua::memory::limit() == 0 {
            return self.build_unprotected(lua, native, fields, hash_size);
        }
        // SAFETY: exec_raw runs the closure as a protected C function with
        // the native value at index 1 and the metatable at index 2. The closure
        // only borrows (nothing in it needs dropping), so a memory error
        // raised by Lua inside it unwinds no Rust value. The stack is left
        // with the new table alone, which exec_raw returns.
        unsafe {
            lua.exec_raw::<Table>((native, &self.meta), |state| {
                push_object(state, 1, 2, fields, hash_size);
                ffi::lua_copy(state, -1, 1);
                ffi::lua_settop(state, 1);
            })
        }
    }

    /// [`Class::build`] without a protected call, for states without a
    /// memory cap: there, as in mlua's own fast paths (state.rs), only a
    /// system out of memory can make Lua's allocator fail, and a protected
    /// call per object cost about 40% of building it.
    fn build_unprotected(
        &self,
        lua: &Lua,
        native: impl IntoLua,
        fields: &[(&CStr, Field)],
        hash_size: i32,
    ) -> mlua::Result<Table> {
        lua.exec_raw_lua(|raw| {
            // SAFETY: `raw.state()` is the running Lua thread. The stack is
            // grown first and put back to its height before returning; the
            // calls below raise only on allocation failure, which without a
            // cap means the process is out of memory (see above).
            unsafe {
                let state = raw.state();
                let top = ffi::lua_gettop(state);
                if ffi::lua_checkstack(state, 4) == 0 {
                    return Err(mlua::Error::StackError);
                }
                let built = (|| {
                    raw.push(native)?;
                    raw.push(&self.meta)?;
                    push_object(state, top + 1, top + 2, fields, hash_size);
                    Table::from_stack(-1, raw)
                })();
                ffi::lua_settop(state, top);
                built
            }
        })
    }
}

/// Pushes a new object: a table of `hash_size` hash slots with the value at
/// stack index `native` at [0], `fields` set, and the metatable at index
/// `meta`.
///
/// # Safety
/// `state` is the running state with two free stack slots; `native` and
/// `meta` are absolute indices. Lua raises on allocation failure: callers
/// own no Rust value that needs dropping meanwhile.
unsafe fn push_object(
    state: *mut ffi::lua_State,
    native: std::ffi::c_int,
    meta: std::ffi::c_int,
    fields: &[(&CStr, Field)],
    hash_size: i32,
) {
    // SAFETY: as documented.
    unsafe {
        ffi::lua_createtable(state, 0, hash_size);
        ffi::lua_pushvalue(state, native);
        ffi::lua_rawseti(state, -2, 0);
        for (name, value) in fields {
            match value {
                Field::Str(b) => {
                    ffi::lua_pushlstring(state, b.as_ptr() as *const _, b.len());
                }
                Field::Int(i) => ffi::lua_pushinteger(state, *i),
            }
            // No metatable yet: a plain (raw) store.
            ffi::lua_setfield(state, -2, name.as_ptr());
        }
        ffi::lua_pushvalue(state, meta);
        ffi::lua_setmetatable(state, -2);
    }
}

/// The native object of `this`, checked to be of type T; a wrong `self`
/// raises "bad argument #1 to 'method' (Class expected, got ...)".
pub fn native<T: 'static>(this: &Value, class: &str, method: &str) -> mlua::Result<UserDataRef<T>> {
    let bad = |got: &str| {
        mlua::Error::runtime(format!(
            "bad argument #1 to '{method}' ({class} expected, got {got})"
        ))
    };
    let Value::Table(t) = this else {
        return Err(bad(this.type_name()));
    };
    // Fast path: borrowed straight from the stack, without a reference.
    if let Ok(r) = t.raw_get::<UserDataRef<T>>(0) {
        return Ok(r);
    }
    match t.raw_get::<Value>(0)? {
        Value::UserData(ud) => ud.borrow::<T>().map_err(|_| bad("userdata")),
        other => Err(bad(other.type_name())),
    }
}

/// The userdata at [0] of an object, unchecked in type.
#[allow(dead_code)]
pub fn userdata(this: &Table) -> mlua::Result<AnyUserData> {
    this.raw_get::<AnyUserData>(0)
}
