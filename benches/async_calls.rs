//! The cost of one call of a native function that waits:
//! `cargo bench --bench async_calls`.
//!
//! A Lua loop makes N calls of one function; the table gives the wall time
//! per call, median over runs. Peers measured in the same run:
//!
//! * `hello_rs.add(1, 2)`: a plain toolkit function (no waiting), in a
//!   luahost HTTP service;
//! * `async_rs.echo("x")` in the service: the toolkit's async path with a
//!   future that is ready at once, so only the mechanism is measured (spawn
//!   on the module's thread, hand the operation to the host, suspend the
//!   coroutine unless the result is already there, wake, resume, convert);
//! * `async_rs.echo("x")` in `luahost run` and in the stock `lua5.4`: the
//!   blocking path (spawn on the module's thread, wait on a condition
//!   variable);
//! * the host's own calls, in the service: `Socket:getpeername()` (a plain
//!   method) and `Socket:connect()` on a closed socket (an async function
//!   whose future is ready at once: the cost of the host's waiting-call
//!   mechanism, the future's size included).
//!
//! Service rows time one HTTP request making N calls (a request making no
//! call is subtracted); script rows time the whole process with N calls
//! and with none, and subtract.
//!
//! Options (environment): `BENCH_CALLS` (default 20000), `BENCH_RUNS`
//! (default 7).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use luahost_suite::{artifacts, find_on_path, free_port, http_get, scratch_dir, Proxy};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cpath_line() -> String {
    let dir = artifacts().dir.display().to_string();
    format!("package.cpath = '{dir}/lib?.so;' .. package.cpath\n")
}

const SVC: &str = r#"
local h = require "hello_rs"
local a = require "async_rs"
-- A closed socket: connect returns at once, through the host's own async
-- path (mlua's async functions); getpeername is a plain method.
local closed
local function closed_socket()
  if not closed then closed = core.tcp(); closed:close() end
  return closed
end
local calls = {
  add = function() return h.add(1, 2) end,
  echo = function() return a.echo("x") end,
  peer = function() return closed_socket():getpeername() end,
  connect = function() return closed_socket():connect("127.0.0.1:1") end,
}
core.register_service("bench", "http", function(applet)
  local what, n = applet.path:match("^/(%a+)/(%d+)$")
  local f = calls[what]
  for _ = 1, tonumber(n) do f() end
  local body = "ok " .. n
  applet:set_status(200)
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end)
"#;

/// Makes the command that runs a script (luahost run, lua5.4).
type ScriptRunner = Box<dyn FnMut() -> Command>;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_request(port: u16, path: &str) -> Duration {
    let t = Instant::now();
    let r = http_get(port, path);
    let d = t.elapsed();
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    d
}

fn time_script(cmd: &mut dyn FnMut() -> Command, dir: &PathBuf, n: usize) -> Duration {
    let script = format!(
        "{}local a = require 'async_rs'\nfor _ = 1, {n} do a.echo('x') end\n",
        cpath_line()
    );
    let name = format!("s{n}.lua");
    std::fs::write(dir.join(&name), script).expect("write script");
    let mut c = cmd();
    c.arg(&name).current_dir(dir);
    let t = Instant::now();
    let out = c.output().expect("run script");
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn main() {
    let n = env_num("BENCH_CALLS", 20000);
    let runs = env_num("BENCH_RUNS", 7);
    let port = free_port();
    let lua = format!("{}{}", cpath_line(), SVC);
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\n  tune.lua.blocking-calls allow\ndefaults\n  mode http\n  timeout client 60s\n\
         frontend f\n  bind 127.0.0.1:{port}\n  http-request use-service lua.bench\n"
    );
    let _p = Proxy::start(
        "bench_async_calls",
        &[("svc.lua", &lua), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[port],
    );
    let mut rows: Vec<(String, Duration)> = Vec::new();
    for (label, what) in [
        ("hello_rs.add(1, 2), luahost service", "add"),
        ("async_rs.echo(\"x\"), luahost service (async path)", "echo"),
        ("Socket:getpeername(), luahost service (plain method)", "peer"),
        (
            "Socket:connect() on a closed socket, luahost service (host's async path, ready at once)",
            "connect",
        ),
    ] {
        time_request(port, &format!("/{what}/1000"));
        let mut per_call = Vec::new();
        for _ in 0..runs {
            let base = time_request(port, &format!("/{what}/0"));
            let full = time_request(port, &format!("/{what}/{n}"));
            per_call.push(full.saturating_sub(base) / n as u32);
        }
        rows.push((label.to_string(), median(per_call)));
    }
    let dir = scratch_dir("bench_async_scripts");
    let luahost = artifacts().luahost();
    let mut peers: Vec<(&str, ScriptRunner)> = vec![(
        "async_rs.echo(\"x\"), luahost run (blocks)",
        Box::new(move || {
            let mut c = Command::new(&luahost);
            c.arg("run");
            c
        }),
    )];
    if let Some(lua) = find_on_path("lua5.4") {
        peers.push((
            "async_rs.echo(\"x\"), lua5.4 (blocks)",
            Box::new(move || Command::new(&lua)),
        ));
    }
    for (label, mut cmd) in peers {
        let mut per_call = Vec::new();
        for _ in 0..runs {
            let base = time_script(&mut cmd, &dir, 0);
            let full = time_script(&mut cmd, &dir, n);
            per_call.push(full.saturating_sub(base) / n as u32);
        }
        rows.push((label.to_string(), median(per_call)));
    }
    println!("calls per measurement: {n}, runs: {runs} (median)");
    println!("| call | time per call |");
    println!("|---|---:|");
    for (label, d) in rows {
        println!("| {label} | {:.2} µs |", d.as_nanos() as f64 / 1000.0);
    }
}
