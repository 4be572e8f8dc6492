//! The Lua `Socket` class: `core.tcp()`, HAProxy's LuaSocket-like client
//! socket (`connect`, `connect_ssl`, `send`, `receive`, `settimeout`,
//! `setoption`, `getpeername`, `getsockname`, `close`).
//!
//! Results follow HAProxy 3.0 (checked against it by tests/lua_socket.rs),
//! which differ from LuaSocket's in places: a refused connection gives
//! `nil, "Can't connect"`; a read that meets the end of the connection or
//! a timeout returns what it has read (prefix included) as a success, or
//! `nil, "connection closed."` when that is nothing; `send` returns -1 on a
//! socket that is not connected or failed.
//!
//! Every operation waits without blocking the worker: the calling
//! coroutine yields (through mlua's async functions) until the socket is
//! ready. A fetch or converter cannot yield, so sockets are refused there.
//!
//! A socket is closed by `close()`, by the end of the Lua context that
//! created it (the action returned, the request or the task ended: see
//! `ExecCtx::own`), or when the collector frees it, whichever comes first.
//! Nothing forces a garbage collection, and no connection waits for one.
//!
//! The connection itself sits in a slot that operations only borrow inside
//! a poll (never across a wait), so closing it, from the script or at the
//! end of the context, drops it at once even while an operation waits on it.

use crate::lua::class::{native, Class};
use crate::lua::exec::ContextResource;
use crate::lua::memory;
use crate::lua::socket_addr::{self, Destination};
use crate::lua::socket_tls::TlsOptions;
use bytes::BytesMut;
use mlua::{Lua, MultiValue, Table, Value};
use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// How much a read asks of the kernel at most (charged to `tune.lua.maxmem`
/// before it is made).
const READ_CHUNK: usize = 16 * 1024;

/// A connected byte stream: TCP, Unix, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// Where a socket is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Made by `core.tcp()`, not connected yet.
    New,
    Connecting,
    Open,
    /// Closed, failed, or ended with its context.
    Closed,
}

/// How a read for more bytes ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Filled {
    Data,
    /// The peer closed, or the read failed.
    End,
    /// The timeout ran out (the socket is closed now).
    TimedOut,
}

/// What the read side has seen.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    Open,
    /// The peer closed (or the read failed): what is buffered is all.
    Eof,
}

/// How `settimeout` limits waiting (LuaSocket's modes).
#[derive(Clone, Copy, PartialEq, Eq)]
enum TimeoutMode {
    /// Each wait for the network (HAProxy's inactivity timeout).
    Block,
    /// The whole call.
    Total,
}

/// The native side of a Socket object (shared by the object's userdata,
/// the operations in flight and, weakly, the context that created it).
pub struct SocketInner {
    phase: Cell<Phase>,
    io: RefCell<Option<Box<dyn Io>>>,
    /// Received bytes not yet handed to Lua, charged to `tune.lua.maxmem`.
    rbuf: RefCell<BytesMut>,
    charge: RefCell<memory::Charge>,
    read_end: Cell<ReadEnd>,
    timeout: Cell<Option<Duration>>,
    mode: Cell<TimeoutMode>,
    /// What getpeername/getsockname ask (None: not connected).
    ends: Cell<Option<Ends>>,
    /// TLS was asked for (`connect_ssl`), with these options.
    tls: RefCell<Option<TlsOptions>>,
    /// Bytes of the current `send` that its non-waiting attempt wrote before
    /// the socket's buffer filled (see [`SocketInner::write_now`]).
    sent_early: Cell<usize>,
}

impl SocketInner {
    fn new() -> SocketInner {
        SocketInner {
            phase: Cell::new(Phase::New),
            io: RefCell::new(None),
            rbuf: RefCell::new(BytesMut::new()),
            charge: RefCell::new(memory::Charge::default()),
            read_end: Cell::new(ReadEnd::Open),
            timeout: Cell::new(None),
            mode: Cell::new(TimeoutMode::Block),
            ends: Cell::new(None),
            tls: RefCell::new(None),
            sent_early: Cell::new(0),
        }
    }

    /// Closes the connection now (idempotent). Buffered data is dropped.
    fn close(&self) {
        self.phase.set(Phase::Closed);
        drop(self.io.borrow_mut().take());
        *self.rbuf.borrow_mut() = BytesMut::new();
        *self.charge.borrow_mut() = memory::Charge::default();
        self.ends.set(None);
    }

    fn is_open(&self) -> bool {
        self.phase.get() == Phase::Open && self.io.borrow().is_some()
    }

    /// A limit on the waits of one call (see [`TimeoutMode`]).
    fn deadline(&self) -> Limit {
        match (self.timeout.get(), self.mode.get()) {
            (None, _) => Limit::None,
            (Some(d), TimeoutMode::Block) => Limit::Each(d),
            (Some(d), TimeoutMode::Total) => Limit::Until(Instant::now() + d),
        }
    }

