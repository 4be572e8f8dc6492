//! HTTP forwarding over pooled HTTP/1.1 server connections.
//!
//! Each worker thread has its own idle connections per server, in a
//! thread-local pool: a plain `RefCell` guards them, no lock. A server
//! connection is a hyper client connection whose I/O task runs on the
//! worker's LocalSet;
//! after a response body has been read to its end (and the request body sent
//! whole), the connection goes back to the pool, unless `option httpclose`
//! is set. Bodies stream both ways frame by frame; nothing is buffered whole.

use super::connect::connect;
use super::server::ConnSlot;
use super::{Backend, ForwardError, ForwardFor};
use crate::txn::Txn;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request;
use hyper::{Method, Request, Response, Uri, Version};
use hyper_util::rt::TokioIo;
use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle connections kept per server and worker; beyond it the oldest go.
const MAX_IDLE_PER_SERVER: usize = 1024;
/// Idle connections unused for this long are closed when the pool is next
/// touched, so that a burst does not leave sockets open forever.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// A server may close an idle connection just as a request is sent on it,
/// and the longer it was idle the likelier that is. Past this idle time, a
/// copy of a body-less request is kept so that it can be resent on a new
/// connection if the old one turns out to be closed. Shorter idle times skip
/// the copy (and its allocations), as on a busy proxy.
const COPY_AFTER_IDLE: Duration = Duration::from_secs(1);

thread_local! {
    /// This worker's idle server connections. Thread-local rather than held
    /// by the `Forwarder` so that a response body can return its connection
    /// without holding an `Rc`, which keeps [`UpstreamBody`] `Send`.
    static POOLS: Pools = Pools::default();
}

/// A worker's HTTP and TCP client side. Create one per worker thread; its
/// server connections are pooled per thread. It must be used from tasks of
/// a tokio `LocalSet` (as the workers run): server connections are driven
/// by local tasks, so that their wake-ups stay on the worker.
pub struct Forwarder {
    builder: http1::Builder,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder::new()
    }
}

impl Forwarder {
    pub fn new() -> Forwarder {
        let mut builder = http1::Builder::new();
        // Servers' header names are forwarded as hyper parses them (lower
        // case), which is also what HAProxy sends.
        builder.title_case_headers(false);
        // Copy head and body into one buffer and write it with a plain
        // send(2): requests are small, and writev(2) goes the longer way
        // through the VFS layer.
        builder.writev(false);
        Forwarder { builder }
    }

    /// Idle pooled connections to servers of this thread, over all backends.
    pub fn idle_connections(&self) -> usize {
        POOLS
            .try_with(|p| p.idle.borrow().iter().map(VecDeque::len).sum())
            .unwrap_or(0)
    }

