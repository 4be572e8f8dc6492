//! The runtime API: HAProxy's CLI on the `stats socket`s of `global`.
//!
//! It runs on a thread of its own (`luahost-cli`) with its own event loop,
//! never on a worker: a slow client or a long `show stat` costs a worker
//! nothing, and the commands that change servers only touch the live model
//! (atomics and snapshot swaps, see `backend`), which the workers read
//! without locks. Only `core.register_cli` commands run on a worker (worker
//! 0, where their Lua state lives), as a Lua service does.
//!
//! - `protocol`: commands, words, answer framing (no I/O)
//! - `commands`: the command table, `help`, unknown commands
//! - `listener`: binding the stats sockets, accepting sessions
//! - `session`: one client: read, run, answer
//! - `servers`: the commands that read or change backends and servers
//! - `stat_csv`: `show stat`
//! - `info`: `show info`
//! - `lua_cli`: `core.register_cli` commands

mod commands;
mod info;
pub mod listener;
pub mod lua_cli;
mod protocol;
mod servers;
mod session;

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// HAProxy's defaults: `stats timeout 10s`, `stats maxconn 10`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAXCONN: usize = 10;

/// What every session reads.
pub struct Shared {
    pub table: Vec<commands::Command>,
    pub timeout: Duration,
    pub nbthread: usize,
}

/// Settings of the CLI thread.
pub struct Start {
    pub sockets: Vec<listener::Bound>,
    pub timeout: Option<Duration>,
    pub maxconn: Option<usize>,
    pub nbthread: usize,
}

/// Starts the CLI thread; it serves until `shutdown` leaves `Running`, then
/// removes the socket files.
pub fn start(s: Start, mut shutdown: watch::Receiver<crate::proxy::Shutdown>) {
    if s.sockets.is_empty() {
        return;
    }
    let lua: Vec<(Vec<String>, String)> = lua_cli::commands()
        .iter()
        .map(|c| (c.path.clone(), c.usage.clone()))
        .collect();
    let shared = Arc::new(Shared {
        table: commands::table(&lua),
        timeout: s.timeout.unwrap_or(DEFAULT_TIMEOUT),
        nbthread: s.nbthread,
    });
    let slots = Arc::new(Semaphore::new(s.maxconn.unwrap_or(DEFAULT_MAXCONN)));
    let sockets = s.sockets;
    let spawned = std::thread::Builder::new()
        .name("luahost-cli".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    crate::log::alert(&format!("stats socket: cannot create the event loop: {e}"));
                    return;
                }
            };
            let paths: Vec<_> = sockets.iter().filter_map(|b| b.path.clone()).collect();
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                for b in sockets {
                    tokio::task::spawn_local(listener::accept_loop(
                        shared.clone(),
                        b,
                        slots.clone(),
                    ));
                }
                while *shutdown.borrow_and_update() == crate::proxy::Shutdown::Running {
                    if shutdown.changed().await.is_err() {
                        break;
                    }
                }
            });
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        });
    if let Err(e) = spawned {
        crate::log::alert(&format!("stats socket: cannot start the CLI thread: {e}"));
    }
}
