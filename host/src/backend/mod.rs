#![allow(dead_code)]
//! Forwarding to backend servers: choosing a server, queueing when every
//! server is at its `maxconn`, connecting with retries, and relaying HTTP
//! (pooled keep-alive connections) or raw TCP.
//!
//! Layout:
//! - this file: the backends built from the configuration, and the errors;
//! - `server`: a server's run-time state, connection slots and the queue;
//! - `balance`: the load-balancing algorithms;
//! - `connect`: connecting with `timeout connect` and `retries`;
//! - `http`: the per-worker [`Forwarder`], its connection pools, and HTTP;
//! - `h1`: the HTTP/1.1 wire format towards servers (heads, body framing);
//! - `tcp`: TCP forwarding with half-closes.
//!
//! [`Backends`] is built once and shared by every worker (`Send + Sync`, only
//! atomics on the request path). [`Forwarder`] is per worker, and idle
//! server connections are pooled per worker thread, so pooling needs no
//! lock. Forwarding must run inside the worker's tokio `LocalSet`.

mod balance;
mod connect;
mod h1;
mod http;
mod server;
mod tcp;

#[cfg(test)]
mod tests;

pub use h1::add_forwarded_for;
// UpstreamBody is what the front end wraps in its response body type.
#[allow(unused_imports)]
pub use http::{Forwarder, UpstreamBody};

use crate::config::{self, Mode, ServerAddr};
use hyper::header::HeaderName;
use server::{Queue, Server};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `timeout connect` when the configuration has none. HAProxy waits forever
/// then (and warns); an unbounded wait would pin a connection slot and a
/// client for as long as the kernel keeps retrying SYNs, so luahost bounds
/// it. 5 s covers a lost SYN or two (the manual advises values slightly
/// above a multiple of 3 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `retries` when the configuration has none (HAProxy's default).
pub const DEFAULT_RETRIES: u32 = 3;

/// Every backend of the configuration (backend and listen sections).
pub struct Backends {
    by_name: HashMap<Box<str>, Arc<Backend>>,
    /// Servers over all backends.
    nb_servers: usize,
}

/// Server ids index the per-worker connection pools. They are unique in the
/// process, not only within one `Backends`, so that a pool can never hand
/// out a connection to another server of the same index in another build.
static NEXT_GID: AtomicUsize = AtomicUsize::new(0);

impl Backends {
    /// Builds the backends, resolving server host names now (as HAProxy does
    /// at startup). Every problem is reported, formatted as configuration
    /// alerts.
    pub fn build(cfg: &config::Config) -> Result<Backends, Vec<String>> {
        let mut by_name = HashMap::new();
        let mut errors = Vec::new();
        let mut nb_servers = 0;
        for p in cfg.proxies.iter().filter(|p| p.kind.has_backend()) {
            match Backend::build(p) {
                Ok(be) => {
                    nb_servers += be.servers.len();
                    by_name.insert(Box::from(p.name.as_str()), Arc::new(be));
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok(Backends {
                by_name,
                nb_servers,
            })
        } else {
            Err(errors)
        }
    }

    /// The backend (or listen section) named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        self.by_name.get(name)
    }

    /// Number of servers over all backends.
    pub fn server_count(&self) -> usize {
        self.nb_servers
    }
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

/// One backend: its servers, algorithm, and forwarding settings.
pub struct Backend {
    name: Arc<str>,
    mode: Mode,
    servers: Box<[Server]>,
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
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("servers", &self.servers.len())
            .finish()
    }
}

impl Backend {
    fn build(p: &config::Proxy) -> Result<Backend, Vec<String>> {
        let mut errors = Vec::new();
        let mut servers = Vec::with_capacity(p.servers.len());
        for s in &p.servers {
            let addr = match &s.addr {
                ServerAddr::Ip(a) => Some(*a),
                ServerAddr::Host { host, port } => match resolve(host, *port) {
                    Ok(a) => Some(a),
                    Err(why) => {
                        errors.push(format!(
                            "[ALERT] parsing [{}] : {} '{}', server '{}': cannot resolve '{host}': {why}",
                            s.location,
                            p.kind.keyword(),
                            p.name,
                            s.name
                        ));
                        None
                    }
                },
            };
            if let Some(addr) = addr {
                let gid = NEXT_GID.fetch_add(1, Ordering::Relaxed);
                servers.push(Server::new(s, addr, gid));
            }
        }
        let forwardfor = match &p.options.forwardfor {
            Some(ff) => match ForwardFor::from_config(ff) {
                Ok(f) => Some(f),
                Err(why) => {
                    errors.push(format!(
                        "[ALERT] parsing [{}] : {} '{}': 'option forwardfor': {why}",
                        p.location,
                        p.kind.keyword(),
                        p.name
                    ));
                    None
                }
            },
            None => None,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let connect = p.timeouts.connect.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let timeouts = Timeouts {
            connect,
            queue: p.timeouts.queue.unwrap_or(connect),
            server: p.timeouts.server,
            client: p.timeouts.client,
            tunnel: p.timeouts.tunnel,
        };
        let lb = balance::Lb::new(p.balance, &servers);
        Ok(Backend {
            name: Arc::from(p.name.as_str()),
            mode: p.mode,
            servers: servers.into_boxed_slice(),
            lb,
            timeouts,
            retries: p.retries.unwrap_or(DEFAULT_RETRIES),
            redispatch: false,
            httpclose: p.options.httpclose,
            forwardfor,
            queue: Queue::default(),
        })
    }

    /// The section name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The section's `mode`.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// What `nbsrv` reports, as HAProxy computes it: the usable active
    /// servers; when there are none, 1 if a backup server can take over
    /// (only the first usable backup is used), else 0. Usable means not
    /// disabled and a non-zero weight (health checks come later).
    pub fn usable_servers(&self) -> usize {
        let active = self
            .servers
            .iter()
            .filter(|s| !s.backup && s.usable())
            .count();
        if active > 0 {
            return active;
        }
        usize::from(self.servers.iter().any(|s| s.backup && s.usable()))
    }

    /// The backend's `option forwardfor`, if any (applied by [`Forwarder::http`]).
    pub fn forwardfor(&self) -> Option<&ForwardFor> {
        self.forwardfor.as_ref()
    }

    /// Current connections (TCP) or requests in flight (HTTP) per server, in
    /// configuration order.
    pub fn server_loads(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.servers.iter().map(|s| (&*s.name, s.current()))
    }

    /// Puts a server in or out of maintenance at run time (a later runtime
    /// API or health checks). Returns false for an unknown server.
    ///
    /// Round-robin and source hashing keep their table, built from the
    /// servers enabled at startup: a server taken out is skipped, and its
    /// share goes to the next server in the table.
    pub fn set_server_disabled(&self, name: &str, disabled: bool) -> bool {
        match self.servers.iter().find(|s| &*s.name == name) {
            Some(s) => {
                s.set_disabled(disabled);
                // Queued requests pick again: a server back in service has
                // room, and those waiting for one now out of service must
                // move on.
                s.queue.wake_all();
                self.queue.wake_all();
                true
            }
            None => false,
        }
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
