//! The host side of the contract with native modules (the types are in
//! `luahost_modules::host_abi`; docs/modules.md, "The host contract").
//!
//! Each state gets, in its registry:
//! * `luahost.async.v1`: a light userdata pointing at [`API`], the host
//!   functions (may this coroutine wait, should native code return to Lua
//!   soon, the budget, time and memory charges);
//! * `luahost.async.v1.await`: an mlua async function `await(op)`. A module
//!   calls it with `lua_callk` from its C function; its future ([`HostWait`])
//!   polls the module's operation through the operation's C vtable, handing
//!   it the worker's waker through a C waker vtable ([`borrowed_waker`]).
//!   While the operation is pending the coroutine is suspended like any
//!   other waiting coroutine, and the worker serves other work.
//!
//! Each pending operation is registered with the context that waits on it
//! ([`Waits`]); when the context's run ends for any reason (returned,
//! stopped by its budget, or dropped because the client went away) the
//! operation is released at once, which cancels it in the module.
//!
//! Time: a wait is not a run (the coroutine is not being polled), so it is
//! not charged; the time the module reports for running the operation
//! (`charge_time`) is.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use luahost_modules::host_abi::{
    BudgetV1, HostApiV1, OpV1, WakerV1, WakerVtableV1, API_KEY, AWAIT_KEY, POLL_READY, WAIT_BLOCK,
    WAIT_REFUSED_COROUTINE, WAIT_REFUSED_C_CALL, WAIT_REFUSED_FETCH, WAIT_YIELD,
};
use mlua::{ffi, LightUserData, Lua};

use crate::lua::exec;
use crate::lua::memory;

/// The host functions of the contract; one for the process.
static API: HostApiV1 = HostApiV1 {
    version: 1,
    size: std::mem::size_of::<HostApiV1>() as u32,
    wait_mode,
    should_yield,
    budget,
    charge_time,
    mem_charge,
    mem_uncharge,
};

/// How long native code may run before [`should_yield`] says so, when the
/// burst timeout does not ask for less: about what a forced yield every
/// `tune.lua.forced-yield` instructions gives Lua code.
const YIELD_SLICE: Duration = Duration::from_millis(1);

/// Publishes the contract in `lua`'s registry.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let api = LightUserData((&API as *const HostApiV1).cast_mut().cast());
    lua.set_named_registry_value(key(API_KEY), api)?;
    let await_fn = lua.create_async_function(|_, op: LightUserData| {
        let op = op.0.cast::<OpV1>();
        async move {
            if op.is_null() {
                return Err(mlua::Error::runtime("luahost await: no operation"));
            }
            HostWait::new(op).await
        }
    })?;
    lua.set_named_registry_value(key(AWAIT_KEY), await_fn)
}

fn key(k: &std::ffi::CStr) -> &str {
    // The keys are ASCII literals of the contract.
    k.to_str().unwrap_or_default()
}

unsafe extern "C" fn wait_mode(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: a module calls this with the running state.
    let yieldable = unsafe { ffi::lua_isyieldable(state) } != 0;
    exec::with_current(|ctx| {
        let Some(ctx) = ctx else {
            // No context: the body of a lua-load file (nothing is served yet).
            return WAIT_BLOCK;
        };
        let view = ctx.view();
        if !view.yieldable {
            WAIT_REFUSED_FETCH
        } else if view.thread != state.cast_const().cast::<c_void>() {
            WAIT_REFUSED_COROUTINE
        } else if !yieldable {
            WAIT_REFUSED_C_CALL
        } else {
            WAIT_YIELD
        }
    })
}

unsafe extern "C" fn should_yield() -> c_int {
    exec::with_current(|ctx| {
        let Some(ctx) = ctx else { return 0 };
        let view = ctx.view();
        let slice = view
            .budget
            .burst
            .map_or(YIELD_SLICE, |b| (b / 2).min(YIELD_SLICE));
        let total_spent = view.budget.total.is_some_and(|t| view.used + view.run >= t);
        c_int::from(view.expired || total_spent || view.run >= slice)
    })
}

unsafe extern "C" fn budget(out: *mut BudgetV1) -> c_int {
    exec::with_current(|ctx| {
        let Some(ctx) = ctx else { return 0 };
        let view = ctx.view();
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let b = BudgetV1 {
            used_ns: ns(view.used + view.run),
            total_ns: view.budget.total.map_or(0, ns),
            run_ns: ns(view.run),
            burst_ns: view.budget.burst.map_or(0, ns),
        };
        // SAFETY: the module passes a valid BudgetV1 to fill.
        if let Some(out) = unsafe { out.as_mut() } {
            *out = b;
        }
        1
    })
}

unsafe extern "C" fn charge_time(nanos: u64) {
    exec::with_current(|ctx| {
        if let Some(ctx) = ctx {
            ctx.charge(Duration::from_nanos(nanos));
        }
    })
}

unsafe extern "C" fn mem_charge(bytes: usize) -> c_int {
    c_int::from(memory::try_charge(bytes))
}

