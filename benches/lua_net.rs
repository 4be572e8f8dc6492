//! Lua sockets benchmark: requests/s of a Lua action that makes one
//! `core.tcp()` request/response to a local origin per request, luahost
//! against HAProxy 3.0 (`../shared/anchors/haproxy3`) and 2.6 (Debian's
//! `haproxy`), in one run.
//!
//!     cargo bench --bench lua_net
//!
//! Two scripts: one that closes its socket (`s:close()`), one that leaves
//! it open for the host to close. HAProxy closes a socket the script left
//! open by running a full garbage collection after the action; luahost
//! closes it when the action's context ends and never forces a collection,
//! so both scripts should cost luahost the same.
//!
//! Each server runs with `nbthread 1` pinned to CPU 0; wrk (`-t1`) and the
//! origin (a line service in this process: one answer per line) share
//! CPU 1. For every run the table shows requests/s, the server's CPU time
//! per request, the connections the origin accepted per request, and the
//! connections still open at the origin one second after the run (none
//! should linger). After the runs, each server's Lua heap
//! (`collectgarbage("count")`, asked through a Lua service) shows that
//! nothing piled up for the collector.
//!
//! The collector's share: each server and script is measured twice, with
//! Lua's collector as configured and with it stopped by the script
//! (`collectgarbage("stop")` in the file body); the difference of CPU time
//! per request is what the collector costs (HAProxy's forced full
//! collections after an action that left a socket open still run: a
//! stopped collector does not stop an explicit full collection).
//! Environment: BENCH_SECS (default 5), BENCH_RUNS (3), BENCH_CONNS (50);
//! BENCH_SCRIPTS (`ask_close,ask_leave`) and BENCH_GC (`on,stopped`) pick
//! a subset of the rows.

use luahost_suite::{
    artifacts, find_on_path, free_port, haproxy_26, haproxy_30, scratch_dir, wrk_totals,
};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SCRIPT: &str = r#"
@GC@
local ORIGIN = "@ORIGIN@"

local function ask(txn, close)
  local s = core.tcp()
  s:settimeout(2)
  if s:connect(ORIGIN) == 1 then
    s:send("ASK " .. txn.sf:path() .. "\n")
    txn:set_var("txn.answer", s:receive("*l") or "none")
  end
  if close then s:close() end
end

core.register_action("ask_close", { "http-req" }, function(txn) ask(txn, true) end)
core.register_action("ask_leave", { "http-req" }, function(txn) ask(txn, false) end)

