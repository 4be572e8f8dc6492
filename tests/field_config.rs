//! Configurations as people publish them (issue 12, items 1-4): process
//! keywords, tunings accepted without effect, `.if` blocks, and the Lua
//! keywords of HAProxy 2.9-3.4, checked with real luahost processes and,
//! for `-c`, against HAProxy 3.0's own `-c` when it is installed.

use luahost_suite::{
    artifacts, check_config, free_port, http_get, require_haproxy_30, run_with_timeout,
    HaproxyPeer, Output, Proxy,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `luahost -c -f cfg` in `dir`.
fn check(dir: &Path, cfg: &str) -> Output {
    check_config(&artifacts().luahost(), dir, cfg)
}

fn haproxy3() -> Option<HaproxyPeer> {
    require_haproxy_30("the reference for `-c` and for the keywords' effects")
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// Global lines luahost accepts or refuses exactly as HAProxy 3.0's `-c`
/// does (`true`: accepted). The error line is checked to name file:line.
const SAME_AS_HAPROXY3: &[(&str, bool)] = &[
    ("daemon", true),
    ("daemon x", false),
    ("master-worker", true),
    ("master-worker x", false),
    ("user nobody", true),
    ("user no-such-user-xyz", false),
    ("uid 65534", true),
    ("uid x", true),
    ("gid -1", true),
    ("grace 1s x", true),
    ("gid 65534", true),
    ("chroot /var/empty", true),
    ("chroot", false),
    ("pidfile /tmp/luahost-field.pid", true),
    ("setenv A b", true),
    ("setenv A", false),
    ("presetenv A b", true),
    ("unsetenv A", true),
    ("resetenv", true),
    ("resetenv HOME PATH", true),
    ("crt-base /tmp", true),
    ("ca-base /tmp", true),
    ("crt-base", false),
    ("hard-stop-after 10s", true),
    ("hard-stop-after", false),
    ("grace 1s", true),
    ("grace x", false),
    ("node lb-1.example", true),
    ("node", false),
    ("description the front proxy", true),
    ("description", false),
    ("cpu-map auto:1/1-2 0-1", true),
    ("cpu-map 1/1 0", true),
    ("cpu-map 1/x 0", false),
    ("cpu-map auto:1/all 0-1", false),
    ("cpu-map", false),
    ("tune.idle-pool.shared on", true),
    ("tune.idle-pool.shared x", false),
    ("tune.fd.edge-triggered on", false),
    (
        "expose-experimental-directives\n  tune.fd.edge-triggered on",
        true,
    ),
    ("tune.maxpollevents 100", true),
    ("busy-polling", true),
    ("busy-polling x", false),
    (
        "nbthread 2\n  noepoll\n  nosplice\n  tune.sched.low-latency on",
        true,
    ),
    ("tune.lua.log.loggers on", true),
    ("tune.lua.log.loggers maybe", false),
    ("tune.lua.log.stderr auto", true),
    ("tune.lua.log.stderr", false),
    ("tune.maxpollevnts 1", false),
    ("tune.bogus.keyword 1", false),
];

#[test]
fn global_keywords_pass_and_fail_check_like_haproxy3() {
    let dir = luahost_suite::scratch_dir("field_keywords");
    let reference = haproxy3();
    for (i, (lines, accepted)) in SAME_AS_HAPROXY3.iter().enumerate() {
        let name = format!("k{i}.cfg");
        std::fs::write(dir.join(&name), format!("global\n  {lines}\n")).expect("write");
        let out = check(&dir, &name);
        assert_eq!(
            out.status == Some(0),
            *accepted,
            "luahost -c on {lines:?}: {out:?}"
        );
        if !accepted {
            let last = 1 + lines.lines().count();
            assert!(
                out.stderr
                    .contains(&format!("[ALERT] parsing [{name}:{last}]")),
                "{lines:?}: {}",
                out.stderr
            );
        }
        if let Some(h) = &reference {
            let (ok, stderr) = h.accepts(&dir, &name);
            assert_eq!(ok, *accepted, "haproxy3 -c on {lines:?}: {stderr}");
        }
    }
}

/// `.if` files: (body after `global`, accepted, text expected on stderr).
const COND_CASES: &[(&str, bool, &str)] = &[
    (
        ".if version_atleast(3.0) && version_before(3.1) && feature(LUA) && !feature(NOPE)\n.notice \"api 3.0\"\n.else\n.alert \"wrong version\"\n.endif",
        true,
        "'api 3.0'.",
    ),
    (".if defined (HOME)\n.endif", false, "unexpected character '(' at the end of conditional expression 'defined (HOME)' in '.if' at position 9:\n  .if defined (HOME)\n              ^"),
    (".if streq(a)\n.endif", false, "missing arguments (got 1/2)"),
    (".if 1\n.else\n.else\n.endif", false, "'.else' after '.else' is not permitted."),
    (".endif", false, "lone '.endif' with no matching '.if'."),
    (".if 1", false, "non-terminated '.if' block."),
    (".if 0\n  bogus keyword here\n.endif", true, ""),
    (".if 1\n  bogus keyword here\n.endif", false, "unknown keyword 'bogus'"),
    (".if 0\n.if (((\n.endif\n.endif", true, ""),
    (".alert \"stop here\"\n  maxconn 10", false, "'stop here'."),
    (".warning \"careful\"", true, "parsing [c.cfg:2] : 'careful'."),
    (".notice two words", false, "Unexpected argument 'words' for '.notice'."),
    (".foo", false, "unknown directive '.foo'."),
    (".if 0x10 && 010 && !0 && -1\n.notice \"ints\"\n.endif", true, "'ints'."),
    (".if 0\n.elif 0\n.elif 1\n.notice \"elif2\"\n.else\n.alert \"no\"\n.endif", true, "'elif2'."),
];

#[test]
fn conditional_blocks_pass_and_fail_check_like_haproxy3() {
    let dir = luahost_suite::scratch_dir("field_cond");
    let reference = haproxy3();
    for (body, accepted, expected) in COND_CASES {
        std::fs::write(dir.join("c.cfg"), format!("global\n{body}\n")).expect("write");
        let out = check(&dir, "c.cfg");
        assert_eq!(out.status == Some(0), *accepted, "{body:?}: {out:?}");
        assert!(out.stderr.contains(expected), "{body:?}: {}", out.stderr);
        if let Some(h) = &reference {
            let (ok, stderr) = h.accepts(&dir, "c.cfg");
            assert_eq!(ok, *accepted, "haproxy3 -c on {body:?}: {stderr}");
            // HAProxy writes "parsing [f:l]: msg"; luahost "parsing [f:l] : msg".
            let theirs = stderr.replace("]: ", "] : ");
            let first = expected.lines().next().unwrap_or_default();
            assert!(theirs.contains(first), "haproxy3 on {body:?}: {stderr}");
        }
    }
}

const ENV_SERVICE: &str = r#"
core.register_service("env", "http", function(applet)
  local info = core.get_info()
  local body = tostring(os.getenv("GREETING")) .. " " .. tostring(os.getenv("GONE"))
     .. " " .. tostring(os.getenv("PICKED")) .. " " .. tostring(info.node)
     .. " " .. tostring(info.description)
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
core.register_service("other", "http", function(applet)
  applet:set_status(200)
  applet:add_header("content-length", 5)
  applet:start_response()
  applet:send("other")
end)
"#;

/// `setenv` and friends apply in order, are seen by `${VAR}` and `.if` on
/// the lines below, and by `os.getenv` in Lua; `.if` picks the service.
#[test]
fn setenv_reaches_lua_and_if_chooses_the_configuration() {
    for (greeting, expected) in [("hello", "hello nil yes lb-1 front door"), ("bye", "other")] {
        let port = free_port();
        let config = format!(
            "global\n  nbthread 1\n  node lb-1\n  description front door\n  lua-load svc.lua\n  setenv GREETING {greeting}\n  presetenv GREETING ignored\n  setenv GONE x\n  unsetenv GONE\n  setenv PICKED \"${{GREETING}}\"\n.if streq(\"$PICKED\",hello)\n  setenv PICKED yes\n.endif\n\
             defaults\n  mode http\n  timeout client 10s\n\
             frontend fe\n  bind 127.0.0.1:{port}\n\
             .if streq(\"$GREETING\",hello) && !defined(GONE)\n  http-request use-service lua.env\n.else\n  http-request use-service lua.other\n.endif\n"
        );
        let p = Proxy::start(
            "field_setenv",
            &[("svc.lua", ENV_SERVICE), ("p.cfg", &config)],
            "p.cfg",
            &[],
            &[port],
        );
        let r = http_get(port, "/");
        assert_eq!(
            (r.status, r.text()),
            (200, expected.to_string()),
            "{}",
            p.log()
        );
        // HAProxy 3.0 on the same files answers the same.
        if let Some(h) = haproxy3() {
            assert_eq!(
                haproxy3_get(&h, &p.dir, &config, port),
                (200, expected.to_string()),
                "haproxy3"
            );
        }
    }
}

/// HAProxy 3.0's answer to `GET /` on luahost's `config` (written in
/// `dir`), moved from `port` to a port of its own and given the connect and
/// server timeouts HAProxy wants.
fn haproxy3_get(h: &HaproxyPeer, dir: &Path, config: &str, port: u16) -> (u16, String) {
    let hport = free_port();
    let hcfg = config
        .replace(&port.to_string(), &hport.to_string())
        .replace(
            "timeout client 10s",
            "timeout client 10s\n  timeout connect 5s\n  timeout server 10s",
        );
    std::fs::write(dir.join("h.cfg"), hcfg).expect("write");
    let _haproxy = h.start(dir, "h.cfg", &[hport]);
    let r = http_get(hport, "/");
    (r.status, r.text())
}

#[test]
fn tunings_without_effect_are_listed_once_at_start_up() {
    let dir = luahost_suite::scratch_dir("field_no_effect");
    std::fs::write(
        dir.join("n.cfg"),
        "global\n  tune.idle-pool.shared on\n  tune.maxpollevents 100\n  tune.idle-pool.shared off\n  busy-polling\n",
    )
    .expect("write");
    let out = check(&dir, "n.cfg");
    assert_eq!(out.status, Some(0), "{out:?}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("accepted without effect"))
        .collect();
    assert_eq!(
        lines,
        ["[NOTICE] config : accepted without effect: tune.idle-pool.shared (n.cfg:2), tune.maxpollevents (n.cfg:3), busy-polling (n.cfg:5)"],
        "{}",
        out.stderr
    );
}

/// `master-worker no-exit-on-failure` keeps a master without workers
/// running: luahost refuses it (HAProxy 3.0 accepts it), saying why.
#[test]
fn master_worker_no_exit_on_failure_is_refused_with_the_reason() {
    let dir = luahost_suite::scratch_dir("field_mworker");
    std::fs::write(
        dir.join("m.cfg"),
        "global\n  master-worker no-exit-on-failure\n",
    )
    .expect("write");
    let out = check(&dir, "m.cfg");
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(
            "[ALERT] parsing [m.cfg:2] : 'master-worker no-exit-on-failure' is not supported by luahost"
        ),
        "{}",
        out.stderr
    );
}

const HELLO: &str = r#"
core.register_service("hello", "http", function(applet)
  applet:set_status(200)
  applet:add_header("content-length", 5)
  applet:start_response()
  applet:send("hello")
end)
"#;

fn web_cfg(port: u16, global: &str) -> String {
    format!(
        "global\n  nbthread 1\n  lua-load svc.lua\n{global}\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  http-request use-service lua.hello\n"
    )
}

fn pid_from(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn wait_gone(pid: u32, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        // A zombie (reaped by init later) counts as gone.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if !alive(pid) || state.contains(") Z ") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// `daemon` and `-D`: the command returns 0 once the daemon serves; the
/// pid file holds the daemon's pid; a failing bind still exits 1 with the
/// message on the terminal.
#[test]
fn daemon_detaches_writes_its_pid_and_reports_bind_errors() {
    for (global, args) in [
        ("  daemon\n  pidfile d.pid", vec![]),
        ("", vec!["-D", "-p", "d.pid"]),
    ] {
        let dir = luahost_suite::scratch_dir("field_daemon");
        let port = free_port();
        std::fs::write(dir.join("svc.lua"), HELLO).expect("write");
        std::fs::write(dir.join("d.cfg"), web_cfg(port, global)).expect("write");
        let mut cmd = Command::new(artifacts().luahost());
        cmd.args(["-f", "d.cfg"]).args(&args).current_dir(&dir);
        let out = run_with_timeout(&mut cmd, 30);
        assert_eq!(out.status, Some(0), "{out:?}");
        let pid = pid_from(&dir.join("d.pid")).expect("pid file written");
        assert!(alive(pid));
        let r = http_get(port, "/");
        assert_eq!((r.status, r.text()), (200, "hello".to_string()));
        // The daemon leads its own session (setsid).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(
            fields.get(3).copied(),
            Some(pid.to_string().as_str()),
            "{stat}"
        );
        kill(pid, "TERM");
        assert!(wait_gone(pid, 10), "daemon stopped on SIGTERM");
        assert!(!dir.join("d.pid").exists(), "pid file removed at exit");
    }

    // The port is taken: the daemon's bind fails, the command exits 1.
    let dir = luahost_suite::scratch_dir("field_daemon_busy");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    std::fs::write(dir.join("svc.lua"), HELLO).expect("write");
    std::fs::write(dir.join("d.cfg"), web_cfg(port, "  daemon")).expect("write");
    let mut cmd = Command::new(artifacts().luahost());
    cmd.args(["-f", "d.cfg"]).current_dir(&dir);
    let out = run_with_timeout(&mut cmd, 30);
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(out.stderr.contains("cannot bind"), "{}", out.stderr);
}

fn status_field(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .map(|l| {
            l[name.len()..]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// `user nobody`: the listeners are bound as root (a port below 1024 would
/// work), then the process runs as nobody; `chroot` after the Lua files are
/// read, so a script sees the chroot's files at `/`.
#[test]
fn user_and_chroot_apply_after_binding_and_loading() {
    if !running_as_root() {
        eprintln!("SKIPPED: privilege drop needs root");
        return;
    }
    let port = free_port();
    let lua = r#"
local init_uid = "?"
-- Init functions run before the chroot and the privilege drop (HAProxy's
-- order): this one still sees the real /proc and runs as root.
core.register_init(function()
  local f = io.open("/proc/self/status")
  for line in f:lines() do
    init_uid = line:match("^Uid:%s+(%d+)") or init_uid
  end
  f:close()
end)
core.register_service("hello", "http", function(applet)
  local f = io.open("/marker.txt")
  local body = (f and f:read("a") or "no marker") .. "|" .. init_uid
  if f then f:close() end
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
"#;
    let dir = luahost_suite::scratch_dir("field_user");
    let config = web_cfg(
        port,
        &format!(
            "  user nobody\n  gid 65534\n  chroot {}\n  tune.lua.blocking-calls allow",
            dir.display()
        ),
    );
    std::fs::write(dir.join("marker.txt"), "inside the chroot").expect("write");
    let p = Proxy::start(
        "field_user",
        &[
            ("svc.lua", lua),
            ("u.cfg", &config),
            ("marker.txt", "inside the chroot"),
        ],
        "u.cfg",
        &[],
        &[port],
    );
    let r = http_get(port, "/");
    assert_eq!(
        (r.status, r.text()),
        (200, "inside the chroot|0".to_string()),
        "{}",
        p.log()
    );
    assert_eq!(status_field(p.pid(), "Uid:"), "65534 65534 65534 65534");
    // Every thread, the workers included, runs as nobody.
    for task in std::fs::read_dir(format!("/proc/{}/task", p.pid())).expect("tasks") {
        let status =
            std::fs::read_to_string(task.expect("task").path().join("status")).unwrap_or_default();
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("Uid:") && l.contains("65534")),
            "{status}"
        );
    }
    assert_eq!(status_field(p.pid(), "Gid:"), "65534 65534 65534 65534");
    assert_eq!(status_field(p.pid(), "Groups:"), "65534");
}

/// `cpu-map` pins each worker thread to its CPUs.
#[test]
fn cpu_map_pins_worker_threads() {
    let port = free_port();
    let config = web_cfg(port, "  cpu-map 1/1 0")
        .replace("  nbthread 1\n", "  nbthread 2\n  cpu-map 1/2 1\n");
    let p = Proxy::start(
        "field_cpu_map",
        &[("svc.lua", HELLO), ("c.cfg", &config)],
        "c.cfg",
        &[],
        &[port],
    );
    // The port is bound before the worker threads start.
    p.wait_log("started", 20);
    let mut pinned = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", p.pid())).expect("tasks") {
        let path = task.expect("task").path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.starts_with("luahost-worker") {
            let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
            let cpus = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap_or_default()
                .trim()
                .to_string();
            pinned.push(cpus);
        }
    }
    pinned.sort();
    assert_eq!(pinned, ["0", "1"], "{}", p.log());
}

/// `grace`: a soft stop keeps accepting for the grace period first.
/// `hard-stop-after`: a soft stop ends by then even with a request pending.
#[test]
fn grace_and_hard_stop_after_bound_the_soft_stop() {
    let slow = format!(
        "{HELLO}\ncore.register_service('slow', 'http', function(applet)\n  core.sleep(60)\nend)\n"
    );
    let port = free_port();
    let config = web_cfg(port, "  grace 2s\n  hard-stop-after 300ms").replace(
        "use-service lua.hello",
        "use-service lua.slow if { path /slow }\n  http-request use-service lua.hello",
    );
    let mut p = Proxy::start(
        "field_grace",
        &[("svc.lua", &slow), ("g.cfg", &config)],
        "g.cfg",
        &[],
        &[port],
    );
    let pending = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        use std::io::{Read, Write};
        let _ = s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    });
    std::thread::sleep(Duration::from_millis(200));
    p.signal("USR1");
    std::thread::sleep(Duration::from_millis(300));
    // Within the grace period: still served.
    let r = http_get(port, "/");
    assert_eq!(
        (r.status, r.text()),
        (200, "hello".to_string()),
        "{}",
        p.log()
    );
    // Then the stop proceeds and hard-stop-after ends the pending request.
    assert_eq!(p.wait_exit(15), Some(0), "{}", p.log());
    let _ = pending.join();
}

const BOOL_SERVICE: &str = r#"
core.register_service("b", "http", function(applet)
  local v = applet.f:always_true()
  local c = applet.c:bool(3)
  applet:set_var("txn.flag", true)
  local g = applet:get_var("txn.flag")
  local body = type(v) .. ":" .. tostring(v) .. " " .. type(c) .. ":" .. tostring(c)
    .. " " .. type(g) .. ":" .. tostring(g)
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
"#;

/// `tune.lua.bool-sample-conversion`: `normal` gives Lua booleans; the
/// default and `pre-3.1-bug` give integers 0/1 (what HAProxy 2.6 and 3.0
/// always do); set after a `lua-load` it is ignored with a warning.
#[test]
fn bool_sample_conversion_chooses_booleans_or_integers() {
    for (before, after, expected) in [
        ("", "", "number:1 number:1 number:1"),
        (
            "  tune.lua.bool-sample-conversion pre-3.1-bug\n",
            "",
            "number:1 number:1 number:1",
        ),
        (
            "  tune.lua.bool-sample-conversion normal\n",
            "",
            "boolean:true boolean:true boolean:true",
        ),
        (
            "",
            "  tune.lua.bool-sample-conversion normal\n",
            "number:1 number:1 number:1",
        ),
    ] {
        let port = free_port();
        let config = format!(
            "global\n  nbthread 1\n{before}  lua-load svc.lua\n{after}defaults\n  mode http\n  timeout client 10s\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  http-request use-service lua.b\n"
        );
        let p = Proxy::start(
            "field_bool",
            &[("svc.lua", BOOL_SERVICE), ("b.cfg", &config)],
            "b.cfg",
            &[],
            &[port],
        );
        let r = http_get(port, "/");
        assert_eq!(
            (r.status, r.text()),
            (200, expected.to_string()),
            "{}",
            p.log()
        );
        // HAProxy 3.0 has no such keyword and gives integers.
        if before.is_empty() && after.is_empty() {
            if let Some(h) = haproxy3() {
                assert_eq!(
                    haproxy3_get(&h, &p.dir, &config, port),
                    (200, expected.to_string()),
                    "haproxy3"
                );
            }
        }
        if !after.is_empty() {
            assert!(
                p.log().contains(
                    "[WARNING] parsing [b.cfg:4] : ignored as some Lua was loaded already."
                ),
                "{}",
                p.log()
            );
        }
    }
}

/// `tune.lua.openlibs`: only the listed libraries (plus base and
/// coroutine) exist; it must come before any `lua-load`.
#[test]
fn openlibs_limits_the_standard_libraries() {
    let lua = r#"
core.register_service("libs", "http", function(applet)
  local ok = pcall(function() return ("x"):upper() end)
  local body = table.concat({type(os), type(io), type(string), type(math), type(require),
    type(debug), type(coroutine), tostring(ok)}, " ")
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
"#;
    for (libs, expected) in [
        ("table,math", "nil nil nil table nil nil table false"),
        ("all", "table table table table function table table true"),
    ] {
        let port = free_port();
        let config = format!(
            "global\n  nbthread 1\n  tune.lua.openlibs {libs}\n  lua-load svc.lua\ndefaults\n  mode http\n  timeout client 10s\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  http-request use-service lua.libs\n"
        );
        let p = Proxy::start(
            "field_openlibs",
            &[("svc.lua", lua), ("o.cfg", &config)],
            "o.cfg",
            &[],
            &[port],
        );
        let r = http_get(port, "/");
        assert_eq!(
            (r.status, r.text()),
            (200, expected.to_string()),
            "{}",
            p.log()
        );
    }
    let dir = luahost_suite::scratch_dir("field_openlibs_order");
    std::fs::write(dir.join("svc.lua"), lua).expect("write");
    std::fs::write(
        dir.join("o.cfg"),
        "global\n  lua-load svc.lua\n  tune.lua.openlibs string\n",
    )
    .expect("write");
    let out = check(&dir, "o.cfg");
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(
            "[ALERT] parsing [o.cfg:3] : 'tune.lua.openlibs' must be set before any \"lua-load\""
        ),
        "{}",
        out.stderr
    );
}

/// `tune.lua.log.loggers` / `tune.lua.log.stderr` route `core.log` lines
/// (here from a script body, which runs under `-c` too).
#[test]
fn lua_log_routing_follows_loggers_and_stderr_switches() {
    let dir = luahost_suite::scratch_dir("field_lua_log");
    std::fs::write(dir.join("l.lua"), "core.Warning('from-lua')\n").expect("write");
    for (global, on_stdout, on_stderr) in [
        ("", false, true),
        ("  tune.lua.log.stderr off\n", false, false),
        ("  log stdout local0\n", true, false),
        (
            "  log stdout local0\n  tune.lua.log.stderr on\n",
            true,
            true,
        ),
        (
            "  log stdout local0\n  tune.lua.log.loggers off\n",
            false,
            true,
        ),
        (
            "  log stdout local0\n  tune.lua.log.loggers off\n  tune.lua.log.stderr off\n",
            false,
            false,
        ),
    ] {
        std::fs::write(
            dir.join("l.cfg"),
            format!("global\n{global}  lua-load l.lua\n"),
        )
        .expect("write");
        let out = check(&dir, "l.cfg");
        assert_eq!(out.status, Some(0), "{out:?}");
        assert_eq!(
            (
                out.stdout.contains("from-lua"),
                out.stderr.contains("from-lua")
            ),
            (on_stdout, on_stderr),
            "{global:?}: {out:?}"
        );
    }
}

/// Proxy sections (after a `defaults` in HTTP mode with timeouts) that
/// luahost accepts or refuses as HAProxy 3.0's `-c` does; a refusal names
/// the section's last line. The keywords of issue 12, item 6.
const PROXY_SAME_AS_HAPROXY3: &[(&str, bool)] = &[
    ("frontend f\n  bind :8000\n  errorfile 503 e503.http", true),
    ("frontend f\n  bind :8000\n  errorfile 503 empty.http", true),
    ("frontend f\n  bind :8000\n  errorfile 503 e404.http", true),
    ("frontend f\n  bind :8000\n  errorfile 429 e503.http", true),
    ("frontend f\n  bind :8000\n  errorfile 503 lf-only.http", true),
    ("frontend f\n  bind :8000\n  errorfile 503 missing.http", false),
    ("frontend f\n  bind :8000\n  errorfile 302 e503.http", false),
    ("frontend f\n  bind :8000\n  errorfile 431 e503.http", false),
    ("frontend f\n  bind :8000\n  errorfile 503 bad-length.http", false),
    ("frontend f\n  bind :8000\n  errorfile 503 chunked.http", false),
    ("frontend f\n  bind :8000\n  errorfile 503 interim.http", false),
    ("frontend f\n  bind :8000\n  errorfile 503", false),
    ("frontend f\n  bind :8000\n  errorfile 503 e503.http x", false),
    ("backend b\n  errorfile 503 e503.http", true),
    ("frontend f\n  bind :8000\n  option http-buffer-request", true),
    ("frontend f\n  bind :8000\n  no option http-buffer-request", true),
    ("frontend f\n  bind :8000\n  option http-buffer-request x", false),
    ("backend b\n  timeout check 2s\n  timeout tunnel 1h", true),
    ("frontend f\n  bind :8000\n  timeout check 2s", true),
    ("frontend f\n  bind :8000\n  timeout tunnel 2s", true),
    ("backend b\n  timeout client 2s", true),
    ("backend b\n  timeout check", false),
    ("frontend f\n  bind :8000\n  tcp-request connection accept if { src 127.0.0.1 }\n  tcp-request connection reject", true),
    ("frontend f\n  bind :8000\n  tcp-request connection set-var(sess.a) src", true),
    ("frontend f\n  bind :8000\n  tcp-request connection", false),
    ("frontend f\n  bind :8000\n  tcp-request connection foo", false),
    ("frontend f\n  bind :8000\n  tcp-request connection lua.x", false),
    ("backend b\n  tcp-request connection reject", false),
    ("frontend f\n  bind :8000\n  tcp-request inspect-delay 2s\n  tcp-request content accept if HTTP\n  tcp-request content reject", true),
    ("backend b\n  http-request use-service lua.hello", true),
    ("backend b\n  http-request use-service lua.nope", false),
    ("backend b\n  mode tcp\n  tcp-request content use-service lua.echo", true),
    ("listen l\n  mode tcp\n  bind :8000\n  tcp-request content use-service lua.echo", true),
    ("frontend f\n  bind :8000\n  compression algo gzip deflate\n  compression type text/plain text/html", true),
    ("frontend f\n  bind :8000\n  compression algo identity raw-deflate", true),
    ("frontend f\n  bind :8000\n  compression algo-res gzip\n  compression type-res text/plain", true),
    ("frontend f\n  bind :8000\n  compression offload", true),
    ("frontend f\n  bind :8000\n  compression direction response", true),
    ("frontend f\n  bind :8000\n  filter compression\n  compression algo gzip", true),
    ("defaults d2\n  compression algo gzip\n  compression offload", true),
    ("frontend f\n  bind :8000\n  compression algo brotli", false),
    ("frontend f\n  bind :8000\n  compression algo", false),
    ("frontend f\n  bind :8000\n  compression type", false),
    ("frontend f\n  bind :8000\n  compression foo", false),
    ("frontend f\n  bind :8000\n  compression direction sideways", false),
    ("frontend f\n  bind :8000\n  filter compression x", false),
    ("frontend f\n  bind :8000\n  filter nothing", false),
    ("frontend f\n  bind :8000\n  filter compression\n  filter compression", false),
    ("defaults d2\n  filter compression", false),
];

const KEYWORDS_LUA: &str = r#"
core.register_service("hello", "http", function(applet) applet:start_response() end)
core.register_service("echo", "tcp", function(applet) applet:send("x") end)
"#;

#[test]
fn proxy_keywords_pass_and_fail_check_like_haproxy3() {
    let dir = luahost_suite::scratch_dir("field_proxy_keywords");
    let files: &[(&str, &[u8])] = &[
        ("svc.lua", KEYWORDS_LUA.as_bytes()),
        (
            "e503.http",
            b"HTTP/1.1 503 Busy\r\ncontent-length: 4\r\n\r\nbusy",
        ),
        (
            "e404.http",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ),
        ("empty.http", b""),
        ("lf-only.http", b"HTTP/1.1 503 X\ncontent-length: 3\n\nabc"),
        (
            "bad-length.http",
            b"HTTP/1.1 503 X\r\ncontent-length: 9\r\n\r\nabc",
        ),
        (
            "chunked.http",
            b"HTTP/1.1 503 X\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        ("interim.http", b"HTTP/1.1 100 Continue\r\n\r\n"),
    ];
    for (name, content) in files {
        std::fs::write(dir.join(name), content).expect("write");
    }
    let reference = haproxy3();
    let head = "global\n  lua-load svc.lua\ndefaults\n  mode http\n  timeout client 5s\n  timeout server 5s\n  timeout connect 1s\n";
    for (i, (section, accepted)) in PROXY_SAME_AS_HAPROXY3.iter().enumerate() {
        let name = format!("p{i}.cfg");
        let text = format!("{head}{section}\n");
        std::fs::write(dir.join(&name), &text).expect("write");
        let out = check(&dir, &name);
        assert_eq!(
            out.status == Some(0),
            *accepted,
            "luahost -c on {section:?}: {out:?}"
        );
        if !accepted {
            let last = text.lines().count();
            assert!(
                out.stderr
                    .contains(&format!("[ALERT] parsing [{name}:{last}]")),
                "{section:?}: {}",
                out.stderr
            );
        }
        if let Some(h) = &reference {
            let (ok, stderr) = h.accepts(&dir, &name);
            assert_eq!(ok, *accepted, "haproxy3 -c on {section:?}: {stderr}");
        }
    }
}
