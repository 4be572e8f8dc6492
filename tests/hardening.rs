//! Small hardening items checked as the field sees them (issue 11, item 9):
//! the pid file's mode under `umask 000`, integer ACL patterns rejected as
//! HAProxy rejects them, and the listen backlog derived from `maxconn` /
//! `backlog`. Real luahost processes on 127.0.0.1; HAProxy 3.0 for the
//! differential checks when it is installed.

use luahost_suite::{artifacts, free_port, run_with_timeout, scratch_dir};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
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

/// Integer ACL patterns and what HAProxy (2.6 and 3.0 alike) says of them:
/// `None` where it accepts the line, else the end of its message. (A bare
/// `-5` is refused earlier, as an unknown ACL flag, in both.)
const INT_PATTERNS: &[(&str, Option<&str>)] = &[
    ("9:5", Some("'9:5' is not a valid number range")),
    (
        "2147483648:9",
        Some("'2147483648:9' is not a valid number range"),
    ),
    ("3:-2", Some("'3:-2' is not a valid number range")),
    ("-- -3:-2", Some("'-3:-2' is not a valid number range")),
    ("-- 5--3", Some("'5--3' is not a valid number range")),
    (":", Some("':' is not a valid number range")),
    ("5:abc", Some("'5:abc' is not a valid number range")),
    (
        "gt 9223372036854775807",
        Some("'-9223372036854775808:' is not a valid number range"),
    ),
    ("abc", Some("'abc' is not a number")),
    ("+5", Some("'+5' is not a number")),
    ("1.5", Some("'1.5' is not a number")),
    (
        "9223372036854775808",
        Some("'9223372036854775808' is not a number"),
    ),
    (
        "lt x",
        Some("'x' is neither a number nor a supported operator"),
    ),
    ("5:9", None),
    ("5-9", None),
    ("5:5", None),
    ("2147483648", None),
    ("5:2147483648", None),
    (":5", None),
    ("5:", None),
    ("-- -5", None),
    ("-- 5-", None),
    ("gt 5", None),
    ("ge 5 lt 9", None),
    ("gt -5", None),
    ("ne 5", None),
    ("eq 5:6", None),
    ("9223372036854775807", None),
];

/// The configuration: one ACL per case on lines 8.., nothing using them.
fn int_pattern_cfg() -> String {
    let mut cfg = String::from(
        "defaults\n  mode http\n  timeout client 5s\n  timeout server 5s\n  timeout connect 5s\n\
         frontend fe\n  bind 127.0.0.1:1\n",
    );
    for (i, (pat, _)) in INT_PATTERNS.iter().enumerate() {
        cfg.push_str(&format!("  acl a{i} req.hdr_val(x-n) {pat}\n"));
    }
    cfg.push_str("  http-request return status 200\n");
    cfg
}

/// The line numbers `-c` reported errors on, with their messages.
fn error_lines(stderr: &str, file: &str) -> Vec<(usize, String)> {
    let tag = format!("parsing [{file}:");
    stderr
        .lines()
        .filter_map(|l| {
            let at = l.find(&tag)? + tag.len();
            let end = l[at..].find(']')? + at;
            Some((l[at..end].parse().ok()?, l.to_string()))
        })
        .collect()
}

