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
  applet:set_status(200)
  applet:start_response()
  applet:send(body .. "\n")
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

const FRONTENDS: [&str; 5] = ["ctl", "fe", "fs", "fp", "fb"];

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
         frontend fp\n  bind 127.0.0.1:{fp}\n  default_backend be\n\
         frontend fb\n  bind 127.0.0.1:{fb}\n  default_backend bb\n\
         backend be\n  server s1 127.0.0.1:{origin}\n  server s2 127.0.0.1:{origin}\n\
         backend bb\n  server b1 127.0.0.1:{origin} backup\n",
        d = dir.display(),
        ctl = p("ctl"),
        fe = p("fe"),
        fs = p("fs"),
        fp = p("fp"),
        fb = p("fb"),
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
        again
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        seen.push(match again.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                "still in flight".into()
            }
            other => format!("ended: {other:?}"),
        });
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
