//! Proxy keywords of issue 12 (item 6) over real sockets where the
//! differential suite (tests/differential.rs, group `proxy_keywords`)
//! cannot reach: TCP mode, bodies that arrive after the head, streamed
//! compression. A real luahost process per test, loopback only, bounded.

use luahost_suite::{free_port, HttpReader, Proxy};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s
}

/// Everything the server sends until it closes.
fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

const TCP_LUA: &str = r#"
core.register_service("echo", "tcp", function(applet)
  applet:send("welcome " .. (applet:get_var("sess.mark") or "-") .. "\n")
  while true do
    local line = applet:getline()
    if line == "" then break end
    applet:send("echo: " .. line)
  end
end)
"#;

#[test]
fn tcp_connection_rules_and_services_in_tcp_backends() {
    let (rejecting, accepting, via_backend) = (free_port(), free_port(), free_port());
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\ndefaults\n  mode tcp\n  timeout client 10s\n  timeout tunnel 1h\n\
         listen rejecting\n  bind 127.0.0.1:{rejecting}\n  tcp-request connection reject if {{ src 127.0.0.1 }}\n  tcp-request content use-service lua.echo\n\
         listen accepting\n  bind 127.0.0.1:{accepting}\n  tcp-request connection set-var(sess.mark) str(marked)\n  tcp-request connection accept if {{ src 127.0.0.0/8 }}\n  tcp-request connection reject\n  tcp-request content use-service lua.echo\n\
         frontend via_backend\n  bind 127.0.0.1:{via_backend}\n  default_backend be_echo\n\
         backend be_echo\n  tcp-request content use-service lua.echo\n"
    );
    let _p = Proxy::start(
        "keywords_tcp",
        &[("svc.lua", TCP_LUA), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[rejecting, accepting, via_backend],
    );
    // Rejected before anything is read or sent.
    let mut s = connect(rejecting);
    let _ = s.write_all(b"one\n");
    assert_eq!(read_all(&mut s), "");

    // Accepted, with the variable the connection rules set.
    let mut s = connect(accepting);
    s.write_all(b"one\n").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    assert_eq!(read_all(&mut s), "welcome marked\necho: one\n");

    // A TCP backend's content rules hand the connection to a service.
    let mut s = connect(via_backend);
    s.write_all(b"two\n").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    assert_eq!(read_all(&mut s), "welcome -\necho: two\n");
}

#[test]
fn buffered_request_bodies_are_waited_for() {
    let (buffered, plain) = (free_port(), free_port());
    let lua = r#"
core.register_action("body", { "http-req" }, function(txn)
  txn:set_var("txn.lua", txn.f:req_body() or "<nil>")
end, 0)
"#;
    let rule = "  http-request lua.body\n  http-request return status 200 content-type text/plain lf-string \"rules=%[req.body] lua=%[var(txn.lua)]\"\n";
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend buffered\n  bind 127.0.0.1:{buffered}\n  option http-buffer-request\n{rule}\
         frontend plain\n  bind 127.0.0.1:{plain}\n{rule}"
    );
    let _p = Proxy::start(
        "keywords_buffer",
        &[("svc.lua", lua), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[buffered, plain],
    );
    // The body follows the head in a later write: only the buffering
    // frontend waits for it.
    let ask = |port: u16, expect_continue: bool| {
        let mut c = HttpReader::connect(port);
        let expect = if expect_continue {
            "expect: 100-continue\r\n"
        } else {
            ""
        };
        c.send(
            format!("POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 9\r\n{expect}\r\n").as_bytes(),
        );
        if expect_continue {
            // The wait for the body asks the client for it.
            let interim = c.read_response(false).expect("100 Continue");
            assert_eq!(interim.status, 100);
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
        c.send(b"a=1&b=two");
        c.read_response(false).expect("response").text()
    };
    assert_eq!(ask(buffered, false), "rules=a=1&b=two lua=a=1&b=two");
    assert_eq!(ask(buffered, true), "rules=a=1&b=two lua=a=1&b=two");
    assert_eq!(ask(plain, false), "rules= lua=<nil>");
}

#[test]
fn compression_streams_the_body() {
    let port = free_port();
    let lua = r#"
core.register_service("slow", "http", function(applet)
  applet:set_status(200)
  applet:add_header("content-type", "text/plain")
  applet:start_response()
  applet:send(string.rep("first part ", 50))
  core.msleep(3000)
  applet:send("last part")
end)
"#;
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  compression algo gzip\n  http-request use-service lua.slow\n"
    );
    let _p = Proxy::start(
        "keywords_compression",
        &[("svc.lua", lua), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[port],
    );
    let mut s = connect(port);
    s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\naccept-encoding: gzip\r\n\r\n")
        .expect("write");
    // Read what comes before the service's pause: the head and the first
    // part, compressed and flushed, without the end of the body.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let first = loop {
        let n = s.read(&mut buf).expect("read before the pause");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = text[..end].to_ascii_lowercase();
        assert!(head.contains("content-encoding: gzip"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        let decoded = gunzip_prefix(&dechunk(&got[end + 4..]));
        if decoded.contains("first part") {
            break decoded;
        }
    };
    assert!(!first.contains("last part"));
    assert!(
        !got.ends_with(b"0\r\n\r\n"),
        "the body ended before the service did"
    );
    // The rest: the end of the stream decodes whole.
    let mut rest = Vec::new();
    while !rest.ends_with(b"0\r\n\r\n") {
        let n = s.read(&mut buf).expect("read the rest");
        assert!(n > 0, "closed before the last chunk");
        rest.extend_from_slice(&buf[..n]);
    }
    got.extend_from_slice(&rest);
    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
    let body = dechunk(&got[end + 4..]);
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .expect("a whole gzip stream");
    assert_eq!(text, format!("{}last part", "first part ".repeat(50)));
}

/// The data of the complete chunks in `raw`.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size else { break };
        let start = eol + 2;
        if size == 0 || raw.len() < start + size + 2 {
            break;
        }
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
    out
}

/// What a gzip stream's first bytes decode to (the stream may be cut).
fn gunzip_prefix(data: &[u8]) -> String {
    let mut d = flate2::read::GzDecoder::new(data);
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = d.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}
