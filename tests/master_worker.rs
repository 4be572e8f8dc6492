//! Master-worker mode (`-W`, `master-worker`): the process tree, the stop
//! signals, reloads on SIGUSR2 (new answers, no failed request, a bad
//! configuration keeps the old worker) and a dying worker. Real processes
//! on 127.0.0.1.

use luahost_suite::{free_port, scratch_dir, Proxy};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A service answering `body` (the reload tests change it on disk).
fn service(body: &str) -> String {
    format!(
        r#"core.register_service("hello", "http", function(applet)
  local body = "{body}"
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
"#
    )
}

fn config(port: u16, global: &str) -> String {
    format!(
        "global\n  nbthread 1\n  lua-load svc.lua\n{global}\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  http-request use-service lua.hello\n"
    )
}

/// One request on a fresh connection: the body, or `None` if the
/// connection was refused or reset, or the answer was not a 200.
fn get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The pids whose parent is `pid` (from /proc/*/stat), zombies excluded.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let ppid = f.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) && state != Some("Z") {
            if let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                out.push(child);
            }
        }
    }
    out
}

fn gone(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z ")
}

fn wait_until(secs: u64, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ok()
}

/// Starts `luahost -W` on a service answering "v1", and waits for its
/// worker to serve (the port accepts as soon as the master binds it).
fn start(name: &str, port: u16) -> Proxy {
    let cfg = config(port, "");
    let svc = service("v1");
    let p = Proxy::start(
        name,
        &[("m.cfg", &cfg), ("svc.lua", &svc)],
        "m.cfg",
        &["-W"],
        &[port],
    );
    let log = p.wait_log("Loading success.", 20);
    assert!(log.contains("Loading success."), "{log}");
    p
}

/// The one worker of `master`, once there is exactly one.
fn sole_worker(master: u32) -> u32 {
    let mut kids = Vec::new();
    assert!(
        wait_until(10, || {
            kids = children(master);
            kids.len() == 1
        }),
        "master {master} has one worker: {kids:?}"
    );
    kids[0]
}

#[test]
fn w_runs_a_master_and_one_worker_and_sigterm_stops_both() {
    let port = free_port();
    let mut p = start("mw_tree", port);
    let master = p.pid();
    let worker = sole_worker(master);
    // The worker is this program too, and serves.
    let exe = |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    assert_eq!(exe(master), exe(worker));
    assert_eq!(get(port).as_deref(), Some("v1"));
    let log = p.log();
    assert!(
        log.contains(&format!(
            "[NOTICE]   ({master}) : New worker ({worker}) forked"
        )) && log.contains(&format!("[NOTICE]   ({master}) : Loading success.")),
        "{log}"
    );
    p.signal("TERM");
    assert_eq!(p.wait_exit(20), Some(0), "{}", p.log());
    assert!(wait_until(10, || gone(worker)), "the worker stopped too");
}

/// `master-worker` in the configuration does what `-W` does.
#[test]
fn the_master_worker_keyword_supervises_too() {
    let port = free_port();
    let cfg = config(port, "  master-worker");
    let svc = service("v1");
    let mut p = Proxy::start(
        "mw_keyword",
        &[("m.cfg", &cfg), ("svc.lua", &svc)],
        "m.cfg",
        &[],
        &[port],
    );
    let worker = sole_worker(p.pid());
    assert_eq!(get(port).as_deref(), Some("v1"));
    p.signal("INT");
    assert_eq!(p.wait_exit(20), Some(0), "{}", p.log());
    assert!(wait_until(10, || gone(worker)));
}

#[test]
fn sigusr2_reloads_without_failing_a_request() {
    let port = free_port();
    let mut p = start("mw_reload", port);
    let master = p.pid();
    let old = sole_worker(master);
    assert_eq!(get(port).as_deref(), Some("v1"));
    // A client requesting on fresh connections throughout the reload: until
    // it has seen 50 answers from the new worker (bounded: 5,000 requests).
    let client = std::thread::spawn(move || {
        let (mut failed, mut v1, mut v2) = (0, 0, 0);
        for _ in 0..5000 {
            match get(port).as_deref() {
                Some("v1") => v1 += 1,
                Some("v2") => v2 += 1,
                _ => failed += 1,
            }
            if v2 >= 50 {
                break;
            }
        }
        (failed, v1, v2)
    });
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(p.dir.join("svc.lua"), service("v2")).expect("write");
    p.signal("USR2");
    let (failed, v1, v2) = client.join().expect("client");
    assert_eq!(
        failed,
        0,
        "no request failed (v1 {v1}, v2 {v2}):\n{}",
        p.log()
    );
    assert!(v1 > 0 && v2 >= 50, "v1 {v1}, v2 {v2}:\n{}", p.log());
    // The former worker finished; the new one is the only child.
    let log = p.wait_log(
        &format!("Former worker ({old}) exited with code 0 (Exit)"),
        20,
    );
    assert!(
        log.contains(&format!("Former worker ({old}) exited with code 0 (Exit)")),
        "{log}"
    );
    let new = sole_worker(master);
    assert_ne!(new, old);
    assert_eq!(get(port).as_deref(), Some("v2"));
    p.signal("TERM");
    assert_eq!(p.wait_exit(20), Some(0), "{}", p.log());
}

#[test]
fn a_bad_configuration_at_reload_keeps_the_old_worker() {
    let port = free_port();
    let p = start("mw_bad_reload", port);
    let master = p.pid();
    let worker = sole_worker(master);
    // A configuration error: the master refuses it itself.
    let good = std::fs::read_to_string(p.dir.join("m.cfg")).expect("read");
    std::fs::write(p.dir.join("m.cfg"), format!("{good}  no-such-keyword\n")).expect("write");
    p.signal("USR2");
    let log = p.wait_log("Reload failed: errors in the configuration", 20);
    assert!(
        log.contains(&format!(
            "Reload failed: errors in the configuration; worker ({worker}) keeps serving."
        )) && log.contains("[m.cfg:"),
        "{log}"
    );
    assert_eq!(get(port).as_deref(), Some("v1"));
    assert_eq!(children(master), vec![worker]);
    // A Lua error: the new worker fails before serving.
    std::fs::write(p.dir.join("m.cfg"), &good).expect("write");
    std::fs::write(p.dir.join("svc.lua"), "this is not lua\n").expect("write");
    p.signal("USR2");
    let log = p.wait_log("exited before serving", 20);
    assert!(
        log.contains(&format!(
            "exited before serving; worker ({worker}) keeps serving."
        )),
        "{log}"
    );
    assert_eq!(get(port).as_deref(), Some("v1"));
    assert!(wait_until(10, || children(master) == vec![worker]));
}

#[test]
fn a_worker_that_dies_makes_the_master_exit_non_zero() {
    let port = free_port();
    let mut p = start("mw_worker_dies", port);
    let master = p.pid();
    let worker = sole_worker(master);
    let _ = Command::new("kill")
        .args(["-KILL", &worker.to_string()])
        .status();
    assert_eq!(p.wait_exit(20), Some(137), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains(&format!(
            "[ALERT]    ({master}) : Current worker ({worker}) exited with code 137 (Killed)"
        )) && log.contains("All workers exited. Exiting... (137)"),
        "{log}"
    );
}

/// `-W -D`: the command returns once the worker serves; the pid file holds
/// the master's pid (as HAProxy's does), whose child is the worker.
#[test]
fn daemon_master_writes_its_own_pid() {
    let port = free_port();
    let dir = scratch_dir("mw_daemon");
    std::fs::write(dir.join("m.cfg"), config(port, "")).expect("write");
    std::fs::write(dir.join("svc.lua"), service("v1")).expect("write");
    let mut cmd = Command::new(luahost_suite::artifacts().luahost());
    cmd.args(["-W", "-D", "-p", "m.pid", "-f", "m.cfg"])
        .current_dir(&dir);
    let out = luahost_suite::run_with_timeout(&mut cmd, 30);
    assert_eq!(out.status, Some(0), "{out:?}");
    let pid: u32 = std::fs::read_to_string(dir.join("m.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    let worker = sole_worker(pid);
    assert_eq!(get(port).as_deref(), Some("v1"));
    let _ = Command::new("kill").arg(pid.to_string()).status();
    assert!(wait_until(20, || gone(pid) && gone(worker)));
    assert!(!Path::new(&dir.join("m.pid")).exists(), "pid file removed");
}
