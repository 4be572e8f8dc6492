//! The Lua-facing fetches and converters fuzzed through a real luahost
//! process (issue 11, item 10): a Lua action calls every method of
//! `txn.f`, `txn.sf`, `txn.c` and `txn.sc` (every registered fetch and
//! converter, under both spellings) with random argument lists (strings,
//! huge and negative integers, floats, NaN, booleans, tables, functions)
//! and random inputs, each call under `pcall`. The Lua random generator is
//! seeded per request from the case's seed, so a failing request replays.
//!
//! Every request must be answered 200 by the action's `http-request
//! return`, every failed call must raise a string (as HAProxy's do), and
//! the process must stay up without printing "panicked".
//! `FUZZ_SEED=S` / `FUZZ_CASES=N` as for the other fuzz tests.

use luahost_suite::fuzz;
use luahost_suite::{free_port, HttpReader, Proxy};

/// Seeds that once found a bug, run first every time.
const REGRESSIONS: &[u64] = &[];

/// Requests (each one call of every fetch and converter).
const DEFAULT_CASES: u64 = 24;

const ACTION_LUA: &str = r#"
local MAP = ...
local WORDS = {
  "", "0", "1", "-1", "2", "16", "255", "65536", "2147483648",
  "9223372036854775807", "-9223372036854775808", "99999999999999999999",
  "txn.x", "sess.y", "req.z", "txn.", "abc", "a,b", "\\", "(", "[a-", ".*",
  "^(a+)+$", "\\1", "g", "i", "sha1", "sha256", "crc32", "s", "ms", "us",
  "/nonexistent/file", MAP, "::1", "10.0.0.1", "10.0.0.0/8", "1.2.3.4/33",
  "host", "x-n", "cookie", "é", "\0", "%", "%zz",
}

local function word()
  return WORDS[math.random(#WORDS)]
end

local function bytes(max)
  local t = {}
  for i = 1, math.random(0, max) do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

local function value()
  local k = math.random(14)
  if k <= 6 then return word()
  elseif k == 7 then return bytes(40)
  elseif k == 8 then return math.random(-3, 70000)
  elseif k == 9 then
    local v = { math.maxinteger, math.mininteger, 0, -1, 2^53, 2^63, -2^63 }
    return v[math.random(#v)]
  elseif k == 10 then
    local v = { 1.5, -0.0, 1/0, -1/0, 0/0, 1e300, -1e-300 }
    return v[math.random(#v)]
  elseif k == 11 then return math.random(2) == 1
  elseif k == 12 then return {}
  elseif k == 13 then return function() end
  else return nil end
end

local function args()
  local a = {}
  local n = math.random(0, 4)
  for i = 1, n do a[i] = value() end
  return a, n
end

core.register_action("fuzz", { "http-req" }, function(txn)
  local seed = tonumber(txn.sf:req_hdr("x-seed")) or 0
  math.randomseed(seed)
  txn:set_var("txn.x", math.random(-10, 10))
  local calls, failed, bad_errors = 0, 0, 0
  local function try(f, ...)
    calls = calls + 1
    local ok, err = pcall(f, ...)
    if not ok then
      failed = failed + 1
      if type(err) ~= "string" then
        bad_errors = bad_errors + 1
        core.Alert("non-string error: " .. tostring(err))
      end
    end
  end
  for _, obj in ipairs({ txn.f, txn.sf }) do
    for name, f in pairs(getmetatable(obj).__index) do
      if math.random(2) == 1 then
        local a, n = args()
        try(f, obj, table.unpack(a, 1, n))
      end
    end
  end
  for _, obj in ipairs({ txn.c, txn.sc }) do
    for name, f in pairs(getmetatable(obj).__index) do
      if math.random(2) == 1 then
        local a, n = args()
        try(f, obj, value(), table.unpack(a, 1, n))
      end
    end
  end
  txn:set_var("txn.calls", calls)
  txn:set_var("txn.failed", failed)
  txn:set_var("txn.bad", bad_errors)
end)
"#;

#[test]
fn fuzz_lua_fetches_and_converters_with_random_arguments() {
    let port = free_port();
    let cfg = format!(
        "global\n  nbthread 1\n  lua-load fuzz.lua map.map\n\
         \x20 tune.lua.session-timeout 60s\n  tune.lua.burst-timeout 10s\n\
         defaults\n  mode http\n  timeout client 60s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n\
         \x20 http-request lua.fuzz\n\
         \x20 http-request return status 200 content-type text/plain lf-string \"%[var(txn.calls)] %[var(txn.failed)] %[var(txn.bad)]\"\n"
    );
    let map = "abc 1\n10.0.0.0/8 net\n/api api\n42 answer\n";
    let mut proxy = Proxy::start(
        "fuzz_lua_samples",
        &[("fuzz.lua", ACTION_LUA), ("map.map", map), ("f.cfg", &cfg)],
        "f.cfg",
        &[],
        &[port],
    );
    let mut failures = Vec::new();
    for seed in fuzz::seeds("fuzz_lua_samples", DEFAULT_CASES, REGRESSIONS) {
        // Lua integers are signed: the seed's top bit is dropped.
        let lua_seed = seed >> 1;
        let Some(mut c) = HttpReader::try_connect(port, std::time::Duration::from_secs(60)) else {
            failures.push(format!("seed {seed}: cannot connect"));
            break;
        };
        c.send(
            format!(
                "GET /f HTTP/1.1\r\nhost: t\r\nx-seed: {lua_seed}\r\nx-n: 7\r\ncookie: a=b\r\n\r\n"
            )
            .as_bytes(),
        );
        match c.read_response(false) {
            Some(r) if r.status == 200 => {
                let text = r.text();
                let counts: Vec<u64> = text
                    .split(' ')
                    .filter_map(|n| n.trim().parse().ok())
                    .collect();
                match counts[..] {
                    [calls, _, 0] if calls > 0 => {}
                    _ => failures.push(format!("seed {seed}: counts {text:?}")),
                }
            }
            Some(r) => failures.push(format!("seed {seed}: status {} {:?}", r.status, r.text())),
            None => failures.push(format!("seed {seed}: no response")),
        }
        if !proxy.is_running() {
            failures.push(format!("seed {seed}: luahost exited"));
            break;
        }
    }
    let log = proxy.log();
    assert!(!log.contains("panicked"), "luahost panicked:\n{log}");
    assert!(
        failures.is_empty(),
        "replay one: FUZZ_SEED=<seed> cargo test --test fuzz_lua_samples\n{}\n--- luahost log ---\n{log}",
        failures.join("\n")
    );
}
