//! Server events reaching a Lua subscriber: how many SERVER_STATE events
//! per second a trivial `core.event_sub` callback receives, and how long
//! one takes from the state change to the callback, for luahost and HAProxy
//! 3.0 in one run.
//!
//!     cargo bench --bench events
//!
//! Both servers get the same configuration and script (one thread, a
//! backend with one server, a unix stats socket at level admin). The bench
//! changes the server's state over the stats socket (`set server be/s1
//! state maint` / `ready`, alternately: each one is one SERVER_STATE
//! event), in HAProxy's interactive CLI mode (`prompt`) on one connection.
//! The callback writes one byte per event into a FIFO that the bench reads,
//! so both ends of a measurement are taken with the bench's clock.
//!
//! - rate: `EVENTS_RATE_N` (default 20,000) state changes, sent with at most
//!   50 events outstanding (HAProxy pauses a subscription past 100 queued
//!   events, and a paused subscription loses events); events per second
//!   from the first command to the last byte;
//! - latency: `EVENTS_LAT_N` (default 2,000) single changes, each sent once
//!   the previous event has arrived: median, 99th percentile and mean from
//!   writing the command to reading the callback's byte.
//!
//! `EVENTS_PEERS=luahost` or `=haproxy` measures one side only;
//! `EVENTS_LUAHOST=PATH` measures that luahost binary instead of the
//! workspace's build (a before/after comparison in one run).

use luahost_suite::{artifacts, free_port, haproxy_30, scratch_dir};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = r#"
local fifo = assert(io.open(os.getenv("EVENTS_FIFO"), "w"))
fifo:setvbuf("no")
core.event_sub({"SERVER_STATE"}, function(event, data)
  fifo:write("x")
end)
"#;

/// Events allowed in flight during the rate run.
const WINDOW: usize = 50;

fn config(port: u16, sock: &Path) -> String {
    format!(
        "global\n  nbthread 1\n  lua-load events.lua\n  stats socket {} level admin\n\
         defaults\n  mode http\n  timeout client 10s\n  timeout server 10s\n  timeout connect 1s\n\
         backend be\n  server s1 127.0.0.1:9\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n",
        sock.display()
    )
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

/// Starts a peer in `dir`; its callback opens the FIFO for writing, which
/// completes when the bench opens it for reading.
fn start(program: &Path, extra: &[&str], dir: &Path, fifo: &Path) -> Option<(Server, File)> {
    let mut cmd = Command::new(program);
    cmd.args(extra)
        .args(["-f", "events.cfg"])
        .current_dir(dir)
        .env("EVENTS_FIFO", fifo)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(dir.join("stderr.log")).ok()?));
    let child = cmd.spawn().ok()?;
    let server = Server { child };
    // Opening the read end blocks until the writer has opened it (at load).
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(File::open(path));
    });
    let reader = rx.recv_timeout(Duration::from_secs(20)).ok()?.ok()?;
    Some((server, reader))
}

/// The CLI in interactive mode; a thread drains its answers.
fn cli(sock: &Path) -> Option<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return None,
        }
    };
    s.write_all(b"prompt\n").ok()?;
    let r = s.try_clone().ok()?;
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = String::new();
        while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            line.clear();
        }
    });
    Some(s)
}

fn command(i: usize) -> &'static [u8] {
    if i.is_multiple_of(2) {
        b"set server be/s1 state maint\n"
    } else {
        b"set server be/s1 state ready\n"
    }
}

struct Result {
    rate: f64,
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn measure(cli: &mut UnixStream, fifo: &mut File, rate_n: usize, lat_n: usize) -> Option<Result> {
    let mut byte = [0u8; 1];
    // Warm-up, and the server starts in a known state (ready).
    for i in 0..20 {
        cli.write_all(command(i)).ok()?;
        fifo.read_exact(&mut byte).ok()?;
    }
    // Rate: a window of outstanding events.
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let (mut sent, mut got) = (0usize, 0usize);
    while got < rate_n {
        while sent < rate_n && sent - got < WINDOW {
            cli.write_all(command(sent)).ok()?;
            sent += 1;
        }
        let n = fifo.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got += n;
    }
    let rate = rate_n as f64 / start.elapsed().as_secs_f64();
    // Latency: one at a time.
    let mut lat = Vec::with_capacity(lat_n);
    for i in 0..lat_n {
        let t = Instant::now();
        cli.write_all(command(i)).ok()?;
        fifo.read_exact(&mut byte).ok()?;
        lat.push(t.elapsed());
    }
    lat.sort();
    let mean = lat.iter().sum::<Duration>() / lat_n.max(1) as u32;
    Some(Result {
        rate,
        p50: lat[lat_n / 2],
        p99: lat[(lat_n * 99 / 100).min(lat_n - 1)],
        mean,
    })
}

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_peer(label: &str, program: &Path, extra: &[&str], rate_n: usize, lat_n: usize) {
    let dir = scratch_dir(&format!("bench_events_{}", label.replace(' ', "_")));
    let sock = dir.join("stats.sock");
    let fifo = dir.join("events.fifo");
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.map(|s| s.success()).unwrap_or(false) {
        println!("| {label} | mkfifo failed | | | |");
        return;
    }
    let port = free_port();
    let written = std::fs::write(dir.join("events.cfg"), config(port, &sock))
        .and_then(|_| std::fs::write(dir.join("events.lua"), SCRIPT));
    if written.is_err() {
        println!("| {label} | cannot write the configuration | | | |");
        return;
    }
    let Some((_server, mut reader)) = start(program, extra, &dir, &fifo) else {
        let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
        println!(
            "| {label} | did not start: {} | | | |",
            log.trim().replace('\n', " / ")
        );
        return;
    };
    let Some(mut c) = cli(&sock) else {
        println!("| {label} | no stats socket | | | |");
        return;
    };
    match measure(&mut c, &mut reader, rate_n, lat_n) {
        Some(r) => println!(
            "| {label} | {:.0} | {:.1} | {:.1} | {:.1} |",
            r.rate,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6,
            r.mean.as_secs_f64() * 1e6
        ),
        None => {
            let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            println!(
                "| {label} | failed: {} | | | |",
                log.trim().replace('\n', " / ")
            );
        }
    }
}

fn main() {
    let rate_n = env_n("EVENTS_RATE_N", 20_000);
    let lat_n = env_n("EVENTS_LAT_N", 2_000).max(1);
    println!(
        "SERVER_STATE events to a Lua subscriber, driven over the stats socket ({rate_n} for the rate, {lat_n} for the latency)\n"
    );
    println!("| server | events/s | latency p50 (µs) | p99 (µs) | mean (µs) |");
    println!("|---|---|---|---|---|");
    // `EVENTS_PEERS=luahost` or `=haproxy` measures one side only.
    let only = std::env::var("EVENTS_PEERS").unwrap_or_default();
    if only.is_empty() || only == "luahost" {
        match std::env::var_os("EVENTS_LUAHOST") {
            Some(p) => run_peer(
                "luahost (EVENTS_LUAHOST)",
                &PathBuf::from(p),
                &[],
                rate_n,
                lat_n,
            ),
            None => {
                let luahost: PathBuf = artifacts().luahost();
                run_peer("luahost", &luahost, &[], rate_n, lat_n);
            }
        }
    }
    if !only.is_empty() && only != "haproxy" {
        return;
    }
    match haproxy_30() {
        Some(h) => run_peer(&h.label, &h.program, &["-db"], rate_n, lat_n),
        None => println!("| haproxy 3.0 | not installed | | | |"),
    }
}
