//! The native value of a class instance: a Lua full userdata holding a `T`,
//! stored at `[0]` of the instance table.
//!
//! The userdata's block (a [`Slot`]) holds a state byte at offset 0, the
//! `TypeId` of `T` at offset 8 (written and read unaligned), and the value
//! after them at `T`'s alignment. Its metatable (the class's *native
//! metatable*) has a `__gc` that drops the value, `__metatable = false` so
//! Lua code cannot reach it, `[1]` = a light userdata marking this copy of
//! the toolkit and `[2]` = the class's instance metatable. Generated C
//! methods ([`crate::native_method!`]) and mlua-based methods
//! ([`crate::Args::check_object`]) identify their class's values by the
//! native metatable; object *arguments* of native functions, which have no
//! class at hand, by the marker, the block's size and the `TypeId`. The
//! state byte hands out one borrow at a time (a method that calls back into
//! Lua cannot have the same object borrowed a second time).
//!
//! As with any C module (`luaL_checkudata`), the debug library can defeat
//! the metatable check (`debug.setmetatable`); ordinary Lua code cannot.

use std::any::TypeId;
use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ops::{Deref, DerefMut};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Mutex;

use mlua::ffi::{self, lua_State};
use mlua::{AnyUserData, Lua, Table};

use crate::error::Error;

/// Allocated, value not written yet (or its construction failed).
const EMPTY: u8 = 0;
/// Holds a value, not borrowed.
const FREE: u8 = 1;
/// Holds a value that a running method borrows.
const BORROWED: u8 = 2;
/// Its value was dropped by `__gc` (the userdata may still be reachable
/// from another finalizer).
const DEAD: u8 = 3;

/// A userdata block holding a `T` (see the module docs for the layout).
/// Only pointers to it exist; public so that generated code can pass them
/// along, with nothing accessible.
#[doc(hidden)]
pub struct Slot<T> {
    _type: std::marker::PhantomData<T>,
}

/// Offset of the `TypeId` in a block.
const TYPE_ID_OFFSET: usize = 8;
/// Bytes before the value (which may need more for its alignment).
const HEADER: usize = TYPE_ID_OFFSET + size_of::<TypeId>();

/// Bytes to allocate for a block holding a `T`: Lua aligns userdata blocks
/// for its own types only (8 bytes on common targets), so room is left to
/// align the value.
const fn alloc_size<T>() -> usize {
    HEADER + size_of::<T>() + align_of::<T>() - 1
}

/// The state byte of a block.
#[inline(always)]
fn state_of<T>(slot: *mut Slot<T>) -> *const Cell<u8> {
    slot.cast::<Cell<u8>>().cast_const()
}

/// The value of a block: after the header, at `T`'s alignment. Deterministic,
/// so every reader finds the same address (Lua never moves a userdata).
#[inline(always)]
fn value_of<T>(slot: *mut Slot<T>) -> *mut T {
    let start = slot.cast::<u8>().wrapping_add(HEADER);
    let offset = (start as usize).wrapping_neg() & (align_of::<T>() - 1);
    start.wrapping_add(offset).cast()
}

/// Reads the `TypeId` recorded in a block.
///
/// # Safety
/// `slot` is a block of at least `HEADER` bytes written by `new_native`.
#[inline(always)]
unsafe fn type_id_of<T>(slot: *mut Slot<T>) -> TypeId {
    unsafe {
        slot.cast::<u8>()
            .add(TYPE_ID_OFFSET)
            .cast::<TypeId>()
            .read_unaligned()
    }
}

/// Its address marks the native metatables of this copy of the toolkit.
static NATIVE_MARKER: u8 = 0;

fn native_marker() -> *mut c_void {
    ptr::addr_of!(NATIVE_MARKER).cast_mut().cast()
}

/// The class name registered for `T` ([`crate::Module::class`]), for the
/// messages of object arguments, which have no class at hand. Process-wide:
/// the first name given to a type wins.
static CLASS_NAMES: Mutex<Vec<(TypeId, String)>> = Mutex::new(Vec::new());

