//! Whole-configuration tests: every keyword, defaults inheritance, every error
//! path with its exact `[file:line]`, several files, and robustness.

use super::lexer::tests::MapEnv;
use super::*;
use std::net::SocketAddr;
use std::time::Duration;

fn ok(text: &str) -> Config {
    match parse_str("t.cfg", text) {
        Ok(c) => c,
        Err(errors) => panic!("unexpected errors:\n{}", render(&errors)),
    }
}

fn render(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The errors of `text` as displayed.
fn errs(text: &str) -> Vec<String> {
    match parse_str("t.cfg", text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// The only error of `text`, as displayed.
fn err(text: &str) -> String {
    let all = errs(text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.into_iter().next().unwrap_or_default()
}

fn ms(v: u64) -> Option<Duration> {
    Some(Duration::from_millis(v))
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn quickstart_like_config() {
    let c = ok(r#"
# luahost example
global
  lua-prepend-path "./target/release/lib?.so" cpath
  lua-prepend-path /usr/share/lua/?.lua
  lua-load examples/quickstart.lua "from the quickstart"
  nbthread 2

defaults
  mode http
  timeout client 5s
  timeout http-request 5s

frontend hello
  bind 127.0.0.1:8080
  http-request use-service lua.hello

listen echo
  mode tcp
  bind 127.0.0.1:8081
  tcp-request content use-service lua.echo
"#);
    let g = &c.global;
    assert_eq!(g.nbthread, Some(2));
    assert_eq!(g.lua_prepend_paths.len(), 2);
    assert_eq!(g.lua_prepend_paths[0].path, "./target/release/lib?.so");
    assert_eq!(g.lua_prepend_paths[0].kind, PathKind::Cpath);
    assert_eq!(g.lua_prepend_paths[1].kind, PathKind::Path);
    assert_eq!(g.lua_loads.len(), 1);
    assert_eq!(
        g.lua_loads[0].file,
        PathBuf::from("examples/quickstart.lua")
    );
    assert_eq!(g.lua_loads[0].args, ["from the quickstart"]);
    assert!(!g.lua_loads[0].per_thread);
    assert_eq!(g.lua_loads[0].location.to_string(), "t.cfg:6");

    assert_eq!(c.proxies.len(), 2);
    let hello = &c.proxies[0];
    assert_eq!(
        (hello.name.as_str(), hello.kind),
        ("hello", ProxyKind::Frontend)
    );
    assert_eq!(hello.location.to_string(), "t.cfg:14");
    assert_eq!(hello.mode, Mode::Http);
    assert_eq!(hello.timeouts.client, ms(5000));
    assert_eq!(hello.extras.binds[0].addr, sa("127.0.0.1:8080"));
    assert_eq!(hello.extras.binds[0].location.to_string(), "t.cfg:15");
    assert_eq!(
        hello.extras.http_request[0].action,
        Action::UseService {
            name: "hello".into()
        }
    );
    assert_eq!(hello.extras.http_request[0].location.line, 16);
    let echo = &c.proxies[1];
    assert_eq!((echo.kind, echo.mode), (ProxyKind::Listen, Mode::Tcp));
    assert_eq!(echo.extras.tcp_request_content.len(), 1);
    assert!(c.warnings.is_empty());
    assert!(c.frontend("hello").is_some());
    assert!(c.backend("hello").is_none());
    assert!(c.backend("echo").is_some());
}

#[test]
fn global_keywords() {
    let c = ok(r#"
global
  lua-load a.lua
  lua-load-per-thread /abs/b.lua x "y z"
  lua-prepend-path /p/?.lua path
  nbthread 4
  maxconn 1000
  tune.lua.forced-yield 5000
  tune.lua.maxmem 64
  tune.lua.session-timeout 4s
  tune.lua.service-timeout 1m
  tune.lua.task-timeout 250
  tune.lua.burst-timeout 500us
  tune.lua.blocking-calls deny
  tune.bufsize 32k
  log stderr local0
  log stdout format raw len 1024 daemon info notice
  pidfile /run/luahost.pid
global
  maxconn 2000
"#);
    let g = &c.global;
    assert_eq!(g.lua_loads.len(), 2);
    assert!(g.lua_loads[1].per_thread);
    assert_eq!(g.lua_loads[1].args, ["x", "y z"]);
    assert_eq!(g.nbthread, Some(4));
    // Several global sections merge; the later value wins.
    assert_eq!(g.maxconn, Some(2000));
    assert_eq!(
        g.lua,
        LuaTune {
            forced_yield: Some(5000),
            maxmem_mb: Some(64),
            session_timeout: ms(4000),
            service_timeout: ms(60_000),
            task_timeout: ms(250),
            burst_timeout: Some(Duration::from_micros(500)),
            blocking_calls: Some(BlockingCalls::Deny),
            ..LuaTune::default()
        }
    );
    assert_eq!(g.bufsize, Some(32 * 1024));
    assert_eq!(g.pidfile, Some(PathBuf::from("/run/luahost.pid")));
    assert_eq!(g.logs.len(), 2);
    assert_eq!(g.logs[0].dest, LogDest::Stderr);
    assert_eq!(g.logs[0].facility, "local0");
    assert_eq!((g.logs[0].level, g.logs[0].format.as_deref()), (None, None));
    let l = &g.logs[1];
    assert_eq!(l.dest, LogDest::Stdout);
    assert_eq!(l.format.as_deref(), Some("raw"));
    assert_eq!(l.max_len, Some(1024));
    assert_eq!(l.facility, "daemon");
    assert_eq!(
        (l.level, l.min_level),
        (Some(LogLevel::Info), Some(LogLevel::Notice))
    );
    assert_eq!(l.location.line, 17);

    let c = ok("global\n tune.lua.maxmem 0\n tune.lua.blocking-calls warn\n");
    assert_eq!(c.global.lua.maxmem_mb, Some(0));
    assert_eq!(c.global.lua.blocking_calls, Some(BlockingCalls::Warn));
    let c = ok("global\n tune.lua.blocking-calls allow\n");
    assert_eq!(c.global.lua.blocking_calls, Some(BlockingCalls::Allow));
    assert_eq!(c.global.lua.bytecode_allowed, None);
    let c = ok("global\n tune.lua.bytecode allow\n");
    assert_eq!(c.global.lua.bytecode_allowed, Some(true));
    let c = ok("global\n tune.lua.bytecode refuse\n");
    assert_eq!(c.global.lua.bytecode_allowed, Some(false));
}

#[test]
fn global_errors() {
    let cases: &[(&str, &str)] = &[
        ("lua-load", "'lua-load' expects a Lua file name"),
        ("lua-load \"\"", "'lua-load' expects a Lua file name"),
        ("lua-load-per-thread", "'lua-load-per-thread' expects a Lua file name"),
        ("lua-prepend-path", "'lua-prepend-path' expects a search path template such as /usr/share/lua/?.lua"),
        ("lua-prepend-path /x lib", "'lua-prepend-path' expects 'path' or 'cpath' after the template, got 'lib'"),
        ("lua-prepend-path /x path more", "'lua-prepend-path' does not take the argument 'more'"),
        ("nbthread 0", "'nbthread' expects a number of threads (an integer between 1 and 4096), got '0'"),
        ("nbthread", "'nbthread' expects a number of threads (an integer between 1 and 4096)"),
        ("nbthread 2 3", "'nbthread' does not take the argument '3'"),
        ("maxconn lots", "'maxconn' expects a number of connections (an integer >= 1), got 'lots'"),
        ("tune.lua.forced-yield -1", "'tune.lua.forced-yield' expects a number of instructions (an integer between 1 and 4294967295), got '-1'"),
        ("tune.lua.maxmem 1.5", "'tune.lua.maxmem' expects a size in megabytes (0 for unlimited) (an integer between 0 and 17592186044415), got '1.5'"),
        ("tune.lua.session-timeout abc", "'tune.lua.session-timeout' expects a time value like 5s, 100ms or 30000 (ms), got 'abc'"),
        ("tune.lua.service-timeout 1.5s", "'tune.lua.service-timeout' expects a time value like 5s, 100ms or 30000 (ms), got '1.5s' (fractional values are not accepted; use a smaller unit, e.g. 1500ms)"),
        ("tune.lua.task-timeout", "'tune.lua.task-timeout' expects a time value like 5s, 100ms or 30000 (ms)"),
        ("tune.lua.burst-timeout 5x", "'tune.lua.burst-timeout' expects a time value like 5s, 100ms or 30000 (ms), got '5x' (unknown unit 'x'; units are us, ms, s, m, h, d)"),
        ("tune.lua.blocking-calls maybe", "'tune.lua.blocking-calls' expects 'warn', 'deny' or 'allow', got 'maybe'"),
        ("tune.lua.blocking-calls", "'tune.lua.blocking-calls' expects 'warn', 'deny' or 'allow'"),
        ("tune.lua.bytecode yes", "'tune.lua.bytecode' expects 'refuse' or 'allow', got 'yes'"),
        ("tune.lua.bytecode", "'tune.lua.bytecode' expects 'refuse' or 'allow'"),
        ("tune.lua.bytecode allow now", "'tune.lua.bytecode' does not take the argument 'now'"),
        ("tune.bufsize 16q", "'tune.bufsize' expects a size like 16384, 16k or 1m, got '16q'"),
        ("tune.bufsize 100", "'tune.bufsize' must be between 1024 and 2147483647 bytes, got '100'"),
        ("pidfile", "'pidfile' expects a file name"),
        ("log tcp@127.0.0.1:514 local0", "log target 'tcp@127.0.0.1:514': the 'tcp@' address family is not supported; use a unix socket path, HOST[:PORT], udp@HOST[:PORT], stdout or stderr"),
        ("log 127.0.0.1:99999 local0", "log target '127.0.0.1:99999': the port must be a number from 0 to 65535"),
        ("log", "'log' expects a target (a unix socket path, HOST[:PORT], udp@HOST[:PORT], stdout or stderr) and a syslog facility, or 'global'"),
        ("log-tag", "'log-tag' expects a tag"),
        ("log global", "'log global' only makes sense in a proxy section; in 'global', name a target such as 'stderr local0'"),
        ("log stderr", "'log' expects a syslog facility (one of: kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, auth2, ftp, ntp, audit, alert, cron2, local0, local1, local2, local3, local4, local5, local6, local7)"),
        ("log stderr local9", "'log' expects a syslog facility (one of: kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, auth2, ftp, ntp, audit, alert, cron2, local0, local1, local2, local3, local4, local5, local6, local7), got 'local9'"),
        ("log stderr local0 loud", "'log' expects a level (one of: emerg, alert, crit, err, warning, notice, info, debug), got 'loud'"),
        ("log stderr local0 info debug extra", "'log' does not take the argument 'extra'"),
        ("log stderr format json local0", "'log format' expects one of: local, rfc3164, rfc5424, priority, short, timed, iso, raw; got 'json'"),
        ("log stderr len 10 local0", "'log len' expects a line length (an integer between 80 and 65535), got '10'"),
        ("log stderr sample 1:2 local0", "'log ... sample' is not supported yet"),
        ("stats socket /run/x.sock level root", "'stats socket' : ''level' only supports 'user', 'operator', and 'admin' (got 'root')'"),
        ("master-worker x", "'master-worker' cannot handle unexpected argument 'x'."),
        ("master-worker no-exit-on-failure", "'master-worker no-exit-on-failure' is not supported by luahost: the master exits when its worker dies, so that a service manager restarts it"),
        ("stats socket", "'stats socket' in global section expects an address or a path to a UNIX socket"),
        ("stats socket /run/s mode 99", "'stats socket' : ''mode' : missing or invalid mode '99' (octal integer expected)'"),
        ("stats socket /run/s expose-fd listeners", "'stats socket' : unknown keyword 'expose-fd'. luahost supports 'level', 'mode', 'uid', 'gid', 'user' and 'group' here."),
        ("stats socket unix@", "'stats socket' : 'unix@': missing UNIX socket path"),
        ("stats socket ipv4@127.0.0.1", "'stats socket' : '127.0.0.1': missing ':PORT' after the address"),
        ("stats timeout 0", "'stats timeout' expects a positive value"),
        ("stats timeout 5x", "'stats timeout' : unexpected character 'x'"),
        ("stats maxconn 0", "'stats maxconn' expects a positive value"),
        ("stats bind-process 1", "'stats bind-process' is not supported anymore."),
        ("stats uri /", "'stats' only supports 'socket', 'maxconn', 'bind-process' and 'timeout' (got 'uri')"),
        ("user no-such-user-xyz", "cannot find user id for 'no-such-user-xyz'"),
        ("group no-such-group-xyz", "cannot find group id for 'no-such-group-xyz'"),
        ("chroot", "'chroot' expects a directory as an argument."),
        ("bind :80", "unknown keyword 'bind' in 'global' section; expected one of: lua-load, lua-load-per-thread, lua-prepend-path, nbthread, maxconn, pidfile, log, log-tag, log-send-hostname, tune.bufsize, tune.lua.forced-yield, tune.lua.maxmem, tune.lua.session-timeout, tune.lua.service-timeout, tune.lua.task-timeout, tune.lua.burst-timeout, tune.lua.blocking-calls, tune.lua.bool-sample-conversion, tune.lua.log.loggers, tune.lua.log.stderr, tune.lua.openlibs, tune.lua.bytecode, httpclient.retries, httpclient.timeout.connect, httpclient.ssl.verify, httpclient.ssl.ca-file, httpclient.resolvers.id, httpclient.resolvers.prefer, httpclient.resolvers.disabled, httpclient.pool.idle-timeout"),
    ];
    for (line, message) in cases {
        let text = format!("global\n  {line}\n");
        assert_eq!(
            err(&text),
            format!("[ALERT] parsing [t.cfg:2] : {message}"),
            "for line {line:?}"
        );
    }
    assert_eq!(
        err("global extra\n"),
        "[ALERT] parsing [t.cfg:1] : 'global' does not take the argument 'extra'"
    );
}

#[test]
fn proxy_keywords() {
    let c = ok(r#"
frontend www
  mode http
  bind :80
  bind 127.0.0.1:8080,[::1]:8443
  bind ipv6@:::81
  timeout client 30s
  timeout http-request 10s
  timeout http-keep-alive 2s
  maxconn 500
  description main web entry
  option forwardfor except 10.0.0.0/8 header X-Real-IP if-none
  option http-keep-alive
  option httplog
  option dontlognull
  log global
  log stderr local1 err
  acl is_api path_beg -i /api
  acl is_api path_beg /v2
  acl host_ok req.hdr(host),lower -m str example.com
  http-request set-header X-Forwarded-Proto http
  http-request deny deny_status 403 unless host_ok
  http-request lua.auth "secret arg" if is_api !{ src 10.0.0.0/8 }
  http-response del-header Server
  http-after-response set-header X-Served-By luahost
  tcp-request inspect-delay 5s
  tcp-request content accept if HTTP
  use_backend api if is_api
  use_backend %[req.hdr(host),lower,map(/etc/hosts.map)]
  default_backend app

backend api
  mode http
  balance leastconn
  retries 2
  timeout server 1m
  timeout connect 5s
  timeout queue 10s
  timeout tunnel 1h
  option httpclose
  http-request set-path /v1%[path]
  tcp-response content reject
  server a1 10.0.0.1:8080 weight 10 maxconn 100 check inter 2s rise 3 fall 2
  server a2 api-2.internal:8080 backup disabled
  server a3 [2001:db8::3]:8080

backend app
  mode http
  balance source
  server s1 127.0.0.1:9000
"#);
    let f = &c.proxies[0];
    let addrs: Vec<SocketAddr> = f.extras.binds.iter().map(|b| b.addr).collect();
    assert_eq!(
        addrs,
        [
            sa("0.0.0.0:80"),
            sa("127.0.0.1:8080"),
            sa("[::1]:8443"),
            sa("[::]:81")
        ]
    );
    assert_eq!(f.extras.binds[2].location.line, 5);
    assert_eq!(
        *f.timeouts,
        Timeouts {
            client: ms(30_000),
            http_request: ms(10_000),
            http_keep_alive: ms(2_000),
            ..Timeouts::default()
        }
    );
    assert_eq!(f.extras.maxconn, Some(500));
    assert_eq!(f.extras.description.as_deref(), Some("main web entry"));
    assert_eq!(
        f.options,
        ProxyOptions {
            forwardfor: Some(Box::new(ForwardFor {
                except: Some("10.0.0.0/8".into()),
                header: Some("X-Real-IP".into()),
                if_none: true,
            })),
            http_keep_alive: true,
            httpclose: false,
            httplog: true,
            tcplog: false,
            dontlognull: true,
            log_separate_errors: false,
            abortonclose: false,
            http_buffer_request: false,
        }
    );
    assert!(f.log_global);
    assert_eq!(f.logs().len(), 1);
    assert_eq!(f.logs()[0].level, Some(LogLevel::Err));
    assert_eq!(f.extras.acls.len(), 3);
    assert_eq!(f.extras.acls[0].flags, vec![AclFlag::IgnoreCase]);
    assert_eq!(f.extras.acls[2].criterion, "req.hdr(host),lower");
    assert_eq!(f.extras.acls[2].location.line, 20);
    assert_eq!(f.extras.http_request.len(), 3);
    assert_eq!(
        f.extras.http_request[1].action,
        Action::Deny {
            status: Some(403),
            reply: None
        }
    );
    let cond = f.extras.http_request[1].cond.as_ref().unwrap();
    assert_eq!(cond.kind, CondKind::Unless);
    assert_eq!(cond.expr, CondExpr::Acl("host_ok".into()));
    let lua = &f.extras.http_request[2];
    assert_eq!(
        lua.action,
        Action::Lua {
            name: "auth".into(),
            args: vec!["secret arg".into()]
        }
    );
    assert_eq!(lua.words, ["lua.auth", "secret arg"]);
    let CondExpr::And(terms) = &lua.cond.as_ref().unwrap().expr else {
        panic!("expected an AND")
    };
    assert_eq!(terms[0], CondExpr::Acl("is_api".into()));
    assert!(matches!(&terms[1], CondExpr::Not(inner) if matches!(**inner, CondExpr::Anonymous(_))));
    assert_eq!(f.extras.http_response.len(), 1);
    assert_eq!(f.extras.http_after_response.len(), 1);
    assert_eq!(f.extras.tcp_request_inspect_delay, ms(5000));
    assert_eq!(f.extras.tcp_request_content[0].action, Action::Accept);
    assert_eq!(f.extras.use_backends.len(), 2);
    assert_eq!(f.extras.use_backends[0].name, "api");
    assert!(!f.extras.use_backends[0].is_dynamic());
    assert!(f.extras.use_backends[1].is_dynamic());
    assert!(f.extras.use_backends[1].cond.is_none());
    assert_eq!(
        f.extras
            .default_backend
            .as_ref()
            .map(|(n, l)| (n.as_str(), l.line)),
        Some(("app", 30))
    );

    let api = &c.proxies[1];
    assert_eq!(api.balance, Balance::LeastConn);
    assert_eq!(api.retries, Some(2));
    assert_eq!(
        *api.timeouts,
        Timeouts {
            server: ms(60_000),
            connect: ms(5_000),
            queue: ms(10_000),
            tunnel: ms(3_600_000),
            ..Timeouts::default()
        }
    );
    assert!(api.options.httpclose);
    assert_eq!(api.extras.tcp_response_content[0].action, Action::Reject);
    assert_eq!(api.servers.len(), 3);
    let a1 = &api.servers[0];
    assert_eq!(a1.addr, ServerAddr::Ip(sa("10.0.0.1:8080")));
    assert_eq!(
        (
            a1.weight,
            a1.maxconn,
            a1.check,
            a1.inter(),
            a1.rise(),
            a1.fall()
        ),
        (Some(10), Some(100), true, ms(2000), Some(3), Some(2))
    );
    assert_eq!(a1.location.line, 43);
    let a2 = &api.servers[1];
    assert_eq!(
        a2.addr,
        ServerAddr::Host {
            host: "api-2.internal".into(),
            port: 8080
        }
    );
    assert!(a2.backup && a2.disabled && !a2.check);
    assert_eq!(
        api.servers[2].addr,
        ServerAddr::Ip(sa("[2001:db8::3]:8080"))
    );
    assert_eq!(c.proxies[2].balance, Balance::Source);
}

#[test]
fn option_pairs_and_negation() {
    let c = ok(r#"
defaults
  mode http
  option httplog
  option http-keep-alive
  option forwardfor
  option dontlognull
listen a
  bind :80
  option tcplog
  option httpclose
  no option forwardfor
  no option dontlognull
  server s 1.2.3.4:80
listen b
  bind :81
  no option httplog
  no option http-keep-alive
  no log
  server s 1.2.3.4:80
"#);
    let a = &c.proxies[0].options;
    assert!(a.tcplog && !a.httplog);
    assert!(a.httpclose && !a.http_keep_alive);
    assert!(a.forwardfor.is_none() && !a.dontlognull);
    let b = &c.proxies[1].options;
    assert!(!b.httplog && !b.tcplog);
    assert!(!b.http_keep_alive && !b.httpclose);
    assert_eq!(b.forwardfor.as_deref(), Some(&ForwardFor::default()));
}

#[test]
fn defaults_inheritance() {
    let c = ok(r#"
defaults
  mode http
  timeout client 10s
  timeout server 20s
  timeout connect 3s
  timeout http-request 4s
  maxconn 100
  balance first
  retries 5
  option httplog
  log global
  default_backend app
  tcp-request inspect-delay 1s

frontend f1
  bind :80

backend app
  server s1 127.0.0.1:9000

listen l1
  bind :81
  timeout client 1s

defaults
  timeout client 7s

frontend f2
  bind :82
  default_backend app
"#);
    let f1 = &c.proxies[0];
    assert_eq!(f1.mode, Mode::Http);
    assert_eq!(f1.timeouts.client, ms(10_000));
    assert_eq!(f1.timeouts.http_request, ms(4_000));
    // Backend settings are not copied into a frontend, and vice versa.
    assert_eq!((f1.timeouts.server, f1.timeouts.connect), (None, None));
    assert_eq!((f1.balance, f1.retries), (Balance::RoundRobin, None));
    assert_eq!(f1.extras.maxconn, Some(100));
    assert!(f1.options.httplog && f1.log_global);
    assert_eq!(f1.extras.tcp_request_inspect_delay, ms(1000));
    let (name, loc) = f1.extras.default_backend.as_ref().unwrap();
    assert_eq!((name.as_str(), loc.line), ("app", 13));

    let app = &c.proxies[1];
    assert_eq!(app.timeouts.client, None);
    assert_eq!(app.timeouts.server, ms(20_000));
    assert_eq!((app.balance, app.retries), (Balance::First, Some(5)));
    assert_eq!(
        (app.extras.maxconn, app.extras.default_backend.as_ref()),
        (None, None)
    );

    let l1 = &c.proxies[2];
    assert_eq!(l1.timeouts.client, ms(1_000));
    assert_eq!(l1.timeouts.server, ms(20_000));
    assert_eq!(
        l1.extras.default_backend.as_ref().map(|d| d.0.as_str()),
        Some("app")
    );

    // The second defaults section replaces the first entirely.
    let f2 = &c.proxies[3];
    assert_eq!(f2.mode, Mode::Tcp);
    assert_eq!(f2.timeouts.client, ms(7_000));
    assert_eq!(f2.timeouts.http_request, None);
    assert_eq!(f2.extras.maxconn, None);
    assert!(!f2.options.httplog && !f2.log_global);
    assert_eq!(
        f2.extras.default_backend.as_ref().map(|d| d.1.line),
        Some(31)
    );
}

#[test]
fn named_defaults_and_from() {
    let c = ok(r#"
defaults web
  mode http
  timeout client 5s
defaults tcp from web
  mode tcp
defaults
  timeout client 9s
frontend a from web
  bind :80
  http-request deny
frontend b
  bind :81
frontend c from tcp
  bind :82
"#);
    assert_eq!(
        (c.proxies[0].mode, c.proxies[0].timeouts.client),
        (Mode::Http, ms(5000))
    );
    assert_eq!(
        (c.proxies[1].mode, c.proxies[1].timeouts.client),
        (Mode::Tcp, ms(9000))
    );
    assert_eq!(
        (c.proxies[2].mode, c.proxies[2].timeouts.client),
        (Mode::Tcp, ms(5000))
    );
    assert_eq!(
        err("frontend a from nope\n  bind :80\n"),
        "[ALERT] parsing [t.cfg:1] : 'from nope': no defaults section named 'nope' is declared above"
    );
    // A named defaults section is usable only once it is complete.
    assert_eq!(
        err("defaults d from d\n"),
        "[ALERT] parsing [t.cfg:1] : 'from d': no defaults section named 'd' is declared above"
    );
}

#[test]
fn section_header_errors() {
    assert_eq!(
        err("frontend\n  bind :80\n"),
        "[ALERT] parsing [t.cfg:1] : 'frontend' expects a name"
    );
    assert_eq!(
        err("backend a/b\n"),
        "[ALERT] parsing [t.cfg:1] : character '/' is not permitted in backend name 'a/b' (letters, digits, '-', '_', '.' and ':' are)"
    );
    assert_eq!(
        err("listen web :80\n  bind :81\n"),
        "[ALERT] parsing [t.cfg:1] : 'listen' takes a name and an optional 'from DEFAULTS'; unexpected ':80' (listening addresses go on 'bind' lines)"
    );
    assert_eq!(
        err("defaults a b\n"),
        "[ALERT] parsing [t.cfg:1] : 'defaults' takes a name and an optional 'from DEFAULTS'; unexpected 'b' (listening addresses go on 'bind' lines)"
    );
    // Lines below a broken header are still checked.
    assert_eq!(
        errs("backend \"\"\n  balance nope\n"),
        [
            "[ALERT] parsing [t.cfg:1] : backend name must not be empty",
            "[ALERT] parsing [t.cfg:2] : 'balance' expects roundrobin, leastconn, first or source, got 'nope'",
        ]
    );
}

#[test]
fn proxy_keyword_errors() {
    // (section, line, message) with the line placed at t.cfg:2.
    let cases: &[(&str, &str, &str)] = &[
        ("frontend", "mode health", "'mode' expects 'http' or 'tcp', got 'health'"),
        ("frontend", "mode", "'mode' expects 'http' or 'tcp'"),
        ("frontend", "bind", "'bind' expects an address such as :80, 127.0.0.1:8080 or [::1]:443"),
        ("frontend", "bind :80 ssl crt /x.pem", "bind option 'ssl' is not supported yet; give only the address (and 'backlog N')"),
        ("frontend", "bind localhost:80", "'bind': 'localhost:80': 'localhost' is not an IP address (host names are not supported in 'bind')"),
        ("frontend", "bind :80,:0", "'bind': ':0': invalid port '0'; expected a number between 1 and 65535"),
        ("frontend", "timeout client abc", "'timeout client' expects a time value like 5s, 100ms or 30000 (ms), got 'abc'"),
        ("frontend", "timeout client 1.5s", "'timeout client' expects a time value like 5s, 100ms or 30000 (ms), got '1.5s' (fractional values are not accepted; use a smaller unit, e.g. 1500ms)"),
        ("frontend", "timeout client", "'timeout client' expects a time value like 5s, 100ms or 30000 (ms)"),
        ("frontend", "timeout client 5s 6s", "'timeout' does not take the argument '6s'"),
        ("frontend", "timeout lunch 1h", "'timeout' expects one of: client, server, connect, http-request, http-keep-alive, queue, tunnel, check, got 'lunch'"),
        ("frontend", "timeout tarpit 1s", "'timeout tarpit' is not supported yet"),
        ("frontend", "timeout check soon", "'timeout check' expects a time value like 5s, 100ms or 30000 (ms), got 'soon'"),
        ("frontend", "maxconn -5", "'maxconn' expects a number of connections (an integer >= 1), got '-5'"),
        ("frontend", "default_backend", "'default_backend' expects a backend name"),
        ("frontend", "default_backend a b", "'default_backend' does not take the argument 'b'"),
        ("frontend", "use_backend", "'use_backend' expects a backend name and an optional 'if' or 'unless' condition"),
        ("frontend", "use_backend app when x", "'use_backend': unexpected argument 'when'; expected 'if' or 'unless'"),
        ("frontend", "use_backend app if undeclared", "no such ACL: 'undeclared' (an ACL must be declared with 'acl' before the rule that uses it)"),
        ("frontend", "use_backend app if", "missing condition after 'if'"),
        ("frontend", "acl x", "in ACL 'x': missing fetch method (e.g. 'path_beg', 'req.hdr(host)')"),
        ("frontend", "http-request", "'http-request' expects an action; expected one of: lua.<name>, use-service lua.<name>, set-header, add-header, del-header, replace-header, set-path, set-query, set-var(<scope>.<name>), unset-var(<scope>.<name>), capture <sample> len <length>, deny, return, redirect, allow"),
        ("frontend", "http-request tarpit", "unknown action 'tarpit' in 'http-request' rules; expected one of: lua.<name>, use-service lua.<name>, set-header, add-header, del-header, replace-header, set-path, set-query, set-var(<scope>.<name>), unset-var(<scope>.<name>), capture <sample> len <length>, deny, return, redirect, allow"),
        ("frontend", "http-response set-path /x", "action 'set-path' is not valid in 'http-response' rules; expected one of: lua.<name>, set-header, add-header, del-header, replace-header, set-var(<scope>.<name>), unset-var(<scope>.<name>), deny, return, redirect, set-status, allow"),
        ("frontend", "tcp-request content close", "unknown action 'close' in 'tcp-request content' rules; expected one of: lua.<name>, use-service lua.<name>, accept, reject, set-var(<scope>.<name>), unset-var(<scope>.<name>)"),
        ("frontend", "tcp-request connection use-service lua.x", "action 'use-service' is not valid in 'tcp-request connection' rules; expected one of: accept, reject, set-var(<scope>.<name>), unset-var(<scope>.<name>)"),
        ("frontend", "tcp-request connection", "'tcp-request connection' expects an action; expected one of: accept, reject, set-var(<scope>.<name>), unset-var(<scope>.<name>)"),
        ("backend", "tcp-request connection reject", "'tcp-request connection' is not allowed in a 'backend' section (allowed in: frontend, listen)"),
        ("defaults", "tcp-request connection reject", "'tcp-request connection' rules in a 'defaults' section are not supported yet"),
        ("frontend", "tcp-request session reject", "'tcp-request session' is not supported yet"),
        ("frontend", "tcp-request", "'tcp-request' expects 'connection', 'content' or 'inspect-delay'"),
        ("frontend", "tcp-request inspect-delay soon", "'tcp-request inspect-delay' expects a time value like 5s, 100ms or 30000 (ms), got 'soon'"),
        ("backend", "tcp-response content", "'tcp-response content' expects an action; expected one of: lua.<name>, accept, reject, set-var(<scope>.<name>), unset-var(<scope>.<name>)"),
        ("backend", "tcp-response inspect-delay 1s", "'tcp-response inspect-delay' is not supported yet"),
        ("backend", "tcp-response", "'tcp-response' expects 'content'"),
        ("frontend", "errorfile 503", "errorfile : expects <status_code> and <file> as arguments."),
        ("frontend", "errorfile 503 /dev/null x", "errorfile : expects exactly two arguments."),
        ("frontend", "errorfile 302 /dev/null", "errorfile : status code '302' not handled."),
        ("frontend", "errorfile 503 /nonexistent/e.http", "errorfile : error opening file '/nonexistent/e.http'."),
        ("frontend", "compression algo brotli", "'compression' : 'brotli' is not a supported algorithm."),
        ("frontend", "compression algo", "'compression' expects <algorithm>."),
        ("frontend", "compression type", "'compression' expects <type>."),
        ("frontend", "compression foo", "'compression' expects 'algo', 'type' 'direction' or 'offload'"),
        ("frontend", "compression direction sideways", "'compression' expects 'request', 'response', or 'both'."),
        ("frontend", "compression direction both", "'compression direction both': compressing requests is not supported yet"),
        ("frontend", "compression algo-req gzip", "'compression algo-req': compressing requests is not supported yet"),
        ("frontend", "filter compression now", "'filter compression' : unknown keyword 'now'."),
        ("frontend", "filter cache c", "'filter cache' is not supported yet by luahost"),
        ("frontend", "filter foo", "'filter' : unknown keyword 'foo'; luahost supports 'compression'"),
        ("defaults", "filter compression", "'filter' is not allowed in a 'defaults' section (allowed in: frontend, backend, listen)"),
        ("frontend", "option http-buffer-request now", "'option http-buffer-request' does not take the argument 'now'"),
        ("backend", "server", "'server' expects a name and an address such as 10.0.0.1:8080"),
        ("backend", "server s1", "'server' expects a name and an address such as 10.0.0.1:8080"),
        ("backend", "server s/1 1.2.3.4:80", "character '/' is not permitted in server name 's/1' (letters, digits, '-', '_', '.' and ':' are)"),
        ("backend", "server s1 1.2.3.4", "server 's1': '1.2.3.4': missing ':PORT' after the address"),
        ("backend", "server s1 1.2.3.4:80 weight 300", "'server weight' expects a weight (an integer between 0 and 256), got '300'"),
        ("backend", "server s1 1.2.3.4:80 weight", "'server weight' expects a weight (an integer between 0 and 256)"),
        ("backend", "server s1 1.2.3.4:80 rise 0", "'server x/s1' : 'rise' has to be > 0."),
        ("backend", "server s1 1.2.3.4:80 fall x", "'server x/s1' : 'fall' has to be > 0."),
        ("backend", "server s1 1.2.3.4:80 inter 1.5s", "'server x/s1' : 'inter' expects a time value like 5s, 100ms or 30000 (ms), got '1.5s' (fractional values are not accepted; use a smaller unit, e.g. 1500ms)"),
        ("backend", "server s1 1.2.3.4:80 maxconn many", "'server maxconn' expects a number of connections (an integer >= 0), got 'many'"),
        ("backend", "server s1 1.2.3.4:80 ssl verify none", "server 's1': option 'ssl' is not supported yet; supported: weight, maxconn, disabled, enabled, backup, check, inter, fastinter, downinter, rise, fall, port, addr, track, observe, error-limit, on-error, on-marked-down, on-marked-up"),
        ("backend", "balance static-rr", "'balance static-rr' is not supported yet; supported: roundrobin, leastconn, first, source"),
        ("backend", "balance hdr(host)", "'balance hdr(host)' is not supported yet; supported: roundrobin, leastconn, first, source"),
        ("backend", "balance", "'balance' expects roundrobin, leastconn, first or source"),
        ("backend", "balance roundrobin extra", "'balance' does not take the argument 'extra'"),
        ("backend", "option redispatch", "'option' expects one of: forwardfor, http-keep-alive, httpclose, httplog, tcplog, dontlognull, log-separate-errors, abortonclose, httpchk, tcp-check, http-buffer-request; 'redispatch' is not supported (yet)"),
        ("backend", "option", "'option' expects one of: forwardfor, http-keep-alive, httpclose, httplog, tcplog, dontlognull, log-separate-errors, abortonclose, httpchk, tcp-check, http-buffer-request"),
        ("backend", "no option bogus", "'no option' expects one of: forwardfor, http-keep-alive, httpclose, httplog, tcplog, dontlognull, log-separate-errors, abortonclose, httpchk, tcp-check, http-buffer-request; 'bogus' is not supported (yet)"),
        ("backend", "option httplog", "'option httplog' is not allowed in a 'backend' section (allowed in: defaults, frontend, listen)"),
        ("frontend", "option httpclose now", "'option httpclose' does not take the argument 'now'"),
        ("frontend", "option forwardfor header", "'option forwardfor header' expects a header name"),
        ("frontend", "option forwardfor except", "'option forwardfor except' expects a network such as 10.0.0.0/8"),
        ("frontend", "option forwardfor always", "'option forwardfor': unknown argument 'always'; expected except NETWORK, header NAME or if-none"),
        ("frontend", "no mode", "'no' only applies to 'option' and 'log', got 'mode'"),
        ("frontend", "no log extra", "'no' does not take the argument 'extra'"),
        ("backend", "retries many", "'retries' expects a number of retries (an integer between 0 and 4294967295), got 'many'"),
        ("frontend", "log udp@:514 local0", "log target ':514': no host given"),
        ("frontend", "capture request header Host", "'capture' expects 'request header NAME len N' or 'response header NAME len N'"),
        ("frontend", "capture cookie X len 10", "'capture cookie' is not supported yet"),
        ("frontend", "capture request header Host len 0", "'capture len' expects a length (an integer between 1 and 65535), got '0'"),
        ("backend", "capture request header Host len 10", "'capture' is not allowed in a 'backend' section (allowed in: frontend, listen)"),
        ("backend", "http-request capture req.hdr(host) len 10", "'http-request capture ... len' is only allowed in a 'frontend' or 'listen' section"),
        ("frontend", "http-request capture req.hdr(host)", "'http-request capture' expects 'len N' after the sample (the 'id N' form is not supported yet)"),
        ("frontend", "log global now", "'log' does not take the argument 'now'"),
        ("frontend", "description", "'description' expects a text"),
        ("frontend", "stick-table type ip size 1m", "'stick-table' is not supported yet by luahost"),
        ("frontend", "nbthread 4", "'nbthread' is a 'global' keyword; it is not allowed in a 'frontend' section"),
        ("frontend", "daemon", "'daemon' is a 'global' keyword; it is not allowed in a 'frontend' section"),
        ("frontend", "frobnicate", "unknown keyword 'frobnicate' in 'frontend' section; expected one of: mode, bind, timeout, maxconn, backlog, default_backend, use_backend, acl, http-request, http-response, http-after-response, tcp-request, option, no, log, log-tag, log-format, capture, description, errorfile, compression, filter"),
        ("backend", "frobnicate", "unknown keyword 'frobnicate' in 'backend' section; expected one of: mode, timeout, acl, http-request, http-response, http-after-response, tcp-request, tcp-response, server, balance, option, no, retries, log, log-tag, description, http-check, tcp-check, errorfile, compression, filter"),
        ("defaults", "frobnicate", "unknown keyword 'frobnicate' in 'defaults' section; expected one of: mode, timeout, maxconn, backlog, default_backend, tcp-request, balance, option, no, retries, log, log-tag, log-format, http-check, tcp-check, errorfile, compression"),
        ("frontend", "server s1 1.2.3.4:80", "'server' is not allowed in a 'frontend' section (allowed in: backend, listen)"),
        ("frontend", "balance roundrobin", "'balance' is not allowed in a 'frontend' section (allowed in: defaults, backend, listen)"),
        ("frontend", "retries 3", "'retries' is not allowed in a 'frontend' section (allowed in: defaults, backend, listen)"),
        ("frontend", "tcp-response content accept", "'tcp-response' is not allowed in a 'frontend' section (allowed in: backend, listen)"),
        ("backend", "bind :80", "'bind' is not allowed in a 'backend' section (allowed in: frontend, listen)"),
        ("backend", "default_backend x", "'default_backend' is not allowed in a 'backend' section (allowed in: defaults, frontend, listen)"),
        ("backend", "use_backend x", "'use_backend' is not allowed in a 'backend' section (allowed in: frontend, listen)"),
        ("backend", "maxconn 10", "'maxconn' is not allowed in a 'backend' section (allowed in: defaults, frontend, listen)"),
        ("defaults", "bind :80", "'bind' is not allowed in a 'defaults' section (allowed in: frontend, listen)"),
        ("defaults", "acl a path /", "'acl' is not allowed in a 'defaults' section (allowed in: frontend, backend, listen)"),
        ("defaults", "http-request deny", "'http-request' is not allowed in a 'defaults' section (allowed in: frontend, backend, listen)"),
        ("defaults", "tcp-request content accept", "'tcp-request content' is not allowed in a 'defaults' section (allowed in: frontend, backend, listen)"),
        ("defaults", "use_backend a", "'use_backend' is not allowed in a 'defaults' section (allowed in: frontend, listen)"),
        ("defaults", "server s 1.2.3.4:5", "'server' is not allowed in a 'defaults' section (allowed in: backend, listen)"),
        ("defaults", "description x", "'description' is not allowed in a 'defaults' section (allowed in: frontend, backend, listen)"),
    ];
    for (section, line, message) in cases {
        // A frontend gets a bind and a backend reference is satisfiable so
        // that the only error is the one under test.
        let header = match *section {
            "defaults" => "defaults".to_string(),
            s => format!("{s} x"),
        };
        let tail = if *section == "frontend" {
            "  bind :1\n"
        } else {
            ""
        };
        let text = format!("{header}\n  {line}\n{tail}");
        assert_eq!(
            err(&text),
            format!("[ALERT] parsing [t.cfg:2] : {message}"),
            "for {section} line {line:?}"
        );
    }
}

#[test]
fn cross_checks() {
    // A frontend and a backend may share a name; same capabilities may not.
    let c =
        ok("frontend www\n  bind :80\n  default_backend www\nbackend www\n  server s 1.2.3.4:80\n");
    assert_eq!(c.proxies.len(), 2);
    assert_eq!(c.backend("www").map(|p| p.kind), Some(ProxyKind::Backend));
    assert_eq!(
        err("backend b\nbackend b\n"),
        "[ALERT] parsing [t.cfg:2] : backend 'b' has the same name as backend 'b' declared at t.cfg:1"
    );
    assert_eq!(
        err("frontend f\n  bind :80\nlisten f\n"),
        "[ALERT] parsing [t.cfg:3] : listen 'f' has the same name as frontend 'f' declared at t.cfg:1"
    );
    assert_eq!(
        err("backend b\nlisten b\n"),
        "[ALERT] parsing [t.cfg:2] : listen 'b' has the same name as backend 'b' declared at t.cfg:1"
    );
    assert_eq!(
        err("frontend f\n  mode http\n"),
        "[ALERT] parsing [t.cfg:1] : frontend 'f' has no 'bind' line; a frontend needs at least one listening address"
    );
    // A listen section without bind acts as a backend.
    ok("listen l\n  server s 1.2.3.4:80\n");
    assert_eq!(
        err("frontend f\n  bind :80\n  default_backend nope\n"),
        "[ALERT] parsing [t.cfg:3] : frontend 'f': 'default_backend' names backend 'nope', which does not exist"
    );
    assert_eq!(
        err("frontend f\n  bind :80\n  acl a path /\n  use_backend nope if a\n"),
        "[ALERT] parsing [t.cfg:4] : frontend 'f': 'use_backend' names backend 'nope', which does not exist"
    );
    // A frontend is not a backend.
    assert_eq!(
        err("frontend f\n  bind :80\n  default_backend g\nfrontend g\n  bind :81\n"),
        "[ALERT] parsing [t.cfg:3] : frontend 'f': 'default_backend' names backend 'g', which does not exist"
    );
    // Inherited references point at the defaults line.
    assert_eq!(
        err("defaults\n  default_backend gone\nfrontend f\n  bind :80\n"),
        "[ALERT] parsing [t.cfg:2] : frontend 'f': 'default_backend' names backend 'gone', which does not exist"
    );
    // Backends referenced later in the file are fine.
    ok("frontend f\n  bind :80\n  use_backend app\nbackend app\n");
    assert_eq!(
        err("frontend f\n  mode http\n  bind :80\n  default_backend t\nbackend t\n  mode tcp\n"),
        "[ALERT] parsing [t.cfg:4] : frontend 'f' is in http mode but its 'default_backend' backend 't' is in tcp mode"
    );
    ok("frontend f\n  mode tcp\n  bind :80\n  default_backend h\nbackend h\n  mode http\n");
    assert_eq!(
        err("backend b\n  server s 1.2.3.4:80\n  server t 1.2.3.4:81\n  server s 1.2.3.4:82\n"),
        "[ALERT] parsing [t.cfg:4] : server 's' is defined twice in backend 'b'"
    );
    // The same server name in two backends is fine.
    ok("backend a\n  server s 1.2.3.4:80\nbackend b\n  server s 1.2.3.4:80\n");
}

#[test]
fn acl_must_precede_its_use() {
    assert_eq!(
        err("frontend f\n  bind :80\n  http-request deny if late\n  acl late path /x\n"),
        "[ALERT] parsing [t.cfg:3] : no such ACL: 'late' (an ACL must be declared with 'acl' before the rule that uses it)"
    );
    // ACLs are per proxy.
    assert!(
        err("frontend f\n  bind :80\n  acl a path /\nbackend b\n  http-request deny if a\n")
            .starts_with("[ALERT] parsing [t.cfg:5] : no such ACL: 'a'")
    );
    ok("frontend f\n  bind :80\n  http-request deny if TRUE || LOCALHOST METH_POST\n");
}

#[test]
fn outside_sections_and_other_sections() {
    assert_eq!(
        errs("maxconn 10\n\n# fine\nmode http\nglobal\n"),
        [
            "[ALERT] parsing [t.cfg:1] : unknown keyword 'maxconn' out of section; a configuration file starts with a section keyword: global, defaults, frontend, backend or listen",
            "[ALERT] parsing [t.cfg:4] : unknown keyword 'mode' out of section; a configuration file starts with a section keyword: global, defaults, frontend, backend or listen",
        ]
    );
    // The lines of an unsupported section are skipped after one error.
    assert_eq!(
        errs("userlist admins\n  user bob password x\nglobal\n  nbthread x\n"),
        [
            "[ALERT] parsing [t.cfg:1] : 'userlist' sections are not supported yet by luahost; the lines of this section are ignored",
            "[ALERT] parsing [t.cfg:4] : 'nbthread' expects a number of threads (an integer between 1 and 4096), got 'x'",
        ]
    );
    assert_eq!(
        err("global\n.if defined(X)\n"),
        "[ALERT] parsing [t.cfg:2] : non-terminated '.if' block."
    );
}

#[test]
fn many_errors_reported_at_once_in_order() {
    let text = "\
global
  nbthread zero
  bogus
frontend f
  bind :99999
  timeout client 5q
  http-request set-header
  default_backend missing
backend f2
  server s1 nowhere
frontend f
  bind :80
  option \"unterminated
";
    assert_eq!(
        errs(text),
        [
            "[ALERT] parsing [t.cfg:2] : 'nbthread' expects a number of threads (an integer between 1 and 4096), got 'zero'",
            "[ALERT] parsing [t.cfg:3] : unknown keyword 'bogus' in 'global' section; expected one of: lua-load, lua-load-per-thread, lua-prepend-path, nbthread, maxconn, pidfile, log, log-tag, log-send-hostname, tune.bufsize, tune.lua.forced-yield, tune.lua.maxmem, tune.lua.session-timeout, tune.lua.service-timeout, tune.lua.task-timeout, tune.lua.burst-timeout, tune.lua.blocking-calls, tune.lua.bool-sample-conversion, tune.lua.log.loggers, tune.lua.log.stderr, tune.lua.openlibs, tune.lua.bytecode, httpclient.retries, httpclient.timeout.connect, httpclient.ssl.verify, httpclient.ssl.ca-file, httpclient.resolvers.id, httpclient.resolvers.prefer, httpclient.resolvers.disabled, httpclient.pool.idle-timeout",
            "[ALERT] parsing [t.cfg:5] : 'bind': ':99999': invalid port '99999'; expected a number between 1 and 65535",
            "[ALERT] parsing [t.cfg:6] : 'timeout client' expects a time value like 5s, 100ms or 30000 (ms), got '5q' (unknown unit 'q'; units are us, ms, s, m, h, d)",
            "[ALERT] parsing [t.cfg:7] : 'http-request set-header' expects a header name and a value format",
            "[ALERT] parsing [t.cfg:8] : frontend 'f': 'default_backend' names backend 'missing', which does not exist",
            "[ALERT] parsing [t.cfg:10] : server 's1': 'nowhere': missing ':PORT' after the address",
            "[ALERT] parsing [t.cfg:11] : frontend 'f' has the same name as frontend 'f' declared at t.cfg:4",
            "[ALERT] parsing [t.cfg:13] : unmatched double quote",
        ]
    );
}

#[test]
fn error_display_shapes() {
    let e = ConfigError {
        location: Some(Location {
            file: Arc::from("a.cfg"),
            line: 12,
        }),
        message: "bad".into(),
    };
    assert_eq!(e.to_string(), "[ALERT] parsing [a.cfg:12] : bad");
    let e = ConfigError {
        location: None,
        message: "no file".into(),
    };
    assert_eq!(e.to_string(), "[ALERT] config : no file");
    let w = ConfigWarning {
        location: Some(Location {
            file: Arc::from("a.cfg"),
            line: 1,
        }),
        message: "meh".into(),
    };
    assert_eq!(w.to_string(), "[WARNING] parsing [a.cfg:1] : meh");
}

#[test]
fn lexing_through_the_parser() {
    let c = ok(concat!(
        "frontend f # trailing comment\n",
        "\tbind\t:80 # tabs\r\n",
        "  http-request set-header X-A \"a b\\\"c\" if { hdr(x) -m str 'q r' }\n",
        "  http-request set-header X-B \\#not-a-comment\n",
        "  http-request set-header X-C \"\"\n",
        "  http-request return status 200 content-type text/plain string \"line\\n\"\n",
        "  http-request replace-header Host ^(.*)\\.old$ \\1.new\n",
        "  description caf\\xc3\\xa9\n",
    ));
    let f = &c.proxies[0];
    assert_eq!(
        f.extras.http_request[0].action,
        Action::SetHeader {
            name: "X-A".into(),
            value: "a b\"c".into()
        }
    );
    let CondExpr::Anonymous(acl) = &f.extras.http_request[0].cond.as_ref().unwrap().expr else {
        panic!("expected an anonymous ACL")
    };
    assert_eq!(acl.patterns, ["q r"]);
    assert_eq!(
        f.extras.http_request[1].action,
        Action::SetHeader {
            name: "X-B".into(),
            value: "#not-a-comment".into()
        }
    );
    assert_eq!(
        f.extras.http_request[2].action,
        Action::SetHeader {
            name: "X-C".into(),
            value: String::new()
        }
    );
    assert!(matches!(&f.extras.http_request[3].action,
        Action::Return { body: Some(ReturnBody::String(s)), .. } if s == "line\n"));
    assert!(matches!(&f.extras.http_request[4].action,
        Action::ReplaceHeader { regex, replacement, .. } if regex == r"^(.*)\.old$" && replacement == r"\1.new"));
    assert_eq!(f.extras.description.as_deref(), Some("café"));
}

#[test]
fn environment_expansion_through_the_parser() {
    let env = MapEnv::new(&[
        ("PORT", "8443"),
        ("LUA_DIR", "/opt/lua"),
        ("LUA_ARGS", "one two"),
    ]);
    let text = br#"
global
  lua-load "${LUA_DIR}/main.lua" "${LUA_ARGS[*]}" '${LUA_DIR}' ${LUA_DIR}
frontend "${.SECTION}"
  bind ":${PORT}"
  bind "127.0.0.1:${UNSET_PORT-9000}"
  description "${.FILE} line ${.LINE} in ${.SECTION}"
"#;
    let c = match parser::parse([(Arc::from("env.cfg"), &text[..])], &env) {
        Ok(c) => c,
        Err(e) => panic!("{}", render(&e)),
    };
    let l = &c.global.lua_loads[0];
    assert_eq!(l.file, PathBuf::from("/opt/lua/main.lua"));
    assert_eq!(l.args, ["one", "two", "${LUA_DIR}", "${LUA_DIR}"]);
    let f = &c.proxies[0];
    // At the header line the section is still 'global'.
    assert_eq!(f.name, "global");
    assert_eq!(f.extras.binds[0].addr, sa("0.0.0.0:8443"));
    assert_eq!(f.extras.binds[1].addr, sa("127.0.0.1:9000"));
    assert_eq!(
        f.extras.description.as_deref(),
        Some("env.cfg line 7 in global")
    );

    // An undefined variable expands to nothing, which leaves an empty port.
    // (The frontend then has no valid bind, but saying so would only repeat
    // the error.)
    let r = parser::parse(
        [(
            Arc::from("e.cfg"),
            &b"frontend f\n  bind \":${NOPE}\"\n"[..],
        )],
        &env,
    );
    assert_eq!(
        render(&r.unwrap_err()),
        "[ALERT] parsing [e.cfg:2] : 'bind': ':': missing port number after ':'"
    );
}

#[test]
fn warnings_for_http_settings_in_tcp_mode() {
    let c = ok("frontend f\n  bind :80\n  option httplog\n  http-request deny\n  http-request allow\n  http-response allow\n");
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        [
            "[WARNING] parsing [t.cfg:1] : 'option httplog' is ignored in frontend 'f' because it is in tcp mode",
            "[WARNING] parsing [t.cfg:4] : 'http-request' rules are ignored in frontend 'f' because it is in tcp mode",
            "[WARNING] parsing [t.cfg:6] : 'http-response' rules are ignored in frontend 'f' because it is in tcp mode",
        ]
    );
    // The mode may be set after the rules.
    let c = ok("frontend f\n  http-request deny\n  bind :80\n  mode http\n");
    assert!(c.warnings.is_empty());
}

#[test]
fn proxy_keywords_of_issue_12() {
    let dir = std::env::temp_dir().join(format!("luahost-errorfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("503.http");
    std::fs::write(&file, "HTTP/1.1 503 Busy\r\ncontent-length: 2\r\n\r\nno").unwrap();
    let text = format!(
        "defaults\n  mode http\n  errorfile 503 {}\n  compression algo gzip deflate\n  compression type text/plain\n  option http-buffer-request\n  timeout check 3s\n  timeout tunnel 1h\n\
         frontend f\n  bind :80\n  timeout check 2s\n  tcp-request connection reject if {{ src 10.0.0.0/8 }}\n  tcp-request content accept\n  filter compression\n  compression offload\n  default_backend b\n\
         backend b\n  http-request use-service lua.svc\n  tcp-request content use-service lua.svc\n",
        file.display()
    );
    let c = ok(&text);
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        ["[WARNING] parsing [t.cfg:11] : 'timeout check' will be ignored because frontend 'f' has no backend capability"]
    );
    let (f, b) = (&c.proxies[0], &c.proxies[1]);
    // Inherited from the defaults: errorfile and compression by all,
    // timeout check and tunnel by backends only.
    assert_eq!(f.extras.errorfiles.len(), 1);
    assert_eq!(b.extras.errorfiles[0].status, 503);
    assert_eq!(f.timeouts.check, None);
    assert_eq!(f.timeouts.tunnel, None);
    assert_eq!(b.timeouts.check, Some(Duration::from_secs(3)));
    assert_eq!(b.timeouts.tunnel, Some(Duration::from_secs(3600)));
    let fc = f.compression.as_deref().unwrap();
    assert_eq!(fc.algos, [CompressionAlgo::Gzip, CompressionAlgo::Deflate]);
    assert_eq!(fc.types, ["text/plain"]);
    assert!(fc.offload && fc.filter);
    assert!(!b.compression.as_deref().unwrap().offload);
    assert!(f.options.http_buffer_request && b.options.http_buffer_request);
    assert_eq!(f.extras.tcp_request_connection.len(), 1);
    assert_eq!(f.extras.tcp_request_content.len(), 1);
    assert_eq!(b.extras.http_request.len(), 1);
    // compression offload in defaults: ignored with HAProxy's warning.
    let c = ok("defaults\n  compression offload\n");
    assert_eq!(
        c.warnings[0].to_string(),
        "[WARNING] parsing [t.cfg:2] : 'compression' : 'offload' ignored in 'defaults' section."
    );
    // A timeout of the other capability is a warning, not an error.
    let c = ok("backend b\n  timeout client 1s\n");
    assert_eq!(
        c.warnings[0].to_string(),
        "[WARNING] parsing [t.cfg:2] : 'timeout client' will be ignored because backend 'b' has no frontend capability"
    );
    assert!(
        err("frontend f\n  bind :80\n  filter compression\n  filter compression\n")
            .ends_with("'filter' : 'f: Proxy supports only one compression filter")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/config/testdata")
        .join(name)
}

fn short_errors(errors: &[ConfigError]) -> Vec<String> {
    // Paths are absolute in tests; keep messages readable.
    let root = testdata("").to_string_lossy().into_owned();
    errors
        .iter()
        .map(|e| e.to_string().replace(&root, ""))
        .collect()
}

#[test]
fn several_files_form_one_configuration() {
    let c = match parse_files(&[testdata("global.cfg"), testdata("proxies.cfg")]) {
        Ok(c) => c,
        Err(e) => panic!("{}", render(&e)),
    };
    assert_eq!(c.global.nbthread, Some(2));
    assert_eq!(c.global.lua_loads.len(), 1);
    // Defaults from the first file apply in the second.
    let web = &c.proxies[0];
    assert_eq!(web.mode, Mode::Http);
    assert_eq!(web.timeouts.client, ms(5000));
    assert!(web.location.file.ends_with("proxies.cfg"));
    assert_eq!(web.location.line, 3);
    assert!(c.global.lua_loads[0].location.file.ends_with("global.cfg"));
    // A backend in one file may be used from another.
    assert_eq!(c.proxies[1].name, "app");
}

#[test]
fn several_files_errors_name_the_right_file() {
    let r = parse_files(&[
        testdata("global.cfg"),
        testdata("broken.cfg"),
        testdata("missing.cfg"),
        testdata("proxies.cfg"),
    ]);
    let errors = short_errors(&r.unwrap_err());
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors[0].starts_with("[ALERT] config : could not read configuration file '"));
    assert!(errors[0].contains("missing.cfg"));
    assert_eq!(
        &errors[1..],
        [
            // Each file starts outside any section, even after 'global'.
            "[ALERT] parsing [broken.cfg:2] : unknown keyword 'maxconn' out of section; a configuration file starts with a section keyword: global, defaults, frontend, backend or listen",
            "[ALERT] parsing [broken.cfg:5] : 'timeout client' expects a time value like 5s, 100ms or 30000 (ms), got 'forever'",
            "[ALERT] parsing [broken.cfg:6] : frontend 'broken': 'default_backend' names backend 'nowhere', which does not exist",
        ]
    );
}

#[test]
fn a_directory_stands_for_its_cfg_files() {
    // testdata holds broken.cfg, global.cfg and proxies.cfg, read in that
    // order; the README is not a .cfg file and is skipped.
    let errors = short_errors(&parse_files(&[testdata("")]).unwrap_err());
    assert_eq!(
        errors,
        [
            "[ALERT] parsing [broken.cfg:2] : unknown keyword 'maxconn' out of section; a configuration file starts with a section keyword: global, defaults, frontend, backend or listen",
            "[ALERT] parsing [broken.cfg:5] : 'timeout client' expects a time value like 5s, 100ms or 30000 (ms), got 'forever'",
            "[ALERT] parsing [broken.cfg:6] : frontend 'broken': 'default_backend' names backend 'nowhere', which does not exist",
        ]
    );
}

#[test]
fn ten_thousand_backends() {
    let n = 10_000;
    let mut text = String::with_capacity(n * 48);
    text.push_str("defaults\n  mode http\n  timeout server 30s\nfrontend f\n  bind :80\n");
    for i in 0..n {
        text.push_str(&format!("  use_backend b{i} if {{ path_beg /b{i} }}\n"));
    }
    for i in 0..n {
        text.push_str(&format!(
            "backend b{i}\n  server s{i} 10.{}.{}.{}:80\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ));
    }
    let c = ok(&text);
    assert_eq!(c.proxies.len(), n + 1);
    assert_eq!(c.proxies[0].extras.use_backends.len(), n);
    let last = &c.proxies[n];
    assert_eq!(last.name, format!("b{}", n - 1));
    assert_eq!(last.mode, Mode::Http);
    assert_eq!(last.timeouts.server, ms(30_000));
    assert_eq!(last.servers[0].addr, ServerAddr::Ip(sa("10.0.39.15:80")));
    assert_eq!(last.servers[0].location.line, 5 + n + 2 * n);
}

#[test]
fn garbage_never_panics() {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let fragments: &[&[u8]] = &[
        b"frontend",
        b"backend",
        b"listen",
        b"defaults",
        b"global",
        b" from ",
        b"f",
        b" ",
        b"\n",
        b"\t",
        b"bind",
        b":80",
        b"[::1]",
        b"*:",
        b"server",
        b"1.2.3.4:5",
        b"http-request",
        b"tcp-request",
        b"content",
        b"use-service",
        b"lua.x",
        b"if",
        b"unless",
        b"{",
        b"}",
        b"!",
        b"||",
        b"acl",
        b"a",
        b"path",
        b"-m",
        b"-f",
        b"timeout",
        b"client",
        b"5s",
        b"1.5s",
        b"\"",
        b"'",
        b"\\",
        b"\\x",
        b"${",
        b"$",
        b"#",
        b"\xff",
        b"\0",
        b"\r",
        b"set-var(txn.x)",
        b"deny_status",
        b"return",
        b"redirect",
        b"code",
        b"log",
        b"stderr",
        b"local0",
        b"option",
        b"no",
        b"default_backend",
        b"use_backend",
        b"%[x]",
        b"99999999999999999999999",
        b"-",
        b"set-header",
        b"balance",
        b"mode",
        b"http",
        b"tcp",
        b"nbthread",
        b".if",
    ];
    for _ in 0..3_000 {
        let mut input = Vec::new();
        let len = next() % 40;
        for _ in 0..len {
            input.extend_from_slice(fragments[(next() % fragments.len() as u64) as usize]);
        }
        let _ = parser::parse([(Arc::from("g.cfg"), &input[..])], &lexer::ProcessEnv);
        // Raw random bytes as well.
        let raw: Vec<u8> = (0..(next() % 200)).map(|_| next() as u8).collect();
        let _ = parser::parse([(Arc::from("r.cfg"), &raw[..])], &lexer::ProcessEnv);
    }
}

#[test]
fn empty_configuration_is_valid() {
    let c = ok("");
    assert!(c.proxies.is_empty());
    let c = ok("# nothing\n\n   \n");
    assert!(c.proxies.is_empty());
}

#[test]
fn process_keywords_are_read() {
    let c = ok("global\n  daemon\n  uid 65534\n  gid 65534\n  chroot /var/empty\n  hard-stop-after 2s\n  grace 500ms\n  node lb1\n  description front door\n  crt-base /etc/ssl\n  ca-base /etc/ca\n  cpu-map auto:1/1-2 0-1\n  cpu-map 1/2 1\n");
    let p = &c.global.process;
    assert!(p.daemon);
    assert_eq!((p.uid, p.gid), (Some(65534), Some(65534)));
    assert_eq!(p.chroot, Some(PathBuf::from("/var/empty")));
    assert_eq!((p.hard_stop_after, p.grace), (ms(2000), ms(500)));
    assert_eq!(p.node.as_deref(), Some("lb1"));
    assert_eq!(p.description.as_deref(), Some("front door"));
    assert_eq!(
        (p.crt_base.as_deref(), p.ca_base.as_deref()),
        (Some("/etc/ssl"), Some("/etc/ca"))
    );
    let map: Vec<(u32, Vec<u32>)> = p
        .cpu_map
        .iter()
        .map(|m| (m.thread, m.cpus.clone()))
        .collect();
    assert_eq!(map, [(1, vec![0]), (2, vec![1]), (2, vec![1])]);
    assert!(p.no_effect.is_empty());
}

#[test]
fn setenv_applies_to_the_lines_below_and_to_conditions() {
    let c = ok("global\n  setenv LH_T_PORT 8123\n  presetenv LH_T_PORT 1\n  setenv LH_T_NAME \"x${LH_T_PORT}\"\n.if streq(\"$LH_T_NAME\",x8123)\n  maxconn 77\n.else\n  maxconn 1\n.endif\n  unsetenv LH_T_NAME\n.if defined(LH_T_NAME)\n  nbthread 9\n.endif\n");
    assert_eq!(c.global.maxconn, Some(77));
    assert_eq!(c.global.nbthread, None);
    assert_eq!(
        c.global.process.env,
        [
            EnvOp::Set("LH_T_PORT".into(), "8123".into()),
            EnvOp::Set("LH_T_NAME".into(), "x8123".into()),
            EnvOp::Unset("LH_T_NAME".into()),
        ]
    );
    // Parsing itself leaves the process environment alone.
    assert!(std::env::var_os("LH_T_PORT").is_none());
}

#[test]
fn notices_and_no_effect_keywords_are_recorded() {
    let c = ok("global\n.notice \"hello\"\n.warning \"careful\"\n.diag \"quiet\"\n  tune.maxaccept 4\n  tune.maxaccept 8\n  nosplice\n");
    let shown: Vec<String> = c.notices.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        shown,
        [
            "[NOTICE] parsing [t.cfg:2] : 'hello'.",
            "[WARNING] parsing [t.cfg:3] : 'careful'."
        ]
    );
    let kws: Vec<(&str, usize)> = c
        .global
        .process
        .no_effect
        .iter()
        .map(|(k, l)| (k.as_str(), l.line))
        .collect();
    assert_eq!(kws, [("tune.maxaccept", 5), ("nosplice", 7)]);
    for kw in super::process::no_effect_keywords() {
        // Every listed keyword is a global keyword and nothing else.
        assert!(super::process::is_keyword(kw), "{kw}");
    }
}

#[test]
fn lua_tunings_and_their_ordering_rules() {
    let c = ok("global\n  tune.lua.bool-sample-conversion normal\n  tune.lua.log.loggers off\n  tune.lua.log.stderr on\n  tune.lua.openlibs string,table,string\n");
    assert_eq!(c.global.lua.bool_sample_normal, Some(true));
    assert_eq!(c.global.lua.log_loggers, Some(false));
    assert_eq!(c.global.lua.log_stderr, Some(LuaLogStderr::On));
    assert_eq!(
        c.global.lua.openlibs,
        Some(vec!["string".to_string(), "table".to_string()])
    );
    assert_eq!(
        ok("global\n  tune.lua.openlibs all\n").global.lua.openlibs,
        None
    );
    // Set after a lua-load: ignored, with HAProxy's warning.
    let c = ok("global\n  lua-load x.lua\n  tune.lua.bool-sample-conversion normal\n");
    assert_eq!(c.global.lua.bool_sample_normal, None);
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].location.as_ref().map(|l| l.line), Some(3));
    for (text, message) in [
        ("global\n  tune.lua.bool-sample-conversion yes\n", "[ALERT] parsing [t.cfg:2] : 'tune.lua.bool-sample-conversion' expects either 'normal' or 'pre-3.1-bug' but got 'yes'."),
        ("global\n  tune.lua.openlibs none,os\n", "[ALERT] parsing [t.cfg:2] : 'tune.lua.openlibs': 'none' cannot be combined with other libraries."),
        ("global\n  tune.lua.openlibs lpeg\n", "[ALERT] parsing [t.cfg:2] : 'tune.lua.openlibs': unknown library 'lpeg', expected one of: all,none,table,io,os,string,math,utf8,package,debug"),
        ("global\n  lua-prepend-path /x/?.lua\n  tune.lua.openlibs os\n", "[ALERT] parsing [t.cfg:3] : 'tune.lua.openlibs' must appear before any 'lua-load', 'lua-load-per-thread' or 'lua-prepend-path' directive"),
        ("global\n  lua-load a.lua\n  tune.lua.openlibs all\n", "[ALERT] parsing [t.cfg:3] : 'tune.lua.openlibs' must be set before any \"lua-load\" or \"lua-load-per-thread\" directive."),
    ] {
        assert_eq!(err(text), message);
    }
}

#[test]
fn process_keywords_belong_to_global() {
    assert_eq!(
        err("frontend f\n  bind :80\n  cpu-map 1/1 0\n"),
        "[ALERT] parsing [t.cfg:3] : 'cpu-map' is a 'global' keyword; it is not allowed in a 'frontend' section"
    );
    // A `.alert` stops everything after it, other files included.
    let all = errs("global\n.alert \"no\"\n  bogus\n");
    assert_eq!(all, ["[ALERT] parsing [t.cfg:2] : 'no'."]);
}

#[test]
fn log_targets_tags_and_captures() {
    let c = ok(r#"
global
  log /dev/log local0
  log unix@/run/syslog.sock local1
  log 127.0.0.1 local2 info
  log udp@127.0.0.1:5140 format rfc5424 local3
  log [::1]:5141 local4
  log ipv6@::1 local5
  log fd@1 local6
  log-tag edge
  log-send-hostname
defaults
  log global
  log-tag deftag
  log-format "%ci %ST"
  option log-separate-errors
frontend fe
  bind :80
  capture request header Host len 20
  http-request capture req.hdr(user-agent) len 5
  capture response header Server len 10
  no log
  log stderr format raw local7
backend be
  server s 127.0.0.1:80
"#);
    let dests: Vec<_> = c.global.logs.iter().map(|l| l.dest.clone()).collect();
    assert_eq!(
        dests,
        [
            LogDest::Unix("/dev/log".into()),
            LogDest::Unix("/run/syslog.sock".into()),
            LogDest::Udp(sa("127.0.0.1:514")),
            LogDest::Udp(sa("127.0.0.1:5140")),
            LogDest::Udp(sa("[::1]:5141")),
            LogDest::Udp(sa("[::1]:514")),
            LogDest::Stdout,
        ]
    );
    assert_eq!(c.global.log_tag.as_deref(), Some("edge"));
    assert_eq!(c.global.log_send_hostname.as_deref(), Some(""));
    let fe = c.frontend("fe").unwrap();
    assert!(!fe.log_global);
    assert_eq!(fe.logs().len(), 1);
    assert!(fe.options.log_separate_errors);
    let l = fe.logging.as_deref().unwrap();
    assert_eq!(l.tag.as_deref(), Some("deftag"));
    assert_eq!(l.format.as_ref().map(|f| f.0.as_str()), Some("%ci %ST"));
    let caps: Vec<_> = l
        .req_captures
        .iter()
        .map(|c| (c.header.as_deref(), c.len))
        .collect();
    assert_eq!(caps, [(Some("Host"), 20), (None, 5)]);
    assert_eq!(l.res_captures[0].header.as_deref(), Some("Server"));
    // The rule knows its slot.
    match &fe.extras.http_request[0].action {
        Action::Capture { slot, len, .. } => assert_eq!((*slot, *len), (1, 5)),
        other => panic!("unexpected action {other:?}"),
    }
    // A backend inherits the tag, not the format.
    let be = c.backend("be").unwrap();
    assert!(be.log_global);
    let l = be.logging.as_deref().unwrap();
    assert_eq!(
        (l.tag.as_deref(), l.format.as_ref()),
        (Some("deftag"), None)
    );
}

/// A plain backend (servers only) must stay small: with 300,000 backends
/// each byte of `Proxy` is 300 kB of start-up memory (issue 13).
#[test]
fn a_plain_backend_is_small() {
    assert!(
        std::mem::size_of::<Proxy>() <= 160,
        "config::Proxy grew to {} bytes; put what a plain backend does not use behind a box",
        std::mem::size_of::<Proxy>()
    );
    assert!(
        std::mem::size_of::<ServerDef>() <= 128,
        "config::ServerDef grew to {} bytes; settings a server line rarely sets belong in a box",
        std::mem::size_of::<ServerDef>()
    );
    let cfg =
        ok("defaults\n  mode http\n  timeout server 1s\nbackend b\n  server s1 127.0.0.1:1\n");
    let b = &cfg.proxies[0];
    assert!(!b.extras.is_set() && b.logging.is_none() && b.health.is_none());
    assert!(b.servers.iter().all(|s| s.health.is_none()));
}
