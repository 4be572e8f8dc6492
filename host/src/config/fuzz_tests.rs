//! Configuration parser fuzzing: realistic configurations, mutated line by
//! line and word by word, parsed and planned. Whatever the input, nothing
//! panics and every error names `file:line` of a line of the file.

use super::{parse_str, ConfigError};
use crate::fuzz::{self, Rng};

/// Realistic configurations: every section kind, ACLs, rules, log-format,
/// maps, Lua loads, servers.
const CORPUS: &[&str] = &[
    r#"global
  maxconn 2000
  nbthread 2
  pidfile /tmp/luahost-fuzz.pid
  lua-load svc.lua arg1 "arg 2"
  lua-load-per-thread per.lua
  lua-prepend-path /usr/share/lua/?.lua
  tune.bufsize 16k
  tune.lua.forced-yield 5000
  tune.lua.maxmem 64
  tune.lua.session-timeout 2s
  log stderr format raw local0 info

defaults
  mode http
  timeout client 10s
  timeout server 10s
  timeout connect 2s
  option http-keep-alive
  option forwardfor
  backlog 100
  log global

frontend web
  bind 127.0.0.1:8080,127.0.0.1:8081 backlog 64
  maxconn 500
  acl is_api path_beg /api/ /v1/
  acl small req.hdr_val(content-length) le 1024
  acl range req.hdr_val(x-n) 5:9 -- -3 gt 7
  acl host_ok hdr(host) -i -m dom example.com
  acl bad_src src 192.0.2.0/24 2001:db8::/32
  acl has_cookie req.cook(session) -m found
  http-request deny deny_status 403 if bad_src !host_ok
  http-request set-var(txn.path) path,lower
  http-request set-header x-forwarded-path %[var(txn.path)]
  http-request add-header x-len %[req.hdr_val(content-length),add(1),mul(2)]
  http-request return status 200 content-type text/plain lf-string "ok %[path]" if { path /health }
  http-request redirect location /login code 302 if !has_cookie { path_beg /private }
  http-request use-service lua.hello if { path /lua }
  http-request lua.act arg1
  http-response set-header x-served-by luahost
  http-after-response set-header x-took %Tt
  use_backend api if is_api small
  use_backend %[req.hdr(x-backend),lower] if { req.hdr(x-backend) -m found }
  default_backend app

backend app
  balance roundrobin
  retries 2
  timeout queue 5s
  option httpclose
  http-request set-header host app.internal
  server s1 127.0.0.1:9000 weight 10 maxconn 100 check inter 2s rise 3 fall 2
  server s2 127.0.0.1:9001 backup
  server s3 [::1]:9002 disabled

backend api
  balance leastconn
  http-request set-path %[path,regsub(^/api/,/)]
  server a1 127.0.0.1:9100
"#,
    r#"global
  nbthread 1
  lua-load tcp.lua
  tune.lua.blocking-calls warn

defaults tcpdefs
  mode tcp
  timeout client 30s
  timeout server 30s
  timeout connect 5s

listen echo
  bind :7000
  tcp-request inspect-delay 2s
  tcp-request content accept if { req.len gt 0 }
  tcp-request content reject if { req.payload(0,4) -m bin 47455420 }
  tcp-request content use-service lua.echo
  balance source

listen relay from tcpdefs
  bind ipv4@127.0.0.1:7001
  server r1 127.0.0.1:7100 check
  server r2 127.0.0.1:7101

defaults httpdefs
  mode http
  timeout client 5s
  timeout http-request 3s

frontend maps
  bind [::1]:8443
  acl known_host req.hdr(host),map_str(@DIR@/hosts.map) -m found
  http-request set-var(sess.route) req.hdr(host),map_beg(@DIR@/routes.map,default)
  http-request set-var(txn.n) str(abc),length,add(txn.m)
  http-request set-header x-ua "%[req.hdr(user-agent)] %{+Q}[path]"
  http-request deny deny_status 503 if !known_host
  http-request del-header x-secret
  http-request replace-header host (.*):.* \1
  http-request unset-var(sess.route) if { path_len gt 100 }
  http-request return status 404 hdr x-a b hdr x-c "%[path]" string "none\n"
  http-response del-header server
  default_backend be2

backend be2
  server b1 127.0.0.1:9200
"#,
];

