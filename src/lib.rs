//! Support code shared by the integration tests in `tests/` and the benchmarks
//! in `benches/`: locating (and building) the workspace's real artifacts, and
//! finding external tools such as the stock `lua5.4`.
//!
//! Integration tests run real processes and load real `.so` files, so they need
//! the `luahost` binary and the module cdylibs built in the same profile as the
//! test itself. [`artifacts`] builds them once per test process with a nested
//! `cargo build` (the outer `cargo test` has released the build lock by then).

pub mod http_origin;
pub mod upload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace packages whose binaries or cdylibs tests use.
const ARTIFACT_PACKAGES: &[&str] = &["luahost", "concat", "hello-rs", "hello-c", "async-rs"];

/// Paths of the built artifacts.
pub struct Artifacts {
    /// `target/<profile>`.
    pub dir: PathBuf,
}

impl Artifacts {
    /// The `luahost` executable.
    pub fn luahost(&self) -> PathBuf {
        self.dir.join("luahost")
    }

    /// A cdylib of the workspace, as cargo names it: `lib<name>.so`.
    pub fn cdylib(&self, crate_name: &str) -> PathBuf {
        self.dir
            .join(format!("lib{}.so", crate_name.replace('-', "_")))
    }

    /// A file that a build script placed in the profile directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The root of the workspace.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>` of the running test or bench executable
/// (which lives in `target/<profile>/deps/`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("executable has a directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Builds the workspace artifacts once (same profile as the caller) and
/// returns where they are. Panics with cargo's output if the build fails.
pub fn artifacts() -> &'static Artifacts {
    static ONCE: OnceLock<Artifacts> = OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = profile_dir();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let target_dir = dir.parent().expect("profile dir has a parent");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--quiet")
            .arg("--target-dir")
            .arg(target_dir);
        if release {
            cmd.arg("--release");
        }
        for p in ARTIFACT_PACKAGES {
            cmd.arg("-p").arg(p);
        }
        cmd.current_dir(workspace_root());
        let out = cmd.output().expect("cannot run cargo build");
        assert!(
            out.status.success(),
            "cargo build of the test artifacts failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Artifacts { dir }
    })
}

/// True when running under CI (`CI=true`), where a missing tool is a failure.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Finds an external program on PATH. When it is missing, a test should not
/// silently pass: under CI this panics; elsewhere it prints why the test is
/// skipped and returns None.
pub fn require_program(name: &str, what_for: &str) -> Option<PathBuf> {
    if let Some(p) = find_on_path(name) {
        return Some(p);
    }
    missing(&format!("`{name}` is not installed ({what_for})"))
}

/// Like [`require_program`] for a file such as a Debian-packaged module.
pub fn require_file(path: &str, what_for: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if p.exists() {
        return Some(p.to_path_buf());
    }
    missing(&format!("{path} does not exist ({what_for})"))
}

fn missing<T>(why: &str) -> Option<T> {
    if under_ci() {
        panic!("{why}; CI must install it (see .ci/run)");
    }
    eprintln!("SKIPPED: {why}; install it to run this test");
    None
}

/// One HAProxy release that tests and benchmarks compare luahost with.
#[derive(Clone, Debug)]
pub struct HaproxyPeer {
    /// A short label for tables and messages: "haproxy 2.6", "haproxy 3.0".
    pub label: String,
    /// What to execute (a binary, or the anchors' `haproxy3` launcher, which
    /// `exec`s HAProxy so the child's pid is HAProxy's).
    pub program: PathBuf,
    /// The first line of `-v`.
    pub version: String,
}

impl HaproxyPeer {
    fn probe(program: PathBuf) -> Option<HaproxyPeer> {
        let out = Command::new(&program).arg("-v").output().ok()?;
        let version = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .to_string();
        // "HAProxy version 3.0.11-1 2025/..." -> "haproxy 3.0".
        let number = version
            .split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)?;
        let minor: Vec<&str> = number.split('.').take(2).collect();
        Some(HaproxyPeer {
            label: format!("haproxy {}", minor.join(".")),
            program,
            version,
        })
    }
}

