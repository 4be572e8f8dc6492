//! Issue 12 item 7: one realistic configuration that uses the field
//! keywords together — logging to a unix datagram socket and to UDP,
//! `daemon` with a `pidfile`, `user`, `.if`/`.else`,
//! `tune.lua.bool-sample-conversion`, a Lua action, a Lua service called
//! from a backend, a server backend, and `compression` — run under luahost,
//! HAProxy 3.0 and HAProxy 2.6 with the same requests (with and without
//! `Accept-Encoding: gzip`). The answers (status, the headers that matter,
//! decompressed bodies) and the log lines each receiver gets (timestamps,
//! pids, ports and timers masked) must be the same.
//!
//! One difference is part of the comparison, not masked away:
//! `tune.lua.bool-sample-conversion normal` is in luahost's copy only, as
//! HAProxy 3.0 and 2.6 do not know the keyword (it is from 3.2) and refuse
//! the file. They always pass booleans to Lua as integers, so the Lua
//! action's report of a boolean fetch must be `boolean:true` under luahost
//! and `number:1` under HAProxy; everything else must be equal, the byte
//! counts of the log lines included (`%B` counts the response as it came
//! from the server or service: before the response rules added headers and
//! before compression, so the compressors' different output does not show).
//!
//! HAProxy 2.6 frames compressed Lua service responses wrongly
//! (`transfer-encoding: chunked` repeated; tests/differential.rs, group
//! `proxy_keywords`), so the requests that ask a Lua service for gzip are
//! not sent to it.
//!
//! Run: `cargo test --test all_in_one`.

use luahost_suite::syslog::{mask_rfc3164, Receivers};
use luahost_suite::{
    artifacts, free_port, haproxy_26, haproxy_30, one_shot_origin, run_with_timeout, scratch_dir,
    HttpReader, HttpResponse,
};
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LUA: &str = r#"
-- A Lua action: reports how a boolean fetch reaches Lua (the effect of
-- tune.lua.bool-sample-conversion) and logs a message for the request.
core.register_action("tag", {"http-req"}, function(txn)
  local v = txn.f:always_true()
  txn:set_var("txn.booltype", type(v) .. ":" .. tostring(v))
  txn:Info("tagged " .. txn.f:path())
end)

local TEXT = string.rep("all in one, compressed when asked. ", 40) .. "\n"
local JSON = '{"k":"' .. string.rep("v", 600) .. '"}'

