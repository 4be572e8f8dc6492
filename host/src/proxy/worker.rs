//! A worker thread: its own single-threaded event loop, its Lua states, and
//! the connections it accepts.
//!
//! Lua states are not thread-safe, so each lives on exactly one worker:
//! - `lua-load-per-thread` files get one state per worker;
//! - `lua-load` files share one state, which lives on worker 0. Other workers
//!   hand Lua work for it to worker 0 as `Send` jobs, which serializes all
//!   execution in the shared state, as HAProxy does with its global lock.

use crate::lua::action::{self, Outcome};
use crate::lua::applet_http::{self, HttpAppletRequest, HttpReply};
use crate::lua::sample_bridge::StateSamples;
use crate::lua::state::{HostState, LuaSettings};
use crate::proxy::listen_control::ListenState;
use crate::proxy::plan::{FrontendPlan, Plan, ServiceTarget, StateKind};
use crate::proxy::{tcp_front, Shutdown};
use crate::sample::{LuaSamples, Sample};
use crate::txn::Txn;
use std::rc::Rc;
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Semaphore};

/// Work for the shared Lua state, sent to worker 0.
pub type SharedJob = Box<dyn FnOnce(Rc<HostState>) + Send>;

/// How a worker reaches the shared state.
pub enum SharedLua {
    None,
    Local(Rc<HostState>),
    Remote(mpsc::UnboundedSender<SharedJob>),
}

/// Everything a worker's connections need.
pub struct Worker {
    pub id: usize,
    pub per_thread: Option<Rc<HostState>>,
    pub shared: SharedLua,
    pub plan: Arc<Plan>,
    /// This worker's connections to backend servers.
    pub forwarder: crate::backend::Forwarder,
}

impl Worker {
    /// Runs `job` with the Lua state that owns `target`, on that state's
    /// worker. The job spawns the Lua context there.
    pub fn dispatch(&self, target: &ServiceTarget, job: SharedJob) {
        match target.state {
            StateKind::PerThread => match &self.per_thread {
                Some(s) => job(s.clone()),
                None => crate::log::alert("internal error: no per-thread Lua state on this worker"),
            },
            StateKind::Shared => match &self.shared {
                SharedLua::Local(s) => job(s.clone()),
                SharedLua::Remote(tx) => {
                    if tx.send(job).is_err() {
                        crate::log::alert("the shared Lua state's worker is gone");
                    }
                }
                SharedLua::None => crate::log::alert("internal error: no shared Lua state"),
            },
        }
    }

    /// The Lua fetches and converters reachable from this worker.
    pub fn samples(&self) -> WorkerSamples<'_> {
        WorkerSamples { worker: self }
    }

    /// The state of `kind` if it lives on this worker.
    fn local_state(&self, kind: StateKind) -> Option<&Rc<HostState>> {
        match kind {
            StateKind::PerThread => self.per_thread.as_ref(),
            StateKind::Shared => match &self.shared {
                SharedLua::Local(s) => Some(s),
                _ => None,
            },
        }
    }

    /// Runs Lua action `name` (its registration for rule-set kind `set`) on
    /// `txn` in the state of `kind` (moving the transaction to that state's
    /// worker and back when it is elsewhere).
    pub async fn run_lua_action(
        &self,
        kind: StateKind,
        set: &'static str,
        name: Arc<str>,
        txn: Box<Txn>,
        args: Vec<String>,
    ) -> (Option<Box<Txn>>, Outcome) {
        if let Some(state) = self.local_state(kind) {
            return action::run(state.clone(), Rc::from(&*name), set, txn, args).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.dispatch_kind(
            kind,
            Box::new(move |state| {
                tokio::task::spawn_local(async move {
                    let r = action::run(state, Rc::from(&*name), set, txn, args).await;
                    let _ = tx.send(r);
                });
            }),
        );
        match rx.await {
            Ok(r) => r,
            Err(_) => (None, Outcome::Abort),
        }
    }

    /// Drops the `set_priv` data a finished transaction left in Lua states.
    pub fn forget_txn(&self, id: u64, states: u8) {
        for (bit, kind) in [(1u8, StateKind::Shared), (2u8, StateKind::PerThread)] {
            if states & bit == 0 {
                continue;
            }
            match self.local_state(kind) {
                Some(s) => {
                    s.info.privs.borrow_mut().remove(&id);
                }
                None => self.dispatch_kind(
                    kind,
                    Box::new(move |s| {
                        s.info.privs.borrow_mut().remove(&id);
                    }),
                ),
            }
        }
    }

    fn dispatch_kind(&self, kind: StateKind, job: SharedJob) {
        let target = ServiceTarget {
            name: Arc::from(""),
            state: kind,
        };
        self.dispatch(&target, job);
    }

    /// Starts Lua HTTP service `target` for one request.
    pub fn start_http_service(
        &self,
        target: &ServiceTarget,
        req: HttpAppletRequest,
        reply: HttpReply,
    ) {
        let name = target.name.clone();
        self.dispatch(
            target,
            Box::new(move |state| {
                tokio::task::spawn_local(applet_http::run(state, Rc::from(&*name), req, reply));
            }),
        );
    }
}

