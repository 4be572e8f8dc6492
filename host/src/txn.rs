//! The data of one transaction (HTTP) or one connection's content phase
//! (TCP): what sample fetches read, rules and Lua actions modify, and what
//! is forwarded.
//!
//! It is plain owned data (`Send`), so that it can move, boxed, to the worker
//! that runs a Lua action for it (the shared Lua state lives on worker 0) and
//! come back.

use crate::lua::vars::VarStore;
use bytes::{Bytes, BytesMut};
use hyper::http::{request, response};
use std::net::SocketAddr;
use std::sync::Arc;

/// HTTP or TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnMode {
    Http,
    Tcp,
}

/// Transaction ids, unique in the process.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A transaction in progress.
#[derive(Debug)]
pub struct Txn {
    /// Unique in the process (keys Lua's per-transaction data).
    pub id: u64,
    /// Which Lua states hold `set_priv` data for this transaction
    /// (1: shared, 2: per-thread), dropped when it ends.
    pub priv_states: std::sync::atomic::AtomicU8,
    pub mode: TxnMode,
    /// The client's address (src, src_port).
    pub client: SocketAddr,
    /// The address the client connected to (dst, dst_port).
    pub local: SocketAddr,
    pub frontend: Arc<str>,
    /// The backend chosen so far (be_name); the frontend's name until a
    /// backend is selected, as HAProxy reports it.
    pub backend: Option<Arc<str>>,
    /// The server that served the request (srv_name), once known.
    pub server: Option<Arc<str>>,
    /// The worker thread number (1-based), for the `thread` fetch.
    pub thread: usize,
    /// HTTP: the request head as it will be forwarded.
    pub req: Option<request::Parts>,
    /// HTTP: the request body when it was buffered (req.body).
    pub req_body: Option<Bytes>,
    /// HTTP: the response head, once there is one.
    pub res: Option<response::Parts>,
    /// TCP: data received from the client not yet forwarded (req channel).
    pub req_buf: BytesMut,
    /// TCP: data received from the server not yet forwarded (res channel).
    pub res_buf: BytesMut,
    /// Variables (sess/txn/req/res); `proc` is process-wide.
    pub vars: VarStore,
    /// `set-loglevel` / `txn:set_loglevel`.
    pub log_level: Option<i32>,
    /// HTTP: this is the connection's first request (http_first_req).
    pub first_request: bool,
    /// What the traffic log line reports: timers, termination, captures.
    pub log: crate::log::TxnFacts,
}

impl Txn {
    /// A transaction with no request yet.
    pub fn new(
        mode: TxnMode,
        client: SocketAddr,
        local: SocketAddr,
        frontend: Arc<str>,
        thread: usize,
    ) -> Txn {
        Txn {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            priv_states: std::sync::atomic::AtomicU8::new(0),
            mode,
            client,
            local,
            frontend,
            backend: None,
            server: None,
            thread,
            req: None,
            req_body: None,
            res: None,
            req_buf: BytesMut::new(),
            res_buf: BytesMut::new(),
            vars: VarStore::default(),
            log_level: None,
            first_request: true,
            log: crate::log::TxnFacts::default(),
        }
    }

    /// be_name: the backend, or the frontend while none was chosen.
    pub fn backend_name(&self) -> &str {
        self.backend.as_deref().unwrap_or(&self.frontend)
    }
}
