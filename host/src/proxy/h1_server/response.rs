//! Writing a response to the client: the status line (with a reason phrase
//! set through hyper's `ReasonPhrase` extension, or the canonical one), the
//! headers, and the body's framing: its length when known, else chunked on
//! HTTP/1.1, else until close.

use hyper::body::SizeHint;
use hyper::header::{self, HeaderMap};
use hyper::http::response;
use std::io::Write;

/// How the response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (HEAD, 204, 304, 1xx).
    None,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Until the connection closes.
    UntilClose,
}

/// What the request asked for, as far as the response is concerned.
pub struct Exchange {
    pub head_request: bool,
    pub http10: bool,
    /// The connection stays open after this response (if the response
    /// allows it).
    pub keep_alive: bool,
}

/// Appends the response head to `out`; returns the body framing and
/// whether the connection stays open afterwards.
pub fn encode_head(
    out: &mut Vec<u8>,
    parts: &response::Parts,
    hint: &SizeHint,
    ex: &Exchange,
) -> (Framing, bool) {
    let status = parts.status;
    let code = status.as_u16();
    let headers = &parts.headers;
    let mut keep_alive = ex.keep_alive && !says_close(headers);
    let no_body = ex.head_request || code == 204 || code == 304 || status.is_informational();
    let mut add_length = None;
    let mut add_chunked = false;
    let framing = if let Some(te) = last_transfer_coding(headers) {
        // Framed by the message itself (a service may set it).
        if no_body {
            Framing::None
        } else if te.eq_ignore_ascii_case("chunked") {
            Framing::Chunked
        } else {
            keep_alive = false;
            Framing::UntilClose
        }
    } else if let Some(n) = declared_length(headers) {
        if no_body {
            Framing::None
        } else {
            Framing::Length(n)
        }
    } else if code == 204 || code == 304 || status.is_informational() {
        Framing::None
    } else if let Some(n) = hint.exact() {
        add_length = Some(n);
        if no_body {
            Framing::None
        } else {
            Framing::Length(n)
        }
    } else if ex.head_request {
        Framing::None
    } else if !ex.http10 {
        add_chunked = true;
        Framing::Chunked
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| r.as_bytes())
        .or_else(|| status.canonical_reason().map(str::as_bytes))
        .unwrap_or(b"");
    // An HTTP/1.0 client gets an HTTP/1.0 status line (as from HAProxy and
    // hyper).
    let version = if ex.http10 { "1.0" } else { "1.1" };
    let _ = write!(out, "HTTP/{version} {code} ");
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(n) = add_length {
        let _ = write!(out, "content-length: {n}\r\n");
    }
    if add_chunked {
        line(out, b"transfer-encoding", b"chunked");
    }
    if !headers.contains_key(header::CONNECTION) {
        if !keep_alive {
            line(out, b"connection", b"close");
        } else if ex.http10 {
            line(out, b"connection", b"keep-alive");
        }
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn says_close(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    })
}

fn last_transfer_coding(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .rfind(|t| !t.is_empty())
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(header::CONTENT_LENGTH)?;
    v.to_str().ok()?.trim().parse().ok()
}

/// Appends one chunk of a chunked body.
pub fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::{Response, StatusCode};

    fn head(resp: Response<()>, hint: SizeHint, ex: &Exchange) -> (String, Framing, bool) {
        let (parts, ()) = resp.into_parts();
        let mut out = Vec::new();
        let (f, k) = encode_head(&mut out, &parts, &hint, ex);
        (String::from_utf8_lossy(&out).into_owned(), f, k)
    }

    const KA11: Exchange = Exchange {
        head_request: false,
        http10: false,
        keep_alive: true,
    };

    #[test]
    fn framing_follows_what_is_known() {
        let (h, f, k) = head(Response::new(()), SizeHint::with_exact(5), &KA11);
        assert_eq!(h, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
        assert_eq!((f, k), (Framing::Length(5), true));
        let (h, f, _) = head(Response::new(()), SizeHint::default(), &KA11);
        assert!(h.contains("transfer-encoding: chunked\r\n"));
        assert_eq!(f, Framing::Chunked);
        let ex10 = Exchange {
            head_request: false,
            http10: true,
            keep_alive: true,
        };
        let (h, f, k) = head(Response::new(()), SizeHint::default(), &ex10);
        assert!(h.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(h.contains("connection: close\r\n"));
        assert_eq!((f, k), (Framing::UntilClose, false));
        let (h, f, _) = head(Response::new(()), SizeHint::with_exact(2), &ex10);
        assert!(h.contains("connection: keep-alive\r\n"));
        assert_eq!(f, Framing::Length(2));
    }

    #[test]
    fn bodyless_responses_and_reasons() {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let (h, f, _) = head(r, SizeHint::with_exact(0), &KA11);
        assert_eq!(h, "HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(f, Framing::None);
        let ex = Exchange {
            head_request: true,
            http10: false,
            keep_alive: true,
        };
        let (h, f, _) = head(Response::new(()), SizeHint::with_exact(7), &ex);
        assert!(h.contains("content-length: 7\r\n"));
        assert_eq!(f, Framing::None);
        let mut r = Response::new(());
        if let Ok(p) = hyper::ext::ReasonPhrase::try_from(&b"Fine Thanks"[..]) {
            r.extensions_mut().insert(p);
        }
        let (h, _, _) = head(r, SizeHint::with_exact(0), &KA11);
        assert!(h.starts_with("HTTP/1.1 200 Fine Thanks\r\n"));
    }
}
