//! AppletTCP: a Lua TCP service (`core.register_service(name, "tcp", fn)`),
//! attached with `tcp-request content use-service lua.NAME`.
//!
//! The applet owns the client socket for the rest of the connection. It runs
//! on the worker owning its Lua state; the socket arrives as a std socket and
//! is registered with that worker's event loop.

use crate::lua::applet_tcp_conn::{Conn, Filled};
use crate::lua::class::Class;
use crate::lua::errors::done_error;
use crate::lua::exec::{self, ExecCtx, ExecError};
use crate::lua::handles::{Kind, Native, Registration};
use crate::lua::memory::not_enough_memory;
use crate::lua::state::HostState;
use crate::lua::txn_access::TxnCell;
use bytes::BytesMut;
use mlua::{Lua, Value};
use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// The client socket of an applet: a TCP connection of a frontend, or a
/// CLI session (TCP or UNIX stats socket) running a `core.register_cli`
/// command.
pub enum AppletStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AppletStream {
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            AppletStream::Tcp(s) => s.try_read(buf),
            AppletStream::Unix(s) => s.try_read(buf),
        }
    }
}

impl AsyncRead for AppletStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            AppletStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            AppletStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AppletStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            AppletStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            AppletStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            AppletStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            AppletStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            AppletStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            AppletStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

pub struct TcpApplet {
    conn: RefCell<Option<Conn>>,
    /// The connection's transaction: variables and samples.
    pub(crate) cell: Rc<TxnCell>,
}

/// The transaction of an applet object.
fn applet_cell(v: &Value, method: &str) -> mlua::Result<Rc<TxnCell>> {
    Ok(this(v, method)?.cell.clone())
}

fn this(v: &Value, method: &str) -> mlua::Result<Rc<TcpApplet>> {
    crate::lua::handles::applet_tcp(v, method)
}

impl TcpApplet {
    /// Takes the connection out for an await (put back with `put`).
    fn take(&self) -> mlua::Result<Conn> {
        self.conn.borrow_mut().take().ok_or_else(|| {
            mlua::Error::runtime("AppletTCP: the connection is busy in another call")
        })
    }

    fn put(&self, c: Conn) {
        *self.conn.borrow_mut() = Some(c);
    }
}

/// Reads more for Lua. Past the memory cap it first collects the state's
/// garbage (as Lua does before it fails an allocation: earlier receives'
/// strings may be dead already) and tries once more.
async fn fill_for(lua: &Lua, conn: &mut Conn) -> Filled {
    match conn.fill().await {
        Filled::OverCap => {
            let _ = lua.gc_collect();
            conn.fill().await
        }
        other => other,
    }
}

/// The AppletTCP class.
pub fn class(lua: &Lua, samples: &crate::lua::fetches_class::SampleClasses) -> mlua::Result<Class> {
    let c = Class::new(lua, "AppletTCP")?;
    c.method(
        "getline",
        lua.create_async_function(|lua, s: Value| async move {
            let a = this(&s, "getline")?;
            let mut conn = a.take()?;
            // As HAProxy: a line longer than the buffer comes back in pieces.
            let limit = crate::proxy::bufsize();
            let line = loop {
                let waiting = conn.buffered();
                if let Some(pos) = waiting[..waiting.len().min(limit)]
                    .iter()
                    .position(|&b| b == b'\n')
                {
                    break Ok(conn.take(pos + 1));
                }
                if waiting.len() >= limit {
                    break Ok(conn.take(limit));
                }
                match fill_for(&lua, &mut conn).await {
                    Filled::More => {}
                    Filled::End => break Ok(conn.take(usize::MAX)),
                    Filled::OverCap => break Err(not_enough_memory()),
                }
            };
            a.put(conn);
            lua.create_string(&line?)
        })?,
    )?;
    c.method(
        "receive",
        lua.create_async_function(
            |lua, (s, size, timeout): (Value, Option<i64>, Option<i64>)| async move {
                let a = this(&s, "receive")?;
                let mut conn = a.take()?;
                let want = size.filter(|n| *n >= 0).map(|n| n as usize);
                // Everything until the end, or `n` bytes: either way what
                // is buffered counts against the Lua memory cap, since it
                // all becomes one Lua string.
                let read = async {
                    loop {
                        if want.is_some_and(|n| conn.buffered().len() >= n) {
                            break Filled::More;
                        }
                        match fill_for(&lua, &mut conn).await {
                            Filled::More => {}
                            other => break other,
                        }
                    }
                };
                let filled = match timeout.filter(|t| *t >= 0) {
                    Some(ms) => tokio::time::timeout(Duration::from_millis(ms as u64), read)
                        .await
                        .ok(),
                    None => Some(read.await),
                };
                let result = match filled {
                    // Nothing is returned short: the script gets the error
                    // (as from HAProxy 3.0) and the bytes stay buffered for
                    // a `receive(n)` that fits.
                    Some(Filled::OverCap) => Err(not_enough_memory()),
                    None if conn.buffered().is_empty() && !conn.eof => Ok(Value::Nil),
                    _ => {
                        let bytes = conn.take(want.unwrap_or(usize::MAX));
                        lua.create_string(bytes).map(Value::String)
                    }
                };
                a.put(conn);
                result
            },
        )?,
    )?;
    c.method(
        "try_receive",
        lua.create_function(|lua, s: Value| {
            let a = this(&s, "try_receive")?;
            let mut conn = a.take()?;
            let filled = match conn.fill_now() {
                Filled::OverCap => {
                    let _ = lua.gc_collect();
                    conn.fill_now()
                }
                other => other,
            };
            let result = match filled {
                Filled::OverCap => Err(not_enough_memory()),
                _ if conn.buffered().is_empty() && !conn.eof => Ok(Value::Nil),
                _ => lua.create_string(conn.take(usize::MAX)).map(Value::String),
            };
            a.put(conn);
            result
        })?,
    )?;
    c.method(
        "send",
        lua.create_async_function(|_, (s, data): (Value, mlua::LuaString)| async move {
            let a = this(&s, "send")?;
            let mut conn = a.take()?;
            let r = conn.stream.write_all(data.as_bytes().as_ref()).await;
            a.put(conn);
            // A client that went away ends the service quietly.
            r.map_err(|_| done_error())
        })?,
    )?;
    // f/sf/c/sc are built when first read (see Class::lazy_fields).
    crate::lua::txn_methods::add_methods(lua, &c, applet_cell)?;
    let lazy = crate::lua::txn_methods::sample_fields(lua, Kind::AppletTcp, samples)?;
    c.lazy_fields(lua, lazy)?;
    Ok(c)
}

