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

use crate::lua::debug_hooks::{HostTick, ScriptHooks};
use mlua::debug::DebugEvent;
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
    /// What this context opened that must not outlive it (sockets), closed
    /// when the run ends (see [`ContextResource`]).
    resources: std::cell::RefCell<Vec<std::rc::Weak<dyn ContextResource>>>,
    /// What `core.wait()` waits on, made on first use (wake.rs).
    wake: std::cell::OnceCell<crate::lua::wake::Wake>,
}

/// Something a Lua context opened and owns: closed when the context ends
/// (request done, action returned, task ended), so that nothing it opened
/// waits for the garbage collector.
pub(crate) trait ContextResource {
    fn close_at_context_end(&self);
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
            resources: Default::default(),
            wake: Default::default(),
        })
    }

    /// Ties `r` to this context: it is closed when the context ends, unless
    /// it was dropped (collected) before.
    pub(crate) fn own(&self, r: std::rc::Weak<dyn ContextResource>) {
        let mut list = self.resources.borrow_mut();
        // Forget the ones already gone, so that a long task opening and
        // closing sockets in a loop keeps a short list.
        if list.len() >= 16 && list.len().is_power_of_two() {
            list.retain(|w| w.strong_count() > 0);
        }
        list.push(r);
    }

    /// Closes what this context still owns.
    fn close_resources(&self) {
        let list = std::mem::take(&mut *self.resources.borrow_mut());
        for r in list {
            if let Some(r) = r.upgrade() {
                r.close_at_context_end();
            }
        }
    }

    /// The handle that wakes this context's `core.wait()`.
    pub(crate) fn wake(&self) -> crate::lua::wake::Wake {
        self.wake.get_or_init(Default::default).clone()
    }

    /// Whether this context may wait (actions, services, tasks, init
    /// functions; not fetches and converters).
    pub(crate) fn yieldable(&self) -> bool {
        self.yieldable
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

/// Whether the context running on this OS thread has spent its budget, as
/// of now (which records the expiry). For the allocator, which is the only
/// part of luahost a long C call reaches (long_calls.rs).
pub fn budget_spent_now() -> bool {
    let ptr = CURRENT.with(|c| c.get());
    if ptr.is_null() {
        return false;
    }
    // SAFETY: as in the hook: CURRENT holds a context only while its
    // `Running` guard, on this OS thread, is alive.
    let ctx = unsafe { &*ptr };
    ctx.check(Instant::now()).is_some()
}

/// How long a thread with a script's hook runs before a forced yield (its
/// count events are unreliable, see install_hook).
const HOOKED_SLICE: Duration = Duration::from_millis(1);

/// Installs the preemption and budget hook on a state. `every` is
/// `tune.lua.forced-yield`.
///
/// Scripts' own hooks (`debug.sethook`) are chained behind it: `hooks`
/// calls them, and decides whether a count event is luahost's turn.
pub fn install_hook(lua: &Lua, every: u32, hooks: Rc<ScriptHooks>) -> mlua::Result<()> {
    let triggers = HookTriggers::new().every_nth_instruction(every.max(1));
    let h = hooks.clone();
    lua.set_global_hook(triggers, move |lua, debug| {
        let tick = h.dispatch(lua, debug)?;
        if let HostTick::Skip = tick {
            return Ok(VmState::Continue);
        }
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
        if own_thread && in_async_wrapper(debug) {
            // Neither yield nor raise here (see in_async_wrapper): the
            // next tick, in the script's own code, does.
            ctx.check(Instant::now());
            return Ok(VmState::Continue);
        }
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
        let yield_now = match tick {
            HostTick::Run => own_thread,
            // After a script's hook ran: Lua counted the instructions of the
            // hook function too, and dropped the count events that fell in
            // it (hooks are off inside a hook), so the count can't be
            // trusted; yield by time instead (only line events may yield).
            HostTick::Check => {
                own_thread
                    && matches!(debug.event(), DebugEvent::Line)
                    && ctx
                        .run_start
                        .get()
                        .is_some_and(|s| s.elapsed() >= HOOKED_SLICE)
            }
            HostTick::Skip => false,
        };
        Ok(if yield_now {
            VmState::Yield
        } else {
            VmState::Continue
        })
    })?;
    hooks.capture_proc(lua)
}

/// The chunk name of mlua's Lua wrapper around every async Rust function
/// (`Lua::create_async_function`).
const ASYNC_WRAPPER: &str = "=__mlua_async_poll";

/// Whether the hook fired inside mlua's async wrapper, where a forced yield
/// would lose a wake-up.
///
/// The wrapper polls the Rust future and, when it is pending, yields a
/// "pending" marker so the runner waits for the future's waker. A forced
/// yield landing between that poll and that yield makes the runner wake the
/// task itself; on that resume the wrapper yields the stale marker without
/// polling the future again. A wake-up the future's source sent in between
/// (e.g. hyper delivering the next body chunk) was absorbed by the
/// self-wake, so the coroutine waited forever: the cause of the stalled
/// uploads. The wrapper runs a handful of instructions before it returns
/// to the script, where the next hook yields normally.
fn in_async_wrapper(debug: &mlua::debug::Debug) -> bool {
    debug.source().source.as_deref() == Some(ASYNC_WRAPPER)
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
    /// Cleans a script's hook off a coroutine before it is reused.
    hooks: Rc<ScriptHooks>,
}

/// Most coroutines kept idle per state.
const POOL_MAX: usize = 64;

impl ThreadPool {
    /// Creates the pool of `lua`, reachable from [`run_coroutine`].
    pub fn install(lua: &Lua, hooks: Rc<ScriptHooks>) -> mlua::Result<()> {
        let placeholder = lua.create_function(|_, ()| Ok(()))?;
        lua.set_app_data(Rc::new(ThreadPool {
            idle: std::cell::RefCell::new(Vec::new()),
            placeholder,
            hooks,
        }));
        Ok(())
    }

    /// A coroutine ready to run `func`: an idle one if any.
    fn take(&self, lua: &Lua, func: mlua::Function) -> mlua::Result<Thread> {
        let idle = self.idle.borrow_mut().pop();
        match idle {
            Some(t) => match t.reset(func.clone()) {
                Ok(()) => {
                    self.hooks.clean(&t);
                    Ok(t)
                }
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
        self.ctx.close_resources();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A script waiting in an async Rust function while forced yields fire
    /// at every instruction, fed by a producer that sends a value only when
    /// asked (as hyper reads the next body frame only once the body is
    /// polled): every value must wake the script. Before the fix, the
    /// producer ran in the gap of a forced yield inside mlua's async
    /// wrapper, its wake-up was absorbed, and both sides waited forever.
    #[test]
    fn forced_yields_never_lose_an_async_wake_up() {
        // SAFETY: a test state; unsafe_new only adds the debug library,
        // which the script-hook guard wraps.
        let lua = unsafe { Lua::unsafe_new() };
        let hooks = crate::lua::debug_hooks::ScriptHooks::install(&lua, 1).expect("script hooks");
        install_hook(&lua, 1, hooks).expect("hook");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let rx = Rc::new(tokio::sync::Mutex::new(rx));
        let want = Rc::new(tokio::sync::Notify::new());
        let asked = want.clone();
        let recv = lua
            .create_async_function(move |_, ()| {
                let (rx, want) = (rx.clone(), want.clone());
                async move {
                    want.notify_one();
                    Ok(rx.lock().await.recv().await.unwrap_or(0))
                }
            })
            .expect("function");
        let script: mlua::Function = lua
            .load(
                "local recv = ... return function() local s = 0 \
                 for i = 1, 100 do s = s + recv() end return s end",
            )
            .call(recv)
            .expect("script");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        let sum = local.block_on(&rt, async {
            tokio::task::spawn_local(async move {
                for _ in 0..100 {
                    asked.notified().await;
                    let _ = tx.send(1);
                }
            });
            let ctx = ExecCtx::new(Budget::default(), true);
            tokio::time::timeout(
                Duration::from_secs(10),
                run_coroutine::<u32>(&lua, ctx, script, ()),
            )
            .await
        });
        match sum {
            Ok(Ok(s)) => assert_eq!(s, 100),
            Ok(Err(e)) => panic!("script failed: {}", e.message()),
            Err(_) => panic!("the script stopped waking up"),
        }
    }
}