/// HAProxy 2.6: Debian's package (on PATH, else /usr/sbin/haproxy, since
/// /usr/sbin is not on every user's PATH).
pub fn haproxy_26() -> Option<HaproxyPeer> {
    let program = find_on_path("haproxy").or_else(|| {
        let sbin = Path::new("/usr/sbin/haproxy");
        sbin.is_file().then(|| sbin.to_path_buf())
    })?;
    HaproxyPeer::probe(program)
}

/// HAProxy 3.0 through `../shared/anchors/haproxy3`, but only once its tree
/// is installed (`.ci/run` installs it; the launcher would otherwise install
/// it on first use, which a test should not do behind the user's back).
pub fn haproxy_30() -> Option<HaproxyPeer> {
    let launcher = workspace_root().join("../shared/anchors/haproxy3");
    let root = std::env::var_os("HAPROXY3_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/haproxy3"));
    if !launcher.is_file() || !root.join("usr/sbin/haproxy").is_file() {
        return None;
    }
    HaproxyPeer::probe(launcher)
}

/// HAProxy 3.0 for a test that compares with it: the program `HAPROXY3`
/// names, else [`haproxy_30`]. Missing: the comparison is skipped locally
/// (saying so) and fails under CI.
pub fn require_haproxy_30(what_for: &str) -> Option<HaproxyPeer> {
    if let Some(p) = std::env::var_os("HAPROXY3") {
        return HaproxyPeer::probe(PathBuf::from(p));
    }
    haproxy_30().or_else(|| {
        missing(&format!(
            "HAProxy 3.0 is not installed (../shared/anchors/haproxy3 installs it; {what_for})"
        ))
    })
}

impl HaproxyPeer {
    /// Whether this HAProxy's `-c` accepts `cfg` (in `dir`): 0 is valid, 2
    /// "valid but will not start" (no listener), 1 an error. With its stderr.
    pub fn accepts(&self, dir: &Path, cfg: &str) -> (bool, String) {
        let out = check_config(&self.program, dir, cfg);
        (out.status != Some(1), out.stderr)
    }
}

/// A running HAProxy, killed when dropped.
pub struct HaproxyProcess(std::process::Child);

impl HaproxyPeer {
    /// Starts this HAProxy in the foreground (`-db`) on `cfg` in `dir`, its
    /// output discarded, and waits (up to 20 s) until every port in `ports`
    /// accepts connections.
    pub fn start(&self, dir: &Path, cfg: &str, ports: &[u16]) -> HaproxyProcess {
        let child = Command::new(&self.program)
            .args(["-db", "-f", cfg])
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.label));
        let mut h = HaproxyProcess(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        for port in ports {
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                if let Ok(Some(st)) = h.0.try_wait() {
                    panic!("{} exited ({st}) before listening on {port}", self.label);
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} did not listen on {port}",
                    self.label
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        h
    }
}

impl HaproxyProcess {
    /// Sends `sig` ("USR1", "TERM", ...) to this HAProxy (the anchors'
    /// launcher execs it, so its pid is HAProxy's).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.0.id().to_string())
            .status();
    }

    /// Waits up to `secs` for this HAProxy to exit; its exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(st)) = self.0.try_wait() {
                return st.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

impl Drop for HaproxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `PROGRAM -c -f CFG` run in `dir`: a configuration check by luahost
/// (`artifacts().luahost()`) or by HAProxy, bounded to 30 s.
pub fn check_config(program: &Path, dir: &Path, cfg: &str) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(["-c", "-f", cfg]).current_dir(dir);
    run_with_timeout(&mut cmd, 30)
}

/// The HAProxy releases installed here, 3.0 first (the reference where the
/// two differ). Under CI both must be there.
pub fn haproxy_peers() -> Vec<HaproxyPeer> {
    let mut peers = Vec::new();
    match haproxy_30() {
        Some(p) => peers.push(p),
        None => {
            let _: Option<()> =
                missing("HAProxy 3.0 is not installed (../shared/anchors/haproxy3 installs it)");
        }
    }
    match haproxy_26() {
        Some(p) => peers.push(p),
        None => {
            let _: Option<()> = missing("`haproxy` (2.6, Debian's package) is not installed");
        }
    }
    peers
}

