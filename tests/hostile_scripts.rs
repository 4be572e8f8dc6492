//! Hostile or careless scripts against preemption, budgets, the memory cap
//! and process stop (issue 11): real luahost processes on loopback, bounded
//! counts and times.

use luahost_suite::{free_port, http_get, require_file, scratch_dir, HttpReader, Proxy};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A global section with one shared-state file, one worker, and `extra`
/// lines; then one frontend per (port, service) pair.
fn config(extra: &str, fronts: &[(u16, &str)]) -> String {
    let mut c = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\n{extra}\ndefaults\n  mode http\n  timeout client 30s\n"
    );
    for (i, (port, svc)) in fronts.iter().enumerate() {
        c.push_str(&format!(
            "frontend f{i}\n  bind 127.0.0.1:{port}\n  http-request use-service lua.{svc}\n"
        ));
    }
    c
}

/// Lua: answers `body` with a 200.
const REPLY: &str = r#"
local function reply(applet, body)
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end
core.register_service("hello", "http", function(applet) reply(applet, "hello") end)
"#;

/// Times a GET; returns (status, elapsed).
fn timed_get(port: u16, path: &str) -> (u16, Duration) {
    let t = Instant::now();
    let r = http_get(port, path);
    (r.status, t.elapsed())
}

#[test]
fn script_hooks_cannot_switch_off_preemption() {
    let (spin, hook, hello, routes) = (free_port(), free_port(), free_port(), free_port());
    let lua = format!(
        r#"{REPLY}
core.register_service("routes", "http", function(applet)
  -- Every way a script might reach the stock debug.sethook gives luahost's.
  local mine, bad = debug.sethook, {{}}
  local function check(name, f) if f ~= nil and f ~= mine then bad[#bad + 1] = name end end
  -- The stock C function has no upvalue; luahost's (a Rust function) has.
  if debug.getinfo(mine, "u").nups == 0 then bad[#bad + 1] = "stock" end
  check("package.loaded", package.loaded.debug.sethook)
  check("require", require("debug").sethook)
  for i = 1, 10 do
    local n, v = debug.getupvalue(mine, i)
    if n == nil then break end
    if type(v) == "function" then bad[#bad + 1] = "upvalue " .. i end
  end
  for k, v in pairs(debug.getregistry()) do
    if type(v) == "table" and rawget(v, "sethook") ~= nil then check("registry." .. tostring(k), rawget(v, "sethook")) end
  end
  reply(applet, #bad == 0 and "none" or table.concat(bad, ","))
end)
core.register_service("spin", "http", function(applet)
  if applet.path == "/own" then
    debug.sethook(function() end, "l")
  else
    debug.sethook()
  end
  while true do end
end)
hits = 0
core.register_service("hook", "http", function(applet)
  local left_over = debug.gethook()
  local before = hits
  local lines = 0
  debug.sethook(function(event, line)
    -- Called on the hooked thread, as the stock library does.
    if event == "line" and type(line) == "number" and debug.getinfo(2, "S").short_src == "svc.lua" then
      lines = lines + 1
    end
  end, "l")
  local x = 0
  for i = 1, 10 do x = x + i end
  local f, mask, count = debug.gethook()
  debug.sethook()
  local counts = 0
  debug.sethook(function(event) if event == "count" then counts = counts + 1 end end, "", 100)
  for i = 1, 20000 do x = x + i end
  debug.sethook()
  if applet.path == "/leave" then
    -- Left set on the host coroutine, which goes back to the pool.
    debug.sethook(function() hits = hits + 1 end, "l")
  end
  reply(applet, string.format("left=%s lines=%s hook=%s mask=%s counts=%s stale=%d",
    tostring(left_over), tostring(lines > 5), type(f), mask, tostring(counts >= 200), hits - before))
end)
"#
    );
    let cfg = config(
        "  tune.lua.service-timeout 1500",
        &[
            (spin, "spin"),
            (hook, "hook"),
            (hello, "hello"),
            (routes, "routes"),
        ],
    );
    let p = Proxy::start(
        "hardening_hooks",
        &[("svc.lua", &lua), ("p.cfg", &cfg)],
        "p.cfg",
        &[],
        &[spin, hook, hello, routes],
    );
    assert_eq!(http_get(routes, "/").text(), "none");

    // The script's own hooks are called, and debug.gethook answers them.
    let r = http_get(hook, "/");
    assert_eq!(
        r.text(),
        "left=nil lines=true hook=function mask=l counts=true stale=0"
    );
    // A hook left on a pooled coroutine does not follow into the next
    // requests (the same coroutine serves them: one worker, one at a time).
    http_get(hook, "/leave");
    for _ in 0..3 {
        assert_eq!(
            http_get(hook, "/").text(),
            "left=nil lines=true hook=function mask=l counts=true stale=0"
        );
    }

    // Hook switched off, or replaced by the script's own: the loop is still
    // cut at its budget, and the worker serves others meanwhile.
    for path in ["/off", "/own"] {
        let spinner = std::thread::spawn(move || timed_get(spin, path));
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..5 {
            assert_eq!(http_get(hello, "/").text(), "hello");
        }
        let (status, took) = spinner.join().expect("spinner");
        assert_eq!(status, 500, "{path}");
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_secs(8),
            "{path}: {took:?}"
        );
    }
    let log = p.wait_log("execution timeout", 5);
    assert_eq!(
        log.matches("Lua applet http 'spin': execution timeout")
            .count(),
        2,
        "{log}"
    );
}

#[test]
fn sigterm_ends_the_process_when_a_worker_is_stuck_in_lua() {
    let port = free_port();
    // Lua runs a hook function with hooks disabled: a loop inside the
    // script's own hook is out of every budget's reach.
    let lua = r#"
core.register_service("wedge", "http", function(applet)
  core.Alert("wedging")
  debug.sethook(function() while true do end end, "l")
  local x = 1
end)
"#;
    let cfg = config("", &[(port, "wedge")]);
    let mut p = Proxy::start(
        "hardening_stop",
        &[("svc.lua", lua), ("p.cfg", &cfg)],
        "p.cfg",
        &[],
        &[port],
    );
    let mut c = HttpReader::connect(port);
    c.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n");
    // The request has reached the service (the next Lua line wedges it).
    let log = p.wait_log("wedging", 20);
    assert!(log.contains("wedging"), "{log}");
    let t = Instant::now();
    p.signal("TERM");
    // Grace period (10 s) plus the watchdog's margin (2 s), and slack.
    let code = p.wait_exit(20);
    assert_eq!(code, Some(1), "{}", p.log());
    assert!(t.elapsed() >= Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(
        p.log().contains("still busy"),
        "the watchdog says why: {}",
        p.log()
    );
}

/// A service that tries every way of loading a binary chunk at runtime.
const BYTECODE: &str = r#"
local dumped = string.dump(function() return "ran" end)
-- At start-up, binary chunks load.
body_loaded = load(dumped)() == "ran"
core.register_service("bc", "http", function(applet)
  local out = {}
  local function try(name, f, err)
    out[#out + 1] = name .. "=" .. (f and tostring(f()) or tostring(err))
  end
  try("load", load(dumped))
  try("loadmode", load(dumped, "=x", "b"))
  local pieces = { dumped:sub(1, 5), dumped:sub(6) }
  try("reader", load(function() return table.remove(pieces, 1) end))
  try("loadfile", loadfile("chunk.luac"))
  local ok, v = pcall(dofile, "chunk.luac")
  try("dofile", ok and function() return v end, v)
  package.path = "./?.luac;" .. package.path
  local ok, v = pcall(require, "chunk")
  try("require", ok and function() return v end, v)
  try("text", load("return 'text'"))
  out[#out + 1] = "body=" .. tostring(body_loaded)
  reply(applet, table.concat(out, "\n"))
end)
"#;

#[test]
fn binary_chunks_are_refused_at_runtime_unless_allowed() {
    let msg = "attempt to load a binary chunk at runtime (refused by tune.lua.bytecode; \
               'tune.lua.bytecode allow' permits it)";
    for allow in [false, true] {
        let port = free_port();
        let dir = scratch_dir("hardening_bytecode_chunk");
        let chunk = dir.join("chunk.luac");
        // A binary chunk written by the stock string.dump of lua5.4.
        let made = Command::new("lua5.4")
            .arg("-e")
            .arg(format!(
                "local f = assert(io.open('{}', 'wb')) f:write(string.dump(function() return 'ran' end)) f:close()",
                chunk.display()
            ))
            .status();
        if !made.is_ok_and(|s| s.success()) {
            if require_file("/usr/bin/lua5.4", "writing a binary chunk").is_none() {
                return;
            }
            panic!("lua5.4 could not write a binary chunk");
        }
        let lua = format!("{REPLY}{BYTECODE}");
        let extra = if allow {
            "  tune.lua.blocking-calls allow\n  tune.lua.bytecode allow"
        } else {
            "  tune.lua.blocking-calls allow"
        };
        let cfg = config(extra, &[(port, "bc")]);
        let name = if allow {
            "hardening_bytecode_allow"
        } else {
            "hardening_bytecode_refuse"
        };
        let p = Proxy::start(
            name,
            &[("svc.lua", &lua), ("p.cfg", &cfg)],
            "p.cfg",
            &[],
            &[port],
        );
        // Read at request time, from the proxy's directory.
        std::fs::copy(&chunk, p.dir.join("chunk.luac")).expect("copy chunk");
        let text = http_get(port, "/").text();
        let lines: Vec<&str> = text.lines().collect();
        if allow {
            assert_eq!(
                lines,
                [
                    "load=ran",
                    "loadmode=ran",
                    "reader=ran",
                    "loadfile=ran",
                    "dofile=ran",
                    "require=ran",
                    "text=text",
                    "body=true"
                ],
                "{text}"
            );
        } else {
            let req =
                format!("require=error loading module 'chunk' from file './chunk.luac':\n\t{msg}");
            let expected = [
                format!("load={msg}"),
                format!("loadmode={msg}"),
                format!("reader={msg}"),
                format!("loadfile={msg}"),
                format!("dofile={msg}"),
            ];
            for (i, e) in expected.iter().enumerate() {
                assert_eq!(lines[i], e, "{text}");
            }
            assert!(text.contains(&req), "{text}");
            assert!(text.ends_with("text=text\nbody=true"), "{text}");
        }
    }
}

/// core.msleep/core.yield inside coroutines the script creates.
const SLEEPERS: &str = r#"
core.register_service("nested", "http", function(applet)
  local outer = coroutine.wrap(function()
    local inner = coroutine.create(function(a)
      core.msleep(50)
      local b = coroutine.yield(a * 2)
      core.msleep(50)
      return b + 1
    end)
    local _, x = coroutine.resume(inner, 5)
    core.msleep(50)
    local _, y = coroutine.resume(inner, 10)
    coroutine.yield(x)
    return y
  end)
  reply(applet, outer() .. " " .. outer())
end)
core.register_service("co", "http", function(applet)
  local t0 = core.now()
  local f = coroutine.wrap(function(a)
    core.msleep(150)
    local b = coroutine.yield(a + 1)
    core.yield()
    return b * 2
  end)
  local r1 = table.pack(f(1))
  local r2 = f(5)
  local co = coroutine.create(function(x) core.msleep(100) return "done", x end)
  local r3 = table.pack(coroutine.resume(co, "arg"))
  local t1 = core.now()
  local ms = (t1.sec - t0.sec) * 1000 + (t1.usec - t0.usec) // 1000
  local seen = {}
  for i = 1, r3.n do seen[#seen + 1] = type(r3[i]) == "userdata" and "USERDATA" or tostring(r3[i]) end
  local body = string.format("wrap=%d:%s,%s resume=%s status=%s",
    r1.n, tostring(r1[1]), tostring(r2), table.concat(seen, ","), coroutine.status(co))
  if applet.path == "/timed" then body = body .. " slept=" .. tostring(ms >= 250) end
  reply(applet, body)
end)
"#;

#[test]
fn core_sleeps_inside_script_coroutines_wait_and_leak_nothing() {
    let port = free_port();
    let lua = format!("{REPLY}{SLEEPERS}");
    // A tiny forced-yield: the hook fires inside the script's coroutines too.
    let cfg = config("  tune.lua.forced-yield 10", &[(port, "co")]);
    let _p = Proxy::start(
        "hardening_sleepers",
        &[("svc.lua", &lua), ("p.cfg", &cfg)],
        "p.cfg",
        &[],
        &[port],
    );
    assert_eq!(
        http_get(port, "/timed").text(),
        "wrap=1:2,10 resume=true,done,arg status=dead slept=true"
    );
    // Waits two levels down, in a coroutine.create inside a wrap generator.
    let nested = free_port();
    let cfg = config("", &[(nested, "nested")]);
    let _n = Proxy::start(
        "hardening_sleepers_nested",
        &[("svc.lua", &lua), ("p.cfg", &cfg)],
        "p.cfg",
        &[],
        &[nested],
    );
    let t = Instant::now();
    assert_eq!(http_get(nested, "/").text(), "10 11");
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn core_sleeps_inside_wrap_generators_match_haproxy() {
    // HAProxy 3.0 returns the wrap generator's values too (it skips the
    // sleep instead of waiting: luahost waits, lua-api.md). The
    // coroutine.create case differs (HAProxy hands resume nothing and leaves
    // the coroutine suspended), so only the wrap values are compared.
    let Some(haproxy) = require_file("/work/shared/anchors/haproxy3", "HAProxy 3.0") else {
        return;
    };
    let port = free_port();
    let lua = format!("{REPLY}{SLEEPERS}");
    let dir = scratch_dir("hardening_sleepers_haproxy");
    std::fs::write(dir.join("svc.lua"), &lua).expect("write");
    std::fs::write(
        dir.join("h.cfg"),
        format!(
            "global\n  lua-load svc.lua\ndefaults\n  mode http\n  timeout client 5s\n  timeout connect 5s\n  timeout server 5s\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  http-request use-service lua.co\n"
        ),
    )
    .expect("write");
    let mut child = Command::new(haproxy)
        .args(["-f", "h.cfg", "-db"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    let deadline = Instant::now() + Duration::from_secs(10);
    while HttpReader::try_connect(port, Duration::from_millis(200)).is_none() {
        assert!(Instant::now() < deadline, "haproxy did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let theirs = http_get(port, "/").text();
    let _ = child.kill();
    let _ = child.wait();

    let port = free_port();
    let cfg = config("", &[(port, "co")]);
    let _p = Proxy::start(
        "hardening_sleepers_luahost",
        &[("svc.lua", &lua), ("p.cfg", &cfg)],
        "p.cfg",
        &[],
        &[port],
    );
    let ours = http_get(port, "/").text();
    let wrap = |s: &str| s.split(' ').next().unwrap_or_default().to_string();
    assert_eq!(
        wrap(&ours),
        wrap(&theirs),
        "ours: {ours}; haproxy: {theirs}"
    );
    assert!(!theirs.contains("USERDATA") && !ours.contains("USERDATA"));
}

/// VmRSS of a process, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn budgets_reach_long_c_calls_and_the_memory_comes_back() {
    let (port, hello) = (free_port(), free_port());
    // Each request first spends most of its budget in Lua, then makes one
    // C call that would run (and allocate) far past it.
    let lua = format!(
        r#"{REPLY}
core.register_service("long", "http", function(applet)
  local function ms()
    local t = core.now()
    return t.sec * 1000 + t.usec // 1000
  end
  local t0 = ms()
  while ms() - t0 < 150 do end
  local s
  if applet.path == "/rep" then
    s = string.rep("x", 1 << 30)
  elseif applet.path == "/repsep" then
    s = string.rep("ab", 1 << 28, ",")
  else
    local piece = string.rep("y", 1 << 20)
    local parts = {{}}
    for i = 1, 1024 do parts[i] = piece end
    s = table.concat(parts)
  end
  -- Reached only when the C call finished within the budget.
  reply(applet, tostring(#s))
end)
core.register_service("small", "http", function(applet)
  reply(applet, string.rep("ab", 3, ",") .. " " .. table.concat({{1, "x", 2.5}}, "-")
    .. " " .. #string.rep("z", 3 << 20) .. " " .. tostring(pcall(string.rep)))
end)
"#
    );
    let cfg = config(
        "  tune.lua.service-timeout 400\n  tune.lua.burst-timeout 0",
        &[(port, "long"), (hello, "small")],
    );
    let p = Proxy::start(
        "hardening_long_calls",
        &[("svc.lua", &lua), ("p.cfg", &cfg)],
        "p.cfg",
        &[],
        &[port, hello],
    );
    // Small and ordinary calls behave as the stock functions.
    assert_eq!(
        http_get(hello, "/").text(),
        "ab,ab,ab 1-x-2.5 3145728 false"
    );
    for path in ["/rep", "/repsep", "/concat"] {
        let (status, took) = timed_get(port, path);
        assert_eq!(status, 500, "{path}");
        assert!(took < Duration::from_secs(5), "{path}: {took:?}");
        // The buffers went back to the system.
        let rss = rss_kb(p.pid());
        assert!(rss < 400 * 1024, "{path}: RSS {rss} kB after the stop");
        assert_eq!(http_get(hello, "/").status, 200);
    }
    let log = p.log();
    assert_eq!(
        log.matches("Lua applet http 'long': execution timeout")
            .count(),
        3,
        "{log}"
    );
}

/// Pure Lua: results and errors of coroutine.resume/wrap, as lines. The
/// same text runs under stock lua5.4 and in a luahost service.
const COROUTINE_SEMANTICS: &str = r##"
local out = {}
local function add(...) out[#out + 1] = table.concat({...}, " | ") end
add(tostring(select(2, pcall(coroutine.wrap(function() error("boom") end)))))
add(tostring(select(2, pcall(function() return coroutine.wrap(function() error("boom") end)() end))))
add(tostring(select(2, pcall(function() local x = coroutine.wrap(function() error("boom") end)() return x end))))
add(type(select(2, pcall(coroutine.wrap(function() error({}) end)))))
local f = coroutine.wrap(function() return 1 end)
f()
add(tostring(select(2, pcall(f))))
add(tostring(select(2, pcall(coroutine.wrap, 1))))
add(tostring(select(2, pcall(coroutine.resume, 1))))
local co = coroutine.create(function(a, b) local c = coroutine.yield(a + b) return c, "end" end)
add(tostring(coroutine.resume(co, 1, 2)), select(2, coroutine.resume(co, "x")))
add(tostring(coroutine.resume(co)), tostring(select(2, coroutine.resume(co))), coroutine.status(co))
local g = coroutine.wrap(function(...) coroutine.yield(select("#", ...)) coroutine.yield(nil, nil) end)
add(tostring(g(1, nil, nil)), tostring(select("#", g())), tostring(select("#", g())))
local closed = false
local h = coroutine.wrap(function() local _ <close> = setmetatable({}, {__close = function() closed = true end}) error("x") end)
add(tostring(select(2, pcall(h))), tostring(closed))
local results = table.concat(out, "\n")
"##;

#[test]
fn coroutine_wrappers_behave_as_the_stock_functions() {
    let Some(lua54) = require_file("/usr/bin/lua5.4", "the stock reference") else {
        return;
    };
    let dir = scratch_dir("hardening_coroutine_semantics");
    std::fs::write(
        dir.join("s.lua"),
        format!("{COROUTINE_SEMANTICS}\nio.write(results)\n"),
    )
    .expect("write");
    let stock = Command::new(lua54)
        .arg("s.lua")
        .current_dir(&dir)
        .output()
        .expect("lua5.4");
    let stock = String::from_utf8_lossy(&stock.stdout).into_owned();
    assert!(stock.contains("s.lua:4: boom"), "{stock}");

    let port = free_port();
    // The same chunk, named s.lua, run by the service at runtime: positions
    // in the messages match (a long string skips its first newline, hence
    // the extra one).
    let lua = format!(
        "{REPLY}\nlocal chunk = [==[\n{COROUTINE_SEMANTICS} return results]==]\n\
         core.register_service('sem', 'http', function(applet) reply(applet, load(chunk, '@s.lua')()) end)\n"
    );
    let cfg = config("", &[(port, "sem")]);
    let _p = Proxy::start(
        "hardening_coroutine_semantics_luahost",
        &[("svc.lua", &lua), ("p.cfg", &cfg)],
        "p.cfg",
        &[],
        &[port],
    );
    assert_eq!(http_get(port, "/").text(), stock);
}