    /// Polls one read into the buffer (reserving a chunk first).
    fn poll_fill(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let mut slot = self.io.borrow_mut();
        let Some(io) = slot.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let mut buf = self.rbuf.borrow_mut();
        buf.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut *buf)
    }

    /// Books the result of a finished read: the bytes' charge, or the end
    /// of the stream.
    fn filled(&self, read: std::io::Result<usize>) -> mlua::Result<Filled> {
        match read {
            Ok(n) if n > 0 => {
                // Charged after the fact: the check before the read keeps it
                // from passing the cap by more than one chunk.
                if !self.charge.borrow_mut().try_grow(n) {
                    return Err(mlua::Error::runtime("not enough memory"));
                }
                Ok(Filled::Data)
            }
            _ => {
                self.read_end.set(ReadEnd::Eof);
                Ok(Filled::End)
            }
        }
    }

    /// Reads more bytes into the buffer.
    async fn fill(&self, limit: Limit) -> mlua::Result<Filled> {
        if self.read_end.get() == ReadEnd::Eof {
            return Ok(Filled::End);
        }
        if memory::would_exceed(READ_CHUNK) {
            return Err(mlua::Error::runtime("not enough memory"));
        }
        match limit.run(poll_fn(|cx| self.poll_fill(cx))).await {
            Some(read) => self.filled(read),
            None => {
                // As HAProxy's expired stream: the connection is gone, what
                // was read stays for the caller.
                self.read_end.set(ReadEnd::Eof);
                self.phase.set(Phase::Closed);
                drop(self.io.borrow_mut().take());
                Ok(Filled::TimedOut)
            }
        }
    }

    /// Reads more bytes if the kernel has them now; None when the read
    /// would have to wait.
    fn fill_now(&self) -> Option<mlua::Result<Filled>> {
        if self.read_end.get() == ReadEnd::Eof {
            return Some(Ok(Filled::End));
        }
        if memory::would_exceed(READ_CHUNK) {
            return Some(Err(mlua::Error::runtime("not enough memory")));
        }
        // A waker that does nothing: a pending read leaves it registered
        // until the waiting path polls again with the task's own waker.
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_fill(&mut cx) {
            Poll::Ready(read) => Some(self.filled(read)),
            Poll::Pending => None,
        }
    }

    /// Takes `n` buffered bytes (at most all), releasing their charge.
    fn take(&self, n: usize) -> BytesMut {
        let mut buf = self.rbuf.borrow_mut();
        let n = n.min(buf.len());
        self.charge.borrow_mut().release(n);
        buf.split_to(n)
    }

    fn buffered(&self) -> usize {
        self.rbuf.borrow().len()
    }

    /// Writes what the kernel takes of `data` now, without waiting:
    /// Ready(true) when all of it went out (and was flushed), Ready(false)
    /// when the connection failed (then it is closed), Pending when the
    /// rest has to wait; the bytes already written are then in
    /// `sent_early`, for the waiting path to skip.
    fn write_now(&self, data: &[u8]) -> Poll<bool> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut done = 0;
        let flushed = {
            let mut slot = self.io.borrow_mut();
            let Some(io) = slot.as_mut() else {
                drop(slot);
                self.close();
                return Poll::Ready(false);
            };
            let mut failed = false;
            while done < data.len() {
                match Pin::new(&mut *io).poll_write(&mut cx, &data[done..]) {
                    Poll::Ready(Ok(n)) if n > 0 => done += n,
                    Poll::Pending => break,
                    Poll::Ready(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                None
            } else if done < data.len() {
                Some(Poll::Pending)
            } else {
                match Pin::new(&mut *io).poll_flush(&mut cx) {
                    Poll::Ready(Ok(())) => Some(Poll::Ready(true)),
                    Poll::Ready(Err(_)) => None,
                    Poll::Pending => Some(Poll::Pending),
                }
            }
        };
        match flushed {
            None => {
                self.close();
                Poll::Ready(false)
            }
            Some(Poll::Pending) => {
                self.sent_early.set(done);
                Poll::Pending
            }
            Some(ready) => ready,
        }
    }

    /// Writes all of `data` (but the `sent_early` bytes a non-waiting
    /// attempt already wrote); false when the connection failed or timed
    /// out (then it is closed).
    async fn write_all(&self, data: &[u8]) -> bool {
        let limit = self.deadline();
        let mut done = self.sent_early.replace(0).min(data.len());
        while done < data.len() {
            let write = poll_fn(|cx| {
                let mut slot = self.io.borrow_mut();
                match slot.as_mut() {
                    Some(io) => Pin::new(io).poll_write(cx, &data[done..]),
                    None => Poll::Ready(Ok(0)),
                }
            });
            match limit.run(write).await {
                Some(Ok(n)) if n > 0 => done += n,
                _ => {
                    self.close();
                    return false;
                }
            }
        }
        let flush = poll_fn(|cx| {
            let mut slot = self.io.borrow_mut();
            match slot.as_mut() {
                Some(io) => Pin::new(io).poll_flush(cx),
                None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
            }
        });
        match limit.run(flush).await {
            Some(Ok(())) => true,
            _ => {
                self.close();
                false
            }
        }
    }
}

