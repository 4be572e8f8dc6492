//! `luahost run` against the stock `lua5.4`: the same scripts must give the
//! same output, the same first line of error message (after the program name)
//! and the same exit status.

use luahost_suite::{artifacts, require_program, run_with_timeout, scratch_dir, Output};
use std::path::Path;
use std::process::Command;

fn run(program: &Path, dir: &Path, script: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    if program.ends_with("luahost") {
        cmd.arg("run");
    }
    cmd.arg(script).args(args).current_dir(dir);
    // Make both interpreters see the same environment for the search paths.
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
    run_with_timeout(&mut cmd, 30)
}

/// "/usr/bin/lua5.4: x.lua:1: boom" -> "x.lua:1: boom" (lua.c prefixes its
/// argv[0]; luahost prefixes "luahost").
fn without_program(stderr: &str, program: &Path) -> String {
    let first = stderr.lines().next().unwrap_or("");
    let name = if program.ends_with("luahost") {
        "luahost".to_string()
    } else {
        program.display().to_string()
    };
    first
        .strip_prefix(&format!("{name}: "))
        .unwrap_or(first)
        .to_string()
}

/// Scripts and what each checks; each is run by both interpreters.
const CASES: &[(&str, &str)] = &[
    ("ok.lua", "print(select('#', ...), ..., arg[0], #arg, type(arg[-1]))\n"),
    ("runtime_error.lua", "local x = 1\nerror('boom')\n"),
    ("syntax_error.lua", "x = = 1\n"),
    ("missing_module.lua", "require('no_such_module_xyz')\n"),
    ("exit_code.lua", "io.write('bye\\n') os.exit(7)\n"),
    ("exit_false.lua", "os.exit(false)\n"),
    ("error_table.lua", "error({code = 1})\n"),
    ("error_tostring.lua", "error(setmetatable({}, {__tostring = function() return 'custom object' end}))\n"),
    ("error_nonstring_level.lua", "local function f() error('deep', 2) end\nf()\n"),
    ("arith_error.lua", "local t = nil\nreturn t.x\n"),
    ("stdlib.lua", "print(math.type(1), utf8.char(72), string.format('%5.1f', 2.25), coroutine.isyieldable(), package.config:sub(1,1))\n"),
];

#[test]
fn luahost_run_behaves_like_stock_lua() {
    let Some(lua54) = require_program("lua5.4", "compared against luahost run") else {
        return;
    };
    let luahost = artifacts().luahost();
    let dir = scratch_dir("run_script");
    for (name, body) in CASES {
        std::fs::write(dir.join(name), body).expect("write script");
    }
    for (name, _) in CASES {
        let stock = run(&lua54, &dir, name, &["a", "-b", "c d"]);
        let ours = run(&luahost, &dir, name, &["a", "-b", "c d"]);
        assert_eq!(
            ours.status, stock.status,
            "{name}: exit status\nstock: {stock:?}\nours: {ours:?}"
        );
        assert_eq!(ours.stdout, stock.stdout, "{name}: stdout");
        assert_eq!(
            without_program(&ours.stderr, &luahost),
            without_program(&stock.stderr, &lua54),
            "{name}: first line of the error\nstock: {}\nours: {}",
            stock.stderr,
            ours.stderr
        );
        // A runtime error carries a traceback in both.
        assert_eq!(
            ours.stderr.contains("stack traceback:"),
            stock.stderr.contains("stack traceback:"),
            "{name}: traceback presence\nstock: {}\nours: {}",
            stock.stderr,
            ours.stderr
        );
    }
}

#[test]
fn missing_script_is_reported_like_stock_lua() {
    let Some(lua54) = require_program("lua5.4", "compared against luahost run") else {
        return;
    };
    let dir = scratch_dir("run_missing");
    let stock = run(&lua54, &dir, "nope.lua", &[]);
    let luahost = artifacts().luahost();
    let ours = run(&luahost, &dir, "nope.lua", &[]);
    assert_eq!(ours.status, Some(1));
    assert_eq!(ours.status, stock.status);
    assert_eq!(
        without_program(&ours.stderr, &luahost),
        without_program(&stock.stderr, &lua54)
    );
}

#[test]
fn script_error_names_file_and_line() {
    let dir = scratch_dir("run_error_line");
    std::fs::write(dir.join("e.lua"), "\n\nlocal n = nil + 1\n").expect("write");
    let out = run(&artifacts().luahost(), &dir, "e.lua", &[]);
    assert_eq!(out.status, Some(1));
    assert!(
        out.stderr
            .starts_with("luahost: e.lua:3: attempt to perform arithmetic on a nil value"),
        "{}",
        out.stderr
    );
}

