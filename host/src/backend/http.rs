//! HTTP forwarding over pooled HTTP/1.1 server connections.
//!
//! Each worker thread has its own idle connections per server, in a
//! thread-local pool: a plain `RefCell` guards them, no lock. A server
//! connection is a bare socket with its read buffer: the request's own task
//! writes the request and reads the response head, and the response body
//! reads the socket as the front end polls it, so that a request costs no
//! hop to a connection task. After a response body has been read to its
//! end (and the request body sent whole), the connection goes back to the
//! pool, unless `option httpclose` is set or the server closes it. Bodies
//! stream both ways; nothing is buffered whole. The wire format is in `h1`.

use super::connect::{connect, io_reason};
use super::h1::{self, ChunkStep, Chunked, Parsed, ReqFraming, ResFraming, ResponseHead};
use super::observe::Traffic;
use super::server::Server;
use super::slot::ConnSlot;
use super::{Backend, ForwardError};
use crate::proxy::h1_server::RequestBody;
use crate::txn::Txn;
use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::http::request;
use hyper::{Method, Response};
use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle connections kept per server and worker; beyond it the oldest go.
const MAX_IDLE_PER_SERVER: usize = 1024;
/// Idle connections unused for this long are closed when the pool is next
/// touched, so that a burst does not leave sockets open forever.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// Room made in a connection's read buffer before each read. A response
/// shorter than this is read by one recv(2), and a short read tells tokio
/// that the socket is drained (no extra recv(2) ending in EAGAIN).
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// This worker's idle server connections. Thread-local rather than held
    /// by the `Forwarder` so that a response body can return its connection
    /// without holding an `Rc`, which keeps [`UpstreamBody`] `Send`.
    static POOLS: Pools = Pools::default();
}

/// A worker's HTTP and TCP client side. Create one per worker thread; its
/// server connections are pooled per thread. It must be used from tasks of
/// the worker (a tokio `LocalSet` or current-thread runtime).
#[derive(Default)]
pub struct Forwarder {}

impl Forwarder {
    pub fn new() -> Forwarder {
        Forwarder {}
    }

    /// Idle pooled connections to servers of this thread, over all backends.
    pub fn idle_connections(&self) -> usize {
        POOLS
            .try_with(|p| p.idle.borrow().iter().map(VecDeque::len).sum())
            .unwrap_or(0)
    }

