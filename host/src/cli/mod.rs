//! The runtime API: HAProxy's CLI on the `stats socket`s of `global`.
//!
//! It runs on worker 0's event loop, as HAProxy's CLI is an applet on one
//! of its threads: worker 0 holds the first Lua state, where load-time
//! `core.event_sub` subscriptions and `core.register_cli` commands live, so
//! a `set server` that fires an event runs the subscriber's callback on
//! the same thread in the same event-loop pass, with no hop to another
//! thread (docs/benchmarks.md, events). The commands that change servers
//! only touch the live model (atomics and snapshot swaps, see `backend`),
//! which the other workers read without locks. A long `show stat` takes
//! worker 0's time, as it takes an HAProxy thread's.
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
mod stat_csv;

use crate::backend::{Registry, Server};
use std::collections::HashMap;
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
    /// The live model the commands read and change.
    pub registry: Arc<Registry>,
    /// From the configuration: what the model does not keep.
    pub config: ConfigFacts,
}

/// What `show stat` and `show servers state` need from the configuration.
#[derive(Default)]
pub struct ConfigFacts {
    /// `maxconn` of the frontends that set one.
    pub frontend_maxconn: HashMap<String, usize>,
    /// `rise`/`fall` of configured servers that set one, by (backend,
    /// server); the others have HAProxy's 2 and 3.
    pub rise_fall: HashMap<(String, String), (u32, u32)>,
    /// The backends' `fullconn` as HAProxy derives it (`slim` of a BACKEND
    /// row): a tenth, rounded up, of the `maxconn` of the frontends that
    /// can use it (`default_backend`, static `use_backend`, a `listen`
    /// section itself); 1 when none can.
    pub fullconn: HashMap<String, usize>,
    /// Check `port`/`addr` and host names of the configured servers that
    /// have any, by (backend, server).
    pub targets: HashMap<(String, String), ServerTarget>,
}

/// Where a server's checks go, and its configured host name.
#[derive(Clone, Debug, Default)]
pub struct ServerTarget {
    pub check_port: Option<u16>,
    pub check_addr: Option<std::net::IpAddr>,
    pub fqdn: Option<String>,
}

impl ConfigFacts {
    pub fn from_config(cfg: &crate::config::Config) -> ConfigFacts {
        let mut f = ConfigFacts::default();
        let global = cfg
            .global
            .maxconn
            .unwrap_or(crate::stats::snapshot().maxconn);
        // One pass over the sections, and a second over the backends only
        // when a frontend reaches some (with 300,000 sections, each pass
        // over them counts).
        let mut fe_total: HashMap<String, usize> = HashMap::new();
        for p in &cfg.proxies {
            if let Some(m) = p.extras.maxconn {
                f.frontend_maxconn.insert(p.name.clone(), m);
            }
            // Servers with HAProxy's defaults are left out: the reader
            // falls back to them.
            for s in &p.servers {
                let h = s.health.as_deref();
                let t = ServerTarget {
                    check_port: h.and_then(|h| h.port),
                    check_addr: h.and_then(|h| h.addr),
                    fqdn: match &s.addr {
                        crate::config::ServerAddr::Host { host, .. } => Some(host.clone()),
                        crate::config::ServerAddr::Ip(_) => None,
                    },
                };
                if t.check_port.is_some() || t.check_addr.is_some() || t.fqdn.is_some() {
                    f.targets.insert((p.name.clone(), s.name.clone()), t);
                }
                if s.rise().is_some() || s.fall().is_some() {
                    f.rise_fall.insert(
                        (p.name.clone(), s.name.clone()),
                        (s.rise().unwrap_or(2), s.fall().unwrap_or(3)),
                    );
                }
            }
            if !p.kind.has_frontend() {
                continue;
            }
            let max = p.extras.maxconn.unwrap_or(global);
            let mut targets: Vec<&str> = p
                .extras
                .use_backends
                .iter()
                .filter(|u| !u.is_dynamic())
                .map(|u| u.name.as_str())
                .collect();
            if let Some((d, _)) = &p.extras.default_backend {
                targets.push(d);
            }
            if p.kind.has_backend() {
                targets.push(&p.name);
            }
            targets.sort_unstable();
            targets.dedup();
            for t in targets {
                *fe_total.entry(t.to_string()).or_default() += max;
            }
        }
        // Only the backends a frontend can reach are kept: every other one
        // has HAProxy's 1, which the reader defaults to (with many backends
        // a map of all of them would be most of this structure's memory).
        if !fe_total.is_empty() {
            for p in cfg.proxies.iter().filter(|p| p.kind.has_backend()) {
                if let Some(&total) = fe_total.get(&p.name) {
                    f.fullconn.insert(p.name.clone(), total.div_ceil(10).max(1));
                }
            }
        }
        f
    }
}

