//! Running Lua as preemptible, budgeted coroutines.
//!
//! Every Lua invocation at runtime (service, action, task, init, fetch,
//! converter) runs under an [`ExecCtx`]. The instruction-count hook installed
//! by [`install_hook`] fires every `tune.lua.forced-yield` instructions and:
//! - charges the time spent and stops the context when its budget
//!   (`execution timeout`) or the length of one uninterrupted run
//!   (`burst timeout`) is exceeded;
//! - otherwise, when the running coroutine is the host's own and may yield,
//!   yields it so that the worker serves other work before resuming it.
//!
//! Coroutines that scripts create themselves (e.g. `coroutine.wrap`
//! generators) inherit the hook (Lua copies it to new threads), but are never
//! preempted: a forced yield would be delivered to the script's own
//! `coroutine.resume` and break the generator. Their time is still charged.
//!
//! Budgets count Lua execution time only: the time inside each poll of the
//! coroutine. Sleeping and waiting for I/O happen between polls.

use mlua::{FromLuaMulti, HookTriggers, IntoLuaMulti, Lua, Thread, VmState};
use std::cell::Cell;
use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Limits of one Lua context.
#[derive(Clone, Copy, Debug, Default)]
pub struct Budget {
    /// Total Lua execution time, cumulative across yields (None: unlimited).
    pub total: Option<Duration>,
    /// Longest uninterrupted run (None: unlimited).
    pub burst: Option<Duration>,
}

/// Why a context was stopped by the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Execution,
    Burst,
}

impl Expiry {
    pub fn message(self) -> &'static str {
        match self {
            Expiry::Execution => "execution timeout",
            Expiry::Burst => "burst timeout",
        }
    }
}

/// The accounting of one running Lua context.
pub struct ExecCtx {
    budget: Budget,
    /// The host coroutine of this context (null while not started or when
    /// the context runs on the caller's coroutine, e.g. a fetch).
    thread: Cell<*const c_void>,
    /// Whether forced yields are allowed (false for fetches and converters).
    yieldable: bool,
    used: Cell<Duration>,
    run_start: Cell<Option<Instant>>,
    expired: Cell<Option<Expiry>>,
    /// The hook asked for a yield after expiry (see install_hook).
    yield_requested: Cell<bool>,
    /// Native operations this context waits on (native_async.rs), cancelled
    /// when the context stops.
    pub(crate) waits: crate::lua::native_async::Waits,
}

impl ExecCtx {
    pub fn new(budget: Budget, yieldable: bool) -> Rc<ExecCtx> {
        Rc::new(ExecCtx {
            budget,
            thread: Cell::new(std::ptr::null()),
            yieldable,
            used: Cell::new(Duration::ZERO),
            run_start: Cell::new(None),
            expired: Cell::new(None),
            yield_requested: Cell::new(false),
            waits: Default::default(),
        })
    }

    pub fn expired(&self) -> Option<Expiry> {
        self.expired.get()
    }

    /// Checks the budgets at `now`; records and returns an expiry.
    fn check(&self, now: Instant) -> Option<Expiry> {
        if let Some(e) = self.expired.get() {
            return Some(e);
        }
        let run = self.run_start.get().map_or(Duration::ZERO, |s| now - s);
        let expiry = if self.budget.burst.is_some_and(|b| run > b) {
            Some(Expiry::Burst)
        } else if self.budget.total.is_some_and(|t| self.used.get() + run > t) {
            Some(Expiry::Execution)
        } else {
            None
        };
        if expiry.is_some() {
            self.expired.set(expiry);
        }
        expiry
    }
}

thread_local! {
    /// The context whose Lua code is running on this OS thread right now.
    static CURRENT: Cell<*const ExecCtx> = const { Cell::new(std::ptr::null()) };
}

/// Marks `ctx` as running for the duration of the guard, restoring the
/// previous one after (contexts nest: an action may call a Lua fetch).
struct Running<'a> {
    ctx: &'a ExecCtx,
    prev: *const ExecCtx,
    start: Instant,
}