unsafe extern "C" fn mem_uncharge(bytes: usize) {
    memory::uncharge(bytes)
}

/// One operation a context waits on; the pointer is null once released.
pub struct WaitSlot {
    op: Cell<*mut OpV1>,
}

impl WaitSlot {
    /// Gives the operation back to the module (cancelling it if pending);
    /// at most once.
    fn release(&self) {
        let op = self.op.replace(std::ptr::null_mut());
        if !op.is_null() {
            // SAFETY: the op came from a module's await call, was polled
            // (so it is ours, contract) and was not released before.
            unsafe { ((*(*op).vtable).release)(op) }
        }
    }
}

/// Work a context waits on that must stop when the context's run ends (a
/// module's operation, an HTTP client request).
pub trait Cancel {
    /// Stops the work now; called at most once per registration.
    fn cancel(&self);
}

impl Cancel for WaitSlot {
    fn cancel(&self) {
        self.release();
    }
}

/// The operations a context waits on.
#[derive(Default)]
pub struct Waits(RefCell<Vec<Weak<dyn Cancel>>>);

impl Waits {
    pub fn register(&self, slot: &Rc<dyn Cancel>) {
        let mut v = self.0.borrow_mut();
        v.retain(|w| w.strong_count() > 0);
        v.push(Rc::downgrade(slot));
    }

    /// Releases every operation still pending.
    pub fn cancel_all(&self) {
        let slots = std::mem::take(&mut *self.0.borrow_mut());
        for slot in slots.iter().filter_map(Weak::upgrade) {
            slot.cancel();
        }
    }
}

/// The future behind `await(op)`.
struct HostWait {
    slot: Rc<WaitSlot>,
}

impl HostWait {
    fn new(op: *mut OpV1) -> HostWait {
        let slot = Rc::new(WaitSlot { op: Cell::new(op) });
        exec::with_current(|ctx| {
            if let Some(ctx) = ctx {
                let as_cancel: Rc<dyn Cancel> = slot.clone();
                ctx.waits.register(&as_cancel);
            }
        });
        HostWait { slot }
    }
}

impl Future for HostWait {
    type Output = mlua::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let op = self.slot.op.get();
        if op.is_null() {
            return Poll::Ready(Err(mlua::Error::runtime("native call cancelled")));
        }
        let waker = borrowed_waker(cx.waker());
        // SAFETY: `op` is a live operation (not released), `waker` lives for
        // the call.
        let ready = unsafe { ((*(*op).vtable).poll)(op, &waker) } == POLL_READY;
        if ready {
            self.slot.release();
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl Drop for HostWait {
    fn drop(&mut self) {
        self.slot.release();
    }
}

/// The worker's waker, lent to a module for one poll.
fn borrowed_waker(w: &Waker) -> WakerV1 {
    WakerV1 {
        data: (w as *const Waker).cast(),
        vtable: &BORROWED,
    }
}

static BORROWED: WakerVtableV1 = WakerVtableV1 {
    clone: clone_waker,
    wake: wake_borrowed,
    drop: drop_borrowed,
};

static OWNED: WakerVtableV1 = WakerVtableV1 {
    clone: clone_waker,
    wake: wake_owned,
    drop: drop_owned,
};

/// Both kinds point at a `Waker`; a clone is a boxed `Waker`.
unsafe extern "C" fn clone_waker(data: *const c_void) -> WakerV1 {
    // SAFETY: `data` points at a live Waker (borrowed or boxed).
    let w = unsafe { &*data.cast::<Waker>() };
    let boxed = catch_unwind(AssertUnwindSafe(|| Box::new(w.clone())));
    match boxed {
        Ok(b) => WakerV1 {
            data: Box::into_raw(b).cast_const().cast(),
            vtable: &OWNED,
        },
        // A clone that cannot be made: a waker that does nothing (the
        // module then waits for the next poll, which a wake elsewhere gives).
        Err(_) => WakerV1 {
            data: std::ptr::null(),
            vtable: &NOOP,
        },
    }
}

unsafe extern "C" fn wake_borrowed(data: *const c_void) {
    // SAFETY: as in clone_waker.
    let w = unsafe { &*data.cast::<Waker>() };
    let _ = catch_unwind(AssertUnwindSafe(|| w.wake_by_ref()));
}

unsafe extern "C" fn drop_borrowed(_: *const c_void) {}

unsafe extern "C" fn wake_owned(data: *const c_void) {
    // SAFETY: a Box<Waker> made by clone_waker, consumed once (contract).
    let w = unsafe { Box::from_raw(data.cast::<Waker>().cast_mut()) };
    let _ = catch_unwind(AssertUnwindSafe(move || w.wake()));
}

unsafe extern "C" fn drop_owned(data: *const c_void) {
    // SAFETY: as in wake_owned.
    let w = unsafe { Box::from_raw(data.cast::<Waker>().cast_mut()) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(w)));
}

static NOOP: WakerVtableV1 = WakerVtableV1 {
    clone: noop_clone,
    wake: drop_borrowed,
    drop: drop_borrowed,
};

unsafe extern "C" fn noop_clone(_: *const c_void) -> WakerV1 {
    WakerV1 {
        data: std::ptr::null(),
        vtable: &NOOP,
    }
}

#[cfg(test)]
mod tests {
    //! The host side of the contract against a test operation that follows
    //! the contract (modules/src/host_abi.rs) and records what the host does.

