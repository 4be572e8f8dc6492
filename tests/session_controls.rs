//! The Proxy and Server session controls, against HAProxy 3.0: Lua's
//! `Proxy:pause()`, `resume()`, `stop()`, `shut_bcksess()` and
//! `Server:shut_sess()`, and the CLI's `disable frontend`, `enable
//! frontend`, `shutdown frontend` and `shutdown sessions server`.
//!
//! The same configuration and script run under luahost and HAProxy 3.0, and
//! each scenario's observations (a connection answered or refused, a
//! proxied request closed without an answer, the CLI's words) must be the
//! same for both. A control frontend's Lua service calls the methods
//! (`GET /pause/fe`, `/shut_sess/be/s1`, ...). The origin behind the
//! backends reads requests and never answers, so a request in flight
//! stays in flight until something kills it (`timeout server` is 60 s,
//! past the scenarios' 5 s reads).

use luahost_suite::{artifacts, free_port, haproxy_30, scratch_dir};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SCRIPT: &str = r##"
core.register_service("hello", "http", function(applet)
  applet:set_status(200)
  applet:start_response()
  applet:send("hello\n")
end)

-- /<method>/<proxy>[/<server>]
core.register_service("control", "http", function(applet)
  local what, px, srv = applet.path:match("^/([%w_]+)/([%w_]+)/?([%w_]*)$")
  local p = core.proxies[px or ""]
  local body
  if not p then
    body = "no proxy"
  elseif srv ~= "" then
    local s = p.servers[srv]
    body = what .. " returned " .. select("#", s[what](s))
  else
    body = what .. " returned " .. select("#", p[what](p))
  end
  body = body .. "\n"
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
"##;

/// A process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An origin that accepts and reads, and never answers; counts accepts.
struct SilentOrigin {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

fn silent_origin() -> SilentOrigin {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let port = l.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buf = [0u8; 4096];
                while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    SilentOrigin { port, accepted }
}

struct Peer {
    label: String,
    _proc: Running,
    dir: PathBuf,
    /// Frontend name -> port.
    ports: Vec<(&'static str, u16)>,
}

impl Peer {
    fn port(&self, fe: &str) -> u16 {
        self.ports
            .iter()
            .find(|(n, _)| *n == fe)
            .map(|(_, p)| *p)
            .expect("frontend port")
    }

    fn cli(&self, cmd: &str) -> String {
        let mut s = UnixStream::connect(self.dir.join("admin.sock")).expect("stats socket");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(cmd.as_bytes()).expect("send");
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }
}

/// The frontends, each on its own port: `ctl` runs the control service,
/// `fe`/`fs` a Lua service; the others forward, the `t*` ones in TCP mode
/// (see [`config`] for their backends).
const FRONTENDS: [&str; 13] = [
    "ctl", "fe", "fs", "fp", "fb", "fd", "fn", "fu", "tp", "tb", "td", "tn", "tu",
];

/// The forwarding frontends and their backends: HTTP ones, then their TCP
/// twins (`t` + the backend's name). `bd`'s server has `on-marked-down
/// shutdown-sessions`, `bu`'s active server `on-marked-up
/// shutdown-backup-sessions`, `bn`'s neither.
const FORWARDS: [(&str, &str); 10] = [
    ("fp", "be"),
    ("fb", "bb"),
    ("fd", "bd"),
    ("fn", "bn"),
    ("fu", "bu"),
    ("tp", "tbe"),
    ("tb", "tbb"),
    ("td", "tbd"),
    ("tn", "tbn"),
    ("tu", "tbu"),
];

/// The servers of each backend (the TCP twins have the same), all on the
/// silent origin.
fn servers(be: &str) -> &'static [&'static str] {
    match be.trim_start_matches('t') {
        "be" => &["s1", "s2"],
        "bb" => &["b1 backup"],
        "bd" => &["d1 on-marked-down shutdown-sessions"],
        "bn" => &["n1"],
        _ => &["u1 on-marked-up shutdown-backup-sessions", "ub backup"],
    }
}

fn config(dir: &Path, ports: &[(&str, u16)], origin: u16) -> String {
    let port = |n: &str| ports.iter().find(|(f, _)| *f == n).map(|(_, p)| *p);
    let p = |n: &str| port(n).unwrap_or(0);
    format!(
        "global\n  stats socket {d}/admin.sock level admin\n  stats socket {d}/oper.sock level operator\n  \
         lua-load {d}/controls.lua\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\
         frontend ctl\n  bind 127.0.0.1:{ctl}\n  http-request use-service lua.control\n\
         frontend fe\n  bind 127.0.0.1:{fe}\n  http-request use-service lua.hello\n\
         frontend fs\n  bind 127.0.0.1:{fs}\n  http-request use-service lua.hello\n\
         {forwards}",
        d = dir.display(),
        ctl = p("ctl"),
        fe = p("fe"),
        fs = p("fs"),
        forwards = FORWARDS
            .iter()
            .map(|(fe, be)| {
                let mode = if be.starts_with('t') { "  mode tcp\n" } else { "" };
                let srvs: String = servers(be)
                    .iter()
                    .map(|s| {
                        let (name, opts) = s.split_once(' ').unwrap_or((s, ""));
                        format!("  server {name} 127.0.0.1:{origin} {opts}\n")
                    })
                    .collect();
                format!(
                    "frontend {fe}\n  bind 127.0.0.1:{port}\n{mode}  default_backend {be}\n\
                     backend {be}\n{mode}{srvs}",
                    port = p(fe)
                )
            })
            .collect::<String>(),
    )
}

fn start(test: &str, label: &str, program: &Path, origin: u16) -> Peer {
    let dir = scratch_dir(&format!(
        "session_controls_{test}_{}",
        label.replace(' ', "_")
    ));
    let ports: Vec<(&'static str, u16)> = FRONTENDS.iter().map(|f| (*f, free_port())).collect();
    std::fs::write(dir.join("controls.lua"), SCRIPT).expect("write lua");
    let cfg = dir.join("p.cfg");
    std::fs::write(&cfg, config(&dir, &ports, origin)).expect("write cfg");
    let log = std::fs::File::create(dir.join("stderr")).expect("log");
    let mut cmd = Command::new(program);
    if label != "luahost" {
        cmd.arg("-db");
    }
    let child = cmd
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start proxy");
    let mut running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(dir.join("oper.sock")).is_err()
        || ports
            .iter()
            .any(|(_, p)| TcpStream::connect(("127.0.0.1", *p)).is_err())
    {
        if let Ok(Some(st)) = running.0.try_wait() {
            panic!(
                "{label} exited ({st}): {}",
                std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{label} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Peer {
        label: label.to_string(),
        _proc: running,
        dir,
        ports,
    }
}

/// One GET on a fresh connection: "refused", "closed" (no answer), or the
/// status and body.
fn get(port: u16, path: &str) -> String {
    let mut c = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return "refused".into(),
        Err(e) => return format!("connect error {e}"),
    };
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let req = format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    if c.write_all(req.as_bytes()).is_err() {
        return "closed".into();
    }
    read_answer(&mut c)
}

/// What the proxy sends until it closes: "closed" for nothing, else the
/// status code and the body.
fn read_answer(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    match c.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return format!("no answer within 5 s ({} bytes)", out.len())
        }
        Err(e) => return format!("read error {e}"),
    }
    if out.is_empty() {
        return "closed".into();
    }
    let text = String::from_utf8_lossy(&out);
    let status = text.split(' ').nth(1).unwrap_or("?").to_string();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    format!("{status} {}", body.trim())
}

/// Starts a request through frontend `fe` that the silent origin takes and
/// never answers; returns the connection once the origin has it.
fn request_in_flight(peer: &Peer, fe: &str, origin: &SilentOrigin) -> TcpStream {
    let before = origin.accepted.load(Ordering::SeqCst);
    let mut c = TcpStream::connect(("127.0.0.1", peer.port(fe))).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n")
        .expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.accepted.load(Ordering::SeqCst) == before {
        assert!(
            Instant::now() < deadline,
            "{}: the origin never got the request",
            peer.label
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The origin's accept comes before the proxy has sent the request.
    std::thread::sleep(Duration::from_millis(100));
    c
}

/// Whether a stream is still open half a second on ("still in flight"),
/// or how it ended.
fn still_in_flight(c: &mut TcpStream) -> String {
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let seen = match c.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            "still in flight".into()
        }
        other => format!("ended: {other:?}"),
    };
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    seen
}

/// Runs `scenario` on luahost and HAProxy 3.0 and compares what they saw.
fn same_as_haproxy(test: &str, scenario: impl Fn(&Peer, &SilentOrigin) -> Vec<String>) {
    let origin = silent_origin();
    let ours = start(test, "luahost", &artifacts().luahost(), origin.port);
    let mine = scenario(&ours, &origin);
    let Some(h) = haproxy_30() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "HAProxy 3.0 is not installed"
        );
        eprintln!("{test}: HAProxy 3.0 not installed, luahost alone checked");
        return;
    };
    let theirs = start(test, &h.label, &h.program, origin.port);
    let reference = scenario(&theirs, &origin);
    assert_eq!(
        mine,
        reference,
        "{test}: luahost (left) vs {} (right); luahost's log:\n{}",
        h.label,
        std::fs::read_to_string(ours.dir.join("stderr")).unwrap_or_default()
    );
}

#[test]
fn lua_pause_refuses_connections_until_resume_and_stop_is_final() {
    same_as_haproxy("lua_pause", |p, _| {
        let ctl = p.port("ctl");
        vec![
            get(p.port("fe"), "/"),
            get(ctl, "/pause/fe"),
            get(p.port("fe"), "/"),
            // The other frontends are untouched.
            get(p.port("fs"), "/"),
            // Pausing a paused frontend does nothing.
            get(ctl, "/pause/fe"),
            get(ctl, "/resume/fe"),
            get(p.port("fe"), "/"),
            get(p.port("fe"), "/"),
            // A backend has no listeners: nothing happens.
            get(ctl, "/pause/be"),
            get(ctl, "/stop/fs"),
            get(p.port("fs"), "/"),
            get(ctl, "/resume/fs"),
            get(p.port("fs"), "/"),
        ]
    });
}

#[test]
fn lua_shut_sess_closes_the_streams_using_the_server() {
    same_as_haproxy("lua_shut_sess", |p, origin| {
        let ctl = p.port("ctl");
        let mut seen = Vec::new();
        let mut c = request_in_flight(p, "fp", origin);
        // Which of s1 and s2 took it depends on the balancing: kill both,
        // one at a time, and see the stream end.
        seen.push(get(ctl, "/shut_sess/be/s1"));
        seen.push(get(ctl, "/shut_sess/be/s2"));
        seen.push(read_answer(&mut c));
        // The backend stays usable: a new request is in flight again.
        let mut again = request_in_flight(p, "fp", origin);
        seen.push(get(ctl, "/shut_bcksess/be"));
        // No backup server in `be`: shut_bcksess leaves it alone.
        seen.push(still_in_flight(&mut again));
        // The backup server's streams are shut by the backend's shut_bcksess.
        let mut b = request_in_flight(p, "fb", origin);
        seen.push(get(ctl, "/shut_bcksess/bb"));
        seen.push(read_answer(&mut b));
        seen
    });
}

#[test]
fn cli_frontend_and_session_commands_answer_as_haproxy() {
    same_as_haproxy("cli_controls", |p, origin| {
        let mut seen = Vec::new();
        for cmd in ["disable frontend fe\n", "disable frontend fe\n"] {
            seen.push(p.cli(cmd));
        }
        seen.push(get(p.port("fe"), "/"));
        for cmd in [
            "enable frontend fe\n",
            "enable frontend fe\n",
            "disable frontend be\n",
            "disable frontend\n",
            "disable frontend nope\n",
            "shutdown sessions server be\n",
            "shutdown sessions server be/nope\n",
            "shutdown sessions server nope/s1\n",
        ] {
            seen.push(p.cli(cmd));
        }
        seen.push(get(p.port("fe"), "/"));
        // The operator level may not.
        let mut s = UnixStream::connect(p.dir.join("oper.sock")).expect("oper socket");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"disable frontend fe; shutdown frontend fe; shutdown sessions server be/s1\n")
            .expect("send");
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        seen.push(out);
        // A request in flight is killed by `shutdown sessions server`.
        let mut c = request_in_flight(p, "fp", origin);
        seen.push(p.cli("shutdown sessions server be/s1\n"));
        seen.push(p.cli("shutdown sessions server be/s2\n"));
        seen.push(read_answer(&mut c));
        for cmd in [
            "shutdown frontend fs\n",
            "shutdown frontend fs\n",
            "enable frontend fs\n",
            "disable frontend fs\n",
        ] {
            seen.push(p.cli(cmd));
        }
        seen.push(get(p.port("fs"), "/"));
        seen
    });
}

