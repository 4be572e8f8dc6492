//! luahost's own HTTP/1.1 server connection: it reads request heads
//! (`head`), decodes request bodies as their bytes arrive (`decode`,
//! `body`), writes responses (`response`), and runs the connection: keep-
//! alive, pipelining (leftover bytes are the next request), `100 Continue`,
//! timeouts, graceful stop, and exactly one response (then a lingering
//! close) for a request it refuses.
//!
//! Owning the connection, rather than handing it to an HTTP library, is what
//! lets a malformed request get exactly one answer, a chunked body be
//! checked before a service answers, and an idle connection hold no buffer.
//!
//! The connection task's future stays small while idle: the work of one
//! request (the rules, the service or server, writing the response) is a
//! boxed future that exists only while the request runs.

mod body;
mod buffers;
mod decode;
mod head;
mod response;

pub use body::{BodyError, RequestBody};

use crate::proxy::plan::FrontendPlan;
use crate::proxy::traffic_log::{self, Delivery, Moment, RequestTimes};
use crate::proxy::wake_gate::WakeGated;
use crate::proxy::worker::Worker;
use crate::proxy::{error_pages, http_front, Shutdown};
use body::{BodyFeed, FeedNeed};
use bytes::{Buf, Bytes, BytesMut};
use decode::{Decoder, Step};
use head::{Framing, Refusal, RequestHead};
use hyper::body::Body;
use hyper::{Method, Request, Version};
use response::Exchange;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// Response bytes gathered before writing: a small response goes out in
/// one write, head and body together.
const WRITE_GATHER: usize = 16 * 1024;

/// `timeout http-request` (and the keep-alive wait) when neither it nor
/// `timeout client` is set; hyper's default before, kept.
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `sess.*` variables live as long as the connection.
type SessVars = Rc<RefCell<HashMap<String, crate::lua::vars::VarValue>>>;

/// One client connection: its socket and, while it has bytes to parse, a
/// read buffer.
struct Conn {
    stream: TcpStream,
    buf: Option<BytesMut>,
}

impl Conn {
    fn buffered(&self) -> usize {
        self.buf.as_ref().map_or(0, BytesMut::len)
    }

    /// Gives the read buffer back when nothing is left in it.
    fn release_empty_buffer(&mut self) {
        if self.buffered() == 0 {
            if let Some(b) = self.buf.take() {
                buffers::give_back(b);
            }
        }
    }
}

/// What the connection does after an exchange.
enum Next {
    KeepAlive,
    Close,
    /// Answer with an error page, then close.
    Refuse(Refusal),
}

/// Serves one client connection until it closes or the process stops.
pub async fn serve(
    worker: Rc<Worker>,
    fe: Arc<FrontendPlan>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<Shutdown>,
    sess: HashMap<String, crate::lua::vars::VarValue>,
) {
    let local = stream.local_addr().unwrap_or(peer);
    // The stop signal, waited for while idle. Registered once for the
    // connection and polled only when it fires: polling a watch channel's
    // wait at every request costs about as much as parsing a small head.
    let mut stop_rx = shutdown.clone();
    let mut stop = WakeGated::new(stop_rx.wait_for(|s| *s != Shutdown::Running));
    let mut conn = Conn { stream, buf: None };
    // Session variables, from the `tcp-request connection` rules on.
    let sess: SessVars = Rc::new(RefCell::new(sess));
    let limit = worker.plan.bufsize;
    let mut first = true;
    // The start of the current stream, for the traffic log: the accept,
    // then the end of each exchange.
    let mut stream_start = Moment::now();
    loop {
        let next = match read_head(&mut conn, &fe, limit, first, &shutdown, &mut stop).await {
            HeadRead::Closed => break,
            HeadRead::Empty => {
                // A connection closed before sending anything: HAProxy
                // logs it as a bad request cut by the client, unless
                // `option dontlognull`.
                if !fe.log.as_ref().is_some_and(|l| l.dontlognull()) {
                    traffic_log::http_refused(&worker, &fe, peer, local, stream_start, 400, "CR");
                }
                break;
            }
            HeadRead::Cut => {
                // The client closed in the middle of a request head.
                traffic_log::http_refused(&worker, &fe, peer, local, stream_start, 400, "CR");
                break;
            }
            HeadRead::Refused(r) => {
                let term = if r.status == 408 { "cR" } else { "PR" };
                traffic_log::http_refused(&worker, &fe, peer, local, stream_start, r.status, term);
                Next::Refuse(r)
            }
            HeadRead::Head(h, first_byte, head_len) => {
                if first {
                    // HAProxy's legacy line comes with the connection's
                    // first request (its first stream), not at accept.
                    traffic_log::connected(&worker, &fe, peer, local);
                }
                let ctx = ExchangeCtx {
                    worker: &worker,
                    fe: &fe,
                    peer,
                    local,
                    first,
                    sess: &sess,
                    shutdown: &shutdown,
                    times: RequestTimes {
                        accept: stream_start,
                        first_byte,
                        head_done: Instant::now(),
                        head_len,
                    },
                };
                // Boxed: its size is paid only while a request runs.
                Box::pin(exchange(&mut conn, ctx, h)).await
            }
        };
        conn.release_empty_buffer();
        stream_start = Moment::now();
        match next {
            Next::KeepAlive => first = false,
            Next::Close => break,
            Next::Refuse(r) => {
                refuse(&mut conn.stream, &fe, peer, r).await;
                break;
            }
        }
    }
    if let Some(b) = conn.buf.take() {
        buffers::give_back(b);
    }
    lingering_close(conn.stream).await;
}

