//! HTTP/1.1 as spoken to servers: writing a request head straight from the
//! transaction's request, parsing a response head, and the framing of a
//! response body (length, chunked, or until close). No I/O here: `http`
//! drives the socket.
//!
//! Writing the head from `&request::Parts` rather than through an HTTP
//! client lets the transaction keep its request (response rules may fetch
//! from it) without a copy, and the hop-by-hop rules of a proxy apply while
//! writing instead of on a copied header map.

use super::{Backend, ForwardFor};
use bytes::{Buf, Bytes, BytesMut};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::{request, response};
use hyper::{Method, Response, StatusCode, Version};
use std::io::Write;
use std::mem::MaybeUninit;
use std::net::IpAddr;

/// Response header lines accepted from a server (hyper's default too).
const MAX_HEADERS: usize = 100;
/// A response head larger than this is refused (502). HAProxy's limit is
/// its buffer size, 16 KiB by default; servers' heads are not the place
/// to be stricter than a client library.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A chunk-size line or trailer line longer than this is invalid.
const MAX_LINE_BYTES: usize = 4096;

/// How the request body is framed on the way to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReqFraming {
    /// No body: the head goes as received (a `Content-Length: 0` stays).
    NoBody,
    /// A body of known length: `Content-Length` set to it.
    Length(u64),
    /// A body of unknown length: `Transfer-Encoding: chunked`.
    Chunked,
}