/// Words that configurations are made of, and the edge cases of each kind.
const TOKENS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "bind",
    "acl",
    "http-request",
    "http-response",
    "tcp-request",
    "content",
    "server",
    "balance",
    "option",
    "no",
    "timeout",
    "maxconn",
    "backlog",
    "use_backend",
    "default_backend",
    "lua-load",
    "mode",
    "http",
    "tcp",
    "if",
    "unless",
    "!",
    "or",
    "||",
    "{",
    "}",
    "{}",
    "-m",
    "-i",
    "-f",
    "-u",
    "-M",
    "--",
    "int",
    "str",
    "beg",
    "reg",
    "len",
    "found",
    "bin",
    "ip",
    "0",
    "1",
    "-1",
    "65535",
    "65536",
    "2147483648",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "1e9",
    "0x10",
    "+5",
    "1.5",
    "5s",
    "-5s",
    "1.5s",
    "99999999999d",
    "100000000000000000000000ms",
    "16k",
    "99999999999g",
    "",
    "\"\"",
    "''",
    "\"",
    "'",
    "\\",
    "\\x41",
    "\\\"",
    "#",
    "# comment",
    "%[",
    "]",
    "%[path]",
    "%[req.hdr(host),lower]",
    "%[str(),map(/nonexistent)]",
    "%{+Q}r",
    "%[var(txn.x)]",
    "%",
    "%%",
    "%{",
    "%Tt",
    "%ci",
    "\"%[path,regsub(a,b,g)]\"",
    "lua.x",
    "lua.",
    "req.hdr(host)",
    "req.hdr(",
    "req.hdr())",
    "path,lower,upper",
    "int(-9223372036854775808)",
    "str(a,b,c)",
    "map(/x)",
    "regsub((,b)",
    "regsub(a,b,q)",
    "set-var(txn.x)",
    "set-var(x)",
    "set-var()",
    "return",
    "status",
    "deny",
    "deny_status",
    "999",
    "100",
    "redirect",
    "location",
    "code",
    "use-service",
    "ipv6@",
    "[::1]:80",
    ":65536",
    "*:0",
    "127.0.0.1:",
    "unix@/x",
    "tune.bufsize",
    "é",
    "€uro",
    "\t",
    "$HOME",
    "\"${HOME}\"",
    "'unterminated",
    "5:9",
    "9:5",
    "-5",
    ":",
    "a,b",
    "(",
    ")",
    ",",
    "str(x),add(1)",
    "add(9223372036854775807)",
    "div(0)",
    "mod(0)",
    "lf-string",
    "hdr",
    "content-type",
    "check",
    "inter",
    "rise",
    "fall",
    "weight",
    "backup",
    "disabled",
    "1000000",
];

/// Characters inserted inside words.
const CHARS: &[char] = &[
    ' ', '\t', '"', '\'', '\\', '#', '%', '[', ']', '{', '}', '(', ')', ',', ':', '-', '.', '/',
    '$', '\0', '\r', 'é', '\u{7f}', '0', '9', 'x',
];

