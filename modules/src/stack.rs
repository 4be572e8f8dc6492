//! Reading arguments from and pushing results onto the Lua stack directly,
//! for native functions ([`crate::native_fn!`]): no mlua value, no generic
//! argument list, the same C API calls a hand-written C function makes.
//!
//! Two rules keep this sound:
//!
//! * Argument readers ([`Arg::check`]) may raise a Lua error (`luaL_check*`
//!   does), so they and the generated function that calls them hold only
//!   `Copy` values: a longjmp across them skips no destructor. What they
//!   return (`Arg::Checked`) must be `Copy`, so an owned type cannot be an
//!   argument.
//! * Results ([`Push`]) are pushed after the body has returned. Numbers,
//!   booleans and nil cannot raise (a C function starts with `LUA_MINSTACK`
//!   free slots). A string push allocates and may raise out-of-memory, so
//!   when the results own memory (a `String`), or the call holds borrowed
//!   objects to give back, strings are pushed in a protected call, and a
//!   failure is reported back instead of jumping over the frames that must
//!   still clean up.

use std::ffi::{c_int, c_void};

use mlua::ffi::{self, lua_State};

use crate::error::Error;
use crate::object::{self, Slot};

/// An argument type of a native function, read with the auxiliary library's
/// checks: the wording of a failure is `luaL_check*`'s own.
///
/// | type            | like                                      |
/// |-----------------|-------------------------------------------|
/// | `i64`           | `luaL_checkinteger`                       |
/// | `f64`           | `luaL_checknumber`                        |
/// | `&[u8]`         | `luaL_checklstring` (numbers converted)   |
/// | `&str`          | the same, and UTF-8 ("invalid UTF-8 string") |
/// | `bool`          | `lua_toboolean` (never fails)             |
/// | `Option<T>`     | `luaL_opt`: `None` when absent or nil     |
/// | `&mut T`        | an instance of the class of `T` (its native value, borrowed for the call) |
///
/// Borrowed strings point into the Lua string in the argument's stack slot,
/// which stays there for the whole call.
///
/// A call reads every argument ([`Arg::check`]), then takes them for the
/// body ([`Arg::take`], which borrows objects), and gives them back after
/// it ([`Arg::give_back`]).
///
/// # Safety
/// `check` may raise a Lua error (longjmp), so implementations hold only
/// `Copy` values, and `Checked` is `Copy`; `take` and `give_back` never
/// raise.
pub unsafe trait Arg<'a>: Sized {
    /// The argument as read, before the body gets it.
    type Checked: Copy;

    /// True for object arguments: the call holds a borrow while it pushes
    /// the results, so those pushes must not raise.
    const OBJECT: bool = false;

    /// True when reading this argument may allocate (a number converted to a
    /// string), which can run finalizers: objects of the call must then be
    /// anchored (see `anchor`).
    const ALLOCATES: bool = false;

    /// Reads argument `n` of the running C function.
    ///
    /// # Safety
    /// `state` is the state of a running C function; `n` is a stack index
    /// of an argument (which may be absent).
    unsafe fn check(state: *mut lua_State, n: c_int) -> Self::Checked;

    /// When the call can run Lua code (finalizers, from an allocation) while
    /// it holds objects: pushes, once all arguments are checked, what keeps
    /// the argument alive until the call returns, re-checking it; returns
    /// how many values it pushed.
    ///
    /// # Safety
    /// As for `check`, with what `check` returned for argument `n`.
    #[inline(always)]
    unsafe fn anchor(_state: *mut lua_State, _n: c_int, _checked: Self::Checked) -> c_int {
        0
    }

    /// Hands the argument to the body.
    ///
    /// # Safety
    /// `checked` comes from `check` in this call; every successful `take`
    /// is followed by one `give_back`.
    unsafe fn take(checked: Self::Checked) -> Result<Self, Error>;

    /// Ends what `take` began.
    ///
    /// # Safety
    /// After a successful `take` of the same value, once.
    #[inline(always)]
    unsafe fn give_back(_checked: Self::Checked) {}
}

/// An argument whose checked form is the value itself.
macro_rules! plain_arg {
    () => {
        type Checked = Self;
        #[inline(always)]
        unsafe fn take(checked: Self) -> Result<Self, Error> {
            Ok(checked)
        }
    };
}

