//! What scripts write on stdout (`print`, `io.write`) in the proxy appears
//! line by line when stdout is a file or a pipe, as with HAProxy (which
//! line-buffers it), not in one block when the process exits.

use luahost_suite::{free_port, http_get, Proxy};
use std::io::Read;
use std::time::{Duration, Instant};

/// io.write does not flush (print does, in Lua itself): only buffering
/// decides when these lines leave the process.
const SCRIPT: &str = r#"
io.write("body line\n")
core.register_init(function() io.write("init line\n") end)
core.register_service("out", "http", function(applet)
  io.stdout:write("service line\n")
  applet:set_status(200)
  applet:add_header("content-length", "2")
  applet:start_response()
  applet:send("ok")
end)
"#;

fn config(port: u16) -> String {
    format!(
        "global\n  nbthread 1\n  lua-load out.lua\n  tune.lua.blocking-calls allow\n\
         defaults\n  mode http\n  timeout client 5s\n  timeout server 5s\n  timeout connect 1s\n\
         frontend f\n  bind 127.0.0.1:{port}\n  http-request use-service lua.out\n"
    )
}

/// Polls `read` (what stdout received so far) until it contains `needle`.
fn wait_for(mut read: impl FnMut() -> String, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = read();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn script_output_to_a_file_appears_line_by_line() {
    let port = free_port();
    let dir = luahost_suite::scratch_dir("script-output-file-out");
    let out_path = dir.join("stdout.txt");
    let out = std::fs::File::create(&out_path).expect("create stdout file");
    let cfg = config(port);
    let proxy = Proxy::start_with(
        "script-output-file",
        &[("out.lua", SCRIPT), ("p.cfg", &cfg)],
        "p.cfg",
        &[],
        &[port],
        |cmd| {
            cmd.stdout(out);
        },
    );
    let read = || std::fs::read_to_string(&out_path).unwrap_or_default();
    let text = wait_for(read, "init line\n");
    assert_eq!(
        text, "body line\ninit line\n",
        "while serving, before any request"
    );
    assert_eq!(http_get(port, "/").status, 200);
    let text = wait_for(read, "service line\n");
    assert_eq!(
        text,
        "body line\ninit line\nservice line\n",
        "{}",
        proxy.log()
    );
}

#[test]
fn script_output_to_a_pipe_appears_line_by_line() {
    let port = free_port();
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let cfg = config(port);
    let proxy = Proxy::start_with(
        "script-output-pipe",
        &[("out.lua", SCRIPT), ("p.cfg", &cfg)],
        "p.cfg",
        &[],
        &[port],
        |cmd| {
            cmd.stdout(writer);
        },
    );
    // The reader thread ends when the process (the pipe's last writer) does.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let mut read = || {
        while let Ok(chunk) = rx.try_recv() {
            got.extend(chunk);
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    let text = wait_for(&mut read, "init line\n");
    assert_eq!(
        text, "body line\ninit line\n",
        "while serving, before any request"
    );
    assert_eq!(http_get(port, "/").status, 200);
    let text = wait_for(&mut read, "service line\n");
    assert_eq!(
        text,
        "body line\ninit line\nservice line\n",
        "{}",
        proxy.log()
    );
}
