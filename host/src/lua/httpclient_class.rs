//! The Lua `HTTPClient` class: `core.httpclient()` and its `get`, `head`,
//! `put`, `post`, `delete` methods, taking `{url=, headers=, body=, dst=,
//! timeout=}` and returning `{status, reason, headers, body}` as HAProxy
//! 3.0 does (crate::httpclient does the work).
//!
//! Argument errors are HAProxy's messages, raised before anything is sent.
//! A request waits without blocking the worker: the method is an mlua async
//! function, so the calling coroutine is parked until the response is in.
//! Where nothing can wait (a sample fetch or converter) the method raises
//! an error instead. Unlike HAProxy 3.0.11+, one object may send several
//! requests one after the other (older HAProxy versions allowed that too).

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use mlua::{Lua, MultiValue, Table, Value};

use crate::httpclient::{self, url, Method, Request, Response};
use crate::lua::class::{native, Class};
use crate::lua::native_async::Cancel;
use crate::lua::state::{Phase, StateInfo};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// The native side of an HTTPClient object (it holds nothing: connections
/// belong to the worker's pool, requests to the calls that send them).
struct HttpClientObj;

const METHODS: [(&str, Method); 5] = [
    ("get", Method::Get),
    ("head", Method::Head),
    ("put", Method::Put),
    ("post", Method::Post),
    ("delete", Method::Delete),
];

/// Adds `core.httpclient` and the class.
pub fn install(lua: &Lua, core: &Table, info: &Rc<StateInfo>) -> mlua::Result<()> {
    let class = Class::new(lua, "HTTPClient")?;
    for (name, method) in METHODS {
        class.method(
            name,
            lua.create_async_function(move |lua, args: MultiValue| {
                let checked = check_call(&args).and_then(|()| parse_request(method, &args));
                async move {
                    let request = checked?;
                    let response = send_cancellable(request).await?;
                    response_table(&lua, response)
                }
            })?,
        )?;
    }
    let i = info.clone();
    core.set(
        "httpclient",
        lua.create_function(move |lua, ()| {
            // HAProxy has no HTTP client outside of a running stream or
            // task: in a file's body and in init functions the call
            // returns nothing.
            if i.phase.get() != Phase::Runtime {
                return Ok(MultiValue::new());
            }
            Ok(MultiValue::from_iter([Value::Table(
                class.instantiate(lua, HttpClientObj)?,
            )]))
        })?,
    )
}

/// Refuses a call that could not wait for its response, and checks `self`
/// and the one table argument as HAProxy does.
fn check_call(args: &MultiValue) -> mlua::Result<()> {
    let yieldable = crate::lua::exec::with_current(|ctx| ctx.map(|c| c.view().yieldable));
    match yieldable {
        Some(true) => {}
        Some(false) => {
            return Err(mlua::Error::runtime(
                "httpclient: not usable in a sample fetch or converter, which cannot wait for a response; \
                 use it in an action, a service or a task",
            ))
        }
        None => {
            return Err(mlua::Error::runtime(
                "The 'get' function is only allowed in 'frontend', 'backend' or 'task'",
            ))
        }
    }
    if args.len() != 2 || !matches!(args.get(1), Some(Value::Table(_))) {
        return Err(mlua::Error::runtime("'get' needs a table as argument"));
    }
    let this = args.front().cloned().unwrap_or(Value::Nil);
    native::<HttpClientObj>(&this, "HTTPClient", "get").map(|_| ())
}

fn parse_request(method: Method, args: &MultiValue) -> mlua::Result<Request> {
    let Some(Value::Table(t)) = args.get(1) else {
        return Err(mlua::Error::runtime("'get' needs a table as argument"));
    };
    let mut url_text: Option<String> = None;
    let mut headers = Vec::new();
    let mut body = Bytes::new();
    let mut dst = None;
    let mut timeout = None;
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair?;
        let key = lua_tostring(&k).unwrap_or_default();
        match key.as_slice() {
            b"dst" => {
                let text = lua_tostring(&v).unwrap_or_default();
                dst = Some(
                    crate::stream_addr::parse(&text)
                        .ok_or_else(|| mlua::Error::runtime("Can't use the 'dst' argument"))?,
                );
            }
            b"url" => match &v {
                Value::String(s) => url_text = Some(s.to_string_lossy()),
                _ => {
                    return Err(mlua::Error::runtime(
                        "invalid parameter in 'url', must be a string",
                    ))
                }
            },
            b"timeout" => {
                let ms = match v {
                    Value::Integer(i) => i,
                    Value::Number(n) => n as i64,
                    _ => {
                        return Err(mlua::Error::runtime(
                            "invalid parameter in 'timeout', must be a number",
                        ))
                    }
                };
                // HAProxy: 0 (or less) leaves the server side without timeout.
                timeout = (ms > 0).then(|| Duration::from_millis(ms as u64));
            }
            b"headers" => match &v {
                Value::Table(h) => headers = parse_headers(h)?,
                _ => {
                    return Err(mlua::Error::runtime(
                        "invalid parameter in 'headers', must be a table",
                    ))
                }
            },
            b"body" => match &v {
                Value::String(s) => body = Bytes::copy_from_slice(&s.as_bytes()),
                _ => {
                    return Err(mlua::Error::runtime(
                        "invalid parameter in 'body', must be a string",
                    ))
                }
            },
            other => {
                return Err(mlua::Error::runtime(format!(
                    "'{}' invalid parameter name",
                    String::from_utf8_lossy(other)
                )))
            }
        }
    }
    let Some(url_text) = url_text else {
        return Err(mlua::Error::runtime("'get' need a 'url' argument"));
    };
    let url = url::parse(&url_text).map_err(|e| match e {
        url::UrlError::NoScheme => mlua::Error::runtime("couldn't start the httpclient"),
        url::UrlError::NoAuthority => mlua::Error::runtime("Can't generate the HTTP request"),
    })?;
    Ok(Request {
        method,
        url,
        headers,
        body,
        dst,
        timeout,
    })
}

