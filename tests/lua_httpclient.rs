//! `core.httpclient()` against real local origins (TCP, Unix socket, HTTPS
//! with a self-signed certificate, a silent server, a closed port), compared
//! with HAProxy 3.0 and 2.6 where they have the feature, and luahost's own
//! guarantees: pooled connections are reused, retried when the server
//! dropped them, and never left open once idle or once the Lua context that
//! used them is gone.
//!
//! Run: `cargo test --test lua_httpclient` (a missing HAProxy release is
//! skipped locally, a failure under CI=true).

use luahost_suite::http_origin::{serve, Counters, Origin};
use luahost_suite::{
    artifacts, free_port, haproxy_peers, run_with_timeout, scratch_dir, HttpReader, Proxy,
};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The relay service: `/CASE` makes one HTTPClient call and answers with
/// the response table, headers sorted (`date` and `server` left out: they
/// vary), status 0's reason left out (luahost explains it, HAProxy leaves it
/// empty).
const RELAY_LUA: &str = r#"
local function show(r)
  local names = {}
  for k in pairs(r.headers) do
    if k ~= "date" and k ~= "server" then names[#names + 1] = k end
  end
  table.sort(names)
  local out = { "status=" .. r.status }
  if r.status ~= 0 then out[#out + 1] = "reason=" .. r.reason end
  for _, n in ipairs(names) do
    local vals, i = r.headers[n], 0
    while vals[i] ~= nil do out[#out + 1] = n .. ": " .. vals[i]; i = i + 1 end
  end
  out[#out + 1] = "body=" .. r.body
  return table.concat(out, "\n") .. "\n"
end

local function body60k()
  local t = {}
  for i = 1, 6000 do t[i] = string.format("%09d\n", i * 7919 % 1000003) end
  return table.concat(t)
end

local origin = "http://127.0.0.1:@ORIGIN@"
local calls = {
  get = function(hc) return hc:get{ url = origin .. "/echo/get", headers = { ["x-test"] = { "one" } } } end,
  head = function(hc) return hc:head{ url = origin .. "/echo/head" } end,
  post = function(hc)
    return hc:post{ url = origin .. "/echo/post", headers = { ["x-test"] = { "60k" } }, body = body60k() }
  end,
  put = function(hc) return hc:put{ url = origin .. "/echo/put", body = "small" } end,
  delete = function(hc) return hc:delete{ url = origin .. "/echo/delete" } end,
  unix = function(hc) return hc:get{ url = "http://unix.example/echo/unix", dst = "unix@@SOCK@" } end,
  dst = function(hc) return hc:get{ url = "http://name.example:8080/echo/dst", dst = "127.0.0.1:@ORIGIN@" } end,
  -- HAProxy's address syntax: an empty host is the any address; an IPv6
  -- address without brackets has its port after its last colon, so "::1"
  -- is host ":" and does not parse.
  dstany = function(hc) return hc:get{ url = "http://name.example:8080/echo/dstany", dst = ":@ORIGIN@" } end,
  dstbare = function(hc) return hc:get{ url = "http://127.0.0.1:@ORIGIN@/echo/dstbare", dst = "::1" } end,
  silent = function(hc) return hc:get{ url = "http://127.0.0.1:@SILENT@/", timeout = 300 } end,
  refused = function(hc) return hc:get{ url = "http://127.0.0.1:@DEAD@/" } end,
  tls = function(hc) return hc:get{ url = "https://127.0.0.1:@TLS@/echo/tls" } end,
  stale = function(hc) return hc:get{ url = origin .. "/stale" } end,
  stalepost = function(hc) return hc:post{ url = origin .. "/stale", body = "x" } end,
  slow = function(hc) return hc:get{ url = origin .. "/slow" } end,
  big = function(hc) return hc:get{ url = origin .. "/big/33554432" } end,
  badurl = function(hc) return hc:get{ url = "foo" } end,
  badparam = function(hc) return hc:get{ url = origin, foo = 1 } end,
}

core.register_service("relay", "http", function(applet)
  local case = applet.path:match("^/(%w+)")
  local f = calls[case]
  local ok, r = pcall(f, core.httpclient())
  -- HAProxy prefixes some argument errors with the caller's position,
  -- luahost does not (lua-api.md, HTTPClient): compared without it.
  local s = ok and show(r) or ("error: " .. tostring(r):gsub("^[^:]*:%d+: ", "") .. "\n")
  applet:set_status(200)
  applet:add_header("content-length", #s)
  applet:start_response()
  applet:send(s)
end)

core.register_fetches("in_fetch", function(txn)
  local ok, e = pcall(function() return core.httpclient():get{ url = origin } end)
  return tostring(ok) .. " " .. tostring(e)
end)
"#;

const CFG: &str = "\
global
  nbthread 1
@GLOBAL@
  lua-load relay.lua
defaults
  mode http
@DEFAULTS@
  timeout client 10s
  timeout server 10s
  timeout connect 5s
frontend f
  bind 127.0.0.1:@PORT@
  http-request return status 200 content-type text/plain lf-string \"%[lua.in_fetch]\" if { path /fetch }
  http-request use-service lua.relay
";

/// The servers every test talks to, started once per test process.
struct World {
    origin: Origin,
    unix_path: PathBuf,
    /// Origins only the tests that count connections use (one at a time,
    /// see `counting`), so that other tests' calls do not add to their counts.
    counted: Origin,
    counted_unix_path: PathBuf,
    counted_unix: Arc<Counters>,
    silent: u16,
    dead: u16,
    tls: u16,
    cert_pem: String,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = scratch_dir("lua_httpclient_world");
        let unix_path = dir.join("origin.sock");
        Origin::start_unix(&unix_path);
        let counted_unix_path = dir.join("counted.sock");
        let counted_unix = Origin::start_unix(&counted_unix_path);
        let (tls, cert_pem) = start_tls_origin();
        World {
            origin: Origin::start(16),
            unix_path,
            counted: Origin::start(8),
            counted_unix_path,
            counted_unix,
            silent: start_silent(),
            dead: free_port(),
            tls,
            cert_pem,
        }
    })
}

/// Accepts connections and never answers (they stay open until the
/// client closes them).
fn start_silent() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept() {
            held.push(s);
        }
    });
    port
}

