//! Server events and health checks, differential against HAProxy 3.0
//! (issue 13, items 4 and 6). The same configuration and Lua subscriber run
//! under luahost and HAProxy 3.0; the events the subscriber records are read
//! back through a Lua service and must be equal. HAProxy 2.6 is not asked:
//! it has no `core.event_sub` (HAProxy 2.8+).
//!
//! Servers are real listeners on 127.0.0.1 that the test closes and
//! reopens; state changes, `add server` and `del server` go over the stats
//! socket.

use luahost_suite::{artifacts, free_port, require_haproxy_30, scratch_dir};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A proxy under test: luahost or HAProxy 3.0.
struct Peer {
    label: String,
    program: PathBuf,
}

fn peers() -> Vec<Peer> {
    let mut v = vec![Peer {
        label: "luahost".into(),
        program: artifacts().luahost(),
    }];
    if let Some(h) = require_haproxy_30("server events are compared with HAProxy 3.0") {
        v.push(Peer {
            label: h.label,
            program: h.program,
        });
    }
    v
}

/// The recorder every subscriber writes to, and the service that reads it.
const RECORDER: &str = r#"
events = {}
function record(s) events[#events + 1] = s end
core.register_service("events", "http", function(applet)
  local body = table.concat(events, "\n")
  applet:set_status(200)
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end)
"#;

/// One running proxy.
struct Run {
    _proc: Running,
    dir: PathBuf,
    fe: u16,
    ev: u16,
    label: String,
}

impl Run {
    fn start(peer: &Peer, test: &str, backend: &str, subscriber: &str) -> Run {
        let tag = format!("{test}_{}", peer.label.replace(' ', "_"));
        let dir = scratch_dir(&format!("server_events_{tag}"));
        let (fe, ev) = (free_port(), free_port());
        let _ = std::fs::remove_file(dir.join("admin.sock"));
        std::fs::write(dir.join("ev.lua"), format!("{RECORDER}\n{subscriber}")).expect("lua");
        let cfg = format!(
            "global\n  nbthread 1\n  lua-load {d}/ev.lua\n  stats socket {d}/admin.sock level admin\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
             backend be\n{backend}\n\
             frontend fe\n  bind 127.0.0.1:{fe}\n  default_backend be\n\
             frontend ev\n  bind 127.0.0.1:{ev}\n  http-request use-service lua.events\n",
            d = dir.display()
        );
        std::fs::write(dir.join("p.cfg"), cfg).expect("cfg");
        let log = std::fs::File::create(dir.join("stderr")).expect("log");
        let mut cmd = Command::new(&peer.program);
        if peer.label != "luahost" {
            cmd.arg("-db");
        }
        let child = cmd
            .arg("-f")
            .arg(dir.join("p.cfg"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start proxy");
        let mut proc = Running(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(dir.join("admin.sock")).is_err()
            || TcpStream::connect(("127.0.0.1", ev)).is_err()
        {
            if let Ok(Some(st)) = proc.0.try_wait() {
                panic!(
                    "{tag} exited ({st}): {}",
                    std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "{tag} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Run {
            _proc: proc,
            dir,
            fe,
            ev,
            label: peer.label.clone(),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// Sends commands (one line, `;`-separated allowed) on the admin socket.
    fn admin(&self, cmd: &str) -> String {
        let mut s = UnixStream::connect(self.dir.join("admin.sock")).expect("stats socket");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(format!("{cmd}\n").as_bytes()).expect("send");
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// The events recorded so far.
    fn events(&self) -> Vec<String> {
        let body = get(self.ev, "/").1;
        body.lines().map(str::to_string).collect()
    }

    /// Waits until the recorded events satisfy `done` (up to `secs`).
    fn wait_events(&self, secs: u64, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let ev = self.events();
            if done(&ev) || Instant::now() > deadline {
                return ev;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_log(&self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let log = self.stderr();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One GET on a fresh connection: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A server on 127.0.0.1 that answers every request with `status` and
/// `body`, and can be closed and reopened on the same port.
struct Origin {
    port: u16,
    status: &'static str,
    body: &'static str,
    /// Answers keep the connection open (no `connection: close`).
    keep_alive: bool,
    stop: Option<Arc<AtomicBool>>,
}

impl Origin {
    fn new(status: &'static str, body: &'static str) -> Origin {
        let mut o = Origin {
            port: free_port(),
            status,
            body,
            keep_alive: false,
            stop: None,
        };
        o.open();
        o
    }

    /// An origin that keeps its connections open after each answer.
    fn keep_alive(status: &'static str, body: &'static str) -> Origin {
        let mut o = Origin {
            port: free_port(),
            status,
            body,
            keep_alive: true,
            stop: None,
        };
        o.open();
        o
    }

    fn open(&mut self) {
        let l = TcpListener::bind(("127.0.0.1", self.port)).expect("bind origin");
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let (status, body, keep) = (self.status, self.body, self.keep_alive);
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        std::thread::spawn(move || answer(c, status, body, keep));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            // The listener is dropped here: the port refuses connections.
        });
        self.stop = Some(stop);
    }

    /// Closes the listening socket (connections are then refused).
    fn close(&mut self) {
        if let Some(s) = self.stop.take() {
            s.store(true, Ordering::Relaxed);
        }
        // Wait until the port refuses.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            s.store(true, Ordering::Relaxed);
        }
    }
}

/// Answers each request head with `status` and `body`; closes after the
/// first unless `keep_alive`.
fn answer(mut c: TcpStream, status: &str, body: &str, keep_alive: bool) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let close = if keep_alive {
        ""
    } else {
        "connection: close\r\n"
    };
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{close}\r\n{body}",
                body.len()
            );
            if c.write_all(reply.as_bytes()).is_err() || !keep_alive {
                return;
            }
            buf.drain(..end + 4);
            continue;
        }
        match c.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// Runs `scenario` on every peer, each with a fresh origin answering
/// `200 OK` with `body` behind the servers s1 and s2 of backend `be`, and
/// `subscriber` loaded; gives each peer's label and the events the
/// scenario returns.
fn on_two_servers(
    test: &str,
    body: &'static str,
    subscriber: &str,
    scenario: impl Fn(&Run, &Origin) -> Vec<String>,
) -> Vec<(String, Vec<String>)> {
    peers()
        .iter()
        .map(|peer| {
            let origin = Origin::new("200 OK", body);
            let be = format!(
                "  server s1 127.0.0.1:{p}\n  server s2 127.0.0.1:{p}",
                p = origin.port
            );
            let run = Run::start(peer, test, &be, subscriber);
            (run.label.clone(), scenario(&run, &origin))
        })
        .collect()
}

/// Checks that every peer recorded the same events, equal to `expected`.
fn same_events(expected: &[&str], results: Vec<(String, Vec<String>)>) {
    for (label, got) in &results {
        assert_eq!(got, expected, "{label} recorded other events");
    }
}

/// A server's listener closes: SERVER_DOWN after `fall` failed checks (with
/// HAProxy's log line), the traffic goes to the other server; it reopens:
/// SERVER_UP after `rise` passed checks. `data.reference` is the live
/// Server.
#[test]
fn a_closed_listener_takes_its_server_down_and_back_up() {
    let backend = "  balance roundrobin\n  server s1 127.0.0.1:{A} check inter 100ms fall 2 rise 2\n  server s2 127.0.0.1:{B} check inter 100ms fall 2 rise 2";
    let subscriber = r#"
core.event_sub({"SERVER_UP", "SERVER_DOWN"}, function(event, data, sub, when)
  local ref = data.reference
  record(event .. " " .. data.proxy_name .. "/" .. data.name .. " puid=" .. data.puid
    .. " ref=" .. (ref and ref:get_name() or "none") .. " when=" .. tostring(math.type(when)))
end)
"#;
    let mut results = Vec::new();
    for peer in peers() {
        let mut a = Origin::new("200 OK", "s1");
        let b = Origin::new("200 OK", "s2");
        let be = backend
            .replace("{A}", &a.port.to_string())
            .replace("{B}", &b.port.to_string());
        let run = Run::start(&peer, "down_up", &be, subscriber);
        // Both servers up and checked a few times: no event.
        std::thread::sleep(Duration::from_millis(500));
        assert!(run.events().is_empty(), "{}: {:?}", run.label, run.events());
        a.close();
        let ev = run.wait_events(10, |e| !e.is_empty());
        assert_eq!(ev.len(), 1, "{}: {ev:?}", run.label);
        let log = run.wait_log("is DOWN", 5);
        assert!(
            log.contains("Server be/s1 is DOWN, reason: Layer4 connection problem, info: \"Connection refused\", check duration: ")
                && log.contains("1 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue."),
            "{}: {log}",
            run.label
        );
        // Every request now goes to s2.
        for _ in 0..10 {
            assert_eq!(get(run.fe, "/"), (200, "s2".to_string()), "{}", run.label);
        }
        a.open();
        let ev = run.wait_events(10, |e| e.len() >= 2);
        let log = run.wait_log("is UP", 5);
        assert!(
            log.contains("Server be/s1 is UP, reason: Layer4 check passed, check duration: ")
                && log.contains(
                    "2 active and 0 backup servers online. 0 sessions requeued, 0 total in queue."
                ),
            "{}: {log}",
            run.label
        );
        // s1 serves again.
        let bodies: Vec<String> = (0..10).map(|_| get(run.fe, "/").1).collect();
        assert!(
            bodies.iter().any(|b| b == "s1"),
            "{}: {bodies:?}",
            run.label
        );
        results.push((run.label.clone(), ev));
    }
    same_events(
        &[
            "SERVER_DOWN be/s1 puid=1 ref=s1 when=integer",
            "SERVER_UP be/s1 puid=1 ref=s1 when=integer",
        ],
        results,
    );
}

/// `add server` and `del server` over the stats socket: SERVER_ADD with a
/// reference, SERVER_DEL without.
#[test]
fn add_and_del_server_over_the_socket() {
    let subscriber = r#"
core.event_sub({"SERVER_ADD", "SERVER_DEL"}, function(event, data)
  record(event .. " " .. data.proxy_name .. "/" .. data.name .. " puid=" .. data.puid
    .. " ref=" .. tostring(data.reference ~= nil))
end)
"#;
    let results = on_two_servers("add_del", "s2", subscriber, |run, b| {
        let added = run.admin(&format!("add server be/s9 127.0.0.1:{}", b.port));
        assert!(
            added.contains("New server registered."),
            "{}: {added}",
            run.label
        );
        // The handler looks the reference up when it runs: let it run
        // before the server goes.
        run.wait_events(5, |e| !e.is_empty());
        let deleted = run.admin("del server be/s9");
        assert!(
            deleted.contains("Server deleted."),
            "{}: {deleted}",
            run.label
        );
        run.wait_events(5, |e| e.len() >= 2)
    });
    same_events(
        &[
            "SERVER_ADD be/s9 puid=3 ref=true",
            "SERVER_DEL be/s9 puid=3 ref=false",
        ],
        results,
    );
}

/// A handler that sleeps still sees the events one at a time, in order:
/// the next one is delivered only once it returned. SERVER_STATE carries
/// HAProxy's state data; SERVER_ADMIN its admin matrix.
#[test]
fn a_sleeping_handler_gets_its_events_in_order() {
    let subscriber = r#"
core.event_sub({"SERVER_STATE", "SERVER_ADMIN"}, function(event, data)
  core.msleep(30)
  if event == "SERVER_STATE" then
    local s = data.state
    record(event .. " " .. data.name .. " " .. s.old_state .. "->" .. s.new_state
      .. " admin=" .. tostring(s.admin) .. " cause=[" .. s.cause .. "] requeued=" .. s.requeued
      .. " check=" .. tostring(s.check ~= nil))
  else
    local a = data.admin
    record(event .. " " .. data.name .. " MAINT " .. tostring(a.old_admin.MAINT) .. "->"
      .. tostring(a.new_admin.MAINT) .. " FMAINT " .. tostring(a.old_admin.FMAINT) .. "->"
      .. tostring(a.new_admin.FMAINT) .. " DRAIN " .. tostring(a.new_admin.DRAIN))
  end
end)
"#;
    let results = on_two_servers("ordering", "ok", subscriber, |run, _| {
        run.admin("set server be/s1 state maint; set server be/s1 state ready; set server be/s2 state maint; set server be/s2 state ready");
        run.wait_events(10, |e| e.len() >= 8)
    });
    same_events(
        &[
            "SERVER_ADMIN s1 MAINT false->true FMAINT false->true DRAIN false",
            "SERVER_STATE s1 RUNNING->STOPPED admin=true cause=[] requeued=0 check=false",
            "SERVER_ADMIN s1 MAINT true->false FMAINT true->false DRAIN false",
            "SERVER_STATE s1 STOPPED->RUNNING admin=true cause=[] requeued=0 check=false",
            "SERVER_ADMIN s2 MAINT false->true FMAINT false->true DRAIN false",
            "SERVER_STATE s2 RUNNING->STOPPED admin=true cause=[] requeued=0 check=false",
            "SERVER_ADMIN s2 MAINT true->false FMAINT true->false DRAIN false",
            "SERVER_STATE s2 STOPPED->RUNNING admin=true cause=[] requeued=0 check=false",
        ],
        results,
    );
}

/// More than 100 unconsumed events: the subscription pauses with the
/// warning, loses the events that come while it is paused, and resumes
/// once it has caught up (a later event is delivered).
///
/// The slow first call is a busy loop, not `core.msleep`: HAProxy 3.0 never
/// resumes a handler that was sleeping when its subscription paused (its
/// events are then never delivered again), which luahost does not copy.
#[test]
fn a_handler_that_cannot_keep_up_is_paused_then_resumed() {
    let subscriber = r#"
local first = true
core.event_sub({"SERVER_STATE"}, function(event, data)
  if first then
    first = false
    local t = os.clock()
    while os.clock() - t < 0.3 do end
  end
  record(data.name)
end)
"#;
    let changes = |n: usize| -> String {
        (0..n)
            .map(|i| {
                let state = if i.is_multiple_of(2) {
                    "maint"
                } else {
                    "ready"
                };
                format!("set server be/s1 state {state}")
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    on_two_servers("pause", "ok", subscriber, |run, _| {
        run.admin(&changes(110));
        std::thread::sleep(Duration::from_millis(100));
        run.admin(&changes(10));
        let log = run.wait_log("pausing the subscription", 5);
        assert!(
            log.contains("Lua event_hdl: pausing the subscription because the handler fails to keep up the pace"),
            "{}: {log}",
            run.label
        );
        // Caught up: every queued event was handled.
        let settled = |e: &[String]| e.len() >= 100;
        let ev = run.wait_events(10, settled);
        std::thread::sleep(Duration::from_millis(300));
        let ev_after = run.events();
        assert_eq!(ev.len(), ev_after.len(), "{}: still moving", run.label);
        assert!(
            ev.len() > 100 && ev.len() < 120,
            "{}: {} events handled of 120",
            run.label,
            ev.len()
        );
        // Resumed: a new event arrives.
        run.admin("set server be/s2 state maint");
        let ev = run.wait_events(5, |e| e.last().map(String::as_str) == Some("s2"));
        assert_eq!(ev.last().map(String::as_str), Some("s2"), "{}", run.label);
        ev
    });
}

/// `sub:unsub()` inside the callback: no later call. `Server:event_sub`
/// sees only its server's events.
#[test]
fn unsub_inside_the_callback_and_per_server_subscriptions() {
    let subscriber = r#"
core.event_sub({"SERVER_STATE"}, function(event, data, sub)
  record("all " .. data.name)
  sub:unsub()
end)
-- Proxies exist from the init functions on (HAProxy loads Lua before it
-- reads the proxies).
core.register_init(function()
  core.backends["be"].servers["s2"]:event_sub({"SERVER_STATE"}, function(event, data)
    record("s2-only " .. data.name .. " " .. data.state.new_state)
  end)
end)
"#;
    let results = on_two_servers("unsub", "ok", subscriber, |run, _| {
        // One change at a time: HAProxy still delivers the events already
        // queued when `unsub()` runs, so a burst would make the count racy.
        for cmd in [
            "s1 state maint",
            "s2 state maint",
            "s2 state ready",
            "s1 state ready",
        ] {
            run.admin(&format!("set server be/{cmd}"));
            std::thread::sleep(Duration::from_millis(100));
        }
        let ev = run.wait_events(5, |e| e.len() >= 3);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(ev, run.events(), "{}", run.label);
        ev
    });
    same_events(
        &["all s1", "s2-only s2 STOPPED", "s2-only s2 RUNNING"],
        results,
    );
}

/// HTTP checks: a wrong status and a body that lacks the expected string
/// take the server down with HAProxy's reasons; SERVER_CHECK carries the
/// check's result, reason and health.
#[test]
fn http_checks_expect_status_and_string() {
    let subscriber = r#"
core.event_sub({"SERVER_CHECK"}, function(event, data)
  local c = data.check
  if c.result == "FAILED" then
    record(data.name .. " " .. c.result .. " " .. c.reason.short .. " " .. c.reason.desc
      .. " code=" .. tostring(c.reason.code) .. " health=" .. c.health.cur .. "/" .. c.health.rise
      .. "/" .. c.health.fall .. " agent=" .. tostring(c.agent))
  end
end)
"#;
    let mut results = Vec::new();
    for peer in peers() {
        let sick = Origin::new("503 Service Unavailable", "busy");
        let dead = Origin::new("200 OK", "dead");
        let alive = Origin::new("200 OK", "alive");
        let be = format!(
            "  option httpchk GET /health\n  http-check expect status 200\n  \
             server s1 127.0.0.1:{} check inter 100ms\n\
             backend be2\n  option httpchk\n  http-check send meth GET uri /h hdr Host x\n  \
             http-check expect string alive\n  server t1 127.0.0.1:{} check inter 100ms\n  \
             server t2 127.0.0.1:{} check inter 100ms",
            sick.port, dead.port, alive.port
        );
        let run = Run::start(&peer, "httpchk", &be, subscriber);
        let log = run.wait_log("Server be2/t1 is DOWN", 10);
        let log = if log.contains("Server be/s1 is DOWN") {
            log
        } else {
            run.wait_log("Server be/s1 is DOWN", 10)
        };
        assert!(
            log.contains("Server be/s1 is DOWN, reason: Layer7 wrong status, code: 503, info: \"Service Unavailable\", check duration: "),
            "{}: {log}",
            run.label
        );
        assert!(
            log.contains("Server be2/t1 is DOWN, reason: Layer7 invalid response, info: \"HTTP content check did not match\", check duration: "),
            "{}: {log}",
            run.label
        );
        assert!(!log.contains("be2/t2 is DOWN"), "{}: {log}", run.label);
        let mut ev = run.wait_events(5, |e| e.len() >= 2);
        ev.sort();
        ev.truncate(2);
        results.push((run.label.clone(), ev));
    }
    same_events(
        &[
            "s1 FAILED L7STS Layer7 wrong status code=503 health=0/2/3 agent=false",
            "t1 FAILED L7RSP Layer7 invalid response code=nil health=0/2/3 agent=false",
        ],
        results,
    );
}

/// `track`: tracking servers (in the same and another backend, and down a
/// chain) follow the tracked server DOWN and UP, newest tracker first and
/// depth first, each with its own SERVER_DOWN/UP and HAProxy's "via" log
/// line; `Server:tracking()` and `Server:get_trackers()` answer as
/// HAProxy's do.
#[test]
fn tracking_servers_follow_the_tracked_one() {
    let subscriber = r#"
core.event_sub({"SERVER_UP", "SERVER_DOWN"}, function(event, data)
  record(event .. " " .. data.proxy_name .. "/" .. data.name)
end)
core.register_task(function()
  local be, be2 = core.backends.be.servers, core.backends.be2.servers
  local function name(s) return s and (s:get_proxy():get_name() .. "/" .. s:get_name()) or "nil" end
  local function list(t)
    local out = {}
    for i, s in ipairs(t) do out[i] = name(s) end
    return table.concat(out, ",")
  end
  record("tracking t1=" .. name(be2.t1:tracking()) .. " s2=" .. name(be.s2:tracking())
    .. " s1=" .. name(be.s1:tracking()))
  record("trackers s1=" .. list(be.s1:get_trackers()) .. " s2=" .. list(be.s2:get_trackers())
    .. " t1=" .. list(be2.t1:get_trackers()))
end)
"#;
    let mut results = Vec::new();
    for peer in peers() {
        let mut a = Origin::new("200 OK", "a");
        let be = format!(
            "  server s1 127.0.0.1:{p} check inter 100ms fall 1 rise 1\n  \
             server s2 127.0.0.1:{p} track s1\n\
             backend be2\n  server t1 127.0.0.1:{p} track be/s2\n  \
             server t2 127.0.0.1:{p} track be/s1",
            p = a.port
        );
        let run = Run::start(&peer, "track", &be, subscriber);
        let ev = run.wait_events(5, |e| e.len() >= 2);
        assert_eq!(ev.len(), 2, "{}: {ev:?}", run.label);
        a.close();
        let ev = run.wait_events(10, |e| e.len() >= 6);
        let log = run.wait_log("Server be2/t1 is DOWN via be/s2", 5);
        let alert = log.find("backend 'be' has no server available!");
        let t1 = log.find("Server be2/t1 is DOWN via be/s2");
        assert!(
            alert.is_some() && alert < t1,
            "{}: the backend's alert comes before the trackers' lines\n{log}",
            run.label
        );
        for line in [
            "Server be2/t2 is DOWN via be/s1. 1 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.",
            "Server be/s2 is DOWN via be/s1. 0 active and 0 backup servers left.",
            "Server be2/t1 is DOWN via be/s2. 0 active and 0 backup servers left.",
        ] {
            assert!(log.contains(line), "{}: no {line:?} in\n{log}", run.label);
        }
        assert_eq!(ev.len(), 6, "{}: {ev:?}", run.label);
        a.open();
        let ev = run.wait_events(10, |e| e.len() >= 10);
        let log = run.wait_log("Server be2/t1 is UP via be/s2", 5);
        assert!(
            log.contains("Server be/s2 is UP via be/s1. 2 active and 0 backup servers online. 0 sessions requeued, 0 total in queue."),
            "{}: {log}",
            run.label
        );
        results.push((run.label.clone(), ev));
    }
    same_events(
        &[
            "tracking t1=be/s2 s2=be/s1 s1=nil",
            "trackers s1=be2/t2,be/s2 s2=be2/t1 t1=",
            "SERVER_DOWN be/s1",
            "SERVER_DOWN be2/t2",
            "SERVER_DOWN be/s2",
            "SERVER_DOWN be2/t1",
            "SERVER_UP be/s1",
            "SERVER_UP be2/t2",
            "SERVER_UP be/s2",
            "SERVER_UP be2/t1",
        ],
        results,
    );
}

/// Records failed SERVER_CHECK results (short reason, description,
/// health) and SERVER_DOWN. (Whether HAProxy's Lua sees the event of the
/// very first check depends on start-up timing, so passed checks are left
/// out.)
const CHECKS_AND_DOWN: &str = r#"
core.event_sub({"SERVER_CHECK", "SERVER_DOWN"}, function(event, data)
  if event == "SERVER_DOWN" then
    record("DOWN " .. data.name)
  elseif data.check.result == "FAILED" then
    local c = data.check
    record("CHECK " .. data.name .. " " .. c.result .. " " .. c.reason.short .. " "
      .. c.reason.desc .. " health=" .. c.health.cur .. " duration=" .. c.duration)
  end
end)
"#;

/// `observe layer4` with `on-error mark-down`: connections refused to a
/// server whose checks pass (they go to another port) take it DOWN after
/// `error-limit` errors in a row, with HAProxy's "Health analyze" reason.
#[test]
fn observed_connection_errors_mark_a_server_down() {
    let mut results = Vec::new();
    for peer in peers() {
        let check_port = Origin::new("200 OK", "check");
        let other = Origin::new("200 OK", "other");
        let dead = free_port();
        let be = format!(
            "  retries 0\n  balance roundrobin\n  \
             server s1 127.0.0.1:{dead} check port {} inter 10s observe layer4 error-limit 2 on-error mark-down\n  \
             server s2 127.0.0.1:{}",
            check_port.port, other.port
        );
        let run = Run::start(&peer, "observe_l4", &be, CHECKS_AND_DOWN);
        // The first check (at once for the first server) passes.
        std::thread::sleep(Duration::from_millis(500));
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(get(run.fe, "/").0);
        }
        assert_eq!(statuses, [503, 200, 503, 200], "{}", run.label);
        let ev = run.wait_events(5, |e| e.len() >= 2);
        let log = run.wait_log("Server be/s1 is DOWN", 5);
        assert!(
            log.contains("Server be/s1 is DOWN, reason: Health analyze, info: \"Detected 2 consecutive errors, last one was: L4 unsuccessful connection\". 1 active and 0 backup servers left. 1 sessions active, 0 requeued, 0 remaining in queue."),
            "{}: {log}",
            run.label
        );
        // Now every request goes to s2.
        assert_eq!(
            get(run.fe, "/"),
            (200, "other".to_string()),
            "{}",
            run.label
        );
        assert_eq!(
            get(run.fe, "/"),
            (200, "other".to_string()),
            "{}",
            run.label
        );
        results.push((run.label.clone(), ev));
    }
    same_events(
        &[
            "CHECK s1 FAILED HANA Health analyze health=0 duration=-1",
            "DOWN s1",
        ],
        results,
    );
}

/// `observe layer7` with `on-error fail-check`: 5xx answers (not 501 or
/// 505) count; each `error-limit` run is one failed check, so `fall`
/// failures take the server DOWN. The origin keeps its connections open,
/// so the stream whose answer brings the server down is still one of the
/// server's sessions, as HAProxy counts it ("1 sessions active"; with an
/// origin that closes at once HAProxy says 0 or 1, depending on whether it
/// saw the close before the status).
#[test]
fn observed_5xx_answers_count_as_failed_checks() {
    let mut results = Vec::new();
    for peer in peers() {
        let sick = Origin::keep_alive("503 Service Unavailable", "busy");
        let be = format!(
            "  server s1 127.0.0.1:{} check inter 10s rise 2 fall 2 observe layer7 error-limit 2 on-error fail-check",
            sick.port
        );
        let run = Run::start(&peer, "observe_l7", &be, CHECKS_AND_DOWN);
        std::thread::sleep(Duration::from_millis(500));
        for _ in 0..4 {
            assert_eq!(get(run.fe, "/").0, 503, "{}", run.label);
        }
        let ev = run.wait_events(5, |e| e.len() >= 3);
        let log = run.wait_log("Server be/s1 is DOWN", 5);
        assert!(
            log.contains("Server be/s1 is DOWN, reason: Health analyze, info: \"Detected 2 consecutive errors, last one was: Wrong http response\". 0 active and 0 backup servers left. 1 sessions active, 0 requeued, 0 remaining in queue."),
            "{}: {log}",
            run.label
        );
        results.push((run.label.clone(), ev));
    }
    same_events(
        &[
            "CHECK s1 FAILED HANA Health analyze health=2 duration=-1",
            "CHECK s1 FAILED HANA Health analyze health=0 duration=-1",
            "DOWN s1",
        ],
        results,
    );
}

/// NOLB (`set server ... health stopping`, Lua's `check_force_nolb()`)
/// travels down tracking chains as HAProxy 3.0's `srv_set_stopping` sends
/// it: each tracker goes STOPPING "via" the server it tracks, with its own
/// SERVER_STATE and log line, `show stat` says NOLB for all of them and the
/// backend is DOWN (no server takes new traffic); UP again follows the same
/// way. A tracking server's health cannot be set.
#[test]
fn nolb_follows_tracking_chains() {
    let subscriber = r#"
core.event_sub({"SERVER_STATE"}, function(event, data)
  local st = data.state
  record(data.name .. " " .. st.old_state .. "->" .. st.new_state .. " cause=" .. st.cause)
end)
"#;
    let mut results = Vec::new();
    for peer in peers() {
        let a = Origin::new("200 OK", "a");
        let be = format!(
            "  server s1 127.0.0.1:{p} check inter 1s\n  \
             server t1 127.0.0.1:{p} track s1\n  server t2 127.0.0.1:{p} track t1",
            p = a.port
        );
        let run = Run::start(&peer, "nolb_track", &be, subscriber);
        let status = |run: &Run| -> Vec<String> {
            run.admin("show stat")
                .lines()
                .filter(|l| l.starts_with("be,"))
                .map(|l| {
                    let f: Vec<&str> = l.split(',').collect();
                    format!("{}={}", f[1], f[17])
                })
                .collect()
        };
        let mut seen = vec![status(&run).join(" ")];
        seen.push(
            run.admin("set server be/s1 health stopping")
                .trim()
                .to_string(),
        );
        seen.push(run.admin("set server be/t1 health down").trim().to_string());
        seen.extend(run.wait_events(5, |e| e.len() >= 3));
        seen.push(status(&run).join(" "));
        let log = run.wait_log("Server be/t2 is stopping via be/t1", 5);
        for line in [
            "Server be/s1 is stopping, changed from CLI. 2 active and 0 backup servers online. 0 sessions requeued, 0 total in queue.",
            "Server be/t1 is stopping via be/s1. 1 active and 0 backup servers online. 0 sessions requeued, 0 total in queue.",
            "Server be/t2 is stopping via be/t1. 0 active and 0 backup servers online. 0 sessions requeued, 0 total in queue.",
            "backend 'be' has no server available!",
        ] {
            assert!(log.contains(line), "{}: no {line:?} in\n{log}", run.label);
        }
        seen.push(run.admin("set server be/s1 health up").trim().to_string());
        seen.extend(run.wait_events(5, |e| e.len() >= 6).into_iter().skip(3));
        seen.push(status(&run).join(" "));
        results.push((run.label.clone(), seen));
    }
    same_events(
        &[
            "s1=UP t1=UP t2=UP BACKEND=UP",
            "",
            "cannot change health on a tracking server.",
            "s1 RUNNING->STOPPING cause=changed from CLI",
            "t1 RUNNING->STOPPING cause=",
            "t2 RUNNING->STOPPING cause=",
            "s1=NOLB t1=NOLB t2=NOLB BACKEND=DOWN",
            "",
            "s1 STOPPING->RUNNING cause=changed from CLI",
            "t1 STOPPING->RUNNING cause=",
            "t2 STOPPING->RUNNING cause=",
            "s1=UP t1=UP t2=UP BACKEND=UP",
        ],
        results,
    );
}