/// Writes HAProxy's error page for a refused request and logs it as
/// `<BADREQ>`.
async fn refuse(stream: &mut TcpStream, fe: &FrontendPlan, peer: SocketAddr, r: Refusal) {
    // HAProxy 3.0 answers these with its default pages even when the
    // frontend has an errorfile for the status.
    let _ = stream.write_all(&error_pages::raw(r.status)).await;
    if crate::log::access_log_enabled() {
        let t = crate::log::UtcTime::now();
        crate::log::access(&format!(
            "{peer} [{}] {} <BADREQ> {} \"{}\"",
            t.log_date(),
            fe.name,
            r.status,
            r.reason
        ));
    }
}

/// Closes the way HAProxy and nginx close: stop writing, then read and
/// discard what the client still sends for a moment. Closing with unread
/// input makes the kernel send a reset, which can destroy a response the
/// client has not read yet (e.g. a 431 sent while it was still writing).
async fn lingering_close(mut stream: TcpStream) {
    use tokio::io::AsyncReadExt;
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    // On the heap, and only while closing: an array here would be part of
    // every connection's future, idle ones included.
    let mut sink = vec![0u8; 4096];
    let mut budget = 1usize << 20;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 && budget > n => budget -= n,
            _ => return,
        }
    }
}

// Not boxed: the head is moved once per request, and a box would cost an
// allocation for each.
#[allow(clippy::large_enum_variant)]
enum HeadRead {
    /// A head, when its first byte arrived, and its size.
    Head(RequestHead, Instant, usize),
    Refused(Refusal),
    /// The client closed after part of a head.
    Cut,
    /// The client closed its connection without sending a byte.
    Empty,
    /// The client closed, went idle too long, or the process stops.
    Closed,
}