/// Searches PATH for an executable.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A fresh scratch directory under the target directory, removed and
/// recreated on each call with the same name.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = profile_dir().join("test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Output of a finished process, decoded.
#[derive(Debug)]
pub struct Output {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion, failing the test if it cannot start or
/// takes longer than `secs` seconds.
pub fn run_with_timeout(cmd: &mut Command, secs: u64) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    Output {
        status: status.code(),
        stdout,
        stderr,
    }
}

/// A free TCP port on 127.0.0.1 (bound then released; the tests that use it
/// start their server right away).
///
/// Never the same port twice in one test process: the kernel may hand a port
/// that was just released out again, and two servers given the same port
/// could both bind it (HAProxy sets SO_REUSEPORT), splitting the requests of
/// one test between them.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A running `luahost -f CFG` process, killed when dropped. Its stderr goes
/// to a file that [`Proxy::log`] reads.
pub struct Proxy {
    child: std::process::Child,
    log_path: PathBuf,
    pub dir: PathBuf,
}

impl Proxy {
    /// Writes `files` (name, content) into a scratch dir named `name`, starts
    /// luahost on `cfg` (one of the files) with `extra_args`, and waits until
    /// every port in `ports` accepts connections.
    pub fn start(
        name: &str,
        files: &[(&str, &str)],
        cfg: &str,
        extra_args: &[&str],
        ports: &[u16],
    ) -> Proxy {
        Proxy::start_with(name, files, cfg, extra_args, ports, |_| {})
    }

