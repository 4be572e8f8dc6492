//! Native functions that wait without blocking: [`Module::async_function`].
//!
//! # How a call runs
//!
//! The module owns one background thread running a tokio current-thread
//! runtime (its own copy of tokio, see [`runtime`]). Every call of an async
//! function spawns its future there; what the Lua side does depends on where
//! the call happens, which the host answers through
//! [`HostApiV1::wait_mode`](crate::host_abi::HostApiV1):
//!
//! * **In a luahost context that may yield** (action, service, task, init,
//!   callback): the trampoline hands the pending operation to the host's
//!   `await` function through `lua_callk`. The host suspends the coroutine;
//!   the worker serves other work; the module's thread wakes the host's waker
//!   when the future completes; the host resumes the coroutine, which comes
//!   back into [`continuation`], which takes the result.
//! * **Outside luahost** (stock `lua5.4`, HAProxy) and in a lua-load body:
//!   the calling thread blocks until the future completes.
//! * **In a fetch or converter, a script's own coroutine, or under a C call
//!   that cannot yield**: a Lua error, before anything is started.
//!
//! Why a thread of its own rather than polling on the host's worker: the
//! module's futures use the module's tokio (timers, sockets), whose reactor
//! only a runtime of that copy can drive; the host's runtime is another copy.
//! With the future on the module's thread, the contract only needs "is it
//! done" and a waker, both plain C.
//!
//! # Invariants of the unsafe code
//!
//! As in `raw.rs`: [`async_trampoline`] and [`continuation`] hold only Copy
//! values while calling Lua functions that may raise or yield (`lua_call`,
//! `lua_callk`, `luaL_checkstack`, `finish`), so a longjmp or a yield across
//! them skips no destructor. Rust bodies run inside mlua functions under
//! `catch_unwind` (crate::module::inner_function), and futures under
//! `catch_unwind` on the module thread ([`Timed`]).

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use mlua::ffi::{self, lua_State};
use mlua::{IntoLuaMulti, Lua, MultiValue, Value};

use crate::args::Args;
use crate::error::{Error, Result};
use crate::host_abi::{
    self, OpV1, OpVtableV1, WakerV1, POLL_PENDING, POLL_READY, WAIT_BLOCK, WAIT_REFUSED_COROUTINE,
    WAIT_REFUSED_C_CALL, WAIT_REFUSED_FETCH, WAIT_YIELD,
};
use crate::module::{inner_function, Module};
use crate::raw;

/// `wait_mode` value for a host that says "yield" but has no `await`
/// function in its registry: a broken host, reported as an error.
const WAIT_BROKEN_HOST: c_int = -1;

thread_local! {
    /// The wait mode the trampoline found, read by the start function it
    /// calls right after (same thread, nothing runs in between).
    static CALL_MODE: Cell<c_int> = const { Cell::new(WAIT_BLOCK) };
}

/// Its address marks "started, pending" results of a start function.
static PENDING_MARKER: u8 = 0;

fn pending_marker() -> *mut c_void {
    ptr::addr_of!(PENDING_MARKER).cast_mut().cast()
}

impl Module<'_> {
    /// Adds a function that waits without blocking in luahost.
    ///
    /// `body` runs when the function is called: it checks the arguments
    /// (errors are worded as for [`Module::function`]) and returns the
    /// future doing the work. The future runs on the module's own tokio
    /// thread, so it must be `Send` and own its data; its output is
    /// converted to Lua values in the caller's state.
    ///
    /// ```no_run
    /// # use luahost_modules::Module;
    /// # fn f(m: &Module<'_>) -> luahost_modules::Result<()> {
    /// m.async_function("sleep", |_, args| {
    ///     let ms = args.check_integer(1)?.max(0) as u64;
    ///     Ok(async move {
    ///         tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    ///         Ok(ms)
    ///     })
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn async_function<F, Fut, R>(&self, name: &str, body: F) -> Result<()>
    where
        F: Fn(&Lua, Args) -> Result<Fut> + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        R: IntoLuaMulti + Send + 'static,
    {
        let f = async_function(self.lua(), body)?;
        self.exports().raw_set(name, f)?;
        Ok(())
    }
}