impl<'a> Running<'a> {
    fn enter(ctx: &'a ExecCtx) -> Running<'a> {
        let start = Instant::now();
        ctx.run_start.set(Some(start));
        let prev = CURRENT.with(|c| c.replace(ctx as *const ExecCtx));
        Running { ctx, prev, start }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
        self.ctx
            .used
            .set(self.ctx.used.get() + self.start.elapsed());
        self.ctx.run_start.set(None);
    }
}

/// Installs the preemption and budget hook on a state. `every` is
/// `tune.lua.forced-yield`.
pub fn install_hook(lua: &Lua, every: u32) -> mlua::Result<()> {
    let triggers = HookTriggers::new().every_nth_instruction(every.max(1));
    lua.set_global_hook(triggers, |lua, _debug| {
        let ptr = CURRENT.with(|c| c.get());
        if ptr.is_null() {
            // Body and start-up code: no budget applies.
            return Ok(VmState::Continue);
        }
        // SAFETY: CURRENT only holds a context for the lifetime of the
        // `Running` guard that set it, and the hook runs on the same OS thread
        // inside that guard's scope (Lua code only runs inside a poll).
        let ctx = unsafe { &*ptr };
        let own_thread = ctx.yieldable
            && !ctx.thread.get().is_null()
            && lua.current_thread().to_pointer() == ctx.thread.get();
        if let Some(expiry) = ctx.check(Instant::now()) {
            // Yielding hands control back to the runner, which stops the
            // coroutine for good (an error could be caught by a pcall). But a
            // yield is ignored where the coroutine can't yield (inside a C
            // call such as string.gsub's callback or a table.sort
            // comparator): when the previous tick's yield did not happen,
            // raise the error instead, then try yielding again, so the
            // context ends either way.
            if own_thread && !ctx.yield_requested.replace(true) {
                return Ok(VmState::Yield);
            }
            ctx.yield_requested.set(false);
            return Err(mlua::Error::runtime(expiry.message()));
        }
        Ok(if own_thread {
            VmState::Yield
        } else {
            VmState::Continue
        })
    })
}

/// How a context ended without returning normally.
#[derive(Debug)]
pub enum ExecError {
    /// Stopped by the host: the budget ran out.
    Timeout(Expiry),
    /// `core.done()` was called.
    Done,
    /// A Lua error (including "not enough memory").
    Lua(mlua::Error),
}

impl ExecError {
    /// The message for the log, without mlua's decorations.
    pub fn message(&self) -> String {
        match self {
            ExecError::Timeout(e) => e.message().to_string(),
            ExecError::Done => "done".to_string(),
            ExecError::Lua(e) => crate::lua::errors::message(e),
        }
    }
}

/// Finished host coroutines, kept for reuse: every Lua invocation runs in a
/// coroutine, and creating one (then collecting it) for each of them was a
/// measurable share of a request's cost.
pub struct ThreadPool {
    idle: std::cell::RefCell<Vec<Thread>>,
    /// What an idle coroutine holds, so that it keeps nothing else alive.
    placeholder: mlua::Function,
}

/// Most coroutines kept idle per state.
const POOL_MAX: usize = 64;

impl ThreadPool {
    /// Creates the pool of `lua`, reachable from [`run_coroutine`].
    pub fn install(lua: &Lua) -> mlua::Result<()> {
        let placeholder = lua.create_function(|_, ()| Ok(()))?;
        lua.set_app_data(Rc::new(ThreadPool {
            idle: std::cell::RefCell::new(Vec::new()),
            placeholder,
        }));
        Ok(())
    }

    /// A coroutine ready to run `func`: an idle one if any.
    fn take(&self, lua: &Lua, func: mlua::Function) -> mlua::Result<Thread> {
        let idle = self.idle.borrow_mut().pop();
        match idle {
            Some(t) => match t.reset(func.clone()) {
                Ok(()) => Ok(t),
                Err(_) => lua.create_thread(func),
            },
            None => lua.create_thread(func),
        }
    }

