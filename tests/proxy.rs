//! The proxy over real sockets: a real luahost process per test, loopback
//! only, bounded counts and times.

use luahost_suite::{artifacts, free_port, http_get, run_with_timeout, HttpReader, Proxy};
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

fn cfg(port: u16, global: &str, frontend: &str) -> String {
    format!(
        "global\n  lua-load svc.lua\n{global}\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n{frontend}\n"
    )
}

/// Starts luahost on `config` (written as `p.cfg`) with `lua` as `svc.lua`
/// in scratch dir `name`, once `port` accepts.
fn start_service(name: &str, lua: &str, config: &str, port: u16) -> Proxy {
    Proxy::start(
        name,
        &[("svc.lua", lua), ("p.cfg", config)],
        "p.cfg",
        &[],
        &[port],
    )
}

const SERVICES: &str = r#"
core.register_service("hello", "http", function(applet)
  local body = "hello " .. applet.path .. " " .. applet.qs
  applet:set_status(200)
  applet:add_header("content-type", "text/plain")
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
"#;

#[test]
fn http_service_answers_with_keepalive_and_pipelining() {
    let port = free_port();
    let config = cfg(port, "  nbthread 1", "  http-request use-service lua.hello");
    let _p = start_service("proxy_keepalive", SERVICES, &config, port);

    let r = http_get(port, "/abc?x=1");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello /abc x=1");
    assert_eq!(r.header("content-type"), Some("text/plain"));

    // Keep-alive: several requests, one connection.
    let mut c = HttpReader::connect(port);
    for i in 0..5 {
        c.send(format!("GET /k{i} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes());
        let r = c
            .read_response(false)
            .expect("response on the kept-alive connection");
        assert_eq!(r.text(), format!("hello /k{i} "));
    }

    // Pipelining: three requests in one write, answered in order.
    let mut c = HttpReader::connect(port);
    c.send(b"GET /p1 HTTP/1.1\r\nhost: t\r\n\r\nGET /p2 HTTP/1.1\r\nhost: t\r\n\r\nGET /p3 HTTP/1.1\r\nhost: t\r\n\r\n");
    for i in 1..=3 {
        let r = c.read_response(false).expect("pipelined response");
        assert_eq!(r.text(), format!("hello /p{i} "));
    }
}

#[test]
fn chunked_response_and_streamed_request_body() {
    let port = free_port();
    let port2 = free_port();
    let lua = r#"
core.register_service("chunks", "http", function(applet)
  applet:set_status(201)
  applet:start_response()
  for i = 1, 5 do applet:send("part" .. i .. ";") end
end)
core.register_service("upload", "http", function(applet)
  -- read the body in pieces, never all at once
  local total, lines, first = 0, 0, applet:getline()
  total = #first
  while true do
    local piece = applet:receive(1000)
    if piece == "" then break end
    total = total + #piece
  end
  local body = string.format("len=%d declared=%d first=%s", total, applet.length, first:gsub("\n", ""))
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
"#;
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend a\n  bind 127.0.0.1:{port}\n  http-request use-service lua.chunks\n\
         frontend b\n  bind 127.0.0.1:{}\n  http-request use-service lua.upload\n",
        port2
    );
    let _p = Proxy::start(
        "proxy_chunked",
        &[("svc.lua", lua), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[port, port2],
    );

    let r = http_get(port, "/");
    assert_eq!(r.status, 201);
    assert!(
        r.chunked,
        "no content-length set: the response must be chunked: {:?}",
        r.headers
    );
    assert_eq!(r.text(), "part1;part2;part3;part4;part5;");

    let mut body = b"first line\n".to_vec();
    body.extend(std::iter::repeat_n(b'x', 300_000));
    let mut c = HttpReader::connect(port2);
    c.send(
        format!(
            "POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    let r = c.read_response(false).expect("upload response");
    assert_eq!(
        r.text(),
        format!(
            "len={} declared={} first=first line",
            body.len(),
            body.len()
        )
    );

    // A chunked request body is streamed the same way.
    let mut c = HttpReader::connect(port2);
    c.send(b"POST /up HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n6\r\nab\ncde\r\n3\r\nfgh\r\n0\r\n\r\n");
    let r = c.read_response(false).expect("chunked upload response");
    assert_eq!(r.text(), "len=9 declared=0 first=ab");
}

#[test]
fn oversized_and_malformed_requests_get_431_and_400() {
    let port = free_port();
    let config = cfg(
        port,
        "  nbthread 1\n  tune.bufsize 16384",
        "  http-request use-service lua.hello",
    );
    let _p = start_service("proxy_limits", SERVICES, &config, port);
    let mut c = HttpReader::connect(port);
    let big = "a".repeat(40_000);
    c.send(format!("GET / HTTP/1.1\r\nhost: t\r\nx-big: {big}\r\n\r\n").as_bytes());
    assert_eq!(c.read_response(false).expect("431").status, 431);

    let mut c = HttpReader::connect(port);
    c.send(b"GET / HTTP/1.1\r\nbad header line\r\n\r\n");
    assert_eq!(c.read_response(false).expect("400").status, 400);

    // Pipelined good requests before a malformed one are all answered.
    let mut c = HttpReader::connect(port);
    c.send(b"GET /a HTTP/1.1\r\nhost: t\r\n\r\nGET /b HTTP/1.1\r\nhost: t\r\n\r\nGARBAGE\r\n\r\n");
    assert_eq!(c.read_response(false).expect("a").text(), "hello /a ");
    assert_eq!(c.read_response(false).expect("b").text(), "hello /b ");
    assert_eq!(c.read_response(false).expect("400").status, 400);

    // Still serving.
    assert_eq!(http_get(port, "/ok").status, 200);
}

#[test]
fn spinning_service_is_cut_while_others_are_served() {
    let port = free_port();
    let port2 = free_port();
    let lua = format!(
        "{SERVICES}\ncore.register_service('spin', 'http', function(applet) while true do end end)\n"
    );
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\n  tune.lua.service-timeout 1500\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend spin\n  bind 127.0.0.1:{port}\n  http-request use-service lua.spin\n\
         frontend hello\n  bind 127.0.0.1:{}\n  http-request use-service lua.hello\n",
        port2
    );
    let p = Proxy::start(
        "proxy_spin",
        &[("svc.lua", &lua), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[port, port2],
    );
    let spinner = std::thread::spawn(move || {
        let t = Instant::now();
        let r = http_get(port, "/");
        (r.status, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    // The same (single) worker keeps answering while the spinner runs.
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let r = http_get(port2, &format!("/during{i}"));
        worst = worst.max(t.elapsed());
        assert_eq!(r.status, 200);
    }
    let (status, took) = spinner.join().expect("spinner thread");
    assert_eq!(status, 500, "a service past its budget gets 500");
    assert!(
        took >= Duration::from_millis(1400),
        "cut too early: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "not cut: {took:?}");
    // Generous bound: the point is that the worker was not stalled for the
    // whole spin; the real latency figure belongs to the benchmark.
    assert!(
        worst < Duration::from_millis(1000),
        "a request waited {worst:?} behind the spinner"
    );
    let log = p.wait_log("execution timeout", 5);
    assert!(
        log.contains("Lua applet http 'spin': execution timeout"),
        "{log}"
    );
}

#[test]
fn memory_cap_fails_only_the_offending_request() {
    let port = free_port();
    let port2 = free_port();
    let lua = format!(
        "{SERVICES}\ncore.register_service('bomb', 'http', function(applet)\n  local t = {{}}\n  for i = 1, 1e9 do t[i] = string.rep('x', 1000) .. i end\nend)\n"
    );
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\n  tune.lua.maxmem 64\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend bomb\n  bind 127.0.0.1:{port}\n  http-request use-service lua.bomb\n\
         frontend hello\n  bind 127.0.0.1:{}\n  http-request use-service lua.hello\n",
        port2
    );
    let p = Proxy::start(
        "proxy_maxmem",
        &[("svc.lua", &lua), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[port, port2],
    );
    let r = http_get(port, "/");
    assert_eq!(r.status, 500);
    let log = p.wait_log("not enough memory", 5);
    assert!(
        log.contains("Lua applet http 'bomb': not enough memory"),
        "{log}"
    );
    // The process goes on, and the memory came back.
    for _ in 0..3 {
        assert_eq!(http_get(port2, "/after").text(), "hello /after ");
    }
    assert_eq!(
        http_get(port, "/").status,
        500,
        "the cap applies again to the next bomb"
    );
}

#[test]
fn runtime_error_gives_500_and_a_log_line_then_serving_continues() {
    let port = free_port();
    let lua = "core.register_service('oops', 'http', function(applet)\n  if applet.path == '/ok' then\n    applet:send('fine')\n    return\n  end\n  local x = nil\n  return x.field\nend)\n";
    let config = cfg(port, "  nbthread 1", "  http-request use-service lua.oops");
    let p = start_service("proxy_error", lua, &config, port);
    assert_eq!(http_get(port, "/bad").status, 500);
    let log = p.wait_log("attempt to index", 5);
    assert!(
        log.contains("Lua applet http 'oops': svc.lua:7: attempt to index a nil value"),
        "{log}"
    );
    let ok = http_get(port, "/ok");
    assert_eq!((ok.status, ok.text()), (200, "fine".to_string()));
}

#[test]
fn coroutine_generators_work_under_tiny_forced_yield() {
    let port = free_port();
    let lua = r#"
core.register_service("gen", "http", function(applet)
  local function range(n)
    return coroutine.wrap(function() for i = 1, n do coroutine.yield(i) end end)
  end
  local sum = 0
  for i in range(2000) do sum = sum + i end
  local co = coroutine.create(function(a) local b = coroutine.yield(a * 2) return a + b end)
  local _, first = coroutine.resume(co, 5)
  local _, second = coroutine.resume(co, 7)
  local body = sum .. " " .. first .. " " .. second
  applet:add_header("content-length", #body)
  applet:send(body)
end)
"#;
    let config = cfg(
        port,
        "  nbthread 1\n  tune.lua.forced-yield 10",
        "  http-request use-service lua.gen",
    );
    let _p = start_service("proxy_gen", lua, &config, port);
    for _ in 0..3 {
        assert_eq!(http_get(port, "/").text(), "2001000 10 12");
    }
}

const COUNTER: &str = r#"
counter = 0
core.register_service("count", "http", function(applet)
  counter = counter + 1
  local body = core.thread .. " " .. counter
  applet:add_header("content-length", #body)
  applet:send(body)
end)
"#;

fn thread_counts(port: u16, n: usize) -> Vec<(u32, u32)> {
    // Hold many connections open at once so that both workers accept some.
    let conns: Vec<_> = (0..n).map(|_| HttpReader::connect(port)).collect();
    let mut out = Vec::new();
    for mut c in conns {
        c.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n");
        let r = c.read_response(false).expect("response");
        let t = r.text();
        let mut it = t.split(' ').map(|x| x.parse::<u32>().expect("number"));
        out.push((it.next().unwrap_or(99), it.next().unwrap_or(0)));
    }
    out
}

#[test]
fn shared_state_sees_one_global_across_workers() {
    let port = free_port();
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 2\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  http-request use-service lua.count\n"
    );
    let _p = start_service("proxy_shared", COUNTER, &config, port);
    let results = thread_counts(port, 40);
    // One state: core.thread is 0 and the counter takes every value once.
    assert!(results.iter().all(|(t, _)| *t == 0), "{results:?}");
    let mut counts: Vec<u32> = results.iter().map(|(_, c)| *c).collect();
    counts.sort();
    assert_eq!(counts, (1..=40).collect::<Vec<_>>());
}

#[test]
fn per_thread_states_do_not_share_globals() {
    let port = free_port();
    let config = format!(
        "global\n  lua-load-per-thread svc.lua\n  nbthread 2\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  http-request use-service lua.count\n"
    );
    let _p = start_service("proxy_per_thread", COUNTER, &config, port);
    let mut all = Vec::new();
    for _ in 0..5 {
        all.extend(thread_counts(port, 40));
        if all.iter().any(|(t, _)| *t == 1) && all.iter().any(|(t, _)| *t == 2) {
            break;
        }
    }
    let threads: std::collections::BTreeSet<u32> = all.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        threads,
        [1, 2].into_iter().collect(),
        "both workers served: {all:?}"
    );
    // Each state counts only its own requests: the counters of each thread
    // are exactly 1..=k for its k requests.
    for t in [1, 2] {
        let mut mine: Vec<u32> = all
            .iter()
            .filter(|(x, _)| *x == t)
            .map(|(_, c)| *c)
            .collect();
        mine.sort();
        assert_eq!(
            mine,
            (1..=mine.len() as u32).collect::<Vec<_>>(),
            "thread {t}"
        );
    }
}

#[test]
fn tcp_echo_service() {
    let port = free_port();
    let lua = r#"
core.register_service("echo", "tcp", function(applet)
  applet:send("welcome\n")
  while true do
    local line = applet:getline()
    if line == "" then break end
    applet:send("echo: " .. line)
  end
end)
"#;
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 2\ndefaults\n  mode tcp\n  timeout client 10s\n\
         listen echo\n  bind 127.0.0.1:{port}\n  tcp-request content use-service lua.echo\n"
    );
    let _p = start_service("proxy_tcp", lua, &config, port);
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"one\ntwo\n").expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        assert_eq!(out, "welcome\necho: one\necho: two\n");
    }
}

#[test]
fn core_api_from_a_service() {
    let port = free_port();
    let lua = r#"
local loaded_arg = ...
core.register_init(function() init_ran = true end)
core.register_service("api", "http", function(applet)
  local out = {}
  local function add(k, v) out[#out + 1] = k .. "=" .. tostring(v) end
  add("arg", loaded_arg)
  add("init", init_ran)
  add("thread", core.thread)
  local t = core.tokenize("a,b,,c", ",", true)
  add("tokens", #t .. ":" .. table.concat(t, "|"))
  add("match", core.match_addr(core.parse_addr("10.0.0.0/8"), core.parse_addr("10.1.2.3")))
  add("nomatch", core.match_addr(core.parse_addr("10.0.0.0/8"), core.parse_addr("11.1.2.3")))
  add("badaddr", core.parse_addr("x.y"))
  add("date", core.http_date("Sun, 06 Nov 1994 08:49:37 GMT"))
  add("imf_wrong", core.imf_date("Sunday, 06-Nov-94 08:49:37 GMT"))
  add("asctime", core.asctime_date("Sun Nov  6 08:49:37 1994"))
  local now = core.now()
  add("now", now.sec > 1700000000 and now.usec >= 0)
  local info = core.get_info()
  add("info", info.Name .. "/" .. info.Nbthread .. "/" .. tostring(info.CumConns >= 1))
  local ok, err = pcall(core.register_service, "late", "http", function() end)
  add("late", err)
  local b = core.concat()
  b:add("x") b:add("y")
  add("concat", b:dump())
  core.msleep(10)
  core.yield()
  add("act", act.DENY .. act.DONE)
  add("levels", core.alert .. core.debug)
  applet:set_var("txn.v", 42)
  add("var", applet:get_var("txn.v"))
  applet:set_priv({n = 5})
  add("priv", applet:get_priv().n)
  add("tostring", tostring(applet):match("^AppletHTTP") ~= nil)
  add("hdr", applet.headers["x-multi"][0] .. "," .. applet.headers["x-multi"][1])
  local body = table.concat(out, "\n")
  applet:add_header("content-length", #body)
  applet:send(body)
  core.done()
  error("not reached")
end)
"#;
    let config = format!(
        "global\n  lua-load svc.lua argument-one\n  nbthread 1\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  http-request use-service lua.api\n"
    );
    let p = start_service("proxy_core_api", lua, &config, port);
    let mut c = HttpReader::connect(port);
    c.send(b"GET / HTTP/1.1\r\nhost: t\r\nx-multi: one\r\nx-multi: two\r\n\r\n");
    let r = c.read_response(false).expect("response");
    let text = r.text();
    let expect = [
        "arg=argument-one",
        "init=true",
        "thread=0",
        "tokens=3:a|b|c",
        "match=true",
        "nomatch=false",
        "badaddr=nil",
        "date=784111777",
        "imf_wrong=nil",
        "asctime=784111777",
        "now=true",
        "info=luahost/1/true",
        "late=register_service: not available outside of body context",
        "concat=xy",
        "act=54",
        "levels=17",
        "var=42",
        "priv=5",
        "tostring=true",
        "hdr=one,two",
    ];
    for e in expect {
        assert!(
            text.lines()
                .any(|l| l.ends_with(e) && l.starts_with(e.split('=').next().unwrap_or(""))),
            "missing {e} in:\n{text}"
        );
    }
    assert!(!p.log().contains("not reached"), "{}", p.log());
}

#[test]
fn blocking_calls_warn_once_per_site_or_are_denied() {
    let lua = r#"
io.write("") -- in the body: allowed silently
core.register_service("blocky", "http", function(applet)
  for i = 1, 3 do os.tmpname() end
  local ok, err = pcall(os.remove, "/nonexistent-luahost-file")
  local body = tostring(ok) .. " " .. tostring(err)
  applet:add_header("content-length", #body)
  applet:send(body)
end)
"#;
    for (mode, expect_denied) in [("warn", false), ("deny", true)] {
        let port = free_port();
        let config = cfg(
            port,
            &format!("  nbthread 1\n  tune.lua.blocking-calls {mode}"),
            "  http-request use-service lua.blocky",
        );
        let p = Proxy::start(
            &format!("proxy_blocking_{mode}"),
            &[("svc.lua", lua), ("p.cfg", &config)],
            "p.cfg",
            &[],
            &[port],
        );
        let r = http_get(port, "/");
        let r2 = http_get(port, "/");
        if expect_denied {
            assert_eq!(r.status, 500, "os.tmpname is refused, failing the service");
            let log = p.wait_log("refused", 5);
            assert!(
                log.contains("blocking call to 'os.tmpname' refused"),
                "{log}"
            );
        } else {
            assert_eq!(r.status, 200);
            assert_eq!(r2.status, 200);
            let log = p.wait_log("os.remove", 5);
            assert_eq!(
                log.matches("blocking call to 'os.tmpname' at svc.lua:4")
                    .count(),
                1,
                "once per site: {log}"
            );
            assert!(log.contains("blocking call to 'os.remove'"), "{log}");
            assert!(!log.contains("io.write"), "the body may block: {log}");
        }
    }
}

#[test]
fn config_errors_name_file_and_line_and_exit_1() {
    let dir = luahost_suite::scratch_dir("proxy_config_errors");
    std::fs::write(
        dir.join("bad.cfg"),
        "global\n  nbthread two\ndefaults\n  mode http\nfrontend fe\n  bind 127.0.0.1:1\n  frobnicate on\n  http-request use-service lua.nothere\n",
    )
    .expect("write");
    let mut cmd = Command::new(artifacts().luahost());
    cmd.args(["-c", "-f", "bad.cfg"]).current_dir(&dir);
    let out = run_with_timeout(&mut cmd, 30);
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("[ALERT] parsing [bad.cfg:2]"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("[ALERT] parsing [bad.cfg:7]"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("frobnicate"), "{}", out.stderr);

    // A Lua file that fails to load stops start-up with Lua's message.
    std::fs::write(
        dir.join("broken.lua"),
        "local x = 1\nerror('body failed here')\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("lua.cfg"),
        "global\n  lua-load broken.lua\ndefaults\n  mode http\nfrontend fe\n  bind 127.0.0.1:1\n",
    )
    .expect("write");
    let mut cmd = Command::new(artifacts().luahost());
    cmd.args(["-c", "-f", "lua.cfg"]).current_dir(&dir);
    let out = run_with_timeout(&mut cmd, 30);
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("broken.lua:2: body failed here"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("lua.cfg:2"), "{}", out.stderr);

    // An unknown service is caught by -c too; a good config passes -c.
    std::fs::write(dir.join("svc.lua"), SERVICES).expect("write");
    std::fs::write(
        dir.join("svc.cfg"),
        "global\n  lua-load svc.lua\ndefaults\n  mode http\nfrontend fe\n  bind 127.0.0.1:1\n  http-request use-service lua.nothere\n",
    )
    .expect("write");
    let mut cmd = Command::new(artifacts().luahost());
    cmd.args(["-c", "-f", "svc.cfg"]).current_dir(&dir);
    let out = run_with_timeout(&mut cmd, 30);
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("[ALERT] parsing [svc.cfg:7]") && out.stderr.contains("lua.nothere"),
        "{}",
        out.stderr
    );
    std::fs::write(
        dir.join("good.cfg"),
        "global\n  lua-load svc.lua\ndefaults\n  mode http\nfrontend fe\n  bind 127.0.0.1:1\n  http-request use-service lua.hello\n",
    )
    .expect("write");
    let mut cmd = Command::new(artifacts().luahost());
    cmd.args(["-c", "-f", "good.cfg"]).current_dir(&dir);
    let out = run_with_timeout(&mut cmd, 30);
    assert_eq!(out.status, Some(0), "{out:?}");
}

/// A stop signal that arrives while luahost is still starting (here: while
/// a Lua body runs, after the listeners are bound) is kept and acted on once
/// it serves, as in HAProxy, whose handlers are registered before it binds;
/// it does not kill the process with the signal's default action.
#[test]
fn a_stop_signal_during_start_up_waits_for_the_proxy_to_serve() {
    // The body waits (bounded) for the test to create `go`.
    let lua = format!(
        "local t = os.time()\n\
         while not io.open('go') and os.time() - t < 20 do os.execute('sleep 0.02') end\n{SERVICES}"
    );
    for sig in ["USR1", "TERM"] {
        let port = free_port();
        let config = cfg(port, "  nbthread 1", "  http-request use-service lua.hello");
        // The port accepts from the bind on, before the body has run.
        let mut p = start_service("proxy_signal_at_start", &lua, &config, port);
        assert!(!p.log().contains("started"), "{sig}: {}", p.log());
        p.signal(sig);
        std::fs::write(p.dir.join("go"), "").expect("write go");
        assert_eq!(p.wait_exit(20), Some(0), "{sig}: {}", p.log());
        let log = p.log();
        assert!(log.contains("started"), "{sig}: {log}");
    }
}

#[test]
fn sigterm_finishes_requests_in_flight_and_sigusr1_stops_accepting() {
    let port = free_port();
    let lua = format!("{SERVICES}\ncore.register_service('slow', 'http', function(applet)\n  core.Alert('slow: serving')\n  core.msleep(700)\n  applet:add_header('content-length', 4)\n  applet:send('done')\nend)\n");
    let config = cfg(port, "  nbthread 1", "  http-request use-service lua.slow");
    let mut p = Proxy::start(
        "proxy_sigterm",
        &[("svc.lua", &lua), ("p.cfg", &config)],
        "p.cfg",
        &["-p", "pid"],
        &[port],
    );
    let pidfile = p.dir.join("pid");
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap_or_default().trim(),
        p.pid().to_string()
    );
    let inflight = std::thread::spawn(move || http_get(port, "/"));
    p.wait_log("slow: serving", 20);
    p.signal("TERM");
    let r = inflight.join().expect("client thread");
    assert_eq!(
        (r.status, r.text()),
        (200, "done".to_string()),
        "the request in flight completes"
    );
    assert_eq!(p.wait_exit(10), Some(0));
    assert!(!pidfile.exists(), "pid file removed at exit");

    // Soft stop: the listener closes, the request in flight finishes, the
    // process exits once idle.
    let port = free_port();
    let config = cfg(port, "  nbthread 1", "  http-request use-service lua.slow");
    let mut p = start_service("proxy_sigusr1", &lua, &config, port);
    let inflight = std::thread::spawn(move || http_get(port, "/"));
    p.wait_log("slow: serving", 20);
    p.signal("USR1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no longer accepting"
    );
    let r = inflight.join().expect("client thread");
    assert_eq!(
        (r.status, r.text()),
        (200, "done".to_string()),
        "the request in flight completes"
    );
    assert_eq!(p.wait_exit(10), Some(0));
}

#[test]
fn failing_init_function_stops_start_up() {
    let dir = luahost_suite::scratch_dir("proxy_init_fails");
    std::fs::write(
        dir.join("svc.lua"),
        format!("{SERVICES}\ncore.register_init(function()\n  error('init failed here')\nend)\n"),
    )
    .expect("write");
    let port = free_port();
    std::fs::write(
        dir.join("p.cfg"),
        cfg(port, "  nbthread 1", "  http-request use-service lua.hello"),
    )
    .expect("write");
    let mut cmd = Command::new(artifacts().luahost());
    cmd.args(["-f", "p.cfg"]).current_dir(&dir);
    let out = run_with_timeout(&mut cmd, 30);
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("Lua init: svc.lua:12: init failed here"),
        "{}",
        out.stderr
    );
}

#[test]
fn session_variables_and_dynamic_backend_names() {
    let front = free_port();
    let origin = free_port();
    let lua = r#"
core.register_action("count", {"http-req"}, function(txn)
  local n = (txn:get_var("sess.n") or 0) + 1
  txn:set_var("sess.n", n)
  txn.http:req_set_header("x-n", tostring(n))
end)
core.register_service("origin", "http", function(applet)
  local body = "origin saw n=" .. (applet.headers["x-n"] and applet.headers["x-n"][0] or "?")
  applet:add_header("content-length", #body)
  applet:send(body)
end)
"#;
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\ndefaults\n  mode http\n  timeout client 10s\n  timeout server 5s\n  timeout connect 1s\n\
         frontend fe\n  bind 127.0.0.1:{front}\n  http-request lua.count\n  use_backend be_%[req.hdr(x-be)] if {{ req.hdr(x-be) -m found }}\n\
         backend be_one\n  server s1 127.0.0.1:{origin}\n\
         frontend origin\n  bind 127.0.0.1:{origin}\n  http-request use-service lua.origin\n"
    );
    let _p = Proxy::start(
        "proxy_sess_dynamic",
        &[("svc.lua", lua), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[front, origin],
    );
    let mut c = HttpReader::connect(front);
    for n in 1..=3 {
        c.send(b"GET / HTTP/1.1\r\nhost: t\r\nx-be: one\r\n\r\n");
        let r = c.read_response(false).expect("response");
        assert_eq!(
            (r.status, r.text()),
            (200, format!("origin saw n={n}")),
            "sess.n lives as long as the connection"
        );
    }
    // A fresh connection starts a fresh session; an unknown backend is a 503.
    let mut c = HttpReader::connect(front);
    c.send(b"GET / HTTP/1.1\r\nhost: t\r\nx-be: one\r\n\r\n");
    assert_eq!(
        c.read_response(false).expect("response").text(),
        "origin saw n=1"
    );
    c.send(b"GET / HTTP/1.1\r\nhost: t\r\nx-be: nope\r\n\r\n");
    assert_eq!(c.read_response(false).expect("503").status, 503);
}

#[test]
fn timeouts_stop_code_that_cannot_yield_and_odd_arguments_do_not_crash() {
    let port = free_port();
    let port2 = free_port();
    let lua = format!(
        "{SERVICES}\n\
         core.register_service('stuck', 'http', function(applet)\n\
           -- the callback runs inside a C function: no forced yield is possible there\n\
           string.gsub('x', 'x', function() while true do end end)\n\
         end)\n\
         core.register_service('odd', 'http', function(applet)\n\
           local f = applet.c:field('a;b;c', 3, ';', math.maxinteger)\n\
           local w = applet.c:word('a b c', -1, ' ', math.maxinteger)\n\
           local body = tostring(f) .. '|' .. tostring(w)\n\
           applet:add_header('content-length', #body)\n\
           applet:send(body)\n\
         end)\n"
    );
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\n  tune.lua.service-timeout 800\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend stuck\n  bind 127.0.0.1:{port}\n  http-request use-service lua.stuck\n\
         frontend odd\n  bind 127.0.0.1:{port2}\n  http-request use-service lua.odd\n"
    );
    let p = Proxy::start(
        "proxy_stuck",
        &[("svc.lua", &lua), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[port, port2],
    );
    let t = Instant::now();
    assert_eq!(http_get(port, "/").status, 500);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stopped after {:?}",
        t.elapsed()
    );
    let log = p.wait_log("execution timeout", 5);
    assert!(
        log.contains("Lua applet http 'stuck': ") && log.contains("execution timeout"),
        "{log}"
    );
    let r = http_get(port2, "/");
    // No crash on huge counts; the words are clamped to what exists.
    assert_eq!(
        (r.status, r.text()),
        (200, "c|a b c".to_string()),
        "{}",
        p.log()
    );
}

#[test]
fn getline_returns_long_lines_in_buffer_sized_pieces() {
    let port = free_port();
    let lua = r#"
core.register_service("lines", "tcp", function(applet)
  local sizes = {}
  while true do
    local line = applet:getline()
    if line == "" then break end
    sizes[#sizes + 1] = #line
  end
  applet:send(table.concat(sizes, ",") .. "\n")
end)
"#;
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\n  tune.bufsize 1024\ndefaults\n  mode tcp\n  timeout client 10s\n\
         listen lines\n  bind 127.0.0.1:{port}\n  tcp-request content use-service lua.lines\n"
    );
    let _p = start_service("proxy_getline", lua, &config, port);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut data = vec![b'x'; 2500];
    data.extend_from_slice(b"\nab\n");
    s.write_all(&data).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    // A line longer than tune.bufsize comes back in pieces, as in HAProxy.
    assert_eq!(out, "1024,1024,453,3\n");
}

/// Sends `len` bytes to `port` (then half-closes if `finish`) and returns
/// the line the service answers; the writer stops if the service hangs up.
fn tcp_reply_to_bulk(port: u16, len: usize, finish: bool) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            if w.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n;
        }
        if finish {
            let _ = w.shutdown(std::net::Shutdown::Write);
        }
    });
    let mut out = Vec::new();
    let mut tmp = [0u8; 4096];
    while !out.contains(&b'\n') {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&tmp[..n]),
        }
    }
    drop(s);
    let _ = writer.join();
    String::from_utf8_lossy(&out).into_owned()
}

/// An AppletTCP `receive()` (or `receive(n)`) that would hold more than
/// `tune.lua.maxmem` fails with `not enough memory`, as in HAProxy 3.0
/// (which collects it in a Lua buffer), rather than returning short data;
/// the connection is still the applet's to answer on.
#[test]
fn tcp_receive_past_maxmem_is_an_error_like_haproxy3() {
    let lua = r#"
local function answer(applet, ok, d)
  if ok then applet:send("ok " .. #d .. "\n") else applet:send("err " .. tostring(d) .. "\n") end
end
core.register_service("all", "tcp", function(applet)
  answer(applet, pcall(applet.receive, applet))
end)
core.register_service("sized", "tcp", function(applet)
  answer(applet, pcall(applet.receive, applet, 4000000))
end)
"#;
    let (all, sized) = (free_port(), free_port());
    let config = format!(
        "global\n  lua-load svc.lua\n  tune.lua.maxmem 2\n\
         defaults\n  mode tcp\n  timeout client 10s\n  timeout connect 1s\n  timeout server 1s\n\
         listen all\n  bind 127.0.0.1:{all}\n  tcp-request content use-service lua.all\n\
         listen sized\n  bind 127.0.0.1:{sized}\n  tcp-request content use-service lua.sized\n"
    );
    let p = Proxy::start(
        "proxy_tcp_receive_maxmem",
        &[("svc.lua", lua), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[all, sized],
    );
    let expected = "err not enough memory\n";
    assert_eq!(
        tcp_reply_to_bulk(all, 4_000_000, false),
        expected,
        "{}",
        p.log()
    );
    assert_eq!(
        tcp_reply_to_bulk(sized, 4_000_000, false),
        expected,
        "{}",
        p.log()
    );
    // Within the cap, every byte, up to the end of the stream. (HAProxy
    // 3.0.11 does not end a receive at the client's half-close: not
    // compared.)
    assert_eq!(tcp_reply_to_bulk(all, 1_000_000, true), "ok 1000000\n");
    assert_eq!(tcp_reply_to_bulk(sized, 1_000_000, true), "ok 1000000\n");
    let dir = p.dir.clone();
    drop(p);
    if let Some(h) = luahost_suite::require_haproxy_30("AppletTCP receive is compared") {
        let _h = h.start(&dir, "p.cfg", &[all, sized]);
        assert_eq!(
            tcp_reply_to_bulk(all, 4_000_000, false),
            expected,
            "haproxy 3.0"
        );
        assert_eq!(
            tcp_reply_to_bulk(sized, 4_000_000, false),
            expected,
            "haproxy 3.0"
        );
    }
}

#[test]
fn soft_stop_keeps_the_shared_state_for_other_workers_requests() {
    let port = free_port();
    let lua = "core.register_service('slow', 'http', function(applet)\n  core.Alert('slow: serving')\n  core.msleep(600)\n  applet:add_header('content-length', 4)\n  applet:send('done')\nend)\n";
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 2\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  http-request use-service lua.slow\n"
    );
    let mut p = start_service("proxy_soft_shared", lua, &config, port);
    // Several connections, so that both workers hold some; all of them run
    // their Lua in the shared state on worker 0.
    let clients: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || http_get(port, "/")))
        .collect();
    // Every request in the service before the stop: a connection still in
    // the listener's queue when the listener closes would be reset.
    let log = p.wait_log_count("slow: serving", 6, 20);
    assert_eq!(log.matches("slow: serving").count(), 6, "{log}");
    p.signal("USR1");
    for c in clients {
        let r = c.join().expect("client");
        assert_eq!((r.status, r.text()), (200, "done".to_string()));
    }
    assert_eq!(p.wait_exit(15), Some(0));
}

/// Opens a connection, waits until the server has surely accepted it, asks
/// `stop` to soft-stop the server, then sends a request on the connection:
/// the answer's status line (empty when the server closed instead).
fn request_after_soft_stop(port: u16, stop: impl FnOnce()) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    std::thread::sleep(Duration::from_millis(300));
    stop();
    std::thread::sleep(Duration::from_millis(300));
    let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_connection_accepted_before_a_soft_stop_gets_its_first_request_answered() {
    // A soft stop (and so a master-worker reload) closes connections idle
    // between requests, but one accepted before it and not yet sent its
    // request is answered, as HAProxy's h1 mux does.
    let port = free_port();
    let config = format!(
        "global\n  lua-load svc.lua\ndefaults\n  mode http\n  timeout client 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  http-request return status 200 content-type text/plain string ok\n"
    );
    let mut p = start_service("proxy_soft_first_request", "", &config, port);
    let status = request_after_soft_stop(port, || p.signal("USR1"));
    assert_eq!(status, "HTTP/1.1 200 OK", "{}", p.log());
    assert_eq!(p.wait_exit(15), Some(0), "{}", p.log());
    let dir = p.dir.clone();
    drop(p);
    if let Some(h) = luahost_suite::require_haproxy_30("the soft stop is compared") {
        let mut h = h.start(&dir, "p.cfg", &[port]);
        let status = request_after_soft_stop(port, || h.signal("USR1"));
        assert_eq!(status, "HTTP/1.1 200 OK", "haproxy 3.0");
        assert_eq!(h.wait_exit(15), Some(0), "haproxy 3.0");
    }
}

#[test]
fn kept_objects_go_stale_and_methods_check_their_class() {
    // Objects built for a request hold handles to that request's data:
    // a TXN kept in a global must not reach a later transaction, and a
    // method called with another class's object must say so. The service's
    // coroutine is reused across requests (and after an error).
    let port = free_port();
    let lua = r#"
kept = nil
core.register_action("keep", {"http-req"}, function(txn)
  txn:set_var("txn.who", txn.sf:path())
  if kept == nil then kept = txn end
end)
core.register_service("probe", "http", function(applet)
  local out = {}
  local ok, err = pcall(function() return kept:get_var("txn.who") end)
  out[#out + 1] = tostring(ok) .. " " .. tostring(err)
  ok, err = pcall(function() return kept.http:req_get_headers() end)
  out[#out + 1] = tostring(ok) .. " " .. tostring(err)
  ok, err = pcall(function() return applet.set_status(applet.sf, 200) end)
  out[#out + 1] = tostring(ok) .. " " .. tostring(err)
  ok, err = pcall(function() return applet.sf.path(applet, "x") end)
  out[#out + 1] = tostring(ok) .. " " .. tostring(err)
  out[#out + 1] = applet:get_var("txn.who") .. " " .. type(applet[0])
  if applet.path == "/fail" then error("planned failure") end
  local body = table.concat(out, "\n")
  applet:add_header("content-length", #body)
  applet:send(body)
end)
"#;
    let config = cfg(
        port,
        "  nbthread 1",
        "  http-request lua.keep\n  http-request use-service lua.probe",
    );
    let p = start_service("proxy_handles", lua, &config, port);
    let gone = "the transaction this object belongs to is over";
    for path in ["/first", "/second"] {
        let r = http_get(port, path);
        assert_eq!(r.status, 200);
        let text = r.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[0].starts_with("false") && lines[0].contains(gone),
            "{text}"
        );
        assert!(
            lines[1].starts_with("false") && lines[1].contains(gone),
            "{text}"
        );
        assert!(
            lines[2].contains("bad argument #1 to 'set_status' (AppletHTTP expected, got Fetches)"),
            "{text}"
        );
        assert!(
            lines[3].contains("bad argument #1 to 'path' (Fetches expected, got AppletHTTP)"),
            "{text}"
        );
        assert_eq!(lines[4], format!("{path} userdata"), "{text}");
    }
    assert_eq!(http_get(port, "/fail").status, 500);
    p.wait_log("planned failure", 5);
    let r = http_get(port, "/third");
    assert_eq!(r.status, 200);
    assert!(r.text().ends_with("/third userdata"), "{}", r.text());
}

#[test]
fn c_function_methods_check_arguments_and_format_numbers_as_lua() {
    // AppletHTTP's per-request methods and the lazy sub-objects are C
    // functions reading the Lua stack directly (host/src/lua/raw.rs): their
    // errors are Lua strings with the caller's position, numbers become text
    // as Lua's tostring writes them, and a TCP transaction has no txn.http.
    let port = free_port();
    let tcp_port = free_port();
    let lua = r#"
kept = nil
core.register_service("raw", "http", function(applet)
  local out = {}
  local function try(f)
    local ok, err = pcall(f)
    out[#out + 1] = tostring(ok) .. " " .. type(err) .. " " .. tostring(err)
  end
  try(function() applet:set_status("abc") end)
  try(function() applet:set_status(2.5) end)
  try(function() applet:set_status(99) end)
  try(function() applet:add_header("x-t", {}) end)
  try(function() applet:add_header() end)
  try(function() applet.start_response({}) end)
  try(function() return getmetatable(applet).__index(5, "sf") end)
  try(function() kept:set_status(200) end)
  if kept == nil then kept = applet end
  applet:set_status(201, "Made")
  applet:add_header("X-Int", 42)
  applet:add_header("x-float", 1.5)
  applet:add_header("x-whole-float", 10.0)
  applet:add_header("bad name", "dropped")
  applet:add_header("x-str", "plain")
  local body = table.concat(out, "\n") .. "\n"
  applet:add_header("content-length", #body + 3)
  applet:start_response()
  applet:send(body)
  applet:send(123)
end)
core.register_action("probe", {"tcp-req"}, function(txn)
  txn:set_var("sess.http", tostring(txn.http) .. " " .. type(txn.sf) .. " " .. type(txn.req))
end)
core.register_service("tcpout", "tcp", function(applet)
  applet:send(applet:get_var("sess.http") .. "\n")
end)
"#;
    let config = format!(
        "global\n  lua-load svc.lua\n  nbthread 1\ndefaults\n  timeout client 10s\n\
         frontend fe\n  mode http\n  bind 127.0.0.1:{port}\n  http-request use-service lua.raw\n\
         listen tcp\n  mode tcp\n  bind 127.0.0.1:{tcp_port}\n  tcp-request content lua.probe\n  \
         tcp-request content use-service lua.tcpout\n"
    );
    let p = Proxy::start(
        "proxy_raw_methods",
        &[("svc.lua", lua), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[port, tcp_port],
    );
    for round in 0..2 {
        let r = http_get(port, "/");
        assert_eq!(r.status, 201);
        assert_eq!(r.header("x-int"), Some("42"));
        assert_eq!(r.header("x-float"), Some("1.5"));
        assert_eq!(r.header("x-whole-float"), Some("10.0"));
        assert_eq!(r.header("x-str"), Some("plain"));
        let text = r.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 9, "{text}");
        let expect = [
            "bad argument #2 to 'set_status' (number expected, got string)",
            "bad argument #2 to 'set_status' (number has no integer representation)",
            "set_status: invalid status code 99",
            "bad argument #3 to 'add_header' (string expected, got table)",
            "bad argument #2 to 'add_header' (string expected, got no value)",
            "bad argument #1 to 'start_response' (AppletHTTP expected, got table)",
        ];
        for (line, want) in lines.iter().zip(expect) {
            // A plain Lua string, located at the calling line of the script.
            assert!(line.starts_with("false string svc.lua:"), "{text}");
            assert!(line.ends_with(want), "{line} / {want}");
        }
        // Called from a C function (the class's __index), an error has no
        // position, as with luaL_error.
        assert_eq!(
            lines[6],
            "false string bad argument #1 to 'sf' (AppletHTTP expected, got number)"
        );
        if round == 0 {
            assert!(lines[7].contains("attempt to index a nil value"), "{text}");
        } else {
            assert!(
                lines[7].ends_with("the transaction this object belongs to is over"),
                "{text}"
            );
        }
        assert_eq!(lines[8], "123", "{text}");
    }
    p.wait_log("invalid response header 'bad name' dropped", 5);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", tcp_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert_eq!(out, "nil table table\n");
}

#[test]
fn frontend_on_the_shared_state_is_served_by_its_worker() {
    // A frontend without a backend whose Lua lives in the shared state is
    // accepted by worker 0 alone (its requests would otherwise all cross to
    // worker 0 and back). A per-thread fetch tells which worker ran the
    // request: core.thread is 1 on worker 0's per-thread state.
    let port = free_port();
    let shared = r#"
core.register_service("which", "http", function(applet)
  local body = applet.headers["x-worker"][0]
  applet:add_header("content-length", #body)
  applet:send(body)
end)
"#;
    let per_thread = r#"
core.register_fetches("worker", function(txn) return tostring(core.thread) end)
"#;
    let config = format!(
        "global\n  lua-load shared.lua\n  lua-load-per-thread pt.lua\n  nbthread 2\ndefaults\n  mode http\n  \
         timeout client 10s\nfrontend fe\n  bind 127.0.0.1:{port}\n  \
         http-request set-header x-worker %[lua.worker]\n  http-request use-service lua.which\n"
    );
    let _p = Proxy::start(
        "proxy_shared_worker",
        &[
            ("shared.lua", shared),
            ("pt.lua", per_thread),
            ("p.cfg", &config),
        ],
        "p.cfg",
        &[],
        &[port],
    );
    for _ in 0..30 {
        // A new connection each time: the kernel picks the accepting worker.
        let r = http_get(port, "/");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "1");
    }
}