/// Makes the Lua function of [`Module::async_function`].
pub fn async_function<F, Fut, R>(lua: &Lua, body: F) -> Result<mlua::Function>
where
    F: Fn(&Lua, Args) -> Result<Fut> + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
    R: IntoLuaMulti + Send + 'static,
{
    let start = inner_function(lua, move |lua, args| start(lua, args, &body))?;
    let collect = inner_function(lua, |lua, args| {
        let pending = match args.get(1) {
            Value::UserData(ud) => ud,
            _ => return Err(Error::message("luahost_modules: no pending call")),
        };
        let pending = pending
            .borrow::<Pending<R>>()
            .map_err(|_| Error::message("luahost_modules: no pending call"))?;
        let shared = pending.shared.clone();
        drop(pending);
        let outcome = shared.take();
        charge_time(lua, &shared);
        outcome?.into_lua_multi(lua).map_err(Error::from)
    })?;
    // SAFETY: exec_raw pushes both functions on the running state and runs
    // the closure in protected mode; lua_pushcclosure pops them as upvalues
    // 1 and 2 and pushes the closure, which exec_raw converts back.
    Ok(unsafe {
        lua.exec_raw::<mlua::Function>((start, collect), |state| {
            ffi::lua_pushcclosure(state, async_trampoline, 2);
        })
    }?)
}

/// The start function's body: checks the mode, makes the future and spawns
/// it; then either blocks for the result or returns a pending record.
fn start<F, Fut, R>(lua: &Lua, args: Args, body: &F) -> Result<MultiValue>
where
    F: Fn(&Lua, Args) -> Result<Fut>,
    Fut: Future<Output = Result<R>> + Send + 'static,
    R: IntoLuaMulti + Send + 'static,
{
    let mode = CALL_MODE.with(|m| m.replace(WAIT_BLOCK));
    match mode {
        WAIT_YIELD | WAIT_BLOCK => {}
        WAIT_REFUSED_FETCH => {
            return Err(Error::runtime(
                "cannot wait in a sample fetch or converter \
                 (call it from an action, service, task or callback)",
            ))
        }
        WAIT_REFUSED_COROUTINE => {
            return Err(Error::runtime(
                "cannot wait in a coroutine created by the script \
                 (call it from the action, service or task itself)",
            ))
        }
        WAIT_REFUSED_C_CALL => {
            return Err(Error::runtime(
                "cannot wait here: the call is inside a C function that cannot yield",
            ))
        }
        _ => {
            return Err(Error::runtime(
                "luahost host contract: no await function in the registry",
            ))
        }
    }
    let future = body(lua, args)?;
    let handle = runtime()?;
    let shared = Arc::new(Shared::<R>::new());
    let task = handle.spawn(Timed {
        inner: Some(Box::pin(future)),
        shared: shared.clone(),
    });
    if mode == WAIT_BLOCK {
        drop(task);
        let outcome = shared.wait_blocking();
        charge_time(lua, &shared);
        return outcome?.into_lua_multi(lua).map_err(Error::from);
    }
    let op = Box::into_raw(Box::new(HostOp {
        header: OpV1 {
            vtable: &HostOp::<R>::VTABLE,
        },
        shared: shared.clone(),
        abort: task.abort_handle(),
    }));
    // From here the op is owned by the Pending value until the host polls
    // it (Pending's Drop frees it if the host never did).
    // If making the userdata fails, the Pending value is dropped with the
    // error, which releases the op (the host never saw it).
    let pending = lua.create_any_userdata(Pending { shared, op })?;
    Ok(MultiValue::from_vec(vec![
        Value::LightUserData(mlua::LightUserData(pending_marker())),
        Value::UserData(pending),
        Value::LightUserData(mlua::LightUserData(op.cast())),
    ]))
}

/// Charges the time the future ran on the module thread to the running
/// context (luahost only).
fn charge_time<R>(lua: &Lua, shared: &Shared<R>) {
    if let Some(api) = crate::host::api(lua) {
        let ns = shared.run_ns.swap(0, Ordering::Relaxed);
        // SAFETY: a host function of the contract; it does not unwind.
        unsafe { (api.charge_time)(ns) };
    }
}

