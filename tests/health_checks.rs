//! Health checks (issue 13, item 4): the check keywords (`track` chains
//! and loops included) pass and fail `-c` as HAProxy 3.0's do. Real checks
//! against real sockets (DOWN/UP, `track`, `observe`) are compared with
//! HAProxy 3.0 in server_events.rs.

use luahost_suite::{artifacts, check_config, require_haproxy_30};

/// Lines placed in `backend be` (line 7 of the file; `server s0` follows
/// with `check`), accepted (true) or refused by luahost and HAProxy 3.0,
/// and a piece of luahost's message for refusals.
const CASES: &[(&str, bool, &str)] = &[
    ("server s1 127.0.0.1:1 check inter 1s fastinter 500ms downinter 2s rise 2 fall 3 port 9000 addr 127.0.0.2", true, ""),
    ("server s1 127.0.0.1:1 check observe layer7 error-limit 5 on-error mark-down", true, ""),
    ("server s1 127.0.0.1:1 check observe layer4 on-error fail-check", true, ""),
    ("server s1 127.0.0.1:1 check on-error sudden-death", true, ""),
    ("server s1 127.0.0.1:1 check on-error fastinter", true, ""),
    ("server s1 127.0.0.1:1 check inter", false, "'inter' expects a delay as argument"),
    ("server s1 127.0.0.1:1 check inter 0", false, "invalid value 0 for argument 'inter' of server s1"),
    ("server s1 127.0.0.1:1 check fastinter 0", false, "invalid value 0 for argument 'fastinter'"),
    ("server s1 127.0.0.1:1 check downinter -1", false, "'server be/s1'"),
    ("server s1 127.0.0.1:1 check rise 0", false, "'rise' has to be > 0"),
    ("server s1 127.0.0.1:1 check fall x", false, "'fall' has to be > 0"),
    ("server s1 127.0.0.1:1 check observe layer9", false, "'observe' expects one of 'none', 'layer4', 'layer7' but got 'layer9'"),
    ("server s1 127.0.0.1:1 check on-error bogus", false, "'on-error' expects one of 'fastinter', 'fail-check', 'sudden-death' or 'mark-down' but got 'bogus'"),
    ("server s1 127.0.0.1:1 check error-limit 0", false, "error-limit has to be > 0"),
    ("server s1 127.0.0.1:1 on-marked-down shutdown-sessions on-marked-up shutdown-backup-sessions", true, ""),
    ("server s1 127.0.0.1:1 check on-marked-down shutdown-sessions backup", true, ""),
    ("server s1 127.0.0.1:1 on-marked-down foo", false, "'server be/s1' : 'on-marked-down' expects 'shutdown-sessions' but got 'foo'."),
    ("server s1 127.0.0.1:1 on-marked-up shutdown-sessions", false, "'server be/s1' : 'on-marked-up' expects 'shutdown-backup-sessions' but got 'shutdown-sessions'."),
    ("server s1 127.0.0.1:1 on-marked-up", false, "'on-marked-up' expects 'shutdown-backup-sessions' but got ''."),
    ("server s1 127.0.0.1:1 check addr nothost!", false, "'addr' : invalid address: 'nothost!'"),
    ("server s1 127.0.0.1:1 track s0", true, ""),
    ("server s1 127.0.0.1:1 track be/s0", true, ""),
    ("server s1 127.0.0.1:1 track nobe/s1", false, "unable to find required proxy 'nobe' for tracking"),
    ("server s1 127.0.0.1:1 track s9", false, "unable to find required server 's9' for tracking"),
    ("server s2 127.0.0.1:2\n server s1 127.0.0.1:1 track s2", false, "does not have any check nor agent enabled"),
    ("server s1 127.0.0.1:1 track s0 check", false, "'server be/s1' : unable to enable checks and tracking at the same time!"),
    ("server s2 127.0.0.1:2 track s0\n server s1 127.0.0.1:1 track s2", true, ""),
    ("server s2 127.0.0.1:2 track s1\n server s1 127.0.0.1:1 track s2", false, "'server be/s1' : unable to track be/s2 as it belongs to a tracking chain looping back to be/s1."),
    ("server s1 127.0.0.1:1 track s1", false, "unable to track be/s1 as it belongs to a tracking chain looping back to be/s1."),
    ("option httpchk", true, ""),
    ("option httpchk /health", true, ""),
    ("option httpchk GET /health HTTP/1.1\n http-check send hdr Host example.com\n http-check expect status 200-399", true, ""),
    ("option httpchk GET / HTTP/1.1 extra", false, "'option httpchk' cannot handle unexpected argument 'extra'"),
    ("option httpchk\n http-check expect status", false, "'status' expects a <pattern> as argument"),
    ("option httpchk\n http-check expect foo 200", false, "but got 'foo'"),
    ("option httpchk\n http-check expect ! string foo", true, ""),
    ("option httpchk\n http-check expect !status 500", true, ""),
    ("option httpchk\n http-check expect rstatus ^2", true, ""),
    ("option httpchk\n http-check expect rstring ^OK", true, ""),
    ("option httpchk\n http-check expect rstring [", false, "regex '[' is invalid"),
    ("option httpchk\n http-check send meth", false, "'meth' expects a string as argument"),
    ("option httpchk\n http-check send uri /x ver HTTP/1.0 hdr X y body abc", true, ""),
    ("option httpchk\n http-check connect port 80", true, ""),
    ("option httpchk\n http-check bogus", false, "but got 'bogus'"),
    ("http-check expect status 200", true, ""),
    ("option tcp-check\n tcp-check connect port 22\n tcp-check send PING\\r\\n\n tcp-check expect string +PONG", true, ""),
    ("option tcp-check\n tcp-check send-binary 50494e47\n tcp-check expect binary 4f4b\n tcp-check expect rstring ^OK", true, ""),
    ("option tcp-check\n tcp-check send", false, "'tcp-check send' : 'string' expects a send as argument"),
    ("option tcp-check\n tcp-check send-binary zz", false, "invalid binary string (an hex digit is expected (found 'z'))"),
    ("option tcp-check\n tcp-check expect", false, "expects at least a matching pattern"),
    ("option tcp-check\n tcp-check bogus", false, "but got 'bogus'"),
    ("timeout check 2s", true, ""),
    ("timeout check", false, "'timeout check'"),
];

