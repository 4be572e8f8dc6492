//! AppletHTTP: a Lua HTTP service (`core.register_service(name, "http", fn)`).
//!
//! The service runs on the worker that owns its Lua state, which may not be
//! the worker that owns the client connection (the shared `lua-load` state
//! lives on worker 0). It therefore talks to the connection only through
//! `Send` values: the request head and body come in an [`HttpAppletRequest`],
//! the response head leaves through a oneshot and the body through a bounded
//! channel (so a fast producer waits for a slow client instead of buffering).

use crate::lua::body_reader::BodyReader;
use crate::lua::class::Class;
use crate::lua::errors::done_error;
use crate::lua::exec::{self, ExecCtx, ExecError};
use crate::lua::handles::{self, Handle, Kind, Native, Registration};
use crate::lua::raw;
use crate::lua::state::HostState;
use crate::lua::txn_access::TxnCell;
use crate::proxy::h1_server::RequestBody;
use crate::raw_function;
use crate::txn::ServicePrivs;
use bytes::Bytes;
use mlua::{ffi, Lua, Table, Value};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use tokio::sync::{mpsc, oneshot};

/// The request as the applet sees it (built by the HTTP front end). The
/// request head stays in the transaction (`txn.req`), from which the applet
/// object's fields are read: nothing is copied for fields a script never
/// reads.
pub struct HttpAppletRequest {
    pub content_length: Option<u64>,
    pub body: Option<RequestBody>,
    /// The transaction (for the head, f/sf/c/sc and variables).
    pub txn: Option<Box<crate::txn::Txn>>,
    /// Who drops the service state's private data for the transaction.
    pub privs: ServicePrivs,
}

/// The response head an applet produces.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: Option<String>,
    pub headers: hyper::HeaderMap,
}

/// How a service's response starts, sent to the front end once: its head
/// (`None`: the service failed or returned without starting a response,
/// which HAProxy answers with 500), and a copy of the transaction as it was
/// then, on which the response rules run while the service keeps the
/// original until it ends.
#[derive(Debug)]
pub struct ServiceStart {
    pub head: Option<ResponseHead>,
    pub txn: Option<Box<crate::txn::Txn>>,
}

/// A body frame, or an error that aborts the response.
pub type BodyChunk = Result<Bytes, std::io::Error>;

/// Where the applet's response goes.
pub struct HttpReply {
    pub head: oneshot::Sender<ServiceStart>,
    pub body: mpsc::Sender<BodyChunk>,
}

/// The native object at [0] of an AppletHTTP.
pub struct HttpApplet {
    status: Cell<u16>,
    reason: RefCell<Option<String>>,
    headers: RefCell<hyper::HeaderMap>,
    head_tx: RefCell<Option<oneshot::Sender<ServiceStart>>>,
    /// Taken when the service ends: the Lua object may outlive the request
    /// (until the next GC, or longer if a script keeps it), but the response
    /// must end when the service does.
    body_tx: RefCell<Option<mpsc::Sender<BodyChunk>>>,
    reader: RefCell<Option<BodyReader<RequestBody>>>,
    /// The transaction: variables, private data and samples.
    pub(crate) cell: Rc<TxnCell>,
    /// What the front end expects of the body, to tell a client that went
    /// away from a response that is complete (see `awaits_body`).
    head_request: bool,
    declared_len: Cell<Option<u64>>,
    body_sent: Cell<u64>,
}

impl HttpApplet {
    /// Sends the response head (once).
    fn start_response(&self) {
        if let Some(tx) = self.head_tx.borrow_mut().take() {
            let declared = self
                .headers
                .borrow()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
            self.declared_len.set(declared);
            let _ = tx.send(ServiceStart {
                head: Some(ResponseHead {
                    status: self.status.get(),
                    reason: self.reason.borrow_mut().take(),
                    headers: std::mem::take(&mut *self.headers.borrow_mut()),
                }),
                txn: self.cell.with(|t| t.copy_for_response()).ok(),
            });
        }
    }

    /// Tells the front end, if the head is not sent yet, that there will be
    /// none: it answers 500 (and still runs its response rules on it).
    fn no_response(&self) -> bool {
        match self.head_tx.borrow_mut().take() {
            Some(tx) => {
                let _ = tx.send(ServiceStart {
                    head: None,
                    txn: self.cell.with(|t| t.copy_for_response()).ok(),
                });
                true
            }
            None => false,
        }
    }

    async fn send(&self, data: Bytes) -> mlua::Result<()> {
        self.start_response();
        if data.is_empty() {
            return Ok(());
        }
        let Some(tx) = self.body_tx.borrow().clone() else {
            return Err(mlua::Error::runtime(
                "AppletHTTP: the response is already complete",
            ));
        };
        let len = data.len() as u64;
        // The client is gone: stop the service quietly, as HAProxy does.
        tx.send(Ok(data)).await.map_err(|_| done_error())?;
        self.body_sent.set(self.body_sent.get() + len);
        Ok(())
    }

