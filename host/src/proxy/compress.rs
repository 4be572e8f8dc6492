//! HTTP response compression (`compression algo|type|offload`), deciding
//! as HAProxy 3.0's compression filter decides (src/flt_http_comp.c):
//!
//! - on the request: the algorithm is the first configured one (the
//!   backend's list, else the frontend's; the last configured first, as
//!   HAProxy keeps them) that the `Accept-Encoding` value with the highest
//!   q-value names (`*` names any); old `Mozilla/4` agents get none;
//!   `identity` in the list applies when nothing else does. `offload`
//!   then removes `Accept-Encoding` before the server sees it.
//! - on the response: only for HTTP/1.1 requests and responses, not HEAD,
//!   status 200-203, a body of known length (content-length or chunked), no
//!   `Content-Encoding`, no `Cache-Control: no-transform`, at most one valid
//!   ETag, a content type not `multipart/*` and, when `compression type` is
//!   set, starting with one of its types (no content type then: none).
//! - a compressed response loses its `Content-Length`, is sent chunked, gets
//!   `Vary: Accept-Encoding` (appended to an existing Vary), a weak ETag and
//!   `Content-Encoding`.
//!
//! The body is compressed as it streams: each piece that arrives is
//! compressed and flushed at once (no whole-body buffering).

use crate::config::{self, CompressionAlgo};
use crate::proxy::body::ProxyBody;
use bytes::Bytes;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, Version};
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A proxy's compression settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// HAProxy's order: the last configured algorithm first.
    algos: Vec<CompressionAlgo>,
    /// Content-type prefixes (empty: any type).
    types: Vec<String>,
    offload: bool,
}

impl Settings {
    pub fn from_config(c: &config::Compression) -> Settings {
        Settings {
            algos: c.algos.iter().rev().copied().collect(),
            types: c.types.clone(),
            offload: c.offload,
        }
    }
}

/// The token an algorithm answers to in `Accept-Encoding` and names in
/// `Content-Encoding`.
fn token(a: CompressionAlgo) -> &'static str {
    match a {
        CompressionAlgo::Identity => "identity",
        CompressionAlgo::Gzip => "gzip",
        CompressionAlgo::Deflate | CompressionAlgo::RawDeflate => "deflate",
    }
}

/// The settings HAProxy consults: the backend's when it has them, else the
/// frontend's (`pick` says whether a proxy's settings count).
fn first<'a>(
    proxies: &[Option<&'a Settings>],
    pick: impl Fn(&Settings) -> bool,
) -> Option<&'a Settings> {
    proxies.iter().flatten().copied().find(|s| pick(s))
}

/// Whether the user agent is an old `Mozilla/4` that HAProxy does not
/// compress for (all but MSIE 6 with XP SP2 and MSIE 7+).
fn old_mozilla(ua: &[u8]) -> bool {
    if ua.len() < 9 || &ua[..9] != b"Mozilla/4" {
        return false;
    }
    ua.len() < 31
        || &ua[25..30] != b"MSIE "
        || ua[30] < b'6'
        || (ua[30] == b'6' && (ua.len() < 54 || &ua[51..54] != b"SV1"))
}

