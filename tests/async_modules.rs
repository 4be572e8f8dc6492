//! Native functions that wait without blocking (examples/async-rs, built on
//! luahost-modules' `async_function`), end to end with a real luahost, real
//! sockets on 127.0.0.1 and the stock `lua5.4`:
//!
//! * 100 service calls wait at the same time on a local line server, on a
//!   single worker thread, while that worker answers another request; 100
//!   `sleep(1000)` calls finish well inside a bound that 100 blocking calls
//!   could not meet;
//! * the same functions under `lua5.4` (and `luahost run`) block and return
//!   the same results;
//! * a client that goes away cancels what its action or service waits on:
//!   the module's futures are dropped and its sockets closed;
//! * fetches, converters, a script's own coroutines and C calls that cannot
//!   yield get a clear error; a lua-load body may wait (it blocks);
//! * waiting is not charged to the execution budget;
//! * memory a module holds through the toolkit counts against
//!   `tune.lua.maxmem`; a long native computation is told to yield.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use luahost_suite::{
    artifacts, free_port, http_get, require_program, run_with_timeout, scratch_dir, HttpReader,
    Proxy,
};

/// The cdylib of examples/async-rs.
fn async_rs_so() -> PathBuf {
    artifacts().cdylib("async-rs")
}

/// A `package.cpath` line that finds `async_rs` in the build directory.
fn cpath_line() -> String {
    let dir = async_rs_so()
        .parent()
        .expect("profile dir")
        .display()
        .to_string();
    format!("package.cpath = '{dir}/lib?.so;' .. package.cpath\n")
}

/// A line server on 127.0.0.1 (std threads): reads one line per connection
/// and answers `echo:<line>` once released, or never (`hold`). It counts the
/// connections open now, so a test can see both how many calls wait at once
/// and that cancelled calls closed their sockets.
struct LineServer {
    port: u16,
    shared: Arc<ServerShared>,
}

struct ServerShared {
    open: AtomicUsize,
    released: Mutex<bool>,
    release: Condvar,
}