/// Appends the request head for the server to `out`: origin-form target,
/// HTTP/1.1, the client's headers minus the hop-by-hop ones, the framing
/// headers, then `Connection: close` (`option httpclose`) and the
/// backend's `X-Forwarded-For`.
pub(crate) fn write_request_head(
    out: &mut Vec<u8>,
    head: &request::Parts,
    framing: ReqFraming,
    be: &Backend,
    client: IpAddr,
) {
    let uri = &head.uri;
    // Absolute form (a client talking to us as to a proxy) becomes the
    // origin form; the Host header stays as received, or comes from the URI.
    let absolute = head.method != Method::CONNECT && uri.authority().is_some();
    let target = if head.method == Method::CONNECT {
        uri.authority().map_or("", |a| a.as_str())
    } else {
        match uri.path_and_query().map(|pq| pq.as_str()) {
            Some(pq) if !pq.is_empty() => pq,
            _ => "/",
        }
    };
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Only the fixed hop-by-hop set is dropped here: the headers the client
    // named in `Connection` were removed when its request was parsed
    // (proxy/h1_server), so that one the rules set afterwards goes through.
    for (name, value) in &head.headers {
        if is_hop_by_hop(name) || (name == header::CONTENT_LENGTH && framing != ReqFraming::NoBody)
        {
            continue;
        }
        header_line(out, name.as_str(), value.as_bytes());
    }
    if absolute && !head.headers.contains_key(header::HOST) {
        if let Some(a) = uri.authority() {
            header_line(out, "host", a.as_str().as_bytes());
        }
    }
    match framing {
        ReqFraming::NoBody => {}
        ReqFraming::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        ReqFraming::Chunked => header_line(out, "transfer-encoding", b"chunked"),
    }
    if be.httpclose {
        header_line(out, "connection", b"close");
    }
    if let Some(ff) = &be.forwardfor {
        if let Some(ip) = forwarded_for_ip(ff, &head.headers, client) {
            let _ = write!(out, "{}: {ip}\r\n", ff.header.as_str());
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn header_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The address `option forwardfor` adds for `client`, if it adds one: not
/// for a client in the `except` network, nor with `if-none` when the
/// request already has the header.
pub(crate) fn forwarded_for_ip(
    ff: &ForwardFor,
    headers: &HeaderMap,
    client: IpAddr,
) -> Option<IpAddr> {
    let ip = client.to_canonical();
    if ff.except.is_some_and(|n| n.contains(ip)) {
        return None;
    }
    if ff.if_none && headers.contains_key(&ff.header) {
        return None;
    }
    Some(ip)
}

/// Appends `X-Forwarded-For: <client ip>` (or the configured header) to a
/// request's headers for a frontend's `option forwardfor`, after any
/// existing one, as HAProxy does; see [`forwarded_for_ip`] for when.
pub fn add_forwarded_for(headers: &mut HeaderMap, ff: &ForwardFor, client: IpAddr) {
    let Some(ip) = forwarded_for_ip(ff, headers, client) else {
        return;
    };
    // Format on the stack; HeaderValue makes the only copy.
    let mut buf = [0u8; 48];
    let len = {
        let mut w = &mut buf[..];
        if write!(w, "{ip}").is_err() {
            return;
        }
        48 - w.len()
    };
    if let Ok(v) = HeaderValue::from_bytes(&buf[..len]) {
        headers.append(ff.header.clone(), v);
    }
}

/// The hop-by-hop headers of a message, which a proxy must not forward: a
/// fixed set, `Proxy-*`, and those its `Connection` header names.
pub(crate) struct HopByHop {
    /// Names listed in `Connection`; empty for nearly every message.
    named: Vec<HeaderName>,
}

impl HopByHop {
    pub(crate) fn of(headers: &HeaderMap) -> HopByHop {
        let mut named = Vec::new();
        for v in headers.get_all(header::CONNECTION) {
            let Ok(s) = v.to_str() else { continue };
            for token in s.split(',').map(str::trim) {
                if token.is_empty()
                    || token.eq_ignore_ascii_case("close")
                    || token.eq_ignore_ascii_case("keep-alive")
                {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(token.as_bytes()) {
                    // A message's framing and target are not the client's
                    // to drop through Connection.
                    if n != header::CONTENT_LENGTH && n != header::HOST {
                        named.push(n);
                    }
                }
            }
        }
        HopByHop { named }
    }

    pub(crate) fn contains(&self, name: &HeaderName) -> bool {
        is_hop_by_hop(name) || self.named.contains(name)
    }
}

/// Whether `name` is in the fixed set of hop-by-hop headers.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str().starts_with("proxy-")
}

/// Removes the hop-by-hop headers from a header map (responses, and
/// requests handed to a Lua service). The client connection
/// (proxy/h1_server) then frames the message itself on the next hop.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages have none: one pass over the names and done.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    let hop = HopByHop::of(h);
    let names: Vec<HeaderName> = h.keys().filter(|n| hop.contains(n)).cloned().collect();
    for n in &names {
        h.remove(n);
    }
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResFraming {
    /// This many bytes (0: no body).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the server closes the connection (which can't be reused).
    UntilClose,
}

/// A parsed response head.
pub(crate) struct ResponseHead {
    /// Status, headers (hop-by-hop ones removed), and a non-canonical
    /// reason phrase as hyper's `ReasonPhrase` extension.
    pub parts: response::Parts,
    pub framing: ResFraming,
    /// The server keeps the connection open after this response.
    pub keep_alive: bool,
}

/// What parsing the start of `buf` found.
pub(crate) enum Parsed {
    /// More bytes are needed.
    Partial,
    /// An interim (1xx) response, removed from the buffer; parse again.
    Interim,
    Complete(ResponseHead),
}

/// Parses a response head at the start of `buf`. A complete head is removed
/// from `buf`, which then starts with the body. `head_request`: the request
/// was HEAD, so the response has no body whatever it announces.
pub(crate) fn parse_response_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Parsed, String> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD_BYTES {
                return Err(format!("response head over {MAX_HEAD_BYTES} bytes"));
            }
            return Ok(Parsed::Partial);
        }
        Err(e) => return Err(format!("invalid response head: {e}")),
    };
    let code = res.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| format!("invalid status {code}"))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        // 100 Continue and friends: the client gets the final response only.
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let http10 = res.version == Some(0);
    let reason = res.reason.filter(|r| Some(*r) != status.canonical_reason());
    let reason = reason.map(|r| Bytes::copy_from_slice(r.as_bytes()));
    // One pass over the headers: their names, where each value sits in the
    // head (values then share the head's bytes once it is frozen, no copy
    // per value), and what the framing and connection headers say.
    let base = buf.as_ptr() as usize;
    let mut spans: Vec<(HeaderName, usize, usize)> = Vec::with_capacity(res.headers.len());
    let mut framing = FramingHeaders::default();
    let mut connection = ConnectionHeader::default();
    for h in res.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("invalid header name '{}'", h.name))?;
        if name == header::CONTENT_LENGTH {
            framing.content_length(h.value)?;
        } else if name == header::TRANSFER_ENCODING {
            framing.transfer_encoding(h.value);
        } else if name == header::CONNECTION {
            connection.add(h.value);
        }
        let start = h.value.as_ptr() as usize - base;
        spans.push((name, start, start + h.value.len()));
    }
    let framing = framing.framing(status, head_request);
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, start, end) in spans {
        // Hop-by-hop headers stay here; Transfer-Encoding wins over
        // Content-Length (RFC 9112, 6.3), and the length must not reach the
        // client then.
        if is_hop_by_hop(&name)
            || connection.named.contains(&name)
            || (framing == ResFraming::Chunked && name == header::CONTENT_LENGTH)
        {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| format!("invalid value for header '{name}'"))?;
        headers.append(name, value);
    }
    let keep_alive = !connection.close && (!http10 || connection.keep_alive);
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    // The client connection answers in its client's version.
    *resp.version_mut() = Version::HTTP_11;
    *resp.headers_mut() = headers;
    if let Some(r) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
        resp.extensions_mut().insert(r);
    }
    let (parts, ()) = resp.into_parts();
    Ok(Parsed::Complete(ResponseHead {
        parts,
        framing,
        // After a 101 the connection speaks another protocol: never pooled.
        keep_alive: keep_alive
            && framing != ResFraming::UntilClose
            && status != StatusCode::SWITCHING_PROTOCOLS,
    }))
}

