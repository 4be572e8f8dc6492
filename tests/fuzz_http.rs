//! HTTP/1 request framing fuzz over real sockets (issue 11, item 10).
//!
//! One luahost process serves two frontends on 127.0.0.1: a Lua HTTP
//! service that reads the whole request body, and a proxy to a small origin
//! server run by this test. Each case generates 1 to 3 pipelined requests
//! from valid ones and mutates at most one of them (Content-Length and
//! Transfer-Encoding variants, chunk sizes, bare CR/LF, obs-fold, long
//! lines, NULs, bad request lines and header names, truncation), sends the
//! same bytes to both frontends, and checks what comes back:
//!
//! - the bytes received parse as a sequence of complete HTTP/1.1 responses;
//! - there are no more responses than requests sent;
//! - an error response (4xx/5xx, which only the proxy itself produces
//!   here) is the last one, and the connection is then closed: a malformed
//!   request gets at most one response;
//! - requests that were not mutated are all answered, with 200 and the body
//!   that says the service or origin saw the method and body sent;
//! - the process stays up and never prints "panicked".
//!
//! Failures are collected, not stopped at: the test prints every failing
//! seed with its vector and the bytes sent, then fails. Replay one with
//! `FUZZ_SEED=S cargo test --test fuzz_http`; run longer with
//! `FUZZ_CASES=N` (default 300 cases, 600 connections).