    /// Forwards one HTTP request to a server of `be` and returns the
    /// response, whose body streams from the server. Sets `txn.backend` and
    /// `txn.server`. On error the caller answers with `err.status()`
    /// (`error_pages::response`); the failure has been logged.
    ///
    /// The server's slot (its `maxconn` and leastconn count) is held until
    /// the returned body ends or is dropped.
    pub async fn http<B>(
        &self,
        be: &Arc<Backend>,
        txn: &mut Txn,
        req: Request<B>,
    ) -> Result<Response<UpstreamBody>, ForwardError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        txn.backend = Some(be.name.clone());
        let client = txn.client.ip();
        let (mut head, body) = req.into_parts();
        prepare_request(&mut head, be, client);
        let mut body = ReqKind::from_body(body);
        let body_empty = matches!(body, ReqKind::Empty);
        let mut slot = be.take_slot(client, None).await?;
        txn.server = Some(slot.server().name.clone());
        // Fresh connections that failed before taking the request; bounded
        // so that a server closing every connection at once cannot loop us.
        let mut fresh_failures = 0u32;
        let mut pooled_allowed = !be.httpclose;
        loop {
            let pooled = if pooled_allowed {
                self.checkout(slot.server().gid).await
            } else {
                None
            };
            let (mut conn, reused) = match pooled {
                Some(c) => (c, true),
                None => {
                    let stream = connect(be, &mut slot, client).await?;
                    txn.server = Some(slot.server().name.clone());
                    (self.handshake(stream, be, &slot).await?, false)
                }
            };
            let spare = (reused && body_empty && conn.idle_since.elapsed() > COPY_AFTER_IDLE)
                .then(|| head.clone());
            conn.activity.begin(body_empty);
            let activity = (!body_empty).then(|| conn.activity.clone());
            let req = Request::from_parts(
                head,
                ReqBody {
                    kind: body,
                    activity,
                },
            );
            match send(&mut conn, req, be.timeouts.server).await {
                Sent::Response(resp) => {
                    return Ok(upstream_response(resp, be, conn, slot));
                }
                Sent::Returned(req) => {
                    // The connection was closing before the request left:
                    // nothing reached the server, try another connection.
                    let (h, b) = req.into_parts();
                    head = h;
                    body = b.kind;
                    if !reused {
                        fresh_failures += 1;
                        if fresh_failures > be.retries {
                            log_bad_response(
                                be,
                                &slot,
                                "connection closed before the request was sent",
                            );
                            return Err(ForwardError::BadResponse);
                        }
                    }
                }
                Sent::Failed(e) => {
                    if let (Some(h), true) = (spare, e.is_incomplete_message()) {
                        // An idle connection closed by the server as the
                        // request went out: resend it once, on a new one.
                        head = h;
                        body = ReqKind::Empty;
                        pooled_allowed = false;
                        continue;
                    }
                    if conn.activity.client_failed.load(Ordering::Relaxed) {
                        return Err(ForwardError::ClientAborted);
                    }
                    log_bad_response(be, &slot, &e.to_string());
                    return Err(ForwardError::BadResponse);
                }
                Sent::Timeout => {
                    crate::log::warning(&format!(
                        "backend '{}': server '{}' did not answer within timeout server ({} ms)",
                        be.name,
                        slot.server().name,
                        be.timeouts.server.unwrap_or_default().as_millis()
                    ));
                    return Err(ForwardError::Timeout);
                }
            }
        }
    }

    /// An idle connection to server `gid` that can take a request now.
    async fn checkout(&self, gid: usize) -> Option<Conn> {
        loop {
            let mut conn = POOLS
                .try_with(|p| p.idle.borrow_mut().get_mut(gid)?.pop_back())
                .ok()??;
            if conn.sender.is_closed() {
                continue;
            }
            // Right after the previous response ended, the connection task
            // may not have run yet to mark the connection idle.
            if conn.sender.is_ready() || conn.sender.ready().await.is_ok() {
                return Some(conn);
            }
        }
    }

    /// Starts HTTP/1.1 on a new server connection; its I/O runs in a task.
    async fn handshake(
        &self,
        stream: TcpStream,
        be: &Backend,
        slot: &ConnSlot,
    ) -> Result<Conn, ForwardError> {
        match self
            .builder
            .handshake::<_, ReqBody>(TokioIo::new(stream))
            .await
        {
            Ok((sender, connection)) => {
                // Errors reach the request or the response body; the task
                // itself has nothing to report. A local task: its wake-ups
                // of the request's task (and back) stay within the worker's
                // LocalSet, where waking a task from a runtime task would
                // cost an eventfd write per response.
                let task = tokio::task::spawn_local(async move {
                    let _ = connection.await;
                });
                Ok(Conn {
                    sender,
                    task,
                    activity: Arc::new(Activity::new()),
                    idle_since: Instant::now(),
                })
            }
            Err(e) => {
                log_bad_response(be, slot, &e.to_string());
                Err(ForwardError::BadResponse)
            }
        }
    }
}