impl ContextResource for SocketInner {
    fn close_at_context_end(&self) {
        self.close();
    }
}

/// How a connected socket names its ends (`getpeername`, `getsockname`).
/// The addresses are asked of the kernel only when the script asks: most
/// scripts never do, and asking at every connect cost two system calls and
/// two strings per connection.
#[derive(Clone, Copy)]
enum Ends {
    /// A TCP connection (possibly under TLS), by its descriptor, which the
    /// socket's `io` owns.
    Inet(RawFd),
    /// A Unix socket: HAProxy names both ends "unix".
    Unix,
}

impl Ends {
    /// The text of one end; `local`: getsockname, else getpeername. Only
    /// called while the socket is open, so that the descriptor is still the
    /// connection's.
    fn text(self, local: bool) -> Option<String> {
        let fd = match self {
            Ends::Unix => return Some("unix".into()),
            Ends::Inet(fd) => fd,
        };
        // SAFETY: `fd` is the descriptor of the TCP stream that the open
        // socket's `io` owns (the caller checked that it is open, and
        // nothing runs between that check and this call on this thread);
        // ManuallyDrop keeps this borrowed view from closing it.
        let stream = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
        let addr = if local {
            stream.local_addr()
        } else {
            stream.peer_addr()
        };
        addr.ok().map(inet_text)
    }
}

/// A time limit on the waits of one call.
#[derive(Clone, Copy)]
enum Limit {
    None,
    Each(Duration),
    Until(Instant),
}

impl Limit {
    /// Runs `f` within the limit; None when it ran out.
    async fn run<T>(self, f: impl Future<Output = T>) -> Option<T> {
        let mut f = std::pin::pin!(f);
        // An operation that is ready at once (a write into the socket's
        // buffer, data already received) needs no timer: one is armed only
        // for an operation that has to wait. (tokio's timeout also polls the
        // operation before its timer, so a ready operation succeeds even
        // past the deadline either way.)
        if let Poll::Ready(v) = poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await {
            return Some(v);
        }
        // One timer type for both limits keeps this future (which every
        // socket call's future holds) small.
        let deadline = match self {
            Limit::None => return Some(f.await),
            // A limit too far to represent is no limit.
            Limit::Each(d) => match Instant::now().checked_add(d) {
                Some(t) => t,
                None => return Some(f.await),
            },
            Limit::Until(t) => t,
        };
        tokio::time::timeout_at(deadline.into(), f).await.ok()
    }
}

/// The userdata at [0] of a Socket object.
pub struct SocketObj {
    inner: Rc<SocketInner>,
}

/// The socket of `this`, checked.
fn socket(this: &Value, method: &str) -> mlua::Result<Rc<SocketInner>> {
    Ok(native::<SocketObj>(this, "Socket", method)?.inner.clone())
}

/// Raises unless the running context may wait.
fn must_wait_here(what: &str) -> mlua::Result<()> {
    let ok = crate::lua::exec::with_current(|c| c.is_some_and(|c| c.yieldable()));
    if ok {
        Ok(())
    } else {
        Err(mlua::Error::runtime(format!(
            "{what}: sockets can't be used here: sample fetches and converters (and a \
             state's body) cannot wait; use them in an action, a service, a task or an \
             init function"
        )))
    }
}

/// HAProxy's `check_args`: exactly `n` arguments, self included.
fn check_args(args: &MultiValue, n: usize, name: &str) -> mlua::Result<()> {
    if args.len() != n {
        return Err(mlua::Error::runtime(format!(
            "'{name}' needs {n} arguments"
        )));
    }
    Ok(())
}

/// `luaL_checklstring`: a string, or a number as its text.
fn check_bytes(
    lua: &Lua,
    v: Option<&Value>,
    pos: usize,
    func: &str,
) -> mlua::Result<mlua::LuaString> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(n @ (Value::Integer(_) | Value::Number(_))) => match lua.coerce_string(n.clone())? {
            Some(s) => Ok(s),
            None => Err(bad_arg(pos, func, "string", v)),
        },
        other => Err(bad_arg(pos, func, "string", other)),
    }
}