/// What a response's `Connection` headers say.
#[derive(Default)]
struct ConnectionHeader {
    close: bool,
    keep_alive: bool,
    /// Other headers it names: hop-by-hop for this message.
    named: Vec<HeaderName>,
}

impl ConnectionHeader {
    fn add(&mut self, value: &[u8]) {
        for token in value.split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if let Ok(n) = HeaderName::from_bytes(token) {
                if n != header::CONTENT_LENGTH {
                    self.named.push(n);
                }
            }
        }
    }
}

/// The framing headers of a response, gathered header by header.
#[derive(Default)]
struct FramingHeaders {
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked_last: bool,
}

impl FramingHeaders {
    /// A Content-Length header: one value, or a list of equal ones.
    fn content_length(&mut self, value: &[u8]) -> Result<(), String> {
        for part in value.split(|b| *b == b',') {
            let part = part.trim_ascii();
            let n = std::str::from_utf8(part)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| "invalid content-length".to_string())?;
            if self.content_length.is_some_and(|l| l != n) {
                return Err("conflicting content-length values".into());
            }
            self.content_length = Some(n);
        }
        Ok(())
    }

    /// A Transfer-Encoding header; only the last coding of the last one
    /// decides whether the body is chunked.
    fn transfer_encoding(&mut self, value: &[u8]) {
        self.transfer_encoding = true;
        self.chunked_last = value
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    }

    /// The framing of the body (RFC 9112, 6.3).
    fn framing(&self, status: StatusCode, head_request: bool) -> ResFraming {
        if head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            ResFraming::Length(0)
        } else if self.transfer_encoding {
            if self.chunked_last {
                ResFraming::Chunked
            } else {
                ResFraming::UntilClose
            }
        } else {
            self.content_length
                .map_or(ResFraming::UntilClose, ResFraming::Length)
        }
    }
}

/// Decodes a chunked body from a buffer, a piece at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// In a chunk's data; this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
    Done,
}

/// One step of [`Chunked::step`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkStep {
    /// Body bytes taken from the buffer.
    Data(Bytes),
    /// The buffer holds too little to go on: read more.
    NeedMore,
    /// The body is complete.
    Done,
}

impl Chunked {
    /// Advances over `buf`, returning the next data or what stops it.
    pub(crate) fn step(&mut self, buf: &mut BytesMut) -> Result<ChunkStep, String> {
        loop {
            match *self {
                Chunked::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = if size == 0 {
                            Chunked::Trailers
                        } else {
                            Chunked::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        return too_long(buf).map(|()| ChunkStep::NeedMore);
                    }
                    Err(_) => return Err("invalid chunk size".into()),
                },
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(ChunkStep::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(ChunkStep::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(ChunkStep::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    // Trailer fields are dropped: the client side sends none.
                    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                        return too_long(buf).map(|()| ChunkStep::NeedMore);
                    };
                    buf.advance(eol + 2);
                    if eol == 0 {
                        *self = Chunked::Done;
                    }
                }
                Chunked::Done => return Ok(ChunkStep::Done),
            }
        }
    }
}

fn too_long(buf: &BytesMut) -> Result<(), String> {
    if buf.len() > MAX_LINE_BYTES {
        Err("chunk size or trailer line too long".into())
    } else {
        Ok(())
    }
}