    /// Like [`Proxy::start`], letting `configure` adjust the command (its
    /// environment, e.g. the search paths `luarocks path` gives, or where
    /// its stdout goes).
    pub fn start_with(
        name: &str,
        files: &[(&str, &str)],
        cfg: &str,
        extra_args: &[&str],
        ports: &[u16],
        configure: impl FnOnce(&mut Command),
    ) -> Proxy {
        let dir = scratch_dir(name);
        for (f, content) in files {
            std::fs::write(dir.join(f), content).expect("write test file");
        }
        let log_path = dir.join("luahost.stderr");
        let log = std::fs::File::create(&log_path).expect("create log");
        let mut cmd = Command::new(artifacts().luahost());
        cmd.arg("-f")
            .arg(cfg)
            .args(extra_args)
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        // Last, so that it may also redirect stdout.
        configure(&mut cmd);
        let child = cmd.spawn().expect("start luahost");
        let mut p = Proxy {
            child,
            log_path,
            dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        for port in ports {
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok() {
                    break;
                }
                if let Ok(Some(st)) = p.child.try_wait() {
                    panic!(
                        "luahost exited ({st}) before listening on {port}:\n{}",
                        p.log()
                    );
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "luahost did not listen on {port}:\n{}",
                    p.log()
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        p
    }

    /// Everything luahost wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (up to `secs`), returning the log.
    pub fn wait_log(&self, needle: &str, secs: u64) -> String {
        self.wait_log_count(needle, 1, secs)
    }

    /// Waits until the log contains `needle` at least `count` times (up to
    /// `secs`), returning the log.
    pub fn wait_log_count(&self, needle: &str, count: usize, secs: u64) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal with kill(1).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits for the process to exit (up to `secs`), returning its status code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP/1.x response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The whole first line, e.g. "HTTP/1.1 200 OK" (reason phrases count).
    pub status_line: String,
    pub status: u16,
    /// (lower-case name, value) in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads HTTP/1.x responses from a connection (keeps leftover bytes, so
/// pipelined responses can be read one after the other).
pub struct HttpReader {
    pub stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl HttpReader {
    /// Connects with reads bounded by `timeout`; None if it can't connect
    /// (for tests that treat that as "no response" rather than a failure).
    pub fn try_connect(port: u16, timeout: std::time::Duration) -> Option<HttpReader> {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(timeout)).ok()?;
        Some(HttpReader {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn connect(port: u16) -> HttpReader {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .expect("timeout");
        HttpReader {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        use std::io::Write;
        self.stream.write_all(raw).expect("write request");
    }

    fn fill(&mut self) -> bool {
        use std::io::Read;
        let mut tmp = [0u8; 16384];
        match self.stream.read(&mut tmp) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    fn take_line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn take_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Reads one response; None if the connection closed first. For a
    /// response to HEAD, pass `head = true` (no body follows).
    pub fn read_response(&mut self, head: bool) -> Option<HttpResponse> {
        let status_line = self.take_line()?;
        let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let line = self.take_line()?;
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':')?;
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let chunked = get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let mut body = Vec::new();
        if head || status == 204 || status == 304 || (100..200).contains(&status) {
        } else if chunked {
            loop {
                let size_line = self.take_line()?;
                let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    // Trailers until an empty line.
                    while !self.take_line()?.is_empty() {}
                    break;
                }
                body.extend(self.take_exact(size)?);
                self.take_line()?;
            }
        } else if let Some(len) = get("content-length") {
            body = self.take_exact(len.parse().ok()?)?;
        } else {
            while self.fill() {}
            body = std::mem::take(&mut self.buf);
        }
        Some(HttpResponse {
            status_line,
            status,
            headers,
            body,
            chunked,
        })
    }
}

/// A test origin on 127.0.0.1: for each connection, reads one request head,
/// writes `response` as it is, then closes. Returns its port.
pub fn one_shot_origin(response: Vec<u8>) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let port = listener.local_addr().expect("origin addr").port();
    let response = std::sync::Arc::new(response);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let response = response.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(&response);
            });
        }
    });
    port
}

/// wrk's totals, read from its report: (requests per second, requests
/// completed); 0 for a figure the report lacks.
pub fn wrk_totals(report: &str) -> (f64, f64) {
    let (mut rps, mut requests) = (0.0, 0.0);
    for line in report.lines() {
        if line.contains(" requests in ") {
            requests = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0);
        }
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().unwrap_or(0.0);
        }
    }
    (rps, requests)
}