pub(crate) fn register_class_name<T: 'static>(name: &str) {
    let mut names = CLASS_NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if !names.iter().any(|(id, _)| *id == TypeId::of::<T>()) {
        names.push((TypeId::of::<T>(), name.to_owned()));
    }
}

fn class_name_of<T: 'static>() -> String {
    let names = CLASS_NAMES.lock().unwrap_or_else(|e| e.into_inner());
    match names.iter().find(|(id, _)| *id == TypeId::of::<T>()) {
        Some((_, name)) => name.clone(),
        // No class for T in this process: the Rust type's own name.
        None => std::any::type_name::<T>()
            .rsplit("::")
            .next()
            .unwrap_or("object")
            .to_owned(),
    }
}

/// Why a native value could not be borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BorrowError {
    /// A method of this object is running (re-entered from a callback).
    Busy,
    /// The value was dropped by its finalizer, or never written.
    Gone,
}

impl BorrowError {
    pub(crate) fn into_error(self) -> Error {
        match self {
            BorrowError::Busy => Error::runtime(
                "cannot borrow the object: a method of it is still running (re-entrant call)",
            ),
            BorrowError::Gone => Error::runtime("object used after it was finalized"),
        }
    }
}

/// Takes the one borrow of a slot's value.
///
/// # Safety
/// `slot` points to a live `Slot<T>` (anchored on the Lua stack or by a
/// reference for as long as the borrow lasts).
#[inline(always)]
pub(crate) unsafe fn borrow<T>(slot: *mut Slot<T>) -> Result<*mut T, BorrowError> {
    unsafe {
        let state = &*state_of(slot);
        match state.get() {
            FREE => {
                state.set(BORROWED);
                Ok(value_of(slot))
            }
            BORROWED => Err(BorrowError::Busy),
            _ => Err(BorrowError::Gone),
        }
    }
}

/// Ends the borrow taken by [`borrow`].
///
/// # Safety
/// As for [`borrow`]; called once per successful borrow.
#[inline(always)]
pub(crate) unsafe fn release<T>(slot: *mut Slot<T>) {
    unsafe {
        let state = &*state_of(slot);
        if state.get() == BORROWED {
            state.set(FREE);
        }
    }
}

/// The finalizer: drops the value once. Upvalue 1 is the native metatable,
/// so a call on anything but one of this class's userdata does nothing.
unsafe extern "C-unwind" fn gc<T>(state: *mut lua_State) -> c_int {
    // SAFETY: a C function; Lua API calls that cannot raise (no allocation)
    // on the argument; the slot is only touched after its metatable proved
    // it is a `Slot<T>` made by `new_native`.
    unsafe {
        if ffi::lua_type(state, 1) != ffi::LUA_TUSERDATA || ffi::lua_getmetatable(state, 1) == 0 {
            return 0;
        }
        let ours = ffi::lua_rawequal(state, -1, ffi::lua_upvalueindex(1)) != 0;
        ffi::lua_pop(state, 1);
        if !ours {
            return 0;
        }
        let slot = ffi::lua_touserdata(state, 1).cast::<Slot<T>>();
        let was = (*state_of(slot)).replace(DEAD);
        if was == FREE {
            // A panicking Drop must not cross into Lua; the value is gone
            // either way.
            let value = value_of(slot);
            let _ = catch_unwind(AssertUnwindSafe(|| ptr::drop_in_place(value)));
        }
        // BORROWED cannot happen (a borrowed object is on the stack of a
        // running method, hence not garbage), except at lua_close from inside
        // a method: then the value leaks rather than being dropped under a
        // live reference.
        0
    }
}