core.register_service("heap", "http", function(applet)
  local body = string.format("%.0f", collectgarbage("count"))
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
"#;

fn config(action: &str) -> String {
    format!(
        "global\n  lua-load net.lua\n  nbthread 1\ndefaults\n  mode http\n  timeout client 5s\n  \
         timeout server 5s\n  timeout connect 2s\nfrontend f\n  bind 127.0.0.1:@PORT@\n  \
         http-request lua.{action}\n  http-request return status 200 content-type text/plain \
         lf-string \"%[var(txn.answer)]\"\nfrontend heap\n  bind 127.0.0.1:@HEAP@\n  \
         http-request use-service lua.heap\n"
    )
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether `item` is in the comma-separated list of environment variable
/// `name` (everything is, when it is unset).
fn selected(name: &str, item: &str) -> bool {
    std::env::var(name).map_or(true, |v| v.split(',').any(|x| x.trim() == item))
}

/// The origin: a line service (`ASK x` -> `ok x`), counting connections.
struct Origin {
    addr: String,
    accepted: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
}

/// Pins the calling thread to CPU 1 (with wrk).
fn pin_to_cpu1() {
    // SAFETY: cpu_set_t is plain data; the calls only read `set` and apply
    // to the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(1, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn start_origin() -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the origin");
    let addr = listener.local_addr().expect("origin address").to_string();
    let accepted = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicU64::new(0));
    let listener = Arc::new(listener);
    // A pool of threads, each serving one connection at a time: the
    // connections are short (one line each way).
    for _ in 0..64 {
        let (listener, accepted, open) = (listener.clone(), accepted.clone(), open.clone());
        std::thread::spawn(move || {
            pin_to_cpu1();
            loop {
                let Ok((conn, _)) = listener.accept() else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                open.fetch_add(1, Ordering::SeqCst);
                serve(conn);
                open.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }
    Origin {
        addr,
        accepted,
        open,
    }
}

fn serve(conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let arg = line.trim_end().strip_prefix("ASK ").unwrap_or("?");
        if out.write_all(format!("ok {arg}\n").as_bytes()).is_err() {
            return;
        }
    }
}

struct Server {
    child: Child,
    port: u16,
    heap_port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(program: &str, tag: &str, action: &str, gc: bool, origin: &str) -> Server {
    let gc_tag = if gc { "gc" } else { "nogc" };
    let dir = scratch_dir(&format!("bench_lua_net_{tag}_{action}_{gc_tag}"));
    let (port, heap_port) = (free_port(), free_port());
    let script = SCRIPT
        .replace("@ORIGIN@", origin)
        .replace("@GC@", if gc { "" } else { "collectgarbage('stop')" });
    std::fs::write(dir.join("net.lua"), script).expect("write lua");
    let cfg = config(action)
        .replace("@PORT@", &port.to_string())
        .replace("@HEAP@", &heap_port.to_string());
    std::fs::write(dir.join("bench.cfg"), cfg).expect("write cfg");
    let child = Command::new("taskset")
        .args(["-c", "0", program, "-f", "bench.cfg"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{program} did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        child,
        port,
        heap_port,
    }
}

/// CPU time a process has used so far, in clock ticks: (user, system).
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// One wrk run: (requests/s, requests, non-2xx or socket errors seen).
fn wrk(port: u16, secs: u64, conns: u64) -> (f64, f64, bool) {
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg(format!("http://127.0.0.1:{port}/x"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let (rps, requests) = wrk_totals(&text);
    let errors = text.contains("Non-2xx") || text.contains("Socket errors");
    (rps, requests, errors)
}

/// The Lua heap of a server, in KiB.
fn heap_kib(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return "?".into();
    };
    let _ = s.write_all(b"GET / HTTP/1.0\r\nhost: x\r\n\r\n");
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut text);
    text.rsplit("\r\n\r\n").next().unwrap_or("?").to_string()
}

struct Run {
    rps: f64,
    cpu_us: f64,
    /// The system-call (kernel) part of `cpu_us`.
    sys_us: f64,
    conns_per_req: f64,
    lingering: u64,
    errors: bool,
}

fn measure(server: &Server, origin: &Origin, secs: u64, conns: u64) -> Run {
    let pid = server.child.id();
    let before_cpu = cpu_ticks(pid);
    let before_acc = origin.accepted.load(Ordering::SeqCst);
    let (rps, requests, errors) = wrk(server.port, secs, conns);
    let after_cpu = cpu_ticks(pid);
    let accepted = origin.accepted.load(Ordering::SeqCst) - before_acc;
    std::thread::sleep(Duration::from_secs(1));
    let lingering = origin.open.load(Ordering::SeqCst);
    // Clock ticks are 10 ms (USER_HZ 100).
    let per_request = |ticks: u64| ticks as f64 * 10_000.0 / requests;
    let (cpu_us, sys_us) = match (before_cpu, after_cpu) {
        (Some(b), Some(a)) if requests > 0.0 => {
            (per_request(a.0 + a.1 - b.0 - b.1), per_request(a.1 - b.1))
        }
        _ => (f64::NAN, f64::NAN),
    };
    Run {
        rps,
        cpu_us,
        sys_us,
        conns_per_req: if requests > 0.0 {
            accepted as f64 / requests
        } else {
            f64::NAN
        },
        lingering,
        errors,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One table row: a server running one script, collector on or stopped.
struct Row {
    label: &'static str,
    server: String,
    gc: bool,
    rps: f64,
    cpu_us: f64,
}

fn main() {
    let secs = env_num("BENCH_SECS", 5);
    let runs = env_num("BENCH_RUNS", 3).max(1);
    let conns = env_num("BENCH_CONNS", 50);
    if find_on_path("wrk").is_none() || find_on_path("taskset").is_none() {
        eprintln!("this benchmark needs wrk and taskset (apt-get install wrk util-linux)");
        std::process::exit(1);
    }
    eprintln!("building luahost (release)...");
    let luahost = artifacts().luahost().to_string_lossy().into_owned();
    let mut peers = vec![("luahost".to_string(), luahost)];
    for (peer, name) in [(haproxy_30(), "HAProxy 3.0"), (haproxy_26(), "HAProxy 2.6")] {
        match peer {
            Some(p) => peers.push((p.label.clone(), p.program.to_string_lossy().into_owned())),
            None => eprintln!("{name} not installed: not measured"),
        }
    }
    let origin = start_origin();

    println!(
        "Lua action with one core.tcp() request/response per request; wrk -t1 -c{conns} -d{secs}s, \
         median of {runs} runs; servers nbthread 1 on CPU 0, wrk and origin on CPU 1; \
         Lua GC: as configured (on) or stopped by the script"
    );
    println!();
    println!(
        "| script | server | Lua GC | req/s (min-max) | CPU us/req | of it system | origin conns/req | open 1 s after | Lua heap after (KiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut rows: Vec<Row> = Vec::new();
    for (action, label) in [
        ("ask_close", "closes its socket"),
        ("ask_leave", "leaves it open"),
    ] {
        if !selected("BENCH_SCRIPTS", action) {
            continue;
        }
        for gc in [true, false] {
            if !selected("BENCH_GC", if gc { "on" } else { "stopped" }) {
                continue;
            }
            eprintln!("{label}, Lua GC {}:", if gc { "on" } else { "stopped" });
            let servers: Vec<(String, Server)> = peers
                .iter()
                .map(|(name, program)| {
                    let tag = name.replace(' ', "_");
                    let s = start(program, &tag, action, gc, &origin.addr);
                    // Warm-up.
                    let _ = wrk(s.port, 1, conns);
                    (name.clone(), s)
                })
                .collect();
            let mut results: Vec<Vec<Run>> = servers.iter().map(|_| Vec::new()).collect();
            for round in 0..runs as usize {
                // Alternate the order so a drifting machine favours no one.
                for k in 0..servers.len() {
                    let i = (k + round) % servers.len();
                    let (name, server) = &servers[i];
                    let r = measure(server, &origin, secs, conns);
                    eprintln!(
                        "  {name}: {:.0} req/s, {:.1} us CPU/req ({:.1} system), {:.3} origin conns/req, {} open after{}",
                        r.rps,
                        r.cpu_us,
                        r.sys_us,
                        r.conns_per_req,
                        r.lingering,
                        if r.errors { " (wrk reported errors)" } else { "" }
                    );
                    results[i].push(r);
                }
            }
            for ((name, server), rs) in servers.iter().zip(results) {
                let rps: Vec<f64> = rs.iter().map(|r| r.rps).collect();
                let min = rps.iter().cloned().fold(f64::INFINITY, f64::min);
                let max = rps.iter().cloned().fold(0.0, f64::max);
                let m = median(rps);
                let cpu_us = median(rs.iter().map(|r| r.cpu_us).collect());
                let sys_us = median(rs.iter().map(|r| r.sys_us).collect());
                println!(
                    "| {label} | {name} | {} | {m:.0} ({min:.0}-{max:.0}) | {cpu_us:.1} | {sys_us:.1} | {:.3} | {} | {} |",
                    if gc { "on" } else { "stopped" },
                    median(rs.iter().map(|r| r.conns_per_req).collect()),
                    rs.iter().map(|r| r.lingering).max().unwrap_or(0),
                    heap_kib(server.heap_port),
                );
                rows.push(Row {
                    label,
                    server: name.clone(),
                    gc,
                    rps: m,
                    cpu_us,
                });
            }
        }
    }
    println!();
    let find = |label: &str, server: &str, gc: bool| {
        rows.iter()
            .find(|r| r.label == label && r.server == server && r.gc == gc)
    };
    for r in rows.iter().filter(|r| r.gc) {
        if let Some(off) = find(r.label, &r.server, false) {
            println!(
                "{}: {}: collector's CPU time (on - stopped) = {:.1} us/req",
                r.label,
                r.server,
                r.cpu_us - off.cpu_us
            );
        }
    }
    for r in rows.iter().filter(|r| r.gc && r.server != "luahost") {
        if let Some(l) = find(r.label, "luahost", true) {
            println!(
                "{}: luahost / {} = {:.2}x requests/s, {:.2}x CPU per request",
                r.label,
                r.server,
                l.rps / r.rps,
                l.cpu_us / r.cpu_us
            );
        }
    }
}