/// `luaL_checkinteger`.
fn check_int(v: Option<&Value>, pos: usize, func: &str) -> mlua::Result<i64> {
    match v {
        Some(Value::Integer(i)) => Ok(*i),
        Some(Value::Number(n)) if n.fract() == 0.0 && n.is_finite() => Ok(*n as i64),
        Some(Value::String(s)) => match s.to_str().ok().and_then(|t| t.trim().parse().ok()) {
            Some(i) => Ok(i),
            None => Err(bad_arg(pos, func, "number", v)),
        },
        other => Err(bad_arg(pos, func, "number", other)),
    }
}

/// `luaL_checknumber`.
fn check_number(v: Option<&Value>, pos: usize, func: &str) -> mlua::Result<f64> {
    match v {
        Some(Value::Integer(i)) => Ok(*i as f64),
        Some(Value::Number(n)) => Ok(*n),
        Some(Value::String(s)) => match s.to_str().ok().and_then(|t| t.trim().parse().ok()) {
            Some(n) => Ok(n),
            None => Err(bad_arg(pos, func, "number", v)),
        },
        other => Err(bad_arg(pos, func, "number", other)),
    }
}

fn bad_arg(pos: usize, func: &str, want: &str, got: Option<&Value>) -> mlua::Error {
    let got = got.map_or("no value", |v| v.type_name());
    mlua::Error::runtime(format!(
        "bad argument #{pos} to '{func}' ({want} expected, got {got})"
    ))
}