/// Runs TCP service `name` of `state` on `stream` until it ends, then closes
/// the connection.
/// `initial` is what the content rules already read from the client; `txn`
/// the connection's transaction.
pub async fn run(
    state: Rc<HostState>,
    name: Rc<str>,
    stream: std::net::TcpStream,
    initial: bytes::Bytes,
    txn: Box<crate::txn::Txn>,
) {
    let func = state.service(&name);
    let Some(func) = func else {
        crate::log::alert(&format!("Lua applet tcp '{name}': no such service."));
        return;
    };
    let stream = match stream
        .set_nonblocking(true)
        .and_then(|_| TcpStream::from_std(stream))
    {
        Ok(s) => s,
        Err(e) => {
            crate::log::alert(&format!(
                "Lua applet tcp '{name}': cannot take the connection: {e}."
            ));
            return;
        }
    };
    let what = format!("Lua applet tcp '{name}'");
    let conn = Conn::new(AppletStream::Tcp(stream), BytesMut::from(&initial[..]));
    // Flush and close: the applet is the end of this connection.
    if let Some(mut conn) = run_applet(&state, &what, func, conn, txn, Vec::new()).await {
        let _ = conn.stream.shutdown().await;
    }
}

/// Runs `func(applet, args...)` on `conn` until it returns; gives the
/// connection back (with what was read but not consumed) unless the
/// applet could not be built. `what` names the applet in messages.
async fn run_applet(
    state: &Rc<HostState>,
    what: &str,
    func: mlua::Function,
    conn: Conn,
    txn: Box<crate::txn::Txn>,
    args: Vec<String>,
) -> Option<Conn> {
    let applet = Rc::new(TcpApplet {
        conn: RefCell::new(Some(conn)),
        cell: TxnCell::owned(txn),
    });
    // The applet is reachable from its Lua objects until the service ends.
    let registration = match Registration::new(Native::AppletTcp(applet.clone())) {
        Ok(r) => r,
        Err(e) => {
            crate::log::alert(&format!("{what}: {}.", crate::lua::errors::message(&e)));
            return None;
        }
    };
    let obj = match state.info.classes.applet_tcp.build(
        &state.lua,
        registration.handle().with_kind(Kind::AppletTcp),
        &[],
    ) {
        Ok(o) => o,
        Err(e) => {
            crate::log::alert(&format!("{what}: {}.", crate::lua::errors::message(&e)));
            return None;
        }
    };
    let mut call_args = vec![Value::Table(obj)];
    for a in args {
        match state.lua.create_string(&a) {
            Ok(s) => call_args.push(Value::String(s)),
            Err(e) => {
                crate::log::alert(&format!("{what}: {}.", crate::lua::errors::message(&e)));
                return None;
            }
        }
    }
    let ctx = ExecCtx::new(state.info.settings.service_budget(), true);
    match exec::run_coroutine::<()>(&state.lua, ctx, func, mlua::MultiValue::from_vec(call_args))
        .await
    {
        Ok(()) | Err(ExecError::Done) => {}
        Err(e) => crate::log::log(crate::log::ERR, &format!("{what}: {}.", e.message())),
    }
    // The connection ends with the service: drop its private data.
    if let Ok(id) = applet.cell.with(|t| t.id) {
        state.info.privs.borrow_mut().remove(&id);
    }
    let conn = applet.conn.borrow_mut().take();
    conn
}

/// Runs `core.register_cli` command `func` for a CLI session: the function
/// gets an AppletTCP on the session's socket (`getline` reads what the
/// client sends after the command, `send` writes to it) and the command's
/// words as arguments. Returns the socket, the bytes read but not
/// consumed and whether the client finished sending, for the session to go
/// on; `None` if the applet could not be built.
pub async fn run_cli(
    state: Rc<HostState>,
    what: String,
    func: mlua::Function,
    stream: AppletStream,
    pending: BytesMut,
    txn: Box<crate::txn::Txn>,
    args: Vec<String>,
) -> Option<(AppletStream, BytesMut, bool)> {
    let conn = Conn::new(stream, pending);
    let conn = run_applet(&state, &what, func, conn, txn, args).await?;
    Some(conn.into_parts())
}