/// The origin behind TLS: a certificate for 127.0.0.1 and localhost, made
/// for this run and signed by nobody.
fn start_tls_origin() -> (u16, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("certificate");
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![der], key)
    .expect("server config");
    let config = Arc::new(config);
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let counters = Arc::new(Counters::default());
    std::thread::spawn(move || {
        while let Ok((s, _)) = l.accept() {
            let (config, counters) = (config.clone(), counters.clone());
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                serve(rustls::StreamOwned::new(conn, s), &counters);
            });
        }
    });
    (port, cert.cert.pem())
}

/// Global lines (`global`), and `defaults` lines after a `|` in it.
fn render(template: &str, port: u16, global: &str, counted: bool) -> String {
    let w = world();
    let (origin, sock) = if counted {
        (w.counted.port, &w.counted_unix_path)
    } else {
        (w.origin.port, &w.unix_path)
    };
    let (global, defaults) = global.split_once('|').unwrap_or((global, ""));
    template
        .replace("@GLOBAL@", global)
        .replace("@DEFAULTS@", defaults)
        .replace("@PORT@", &port.to_string())
        .replace("@ORIGIN@", &origin.to_string())
        .replace("@SOCK@", &sock.display().to_string())
        .replace("@SILENT@", &w.silent.to_string())
        .replace("@DEAD@", &w.dead.to_string())
        .replace("@TLS@", &w.tls.to_string())
}

