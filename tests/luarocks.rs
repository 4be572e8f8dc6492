//! LuaRocks packaging of native modules, done the way a user does it:
//!
//! * `luarocks make` (Debian's luarocks, offline) of a module's rockspec into
//!   a temporary tree: examples/hello-rs (cargo via the `command` build type),
//!   examples/hello-c (LuaRocks' builtin C build) and a copy of
//!   examples/rock-template taken out of the repository as a user would;
//! * the `.so` lands in the tree under its `require` name (not cargo's
//!   `lib<name>.so`);
//! * after `eval "$(luarocks path --tree T --lua-version 5.4)"` and nothing
//!   else, `require` finds it from the stock `lua5.4`, from `luahost run`
//!   and from the proxy's Lua states (shared and per-thread) serving real
//!   requests on 127.0.0.1;
//! * the module crates declare the `lua54` feature LuaRocks' `rust-mlua`
//!   build backend passes to cargo.
//!
//! The cargo builds reuse the workspace's target directory (CARGO_TARGET_DIR)
//! so they are incremental. Without luarocks, the Lua 5.4 headers
//! (liblua5.4-dev) or lua5.4 the tests print SKIPPED, and fail under CI=true
//! (see luahost_suite::require_program).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use luahost_suite::{
    artifacts, free_port, require_file, require_program, run_with_timeout, scratch_dir,
    workspace_root, HttpReader, Output, Proxy,
};

/// The variables through which Lua takes its search paths and init code;
/// cleared for every child so that only `luarocks path` sets them.
const LUA_VARS: [&str; 6] = [
    "LUA_INIT",
    "LUA_INIT_5_4",
    "LUA_PATH",
    "LUA_PATH_5_4",
    "LUA_CPATH",
    "LUA_CPATH_5_4",
];

/// The external programs these tests drive.
struct Tools {
    luarocks: PathBuf,
    lua: PathBuf,
}

fn tools() -> Option<Tools> {
    let luarocks = require_program("luarocks", "modules are packaged and installed as rocks")?;
    // LuaRocks checks for the Lua headers before any build (liblua5.4-dev).
    require_file(
        "/usr/include/lua5.4/lua.h",
        "LuaRocks needs the Lua 5.4 headers",
    )?;
    let lua = require_program("lua5.4", "the stock interpreter loads the installed rocks")?;
    Some(Tools { luarocks, lua })
}

