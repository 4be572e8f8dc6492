#![allow(dead_code)]
//! The live model of proxies and servers, and forwarding to servers:
//! choosing a server, queueing when every server is at its `maxconn`,
//! connecting with retries, and relaying HTTP (pooled keep-alive
//! connections) or raw TCP.
//!
//! Layout:
//! - this file: a [`Backend`] built from the configuration, and the errors;
//! - `registry`: the [`Registry`] of every proxy (by name, with HAProxy's
//!   ids), the model's root, passed down to the workers and Lua states;
//! - `spec`: what a backend is built from, kept compact until the backend
//!   is first used (the registry builds backends lazily);
//! - `server`: a [`Server`]'s live state (atomics) and its queue;
//! - `state`: HAProxy's administrative flags and operational states;
//! - `runtime`: the changes the CLI, checks and Lua make (add/del server,
//!   admin state, address, weight, maxconn, check results), each published
//!   as an event;
//! - `events`: the [`EventBus`] and [`ServerEvent`];
//! - `balance`: the server snapshot ([`Farm`]) and load-balancing algorithms;
//! - `slot`: taking a server slot for a request, and queueing;
//! - `connect`: connecting with `timeout connect` and `retries`;
//! - `http`: the per-worker [`Forwarder`], its connection pools, and HTTP;
//! - `h1`: the HTTP/1.1 wire format towards servers (heads, body framing);
//! - `tcp`: TCP forwarding with half-closes;
//! - `observe`: traffic outcomes reported for `observe` (HAProxy's
//!   health analysis);
//! - `track`: `track` links between servers, and how changes follow them.
//!
//! The [`Registry`] is built once and shared by every worker (`Send +
//! Sync`). On the request path nothing takes a lock: a backend's server list
//! is an arc-swapped [`Farm`] snapshot, and each server's state is atomics.
//! Changes (rare) are serialised per backend and rebuild the snapshot off
//! the request path. [`Forwarder`] is per worker, and idle server
//! connections are pooled per worker thread, so pooling needs no lock.
//! Forwarding must run inside the worker's tokio `LocalSet`.

mod balance;
mod connect;
pub mod events;
pub(crate) mod h1;
mod http;
mod name_index;
pub mod observe;
mod registry;
mod runtime;
mod server;
mod slot;
mod spec;
pub mod stat_fields;
pub mod state;
pub mod stream_kill;
mod tcp;
pub mod track;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

// The model's API, for the CLI, the check engine and the Lua classes (some
// parts are not called from inside the binary yet).
#[allow(unused_imports)]
pub use balance::Farm;
#[allow(unused_imports)]
pub use events::{
    CheckOutcome, CheckResult, EventBus, EventDetail, EventMask, EventSink, ServerEvent,
    ServerEventKind, SubscriptionId,
};
pub use h1::add_forwarded_for;
// UpstreamBody is what the front end wraps in its response body type.
#[allow(unused_imports)]
pub use http::{Forwarder, UpstreamBody};
#[allow(unused_imports)]
pub use registry::{ProxyCap, ProxyEntry, Registry};
#[allow(unused_imports)]
pub use runtime::AddServer;
#[allow(unused_imports)]
pub use server::{CheckFlags, Server, ServerCounters};
#[allow(unused_imports)]
pub use slot::ConnSlot;
#[allow(unused_imports)]
pub use state::{AdminFlags, AdminState, OperCause, OperState};

use crate::config::{self, Balance, Mode};
use arc_swap::ArcSwap;
use hyper::header::HeaderName;
use server::{Queue, ServerInit};
pub(crate) use spec::{BackendSpec, SettingsCache};
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `timeout connect` when the configuration has none. HAProxy waits forever
/// then (and warns); an unbounded wait would pin a connection slot and a
/// client for as long as the kernel keeps retrying SYNs, so luahost bounds
/// it. 5 s covers a lost SYN or two (the manual advises values slightly
/// above a multiple of 3 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `retries` when the configuration has none (HAProxy's default).
pub const DEFAULT_RETRIES: u32 = 3;

/// Server ids index the per-worker connection pools. They are unique in the
/// process and never reused, so that a pool can never hand out a connection
/// to another server (a deleted one's successor, or one of another build).
static NEXT_GID: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn next_gid() -> usize {
    NEXT_GID.fetch_add(1, Ordering::Relaxed)
}