/// The native metatable of a class whose instances have `object_mt`:
/// `__gc` drops the value, `__metatable` hides the metatable from
/// `getmetatable`, `[1]` is this toolkit copy's marker, `[2]` `object_mt`.
pub(crate) fn native_metatable<T: 'static>(lua: &Lua, object_mt: &Table) -> mlua::Result<Table> {
    let mt = lua.create_table()?;
    // SAFETY: exec_raw pushes `mt` and `object_mt` at indexes 1 and 2 of a
    // protected call; the closure sets fields of `mt` (may raise
    // out-of-memory: protected) and leaves an empty stack (no results). It
    // owns nothing.
    unsafe {
        lua.exec_raw::<()>((&mt, object_mt), |state| {
            ffi::lua_pushvalue(state, 1);
            ffi::lua_pushcclosure(state, gc::<T>, 1);
            ffi::lua_setfield(state, 1, c"__gc".as_ptr());
            ffi::lua_pushboolean(state, 0);
            ffi::lua_setfield(state, 1, c"__metatable".as_ptr());
            ffi::lua_pushlightuserdata(state, native_marker());
            ffi::lua_rawseti(state, 1, 1);
            ffi::lua_pushvalue(state, 2);
            ffi::lua_rawseti(state, 1, 2);
            ffi::lua_settop(state, 0);
        })?;
    }
    Ok(mt)
}

/// A new native userdata holding `value`, with the class's native metatable.
pub(crate) fn new_native<T: 'static>(
    lua: &Lua,
    native_mt: &Table,
    value: T,
) -> mlua::Result<AnyUserData> {
    // SAFETY: the protected closure allocates the block, writes its header
    // (EMPTY, T's TypeId) and sets the metatable (the allocation may raise:
    // protected, and the closure owns nothing; `value` stays in this frame).
    // It leaves the userdata alone on the stack as the result.
    let ud = unsafe {
        lua.exec_raw::<AnyUserData>(native_mt, |state| {
            let block = ffi::lua_newuserdatauv(state, alloc_size::<T>(), 0);
            let slot = block.cast::<Slot<T>>();
            state_of(slot).cast_mut().write(Cell::new(EMPTY));
            block
                .cast::<u8>()
                .add(TYPE_ID_OFFSET)
                .cast::<TypeId>()
                .write_unaligned(TypeId::of::<T>());
            ffi::lua_pushvalue(state, 1);
            ffi::lua_setmetatable(state, -2);
            ffi::lua_replace(state, 1);
        })?
    };
    // SAFETY: lua_topointer of a full userdata is its block (Lua 5.4), which
    // was sized for the header and an aligned T and is kept alive by `ud`.
    unsafe {
        let slot = ud.to_pointer().cast_mut().cast::<Slot<T>>();
        value_of(slot).write(value);
        (*state_of(slot)).set(FREE);
    }
    Ok(ud)
}

/// The native value of an instance, borrowed for an mlua-based method (see
/// [`crate::Args::check_object`]); the borrow ends when this is dropped.
/// It lives no longer than the call (`'a`): its userdata is kept alive by a
/// copy on the call's Lua stack, since a script could replace `[0]` from a
/// callback while the value is borrowed.
pub struct ObjectMut<'a, T: 'static> {
    slot: *mut Slot<T>,
    value: *mut T,
    _call: PhantomData<&'a ()>,
}

impl<T: 'static> ObjectMut<'_, T> {
    /// # Safety
    /// `slot` is a live `Slot<T>` whose userdata stays on the running
    /// call's stack for at least `'a`.
    pub(crate) unsafe fn new(slot: *mut Slot<T>) -> Result<Self, BorrowError> {
        // SAFETY: forwarded from the caller.
        let value = unsafe { borrow(slot)? };
        Ok(ObjectMut {
            slot,
            value,
            _call: PhantomData,
        })
    }
}

impl<T: 'static> Deref for ObjectMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: borrowed exclusively (state BORROWED) for self's lifetime.
        unsafe { &*self.value }
    }
}

impl<T: 'static> DerefMut for ObjectMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref.
        unsafe { &mut *self.value }
    }
}

impl<T: 'static> Drop for ObjectMut<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the borrow taken in `new`; the block is anchored.
        unsafe { release(self.slot) }
    }
}

