//! Parsing and validating a client's request head (httparse for the
//! syntax), with HAProxy 3.0's rules for what frames the body: a strict
//! `Content-Length`, `Transfer-Encoding` ending in `chunked`, both at once
//! meaning chunked. The result is the `http` crate's request head, which
//! the rules engine, the Lua classes and the forwarder work on.

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request;
use hyper::{Method, Request, Uri, Version};

/// Header lines per request (HAProxy's `tune.http.maxhdr` default).
const MAX_HEADERS: usize = 101;

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes (0: no body).
    Length(u64),
    Chunked,
}

/// A parsed request head.
pub struct RequestHead {
    pub parts: request::Parts,
    pub framing: Framing,
    /// The client keeps the connection open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1.
    pub expect_continue: bool,
}

/// Why a head is refused: the status to answer, and why (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

fn bad(reason: &'static str) -> Refusal {
    Refusal {
        status: 400,
        reason,
    }
}

/// Parses the head at the start of `buf`. `Ok(None)`: incomplete (the
/// caller refuses with 431 once `limit` bytes arrived without its end).
/// `Ok(Some((head, len)))`: the head took `len` bytes.
pub fn parse(buf: &[u8], limit: usize) -> Result<Option<(RequestHead, usize)>, Refusal> {
    let too_large = Refusal {
        status: 431,
        reason: "request head too large",
    };
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut lines);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= limit {
                Err(too_large)
            } else {
                Ok(None)
            }
        }
        // HAProxy 3.0 answers 400 here, not 431.
        Err(httparse::Error::TooManyHeaders) => return Err(bad("too many header lines")),
        Err(_) => return Err(bad("malformed request head")),
    };
    if len > limit {
        return Err(too_large);
    }
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("invalid method"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let target = req.path.unwrap_or("");
    let uri = Uri::from_maybe_shared(Bytes::copy_from_slice(target.as_bytes()))
        .map_err(|_| bad("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut framing = Fields::default();
    for h in req.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("invalid header value"))?;
        framing.see(&name, h.value)?;
        headers.append(name, value);
    }
    let mut builder = Request::builder().method(method).uri(uri).version(version);
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    let (mut parts, ()) = builder
        .body(())
        .map_err(|_| bad("invalid request"))?
        .into_parts();
    let framing = framing.finish(&mut parts)?;
    let connection = Connection::of(&parts.headers);
    let keep_alive = !connection.close
        && !framing.close_after
        && (version == Version::HTTP_11 || connection.keep_alive);
    // Headers the client named in `Connection` are hop-by-hop: they are
    // removed before the rules run, so that a header the rules set is not
    // dropped on the way to the server.
    for name in &connection.named {
        parts.headers.remove(name);
    }
    let expect_continue = version == Version::HTTP_11
        && parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    authority_as_host(&mut parts)?;
    Ok(Some((
        RequestHead {
            parts,
            framing: framing.framing,
            keep_alive,
            expect_continue,
        },
        len,
    )))
}