fn log_bad_response(be: &Backend, slot: &ConnSlot, why: &str) {
    crate::log::warning(&format!(
        "backend '{}': server '{}': invalid or incomplete response ({why})",
        be.name,
        slot.server().name
    ));
}

/// Idle server connections of one worker, indexed by server `gid`; most
/// recently used last.
#[derive(Default)]
struct Pools {
    idle: RefCell<Vec<VecDeque<Conn>>>,
}

impl Pools {
    fn checkin(&self, gid: usize, mut conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        conn.idle_since = now;
        let mut idle = self.idle.borrow_mut();
        if idle.len() <= gid {
            idle.resize_with(gid + 1, VecDeque::new);
        }
        let q = &mut idle[gid];
        // Drop from the cold end: closed, too old, or over the cap.
        while let Some(old) = q.front() {
            if old.sender.is_closed()
                || now.duration_since(old.idle_since) > MAX_IDLE_AGE
                || q.len() >= MAX_IDLE_PER_SERVER
            {
                q.pop_front();
            } else {
                break;
            }
        }
        q.push_back(conn);
    }
}

/// A server connection: the request sender and its I/O task.
struct Conn {
    sender: http1::SendRequest<ReqBody>,
    task: JoinHandle<()>,
    activity: Arc<Activity>,
    idle_since: Instant,
}

impl Drop for Conn {
    /// A connection that is not pooled is closed now, whatever state the
    /// exchange on it is in.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the request body of the exchange in progress did, shared between
/// the body (polled by the connection task) and the request side. Allocated
/// once per connection.
struct Activity {
    base: Instant,
    /// Last progress, in nanoseconds since `base`.
    last: AtomicU64,
    /// The request body was sent whole (the connection may be reused).
    req_done: AtomicBool,
    /// Reading the client's request body failed.
    client_failed: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last: AtomicU64::new(0),
            req_done: AtomicBool::new(true),
            client_failed: AtomicBool::new(false),
        }
    }

    fn begin(&self, body_empty: bool) {
        self.touch();
        self.req_done.store(body_empty, Ordering::Relaxed);
        self.client_failed.store(false, Ordering::Relaxed);
    }

    fn touch(&self) {
        let ns = self.base.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        self.last.store(ns, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
}

enum Sent {
    Response(Response<Incoming>),
    /// The connection closed before taking the request, which is returned.
    Returned(Request<ReqBody>),
    Failed(hyper::Error),
    Timeout,
}

/// Sends the request and waits for the response head. `timeout server`
/// counts from the last progress of the request body, so a long upload is
/// not cut short while it moves.
async fn send(conn: &mut Conn, req: Request<ReqBody>, timeout: Option<Duration>) -> Sent {
    let fut = conn.sender.try_send_request(req);
    let result = match timeout {
        None => fut.await,
        Some(t) => {
            tokio::pin!(fut);
            loop {
                let deadline = conn.activity.last() + t;
                tokio::select! {
                    biased;
                    r = &mut fut => break r,
                    _ = tokio::time::sleep_until(deadline) => {
                        if conn.activity.last() + t <= Instant::now() {
                            return Sent::Timeout;
                        }
                    }
                }
            }
        }
    };
    match result {
        Ok(resp) => Sent::Response(resp),
        Err(mut e) => match e.take_message() {
            Some(req) => Sent::Returned(req),
            None => Sent::Failed(e.into_error()),
        },
    }
}

/// Makes the request fit for a server: origin-form URI, HTTP/1.1, no
/// hop-by-hop headers, then the backend's own headers.
fn prepare_request(head: &mut request::Parts, be: &Backend, client: IpAddr) {
    if head.method != Method::CONNECT
        && (head.uri.scheme().is_some() || head.uri.authority().is_some())
    {
        // Absolute form (a client talking to us as to a proxy): the server
        // gets the origin form; the Host header stays as received, or comes
        // from the URI when there is none.
        if !head.headers.contains_key(header::HOST) {
            if let Some(v) = head
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                head.headers.insert(header::HOST, v);
            }
        }
        head.uri = match head.uri.path_and_query() {
            Some(pq) => Uri::from(pq.clone()),
            None => Uri::from_static("/"),
        };
    }
    // Servers are spoken to in HTTP/1.1 whatever the client uses, so that
    // the connection can be kept alive.
    head.version = Version::HTTP_11;
    strip_hop_by_hop(&mut head.headers);
    if be.httpclose {
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(ff) = &be.forwardfor {
        add_forwarded_for(&mut head.headers, ff, client);
    }
}

/// Appends `X-Forwarded-For: <client ip>` (or the configured header), unless
/// the client is in the `except` network or, with `if-none`, the request
/// already has the header. Appended after any existing one, as HAProxy does.
pub fn add_forwarded_for(headers: &mut HeaderMap, ff: &ForwardFor, client: IpAddr) {
    let ip = client.to_canonical();
    if ff.except.is_some_and(|n| n.contains(ip)) {
        return;
    }
    if ff.if_none && headers.contains_key(&ff.header) {
        return;
    }
    // Format on the stack; HeaderValue makes the only copy.
    let mut buf = [0u8; 48];
    let len = {
        use std::io::Write;
        let mut w = &mut buf[..];
        if write!(w, "{ip}").is_err() {
            return;
        }
        48 - w.len()
    };
    if let Ok(v) = HeaderValue::from_bytes(&buf[..len]) {
        headers.append(ff.header.clone(), v);
    }
}

/// Whether `name` is a hop-by-hop header, which a proxy must not forward.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str().starts_with("proxy-")
}

