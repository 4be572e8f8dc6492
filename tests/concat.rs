//! The `concat` native module as users load it: the real `libconcat.so`,
//! `require`d by real processes — the stock `lua5.4` and `luahost run`.
//! (Memory accounting is measured in-process, with a counting allocator, in
//! concat/tests/memory.rs.)

use luahost_suite::{artifacts, require_program, run_with_timeout, scratch_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The checks, in Lua. Each `case` runs in its own pcall so one failure
/// doesn't hide the others; the script prints "ALL OK" at the end if none
/// failed, and exits with an error otherwise.
const SCRIPT: &str = r##"
package.cpath = assert(arg[1]) .. "/?.so;" .. package.cpath
local concat = require("concat")
local failures = 0
local function case(name, f)
  local ok, err = pcall(f)
  if not ok then
    failures = failures + 1
    print("FAIL " .. name .. ": " .. tostring(err))
  end
end
local function eq(got, want, what)
  if got ~= want then
    local function show(v)
      if type(v) == "string" and #v > 80 then
        return ("<string of %d bytes>"):format(#v)
      end
      return ("%q"):format(v)
    end
    error(("%s: got %s, want %s"):format(what or "value", show(got), show(want)), 2)
  end
end
-- The error message `f` raises, without the "chunk:line: " position.
local function err_of(f)
  local ok, e = pcall(f)
  assert(not ok, "expected an error")
  return (tostring(e):gsub("^[^:]*:%d+: ", ""))
end

case("HAProxy's methods: add and dump", function()
  local b = concat.new()
  b:add("hello")
  b:add(", ")
  b:add("world")
  eq(b:dump(), "hello, world")
end)

case("add takes several arguments and coerces numbers like ..", function()
  local nums = {0, -0.0, 1, -1, 42, 1.5, -2.25, 0.1, 1e100, 1e-300, 2^53, 2^63,
                math.maxinteger, math.mininteger, math.huge, -math.huge, 3.0, 1/3}
  local b = concat.new()
  local want = ""
  for _, n in ipairs(nums) do
    b:add(n, "|")
    want = want .. n .. "|"
  end
  b:add("a", 1, "b", 2.5, "")
  want = want .. "a" .. 1 .. "b" .. 2.5
  eq(b:dump(), want)
end)

case("len, #b and tostring", function()
  local b = concat.new()
  eq(#b, 0, "#b empty")
  eq(b:len(), 0, "len empty")
  b:add("abc", "\0\0", 7)
  eq(#b, 6, "#b")
  eq(b:len(), 6, "b:len()")
  assert(tostring(b):match("^Concat object: 0x%x+$"), tostring(b))
  assert(tostring(b) ~= tostring(concat.new()), "distinct objects print differently")
  eq(getmetatable(b).__name, "Concat", "__name")
end)

case("dump leaves the builder usable", function()
  local b = concat.new()
  b:add("one")
  local s1 = b:dump()
  eq(s1, "one")
  eq(b:dump(), "one", "second dump")
  b:add(" two")
  eq(b:dump(), "one two")
  eq(#b, 7)
  b:add(string.rep("x", 100000))
  eq(b:dump(), "one two" .. string.rep("x", 100000))
  eq(s1, "one", "an earlier result is unchanged")
end)

case("reset empties", function()
  local b = concat.new()
  b:add(string.rep("y", 300000))
  b:dump()
  b:add("z")
  b:reset()
  eq(#b, 0)
  eq(b:dump(), "")
  b:add("after")
  eq(b:dump(), "after")
  b:reset()
  b:reset()
  eq(b:dump(), "")
end)

-- Random pieces against table.concat: empty strings, zero bytes, pieces
-- larger than a chunk (chunks are at most 1 MiB), numbers, many small and
-- a few huge, several per call, dumps in the middle.
case("random pieces equal table.concat", function()
  math.randomseed(20240607)
  local function piece()
    if math.random(400) == 1 then return ("H"):rep(math.random(1000000, 2500000)) end
    local r = math.random(100)
    if r <= 10 then return "" end
    if r <= 20 then return ("\0"):rep(math.random(1, 40)) end
    if r <= 25 then return math.random(-1000000, 1000000) end
    if r <= 30 then return math.random() * 10 ^ math.random(-20, 20) end
    if r <= 40 then return ("m\0%d"):format(r):rep(math.random(100, 3000)) end
    local t = {}
    for i = 1, math.random(1, 24) do t[i] = string.char(math.random(0, 255)) end
    return table.concat(t)
  end
  for round = 1, 40 do
    local b, parts = concat.new(), {}
    local big = round % 8 == 0
    for _ = 1, big and 3000 or math.random(0, 300) do
      local k = math.random(1, 3)
      local args = {}
      for i = 1, k do args[i] = piece() end
      b:add(table.unpack(args, 1, k))
      for i = 1, k do parts[#parts + 1] = args[i] end
      if not big and math.random(50) == 1 then
        eq(b:dump(), table.concat(parts), "dump in the middle, round " .. round)
      end
    end
    local want = table.concat(parts)
    eq(#b, #want, "length, round " .. round)
    eq(b:dump(), want, "content, round " .. round)
  end
end)

case("many small and few huge", function()
  local b, parts = concat.new(), {}
  for i = 1, 200000 do
    local p = tostring(i % 97)
    b:add(p)
    parts[i] = p
  end
  local huge = ("\1\2\3"):rep(1500000)
  b:add(huge, huge)
  parts[#parts + 1] = huge
  parts[#parts + 1] = huge
  eq(b:dump(), table.concat(parts))
end)

case("standard argument errors", function()
  local b = concat.new()
  eq(err_of(function() b:add({}) end), "bad argument #1 to 'add' (string expected, got table)")
  eq(err_of(function() b:add("a", true) end), "bad argument #2 to 'add' (string expected, got boolean)")
  eq(err_of(function() b:add("a", "b", nil) end), "bad argument #3 to 'add' (string expected, got nil)")
  eq(err_of(function() b:add() end), "bad argument #1 to 'add' (string expected, got no value)")
  eq(err_of(function() b:add(print) end), "bad argument #1 to 'add' (string expected, got function)")
  eq(err_of(function() b:add(concat.new()) end), "bad argument #1 to 'add' (string expected, got Concat)")
  local add = b.add
  eq(err_of(function() add({}, "x") end), "bad argument #1 to 'add' (Concat expected, got table)")
  eq(err_of(function() add() end), "bad argument #1 to 'add' (Concat expected, got no value)")
  eq(err_of(function() b.dump(42) end), "bad argument #1 to 'dump' (Concat expected, got number)")
  eq(err_of(function() b.len("s") end), "bad argument #1 to 'len' (Concat expected, got string)")
  eq(err_of(function() b.reset({[0] = io.stdout}) end), "bad argument #1 to 'reset' (Concat expected, got table)")
  local fake = {add = b.add, dump = b.dump}
  eq(err_of(function() fake:add("x") end), "calling 'add' on bad self (Concat expected, got table)")
  eq(err_of(function() fake:dump() end), "calling 'dump' on bad self (Concat expected, got table)")
  eq(b:dump(), "", "failed calls appended nothing")
end)

case("a failed add appends none of its pieces", function()
  local b = concat.new()
  b:add("keep")
  assert(not pcall(b.add, b, "lost", 1, {}))
  assert(not pcall(b.add, b, ("big"):rep(500000), false))
  eq(b:dump(), "keep")
end)

case("a method called on another builder writes to that one", function()
  local b1, b2 = concat.new(), concat.new()
  b1:add("1")
  b1.add(b2, "2")
  local add1 = b1.add
  add1(b2, "3", "4")
  eq(b1:dump(), "1")
  eq(b2:dump(), "234")
  eq(b1.dump(b2), "234")
end)

case("the buffer is hidden and checked", function()
  local b = concat.new()
  eq(type(b[0]), "userdata")
  eq(getmetatable(b[0]), false, "buffer metatable is protected")
  -- A table that merely looks like a builder is refused.
  eq(err_of(function() b.dump({[0] = b}) end), "bad argument #1 to 'dump' (Concat expected, got table)")
end)

case("builders survive collection cycles and finalization", function()
  local keep = {}
  for i = 1, 3000 do
    local b = concat.new()
    b:add(("%d"):format(i), string.rep("-", i % 700))
    if i % 3 == 0 then keep[#keep + 1] = {b, i} end
  end
  collectgarbage()
  collectgarbage()
  for _, e in ipairs(keep) do
    eq(e[1]:dump(), ("%d"):format(e[2]) .. string.rep("-", e[2] % 700))
  end
end)

case("builders work inside coroutines", function()
  local co = coroutine.wrap(function(b)
    for i = 1, 3 do b:add(i) coroutine.yield() end
    return b:dump()
  end)
  local b = concat.new()
  co(b) co() co()
  eq(co(), "123")
end)

case("the guide's workload", function()
  local total = 0
  for i = 1, 1000 do
    local b = concat.new()
    for j = 1, 1000 do b:add("0123456789") end
    local s = b:dump()
    total = total + #s
    if i == 1 then eq(s, ("0123456789"):rep(1000)) end
  end
  eq(total, 10000000)
end)

if failures > 0 then error(failures .. " case(s) failed") end
print("ALL OK")
"##;

/// A scratch directory where `require("concat")` finds the built module
/// (cargo names it libconcat.so).
fn module_dir(name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    std::os::unix::fs::symlink(artifacts().cdylib("concat"), dir.join("concat.so"))
        .expect("symlink concat.so");
    std::fs::write(dir.join("concat_test.lua"), SCRIPT).expect("write script");
    dir
}

fn check_output(who: &str, out: luahost_suite::Output) {
    assert!(
        out.status == Some(0) && out.stdout.contains("ALL OK"),
        "{who} failed (status {:?}):\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

fn run_script(dir: &Path, mut cmd: Command) -> luahost_suite::Output {
    cmd.arg(dir.join("concat_test.lua"))
        .arg(dir)
        .current_dir(dir);
    run_with_timeout(&mut cmd, 300)
}

#[test]
fn works_in_stock_lua54() {
    let Some(lua) = require_program("lua5.4", "the module must load in the stock interpreter")
    else {
        return;
    };
    let dir = module_dir("concat-lua54");
    check_output("lua5.4", run_script(&dir, Command::new(lua)));
}

#[test]
fn works_in_luahost() {
    let dir = module_dir("concat-luahost");
    let mut cmd = Command::new(artifacts().luahost());
    cmd.arg("run");
    check_output("luahost run", run_script(&dir, cmd));
}

/// The shipped module must not carry its own Lua (two Lua copies in one
/// process corrupt each other's state); it exports its entry point.
#[test]
fn shared_object_defines_no_lua_symbols() {
    let Some(nm) = require_program("nm", "inspecting the module's dynamic symbols") else {
        return;
    };
    let so = artifacts().cdylib("concat");
    let out = run_with_timeout(
        Command::new(nm).arg("-D").arg("--defined-only").arg(&so),
        60,
    );
    assert_eq!(out.status, Some(0), "nm failed: {}", out.stderr);
    let names: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(names.contains(&"luaopen_concat"), "exports: {names:?}");
    let lua: Vec<&&str> = names
        .iter()
        .filter(|n| n.starts_with("lua_") || n.starts_with("luaL_"))
        .collect();
    assert!(
        lua.is_empty(),
        "{} defines Lua API symbols: {lua:?}",
        so.display()
    );
}