#[test]
fn lua_init_and_search_path_environment_are_honoured() {
    let dir = scratch_dir("run_env");
    std::fs::create_dir_all(dir.join("mods")).expect("mkdir");
    std::fs::write(
        dir.join("mods/greeting.lua"),
        "return 'hi from LUA_PATH_5_4'",
    )
    .expect("write");
    std::fs::write(
        dir.join("main.lua"),
        "print(INIT_RAN, (require('greeting')))",
    )
    .expect("write");
    let mut cmd = Command::new(artifacts().luahost());
    cmd.args(["run", "main.lua"])
        .current_dir(&dir)
        .env("LUA_INIT_5_4", "INIT_RAN = 'yes'")
        .env("LUA_PATH_5_4", "./mods/?.lua;;");
    let out = run_with_timeout(&mut cmd, 30);
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stdout, "yes\thi from LUA_PATH_5_4\n");
}

#[test]
fn version_and_help() {
    let mut cmd = Command::new(artifacts().luahost());
    let out = run_with_timeout(cmd.arg("--version"), 30);
    assert_eq!(out.status, Some(0));
    assert!(out.stdout.starts_with("luahost "), "{}", out.stdout);
    assert!(out.stdout.contains("Lua 5.4."), "{}", out.stdout);
    let mut cmd = Command::new(artifacts().luahost());
    let out = run_with_timeout(cmd.arg("--help"), 30);
    assert_eq!(out.status, Some(0));
    for word in ["run", "module"] {
        assert!(
            out.stdout.contains(word),
            "help lists {word}: {}",
            out.stdout
        );
    }
}

/// stderr with the program's own name taken off the front of its first line.
fn stderr_without_program(stderr: &str, program: &Path) -> String {
    let name = if program.ends_with("luahost") {
        "luahost".to_string()
    } else {
        program.display().to_string()
    };
    stderr
        .strip_prefix(&format!("{name}: "))
        .unwrap_or(stderr)
        .to_string()
}

/// Scripts whose error reports (message and whole traceback) and output
/// must be byte for byte lua5.4's: including after the script took away
/// what a message handler written in Lua would need (`debug`, `string`,
/// `tostring`, `xpcall`), and inside `load()` when its reader raises (the
/// handler runs there too).
const TRACEBACK_CASES: &[(&str, &str)] = &[
    ("tb_plain.lua", "local function f() error('plain') end\nf()\n"),
    ("tb_debug_nil.lua", "debug = nil\nerror('after debug = nil')\n"),
    (
        "tb_globals_gone.lua",
        "string, tostring, xpcall = nil, nil, nil\ndebug.traceback = function() return 'replaced' end\nerror('x')\n",
    ),
    ("tb_number.lua", "error(42)\n"),
    ("tb_table.lua", "error({})\n"),
    (
        "tb_tostring.lua",
        "debug = nil\nerror(setmetatable({}, {__tostring = function() return 'custom' end}))\n",
    ),
    (
        "tb_load_reader.lua",
        "debug = nil\nprint(load(function() error('reader failed') end))\n\
         local n = 0\nprint(load(function() n = n + 1 if n == 1 then return 'return 1' end error({}) end))\n\
         error('then boom')\n",
    ),
    (
        "tb_coroutine.lua",
        "debug = nil\nlocal co = coroutine.wrap(function() error('in coroutine') end)\nco()\n",
    ),
];

#[test]
fn error_reports_match_stock_lua_byte_for_byte() {
    let Some(lua54) = require_program("lua5.4", "compared against luahost run") else {
        return;
    };
    let luahost = artifacts().luahost();
    let dir = scratch_dir("run_tracebacks");
    for (name, body) in TRACEBACK_CASES {
        std::fs::write(dir.join(name), body).expect("write script");
    }
    for (name, _) in TRACEBACK_CASES {
        let stock = run(&lua54, &dir, name, &[]);
        let ours = run(&luahost, &dir, name, &[]);
        assert_eq!(ours.status, stock.status, "{name}: exit status");
        assert_eq!(ours.stdout, stock.stdout, "{name}: stdout");
        assert_eq!(
            stderr_without_program(&ours.stderr, &luahost),
            stderr_without_program(&stock.stderr, &lua54),
            "{name}: stderr"
        );
    }
}