impl LineServer {
    fn start(released: bool) -> LineServer {
        // A port from free_port, which never hands out the same port twice
        // in this process: an OS-chosen one could be a port free_port gave
        // to a proxy of a test running in parallel.
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind line server");
        let shared = Arc::new(ServerShared {
            open: AtomicUsize::new(0),
            released: Mutex::new(released),
            release: Condvar::new(),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let s = s.clone();
                s.open.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    serve(conn, &s);
                    s.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        LineServer { port, shared }
    }

    fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Lets every connection, present and future, have its answer.
    fn release(&self) {
        *self
            .shared
            .released
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.release.notify_all();
    }

    /// Waits (bounded) until `open()` satisfies `pred`.
    fn wait_open(&self, what: &str, pred: impl Fn(usize) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pred(self.open()) {
            assert!(
                Instant::now() < deadline,
                "{what}: {} connection(s) open",
                self.open()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One connection: a line in, then `echo:<line>` when released, until the
/// client closes.
fn serve(conn: TcpStream, s: &ServerShared) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let _ = conn.set_read_timeout(Some(Duration::from_millis(20)));
    let mut conn = conn;
    loop {
        let released = {
            let g = s.released.lock().unwrap_or_else(|e| e.into_inner());
            let (g, _) = s
                .release
                .wait_timeout(g, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner());
            *g
        };
        if released {
            let _ = conn.write_all(format!("echo:{line}").as_bytes());
            return;
        }
        // Still held: notice a client that went away.
        let mut byte = [0u8; 1];
        match conn.read(&mut byte) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}

/// The Lua file of the proxy tests: services, an action, a fetch and a
/// converter around async_rs. `SERVER_PORT` is replaced.
const SVC: &str = r#"
local a = require "async_rs"
-- A lua-load body may wait: nothing is served yet, so the call blocks.
local loaded = a.sleep(5)
local port = SERVER_PORT

local function reply(applet, body)
  applet:set_status(200)
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end

core.register_service("line", "http", function(applet)
  reply(applet, a.request("127.0.0.1", port, applet.path))
end)
core.register_service("timed", "http", function(applet)
  local line, err = a.request("127.0.0.1", port, applet.path, 200)
  reply(applet, tostring(line) .. " " .. tostring(err))
end)
core.register_service("nap", "http", function(applet)
  reply(applet, "slept " .. a.sleep(1000))
end)
core.register_service("napwork", "http", function(applet)
  local slept = a.sleep(1000)
  -- Enough instructions after the wait for the budget hook to run.
  local n = 0
  for i = 1, 200000 do n = n + i end
  reply(applet, "slept " .. slept)
end)
core.register_service("after", "http", function(applet)
  reply(applet, "sent")
  -- The response is complete; the service goes on.
  a.sleep(100)
  core.Alert("after " .. applet.method .. " " .. applet.path)
end)
core.register_service("plain", "http", function(applet)
  reply(applet, "plain live=" .. a.live() .. " loaded=" .. loaded)
end)
core.register_service("odd", "http", function(applet)
  local out = {}
  local ok, err = coroutine.resume(coroutine.create(function() return a.sleep(1) end))
  out[#out + 1] = tostring(ok) .. " " .. tostring(err)
  ok, err = pcall(table.sort, {1, 2, 3}, function(x, y) a.sleep(1) return x < y end)
  out[#out + 1] = tostring(ok) .. " " .. tostring(err)
  reply(applet, table.concat(out, "\n"))
end)
core.register_action("wait", {"http-req"}, function(txn)
  a.request("127.0.0.1", port, "action")
end)
core.register_fetches("nap", function(txn) return tostring(a.sleep(1)) end)
core.register_converters("nap", function(s) return s .. a.sleep(1) end)
"#;

fn start_proxy(name: &str, server_port: u16, global: &str) -> (Proxy, u16) {
    let port = free_port();
    let lua = format!(
        "{}{}",
        cpath_line(),
        SVC.replace("SERVER_PORT", &server_port.to_string())
    );
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\n{global}defaults\n  mode http\n  timeout client 30s\n\
         \x20 option abortonclose\n\
         frontend f\n  bind 127.0.0.1:{port}\n\
         \x20 http-request lua.wait if {{ path_beg /action }}\n\
         \x20 http-request set-header x-fetch %[lua.nap] if {{ path_beg /fetch }}\n\
         \x20 http-request set-header x-conv %[str(a),lua.nap] if {{ path_beg /conv }}\n\
         \x20 http-request use-service lua.line if {{ path_beg /line }}\n\
         \x20 http-request use-service lua.timed if {{ path_beg /timed }}\n\
         \x20 http-request use-service lua.napwork if {{ path_beg /napwork }}\n\
         \x20 http-request use-service lua.nap if {{ path_beg /nap }}\n\
         \x20 http-request use-service lua.odd if {{ path_beg /odd }}\n\
         \x20 http-request use-service lua.after if {{ path_beg /after }}\n\
         \x20 http-request use-service lua.plain\n"
    );
    let p = Proxy::start(
        name,
        &[("svc.lua", &lua), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[port],
    );
    (p, port)
}

/// Sends a GET and returns the connection, to read the answer later or
/// close it unanswered.
fn send_get(port: u16, path: &str) -> HttpReader {
    let mut c = HttpReader::connect(port);
    c.send(format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").as_bytes());
    c
}

#[test]
fn hundred_calls_wait_together_on_one_worker_that_keeps_serving() {
    let server = LineServer::start(false);
    let (_p, port) = start_proxy("async_hundred", server.port, "");
    let mut clients: Vec<HttpReader> = (0..100)
        .map(|i| send_get(port, &format!("/line{i}")))
        .collect();
    // All 100 reach the server before any is answered: one worker thread
    // waits on all of them at once (blocking calls would reach it one by
    // one, and the first would never be answered).
    server.wait_open("100 calls waiting at once", |n| n == 100);
    // Meanwhile the same worker answers another request.
    let plain = http_get(port, "/plain");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.text(), "plain live=100 loaded=5");
    server.release();
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response(false).expect("a response");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("echo:/line{i}"));
    }
    assert_eq!(http_get(port, "/plain").text(), "plain live=0 loaded=5");

    // 100 sleep(1000) calls: 100 s if they blocked the worker; the bound
    // below is far less.
    let started = Instant::now();
    let mut clients: Vec<HttpReader> = (0..100).map(|_| send_get(port, "/nap")).collect();
    for c in &mut clients {
        let r = c.read_response(false).expect("a response");
        assert_eq!(r.text(), "slept 1000");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "100 sleeps took {:?}",
        started.elapsed()
    );
}

/// A script using async_rs the same way in every interpreter.
const SCRIPT: &str = r#"
local a = require "async_rs"
print(a.sleep(50))
print(a.request("127.0.0.1", SERVER_PORT, "hello"))
print(a.request("127.0.0.1", SERVER_PORT, "again"))
print(pcall(a.sleep))
print(pcall(a.request, "127.0.0.1", 70000, "x"))
print(a.live())
-- No host budget here: never asked to yield; charges always succeed.
print(select(2, a.spin(5)), a.hold(1000):size())
"#;

#[test]
fn stock_lua_blocks_and_returns_the_same_results() {
    let server = LineServer::start(true);
    let dir = scratch_dir("async_stock");
    let script = format!(
        "{}{}",
        cpath_line(),
        SCRIPT.replace("SERVER_PORT", &server.port.to_string())
    );
    std::fs::write(dir.join("t.lua"), script).expect("write script");
    let expected = "50\necho:hello\tnil\necho:again\tnil\n\
        false\tbad argument #1 to 'async_rs.sleep' (number expected, got nil)\n\
        false\tbad argument #2 to 'async_rs.request' (port out of range)\n0\nfalse\t1000\n";
    let mut runs = vec![("luahost run", {
        let mut c = Command::new(artifacts().luahost());
        c.arg("run");
        c
    })];
    if let Some(lua) = require_program("lua5.4", "the same module blocks under stock Lua") {
        runs.push(("lua5.4", Command::new(lua)));
    }
    for (who, mut cmd) in runs {
        cmd.arg("t.lua").current_dir(&dir);
        let out = run_with_timeout(&mut cmd, 30);
        assert_eq!(out.status, Some(0), "{who}: {}", out.stderr);
        assert_eq!(out.stdout, expected, "{who}: {}", out.stderr);
    }
}

#[test]
fn client_gone_cancels_the_wait_and_leaks_nothing() {
    // A client's close aborts its request only with `option abortonclose`
    // (as in HAProxy; by default a half-closed client is still answered).
    let server = LineServer::start(false);
    let (_p, port) = start_proxy("async_cancel", server.port, "");
    for path in ["/action", "/line-held"] {
        let clients: Vec<HttpReader> = (0..10).map(|_| send_get(port, path)).collect();
        server.wait_open(path, |n| n == 10);
        assert_eq!(http_get(port, "/plain").text(), "plain live=10 loaded=5");
        drop(clients);
        // Every future is dropped and every server connection closed.
        server.wait_open(&format!("{path}: cancelled calls close"), |n| n == 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = http_get(port, "/plain").text();
            if text == "plain live=0 loaded=5" {
                break;
            }
            assert!(Instant::now() < deadline, "{path}: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_module_timeout_drops_the_wait_and_leaks_nothing() {
    // The server holds every line: each call ends by its own 200 ms limit,
    // which drops the future on the module's thread and closes the
    // connection, while the client still gets its answer.
    let server = LineServer::start(false);
    let (_p, port) = start_proxy("async_timeout", server.port, "");
    let clients: Vec<HttpReader> = (0..10).map(|_| send_get(port, "/timed")).collect();
    for mut c in clients {
        let r = c.read_response(false).expect("an answer");
        assert_eq!((r.status, r.text()), (200, "nil timeout".to_string()));
    }
    server.wait_open("timed-out calls close", |n| n == 0);
    assert_eq!(http_get(port, "/plain").text(), "plain live=0 loaded=5");
}

#[test]
fn a_service_runs_on_after_its_complete_response() {
    // Stopping services whose client went away must not stop one that
    // answered in full (content-length reached, or HEAD) and goes on.
    let server = LineServer::start(true);
    let (p, port) = start_proxy("async_after", server.port, "");
    assert_eq!(http_get(port, "/after-get").text(), "sent");
    let mut c = send_head(port, "/after-head");
    let r = c.read_response(true).expect("a response");
    assert_eq!(r.status, 200);
    let log = p.wait_log("after HEAD /after-head", 10);
    assert!(log.contains("after GET /after-get"), "{log}");
    assert!(log.contains("after HEAD /after-head"), "{log}");
}

fn send_head(port: u16, path: &str) -> HttpReader {
    let mut c = HttpReader::connect(port);
    c.send(format!("HEAD {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").as_bytes());
    c
}

#[test]
fn where_waiting_is_refused_the_error_says_why() {
    let server = LineServer::start(true);
    let (p, port) = start_proxy("async_refused", server.port, "");
    // A fetch and a converter: logged, and the request goes on.
    assert_eq!(http_get(port, "/fetch").status, 200);
    assert_eq!(http_get(port, "/conv").status, 200);
    let log = p.wait_log("Lua converter", 5);
    let at = |needle: &str| format!("svc.lua:{}:", line_of(needle));
    let refused = "cannot wait in a sample fetch or converter \
                   (call it from an action, service, task or callback)";
    let fetch = format!(
        "Lua sample-fetch 'nap': {} {refused}",
        at("register_fetches")
    );
    let conv = format!(
        "Lua converter 'nap': {} {refused}",
        at("register_converters")
    );
    assert!(log.contains(&fetch), "{fetch}\n{log}");
    assert!(log.contains(&conv), "{conv}\n{log}");
    let odd = http_get(port, "/odd").text();
    assert_eq!(
        odd,
        format!(
            "false {} cannot wait in a coroutine created by the script \
             (call it from the action, service or task itself)\n\
             false {} cannot wait here: the call is inside a C function that cannot yield",
            at("coroutine.create"),
            at("table.sort")
        )
    );
}

/// The line of svc.lua (as start_proxy writes it) containing `needle`.
fn line_of(needle: &str) -> usize {
    let text = format!("{}{}", cpath_line(), SVC);
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle} not in svc.lua"))
}

#[test]
fn waiting_is_not_charged_to_the_execution_budget() {
    let server = LineServer::start(true);
    // 300 ms of budget; the service waits 1000 ms, then runs Lua code (so
    // that the budget is checked after the wait).
    let (_p, port) = start_proxy(
        "async_budget",
        server.port,
        "  tune.lua.service-timeout 300\n",
    );
    let r = http_get(port, "/napwork");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slept 1000");
}

/// Services using the budget side of the toolkit.
const BUDGET_SVC: &str = r#"
local a = require "async_rs"
local function reply(applet, body)
  applet:set_status(200)
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end
core.register_service("mem", "http", function(applet)
  local out = {}
  local ok, err = pcall(a.hold, 64 * 1024 * 1024)
  out[#out + 1] = tostring(ok) .. " " .. tostring(err)
  local first = a.hold(20 * 1024 * 1024)
  out[#out + 1] = "first " .. first:size()
  ok, err = pcall(a.hold, 20 * 1024 * 1024)
  out[#out + 1] = tostring(ok) .. " " .. tostring(err)
  reply(applet, table.concat(out, "\n"))
end)
core.register_service("spin", "http", function(applet)
  local ms, asked = a.spin(5000)
  reply(applet, "asked " .. tostring(asked))
end)
"#;

#[test]
fn module_memory_counts_against_maxmem_and_long_natives_are_told_to_yield() {
    let port = free_port();
    let lua = format!("{}{}", cpath_line(), BUDGET_SVC);
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\n  tune.lua.maxmem 32\ndefaults\n  mode http\n  timeout client 30s\n\
         frontend f\n  bind 127.0.0.1:{port}\n\
         \x20 http-request use-service lua.spin if {{ path_beg /spin }}\n\
         \x20 http-request use-service lua.mem\n"
    );
    let _p = Proxy::start(
        "async_maxmem",
        &[("svc.lua", &lua), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[port],
    );
    let expected = "false not enough memory\nfirst 20971520\nfalse not enough memory";
    assert_eq!(http_get(port, "/mem").text(), expected);
    // The first 20 MB were given back when their object was collected
    // (or at the latest by the next full collection): the same again works.
    assert_eq!(http_get(port, "/mem").text(), expected);
    assert_eq!(http_get(port, "/spin").text(), "asked true");
}
