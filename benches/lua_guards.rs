//! What the hardening of the runtime Lua state costs: `cargo bench --bench lua_guards`.
//!
//! luahost replaces a few standard functions in its proxy states
//! (`coroutine.resume`/`wrap` that pass waits through, budget-aware
//! `string.rep`/`table.concat`, the debug-hook dispatch in the instruction
//! hook). This runs the same Lua loops in two places built from the same Lua
//! library, in the same run, round after round:
//!
//! - `luahost run`: the stock functions (as `lua5.4` has them);
//! - a Lua service in `luahost -f` (one worker; a forced-yield of 100,000,000
//!   instructions so that preemption does not weigh on the comparison, no
//!   budgets): the replaced functions.
//!
//! Each figure is the CPU time (`os.clock`) of the loop divided by its
//! iterations, the median over the rounds. Options (after `--`): `--runs N`
//! (default 7).

use luahost_suite::{artifacts, free_port, http_get, run_with_timeout, Proxy};
use std::collections::BTreeMap;
use std::process::Command;

/// The operations: name, iterations, Lua body of the timed loop (runs
/// `N` times; may use the locals that `SETUP` defines).
const OPS: &[(&str, u64, &str)] = &[
    (
        "table.concat, 10 short strings",
        200_000,
        "s = table.concat(t10, ',')",
    ),
    ("string.rep, 100 bytes", 200_000, "s = string.rep('ab', 50)"),
    (
        "string.format (control: not replaced)",
        200_000,
        "s = string.format('%s-%d', 'ab', 7)",
    ),
    ("coroutine.wrap generator, one step", 300_000, "s = gen()"),
    (
        "coroutine.resume + yield",
        300_000,
        "s = coroutine.resume(co)",
    ),
    (
        "string.rep, 64 MiB of 1 byte",
        4,
        "s = string.rep('x', 64 << 20)",
    ),
    ("table.concat, 64 x 1 MiB", 8, "s = table.concat(t64)"),
];

const SETUP: &str = r#"
local t10 = {"alpha","beta","gamma","delta","epsilon","zeta","eta","theta","iota","kappa"}
local mb = string.rep("y", 1 << 20)
local t64 = {}
for i = 1, 64 do t64[i] = mb end
local gen = coroutine.wrap(function() while true do coroutine.yield(1) end end)
local co = coroutine.create(function() while true do coroutine.yield(1) end end)
"#;

/// A Lua function `run_all()` returning "name\tns\n" lines.
fn script() -> String {
    let mut s = String::from("local function run_all()\n");
    s.push_str(SETUP);
    s.push_str("local out = {}\nlocal s\n");
    for (name, n, body) in OPS {
        s.push_str(&format!(
            "do\n  collectgarbage()\n  local t0 = os.clock()\n  for _ = 1, {n} do {body} end\n  \
             local dt = os.clock() - t0\n  out[#out + 1] = string.format('%s\\t%.1f', {name:?}, dt * 1e9 / {n})\nend\n"
        ));
    }
    s.push_str("s = nil\ncollectgarbage()\nreturn table.concat(out, '\\n')\nend\n");
    s
}

fn parse(text: &str, into: &mut BTreeMap<String, Vec<f64>>) {
    for line in text.lines() {
        if let Some((name, ns)) = line.split_once('\t') {
            if let Ok(v) = ns.trim().parse::<f64>() {
                into.entry(name.to_string()).or_default().push(v);
            }
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    eprintln!("lua_guards bench: building luahost (release)...");
    let luahost = artifacts().luahost();
    let port = free_port();
    let body = script();
    let run_lua = format!("{body}\nprint(run_all())\n");
    let svc_lua = format!(
        "{body}\ncore.register_service('bench', 'http', function(applet)\n  local r = run_all()\n  \
         applet:set_status(200)\n  applet:add_header('content-length', #r)\n  applet:start_response()\n  applet:send(r)\nend)\n"
    );
    let cfg = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\n  tune.lua.forced-yield 100000000\n  \
         tune.lua.service-timeout 0\n  tune.lua.burst-timeout 0\ndefaults\n  mode http\n  timeout client 120s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  http-request use-service lua.bench\n"
    );
    let proxy = Proxy::start(
        "lua-guards-bench",
        &[
            ("svc.lua", &svc_lua),
            ("p.cfg", &cfg),
            ("run.lua", &run_lua),
        ],
        "p.cfg",
        &[],
        &[port],
    );
    let mut stock = BTreeMap::new();
    let mut guarded = BTreeMap::new();
    for round in 0..runs {
        eprintln!("round {}/{runs}", round + 1);
        let out = run_with_timeout(
            Command::new(&luahost)
                .arg("run")
                .arg("run.lua")
                .current_dir(&proxy.dir),
            300,
        );
        assert_eq!(out.status, Some(0), "luahost run failed: {}", out.stderr);
        parse(&out.stdout, &mut stock);
        let r = http_get(port, "/");
        assert_eq!(r.status, 200, "bench service failed: {}", proxy.log());
        parse(&r.text(), &mut guarded);
    }
    println!("ns per operation, median of {runs} rounds (CPU time, os.clock)\n");
    println!("| operation | stock (`luahost run`) | proxy state (replaced functions) | ratio |");
    println!("|---|---:|---:|---:|");
    for (name, _, _) in OPS {
        let s = median(
            stock
                .get_mut(*name)
                .map(|v| v.as_mut_slice())
                .unwrap_or(&mut []),
        );
        let g = median(
            guarded
                .get_mut(*name)
                .map(|v| v.as_mut_slice())
                .unwrap_or(&mut []),
        );
        println!("| {name} | {s:.1} | {g:.1} | {:.2}x |", g / s);
    }
}