/// A proxy under test: luahost, or an HAProxy release (both stopped when
/// dropped).
enum Running {
    Luahost(#[allow(dead_code)] Proxy),
    Haproxy(Child),
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Haproxy(c) = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(label: &str, program: Option<&Path>, global: &str) -> (Running, u16) {
    start_counted(label, program, global, false)
}

/// `start`, talking to the counted origins when `counted`.
fn start_counted(
    label: &str,
    program: Option<&Path>,
    global: &str,
    counted: bool,
) -> (Running, u16) {
    let port = free_port();
    // Tests run in parallel: a scratch directory of their own for each.
    let name = format!("lua_httpclient_{}_{port}", label.replace(' ', "_"));
    let cfg = render(CFG, port, global, counted);
    let lua = render(RELAY_LUA, port, global, counted);
    let ca = world().cert_pem.clone();
    let files = [
        ("t.cfg", cfg.as_str()),
        ("relay.lua", lua.as_str()),
        ("ca.pem", ca.as_str()),
    ];
    let running = match program {
        None => Running::Luahost(Proxy::start(&name, &files, "t.cfg", &[], &[port])),
        Some(program) => {
            let dir = scratch_dir(&name);
            for (f, content) in files {
                std::fs::write(dir.join(f), content).expect("write");
            }
            let child = Command::new(program)
                .args(["-f", "t.cfg", "-db"])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start haproxy");
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "{label} did not listen");
                std::thread::sleep(Duration::from_millis(20));
            }
            Running::Haproxy(child)
        }
    };
    (running, port)
}

fn ask(port: u16, path: &str) -> String {
    let mut c = HttpReader::connect(port);
    c.send(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes());
    c.read_response(false)
        .map(|r| r.text())
        .unwrap_or_else(|| "<no response>".into())
}

/// Asks luahost and each installed HAProxy the cases (with `global` lines
/// added) and checks that every answer is luahost's; `not_on` lists
/// (release, case) pairs that differ for a stated reason.
fn differential(global: &str, cases: &[&str], not_on: &[(&str, &str)], check: impl Fn(&str, &str)) {
    let (lh, port) = start("luahost", None, global);
    let ours: Vec<String> = cases.iter().map(|c| ask(port, &format!("/{c}"))).collect();
    drop(lh);
    for (case, answer) in cases.iter().zip(&ours) {
        check(case, answer);
    }
    for peer in haproxy_peers() {
        let (hp, port) = start(&peer.label, Some(&peer.program), global);
        for (case, answer) in cases.iter().zip(&ours) {
            if not_on.contains(&(peer.label.as_str(), *case)) {
                continue;
            }
            let theirs = ask(port, &format!("/{case}"));
            assert_eq!(
                &theirs, answer,
                "case {case}: {} and luahost differ",
                peer.label
            );
        }
        drop(hp);
    }
}

#[test]
fn methods_bodies_and_errors_as_haproxy() {
    let cases = [
        "get", "head", "post", "put", "delete", "unix", "dst", "dstany", "dstbare", "silent",
        "refused", "tls", "badurl", "badparam",
    ];
    differential("", &cases, &[], |case, a| {
        let want: &[&str] = match case {
            "get" => &[
                "status=200",
                "reason=Fine",
                "x-multi: a\nx-multi: b",
                "GET /echo/get len=0",
                "x-test: one",
                "user-agent: HAProxy",
                "accept: */*",
            ],
            "head" => &["status=200", "body=\n"],
            // The 60 KB body arrived whole (length and checksum).
            "post" => &["POST /echo/post len=60000 sum=", "x-test: 60k"],
            "put" => &["PUT /echo/put len=5"],
            "delete" => &["DELETE /echo/delete len=0"],
            "unix" => &["GET /echo/unix", "host: unix.example"],
            "dst" => &["GET /echo/dst", "host: name.example:8080"],
            "dstany" => &["GET /echo/dstany", "host: name.example:8080"],
            "dstbare" => &["error: Can't use the 'dst' argument"],
            "silent" => &[
                "status=504",
                "reason=Gateway Time-out",
                "504 Gateway Time-out",
            ],
            "refused" => &[
                "status=503",
                "reason=Service Unavailable",
                "No server is available",
            ],
            // A certificate nobody signed: the handshake fails, which
            // HAProxy counts as a failed connection.
            "tls" => &["status=503", "No server is available"],
            "badurl" => &["error: couldn't start the httpclient"],
            "badparam" => &["error: 'foo' invalid parameter name"],
            _ => &[],
        };
        for w in want {
            assert!(a.contains(w), "case {case}: expected {w:?} in:\n{a}");
        }
    });
}

