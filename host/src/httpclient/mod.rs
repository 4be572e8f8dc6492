//! The HTTP client behind Lua's `core.httpclient()`: HTTP/1.1 over TCP or
//! Unix sockets, TLS through the process's TLS client, asynchronous name
//! resolution, HAProxy's retries and error answers, and keep-alive
//! connections pooled per worker (pool.rs).
//!
//! A request goes out on a pooled connection to the same destination when
//! one is idle; a pooled connection the server closed meanwhile is noticed
//! before use, or, for an idempotent request that got no response byte, the
//! request is sent again once on a new connection. New connections are tried
//! `httpclient.retries` more times when connecting fails.
//!
//! Failures are answered as HAProxy 3.0's internal proxy answers them: 503
//! with its error page when no connection could be made, 504 on `timeout`,
//! 502 for a broken response, an empty 503 for a name that does not resolve;
//! and status 0, with a reason saying what happened, for what HAProxy does
//! not have (a body over `tune.lua.maxmem`, TLS unavailable).

mod connect;
mod exchange;
mod pool;
pub mod settings;
mod stream;
pub mod url;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};

use connect::{ConnectError, Target, TlsParams};
use exchange::ExchangeError;
pub use exchange::Response;
use pool::{Key, Place};
use url::Url;

use crate::stream_addr::StreamAddr;

/// The methods Lua's HTTPClient has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }

    /// May be sent twice without changing the outcome (RFC 9110, 9.2.2).
    fn idempotent(self) -> bool {
        self != Method::Post
    }
}

/// A request, checked: the URL split, headers valid on the wire.
pub struct Request {
    pub method: Method,
    pub url: Url,
    /// The script's headers in its order, names lower-cased.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// `dst`: where to connect instead of the URL's address (HAProxy's
    /// address syntax; without a port, the URL's port).
    pub dst: Option<StreamAddr>,
    /// `timeout`: HAProxy's `timeout server` for this request.
    pub timeout: Option<Duration>,
}

/// HAProxy's User-Agent for its HTTP client.
const USER_AGENT: &str = "HAProxy";

/// Sends `req` and collects the response; never fails: internal errors are
/// responses too (see the module's comment).
pub async fn send(req: Request) -> Response {
    let settings = settings::get();
    let head = request_head(&req);
    let tls = match req.url.tls {
        false => None,
        true => match settings::tls_client() {
            Ok(client) => Some((
                client,
                TlsParams {
                    name: tls_name(&req),
                    verify: settings.verify,
                },
            )),
            Err(e) => return internal_error(&format!("TLS is unavailable: {e}")),
        },
    };
    let (place, targets) = match destination(&req, settings).await {
        Some(d) => d,
        None => return unresolved(),
    };
    let key = Key {
        place,
        tls: tls.as_ref().map(|(_, p)| p.clone()),
    };
    let attempt = |stream| {
        Attempt {
            head: &head,
            req: &req,
            key: &key,
            idle_timeout: settings.idle_timeout,
        }
        .run(stream)
    };

    if let Some(stream) = pool::take(&key) {
        match attempt(stream).await {
            Ok(r) => return r,
            // The server closed the idle connection as the request went
            // out: once more on a new connection, when that is safe.
            Err(ExchangeError::NoResponse {
                timed_out: false, ..
            }) if req.method.idempotent() => {}
            Err(e) => return exchange_failed(e),
        }
    }

    let mut failures = 0u32;
    loop {
        let target = &targets[failures as usize % targets.len()];
        let retry_left = failures < settings.retries;
        let tls_ref = tls.as_ref().map(|(c, p)| (*c, p));
        // Boxed: a new connection (and its TLS handshake) is the rare path
        // with pooling, and its state would otherwise make every call's
        // future larger.
        match Box::pin(connect::open(target, tls_ref, settings.connect_timeout)).await {
            Ok(stream) => match attempt(stream).await {
                Ok(r) => return r,
                Err(ExchangeError::NoResponse { .. }) if retry_left && req.method.idempotent() => {}
                Err(e) => return exchange_failed(e),
            },
            // HAProxy counts a failed handshake (an unverified certificate
            // included) as a failed connection: retried, then a 503. Its
            // reason is worth an operator's attention.
            Err(ConnectError::Tls(e)) => {
                crate::log::warning(&format!(
                    "httpclient: TLS handshake with {target:?} failed: {e}"
                ));
                if !retry_left {
                    return error_page(503);
                }
            }
            Err(ConnectError::Connect(e)) => {
                crate::log::debug(&format!("httpclient: connecting to {target:?}: {e}"));
                if !retry_left {
                    return error_page(503);
                }
            }
        }
        failures += 1;
    }
}

/// One exchange on one connection, which goes back to the pool when the
/// server keeps it alive.
struct Attempt<'a> {
    head: &'a [u8],
    req: &'a Request,
    key: &'a Key,
    idle_timeout: Duration,
}

impl Attempt<'_> {
    async fn run(self, mut stream: stream::Stream) -> Result<Response, ExchangeError> {
        let head_request = self.req.method == Method::Head;
        let (response, keep_alive) = exchange::run(
            &mut stream,
            self.head,
            &self.req.body,
            head_request,
            self.req.timeout,
        )
        .await?;
        if keep_alive {
            pool::put(self.key.clone(), stream, self.idle_timeout);
        }
        Ok(response)
    }
}

