//! One request and its response on an open connection: the request written
//! whole, the response head parsed with the backend's HTTP/1.1 parser
//! (backend/h1.rs), the body read by its framing and charged to
//! `tune.lua.maxmem` as it grows (it becomes a Lua string).

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::header::{HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stream::Stream;
use crate::backend::h1::{parse_response_head, ChunkStep, Chunked, Parsed, ResFraming};
use crate::lua::memory;

/// A response as the Lua table gets it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: Bytes,
    /// In the server's order; names lower case.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// How an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// Nothing of a response arrived: the connection closed or failed, or
    /// `timeout` passed. A new connection may be tried.
    NoResponse {
        timed_out: bool,
        error: Option<io::Error>,
    },
    /// The response was malformed or cut.
    Invalid(String),
    /// `timeout` passed in the middle of the response.
    TimedOutInResponse,
    /// The body would pass `tune.lua.maxmem`.
    TooLarge,
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::NoResponse {
                timed_out: true, ..
            } => f.write_str("no response before the timeout"),
            ExchangeError::NoResponse { error: Some(e), .. } => write!(f, "no response: {e}"),
            ExchangeError::NoResponse { error: None, .. } => {
                f.write_str("connection closed before any response")
            }
            ExchangeError::Invalid(why) => write!(f, "invalid response: {why}"),
            ExchangeError::TimedOutInResponse => f.write_str("timeout in the response"),
            ExchangeError::TooLarge => f.write_str("response body over tune.lua.maxmem"),
        }
    }
}

/// Bytes charged to `tune.lua.maxmem` while a body is collected, given
/// back when it is handed over (Lua then allocates its string) or dropped.
struct Charge(usize);

impl Charge {
    fn grow(&mut self, bytes: usize) -> bool {
        if !memory::try_charge(bytes) {
            return false;
        }
        self.0 += bytes;
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        memory::uncharge(self.0);
    }
}

const READ_CHUNK: usize = 16 * 1024;

/// Writes `head` and `body`, reads the response. On success also says
/// whether the connection can carry another request.
pub async fn run(
    stream: &mut Stream,
    head: &[u8],
    body: &[u8],
    head_request: bool,
    timeout: Option<Duration>,
) -> Result<(Response, bool), ExchangeError> {
    let no_response =
        |timed_out: bool, error: Option<io::Error>| ExchangeError::NoResponse { timed_out, error };
    // The request, in one write when it is small.
    let written = if body.len() <= READ_CHUNK {
        let mut all = Vec::with_capacity(head.len() + body.len());
        all.extend_from_slice(head);
        all.extend_from_slice(body);
        within(timeout, stream.write_all(&all)).await
    } else {
        match within(timeout, stream.write_all(head)).await {
            Ok(()) => within(timeout, stream.write_all(body)).await,
            e => e,
        }
    };
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(no_response(true, Some(e))),
        Err(e) => return Err(no_response(false, Some(e))),
    }
    if let Err(e) = within(timeout, stream.flush()).await {
        return Err(no_response(e.kind() == io::ErrorKind::TimedOut, Some(e)));
    }

    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let head = loop {
        match parse_response_head(&mut buf, head_request) {
            Ok(Parsed::Complete(h)) => break h,
            Ok(Parsed::Interim) => continue,
            Ok(Parsed::Partial) => {}
            Err(e) => return Err(ExchangeError::Invalid(e)),
        }
        let got_nothing = buf.is_empty();
        match read_more(stream, &mut buf, timeout).await {
            Ok(0) if got_nothing => return Err(no_response(false, None)),
            Ok(0) => {
                return Err(ExchangeError::Invalid(
                    "connection closed in the response head".into(),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut && got_nothing => {
                return Err(no_response(true, Some(e)))
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(ExchangeError::TimedOutInResponse)
            }
            Err(e) if got_nothing => return Err(no_response(false, Some(e))),
            Err(e) => return Err(ExchangeError::Invalid(e.to_string())),
        }
    };

    let mut charge = Charge(0);
    let mut keep_alive = head.keep_alive;
    let body = match head.framing {
        ResFraming::Length(n) => {
            let n = usize::try_from(n).map_err(|_| ExchangeError::TooLarge)?;
            if !charge.grow(n) {
                return Err(ExchangeError::TooLarge);
            }
            while buf.len() < n {
                buf.reserve((n - buf.len()).min(1 << 20));
                match read_more(stream, &mut buf, timeout).await {
                    Ok(0) => {
                        return Err(ExchangeError::Invalid(
                            "connection closed in the response body".into(),
                        ))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(body_error(e)),
                }
            }
            let body = buf.split_to(n).freeze();
            // Bytes the server sent past its response: not a clean
            // connection to reuse.
            keep_alive &= buf.is_empty();
            body
        }
        ResFraming::Chunked => {
            let mut decoder = Chunked::Size;
            let mut out = BytesMut::new();
            loop {
                match decoder.step(&mut buf).map_err(ExchangeError::Invalid)? {
                    ChunkStep::Data(d) => {
                        if !charge.grow(d.len()) {
                            return Err(ExchangeError::TooLarge);
                        }
                        out.extend_from_slice(&d);
                    }
                    ChunkStep::Done => break,
                    ChunkStep::NeedMore => match read_more(stream, &mut buf, timeout).await {
                        Ok(0) => {
                            return Err(ExchangeError::Invalid(
                                "connection closed in the response body".into(),
                            ))
                        }
                        Ok(_) => {}
                        Err(e) => return Err(body_error(e)),
                    },
                }
            }
            keep_alive &= buf.is_empty();
            out.freeze()
        }
        ResFraming::UntilClose => {
            keep_alive = false;
            if !charge.grow(buf.len()) {
                return Err(ExchangeError::TooLarge);
            }
            loop {
                let before = buf.len();
                match read_more(stream, &mut buf, timeout).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if !charge.grow(n) {
                            return Err(ExchangeError::TooLarge);
                        }
                        debug_assert_eq!(buf.len(), before + n);
                    }
                    Err(e) => return Err(body_error(e)),
                }
            }
            buf.freeze()
        }
    };
    let reason = head
        .parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| Bytes::copy_from_slice(r.as_bytes()))
        .or_else(|| {
            head.parts
                .status
                .canonical_reason()
                .map(|r| Bytes::from_static(r.as_bytes()))
        })
        .unwrap_or_default();
    let headers = head.parts.headers.into_iter().scan(None, |name, (n, v)| {
        // HeaderMap's iterator names only the first value of each header.
        if n.is_some() {
            *name = n;
        }
        Some(name.clone().map(|n| (n, v)))
    });
    let response = Response {
        status: head.parts.status.as_u16(),
        reason,
        headers: headers.flatten().collect(),
        body,
    };
    Ok((response, keep_alive))
}

fn body_error(e: io::Error) -> ExchangeError {
    if e.kind() == io::ErrorKind::TimedOut {
        ExchangeError::TimedOutInResponse
    } else {
        ExchangeError::Invalid(e.to_string())
    }
}

async fn read_more(
    stream: &mut Stream,
    buf: &mut BytesMut,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    within(timeout, stream.read_buf(buf)).await
}

/// `op`, failing with `TimedOut` when it makes no progress for `timeout`
/// (HAProxy's `timeout server` is an inactivity timeout).
async fn within<T>(
    timeout: Option<Duration>,
    op: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match timeout {
        None => op.await,
        Some(t) => match tokio::time::timeout(t, op).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "server timeout")),
        },
    }
}