    /// Forwards one HTTP request (`head` as the transaction holds it, and
    /// its body) to a server of `be` and returns the response, whose body
    /// streams from the server. Sets `txn.backend` and `txn.server`. On
    /// error the caller answers with `err.status()`
    /// (`error_pages::response`); the failure has been logged.
    ///
    /// The server's slot (its `maxconn` and leastconn count) is held until
    /// the returned body ends or is dropped.
    pub async fn http<B>(
        &self,
        be: &Arc<Backend>,
        txn: &mut Txn,
        head: &request::Parts,
        body: B,
    ) -> Result<Response<UpstreamBody>, ForwardError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        txn.backend = Some(be.name.clone());
        let client = txn.client.ip();
        let body = ReqBody::from_body(body);
        let framing = match &body {
            None => ReqFraming::NoBody,
            Some(b) => match b.size_hint().exact() {
                Some(n) => ReqFraming::Length(n),
                None => ReqFraming::Chunked,
            },
        };
        let mut wire = Vec::with_capacity(256 + head.headers.len() * 32);
        h1::write_request_head(&mut wire, head, framing, be, client);
        let mut upload = Upload::new(Bytes::from(wire), body, framing == ReqFraming::Chunked);
        let head_request = head.method == Method::HEAD;
        // Sending a request again after the server may have seen it is only
        // safe for the methods that mean the same when repeated.
        let idempotent = head.method.is_idempotent();
        let queued = std::time::Instant::now();
        let mut slot = be.take_slot(client, None).await?;
        txn.log.t_queue = Some(elapsed_ms(queued));
        txn.server = Some(slot.server().name.clone());
        // Fresh connections that failed before taking the request; bounded
        // so that a server closing every connection at once cannot loop us.
        let mut fresh_failures = 0u32;
        let mut pooled_allowed = !be.httpclose;
        loop {
            let pooled = if pooled_allowed {
                checkout(slot.server())
            } else {
                None
            };
            let (mut conn, reused) = match pooled {
                Some(c) => {
                    // A reused connection took no time to establish.
                    txn.log.t_connect = Some(0);
                    (c, true)
                }
                None => {
                    let started = std::time::Instant::now();
                    // Boxed: connecting is rare on a busy proxy, and its
                    // state would otherwise weigh on every request's future.
                    let stream =
                        Box::pin(connect(be, &mut slot, client, &mut txn.log.retries)).await?;
                    txn.log.t_connect = Some(elapsed_ms(started));
                    txn.server = Some(slot.server().name.clone());
                    (Conn::new(stream), false)
                }
            };
            let sent = std::time::Instant::now();
            match exchange(&mut conn, &mut upload, head_request, be.timeouts.server).await {
                Outcome::Response(res) => {
                    txn.log.t_response = Some(elapsed_ms(sent));
                    slot.server()
                        .observe(Traffic::of_status(res.parts.status.as_u16()));
                    return Ok(upstream_response(res, be, conn, slot, upload));
                }
                Outcome::NotSent(e) if upload.can_resend() => {
                    // Nothing reached the server: try another connection.
                    upload.rewind();
                    if !reused {
                        fresh_failures += 1;
                        if fresh_failures > be.retries {
                            log_bad_response(be, &slot, &io_reason(&e));
                            return Err(ForwardError::BadResponse);
                        }
                    }
                }
                Outcome::Closed if reused && idempotent && upload.can_resend() => {
                    // An idle connection the server closed as the request
                    // went out: send it again, on a new connection.
                    upload.rewind();
                    pooled_allowed = false;
                }
                Outcome::NotSent(e) => {
                    if !reused {
                        slot.server().observe(Traffic::HttpReadError);
                    }
                    log_bad_response(be, &slot, &io_reason(&e));
                    return Err(ForwardError::BadResponse);
                }
                Outcome::Closed => {
                    if !reused {
                        slot.server().observe(Traffic::HttpBrokenPipe);
                    }
                    log_bad_response(be, &slot, "connection closed without a response");
                    return Err(ForwardError::BadResponse);
                }
                Outcome::Failed(why) => {
                    slot.server().observe(Traffic::HttpHdrRsp);
                    log_bad_response(be, &slot, &why);
                    return Err(ForwardError::BadResponse);
                }
                Outcome::ClientFailed => return Err(ForwardError::ClientAborted),
                Outcome::Timeout => {
                    slot.server().observe(Traffic::HttpReadTimeout);
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
}

/// Milliseconds since `t`, for the log's timers.
pub(crate) fn elapsed_ms(t: std::time::Instant) -> i64 {
    t.elapsed().as_millis().min(i64::MAX as u128) as i64
}

fn log_bad_response(be: &Backend, slot: &ConnSlot, why: &str) {
    crate::log::warning(&format!(
        "backend '{}': server '{}': invalid or incomplete response ({why})",
        be.name,
        slot.server().name
    ));
}

/// A server connection: the socket and what has been read from it but not
/// yet used.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    idle_since: Instant,
    /// The server address it is connected to: after the server's address
    /// changed, the connection is not reused.
    addr: SocketAddr,
    /// `timeout server`, kept with the connection: see [`Conn::expired`].
    timer: Option<Pin<Box<Sleep>>>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        // A connection whose peer is unknown is broken: label it so that it
        // is never taken from the pool.
        let addr = stream
            .peer_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        Conn {
            addr,
            stream,
            buf: BytesMut::new(),
            idle_since: Instant::now(),
            timer: None,
        }
    }

    /// Whether `deadline` has passed; if not, the task is woken when it
    /// does. The timer may be armed earlier than `deadline` (for an earlier
    /// request on this connection): when it fires early it is moved to the
    /// deadline. So a timer is registered about once per timeout period
    /// and connection, not once per request, while a stalled exchange is
    /// still detected on time.
    fn expired(&mut self, deadline: Instant, cx: &mut Context<'_>) -> bool {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        loop {
            match timer.as_mut().poll(cx) {
                Poll::Pending => return false,
                Poll::Ready(()) if Instant::now() >= deadline => return true,
                Poll::Ready(()) => timer.as_mut().reset(deadline),
            }
        }
    }

    /// Reads what the socket has into the buffer: `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }

    /// Whether an idle connection is still usable: the server has neither
    /// closed it nor sent anything unasked. Costs a syscall only when the
    /// socket was reported readable.
    fn still_open(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// Idle server connections of one worker, indexed by server `gid`; most
/// recently used last.
#[derive(Default)]
struct Pools {
    idle: RefCell<Vec<VecDeque<Conn>>>,
}

/// An idle connection to `server`, at its current address, that can take a
/// request now.
fn checkout(server: &Server) -> Option<Conn> {
    let gid = server.gid;
    let addr = server.addr();
    loop {
        let conn = POOLS
            .try_with(|p| p.idle.borrow_mut().get_mut(gid)?.pop_back())
            .ok()??;
        if conn.addr == addr && conn.still_open() {
            return Some(conn);
        }
    }
}

impl Pools {
    fn checkin(&self, gid: usize, mut conn: Conn) {
        let now = Instant::now();
        conn.idle_since = now;
        let mut idle = self.idle.borrow_mut();
        if idle.len() <= gid {
            idle.resize_with(gid + 1, VecDeque::new);
        }
        let q = &mut idle[gid];
        // Drop from the cold end: too old, or over the cap.
        while let Some(old) = q.front() {
            if now.duration_since(old.idle_since) > MAX_IDLE_AGE || q.len() >= MAX_IDLE_PER_SERVER {
                q.pop_front();
            } else {
                break;
            }
        }
        q.push_back(conn);
    }
}

/// The client's request body. The common case avoids boxing: the client
/// connection's [`RequestBody`] is kept as it is.
enum ReqBody {
    Client(RequestBody),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl ReqBody {
    /// The body, or None when it is empty.
    fn from_body<B>(body: B) -> Option<ReqBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if body.is_end_stream() {
            return None;
        }
        let mut slot = Some(body);
        let any = &mut slot as &mut dyn Any;
        if let Some(b) = any
            .downcast_mut::<Option<RequestBody>>()
            .and_then(Option::take)
        {
            return Some(ReqBody::Client(b));
        }
        slot.map(|b| ReqBody::Boxed(UnsyncBoxBody::new(b.map_err(Into::into))))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Client(b) => b.size_hint(),
            ReqBody::Boxed(b) => b.size_hint(),
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            ReqBody::Client(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            ReqBody::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }
}

/// The request on its way to the server: the head, then the body as the
/// client sends it (chunk-encoded when its length is unknown).
struct Upload {
    /// The request head, kept to send it again on another connection.
    head: Bytes,
    /// What is being written, and how much of it went out.
    out: Bytes,
    pos: usize,
    /// The body still to read from the client; None once read whole.
    body: Option<ReqBody>,
    chunked: bool,
    /// Body bytes were taken from the client: the request can't be resent.
    taken: bool,
}

/// Why an upload stopped.
enum UploadError {
    Client,
    Server(io::Error),
}

impl Upload {
    fn new(head: Bytes, body: Option<ReqBody>, chunked: bool) -> Upload {
        Upload {
            out: head.clone(),
            head,
            pos: 0,
            body,
            chunked,
            taken: false,
        }
    }

    fn can_resend(&self) -> bool {
        !self.taken
    }

    /// Starts over with the head (only before any body was taken).
    fn rewind(&mut self) {
        self.out = self.head.clone();
        self.pos = 0;
    }

    /// Everything was written.
    fn finished(&self) -> bool {
        self.body.is_none() && self.pos == self.out.len()
    }

    /// Writes what can be written now; `Ready(Ok)` once everything went
    /// out. Sets `progressed` when bytes went out.
    fn poll_send(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
        progressed: &mut bool,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            if self.pos < self.out.len() {
                match Pin::new(&mut *stream).poll_write(cx, &self.out[self.pos..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(UploadError::Server(
                            io::ErrorKind::WriteZero.into(),
                        )))
                    }
                    Poll::Ready(Ok(n)) => {
                        self.pos += n;
                        *progressed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(UploadError::Server(e))),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            let Some(body) = &mut self.body else {
                return Poll::Ready(Ok(()));
            };
            match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not forwarded.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    self.taken = true;
                    self.pos = 0;
                    self.out = if self.chunked {
                        let mut v = Vec::with_capacity(data.len() + 12);
                        h1::write_chunk(&mut v, &data);
                        Bytes::from(v)
                    } else {
                        data
                    };
                }
                Poll::Ready(None) => {
                    self.body = None;
                    self.pos = 0;
                    self.out = if self.chunked {
                        Bytes::from_static(h1::LAST_CHUNK)
                    } else {
                        Bytes::new()
                    };
                }
                Poll::Ready(Some(Err(_))) => {
                    self.body = None;
                    return Poll::Ready(Err(UploadError::Client));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// How the exchange up to the response head ended.
enum Outcome {
    Response(ResponseHead),
    /// Writing the request failed.
    NotSent(io::Error),
    /// The server closed the connection (or reset it) before sending a
    /// byte of response.
    Closed,
    Failed(String),
    ClientFailed,
    Timeout,
}

/// Sends the request and waits for the response head, sending the body
/// meanwhile (a server may answer before the body is whole; the rest is
/// then sent as the response body is read). `timeout server` counts from
/// the last progress of the request, so a long upload is not cut short
/// while it moves.
async fn exchange(
    conn: &mut Conn,
    upload: &mut Upload,
    head_request: bool,
    timeout: Option<Duration>,
) -> Outcome {
    let mut last = Instant::now();
    let mut upload_over = false;
    std::future::poll_fn(|cx| {
        if !upload_over {
            let mut progressed = false;
            let sent = upload.poll_send(&mut conn.stream, cx, &mut progressed);
            if progressed {
                last = Instant::now();
            }
            match sent {
                Poll::Ready(Ok(())) => upload_over = true,
                Poll::Ready(Err(UploadError::Client)) => return Poll::Ready(Outcome::ClientFailed),
                Poll::Ready(Err(UploadError::Server(e))) => {
                    if conn.buf.is_empty() && upload.can_resend() {
                        return Poll::Ready(Outcome::NotSent(e));
                    }
                    // The server may have answered before failing the
                    // upload (e.g. a 413): look for the answer below.
                    upload.body = None;
                    upload_over = true;
                }
                Poll::Pending => {}
            }
        }
        match poll_head(conn, cx, head_request) {
            Poll::Ready(outcome) => return Poll::Ready(outcome),
            Poll::Pending => {}
        }
        match timeout {
            Some(t) if conn.expired(last + t, cx) => Poll::Ready(Outcome::Timeout),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Reads until a final response head is in the buffer.
fn poll_head(conn: &mut Conn, cx: &mut Context<'_>, head_request: bool) -> Poll<Outcome> {
    loop {
        if !conn.buf.is_empty() {
            match h1::parse_response_head(&mut conn.buf, head_request) {
                Ok(Parsed::Complete(res)) => return Poll::Ready(Outcome::Response(res)),
                Ok(Parsed::Interim) => continue,
                Ok(Parsed::Partial) => {}
                Err(why) => return Poll::Ready(Outcome::Failed(why)),
            }
        }
        let empty = conn.buf.is_empty();
        match conn.poll_fill(cx) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) if empty => {
                return Poll::Ready(Outcome::Closed)
            }
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Outcome::Failed(
                    "connection closed in the response head".into(),
                ))
            }
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Outcome::Failed(io_reason(&e))),
            Poll::Pending => return Poll::Pending,
        }
    }
}

fn upstream_response(
    res: ResponseHead,
    be: &Backend,
    conn: Conn,
    slot: ConnSlot,
    upload: Upload,
) -> Response<UpstreamBody> {
    let framing = match res.framing {
        ResFraming::Length(n) => BodyState::Length(n),
        ResFraming::Chunked => BodyState::Chunked(Chunked::Size),
        ResFraming::UntilClose => BodyState::UntilClose,
    };
    let mut body = UpstreamBody {
        held: Some(Held {
            conn,
            slot,
            reuse: !be.httpclose && res.keep_alive,
        }),
        state: framing,
        // Boxed: rare, and this body sits in every proxied response.
        upload: (!upload.finished()).then(|| Box::new(upload)),
        timeout: be.timeouts.server,
        last: Instant::now(),
        progressed: false,
        failed: false,
    };
    if body.state == BodyState::Length(0) {
        // Nothing to read: the connection is free now.
        body.finish();
    }
    Response::from_parts(res.parts, body)
}

/// Where a response body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// This many bytes left.
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    /// Read whole.
    Done,
}

/// A response body streaming from a server. It holds the server's slot and
/// connection until the body ends (then the connection returns to the pool)
/// or is dropped early (then the connection is closed). While a request
/// body is still being uploaded, polling this body moves it on too.
/// `timeout server` applies to each wait for data; expiry ends the body
/// with an error. `Send`, so the front end may keep it in a `Send` body
/// type.
pub struct UpstreamBody {
    held: Option<Held>,
    state: BodyState,
    upload: Option<Box<Upload>>,
    timeout: Option<Duration>,
    /// When data last moved, either way.
    last: Instant,
    /// Data moved since `last` was set; read only when about to wait, so
    /// that a body read without waiting never reads the clock.
    progressed: bool,
    /// An error was returned; the body is over.
    failed: bool,
}

struct Held {
    conn: Conn,
    slot: ConnSlot,
    /// The connection may carry another request after this one.
    reuse: bool,
}

impl UpstreamBody {
    /// The server delimits the body by closing the connection (neither a
    /// length nor chunked coding).
    pub fn until_close(&self) -> bool {
        matches!(self.state, BodyState::UntilClose)
    }

    /// The body was read whole: releases the slot, and pools the connection
    /// if the request went out whole and nothing unasked follows.
    fn finish(&mut self) {
        self.state = BodyState::Done;
        let upload_done = self.upload.as_ref().is_none_or(|u| u.finished());
        if let Some(h) = self.held.take() {
            if h.reuse && upload_done && h.conn.buf.is_empty() {
                let gid = h.slot.server().gid;
                // At thread exit the pool is gone: the connection just closes.
                let _ = POOLS.try_with(|p| p.checkin(gid, h.conn));
            }
            // Otherwise the connection is dropped (closed); the slot goes
            // last so that a woken waiter finds the connection pooled.
        }
        self.upload = None;
    }

    /// Ends the body with an error; the connection is closed.
    fn fail(&mut self, why: &str) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(h) = &self.held {
            crate::log::warning(&format!(
                "backend '{}': server '{}': response body aborted ({why})",
                h.slot.be_name(),
                h.slot.server().name
            ));
        }
        self.held = None;
        self.upload = None;
        self.failed = true;
        Poll::Ready(Some(Err(io::Error::other(why.to_string()))))
    }

    /// Moves a pending request body on, if any.
    fn poll_upload(&mut self, cx: &mut Context<'_>) {
        let (Some(up), Some(h)) = (&mut self.upload, &mut self.held) else {
            return;
        };
        match up.poll_send(&mut h.conn.stream, cx, &mut self.progressed) {
            Poll::Ready(Ok(())) | Poll::Pending => {}
            Poll::Ready(Err(_)) => {
                // The response goes on; the connection won't be reused.
                h.reuse = false;
                self.upload = None;
            }
        }
    }

    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let (Some(t), Some(h)) = (self.timeout, &mut self.held) else {
            return Poll::Pending;
        };
        if self.progressed {
            self.progressed = false;
            self.last = Instant::now();
        }
        if !h.conn.expired(self.last + t, cx) {
            return Poll::Pending;
        }
        let why = format!("stalled for timeout server ({} ms)", t.as_millis());
        self.fail(&why)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed || this.state == BodyState::Done {
            return Poll::Ready(None);
        }
        this.poll_upload(cx);
        loop {
            let Some(h) = &mut this.held else {
                return Poll::Ready(None);
            };
            let buf = &mut h.conn.buf;
            let data = match &mut this.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                BodyState::Length(left) if !buf.is_empty() => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= n as u64;
                    Some(buf.split_to(n).freeze())
                }
                BodyState::Chunked(dec) => match dec.step(buf) {
                    Ok(ChunkStep::Data(d)) => Some(d),
                    Ok(ChunkStep::Done) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(ChunkStep::NeedMore) => None,
                    Err(why) => return this.fail(&why),
                },
                BodyState::UntilClose if !buf.is_empty() => Some(buf.split().freeze()),
                BodyState::Length(_) | BodyState::UntilClose => None,
            };
            if let Some(d) = data {
                this.progressed = true;
                if this.state == BodyState::Length(0) {
                    // The last bytes: free the connection before the front
                    // end even asks again.
                    this.finish();
                }
                return Poll::Ready(Some(Ok(Frame::data(d))));
            }
            match h.conn.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    if this.state == BodyState::UntilClose {
                        // The end of such a body; the connection is done.
                        h.reuse = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    return this.fail("connection closed before the end of the body");
                }
                Poll::Ready(Ok(_)) => this.progressed = true,
                Poll::Ready(Err(e)) => return this.fail(&io_reason(&e)),
                Poll::Pending => return this.poll_idle(cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || matches!(self.state, BodyState::Done | BodyState::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Length(n) => SizeHint::with_exact(n),
            BodyState::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}
