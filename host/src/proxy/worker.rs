//! A worker thread: its own single-threaded event loop, its Lua states, and
//! the connections it accepts.
//!
//! Lua states are not thread-safe, so each lives on exactly one worker:
//! - `lua-load-per-thread` files get one state per worker;
//! - `lua-load` files share one state, which lives on worker 0. Other workers
//!   hand Lua work for it to worker 0 as `Send` jobs, which serializes all
//!   execution in the shared state, as HAProxy does with its global lock.

use crate::lua::applet_http::{self, HttpAppletRequest, HttpReply};
use crate::lua::state::{HostState, LuaSettings};
use crate::proxy::plan::{FrontendPlan, Plan, ServiceTarget, StateKind};
use crate::proxy::{http_front, tcp_front, Shutdown};
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

/// Creates this worker's Lua states and loads their files. Worker 0 also
/// creates the shared state. Returns (per-thread state, shared state).
pub fn load_states(
    id: usize,
    plan: &Plan,
    settings: &Rc<LuaSettings>,
    shared_settings: &Rc<LuaSettings>,
) -> Result<(Option<Rc<HostState>>, Option<Rc<HostState>>), String> {
    let shared = if id == 0 && !plan.shared_files.is_empty() {
        let s = HostState::new(shared_settings.clone(), 0)
            .map_err(|e| crate::lua::errors::message(&e))?;
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
        let listener = match tokio::net::TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                crate::log::alert(&format!("frontend '{}': cannot listen: {e}", fe.name));
                continue;
            }
        };
        let fe_sem = fe.maxconn.map(|n| Arc::new(Semaphore::new(n)));
        tokio::task::spawn_local(accept_loop(
            worker.clone(),
            fe,
            listener,
            shutdown.clone(),
            maxconn.clone(),
            fe_sem,
            active.clone(),
            idle.clone(),
        ));
    }
    // Wait for a stop request.
    let mut rx = shutdown.clone();
    let mode = loop {
        let s = *rx.borrow_and_update();
        if s != Shutdown::Running {
            break s;
        }
        if rx.changed().await.is_err() {
            break Shutdown::Hard;
        }
    };
    let drain = async {
        while active.get() > 0 {
            idle.notified().await;
        }
    };
    match mode {
        Shutdown::Hard => {
            let _ = tokio::time::timeout(worker.plan.grace, drain).await;
        }
        _ => drain.await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    worker: Rc<Worker>,
    fe: Arc<FrontendPlan>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<Shutdown>,
    maxconn: Arc<Semaphore>,
    fe_sem: Option<Arc<Semaphore>>,
    active: Rc<std::cell::Cell<usize>>,
    idle: Rc<tokio::sync::Notify>,
) {
    loop {
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
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                crate::log::warning(&format!("frontend '{}': accept failed: {e}", fe.name));
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        active.set(active.get() + 1);
        let (w, f, a, i, sd) = (
            worker.clone(),
            fe.clone(),
            active.clone(),
            idle.clone(),
            shutdown.clone(),
        );
        tokio::task::spawn_local(async move {
            let _conn = crate::stats::ConnGuard::new();
            let _permits = (global_permit, fe_permit);
            match f.mode {
                crate::proxy::plan::FrontMode::Http => {
                    http_front::serve(w, f, stream, peer, sd).await
                }
                crate::proxy::plan::FrontMode::Tcp => tcp_front::serve(w, f, stream, peer).await,
            }
            a.set(a.get() - 1);
            if a.get() == 0 {
                i.notify_waiters();
            }
        });
    }
}