/// Waits for the next request head. While nothing is buffered the
/// connection holds no read buffer: it waits for readability first.
async fn read_head(
    conn: &mut Conn,
    fe: &FrontendPlan,
    limit: usize,
    first: bool,
    shutdown: &watch::Receiver<Shutdown>,
    stop: &mut (impl Future + Unpin),
) -> HeadRead {
    // `timeout http-request` for a request under way (and the first one,
    // from the accept); `timeout http-keep-alive` while idle between requests.
    let request_timeout = fe.http_request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
    let request_deadline = || Instant::now() + request_timeout;
    let timer = tokio::time::sleep_until(if first || conn.buffered() > 0 {
        request_deadline()
    } else {
        Instant::now() + fe.keep_alive_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT)
    });
    let mut timer = pin!(timer);
    // When the request's first byte came (now if it is already buffered).
    let mut first_byte = (conn.buffered() > 0).then(Instant::now);
    loop {
        if let Some(buf) = conn.buf.as_mut().filter(|b| !b.is_empty()) {
            match head::parse(buf, limit) {
                Ok(Some((h, len))) => {
                    buf.advance(len);
                    return HeadRead::Head(h, first_byte.unwrap_or_else(Instant::now), len);
                }
                Ok(None) => {}
                Err(r) => return HeadRead::Refused(r),
            }
        }
        let idle = conn.buffered() == 0;
        // A stop closes connections idle between requests; one accepted
        // before it still gets its first request answered, as HAProxy does
        // (its h1 mux closes only connections waiting for a next request).
        // A soft stop or a reload must not turn an accepted client away.
        let between_requests = idle && !first;
        let stop_now = match *shutdown.borrow() {
            Shutdown::Running => false,
            Shutdown::Hard => idle,
            _ => between_requests,
        };
        if stop_now {
            return HeadRead::Closed;
        }
        tokio::select! {
            biased;
            r = conn.stream.readable() => if r.is_err() {
                return HeadRead::Closed;
            },
            _ = timer.as_mut() => {
                return if idle {
                    HeadRead::Closed
                } else {
                    HeadRead::Refused(Refusal { status: 408, reason: "request head timeout" })
                };
            }
            _ = &mut *stop, if between_requests => return HeadRead::Closed,
        }
        let buf = conn.buf.get_or_insert_with(buffers::take);
        buffers::reserve(buf);
        match conn.stream.try_read_buf(buf) {
            Ok(0) if idle && first => return HeadRead::Empty,
            Ok(0) if idle => return HeadRead::Closed,
            Ok(0) => return HeadRead::Cut,
            Ok(_) => {
                first_byte.get_or_insert_with(Instant::now);
                if idle && !first {
                    // A new request started: it has `timeout http-request`.
                    timer.as_mut().reset(request_deadline());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.release_empty_buffer(),
            Err(_) => return HeadRead::Closed,
        }
    }
}

/// What an exchange needs from its connection.
struct ExchangeCtx<'a> {
    worker: &'a Rc<Worker>,
    fe: &'a Arc<FrontendPlan>,
    peer: SocketAddr,
    local: SocketAddr,
    first: bool,
    sess: &'a SessVars,
    shutdown: &'a watch::Receiver<Shutdown>,
    /// When the request came, for its log line.
    times: RequestTimes,
}