/// The native value of argument 1 of a generated C method: the instance
/// table must have the class's object metatable (upvalue 1) and hold at
/// `[0]` a userdata with the class's native metatable (upvalue 2). Raises
/// the stock errors otherwise, as a C method with `luaL_checkudata` would.
/// Leaves the stack as it was, so that absent arguments stay absent.
///
/// # Safety
/// Called first thing by a C closure made by `ClassBuilder::native_method`
/// (which sets the two upvalues). Holds only Copy values: may longjmp.
#[inline(always)]
pub unsafe fn check_self<T: 'static>(state: *mut lua_State) -> *mut Slot<T> {
    unsafe {
        if ffi::lua_type(state, 1) != ffi::LUA_TTABLE || ffi::lua_getmetatable(state, 1) == 0 {
            not_an_instance(state);
        }
        if ffi::lua_rawequal(state, -1, ffi::lua_upvalueindex(1)) == 0 {
            not_an_instance(state);
        }
        ffi::lua_rawgeti(state, 1, 0);
        let block = ffi::lua_touserdata(state, -1);
        if block.is_null()
            || ffi::lua_getmetatable(state, -1) == 0
            || ffi::lua_rawequal(state, -1, ffi::lua_upvalueindex(2)) == 0
        {
            no_native_value(state);
        }
        // The two metatables and [0] (anchor_self pushes it again when the
        // call can run Lua code; otherwise nothing can touch [0] before the
        // call returns).
        ffi::lua_pop(state, 3);
        block.cast::<Slot<T>>()
    }
}

/// Pushes `[0]` of argument 1 again, once the other arguments are read, and
/// checks that it still is the value [`check_self`] found: it stays on the
/// stack until the call returns, so it cannot be collected while borrowed.
/// Needed when the call can run Lua code while it holds the object (an
/// argument check that allocates, a string pushed as a result: allocations
/// can run finalizers, which could replace `[0]`). Pushed after the
/// arguments so that absent ones stay absent. Returns how many values it
/// pushed (1).
///
/// # Safety
/// As for [`check_self`], which returned `slot` in this call.
#[inline(always)]
pub unsafe fn anchor_self<T: 'static>(state: *mut lua_State, slot: *mut Slot<T>) -> c_int {
    unsafe {
        ffi::lua_rawgeti(state, 1, 0);
        if ffi::lua_touserdata(state, -1).cast::<Slot<T>>() != slot {
            no_native_value(state);
        }
    }
    1
}

/// Pushes the class name (`__name` of the object metatable, upvalue 1).
unsafe fn push_class_name(state: *mut lua_State) -> *const std::ffi::c_char {
    unsafe {
        ffi::lua_getfield(state, ffi::lua_upvalueindex(1), c"__name".as_ptr());
        ffi::lua_tolstring(state, -1, ptr::null_mut())
    }
}

/// `calling 'm' on bad self (<Class> expected, got <type>)`.
#[cold]
unsafe fn not_an_instance(state: *mut lua_State) -> ! {
    unsafe {
        let absent = ffi::lua_type(state, 1) == ffi::LUA_TNONE;
        let name = push_class_name(state);
        if absent {
            // Slot 1 now holds the name; say what luaL_typeerror says for a
            // missing value.
            let msg = ffi::lua_pushfstring(state, c"%s expected, got no value".as_ptr(), name);
            ffi::luaL_argerror(state, 1, msg);
        } else {
            crate::raw::luaL_typeerror(state, 1, name);
        }
        ffi::lua_error(state)
    }
}

/// The class's metatable but no native value of the class at `[0]`.
#[cold]
unsafe fn no_native_value(state: *mut lua_State) -> ! {
    unsafe {
        let name = push_class_name(state);
        let msg = ffi::lua_pushfstring(
            state,
            c"%s expected, got %s without its native value at [0]".as_ptr(),
            name,
            name,
        );
        ffi::luaL_argerror(state, 1, msg);
        ffi::lua_error(state)
    }
}