/// Resolved timeouts of a backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    /// `timeout queue`, defaulting to the connect timeout as in HAProxy.
    pub queue: Duration,
    /// `timeout server`; none means no limit (HAProxy's behaviour).
    pub server: Option<Duration>,
    /// `timeout client` of the section (used by TCP forwarding). Only a
    /// `listen` section has one: the configuration keeps it for frontends.
    pub client: Option<Duration>,
    /// `timeout tunnel`: replaces client/server inactivity for TCP.
    pub tunnel: Option<Duration>,
}

/// One backend (or the backend side of a `listen` section): its live
/// servers, algorithm, and forwarding settings.
pub struct Backend {
    name: Arc<str>,
    /// HAProxy's proxy `uuid`.
    uuid: i32,
    mode: Mode,
    /// The servers and balancing tables now; replaced as a whole.
    farm: ArcSwap<Farm>,
    lb: balance::Lb,
    timeouts: Timeouts,
    retries: u32,
    /// HAProxy's `option redispatch`: the last retry may go to another
    /// server. The configuration has no such option yet, so it stays off
    /// (HAProxy's default), but the retry logic honours it.
    redispatch: bool,
    /// `option httpclose`: no server connection reuse, `Connection: close`.
    httpclose: bool,
    forwardfor: Option<ForwardFor>,
    /// Requests waiting for any server slot.
    queue: Queue,
    /// Where server changes are published.
    events: Arc<EventBus>,
    /// The workers' reapers: killing the streams that use a server.
    reapers: Arc<stream_kill::Reapers>,
    /// Serialises changes to this backend's servers (never taken on the
    /// request path), so that snapshots are built from a consistent state
    /// and events come out in the order of the changes.
    writer: Mutex<()>,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("servers", &self.farm.load().servers.len())
            .finish()
    }
}

impl Backend {
    /// Builds a backend from its section at once (the registry builds its
    /// backends lazily, from a [`BackendSpec`]).
    pub(crate) fn build(
        p: &config::Proxy,
        uuid: i32,
        events: Arc<EventBus>,
        reapers: Arc<stream_kill::Reapers>,
    ) -> Result<Backend, Vec<String>> {
        let spec = BackendSpec::from_config(p, &mut SettingsCache::default())?;
        let name: Arc<str> = Arc::from(p.name.as_str());
        Ok(Backend::from_spec(
            name,
            uuid,
            &spec,
            events,
            reapers,
            server::unix_now(),
        ))
    }

    /// Builds the live backend of `spec`. Server ids follow HAProxy
    /// (`check_config_validity`): a server without an `id` gets the first
    /// free id from its position (1-based) on, so ids stay stable when an
    /// explicit id is added elsewhere. `since` is the Unix time the
    /// servers' state dates from (the process's start).
    pub(crate) fn from_spec(
        name: Arc<str>,
        uuid: i32,
        spec: &BackendSpec,
        events: Arc<EventBus>,
        reapers: Arc<stream_kill::Reapers>,
        since: u64,
    ) -> Backend {
        let set = &spec.settings;
        // No `id` keyword for servers yet: position-based ids.
        let servers = spec
            .servers
            .iter()
            .enumerate()
            .map(|(pos, s)| {
                Arc::new(Server::new(ServerInit {
                    name: Arc::from(&*s.name),
                    addr: s.addr,
                    puid: pos as u32 + 1,
                    rid: 0,
                    weight: s.weight,
                    maxconn: s.maxconn,
                    backup: s.backup,
                    dynamic: false,
                    on_marked: s.on_marked,
                    // `disabled`: configuration and forced maintenance, down.
                    admin: AdminFlags(if s.disabled {
                        AdminFlags::CMAINT | AdminFlags::FMAINT
                    } else {
                        0
                    }),
                    oper: if s.disabled {
                        OperState::Stopped
                    } else {
                        OperState::Running
                    },
                    check: if s.check {
                        CheckFlags::CONFIGURED | CheckFlags::ENABLED
                    } else {
                        0
                    },
                    gid: next_gid(),
                    proxy_name: name.clone(),
                    proxy_uuid: uuid,
                    since,
                }))
            })
            .collect();
        let connect = set.timeouts.connect.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let timeouts = Timeouts {
            connect,
            queue: set.timeouts.queue.unwrap_or(connect),
            server: set.timeouts.server,
            client: set.timeouts.client,
            tunnel: set.timeouts.tunnel,
        };
        Backend {
            name,
            uuid,
            mode: set.mode,
            farm: ArcSwap::from_pointee(Farm::build(set.balance, servers)),
            lb: balance::Lb::new(set.balance),
            timeouts,
            retries: set.retries.unwrap_or(DEFAULT_RETRIES),
            redispatch: false,
            httpclose: set.httpclose,
            forwardfor: set.forwardfor.clone(),
            queue: Queue::default(),
            events,
            reapers,
            writer: Mutex::new(()),
        }
    }