/// `Server:shut_sess()`, `Proxy:shut_bcksess()` and `shutdown sessions
/// server` on TCP-mode streams (a connection forwarded to the origin).
#[test]
fn tcp_streams_are_killed_by_shut_sess_shut_bcksess_and_the_cli() {
    same_as_haproxy("tcp_kills", |p, origin| {
        let ctl = p.port("ctl");
        let mut seen = Vec::new();
        let mut c = request_in_flight(p, "tp", origin);
        seen.push(get(ctl, "/shut_sess/tbe/s1"));
        seen.push(get(ctl, "/shut_sess/tbe/s2"));
        seen.push(read_answer(&mut c));
        let mut again = request_in_flight(p, "tp", origin);
        seen.push(get(ctl, "/shut_bcksess/tbe"));
        seen.push(still_in_flight(&mut again));
        seen.push(p.cli("shutdown sessions server tbe/s1\n"));
        seen.push(p.cli("shutdown sessions server tbe/s2\n"));
        seen.push(read_answer(&mut again));
        let mut b = request_in_flight(p, "tb", origin);
        seen.push(get(ctl, "/shut_bcksess/tbb"));
        seen.push(read_answer(&mut b));
        seen
    });
}

/// `on-marked-down shutdown-sessions` and `on-marked-up
/// shutdown-backup-sessions` through frontends `fd`/`fn`/`fu` (HTTP) or
/// their TCP twins (`t` prefix).
fn on_marked_scenario(p: &Peer, origin: &SilentOrigin, tcp: bool) -> Vec<String> {
    let t = if tcp { "t" } else { "" };
    let (fd, fnn, fu) = if tcp {
        ("td", "tn", "tu")
    } else {
        ("fd", "fn", "fu")
    };
    let ctl = p.port("ctl");
    let mut seen = Vec::new();
    // Forced down from Lua: the stream on the server is killed.
    let mut c = request_in_flight(p, fd, origin);
    seen.push(get(ctl, &format!("/check_force_down/{t}bd/d1")));
    seen.push(read_answer(&mut c));
    seen.push(get(ctl, &format!("/check_force_up/{t}bd/d1")));
    // Into maintenance: killed too.
    let mut c = request_in_flight(p, fd, origin);
    seen.push(p.cli(&format!("disable server {t}bd/d1\n")));
    seen.push(read_answer(&mut c));
    seen.push(p.cli(&format!("enable server {t}bd/d1\n")));
    // Without the option the stream lives on.
    let mut c = request_in_flight(p, fnn, origin);
    seen.push(p.cli(&format!("disable server {t}bn/n1\n")));
    seen.push(still_in_flight(&mut c));
    seen.push(get(ctl, &format!("/check_force_down/{t}bn/n1")));
    seen.push(p.cli(&format!("enable server {t}bn/n1\n")));
    seen.push(still_in_flight(&mut c));
    // The active server leaves maintenance: the backup's stream is killed.
    seen.push(p.cli(&format!("disable server {t}bu/u1\n")));
    let mut b = request_in_flight(p, fu, origin);
    seen.push(p.cli(&format!("enable server {t}bu/u1\n")));
    seen.push(read_answer(&mut b));
    // Forced down then up from Lua: the same.
    seen.push(get(ctl, &format!("/check_force_down/{t}bu/u1")));
    let mut b = request_in_flight(p, fu, origin);
    // DOWN to NOLB is not coming up: the backup's stream lives on.
    seen.push(get(ctl, &format!("/check_force_nolb/{t}bu/u1")));
    seen.push(still_in_flight(&mut b));
    // NOLB takes no new traffic, so the next stream goes to the backup
    // too; NOLB to UP counts as coming up: both backup streams are killed.
    let mut a = request_in_flight(p, fu, origin);
    seen.push(get(ctl, &format!("/check_force_up/{t}bu/u1")));
    seen.push(read_answer(&mut a));
    seen.push(read_answer(&mut b));
    seen
}

#[test]
fn on_marked_down_and_up_kill_http_streams_as_haproxy() {
    same_as_haproxy("on_marked_http", |p, origin| {
        on_marked_scenario(p, origin, false)
    });
}

#[test]
fn on_marked_down_and_up_kill_tcp_streams_as_haproxy() {
    same_as_haproxy("on_marked_tcp", |p, origin| {
        on_marked_scenario(p, origin, true)
    });
}
