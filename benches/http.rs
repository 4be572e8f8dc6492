//! HTTP benchmark: the same workloads served by luahost and, where installed,
//! by HAProxy 3.0 (`../shared/anchors/haproxy3`) and HAProxy 2.6 (Debian's
//! `haproxy`), measured with wrk in one run.
//!
//!     cargo bench --bench http
//!
//! Each server runs with `nbthread 1` pinned to CPU 0 while wrk runs pinned to
//! CPU 1 (`taskset`), then with `nbthread 2` unpinned. Several runs per cell;
//! the table shows the medians over the runs of requests/s (with min-max), of
//! the p50 and p99 latencies and of the CPU time per request. All servers
//! of a workload run side by side and their runs alternate. Environment: BENCH_SECS (default 5), BENCH_RUNS (5),
//! BENCH_CONNS (50).

use luahost_suite::{artifacts, find_on_path, free_port, haproxy_peers, scratch_dir, wrk_totals};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVICE: &str = r#"
core.register_service("hello", "http", function(applet)
  local body = "hello " .. (applet.path or "")
  applet:set_status(200)
  applet:add_header("content-length", string.len(body))
  applet:add_header("content-type", "text/plain")
  applet:start_response()
  applet:send(body)
end)
"#;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A workload: a configuration template (`@PORT@`, `@NBTHREAD@`,
/// `@ORIGIN@`) and the Lua files it loads.
struct Scenario {
    name: &'static str,
    cfg: String,
    files: Vec<(&'static str, String)>,
    nbthread: usize,
    /// A request header wrk sends (e.g. Accept-Encoding).
    header: Option<&'static str>,
    /// Peers not measured on this workload, with the reason printed.
    skip: &'static [(&'static str, &'static str)],
}

/// A Lua service answering 4 KiB of text, compressed by `compression`.
const TEXT_SERVICE: &str = r#"
local body = string.rep("luahost compresses what HAProxy compresses. ", 94)
core.register_service("text", "http", function(applet)
  applet:set_status(200)
  applet:add_header("content-length", string.len(body))
  applet:add_header("content-type", "text/plain")
  applet:start_response()
  applet:send(body)
end)
"#;

fn compression_cfg() -> String {
    "global\n  lua-load text.lua\n  nbthread @NBTHREAD@\ndefaults\n  mode http\n  timeout client 5s\n  \
     timeout server 5s\n  timeout connect 1s\nfrontend f\n  bind 127.0.0.1:@PORT@\n  \
     compression algo gzip\n  compression type text/plain\n  http-request use-service lua.text\n"
        .to_string()
}

fn hello_cfg() -> String {
    "global\n  lua-load hello.lua\n  nbthread @NBTHREAD@\ndefaults\n  mode http\n  timeout client 5s\n  \
     timeout server 5s\n  timeout connect 1s\nfrontend f\n  bind 127.0.0.1:@PORT@\n  \
     http-request use-service lua.hello\n"
        .to_string()
}

fn proxy_cfg() -> String {
    "global\n  nbthread @NBTHREAD@\ndefaults\n  mode http\n  timeout client 5s\n  timeout server 5s\n  \
     timeout connect 1s\n  option http-keep-alive\nfrontend f\n  bind 127.0.0.1:@PORT@\n  default_backend b\n\
     backend b\n  server s1 @ORIGIN@\n"
        .to_string()
}

/// Proxying with a traffic log: an httplog line per request (with a
/// captured header) sent over UDP to a syslog sink.
fn proxy_httplog_cfg() -> String {
    "global\n  nbthread @NBTHREAD@\n  log @LOGSINK@ local0\ndefaults\n  mode http\n  log global\n  \
     option httplog\n  timeout client 5s\n  timeout server 5s\n  timeout connect 1s\n  option http-keep-alive\n\
     frontend f\n  bind 127.0.0.1:@PORT@\n  capture request header Host len 32\n  default_backend b\n\
     backend b\n  server s1 @ORIGIN@\n"
        .to_string()
}

/// A syslog receiver for the logging workload: a thread that reads and
/// counts datagrams, so that the servers' sockets never fill.
fn start_log_sink() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind log sink");
    let addr = sock.local_addr().expect("sink address").to_string();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while sock.recv(&mut buf).is_ok() {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    (addr, count)
}

/// The reference workload, unmodified but for its port and file path.
fn reference() -> Option<(String, String)> {
    let dir = luahost_suite::workspace_root().join("../shared/anchors");
    let cfg = std::fs::read_to_string(dir.join("svc.cfg")).ok()?;
    let lua = std::fs::read_to_string(dir.join("svc.lua")).ok()?;
    let cfg = cfg
        .replace("127.0.0.1:18081", "127.0.0.1:@PORT@")
        .replace("nbthread 1", "nbthread @NBTHREAD@");
    Some((cfg, lua))
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

fn start(program: &str, dir: &std::path::Path, port: u16, pin: Option<&str>) -> Server {
    let mut cmd = match pin {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu, program]);
            c
        }
        None => Command::new(program),
    };
    let child = cmd
        .args(["-f", "bench.cfg"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{program} did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child }
}