/// One GET request on a fresh connection.
pub fn http_get(port: u16, path: &str) -> HttpResponse {
    let mut c = HttpReader::connect(port);
    c.send(format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").as_bytes());
    c.read_response(false).expect("a response")
}

/// Seeded, bounded fuzzing for the integration tests: the PRNG and case
/// seeds of the host crate's unit-test fuzzers (`FUZZ_CASES=N`,
/// `FUZZ_SEED=S`; see the `luahost-fuzzing` crate).
pub use luahost_fuzzing as fuzz;

/// Syslog receivers and the masking of log lines, for the tests that
/// compare luahost's log lines with HAProxy's (`tests/logging.rs`,
/// `tests/all_in_one.rs`).
pub mod syslog {
    use std::net::UdpSocket;
    use std::os::unix::net::UnixDatagram;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// A syslog receiver: one UDP socket and one unix datagram socket, each read
    /// by a thread that keeps every datagram.
    pub struct Receivers {
        pub udp_port: u16,
        pub unix_path: PathBuf,
        udp: Arc<Mutex<Vec<String>>>,
        unix: Arc<Mutex<Vec<String>>>,
        stop: Arc<AtomicBool>,
    }

    impl Receivers {
        pub fn start(dir: &Path) -> Receivers {
            let udp_sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
            let udp_port = udp_sock.local_addr().expect("udp addr").port();
            let unix_path = dir.join("log.sock");
            let _ = std::fs::remove_file(&unix_path);
            let unix_sock = UnixDatagram::bind(&unix_path).expect("bind unix datagram");
            let stop = Arc::new(AtomicBool::new(false));
            let udp = Arc::new(Mutex::new(Vec::new()));
            let unix = Arc::new(Mutex::new(Vec::new()));
            let tick = Some(Duration::from_millis(50));
            udp_sock.set_read_timeout(tick).expect("timeout");
            unix_sock.set_read_timeout(tick).expect("timeout");
            {
                let (stop, out) = (stop.clone(), udp.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(n) = udp_sock.recv(&mut buf) {
                            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
                            out.lock().unwrap().push(line);
                        }
                    }
                });
            }
            {
                let (stop, out) = (stop.clone(), unix.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(n) = unix_sock.recv(&mut buf) {
                            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
                            out.lock().unwrap().push(line);
                        }
                    }
                });
            }
            Receivers {
                udp_port,
                unix_path,
                udp,
                unix,
                stop,
            }
        }

        pub fn udp_lines(&self) -> Vec<String> {
            self.udp.lock().unwrap().clone()
        }

        pub fn unix_lines(&self) -> Vec<String> {
            self.unix.lock().unwrap().clone()
        }

        /// Waits until the unix datagram receiver holds `n` lines (bounded).
        pub fn wait_unix(&self, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.unix.lock().unwrap().len() < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// Waits until the UDP receiver holds `n` lines (bounded).
        pub fn wait_udp(&self, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.udp.lock().unwrap().len() < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    impl Drop for Receivers {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Masks a traffic or message line: client ports, dates, and timer values
    /// (numbers become N, -1 stays), connection counts.
    pub fn mask_message(line: &str) -> String {
        let line = line.trim_end_matches('\n');
        let mut out = Vec::new();
        for (i, tok) in line.split(' ').enumerate() {
            let t = if let Some(rest) = tok.strip_prefix("127.0.0.1:") {
                if rest.chars().all(|c| c.is_ascii_digit()) && i == 0 {
                    "127.0.0.1:PORT".to_string()
                } else {
                    tok.to_string()
                }
            } else if tok.starts_with('[') && tok.ends_with(']') && tok.contains('/') && i == 1 {
                "[DATE]".to_string()
            } else if i == 4 && tok.split('/').all(|p| p.parse::<i64>().is_ok()) {
                tok.split('/')
                    .map(|p| if p == "-1" { "-1" } else { "N" })
                    .collect::<Vec<_>>()
                    .join("/")
            } else if i > 4
                && tok.split('/').count() == 5
                && tok.split('/').all(|p| p.parse::<u64>().is_ok())
            {
                // %ac/%fc/%bc/%sc/%rc: the process and frontend connection
                // counts include connections still closing, which depends on
                // timing; the backend, server and retry counts are compared.
                let rest: Vec<&str> = tok.split('/').skip(2).collect();
                format!("N/N/{}", rest.join("/"))
            } else {
                tok.to_string()
            };
            out.push(t);
        }
        out.join(" ")
    }

    /// `<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG` with the date and pid masked.
    pub fn mask_rfc3164(line: &str) -> String {
        let Some(close) = line.find('>') else {
            return format!("UNPARSED {line}");
        };
        let (pri, rest) = line.split_at(close + 1);
        // The stamp is 15 characters ("Dec  3 10:10:03") and a space.
        let Some(after) = rest.get(16..) else {
            return format!("UNPARSED {line}");
        };
        let Some(colon) = after.find("]: ") else {
            return format!("UNPARSED {line}");
        };
        let (head, msg) = after.split_at(colon);
        let tag = head.split('[').next().unwrap_or_default();
        format!("{pri}DATE {tag}[PID]: {}", mask_message(&msg[3..]))
    }

    /// `<PRI>1 ISO HOST TAG PID - - MSG` with the time and pid masked.
    pub fn mask_rfc5424(line: &str) -> String {
        let parts: Vec<&str> = line.splitn(8, ' ').collect();
        if parts.len() < 8 {
            return format!("UNPARSED {line}");
        }
        format!(
            "{} ISO {} {} PID {} {} {}",
            parts[0],
            parts[2],
            parts[3],
            parts[5],
            parts[6],
            mask_message(parts[7])
        )
    }
}
