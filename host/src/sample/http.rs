//! HTTP helpers for fetches: header values split the way HAProxy splits
//! them, cookies, the parts of a request target, HTTP/1 requests read from
//! a TCP buffer, and the SNI of a TLS ClientHello.

use bytes::Bytes;
use hyper::http::header::HeaderMap;
use hyper::http::{request, Request, Version};

/// Splits a header value at commas outside double quotes (a backslash
/// escapes inside quotes), trimming blanks around each part.
pub fn split_commas(v: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                out.push(trim(&v[start..i]));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(trim(&v[start..]));
    out
}

/// Strips spaces and tabs at both ends.
pub fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(s, |e| e + 1);
    &v[s..e.max(s)]
}

/// The values of header `name` (every header when `name` is empty), in
/// order; split at commas unless `full`.
pub fn header_values(h: &HeaderMap, name: &str, full: bool) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut push = |v: &[u8]| {
        if full {
            out.push(Bytes::copy_from_slice(trim(v)));
        } else {
            out.extend(split_commas(v).into_iter().map(Bytes::copy_from_slice));
        }
    };
    if name.is_empty() {
        h.values().for_each(|v| push(v.as_bytes()));
    } else {
        h.get_all(name).iter().for_each(|v| push(v.as_bytes()));
    }
    out
}

/// Picks occurrence `occ` of `values`: positive from the first (1 is the
/// first), negative from the last (-1 is the last), 0 the last.
pub fn pick(mut values: Vec<Bytes>, occ: i64) -> Option<Bytes> {
    let n = values.len() as i64;
    let idx = match occ {
        0 => n - 1,
        o if o > 0 => o - 1,
        o => n + o,
    };
    if idx < 0 || idx >= n {
        return None;
    }
    Some(values.swap_remove(idx as usize))
}

/// The whole header block as `name: value` lines ending with the empty
/// line, as `req.hdrs` shows it.
pub fn header_block(h: &HeaderMap) -> Bytes {
    let mut out = Vec::new();
    for (n, v) in h.iter() {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// The names of the header fields, one per field line.
pub fn header_names(h: &HeaderMap) -> Vec<&str> {
    h.iter().map(|(n, _)| n.as_str()).collect()
}

/// The cookies of the request's Cookie headers, as (name, value), in order.
pub fn request_cookies(h: &HeaderMap) -> Vec<(Bytes, Bytes)> {
    let mut out = Vec::new();
    for v in h.get_all("cookie") {
        for part in v.as_bytes().split(|&c| c == b';') {
            let part = trim(part);
            if part.is_empty() {
                continue;
            }
            let (n, val) = match part.iter().position(|&c| c == b'=') {
                Some(p) => (trim(&part[..p]), trim(&part[p + 1..])),
                None => (part, &b""[..]),
            };
            out.push((Bytes::copy_from_slice(n), Bytes::copy_from_slice(val)));
        }
    }
    out
}

/// The cookies set by the response's Set-Cookie headers (name, value).
pub fn response_cookies(h: &HeaderMap) -> Vec<(Bytes, Bytes)> {
    h.get_all("set-cookie")
        .iter()
        .filter_map(|v| {
            let first = v.as_bytes().split(|&c| c == b';').next()?;
            let p = first.iter().position(|&c| c == b'=')?;
            Some((
                Bytes::copy_from_slice(trim(&first[..p])),
                Bytes::copy_from_slice(trim(&first[p + 1..])),
            ))
        })
        .collect()
}

/// The request target as received (origin form "/p?q", absolute form,
/// "*" or an authority).
pub fn target(p: &request::Parts) -> String {
    p.uri.to_string()
}

/// Where the path starts in a target: at the first '/' of an origin form,
/// after the authority of an absolute form; None for "*" and authorities.
pub fn path_start(t: &str) -> Option<usize> {
    if t.starts_with('/') {
        return Some(0);
    }
    let after_scheme = t.find("://")? + 3;
    Some(
        t[after_scheme..]
            .find('/')
            .map_or(t.len(), |p| after_scheme + p),
    )
}

/// The path of a target (up to the '?').
pub fn path(t: &str) -> Option<&str> {
    let s = path_start(t)?;
    let rest = &t[s..];
    Some(rest.split('?').next().unwrap_or(rest))
}

/// The query string of a target (after the first '?'), None without '?'.
pub fn query(t: &str) -> Option<&str> {
    t.split_once('?').map(|(_, q)| q)
}

/// The host part of an absolute-form target.
pub fn url_host(t: &str) -> Option<&str> {
    let rest = &t[t.find("://")? + 3..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let auth = &rest[..end];
    Some(auth.rsplit('@').next().unwrap_or(auth))
}

/// Splits `host[:port]` (IPv6 literals in brackets).
pub fn split_host_port(a: &str) -> (&str, Option<&str>) {
    if let Some(rest) = a.strip_prefix('[') {
        if let Some((h, after)) = rest.split_once(']') {
            return (h, after.strip_prefix(':'));
        }
        return (a, None);
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (a, None),
    }
}

/// "1.1" for HTTP/1.1 and so on.
pub fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2.0",
        Version::HTTP_3 => "3.0",
        _ => "1.1",
    }
}

/// Finds URL parameters: the query part begins after '?' (or `delim`) and
/// parameters end at '&', ';' or `delim`. Returns (name, value) pairs.
pub fn url_params(t: &[u8], delim: Option<u8>) -> Vec<(&[u8], &[u8])> {
    let start = t
        .iter()
        .position(|&c| c == b'?' || Some(c) == delim)
        .map(|p| p + 1);
    let Some(start) = start else {
        return Vec::new();
    };
    t[start..]
        .split(|&c| c == b'&' || c == b';' || Some(c) == delim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&c| c == b'=') {
            Some(e) => (&p[..e], &p[e + 1..]),
            None => (p, &b""[..]),
        })
        .collect()
}