/// An object argument of a native function (`other: &mut T`): argument `n`
/// must be a table with its class's instance metatable and, at `[0]`, a
/// native value of type `T` made by this copy of the toolkit. Raises
/// `bad argument #n to 'f' (<Class> expected, got <type>)` otherwise. Leaves
/// the stack as it was.
///
/// # Safety
/// `state` is the state of a running C function. Holds only Copy values:
/// may longjmp.
#[inline(always)]
pub(crate) unsafe fn check_arg<T: 'static>(state: *mut lua_State, n: c_int) -> *mut Slot<T> {
    unsafe {
        if ffi::lua_type(state, n) != ffi::LUA_TTABLE {
            not_an_object_of::<T>(state, n);
        }
        // Stack: [0], its metatable, the marker, the class's instance
        // metatable, the argument's metatable: 5 values, popped below.
        ffi::lua_rawgeti(state, n, 0);
        let block = ffi::lua_touserdata(state, -1);
        let ok = ffi::lua_type(state, -1) == ffi::LUA_TUSERDATA
            && ffi::lua_getmetatable(state, -1) != 0
            && ffi::lua_rawgeti(state, -1, 1) == ffi::LUA_TLIGHTUSERDATA
            && ffi::lua_touserdata(state, -1) == native_marker()
            // A block of this toolkit: its header can be read; the TypeId
            // says whether it holds a T (and so is big enough for one).
            && ffi::lua_rawlen(state, -3) >= HEADER
            && type_id_of(block.cast::<Slot<T>>()) == TypeId::of::<T>()
            && ffi::lua_rawgeti(state, -2, 2) == ffi::LUA_TTABLE
            && ffi::lua_getmetatable(state, n) != 0
            && ffi::lua_rawequal(state, -1, -2) != 0;
        if !ok {
            not_an_object_of::<T>(state, n);
        }
        ffi::lua_pop(state, 5);
        block.cast::<Slot<T>>()
    }
}

/// Pushes `[0]` of argument `n` again once all arguments are checked, and
/// checks it still is `slot` (see [`anchor_self`]). Returns 1 (pushed).
///
/// # Safety
/// As for [`check_arg`], which returned `slot` for argument `n`.
#[inline(always)]
pub(crate) unsafe fn anchor_arg<T: 'static>(
    state: *mut lua_State,
    n: c_int,
    slot: *mut Slot<T>,
) -> c_int {
    unsafe {
        ffi::lua_rawgeti(state, n, 0);
        if ffi::lua_touserdata(state, -1).cast::<Slot<T>>() != slot {
            not_an_object_of::<T>(state, n);
        }
    }
    1
}

/// `bad argument #n to 'f' (<Class of T> expected, got <type>)`.
#[cold]
unsafe fn not_an_object_of<T: 'static>(state: *mut lua_State, n: c_int) -> ! {
    unsafe {
        let absent = ffi::lua_type(state, n) == ffi::LUA_TNONE;
        // Pushed by a frame of its own that drops the name before returning
        // (this frame may only hold Copy values).
        if push_class_name_of::<T>(state) == crate::stack::PushError::StackOverflow {
            ffi::luaL_checkstack(state, 3, c"error message".as_ptr());
        }
        let name = ffi::lua_tolstring(state, -1, ptr::null_mut());
        if name.is_null() {
            // Out of memory: that error is on top.
            ffi::lua_error(state);
        }
        let name_index = ffi::lua_gettop(state);
        if absent {
            let msg = ffi::lua_pushfstring(state, c"%s expected, got no value".as_ptr(), name);
            ffi::luaL_argerror(state, n, msg);
        }
        // A table of the class (by name) without a value of it at [0].
        if ffi::luaL_getmetafield(state, n, c"__name".as_ptr()) != ffi::LUA_TNIL
            && ffi::lua_rawequal(state, -1, name_index) != 0
        {
            let msg = ffi::lua_pushfstring(
                state,
                c"%s expected, got %s without its native value at [0]".as_ptr(),
                name,
                name,
            );
            ffi::luaL_argerror(state, n, msg);
        }
        crate::raw::luaL_typeerror(state, n, name);
        ffi::lua_error(state)
    }
}

/// Pushes the class name of `T` without raising (see `stack::push_message`).
#[inline(never)]
unsafe fn push_class_name_of<T: 'static>(state: *mut lua_State) -> crate::stack::PushError {
    let name = class_name_of::<T>();
    unsafe { crate::stack::push_message(state, &name) }
}