/// The C function Lua code calls: upvalue 1 is the start function, 2 the
/// collect function.
unsafe extern "C-unwind" fn async_trampoline(state: *mut lua_State) -> c_int {
    // SAFETY: Lua calls C functions with a valid state; upvalues as made by
    // `async_function`. Only Copy values live in this frame.
    unsafe {
        let nargs = ffi::lua_gettop(state);
        ffi::luaL_checkstack(state, nargs + 8, c"too many arguments".as_ptr());
        let mut mode = match host_abi::lookup(state) {
            Some(api) => (api.wait_mode)(state),
            None => WAIT_BLOCK,
        };
        // Slot nargs + 1: the host's await function (or nil).
        ffi::lua_getfield(state, ffi::LUA_REGISTRYINDEX, host_abi::AWAIT_KEY.as_ptr());
        if mode == WAIT_YIELD && ffi::lua_type(state, -1) != ffi::LUA_TFUNCTION {
            mode = WAIT_BROKEN_HOST;
        }
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
        for i in 1..=nargs {
            ffi::lua_pushvalue(state, i);
        }
        CALL_MODE.with(|m| m.set(mode));
        ffi::lua_call(state, nargs, ffi::LUA_MULTRET);
        let first = nargs + 2;
        let nresults = ffi::lua_gettop(state) - (nargs + 1);
        let pending = nresults == 3
            && ffi::lua_type(state, first) == ffi::LUA_TLIGHTUSERDATA
            && ffi::lua_touserdata(state, first) == pending_marker();
        if !pending {
            // Results of a blocking call, or an error record.
            return raw::finish(state, nargs + 1);
        }
        // Stack: args, await, marker, pending, op. Call await(op); the host
        // suspends this coroutine until the operation is ready.
        ffi::lua_pushvalue(state, nargs + 1);
        ffi::lua_pushvalue(state, first + 2);
        ffi::lua_callk(state, 1, 0, nargs as ffi::lua_KContext, Some(continuation));
        continuation(state, ffi::LUA_OK, nargs as ffi::lua_KContext)
    }
}

/// Where the trampoline goes on once the host's await returned (after a
/// yield or not): collects the result.
unsafe extern "C-unwind" fn continuation(
    state: *mut lua_State,
    _status: c_int,
    ctx: ffi::lua_KContext,
) -> c_int {
    // SAFETY: the stack is as the trampoline left it (await consumed its
    // function and argument, returned no value); only Copy values here.
    unsafe {
        let nargs = ctx as c_int;
        let pending_index = nargs + 3;
        ffi::lua_settop(state, nargs + 4);
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(2));
        ffi::lua_pushvalue(state, pending_index);
        ffi::lua_call(state, 1, ffi::LUA_MULTRET);
        raw::finish(state, nargs + 4)
    }
}

/// Where a call's outcome meets its waiters.
struct Shared<R> {
    slot: Mutex<Slot<R>>,
    done: Condvar,
    /// Time the future spent being polled, not yet charged.
    run_ns: AtomicU64,
    /// The host has polled the op: it owns it now.
    host_owns: AtomicBool,
}

enum Slot<R> {
    Running(Option<OwnedWaker>),
    Finished(Option<Result<R>>),
}

impl<R> Shared<R> {
    fn new() -> Self {
        Shared {
            slot: Mutex::new(Slot::Running(None)),
            done: Condvar::new(),
            run_ns: AtomicU64::new(0),
            host_owns: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot<R>> {
        // A panic while holding the lock cannot leave the slot half-written
        // (every write is one assignment): go on with it.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn complete(&self, outcome: Result<R>) {
        let waker = {
            let mut slot = self.lock();
            match std::mem::replace(&mut *slot, Slot::Finished(Some(outcome))) {
                Slot::Running(w) => w,
                Slot::Finished(_) => None,
            }
        };
        self.done.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn is_finished(&self) -> bool {
        matches!(*self.lock(), Slot::Finished(_))
    }

    fn take(&self) -> Result<R> {
        match &mut *self.lock() {
            Slot::Finished(outcome) => outcome
                .take()
                .unwrap_or_else(|| Err(Error::message("luahost_modules: result already taken"))),
            Slot::Running(_) => Err(Error::message(
                "luahost_modules: the host resumed a call that is not finished",
            )),
        }
    }

    fn wait_blocking(&self) -> Result<R> {
        let mut slot = self.lock();
        loop {
            if let Slot::Finished(outcome) = &mut *slot {
                return outcome.take().unwrap_or_else(|| {
                    Err(Error::message("luahost_modules: result already taken"))
                });
            }
            slot = self.done.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A clone of the host's waker, owned by the module.
struct OwnedWaker(WakerV1);

// SAFETY: the contract makes wakers callable from any thread.
unsafe impl Send for OwnedWaker {}

impl OwnedWaker {
    /// # Safety
    /// `w` is a valid borrowed waker of the contract.
    unsafe fn clone_from(w: &WakerV1) -> OwnedWaker {
        unsafe { OwnedWaker(((*w.vtable).clone)(w.data)) }
    }

    fn wake(self) {
        let w = std::mem::ManuallyDrop::new(self);
        // SAFETY: an owned clone, consumed exactly once (ManuallyDrop
        // keeps Drop from consuming it again).
        unsafe { ((*w.0.vtable).wake)(w.0.data) }
    }
}

impl Drop for OwnedWaker {
    fn drop(&mut self) {
        // SAFETY: an owned clone, consumed once here.
        unsafe { ((*self.0.vtable).drop)(self.0.data) }
    }
}

/// The future of a call as it runs on the module thread: measures its
/// polls, turns a panic into an error, drops the future once it is done
/// (before anyone learns of the result, so its resources are gone by then)
/// and publishes the outcome.
struct Timed<Fut, R> {
    inner: Option<Pin<Box<Fut>>>,
    shared: Arc<Shared<R>>,
}

impl<Fut: Future<Output = Result<R>>, R> Future for Timed<Fut, R> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(());
        };
        let started = Instant::now();
        let polled = catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx)));
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.shared.run_ns.fetch_add(ns, Ordering::Relaxed);
        let outcome = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(outcome)) => outcome,
            Err(panic) => Err(Error::runtime(format!(
                "panic in native function: {}",
                crate::module::panic_text(&*panic)
            ))),
        };
        // A panicking destructor must not lose the outcome either.
        let dropped = catch_unwind(AssertUnwindSafe(|| self.inner = None));
        let outcome = match dropped {
            Ok(()) => outcome,
            Err(_) => Err(Error::runtime(
                "panic in native function: dropping its future",
            )),
        };
        self.shared.complete(outcome);
        Poll::Ready(())
    }
}