fn assert_ran(out: &Output, what: &str) {
    assert_eq!(
        out.status,
        Some(0),
        "{what} failed\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

/// The target directory the tests and their artifacts live in.
fn target_dir() -> PathBuf {
    artifacts()
        .dir
        .parent()
        .expect("the profile directory has a parent")
        .to_path_buf()
}

/// PATH with the directory of the cargo running the tests first, so that the
/// rockspec's `cargo build` is the same cargo.
fn path_with_cargo() -> OsString {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .and_then(|c| c.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).expect("PATH entries contain no separator")
}

/// `luarocks make ROCKSPEC` in `src` into `tree`, offline, with cargo
/// building in the workspace's target directory. `env` adds variables.
fn luarocks_make(tools: &Tools, src: &Path, rockspec: &str, tree: &Path, env: &[(&str, &str)]) {
    let mut cmd = Command::new(&tools.luarocks);
    cmd.arg("make")
        .arg("--tree")
        .arg(tree)
        .arg("--lua-version")
        .arg("5.4")
        .arg(rockspec)
        .current_dir(src)
        .env("PATH", path_with_cargo())
        .env("CARGO_TARGET_DIR", target_dir())
        // Everything must come from what is already here.
        .env("CARGO_NET_OFFLINE", "true");
    for var in LUA_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    // The first release build of a fresh checkout compiles mlua.
    let out = run_with_timeout(&mut cmd, 900);
    assert_ran(
        &out,
        &format!("luarocks make {rockspec} in {}", src.display()),
    );
}

/// The module directory of a tree: where `require` must find the `.so`.
fn tree_lib_dir(tree: &Path) -> PathBuf {
    tree.join("lib/lua/5.4")
}

/// Runs `program args...` in `dir` from a shell that first did
/// `eval "$(luarocks path --tree TREE --lua-version 5.4)"`, as a user's
/// shell does; the LUA_* variables are otherwise unset.
fn run_after_luarocks_path(
    tools: &Tools,
    tree: &Path,
    dir: &Path,
    program: &Path,
    args: &[&str],
) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"luarocks=$1 tree=$2; shift 2; eval "$("$luarocks" path --tree "$tree" --lua-version 5.4)" && exec "$@""#)
        .arg("sh")
        .arg(&tools.luarocks)
        .arg(tree)
        .arg(program)
        .args(args)
        .current_dir(dir);
    for var in LUA_VARS {
        cmd.env_remove(var);
    }
    run_with_timeout(&mut cmd, 60)
}

/// Runs `script` (written to `dir/name`) with lua5.4 and with `luahost run`
/// after `luarocks path`, and returns both outputs, which must be equal.
fn run_in_both(tools: &Tools, tree: &Path, dir: &Path, name: &str, script: &str) -> String {
    std::fs::write(dir.join(name), script).expect("write script");
    let stock = run_after_luarocks_path(tools, tree, dir, &tools.lua, &[name]);
    assert_ran(&stock, "lua5.4");
    let luahost = run_after_luarocks_path(tools, tree, dir, &artifacts().luahost(), &["run", name]);
    assert_ran(&luahost, "luahost run");
    assert_eq!(
        stock.stdout, luahost.stdout,
        "lua5.4 and luahost run differ"
    );
    stock.stdout
}

/// The variables `luarocks path --tree TREE --lua-version 5.4` exports
/// (`export NAME='VALUE'` lines).
fn luarocks_path_vars(tools: &Tools, tree: &Path) -> Vec<(String, String)> {
    let mut cmd = Command::new(&tools.luarocks);
    cmd.arg("path")
        .arg("--tree")
        .arg(tree)
        .arg("--lua-version")
        .arg("5.4");
    for var in LUA_VARS {
        cmd.env_remove(var);
    }
    let out = run_with_timeout(&mut cmd, 60);
    assert_ran(&out, "luarocks path");
    let vars: Vec<(String, String)> = out
        .stdout
        .lines()
        .filter_map(|line| {
            let (name, value) = line.strip_prefix("export ")?.split_once('=')?;
            let value = value.strip_prefix('\'')?.strip_suffix('\'')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    assert!(
        vars.iter().any(|(n, _)| n == "LUA_CPATH") && vars.iter().any(|(n, _)| n == "LUA_PATH"),
        "unexpected `luarocks path` output:\n{}",
        out.stdout
    );
    vars
}

/// examples/hello-rs installed once per test process into a tree of its own
/// (None when the tools are missing outside CI).
fn hello_rs_tree() -> Option<&'static (Tools, PathBuf)> {
    static TREE: OnceLock<Option<(Tools, PathBuf)>> = OnceLock::new();
    TREE.get_or_init(|| {
        let tools = tools()?;
        let tree = scratch_dir("luarocks-hello-rs").join("tree");
        luarocks_make(
            &tools,
            &workspace_root().join("examples/hello-rs"),
            "hello-rs-dev-1.rockspec",
            &tree,
            &[],
        );
        Some((tools, tree))
    })
    .as_ref()
}

/// Uses the Rust example module; prints the file `require` found first.
const HELLO_RS_SCRIPT: &str = r#"
print(package.searchpath("hello_rs", package.cpath))
local hello = require "hello_rs"
print(hello.greet("rocks"), hello.add(2, 3))
local c = hello.counter(10)
c:add(5)
print(tostring(c))
print(pcall(hello.greet))
"#;

#[test]
fn hello_rs_rock_installs_under_its_require_name_and_loads_in_lua54_and_luahost_run() {
    let Some((tools, tree)) = hello_rs_tree() else {
        return;
    };
    let lib = tree_lib_dir(tree);
    let installed = lib.join("hello_rs.so");
    assert!(installed.is_file(), "{} missing", installed.display());
    assert!(
        !lib.join("libhello_rs.so").exists(),
        "cargo's file name must not be what is installed"
    );

    // Run away from any hello_rs.so (the default "./?.so" pattern).
    let dir = scratch_dir("luarocks-hello-rs-run");
    let out = run_in_both(tools, tree, &dir, "t.lua", HELLO_RS_SCRIPT);
    assert_eq!(
        out,
        format!(
            "{}\nhello, rocks!\t5\nCounter(15)\nfalse\tbad argument #1 to 'hello_rs.greet' (string expected, got no value)\n",
            installed.display()
        )
    );

    // The installed file's name matches its entry point: no problem, no
    // note about cargo's `lib` prefix.
    let mut check = Command::new(artifacts().luahost());
    check.arg("module").arg("check").arg(&installed);
    let out = run_with_timeout(&mut check, 60);
    assert_ran(&out, "luahost module check");
    assert!(
        out.stdout
            .contains("luaopen_hello_rs -> require \"hello_rs\"")
            && !out.stdout.contains("note:"),
        "{}",
        out.stdout
    );
}

/// A service answering with the installed module; `which` names the state.
fn service_script(which: &str) -> String {
    format!(
        r#"
local hello = require "hello_rs"
local found = package.searchpath("hello_rs", package.cpath)
core.register_service("{which}", "http", function(applet)
  local body = hello.greet("{which}") .. " " .. found
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
"#
    )
}

#[test]
fn hello_rs_rock_loads_in_the_proxy_shared_and_per_thread_states() {
    let Some((tools, tree)) = hello_rs_tree() else {
        return;
    };
    let vars = luarocks_path_vars(tools, tree);
    let (shared_port, per_thread_port) = (free_port(), free_port());
    let config = format!(
        "global\n  lua-load shared.lua\n  lua-load-per-thread per_thread.lua\n  nbthread 2\n\
         defaults\n  mode http\n  timeout client 10s\n\
         frontend shared\n  bind 127.0.0.1:{shared_port}\n  http-request use-service lua.shared\n\
         frontend per_thread\n  bind 127.0.0.1:{per_thread_port}\n  http-request use-service lua.per_thread\n"
    );
    let proxy = Proxy::start_with(
        "luarocks-proxy",
        &[
            ("shared.lua", &service_script("shared")),
            ("per_thread.lua", &service_script("per_thread")),
            ("p.cfg", &config),
        ],
        "p.cfg",
        &[],
        &[shared_port, per_thread_port],
        |cmd| {
            for var in LUA_VARS {
                cmd.env_remove(var);
            }
            for (k, v) in &vars {
                cmd.env(k, v);
            }
        },
    );
    let installed = tree_lib_dir(tree).join("hello_rs.so");
    for (port, which) in [(shared_port, "shared"), (per_thread_port, "per_thread")] {
        // Two requests: with two threads, both per-thread states may answer.
        for _ in 0..2 {
            let mut c = HttpReader::connect(port);
            c.send(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
            let Some(r) = c.read_response(false) else {
                panic!("no response from {which}; luahost's log:\n{}", proxy.log());
            };
            assert_eq!(r.status, 200, "{which}");
            assert_eq!(r.text(), format!("hello, {which}! {}", installed.display()));
        }
    }
}

#[test]
fn hello_c_rock_builds_with_the_builtin_backend_and_loads() {
    let Some(tools) = tools() else {
        return;
    };
    // LuaRocks' builtin backend writes its objects next to the sources:
    // build a copy, not the checkout.
    let base = scratch_dir("luarocks-hello-c");
    let src = base.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let example = workspace_root().join("examples/hello-c");
    for file in ["hello.c", "hello-c-dev-1.rockspec"] {
        std::fs::copy(example.join(file), src.join(file)).expect("copy example");
    }
    let tree = base.join("tree");
    luarocks_make(&tools, &src, "hello-c-dev-1.rockspec", &tree, &[]);

    let installed = tree_lib_dir(&tree).join("hello.so");
    let out = run_in_both(
        &tools,
        &tree,
        &base,
        "t.lua",
        "print(package.searchpath('hello', package.cpath))\n\
         local hello = require 'hello'\nprint(hello.greet('rocks'), hello.add(2, 3))\n",
    );
    assert_eq!(
        out,
        format!("{}\nhello from C, rocks!\t5\n", installed.display())
    );
}

/// A directory outside the repository (so that cargo does not take the copy
/// for a member of this workspace), removed when dropped.
struct OutsideDir(PathBuf);

impl OutsideDir {
    fn new(name: &str) -> OutsideDir {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        OutsideDir(dir)
    }
}

impl Drop for OutsideDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

#[test]
fn rock_template_copied_out_of_the_repository_builds_installs_and_loads() {
    let Some(tools) = tools() else {
        return;
    };
    // What a user does: copy the template and point its toolkit dependency
    // at their luahost checkout.
    let outside = OutsideDir::new("luahost-rock-template");
    let src = outside.0.join("my-module");
    let template = workspace_root().join("examples/rock-template");
    copy_dir(&template, &src);
    let _ = std::fs::remove_dir_all(src.join("target"));
    let manifest = std::fs::read_to_string(src.join("Cargo.toml")).expect("read Cargo.toml");
    let toolkit_dep = "luahost-modules = { path = \"../../modules\" }";
    assert!(manifest.contains(toolkit_dep), "{manifest}");
    let modules = workspace_root().join("modules");
    let manifest = manifest.replace(
        toolkit_dep,
        &format!(
            "luahost-modules = {{ path = {:?} }}",
            modules.display().to_string()
        ),
    );
    std::fs::write(src.join("Cargo.toml"), manifest).expect("write Cargo.toml");
    // The workspace's lock file pins the versions already here (offline), and
    // the workspace's release debug setting makes cargo reuse its compiled
    // dependencies: only the toolkit and the template are compiled.
    std::fs::copy(workspace_root().join("Cargo.lock"), src.join("Cargo.lock")).expect("copy lock");

    let tree = outside.0.join("tree");
    luarocks_make(
        &tools,
        &src,
        "my-module-dev-1.rockspec",
        &tree,
        &[("CARGO_PROFILE_RELEASE_DEBUG", "line-tables-only")],
    );
    let lib = tree_lib_dir(&tree);
    assert!(lib.join("my_module.so").is_file());
    assert!(!lib.join("libmy_module.so").exists());

    let out = run_in_both(
        &tools,
        &tree,
        &outside.0,
        "t.lua",
        "local m = require 'my_module'\nprint(m.greet('rocks'), m.version)\n",
    );
    assert_eq!(out, "hello from my_module, rocks!\t0.1.0\n");
}

/// `cargo build --release --lib --features FEATURE` in a module crate, as
/// LuaRocks' rust-mlua backend runs it (its `--target-dir` aside: here the
/// workspace's, to build incrementally).
fn cargo_build_with_feature(krate: &Path, feature: &str) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--lib",
        "--quiet",
        "--features",
        feature,
    ])
    .arg("--target-dir")
    .arg(target_dir())
    .current_dir(krate)
    .env("CARGO_NET_OFFLINE", "true");
    run_with_timeout(&mut cmd, 900)
}

#[test]
fn module_crates_declare_the_lua54_feature_of_the_rust_mlua_backend() {
    for krate in ["examples/hello-rs", "examples/rock-template"] {
        let dir = workspace_root().join(krate);
        let out = cargo_build_with_feature(&dir, "lua54");
        assert_ran(&out, &format!("cargo build --features lua54 in {krate}"));
        // Another Lua version is refused by cargo before anything is built:
        // the toolkit makes Lua 5.4 modules only.
        let out = cargo_build_with_feature(&dir, "lua53");
        assert_ne!(out.status, Some(0), "{krate} accepted lua53");
        assert!(
            out.stderr.contains("lua53"),
            "{krate}: unexpected error:\n{}",
            out.stderr
        );
    }
}