/// HAProxy's q-value reading: "1" is 1000, "0.5" 500, capped at 1000.
fn qvalue(v: &[u8]) -> u32 {
    let digit = |i: usize| {
        v.get(i)
            .filter(|c| c.is_ascii_digit())
            .map(|c| u32::from(c - b'0'))
    };
    let Some(units) = digit(0) else { return 1000 };
    let mut q = units * 1000;
    if v.get(1) == Some(&b'.') {
        for (i, scale) in [(2, 100), (3, 10), (4, 1)] {
            match digit(i) {
                Some(d) => q += d * scale,
                None => break,
            }
        }
    }
    q.min(1000)
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// One `Accept-Encoding` element: its token and q-value.
fn element(e: &[u8]) -> (&[u8], u32) {
    let e = e.trim_ascii_start();
    let n = e.iter().position(|&c| !is_token_char(c)).unwrap_or(e.len());
    let (tok, mut rest) = e.split_at(n);
    // The first parameter that is "q=..." gives the q-value.
    let mut q = 1000;
    while let Some(semi) = rest.iter().position(|&c| c == b';') {
        let p = rest[semi + 1..].trim_ascii_start();
        if let Some(v) = p.strip_prefix(b"q=") {
            q = qvalue(v);
            break;
        }
        rest = &rest[semi + 1..];
    }
    (tok, q)
}

/// Chooses the response compression for a request, `proxies` being the
/// backend's then the frontend's settings. Applies `offload` to `req`.
pub fn choose(req: &mut HeaderMap, proxies: &[Option<&Settings>]) -> Option<CompressionAlgo> {
    if proxies.iter().all(Option::is_none) {
        return None;
    }
    if req
        .get(header::USER_AGENT)
        .is_some_and(|ua| old_mozilla(ua.as_bytes()))
    {
        return None;
    }
    let mut chosen = None;
    if let Some(s) = first(proxies, |s| !s.algos.is_empty()) {
        let mut best = 0;
        for value in req.get_all(header::ACCEPT_ENCODING) {
            for e in value.as_bytes().split(|&c| c == b',') {
                let (tok, q) = element(e);
                if q <= best || tok.is_empty() {
                    continue;
                }
                let star = tok[0] == b'*';
                if let Some(&a) = s
                    .algos
                    .iter()
                    .find(|&&a| star || tok.eq_ignore_ascii_case(token(a).as_bytes()))
                {
                    chosen = Some(a);
                    best = q;
                }
            }
        }
        if chosen.is_some() {
            if proxies.iter().flatten().any(|s| s.offload) {
                req.remove(header::ACCEPT_ENCODING);
            }
            return chosen;
        }
        // identity needs no header.
        if s.algos.contains(&CompressionAlgo::Identity) {
            return Some(CompressionAlgo::Identity);
        }
    }
    None
}

/// What the request said that the response decision needs.
pub struct RequestFacts {
    pub http11: bool,
    pub head: bool,
}

impl RequestFacts {
    pub fn of(method: &Method, version: Version) -> RequestFacts {
        RequestFacts {
            http11: version >= Version::HTTP_11,
            head: method == Method::HEAD,
        }
    }
}

/// Whether an ETag value is valid: `"..."` or `W/"..."`.
fn valid_etag(v: &[u8]) -> bool {
    let v = v.strip_prefix(b"W/").unwrap_or(v);
    v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"'
}

/// Whether the response (with body framing `sized`: a content-length or
/// chunked coding) may be compressed.
fn eligible(resp: &Response<ProxyBody>, req: &RequestFacts, types: &[String], sized: bool) -> bool {
    let h = resp.headers();
    let status = resp.status().as_u16();
    if !req.http11 || resp.version() < Version::HTTP_11 || req.head {
        return false;
    }
    if !(200..=203).contains(&status) || !sized {
        return false;
    }
    if h.contains_key(header::CONTENT_ENCODING) {
        return false;
    }
    let no_transform = h.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.as_bytes()
            .split(|&c| c == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    });
    if no_transform {
        return false;
    }
    let mut etags = h.get_all(header::ETAG).iter();
    if let Some(e) = etags.next() {
        if !valid_etag(e.as_bytes()) || etags.next().is_some() {
            return false;
        }
    }
    match h.get(header::CONTENT_TYPE) {
        Some(ct) => {
            let ct = ct.as_bytes();
            let starts = |p: &[u8]| ct.len() >= p.len() && ct[..p.len()].eq_ignore_ascii_case(p);
            !starts(b"multipart")
                && (types.is_empty() || types.iter().any(|t| starts(t.as_bytes())))
        }
        None => types.is_empty(),
    }
}

/// Whether the body's length is known (a length or chunked framing).
fn sized(resp: &Response<ProxyBody>) -> bool {
    let h = resp.headers();
    if h.contains_key(header::CONTENT_LENGTH) {
        return true;
    }
    let chunked_last = h
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .rfind(|t| !t.is_empty())
        .map(|t| t.eq_ignore_ascii_case("chunked"));
    match chunked_last {
        Some(c) => c,
        // No framing header (a server's is not kept): a server's body has
        // a known length unless it is read until the close; luahost's own
        // bodies (services, replies) are framed by their writer.
        None => match resp.body() {
            ProxyBody::Upstream(b) => !b.until_close(),
            _ => true,
        },
    }
}