impl Shared {
    /// A frontend's `maxconn`, else the global one.
    pub fn frontend_maxconn(&self, name: &str) -> usize {
        self.config
            .frontend_maxconn
            .get(name)
            .copied()
            .unwrap_or_else(|| crate::stats::snapshot().maxconn)
    }

    /// A server's `rise` and `fall` (a dynamic server's from its `add
    /// server` line; HAProxy's defaults 2 and 3).
    pub fn rise_fall(&self, s: &Server) -> (u32, u32) {
        if self.config.rise_fall.is_empty() {
            return (2, 3);
        }
        self.config
            .rise_fall
            .get(&(s.proxy_name.to_string(), s.name.to_string()))
            .copied()
            .filter(|_| !s.dynamic)
            .or_else(|| {
                let d = s.added_with.get()?;
                Some((d.rise().unwrap_or(2), d.fall().unwrap_or(3)))
            })
            .unwrap_or((2, 3))
    }

    /// `srv_check_status` and `srv_check_result` of `show servers
    /// state`: the last check's HAProxy codes, HCHK_STATUS_INI (1) and
    /// CHK_RES_UNKNOWN (0) until a check reports.
    pub fn check_codes(&self, s: &Server) -> (u8, u8) {
        s.last_check().unwrap_or((1, 0))
    }

    /// A server's check `port` and `addr` and its host name (the `fqdn`
    /// column), as configured (`add server` settings for a dynamic one).
    pub fn check_target(&self, s: &Server) -> ServerTarget {
        if s.dynamic {
            let h = s.added_with.get().and_then(|d| d.health.as_deref());
            return ServerTarget {
                check_port: h.and_then(|h| h.port),
                check_addr: h.and_then(|h| h.addr),
                fqdn: None,
            };
        }
        self.config
            .targets
            .get(&(s.proxy_name.to_string(), s.name.to_string()))
            .cloned()
            .unwrap_or_default()
    }
}

/// Settings of the CLI (served on worker 0).
pub struct Start {
    pub sockets: Vec<listener::Bound>,
    pub timeout: Option<Duration>,
    pub maxconn: Option<usize>,
    pub nbthread: usize,
    pub registry: Arc<Registry>,
    pub config: ConfigFacts,
}

/// Serves the stats sockets on the calling worker's event loop (worker 0,
/// inside its LocalSet) until `shutdown` leaves `Running`, then removes the
/// socket files.
pub fn serve(s: Start, mut shutdown: watch::Receiver<crate::proxy::Shutdown>) {
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
        registry: s.registry,
        config: s.config,
    });
    let slots = Arc::new(Semaphore::new(s.maxconn.unwrap_or(DEFAULT_MAXCONN)));
    let paths: Vec<_> = s.sockets.iter().filter_map(|b| b.path.clone()).collect();
    let loops: Vec<_> = s
        .sockets
        .into_iter()
        .map(|b| tokio::task::spawn_local(listener::accept_loop(shared.clone(), b, slots.clone())))
        .collect();
    tokio::task::spawn_local(async move {
        while *shutdown.borrow_and_update() == crate::proxy::Shutdown::Running {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        for l in loops {
            l.abort();
        }
        for p in paths {
            let _ = std::fs::remove_file(p);
        }
    });
}

/// Seconds since the epoch, the clock of the model's `last_change`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