/// CPU time (user + system) a process has used so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that ends the command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// One wrk run: (requests/s, p50 ms, p99 ms, server CPU microseconds per request).
fn wrk_measured(
    pid: u32,
    port: u16,
    secs: u64,
    conns: u64,
    header: Option<&str>,
) -> (f64, f64, f64, f64) {
    let before = cpu_ticks(pid);
    let (rps, p50, p99, requests) = wrk_raw(port, secs, conns, header);
    let after = cpu_ticks(pid);
    // Linux reports ticks of 1/100 s (USER_HZ).
    let cpu_us = match (before, after) {
        (Some(b), Some(a)) if requests > 0.0 => (a - b) as f64 * 10_000.0 / requests,
        _ => f64::NAN,
    };
    (rps, p50, p99, cpu_us)
}

fn wrk(port: u16, secs: u64, conns: u64, header: Option<&str>) -> (f64, f64, f64) {
    let (rps, p50, p99, _) = wrk_raw(port, secs, conns, header);
    (rps, p50, p99)
}

/// One wrk run: (requests/s, p50 ms, p99 ms, requests completed).
fn wrk_raw(port: u16, secs: u64, conns: u64, header: Option<&str>) -> (f64, f64, f64, f64) {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1", "wrk", "-t1"]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency")
        .arg(format!("http://127.0.0.1:{port}/abc"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let (rps, requests) = wrk_totals(&text);
    let (mut p50, mut p99) = (f64::NAN, f64::NAN);
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("50%"), Some(v)) => p50 = ms(v),
            (Some("99%"), Some(v)) => p99 = ms(v),
            _ => {}
        }
    }
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        eprintln!("  note: wrk reported errors:\n{text}");
    }
    (rps, p50, p99, requests)
}

