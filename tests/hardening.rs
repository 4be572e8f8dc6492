//! Small hardening items checked as the field sees them (issue 11, item 9):
//! the pid file's mode under `umask 000`, integer ACL patterns rejected as
//! HAProxy rejects them, and the listen backlog derived from `maxconn` /
//! `backlog`. Real luahost processes on 127.0.0.1; HAProxy 3.0 for the
//! differential checks when it is installed.

use luahost_suite::{artifacts, free_port, run_with_timeout, scratch_dir};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A luahost process started by a test, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `luahost -f cfg ARGS` in `dir` through `sh -c 'umask U; exec ...'`,
/// so the process runs with that umask, and waits until `port` accepts.
fn start_with_umask(dir: &Path, umask: &str, args: &[&str], port: u16) -> Running {
    let script = format!("umask {umask} && exec \"$0\" \"$@\"");
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(artifacts().luahost())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start luahost");
    let mut r = Running(child);
    wait_listening(&mut r, port);
    r
}

fn wait_listening(r: &mut Running, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            matches!(r.0.try_wait(), Ok(None)),
            "luahost exited before listening on {port}"
        );
        assert!(
            Instant::now() < deadline,
            "luahost did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn service_cfg(port: u16, global: &str, frontend: &str) -> String {
    format!(
        "global\n{global}\ndefaults\n  mode http\n  timeout client 5s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n{frontend}\n  http-request return status 200\n"
    )
}

#[test]
fn pidfile_is_0644_under_umask_000_and_holds_pid_newline() {
    let dir = scratch_dir("hardening_pidfile");
    let port = free_port();
    std::fs::write(dir.join("p.cfg"), service_cfg(port, "  nbthread 1", "")).expect("write cfg");
    // An earlier run's file with a wide mode is replaced, not reused.
    std::fs::write(dir.join("pid"), "1\n").expect("write old pid file");
    std::fs::set_permissions(dir.join("pid"), std::fs::Permissions::from_mode(0o666))
        .expect("chmod");
    let r = start_with_umask(&dir, "000", &["-f", "p.cfg", "-p", "pid"], port);
    let meta = std::fs::metadata(dir.join("pid")).expect("pid file exists");
    let mode = meta.permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "pid file mode {mode:o}, HAProxy's is 644");
    let text = std::fs::read_to_string(dir.join("pid")).expect("read pid file");
    assert_eq!(
        text,
        format!("{}\n", r.0.id()),
        "pid and a newline, as HAProxy"
    );
}
