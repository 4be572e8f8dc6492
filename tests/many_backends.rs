//! Start-up with many backends (issue 13): the registry builds a backend's
//! live state only when something uses it, and the process runs without
//! transparent huge pages. These tests check that the lazily built model
//! behaves as the eager one did, on a real process: Lua sees every backend
//! at init, a request reaches a backend nothing touched before, the CLI
//! lists every backend and server, and a server added at run time to an
//! untouched backend is there. (The speed itself is measured by
//! `cargo bench --bench startup`, not here.)

use luahost_suite::{free_port, http_get, Proxy};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::time::Duration;

const BACKENDS: usize = 2000;

const COUNT_LUA: &str = r#"
core.register_init(function()
  local n = 0
  for _ in pairs(core.backends) do n = n + 1 end
  core.Alert("backends: " .. n .. " b123: " .. core.backends["b123"]:get_name())
end)
"#;

/// A server answering `ok` to each of up to `n` connections.
fn http_server(n: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind server");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in l.incoming().take(n) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    port
}

/// One CLI command over the admin socket; the whole answer.
fn cli(sock: &std::path::Path, cmd: &str) -> String {
    let mut s = UnixStream::connect(sock).expect("connect to the stats socket");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(format!("{cmd}\n").as_bytes()).expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn many_backends_are_built_on_first_use_and_behave_as_configured() {
    let fe = free_port();
    let server = http_server(4);
    let dir = luahost_suite::scratch_dir("many_backends");
    let sock = dir.join("admin.sock");
    let mut cfg = format!(
        "global\n  lua-load count.lua\n  stats socket {} level admin\n\
         defaults\n  mode http\n  timeout client 5s\n  timeout server 5s\n  timeout connect 5s\n\
         frontend fe\n  bind 127.0.0.1:{fe}\n  default_backend b{}\n",
        sock.display(),
        BACKENDS - 1
    );
    for i in 0..BACKENDS {
        // Servers of untouched backends point where nothing listens.
        let port = if i == BACKENDS - 1 { server } else { 1 };
        cfg.push_str(&format!("backend b{i}\n  server s1 127.0.0.1:{port}\n"));
    }
    let p = Proxy::start(
        "many_backends",
        &[("count.lua", COUNT_LUA), ("big.cfg", &cfg)],
        "big.cfg",
        &[],
        &[fe],
    );
    let log = p.wait_log("backends: ", 20);
    assert!(
        log.contains(&format!("backends: {BACKENDS} b123: b123")),
        "init output:\n{log}"
    );

    // Transparent huge pages are off for the process (the kernel reports
    // it since Linux 6.x; older kernels have no such line).
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).expect("status");
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }

    // The default backend is built by the first request, and forwards.
    let r = http_get(fe, "/");
    assert_eq!((r.status, r.text()), (200, "ok".to_string()));

    // A server added to a backend nothing used yet joins its configured one.
    let added = cli(&sock, "add server b7/s2 127.0.0.1:2");
    assert!(added.contains("New server registered."), "{added}");
    let state = cli(&sock, "show servers state b7");
    let names: Vec<&str> = state
        .lines()
        // Past the version line and the header: be_id be_name srv_id srv_name ...
        .filter(|l| !l.starts_with('#') && l.split_whitespace().count() > 4)
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(names, ["s1", "s2"], "{state}");

    // `show stat` builds the rest: every backend, with its server.
    let stat = cli(&sock, "show stat");
    let backend_rows = stat.lines().filter(|l| l.contains(",BACKEND,")).count();
    let s1_rows = stat.lines().filter(|l| l.contains(",s1,")).count();
    assert_eq!((backend_rows, s1_rows), (BACKENDS, BACKENDS));
}
