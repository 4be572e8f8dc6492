//! Native modules, end to end, with real processes and real files:
//!
//! * the Rust example module (examples/hello-rs, built by cargo) is
//!   `require`d by `luahost run` and by Debian's stock `lua5.4`, the same
//!   `.so`, through a `lib?.so` cpath pattern and through a rename/symlink;
//! * its error messages are the stock strings, in both interpreters, and
//!   equal those of the C example module and of Lua's own C library;
//! * the C example module (examples/hello-c) loads in both;
//! * Debian's lua-cjson and lua-lpeg work under luahost;
//! * `luahost module check` accepts the good modules and rejects, with a
//!   clear message, fixtures compiled here from small C files.
//!
//! Tests needing `lua5.4`, Debian's modules or a C compiler skip locally when
//! those are missing and fail under CI (see luahost_suite::require_program).

use std::path::{Path, PathBuf};
use std::process::Command;

use luahost_suite::{
    artifacts, free_port, require_file, require_program, run_with_timeout, scratch_dir, under_ci,
    HttpReader, Output, Proxy,
};

const CJSON: &str = "/usr/lib/x86_64-linux-gnu/lua/5.4/cjson.so";
const LPEG: &str = "/usr/lib/x86_64-linux-gnu/lua/5.4/lpeg.so";

/// The cdylib cargo builds from examples/hello-rs: target/<profile>/libhello_rs.so.
fn hello_rs_so() -> PathBuf {
    artifacts().cdylib("hello-rs")
}

/// The C module examples/hello-c's build script puts in target/<profile>/.
fn hello_c_so() -> PathBuf {
    artifacts().file("hello.so")
}

/// An interpreter to run scripts with.
enum Lua {
    Luahost,
    Stock(PathBuf),
}

impl Lua {
    /// luahost always; lua5.4 too when installed (required under CI).
    fn both() -> Vec<Lua> {
        let mut v = vec![Lua::Luahost];
        if let Some(p) = require_program("lua5.4", "the stock interpreter loads the same modules") {
            v.push(Lua::Stock(p));
        }
        v
    }

    fn name(&self) -> &'static str {
        match self {
            Lua::Luahost => "luahost run",
            Lua::Stock(_) => "lua5.4",
        }
    }

    /// Runs `script` (written to `dir/name`) with `dir` as working
    /// directory. The caller's LUA_* variables are cleared so that only
    /// `env` decides the search paths.
    fn run(&self, dir: &Path, name: &str, script: &str, env: &[(&str, String)]) -> Output {
        std::fs::write(dir.join(name), script).expect("write script");
        let mut cmd = match self {
            Lua::Luahost => {
                let mut c = Command::new(artifacts().luahost());
                c.arg("run");
                c
            }
            Lua::Stock(p) => Command::new(p),
        };
        cmd.arg(name).current_dir(dir);
        for var in [
            "LUA_INIT",
            "LUA_INIT_5_4",
            "LUA_PATH",
            "LUA_PATH_5_4",
            "LUA_CPATH",
            "LUA_CPATH_5_4",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_timeout(&mut cmd, 60)
    }
}

