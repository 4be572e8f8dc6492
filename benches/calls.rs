//! The call-cost benchmark: `cargo bench --bench calls`.
//!
//! What a call from Lua into native code costs, per kind of function, under
//! the stock `lua5.4` and under `luahost run`, in one run:
//!
//! * hand-written C (benches/calls/refcalls.c, built by the root build.rs):
//!   a bare function, `check(s, i)` with `luaL_checklstring` +
//!   `luaL_checkinteger`, and a method `o:add(n)` that fetches its object
//!   from `[0]` with `luaL_checkudata`;
//! * plain mlua (benches/callbench, `callbench_mlua`): the same with
//!   `create_function` and typed arguments, and an mlua `UserData` method;
//! * the luahost-modules toolkit (`callbench_kit`): the same as native
//!   functions and a native method (`native_fn!`, `native_method!`), and
//!   through the mlua-based `Module::function`/`ClassBuilder::method` API.
//!
//! Each (interpreter, case) runs in a fresh process: a Lua loop of N calls
//! timed with `os.clock` (CPU time) after a correctness check. Rounds are
//! interleaved so a slow period of the machine hits every case; the table
//! shows medians. "net" subtracts the empty loop (the cost of `for` itself),
//! which is how the ratios are computed.
//!
//! Options (after `--`): `--runs N` (default 9), `--calls N` (default
//! 2000000), `--quick` (3 runs of 200000 calls: a smoke test), `--cases
//! ID,ID,...` (only these cases, e.g. `empty,c_method,kit_method`; ratios
//! whose cases are missing are left out).

use luahost_suite::{artifacts, find_on_path, run_with_timeout, scratch_dir, workspace_root};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The C peers, built by the root package's build.rs.
const REFCALLS_SO: &str = env!("LUAHOST_REFCALLS_SO");

/// One measured case: Lua source for the setup (not timed, must define what
/// the loop uses and check it works) and the timed loop.
struct Case {
    id: &'static str,
    label: &'static str,
    setup: &'static str,
    body: &'static str,
}

const CHECK_LOOP: &str = "for i = 1, N do f(s, i) end";
const BARE_LOOP: &str = "for i = 1, N do f() end";
const METHOD_LOOP: &str = "for i = 1, N do o:add(1) end";

const CASES: &[Case] = &[
    Case {
        id: "empty",
        label: "empty loop (subtracted as \"net\")",
        setup: "",
        body: "for i = 1, N do end",
    },
    Case {
        id: "lua",
        label: "Lua function f(s, i)",
        setup: "local function f(s, i) return #s + i end assert(f('abc', 4) == 7)",
        body: CHECK_LOOP,
    },
    Case {
        id: "c_bare",
        label: "C bare f()",
        setup: "local f = require('refcalls').bare",
        body: BARE_LOOP,
    },
    Case {
        id: "c_check",
        label: "C f(s, i) luaL_checklstring/checkinteger",
        setup: "local f = require('refcalls').check assert(f('abc', 4) == 7)",
        body: CHECK_LOOP,
    },
    Case {
        id: "c_method",
        label: "C method o:add(1), object at [0]",
        setup: "local o = require('refcalls').new(0) assert(o:add(2) == 2)",
        body: METHOD_LOOP,
    },
    Case {
        id: "mlua_bare",
        label: "mlua create_function f()",
        setup: "local f = require('callbench_mlua').bare",
        body: BARE_LOOP,
    },
    Case {
        id: "mlua_check",
        label: "mlua create_function f(s, i)",
        setup: "local f = require('callbench_mlua').check assert(f('abc', 4) == 7)",
        body: CHECK_LOOP,
    },
    Case {
        id: "mlua_method",
        label: "mlua UserData method o:add(1)",
        setup: "local o = require('callbench_mlua').new(0) assert(o:add(2) == 2)",
        body: METHOD_LOOP,
    },
    Case {
        id: "kit_bare",
        label: "toolkit native_fn! f()",
        setup: "local f = require('callbench_kit').bare",
        body: BARE_LOOP,
    },
    Case {
        id: "kit_check",
        label: "toolkit native_fn! f(s, i)",
        setup: "local f = require('callbench_kit').check assert(f('abc', 4) == 7)",
        body: CHECK_LOOP,
    },
    Case {
        id: "kit_method",
        label: "toolkit native_method! o:add(1)",
        setup: "local o = require('callbench_kit').new(0) assert(o:add(2) == 2)",
        body: METHOD_LOOP,
    },
    Case {
        id: "args_check",
        label: "toolkit Module::function f(s, i) (Args, check_lstring)",
        setup: "local f = require('callbench_kit').check_args assert(f('abc', 4) == 7)",
        body: CHECK_LOOP,
    },
    Case {
        id: "args_check_string",
        label: "toolkit Module::function f(s, i) (Args, check_string)",
        setup: "local f = require('callbench_kit').check_args_string assert(f('abc', 4) == 7)",
        body: CHECK_LOOP,
    },
    Case {
        id: "args_method",
        label: "toolkit ClassBuilder::method o:add(1) (Args)",
        setup: "local o = require('callbench_kit').new(0) assert(o:add_args(2) == 2)",
        body: "for i = 1, N do o:add_args(1) end",
    },
];