#[test]
fn https_without_verification_as_haproxy() {
    differential("  httpclient.ssl.verify none", &["tls"], &[], |_, a| {
        assert!(a.starts_with("status=200\nreason=Fine\n"), "{a}");
        assert!(a.contains("GET /echo/tls len=0"), "{a}");
    });
}

#[test]
fn https_verified_with_a_ca_file() {
    // luahost only: HAProxy checks the name against the SNI it sends, the
    // Host header's "127.0.0.1", which OpenSSL does not match with the
    // certificate's IP address.
    let (_lh, port) = start("luahost_ca", None, "  httpclient.ssl.ca-file ca.pem");
    let a = ask(port, "/tls");
    assert!(a.starts_with("status=200\nreason=Fine\n"), "{a}");
}

#[test]
fn not_usable_in_a_fetch() {
    let (_lh, port) = start("luahost_fetch", None, "");
    let a = ask(port, "/fetch");
    assert!(a.starts_with("false "), "{a}");
    assert!(a.contains("not usable in a sample fetch"), "{a}");
}

/// Polls `cond` for up to `secs`.
fn eventually(secs: u64, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Each test that counts connections runs alone against the origin.
fn counting() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn pooled_connections_are_reused_then_closed_when_idle() {
    let _g = counting();
    let w = world();
    let (_lh, port) = start_counted(
        "luahost_pool",
        None,
        "  httpclient.pool.idle-timeout 500ms",
        true,
    );
    let before = w.counted.accepted();
    for _ in 0..20 {
        assert!(ask(port, "/get").contains("GET /echo/get"));
    }
    assert_eq!(w.counted.accepted() - before, 1, "20 calls, one connection");
    // The Unix socket destination is pooled too.
    let unix_before = w.counted_unix.accepted.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert!(ask(port, "/unix").contains("GET /echo/unix"));
    }
    assert_eq!(
        w.counted_unix.accepted.load(Ordering::SeqCst) - unix_before,
        1
    );
    // Once idle past the timeout, nothing stays open at the origins.
    assert!(
        eventually(5, || w.counted.open() == 0),
        "origin connections left open: {}",
        w.counted.open()
    );
    assert!(
        eventually(5, || w.counted_unix.open.load(Ordering::SeqCst) == 0),
        "unix connections left open"
    );
}

#[test]
fn a_connection_the_server_dropped_is_retried_for_idempotent_methods() {
    let _g = counting();
    let w = world();
    let (_lh, port) = start_counted("luahost_stale", None, "", true);
    let before = w.counted.accepted();
    // The origin answers the first request of a connection, then drops the
    // connection when the next one arrives on it.
    assert!(ask(port, "/stale").starts_with("status=200"));
    let second = ask(port, "/stale");
    assert!(
        second.starts_with("status=200"),
        "a GET is sent again on a new connection: {second}"
    );
    assert_eq!(w.counted.accepted() - before, 2);
    // A POST is not sent twice: the server may have acted on it.
    let post = ask(port, "/stalepost");
    assert!(post.starts_with("status=502"), "{post}");
}

