//! HTTP client benchmark: requests/s of a Lua action that makes one
//! `core.httpclient():get` to a local origin per request, luahost against
//! HAProxy 3.0 (`../shared/anchors/haproxy3`) and 2.6 (Debian's `haproxy`)
//! in one run, with the number of
//! connections the origin accepted per request and the server's CPU time per
//! request.
//!
//!     cargo bench --bench lua_httpclient
//!
//! Each server runs `nbthread 1` pinned to CPU 0; wrk (`-t1 -c8`) and the
//! origin (threads of this program, keep-alive, HTTP/1.1) share CPU 1. Each
//! server is measured twice: as is, and with the Lua garbage collector
//! stopped by the script (`collectgarbage("stop")`), so the difference
//! between the two rows is the throughput and the CPU time per request the
//! collector costs (HAProxy's forced full collections after socket use
//! included, if any: a stopped collector does not stop them). Runs
//! alternate between the servers; the table shows medians with min-max.
//! Environment: BENCH_SECS (default 5), BENCH_RUNS (3), BENCH_CONNS (8).

use luahost_suite::http_origin::Origin;
use luahost_suite::{artifacts, free_port, haproxy_26, haproxy_30, scratch_dir, wrk_totals};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ACTION: &str = r#"
@GC@
core.register_action("call", { "http-req" }, function(txn)
  local r = core.httpclient():get{ url = "http://127.0.0.1:@ORIGIN@/echo" }
  txn:set_var("txn.status", r.status)
end)
"#;

const CFG: &str = "global\n  nbthread 1\n  lua-load call.lua\ndefaults\n  mode http\n  timeout client 10s\n  \
                   timeout server 10s\n  timeout connect 2s\nfrontend f\n  bind 127.0.0.1:@PORT@\n  \
                   http-request lua.call\n  \
                   http-request return status 200 content-type text/plain lf-string \"%[var(txn.status)]\"\n";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pins this process (and the origin threads it starts) to `cpu`.
fn pin_self(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes
    // inside it; sched_setaffinity reads it for this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &str, program: &std::path::Path, origin: u16, gc: bool) -> Server {
    let port = free_port();
    let dir = scratch_dir(&format!(
        "bench_lua_httpclient_{name}_{}",
        if gc { "gc" } else { "nogc" }
    ));
    let lua = ACTION
        .replace("@GC@", if gc { "" } else { "collectgarbage('stop')" })
        .replace("@ORIGIN@", &origin.to_string());
    std::fs::write(dir.join("call.lua"), lua).expect("write lua");
    std::fs::write(dir.join("b.cfg"), CFG.replace("@PORT@", &port.to_string())).expect("write cfg");
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(program)
        .args(["-f", "b.cfg"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{name} did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, port }
}

/// The pid that does the work: the launcher `exec`s HAProxy, taskset
/// `exec`s the program, so the child's pid is the server's.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

struct Run {
    rps: f64,
    conns_per_req: f64,
    cpu_us: f64,
    errors: bool,
}

fn measure(server: &Server, origin: &Origin, secs: u64, conns: u64) -> Run {
    let accepted = origin.accepted();
    let served = origin
        .counters
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    let ticks = cpu_ticks(server.child.id());
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg(format!("http://127.0.0.1:{}/", server.port))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let (rps, requests) = wrk_totals(&text);
    let cpu_us = match (ticks, cpu_ticks(server.child.id())) {
        // USER_HZ is 100: a tick is 10 ms.
        (Some(b), Some(a)) if requests > 0.0 => (a - b) as f64 * 10_000.0 / requests,
        _ => f64::NAN,
    };
    let origin_reqs = origin
        .counters
        .requests
        .load(std::sync::atomic::Ordering::SeqCst)
        - served;
    let opened = origin.accepted() - accepted;
    Run {
        rps,
        conns_per_req: if origin_reqs > 0 {
            opened as f64 / origin_reqs as f64
        } else {
            f64::NAN
        },
        cpu_us,
        errors: text.contains("Non-2xx") || text.contains("Socket errors"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let secs = env_num("BENCH_SECS", 5);
    let runs = env_num("BENCH_RUNS", 3) as usize;
    let conns = env_num("BENCH_CONNS", 8);
    if luahost_suite::find_on_path("wrk").is_none() {
        eprintln!("wrk is not installed: nothing measured");
        return;
    }
    pin_self(1);
    let origin = Origin::start(64);
    let mut peers: Vec<(String, std::path::PathBuf)> =
        vec![("luahost".into(), artifacts().luahost())];
    for (peer, name) in [(haproxy_30(), "HAProxy 3.0"), (haproxy_26(), "HAProxy 2.6")] {
        match peer {
            Some(p) => peers.push((p.label.clone(), p.program.clone())),
            None => eprintln!("{name} is not installed: not measured"),
        }
    }
    let mut rows = Vec::new();
    for gc in [true, false] {
        let servers: Vec<Server> = peers
            .iter()
            .map(|(n, p)| start(&n.replace(' ', "_"), p, origin.port, gc))
            .collect();
        // Warm-up (the pool fills, HAProxy's Lua state settles).
        for s in &servers {
            measure(s, &origin, 1, conns);
        }
        let mut results: Vec<Vec<Run>> = servers.iter().map(|_| Vec::new()).collect();
        for _ in 0..runs {
            for (i, s) in servers.iter().enumerate() {
                results[i].push(measure(s, &origin, secs, conns));
            }
        }
        for ((name, _), r) in peers.iter().zip(results) {
            let rps: Vec<f64> = r.iter().map(|x| x.rps).collect();
            let min = rps.iter().copied().fold(f64::INFINITY, f64::min);
            let max = rps.iter().copied().fold(0.0, f64::max);
            rows.push((
                name.clone(),
                gc,
                median(rps),
                min,
                max,
                median(r.iter().map(|x| x.conns_per_req).collect()),
                median(r.iter().map(|x| x.cpu_us).collect()),
                r.iter().any(|x| x.errors),
            ));
        }
    }
    println!(
        "\nLua action making one httpclient:get per request (nbthread 1, wrk -c{conns}, {secs}s x {runs} runs, medians)\n"
    );
    println!("| server | Lua GC | req/s (min-max) | origin connections / request | server CPU µs / request |");
    println!("|---|---|---|---|---|");
    for (name, gc, rps, min, max, cpr, cpu, errors) in &rows {
        println!(
            "| {name} | {} | {rps:.0} ({min:.0}-{max:.0}){} | {cpr:.4} | {cpu:.1} |",
            if *gc { "on" } else { "stopped" },
            if *errors { " (wrk saw errors)" } else { "" }
        );
    }
    println!();
    for (name, _) in &peers {
        let on = rows.iter().find(|r| &r.0 == name && r.1);
        let off = rows.iter().find(|r| &r.0 == name && !r.1);
        if let (Some(on), Some(off)) = (on, off) {
            println!(
                "{name}: throughput lost to Lua GC: {:.1}%; collector's CPU time (on - stopped): {:.1} us/req",
                (off.2 - on.2) / off.2 * 100.0,
                on.6 - off.6
            );
        }
    }
    if let Some(l) = rows.iter().find(|r| r.0 == "luahost" && r.1) {
        for h in rows.iter().filter(|r| r.0 != "luahost" && r.1) {
            println!(
                "luahost / {}: {:.2}x requests/s, {:.2}x CPU per request",
                h.0,
                l.2 / h.2,
                l.6 / h.6
            );
        }
    }
}
