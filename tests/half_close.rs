//! A client that sends a whole request and then closes its sending side
//! (`shutdown(SHUT_WR)`) still gets its answer, from a native rule, a Lua
//! service and a proxied server alike, as from HAProxy (which answers such
//! clients unless `option abortonclose` is set). Real luahost and HAProxy
//! processes on 127.0.0.1; the HAProxy releases installed here run the same
//! configuration.

use luahost_suite::{artifacts, free_port, haproxy_peers, scratch_dir};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TRIES: usize = 10;

const SERVICE: &str = r#"
core.register_service("hello", "http", function(applet)
  local body = "hello from lua"
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
"#;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program ARGS cfg` in `dir` and waits until every port listens.
fn start(program: &Path, args: &[&str], dir: &Path, ports: &[u16]) -> Running {
    let child = Command::new(program)
        .args(args)
        .arg("h.cfg")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let mut r = Running(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    for &port in ports {
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                r.0.try_wait().ok().flatten().is_none(),
                "{} exited before listening",
                program.display()
            );
            assert!(
                Instant::now() < deadline,
                "{} did not listen",
                program.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    r
}

/// Sends a GET, half-closes, and reads until the server closes: the status
/// line, or None when nothing came.
fn half_closed_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n").ok()?;
    s.shutdown(Shutdown::Write).ok()?;
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines()
        .next()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .map(str::to_string)
}

/// The configuration: a native answer, a Lua service, a proxied server.
fn config(native: u16, lua: u16, proxied: u16, origin: u16, extra: &str) -> String {
    format!(
        "global\n  lua-load svc.lua\ndefaults\n  mode http\n  timeout client 5s\n  timeout server 5s\n  \
         timeout connect 2s\n{extra}\
         frontend native\n  bind 127.0.0.1:{native}\n  http-request return status 200 content-type text/plain string native\n\
         frontend lua\n  bind 127.0.0.1:{lua}\n  http-request use-service lua.hello\n\
         frontend proxied\n  bind 127.0.0.1:{proxied}\n  default_backend be\n\
         backend be\n  server s1 127.0.0.1:{origin}\n\
         frontend origin\n  bind 127.0.0.1:{origin}\n  http-request return status 200 content-type text/plain string origin\n"
    )
}

/// Answers per path (native, lua, proxied) out of TRIES each.
fn answered(program: &Path, args: &[&str], tag: &str, extra: &str) -> [usize; 3] {
    let dir = scratch_dir(&format!("half_close_{tag}"));
    let ports = [free_port(), free_port(), free_port(), free_port()];
    std::fs::write(dir.join("svc.lua"), SERVICE).expect("write lua");
    std::fs::write(
        dir.join("h.cfg"),
        config(ports[0], ports[1], ports[2], ports[3], extra),
    )
    .expect("write cfg");
    let _p = start(program, args, &dir, &ports);
    let mut counts = [0; 3];
    for (i, &port) in ports[..3].iter().enumerate() {
        for _ in 0..TRIES {
            if half_closed_get(port).is_some_and(|l| l.starts_with("HTTP/1.1 200")) {
                counts[i] += 1;
            }
        }
    }
    counts
}

#[test]
fn half_closed_clients_get_their_answer() {
    let ours = answered(&artifacts().luahost(), &["-f"], "luahost", "");
    for peer in haproxy_peers() {
        let tag = peer.label.replace(' ', "_");
        let theirs = answered(&peer.program, &["-db", "-f"], &tag, "");
        assert_eq!(theirs, [TRIES; 3], "{} (native, lua, proxied)", peer.label);
    }
    assert_eq!(ours, [TRIES; 3], "luahost answers (native, lua, proxied)");
}

#[test]
fn abortonclose_drops_the_request_of_a_closed_client() {
    // With the option, a request whose client closed is aborted instead:
    // a slow Lua service then answers nobody and the process goes on.
    let dir = scratch_dir("half_close_abort");
    let port = free_port();
    std::fs::write(
        dir.join("svc.lua"),
        "core.register_service(\"slow\", \"http\", function(applet)\n  core.msleep(300)\n  \
         applet:set_status(200)\n  applet:start_response()\n  applet:send(\"late\")\nend)\n",
    )
    .expect("write lua");
    std::fs::write(
        dir.join("h.cfg"),
        format!(
            "global\n  lua-load svc.lua\ndefaults\n  mode http\n  timeout client 5s\n  option abortonclose\n\
             frontend f\n  bind 127.0.0.1:{port}\n  http-request use-service lua.slow\n"
        ),
    )
    .expect("write cfg");
    let _p = start(&artifacts().luahost(), &["-f"], &dir, &[port]);
    assert_eq!(half_closed_get(port), None, "aborted: no answer");
    // A client that keeps its side open is answered.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .expect("send");
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("late"), "{got}");
}