/// Compresses `resp` with `algo` if HAProxy would; `types` are the
/// backend's `compression type` list, else the frontend's.
pub fn apply(
    resp: Response<ProxyBody>,
    algo: CompressionAlgo,
    req: &RequestFacts,
    proxies: &[Option<&Settings>],
) -> Response<ProxyBody> {
    let types = first(proxies, |s| !s.types.is_empty())
        .map(|s| s.types.as_slice())
        .unwrap_or_default();
    let sized = sized(&resp);
    if !eligible(&resp, req, types, sized) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let h = &mut parts.headers;
    h.remove(header::CONTENT_LENGTH);
    let chunked = h
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if !chunked {
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    if let Some(e) = h.get_mut(header::ETAG) {
        if e.as_bytes().first() == Some(&b'"') {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(e.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                *e = v;
            }
        }
    }
    add_vary(h);
    if algo != CompressionAlgo::Identity {
        h.append(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(token(algo)),
        );
    }
    let body = ProxyBody::Compressed(Box::new(CompressedBody {
        inner: body,
        coder: Some(Coder::new(algo)),
        taken: 0,
    }));
    Response::from_parts(parts, body)
}

/// Adds `Vary: Accept-Encoding` unless some Vary element already is
/// `Accept-Encoding`; appended to the last Vary field when there is one.
fn add_vary(h: &mut HeaderMap) {
    let present = h.get_all(header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|&c| c == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"accept-encoding"))
    });
    if present {
        return;
    }
    let fields: Vec<HeaderValue> = h.get_all(header::VARY).iter().cloned().collect();
    let Some((last, rest)) = fields.split_last() else {
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        return;
    };
    let mut joined = last.as_bytes().to_vec();
    // HAProxy appends with a bare comma.
    joined.extend_from_slice(b",Accept-Encoding");
    let Ok(last) = HeaderValue::from_bytes(&joined) else {
        return;
    };
    h.remove(header::VARY);
    for v in rest {
        h.append(header::VARY, v.clone());
    }
    h.append(header::VARY, last);
}

/// HAProxy's default `tune.comp.maxlevel`.
const LEVEL: u32 = 1;

/// A streaming compressor writing into a buffer that is emptied after each
/// piece.
enum Coder {
    Identity,
    Gzip(GzEncoder<Vec<u8>>),
    Zlib(ZlibEncoder<Vec<u8>>),
    Raw(DeflateEncoder<Vec<u8>>),
}

impl Coder {
    fn new(algo: CompressionAlgo) -> Coder {
        let level = flate2::Compression::new(LEVEL);
        match algo {
            CompressionAlgo::Identity => Coder::Identity,
            CompressionAlgo::Gzip => Coder::Gzip(GzEncoder::new(Vec::new(), level)),
            CompressionAlgo::Deflate => Coder::Zlib(ZlibEncoder::new(Vec::new(), level)),
            CompressionAlgo::RawDeflate => Coder::Raw(DeflateEncoder::new(Vec::new(), level)),
        }
    }

    /// Compresses `data` and flushes, returning what is ready to send.
    fn piece(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        fn run<W: Write>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
            w.write_all(data)?;
            w.flush()
        }
        Ok(match self {
            Coder::Identity => data.to_vec(),
            Coder::Gzip(e) => {
                run(e, data)?;
                std::mem::take(e.get_mut())
            }
            Coder::Zlib(e) => {
                run(e, data)?;
                std::mem::take(e.get_mut())
            }
            Coder::Raw(e) => {
                run(e, data)?;
                std::mem::take(e.get_mut())
            }
        })
    }

    /// The end of the stream (trailer included).
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Coder::Identity => Ok(Vec::new()),
            Coder::Gzip(e) => e.finish(),
            Coder::Zlib(e) => e.finish(),
            Coder::Raw(e) => e.finish(),
        }
    }
}

/// A response body compressed as it streams.
pub struct CompressedBody {
    inner: ProxyBody,
    /// None once finished.
    coder: Option<Coder>,
    /// Bytes taken from `inner` so far: the size before compression, which
    /// HAProxy's `%B` counts.
    taken: u64,
}