/// Whether the client closed its side (Some(true)), sent more bytes
/// (Some(false): a pipelined request, nothing to watch any more), or neither
/// yet (None; the socket's readiness wakes the task).
fn client_closed(stream: &TcpStream, cx: &mut Context<'_>) -> Option<bool> {
    loop {
        if stream.poll_read_ready(cx).is_pending() {
            return None;
        }
        // A peek leaves any byte for the next request's head.
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
            use std::os::fd::AsRawFd;
            let mut probe = 0u8;
            // SAFETY: recv writes at most 1 byte into `probe`, a live local;
            // the descriptor belongs to `stream`, open for this call.
            let n = unsafe {
                libc::recv(
                    stream.as_raw_fd(),
                    (&mut probe as *mut u8).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match peeked {
            Ok(0) => return Some(true),
            Ok(_) => return Some(false),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return Some(true),
        }
    }
}

/// One request and its response.
async fn exchange(conn: &mut Conn, ctx: ExchangeCtx<'_>, head: RequestHead) -> Next {
    let RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue,
    } = head;
    // The body bytes that came with the head are decoded now, so that a
    // malformed chunk is refused before anyone answers.
    let (body, mut feed) = match start_body(conn, framing, expect_continue) {
        Ok(b) => b,
        Err(r) => return Next::Refuse(r),
    };
    let ex = Exchange {
        head_request: parts.method == Method::HEAD,
        http10: parts.version == Version::HTTP_10,
        keep_alive,
    };
    let handler = http_front::handle(
        ctx.worker.clone(),
        ctx.fe.clone(),
        ctx.peer,
        ctx.local,
        ctx.first,
        ctx.sess.clone(),
        Request::from_parts(parts, body),
    );
    let mut handler = pin!(handler);
    // With `option abortonclose`, the client's close ends the request once
    // its body is in; until a byte of a next request shows up.
    let mut watch_close = ctx.fe.abortonclose;
    // The request's work, with the body read alongside.
    let result = std::future::poll_fn(|cx| {
        if let Some(f) = feed.as_mut() {
            if let Err(e) = drive_feed(f, cx, conn) {
                return Poll::Ready(Err(Some(e)));
            }
        }
        if let Poll::Ready(r) = handler.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        let body_in = feed.as_ref().is_none_or(|f| f.is_complete());
        if watch_close && body_in && conn.buffered() == 0 {
            match client_closed(&conn.stream, cx) {
                // The transaction is dropped with the handler: a request
                // aborted this way has no traffic log line.
                Some(true) => return Poll::Ready(Err(None)),
                Some(false) => watch_close = false,
                None => {}
            }
        }
        Poll::Pending
    })
    .await;
    let (resp, txn) = match result {
        Ok((Ok(resp), txn)) => (resp, txn),
        // Rules or Lua closed the transaction without a response.
        Ok((Err(http_front::Abort), txn)) => {
            let d = Delivery {
                status: None,
                bytes_out: 0,
                term: "PR",
            };
            traffic_log::http_finished(ctx.worker, ctx.fe, &txn, &ctx.times, d);
            return Next::Close;
        }
        // `option abortonclose`: the client's close aborted the request.
        Err(None) => return Next::Close,
        // A malformed request body.
        Err(Some(e)) => {
            return Next::Refuse(Refusal {
                status: 400,
                reason: e,
            })
        }
    };
    if let Some(f) = feed.as_mut() {
        // A service or server that read a body cut by the client's close
        // gets no answer sent (HAProxy aborts such a request).
        if f.reader_saw_error() {
            return Next::Close;
        }
        f.response_started();
    }
    let stopping = *ctx.shutdown.borrow() != Shutdown::Running;
    let ex = Exchange {
        keep_alive: ex.keep_alive && !stopping,
        ..ex
    };
    let (parts, mut body) = resp.into_parts();
    let status = parts.status.as_u16();
    let logged_head = if ctx.fe.log.is_some() {
        txn.log
            .head_size
            .unwrap_or_else(|| traffic_log::logged_head_size(&parts))
    } else {
        0
    };
    let mut out = Vec::with_capacity(512);
    let (framing, keep) = response::encode_head(&mut out, &parts, &body.size_hint(), &ex);
    drop(parts);
    let mut writer = BodyWriter {
        out,
        pos: 0,
        framing,
        sent: 0,
        done: framing == response::Framing::None,
        complete: true,
        payload: 0,
    };
    let written = std::future::poll_fn(|cx| {
        if let Some(f) = feed.as_mut() {
            // A body failing now ends the connection after the response.
            let _ = drive_feed(f, cx, conn);
        }
        writer.poll(cx, &conn.stream, &mut body)
    })
    .await;
    let body_read = feed.as_ref().is_none_or(BodyFeed::is_complete);
    let term = match (&written, writer.complete) {
        (Err(()), _) => "CD",
        (Ok(()), false) => "SD",
        (Ok(()), true) => "--",
    };
    // A compressed body counts as it was before compression (HAProxy
    // counts what it received).
    let body_bytes = match &body {
        crate::proxy::body::ProxyBody::Compressed(c) => c.taken(),
        _ => writer.payload,
    };
    let d = Delivery {
        status: Some(status),
        bytes_out: logged_head + body_bytes,
        term,
    };
    traffic_log::http_finished(ctx.worker, ctx.fe, &txn, &ctx.times, d);
    if written.is_ok() && writer.complete && keep && body_read {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// Decodes the body bytes read with the head: a body complete in them is
/// handed over whole; otherwise a feed streams the rest.
fn start_body(
    conn: &mut Conn,
    framing: Framing,
    expect_continue: bool,
) -> Result<(RequestBody, Option<BodyFeed>), Refusal> {
    let (mut decoder, total) = match framing {
        Framing::Length(0) => return Ok((RequestBody::empty(), None)),
        Framing::Length(n) => (Decoder::length(n), Some(n)),
        Framing::Chunked => (Decoder::chunked(), None),
    };
    let mut pieces: Vec<Bytes> = Vec::new();
    if let Some(buf) = conn.buf.as_mut() {
        loop {
            match decoder.step(buf) {
                Ok(Step::Data(b)) => pieces.push(b),
                Ok(Step::NeedMore) | Ok(Step::Done) => break,
                Err(m) => {
                    return Err(Refusal {
                        status: 400,
                        reason: m.0,
                    })
                }
            }
        }
    }
    let first = match pieces.len() {
        0 => None,
        1 => pieces.pop(),
        _ => {
            let mut all = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
            for p in &pieces {
                all.extend_from_slice(p);
            }
            Some(all.freeze())
        }
    };
    if decoder.is_done() {
        return Ok((RequestBody::full(first.unwrap_or_default()), None));
    }
    let (body, feed) = RequestBody::streamed(first, decoder, total, expect_continue);
    Ok((body, Some(feed)))
}

/// Moves the request body forward: the interim `100 Continue` when due,
/// then reads and decodes. `Err` for a malformed body (the client gets a
/// 400 if nothing was answered yet).
fn drive_feed(
    feed: &mut BodyFeed,
    cx: &mut Context<'_>,
    conn: &mut Conn,
) -> Result<(), &'static str> {
    loop {
        match feed.need(cx) {
            FeedNeed::Wait | FeedNeed::Ended(Ok(())) => return Ok(()),
            FeedNeed::Ended(Err(e)) => return malformed(e),
            FeedNeed::Write(bytes) => match poll_write(&conn.stream, cx, bytes) {
                Poll::Ready(Ok(n)) => feed.wrote(n),
                Poll::Ready(Err(_)) => {
                    feed.fail();
                    return Ok(());
                }
                Poll::Pending => return Ok(()),
            },
            FeedNeed::Read => {
                let buf = conn.buf.get_or_insert_with(buffers::take);
                let eof = match poll_read(&conn.stream, cx, buf) {
                    Poll::Ready(Ok(n)) => n == 0,
                    Poll::Ready(Err(_)) => {
                        feed.fail();
                        return Ok(());
                    }
                    Poll::Pending => return Ok(()),
                };
                if let Some(Err(e)) = feed.decode(buf, eof) {
                    return malformed(e);
                }
            }
        }
    }
}

fn malformed(e: BodyError) -> Result<(), &'static str> {
    match e {
        BodyError::Malformed(m) => Err(m),
        BodyError::Cut | BodyError::Io => Ok(()),
    }
}

fn poll_read(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    loop {
        std::task::ready!(stream.poll_read_ready(cx))?;
        buffers::reserve(buf);
        match stream.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

fn poll_write(stream: &TcpStream, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
    loop {
        std::task::ready!(stream.poll_write_ready(cx))?;
        match stream.try_write(data) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

/// Writes a response: the head already encoded in `out`, then the body in
/// its framing, gathering small pieces into one write.
struct BodyWriter {
    out: Vec<u8>,
    pos: usize,
    framing: response::Framing,
    /// Body bytes sent (for a length-framed body).
    sent: u64,
    /// The body has ended (or is not sent at all).
    done: bool,
    /// The body had exactly its announced length and did not fail.
    complete: bool,
    /// Body payload bytes taken from the body (without chunk framing).
    payload: u64,
}

impl BodyWriter {
    fn poll<B>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &TcpStream,
        body: &mut B,
    ) -> Poll<Result<(), ()>>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        use response::Framing as F;
        loop {
            while !self.done && self.out.len() - self.pos < WRITE_GATHER {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        // Trailers are not sent.
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        self.payload += data.len() as u64;
                        match self.framing {
                            F::Length(n) => {
                                let room = n - self.sent;
                                let take = (data.len() as u64).min(room) as usize;
                                self.out.extend_from_slice(&data[..take]);
                                self.sent += take as u64;
                                if take < data.len() {
                                    // More than announced: the extra is cut
                                    // and the connection closed.
                                    self.complete = false;
                                    self.done = true;
                                }
                            }
                            F::Chunked if !data.is_empty() => response::chunk(&mut self.out, &data),
                            F::Chunked | F::None => {}
                            F::UntilClose => self.out.extend_from_slice(&data),
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        // Aborted: what went out stays truncated.
                        self.complete = false;
                        self.done = true;
                    }
                    Poll::Ready(None) => {
                        self.done = true;
                        match self.framing {
                            F::Chunked => self.out.extend_from_slice(response::LAST_CHUNK),
                            F::Length(n) if self.sent < n => self.complete = false,
                            _ => {}
                        }
                    }
                    Poll::Pending => break,
                }
            }
            if self.pos < self.out.len() {
                match poll_write(stream, cx, &self.out[self.pos..]) {
                    Poll::Ready(Ok(n)) => {
                        self.pos += n;
                        continue;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                    Poll::Pending => return Poll::Pending,
                }
            }
            self.out.clear();
            self.pos = 0;
            if self.done {
                if self.framing == F::UntilClose {
                    self.complete = false;
                }
                return Poll::Ready(Ok(()));
            }
            return Poll::Pending;
        }
    }
}