// SAFETY (all impls below): only Copy locals; luaL_check* raise with the
// stock wording; strings come from the argument's own slot.
unsafe impl Arg<'_> for i64 {
    plain_arg!();
    #[inline(always)]
    unsafe fn check(state: *mut lua_State, n: c_int) -> i64 {
        unsafe { ffi::luaL_checkinteger(state, n) }
    }
}

unsafe impl Arg<'_> for f64 {
    plain_arg!();
    #[inline(always)]
    unsafe fn check(state: *mut lua_State, n: c_int) -> f64 {
        unsafe { ffi::luaL_checknumber(state, n) }
    }
}

unsafe impl Arg<'_> for bool {
    plain_arg!();
    #[inline(always)]
    unsafe fn check(state: *mut lua_State, n: c_int) -> bool {
        unsafe { ffi::lua_toboolean(state, n) != 0 }
    }
}

unsafe impl<'a> Arg<'a> for &'a [u8] {
    plain_arg!();
    const ALLOCATES: bool = true;

    #[inline(always)]
    unsafe fn check(state: *mut lua_State, n: c_int) -> &'a [u8] {
        unsafe {
            let mut len = 0usize;
            // Converts a number in place, as luaL_checkstring does; the
            // string stays in slot n for the rest of the call.
            let p = ffi::luaL_checklstring(state, n, &mut len);
            std::slice::from_raw_parts(p.cast::<u8>(), len)
        }
    }
}

unsafe impl<'a> Arg<'a> for &'a str {
    plain_arg!();
    const ALLOCATES: bool = true;

    #[inline(always)]
    unsafe fn check(state: *mut lua_State, n: c_int) -> &'a str {
        unsafe {
            let bytes = <&[u8]>::check(state, n);
            match std::str::from_utf8(bytes) {
                Ok(s) => s,
                Err(_) => {
                    ffi::luaL_argerror(state, n, c"invalid UTF-8 string".as_ptr());
                    // luaL_argerror does not return.
                    ffi::lua_error(state)
                }
            }
        }
    }
}

/// `Option<T>` is `luaL_opt`: absent or nil gives `None`.
macro_rules! optional_arg {
    ($($t:ty),*) => {$(
        unsafe impl<'a> Arg<'a> for Option<$t> {
            plain_arg!();
            const ALLOCATES: bool = <$t as Arg<'a>>::ALLOCATES;

            #[inline(always)]
            unsafe fn check(state: *mut lua_State, n: c_int) -> Option<$t> {
                unsafe {
                    if ffi::lua_type(state, n) <= ffi::LUA_TNIL {
                        None
                    } else {
                        Some(<$t as Arg<'a>>::check(state, n))
                    }
                }
            }
        }
    )*};
}
optional_arg!(i64, f64, &'a [u8], &'a str);

// SAFETY: check_arg and anchor_arg hold only Copy values; take borrows the
// value through the block's state byte (no raise), give_back ends it.
unsafe impl<'a, T: 'static> Arg<'a> for &'a mut T {
    type Checked = *mut Slot<T>;
    const OBJECT: bool = true;

    #[inline(always)]
    unsafe fn check(state: *mut lua_State, n: c_int) -> *mut Slot<T> {
        unsafe { object::check_arg::<T>(state, n) }
    }

    #[inline(always)]
    unsafe fn anchor(state: *mut lua_State, n: c_int, slot: *mut Slot<T>) -> c_int {
        unsafe { object::anchor_arg(state, n, slot) }
    }

    #[inline(always)]
    unsafe fn take(slot: *mut Slot<T>) -> Result<&'a mut T, Error> {
        // SAFETY: the block stays alive until give_back: reachable from the
        // table in the argument slot while no Lua code can run, anchored on
        // the stack (by `anchor`) when some can. The borrow is exclusive
        // until give_back.
        unsafe {
            object::borrow(slot)
                .map(|value| &mut *value)
                .map_err(object::BorrowError::into_error)
        }
    }

    #[inline(always)]
    unsafe fn give_back(slot: *mut Slot<T>) {
        unsafe { object::release(slot) }
    }
}

/// What went wrong pushing results (the generated function raises it once
/// everything the results owned is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// The error a protected push raised (out of memory) is on top.
    Raised,
    /// The stack cannot grow for the results.
    StackOverflow,
}