#[test]
fn no_connection_outlives_a_cancelled_request() {
    let _g = counting();
    let w = world();
    // A client's close aborts the request (else it is a half-close).
    let (_lh, port) = start_counted("luahost_cancel", None, "|  option abortonclose", true);
    let aborted = w.counted.counters.aborted.load(Ordering::SeqCst);
    // The service waits on an origin that never answers; the client leaves.
    let mut c = HttpReader::connect(port);
    c.send(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n");
    assert!(eventually(5, || w.counted.open() >= 1));
    std::thread::sleep(Duration::from_millis(200));
    drop(c);
    assert!(
        eventually(4, || w.counted.counters.aborted.load(Ordering::SeqCst)
            > aborted),
        "the origin connection of the cancelled request stayed open"
    );
    assert!(eventually(4, || w.counted.open() == 0));
}

#[test]
fn response_bodies_are_bounded_by_maxmem() {
    let _g = counting();
    let (_lh, port) = start("luahost_maxmem", None, "  tune.lua.maxmem 16");
    let a = ask(port, "/big");
    assert!(a.starts_with("status=0\n"), "{}", &a[..a.len().min(200)]);
    // The state goes on serving.
    assert!(ask(port, "/get").starts_with("status=200"));
}

#[test]
fn configuration_errors_name_their_line() {
    let dir = scratch_dir("lua_httpclient_cfg");
    let cases = [
        (
            "httpclient.retries",
            "'httpclient.retries' expects an integer argument.",
        ),
        (
            "httpclient.ssl.verify maybe",
            "'httpclient.ssl.verify' expects 'none' or 'required' as argument.",
        ),
        (
            "httpclient.resolvers.prefer ipv5",
            "'httpclient.resolvers.prefer' expects 'ipv4' or 'ipv6' as argument.",
        ),
        (
            "httpclient.resolvers.disabled maybe",
            "'httpclient.resolvers.disabled' expects either 'on' or 'off' but got 'maybe'.",
        ),
        (
            "httpclient.retries 2 3",
            "'httpclient.retries' cannot handle unexpected argument '3'.",
        ),
        (
            "httpclient.ssl.ca-file /nonexistent/ca.pem",
            "cannot initialize SSL verify with 'ca-file \"/nonexistent/ca.pem\"'",
        ),
        (
            "httpclient.resolvers.id nope",
            "Can't find resolvers section 'nope'",
        ),
        (
            "httpclient.timeout.connect 5x",
            "'httpclient.timeout.connect' expects a time value",
        ),
    ];
    for (line, message) in cases {
        let cfg = format!(
            "global\n  {line}\ndefaults\n  mode http\nfrontend f\n  bind 127.0.0.1:{}\n",
            free_port()
        );
        std::fs::write(dir.join("k.cfg"), cfg).expect("write");
        let out = run_with_timeout(
            Command::new(artifacts().luahost())
                .args(["-c", "-f"])
                .arg(dir.join("k.cfg")),
            20,
        );
        assert_eq!(out.status, Some(1), "{line}: {}", out.stderr);
        assert!(out.stderr.contains("k.cfg:2]"), "{line}: {}", out.stderr);
        assert!(
            out.stderr.contains(message),
            "{line}: expected {message:?} in {}",
            out.stderr
        );
    }
    let cfg = "global\n  httpclient.retries 0\n  httpclient.timeout.connect 2s\n  httpclient.ssl.verify none\n  \
               httpclient.resolvers.id default\n  httpclient.resolvers.prefer ipv4\n  httpclient.resolvers.disabled off\n  \
               httpclient.ssl.ca-file @system-ca\n  httpclient.pool.idle-timeout 1s\ndefaults\n  mode http\n";
    std::fs::write(dir.join("ok.cfg"), cfg).expect("write");
    let out = run_with_timeout(
        Command::new(artifacts().luahost())
            .args(["-c", "-f"])
            .arg(dir.join("ok.cfg")),
        20,
    );
    assert_eq!(out.status, Some(0), "{}", out.stderr);
}
