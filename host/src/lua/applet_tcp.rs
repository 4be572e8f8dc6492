//! AppletTCP: a Lua TCP service (`core.register_service(name, "tcp", fn)`),
//! attached with `tcp-request content use-service lua.NAME`.
//!
//! The applet owns the client socket for the rest of the connection. It runs
//! on the worker owning its Lua state; the socket arrives as a std socket and
//! is registered with that worker's event loop.

use crate::lua::class::Class;
use crate::lua::errors::done_error;
use crate::lua::exec::{self, ExecCtx, ExecError};
use crate::lua::handles::{Kind, Native, Registration};
use crate::lua::state::HostState;
use crate::lua::txn_access::TxnCell;
use bytes::BytesMut;
use mlua::{Lua, Value};
use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// The client socket of an applet: a TCP connection of a frontend, or a
/// CLI session (TCP or UNIX stats socket) running a `core.register_cli`
/// command.
pub enum AppletStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AppletStream {
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
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

/// Read side state: the socket and what was read but not yet returned.
struct Conn {
    stream: AppletStream,
    buf: BytesMut,
    eof: bool,
}

impl Conn {
    /// Reads more into `buf`; false at end of stream (or on error).
    async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        self.buf.reserve(16 * 1024);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(_) => true,
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
                if let Some(pos) = conn.buf[..conn.buf.len().min(limit)]
                    .iter()
                    .position(|&b| b == b'\n')
                {
                    break conn.buf.split_to(pos + 1);
                }
                if conn.buf.len() >= limit {
                    break conn.buf.split_to(limit);
                }
                if !conn.fill().await {
                    break conn.buf.split();
                }
            };
            a.put(conn);
            lua.create_string(&line)
        })?,
    )?;
    c.method(
        "receive",
        lua.create_async_function(
            |lua, (s, size, timeout): (Value, Option<i64>, Option<i64>)| async move {
                let a = this(&s, "receive")?;
                let mut conn = a.take()?;
                let want = size.filter(|n| *n >= 0).map(|n| n as usize);
                let read = async {
                    match want {
                        Some(n) => while conn.buf.len() < n && conn.fill().await {},
                        // Everything until the end: bounded by the Lua memory
                        // cap, since it all becomes one Lua string.
                        None => {
                            while !crate::lua::memory::would_exceed(conn.buf.len())
                                && conn.fill().await
                            {}
                        }
                    }
                };
                let timed_out = match timeout.filter(|t| *t >= 0) {
                    Some(ms) => tokio::time::timeout(Duration::from_millis(ms as u64), read)
                        .await
                        .is_err(),
                    None => {
                        read.await;
                        false
                    }
                };
                let result = if timed_out && conn.buf.is_empty() && !conn.eof {
                    Value::Nil
                } else {
                    let take = want.unwrap_or(usize::MAX).min(conn.buf.len());
                    Value::String(lua.create_string(conn.buf.split_to(take))?)
                };
                a.put(conn);
                Ok(result)
            },
        )?,
    )?;
    c.method(
        "try_receive",
        lua.create_function(|lua, s: Value| {
            let a = this(&s, "try_receive")?;
            let mut conn = a.take()?;
            if !conn.eof {
                let mut tmp = [0u8; 16 * 1024];
                match conn.stream.try_read(&mut tmp) {
                    Ok(0) => conn.eof = true,
                    Ok(n) => conn.buf.extend_from_slice(&tmp[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => conn.eof = true,
                }
            }
            let result = if conn.buf.is_empty() && !conn.eof {
                Value::Nil
            } else {
                Value::String(lua.create_string(conn.buf.split())?)
            };
            a.put(conn);
            Ok(result)
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
    let conn = Conn {
        stream: AppletStream::Tcp(stream),
        buf: BytesMut::from(&initial[..]),
        eof: false,
    };
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
    let conn = Conn {
        stream,
        buf: pending,
        eof: false,
    };
    let conn = run_applet(&state, &what, func, conn, txn, args).await?;
    Some((conn.stream, conn.buf, conn.eof))
}