#[test]
fn integer_acl_patterns_are_checked_as_haproxy_checks_them() {
    let dir = scratch_dir("hardening_int_patterns");
    std::fs::write(dir.join("int.cfg"), int_pattern_cfg()).expect("write cfg");
    let out = run_with_timeout(
        Command::new(artifacts().luahost())
            .args(["-c", "-f", "int.cfg"])
            .current_dir(&dir),
        30,
    );
    assert_eq!(out.status, Some(1), "{out:?}");
    let errors = error_lines(&out.stderr, "int.cfg");
    for (i, (pat, expected)) in INT_PATTERNS.iter().enumerate() {
        let line = 8 + i;
        let got = errors.iter().find(|(l, _)| *l == line);
        match (expected, got) {
            (None, None) => {}
            (Some(msg), Some((_, text))) => {
                assert!(text.contains(msg), "{pat:?} at line {line}: {text}")
            }
            (None, Some((_, text))) => panic!("{pat:?} rejected, HAProxy accepts it: {text}"),
            (Some(msg), None) => panic!("{pat:?} accepted, HAProxy rejects it ({msg})"),
        }
    }
    assert_eq!(
        errors.len(),
        INT_PATTERNS.iter().filter(|(_, e)| e.is_some()).count(),
        "one error per rejected line and no other: {}",
        out.stderr
    );

    // The same file through HAProxy: the same lines rejected.
    let Some(haproxy) = luahost_suite::require_program("haproxy", "differential check") else {
        return;
    };
    let out = run_with_timeout(
        Command::new(haproxy)
            .args(["-c", "-f", "int.cfg"])
            .current_dir(&dir),
        30,
    );
    let theirs: Vec<usize> = error_lines(&out.stderr, "int.cfg")
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    let ours: Vec<usize> = errors.iter().map(|(l, _)| *l).collect();
    assert_eq!(ours, theirs, "HAProxy said:\n{}", out.stderr);
}

/// What the accepted forms mean, over a real socket: each ACL sets a
/// response header when it matches. Expected values as HAProxy 3.0 answers
/// (`-- -5` is "at most 5", `ne 5` matches 5 only).
#[test]
fn integer_acl_ranges_match_as_haproxy() {
    let dir = scratch_dir("hardening_int_match");
    let port = free_port();
    let cfg = format!(
        "global\n  nbthread 1\ndefaults\n  mode http\n  timeout client 5s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n\
         acl atmost5 req.hdr_val(x-n) -- -5\n\
         acl r59 req.hdr_val(x-n) 5-9\n\
         acl ne5 req.hdr_val(x-n) ne 5\n\
         acl gtm5 req.hdr_val(x-n) gt -5\n\
         acl below req.hdr_val(x-n) :-3\n\
         acl gt7 req.hdr_val(x-n) gt 7\n\
         http-request set-var(txn.m) str(atmost5) if atmost5\n\
         http-request set-var(txn.m) str(),concat(,txn.m,) if !atmost5\n\
         http-request set-var(txn.m) var(txn.m),concat(+r59) if r59\n\
         http-request set-var(txn.m) var(txn.m),concat(+ne5) if ne5\n\
         http-request set-var(txn.m) var(txn.m),concat(+gtm5) if gtm5\n\
         http-request set-var(txn.m) var(txn.m),concat(+below) if below\n\
         http-request set-var(txn.m) var(txn.m),concat(+gt7) if gt7\n\
         http-request return status 200 content-type text/plain lf-string \"%[var(txn.m)]\"\n"
    );
    std::fs::write(dir.join("m.cfg"), cfg).expect("write cfg");
    let _r = start_with_umask(&dir, "022", &["-f", "m.cfg"], port);
    let cases = [
        (-7, "atmost5+gtm5+below"),
        (0, "atmost5+gtm5"),
        (5, "atmost5+r59+ne5+gtm5"),
        (6, "+r59"),
        (9, "+r59+gt7"),
        (10, "+gt7"),
    ];
    for (n, expected) in cases {
        let mut c = luahost_suite::HttpReader::connect(port);
        c.send(format!("GET / HTTP/1.1\r\nhost: t\r\nx-n: {n}\r\n\r\n").as_bytes());
        let r = c.read_response(false).expect("a response");
        assert_eq!((n, r.text()), (n, expected.to_string()));
    }
}