    use super::*;
    use luahost_modules::host_abi::{OpVtableV1, POLL_PENDING};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::Wake;

    #[repr(C)]
    struct TestOp {
        header: OpV1,
        ready: bool,
        releases: Arc<AtomicUsize>,
        kept: Arc<Mutex<Option<KeptWaker>>>,
    }

    struct KeptWaker(WakerV1);
    // SAFETY: the contract makes waker clones callable from any thread.
    unsafe impl Send for KeptWaker {}

    impl KeptWaker {
        fn wake(self) {
            unsafe { ((*self.0.vtable).wake)(self.0.data) }
        }
    }

    static VTABLE: OpVtableV1 = OpVtableV1 {
        poll: test_poll,
        release: test_release,
    };

    unsafe extern "C" fn test_poll(op: *mut OpV1, waker: *const WakerV1) -> c_int {
        let op = unsafe { &*(op as *const TestOp) };
        if op.ready {
            return POLL_READY;
        }
        let w = unsafe { &*waker };
        let clone = unsafe { ((*w.vtable).clone)(w.data) };
        let old = op
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(KeptWaker(clone));
        if let Some(KeptWaker(old)) = old {
            unsafe { ((*old.vtable).drop)(old.data) };
        }
        POLL_PENDING
    }

    unsafe extern "C" fn test_release(op: *mut OpV1) {
        let op = unsafe { Box::from_raw(op as *mut TestOp) };
        op.releases.fetch_add(1, Ordering::SeqCst);
        let kept = op.kept.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(KeptWaker(w)) = kept {
            unsafe { ((*w.vtable).drop)(w.data) };
        }
    }

    type Kept = Arc<Mutex<Option<KeptWaker>>>;

    fn op(ready: bool) -> (*mut OpV1, Arc<AtomicUsize>, Kept) {
        let releases = Arc::new(AtomicUsize::new(0));
        let kept = Arc::new(Mutex::new(None));
        let op = Box::into_raw(Box::new(TestOp {
            header: OpV1 { vtable: &VTABLE },
            ready,
            releases: releases.clone(),
            kept: kept.clone(),
        }));
        (op.cast(), releases, kept)
    }

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once(w: &mut HostWait, waker: &Waker) -> Poll<mlua::Result<()>> {
        Pin::new(w).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_ready_operation_is_released_once() {
        let (op, releases, _) = op(true);
        let mut w = HostWait::new(op);
        let waker = Waker::noop();
        assert!(matches!(poll_once(&mut w, waker), Poll::Ready(Ok(()))));
        drop(w);
        assert_eq!(releases.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn dropping_a_pending_wait_releases_it_and_its_waker() {
        let (op, releases, kept) = op(false);
        let mut w = HostWait::new(op);
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        assert!(poll_once(&mut w, &waker).is_pending());
        assert!(kept.lock().unwrap_or_else(|e| e.into_inner()).is_some());
        drop(w);
        assert_eq!(releases.load(Ordering::SeqCst), 1);
        assert!(kept.lock().unwrap_or_else(|e| e.into_inner()).is_none());
        // Only our own Arc is left: the clone given to the module is gone.
        assert_eq!(Arc::strong_count(&counter), 2); // `counter` and `waker`
    }

    #[test]
    fn a_clone_of_the_waker_wakes_the_task_from_another_thread() {
        let (op, releases, kept) = op(false);
        let mut w = HostWait::new(op);
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        assert!(poll_once(&mut w, &waker).is_pending());
        let clone = kept.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(clone) = clone else {
            panic!("the operation kept no waker")
        };
        std::thread::spawn(move || clone.wake())
            .join()
            .unwrap_or_else(|_| panic!("waking thread panicked"));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        drop(w);
        assert_eq!(releases.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn cancel_all_releases_pending_operations_exactly_once() {
        let (op, releases, _) = op(false);
        let waits = Waits::default();
        let mut w = HostWait::new(op);
        let as_cancel: Rc<dyn Cancel> = w.slot.clone();
        waits.register(&as_cancel);
        assert!(poll_once(&mut w, Waker::noop()).is_pending());
        waits.cancel_all();
        assert_eq!(releases.load(Ordering::SeqCst), 1);
        // Resumed after the cancel: an error, and no second release.
        assert!(matches!(
            poll_once(&mut w, Waker::noop()),
            Poll::Ready(Err(_))
        ));
        drop(w);
        assert_eq!(releases.load(Ordering::SeqCst), 1);
    }
}