/// The request head as HAProxy's HTTP client writes it: the script's
/// headers, then `host` (from the URL), `accept` and `user-agent` unless the
/// script gave them, then the body's length.
fn request_head(req: &Request) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let _ = write!(
        out,
        "{} {} HTTP/1.1\r\n",
        req.method.as_str(),
        req.url.target
    );
    let (mut host, mut accept, mut agent) = (false, false, false);
    for (name, value) in &req.headers {
        if name == hyper::header::CONTENT_LENGTH || name == hyper::header::TRANSFER_ENCODING {
            continue;
        }
        host |= name == hyper::header::HOST;
        accept |= name == hyper::header::ACCEPT;
        agent |= name == hyper::header::USER_AGENT;
        line(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !host {
        line(&mut out, b"host", req.url.authority.as_bytes());
    }
    if !accept {
        line(&mut out, b"accept", b"*/*");
    }
    if !agent {
        line(&mut out, b"user-agent", USER_AGENT.as_bytes());
    }
    if !req.body.is_empty() {
        let _ = write!(out, "content-length: {}\r\n", req.body.len());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The TLS server name: the host part of the request's Host header, as
/// HAProxy's `req.hdr(host),field(1,:)`, else the URL's host.
fn tls_name(req: &Request) -> String {
    let from_header = req
        .headers
        .iter()
        .find(|(n, _)| n == hyper::header::HOST)
        .and_then(|(_, v)| v.to_str().ok())
        .map(|h| match h.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => h.split(':').next().unwrap_or(h),
        })
        .filter(|h| !h.is_empty());
    from_header.unwrap_or(&req.url.host).to_string()
}

/// Where to connect: `dst`, the URL's address, or its host name resolved
/// (without blocking: tokio runs getaddrinfo on its blocking pool), the
/// preferred family first. None: the name does not resolve.
async fn destination(req: &Request, settings: &settings::Settings) -> Option<(Place, Vec<Target>)> {
    let one = |t: Target| Some((Place::Target(t.clone()), vec![t]));
    match &req.dst {
        Some(StreamAddr::Inet(ip, port)) => {
            return one(Target::Inet(SocketAddr::new(
                *ip,
                port.unwrap_or(req.url.port),
            )))
        }
        Some(StreamAddr::Unix(path)) => return one(Target::Unix(path.clone())),
        Some(StreamAddr::Abstract(name)) => return one(Target::Abstract(name.clone())),
        None => {}
    }
    if let Ok(ip) = req.url.host.parse::<IpAddr>() {
        return one(Target::Inet(SocketAddr::new(ip, req.url.port)));
    }
    let place = Place::Name(req.url.host.clone(), req.url.port);
    if !settings.resolve {
        return None;
    }
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((req.url.host.as_str(), req.url.port))
        .await
        .ok()?
        .collect();
    // Stable: the resolver's order within a family.
    addrs.sort_by_key(|a| a.is_ipv4() != settings.prefer_ipv4);
    if addrs.is_empty() {
        return None;
    }
    Some((place, addrs.into_iter().map(Target::Inet).collect()))
}

fn exchange_failed(e: ExchangeError) -> Response {
    crate::log::debug(&format!("httpclient: {e}"));
    match e {
        ExchangeError::NoResponse {
            timed_out: true, ..
        }
        | ExchangeError::TimedOutInResponse => error_page(504),
        ExchangeError::NoResponse {
            timed_out: false, ..
        }
        | ExchangeError::Invalid(_) => error_page(502),
        ExchangeError::TooLarge => {
            internal_error("the response body is larger than tune.lua.maxmem allows")
        }
    }
}

/// HAProxy's error page for `status`, with its headers.
fn error_page(status: u16) -> Response {
    let (reason, page) = crate::proxy::error_pages::reason_and_page(status);
    Response {
        status,
        reason: Bytes::from_static(reason.as_bytes()),
        headers: vec![
            (hyper::header::CONTENT_LENGTH, HeaderValue::from(page.len())),
            (
                hyper::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            ),
            (
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("text/html"),
            ),
        ],
        body: Bytes::from(page),
    }
}

/// What HAProxy answers when the host name does not resolve (its internal
/// `return status 503` rule): an empty 503.
fn unresolved() -> Response {
    Response {
        status: 503,
        reason: Bytes::from_static(b"Service Unavailable"),
        headers: vec![(hyper::header::CONTENT_LENGTH, HeaderValue::from_static("0"))],
        body: Bytes::new(),
    }
}

/// Status 0: the request could not be carried out.
fn internal_error(reason: &str) -> Response {
    Response {
        status: 0,
        reason: Bytes::copy_from_slice(reason.as_bytes()),
        headers: Vec::new(),
        body: Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], body: &str) -> Request {
        Request {
            method: Method::Post,
            url: url::parse("http://example.com:8080/p?q=1").unwrap(),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        HeaderName::from_bytes(n.as_bytes()).unwrap(),
                        HeaderValue::from_str(v).unwrap(),
                    )
                })
                .collect(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            dst: None,
            timeout: None,
        }
    }

    #[test]
    fn request_heads_as_haproxy_writes_them() {
        let head = request_head(&request(
            &[("x-a", "1"), ("x-a", "2"), ("Accept", "text/plain")],
            "body",
        ));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nx-a: 1\r\nx-a: 2\r\naccept: text/plain\r\nhost: example.com:8080\r\n\
             user-agent: HAProxy\r\ncontent-length: 4\r\n\r\n"
        );
        // The script's host, user-agent and framing headers: its own host and
        // agent stay, its framing is replaced by the body's length.
        let head = request_head(&request(
            &[
                ("host", "h"),
                ("user-agent", "me"),
                ("content-length", "99"),
                ("transfer-encoding", "chunked"),
            ],
            "",
        ));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nhost: h\r\nuser-agent: me\r\naccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn tls_name_follows_the_host_header() {
        assert_eq!(tls_name(&request(&[], "")), "example.com");
        assert_eq!(
            tls_name(&request(&[("host", "api.example:443")], "")),
            "api.example"
        );
        assert_eq!(tls_name(&request(&[("host", "[::1]:443")], "")), "::1");
    }
}