    /// The section name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The section name, shared.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// HAProxy's proxy `uuid`.
    pub fn uuid(&self) -> i32 {
        self.uuid
    }

    /// The section's `mode`.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// `timeout connect` (or its default).
    pub fn connect_timeout(&self) -> Duration {
        self.timeouts.connect
    }

    /// The `balance` algorithm.
    pub fn balance(&self) -> Balance {
        self.lb.algo
    }

    /// The servers now (a snapshot: later changes do not show in it).
    pub fn servers(&self) -> Arc<Farm> {
        self.farm.load_full()
    }

    /// Kills the streams now using `srv` (CLI `shutdown sessions server`,
    /// Lua `Server:shut_sess()`, `on-marked-down shutdown-sessions`).
    pub fn kill_server_streams(&self, srv: &Server) {
        self.reapers.kill_server_streams(srv);
    }

    /// Kills the streams using this backend's backup servers (HAProxy's
    /// `srv_shutdown_backup_streams`: Lua's `Proxy:shut_bcksess()`,
    /// `on-marked-up shutdown-backup-sessions`).
    pub fn kill_backup_streams(&self) {
        for s in self.farm.load().servers.iter().filter(|s| s.backup) {
            self.reapers.kill_server_streams(s);
        }
    }

    /// The server named `name`, if it is (still) in the backend.
    pub fn server(&self, name: &str) -> Option<Arc<Server>> {
        self.farm.load().find(name).cloned()
    }

    /// The server with id `puid`.
    pub fn server_by_puid(&self, puid: u32) -> Option<Arc<Server>> {
        self.farm
            .load()
            .servers
            .iter()
            .find(|s| s.puid == puid)
            .cloned()
    }

    /// Requests waiting for any server (the backend's queue).
    pub fn pending(&self) -> usize {
        self.queue.waiting.load(Ordering::Relaxed)
    }

    /// The event bus server changes are published on.
    pub fn events(&self) -> &Arc<EventBus> {
        &self.events
    }

    /// What `nbsrv` reports, as HAProxy computes it: the usable active
    /// servers; when there are none, 1 if a backup server can take over
    /// (only the first usable backup is used), else 0.
    pub fn usable_servers(&self) -> usize {
        let farm = self.farm.load();
        let active = farm
            .servers
            .iter()
            .filter(|s| !s.backup && s.usable())
            .count();
        if active > 0 {
            return active;
        }
        usize::from(farm.servers.iter().any(|s| s.backup && s.usable()))
    }

    /// Usable active and backup servers (HAProxy's `srv_act` and
    /// `srv_bck`, recounted as `recount_servers` does: up, not in
    /// maintenance or drain, weight > 0).
    pub fn up_servers(&self) -> (usize, usize) {
        let farm = self.farm.load();
        let usable = |s: &&Arc<Server>| s.usable();
        let act = farm
            .servers
            .iter()
            .filter(|s| !s.backup)
            .filter(usable)
            .count();
        let bck = farm
            .servers
            .iter()
            .filter(|s| s.backup)
            .filter(usable)
            .count();
        (act, bck)
    }

    /// HAProxy's `lbprm.tot_weight`: the weights of the usable active
    /// servers, or when there is none the first usable backup's.
    pub fn total_weight(&self) -> u64 {
        let farm = self.farm.load();
        let active: Vec<&Arc<Server>> = farm
            .servers
            .iter()
            .filter(|s| !s.backup && s.usable())
            .collect();
        if !active.is_empty() {
            return active.iter().map(|s| u64::from(s.weight())).sum();
        }
        farm.servers
            .iter()
            .find(|s| s.backup && s.usable())
            .map(|s| u64::from(s.weight()))
            .unwrap_or(0)
    }

    /// The backend's `option forwardfor`, if any (applied by [`Forwarder::http`]).
    pub fn forwardfor(&self) -> Option<&ForwardFor> {
        self.forwardfor.as_ref()
    }