use luahost_suite::fuzz::{self, Rng};
use luahost_suite::{free_port, Proxy};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Seeds that failed on the code this test was written against (hyper's
/// HTTP/1 server: a malformed request got hyper's own 400/431 and then
/// luahost's error page, two responses), one per vector, run first every
/// time. A seed names an input only for this generator: when `generate`
/// changes, find the failing seeds again with a fresh run.
const REGRESSIONS: &[u64] = &[
    175225725907482903,   // NUL byte in the second of two requests
    282416469149769656,   // request line "GET /x HTTP/0.9", then two valid ones
    559770182411824468,   // transfer-encoding "identity"
    573964507764331520,   // CR LF inside a header value
    769805630950788028,   // two content-lengths, 0 and 5
    921978667253251906,   // obs-fold in the second request
    1352120058540075179,  // 70000-byte header value (431)
    1538902641826454216,  // content-length "5, 6"
    2041496433770691273,  // space before the colon
    2783652095049660793,  // 70000-byte URI in the third request
    3320599235242279623,  // header name "é"
    14184940103559822437, // "chunked, gzip" with a content-length after two valid requests
];

/// Default number of cases (each is sent to both frontends).
const DEFAULT_CASES: u64 = 300;

/// Connections handled at once.
const PARALLEL: usize = 6;

/// How long a connection may stay silent before the test stops waiting.
const IDLE: Duration = Duration::from_millis(500);

const SERVICE_LUA: &str = r#"
core.register_service("fuzz", "http", function(applet)
  local body = applet:receive() or ""
  local answer = "svc " .. applet.method .. " " .. #body
  applet:set_status(200)
  applet:add_header("content-length", #answer)
  applet:start_response()
  applet:send(answer)
end)
"#;

fn config(svc: u16, proxied: u16, origin: u16) -> String {
    format!(
        "global\n  nbthread 2\n  lua-load svc.lua\n\
         defaults\n  mode http\n  timeout client 3s\n  timeout http-request 2s\n\
         \x20 timeout server 3s\n  timeout connect 1s\n\
         frontend svc\n  bind 127.0.0.1:{svc}\n  http-request use-service lua.fuzz\n\
         frontend proxied\n  bind 127.0.0.1:{proxied}\n  default_backend origin\n\
         backend origin\n  server o1 127.0.0.1:{origin}\n"
    )
}

// ---------------------------------------------------------------------------
// The origin: a strict, small HTTP/1.1 server answering "origin METHOD LEN".
// ---------------------------------------------------------------------------

/// Runs the origin until `stop` is set.
fn origin(listener: TcpListener, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).ok();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                std::thread::spawn(move || {
                    let _ = serve_origin_connection(s);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve_origin_connection(s: TcpStream) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let method = line.split(' ').next().unwrap_or_default().to_string();
        let (mut len, mut chunked, mut close) = (0usize, false, false);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((n, v)) = h.split_once(':') else {
                return Ok(());
            };
            let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match n.as_str() {
                "content-length" => len = v.parse().unwrap_or(0),
                "transfer-encoding" => chunked = v.ends_with("chunked"),
                "connection" => close = v.contains("close"),
                _ => {}
            }
        }
        let mut got = 0usize;
        if chunked {
            loop {
                let mut size = String::new();
                r.read_line(&mut size)?;
                let Ok(n) = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                else {
                    return Ok(());
                };
                if n == 0 {
                    // Trailers up to the empty line.
                    loop {
                        let mut t = String::new();
                        if r.read_line(&mut t)? == 0 || t.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let mut data = vec![0; n + 2];
                r.read_exact(&mut data)?;
                got += n;
            }
        } else if len > 0 {
            let mut data = vec![0; len];
            r.read_exact(&mut data)?;
            got = len;
        }
        let body = format!("origin {method} {got}");
        write!(
            w,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        if close {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------
// Requests and their mutations.
// ---------------------------------------------------------------------------

/// A request before serialization.
#[derive(Clone)]
struct Req {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    /// The framed body (chunks included).
    body: Vec<u8>,
    /// The body's length once unframed, for the expected answer.
    payload: usize,
}

impl Req {
    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} {}\r\n", self.method, self.target, self.version).into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
    }
}

fn payload(rng: &mut Rng, max: usize) -> Vec<u8> {
    (0..rng.below(max + 1))
        .map(|_| *rng.pick(b"abcdefghijklmnopqrstuvwxyz0123456789 .-"))
        .collect()
}

/// Chunked framing of `data` in 1 to 4 pieces.
fn chunked(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len());
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A valid request.
fn valid(rng: &mut Rng, i: usize, last: bool) -> Req {
    let method = *rng.pick(&["GET", "GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]);
    let mut r = Req {
        method: method.to_string(),
        target: format!("/fuzz/{i}?x={}", rng.below(1000)),
        // HTTP/1.0 closes after its response: only last in a pipeline.
        version: if last && rng.one_in(8) {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        }
        .to_string(),
        headers: vec![("host".into(), "fuzz.test".into())],
        body: Vec::new(),
        payload: 0,
    };
    if rng.one_in(3) {
        r.headers.push(("user-agent".into(), "fuzz/1.0".into()));
    }
    if matches!(method, "POST" | "PUT" | "PATCH") || rng.one_in(6) {
        let data = payload(rng, 300);
        r.payload = data.len();
        if r.version == "HTTP/1.1" && rng.one_in(2) {
            r.headers
                .push(("transfer-encoding".into(), "chunked".into()));
            r.body = chunked(rng, &data);
        } else {
            r.headers
                .push(("content-length".into(), data.len().to_string()));
            r.body = data;
        }
    }
    r
}

/// Mutates `r` into a (probably) malformed request; returns the vector's
/// name.
fn mutate(rng: &mut Rng, r: &mut Req) -> String {
    match rng.below(14) {
        0 => {
            let v = *rng.pick(&[
                "+5",
                "-1",
                "1e3",
                "0x10",
                " 5 ",
                "5,5",
                "5, 6",
                "99999999999999999999",
                "",
                "abc",
                "5 5",
                "018446744073709551621",
            ]);
            r.set_header("content-length", v);
            format!("content-length {v:?}")
        }
        1 => {
            let a = r.payload;
            let b = a + 1 + rng.below(5);
            r.headers.push(("content-length".into(), a.to_string()));
            r.headers.push(("content-length".into(), b.to_string()));
            format!("two content-lengths {a} and {b}")
        }
        2 => {
            let off = r.body.len() as i64 + *rng.pick(&[-3i64, -1, 1, 7]);
            let v = off.max(0).to_string();
            r.set_header("content-length", &v);
            format!("content-length {v} for a {}-byte body", r.body.len())
        }
        3 => {
            let v = *rng.pick(&[
                "Chunked",
                "gzip, chunked",
                "chunked, gzip",
                "chunked\x0b",
                " chunked",
                "identity",
                "chunked, chunked",
                "xchunked",
                "",
                "chunked;q=1",
            ]);
            let data = payload(rng, 60);
            r.payload = data.len();
            r.body = chunked(rng, &data);
            r.set_header("transfer-encoding", v);
            if rng.one_in(2) {
                r.headers
                    .push(("content-length".into(), data.len().to_string()));
                format!("transfer-encoding {v:?} and content-length")
            } else {
                format!("transfer-encoding {v:?}")
            }
        }
        4 => {
            let data = payload(rng, 40)
                .into_iter()
                .chain(*b"x")
                .collect::<Vec<u8>>();
            let size = rng
                .pick(&[
                    "0x5".to_string(),
                    "-1".to_string(),
                    "+5".to_string(),
                    format!("{:x} ", data.len()),
                    format!("{:x};ext=1", data.len()),
                    format!("000{:x}", data.len()),
                    "ffffffffffffffffffff".to_string(),
                    format!("{:x}", data.len() + 9),
                    format!("{:X}", data.len()),
                    "z".to_string(),
                    String::new(),
                ])
                .clone();
            r.set_header("transfer-encoding", "chunked");
            r.headers.retain(|(n, _)| n != "content-length");
            let mut body = format!("{size}\r\n").into_bytes();
            body.extend_from_slice(&data);
            const TAILS: [&[u8]; 5] = [
                b"\r\n0\r\n\r\n",
                b"0\r\n\r\n",
                b"\r\n",
                b"\r\n0\r\nx-t: y\r\n\r\n",
                b"\n0\n\n",
            ];
            body.extend_from_slice(TAILS[rng.below(TAILS.len())]);
            r.body = body;
            format!("chunk size {size:?}")
        }
        5 => {
            let v = *rng.pick(&["a\rb", "a\nb", "a\r\nb", "\r"]);
            r.headers.push(("x-bare".into(), v.into()));
            format!("bare CR/LF in a header value {v:?}")
        }
        6 => {
            r.headers
                .push(("x-fold".into(), "first\r\n  continued".into()));
            "obs-fold".into()
        }
        7 => {
            let n = *rng.pick(&[8_000usize, 20_000, 70_000]);
            if rng.one_in(2) {
                r.headers.push(("x-long".into(), "v".repeat(n)));
                format!("{n}-byte header value")
            } else {
                r.target = format!("/{}", "u".repeat(n));
                format!("{n}-byte URI")
            }
        }
        8 => {
            match rng.below(3) {
                0 => r.headers.push(("x-nul".into(), "a\0b".into())),
                1 => r.headers.push(("x-n\0l".into(), "v".into())),
                _ => r.target.push('\0'),
            }
            "NUL byte".into()
        }
        9 => {
            let n = *rng.pick(&["bad name", " leading", "na\x7fme", "", "name ", "x(y)", "é"]);
            r.headers.push((n.into(), "v".into()));
            format!("header name {n:?}")
        }
        10 => {
            let (m, t, v) = *rng.pick(&[
                ("GET", "/x", "HTTP/2.0"),
                ("GET", "/x", "HTTP/1.10"),
                ("GET", "/x", "http/1.1"),
                ("GET", "x", "HTTP/1.1"),
                ("GET", "/x", "HTTP/1.1 extra"),
                ("G\x01T", "/x", "HTTP/1.1"),
                ("GET", "/x", ""),
                ("GET", " /x", "HTTP/1.1"),
                ("", "/x", "HTTP/1.1"),
                ("GET", "/x", "HTTP/0.9"),
            ]);
            r.method = m.into();
            r.target = t.into();
            r.version = v.into();
            format!("request line {m:?} {t:?} {v:?}")
        }
        11 => {
            if rng.one_in(2) {
                r.headers.retain(|(n, _)| n != "host");
                "no host".into()
            } else {
                r.headers.push(("host".into(), "other.test".into()));
                "two hosts".into()
            }
        }
        12 => {
            r.headers
                .push(("name ".into(), "space before colon".into()));
            "space before the colon".into()
        }
        _ => {
            // Bare LF line endings in the head.
            r.headers.push(("x-lf".into(), "v\nx-other: w".into()));
            "bare LF line ending".into()
        }
    }
}

/// A generated connection: the bytes to send and what to expect.
struct Case {
    bytes: Vec<u8>,
    requests: usize,
    /// Expected answers when nothing was mutated: (method, body length).
    expected: Option<Vec<(String, usize)>>,
    /// Half-close after sending.
    half_close: bool,
    /// Send in pieces of this many bytes at most (each its own segment),
    /// so the server parses heads and chunk sizes split anywhere.
    pieces: Option<usize>,
    vector: String,
}

fn generate(rng: &mut Rng) -> Case {
    let n = 1 + rng.below(3);
    let bad = if rng.one_in(4) {
        None
    } else {
        Some(rng.below(n))
    };
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    let mut vector = String::from("valid");
    for i in 0..n {
        let mut r = valid(rng, i, i + 1 == n);
        if Some(i) == bad {
            vector = format!("request {} of {n}: {}", i + 1, mutate(rng, &mut r));
        }
        expected.push((r.method.clone(), r.payload));
        bytes.extend_from_slice(&r.bytes());
    }
    let mut half_close = bad.is_some() && rng.one_in(2);
    if rng.one_in(6) {
        let cut = rng.below(bytes.len());
        bytes.truncate(cut);
        vector = format!("{vector}, truncated at byte {cut}");
        half_close = true;
    }
    let clean = bad.is_none() && !half_close;
    // Drawn last, so the seeds above keep naming the same bytes.
    let pieces = rng.one_in(4).then(|| 1 + rng.below(40));
    if let Some(n) = pieces {
        vector = format!("{vector}, sent in {n}-byte pieces");
    }
    Case {
        bytes,
        requests: n,
        expected: clean.then_some(expected),
        half_close,
        pieces,
        vector,
    }
}

// ---------------------------------------------------------------------------
// Responses.
// ---------------------------------------------------------------------------

struct Resp {
    status: u16,
    body: Vec<u8>,
}

fn line_at(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let i = b[at..].windows(2).position(|w| w == b"\r\n")?;
    Some((&b[at..at + i], at + i + 2))
}

/// Parses `b` as complete responses. Ok((responses, rest)) where `rest` is
/// the length of an incomplete last response (0 if none); a body delimited
/// by the close counts as complete only when `closed`.
fn parse_responses(b: &[u8], closed: bool) -> Result<(Vec<Resp>, usize), String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let start = at;
        let incomplete = |out: Vec<Resp>| Ok((out, b.len() - start));
        let Some((status_line, next)) = line_at(b, at) else {
            return incomplete(out);
        };
        let text = String::from_utf8_lossy(status_line);
        let mut parts = text.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not a status line: {text:?}"))?;
        if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
            return Err(format!("not a status line: {text:?}"));
        }
        at = next;
        let (mut len, mut chunked) = (None, false);
        loop {
            let Some((h, next)) = line_at(b, at) else {
                return incomplete(out);
            };
            at = next;
            if h.is_empty() {
                break;
            }
            let h = String::from_utf8_lossy(h);
            let (n, v) = h
                .split_once(':')
                .ok_or_else(|| format!("bad response header {h:?}"))?;
            match n.to_ascii_lowercase().as_str() {
                "content-length" => {
                    len = Some(
                        v.trim()
                            .parse::<usize>()
                            .map_err(|_| format!("bad content-length {v:?}"))?,
                    )
                }
                "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if status == 204 || status == 304 || (100..200).contains(&status) {
        } else if chunked {
            loop {
                let Some((size, next)) = line_at(b, at) else {
                    return incomplete(out);
                };
                let size = String::from_utf8_lossy(size);
                let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| format!("bad chunk size {size:?}"))?;
                at = next;
                if n == 0 {
                    loop {
                        let Some((t, next)) = line_at(b, at) else {
                            return incomplete(out);
                        };
                        at = next;
                        if t.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                if b.len() < at + n + 2 {
                    return incomplete(out);
                }
                body.extend_from_slice(&b[at..at + n]);
                at += n + 2;
            }
        } else if let Some(n) = len {
            if b.len() < at + n {
                return incomplete(out);
            }
            body.extend_from_slice(&b[at..at + n]);
            at += n;
        } else {
            // Delimited by the close.
            if !closed {
                return incomplete(out);
            }
            body.extend_from_slice(&b[at..]);
            at = b.len();
        }
        out.push(Resp { status, body });
    }
    Ok((out, 0))
}

// ---------------------------------------------------------------------------
// Running a case.
// ---------------------------------------------------------------------------

/// Sends the case on a new connection; returns the bytes received and
/// whether the server closed the connection.
fn exchange(port: u16, case: &Case) -> Result<(Vec<u8>, bool), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(50))).ok();
    // A write may fail once the server has answered and closed: that is
    // the server's right after a malformed request.
    match case.pieces {
        None => {
            let _ = s.write_all(&case.bytes);
        }
        Some(n) => {
            let _ = s.set_nodelay(true);
            for piece in case.bytes.chunks(n) {
                if s.write_all(piece).is_err() {
                    break;
                }
            }
        }
    }
    if case.half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut got = Vec::new();
    let mut last_data = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok((got, true)),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                last_data = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // A reset after the server closed with unread request bytes.
            Err(_) => return Ok((got, true)),
        }
        let complete = parse_responses(&got, false)
            .map(|(r, rest)| (r.len(), rest))
            .unwrap_or((0, 1));
        let errored = parse_responses(&got, false)
            .map(|(r, _)| r.iter().any(|r| r.status >= 400))
            .unwrap_or(false);
        // Every request answered: a short grace period for extra bytes.
        let quiet = last_data.elapsed();
        if complete.0 >= case.requests && complete.1 == 0 && quiet > Duration::from_millis(30) {
            return Ok((got, false));
        }
        // Requests that were not mutated must be answered: wait for them
        // as long as a loaded machine may need. After an error response
        // the close must come promptly.
        let limit = if case.expected.is_some() {
            Duration::from_secs(5)
        } else if errored {
            Duration::from_secs(1)
        } else {
            IDLE
        };
        if quiet > limit || Instant::now() > deadline {
            return Ok((got, false));
        }
    }
}

/// The oracle; Err describes the violation.
fn check(case: &Case, got: &[u8], closed: bool, frontend: &str) -> Result<(), String> {
    let (resps, rest) = parse_responses(got, closed)?;
    if rest != 0 && closed {
        return Err(format!(
            "connection closed inside a response ({rest} bytes)"
        ));
    }
    if resps.len() > case.requests {
        return Err(format!(
            "{} responses for {} requests",
            resps.len(),
            case.requests
        ));
    }
    if let Some(i) = resps.iter().position(|r| r.status >= 400) {
        if i + 1 != resps.len() {
            return Err(format!(
                "response {} after error response {} ({})",
                resps[i + 1].status,
                i + 1,
                resps[i].status
            ));
        }
        if !closed && !case.half_close {
            return Err(format!(
                "connection left open after error response {}",
                resps[i].status
            ));
        }
    }
    if let Some(expected) = &case.expected {
        let statuses: Vec<u16> = resps.iter().map(|r| r.status).collect();
        if resps.len() != expected.len() || statuses.iter().any(|s| *s != 200) {
            return Err(format!(
                "valid requests answered {statuses:?}, expected {} x 200",
                expected.len()
            ));
        }
        for (r, (method, len)) in resps.iter().zip(expected) {
            let want = format!("{frontend} {method} {len}");
            if r.body != want.as_bytes() {
                return Err(format!(
                    "body {:?}, expected {want:?}",
                    String::from_utf8_lossy(&r.body)
                ));
            }
        }
    }
    Ok(())
}

fn printable(b: &[u8], max: usize) -> String {
    let mut s: String = b
        .iter()
        .take(max)
        .flat_map(|&c| std::ascii::escape_default(c))
        .map(char::from)
        .collect();
    if b.len() > max {
        s.push_str(&format!("... ({} bytes)", b.len()));
    }
    s
}

#[test]
fn fuzz_http1_request_framing() {
    let (svc, proxied) = (free_port(), free_port());
    let origin_listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let origin_port = origin_listener.local_addr().expect("origin addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let origin_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || origin(origin_listener, stop))
    };
    let cfg = config(svc, proxied, origin_port);
    let mut proxy = Proxy::start(
        "fuzz_http",
        &[("svc.lua", SERVICE_LUA), ("f.cfg", &cfg)],
        "f.cfg",
        &[],
        &[svc, proxied],
    );

    let seeds = fuzz::seeds("fuzz_http", DEFAULT_CASES, REGRESSIONS);
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let failing_seeds: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else {
                    break;
                };
                let case = generate(&mut Rng::new(seed));
                for (port, frontend) in [(svc, "svc"), (proxied, "origin")] {
                    let verdict = exchange(port, &case).and_then(|(got, closed)| {
                        check(&case, &got, closed, frontend)
                            .map_err(|e| format!("{e}\n  received: {}", printable(&got, 400)))
                    });
                    if let Err(e) = verdict {
                        failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!(
                                "seed {seed} ({frontend} frontend), {}: {e}\n  sent: {}",
                                case.vector,
                                printable(&case.bytes, 400)
                            ));
                        failing_seeds
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((seed, format!("{frontend}: {}", case.vector)));
                    }
                }
            });
        }
    });

    // Still alive and serving, and no panic on its stderr.
    let alive = proxy.is_running();
    let log = proxy.log();
    stop.store(true, Ordering::Relaxed);
    let _ = origin_thread.join();
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut failing_seeds = failing_seeds
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    failing_seeds.sort();
    failing_seeds.dedup_by_key(|(s, _)| *s);
    // Every failure in one line, the first ones with the bytes.
    for (i, f) in failures.iter().enumerate() {
        if i < 10 || f.contains("valid requests answered") {
            eprintln!("{f}\n");
        } else {
            eprintln!("{}", f.lines().next().unwrap_or_default());
        }
    }
    if !failing_seeds.is_empty() {
        eprintln!(
            "{} of {} cases failed; seeds and vectors:",
            failing_seeds.len(),
            seeds.len()
        );
        for (s, v) in &failing_seeds {
            eprintln!("  {s}: {v}");
        }
    }
    assert!(alive, "luahost exited during the fuzz run:\n{log}");
    assert!(!log.contains("panicked"), "luahost panicked:\n{log}");
    assert!(
        failures.is_empty(),
        "{} connections broke the framing oracle (replay one: FUZZ_SEED=<seed> cargo test --test fuzz_http)",
        failures.len()
    );
}