/// Appends one chunk of a chunked request body: size line, data, CRLF.
pub(crate) fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked request body, without trailers.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, head_request: bool) -> (ResponseHead, BytesMut) {
        let mut buf = BytesMut::from(raw);
        loop {
            match parse_response_head(&mut buf, head_request) {
                Ok(Parsed::Complete(h)) => return (h, buf),
                Ok(Parsed::Interim) => continue,
                Ok(Parsed::Partial) => panic!("partial: {raw:?}"),
                Err(e) => panic!("error {e}: {raw:?}"),
            }
        }
    }

    fn parse_err(raw: &str) -> String {
        match parse_response_head(&mut BytesMut::from(raw), false) {
            Err(e) => e,
            Ok(_) => panic!("accepted: {raw:?}"),
        }
    }

    #[test]
    fn response_heads_give_status_headers_and_framing() {
        let (h, rest) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello",
            false,
        );
        assert_eq!(h.parts.status, 200);
        assert_eq!(h.framing, ResFraming::Length(5));
        assert!(h.keep_alive);
        let all: Vec<_> = h.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(all, ["1", "2"]);
        assert_eq!(&rest[..], b"hello");
        assert!(h
            .parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .is_none());

        // Chunked wins over a length, which is then not forwarded; hop-by-hop
        // headers and those Connection names go.
        let (h, _) = parse(
            "HTTP/1.1 201 Made\r\ncontent-length: 3\r\ntransfer-encoding: gzip, chunked\r\n\
             connection: x-private\r\nx-private: 1\r\nkeep-alive: 5\r\nx-kept: y\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, ResFraming::Chunked);
        let names: Vec<_> = h.parts.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
        let reason = h.parts.extensions.get::<hyper::ext::ReasonPhrase>();
        assert_eq!(reason.map(|r| r.as_bytes()), Some(&b"Made"[..]));

        // No length: the body ends with the connection.
        let (h, _) = parse("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(h.framing, ResFraming::UntilClose);
        assert!(!h.keep_alive);
        let (h, _) = parse("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false);
        assert_eq!(h.framing, ResFraming::UntilClose);
    }

    #[test]
    fn bodyless_responses_and_connection_reuse() {
        for raw in [
            "HTTP/1.1 204 No Content\r\ncontent-length: 10\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(parse(raw, false).0.framing, ResFraming::Length(0));
        }
        // A HEAD response announces the length of a body it doesn't send.
        let (h, _) = parse("HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n", true);
        assert_eq!(h.framing, ResFraming::Length(0));
        assert_eq!(h.parts.headers["content-length"], "99");

        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(!h.keep_alive);
        let (h, _) = parse(
            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, ResFraming::Length(0));
        assert!(!h.keep_alive);
        let (h, _) = parse("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false);
        assert!(!h.keep_alive);
        let (h, _) = parse(
            "HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(h.keep_alive);
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-len");
        assert!(matches!(
            parse_response_head(&mut buf, false),
            Ok(Parsed::Interim)
        ));
        assert!(matches!(
            parse_response_head(&mut buf, false),
            Ok(Parsed::Partial)
        ));
        buf.extend_from_slice(b"gth: 2\r\n\r\nok");
        match parse_response_head(&mut buf, false) {
            Ok(Parsed::Complete(h)) => assert_eq!(h.framing, ResFraming::Length(2)),
            _ => panic!("complete head expected"),
        }
        assert_eq!(&buf[..], b"ok");
    }

    #[test]
    fn malformed_heads_are_refused() {
        assert!(parse_err("NOT HTTP\r\n\r\n").contains("invalid response head"));
        assert!(
            parse_err("HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n").contains("conflicting")
        );
        assert!(parse_err("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n")
            .contains("invalid content-length"));
        let (h, _) = parse("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n", false);
        assert_eq!(h.framing, ResFraming::Length(7));
        // A head that never ends within the limit, and one with too many lines.
        let mut big = BytesMut::from("HTTP/1.1 200 OK\r\nx-filler: ");
        big.resize(MAX_HEAD_BYTES + 1, b'a');
        assert!(matches!(parse_response_head(&mut big, false), Err(e) if e.contains("over")));
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "x-n: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(parse_err(&many).contains("invalid response head"));
    }

    /// Decodes `wire` fed in pieces of `step` bytes.
    fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, BytesMut), String> {
        let mut dec = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match dec.step(&mut buf)? {
                ChunkStep::Data(d) => out.extend_from_slice(&d),
                ChunkStep::Done => return Ok((out, buf)),
                ChunkStep::NeedMore if fed < wire.len() => {
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
                ChunkStep::NeedMore => return Err("truncated".into()),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let wire = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: t\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, wire.len()] {
            let (body, rest) = dechunk(wire, step).expect("decodes");
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            // What follows the body stays for the next response.
            assert_eq!(&rest[..], &b"NEXT"[..rest.len()], "step {step}");
        }
        assert!(dechunk(b"zz\r\n", 4).is_err());
        assert!(dechunk(b"3\r\nabcX\r\n", 64).is_err());
        assert_eq!(dechunk(b"3\r\nab", 64), Err("truncated".to_string()));
        // A chunk written by write_chunk reads back.
        let mut w = Vec::new();
        write_chunk(&mut w, b"payload");
        w.extend_from_slice(LAST_CHUNK);
        assert_eq!(dechunk(&w, 3).expect("decodes").0, b"payload");
    }
}