/// (per-thread state, shared state) of a worker.
pub type LoadedStates = (Option<Rc<HostState>>, Option<Rc<HostState>>);

/// Creates this worker's Lua states and loads their files. Worker 0 also
/// creates the shared state. Returns (per-thread state, shared state).
pub fn load_states(
    id: usize,
    plan: &Plan,
    settings: &Rc<LuaSettings>,
    shared_settings: &Rc<LuaSettings>,
) -> Result<LoadedStates, String> {
    let shared = if id == 0 && !plan.shared_files.is_empty() {
        let s = HostState::new(shared_settings.clone(), 0)
            .map_err(|e| crate::lua::errors::message(&e))?;
        s.set_registry(plan.registry.clone());
        for f in &plan.shared_files {
            s.load_file(&f.path, &f.args)
                .map_err(|e| format!("parsing [{}] : lua-load: {e}", f.location))?;
        }
        Some(s)
    } else {
        None
    };
    let per_thread = if plan.per_thread_files.is_empty() {
        None
    } else {
        let s = HostState::new(settings.clone(), id + 1)
            .map_err(|e| crate::lua::errors::message(&e))?;
        s.set_registry(plan.registry.clone());
        for f in &plan.per_thread_files {
            s.load_file(&f.path, &f.args)
                .map_err(|e| format!("parsing [{}] : lua-load-per-thread: {e}", f.location))?;
        }
        Some(s)
    };
    Ok((per_thread, shared))
}

/// Serves the frontends' listeners until shutdown, then waits for the
/// connections to finish (bounded by the grace period for a hard stop).
pub async fn serve(
    worker: Rc<Worker>,
    listeners: Vec<(Arc<FrontendPlan>, std::net::TcpListener)>,
    shutdown: watch::Receiver<Shutdown>,
    maxconn: Arc<Semaphore>,
) {
    let active = Rc::new(std::cell::Cell::new(0usize));
    let idle = Rc::new(tokio::sync::Notify::new());
    for (fe, l) in listeners {
        // Connections of a frontend that lives on the shared Lua state are
        // all accepted by that state's worker (see FrontendPlan).
        if fe.on_shared_lua_worker && worker.id != 0 {
            continue;
        }
        let listener = match tokio::net::TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                crate::log::alert(&format!("frontend '{}': cannot listen: {e}", fe.name));
                continue;
            }
        };
        let fe_sem = fe.maxconn.map(|n| Arc::new(Semaphore::new(n)));
        let entry = worker.plan.registry.frontend(&fe.name);
        let control = entry.and_then(|e| e.control()).map(|c| c.watch());
        // Every frontend has its registry entry; counters of its own would
        // only be invisible to `show stat`.
        let counters = entry
            .and_then(|e| e.frontend_counters().cloned())
            .unwrap_or_default();
        tokio::task::spawn_local(accept_loop(
            worker.clone(),
            fe,
            listener,
            control,
            counters,
            shutdown.clone(),
            maxconn.clone(),
            fe_sem,
            active.clone(),
            idle.clone(),
        ));
    }
    // Wait for a stop request, in a task of its own. This function's future
    // is the worker's root future, which tokio's LocalSet polls at each of
    // the worker's wake-ups (twice per proxied request): waiting on the
    // watch channel right here would cost a channel poll each time, waiting
    // on a task's handle costs next to nothing.
    let mut rx = shutdown.clone();
    let wait = tokio::task::spawn_local(async move {
        loop {
            let s = *rx.borrow_and_update();
            if s != Shutdown::Running {
                return s;
            }
            if rx.changed().await.is_err() {
                return Shutdown::Hard;
            }
        }
    });
    let mode = wait.await.unwrap_or(Shutdown::Hard);
    let drain = async {
        while active.get() > 0 {
            idle.notified().await;
        }
    };
    match mode {
        Shutdown::Hard => {
            let _ = tokio::time::timeout(worker.plan.grace, drain).await;
        }
        _ => match worker.plan.hard_stop_after {
            Some(limit) => {
                let _ = tokio::time::timeout(limit, drain).await;
            }
            None => drain.await,
        },
    }
}

