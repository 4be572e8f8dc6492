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
    /// HTTP: set when a Lua service answered, which keeps its own copy of
    /// the transaction until it ends (see [`ServicePrivs`]).
    pub service_privs: Option<ServicePrivs>,
    /// What the traffic log line reports: timers, termination, captures.
    pub log: crate::log::TxnFacts,
}

/// Who drops the private data (`set_priv`) that the Lua state of a service
/// holds for a transaction. It must live as long as the transaction: the
/// response rules that run after the service's head (a Lua `http-res`
/// action) read what an `http-req` action stored, and the service itself may
/// still run, streaming its body, after the front end is done. So the side
/// that finishes last drops it.
#[derive(Debug, Clone)]
pub struct ServicePrivs {
    flags: Arc<std::sync::atomic::AtomicU8>,
    /// The `priv_states` bit of the service's Lua state.
    pub state_bit: u8,
}

/// [`ServicePrivs`] flags: one side is done; the service's state holds data.
const PRIVS_ONE_DONE: u8 = 1;
const PRIVS_HELD: u8 = 2;

impl ServicePrivs {
    pub fn new(state_bit: u8) -> ServicePrivs {
        ServicePrivs {
            flags: Arc::new(std::sync::atomic::AtomicU8::new(0)),
            state_bit,
        }
    }

    /// The service ended, its state holding data for the transaction or not
    /// (`held`): true when the caller must drop that data now (the front end
    /// is done).
    pub fn service_done(&self, held: bool) -> bool {
        let mine = PRIVS_ONE_DONE | if held { PRIVS_HELD } else { 0 };
        let before = self
            .flags
            .fetch_or(mine, std::sync::atomic::Ordering::AcqRel);
        before & PRIVS_ONE_DONE != 0
    }

    /// The front end is done with the transaction whose `priv_states` are
    /// `states`: the states whose data it must drop now (the service's state
    /// only if the service ended first and left data there).
    pub fn front_done(&self, states: u8) -> u8 {
        let before = self
            .flags
            .fetch_or(PRIVS_ONE_DONE, std::sync::atomic::Ordering::AcqRel);
        if before & PRIVS_ONE_DONE == 0 {
            // The service runs on and drops its state's data when it ends.
            states & !self.state_bit
        } else if before & PRIVS_HELD != 0 {
            states | self.state_bit
        } else {
            states & !self.state_bit
        }
    }
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
            service_privs: None,
            log: crate::log::TxnFacts::default(),
        }
    }

    /// A copy for the response side of a transaction whose original stays
    /// with a Lua service until the service ends: the same id (so private
    /// data set for it stays reachable), the request head, variables and
    /// everything else a response rule reads. The request body and TCP
    /// buffers are not copied (response rules do not read them).
    pub fn copy_for_response(&self) -> Box<Txn> {
        let req = self.req.as_ref().map(|p| {
            let mut r = hyper::Request::new(());
            *r.method_mut() = p.method.clone();
            *r.uri_mut() = p.uri.clone();
            *r.version_mut() = p.version;
            *r.headers_mut() = p.headers.clone();
            r.into_parts().0
        });
        Box::new(Txn {
            id: self.id,
            priv_states: std::sync::atomic::AtomicU8::new(
                self.priv_states.load(std::sync::atomic::Ordering::Relaxed),
            ),
            mode: self.mode,
            client: self.client,
            local: self.local,
            frontend: self.frontend.clone(),
            backend: self.backend.clone(),
            server: self.server.clone(),
            thread: self.thread,
            req,
            req_body: None,
            res: None,
            req_buf: BytesMut::new(),
            res_buf: BytesMut::new(),
            vars: self.vars.clone(),
            log_level: self.log_level,
            first_request: self.first_request,
            service_privs: None,
            log: self.log.clone(),
        })
    }

    /// be_name: the backend, or the frontend while none was chosen.
    pub fn backend_name(&self) -> &str {
        self.backend.as_deref().unwrap_or(&self.frontend)
    }
}
