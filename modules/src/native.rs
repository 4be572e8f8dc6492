//! Native functions and methods: Rust bodies with typed arguments compiled
//! into plain `lua_CFunction`s ([`crate::native_fn!`],
//! [`crate::native_method!`]).
//!
//! A call costs what a hand-written C function costs: arguments are read
//! with `luaL_check*` straight from the stack, the body runs, its results are
//! pushed with `lua_push*`. What keeps it sound:
//!
//! 1. **No longjmp across a frame that owns something.** The generated C
//!    function holds only `Copy` values (checked arguments are
//!    `Arg::Checked`, which is `Copy`; the values the body gets are
//!    references or numbers). Argument checks raise from there, exactly like
//!    C. The body's outcome (which may own a `String`) is consumed by
//!    [`complete_ok`] or [`complete_err`], which push results or the error
//!    message without raising when anything is owned or borrowed, and
//!    return a `Copy` [`Status`]; the error is raised afterwards by
//!    [`finish`], by lauxlib itself (`luaL_typeerror`, `luaL_argerror`,
//!    `luaL_where` + `lua_error`), so the wording is Lua's.
//! 2. **No panic crosses into Lua.** The body runs under `catch_unwind`
//!    ([`call`]); a panic becomes the error
//!    `<position>: panic in native function: <message>`.
//! 3. **No aliasing, no dangling.** Objects (a method's `this`, `&mut T`
//!    arguments) are borrowed through the state byte of their block (see
//!    `object.rs`) from before the body until their results are pushed (an
//!    error gives them back before its message is pushed), and stay alive
//!    meanwhile: reachable from their table while no Lua code can run, and
//!    fetched again and kept on the stack when some can (an allocation can
//!    run finalizers). The borrows are given back before anything raises.
//!
//! Bodies get no `&Lua`: they are plain Rust over their arguments. A
//! function that needs mlua (tables, callbacks) uses [`crate::Module::function`].

use std::ffi::c_int;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua::ffi::{self, lua_State};

use crate::error::Error;
use crate::raw::{self, Status as Kind};
use crate::stack::{protected_push_bytes, Push, PushError};

/// A function made by [`crate::native_fn!`]: register it with
/// [`crate::Module::native`].
#[derive(Clone, Copy)]
pub struct NativeFunction {
    entry: ffi::lua_CFunction,
}

impl NativeFunction {
    /// Used by [`crate::native_fn!`] only.
    ///
    /// # Safety
    /// `entry` must be a C function that is sound to call from Lua with any
    /// arguments and without upvalues.
    #[doc(hidden)]
    pub const unsafe fn from_entry(entry: ffi::lua_CFunction) -> NativeFunction {
        NativeFunction { entry }
    }

    /// The C function itself, e.g. to register it with the C API.
    pub fn c_function(self) -> ffi::lua_CFunction {
        self.entry
    }
}

/// A method of class `T` made by [`crate::native_method!`]: register it with
/// [`crate::ClassBuilder::native_method`] of a `Class<T>`.
pub struct NativeMethod<T> {
    entry: ffi::lua_CFunction,
    _class: PhantomData<fn(&mut T)>,
}

impl<T> Clone for NativeMethod<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for NativeMethod<T> {}

impl<T> NativeMethod<T> {
    /// Used by [`crate::native_method!`] only.
    ///
    /// # Safety
    /// `entry` must be a C function that is sound to call from Lua with any
    /// arguments, given upvalue 1 = the object metatable and upvalue 2 = the
    /// native metatable of a `Class<T>`.
    #[doc(hidden)]
    pub const unsafe fn from_entry(entry: ffi::lua_CFunction) -> NativeMethod<T> {
        NativeMethod {
            entry,
            _class: PhantomData,
        }
    }

    pub(crate) fn entry(self) -> ffi::lua_CFunction {
        self.entry
    }
}

/// What [`complete`] left on the stack; `Copy`, so the generated function
/// can raise afterwards with nothing of the body alive.
#[derive(Clone, Copy, Debug)]
#[doc(hidden)]
pub struct Status(Outcome);

#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// The top `n` values are the results.
    Results(c_int),
    /// An error record: its message is on top.
    Error { kind: Kind, arg: c_int },
    /// An error value (out of memory while pushing) is on top.
    Raised,
    /// The stack could not grow for the results.
    StackOverflow,
}