/// Found by `fuzz_http1_request_framing` (seeds 1527640024883678837,
/// 1697856157238419393, 6614741737362031426, 17225367260616028296, which
/// fail only when other connections run at the same time): with `nbthread
/// 2` and the service in the shared state (`lua-load`), a request whose
/// body is chunked and arrives in the same write as its head is sometimes
/// never answered nor closed, even past `timeout client` (about 1
/// connection in 150 with 6 clients at once). The same requests with a
/// Content-Length, with head and body in two writes, with `nbthread 1` or
/// with `lua-load-per-thread` are always answered. 600 connections make a miss
/// all but certain while the bug is there.
#[test]
fn chunked_bodies_to_a_shared_state_service_are_all_answered() {
    let port = free_port();
    let cfg = format!(
        "global\n  nbthread 2\n  lua-load svc.lua\n\
         defaults\n  mode http\n  timeout client 3s\n\
         frontend svc\n  bind 127.0.0.1:{port}\n  http-request use-service lua.fuzz\n"
    );
    let _proxy = Proxy::start(
        "fuzz_http_chunked_shared",
        &[("svc.lua", SERVICE_LUA), ("c.cfg", &cfg)],
        "c.cfg",
        &[],
        &[port],
    );
    let request: &[u8] =
        b"POST /c HTTP/1.1\r\nhost: fuzz.test\r\ntransfer-encoding: chunked\r\n\r\n\
                           8\r\njzjdko.d\r\n0\r\n\r\n";
    let unanswered = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| {
                for _ in 0..100 {
                    let case = Case {
                        bytes: request.to_vec(),
                        requests: 1,
                        expected: Some(vec![("POST".into(), 8)]),
                        half_close: false,
                        pieces: None,
                        vector: "chunked POST".into(),
                    };
                    let ok = exchange(port, &case)
                        .and_then(|(got, closed)| check(&case, &got, closed, "svc"))
                        .is_ok();
                    if !ok {
                        unanswered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(
        unanswered.load(Ordering::Relaxed),
        0,
        "chunked requests left unanswered out of {}",
        PARALLEL * 100
    );
}