impl CompressedBody {
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        loop {
            let Some(coder) = self.coder.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are dropped, as the message is re-framed.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    self.taken += data.len() as u64;
                    let out = coder.piece(&data)?;
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(None) => {
                    let tail = match self.coder.take() {
                        Some(c) => c.finish()?,
                        None => Vec::new(),
                    };
                    if tail.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(tail)))));
                }
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.coder.is_none()
    }

    /// The body bytes taken for compression so far (uncompressed).
    pub fn taken(&self) -> u64 {
        self.taken
    }

    pub fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn settings(algos: &[CompressionAlgo], types: &[&str], offload: bool) -> Settings {
        Settings::from_config(&config::Compression {
            algos: algos.to_vec(),
            types: types.iter().map(|t| t.to_string()).collect(),
            offload,
            ..Default::default()
        })
    }

    fn ae(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    use CompressionAlgo::*;

    #[test]
    fn the_client_preference_and_the_configured_order_decide() {
        let s = settings(&[Gzip, Deflate], &[], false);
        let c = |v: &[&str]| choose(&mut ae(v), &[None, Some(&s)]);
        assert_eq!(c(&["gzip, deflate"]), Some(Gzip));
        assert_eq!(c(&["deflate, gzip"]), Some(Deflate));
        assert_eq!(c(&["deflate;q=0.5, gzip;q=0.8"]), Some(Gzip));
        assert_eq!(c(&["gzip;q=0, deflate;q=0.1"]), Some(Deflate));
        assert_eq!(c(&["GZIP"]), Some(Gzip));
        assert_eq!(c(&["br"]), None);
        assert_eq!(c(&[]), None);
        // "*" takes the first in HAProxy's list: the last configured.
        assert_eq!(c(&["*"]), Some(Deflate));
        assert_eq!(c(&["br", "gzip"]), Some(Gzip));
        let mut h = ae(&["gzip"]);
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static("Mozilla/4.0 (compatible; X)"),
        );
        assert_eq!(choose(&mut h, &[Some(&s)]), None);
        let id = settings(&[Identity], &[], false);
        assert_eq!(choose(&mut ae(&["br"]), &[Some(&id)]), Some(Identity));
        // The backend's settings win over the frontend's.
        let be = settings(&[Deflate], &[], true);
        let mut h = ae(&["gzip, deflate"]);
        assert_eq!(choose(&mut h, &[Some(&be), Some(&s)]), Some(Deflate));
        assert!(h.get(header::ACCEPT_ENCODING).is_none(), "offloaded");
    }

    fn response(headers: &[(&str, &str)], body: &'static str) -> Response<ProxyBody> {
        let mut r = Response::new(ProxyBody::full(body));
        for (n, v) in headers {
            r.headers_mut().append(
                header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    const GET11: RequestFacts = RequestFacts {
        http11: true,
        head: false,
    };

    fn collect(r: Response<ProxyBody>) -> Vec<u8> {
        let mut body = r.into_body();
        let mut out = Vec::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while let Poll::Ready(Some(Ok(f))) = Pin::new(&mut body).poll_frame(&mut cx) {
            out.extend_from_slice(&f.into_data().unwrap_or_default());
        }
        out
    }

    #[test]
    fn an_eligible_response_is_reframed_and_compressed() {
        let s = settings(&[Gzip], &["text/"], false);
        let r = response(
            &[
                ("content-type", "text/plain"),
                ("content-length", "11"),
                ("etag", "\"x\""),
                ("vary", "Origin"),
            ],
            "hello hello",
        );
        let r = apply(r, Gzip, &GET11, &[Some(&s)]);
        let h = r.headers();
        assert_eq!(h["content-encoding"], "gzip");
        assert_eq!(h["transfer-encoding"], "chunked");
        assert_eq!(h["etag"], "W/\"x\"");
        assert_eq!(h["vary"], "Origin,Accept-Encoding");
        assert!(h.get("content-length").is_none());
        let gz = collect(r);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello hello");
    }

    #[test]
    fn responses_haproxy_leaves_alone() {
        let s = settings(&[Gzip], &["text/html"], false);
        let kept = |hs: &[(&str, &str)], req: &RequestFacts| {
            // Left alone: not re-framed.
            let r = apply(response(hs, "x"), Gzip, req, &[Some(&s)]);
            r.headers().get("transfer-encoding").is_none()
        };
        let html = ("content-type", "text/html");
        assert!(!kept(&[html], &GET11));
        assert!(kept(&[("content-type", "text/plain")], &GET11));
        assert!(kept(&[], &GET11), "a type list needs a content type");
        assert!(kept(&[html, ("content-encoding", "br")], &GET11));
        assert!(kept(
            &[html, ("cache-control", "public, no-transform")],
            &GET11
        ));
        assert!(kept(&[html, ("etag", "bad")], &GET11));
        assert!(kept(&[html, ("etag", "\"a\""), ("etag", "\"b\"")], &GET11));
        let old = RequestFacts {
            http11: false,
            head: false,
        };
        assert!(kept(&[html], &old));
        let head = RequestFacts {
            http11: true,
            head: true,
        };
        assert!(kept(&[html], &head));
        let mut r = response(&[html], "x");
        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
        assert!(apply(r, Gzip, &GET11, &[Some(&s)])
            .headers()
            .get("content-encoding")
            .is_none());
        let any = settings(&[Gzip], &[], false);
        let r = apply(
            response(&[("content-type", "multipart/mixed")], "x"),
            Gzip,
            &GET11,
            &[Some(&any)],
        );
        assert!(r.headers().get("content-encoding").is_none());
    }

    #[test]
    fn q_values_read_as_haproxy_reads_them() {
        assert_eq!(qvalue(b"1"), 1000);
        assert_eq!(qvalue(b"0"), 0);
        assert_eq!(qvalue(b"0.5"), 500);
        assert_eq!(qvalue(b"0.123"), 123);
        assert_eq!(qvalue(b"x"), 1000);
        assert_eq!(element(b" gzip ; q=0.2"), (&b"gzip"[..], 200));
    }
}