fn assert_ran(out: &Output, who: &str) {
    assert_eq!(
        out.status,
        Some(0),
        "{who} failed\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

/// Uses the Rust module; prints the file `require` found it in first.
const HELLO_RS_SCRIPT: &str = r#"
print(package.searchpath("hello_rs", package.cpath))
local hello = require "hello_rs"
print(hello.greet("world"))
print(hello.greet(42))
print(hello.add(2, 3), hello.add(math.maxinteger, 1) == math.mininteger)
local c = hello.counter(10)
print(c:add(), c:add(5), c:get(), tostring(c), type(c), type(rawget(c, 0)))
print(hello.pick(), hello.pick("third"))
print(table.concat(hello.map({1, 2, 3}, function(x) return x * x end), ","))
print(package.loaded.hello_rs == hello, type(hello.version))
"#;

fn hello_rs_expected(found_at: &Path) -> String {
    format!(
        "{}\nhello, world!\nhello, 42!\n5\ttrue\n11\t16\t16\tCounter(16)\ttable\tuserdata\n1\t3\n1,4,9\ntrue\tstring\n",
        found_at.display()
    )
}

#[test]
fn rust_module_loads_through_a_lib_pattern_in_both_interpreters() {
    let so = hello_rs_so();
    let dir = so.parent().expect("profile dir");
    let scratch = scratch_dir("modules-lib-pattern");
    // Cargo's file name as it is: a `lib?.so` pattern finds it. ";;" keeps
    // the default path after ours.
    let cpath = format!("{}/lib?.so;;", dir.display());
    for lua in Lua::both() {
        let out = lua.run(
            &scratch,
            "t.lua",
            HELLO_RS_SCRIPT,
            &[("LUA_CPATH_5_4", cpath.clone())],
        );
        assert_ran(&out, lua.name());
        assert_eq!(out.stdout, hello_rs_expected(&so), "{}", lua.name());
    }
}

#[test]
fn rust_module_loads_renamed_or_symlinked_in_both_interpreters() {
    let so = hello_rs_so();
    let scratch = scratch_dir("modules-renamed");
    // A symlink named as require expects, found through package.cpath set
    // by the script itself...
    let linked = scratch.join("linked");
    std::fs::create_dir_all(&linked).expect("mkdir");
    std::os::unix::fs::symlink(&so, linked.join("hello_rs.so")).expect("symlink");
    // ... and a renamed copy, found through LUA_CPATH_5_4.
    let copied = scratch.join("copied");
    std::fs::create_dir_all(&copied).expect("mkdir");
    std::fs::copy(&so, copied.join("hello_rs.so")).expect("copy");

    let with_cpath = format!(
        "package.cpath = {:?} .. package.cpath\n{HELLO_RS_SCRIPT}",
        format!("{}/?.so;", linked.display())
    );
    for lua in Lua::both() {
        let out = lua.run(&scratch, "symlink.lua", &with_cpath, &[]);
        assert_ran(&out, lua.name());
        assert_eq!(
            out.stdout,
            hello_rs_expected(&linked.join("hello_rs.so")),
            "{}",
            lua.name()
        );

        let env = [("LUA_CPATH_5_4", format!("{}/?.so", copied.display()))];
        let out = lua.run(&scratch, "copy.lua", HELLO_RS_SCRIPT, &env);
        assert_ran(&out, lua.name());
        assert_eq!(
            out.stdout,
            hello_rs_expected(&copied.join("hello_rs.so")),
            "{}",
            lua.name()
        );
    }
}

/// Each case runs as chunk "input" (line 2 is the call) and prints the
/// error's type and text.
const ERRORS_SCRIPT: &str = r#"
local hello = require "hello_rs"
local hello_c = require "hello"
local function try(code)
  local f = assert(load("local hello, hello_c = ...\n" .. code, "=input"))
  local ok, err = pcall(f, hello, hello_c)
  print(ok and "no error" or (type(err) .. ": " .. tostring(err)))
end
-- the Rust module
try("hello.greet(nil)")
try("hello.greet()")
try("hello.greet({})")
try("hello.greet(io.stdout)")
try("hello.add(1, 2.5)")
try("hello.add(1)")
try("hello.pick('fourth')")
try("hello.fail('out of cheese')")
try("local c = hello.counter(); c:add('x')")
try("local c = hello.counter(); c.add(nil)")
try("local c = hello.counter(); local t = {add = c.add}; t:add()")
try("hello.map({1}, function() error('raised inside', 0) end)")
try("hello.map({1}, function() error('raised inside') end)")
-- the C module, for the same mistakes
try("hello_c.greet(nil)")
try("hello_c.greet()")
try("hello_c.add(1, 2.5)")
-- Lua's own C library, for the same kinds of mistakes
try("string.rep()")
try("string.len(io.stdout)")
try("local s = 'x'; s:rep('y')")
try("local f = {seek = io.stdout.seek}; f:seek()")
try("collectgarbage('fourth')")
try("error('out of cheese')")
-- called directly by pcall there is no Lua caller, hence no position
print(select(2, pcall(hello.greet)))
print(select(2, pcall(string.rep)))
"#;

const ERRORS_EXPECTED: &str = "\
string: input:2: bad argument #1 to 'greet' (string expected, got nil)
string: input:2: bad argument #1 to 'greet' (string expected, got no value)
string: input:2: bad argument #1 to 'greet' (string expected, got table)
string: input:2: bad argument #1 to 'greet' (string expected, got FILE*)
string: input:2: bad argument #2 to 'add' (number has no integer representation)
string: input:2: bad argument #2 to 'add' (number expected, got no value)
string: input:2: bad argument #1 to 'pick' (invalid option 'fourth')
string: input:2: out of cheese
string: input:2: bad argument #1 to 'add' (number expected, got string)
string: input:2: bad argument #1 to 'add' (Counter expected, got nil)
string: input:2: calling 'add' on bad self (Counter expected, got table)
string: raised inside
string: input:2: raised inside
string: input:2: bad argument #1 to 'greet' (string expected, got nil)
string: input:2: bad argument #1 to 'greet' (string expected, got no value)
string: input:2: bad argument #2 to 'add' (number has no integer representation)
string: input:2: bad argument #1 to 'rep' (string expected, got no value)
string: input:2: bad argument #1 to 'len' (string expected, got FILE*)
string: input:2: bad argument #1 to 'rep' (number expected, got string)
string: input:2: calling 'seek' on bad self (FILE* expected, got table)
string: input:2: bad argument #1 to 'collectgarbage' (invalid option 'fourth')
string: input:2: out of cheese
bad argument #1 to 'hello_rs.greet' (string expected, got no value)
bad argument #1 to 'string.rep' (string expected, got no value)
";

#[test]
fn toolkit_errors_are_the_stock_strings_in_both_interpreters() {
    let profile = artifacts().dir.clone();
    let scratch = scratch_dir("modules-errors");
    let cpath = format!("{0}/lib?.so;{0}/?.so", profile.display());
    for lua in Lua::both() {
        let out = lua.run(
            &scratch,
            "errors.lua",
            ERRORS_SCRIPT,
            &[("LUA_CPATH_5_4", cpath.clone())],
        );
        assert_ran(&out, lua.name());
        assert_eq!(out.stdout, ERRORS_EXPECTED, "{}", lua.name());
    }
}

/// The field's use: a Rust module first required inside an HTTP service
/// (a coroutine of the proxy's Lua state, recycled across requests), its
/// native functions and methods called per request, objects collected.
#[test]
fn toolkit_module_works_inside_a_proxy_service() {
    let so = hello_rs_so();
    let lib_dir = so.parent().expect("profile dir");
    let port = free_port();
    let lua = format!(
        r#"package.cpath = {cpath:?} .. package.cpath
core.register_service("hello", "http", function(applet)
  local hello = require "hello_rs"
  local c = hello.counter(tonumber(applet.qs) or 0)
  c:add(5)
  local ok, e = pcall(hello.greet)
  local ok2, e2 = pcall(c.add, {{}})
  local body = table.concat({{hello.greet(applet.path), c:get(), hello.add(2, 3), tostring(ok), e, e2}}, "|")
  if tonumber(applet.qs) % 4 == 0 then collectgarbage() end
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
"#,
        cpath = format!("{}/lib?.so;", lib_dir.display())
    );
    let cfg = format!(
        "global\n  lua-load svc.lua\n  nbthread 2\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  http-request use-service lua.hello\n"
    );
    let _p = Proxy::start(
        "modules_in_proxy",
        &[("svc.lua", &lua), ("p.cfg", &cfg)],
        "p.cfg",
        &[],
        &[port],
    );
    // (pcall calls the method directly and it is not in package.loaded, so
    // Lua names it '?', as it names a C method there.)
    let mut c = HttpReader::connect(port);
    for i in 0..40 {
        c.send(format!("GET /r{i}?{i} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes());
        let r = c.read_response(false).expect("a response");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.text(),
            format!(
                "hello, /r{i}!|{}|5|false|bad argument #1 to 'hello_rs.greet' (string expected, got no value)|\
                 bad argument #1 to '?' (Counter expected, got table)",
                i + 5
            )
        );
    }
}

#[test]
fn c_module_loads_in_both_interpreters() {
    let so = hello_c_so();
    let scratch = scratch_dir("modules-c");
    let cpath = format!("{}/?.so", so.parent().expect("profile dir").display());
    let script = r#"
print(package.searchpath("hello", package.cpath))
local hello = require "hello"
print(hello.greet("world"), hello.add(40, 2), hello.language)
"#;
    for lua in Lua::both() {
        let out = lua.run(
            &scratch,
            "c.lua",
            script,
            &[("LUA_CPATH_5_4", cpath.clone())],
        );
        assert_ran(&out, lua.name());
        assert_eq!(
            out.stdout,
            format!("{}\nhello from C, world!\t42\tC\n", so.display()),
            "{}",
            lua.name()
        );
    }
}

#[test]
fn debian_cjson_and_lpeg_work_under_luahost() {
    let (Some(_), Some(_)) = (
        require_file(CJSON, "apt-get install lua-cjson"),
        require_file(LPEG, "apt-get install lua-lpeg"),
    ) else {
        return;
    };
    let scratch = scratch_dir("modules-debian");
    // No LUA_CPATH: luahost's default cpath has Debian's directory.
    let script = r#"
local cjson = require "cjson"
local t = cjson.decode('{"list": [1, 2, 3], "name": "x", "nested": {"ok": true}}')
-- cjson 2.1 decodes every JSON number as a float
print(#t.list, t.list[3], t.name, t.nested.ok, cjson.encode({10, 20}))
local safe = require "cjson.safe"
print(safe.decode("{broken"))
local lpeg = require "lpeg"
local number = lpeg.R("09")^1 / tonumber
local list = lpeg.Ct(number * ("," * number)^0) * -1
local r = list:match("10,20,30")
print(#r, r[1] + r[2] + r[3], list:match("10,,20"))
print(package.searchpath("cjson", package.cpath), package.searchpath("lpeg", package.cpath))
"#;
    let expected = format!(
        "3\t3.0\tx\ttrue\t[10,20]\nnil\tExpected object key string but found invalid token at character 2\n3\t60\tnil\n{CJSON}\t{LPEG}\n"
    );
    let out = Lua::Luahost.run(&scratch, "debian.lua", script, &[]);
    assert_ran(&out, "luahost run");
    assert_eq!(out.stdout, expected);
    // The same script gives the same output in the stock interpreter.
    if let Some(p) = require_program("lua5.4", "reference output") {
        let out = Lua::Stock(p).run(&scratch, "debian.lua", script, &[]);
        assert_ran(&out, "lua5.4");
        assert_eq!(out.stdout, expected);
    }
}

#[test]
fn the_classic_require_path_mistake_and_its_fix() {
    // HAProxy's Lua guide: require("luac/concat") for a module in ./luac/.
    let scratch = scratch_dir("modules-classic-mistake");
    std::fs::create_dir_all(scratch.join("luac")).expect("mkdir");
    std::fs::copy(hello_c_so(), scratch.join("luac/hello.so")).expect("copy");
    let script = r#"
local ok, err = pcall(require, "luac/hello")
print(ok, (err:gsub("\n%s*", " ")))
package.cpath = "./luac/?.so;" .. package.cpath
print(require("hello").greet("fixed"))
"#;
    for lua in Lua::both() {
        let out = lua.run(&scratch, "mistake.lua", script, &[]);
        assert_ran(&out, lua.name());
        let mut lines = out.stdout.lines();
        let first = lines.next().unwrap_or_default();
        // Lua found the file through "./?.so" and then looked for an entry
        // point named after the path.
        assert!(first.starts_with("false\t"), "{first}");
        assert!(
            first.contains("undefined symbol: luaopen_luac/hello"),
            "{}: {first}",
            lua.name()
        );
        assert_eq!(lines.next(), Some("hello from C, fixed!"), "{}", lua.name());
    }
    let out = module_check(&scratch.join("luac/hello.so"));
    assert_eq!(out.status, Some(0), "{}", out.stdout);
    assert!(
        out.stdout.contains("not require(\"luac/hello\"): a path in the name also goes into the entry point's name, luaopen_luac/hello"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("local hello = require(\"hello\")"),
        "{}",
        out.stdout
    );
}

// ---- luahost module check ------------------------------------------------

fn module_check(file: &Path) -> Output {
    let out = run_with_timeout(
        Command::new(artifacts().luahost())
            .args(["module", "check"])
            .arg(file),
        60,
    );
    assert!(
        !out.stderr.contains("panicked"),
        "module check panicked:\n{}",
        out.stderr
    );
    out
}

/// Asserts a failed check that names the problem (one "problem:" line
/// containing `what`).
fn assert_problem(out: &Output, what: &str) {
    assert_eq!(
        out.status,
        Some(1),
        "expected a failed check:\n{}{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("problem: ") && l.contains(what)),
        "no problem line with {what:?}:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("FAILED:"), "{}", out.stdout);
}

fn assert_passes(out: &Output) {
    assert_eq!(
        out.status,
        Some(0),
        "expected a passed check:\n{}{}",
        out.stdout,
        out.stderr
    );
    assert!(!out.stdout.contains("problem:"), "{}", out.stdout);
    assert!(
        out.stdout.contains("OK: the module will load in luahost"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("load test: dlopen succeeded"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Lua library: not included (good)"),
        "{}",
        out.stdout
    );
}

/// Compiles `source` into `dir/<name>.so` with the system C compiler.
fn compile_so(dir: &Path, name: &str, source: &str, extra: &[&str]) -> Option<PathBuf> {
    let cc = require_program("cc", "C fixtures for module check")?;
    let c_file = dir.join(format!("{name}.c"));
    std::fs::write(&c_file, source).expect("write C fixture");
    let so = dir.join(format!("{name}.so"));
    let out = run_with_timeout(
        Command::new(cc)
            .args(["-shared", "-fPIC", "-o"])
            .arg(&so)
            .arg(&c_file)
            .args(extra),
        120,
    );
    assert_eq!(out.status, Some(0), "cc failed for {name}:\n{}", out.stderr);
    Some(so)
}

#[test]
fn module_check_passes_on_the_example_modules() {
    let out = module_check(&hello_rs_so());
    assert_passes(&out);
    assert!(
        out.stdout.contains(
            "luaopen_hello_rs -> require \"hello_rs\" (with \"lib?.so\" in package.cpath)"
        ),
        "{}",
        out.stdout
    );
    // Cargo's lib<name>.so naming gets an explanation, not a failure.
    assert!(
        out.stdout
            .contains("note: libhello_rs.so is cargo's name for a cdylib"),
        "{}",
        out.stdout
    );

    let out = module_check(&hello_c_so());
    assert_passes(&out);
    assert!(
        out.stdout.contains("luaopen_hello -> require \"hello\"\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn module_check_passes_on_debian_modules() {
    let Some(cjson) = require_file(CJSON, "apt-get install lua-cjson") else {
        return;
    };
    let out = module_check(&cjson);
    assert_passes(&out);
    assert!(
        out.stdout.contains("luaopen_cjson -> require \"cjson\"\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("luaopen_cjson_safe -> require \"cjson.safe\""),
        "{}",
        out.stdout
    );
    if let Some(lpeg) = require_file(LPEG, "apt-get install lua-lpeg") {
        assert_passes(&module_check(&lpeg));
    }
}

#[test]
fn module_check_rejects_a_file_without_luaopen() {
    let dir = scratch_dir("check-no-entry");
    let Some(so) = compile_so(
        &dir,
        "helpers",
        "int helper(int x) { return x + 1; }\n",
        &[],
    ) else {
        return;
    };
    let out = module_check(&so);
    assert_problem(&out, "no luaopen_* function is exported");
    assert!(out.stdout.contains("it exports helper"), "{}", out.stdout);
}

#[test]
fn module_check_rejects_a_module_defining_lua_functions() {
    // A stand-in for a module linked with its own Lua: it defines (and so
    // exports) two functions of the Lua API itself.
    let dir = scratch_dir("check-exported-lua");
    let source = "typedef struct lua_State lua_State;\n\
                  void lua_pushnil(lua_State *L) { (void)L; }\n\
                  void luaL_checkversion_(lua_State *L, double v, unsigned long sz) { (void)L; (void)v; (void)sz; }\n\
                  int luaopen_simulated_copy(lua_State *L) { lua_pushnil(L); return 1; }\n";
    let Some(so) = compile_so(&dir, "simulated_copy", source, &[]) else {
        return;
    };
    let out = module_check(&so);
    assert_problem(
        &out,
        "defines 2 Lua library functions (lua_pushnil, luaL_checkversion_)",
    );
    assert!(
        out.stdout.contains("own copy of the Lua library"),
        "{}",
        out.stdout
    );
}

/// liblua5.4.a as luahost-ffi's build script compiled it (position
/// independent, from lua-src) in this target directory.
fn lua_archive() -> Option<PathBuf> {
    let build = artifacts().dir.join("build");
    let found = std::fs::read_dir(&build).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("luahost-ffi-"))
            .map(|e| e.path().join("out/lua/lib/liblua5.4.a"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = format!("no luahost-ffi liblua5.4.a under {}", build.display());
        assert!(!under_ci(), "{why}");
        eprintln!("SKIPPED: {why}");
    }
    found
}

#[test]
fn module_check_rejects_a_module_with_a_private_lua_copy() {
    // The real thing: the whole Lua library linked in, its symbols hidden
    // from the dynamic table (as in a Rust cdylib built with mlua's
    // `vendored` feature).
    let Some(archive) = lua_archive() else { return };
    let dir = scratch_dir("check-private-lua");
    let source = "typedef struct lua_State lua_State;\n\
                  void lua_pushnil(lua_State *L);\n\
                  int luaopen_private_lua(lua_State *L) { lua_pushnil(L); return 1; }\n";
    let whole = format!(
        "-Wl,--whole-archive,{},--no-whole-archive",
        archive.display()
    );
    let Some(so) = compile_so(
        &dir,
        "private_lua",
        source,
        &[&whole, "-Wl,--exclude-libs,ALL", "-lm"],
    ) else {
        return;
    };
    let out = module_check(&so);
    assert_problem(&out, "contains a private copy of the Lua library");
    assert!(
        out.stdout.contains("Lua library: INCLUDED"),
        "{}",
        out.stdout
    );
}

#[test]
fn module_check_rejects_a_file_name_that_does_not_match_the_entry_point() {
    let dir = scratch_dir("check-mismatch");
    let renamed = dir.join("greeting.so");
    std::fs::copy(hello_c_so(), &renamed).expect("copy");
    let out = module_check(&renamed);
    assert_problem(
        &out,
        "the file name does not match the entry point: require \"greeting\" would look for luaopen_greeting, which the file does not export; rename the file to hello.so",
    );
    assert!(
        out.stdout
            .contains("luaopen_hello -> require \"hello\" (only if the file is named hello.so)"),
        "{}",
        out.stdout
    );
    // And stock Lua indeed fails the way the check says.
    let out = Lua::Luahost.run(
        &dir,
        "t.lua",
        "package.cpath = './?.so'\nprint(select(2, pcall(require, 'greeting')):match('undefined symbol: [%w_]+'))",
        &[],
    );
    assert_eq!(
        out.stdout, "undefined symbol: luaopen_greeting\n",
        "{}",
        out.stderr
    );
}

#[test]
fn module_check_rejects_unresolved_symbols() {
    let dir = scratch_dir("check-unresolved");
    let source = "typedef struct lua_State lua_State;\n\
                  void lua_pushnil(lua_State *L);\n\
                  void lua_objlen(lua_State *L, int i); /* Lua 5.1's API, gone in 5.4 */\n\
                  void not_provided_anywhere(void);\n\
                  int luaopen_unresolved(lua_State *L) { not_provided_anywhere(); lua_objlen(L, 1); lua_pushnil(L); return 1; }\n";
    let Some(so) = compile_so(&dir, "unresolved", source, &[]) else {
        return;
    };
    let out = module_check(&so);
    assert_problem(
        &out,
        "undefined symbol not_provided_anywhere is provided neither by luahost nor",
    );
    assert_problem(
        &out,
        "undefined symbol lua_objlen is not in the Lua 5.4 API luahost exports",
    );
    assert!(out.stdout.contains("FAILED: 2 problems"), "{}", out.stdout);
}

#[test]
fn module_check_reports_unreadable_files_without_panicking() {
    let dir = scratch_dir("check-garbage");
    let text = dir.join("text.so");
    std::fs::write(&text, "this is not a shared object\n").expect("write");
    let out = module_check(&text);
    assert_eq!(out.status, Some(2), "{}", out.stdout);
    assert!(
        out.stdout.contains("problem: not a loadable module"),
        "{}",
        out.stdout
    );

    // Every prefix of a real module: a malformed ELF must give an error.
    let data = std::fs::read(hello_c_so()).expect("read hello.so");
    let cut = dir.join("cut.so");
    for len in [4, 16, 64, 200, 1000, data.len() / 2, data.len() - 1] {
        std::fs::write(&cut, &data[..len.min(data.len())]).expect("write");
        let out = module_check(&cut);
        assert_ne!(
            out.status,
            Some(0),
            "a {len}-byte prefix passed:\n{}",
            out.stdout
        );
    }

    let out = module_check(&dir.join("does-not-exist.so"));
    assert_eq!(out.status, Some(2));
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);
}
