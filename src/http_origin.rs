//! A small HTTP/1.1 origin server for the HTTP client's tests and benchmark
//! (tests/lua_httpclient.rs, benches/lua_httpclient.rs): keep-alive,
//! Content-Length and chunked request bodies, and counters of the
//! connections it accepted and still has open, so that a test can see
//! whether connections were reused and whether any was left open.
//!
//! Paths:
//! - `/slow`: no answer; waits up to 5 s for the client to close, counting
//!   that in `aborted` (a client whose request was cancelled).
//! - `/big/N`: a body of N bytes.
//! - `/stale...`: answered as `/echo` on a connection's first request; a
//!   later request on the same connection is read and the connection closed
//!   without an answer (a keep-alive connection the server dropped).
//! - anything else: 200 "Fine" with `x-multi: a`, `x-multi: b` and a body
//!   describing the request (method, path, body length and checksum, and
//!   the `host`, `accept`, `user-agent`, `x-test` headers).
//!
//! Each connection is served by a thread; a fixed set of threads accepts,
//! so a benchmark does not pay a thread creation per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What an origin has seen.
#[derive(Default, Debug)]
pub struct Counters {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub open: AtomicI64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// `/slow` requests whose client closed the connection.
    pub aborted: AtomicU64,
}

pub struct Origin {
    pub port: u16,
    pub counters: Arc<Counters>,
}

impl Origin {
    /// An origin on 127.0.0.1 served by `threads` accepting threads.
    pub fn start(threads: usize) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let port = listener.local_addr().expect("origin address").port();
        let counters = Arc::new(Counters::default());
        for _ in 0..threads {
            let l = listener.try_clone().expect("clone listener");
            let c = counters.clone();
            std::thread::spawn(move || {
                while let Ok((s, _)) = l.accept() {
                    let _ = s.set_nodelay(true);
                    serve(s, &c);
                }
            });
        }
        Origin { port, counters }
    }

    /// An origin on the Unix socket `path`, a thread per connection.
    pub fn start_unix(path: &std::path::Path) -> Arc<Counters> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind unix origin");
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        std::thread::spawn(move || {
            while let Ok((s, _)) = listener.accept() {
                let c = c.clone();
                std::thread::spawn(move || serve(s, &c));
            }
        });
        counters
    }

    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> i64 {
        self.counters.open.load(Ordering::SeqCst)
    }
}

/// Serves one connection (any byte stream) until it closes.
pub fn serve<S: Read + Write>(stream: S, c: &Counters) {
    c.accepted.fetch_add(1, Ordering::SeqCst);
    c.open.fetch_add(1, Ordering::SeqCst);
    let mut conn = BufReader::new(stream);
    let mut nth = 0;
    while let Some(req) = read_request(&mut conn) {
        nth += 1;
        if req.path == "/slow" {
            wait_for_close(&mut conn, c);
            break;
        }
        if req.path.starts_with("/stale") && nth > 1 {
            break;
        }
        let (body, extra) = match req.path.strip_prefix("/big/") {
            Some(n) => (vec![b'x'; n.parse().unwrap_or(0)], ""),
            None => (req.describe().into_bytes(), "x-multi: a\r\nx-multi: b\r\n"),
        };
        let head = format!(
            "HTTP/1.1 200 Fine\r\ncontent-length: {}\r\n{extra}\r\n",
            if req.method == "HEAD" {
                req.describe().len()
            } else {
                body.len()
            }
        );
        let w = conn.get_mut();
        let mut out = head.into_bytes();
        if req.method != "HEAD" {
            out.extend_from_slice(&body);
        }
        if w.write_all(&out).and_then(|()| w.flush()).is_err() {
            break;
        }
        c.requests.fetch_add(1, Ordering::SeqCst);
    }
    c.open.fetch_sub(1, Ordering::SeqCst);
}

/// Waits (at most 5 s) for the peer to close: the connection is blocked in
/// a read that returns 0 then.
fn wait_for_close<S: Read>(conn: &mut BufReader<S>, c: &Counters) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut byte = [0u8; 1];
    while std::time::Instant::now() < deadline {
        match conn.read(&mut byte) {
            Ok(0) => {
                c.aborted.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v)
    }

    fn describe(&self) -> String {
        let sum = self
            .body
            .iter()
            .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(*b)));
        format!(
            "{} {} len={} sum={sum}\nhost: {}\naccept: {}\nuser-agent: {}\nx-test: {}\n",
            self.method,
            self.path,
            self.body.len(),
            self.header("host"),
            self.header("accept"),
            self.header("user-agent"),
            self.header("x-test"),
        )
    }
}

fn read_request<S: Read>(conn: &mut BufReader<S>) -> Option<Request> {
    let mut line = String::new();
    if conn.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if conn.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            if n == 0 {
                let mut end = String::new();
                conn.read_line(&mut end).ok()?;
                break;
            }
            let mut chunk = vec![0u8; n + 2];
            conn.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = get("content-length") {
        body = vec![0u8; len.parse().ok()?];
        conn.read_exact(&mut body).ok()?;
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}