#[test]
fn check_keywords_pass_and_fail_check_like_haproxy3() {
    let dir = luahost_suite::scratch_dir("health_keywords");
    let reference = require_haproxy_30("the reference for `-c`");
    for (i, (lines, accepted, expected)) in CASES.iter().enumerate() {
        let name = format!("h{i}.cfg");
        let body = format!(
            "defaults\n mode http\n timeout connect 1s\n timeout client 1s\n timeout server 1s\nbackend be\n {lines}\n server s0 127.0.0.1:2 check\n"
        );
        std::fs::write(dir.join(&name), body).expect("write");
        let out = check_config(&artifacts().luahost(), &dir, &name);
        assert_eq!(
            out.status == Some(0),
            *accepted,
            "luahost -c on {lines:?}: {out:?}"
        );
        if !accepted {
            // The error names the file and the line the offending word is on.
            let lineno = 7 + lines.lines().count() - 1;
            let at = format!("[{name}:{lineno}]");
            assert!(
                out.stderr.contains(&at) && out.stderr.contains(expected),
                "{lines:?}: expected {at} and {expected:?} in {}",
                out.stderr
            );
        }
        if let Some(h) = &reference {
            let (ok, stderr) = h.accepts(&dir, &name);
            assert_eq!(ok, *accepted, "haproxy3 -c on {lines:?}: {stderr}");
        }
    }
}

/// `http-check` rules without `option httpchk` are accepted and ignored,
/// with HAProxy's warning.
#[test]
fn http_check_rules_without_the_option_are_ignored_with_a_warning() {
    let dir = luahost_suite::scratch_dir("health_unused_rules");
    let body = "defaults\n mode http\n timeout connect 1s\n timeout client 1s\n timeout server 1s\nbackend be\n http-check expect status 200\n server s0 127.0.0.1:2 check\n";
    std::fs::write(dir.join("w.cfg"), body).expect("write");
    let out = check_config(&artifacts().luahost(), &dir, "w.cfg");
    assert_eq!(out.status, Some(0), "{out:?}");
    assert!(
        out.stderr.contains(
            "backend 'be' uses http-check rules without 'option httpchk', so the rules are ignored"
        ),
        "{}",
        out.stderr
    );
}
