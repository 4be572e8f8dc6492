//! Upload benchmark: big request bodies streamed to a Lua service (shared
//! `lua-load` state and `lua-load-per-thread`) and through the proxy to an
//! origin that discards them, against luahost and, where installed,
//! HAProxy 2.6 (`haproxy`) and 3.0 (`/work/shared/anchors/haproxy3`), in
//! one run.
//!
//!     cargo bench --bench upload
//!
//! Every server and workload gets a fresh process (`nbthread 2`), which
//! receives UPLOAD_COUNT uploads (default 3) of UPLOAD_SIZE bytes (default
//! 1 GiB) one after the other, with a content-length (UPLOAD_CHUNKED=1:
//! chunked). An upload fails when the server stops reading or answering for
//! 10 s. The table shows the uploads completed, the throughput over the
//! completed ones, and the process's peak resident memory (VmHWM) at start
//! and after the uploads. The Lua service reads with `applet:receive(65536)`
//! in a loop and answers the byte count; the origin (threads of this
//! program) discards the body and answers the byte count.
//! The last workload, `maxmem-whole`, reads the whole body with one
//! `applet:receive()` under `tune.lua.maxmem 256`: the body is bigger than
//! the cap, so the right answer is a refusal (500), and the memory column
//! shows what the process held before refusing; "completed" counts the
//! refusals there. UPLOAD_WORKLOADS (comma-separated) runs only some
//! workloads.

use luahost_suite::upload::{peak_rss_kib, upload, DiscardOrigin, Framing};
use luahost_suite::{artifacts, find_on_path, free_port, scratch_dir};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SINK: &str = r#"
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
core.register_service("whole", "http", function(applet)
  local body = applet:receive()
  applet:send(tostring(#body))
end)
"#;

const IDLE: Duration = Duration::from_secs(10);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The configuration of a workload.
fn config(workload: &str, port: u16, origin: u16) -> String {
    let defaults = "defaults\n  mode http\n  timeout client 30s\n  timeout server 30s\n  \
                    timeout connect 2s\n";
    match workload {
        "proxy" => format!(
            "global\n  nbthread 2\n{defaults}frontend f\n  bind 127.0.0.1:{port}\n  \
             default_backend b\nbackend b\n  server origin 127.0.0.1:{origin}\n"
        ),
        "maxmem-whole" => format!(
            "global\n  lua-load sink.lua\n  nbthread 2\n  tune.lua.maxmem 256\n{defaults}\
             frontend f\n  bind 127.0.0.1:{port}\n  http-request use-service lua.whole\n"
        ),
        load => format!(
            "global\n  {load} sink.lua\n  nbthread 2\n{defaults}frontend f\n  \
             bind 127.0.0.1:{port}\n  http-request use-service lua.sink\n"
        ),
    }
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(program: &PathBuf, dir: &std::path::Path, port: u16) -> Option<Server> {
    let child = Command::new(program)
        .args(["-f", "bench.cfg"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server { child };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            eprintln!("{} did not start listening", program.display());
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

/// One cell: (completed, MB/s over the completed uploads, VmHWM at start
/// and at the end in MB).
fn measure(
    program: &PathBuf,
    workload: &str,
    origin: u16,
    size: u64,
    count: u64,
    framing: Framing,
) -> Option<(u64, f64, f64, f64)> {
    let port = free_port();
    let dir = scratch_dir(&format!("bench-upload-{workload}"));
    std::fs::write(dir.join("sink.lua"), SINK).ok()?;
    std::fs::write(dir.join("bench.cfg"), config(workload, port, origin)).ok()?;
    let server = start(program, &dir, port)?;
    let pid = server.child.id();
    let rss_start = peak_rss_kib(pid)? as f64 / 1024.0;
    let (mut done, mut bytes, mut secs) = (0, 0u64, 0.0);
    for _ in 0..count {
        match upload(port, "/upload", size, framing, IDLE) {
            Ok(r) if workload == "maxmem-whole" && r.status == 500 => done += 1,
            Ok(r) if r.status == 200 && r.body == size.to_string() => {
                done += 1;
                bytes += size;
                secs += r.elapsed.as_secs_f64();
            }
            Ok(r) => eprintln!("  {workload}: answer {} {:?}", r.status, r.body),
            Err(e) => eprintln!("  {workload}: {e}"),
        }
        if std::env::var_os("UPLOAD_VERBOSE").is_some() {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let rss: Vec<&str> = status
                .lines()
                .filter(|l| {
                    l.starts_with("VmRSS")
                        || l.starts_with("VmHWM")
                        || l.starts_with("RssAnon")
                        || l.starts_with("RssFile")
                })
                .collect();
            eprintln!("  {workload}: after upload: {}", rss.join(" "));
        }
    }
    let rss_end = peak_rss_kib(pid)? as f64 / 1024.0;
    let mbps = if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    };
    Some((done, mbps, rss_start, rss_end))
}

fn main() {
    let size = env_num("UPLOAD_SIZE", 1 << 30);
    let count = env_num("UPLOAD_COUNT", 3);
    let framing = if env_num("UPLOAD_CHUNKED", 0) != 0 {
        Framing::Chunked
    } else {
        Framing::ContentLength
    };
    let mut servers = vec![("luahost".to_string(), artifacts().luahost())];
    if let Some(h) = find_on_path("haproxy") {
        servers.push(("haproxy 2.6".to_string(), h));
    }
    let h3 = PathBuf::from("/work/shared/anchors/haproxy3");
    if h3.is_file() {
        servers.push(("haproxy 3.0".to_string(), h3));
    }
    let origin = DiscardOrigin::start();
    println!(
        "uploads of {} MiB ({framing:?}), {count} per cell, nbthread 2, one fresh process per cell\n",
        size >> 20
    );
    println!(
        "| workload | server | completed | MB/s | peak RSS at start (MB) | peak RSS after (MB) |"
    );
    println!("|---|---|---|---|---|---|");
    let only = std::env::var("UPLOAD_WORKLOADS").unwrap_or_default();
    let workloads = ["lua-load", "lua-load-per-thread", "proxy", "maxmem-whole"]
        .into_iter()
        .filter(|w| only.is_empty() || only.split(',').any(|o| o.trim() == *w));
    for workload in workloads {
        for (name, program) in &servers {
            match measure(program, workload, origin.port, size, count, framing) {
                Some((done, mbps, start, end)) => {
                    let mbps = if mbps > 0.0 {
                        format!("{mbps:.0}")
                    } else {
                        "-".to_string()
                    };
                    println!(
                        "| {workload} | {name} | {done}/{count} | {mbps} | {start:.1} | {end:.1} |"
                    )
                }
                None => println!("| {workload} | {name} | did not run | | | |"),
            }
        }
    }
}