/// The ratios printed under the table: (label, numerator, denominator).
const RATIOS: &[(&str, &str, &str)] = &[
    ("toolkit f(s, i) / mlua f(s, i)", "kit_check", "mlua_check"),
    ("toolkit f(s, i) / C f(s, i)", "kit_check", "c_check"),
    ("toolkit bare / mlua bare", "kit_bare", "mlua_bare"),
    ("toolkit bare / C bare", "kit_bare", "c_bare"),
    ("toolkit method / mlua method", "kit_method", "mlua_method"),
    ("toolkit method / C method", "kit_method", "c_method"),
    (
        "toolkit (Args) f(s, i) / mlua f(s, i)",
        "args_check",
        "mlua_check",
    ),
    (
        "toolkit (Args, check_string) f(s, i) / mlua f(s, i)",
        "args_check_string",
        "mlua_check",
    ),
    (
        "toolkit (Args) method / mlua method",
        "args_method",
        "mlua_method",
    ),
    (
        "toolkit (Args) method / C method",
        "args_method",
        "c_method",
    ),
];

fn script(case: &Case, calls: usize, cpath_dir: &Path) -> String {
    format!(
        r#"-- Generated by benches/calls.rs: {label}
package.cpath = {cpath:?} .. package.cpath
local clock = os.clock
local N = {calls}
local s = "hello"
{setup}
collectgarbage()
collectgarbage()
local t0 = clock()
{body}
local dt = clock() - t0
print(string.format("CALLS_BENCH %.9f", dt))
"#,
        label = case.label,
        cpath = format!("{}/?.so;", cpath_dir.display()),
        setup = case.setup,
        body = case.body,
    )
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Interp {
    Lua54,
    Luahost,
}

impl Interp {
    fn label(self) -> &'static str {
        match self {
            Interp::Lua54 => "lua5.4",
            Interp::Luahost => "luahost",
        }
    }
}

struct Env {
    dir: PathBuf,
    lua54: Option<PathBuf>,
    luahost: PathBuf,
}

impl Env {
    /// Runs one case once in a fresh process; returns ns per call.
    fn run_once(&self, interp: Interp, case: &Case, calls: usize) -> f64 {
        let file = self.dir.join(format!("{}-{calls}.lua", case.id));
        if !file.exists() {
            std::fs::write(&file, script(case, calls, &self.dir)).expect("write script");
        }
        let mut cmd = match interp {
            Interp::Lua54 => Command::new(self.lua54.as_ref().expect("lua5.4 present")),
            Interp::Luahost => {
                let mut c = Command::new(&self.luahost);
                c.arg("run");
                c
            }
        };
        cmd.arg(&file).current_dir(&self.dir);
        let out = run_with_timeout(&mut cmd, 300);
        let secs: f64 = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("CALLS_BENCH "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{} {}: no result\nstdout: {}\nstderr: {}",
                    interp.label(),
                    case.label,
                    out.stdout,
                    out.stderr
                )
            });
        secs * 1e9 / calls as f64
    }
}

fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

struct Options {
    runs: usize,
    calls: usize,
    cases: Option<Vec<String>>,
}

fn options() -> Options {
    let mut o = Options {
        runs: 9,
        calls: 2_000_000,
        cases: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .unwrap_or_else(|| panic!("{name} takes a positive number"))
        };
        match a.as_str() {
            "--runs" => o.runs = number("--runs"),
            "--calls" => o.calls = number("--calls"),
            "--cases" => {
                let list = args.next().expect("--cases takes a list of case ids");
                o.cases = Some(list.split(',').map(str::to_owned).collect());
            }
            "--quick" => {
                o.runs = 3;
                o.calls = 200_000;
            }
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            other => panic!("unknown option {other} (see the top of benches/calls.rs)"),
        }
    }
    o
}