/// A result type of a native function: the values it pushes.
///
/// Numbers, booleans and `()`/`None` push without allocating; strings
/// (`&str`, `String`, `&[u8]`, `Vec<u8>`) are copied into Lua; tuples push
/// several results, `Option` pushes nil for `None`.
///
/// # Safety
/// `push` must leave exactly the returned number of values on the stack (or,
/// on failure, what [`PushError`] says) and must not raise when `guarded`
/// is true.
pub unsafe trait Push {
    /// True when pushing may allocate (strings), which can run finalizers.
    const ALLOCATES: bool = false;

    /// Pushes the values; returns how many.
    ///
    /// # Safety
    /// `state` is the state of a running C function with at least 3 free
    /// stack slots per value. `guarded` is true when the caller owns values
    /// with destructors, so that nothing may raise.
    unsafe fn push(self, state: *mut lua_State, guarded: bool) -> Result<c_int, PushError>;
}

// SAFETY: pushes nothing.
unsafe impl Push for () {
    #[inline(always)]
    unsafe fn push(self, _: *mut lua_State, _: bool) -> Result<c_int, PushError> {
        Ok(0)
    }
}

macro_rules! integer_push {
    ($($t:ty),*) => {$(
        // SAFETY: lua_pushinteger does not allocate and cannot raise.
        unsafe impl Push for $t {
            #[inline(always)]
            unsafe fn push(self, state: *mut lua_State, _: bool) -> Result<c_int, PushError> {
                unsafe { ffi::lua_pushinteger(state, self as ffi::lua_Integer) };
                Ok(1)
            }
        }
    )*};
}
// Lossless conversions to lua_Integer.
integer_push!(i64, i32, i16, i8, u32, u16, u8);

// SAFETY: lua_pushinteger/lua_pushnumber do not allocate.
unsafe impl Push for usize {
    #[inline(always)]
    unsafe fn push(self, state: *mut lua_State, _: bool) -> Result<c_int, PushError> {
        unsafe {
            // Sizes beyond i64 (not on 64-bit targets in practice) become
            // floats, as lua_Integer cannot hold them.
            match ffi::lua_Integer::try_from(self) {
                Ok(i) => ffi::lua_pushinteger(state, i),
                Err(_) => ffi::lua_pushnumber(state, self as ffi::lua_Number),
            }
        }
        Ok(1)
    }
}

// SAFETY: lua_pushnumber does not allocate.
unsafe impl Push for f64 {
    #[inline(always)]
    unsafe fn push(self, state: *mut lua_State, _: bool) -> Result<c_int, PushError> {
        unsafe { ffi::lua_pushnumber(state, self) };
        Ok(1)
    }
}

// SAFETY: lua_pushboolean does not allocate.
unsafe impl Push for bool {
    #[inline(always)]
    unsafe fn push(self, state: *mut lua_State, _: bool) -> Result<c_int, PushError> {
        unsafe { ffi::lua_pushboolean(state, c_int::from(self)) };
        Ok(1)
    }
}

// SAFETY: see push_bytes.
unsafe impl Push for &[u8] {
    const ALLOCATES: bool = true;

    #[inline(always)]
    unsafe fn push(self, state: *mut lua_State, guarded: bool) -> Result<c_int, PushError> {
        unsafe { push_bytes(state, self, guarded) }
    }
}

// SAFETY: see push_bytes.
unsafe impl Push for &str {
    const ALLOCATES: bool = true;

    #[inline(always)]
    unsafe fn push(self, state: *mut lua_State, guarded: bool) -> Result<c_int, PushError> {
        unsafe { push_bytes(state, self.as_bytes(), guarded) }
    }
}

// SAFETY: see push_bytes.
unsafe impl Push for String {
    const ALLOCATES: bool = true;

    #[inline(always)]
    unsafe fn push(self, state: *mut lua_State, guarded: bool) -> Result<c_int, PushError> {
        unsafe { push_bytes(state, self.as_bytes(), guarded) }
    }
}

// SAFETY: see push_bytes.
unsafe impl Push for Vec<u8> {
    const ALLOCATES: bool = true;

    #[inline(always)]
    unsafe fn push(self, state: *mut lua_State, guarded: bool) -> Result<c_int, PushError> {
        unsafe { push_bytes(state, &self, guarded) }
    }
}

// SAFETY: nil cannot raise; Some delegates.
unsafe impl<T: Push> Push for Option<T> {
    const ALLOCATES: bool = T::ALLOCATES;