-- A Lua service, called from a backend's rules.
core.register_service("pages", "http", function(applet)
  local body, ctype = TEXT, "text/plain"
  if applet.path == "/svc/json" then
    body, ctype = JSON, "application/json"
  end
  applet:set_status(200)
  applet:add_header("content-type", ctype)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
"#;

/// The response of the server backend: fixed bytes, compressible text.
const ORIGIN_BODY: &str = "origin text, long enough to be worth compressing, origin text, long enough to be worth compressing\n";

/// Whether the tests run as root (CI does): only then `user nobody`.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// What differs between the copies of the configuration.
struct Variant {
    /// `tune.lua.bool-sample-conversion normal` (luahost only).
    bool_normal: bool,
    /// `user nobody` (when running as root).
    user: bool,
}

/// The configuration. `.if` chooses the greeting from the environment
/// (the test sets `AIO_STAGE=prod`), which the frontend sends as a header.
fn config(dir: &Path, r: &Receivers, http: u16, origin: u16, v: &Variant) -> String {
    let user = if v.user { "  user nobody\n" } else { "" };
    let bool_line = if v.bool_normal {
        "  tune.lua.bool-sample-conversion normal\n"
    } else {
        ""
    };
    format!(
        r#"global
  log {unix} local0 info
  log udp@127.0.0.1:{udp} local1
  log-tag allinone
  daemon
  pidfile {dir}/aio.pid
{user}{bool_line}  lua-load {dir}/aio.lua
.if streq("$AIO_STAGE",prod)
  setenv AIO_GREETING hello-prod
.else
  setenv AIO_GREETING hello-dev
.endif

defaults
  mode http
  log global
  option httplog
  option dontlognull
  timeout client 5s
  timeout server 5s
  timeout connect 2s

frontend www
  bind 127.0.0.1:{http}
  capture request header Host len 20
  capture request header Accept-Encoding len 20
  capture response header Content-Type len 20
  capture response header Content-Encoding len 10
  http-request lua.tag
  http-request deny if {{ path /admin }}
  http-response set-header x-bool %[var(txn.booltype)]
  http-response set-header x-greeting "${{AIO_GREETING}}"
  compression algo gzip
  compression type text/plain
  use_backend pages if {{ path_beg /svc }}
  default_backend app

backend pages
  http-request use-service lua.pages

backend app
  server origin 127.0.0.1:{origin}
"#,
        unix = r.unix_path.display(),
        udp = r.udp_port,
        dir = dir.display(),
    )
}

/// One request of the test.
struct Step {
    path: &'static str,
    gzip: bool,
    /// A Lua service asked for gzip (not sent to HAProxy 2.6).
    compressed_service: bool,
}

const STEPS: &[Step] = &[
    Step {
        path: "/svc/text",
        gzip: true,
        compressed_service: true,
    },
    Step {
        path: "/svc/text",
        gzip: false,
        compressed_service: false,
    },
    Step {
        path: "/svc/json",
        gzip: true,
        compressed_service: true,
    },
    Step {
        path: "/page",
        gzip: true,
        compressed_service: false,
    },
    Step {
        path: "/page",
        gzip: false,
        compressed_service: false,
    },
    Step {
        path: "/admin",
        gzip: true,
        compressed_service: false,
    },
];

/// What one request gave: the answer and the log lines it caused.
#[derive(Debug, PartialEq)]
struct Outcome {
    status: u16,
    content_encoding: Option<String>,
    vary: Option<String>,
    transfer_encoding: Option<String>,
    content_type: Option<String>,
    greeting: Option<String>,
    /// Compared separately: the one expected difference.
    bool_report: Option<String>,
    /// The body, decompressed when it came gzipped.
    body: String,
    /// Masked lines of the UDP receiver, sorted.
    udp: Vec<String>,
    /// Masked lines of the unix datagram receiver, sorted.
    unix: Vec<String>,
}

impl Outcome {
    /// The outcome without the boolean report.
    fn without_bool(&self) -> Outcome {
        Outcome {
            bool_report: None,
            udp: self.udp.clone(),
            unix: self.unix.clone(),
            body: self.body.clone(),
            content_encoding: self.content_encoding.clone(),
            vary: self.vary.clone(),
            transfer_encoding: self.transfer_encoding.clone(),
            content_type: self.content_type.clone(),
            greeting: self.greeting.clone(),
            status: self.status,
        }
    }
}

fn gunzip(data: &[u8]) -> String {
    let mut out = Vec::new();
    match flate2::read::GzDecoder::new(data).read_to_end(&mut out) {
        Ok(_) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => format!("<not gzip: {e}>"),
    }
}

/// A log line with its date, pid, client port and timers masked.
fn mask_line(line: &str) -> String {
    mask_rfc3164(line)
}

/// A proxy started as a daemon: stopped through its pid file when dropped.
struct Daemon {
    pidfile: PathBuf,
    label: String,
}

impl Daemon {
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGTERM to the pid the pid file names; waits (bounded) until it is
    /// gone. False if it is still there.
    fn stop(&self) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for init.
            if stat.is_empty() || stat.contains(") Z ") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.stop() {
            eprintln!("{}: daemon did not stop", self.label);
        }
    }
}