/// "ip:port", "[ipv6]:port", or "unix", as HAProxy's getpeername gives them.
fn inet_text(a: std::net::SocketAddr) -> String {
    match a {
        std::net::SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
        std::net::SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// Connects to `dest`: a TCP or Unix stream, and how to name its ends.
async fn open_stream(dest: &Destination) -> std::io::Result<(Box<dyn Io>, Ends)> {
    match dest {
        Destination::Inet(a) => {
            let s = tokio::net::TcpStream::connect(a).await?;
            // Requests and answers are small and latency-bound.
            let _ = s.set_nodelay(true);
            let fd = s.as_raw_fd();
            Ok((Box::new(s), Ends::Inet(fd)))
        }
        Destination::Unix(path) => {
            use std::os::unix::ffi::OsStrExt;
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
            let s = tokio::net::UnixStream::connect(path).await?;
            Ok((Box::new(s), Ends::Unix))
        }
        Destination::Abstract(name) => {
            let s = crate::lua::socket_unix::connect_abstract(name)?;
            Ok((Box::new(s), Ends::Unix))
        }
    }
}

/// `Socket:connect(address[, port])` and `connect_ssl`.
async fn connect(lua: Lua, args: MultiValue, func: &'static str) -> mlua::Result<MultiValue> {
    if args.len() < 2 {
        return Err(mlua::Error::runtime("connect: need at least 2 arguments"));
    }
    let s = socket(&args[0], func)?;
    must_wait_here(func)?;
    let address = check_bytes(&lua, args.get(1), 2, func)?.as_bytes();
    let port = match args.get(2) {
        Some(v) if args.len() >= 3 => Some(check_int(Some(v), 3, func)?),
        _ => None,
    };
    match s.phase.get() {
        Phase::New => {}
        // A socket whose connection failed or was closed: nil, as HAProxy.
        Phase::Closed => return (Value::Nil,).into_lua_multi(&lua),
        Phase::Connecting | Phase::Open => {
            return Err(mlua::Error::runtime("connect: connect already performed"))
        }
    }
    let dest = socket_addr::parse(&address, port).map_err(|e| mlua::Error::runtime(e.message()))?;
    s.phase.set(Phase::Connecting);
    let limit = s.deadline();
    let tls = s.tls.borrow().clone();
    let opened = limit
        .run(async {
            let (io, ends) = open_stream(&dest).await?;
            let io = match tls {
                // Boxed: the handshake's state is large, and only TLS
                // sockets should carry it in their connect call.
                Some(t) => Box::pin(crate::lua::socket_tls::wrap(io, &dest, &t)).await?,
                None => io,
            };
            Ok::<_, std::io::Error>((io, ends))
        })
        .await;
    // Closed meanwhile (close() from another coroutine, or the context
    // ended): the new connection is dropped.
    if s.phase.get() != Phase::Connecting {
        return (Value::Nil, "Can't connect").into_lua_multi(&lua);
    }
    match opened {
        Some(Ok((io, ends))) => {
            *s.io.borrow_mut() = Some(io);
            s.ends.set(Some(ends));
            s.phase.set(Phase::Open);
            (1,).into_lua_multi(&lua)
        }
        _ => {
            s.close();
            (Value::Nil, "Can't connect").into_lua_multi(&lua)
        }
    }
}

use mlua::IntoLuaMulti;

/// The byte range `send(data, i, j)` sends, as HAProxy computes it (1-based
/// inclusive, negative from the end); None when it sends nothing.
fn send_range(len: usize, i: Option<i64>, j: Option<i64>) -> Option<(usize, usize)> {
    let len = len as i64;
    let j = match j {
        Some(mut j) => {
            if j < 0 {
                j += len + 1;
            }
            j.min(len + 1)
        }
        None => len,
    };
    let i = match i {
        Some(mut i) => {
            if i < 0 {
                i += len + 1;
            }
            i.min(len + 1)
        }
        None => 1,
    };
    if i > j || (i == 0 && j == 0) {
        return None;
    }
    let i = i.max(1);
    let j = j.max(1);
    // HAProxy takes j - i + 1 bytes from i; keep that within the string.
    let start = (i - 1).clamp(0, len) as usize;
    let end = j.clamp(0, len) as usize;
    Some((start, end.max(start)))
}

/// What `receive` reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pattern {
    Line,
    All,
    Bytes(usize),
}

fn pattern(v: Option<&Value>) -> mlua::Result<Pattern> {
    match v {
        Some(Value::String(s)) => {
            let b = s.as_bytes();
            match &b[..] {
                b"*a" => Ok(Pattern::All),
                b"*l" => Ok(Pattern::Line),
                text => {
                    // strtoll: leading blanks and a sign, then digits only
                    // (an empty string reads as 0).
                    let t = String::from_utf8_lossy(text);
                    let t = t.trim_start();
                    let n = if t.is_empty() {
                        0
                    } else {
                        t.parse::<i64>()
                            .map_err(|_| mlua::Error::runtime("Unsupported pattern."))?
                    };
                    match n {
                        -1 => Ok(Pattern::Line),
                        -2 => Ok(Pattern::All),
                        n if n < 0 => Err(mlua::Error::runtime("Unsupported size.")),
                        n => Ok(Pattern::Bytes(n as usize)),
                    }
                }
            }
        }
        Some(Value::Integer(n)) if *n < 0 => Err(mlua::Error::runtime("Unsupported size.")),
        Some(Value::Integer(n)) => Ok(Pattern::Bytes(*n as usize)),
        Some(Value::Number(n)) if *n < 0.0 => Err(mlua::Error::runtime("Unsupported size.")),
        // lua_tointeger: 0 for a number with a fraction.
        Some(Value::Number(n)) => Ok(Pattern::Bytes(if n.fract() == 0.0 {
            *n as usize
        } else {
            0
        })),
        // Anything else: the default, a line.
        _ => Ok(Pattern::Line),
    }
}

/// A `receive` call's arguments, checked.
struct ReceiveCall {
    s: Rc<SocketInner>,
    want: Pattern,
    prefix: Vec<u8>,
}

impl ReceiveCall {
    fn parse(args: &MultiValue) -> mlua::Result<ReceiveCall> {
        if args.is_empty() || args.len() > 3 {
            return Err(mlua::Error::runtime(
                "The 'receive' function requires between 1 and 3 arguments.",
            ));
        }
        let s = socket(&args[0], "receive")?;
        let want = pattern(args.get(1))?;
        let prefix = match args.get(2) {
            None => Vec::new(),
            Some(Value::String(p)) => p.as_bytes().to_vec(),
            Some(_) => return Err(mlua::Error::runtime("Expect a 'string' for the prefix")),
        };
        Ok(ReceiveCall { s, want, prefix })
    }

    /// The prefix and `data` as one Lua string: a successful receive.
    fn success(&self, lua: &Lua, data: &[u8]) -> mlua::Result<MultiValue> {
        let text = if self.prefix.is_empty() {
            lua.create_string(data)?
        } else {
            let mut out = Vec::with_capacity(self.prefix.len() + data.len());
            out.extend_from_slice(&self.prefix);
            out.extend_from_slice(data);
            lua.create_string(&out)?
        };
        (text,).into_lua_multi(lua)
    }

    /// What the connection gave before it ended: the prefix and `data`, or
    /// `nil, "connection closed."` when that is nothing.
    fn closed(&self, lua: &Lua, data: &[u8]) -> mlua::Result<MultiValue> {
        if self.prefix.is_empty() && data.is_empty() {
            return (Value::Nil, "connection closed.").into_lua_multi(lua);
        }
        self.success(lua, data)
    }

    /// The answer if the buffer (and how the last read ended, `last`)
    /// decides it; None when more bytes are needed. `searched`: how much of
    /// the buffer is known to hold no line end.
    fn answer(
        &self,
        lua: &Lua,
        last: Option<Filled>,
        searched: &mut usize,
    ) -> mlua::Result<Option<MultiValue>> {
        let s = &self.s;
        let ended = matches!(last, Some(Filled::End | Filled::TimedOut));
        let answer = match self.want {
            Pattern::Line => {
                let found = {
                    let buf = s.rbuf.borrow();
                    let from = (*searched).min(buf.len());
                    let found = buf[from..].iter().position(|&b| b == b'\n');
                    *searched = buf.len();
                    found.map(|p| p + from)
                };
                match (found, last) {
                    (Some(nl), _) => {
                        let line = s.take(nl + 1);
                        let mut end = nl;
                        if end > 0 && line[end - 1] == b'\r' {
                            end -= 1;
                        }
                        self.success(lua, &line[..end])?
                    }
                    // HAProxy returns an unfinished line at the end of the
                    // stream, but loses it with the stream on a timeout.
                    (None, Some(Filled::End)) => self.closed(lua, &s.take(usize::MAX))?,
                    (None, Some(Filled::TimedOut)) => {
                        drop(s.take(usize::MAX));
                        self.closed(lua, &[])?
                    }
                    _ => return Ok(None),
                }
            }
            Pattern::All if ended => self.closed(lua, &s.take(usize::MAX))?,
            Pattern::All => return Ok(None),
            Pattern::Bytes(n) => {
                // HAProxy counts the prefix in the size.
                let need = n.saturating_sub(self.prefix.len());
                if s.buffered() >= need {
                    self.success(lua, &s.take(need))?
                } else if ended {
                    self.closed(lua, &s.take(usize::MAX))?
                } else {
                    return Ok(None);
                }
            }
        };
        Ok(Some(answer))
    }
}

/// `Socket:receive([pattern[, prefix]])` without waiting: the answer when
/// the buffered bytes and what the kernel has now decide it, else None
/// (nothing is lost: what was read stays buffered for [`receive`]).
///
/// With nothing buffered it leaves the call to [`receive`] at once: a
/// receive right after a request usually finds no answer yet, and asking
/// the kernel here and again there would cost two polls (and a second
/// parse of the arguments) for nothing. Arguments in error go there too,
/// which raises the same error.
fn receive_now(lua: &Lua, args: &MultiValue) -> mlua::Result<Option<MultiValue>> {
    let nothing_buffered = match args.front().map(|this| socket(this, "receive")) {
        Some(Ok(s)) => s.is_open() && s.buffered() == 0 && s.read_end.get() == ReadEnd::Open,
        _ => true,
    };
    if nothing_buffered {
        return Ok(None);
    }
    let call = ReceiveCall::parse(args)?;
    if !call.s.is_open() {
        return call.closed(lua, &[]).map(Some);
    }
    must_wait_here("receive")?;
    let (mut last, mut searched) = (None, 0);
    loop {
        if let Some(answer) = call.answer(lua, last, &mut searched)? {
            return Ok(Some(answer));
        }
        match call.s.fill_now() {
            Some(filled) => last = Some(filled?),
            None => return Ok(None),
        }
    }
}

/// `Socket:receive([pattern[, prefix]])`, waiting for the bytes it needs.
async fn receive(lua: Lua, args: MultiValue) -> mlua::Result<MultiValue> {
    let call = ReceiveCall::parse(&args)?;
    if !call.s.is_open() {
        return call.closed(&lua, &[]);
    }
    must_wait_here("receive")?;
    let limit = call.s.deadline();
    let (mut last, mut searched) = (None, 0);
    loop {
        if let Some(answer) = call.answer(&lua, last, &mut searched)? {
            return Ok(answer);
        }
        last = Some(call.s.fill(limit).await?);
    }
}

/// A `send` call: the socket and the bytes to send, or its result already
/// (arguments that send nothing, a socket that is not open).
enum SendCall {
    Write {
        s: Rc<SocketInner>,
        data: mlua::BorrowedBytes,
        start: usize,
        end: usize,
    },
    Done(i64),
}

impl SendCall {
    fn parse(lua: &Lua, args: &MultiValue) -> mlua::Result<SendCall> {
        if args.len() < 2 || args.len() > 4 {
            return Err(mlua::Error::runtime(
                "'send' needs between 2 and 4 arguments",
            ));
        }
        let s = socket(&args[0], "send")?;
        let data = check_bytes(lua, args.get(1), 2, "send")?.as_bytes();
        let j = match args.get(3) {
            Some(v) => Some(check_int(Some(v), 4, "send")?),
            None => None,
        };
        let i = match args.get(2) {
            Some(v) => Some(check_int(Some(v), 3, "send")?),
            None => None,
        };
        let Some((start, end)) = send_range(data.len(), i, j) else {
            return Ok(SendCall::Done(0));
        };
        if !s.is_open() {
            return Ok(SendCall::Done(-1));
        }
        must_wait_here("send")?;
        Ok(SendCall::Write {
            s,
            data,
            start,
            end,
        })
    }
}

/// `Socket:send(data[, i[, j]])` without waiting: the result when the
/// kernel took all the bytes at once (the usual case: a request fits the
/// socket's buffer), else None, with what it took noted for [`send`].
fn send_now(lua: &Lua, args: &MultiValue) -> mlua::Result<Option<i64>> {
    match SendCall::parse(lua, args)? {
        SendCall::Done(n) => Ok(Some(n)),
        SendCall::Write {
            s,
            data,
            start,
            end,
        } => Ok(match s.write_now(&data[start..end]) {
            Poll::Ready(true) => Some((end - start) as i64),
            Poll::Ready(false) => Some(-1),
            Poll::Pending => None,
        }),
    }
}

/// `Socket:send(data[, i[, j]])`, waiting for room in the socket's buffer.
async fn send(lua: Lua, args: MultiValue) -> mlua::Result<i64> {
    match SendCall::parse(&lua, &args)? {
        SendCall::Done(n) => Ok(n),
        SendCall::Write {
            s,
            data,
            start,
            end,
        } => Ok(if s.write_all(&data[start..end]).await {
            (end - start) as i64
        } else {
            -1
        }),
    }
}

/// `Socket:settimeout(value[, mode])`: seconds (fractions allowed). HAProxy
/// takes no mode; luahost accepts LuaSocket's "b" (each wait, the default,
/// HAProxy's behaviour) and "t" (the whole call).
fn settimeout(args: &MultiValue) -> mlua::Result<i64> {
    if args.len() < 2 || args.len() > 3 {
        return Err(mlua::Error::runtime("'settimeout' needs 2 arguments"));
    }
    let s = socket(&args[0], "settimeout")?;
    let ms = check_number(args.get(1), 2, "settimeout")? * 1000.0;
    if ms < 0.0 {
        return Err(mlua::Error::runtime(
            "settimeout: cannot set negatives values",
        ));
    }
    if ms > i32::MAX as f64 {
        return Err(mlua::Error::runtime(format!(
            "settimeout: cannot set values larger than {} ms",
            i32::MAX
        )));
    }
    let mode = match args.get(2) {
        None | Some(Value::Nil) => TimeoutMode::Block,
        Some(Value::String(m)) if m.as_bytes().starts_with(b"b") => TimeoutMode::Block,
        Some(Value::String(m)) if m.as_bytes().starts_with(b"t") => TimeoutMode::Total,
        Some(_) => {
            return Err(mlua::Error::runtime(
                "settimeout: the mode must be 'b' (each wait) or 't' (the whole call)",
            ))
        }
    };
    // As HAProxy: a very small timeout is one millisecond.
    let ms = (ms as u64).max(1);
    s.timeout.set(Some(Duration::from_millis(ms)));
    s.mode.set(mode);
    Ok(1)
}

/// Creates a Socket object (`core.tcp()`), owned by the running context.
fn new_socket(lua: &Lua, class: &Class) -> mlua::Result<Value> {
    let ctx = crate::lua::exec::with_current(|c| c.map(|c| c.yieldable()));
    match ctx {
        // A state's body: HAProxy returns nothing there.
        None => return Ok(Value::Nil),
        Some(false) => {
            return Err(mlua::Error::runtime(
                "core.tcp: sockets can't be used in sample fetches and converters \
                 (they cannot wait); use them in an action, a service, a task or an \
                 init function",
            ))
        }
        Some(true) => {}
    }
    let inner = Rc::new(SocketInner::new());
    let weak: std::rc::Weak<dyn ContextResource> = Rc::downgrade(&inner) as _;
    crate::lua::exec::with_current(|c| {
        if let Some(c) = c {
            c.own(weak)
        }
    });
    Ok(Value::Table(class.instantiate(lua, SocketObj { inner })?))
}

/// A method that calls `now` and, when it answers nothing (the socket is
/// not ready), `wait` with the same arguments. `now` answers the number of
/// results (at most two) followed by them, so that the method returns as
/// many values as `wait` would.
fn ready_first(
    lua: &Lua,
    now: mlua::Function,
    wait: mlua::Function,
) -> mlua::Result<mlua::Function> {
    lua.load(
        r#"
        local now, wait = ...
        return function(...)
          local n, a, b = now(...)
          if n == 1 then return a elseif n == 2 then return a, b elseif n == 0 then return end
          return wait(...)
        end
        "#,
    )
    .set_name("=socket")
    .call((now, wait))
}

/// Adds `core.tcp` and the Socket class.
pub fn install(lua: &Lua, core: &Table) -> mlua::Result<()> {
    let class = Class::new(lua, "Socket")?;
    // tostring() of a socket, as HAProxy prints it.
    class.meta.raw_set(
        "__tostring",
        lua.create_function(|_, _: Value| Ok("HAProxy class Socket"))?,
    )?;
    class.method(
        "connect",
        lua.create_async_function(|lua, args: MultiValue| connect(lua, args, "connect"))?,
    )?;
    class.method(
        "connect_ssl",
        lua.create_async_function(|lua, args: MultiValue| async move {
            // connect_ssl(address, port[, options]): HAProxy takes exactly
            // the address and the port; the options (a server name to send
            // as SNI, or a table) are luahost's, taken off before the
            // arguments go to connect.
            if args.len() != 3 && args.len() != 4 {
                return Err(mlua::Error::runtime("'connect_ssl' needs 3 arguments"));
            }
            let mut args = args.into_vec();
            let options = if args.len() == 4 { args.pop() } else { None };
            let options = TlsOptions::from_lua(options)?;
            let s = socket(&args[0], "connect_ssl")?;
            if s.phase.get() == Phase::New {
                *s.tls.borrow_mut() = Some(options);
            }
            connect(lua, MultiValue::from_vec(args), "connect_ssl").await
        })?,
    )?;
    // receive and send try first without waiting (a plain function call)
    // and only take the waiting path (an async function: a future, a
    // yield and a resume) when the socket is not ready.
    let receive_now = lua.create_function(|lua, args: MultiValue| {
        Ok(match receive_now(lua, &args)? {
            Some(answer) => {
                let mut out = answer;
                let n = out.len() as i64;
                out.push_front(Value::Integer(n));
                out
            }
            None => MultiValue::new(),
        })
    })?;
    let receive_wait = lua.create_async_function(|lua, args: MultiValue| receive(lua, args))?;
    class.method("receive", ready_first(lua, receive_now, receive_wait)?)?;
    let send_now = lua.create_function(|lua, args: MultiValue| match send_now(lua, &args)? {
        Some(n) => (1, n).into_lua_multi(lua),
        None => Ok(MultiValue::new()),
    })?;
    let send_wait = lua.create_async_function(|lua, args: MultiValue| send(lua, args))?;
    class.method("send", ready_first(lua, send_now, send_wait)?)?;
    class.method(
        "settimeout",
        lua.create_function(|_, args: MultiValue| settimeout(&args))?,
    )?;
    class.method(
        "setoption",
        // Accepted and ignored, as HAProxy does.
        lua.create_function(|_, _: MultiValue| Ok(()))?,
    )?;
    for (name, local) in [("getpeername", false), ("getsockname", true)] {
        class.method(
            name,
            lua.create_function(move |_, args: MultiValue| {
                check_args(&args, 1, name)?;
                let s = socket(&args[0], name)?;
                if !s.is_open() {
                    return Ok(None);
                }
                Ok(s.ends.get().and_then(|e| e.text(local)))
            })?,
        )?;
    }
    class.method(
        "close",
        lua.create_function(|_, args: MultiValue| {
            check_args(&args, 1, "close")?;
            socket(&args[0], "close")?.close();
            Ok(())
        })?,
    )?;
    core.set(
        "tcp",
        lua.create_function(move |lua, ()| new_socket(lua, &class))?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_ranges_as_haproxy() {
        // Observed in HAProxy 3.0: send("abc", 2, 2) sends 1 byte,
        // send("abc", 3, 1) none, send("abc", -1) the last byte,
        // send("hello world\n", 7) 6 bytes.
        assert_eq!(send_range(3, Some(2), Some(2)), Some((1, 2)));
        assert_eq!(send_range(3, Some(3), Some(1)), None);
        assert_eq!(send_range(3, Some(-1), None), Some((2, 3)));
        assert_eq!(send_range(12, Some(7), None), Some((6, 12)));
        assert_eq!(send_range(3, None, None), Some((0, 3)));
        assert_eq!(send_range(3, Some(0), Some(0)), None);
        assert_eq!(send_range(0, None, None), None);
    }

    #[test]
    fn patterns() {
        assert_eq!(pattern(None).ok(), Some(Pattern::Line));
        assert_eq!(
            pattern(Some(&Value::Integer(4))).ok(),
            Some(Pattern::Bytes(4))
        );
        assert!(pattern(Some(&Value::Integer(-1))).is_err());
        assert_eq!(
            pattern(Some(&Value::Boolean(true))).ok(),
            Some(Pattern::Line)
        );
    }

    /// Each call's future is moved into a box by mlua and dropped after
    /// the call. At 3 KB (the TLS handshake's state inline) the copy and the
    /// fresh memory were half of the call's overhead (`cargo bench --bench
    /// async_calls`: a connect that returns at once, 3.0 µs, 1.6-1.9 µs at
    /// 960 bytes). Kept small: TLS state and rare paths are boxed.
    #[test]
    fn socket_call_futures_stay_small() {
        let lua = Lua::new();
        let connect = connect(lua.clone(), MultiValue::new(), "connect");
        let receive = receive(lua.clone(), MultiValue::new());
        let send = send(lua.clone(), MultiValue::new());
        for (name, size, most) in [
            ("connect", std::mem::size_of_val(&connect), 1280),
            ("receive", std::mem::size_of_val(&receive), 768),
            ("send", std::mem::size_of_val(&send), 1024),
        ] {
            assert!(
                size <= most,
                "{name}'s future is {size} bytes (at most {most})"
            );
        }
    }
}