/// An absolute-form target's authority wins over `Host` (RFC 9112
/// §3.2.2): the request goes on with `Host` set to it. Otherwise several
/// `Host` headers must agree (and are merged into one).
fn authority_as_host(parts: &mut request::Parts) -> Result<(), Refusal> {
    if parts.method != Method::CONNECT {
        if let Some(a) = parts.uri.authority() {
            let host = match a.port() {
                Some(p) => format!("{}:{}", a.host(), p.as_str()),
                None => a.host().to_string(),
            };
            let v = HeaderValue::from_str(&host).map_err(|_| bad("invalid authority"))?;
            parts.headers.insert(header::HOST, v);
            return Ok(());
        }
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    if let Some(first) = hosts.next() {
        let mut more = false;
        for other in hosts {
            if !other.as_bytes().eq_ignore_ascii_case(first.as_bytes()) {
                return Err(bad("several different Host headers"));
            }
            more = true;
        }
        if more {
            let v = first.clone();
            parts.headers.insert(header::HOST, v);
        }
    }
    Ok(())
}

/// The framing headers seen so far.
#[derive(Default)]
struct Fields {
    content_length: Option<u64>,
    /// More than one Content-Length value (all equal): normalized to one.
    cl_repeated: bool,
    transfer_encoding: bool,
    /// The codings of all Transfer-Encoding headers, in order, lower-case.
    codings: Vec<String>,
}

/// The framing decided from the headers.
struct Decided {
    framing: Framing,
    /// Transfer-Encoding and Content-Length both came: the connection is
    /// not reused after this exchange (a smuggling attempt, or a confused
    /// client).
    close_after: bool,
}

impl Fields {
    fn see(&mut self, name: &HeaderName, value: &[u8]) -> Result<(), Refusal> {
        if name == header::CONTENT_LENGTH {
            // 1*DIGIT, or a list of equal ones; no sign, no hex, no blanks inside.
            let mut any = false;
            for item in value.split(|&b| b == b',') {
                let item = trim(item);
                if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                    return Err(bad("invalid Content-Length"));
                }
                let n = std::str::from_utf8(item)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(bad("Content-Length out of range"))?;
                match self.content_length {
                    Some(m) if m != n => return Err(bad("conflicting Content-Length values")),
                    Some(_) => self.cl_repeated = true,
                    None => self.content_length = Some(n),
                }
                any = true;
            }
            if !any {
                return Err(bad("empty Content-Length"));
            }
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
            for item in value.split(|&b| b == b',') {
                let item = trim(item);
                if !item.is_empty() {
                    self.codings
                        .push(String::from_utf8_lossy(item).to_ascii_lowercase());
                }
            }
        }
        Ok(())
    }

    fn finish(self, parts: &mut request::Parts) -> Result<Decided, Refusal> {
        if self.transfer_encoding {
            // HAProxy 3.0: `chunked` must come once and last (else 400);
            // another coding before it is refused with 422.
            let chunked = self.codings.iter().filter(|c| *c == "chunked").count();
            if chunked != 1 || self.codings.last().is_none_or(|c| c != "chunked") {
                return Err(bad("Transfer-Encoding without a final chunked"));
            }
            if self.codings.len() > 1 {
                return Err(Refusal {
                    status: 422,
                    reason: "unsupported transfer coding",
                });
            }
            // Both: the transfer coding wins and the length is dropped.
            let close_after = parts.headers.remove(header::CONTENT_LENGTH).is_some();
            return Ok(Decided {
                framing: Framing::Chunked,
                close_after,
            });
        }
        let n = self.content_length.unwrap_or(0);
        if self.cl_repeated {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        Ok(Decided {
            framing: Framing::Length(n),
            close_after: false,
        })
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| *c != b' ' && *c != b'\t')
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| *c != b' ' && *c != b'\t')
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// What a `Connection` header says.
struct Connection {
    close: bool,
    keep_alive: bool,
    /// Other tokens: headers the client marks hop-by-hop.
    named: Vec<HeaderName>,
}

impl Connection {
    fn of(headers: &HeaderMap) -> Connection {
        let mut c = Connection {
            close: false,
            keep_alive: false,
            named: Vec::new(),
        };
        for v in headers.get_all(header::CONNECTION) {
            let Ok(s) = v.to_str() else { continue };
            for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if token.eq_ignore_ascii_case("close") {
                    c.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    c.keep_alive = true;
                } else if let Ok(n) = HeaderName::from_bytes(token.as_bytes()) {
                    // Framing and target are not the client's to drop.
                    if n != header::CONTENT_LENGTH
                        && n != header::HOST
                        && n != header::TRANSFER_ENCODING
                        && n != header::CONNECTION
                    {
                        c.named.push(n);
                    }
                }
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(raw: &str) -> u16 {
        match parse(raw.as_bytes(), 16384) {
            Ok(Some(_)) => 200,
            Ok(None) => 0,
            Err(r) => r.status,
        }
    }

    #[test]
    fn framing_headers_are_checked_as_haproxy_does() {
        let cl = |v: &str| {
            status(&format!(
                "POST / HTTP/1.1\r\nhost: t\r\ncontent-length: {v}\r\n\r\n"
            ))
        };
        assert_eq!(cl("5"), 200);
        assert_eq!(cl("2, 2"), 200);
        for v in [
            "1,2",
            "+5",
            "-1",
            "0x10",
            "",
            "1 2",
            "99999999999999999999999",
        ] {
            assert_eq!(cl(v), 400, "content-length {v:?}");
        }
        assert_eq!(
            status("POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"),
            400
        );
        let te = |v: &str| {
            status(&format!(
                "POST / HTTP/1.1\r\ntransfer-encoding: {v}\r\n\r\n"
            ))
        };
        assert_eq!(te("chunked"), 200);
        assert_eq!(te("CHUNKED"), 200);
        assert_eq!(te("gzip, chunked"), 422);
        for v in ["gzip", "chunked, gzip", "chunked, chunked", "identity"] {
            assert_eq!(te(v), 400, "transfer-encoding {v:?}");
        }
    }

    #[test]
    fn transfer_encoding_wins_over_content_length() {
        let raw = b"POST / HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n";
        let (h, _) = parse(raw, 16384).expect("valid").expect("complete");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.parts.headers.contains_key(header::CONTENT_LENGTH));
        assert!(!h.keep_alive);
    }

    #[test]
    fn host_rules() {
        assert_eq!(status("GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n"), 400);
        let (h, _) = parse(b"GET / HTTP/1.1\r\nhost: a\r\nhost: A\r\n\r\n", 16384)
            .expect("valid")
            .expect("complete");
        assert_eq!(h.parts.headers.get_all(header::HOST).iter().count(), 1);
        let (h, _) = parse(
            b"GET http://a.example:81/x HTTP/1.1\r\nhost: b.example\r\n\r\n",
            16384,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(h.parts.headers[header::HOST], "a.example:81");
    }

    #[test]
    fn connection_names_hop_by_hop_headers_and_keep_alive() {
        let (h, _) = parse(
            b"GET / HTTP/1.0\r\nconnection: keep-alive, x-a\r\nx-a: 1\r\nx-b: 2\r\n\r\n",
            16384,
        )
        .expect("valid")
        .expect("complete");
        assert!(h.keep_alive);
        assert!(!h.parts.headers.contains_key("x-a"));
        assert!(h.parts.headers.contains_key("x-b"));
        let (h, _) = parse(b"GET / HTTP/1.0\r\n\r\n", 16384)
            .expect("valid")
            .expect("complete");
        assert!(!h.keep_alive);
        assert_eq!(status("GET / HTTP/1.1\r\nhost: t\r\n"), 0);
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nx: {}\r\n", "a".repeat(20000))),
            431
        );
    }
}