/// First line of a command's output (stdout or stderr), trimmed.
fn first_line(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

fn machine(env: &Env) -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    vec![
        format!("machine: {cpu}, {cores} CPUs"),
        format!(
            "lua5.4:  {}",
            env.lua54
                .as_ref()
                .and_then(|p| first_line(Command::new(p).arg("-v")))
                .unwrap_or_else(|| "not installed".into())
        ),
        format!(
            "luahost: {}",
            first_line(Command::new(&env.luahost).arg("--version")).unwrap_or_else(|| "?".into())
        ),
        format!(
            "load average at start: {}",
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    ]
}

/// Builds the Rust peers (one cdylib, two entry points) in the profile of
/// this bench, next to the artifacts.
fn build_callbench(profile_dir: &Path) -> PathBuf {
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let target_dir = profile_dir.parent().expect("profile dir has a parent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "callbench", "--target-dir"])
        .arg(target_dir)
        .current_dir(workspace_root());
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("cannot run cargo build");
    assert!(
        out.status.success(),
        "cargo build -p callbench failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    profile_dir.join("libcallbench.so")
}

fn main() {
    let opts = options();
    eprintln!("calls bench: building luahost and the modules...");
    let a = artifacts();
    let callbench = build_callbench(&a.dir);
    let dir = scratch_dir("calls-bench");
    for (link, target) in [
        ("refcalls.so", PathBuf::from(REFCALLS_SO)),
        ("callbench_mlua.so", callbench.clone()),
        ("callbench_kit.so", callbench),
    ] {
        std::os::unix::fs::symlink(target, dir.join(link)).expect("symlink");
    }
    let env = Env {
        dir,
        lua54: find_on_path("lua5.4"),
        luahost: a.luahost(),
    };
    let mut interps = Vec::new();
    if env.lua54.is_some() {
        interps.push(Interp::Lua54);
    } else {
        eprintln!("lua5.4 is not installed: only luahost is measured");
    }
    interps.push(Interp::Luahost);

    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|c| {
            c.id == "empty"
                || opts
                    .cases
                    .as_ref()
                    .is_none_or(|only| only.iter().any(|id| id == c.id))
        })
        .collect();
    let mut samples: BTreeMap<(Interp, &str), Vec<f64>> = BTreeMap::new();
    let total = opts.runs * interps.len() * cases.len();
    let mut done = 0;
    for round in 1..=opts.runs {
        for case in &cases {
            for &interp in &interps {
                let ns = env.run_once(interp, case, opts.calls);
                done += 1;
                eprintln!(
                    "[{done:>4}/{total}] round {round}/{}  {:<8} {:<44} {ns:8.1} ns/call",
                    opts.runs,
                    interp.label(),
                    case.label
                );
                samples.entry((interp, case.id)).or_default().push(ns);
            }
        }
    }
    let med: BTreeMap<(Interp, &str), f64> = samples.iter().map(|(k, v)| (*k, median(v))).collect();
    let net = |interp: Interp, id: &str| -> f64 {
        (med[&(interp, id)] - med[&(interp, "empty")]).max(0.0)
    };

    let mut report = String::new();
    for l in machine(&env) {
        report.push_str(&l);
        report.push('\n');
    }
    report.push_str(&format!(
        "\n{} calls per run, {} runs per row (fresh process each, rounds interleaved), \
         medians; CPU time of the loop (os.clock)\n\n",
        opts.calls, opts.runs
    ));
    let mut header = String::from("| call |");
    let mut rule = String::from("|------|");
    for i in &interps {
        header.push_str(&format!(" {} ns/call | {} net |", i.label(), i.label()));
        rule.push_str("------:|------:|");
    }
    report.push_str(&format!("{header}\n{rule}\n"));
    for case in &cases {
        let mut row = format!("| {} |", case.label);
        for &i in &interps {
            if case.id == "empty" {
                row.push_str(&format!(" {:.1} | |", med[&(i, case.id)]));
            } else {
                row.push_str(&format!(
                    " {:.1} | {:.1} |",
                    med[&(i, case.id)],
                    net(i, case.id)
                ));
            }
        }
        report.push_str(&row);
        report.push('\n');
    }
    report.push_str(
        "\nRatios of net times (targets: toolkit / mlua <= 1.0, toolkit / C <= 1.3):\n\n",
    );
    let mut header = String::from("| ratio |");
    let mut rule = String::from("|-------|");
    for i in &interps {
        header.push_str(&format!(" {} |", i.label()));
        rule.push_str("------:|");
    }
    report.push_str(&format!("{header}\n{rule}\n"));
    for (label, num, den) in RATIOS {
        if !med.contains_key(&(Interp::Luahost, *num))
            || !med.contains_key(&(Interp::Luahost, *den))
        {
            continue;
        }
        let mut row = format!("| {label} |");
        for &i in &interps {
            let d = net(i, den);
            if d > 0.0 {
                row.push_str(&format!(" {:.2} |", net(i, num) / d));
            } else {
                row.push_str(" n/a |");
            }
        }
        report.push_str(&row);
        report.push('\n');
    }
    println!("{report}");
}