/// Counts a connection as active until dropped, also when its task ends by
/// a panic, so that a stop waiting for the worker to be idle can finish.
struct ActiveGuard {
    active: Rc<std::cell::Cell<usize>>,
    idle: Rc<tokio::sync::Notify>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.active.set(self.active.get().saturating_sub(1));
        if self.active.get() == 0 {
            self.idle.notify_waiters();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    worker: Rc<Worker>,
    fe: Arc<FrontendPlan>,
    mut listener: tokio::net::TcpListener,
    mut control: Option<watch::Receiver<ListenState>>,
    counters: Arc<crate::stats::FrontendCounters>,
    mut shutdown: watch::Receiver<Shutdown>,
    maxconn: Arc<Semaphore>,
    fe_sem: Option<Arc<Semaphore>>,
    active: Rc<std::cell::Cell<usize>>,
    idle: Rc<tokio::sync::Notify>,
) {
    // The control changed while this loop waited to accept (a pause and a
    // resume may both have happened since).
    let mut control_moved = false;
    loop {
        // A paused frontend's socket does not listen: wait for a resume
        // (or the end) rather than poll it.
        if let Some(c) = control.as_mut() {
            let mut paused = std::mem::take(&mut control_moved);
            loop {
                match *c.borrow_and_update() {
                    ListenState::Ready => break,
                    ListenState::Stopped => return,
                    ListenState::Paused => paused = true,
                }
                tokio::select! {
                    r = c.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => return,
                }
            }
            if paused {
                // The pause left a hang-up in the registration's readiness,
                // which tokio keeps for good (accept would spin on EAGAIN):
                // register the socket afresh.
                listener = match listener
                    .into_std()
                    .and_then(tokio::net::TcpListener::from_std)
                {
                    Ok(l) => l,
                    Err(e) => {
                        crate::log::alert(&format!("frontend '{}': cannot listen: {e}", fe.name));
                        return;
                    }
                };
            }
        }
        // Connection limits: stop accepting while at the limit, as HAProxy
        // does, so the kernel's backlog holds the excess.
        let global_permit = tokio::select! {
            p = maxconn.clone().acquire_owned() => p,
            _ = shutdown.changed() => return,
        };
        let Ok(global_permit) = global_permit else {
            return;
        };
        let fe_permit = match &fe_sem {
            Some(s) => tokio::select! {
                p = s.clone().acquire_owned() => match p { Ok(p) => Some(p), Err(_) => return },
                _ = shutdown.changed() => return,
            },
            None => None,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
            // Paused or stopped: back to the top (the permits are let go).
            _ = control_changed(&mut control) => {
                control_moved = true;
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            // A socket paused by another worker fails to accept: not news.
            Err(_)
                if control
                    .as_ref()
                    .is_some_and(|c| *c.borrow() != ListenState::Ready) =>
            {
                continue
            }
            Err(e) => {
                crate::log::warning(&format!("frontend '{}': accept failed: {e}", fe.name));
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        active.set(active.get() + 1);
        let (w, f, a, i, sd, fc) = (
            worker.clone(),
            fe.clone(),
            active.clone(),
            idle.clone(),
            shutdown.clone(),
            counters.clone(),
        );
        tokio::task::spawn_local(async move {
            let _conn = crate::stats::ConnGuard::new(peer, &f.name, fc);
            let _active = ActiveGuard { active: a, idle: i };
            let _permits = (global_permit, fe_permit);
            // Under a kill switch: `shutdown sessions server` and
            // `Server:shut_sess()` end the connection while it uses the
            // server (backend/stream_kill.rs).
            let serve = async move {
                // `tcp-request connection` rules, before anything is read.
                let sess = if f.rules.tcp_connection.is_empty() {
                    Default::default()
                } else {
                    match tcp_front::connection_rules(&w, &f, &stream, peer).await {
                        Some(sess) => sess,
                        None => return,
                    }
                };
                match f.mode {
                    crate::proxy::plan::FrontMode::Http => {
                        crate::proxy::h1_server::serve(w, f, stream, peer, sd, sess).await
                    }
                    // Boxed: the task's future is as large as its largest
                    // variant, and an idle HTTP connection should not pay for
                    // the TCP front end's state.
                    crate::proxy::plan::FrontMode::Tcp => {
                        Box::pin(tcp_front::serve(w, f, stream, peer, sess)).await
                    }
                }
            };
            crate::backend::stream_kill::guard(serve).await;
        });
    }
}

/// Resolves when the frontend's listen state changes (never without a
/// control).
async fn control_changed(control: &mut Option<watch::Receiver<ListenState>>) {
    match control {
        Some(c) => {
            if c.changed().await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Lua fetches and converters as the sample engine calls them from a
/// worker: in the per-thread state when it registered the name, else in the
/// shared state. Fetches and converters never yield, so a call into the
/// shared state living on another worker waits for it (as HAProxy's threads
/// wait for the shared state's lock).
pub struct WorkerSamples<'a> {
    worker: &'a Worker,
}

/// A transaction pointer handed to the shared state's worker for the length
/// of a synchronous call.
struct TxnPtr(*const Txn);
// SAFETY: the sending worker blocks until the job replies, so the Txn stays
// alive and unchanged for the whole time the other worker reads it, and Txn
// itself is Send + Sync (plain data).
unsafe impl Send for TxnPtr {}

impl WorkerSamples<'_> {
    fn state_for(&self, name: &str, fetch: bool) -> Option<StateKind> {
        let has = |s: &HostState| {
            let regs = s.info.regs.borrow();
            if fetch {
                regs.fetches.contains_key(name)
            } else {
                regs.converters.contains_key(name)
            }
        };
        if self.worker.per_thread.as_deref().is_some_and(has) {
            return Some(StateKind::PerThread);
        }
        match &self.worker.shared {
            SharedLua::Local(s) if has(s) => Some(StateKind::Shared),
            SharedLua::Remote(_) => Some(StateKind::Shared),
            _ => None,
        }
    }

    fn call(
        &self,
        name: &str,
        fetch: bool,
        txn: &Txn,
        input: Option<Sample>,
        args: &[String],
    ) -> Option<Sample> {
        let kind = self.state_for(name, fetch)?;
        let run = |state: &HostState, txn: &Txn, input: Option<Sample>, args: &[String]| {
            let s = StateSamples {
                lua: &state.lua,
                info: &state.info,
            };
            match input {
                None => s.fetch(name, txn, args),
                Some(i) => s.convert(name, txn, i, args),
            }
        };
        if let Some(state) = self.worker.local_state(kind) {
            return run(state, txn, input, args);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let ptr = TxnPtr(txn as *const Txn);
        let (name, args) = (name.to_string(), args.to_vec());
        self.worker.dispatch_kind(
            kind,
            Box::new(move |state| {
                let ptr = ptr;
                // SAFETY: see TxnPtr; the caller is blocked on `rx` below.
                let txn = unsafe { &*ptr.0 };
                let s = StateSamples {
                    lua: &state.lua,
                    info: &state.info,
                };
                let r = match input {
                    None => s.fetch(&name, txn, &args),
                    Some(i) => s.convert(&name, txn, i, &args),
                };
                let _ = tx.send(r);
            }),
        );
        rx.recv().ok().flatten()
    }
}

impl LuaSamples for WorkerSamples<'_> {
    fn fetch(&self, name: &str, txn: &Txn, args: &[String]) -> Option<Sample> {
        self.call(name, true, txn, None, args)
    }

    fn convert(&self, name: &str, txn: &Txn, input: Sample, args: &[String]) -> Option<Sample> {
        self.call(name, false, txn, Some(input), args)
    }
}