    /// Returns a coroutine that finished normally. Any other coroutine (an
    /// error, a stop while suspended) is left to the collector.
    fn give_back(&self, thread: Thread) {
        if thread.status() != mlua::thread::ThreadStatus::Finished {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        if idle.len() < POOL_MAX && thread.reset(self.placeholder.clone()).is_ok() {
            idle.push(thread);
        }
    }
}

/// Runs `func(args)` as a host coroutine under `ctx`, preempted by the
/// hook, until it returns, fails or exhausts its budget.
pub async fn run_coroutine<R: FromLuaMulti>(
    lua: &Lua,
    ctx: Rc<ExecCtx>,
    func: mlua::Function,
    args: impl IntoLuaMulti,
) -> Result<R, ExecError> {
    let pool = lua.app_data_ref::<Rc<ThreadPool>>().map(|p| p.clone());
    let thread: Thread = match &pool {
        Some(p) => p.take(lua, func),
        None => lua.create_thread(func),
    }
    .map_err(ExecError::Lua)?;
    ctx.thread.set(thread.to_pointer());
    let inner = thread
        .clone()
        .into_async::<R>(args)
        .map_err(ExecError::Lua)?;
    let result = Budgeted { ctx, inner }.await;
    if let (Some(p), Ok(_)) = (&pool, &result) {
        p.give_back(thread);
    }
    result
}

/// Polls a Lua coroutine under its context's accounting.
struct Budgeted<F> {
    ctx: Rc<ExecCtx>,
    inner: F,
}

impl<F> Drop for Budgeted<F> {
    /// However the run ends (returned, stopped, or dropped because the
    /// client went away), native operations it still waits on are cancelled
    /// now rather than when the coroutine is collected.
    fn drop(&mut self) {
        self.ctx.waits.cancel_all();
    }
}

impl<R, F: Future<Output = mlua::Result<R>> + Unpin> Future for Budgeted<F> {
    type Output = Result<R, ExecError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let ctx = self.ctx.clone();
        let polled = {
            let _running = Running::enter(&ctx);
            Pin::new(&mut self.inner).poll(cx)
        };
        // A context past its budget is stopped here, whatever it returned:
        // dropping the coroutine is what makes the stop final.
        if let Some(expiry) = ctx.expired() {
            return Poll::Ready(Err(ExecError::Timeout(expiry)));
        }
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(r)) => Poll::Ready(Ok(r)),
            Poll::Ready(Err(e)) if crate::lua::errors::is_done(&e) => {
                Poll::Ready(Err(ExecError::Done))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(ExecError::Lua(e))),
        }
    }
}

/// Calls `func` synchronously (a fetch or converter, which may not yield)
/// under `ctx`'s budget.
pub fn call_sync<R: FromLuaMulti>(
    ctx: &ExecCtx,
    func: &mlua::Function,
    args: impl IntoLuaMulti,
) -> Result<R, ExecError> {
    let r = {
        let _running = Running::enter(ctx);
        func.call::<R>(args)
    };
    if let Some(expiry) = ctx.expired() {
        return Err(ExecError::Timeout(expiry));
    }
    r.map_err(|e| {
        if crate::lua::errors::is_done(&e) {
            ExecError::Done
        } else {
            ExecError::Lua(e)
        }
    })
}

/// What native modules may learn about the running context
/// (native_async.rs).
pub(crate) struct CtxView {
    pub yieldable: bool,
    pub thread: *const c_void,
    pub used: Duration,
    pub run: Duration,
    pub budget: Budget,
    pub expired: bool,
}

impl ExecCtx {
    pub(crate) fn view(&self) -> CtxView {
        let run = self.run_start.get().map_or(Duration::ZERO, |s| s.elapsed());
        CtxView {
            yieldable: self.yieldable,
            thread: self.thread.get(),
            used: self.used.get(),
            run,
            budget: self.budget,
            expired: self.expired.get().is_some(),
        }
    }

    /// Adds execution time spent for this context outside its polls.
    pub(crate) fn charge(&self, d: Duration) {
        self.used.set(self.used.get() + d);
    }
}

/// Runs `f` with the context whose Lua code runs on this thread, if any.
pub(crate) fn with_current<T>(f: impl FnOnce(Option<&ExecCtx>) -> T) -> T {
    let ptr = CURRENT.with(|c| c.get());
    // SAFETY: as in install_hook: CURRENT holds a context only while its
    // `Running` guard lives, on this thread, and `f` runs within that scope.
    f(unsafe { ptr.as_ref() })
}
