//! `core.register_cli` commands: which exist (published once by worker 0
//! after loading the Lua files), and running one on its Lua state.
//!
//! A Lua state lives on one worker, so a command runs there: the session
//! (itself on worker 0) sends a job to worker 0's job loop (which holds the shared state of `lua-load` and
//! its own `lua-load-per-thread` state) with the session's socket; the
//! function runs as an AppletTCP service on it; the socket comes back when
//! the function returns, and the session goes on.

use crate::lua::applet_tcp::{self, AppletStream};
use crate::lua::state::HostState;
use bytes::BytesMut;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};

/// A registered Lua command.
#[derive(Debug, Clone)]
pub struct LuaCommand {
    pub path: Vec<String>,
    pub usage: String,
}

static COMMANDS: OnceLock<Vec<LuaCommand>> = OnceLock::new();

/// A job for worker 0: it gets (shared state, worker 0's per-thread state).
type Job = Box<dyn FnOnce(Option<Rc<HostState>>, Option<Rc<HostState>>) + Send>;

static JOBS: OnceLock<mpsc::UnboundedSender<Job>> = OnceLock::new();

/// Records the commands worker 0's states registered (the shared state's
/// first, then the per-thread state's that the shared one does not have).
pub fn publish(states: &[&Rc<HostState>]) {
    let mut list: Vec<LuaCommand> = Vec::new();
    for s in states {
        for c in s.info.regs.borrow().clis.iter() {
            if !list.iter().any(|l| l.path == c.path) {
                list.push(LuaCommand {
                    path: c.path.clone(),
                    usage: c.usage.clone(),
                });
            }
        }
    }
    let _ = COMMANDS.set(list);
}

/// The registered commands (empty before start-up).
pub fn commands() -> &'static [LuaCommand] {
    COMMANDS.get().map(Vec::as_slice).unwrap_or_default()
}

/// Serves the CLI's Lua jobs on worker 0 until the process stops.
pub fn serve_jobs(shared: Option<Rc<HostState>>, per_thread: Option<Rc<HostState>>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    if JOBS.set(tx).is_err() {
        return;
    }
    tokio::task::spawn_local(async move {
        while let Some(job) = rx.recv().await {
            let (s, p) = (shared.clone(), per_thread.clone());
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || job(s, p))).is_err() {
                crate::log::alert("internal error: a Lua CLI job panicked");
            }
        }
    });
}

/// What a Lua command gives back: the socket, unread input, and whether the
/// client finished sending. `None`: the session ends.
pub type Returned = Option<(AppletStream, BytesMut, bool)>;

/// Runs Lua command `path` with `args` (all the command's words, as
/// HAProxy passes them) on the session's socket.
pub async fn run(
    path: Vec<String>,
    args: Vec<String>,
    stream: AppletStream,
    pending: BytesMut,
    peer: std::net::SocketAddr,
) -> Returned {
    let jobs = JOBS.get()?;
    let (tx, rx) = oneshot::channel::<Returned>();
    let what = format!("Lua cli '<lua.cli.{}>'", path.join("."));
    let job: Job = Box::new(move |shared, per_thread| {
        let found = [shared, per_thread]
            .into_iter()
            .flatten()
            .find_map(|s| s.cli_command(&path).map(|f| (s, f)));
        let Some((state, func)) = found else {
            crate::log::alert(&format!("{what}: no such command in the Lua states."));
            let _ = tx.send(Some((stream, pending, false)));
            return;
        };
        let txn = Box::new(crate::txn::Txn::new(
            crate::txn::TxnMode::Tcp,
            peer,
            peer,
            Arc::from("GLOBAL"),
            1,
        ));
        tokio::task::spawn_local(async move {
            let r = applet_tcp::run_cli(state, what, func, stream, pending, txn, args).await;
            let _ = tx.send(r);
        });
    });
    jobs.send(job).ok()?;
    rx.await.ok().flatten()
}