/// What the host gets: the contract's header, then the module's data.
#[repr(C)]
struct HostOp<R> {
    header: OpV1,
    shared: Arc<Shared<R>>,
    abort: tokio::task::AbortHandle,
}

impl<R> HostOp<R> {
    const VTABLE: OpVtableV1 = OpVtableV1 {
        poll: poll_op::<R>,
        release: release_op::<R>,
    };
}

unsafe extern "C" fn poll_op<R>(op: *mut OpV1, waker: *const WakerV1) -> c_int {
    // SAFETY: the host passes an op made by `start` (HostOp<R> starts with
    // its header) that it has not released, and a valid borrowed waker.
    let (op, waker) = unsafe { (&*(op as *const HostOp<R>), &*waker) };
    op.shared.host_owns.store(true, Ordering::Release);
    let mut slot = op.shared.lock();
    match &mut *slot {
        Slot::Finished(_) => POLL_READY,
        Slot::Running(kept) => {
            // SAFETY: `waker` is valid for this call.
            *kept = Some(unsafe { OwnedWaker::clone_from(waker) });
            POLL_PENDING
        }
    }
}

unsafe extern "C" fn release_op<R>(op: *mut OpV1) {
    // SAFETY: made by Box::into_raw in `start`; released once (contract).
    let op = unsafe { Box::from_raw(op as *mut HostOp<R>) };
    if !op.shared.is_finished() {
        // Cancelled: the runtime drops the future; the waker kept for the
        // host goes now.
        op.abort.abort();
        if let Slot::Running(w) = &mut *op.shared.lock() {
            w.take();
        }
    }
}

/// The Lua-side handle of a pending call: the collect function takes the
/// outcome from it.
struct Pending<R> {
    shared: Arc<Shared<R>>,
    /// The op handed to the host, freed here if the host never polled it
    /// (the call failed between start and await).
    op: *mut HostOp<R>,
}

impl<R> Drop for Pending<R> {
    fn drop(&mut self) {
        if !self.shared.host_owns.load(Ordering::Acquire) {
            // SAFETY: the host never took the op, so nothing else frees it.
            unsafe { release_op::<R>(self.op.cast()) };
        }
    }
}

/// The module's tokio runtime: one thread, started on first use (again in a
/// forked child, where the parent's thread does not exist).
fn runtime() -> Result<tokio::runtime::Handle> {
    static RUNTIME: Mutex<Option<(u32, tokio::runtime::Handle)>> = Mutex::new(None);
    let mut rt = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if let Some((p, h)) = &*rt {
        if *p == pid {
            return Ok(h.clone());
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the module runtime: {e}")))?;
    let handle = runtime.handle().clone();
    pin_library();
    std::thread::Builder::new()
        .name("luahost-module-rt".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(|e| Error::runtime(format!("cannot start the module runtime: {e}")))?;
    *rt = Some((pid, handle.clone()));
    Ok(handle)
}

/// Keeps this shared object loaded for the life of the process: Lua unloads
/// C modules (dlclose) when a state closes, and the runtime thread runs code
/// of this object.
fn pin_library() {
    // SAFETY: dladdr fills `info` for an address of this object;
    // dlopen(RTLD_NOLOAD | RTLD_NODELETE) on an already-loaded object only
    // marks it non-deletable.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(pin_library as *const c_void, &mut info) != 0 && !info.dli_fname.is_null() {
            libc::dlopen(
                info.dli_fname,
                libc::RTLD_LAZY | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
            );
        }
    }
}