/// Runs `program` on the configuration and sends the steps (those `keep`
/// allows); each step waits for its log lines.
fn run(program: &Path, label: &str, v: &Variant, keep: impl Fn(&Step) -> bool) -> Vec<Outcome> {
    let dir = scratch_dir(&format!("all_in_one-{}", label.replace(' ', "-")));
    let r = Receivers::start(&dir);
    // After `user nobody` the proxy still sends to the socket: let it write.
    if v.user {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&r.unix_path, std::fs::Permissions::from_mode(0o666))
            .expect("chmod log socket");
    }
    let origin = one_shot_origin(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{ORIGIN_BODY}",
            ORIGIN_BODY.len()
        )
        .into_bytes(),
    );
    let http = free_port();
    std::fs::write(dir.join("aio.lua"), LUA).expect("write lua");
    std::fs::write(dir.join("aio.cfg"), config(&dir, &r, http, origin, v)).expect("write cfg");
    let mut cmd = Command::new(program);
    cmd.args(["-f", "aio.cfg"])
        .current_dir(&dir)
        .env("AIO_STAGE", "prod");
    // `daemon`: the command returns once the daemon is started.
    let out = run_with_timeout(&mut cmd, 30);
    assert_eq!(out.status, Some(0), "{label} did not start: {out:?}");
    let daemon = Daemon {
        pidfile: dir.join("aio.pid"),
        label: label.to_string(),
    };
    let pid = daemon
        .pid()
        .unwrap_or_else(|| panic!("{label}: no pid file"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(Instant::now() < deadline, "{label} did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    if v.user {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap_or_default()
            .to_string();
        assert!(uid.contains("65534"), "{label} runs as nobody: {uid}");
    }
    // Lines sent at start-up (none expected) are not part of any step.
    let mut last = r.udp_lines().len();
    let mut outcomes = Vec::new();
    for step in STEPS.iter().filter(|s| keep(s)) {
        let (udp_before, unix_before) = (r.udp_lines().len(), r.unix_lines().len());
        let mut c = HttpReader::connect(http);
        let ae = if step.gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        c.send(
            format!(
                "GET {} HTTP/1.1\r\nHost: test.local\r\n{ae}Connection: close\r\n\r\n",
                step.path
            )
            .as_bytes(),
        );
        let resp: HttpResponse = c
            .read_response(false)
            .unwrap_or_else(|| panic!("{label}: no response to {}", step.path));
        drop(c);
        // Two lines per request on each receiver: the action's message and
        // the traffic line.
        r.wait_udp(udp_before + 2);
        r.wait_unix(unix_before + 2);
        let compressed = resp.header("content-encoding") == Some("gzip");
        let lines = |all: Vec<String>, from: usize| {
            let mut v: Vec<String> = all[from..].iter().map(|l| mask_line(l)).collect();
            v.sort();
            v
        };
        let header = |n: &str| resp.header(n).map(str::to_string);
        outcomes.push(Outcome {
            status: resp.status,
            content_encoding: header("content-encoding"),
            vary: header("vary"),
            transfer_encoding: header("transfer-encoding"),
            content_type: header("content-type"),
            greeting: header("x-greeting"),
            bool_report: header("x-bool"),
            body: if compressed {
                gunzip(&resp.body)
            } else {
                resp.text()
            },
            udp: lines(r.udp_lines(), udp_before),
            unix: lines(r.unix_lines(), unix_before),
        });
        last = r.udp_lines().len();
    }
    // A moment for a line that should not come.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        r.udp_lines()[last..],
        [] as [String; 0],
        "{label}: lines after the last step"
    );
    assert!(daemon.stop(), "{label}: stopped through its pid file");
    outcomes
}