/// The backlog of the socket listening on `port`, from `ss -ltn`: for a
/// listening socket the Send-Q column is the backlog given to listen().
fn listen_backlog(ss: &Path, port: u16) -> u32 {
    let out = run_with_timeout(
        Command::new(ss).args(["-ltnH", &format!("sport = :{port}")]),
        10,
    );
    let line = out.stdout.lines().next().unwrap_or_default().to_string();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols.first(), Some(&"LISTEN"), "ss: {line:?} {}", out.stderr);
    cols.get(2)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no Send-Q in {line:?}"))
}

/// Starts luahost on `frontends` (after a global section with `maxconn
/// 2000`), each binding the next port of `ports`, and returns the backlog
/// of each listening socket.
fn backlogs_of(name: &str, frontends: &[&str]) -> Option<Vec<u32>> {
    let ss = luahost_suite::require_program("ss", "reads listening sockets' backlog")?;
    let dir = scratch_dir(name);
    let ports: Vec<u16> = frontends.iter().map(|_| free_port()).collect();
    let mut cfg = String::from(
        "global\n  nbthread 1\n  maxconn 2000\ndefaults\n  mode http\n  timeout client 5s\n",
    );
    for (f, port) in frontends.iter().zip(&ports) {
        cfg.push_str(&f.replace("PORT", &port.to_string()));
        cfg.push_str("  http-request return status 200\n");
    }
    std::fs::write(dir.join("b.cfg"), cfg).expect("write cfg");
    let mut r = start_with_umask(&dir, "022", &["-f", "b.cfg"], ports[0]);
    for p in &ports[1..] {
        wait_listening(&mut r, *p);
    }
    Some(ports.iter().map(|p| listen_backlog(&ss, *p)).collect())
}

/// HAProxy's rule (listener_backlog()): the bind's `backlog`, else the
/// frontend's `backlog`, else its `maxconn`, which defaults to the global
/// `maxconn`. HAProxy 3.0 gives the same numbers for these configurations
/// (checked with ss on its sockets).
#[test]
fn listen_backlog_derives_from_maxconn_as_haproxy() {
    let got = backlogs_of(
        "hardening_backlog_maxconn",
        &[
            "frontend global_maxconn\n  bind 127.0.0.1:PORT\n",
            "frontend own_maxconn\n  bind 127.0.0.1:PORT\n  maxconn 700\n",
        ],
    );
    if let Some(got) = got {
        assert_eq!(got, [2000, 700]);
    }
}

#[test]
fn backlog_keyword_in_bind_frontend_and_defaults_as_haproxy() {
    let got = backlogs_of(
        "hardening_backlog_keyword",
        &[
            "frontend own_backlog\n  bind 127.0.0.1:PORT\n  backlog 300\n",
            "frontend bind_backlog\n  bind 127.0.0.1:PORT backlog 50\n  maxconn 700\n",
            "frontend zero_is_unset\n  bind 127.0.0.1:PORT backlog 0\n  backlog 0\n  maxconn 600\n",
            "listen a_listen\n  bind 127.0.0.1:PORT\n  backlog 123\n",
            "defaults\n  mode http\n  timeout client 5s\n  backlog 90\n\
             frontend defaults_backlog\n  bind 127.0.0.1:PORT\n  maxconn 700\n",
        ],
    );
    if let Some(got) = got {
        assert_eq!(got, [300, 50, 600, 123, 90]);
    }
}

#[test]
fn backlog_errors_carry_file_and_line() {
    let dir = scratch_dir("hardening_backlog_errors");
    std::fs::write(
        dir.join("e.cfg"),
        "defaults\n  mode http\nfrontend fe\n  bind 127.0.0.1:1 backlog lots\n  backlog -3\n\
         backend be\n  backlog 10\n",
    )
    .expect("write cfg");
    let out = run_with_timeout(
        Command::new(artifacts().luahost())
            .args(["-c", "-f", "e.cfg"])
            .current_dir(&dir),
        30,
    );
    assert_eq!(out.status, Some(1), "{out:?}");
    let lines: Vec<usize> = error_lines(&out.stderr, "e.cfg")
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert_eq!(lines, [4, 5, 7], "{}", out.stderr);
}