    /// Whether the front end still waits for this response: a receiver it
    /// dropped then means the client went away. It does not once the head
    /// of a response without body (HEAD, 1xx, 204, 304) or all the bytes of
    /// a declared content-length are sent.
    fn awaits_body(&self) -> bool {
        if self.head_tx.borrow().is_some() {
            return true;
        }
        let status = self.status.get();
        if self.head_request || status < 200 || status == 204 || status == 304 {
            return false;
        }
        self.declared_len
            .get()
            .is_none_or(|len| self.body_sent.get() < len)
    }

    /// Sends `data` if the body channel has room: Ok(false) when the caller
    /// must wait for the client, or find it gone ([`HttpApplet::send`]).
    fn try_send(&self, data: &[u8]) -> Result<bool, &'static str> {
        self.start_response();
        if data.is_empty() {
            return Ok(true);
        }
        let body = self.body_tx.borrow();
        let Some(tx) = body.as_ref() else {
            return Err("AppletHTTP: the response is already complete");
        };
        match tx.try_send(Ok(Bytes::copy_from_slice(data))) {
            Ok(()) => {
                self.body_sent.set(self.body_sent.get() + data.len() as u64);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Ends the response: closes the body. A service that returns (or calls
    /// core.done()) without having started a response gets HAProxy's 500.
    fn finish(&self) {
        self.no_response();
        self.body_tx.borrow_mut().take();
    }

    /// Ends a failed service: before the head, the front end answers 500;
    /// after it, the body is aborted so the client sees a truncated message
    /// rather than a complete-looking one.
    fn fail(&self) {
        if !self.no_response() {
            if let Some(tx) = self.body_tx.borrow_mut().take() {
                let _ = tx.try_send(Err(std::io::Error::other("Lua applet failed")));
            }
        }
        self.body_tx.borrow_mut().take();
    }

    fn take_reader(&self) -> Option<BodyReader<RequestBody>> {
        self.reader.borrow_mut().take()
    }

    fn put_reader(&self, r: BodyReader<RequestBody>) {
        *self.reader.borrow_mut() = Some(r);
    }
}

/// The transaction of an applet object.
fn applet_cell(v: &Value, method: &str) -> mlua::Result<Rc<TxnCell>> {
    Ok(this(v, method)?.cell.clone())
}

/// The applet of an object. Methods hold the Rc, never a borrow, across
/// an await.
/// What the body reader runs when a frame cannot be charged to
/// `tune.lua.maxmem`: a full collection of this state, so that the chunks a
/// script read and dropped are freed rather than counted (Lua's allocator
/// does the same before it fails an allocation).
fn collect(lua: &Lua) -> impl Fn() + '_ {
    move || {
        let _ = lua.gc_collect();
    }
}

fn this(v: &Value, method: &str) -> mlua::Result<Rc<HttpApplet>> {
    crate::lua::handles::applet_http(v, method)
}

/// The AppletHTTP class.
pub fn class(lua: &Lua, samples: &crate::lua::fetches_class::SampleClasses) -> mlua::Result<Class> {
    let c = Class::new(lua, "AppletHTTP")?;
    c.method("set_status", raw::function(lua, set_status)?)?;
    c.method("add_header", raw::function(lua, add_header)?)?;
    c.method("start_response", raw::function(lua, start_response)?)?;
    // send: a synchronous call while the body channel has room (the usual
    // case: an mlua async call costs several times a plain one), and the
    // waiting version only when the client is slower than the service.
    let try_send = raw::function(lua, try_send)?;
    let send_wait =
        lua.create_async_function(|_, (s, data): (Value, mlua::LuaString)| async move {
            let a = this(&s, "send")?;
            a.send(Bytes::copy_from_slice(&data.as_bytes())).await
        })?;
    let send: mlua::Function = lua
        .load(
            r#"
local try_send, send_wait = ...
return function(applet, data)
  if not try_send(applet, data) then
    return send_wait(applet, data)
  end
end
"#,
        )
        .set_name("=luahost-send")
        .call((try_send, send_wait))?;
    c.method("send", send)?;
    c.method(
        "getline",
        lua.create_async_function(|lua, s: Value| async move {
            let a = this(&s, "getline")?;
            let Some(mut r) = a.take_reader() else {
                return lua.create_string("");
            };
            let line = r.getline(crate::proxy::bufsize(), &collect(&lua)).await;
            a.put_reader(r);
            lua.create_string(line?.into_data())
        })?,
    )?;
    c.method(
        "receive",
        lua.create_async_function(|lua, (s, n): (Value, Option<i64>)| async move {
            let a = this(&s, "receive")?;
            let Some(mut r) = a.take_reader() else {
                return lua.create_string("");
            };
            let collect = collect(&lua);
            let out = match n {
                Some(n) if n >= 0 => {
                    r.receive(usize::try_from(n).unwrap_or(usize::MAX), &collect)
                        .await
                }
                // The whole body (HAProxy: any negative size too).
                _ => r.receive_all(&collect).await,
            };
            a.put_reader(r);
            lua.create_string(out?.into_data())
        })?,
    )?;
    // f/sf/c/sc and headers are built when first read (see Class::lazy_fields).
    crate::lua::txn_methods::add_methods(lua, &c, applet_cell)?;
    let mut lazy = crate::lua::txn_methods::sample_fields(lua, Kind::AppletHttp, samples)?;
    lazy.push((
        "headers",
        lua.create_function(|lua, s: Value| {
            let a = this(&s, "headers")?;
            a.cell.with(|t| match &t.req {
                Some(parts) => headers_table(lua, &parts.headers),
                None => lua.create_table(),
            })?
        })?,
    ));
    c.lazy_fields(lua, lazy)?;
    Ok(c)
}

// The methods every response calls, as C functions (lua/raw.rs): each
// reads its arguments first, then works on the applet, then pushes only
// non-allocating results.

raw_function!(set_status, set_status_body);
raw_function!(add_header, add_header_body);
raw_function!(start_response, start_response_body);
raw_function!(try_send, try_send_body);

/// `applet:set_status(code [, reason])`
fn set_status_body(state: *mut ffi::lua_State) -> raw::Outcome {
    // SAFETY: reads of the arguments, used while they are on the stack.
    unsafe {
        let status = raw::int_arg(state, 2, "set_status")?;
        let reason = match ffi::lua_type(state, 3) {
            ffi::LUA_TNONE | ffi::LUA_TNIL => None,
            _ => Some(raw::str_arg(state, 3, "set_status")?),
        };
        let a = handles::applet_http_arg(state, "set_status")?;
        if !(100..=999).contains(&status) {
            return Err(format!("set_status: invalid status code {status}"));
        }
        a.status.set(status as u16);
        *a.reason.borrow_mut() = reason.map(|r| String::from_utf8_lossy(&r).into_owned());
        Ok(raw::Ret::Nothing)
    }
}

/// `applet:add_header(name, value)`
fn add_header_body(state: *mut ffi::lua_State) -> raw::Outcome {
    use hyper::header::{HeaderName, HeaderValue};
    // SAFETY: reads of the arguments, used while they are on the stack.
    unsafe {
        let name = raw::str_arg(state, 2, "add_header")?;
        let value = raw::str_arg(state, 3, "add_header")?;
        let a = handles::applet_http_arg(state, "add_header")?;
        // Validated here, once: the response head carries hyper's types.
        match (
            HeaderName::from_bytes(&name),
            HeaderValue::from_bytes(&value),
        ) {
            (Ok(n), Ok(v)) => {
                a.headers.borrow_mut().append(n, v);
            }
            _ => crate::log::warning(&format!(
                "Lua applet: invalid response header '{}' dropped",
                String::from_utf8_lossy(&name)
            )),
        }
        Ok(raw::Ret::Nothing)
    }
}

/// `applet:start_response()`
fn start_response_body(state: *mut ffi::lua_State) -> raw::Outcome {
    // SAFETY: reads argument 1 only.
    unsafe { handles::applet_http_arg(state, "start_response")? }.start_response();
    Ok(raw::Ret::Nothing)
}

/// The synchronous half of `applet:send(data)`: true when sent.
fn try_send_body(state: *mut ffi::lua_State) -> raw::Outcome {
    // SAFETY: as set_status_body.
    unsafe {
        let data = raw::str_arg(state, 2, "send")?;
        let sent = handles::applet_http_arg(state, "send")?.try_send(&data)?;
        Ok(raw::Ret::Bool(sent))
    }
}

/// `headers[name][0..n]`: HAProxy's 0-indexed values per lower-case name,
/// one entry per header line.
fn headers_table(lua: &Lua, list: &hyper::HeaderMap) -> mlua::Result<Table> {
    let headers = lua.create_table()?;
    for (name, value) in list {
        let values = match headers.raw_get::<Option<Table>>(name.as_str())? {
            Some(t) => t,
            None => {
                let t = lua.create_table()?;
                headers.raw_set(name.as_str(), &t)?;
                t
            }
        };
        let next = values.raw_len() as i64
            + if values.raw_get::<Value>(0)?.is_nil() {
                0
            } else {
                1
            };
        values.raw_set(next, lua.create_string(value.as_bytes())?)?;
    }
    Ok(headers)
}

/// Builds the Lua object for a request, for the applet registered as
/// `handle`.
fn instantiate(
    lua: &Lua,
    info: &crate::lua::state::StateInfo,
    applet: &HttpApplet,
    content_length: Option<u64>,
    handle: Handle,
) -> mlua::Result<Table> {
    use crate::lua::class::Field;
    applet.cell.with(|t| {
        let (method, path, qs, version) = match &t.req {
            Some(p) => (
                p.method.as_str(),
                p.uri.path(),
                p.uri.query().unwrap_or(""),
                match p.version {
                    hyper::Version::HTTP_10 => "HTTP/1.0",
                    hyper::Version::HTTP_2 => "HTTP/2.0",
                    _ => "HTTP/1.1",
                },
            ),
            None => ("", "", "", "HTTP/1.1"),
        };
        info.classes.applet_http.build(
            lua,
            handle.with_kind(Kind::AppletHttp),
            &[
                (c"method", Field::Str(method.as_bytes())),
                (c"path", Field::Str(path.as_bytes())),
                (c"qs", Field::Str(qs.as_bytes())),
                (c"version", Field::Str(version.as_bytes())),
                (
                    c"length",
                    Field::Int(content_length.unwrap_or(0).min(i64::MAX as u64) as i64),
                ),
            ],
        )
    })?
}

/// Runs service `name` of `state` for one request until it ends.
pub async fn run(state: Rc<HostState>, name: Rc<str>, req: HttpAppletRequest, reply: HttpReply) {
    let func = state.service(&name);
    let Some(func) = func else {
        // The head sender is dropped: the front end answers 500.
        crate::log::alert(&format!("Lua applet http '{name}': no such service."));
        return;
    };
    let mut req = req;
    let privs = req.privs.clone();
    let Some(txn) = req.txn.take() else {
        crate::log::alert(&format!(
            "Lua applet http '{name}': internal error: no transaction."
        ));
        return;
    };
    let body_watch = reply.body.clone();
    let head_request = txn
        .req
        .as_ref()
        .is_some_and(|p| p.method == hyper::Method::HEAD);
    let applet = Rc::new(HttpApplet {
        status: Cell::new(200),
        reason: RefCell::new(None),
        headers: RefCell::new(hyper::HeaderMap::new()),
        head_tx: RefCell::new(Some(reply.head)),
        body_tx: RefCell::new(Some(reply.body)),
        reader: RefCell::new(Some(BodyReader::new(req.body.take()))),
        cell: TxnCell::applet(txn),
        head_request,
        declared_len: Cell::new(None),
        body_sent: Cell::new(0),
    });
    // The applet is reachable from its Lua objects until the service ends.
    let registration = match Registration::new(Native::AppletHttp(applet.clone())) {
        Ok(r) => r,
        Err(e) => {
            crate::log::alert(&format!(
                "Lua applet http '{name}': {}.",
                crate::lua::errors::message(&e)
            ));
            return;
        }
    };
    let obj = match instantiate(
        &state.lua,
        &state.info,
        &applet,
        req.content_length,
        registration.handle(),
    ) {
        Ok(o) => o,
        Err(e) => {
            crate::log::alert(&format!(
                "Lua applet http '{name}': {}.",
                crate::lua::errors::message(&e)
            ));
            return;
        }
    };
    let ctx = ExecCtx::new(state.info.settings.service_budget(), true);
    // When the client goes away, the front end drops the response's
    // receiving side: stop the service then (as HAProxy releases the applet
    // of an aborted stream), which also cancels what it waits on.
    let client = body_watch;
    let run = exec::run_coroutine::<()>(&state.lua, ctx, func, obj);
    tokio::pin!(run);
    let result = tokio::select! {
        r = &mut run => r,
        _ = client.closed() => {
            if applet.awaits_body() {
                release_privs(&state, &applet.cell, &privs);
                return;
            }
            // The response is complete: the service runs on to its end.
            run.await
        }
    };
    drop(client);
    release_privs(&state, &applet.cell, &privs);
    match result {
        Ok(()) | Err(ExecError::Done) => applet.finish(),
        Err(e) => {
            crate::log::log(
                crate::log::ERR,
                &format!("Lua applet http '{name}': {}.", e.message()),
            );
            applet.fail();
        }
    }
}

/// The service is over: drops the private data its state holds for the
/// transaction if the front end is done with it too (else the front end
/// drops it when it is).
fn release_privs(state: &HostState, cell: &TxnCell, privs: &ServicePrivs) {
    let Ok((id, states)) = cell.with(|t| {
        (
            t.id,
            t.priv_states.load(std::sync::atomic::Ordering::Relaxed),
        )
    }) else {
        return;
    };
    if privs.service_done(states & privs.state_bit != 0) {
        state.info.privs.borrow_mut().remove(&id);
    }
}