    #[inline(always)]
    unsafe fn push(self, state: *mut lua_State, guarded: bool) -> Result<c_int, PushError> {
        match self {
            Some(v) => unsafe { v.push(state, guarded) },
            None => {
                unsafe { ffi::lua_pushnil(state) };
                Ok(1)
            }
        }
    }
}

macro_rules! tuple_push {
    ($($name:ident),+) => {
        // SAFETY: pushes each element in order; counts add up.
        unsafe impl<$($name: Push),+> Push for ($($name,)+) {
            const ALLOCATES: bool = false $(|| $name::ALLOCATES)+;

            #[inline(always)]
            #[allow(non_snake_case)]
            unsafe fn push(self, state: *mut lua_State, guarded: bool) -> Result<c_int, PushError> {
                let ($($name,)+) = self;
                let mut n = 0;
                $( n += unsafe { $name.push(state, guarded)? }; )+
                Ok(n)
            }
        }
    };
}
tuple_push!(A, B);
tuple_push!(A, B, C);
tuple_push!(A, B, C, D);

/// Pushes a byte string: directly when nothing with a destructor is alive in
/// the calling frames (`guarded` false: an out-of-memory longjmp then skips
/// nothing), else in a protected call.
///
/// # Safety
/// `state` is the state of a running C function.
#[inline(always)]
unsafe fn push_bytes(
    state: *mut lua_State,
    bytes: &[u8],
    guarded: bool,
) -> Result<c_int, PushError> {
    unsafe {
        if guarded {
            protected_push_bytes(state, bytes)
        } else {
            if ffi::lua_checkstack(state, 1) == 0 {
                return Err(PushError::StackOverflow);
            }
            ffi::lua_pushlstring(state, bytes.as_ptr().cast(), bytes.len());
            Ok(1)
        }
    }
}

/// Pushes a copy of `bytes` without ever raising: the copy is made in a
/// protected call; if it fails, the error value is left on top instead.
///
/// # Safety
/// `state` is the state of a running C function.
pub(crate) unsafe fn protected_push_bytes(
    state: *mut lua_State,
    bytes: &[u8],
) -> Result<c_int, PushError> {
    /// Pushes the string described by its two arguments.
    unsafe extern "C-unwind" fn push_copy(state: *mut lua_State) -> c_int {
        // SAFETY: called only below, with a pointer and a length describing
        // bytes that the caller keeps alive during the call. Only Copy
        // values here; lua_pushlstring may raise out-of-memory, which the
        // protected call catches.
        unsafe {
            let p = ffi::lua_touserdata(state, 1);
            let len = ffi::lua_tointeger(state, 2) as usize;
            ffi::lua_pushlstring(state, p.cast_const().cast(), len);
        }
        1
    }
    unsafe {
        if ffi::lua_checkstack(state, 3) == 0 {
            return Err(PushError::StackOverflow);
        }
        ffi::lua_pushcfunction(state, push_copy);
        ffi::lua_pushlightuserdata(state, bytes.as_ptr().cast_mut().cast::<c_void>());
        // A slice's length never exceeds isize::MAX, so it fits.
        ffi::lua_pushinteger(state, bytes.len() as ffi::lua_Integer);
        if ffi::lua_pcall(state, 2, 1, 0) == ffi::LUA_OK {
            Ok(1)
        } else {
            Err(PushError::Raised)
        }
    }
}

/// Pushes `text` for an error the caller raises next. Returns what is then
/// on top: [`PushError::Raised`] (the message, or the out-of-memory error
/// that pushing it raised: as good to raise) or, with no free stack slot,
/// [`PushError::StackOverflow`] (nothing pushed).
///
/// # Safety
/// `state` is the state of a running C function.
pub(crate) unsafe fn push_message(state: *mut lua_State, text: &str) -> PushError {
    match unsafe { protected_push_bytes(state, text.as_bytes()) } {
        Ok(_) | Err(PushError::Raised) => PushError::Raised,
        Err(PushError::StackOverflow) => PushError::StackOverflow,
    }
}

/// The return type of a native body, `Result<R, E>`: whether pushing `R`
/// may allocate.
#[doc(hidden)]
pub trait Returns {
    const ALLOCATES: bool;
}

impl<R: Push, E> Returns for Result<R, E> {
    const ALLOCATES: bool = R::ALLOCATES;
}