/// Runs a body: its error, or a panic, becomes an [`Error`].
#[doc(hidden)]
#[inline(always)]
pub fn call<R, E: Into<Error>>(body: impl FnOnce() -> Result<R, E>) -> Result<R, Error> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.into()),
        Err(panic) => Err(Error::from_panic(&*panic)),
    }
}

/// Pushes a body's results and drops them. Returns what to do next. Never
/// raises when `holds` (the call holds borrows of objects, given back
/// afterwards: the results may borrow from them) or when `R` has something
/// to drop.
///
/// # Safety
/// `state` is the state of the running generated C function.
#[doc(hidden)]
#[inline(always)]
pub unsafe fn complete_ok<R: Push>(state: *mut lua_State, results: R, holds: bool) -> Status {
    // Strings can be pushed unprotected when nothing in `R` has a destructor
    // to skip and no borrow is to be given back.
    match unsafe { results.push(state, holds || std::mem::needs_drop::<R>()) } {
        Ok(n) => Status(Outcome::Results(n)),
        Err(e) => e.into(),
    }
}

/// Pushes the message of a body's error (or of a panic, or of an object it
/// could not borrow) without raising, and drops the error.
///
/// # Safety
/// `state` is the state of the running generated C function.
#[doc(hidden)]
#[inline(always)]
pub unsafe fn complete_err(state: *mut lua_State, err: Error) -> Status {
    unsafe { push_error(state, err) }
}

impl From<PushError> for Status {
    fn from(e: PushError) -> Status {
        Status(match e {
            PushError::Raised => Outcome::Raised,
            PushError::StackOverflow => Outcome::StackOverflow,
        })
    }
}

#[cold]
unsafe fn push_error(state: *mut lua_State, err: Error) -> Status {
    let (kind, arg, text) = match &err {
        Error::Type { arg, expected } => (Kind::Type, *arg, expected.as_str()),
        Error::Arg { arg, message } => (Kind::Arg, *arg, message.as_str()),
        Error::Runtime(m) => (Kind::Runtime, 0, m.as_str()),
        Error::Message(m) => (Kind::Message, 0, m.as_str()),
    };
    // An absurd argument number becomes 0 rather than wrapping.
    let arg = c_int::try_from(arg).unwrap_or(0);
    match unsafe { protected_push_bytes(state, text.as_bytes()) } {
        Ok(_) => Status(Outcome::Error { kind, arg }),
        Err(e) => e.into(),
    }
}

/// Returns the result count, or raises the error [`complete`] prepared.
/// `pushed` is how many values the generated function pushed before the
/// results (1 for a method's `[0]`).
///
/// # Safety
/// `state` is the state of the running generated C function, whose frame
/// holds only `Copy` values. May longjmp.
#[doc(hidden)]
#[inline(always)]
pub unsafe fn finish(state: *mut lua_State, status: Status, pushed: c_int) -> c_int {
    match status.0 {
        Outcome::Results(n) => n,
        other => unsafe { raise(state, other, pushed) },
    }
}

#[cold]
unsafe fn raise(state: *mut lua_State, outcome: Outcome, pushed: c_int) -> ! {
    unsafe {
        match outcome {
            Outcome::Error { kind, arg } => {
                let top = ffi::lua_gettop(state);
                let nargs = top - 1 - pushed;
                raw::raise_record(state, kind, arg, nargs, top)
            }
            Outcome::StackOverflow => {
                ffi::luaL_checkstack(state, 3, c"results".as_ptr());
                ffi::lua_pushstring(state, c"stack overflow (results)".as_ptr());
                ffi::lua_error(state)
            }
            Outcome::Raised | Outcome::Results(_) => ffi::lua_error(state),
        }
    }
}

