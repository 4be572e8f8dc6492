//! The native value of a class instance: a Lua full userdata holding a `T`,
//! stored at `[0]` of the instance table.
//!
//! The userdata's block holds a [`Slot`]: a state byte and the value. Its
//! metatable (the class's *native metatable*) has a `__gc` that drops the
//! value, and `__metatable = false` so Lua code cannot reach it. Both the
//! generated C methods ([`crate::native_method!`]) and the mlua-based
//! methods ([`crate::Args::check_object`]) find the value the same way: the
//! userdata's metatable must be the class's native metatable, and the state
//! byte hands out one borrow at a time (a method that calls back into Lua
//! cannot have the same object borrowed a second time).
//!
//! As with any C module (`luaL_checkudata`), the debug library can defeat
//! the metatable check (`debug.setmetatable`); ordinary Lua code cannot.

use std::cell::{Cell, UnsafeCell};
use std::ffi::{c_int, c_void};
use std::mem::{align_of, size_of, MaybeUninit};
use std::ops::{Deref, DerefMut};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

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

/// The layout of the userdata block (after alignment). Public only so that
/// generated methods can pass it along; nothing of it is accessible.
#[repr(C)]
#[doc(hidden)]
pub struct Slot<T> {
    state: Cell<u8>,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// Bytes to allocate so that an aligned `Slot<T>` fits: Lua aligns userdata
/// blocks for its own types only (8 bytes on common targets).
const fn alloc_size<T>() -> usize {
    size_of::<Slot<T>>() + align_of::<Slot<T>>() - 1
}

/// The aligned slot inside a userdata block. Deterministic, so every reader
/// finds the same address (Lua never moves a userdata).
#[inline(always)]
fn slot_at<T>(block: *mut c_void) -> *mut Slot<T> {
    let align = align_of::<Slot<T>>();
    let offset = (block as usize).wrapping_neg() & (align - 1);
    block.cast::<u8>().wrapping_add(offset).cast()
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
        match (*slot).state.get() {
            FREE => {
                (*slot).state.set(BORROWED);
                Ok((*slot).value.get().cast::<T>())
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
        if (*slot).state.get() == BORROWED {
            (*slot).state.set(FREE);
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
        let slot = slot_at::<T>(ffi::lua_touserdata(state, 1));
        let was = (*slot).state.replace(DEAD);
        if was == FREE {
            // A panicking Drop must not cross into Lua; the value is gone
            // either way.
            let value = (*slot).value.get().cast::<T>();
            let _ = catch_unwind(AssertUnwindSafe(|| ptr::drop_in_place(value)));
        }
        // BORROWED cannot happen (a borrowed object is on the stack of a
        // running method, hence not garbage), except at lua_close from inside
        // a method: then the value leaks rather than being dropped under a
        // live reference.
        0
    }
}

/// The native metatable of a class: `__gc` drops the value, `__metatable`
/// hides the metatable from `getmetatable`.
pub(crate) fn native_metatable<T: 'static>(lua: &Lua) -> mlua::Result<Table> {
    let mt = lua.create_table()?;
    // SAFETY: exec_raw pushes `mt` at index 1 of a protected call; the
    // closure sets two fields (may raise out-of-memory: protected) and leaves
    // an empty stack (no results). It owns nothing.
    unsafe {
        lua.exec_raw::<()>(&mt, |state| {
            ffi::lua_pushvalue(state, 1);
            ffi::lua_pushcclosure(state, gc::<T>, 1);
            ffi::lua_setfield(state, 1, c"__gc".as_ptr());
            ffi::lua_pushboolean(state, 0);
            ffi::lua_setfield(state, 1, c"__metatable".as_ptr());
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
    // SAFETY: the protected closure allocates the block, marks it EMPTY and
    // sets the metatable (the allocation may raise: protected, and the
    // closure owns nothing; `value` stays in this frame). It leaves the
    // userdata alone on the stack as the result.
    let ud = unsafe {
        lua.exec_raw::<AnyUserData>(native_mt, |state| {
            let block = ffi::lua_newuserdatauv(state, alloc_size::<T>(), 0);
            let slot = slot_at::<T>(block);
            ptr::addr_of_mut!((*slot).state).write(Cell::new(EMPTY));
            ffi::lua_pushvalue(state, 1);
            ffi::lua_setmetatable(state, -2);
            ffi::lua_replace(state, 1);
        })?
    };
    // SAFETY: lua_topointer of a full userdata is its block (Lua 5.4), which
    // was sized for an aligned Slot<T> and is kept alive by `ud`.
    unsafe {
        let slot = slot_at::<T>(ud.to_pointer().cast_mut());
        (*slot).value.get().cast::<T>().write(value);
        (*slot).state.set(FREE);
    }
    Ok(ud)
}

/// The slot of `ud` if it is a native value of the class whose native
/// metatable is `native_mt`.
pub(crate) fn slot_of<T: 'static>(
    lua: &Lua,
    ud: &AnyUserData,
    native_mt: &Table,
) -> mlua::Result<Option<*mut Slot<T>>> {
    // SAFETY: the closure compares the metatable of argument 1 with argument
    // 2 (no allocation, cannot raise) and returns one boolean.
    let ours = unsafe {
        lua.exec_raw::<bool>((ud, native_mt), |state| {
            let same = ffi::lua_getmetatable(state, 1) != 0 && ffi::lua_rawequal(state, -1, 2) != 0;
            ffi::lua_settop(state, 0);
            ffi::lua_pushboolean(state, c_int::from(same));
        })?
    };
    Ok(ours.then(|| slot_at::<T>(ud.to_pointer().cast_mut())))
}

/// The native value of an instance, borrowed for an mlua-based method (see
/// [`crate::Args::check_object`]); the borrow ends when this is dropped.
pub struct ObjectMut<T: 'static> {
    slot: *mut Slot<T>,
    value: *mut T,
    /// Keeps the userdata alive while borrowed (a script could replace
    /// `[0]` from a callback).
    _anchor: AnyUserData,
}

impl<T: 'static> ObjectMut<T> {
    pub(crate) fn new(slot: *mut Slot<T>, anchor: AnyUserData) -> Result<Self, BorrowError> {
        // SAFETY: `slot` belongs to `anchor`'s block, alive while `anchor` is.
        let value = unsafe { borrow(slot)? };
        Ok(ObjectMut {
            slot,
            value,
            _anchor: anchor,
        })
    }
}

impl<T: 'static> Deref for ObjectMut<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: borrowed exclusively (state BORROWED) for self's lifetime.
        unsafe { &*self.value }
    }
}

impl<T: 'static> DerefMut for ObjectMut<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref.
        unsafe { &mut *self.value }
    }
}

impl<T: 'static> Drop for ObjectMut<T> {
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
        // The two metatables and [0]. Until the body has run, [0] stays
        // reachable through the table in slot 1 unless something runs Lua
        // code (a finalizer, from an allocation): see anchor_self.
        ffi::lua_pop(state, 3);
        slot_at::<T>(block)
    }
}

/// Pushes `[0]` of argument 1 again, once the other arguments are read, and
/// checks that it still is the value [`check_self`] found: it stays on the
/// stack for the call. Needed when an argument check allocated (a number
/// converted to a string): that can run finalizers, which could replace
/// `[0]` and have the old value collected. Returns how many values it
/// pushed (1).
///
/// # Safety
/// As for [`check_self`], which returned `slot` in this call.
#[inline(always)]
pub unsafe fn anchor_self<T: 'static>(state: *mut lua_State, slot: *mut Slot<T>) -> c_int {
    unsafe {
        ffi::lua_rawgeti(state, 1, 0);
        if slot_at::<T>(ffi::lua_touserdata(state, -1)) != slot {
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