/// Removes the hop-by-hop headers: the fixed set, `Proxy-*`, and those the
/// `Connection` header names. hyper then frames the message itself
/// (Content-Length or chunked) on the next hop.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages have none: one pass over the names and done.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    let mut named: Vec<HeaderName> = Vec::new();
    for v in h.get_all(header::CONNECTION) {
        let Ok(s) = v.to_str() else { continue };
        for token in s.split(',').map(str::trim) {
            if token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || token.eq_ignore_ascii_case("keep-alive")
            {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(token.as_bytes()) {
                // A message's framing and target are not the client's to
                // drop through Connection.
                if n != header::CONTENT_LENGTH && n != header::HOST {
                    named.push(n);
                }
            }
        }
    }
    named.extend(h.keys().filter(|n| is_hop_by_hop(n)).cloned());
    for n in &named {
        h.remove(n);
    }
}

/// The client's request body, in a form shared by every request sent on a
/// pooled connection (the pool holds one connection type). The common
/// cases avoid boxing: no body, hyper's `Incoming`, a `Full<Bytes>`.
enum ReqKind {
    Empty,
    Incoming(Incoming),
    Full(Full<Bytes>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl ReqKind {
    fn from_body<B>(body: B) -> ReqKind
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if body.is_end_stream() {
            return ReqKind::Empty;
        }
        let mut slot = Some(body);
        let any = &mut slot as &mut dyn Any;
        if let Some(b) = any
            .downcast_mut::<Option<Incoming>>()
            .and_then(Option::take)
        {
            return ReqKind::Incoming(b);
        }
        if let Some(b) = any
            .downcast_mut::<Option<Full<Bytes>>>()
            .and_then(Option::take)
        {
            return ReqKind::Full(b);
        }
        match slot {
            Some(b) => ReqKind::Boxed(UnsyncBoxBody::new(b.map_err(Into::into))),
            None => ReqKind::Empty,
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqKind::Empty => true,
            ReqKind::Incoming(b) => b.is_end_stream(),
            ReqKind::Full(b) => b.is_end_stream(),
            ReqKind::Boxed(b) => b.is_end_stream(),
        }
    }
}

/// The request body as sent to the server; records progress for the
/// server timeout and for connection reuse.
struct ReqBody {
    kind: ReqKind,
    activity: Option<Arc<Activity>>,
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            ReqKind::Empty => Poll::Ready(None),
            ReqKind::Incoming(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            ReqKind::Full(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
            ReqKind::Boxed(b) => Pin::new(b).poll_frame(cx),
        };
        if let Some(a) = &this.activity {
            match &polled {
                Poll::Ready(Some(Ok(_))) => {
                    a.touch();
                    if this.kind.is_end_stream() {
                        a.req_done.store(true, Ordering::Relaxed);
                    }
                }
                Poll::Ready(None) => {
                    a.touch();
                    a.req_done.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Err(_))) => a.client_failed.store(true, Ordering::Relaxed),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.kind.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ReqKind::Empty => SizeHint::with_exact(0),
            ReqKind::Incoming(b) => b.size_hint(),
            ReqKind::Full(b) => b.size_hint(),
            ReqKind::Boxed(b) => b.size_hint(),
        }
    }
}

fn upstream_response(
    resp: Response<Incoming>,
    be: &Backend,
    conn: Conn,
    slot: ConnSlot,
) -> Response<UpstreamBody> {
    let (mut parts, inner) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // hyper's server side picks the version for its client.
    parts.version = Version::HTTP_11;
    let body = UpstreamBody {
        inner,
        held: Some(Held {
            conn,
            slot,
            reuse: !be.httpclose,
        }),
        timeout: be.timeouts.server,
        timer: None,
        progressed: false,
        failed: false,
    };
    Response::from_parts(parts, body)
}

/// A response body streaming from a server. It holds the server's slot and
/// connection until the body ends (then the connection returns to the pool)
/// or is dropped early (then the connection is closed). `timeout server`
/// applies to each wait for data; expiry ends the body with an error.
/// `Send`, so the front end may keep it in a `Send` body type.
pub struct UpstreamBody {
    inner: Incoming,
    held: Option<Held>,
    timeout: Option<Duration>,
    /// Armed lazily: bodies that arrive without waiting never allocate it.
    timer: Option<Pin<Box<Sleep>>>,
    /// Data came since the timer was last armed.
    progressed: bool,
    /// An error was returned; the body is over.
    failed: bool,
}

struct Held {
    conn: Conn,
    slot: ConnSlot,
    reuse: bool,
}

impl UpstreamBody {
    /// Releases the slot; pools the connection if the exchange completed.
    fn finish(&mut self, complete: bool) {
        if let Some(h) = self.held.take() {
            if complete && h.reuse && h.conn.activity.req_done.load(Ordering::Relaxed) {
                let gid = h.slot.server().gid;
                // At thread exit the pool is gone: the connection just closes.
                let _ = POOLS.try_with(|p| p.checkin(gid, h.conn));
            }
            // Otherwise the connection is dropped (closed); the slot goes
            // last so that a woken waiter finds the connection pooled.
        }
    }

    fn poll_idle(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let Some(t) = self.timeout else {
            return Poll::Pending;
        };
        match &mut self.timer {
            None => self.timer = Some(Box::pin(tokio::time::sleep(t))),
            Some(s) if self.progressed => s.as_mut().reset(Instant::now() + t),
            Some(_) => {}
        }
        self.progressed = false;
        let fired = self
            .timer
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready());
        if !fired {
            return Poll::Pending;
        }
        if let Some(h) = &self.held {
            crate::log::warning(&format!(
                "backend '{}': server '{}' stalled sending the response body for timeout server ({} ms)",
                h.slot.be_name(),
                h.slot.server().name,
                t.as_millis()
            ));
        }
        self.finish(false);
        self.failed = true;
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "server timeout",
        ))))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.progressed = true;
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(h) = &this.held {
                    crate::log::warning(&format!(
                        "backend '{}': server '{}': response body aborted ({e})",
                        h.slot.be_name(),
                        h.slot.server().name
                    ));
                }
                this.finish(false);
                this.failed = true;
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => this.poll_idle(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").finish_non_exhaustive()
    }
}
