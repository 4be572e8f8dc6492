//! Big request bodies stream through Lua services and the proxy with
//! bounded memory (real luahost processes, loopback sockets).

use luahost_suite::upload::{peak_rss_kib, upload, DiscardOrigin, Framing};
use luahost_suite::{free_port, http_get, HttpReader, Proxy};
use std::time::Duration;

/// Body size of the streamed uploads.
const SIZE: u64 = 128 << 20;
/// How much the process's peak resident memory may grow over an upload:
/// a few buffers per connection, far below the body.
const GROWTH_KIB: u64 = 64 << 10;
/// A server that stops reading or answering for this long has stalled.
const IDLE: Duration = Duration::from_secs(5);

const SERVICES: &str = r#"
core.register_service("sink", "http", function(applet)
  local n = 0
  while true do
    local d = applet:receive(65536)
    if not d or #d == 0 then break end
    n = n + #d
  end
  applet:set_status(200)
  applet:start_response()
  applet:send(tostring(n))
end)
core.register_service("lines", "http", function(applet)
  local n, lines = 0, 0
  while true do
    local l = applet:getline()
    if #l == 0 then break end
    n, lines = n + #l, lines + 1
  end
  applet:send(n .. " " .. lines)
end)
core.register_service("whole", "http", function(applet)
  local ok, body = pcall(applet.receive, applet)
  if not ok then
    applet:set_status(500)
    applet:send(body)
    return
  end
  applet:send(tostring(#body))
end)
-- Reads the rest of the body in reads of `size` bytes; its length.
local function body_length(applet, size)
  local n = 0
  while true do
    local d = applet:receive(size)
    if #d == 0 then return n end
    n = n + #d
  end
end
core.register_service("pieces", "http", function(applet)
  local out = {}
  for i = 1, 4 do out[#out + 1] = #applet:receive(1500) end
  out[#out + 1] = #applet:receive(0)
  applet:send(table.concat(out, ","))
end)
core.register_service("retry", "http", function(applet)
  local ok, err = pcall(applet.receive, applet)
  local n = body_length(applet, 65536)
  applet:send(tostring(ok) .. " " .. tostring(err) .. " " .. n)
end)
core.register_service("chunks", "http", function(applet)
  local n = body_length(applet, 4096)
  applet:send(tostring(n))
end)
core.register_service("chunks_ballast", "http", function(applet)
  -- Data the service keeps while it reads: with it, the garbage the
  -- chunks leave can reach the cap before Lua's collector runs.
  local ballast = {}
  for i = 1, 5120 do ballast[i] = string.rep("x", 4090) .. string.format("%06d", i) end
  local n = body_length(applet, 4096)
  applet:send(tostring(n + #ballast[1] - #ballast[#ballast]))
end)
core.register_service("keep", "http", function(applet)
  local kept = {}
  local ok, err = pcall(function()
    while true do
      local d = applet:receive(4096)
      if #d == 0 then break end
      kept[#kept + 1] = d
    end
  end)
  local n = #kept * 4096
  kept = nil
  collectgarbage()
  applet:set_status(ok and 200 or 500)
  applet:send(tostring(err) .. " after " .. n)
end)
core.register_service("whole_unprotected", "http", function(applet)
  applet:send(tostring(#applet:receive()))
end)
"#;

fn lua_config(load: &str, port: u16, global: &str) -> String {
    format!(
        "global\n  {load} svc.lua\n  nbthread 2\n{global}defaults\n  mode http\n  timeout client 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n{}",
        ["sink", "lines", "whole", "pieces", "retry", "whole_unprotected", "chunks", "chunks_ballast", "keep"]
            .map(|s| format!("  http-request use-service lua.{s} if {{ path /{s} }}\n"))
            .concat()
    )
}

/// The peak RSS of `p` once it has served a small upload (its buffers and
/// Lua state warmed up).
fn warm_peak(p: &Proxy, port: u16, path: &str) -> u64 {
    let r = upload(port, path, 1 << 20, Framing::ContentLength, IDLE).expect("warm-up upload");
    assert_eq!(r.status, 200, "{r:?}");
    peak_rss_kib(p.pid()).expect("VmHWM")
}

/// Streams SIZE bytes both ways (content-length, chunked) to `path` and
/// checks the byte count and the memory growth.
fn streams_with_bounded_memory(p: &Proxy, port: u16, path: &str) {
    let base = warm_peak(p, port, path);
    for framing in [Framing::ContentLength, Framing::Chunked] {
        let r = upload(port, path, SIZE, framing, IDLE)
            .unwrap_or_else(|e| panic!("{framing:?} upload to {path}: {e}\n{}", p.log()));
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, SIZE.to_string().as_str()),
            "{framing:?}"
        );
    }
    let peak = peak_rss_kib(p.pid()).expect("VmHWM");
    assert!(
        peak < base + GROWTH_KIB,
        "peak RSS grew from {base} KiB to {peak} KiB over {} MiB uploads",
        SIZE >> 20
    );
}

fn start_lua(name: &str, load: &str, global: &str) -> (Proxy, u16) {
    let port = free_port();
    let config = lua_config(load, port, global);
    let p = Proxy::start(
        name,
        &[("svc.lua", SERVICES), ("p.cfg", &config)],
        "p.cfg",
        &[],
        &[port],
    );
    (p, port)
}

#[test]
fn upload_streams_through_a_shared_state_service() {
    let (p, port) = start_lua("upload_shared", "lua-load", "");
    streams_with_bounded_memory(&p, port, "/sink");
}

#[test]
fn upload_streams_through_a_per_thread_service() {
    // A small forced-yield: preemption at many more points of the loop.
    let (p, port) = start_lua(
        "upload_per_thread",
        "lua-load-per-thread",
        "  tune.lua.forced-yield 100\n",
    );
    streams_with_bounded_memory(&p, port, "/sink");
}

#[test]
fn getline_streams_a_big_body() {
    let (p, port) = start_lua("upload_lines", "lua-load", "");
    // Zero bytes, no newline: lines come back in tune.bufsize pieces.
    let base = warm_peak(&p, port, "/sink");
    let r = upload(port, "/lines", 32 << 20, Framing::Chunked, IDLE).expect("upload");
    assert_eq!(r.status, 200);
    let (bytes, lines) = r.body.split_once(' ').expect("two numbers");
    assert_eq!(bytes, (32u64 << 20).to_string());
    assert_eq!(lines, ((32u64 << 20) / 16384).to_string(), "16 KiB pieces");
    assert!(peak_rss_kib(p.pid()).expect("VmHWM") < base + GROWTH_KIB);
}

#[test]
fn upload_streams_through_the_proxy() {
    let origin = DiscardOrigin::start();
    let port = free_port();
    let config = format!(
        "global\n  nbthread 2\ndefaults\n  mode http\n  timeout client 10s\n  timeout server 10s\n  \
         timeout connect 2s\nfrontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
         backend be\n  server origin 127.0.0.1:{}\n",
        origin.port
    );
    let p = Proxy::start("upload_proxy", &[("p.cfg", &config)], "p.cfg", &[], &[port]);
    streams_with_bounded_memory(&p, port, "/upload");
}

#[test]
fn maxmem_refuses_a_whole_body_receive_while_buffering() {
    let (p, port) = start_lua("upload_maxmem", "lua-load", "  tune.lua.maxmem 32\n");
    let base = warm_peak(&p, port, "/sink");
    // A pcall sees Lua's own message for a failed allocation.
    let r = upload(port, "/whole", SIZE, Framing::ContentLength, IDLE).expect("an answer");
    assert_eq!((r.status, r.body.as_str()), (500, "not enough memory"));
    assert!(
        r.sent < SIZE / 2,
        "refused only after {} MiB were read",
        r.sent >> 20
    );
    // Nothing is lost by a refusal: the bytes already taken stay in the
    // request buffer, and reading on in pieces gets the whole body.
    let r = upload(port, "/retry", 64 << 20, Framing::ContentLength, IDLE).expect("an answer");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "false not enough memory 67108864")
    );
    // Uncaught: the service fails with HAProxy's 500 and a log line.
    let r = upload(port, "/whole_unprotected", SIZE, Framing::Chunked, IDLE).expect("an answer");
    assert_eq!(r.status, 500);
    let log = p.wait_log("not enough memory", 5);
    assert!(
        log.contains("Lua applet http 'whole_unprotected': not enough memory"),
        "{log}"
    );
    let peak = peak_rss_kib(p.pid()).expect("VmHWM");
    assert!(
        peak < base + GROWTH_KIB,
        "peak RSS grew from {base} KiB to {peak} KiB under a 32 MB cap"
    );
    // The charge was released: bodies under the cap, and streams of any
    // size, are still served.
    let r = upload(port, "/whole", 8 << 20, Framing::ContentLength, IDLE).expect("upload");
    assert_eq!((r.status, r.body.as_str()), (200, "8388608"));
    let r = upload(port, "/sink", SIZE, Framing::Chunked, IDLE).expect("upload");
    assert_eq!((r.status, r.body), (200, SIZE.to_string()));
    assert_eq!(http_get(port, "/sink").text(), "0");
}

#[test]
fn maxmem_counts_what_a_service_keeps_not_the_chunks_it_dropped() {
    // 32 MB cap, bodies of 4 times that read 4 KiB at a time: strings the
    // script dropped are garbage, not memory in use. Keeping them all must
    // fail with Lua's memory error.
    let (p, port) = start_lua(
        "upload_chunks_maxmem",
        "lua-load",
        "  tune.lua.maxmem 32
",
    );
    const BODY: u64 = 128 << 20;
    for (path, framing) in [
        ("/chunks", Framing::ContentLength),
        ("/chunks", Framing::Chunked),
        ("/chunks_ballast", Framing::ContentLength),
    ] {
        let r = upload(port, path, BODY, framing, IDLE)
            .unwrap_or_else(|e| panic!("{path} {framing:?} upload: {e}\n{}", p.log()));
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, BODY.to_string().as_str()),
            "{path} {framing:?}\n{}",
            p.log()
        );
    }
    let r = upload(port, "/keep", BODY, Framing::ContentLength, IDLE).expect("an answer");
    assert_eq!(r.status, 500, "{r:?}");
    let (err, kept) = r.body.split_once(" after ").expect("error and count");
    assert_eq!(err, "not enough memory");
    let kept: u64 = kept.parse().expect("a count");
    assert!(
        kept > 16 << 20 && kept <= 32 << 20,
        "kept {kept} bytes under a 32 MB cap"
    );
    // Everything kept was released: the next body streams again.
    let r = upload(port, "/chunks", BODY, Framing::Chunked, IDLE).expect("upload");
    assert_eq!((r.status, r.body), (200, BODY.to_string()));
}

#[test]
fn receive_n_waits_for_n_bytes() {
    let (_p, port) = start_lua("upload_pieces", "lua-load", "");
    let mut c = HttpReader::connect(port);
    // 1000 bytes, a pause long enough for the service to have read them,
    // then the other 2000: the first receive(1500) waits for the rest.
    c.send(b"POST /pieces HTTP/1.1\r\nhost: t\r\ncontent-length: 3000\r\n\r\n");
    c.send(&[b'a'; 1000]);
    std::thread::sleep(Duration::from_millis(200));
    c.send(&[b'b'; 2000]);
    let r = c.read_response(false).expect("a response");
    assert_eq!(
        r.text(),
        "1500,1500,0,0,0",
        "exactly n bytes, fewer only at the end"
    );
}