/// Parses an HTTP/1 request head at the start of a TCP buffer (HTTP fetches
/// in TCP mode); None until the head is complete or when it is not HTTP.
pub fn parse_request_head(buf: &[u8]) -> Option<request::Parts> {
    let end = find(buf, b"\r\n\r\n")
        .map(|p| p + 2)
        .or_else(|| find(buf, b"\n\n").map(|p| p + 1))?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut rl = lines.next()?.split(' ');
    let (method, uri, ver) = (rl.next()?, rl.next()?, rl.next()?);
    if rl.next().is_some() || method.is_empty() || uri.is_empty() {
        return None;
    }
    let version = match ver {
        "HTTP/1.0" => Version::HTTP_10,
        "HTTP/1.1" => Version::HTTP_11,
        _ => return None,
    };
    let mut b = Request::builder().method(method).uri(uri).version(version);
    for l in lines.filter(|l| !l.is_empty()) {
        let (n, v) = l.split_once(':')?;
        if n.is_empty() || n.ends_with([' ', '\t']) {
            return None;
        }
        b = b.header(n, v.trim_matches([' ', '\t']));
    }
    Some(b.body(()).ok()?.into_parts().0)
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A cursor over TLS handshake bytes; every read is bounds-checked.
struct Rd<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<usize> {
        Some(self.take(1)?[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        let b = self.take(2)?;
        Some(((b[0] as usize) << 8) | b[1] as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize)
    }
}

/// The handshake message type of the TLS record at the start of `buf`
/// (1 for a ClientHello), as `req.ssl_hello_type` reports it.
pub fn tls_hello_type(buf: &[u8]) -> Option<i64> {
    let mut r = Rd { b: buf, pos: 0 };
    if r.u8()? != 0x16 {
        return None;
    }
    r.take(4)?;
    Some(r.u8()? as i64)
}

/// The server name of the TLS ClientHello at the start of `buf`.
pub fn tls_sni(buf: &[u8]) -> Option<Bytes> {
    let mut r = Rd { b: buf, pos: 0 };
    if r.u8()? != 0x16 {
        return None;
    }
    r.take(2)?;
    let rec_len = r.u16()?;
    let rec = r.take(rec_len)?;
    let mut r = Rd { b: rec, pos: 0 };
    if r.u8()? != 1 {
        return None;
    }
    let hs_len = r.u24()?;
    let hs = r.take(hs_len)?;
    let mut r = Rd { b: hs, pos: 0 };
    r.take(2 + 32)?;
    let sid = r.u8()?;
    r.take(sid)?;
    let cs = r.u16()?;
    r.take(cs)?;
    let comp = r.u8()?;
    r.take(comp)?;
    let ext_len = r.u16()?;
    let exts = r.take(ext_len)?;
    let mut r = Rd { b: exts, pos: 0 };
    while r.pos < exts.len() {
        let ty = r.u16()?;
        let len = r.u16()?;
        let data = r.take(len)?;
        if ty != 0 {
            continue;
        }
        let mut s = Rd { b: data, pos: 0 };
        let list = s.u16()?;
        let list = s.take(list)?;
        let mut s = Rd { b: list, pos: 0 };
        while s.pos < list.len() {
            let kind = s.u8()?;
            let n = s.u16()?;
            let name = s.take(n)?;
            if kind == 0 {
                return Some(Bytes::copy_from_slice(name));
            }
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn commas_and_quotes() {
        assert_eq!(split_commas(b"a, b ,c"), vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(split_commas(b"\"x,y\", z"), vec![&b"\"x,y\""[..], b"z"]);
        assert_eq!(
            split_commas(b"\"a\\\",b\",c"),
            vec![&b"\"a\\\",b\""[..], b"c"]
        );
        assert_eq!(split_commas(b""), vec![&b""[..]]);
        assert_eq!(split_commas(b"a,,b"), vec![&b"a"[..], b"", b"b"]);
    }

    #[test]
    fn occurrences() {
        let v = || vec![Bytes::from("a"), Bytes::from("b"), Bytes::from("c")];
        assert_eq!(pick(v(), 1).unwrap(), "a");
        assert_eq!(pick(v(), -1).unwrap(), "c");
        assert_eq!(pick(v(), -2).unwrap(), "b");
        assert_eq!(pick(v(), 0).unwrap(), "c");
        assert_eq!(pick(v(), 4), None);
        assert_eq!(pick(v(), -4), None);
        assert_eq!(pick(Vec::new(), -1), None);
    }

    #[test]
    fn targets() {
        assert_eq!(path("/a/b?c=d"), Some("/a/b"));
        assert_eq!(path("http://h:80/a?x"), Some("/a"));
        assert_eq!(path("http://h"), Some(""));
        assert_eq!(path("*"), None);
        assert_eq!(query("/a?x=1?y"), Some("x=1?y"));
        assert_eq!(query("/a"), None);
        assert_eq!(url_host("http://u@h.x:81/p"), Some("h.x:81"));
        assert_eq!(split_host_port("h.x:81"), ("h.x", Some("81")));
        assert_eq!(split_host_port("[::1]:81"), ("::1", Some("81")));
        assert_eq!(split_host_port("::1"), ("::1", None));
        let p = url_params(b"/p?a=1&b&c=3;d=4", None);
        assert_eq!(
            p,
            vec![
                (&b"a"[..], &b"1"[..]),
                (b"b", b""),
                (b"c", b"3"),
                (b"d", b"4")
            ]
        );
        assert_eq!(
            url_params(b"/p#x|a=1", Some(b'|')),
            vec![(&b"a"[..], &b"1"[..])]
        );
        assert!(url_params(b"/p", None).is_empty());
    }

    #[test]
    fn request_from_tcp_buffer() {
        let p = parse_request_head(b"GET /x?y HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\n\r\nbody")
            .unwrap();
        assert_eq!(p.method, "GET");
        assert_eq!(p.uri, "/x?y");
        assert_eq!(header_values(&p.headers, "x-a", true), vec!["1", "2"]);
        assert!(parse_request_head(b"GET / HTTP/1.1\r\nHost: h\r\n").is_none());
        assert!(parse_request_head(b"\x16\x03\x01\x00\x05hello\r\n\r\n").is_none());
        assert!(parse_request_head(b"GET / HTTP/2.0\r\n\r\n").is_none());
        assert!(parse_request_head(b"GET / HTTP/1.0\n\n").is_some());
        assert!(parse_request_head(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n").is_none());
    }

    #[test]
    fn cookies() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; b= 22 ; a=3".parse().unwrap());
        h.append("cookie", "c".parse().unwrap());
        let c = request_cookies(&h);
        assert_eq!(c.len(), 4);
        assert_eq!((&c[1].0[..], &c[1].1[..]), (&b"b"[..], &b"22"[..]));
        assert_eq!((&c[3].0[..], &c[3].1[..]), (&b"c"[..], &b""[..]));
        let mut h = HeaderMap::new();
        h.append("set-cookie", "s=v; Path=/".parse().unwrap());
        h.append("set-cookie", "bad".parse().unwrap());
        assert_eq!(
            response_cookies(&h),
            vec![(Bytes::from("s"), Bytes::from("v"))]
        );
    }

    /// A minimal ClientHello carrying `name` as SNI.
    pub fn client_hello(name: &str) -> Vec<u8> {
        let n = name.as_bytes();
        let mut sni = vec![0, 0];
        let list_len = 3 + n.len();
        let mut ext_data = vec![
            (list_len >> 8) as u8,
            list_len as u8,
            0,
            (n.len() >> 8) as u8,
            n.len() as u8,
        ];
        ext_data.extend_from_slice(n);
        sni.extend_from_slice(&[(ext_data.len() >> 8) as u8, ext_data.len() as u8]);
        sni.extend_from_slice(&ext_data);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0u8; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&[(sni.len() >> 8) as u8, sni.len() as u8]);
        body.extend_from_slice(&sni);
        let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1, (hs.len() >> 8) as u8, hs.len() as u8];
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn sni() {
        let h = client_hello("www.example.com");
        assert_eq!(tls_sni(&h).unwrap(), "www.example.com");
        assert_eq!(tls_hello_type(&h), Some(1));
        // Truncated or foreign data never panics.
        for n in 0..h.len() {
            assert_eq!(tls_sni(&h[..n]), None);
        }
        assert_eq!(tls_sni(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(tls_hello_type(b"GET"), None);
    }
}