    /// Current connections (TCP) or requests in flight (HTTP) per server, in
    /// configuration order.
    pub fn server_loads(&self) -> Vec<(Arc<str>, usize)> {
        self.farm
            .load()
            .servers
            .iter()
            .map(|s| (s.name.clone(), s.current()))
            .collect()
    }
}

/// Resolves a server host name (blocking; done once at startup). The first
/// address wins, as with HAProxy's default `init-addr last,libc`.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| "no address found".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// `option forwardfor`, checked and ready for use.
#[derive(Debug, Clone)]
pub struct ForwardFor {
    /// The header to add (lower case).
    pub header: HeaderName,
    /// Clients in this network get no header.
    pub except: Option<IpNet>,
    /// Only add the header when the request has none.
    pub if_none: bool,
}

impl ForwardFor {
    /// Checks a configured `option forwardfor` (also usable for a
    /// frontend's, which the front end applies with [`add_forwarded_for`]
    /// when the backend has none of its own).
    pub fn from_config(ff: &config::ForwardFor) -> Result<ForwardFor, String> {
        let header = match &ff.header {
            Some(h) => HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("'{h}' is not a valid header name"))?,
            None => HeaderName::from_static("x-forwarded-for"),
        };
        let except = match &ff.except {
            Some(n) => Some(IpNet::parse(n).ok_or_else(|| {
                format!("'{n}' is not a network (expected e.g. 10.0.0.0/8, 127.0.0.1 or ::1/128)")
            })?),
            None => None,
        };
        Ok(ForwardFor {
            header,
            except,
            if_none: ff.if_none,
        })
    }
}

/// An IP network: address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Reads `ADDR`, `ADDR/LEN`, or (IPv4) `ADDR/MASK` as in `255.255.0.0`.
    pub fn parse(text: &str) -> Option<IpNet> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                Ok(_) => return None,
                Err(_) => match (addr, l.parse::<IpAddr>().ok()?) {
                    (IpAddr::V4(_), IpAddr::V4(mask)) => {
                        let m = u32::from(mask);
                        // A mask must be contiguous ones followed by zeros.
                        if m.leading_ones() + m.trailing_zeros() != 32 {
                            return None;
                        }
                        m.leading_ones() as u8
                    }
                    _ => return None,
                },
            },
        };
        Some(IpNet { addr, prefix })
    }

    /// Whether `ip` is in the network. IPv4-mapped IPv6 addresses count as
    /// their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Why a request or connection could not be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// No usable server in the backend (503).
    NoServer,
    /// Every server was at its `maxconn` for `timeout queue` (503).
    QueueTimeout,
    /// The connection to the server failed on every attempt (503).
    ConnectFailed,
    /// HTTP: no response head within `timeout server`; TCP: inactivity
    /// timeout (504).
    Timeout,
    /// The server closed the connection or sent an invalid or incomplete
    /// response (502).
    BadResponse,
    /// The client's side failed while its request was being forwarded
    /// (reported as 400, though the client is usually gone).
    ClientAborted,
    /// TCP: the server's side failed (reset) during the transfer (502).
    ServerAborted,
}

impl ForwardError {
    /// The termination state HAProxy logs in this case.
    pub fn term_state(&self) -> &'static str {
        match self {
            ForwardError::NoServer | ForwardError::ConnectFailed => "SC",
            ForwardError::QueueTimeout => "sQ",
            ForwardError::Timeout => "sH",
            ForwardError::BadResponse => "SH",
            ForwardError::ServerAborted => "SD",
            ForwardError::ClientAborted => "CH",
        }
    }

    /// The HTTP status HAProxy answers with in this case.
    pub fn status(&self) -> u16 {
        match self {
            ForwardError::NoServer | ForwardError::QueueTimeout | ForwardError::ConnectFailed => {
                503
            }
            ForwardError::Timeout => 504,
            ForwardError::BadResponse | ForwardError::ServerAborted => 502,
            ForwardError::ClientAborted => 400,
        }
    }
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForwardError::NoServer => "no server available",
            ForwardError::QueueTimeout => "timed out waiting in the queue",
            ForwardError::ConnectFailed => "connection to the server failed",
            ForwardError::Timeout => "server timeout",
            ForwardError::BadResponse => "invalid or incomplete response from the server",
            ForwardError::ClientAborted => "client aborted",
            ForwardError::ServerAborted => "server aborted",
        })
    }
}

impl std::error::Error for ForwardError {}
