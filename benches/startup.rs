//! Start-up with many backends: the configuration written by
//! `../shared/anchors/gen_backends.py` (N backends of one server each, one
//! frontend, default N = 300,000; `STARTUP_BACKENDS`) with
//! `count_backends.lua`, whose init function counts `core.backends` and
//! looks up `core.backends["b123"]`. For luahost, HAProxy 3.0 and HAProxy
//! 2.6, in one run, it measures:
//!
//! - init: from the process start to the init function's output line;
//! - first answer: from the process start to the first HTTP response on the
//!   frontend (a 503: the frontend has no backend);
//! - peak RSS: VmHWM of the process once it answered;
//! - CPU: the process's user + system time once it answered (what a loaded
//!   machine does not inflate, unlike the wall times).
//!
//! luahost runs with `LUAHOST_STARTUP_TRACE` set: its start-up phases
//! (wall, CPU and RSS at the end of each) are printed after the table.
//!
//!     cargo bench --bench startup
//!
//! `STARTUP_PEERS=luahost` (a comma-separated list of luahost, "haproxy
//! 3.0", "haproxy 2.6") measures only those: HAProxy needs tens of seconds
//! and gigabytes here.

use luahost_suite::{artifacts, free_port, haproxy_26, haproxy_30, scratch_dir, workspace_root};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one peer may take to answer before it is given up.
const LIMIT: Duration = Duration::from_secs(180);

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Measure {
    init: Duration,
    first_answer: Duration,
    peak_kb: u64,
    cpu: Duration,
    init_line: String,
    /// luahost's `[startup]` trace lines.
    trace: Vec<String>,
}

/// User + system CPU time of process `pid` so far (/proc/PID/stat fields
/// 14 and 15, in clock ticks).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count from its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn vm_hwm_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One HTTP exchange; true when a status line came back.
fn answered(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n >= 9 && buf.starts_with(b"HTTP/1."))
}

fn measure(program: &Path, cfg: &Path, port: u16) -> Result<Measure, String> {
    let start = Instant::now();
    let child = Command::new(program)
        .env("LUAHOST_STARTUP_TRACE", "1")
        .arg("-f")
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let mut child = Running(child);
    let pid = child.0.id();
    let stderr = child.0.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let (trace_tx, trace_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("backends: ") {
                let _ = tx.send((Instant::now(), line));
            } else if line.starts_with("[startup]") {
                let _ = trace_tx.send(line);
            }
        }
    });
    let (at, line) = rx
        .recv_timeout(LIMIT)
        .map_err(|_| "no init output".to_string())?;
    let init = at - start;
    loop {
        if answered(port) {
            break;
        }
        if start.elapsed() > LIMIT {
            return Err("no answer".into());
        }
        if let Ok(Some(st)) = child.0.try_wait() {
            return Err(format!("exited with {st}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let first_answer = start.elapsed();
    let peak_kb = vm_hwm_kb(pid);
    let cpu = cpu_time(pid);
    let trace = trace_rx.try_iter().collect();
    let init_line = line.split(" : ").last().unwrap_or(&line).trim().to_string();
    Ok(Measure {
        init,
        first_answer,
        peak_kb,
        cpu,
        init_line,
        trace,
    })
}

/// Writes the configuration with gen_backends.py, then moves the frontend
/// to a free port.
fn write_config(dir: &Path, n: usize, port: u16) -> PathBuf {
    let anchors = workspace_root().join("../shared/anchors");
    let cfg = dir.join("big.cfg");
    let lua = anchors.join("count_backends.lua");
    let status = Command::new("python3")
        .arg(anchors.join("gen_backends.py"))
        .arg(n.to_string())
        .arg(&cfg)
        .arg(&lua)
        .status()
        .expect("run gen_backends.py");
    assert!(status.success(), "gen_backends.py failed");
    let text = std::fs::read_to_string(&cfg).expect("read config");
    let text = text.replacen("127.0.0.1:18090", &format!("127.0.0.1:{port}"), 1);
    std::fs::write(&cfg, text).expect("write config");
    cfg
}

fn main() {
    let n: usize = std::env::var("STARTUP_BACKENDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let wanted = std::env::var("STARTUP_PEERS").ok();
    let wants = |label: &str| {
        wanted
            .as_deref()
            .is_none_or(|w| w.split(',').any(|x| x.trim() == label))
    };
    let mut peers: Vec<(String, PathBuf)> = Vec::new();
    if wants("luahost") {
        peers.push(("luahost".into(), artifacts().luahost()));
    }
    for p in [haproxy_30(), haproxy_26()].into_iter().flatten() {
        if wants(&p.label) {
            peers.push((p.label.clone(), p.program.clone()));
        }
    }
    let dir = scratch_dir("startup-bench");
    println!("start-up with {n} backends (gen_backends.py + count_backends.lua)\n");
    println!(
        "| {:<12} | {:>9} | {:>16} | {:>13} | {:>7} | init output |",
        "peer", "init (s)", "first answer (s)", "peak RSS (MB)", "CPU (s)"
    );
    println!(
        "|{:-<14}|{:->11}|{:->18}|{:->15}|{:->9}|---|",
        "", "", "", "", ""
    );
    let mut traces = Vec::new();
    for (label, program) in peers {
        let port = free_port();
        let cfg = write_config(&dir, n, port);
        match measure(&program, &cfg, port) {
            Ok(m) => {
                println!(
                    "| {:<12} | {:>9.2} | {:>16.2} | {:>13.0} | {:>7.2} | {} |",
                    label,
                    m.init.as_secs_f64(),
                    m.first_answer.as_secs_f64(),
                    m.peak_kb as f64 / 1024.0,
                    m.cpu.as_secs_f64(),
                    m.init_line
                );
                if !m.trace.is_empty() {
                    traces.push((label, m.trace));
                }
            }
            Err(e) => println!("| {label:<12} | failed: {e} |"),
        }
    }
    for (label, trace) in traces {
        println!("\n{label} start-up phases (at the end of each):");
        for line in trace {
            println!("  {line}");
        }
    }
}