/// The expected answers, checked on luahost's own outcomes so that a setup
/// mistake cannot pass because every proxy gets it wrong the same way.
fn check_luahost(o: &[Outcome]) {
    let text = "all in one, compressed when asked. ".repeat(40) + "\n";
    let [svc_gz, svc, json_gz, page_gz, page, admin] = o else {
        panic!("six outcomes expected: {o:#?}");
    };
    assert_eq!(
        svc_gz.content_encoding.as_deref(),
        Some("gzip"),
        "{svc_gz:#?}"
    );
    assert_eq!(svc_gz.vary.as_deref(), Some("Accept-Encoding"));
    assert_eq!(svc_gz.body, text);
    assert_eq!(svc.content_encoding, None);
    assert_eq!(svc.body, text);
    // application/json is not in `compression type`.
    assert_eq!(json_gz.content_encoding, None, "{json_gz:#?}");
    assert_eq!(
        page_gz.content_encoding.as_deref(),
        Some("gzip"),
        "{page_gz:#?}"
    );
    assert_eq!(page_gz.body, ORIGIN_BODY);
    assert_eq!(page.body, ORIGIN_BODY);
    assert_eq!(admin.status, 403);
    for x in [svc_gz, svc, json_gz, page_gz, page] {
        assert_eq!(x.status, 200);
        assert_eq!(x.greeting.as_deref(), Some("hello-prod"), "the .if branch");
        assert_eq!(x.bool_report.as_deref(), Some("boolean:true"));
    }
    let traffic = |x: &Outcome| {
        x.unix
            .iter()
            .find(|l| l.contains("\"GET "))
            .cloned()
            .unwrap_or_default()
    };
    let line = traffic(svc_gz);
    assert!(
        line.starts_with("<134>DATE allinone[PID]: 127.0.0.1:PORT [DATE] www pages/<lua.pages> "),
        "{line}"
    );
    assert!(line.contains("{test.local|gzip} {text/plain|}"), "{line}");
    assert!(
        traffic(page).contains(" www app/origin "),
        "{}",
        traffic(page)
    );
    assert!(
        admin.udp.iter().any(|l| l.ends_with(": tagged /admin")),
        "{:#?}",
        admin.udp
    );
}

#[test]
fn one_configuration_with_every_field_keyword_answers_and_logs_as_haproxy() {
    let user = running_as_root();
    if !user {
        eprintln!("not root: `user nobody` left out of the configuration (it needs root)");
    }
    let ours = run(
        &artifacts().luahost(),
        "luahost",
        &Variant {
            bool_normal: true,
            user,
        },
        |_| true,
    );
    check_luahost(&ours);
    let peer_variant = Variant {
        bool_normal: false,
        user,
    };
    let mut compared = 0;
    if let Some(h3) = haproxy_30() {
        let theirs = run(&h3.program, &h3.label, &peer_variant, |_| true);
        for ((step, a), b) in STEPS.iter().zip(&ours).zip(&theirs) {
            assert_eq!(
                a.without_bool(),
                b.without_bool(),
                "{} {} (gzip: {}): luahost, then {}",
                step.path,
                "differs",
                step.gzip,
                h3.label
            );
            // HAProxy 3.0 has no bool-sample-conversion: integers.
            if let Some(report) = &b.bool_report {
                assert_eq!(report, "number:1", "{}", h3.label);
            }
        }
        compared += 1;
    }
    if let Some(h26) = haproxy_26() {
        eprintln!(
            "{}: the requests for a compressed Lua service are left out (2.6 repeats transfer-encoding there)",
            h26.label
        );
        let theirs = run(&h26.program, &h26.label, &peer_variant, |s| {
            !s.compressed_service
        });
        let ours_kept = STEPS
            .iter()
            .zip(&ours)
            .filter(|(s, _)| !s.compressed_service);
        for ((step, a), b) in ours_kept.zip(&theirs) {
            assert_eq!(
                a.without_bool(),
                b.without_bool(),
                "{} (gzip: {}): luahost, then {}",
                step.path,
                step.gzip,
                h26.label
            );
            if let Some(report) = &b.bool_report {
                assert_eq!(report, "number:1", "{}", h26.label);
            }
        }
        compared += 1;
    }
    if compared == 0 {
        eprintln!("no HAProxy installed: luahost's answers checked alone");
    }
}