/// `{name = {value, ...}}`: entries whose key is not a string or whose value
/// is not a table are skipped, and so are values that are not strings, as
/// HAProxy skips them. A name or value that would break the request head
/// is an error.
fn parse_headers(t: &Table) -> mlua::Result<Vec<(HeaderName, HeaderValue)>> {
    let mut out = Vec::new();
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair?;
        let (Some(name), Value::Table(values)) = (lua_tostring(&k), v) else {
            continue;
        };
        let name = HeaderName::from_bytes(&name).map_err(|_| {
            mlua::Error::runtime(format!(
                "invalid header name '{}'",
                String::from_utf8_lossy(&name)
            ))
        })?;
        for pair in values.pairs::<Value, Value>() {
            let (_, v) = pair?;
            let Some(value) = lua_tostring(&v) else {
                continue;
            };
            let value = HeaderValue::from_bytes(&value)
                .map_err(|_| mlua::Error::runtime(format!("invalid value for header '{name}'")))?;
            out.push((name.clone(), value));
        }
    }
    Ok(out)
}

/// `lua_tostring`: strings and numbers have a string form.
fn lua_tostring(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Integer(i) => Some(i.to_string().into_bytes()),
        Value::Number(n) => Some(format!("{n}").into_bytes()),
        _ => None,
    }
}

/// `{status=, reason=, headers={name={[0]=v, [1]=v2}}, body=}`: header
/// values are indexed from 0, as HAProxy's `get_headers` tables.
fn response_table(lua: &Lua, r: Response) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 4)?;
    t.raw_set("body", lua.create_string(&r.body)?)?;
    drop(r.body);
    t.raw_set("status", r.status as i64)?;
    t.raw_set("reason", lua.create_string(&r.reason)?)?;
    let headers = lua.create_table()?;
    for (name, value) in &r.headers {
        let list = match headers.raw_get::<Option<Table>>(name.as_str())? {
            Some(list) => list,
            None => {
                let list = lua.create_table()?;
                headers.raw_set(name.as_str(), &list)?;
                list
            }
        };
        // The first value at [0], the next ones after the table's border
        // (1, 2, ...), as HAProxy's rawlen-based indexing gives.
        let index = if list.raw_len() == 0 && !list.contains_key(0)? {
            0
        } else {
            list.raw_len() + 1
        };
        list.raw_set(index, lua.create_string(value.as_bytes())?)?;
    }
    t.raw_set("headers", headers)?;
    Ok(t)
}

/// A request in flight, owned here so that the end of the Lua context's run
/// drops it (closing its connection) at once, rather than when the
/// suspended coroutine is collected.
struct InFlight {
    request: RefCell<Option<Pin<Box<dyn Future<Output = Response>>>>>,
    /// The task to wake to notice a cancel.
    waker: RefCell<Option<Waker>>,
}

impl Cancel for InFlight {
    fn cancel(&self) {
        // Not while it is being polled: cancel_all runs when the run ends,
        // outside of any poll of this request.
        if let Ok(mut r) = self.request.try_borrow_mut() {
            r.take();
        }
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Sends `request`, registered with the running context for cancellation.
async fn send_cancellable(request: Request) -> mlua::Result<Response> {
    let in_flight = Rc::new(InFlight {
        request: RefCell::new(Some(Box::pin(httpclient::send(request)))),
        waker: RefCell::new(None),
    });
    crate::lua::exec::with_current(|ctx| {
        if let Some(ctx) = ctx {
            let as_cancel: Rc<dyn Cancel> = in_flight.clone();
            ctx.waits.register(&as_cancel);
        }
    });
    std::future::poll_fn(|cx| {
        let mut slot = in_flight.request.borrow_mut();
        let Some(request) = slot.as_mut() else {
            return Poll::Ready(Err(mlua::Error::runtime("httpclient: request cancelled")));
        };
        match request.as_mut().poll(cx) {
            Poll::Ready(r) => {
                slot.take();
                Poll::Ready(Ok(r))
            }
            Poll::Pending => {
                *in_flight.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request's future is boxed at every call: a new connection's
    /// state (its TLS handshake) is boxed apart so that a call on a pooled
    /// connection does not copy and allocate it.
    #[test]
    fn a_request_future_stays_small() {
        let lua = Lua::new();
        let t = lua.create_table().expect("table");
        t.set("url", "http://127.0.0.1:1/").expect("url");
        let args = MultiValue::from_vec(vec![Value::Nil, Value::Table(t)]);
        let req = parse_request(Method::Get, &args).expect("request");
        let size = std::mem::size_of_val(&crate::httpclient::send(req));
        assert!(size <= 1792, "httpclient::send's future is {size} bytes");
    }
}