/// "1.23ms" / "850.00us" / "1.01s" -> milliseconds.
fn ms(v: &str) -> f64 {
    let (num, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().map_or(f64::NAN, |x| x * factor)
}

struct Cell {
    /// The median over the runs of each of (req/s, p50, p99, CPU
    /// us/request), taken separately: one run's p99 is a noisy sample.
    median: (f64, f64, f64, f64),
    min: f64,
    max: f64,
}

/// A server started for one scenario.
struct Target {
    _server: Server,
    pid: u32,
    port: u16,
    header: Option<&'static str>,
}

/// Starts `program` on scenario `sc` and warms it up.
fn launch(program: &str, sc: &Scenario, origin: &str, log_sink: &str, conns: u64) -> Target {
    let header = sc.header;
    let tag = std::path::Path::new(program)
        .file_name()
        .map_or("x".into(), |f| f.to_string_lossy().into_owned());
    let dir = scratch_dir(&format!(
        "bench_http_{}_{tag}_{}",
        sc.name.replace(' ', "_"),
        sc.nbthread
    ));
    for (name, content) in &sc.files {
        std::fs::write(dir.join(name), content).expect("write lua");
    }
    let port = free_port();
    let cfg = sc
        .cfg
        .replace("@PORT@", &port.to_string())
        .replace("@NBTHREAD@", &sc.nbthread.to_string())
        .replace("@ORIGIN@", origin)
        .replace("@LOGSINK@", log_sink);
    std::fs::write(dir.join("bench.cfg"), cfg).expect("write cfg");
    let pin = (sc.nbthread == 1).then_some("0");
    let server = start(program, &dir, port, pin);
    // taskset execs the server, so the child's pid is the server's.
    let pid = server.child.id();
    let _ = wrk(port, 1, conns, header);
    Target {
        _server: server,
        pid,
        port,
        header,
    }
}

/// One measured run of `target`, reported on stderr.
fn run_once(name: &str, target: &Target, secs: u64, conns: u64) -> (f64, f64, f64, f64) {
    let r = wrk_measured(target.pid, target.port, secs, conns, target.header);
    eprintln!(
        "  {name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {:.1} us CPU/request",
        r.0, r.1, r.2, r.3
    );
    r
}

fn summarize(results: Vec<(f64, f64, f64, f64)>) -> Cell {
    let median = |pick: fn(&(f64, f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = results.iter().map(pick).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    Cell {
        median: (
            median(|r| r.0),
            median(|r| r.1),
            median(|r| r.2),
            median(|r| r.3),
        ),
        min: results.iter().map(|r| r.0).fold(f64::INFINITY, f64::min),
        max: results.iter().map(|r| r.0).fold(0.0, f64::max),
    }
}

/// The origin server for the proxying workload: a fixed answer served from
/// CPU 1 (with wrk), by HAProxy when installed, else by luahost itself.
fn start_origin(program: &str) -> (Server, String) {
    let dir = scratch_dir("bench_http_origin");
    let port = free_port();
    let cfg = format!(
        "global\n  nbthread 1\ndefaults\n  mode http\n  timeout client 5s\nfrontend origin\n  \
         bind 127.0.0.1:{port}\n  http-request return status 200 content-type text/plain string \"hello from the origin\"\n"
    );
    std::fs::write(dir.join("bench.cfg"), cfg).expect("write origin cfg");
    (
        start(program, &dir, port, Some("1")),
        format!("127.0.0.1:{port}"),
    )
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let secs = env_num("BENCH_SECS", 5);
    let runs = env_num("BENCH_RUNS", 5).max(1);
    let conns = env_num("BENCH_CONNS", 50);
    if find_on_path("wrk").is_none() || find_on_path("taskset").is_none() {
        eprintln!("this benchmark needs wrk and taskset (apt-get install wrk util-linux)");
        std::process::exit(1);
    }
    eprintln!("building luahost (release)...");
    let luahost = artifacts().luahost().to_string_lossy().into_owned();
    // HAProxy 3.0 and 2.6, each where installed.
    let peers = haproxy_peers();
    let origin_program = peers.last().map_or(luahost.clone(), |p| {
        p.program.to_string_lossy().into_owned()
    });
    let (_origin, origin_addr) = start_origin(&origin_program);

    let mut scenarios = Vec::new();
    for nbthread in [1, 2] {
        scenarios.push(Scenario {
            name: "Lua service",
            cfg: hello_cfg(),
            files: vec![("hello.lua", SERVICE.to_string())],
            nbthread,
            header: None,
            skip: &[],
        });
    }
    match reference() {
        Some((cfg, lua)) => scenarios.push(Scenario {
            name: "reference svc.cfg",
            cfg,
            files: vec![("svc.lua", lua)],
            nbthread: 1,
            header: None,
            skip: &[],
        }),
        None => eprintln!("../shared/anchors/svc.cfg not found: skipping the reference workload"),
    }
    scenarios.push(Scenario {
        name: "proxy to origin",
        cfg: proxy_cfg(),
        files: Vec::new(),
        nbthread: 1,
        header: None,
        skip: &[],
    });
    scenarios.push(Scenario {
        name: "compressed Lua service (gzip, 4 KiB)",
        cfg: compression_cfg(),
        files: vec![("text.lua", TEXT_SERVICE.to_string())],
        nbthread: 1,
        header: Some("Accept-Encoding: gzip"),
        skip: &[(
            "haproxy 2.6",
            "2.6 frames compressed Lua service responses wrongly (transfer-encoding repeated)",
        )],
    });
    scenarios.push(Scenario {
        name: "proxy to origin, httplog over UDP",
        cfg: proxy_httplog_cfg(),
        files: Vec::new(),
        nbthread: 1,
        header: None,
        skip: &[],
    });
    let (log_sink, log_lines) = start_log_sink();

    // BENCH_ONLY=text keeps the workloads whose name contains it.
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        scenarios.retain(|sc| sc.name.contains(only.as_str()));
    }
    let mut rows = Vec::new();
    for sc in &scenarios {
        eprintln!("{}, nbthread {}:", sc.name, sc.nbthread);
        // All servers run side by side and their runs alternate (the order
        // rotating each round): on a machine whose speed drifts, measuring
        // one server's runs after another's would credit the drift to one
        // of them.
        let mut targets = vec![(
            "luahost".to_string(),
            launch(&luahost, sc, &origin_addr, &log_sink, conns),
        )];
        for p in &peers {
            if let Some((_, why)) = sc.skip.iter().find(|(l, _)| *l == p.label) {
                eprintln!("  {} not measured: {why}", p.label);
                continue;
            }
            let program = p.program.to_string_lossy();
            targets.push((
                p.label.clone(),
                launch(&program, sc, &origin_addr, &log_sink, conns),
            ));
        }
        let mut results: Vec<Vec<(f64, f64, f64, f64)>> = vec![Vec::new(); targets.len()];
        for round in 0..runs as usize {
            for k in 0..targets.len() {
                let i = (k + round) % targets.len();
                let (name, target) = &targets[i];
                results[i].push(run_once(name, target, secs, conns));
            }
        }
        // Per peer, the median of each round's luahost/peer ratio: what the
        // drift of the machine disturbs least.
        let paired: Vec<Option<f64>> = (0..targets.len())
            .map(|i| {
                let mut r: Vec<f64> = results[0]
                    .iter()
                    .zip(&results[i])
                    .map(|(o, t)| o.0 / t.0)
                    .collect();
                r.sort_by(f64::total_cmp);
                r.get(r.len() / 2).copied()
            })
            .collect();
        let names: Vec<String> = targets.into_iter().map(|(n, _)| n).collect();
        let cells: Vec<Cell> = results.into_iter().map(summarize).collect();
        rows.push((sc, names, cells, paired));
    }

    println!();
    println!(
        "wrk -t1 -c{conns} -d{secs}s pinned to CPU 1; servers with nbthread 1 pinned to CPU 0 (nbthread 2 unpinned); \
         median of {runs} runs, the servers' runs alternating"
    );
    if peers.is_empty() {
        println!("peers: no HAProxy is installed; luahost measured alone");
    }
    for p in &peers {
        println!("peer: {} ({})", p.label, p.version);
    }
    println!("origin for 'proxy to origin': {origin_addr} (pinned to CPU 1, shared with wrk)");
    println!(
        "httplog workload: one line per request over UDP to a receiving thread ({} lines received in all)",
        log_lines.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!();
    println!(
        "| workload | nbthread | server | req/s (median) | min-max | p50 ms (median) | p99 ms (median) | CPU us/req (median) | luahost/this req/s | median of paired ratios |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (sc, names, cells, paired) in &rows {
        let ours = &cells[0];
        for (i, (name, c)) in names.iter().zip(cells).enumerate() {
            let ratio = if i == 0 {
                " | ".to_string()
            } else {
                format!(
                    "{:.2}x | {:.2}x",
                    ours.median.0 / c.median.0,
                    paired[i].unwrap_or(f64::NAN)
                )
            };
            println!(
                "| {} | {} | {name} | {:.0} | {:.0}-{:.0} | {:.2} | {:.2} | {:.1} | {ratio} |",
                sc.name, sc.nbthread, c.median.0, c.min, c.max, c.median.1, c.median.2, c.median.3
            );
        }
    }
}
