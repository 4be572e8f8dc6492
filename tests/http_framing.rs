//! The client side of HTTP/1.1 framing, over real sockets against a real
//! luahost, and against HAProxy 3.0 with the same configuration where it is
//! installed: malformed request heads and bodies get exactly one response
//! and a close, bodies are checked before a Lua service answers, a body cut
//! by a close gets no answer from a service reading it, and the `Host`,
//! absolute-form and `Connection` rules.

use luahost_suite::{free_port, require_file, HttpReader, HttpResponse, Proxy};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVICES: &str = r#"
core.register_service("noread", "http", function(applet)
  applet:set_status(200)
  applet:add_header("content-length", "2")
  applet:start_response()
  applet:send("ok")
end)
core.register_service("read", "http", function(applet)
  local b = applet:receive()
  local body = "got " .. tostring(b and #b)
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
core.register_service("origin", "http", function(applet)
  local b = applet:receive()
  local function h(n) return tostring(applet.headers[n] and applet.headers[n][0]) end
  local body = "host=" .. h("host") .. " x=" .. h("x") .. " y=" .. h("y") .. " len=" .. #b
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
"#;

/// The frontends of one server under test.
#[derive(Clone, Copy)]
struct Ports {
    /// A Lua service that never reads the request body.
    noread: u16,
    /// A Lua service that reads the whole body.
    read: u16,
    /// A proxy (with `http-request set-header x rule`) to `origin`.
    proxy: u16,
    /// The origin server: a Lua service echoing host, x, y and body length.
    origin: u16,
}

impl Ports {
    fn fresh() -> Ports {
        Ports {
            noread: free_port(),
            read: free_port(),
            proxy: free_port(),
            origin: free_port(),
        }
    }

    fn all(&self) -> [u16; 4] {
        [self.noread, self.read, self.proxy, self.origin]
    }
}

/// The same configuration for luahost and HAProxy.
fn config(p: Ports) -> String {
    format!(
        "global\n  lua-load svc.lua\n  nbthread 1\ndefaults\n  mode http\n  timeout client 5s\n  \
         timeout server 5s\n  timeout connect 5s\n\
         frontend noread\n  bind 127.0.0.1:{}\n  http-request use-service lua.noread\n\
         frontend read\n  bind 127.0.0.1:{}\n  http-request use-service lua.read\n\
         frontend proxy\n  bind 127.0.0.1:{}\n  http-request set-header x rule\n  default_backend be\n\
         backend be\n  server s 127.0.0.1:{}\n\
         frontend origin\n  bind 127.0.0.1:{}\n  http-request use-service lua.origin\n",
        p.noread, p.read, p.proxy, p.origin, p.origin
    )
}

fn start_luahost(name: &str) -> (Proxy, Ports) {
    let ports = Ports::fresh();
    let cfg = config(ports);
    let p = Proxy::start(
        name,
        &[("svc.lua", SERVICES), ("p.cfg", &cfg)],
        "p.cfg",
        &[],
        &ports.all(),
    );
    (p, ports)
}

/// HAProxy 3.0 on the same configuration, killed when dropped.
struct Haproxy {
    child: Child,
    ports: Ports,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy 3.0 (`HAPROXY3`, else the project's anchor build). Missing: the
/// comparison is skipped locally and fails under CI.
fn start_haproxy3(dir: &std::path::Path) -> Option<Haproxy> {
    let bin = match std::env::var_os("HAPROXY3") {
        Some(p) => PathBuf::from(p),
        None => require_file(
            "/work/shared/anchors/haproxy3",
            "framing answers are compared with HAProxy 3.0",
        )?,
    };
    let ports = Ports::fresh();
    std::fs::write(dir.join("h3.cfg"), config(ports)).expect("write haproxy config");
    let child = Command::new(bin)
        .args(["-db", "-f", "h3.cfg"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy3");
    let h = Haproxy { child, ports };
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in ports.all() {
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "haproxy3 did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Some(h)
}

/// Everything a server answered to `raw`, read until it closed: the
/// responses, and whether the connection was closed (not timed out).
struct Exchange {
    responses: Vec<HttpResponse>,
    closed: bool,
}

impl Exchange {
    fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }
}

/// Sends `raw` (then half-closes if `half_close`), and reads responses
/// until the server closes (bounded by a few seconds).
fn exchange(port: u16, parts: &[&[u8]], half_close: bool) -> Exchange {
    let mut c = HttpReader::try_connect(port, Duration::from_secs(4)).expect("connect");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            // A later piece arrives in its own segment, after the head.
            std::thread::sleep(Duration::from_millis(150));
        }
        c.send(p);
    }
    if half_close {
        let _ = c.stream.shutdown(Shutdown::Write);
    }
    let mut responses = Vec::new();
    while let Some(r) = c.read_response(false) {
        let interim = r.status < 200;
        responses.push(r);
        if interim {
            continue;
        }
    }
    // read_response stops at EOF or at the read timeout: tell them apart.
    let mut one = [0u8; 1];
    let closed = matches!(c.stream.read(&mut one), Ok(0));
    Exchange { responses, closed }
}

/// Item 1 of the issue: each vector gets exactly one response, then a close.
const REFUSED_HEADS: &[(&str, &str, u16)] = &[
    ("two Content-Length values", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    ("a Content-Length list", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1,2\r\n\r\nab", 400),
    ("a signed Content-Length", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nabcde", 400),
    ("a negative Content-Length", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
    ("a hex Content-Length", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0x10\r\n\r\n", 400),
    ("an empty Content-Length", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: \r\n\r\n", 400),
    ("a Content-Length with a blank inside", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1 2\r\n\r\n", 400),
    ("a Content-Length past 64 bits", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
    ("Transfer-Encoding without chunked", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("chunked not last", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("chunked twice", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    ("identity", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n", 400),
    ("a coding before chunked", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 422),
    ("codings over two headers", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 422),
    ("two different Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("a header line without a colon", "GET / HTTP/1.1\r\nHost: t\r\nbad header line\r\n\r\n", 400),
    ("a blank before the colon", "GET / HTTP/1.1\r\nHost: t\r\nX : a\r\n\r\n", 400),
    ("an HTTP/0.9 request", "GET /\r\n\r\n", 400),
];

/// Item 2: malformed chunked bodies, sent with the head.
const MALFORMED_CHUNKS: &[(&str, &str)] = &[
    (
        "a chunk size past 64 bits",
        "10000000000000001\r\nab\r\n0\r\n\r\n",
    ),
    ("a 0x prefix", "0x2\r\nab\r\n0\r\n\r\n"),
    ("a negative size", "-2\r\nab\r\n0\r\n\r\n"),
    ("a bare CR in an extension", "2;a\rb\r\nab\r\n0\r\n\r\n"),
    ("data longer than the size", "2\r\nabc\r\n0\r\n\r\n"),
    ("no CRLF after the data", "2\r\nab0\r\n\r\n"),
    ("LF line ends", "2\nab\n0\n\n"),
];

const CHUNKED_HEAD: &str = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";

/// Runs `check` for luahost and, where installed, HAProxy 3.0, collecting
/// (server, vector, what it answered) for a comparison.
fn servers(name: &str) -> (Proxy, Ports, Option<Haproxy>) {
    let (p, ports) = start_luahost(name);
    let h = start_haproxy3(&p.dir);
    (p, ports, h)
}

#[test]
fn malformed_heads_get_exactly_one_response_then_close() {
    let (_p, lh, h3) = servers("framing_heads");
    let mut mismatches = Vec::new();
    let many: String = (0..110).map(|i| format!("x{i}: a\r\n")).collect();
    let too_many = format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    let generated = [("more than 101 header lines", too_many.as_str(), 400)];
    for (what, raw, status) in REFUSED_HEADS.iter().chain(&generated) {
        for (kind, port) in [
            ("service", lh.noread),
            ("reading service", lh.read),
            ("proxy", lh.proxy),
        ] {
            let ex = exchange(port, &[raw.as_bytes()], false);
            assert_eq!(
                ex.statuses(),
                vec![*status],
                "{what} ({kind}): exactly one response"
            );
            assert!(
                ex.closed,
                "{what} ({kind}): the connection is closed after it"
            );
        }
        if let Some(h) = &h3 {
            let theirs = exchange(h.ports.noread, &[raw.as_bytes()], false).statuses();
            if theirs != vec![*status] {
                mismatches.push(format!("{what}: haproxy3 {theirs:?}, luahost {status}"));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "differs from HAProxy 3.0: {mismatches:#?}"
    );
}

#[test]
fn malformed_chunked_bodies_are_refused_before_any_answer() {
    let (_p, lh, h3) = servers("framing_chunks");
    let h3_ports = h3.as_ref().map(|h| h.ports);
    for (what, chunks) in MALFORMED_CHUNKS {
        let raw = format!("{CHUNKED_HEAD}{chunks}");
        for ports in std::iter::once(lh).chain(h3_ports) {
            let server = if ports.noread == lh.noread {
                "luahost"
            } else {
                "haproxy3"
            };
            for (kind, port) in [
                ("service not reading", ports.noread),
                ("reading service", ports.read),
                ("proxy", ports.proxy),
            ] {
                // With the head, and in a segment of its own after it.
                let with_head = exchange(port, &[raw.as_bytes()], false);
                assert_eq!(with_head.statuses(), vec![400], "{server}: {what} ({kind})");
                assert!(with_head.closed, "{server}: {what} ({kind}): closed");
                if kind != "service not reading" {
                    let later =
                        exchange(port, &[CHUNKED_HEAD.as_bytes(), chunks.as_bytes()], false);
                    assert_eq!(
                        later.statuses(),
                        vec![400],
                        "{server}: {what} arriving late ({kind})"
                    );
                }
            }
        }
    }
    // Valid ones: extensions, blanks after the size, trailers, and
    // Transfer-Encoding winning over Content-Length.
    for (what, raw) in [
        ("an extension", format!("{CHUNKED_HEAD}2;a=b\r\nab\r\n0\r\n\r\n")),
        ("a blank after the size", format!("{CHUNKED_HEAD}2 \r\nab\r\n0\r\n\r\n")),
        ("a trailer", format!("{CHUNKED_HEAD}2\r\nab\r\n0\r\nx-t: 1\r\n\r\n")),
        (
            "Transfer-Encoding with Content-Length",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n2\r\nab\r\n0\r\n\r\n".to_string(),
        ),
    ] {
        let ex = exchange(lh.read, &[raw.as_bytes()], true);
        assert_eq!(ex.statuses(), vec![200], "{what}");
        assert_eq!(ex.responses[0].text(), "got 2", "{what}");
        let ex = exchange(lh.proxy, &[raw.as_bytes()], true);
        assert_eq!(ex.responses.first().map(|r| r.text()), Some("host=t x=rule y=nil len=2".into()), "{what} (proxied)");
    }
}

#[test]
fn a_body_cut_by_a_close_gets_no_answer_from_its_reader() {
    let (_p, lh, h3) = servers("framing_cut");
    let h3_ports = h3.as_ref().map(|h| h.ports);
    let cut = [
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    ];
    for raw in cut {
        for ports in std::iter::once(lh).chain(h3_ports) {
            let server = if ports.noread == lh.noread {
                "luahost"
            } else {
                "haproxy3"
            };
            // A service that never reads the body answers as usual. HAProxy
            // too, unless the close reaches it before the service answered
            // (then it answers nothing): at most that one 200.
            let ex = exchange(ports.noread, &[raw.as_bytes()], true);
            if server == "luahost" {
                assert_eq!(ex.statuses(), vec![200], "{server}: not reading {raw:?}");
            } else {
                assert!(ex.statuses().iter().all(|s| *s == 200) && ex.responses.len() <= 1);
            }
            for (kind, port) in [("reading service", ports.read), ("proxy", ports.proxy)] {
                let ex = exchange(port, &[raw.as_bytes()], true);
                assert_eq!(ex.statuses(), Vec::<u16>::new(), "{server}: {kind} {raw:?}");
                assert!(ex.closed, "{server}: {kind} {raw:?}: closed");
            }
        }
    }
}

#[test]
fn host_absolute_form_and_connection_rules_reach_the_origin() {
    let (_p, lh) = start_luahost("framing_host");
    let ask = |raw: &str| {
        let ex = exchange(lh.proxy, &[raw.as_bytes()], false);
        assert_eq!(ex.statuses(), vec![200], "{raw:?}");
        ex.responses[0].text()
    };
    // The absolute-form target's authority wins over Host (RFC 9112 §3.2.2).
    assert_eq!(
        ask("GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n"),
        "host=a.example x=rule y=nil len=0"
    );
    // Equal Host headers are one.
    assert_eq!(
        ask("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\nConnection: close\r\n\r\n"),
        "host=a x=rule y=nil len=0"
    );
    // A header the client lists in Connection is dropped, but one the
    // proxy's rules set goes through.
    assert_eq!(
        ask("GET / HTTP/1.1\r\nHost: t\r\nConnection: close, x, y\r\nx: client\r\ny: client\r\n\r\n"),
        "host=t x=rule y=nil len=0"
    );
    assert_eq!(
        ask("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\ny: client\r\n\r\n"),
        "host=t x=rule y=client len=0"
    );
}

#[test]
fn pipelining_continue_and_head() {
    let (_p, lh) = start_luahost("framing_keepalive");
    // Pipelined: a GET, a POST with a length, a chunked POST, in one write;
    // answered in order on one connection.
    let mut c = HttpReader::connect(lh.read);
    c.send(
        b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\
          POST /3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n\
          GET /4 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    for want in ["got 0", "got 3", "got 4", "got 0"] {
        assert_eq!(
            c.read_response(false).expect("pipelined response").text(),
            want
        );
    }
    // The same through the proxy.
    let mut c = HttpReader::connect(lh.proxy);
    c.send(
        b"POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\
          GET /4 HTTP/1.1\r\nHost: u\r\n\r\n",
    );
    assert_eq!(
        c.read_response(false).expect("proxied").text(),
        "host=t x=rule y=nil len=3"
    );
    assert_eq!(
        c.read_response(false).expect("proxied").text(),
        "host=u x=rule y=nil len=0"
    );

    // Expect: 100-continue: the interim response comes when the service
    // reads the body, then the final one.
    for port in [lh.read, lh.proxy] {
        let mut c = HttpReader::connect(port);
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
        let interim = c.read_response(false).expect("100 Continue");
        assert_eq!(interim.status, 100);
        c.send(b"hello");
        let r = c.read_response(false).expect("final response");
        assert_eq!(r.status, 200);
        assert!(
            r.text().ends_with("len=5") || r.text() == "got 5",
            "{}",
            r.text()
        );
    }
    // A service that does not read the body answers without a 100.
    let mut c = HttpReader::connect(lh.noread);
    c.send(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(c.read_response(false).expect("final").status, 200);

    // HEAD: the headers of a GET, no body; the connection goes on.
    let mut c = HttpReader::connect(lh.noread);
    c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(true).expect("HEAD response");
    assert_eq!((r.status, r.header("content-length")), (200, Some("2")));
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).expect("after HEAD").text(), "ok");
    // HTTP/1.0 with keep-alive stays open and says so.
    let mut c = HttpReader::connect(lh.noread);
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false).expect("1.0 keep-alive");
    assert_eq!(r.status_line, "HTTP/1.0 200 OK");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_response(false).expect("1.0").text(), "ok");
    let mut rest = Vec::new();
    let _ = c.stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "HTTP/1.0 without keep-alive closes");
    let _ = c.stream.write_all(b"");
}

#[test]
fn request_and_keep_alive_timeouts() {
    let port = free_port();
    let cfg = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\ndefaults\n  mode http\n  timeout client 10s\n  \
         timeout http-request 1s\n  timeout http-keep-alive 1s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  http-request use-service lua.noread\n"
    );
    let _p = Proxy::start(
        "framing_timeouts",
        &[("svc.lua", SERVICES), ("p.cfg", &cfg)],
        "p.cfg",
        &[],
        &[port],
    );
    // A head that never completes: one 408, then the close.
    let ex = exchange(port, &[b"GET / HTTP/1.1\r\nHost: t\r\n"], false);
    assert_eq!(ex.statuses(), vec![408]);
    assert!(ex.closed);
    // An idle keep-alive connection is closed without an answer.
    let ex = exchange(port, &[b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"], false);
    assert_eq!(ex.statuses(), vec![200]);
    assert!(ex.closed, "closed after the keep-alive timeout");
}
