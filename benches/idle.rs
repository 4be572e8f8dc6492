//! Idle keep-alive connections: what each costs a server in memory. Opens N
//! connections (default 10,000; `IDLE_CONNS`), each after one completed
//! request, to luahost and, where installed, to HAProxy 2.6 (`haproxy`) and
//! 3.0 (`/work/shared/anchors/haproxy3`, or `HAPROXY3`), all with the same
//! configuration (one thread, a small Lua service), and reads each server's
//! resident memory (VmRSS) before and after.
//!
//!     cargo bench --bench idle
//!
//! The bench raises its own open-file limit to the hard limit (the servers
//! inherit it); N must stay below it.

use luahost_suite::{artifacts, find_on_path, free_port, scratch_dir};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVICE: &str = r#"
core.register_service("hello", "http", function(applet)
  applet:set_status(200)
  applet:add_header("content-length", "5")
  applet:start_response()
  applet:send("hello")
end)
"#;

fn config(port: u16, maxconn: usize) -> String {
    format!(
        "global\n  lua-load hello.lua\n  nbthread 1\n  maxconn {maxconn}\ndefaults\n  mode http\n  \
         timeout client 600s\n  timeout http-keep-alive 600s\n  timeout http-request 600s\n\
         frontend f\n  bind 127.0.0.1:{port}\n  maxconn {maxconn}\n  http-request use-service lua.hello\n"
    )
}

/// The connections a server is given. HAProxy reserves two descriptors per
/// connection (one for a server side, even for a Lua service) and refuses
/// to start when `2 * maxconn` passes the open-file limit: under a hard
/// limit of 20,000 it gets a little under 10,000 connections.
fn capacity(name: &str, n: usize, fd_limit: u64) -> (usize, usize) {
    if name == "luahost" {
        return (n, n + 500);
    }
    let maxconn = (n + 500).min((fd_limit as usize).saturating_sub(100) / 2);
    (n.min(maxconn.saturating_sub(50)), maxconn)
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident set of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Sends one GET and reads its whole response (a Content-Length body).
fn one_request(s: &mut TcpStream) -> bool {
    if s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(256);
    let mut tmp = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// Closes with a reset instead of a FIN, so that tens of thousands of
/// client sockets do not sit in TIME_WAIT holding local ports.
fn close_hard(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor owned by `s`, and a pointer to a
    // correctly sized `linger` that outlives the call.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

struct Row {
    server: String,
    conns: usize,
    before: u64,
    after: u64,
}

fn measure(name: &str, program: &Path, n: usize, fd_limit: u64) -> Option<Row> {
    let dir = scratch_dir(&format!("bench_idle_{}", name.replace([' ', '.'], "_")));
    let port = free_port();
    std::fs::write(dir.join("hello.lua"), SERVICE).ok()?;
    let (n, maxconn) = capacity(name, n, fd_limit);
    std::fs::write(dir.join("idle.cfg"), config(port, maxconn)).ok()?;
    // HAProxy in the foreground without its master process; luahost always is.
    let args: &[&str] = if name == "luahost" {
        &["-f", "idle.cfg"]
    } else {
        &["-db", "-f", "idle.cfg"]
    };
    let child = Command::new(program)
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server { child };
    let pid = server.child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Warm up: one connection, one request, closed.
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            if one_request(&mut s) {
                close_hard(s);
                break;
            }
        }
        if Instant::now() > deadline {
            eprintln!("{name}: did not answer");
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = rss(pid);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            eprintln!("{name}: connect failed after {i} connections");
            break;
        };
        if !one_request(&mut s) {
            eprintln!("{name}: request failed after {i} connections");
            break;
        }
        conns.push(s);
    }
    // Let the server settle (freed buffers, idle timers armed).
    std::thread::sleep(Duration::from_secs(1));
    let after = rss(pid);
    let open = conns.len();
    for s in conns {
        close_hard(s);
    }
    drop(server);
    Some(Row {
        server: name.to_string(),
        conns: open,
        before,
        after,
    })
}

fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a pointer to a local rlimit.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

fn haproxy26() -> Option<PathBuf> {
    find_on_path("haproxy").or_else(|| {
        let sbin = Path::new("/usr/sbin/haproxy");
        sbin.is_file().then(|| sbin.to_path_buf())
    })
}

fn haproxy30() -> Option<PathBuf> {
    std::env::var_os("HAPROXY3")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/work/shared/anchors/haproxy3")))
        .filter(|p| p.is_file())
}

fn version(program: &Path) -> String {
    Command::new(program)
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let limit = raise_fd_limit();
    let n: usize = std::env::var("IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    if n as u64 + 100 > limit {
        eprintln!("IDLE_CONNS={n} needs an open-file limit above it (hard limit {limit})");
        std::process::exit(1);
    }
    eprintln!("building luahost (release)...");
    let luahost = artifacts().luahost();
    let mut servers = vec![("luahost".to_string(), luahost)];
    for (label, p) in [("haproxy 2.6", haproxy26()), ("haproxy 3.0", haproxy30())] {
        match p {
            Some(p) => {
                eprintln!("{label}: {}", version(&p));
                servers.push((label.to_string(), p));
            }
            None => eprintln!("{label}: not installed, skipped"),
        }
    }
    let rows: Vec<Row> = servers
        .iter()
        .filter_map(|(name, p)| measure(name, p, n, limit))
        .collect();
    println!();
    println!("| server | idle connections | RSS before | RSS after | bytes per idle connection |");
    println!("|---|---:|---:|---:|---:|");
    for r in rows {
        let per = r.after.saturating_sub(r.before) / (r.conns.max(1) as u64);
        println!(
            "| {} | {} | {:.1} MB | {:.1} MB | {} |",
            r.server,
            r.conns,
            r.before as f64 / 1e6,
            r.after as f64 / 1e6,
            per
        );
    }
}