/// Defines a native function: a Rust body with typed arguments, compiled to
/// a plain `lua_CFunction` that costs what the same function written in C
/// costs.
///
/// ```ignore
/// luahost_modules::native_fn! {
///     /// len_plus(s, n) -> #s + n
///     fn len_plus(s: &[u8], n: i64) -> Result<i64> {
///         Ok(s.len() as i64 + n)
///     }
/// }
/// // in module!: m.native("len_plus", len_plus)?;
/// ```
///
/// Arguments are numbered from 1 in order and read like `luaL_check*`
/// (see [`crate::Arg`]: `i64`, `f64`, `bool`, `&str`, `&[u8]`, `Option<_>`,
/// and `&mut T` for an instance of the class of `T`); the return type is
/// `Result<R, E>` with `R:` [`crate::Push`] and `E: Into<Error>`. The item
/// defined is a `const` [`NativeFunction`].
#[macro_export]
macro_rules! native_fn {
    ($(
        $(#[$attr:meta])*
        $vis:vis fn $name:ident $(<$($lt:lifetime),+ $(,)?>)? (
            $($arg:ident : $ty:ty),* $(,)?
        ) -> $ret:ty $body:block
    )+) => {$(
        $(#[$attr])*
        #[allow(non_upper_case_globals)]
        $vis const $name: $crate::NativeFunction = {
            #[inline(always)]
            fn body $(<$($lt),+>)? ($($arg: $ty),*) -> $ret $body

            #[allow(unused_mut, unused_variables, unused_assignments, unused_labels)]
            #[allow(clippy::extra_unused_lifetimes, clippy::needless_lifetimes)]
            unsafe extern "C-unwind" fn entry $(<$($lt),+>)? (
                state: *mut $crate::__private::lua_State,
            ) -> ::core::ffi::c_int {
                // SAFETY: Lua calls C functions with a valid state. This
                // frame holds only Copy values (checked arguments, borrowed
                // references, counters) whenever anything can raise: the
                // checks and anchors, and `finish`, once `complete` has
                // consumed the outcome and the borrows are given back.
                unsafe {
                    let mut _n: ::core::ffi::c_int = 0;
                    $(
                        _n += 1;
                        let $arg = <$ty as $crate::Arg>::check(state, _n);
                    )*
                    // Objects are anchored when Lua code (finalizers) can run
                    // while the call holds them: checks or pushes that
                    // allocate.
                    let _anchor = false
                        $(|| <$ty as $crate::Arg>::ALLOCATES)*
                        || <$ret as $crate::__private::Returns>::ALLOCATES;
                    let mut _pushed: ::core::ffi::c_int = 0;
                    if _anchor {
                        let mut _n: ::core::ffi::c_int = 0;
                        $(
                            _n += 1;
                            _pushed += <$ty as $crate::Arg>::anchor(state, _n, $arg);
                        )*
                    }
                    let _holds = false $(|| <$ty as $crate::Arg>::OBJECT)*;
                    let _checked = ($($arg,)*);
                    let mut _taken: usize = 0;
                    let outcome = 'run: {
                        $(
                            let $arg = match <$ty as $crate::Arg>::take($arg) {
                                ::core::result::Result::Ok(v) => v,
                                ::core::result::Result::Err(e) => {
                                    break 'run ::core::result::Result::Err(e)
                                }
                            };
                            _taken += 1;
                        )*
                        $crate::__private::call(move || body($($arg),*))
                    };
                    let _taken = _taken;
                    let give_back = move || {
                        let ($($arg,)*) = _checked;
                        let mut _i: usize = 0;
                        $(
                            if _i < _taken {
                                <$ty as $crate::Arg>::give_back($arg);
                            }
                            _i += 1;
                        )*
                    };
                    // Results may borrow from the objects: give them back
                    // after pushing. An error's message does not: give them
                    // back first (pushing it allocates).
                    let status = match outcome {
                        ::core::result::Result::Ok(results) => {
                            let status = $crate::__private::complete_ok(state, results, _holds);
                            give_back();
                            status
                        }
                        ::core::result::Result::Err(err) => {
                            give_back();
                            $crate::__private::complete_err(state, err)
                        }
                    };
                    $crate::__private::finish(state, status, _pushed)
                }
            }
            // SAFETY: `entry` reads only its arguments and uses no upvalues.
            unsafe { $crate::NativeFunction::from_entry(entry) }
        };
    )+};
}

/// Defines a native method of a class: the first parameter is the object
/// (`this: &mut T`), found at `[0]` of the instance table like a C method
/// finds it, the others are read like [`crate::native_fn!`]'s (numbered from
/// 2; Lua's messages renumber them from 1 for `obj:m(...)` calls).
///
/// ```ignore
/// luahost_modules::native_method! {
///     fn add(this: &mut Counter, n: Option<i64>) -> Result<i64> {
///         this.value += n.unwrap_or(1);
///         Ok(this.value)
///     }
/// }
/// // m.class::<Counter>("Counter")?.native_method("add", add)?
/// ```
///
/// The item defined is a `const` [`NativeMethod<T>`], which only a
/// `Class<T>` accepts.
#[macro_export]
macro_rules! native_method {
    ($(
        $(#[$attr:meta])*
        $vis:vis fn $name:ident $(<$($lt:lifetime),+ $(,)?>)? (
            $this:ident : &mut $class:ty $(, $arg:ident : $ty:ty)* $(,)?
        ) -> $ret:ty $body:block
    )+) => {$(
        $(#[$attr])*
        #[allow(non_upper_case_globals)]
        $vis const $name: $crate::NativeMethod<$class> = {
            #[inline(always)]
            fn body $(<$($lt),+>)? ($this: &mut $class $(, $arg: $ty)*) -> $ret $body

            #[allow(unused_mut, unused_variables, unused_assignments, unused_labels)]
            #[allow(clippy::extra_unused_lifetimes, clippy::needless_lifetimes)]
            unsafe extern "C-unwind" fn entry $(<$($lt),+>)? (
                state: *mut $crate::__private::lua_State,
            ) -> ::core::ffi::c_int {
                // SAFETY: as for native_fn!, and the closure was made by
                // ClassBuilder::native_method with the class's metatables as
                // upvalues 1 and 2, which check_self relies on.
                unsafe {
                    let _self = $crate::__private::check_self::<$class>(state);
                    let mut _n: ::core::ffi::c_int = 1;
                    $(
                        _n += 1;
                        let $arg = <$ty as $crate::Arg>::check(state, _n);
                    )*
                    // As in native_fn!.
                    let _anchor = false
                        $(|| <$ty as $crate::Arg>::ALLOCATES)*
                        || <$ret as $crate::__private::Returns>::ALLOCATES;
                    let mut _pushed: ::core::ffi::c_int = 0;
                    if _anchor {
                        _pushed = $crate::__private::anchor_self::<$class>(state, _self);
                        let mut _n: ::core::ffi::c_int = 1;
                        $(
                            _n += 1;
                            _pushed += <$ty as $crate::Arg>::anchor(state, _n, $arg);
                        )*
                    }
                    let _checked = ($($arg,)*);
                    let mut _self_taken = false;
                    let mut _taken: usize = 0;
                    let outcome = 'run: {
                        let $this = match <&mut $class as $crate::Arg>::take(_self) {
                            ::core::result::Result::Ok(v) => v,
                            ::core::result::Result::Err(e) => {
                                break 'run ::core::result::Result::Err(e)
                            }
                        };
                        _self_taken = true;
                        $(
                            let $arg = match <$ty as $crate::Arg>::take($arg) {
                                ::core::result::Result::Ok(v) => v,
                                ::core::result::Result::Err(e) => {
                                    break 'run ::core::result::Result::Err(e)
                                }
                            };
                            _taken += 1;
                        )*
                        $crate::__private::call(move || body($this $(, $arg)*))
                    };
                    let (_self_taken, _taken) = (_self_taken, _taken);
                    let give_back = move || {
                        let ($($arg,)*) = _checked;
                        let mut _i: usize = 0;
                        $(
                            if _i < _taken {
                                <$ty as $crate::Arg>::give_back($arg);
                            }
                            _i += 1;
                        )*
                        if _self_taken {
                            <&mut $class as $crate::Arg>::give_back(_self);
                        }
                    };
                    let status = match outcome {
                        ::core::result::Result::Ok(results) => {
                            let status = $crate::__private::complete_ok(state, results, true);
                            give_back();
                            status
                        }
                        ::core::result::Result::Err(err) => {
                            give_back();
                            $crate::__private::complete_err(state, err)
                        }
                    };
                    $crate::__private::finish(state, status, _pushed)
                }
            }
            // SAFETY: `entry` relies on exactly the upvalues native_method sets.
            unsafe { $crate::NativeMethod::<$class>::from_entry(entry) }
        };
    )+};
}