/// Applies one random mutation to `lines`.
fn mutate(rng: &mut Rng, lines: &mut Vec<String>, corpus: &[String]) {
    if lines.is_empty() {
        lines.push(rng.pick(TOKENS).to_string());
        return;
    }
    let i = rng.below(lines.len());
    match rng.below(9) {
        0 => {
            lines.remove(i);
        }
        1 => {
            let l = lines[i].clone();
            let at = rng.below(lines.len() + 1);
            lines.insert(at, l);
        }
        2 | 3 => {
            let mut words: Vec<String> = lines[i].split_whitespace().map(String::from).collect();
            let w = rng.pick(TOKENS).to_string();
            if words.is_empty() {
                words.push(w);
            } else {
                let j = rng.below(words.len());
                words[j] = w;
            }
            lines[i] = format!("  {}", words.join(" "));
        }
        4 => {
            let cut: Vec<char> = lines[i].chars().collect();
            let n = rng.below(cut.len() + 1);
            lines[i] = cut[..n].iter().collect();
        }
        5 => {
            let mut words: Vec<String> = lines[i].split_whitespace().map(String::from).collect();
            let at = rng.below(words.len() + 1);
            words.insert(at, rng.pick(TOKENS).to_string());
            lines[i] = format!("  {}", words.join(" "));
        }
        6 => {
            let mut chars: Vec<char> = lines[i].chars().collect();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(chars.len() + 1);
                chars.insert(at, *rng.pick(CHARS));
            }
            lines[i] = chars.into_iter().collect();
        }
        7 => {
            let j = rng.below(lines.len());
            lines.swap(i, j);
        }
        _ => {
            let other: Vec<&str> = rng.pick(corpus).lines().collect();
            lines[i] = rng.pick(&other).to_string();
        }
    }
}

/// The line number in `[t.cfg:N]`, if the message starts that way.
fn alert_line(msg: &str) -> Option<usize> {
    let rest = msg.strip_prefix("[ALERT] parsing [t.cfg:")?;
    rest[..rest.find(']')?].parse().ok()
}

fn check_located(what: &str, msg: &str, nlines: usize) -> Result<(), String> {
    match alert_line(msg) {
        Some(l) if (1..=nlines.max(1)).contains(&l) => Ok(()),
        Some(l) => Err(format!("{what} error names line {l} of {nlines}: {msg}")),
        None => Err(format!("{what} error without [t.cfg:LINE]: {msg}")),
    }
}

fn check_config(text: &str) -> Result<(), String> {
    let nlines = text.lines().count();
    let cfg = match parse_str("t.cfg", text) {
        Ok(cfg) => cfg,
        Err(errors) => {
            if errors.is_empty() {
                return Err("parse failed without an error".into());
            }
            for e in &errors {
                let ConfigError { location, .. } = e;
                if location.as_ref().map(|l| &*l.file) != Some("t.cfg") {
                    return Err(format!("error without a location: {e}"));
                }
                check_located("parse", &e.to_string(), nlines)?;
            }
            return Ok(());
        }
    };
    if let Err(errors) = crate::proxy::plan::build(&cfg) {
        for e in &errors {
            check_located("plan", e, nlines)?;
        }
    }
    if let Err(errors) = crate::backend::Registry::build(&cfg) {
        for e in &errors {
            check_located("backend", e, nlines)?;
        }
    }
    Ok(())
}

/// Seeds that once found a bug (see the commit that added each).
const REGRESSIONS: &[u64] = &[];

#[test]
fn fuzz_config_parser_errors_carry_file_and_line() {
    // Map files the corpus uses, in a directory of their own.
    let dir = crate::sample::testutil::temp_dir("config-fuzz");
    std::fs::write(dir.join("hosts.map"), "example.com 1\nexample.org 2\n").unwrap();
    std::fs::write(dir.join("routes.map"), "www. web\napi. api\n").unwrap();
    let corpus: Vec<String> = CORPUS
        .iter()
        .map(|c| c.replace("@DIR@", &dir.display().to_string()))
        .collect();
    // The unmutated corpus must be valid: mutations start from sense.
    for c in &corpus {
        let cfg = parse_str("t.cfg", c).unwrap_or_else(|e| panic!("corpus: {e:?}"));
        if let Err(e) = crate::proxy::plan::build(&cfg) {
            panic!("corpus plan: {e:?}");
        }
    }
    fuzz::run("fuzz_config_parser", 1500, REGRESSIONS, |rng| {
        let mut lines: Vec<String> = rng.pick(&corpus).lines().map(String::from).collect();
        for _ in 0..1 + rng.below(4) {
            mutate(rng, &mut lines, &corpus);
        }
        let text = lines.join("\n");
        check_config(&text).map_err(|e| format!("{e}\n--- config ---\n{text}"))
    });
}
