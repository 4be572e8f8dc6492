//! Differential compatibility tests: the same configuration and Lua scripts
//! run under HAProxy 3.0 (`../shared/anchors/haproxy3`), HAProxy 2.6
//! (Debian's `haproxy`) and luahost, the same requests go to each, and the
//! answers must be equal (status line, headers in order without `date` and
//! `server`, body).
//!
//! HAProxy 3.0 is the reference where the releases differ; 2.6 must give the
//! same answers unless a case says why not (`not_on`: API 2.6 lacks, or a
//! 3.0 regression luahost does not copy). Every case also states what it is
//! meant to show (status, body, some headers). That expectation is checked
//! against the first HAProxy asked, so a case whose configuration or script
//! is wrong fails loudly instead of "passing" because both proxies answered
//! the same wrong thing. Cases for luahost additions (`luahost_only`) run
//! against luahost only, with their expectation as the reference.
//!
//! Layout: one `#[test]` per group; a group is a configuration template and
//! its Lua scripts under `tests/differential/`, one HAProxy process, one
//! luahost process and one in-process echo backend, and many requests. In a
//! template, `@PORT:name@` becomes a free port (a different one per proxy),
//! `@ECHO@` the echo backend's address and `@DEAD@` an address where nothing
//! listens.
//!
//! Header order is compared the way HTTP gives it meaning (RFC 9110 5.3):
//! fields with the same name must keep their relative order, while the order
//! between different names is not compared. luahost keeps all fields of one
//! name together (hyper's header map), where HAProxy keeps one flat list; and
//! HAProxy itself sends the headers of Lua-built responses (services,
//! txn:reply) in an order that changes from run to run. So response headers
//! are compared after a stable sort by name, and the echo backend reports the
//! request headers it received in the same stable order.
//!
//! Run: `cargo test --test differential` (an HAProxy release missing: not
//! asked locally, a failure under CI=true). `DIFF_SHOW=1` prints every HAProxy answer (for
//! writing cases); `DIFF_CASE=substr` runs only the cases whose name
//! contains `substr`.

#[path = "differential/local_servers.rs"]
mod local_servers;

use luahost_suite::{
    artifacts, free_port, haproxy_peers, scratch_dir, workspace_root, HaproxyPeer, HttpReader,
};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Requests and expectations
// ---------------------------------------------------------------------------

/// The Host header every generated request carries.
const HOST: &str = "test.local";

/// A GET with only a Host header.
fn get(path: &str) -> String {
    req("GET", path, &[], "")
}

/// A request with extra headers (sent in the order given) and a body (a
/// content-length is added when the body is not empty).
fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut s = format!("{method} {path} HTTP/1.1\r\nhost: {HOST}\r\n");
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        s.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    s.push_str("\r\n");
    s.push_str(body);
    s
}

/// What a response must look like for the case to test what it means to.
#[derive(Clone, Default)]
struct Expect {
    /// `None`: the connection must close without a response.
    status: Option<u16>,
    /// The exact body.
    body: Option<String>,
    /// Pieces the body must contain.
    contains: Vec<String>,
    /// Headers that must be present with this value (first occurrence).
    headers: Vec<(String, String)>,
    /// Headers that must be absent.
    no_headers: Vec<String>,
    /// The reason phrase of the status line.
    reason: Option<String>,
}

struct Step {
    request: String,
    /// The request is a HEAD: no body follows the response head.
    head: bool,
    expect: Expect,
}

/// One case: requests sent in order on one fresh (kept-alive) connection.
struct Case {
    name: String,
    /// Which `@PORT:name@` of the template the requests go to.
    port: &'static str,
    steps: Vec<Step>,
    /// Set for luahost additions no HAProxy has: then only luahost runs the
    /// case and the expectation is the reference. The text says why.
    luahost_only: Option<&'static str>,
    /// HAProxy releases not asked, with the reason: where 2.6 lacks the API
    /// or answers otherwise than 3.0 (luahost follows 3.0), or where 3.0
    /// has a regression luahost does not copy.
    not_on: Vec<(&'static str, &'static str)>,
    /// Compare headers without regard to the order of different names (the
    /// order of repeated headers still counts). For responses a Lua script
    /// builds (AppletHTTP add_header, txn:reply): HAProxy keeps their headers
    /// in a Lua table and sends them in lua_next() order, which follows
    /// Lua's per-process random string-hash seed, so HAProxy itself changes
    /// their order from one run to the next.
    any_header_order: bool,
    /// Compare bodies after undoing their `content-encoding` (gzip,
    /// deflate): compressors differ in their bytes, not in what they
    /// encode.
    decoded: bool,
}

impl Case {
    fn new(name: &str, port: &'static str, request: String) -> Case {
        Case {
            name: name.to_string(),
            port,
            steps: Vec::new(),
            luahost_only: None,
            not_on: Vec::new(),
            any_header_order: false,
            decoded: false,
        }
        .then(request)
    }

    /// Adds a further request on the same connection.
    fn then(mut self, request: String) -> Case {
        let head = request.starts_with("HEAD ");
        self.steps.push(Step {
            request,
            head,
            expect: Expect::default(),
        });
        self
    }

    fn last(&mut self) -> &mut Expect {
        &mut self.steps.last_mut().expect("a case has a request").expect
    }

    fn status(mut self, s: u16) -> Case {
        self.last().status = Some(s);
        self
    }

    fn reason(mut self, r: &str) -> Case {
        self.last().reason = Some(r.to_string());
        self
    }

    /// The connection closes without any response.
    fn closed(mut self) -> Case {
        self.last().status = None;
        self
    }

    fn body(mut self, b: &str) -> Case {
        self.last().body = Some(b.to_string());
        self
    }

    fn contains(mut self, piece: &str) -> Case {
        self.last().contains.push(piece.to_string());
        self
    }

    fn header(mut self, n: &str, v: &str) -> Case {
        self.last().headers.push((n.to_string(), v.to_string()));
        self
    }

    fn no_header(mut self, n: &str) -> Case {
        self.last().no_headers.push(n.to_string());
        self
    }

    fn any_header_order(mut self) -> Case {
        self.any_header_order = true;
        self
    }

    fn decoded(mut self) -> Case {
        self.decoded = true;
        self
    }

    fn luahost_only(mut self, why: &'static str) -> Case {
        self.luahost_only = Some(why);
        self
    }

    /// `label` is a peer's label ("haproxy 2.6", "haproxy 3.0").
    fn not_on(mut self, label: &'static str, why: &'static str) -> Case {
        self.not_on.push((label, why));
        self
    }

    fn asks(&self, peer: &HaproxyPeer) -> bool {
        self.luahost_only.is_none() && !self.not_on.iter().any(|(l, _)| *l == peer.label)
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// A response as compared: the status line, the headers in order with
/// lower-case names minus `date` and `server` (they differ legitimately),
/// and the body (de-chunked; `transfer-encoding` stays among the headers).
#[derive(Clone, PartialEq, Eq)]
struct Answer {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn reason(&self) -> &str {
        self.status_line.splitn(3, ' ').nth(2).unwrap_or("")
    }

    fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn show(&self) -> String {
        let mut s = format!("  {}\n", self.status_line);
        for (n, v) in &self.headers {
            s.push_str(&format!("  {n}: {v}\n"));
        }
        s.push_str(&format!("  <body {} bytes>\n", self.body.len()));
        for line in self.text().split_inclusive('\n') {
            s.push_str(&format!("  | {}\n", line.trim_end_matches('\n')));
        }
        s
    }
}

fn show(a: &Option<Answer>) -> String {
    match a {
        Some(a) => a.show(),
        None => "  <connection closed without a response>\n".to_string(),
    }
}

/// Reads responses from one connection (the suite's shared HTTP/1.1
/// reader). Every read is bounded: a proxy that neither answers nor closes
/// makes the step end as "no response".
struct Conn(HttpReader);

impl Conn {
    fn connect(port: u16) -> Option<Conn> {
        HttpReader::try_connect(port, Duration::from_secs(5)).map(Conn)
    }

    fn response(&mut self, head: bool) -> Option<Answer> {
        let r = self.0.read_response(head)?;
        let mut headers = r.headers;
        headers.retain(|(n, _)| n != "date" && n != "server");
        Some(Answer {
            status_line: r.status_line,
            headers,
            body: r.body,
        })
    }
}

/// Runs a case's requests on one connection; one answer per step (after the
/// first missing answer, the rest are missing too).
fn run_case(port: u16, case: &Case) -> Vec<Option<Answer>> {
    let mut out = Vec::new();
    let mut conn = Conn::connect(port);
    for step in &case.steps {
        let answer = conn.as_mut().and_then(|c| {
            c.0.stream.write_all(step.request.as_bytes()).ok()?;
            c.response(step.head)
        });
        let answer = if case.decoded {
            answer.map(decode_body)
        } else {
            answer
        };
        if answer.is_none() {
            conn = None;
        }
        out.push(answer);
    }
    out
}

/// The body with its `content-encoding` undone (a marker when it does not
/// decode).
fn decode_body(mut a: Answer) -> Answer {
    use flate2::read::{DeflateDecoder, GzDecoder, ZlibDecoder};
    let mut out = Vec::new();
    let ok = match a.header("content-encoding") {
        Some("gzip") => GzDecoder::new(&a.body[..]).read_to_end(&mut out).is_ok(),
        Some("deflate") => {
            ZlibDecoder::new(&a.body[..]).read_to_end(&mut out).is_ok() || {
                out.clear();
                DeflateDecoder::new(&a.body[..])
                    .read_to_end(&mut out)
                    .is_ok()
            }
        }
        _ => return a,
    };
    a.body = if ok {
        out
    } else {
        b"<body does not decode>".to_vec()
    };
    a
}

/// Whether two answers are equal, headers compared after a stable sort by
/// name (see the module comment; `_any_header_order` marks the cases where
/// even HAProxy's own order varies).
fn same(a: &Option<Answer>, b: &Option<Answer>, _any_header_order: bool) -> bool {
    let norm = |x: &Option<Answer>| {
        x.clone().map(|mut x| {
            x.headers.sort_by(|p, q| p.0.cmp(&q.0));
            x
        })
    };
    norm(a) == norm(b)
}

/// Why `a` does not meet `e`, if it does not.
fn unmet(e: &Expect, a: &Option<Answer>) -> Option<String> {
    let Some(a) = a else {
        return e
            .status
            .map(|s| format!("expected status {s}, got no response"));
    };
    let mut why = Vec::new();
    match e.status {
        None => why.push("expected the connection to close without a response".to_string()),
        Some(s) if s != a.status() => why.push(format!("expected status {s}")),
        _ => {}
    }
    if let Some(r) = &e.reason {
        if r != a.reason() {
            why.push(format!("expected reason {r:?}"));
        }
    }
    let text = a.text();
    if let Some(b) = &e.body {
        if *b != text {
            why.push(format!("expected body {b:?}"));
        }
    }
    for c in &e.contains {
        if !text.contains(c.as_str()) {
            why.push(format!("body lacks {c:?}"));
        }
    }
    for (n, v) in &e.headers {
        if a.header(n) != Some(v.as_str()) {
            why.push(format!("expected header {n}: {v}"));
        }
    }
    for n in &e.no_headers {
        if a.header(n).is_some() {
            why.push(format!("expected no {n} header"));
        }
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// For text bodies that differ, the lines that differ (bodies made of one
/// `name=value` per line show which item differs at a glance).
fn line_diff(a: &Option<Answer>, b: &Option<Answer>) -> String {
    let (Some(a), Some(b)) = (a, b) else {
        return String::new();
    };
    if a.body == b.body {
        return String::new();
    }
    let (ta, tb) = (a.text(), b.text());
    let (la, lb): (Vec<&str>, Vec<&str>) = (ta.lines().collect(), tb.lines().collect());
    let mut s = String::new();
    for i in 0..la.len().max(lb.len()) {
        let (x, y) = (la.get(i).copied(), lb.get(i).copied());
        if x != y {
            s.push_str(&format!(
                "  line {}: haproxy {:?} / luahost {:?}\n",
                i + 1,
                x.unwrap_or("<none>"),
                y.unwrap_or("<none>")
            ));
        }
    }
    s
}

// ---------------------------------------------------------------------------
// The echo backend
// ---------------------------------------------------------------------------

/// A small HTTP/1.1 server both proxies forward to. It answers
/// deterministically (no Date), keeps connections alive unless asked to
/// close, and echoes the request into the body: the request line, then every
/// header but the hop-by-hop ones as `name: value` lines (lower-case names,
/// in order), then `body: ...` when there is one. Special paths:
/// `/status/NNN` answers NNN, `/chunked` answers chunked, `/cookies` sends
/// two set-cookie headers.
struct Echo {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo backend");
        let port = listener.local_addr().expect("echo address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    std::thread::spawn(move || echo_connection(conn));
                }
            }
        });
        Echo { port, stop }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn reason_of(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        404 => "Not Found",
        418 => "I'm a teapot",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Other",
    }
}

fn echo_connection(conn: TcpStream) {
    // Bounds a connection a proxy keeps open but idle.
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut rd = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let request_line = line.trim_end().to_string();
        if request_line.is_empty() {
            continue;
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        loop {
            let mut h = String::new();
            if rd.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let value = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let mut body = Vec::new();
        if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                if rd.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .unwrap_or(0);
                let mut chunk = vec![0u8; n + 2];
                if rd.read_exact(&mut chunk).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = value("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body = vec![0u8; n];
            if rd.read_exact(&mut body).is_err() {
                return;
            }
        }
        let close = value("connection").is_some_and(|v| v.contains("close"));

        let mut text = format!("{request_line}\n");
        // Stable by name: same-name fields keep their order (module comment).
        headers.sort_by(|p, q| p.0.cmp(&q.0));
        const HOP: &[&str] = &[
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "transfer-encoding",
            "upgrade",
            "content-length",
        ];
        for (n, v) in &headers {
            if !HOP.contains(&n.as_str()) {
                text.push_str(&format!("{n}: {v}\n"));
            }
        }
        if !body.is_empty() {
            text.push_str(&format!("body: {}\n", String::from_utf8_lossy(&body)));
        }
        let path = request_line.split(' ').nth(1).unwrap_or("/");
        let path = path.split('?').next().unwrap_or(path);
        let mut code = 200;
        let mut extra = String::new();
        let mut chunked = false;
        if let Some(c) = path.strip_prefix("/status/") {
            code = c.parse().unwrap_or(200);
        } else if path == "/chunked" {
            chunked = true;
        } else if path == "/cookies" {
            extra.push_str("set-cookie: a=1; path=/\r\nset-cookie: b=2\r\n");
        }
        let mut resp = format!(
            "HTTP/1.1 {code} {}\r\ncontent-type: text/plain\r\nx-backend: echo\r\n{extra}",
            reason_of(code)
        );
        if chunked {
            resp.push_str("transfer-encoding: chunked\r\n\r\n");
            for piece in [&text[..text.len() / 2], &text[text.len() / 2..]] {
                resp.push_str(&format!("{:x}\r\n{piece}\r\n", piece.len()));
            }
            resp.push_str("0\r\n\r\n");
        } else if code == 204 || code == 304 {
            // These never have a body.
            resp.push_str("\r\n");
        } else {
            let is_head = request_line.starts_with("HEAD ");
            resp.push_str(&format!("content-length: {}\r\n\r\n", text.len()));
            if !is_head {
                resp.push_str(&text);
            }
        }
        if out.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The proxies
// ---------------------------------------------------------------------------

/// A proxy process (HAProxy or luahost) run in its own directory, killed
/// when dropped.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the group's files into `dir` with the placeholders replaced,
/// starts `program args... CFG` there, and waits (bounded) until every port
/// accepts connections. Err carries the process's output when it exits or
/// does not listen in time.
fn start_proxy(
    program: &Path,
    args: &[&str],
    dir: &Path,
    files: &[(String, String)],
    cfg: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Running, String> {
    for (name, content) in files {
        let mut text = content.clone();
        for (k, v) in vars {
            text = text.replace(k.as_str(), v);
        }
        assert!(
            !text.contains("@PORT:"),
            "{name}: a @PORT:...@ placeholder is left (port names: {:?})",
            vars.keys().collect::<Vec<_>>()
        );
        std::fs::write(dir.join(name), text).expect("write a test file");
    }
    let log = dir.join("stderr.log");
    let log_file = std::fs::File::create(&log).expect("create the log file");
    let child = Command::new(program)
        .args(args)
        .arg(cfg)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let mut r = Running { child, log };
    let ports: Vec<u16> = vars
        .iter()
        .filter(|(k, _)| k.starts_with("@PORT:"))
        .map(|(_, v)| v.parse().expect("a port"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    for port in ports {
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = r.child.try_wait() {
                return Err(format!("exited ({st}) before listening:\n{}", r.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("did not listen on {port} within 20s:\n{}", r.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(r)
}

/// The `@PORT:name@` placeholders used in `files`.
fn port_names(files: &[(String, String)]) -> Vec<String> {
    let mut names = Vec::new();
    for (_, text) in files {
        let mut rest = text.as_str();
        while let Some(i) = rest.find("@PORT:") {
            let after = &rest[i + 6..];
            let end = after
                .find('@')
                .expect("a @PORT:name@ placeholder ends with @");
            let name = after[..end].to_string();
            if !names.contains(&name) {
                names.push(name);
            }
            rest = &after[end..];
        }
    }
    names
}

/// Placeholder values for one proxy: fresh ports, the echo backend, a dead
/// address.
fn placeholders(names: &[String], echo: u16, dead: u16) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    for n in names {
        v.insert(format!("@PORT:{n}@"), free_port().to_string());
    }
    v.insert("@ECHO@".into(), format!("127.0.0.1:{echo}"));
    v.insert("@DEAD@".into(), format!("127.0.0.1:{dead}"));
    let servers = local_servers::local_servers();
    v.insert("@LINE@".into(), format!("127.0.0.1:{}", servers.line));
    v.insert("@SILENT@".into(), format!("127.0.0.1:{}", servers.silent));
    v.insert("@UNIX@".into(), servers.unix.display().to_string());
    v.insert("@ABNS@".into(), servers.abns.clone());
    v.insert("@TLS@".into(), format!("127.0.0.1:{}", servers.tls));
    v.insert("@TLS_CERT@".into(), servers.tls_cert.display().to_string());
    v
}

fn fixture(name: &str) -> String {
    let p = workspace_root().join("tests/differential").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Starts a proxy on fresh ports. A port can be taken between
/// [`free_port`] and the proxy's bind; then the start is retried with other
/// ports (a few times), any other failure is returned as is.
fn start_with_fresh_ports(
    program: &Path,
    args: &[&str],
    dir: &Path,
    g: &Group,
    names: &[String],
    echo: &Echo,
    dead: u16,
) -> Result<(Running, BTreeMap<String, String>), String> {
    let mut attempt = 0;
    loop {
        let vars = placeholders(names, echo.port, dead);
        match start_proxy(program, args, dir, &g.files, g.cfg, &vars) {
            Ok(r) => return Ok((r, vars)),
            Err(e) if attempt < 3 && e.contains("in use") => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// A group: its files (name, template) and cases.
struct Group {
    name: &'static str,
    files: Vec<(String, String)>,
    cfg: &'static str,
    cases: Vec<Case>,
}

impl Group {
    /// A group whose files are all fixtures.
    fn of(name: &'static str, cfg: &'static str, others: &[&str], cases: Vec<Case>) -> Group {
        let mut files = vec![(cfg.to_string(), fixture(cfg))];
        for f in others {
            files.push((f.to_string(), fixture(f)));
        }
        Group {
            name,
            files,
            cfg,
            cases,
        }
    }
}

/// A case's reference: the label of the HAProxy release that gave it, and
/// its answers (None: the connection closed without one).
type Reference<'a> = (&'a str, Vec<Option<Answer>>);

/// Runs a group against each installed HAProxy, 3.0 first: the first release
/// a case asks gives its reference answers (checked to show what the case
/// means), and every other release it asks must answer the same. Then runs
/// the group against luahost and fails listing every case where luahost
/// differs from its reference.
fn run_group(mut g: Group) {
    let peers = haproxy_peers();
    if peers.is_empty() {
        return;
    }
    if let Ok(only) = std::env::var("DIFF_CASE") {
        g.cases.retain(|c| c.name.contains(&only));
    }
    let show_all = std::env::var_os("DIFF_SHOW").is_some();
    let echo = Echo::start();
    // A port with nothing behind it (bound, then released).
    let dead = free_port();
    let names = port_names(&g.files);
    let lookup = |vars: &BTreeMap<String, String>, case: &Case| -> u16 {
        vars.get(&format!("@PORT:{}@", case.port))
            .unwrap_or_else(|| panic!("case {}: no @PORT:{}@ in {}", case.name, case.port, g.cfg))
            .parse()
            .expect("a port")
    };

    // Each HAProxy in turn. `-db` keeps it in the foreground.
    let mut reference: Vec<Option<Reference>> = vec![None; g.cases.len()];
    for peer in &peers {
        // A release no case asks is not started (its Lua may lack the API
        // the group's script uses at load time, e.g. 2.6 and core.queue).
        if !g.cases.iter().any(|c| c.asks(peer)) {
            continue;
        }
        let tag = peer.label.replace(' ', "-");
        let ha_dir = scratch_dir(&format!("differential-{}-{tag}", g.name));
        let (ha, ha_vars) = start_with_fresh_ports(
            &peer.program,
            &["-db", "-f"],
            &ha_dir,
            &g,
            &names,
            &echo,
            dead,
        )
        .unwrap_or_else(|e| panic!("group {}: {} did not start: {e}", g.name, peer.label));
        let mut broken = String::new();
        for (case, slot) in g.cases.iter().zip(reference.iter_mut()) {
            if !case.asks(peer) {
                continue;
            }
            let answers = run_case(lookup(&ha_vars, case), case);
            if let Some((first, want)) = slot {
                // Releases must answer alike, or the case says why not.
                for (i, (w, got)) in want.iter().zip(&answers).enumerate() {
                    if !same(w, got, case.any_header_order) {
                        broken.push_str(&format!(
                            "case {} request #{}: {} answers otherwise than {first} (mark the case not_on with the reason):\n{}{}\n",
                            case.name,
                            i + 1,
                            peer.label,
                            show(got),
                            line_diff(w, got)
                        ));
                        break;
                    }
                }
                continue;
            }
            for (i, (step, a)) in case.steps.iter().zip(&answers).enumerate() {
                if show_all {
                    eprintln!("[{}] {} #{}:\n{}", g.name, case.name, i + 1, show(a));
                }
                if let Some(why) = unmet(&step.expect, a) {
                    broken.push_str(&format!(
                        "case {} request #{}: HAProxy's answer does not show what the case intends: {why}\nrequest:\n{}\nHAProxy answered:\n{}\n",
                        case.name,
                        i + 1,
                        step.request,
                        show(a)
                    ));
                }
            }
            *slot = Some((peer.label.as_str(), answers));
        }
        drop(ha);
        assert!(
            broken.is_empty(),
            "group {}: cases are wrong (fix the case, not luahost); checked against {}:\n{broken}\nHAProxy log:\n{}",
            g.name,
            peer.version,
            std::fs::read_to_string(ha_dir.join("stderr.log")).unwrap_or_default()
        );
    }

    // luahost, the same files with its own ports.
    let lh_dir = scratch_dir(&format!("differential-{}-luahost", g.name));
    let (lh, lh_vars) = match start_with_fresh_ports(
        &artifacts().luahost(),
        &["-f"],
        &lh_dir,
        &g,
        &names,
        &echo,
        dead,
    ) {
        Ok(p) => p,
        Err(e) => panic!(
            "group {}: luahost did not start, so all {} cases fail: {e}",
            g.name,
            g.cases.len()
        ),
    };
    let mut failed = Vec::new();
    let mut report = String::new();
    for (case, want) in g.cases.iter().zip(&reference) {
        let got = run_case(lookup(&lh_vars, case), case);
        for (i, step) in case.steps.iter().enumerate() {
            let g_ans = &got[i];
            // No HAProxy answer: a luahost addition, or a case no installed
            // release is asked; the expectation is the reference.
            let problem = if let Some((first, want)) = want {
                (!same(&want[i], g_ans, case.any_header_order)).then(|| {
                    format!(
                        "{first} answered:\n{}luahost answered:\n{}{}",
                        show(&want[i]),
                        show(g_ans),
                        line_diff(&want[i], g_ans)
                    )
                })
            } else {
                unmet(&step.expect, g_ans).map(|why| {
                    format!(
                        "(not compared with HAProxy: {}) {why}\nluahost answered:\n{}",
                        case.luahost_only
                            .or(case.not_on.first().map(|n| n.1))
                            .unwrap_or_default(),
                        show(g_ans)
                    )
                })
            };
            if let Some(p) = problem {
                report.push_str(&format!(
                    "=== {} / {} request #{}\nrequest:\n{}\n{p}\n",
                    g.name,
                    case.name,
                    i + 1,
                    step.request.trim_end()
                ));
                failed.push(case.name.clone());
                break;
            }
        }
    }
    if !failed.is_empty() {
        panic!(
            "{report}\ngroup {}: luahost differs from HAProxy in {} of {} cases: {}\nluahost log:\n{}",
            g.name,
            failed.len(),
            g.cases.len(),
            failed.join(", "),
            lh.log()
        );
    }
}

// ---------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------

/// The reference workload of `../shared/anchors` as is: only the bind port
/// changes (svc.cfg loads `svc.lua` relative to the working directory, which
/// holds a copy).
#[test]
fn reference_workload() {
    let anchors = workspace_root().join("../shared/anchors");
    let read = |f: &str| {
        let p = anchors.join(f);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    };
    let cfg = read("svc.cfg");
    assert!(
        cfg.contains("127.0.0.1:18081"),
        "svc.cfg binds elsewhere now"
    );
    let cfg = cfg.replace("127.0.0.1:18081", "127.0.0.1:@PORT:svc@");
    let cases = vec![
        Case::new("svc.get_abc", "svc", get("/abc"))
            .status(200)
            .body("hello /abc")
            .header("content-type", "text/plain"),
        Case::new("svc.keepalive_and_query", "svc", get("/"))
            .status(200)
            .body("hello /")
            .then(get("/x/y?q=1"))
            .status(200)
            .body("hello /x/y"),
    ];
    // A Lua service builds the responses.
    let cases = cases.into_iter().map(Case::any_header_order).collect();
    run_group(Group {
        name: "reference",
        files: vec![("svc.cfg".into(), cfg), ("svc.lua".into(), read("svc.lua"))],
        cfg: "svc.cfg",
        cases,
    });
}

/// Lua HTTP services (AppletHTTP).
#[test]
fn applet_http() {
    let post = |path: &str, body: &str| req("POST", path, &[("content-type", "text/plain")], body);
    let cases = vec![
        Case::new(
            "applet.info_get",
            "info",
            req("GET", "/a/b?x=1&y=2", &[("x-one", "1"), ("x-two", "a, b"), ("x-two", "c")], ""),
        )
        .status(200)
        // HAProxy gives the version as "HTTP/1.1", and does not split
        // header values at commas (one entry per header line).
        .body("method=GET\npath=/a/b\nqs=x=1&y=2\nversion=HTTP/1.1\nlength=0\nh.host=test.local\nh.x-one=1\nh.x-two=a, b|c\n"),
        Case::new("applet.info_post", "info", post("/p", "hello"))
            .status(200)
            .contains("method=POST\n")
            .contains("length=5\n"),
        Case::new("applet.info_head", "info", req("HEAD", "/h", &[], ""))
            .status(200)
            .body(""),
        Case::new("applet.chunked", "chunks", get("/"))
            .status(200)
            .header("transfer-encoding", "chunked")
            .body("piece 1\npiece 2\npiece 3\n"),
        Case::new("applet.status_reason", "status", get("/"))
            .status(299)
            .reason("Quite Fine")
            .body("ok"),
        Case::new("applet.status_default_reason", "status", get("/default-reason"))
            .status(404)
            .reason("Not Found"),
        Case::new("applet.body_all", "body", post("/", "abc\ndef"))
            .status(200)
            .body("len=7 declared=7 body=\"abc\\\ndef\"\n"),
        Case::new("applet.body_line", "body", post("/line", "abc\ndef"))
            .status(200)
            .body("first=\"abc\\\n\" rest=\"def\"\n"),
        Case::new("applet.empty_204", "empty", get("/"))
            .status(204)
            .body(""),
        Case::new("applet.fetches", "fetch", get("/f?q=1"))
            .status(200)
            .body("f.src=127.0.0.1\nsf.str=abc\nf.int=integer:12\nf.bool=1\nc.upper=ABC\nsc.hex=4142\nc.fail=nil\nsc.fail=[]\n"),
        // The service fails: HAProxy's 500 page.
        Case::new("applet.http_fetch_refused", "httpfetch", get("/x"))
            .status(500)
            .contains("500 Internal Server Error"),
        Case::new("applet.state_keepalive", "state", get("/1"))
            .status(200)
            .body("priv.before=nil\nvar=v1\nvar.missing=nil\nvar.unset=nil\n")
            .then(get("/2"))
            .status(200)
            .body("priv.before=nil\nvar=v1\nvar.missing=nil\nvar.unset=nil\n"),
        Case::new("applet.runtime_error", "fail", get("/"))
            .status(500)
            .body("<html><body><h1>500 Internal Server Error</h1>\nAn internal server error occurred.\n</body></html>\n"),
    ];
    // Lua services build every response here.
    let cases = cases.into_iter().map(Case::any_header_order).collect();
    run_group(Group::of("applet", "applet.cfg", &["applet.lua"], cases));
}

/// Lines joined with a newline after each.
fn lines(l: &[&str]) -> String {
    l.iter().map(|x| format!("{x}\n")).collect()
}

/// HAProxy's own error pages (status line reason, then this body).
fn error_page(code: u16) -> String {
    let (title, text) = match code {
        400 => ("400 Bad request", "Your browser sent an invalid request."),
        403 => (
            "403 Forbidden",
            "Request forbidden by administrative rules.",
        ),
        429 => (
            "429 Too Many Requests",
            "You have sent too many requests in a given amount of time.",
        ),
        500 => (
            "500 Internal Server Error",
            "An internal server error occurred.",
        ),
        503 => (
            "503 Service Unavailable",
            "No server is available to handle this request.",
        ),
        _ => panic!("no error page for {code} here"),
    };
    format!("<html><body><h1>{title}</h1>\n{text}\n</body></html>\n")
}

/// The body the echo backend answers for a request whose line is
/// `request_line` and whose forwarded headers are `host` then `headers`, in
/// the backend's stable by-name order.
fn echoed(request_line: &str, headers: &[&str]) -> String {
    // A "body: ..." line is not a header: the backend writes it last.
    let (body, fields): (Vec<&str>, Vec<&str>) =
        headers.iter().partition(|h| h.starts_with("body: "));
    let mut all: Vec<String> = vec![format!("host: {HOST}")];
    all.extend(fields.iter().map(|h| h.to_string()));
    all.sort_by(|p, q| {
        let name = |h: &String| h.split(':').next().unwrap_or("").to_string();
        name(p).cmp(&name(q))
    });
    all.extend(body.iter().map(|h| h.to_string()));
    let mut s = format!("{request_line} HTTP/1.1\n");
    for h in all {
        s.push_str(&h);
        s.push('\n');
    }
    s
}

/// Lua actions: arguments, fetch/converter wrappers, header and request-line
/// rewrites, return codes and replies, variables, private data, response
/// actions.
#[test]
fn lua_actions() {
    let op = |name: &str, o: &str| Case::new(name, "codes", req("GET", "/c", &[("x-op", o)], ""));
    let rw = |name: &str, o: &str| {
        Case::new(name, "rewrite", req("GET", "/orig?q=1", &[("x-op", o)], ""))
    };
    // What the echo backend shows for a "codes" request that reached it.
    let codes_echo = |o: &str, after: bool| {
        let before = format!("x-before: {o}");
        let op = format!("x-op: {o}");
        let mut h = vec![op.as_str(), before.as_str()];
        if after {
            h.push("x-after: yes");
        }
        echoed("GET /c", &h)
    };
    let cases = vec![
        Case::new("actions.args", "args", get("/"))
            .status(200)
            .body(&echoed(
                "GET /",
                &["x-args: string:first|string:second word"],
            )),
        // Typed results: integers are numbers, booleans are integers too
        // (HAProxy before 3.1), a failed fetch/converter is nil through f/c
        // and "" through sf/sc. hdr_cnt counts comma-separated values.
        Case::new(
            "actions.fetches",
            "fetches",
            req("GET", "/p?q", &[("x-multi", "a, b"), ("x-multi", "c")], ""),
        )
        .status(200)
        .body(&echoed(
            "GET /p?q",
            &[
                "x-multi: a, b",
                "x-multi: c",
                "x-f-fhdr: string:test.local",
                "x-f-hdr-missing: nil:nil",
                "x-f-shdr-missing: string:",
                "x-f-hdr-cnt: number:3",
                "x-f-shdr-cnt: string:3",
                "x-f-hdr-occ: string:a",
                "x-f-path: string:/p",
                "x-f-method: string:GET",
                "x-f-src: string:127.0.0.1",
                "x-f-int: number:7",
                "x-f-bool: number:1",
                "x-f-lower: string:mixed",
                "x-f-supper: string:MIXED",
                "x-f-b64: string:aGVsbG8=",
                "x-f-conv-fail: nil:nil",
                "x-f-sconv-fail: string:",
            ],
        )),
        Case::new("actions.conv_args", "conv_args", get("/"))
            .status(200)
            .body(&echoed("GET /", &["x-f-conv-args: string:bcd"]))
            .not_on(
                "haproxy 3.0",
                "3.0 refuses integer arguments for bytes() (\"unable to duplicate string arg\")",
            ),
        // get_headers keeps one entry per header line (no split at commas);
        // set_header removes all then appends; rep_value re-joins the values
        // with "," (the space after the comma is gone).
        Case::new(
            "actions.hdrops",
            "hdrops",
            req(
                "GET",
                "/",
                &[
                    ("x-multi", "a, b"),
                    ("x-multi", "c"),
                    ("x-set", "s1"),
                    ("x-set", "s2"),
                    ("x-add", "first"),
                    ("x-del", "d"),
                    ("x-rep", "abcz"),
                    ("x-rep", "nomatch"),
                    ("x-vals", "v1, v2,x3"),
                ],
                "",
            ),
        )
        .status(200)
        .body(&echoed(
            "GET /",
            &[
                "x-multi: a, b",
                "x-multi: c",
                "x-add: first",
                "x-rep: <bc>",
                "x-rep: nomatch",
                "x-vals: w1,w2,x3",
                "x-seen-multi: string:a, b|string:c|nil:nil",
                "x-seen-host: string:test.local",
                "x-set: replaced",
                "x-add: appended",
            ],
        )),
        rw("actions.rewrite_path", "path")
            .status(200)
            .body(&echoed("GET /new/path?q=1", &["x-op: path"])),
        rw("actions.rewrite_query", "query")
            .status(200)
            .body(&echoed("GET /orig?a=1&b=two", &["x-op: query"])),
        // An empty query keeps the "?".
        rw("actions.rewrite_query_empty", "query-empty")
            .status(200)
            .body(&echoed("GET /orig?", &["x-op: query-empty"])),
        rw("actions.rewrite_method", "method")
            .status(200)
            .body(&echoed("PUT /orig?q=1", &["x-op: method"])),
        rw("actions.rewrite_uri", "uri")
            .status(200)
            .body(&echoed("GET /u/v?w=1", &["x-op: uri"])),
        op("actions.code_continue", "continue")
            .status(200)
            .body(&codes_echo("continue", true)),
        op("actions.code_none", "none")
            .status(200)
            .body(&codes_echo("none", true)),
        // STOP and DONE end the http-request rules; the request goes on.
        op("actions.code_stop", "stop")
            .status(200)
            .body(&codes_echo("stop", false)),
        op("actions.code_done", "done")
            .status(200)
            .body(&codes_echo("done", false)),
        op("actions.code_deny", "deny")
            .status(403)
            .body(&error_page(403)),
        op("actions.code_error", "error")
            .status(500)
            .body(&error_page(500)),
        // HAProxy 2.6 answers an aborting action with its 503 page.
        op("actions.code_abort", "abort")
            .status(503)
            .body(&error_page(503)),
        op("actions.code_invalid", "invalid")
            .status(400)
            .body(&error_page(400)),
        // The "reason" field of txn:reply{} is ignored by HAProxy (every
        // version): the status's standard reason is sent.
        op("actions.reply", "reply")
            .any_header_order()
            .status(418)
            .reason("I'm a teapot")
            .body("replied\n")
            .header("x-r", "r1"),
        op("actions.reply_methods", "reply-methods")
            .any_header_order()
            .status(201)
            .reason("Made")
            .body("made\n")
            .header("x-m", "1")
            .no_header("x-gone"),
        op("actions.reply_default", "reply-default")
            .any_header_order()
            .status(200)
            .body("")
            .header("content-length", "0"),
        // txn:done() without a reply in http-request: no response at all.
        op("actions.done_noreply", "done-noreply").closed(),
        // A runtime error stops the action (its earlier effects stay) and the
        // following rules run.
        op("actions.raise", "raise")
            .status(200)
            .body(&codes_echo("raise", true)),
        op("actions.raise_table", "raise-table")
            .status(200)
            .body(&codes_echo("raise-table", true)),
        // set_var returns true; with ifexist only proc refuses to create; an
        // unknown scope gives false. A failed %[var()] gives an empty value.
        Case::new("actions.vars", "vars", get("/"))
            .status(200)
            .body(&echoed(
                "GET /",
                &[
                    "x-got-cfg: string:from-cfg",
                    "x-got-cfgint: number:7",
                    "x-got-lua-bool: number:1",
                    "x-got-missing: nil:nil",
                    "x-set-results: boolean:true|boolean:false|boolean:false",
                    "x-v-str: from-lua",
                    "x-v-num: 42",
                    "x-v-bool: 1",
                    "x-v-gone: ",
                    "x-v-fetch: from-lua",
                ],
            )),
        Case::new("actions.priv_keepalive", "priv", get("/1"))
            .status(200)
            .body(&echoed(
                "GET /1",
                &["x-priv-start: nil:nil", "x-priv-next: number:1"],
            ))
            .then(get("/2"))
            .status(200)
            .body(&echoed(
                "GET /2",
                &["x-priv-start: nil:nil", "x-priv-next: number:1"],
            )),
        Case::new("actions.priv_action_to_service", "priv_service", get("/"))
            .any_header_order()
            .status(200)
            .body("priv=number:1\npriv.after=string:from-service\n"),
        Case::new("actions.resp", "resp", get("/"))
            .status(200)
            .header("content-type", "application/plain")
            .header("x-seen-backend", "string:echo")
            .header("x-seen-type", "string:text/plain")
            .header("x-resp-added", "1")
            .no_header("x-backend"),
        Case::new("actions.resp_404", "resp", get("/status/404"))
            .status(404)
            .header("x-seen-backend", "string:echo"),
        Case::new("actions.resp_status", "resp_status", get("/"))
            .status(299)
            .reason("Custom Reason"),
        Case::new(
            "actions.resp_status_default",
            "resp_status_default",
            get("/"),
        )
        .status(201)
        .reason("Created"),
        Case::new("actions.dotted_fetch_name", "dotted", get("/"))
            .status(200)
            .body(&echoed("GET /", &["x-dotted: string:test.local"]))
            .luahost_only("a luahost addition: HAProxy names fetches with '_' only"),
        Case::new("actions.core_get_var", "core_get_var", get("/"))
            .status(200)
            .body(&echoed("GET /", &["x-core-var: string:hello-proc"]))
            .not_on("haproxy 2.6", "core.get_var is HAProxy 2.8+"),
    ];
    run_group(Group::of("actions", "actions.cfg", &["actions.lua"], cases));
}

/// Lua fetches and converters used by the configuration.
#[test]
fn lua_samples() {
    let cases = vec![
        // Lua values as samples: integers as numbers, booleans print as 1/0,
        // nil and tables and functions become the boolean false ("0"). A
        // float with a fraction becomes 0 (Lua's lua_tointeger gives 0 for
        // it). A fetch that returns nothing at all, or fails with an error,
        // has no value: it prints as nothing.
        Case::new("lua_samples.values", "values", get("/v"))
            .status(200)
            .body(&lines(&[
                "join=arg1+arg2",
                "join1=only+nil",
                "nargs0=0",
                "nargs3=3",
                "nil=0",
                "int=42",
                "neg=-7",
                "float=0",
                "true=1",
                "false=0",
                "table=0",
                "func=0",
                "empty=",
                "none=",
                "host_path=test.local/v",
                "broken=",
            ])),
        // Converters get their input as a string; a converter is not called
        // when its input fetch has no value.
        Case::new("lua_samples.convs", "convs", get("/c"))
            .status(200)
            .body(&lines(&[
                "wrap=[test.local|x|y]",
                "wrap1=[test.local|x|nil]",
                "chain=[TEST.LOCAL|A|NIL]",
                "typeof_int=string:42",
                "typeof_str=string:abc",
                "strlen=5",
                "strlen_add=6",
                "conv_nil=0",
                "missing_in=",
            ])),
        Case::new(
            "lua_samples.rules",
            "rules",
            req("GET", "/r", &[("x-in", "input")], ""),
        )
        .status(200)
        .body(&echoed(
            "GET /r",
            &[
                "x-in: input",
                "x-a: a+b",
                "x-nil: 0",
                "x-conv: [input|c|nil]",
                "x-if-true: yes",
                "x-if-int: yes",
                "x-if-str: yes",
                "x-var: v+w",
            ],
        )),
    ];
    run_group(Group::of(
        "lua_samples",
        "lua_samples.cfg",
        &["lua_samples.lua"],
        cases,
    ));
}

/// Native sample fetches and converters, through `http-request return`
/// bodies of one `name=value` line each.
#[test]
fn native_samples() {
    let rich = req(
        "GET",
        "/p/a.html?x=1&y=%41b",
        &[
            ("x-list", "a,b, c"),
            ("x-list", "d"),
            ("x-num", "42"),
            ("cookie", "c1=v1; c2=v2"),
            ("x-mixed", "MiXeD"),
            ("x-json", "a\"b\\c"),
            ("x-enc", "a%20b%2Fc"),
            ("x-plain", "a b&c=d"),
            ("x-word", "alpha/beta//gamma"),
        ],
        "",
    );
    // Expected values: hashes, digests and checksums were checked against
    // independent implementations (Python zlib/hashlib, reference xxHash,
    // sdbm/djb2/crc32c by their definitions); wt6 is HAProxy's own.
    let cases = vec![
        // hdr() splits values at commas, fhdr() does not; occurrence -1 is
        // the last; a missing header or cookie prints as nothing.
        Case::new("samples.fetch", "fetch", rich.clone())
            .status(200)
            .body(&lines(&[
                "src=127.0.0.1",
                "method=GET",
                "path=/p/a.html",
                "query=x=1&y=%41b",
                "url=/p/a.html?x=1&y=%41b",
                "base=test.local/p/a.html",
                "ver=1.1",
                "hdr=d",
                "hdr1=a",
                "hdr2=b",
                "hdrm1=d",
                "fhdr=d",
                "fhdr1=a,b, c",
                "hdr_cnt=4",
                "fhdr_cnt=2",
                "hdr_val=42",
                "hdr_host=test.local",
                "cook=v2",
                "cook_missing=",
                "cook_cnt=1",
                "urlp=%41b",
                "urlp_x=1",
                "hdr_names=host;x-list;x-list;x-num;cookie;x-mixed;x-json;x-enc;x-plain;x-word",
                "missing=",
                "fe_name=fe_fetch",
                "first_req=1",
            ])),
        Case::new("samples.conv", "conv", rich.clone())
            .status(200)
            .body(&lines(&[
                "lower=mixed",
                "upper=MIXED",
                "base64=aGVsbG8=",
                "b64dec=hello",
                "hex=616263",
                "sdbm=807794786",
                "djb2=193485963",
                "crc32=891568578",
                "crc32c=910901175",
                "wt6=2483038440",
                "xxh32=852579327",
                "xxh64=4952883123889572249",
                "sha1=A9993E364706816ABA3E25717850C26C9CD0D89D",
                "sha2=BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
                "json=a\\\"b\\\\c",
                "url_dec=a b/c",
                "url_enc=a%20b%26c%3Dd",
                "field=beta",
                "field3=",
                "fieldm1=gamma",
                "field_cnt=alpha/beta",
                "word=beta",
                "word3=gamma",
                "bytes=bcd",
                "bytes_open=cdef",
                "ltrim=abcxx",
                "rtrim=xxabc",
                "length=5",
                "regsub=a-b-c",
                "regsub1=a-bXc",
            ])),
        Case::new("samples.num", "num", rich.clone())
            .status(200)
            .body(&lines(&[
                "int=42",
                "neg=-3",
                "add=10",
                "sub=-3",
                "mul=42",
                "div=3",
                "mod=1",
                "neg2=-7",
                "and=8",
                "or=15",
                "xor=6",
                "bool=1",
                "not=0",
                "odd=1",
                "even=0",
                "str=hello",
                "true=1",
                "false=0",
                "ipmask=127.0.0.0",
                "ipmask8=127.0.0.0",
                "str_add=13",
                "hdr_mul=84",
            ])),
        Case::new("samples.vars_maps", "vars", rich)
            .status(200)
            .body(&lines(&[
                "var=mid",
                "var_int=5",
                "var_missing=",
                "var_unset=",
                "var_conv=MID",
                "concat=a<mid>",
                "concat_missing=a<>",
                "add_var=6",
                "map=value-for-mixed",
                "map_default=none",
                "map_missing=",
                "map_beg=p-prefix",
                "map_end=html-suffix",
                "map_sub=api-prefix",
                "map_reg=reg-html",
                "map_ip=loopback",
                "map_int=two",
                "map_str_int=4",
            ])),
    ];
    let mut files = vec![
        "words.map",
        "regs.map",
        "ips.map",
        "ints.map",
        "str_int.map",
    ];
    files.sort();
    run_group(Group::of("samples", "samples.cfg", &files, cases));
}

/// Native rules: deny, return, redirect, set-status, variables, headers.
#[test]
fn native_rules() {
    let redirect = |name: &str, port: &'static str, path: &str, code: u16, to: &str| {
        Case::new(name, port, get(path))
            .status(code)
            .header("location", to)
            .body("")
    };
    let cases = vec![
        Case::new("rules.deny", "deny", get("/"))
            .status(403)
            .header("cache-control", "no-cache")
            .body(&error_page(403)),
        Case::new("rules.deny_status", "deny_status", get("/"))
            .status(429)
            .body(&error_page(429)),
        Case::new("rules.deny_custom", "deny_custom", get("/why"))
            .status(451)
            .reason("Unavailable For Legal Reasons")
            .header("x-why", "/why")
            .header("content-type", "text/plain")
            .body("not here\n"),
        Case::new("rules.return_string", "return_string", get("/"))
            .status(201)
            .header("x-one", "1")
            .header("x-two", "GET")
            .body("created\n"),
        Case::new("rules.return_bare", "return_bare", get("/"))
            .status(200)
            .header("content-length", "0")
            .body(""),
        Case::new("rules.return_status_only", "return_status_only", get("/"))
            .status(404)
            .no_header("content-type")
            .body(""),
        Case::new("rules.return_errorfiles", "return_errorfiles", get("/"))
            .status(503)
            .body(&error_page(503)),
        // 302, 303, 307 and 308 redirects carry "cache-control: no-cache",
        // a 301 does not.
        redirect(
            "rules.redirect_location",
            "redirect_location",
            "/a?b=1",
            302,
            "/new",
        )
        .header("cache-control", "no-cache"),
        redirect(
            "rules.redirect_code",
            "redirect_code",
            "/a",
            301,
            "http://other.example/x",
        )
        .no_header("cache-control"),
        redirect(
            "rules.redirect_prefix",
            "redirect_prefix",
            "/a?b=1",
            302,
            "/pre/a?b=1",
        ),
        redirect(
            "rules.redirect_prefix_drop",
            "redirect_prefix_drop",
            "/a?b=1",
            302,
            "https://www.example/a",
        ),
        redirect(
            "rules.redirect_scheme",
            "redirect_scheme",
            "/a?b=1",
            302,
            "https://test.local/a?b=1",
        ),
        Case::new(
            "rules.redirect_lf",
            "redirect_lf",
            req("GET", "/", &[("x-to", "there")], ""),
        )
        .status(307)
        .reason("Temporary Redirect")
        .header("location", "/to/there")
        .header("cache-control", "no-cache"),
        Case::new("rules.set_status", "set_status", get("/"))
            .status(404)
            .reason("Not Found")
            .body(&echoed("GET /", &[])),
        Case::new("rules.set_status_reason", "set_status_reason", get("/"))
            .status(299)
            .reason("Fine Thanks")
            .body(&echoed("GET /", &[])),
        // A variable set from a failed fetch, or unset, prints as nothing.
        Case::new(
            "rules.vars",
            "vars",
            req("GET", "/", &[("x-in", "input")], ""),
        )
        .status(200)
        .body(&lines(&[
            "a=input",
            "b=const",
            "c=7",
            "d=",
            "e=",
            "upper=INPUT",
        ])),
        Case::new("rules.resp_vars", "resp_vars", get("/rv"))
            .status(200)
            .header("x-req-path", "/rv")
            .header("x-type", "text/plain"),
        Case::new(
            "rules.headers",
            "headers",
            req(
                "GET",
                "/h?x=1",
                &[
                    ("x-in", "in"),
                    ("x-del", "d"),
                    ("x-rep", "abc"),
                    ("x-set", "old"),
                ],
                "",
            ),
        )
        .status(200)
        .header("x-resp", "added")
        .header("content-type", "text/x-changed")
        .no_header("x-backend")
        .body(&echoed(
            "GET /rewritten/h?q=x=1",
            &["x-in: in", "x-rep: bbc", "x-set: in-set", "x-add: added"],
        )),
    ];
    run_group(Group::of("rules", "rules.cfg", &[], cases));
}

/// ACLs and backend selection: the echo backend shows which conditions held
/// (one `x-acl` header each, in rule order) and which backend was chosen.
#[test]
fn acls() {
    // The request, and the echoed body with the expected matches.
    let acl_case = |name: &str,
                    method: &str,
                    path: &str,
                    headers: &[(&str, &str)],
                    body: &str,
                    matched: &[&str],
                    backend: &str| {
        let mut lines: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        lines.extend(matched.iter().map(|m| format!("x-acl: {m}")));
        lines.push(format!("x-be: {backend}"));
        if !body.is_empty() {
            lines.push(format!("body: {body}"));
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        Case::new(name, "fe", req(method, path, headers, body))
            .status(200)
            .body(&echoed(&format!("{method} {path}"), &refs))
    };
    let cases = vec![
        acl_case(
            "acl.api_get",
            "GET",
            "/api/v1/x",
            &[],
            "",
            &[
                "get",
                "api",
                "host-ci",
                "lo",
                "api-and-get",
                "api-or-html",
                "combo",
                "anon-beg",
                "anon-i",
            ],
            "api",
        ),
        acl_case(
            "acl.html_flag",
            "GET",
            "/v2/page.html",
            &[("x-flag", "1")],
            "",
            &[
                "get",
                "html",
                "ver",
                "host-ci",
                "flag",
                "lo",
                "api-or-html",
                "not-api",
                "combo",
                "anon-i",
                "anon-not",
            ],
            "html",
        ),
        acl_case(
            "acl.post_tokens_numbers",
            "POST",
            "/admin/x",
            &[("x-tok", "abcmidxyz"), ("x-n", "42")],
            "data",
            &[
                "admin",
                "host-ci",
                "tok-beg",
                "tok-end",
                "tok-sub",
                "tok-reg",
                "n-ge",
                "n-eq",
                "lo",
                "not-api",
                "unless-get",
                "anon-not",
                "anon-found",
            ],
            "default",
        ),
        // An ACL on a header tests every occurrence; one match is enough.
        acl_case(
            "acl.exact_two_headers_file",
            "GET",
            "/exact",
            &[("x-tok", "exact"), ("x-tok", "alpha"), ("x-n", "7")],
            "",
            &[
                "get",
                "exact",
                "host-ci",
                "tok-str",
                "tok-file",
                "tok-file-i",
                "n-range",
                "two-hdrs",
                "lo",
                "not-api",
                "anon-i",
                "anon-not",
            ],
            "default",
        ),
        acl_case(
            "acl.file_case_int_route",
            "GET",
            "/y/z",
            &[("x-tok", "BETA"), ("x-n", "200"), ("x-flag", "route")],
            "",
            &[
                "get",
                "host-ci",
                "flag",
                "tok-file-i",
                "n-ge",
                "n-int",
                "lo",
                "either",
                "not-api",
                "anon-i",
                "anon-not",
                "anon-found",
            ],
            "flag",
        ),
        acl_case(
            "acl.negative_number",
            "GET",
            "/other",
            &[("x-n", "-5")],
            "",
            &[
                "get", "exact", "host-ci", "n-lt", "lo", "not-api", "anon-i", "anon-not",
            ],
            "default",
        ),
    ];
    run_group(Group::of("acl", "acl.cfg", &["tokens.lst"], cases));
}

/// Forwarding to a server: request and response headers, bodies, status
/// pass-through, keep-alive, and the answers when no server is usable.
#[test]
fn proxying() {
    let chunked_post = "POST /c HTTP/1.1\r\nhost: test.local\r\ntransfer-encoding: chunked\r\n\r\n\
                        5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let cases = vec![
        Case::new("proxy.plain", "plain", get("/a?b=1"))
            .status(200)
            .header("x-backend", "echo")
            .body(&echoed("GET /a?b=1", &[])),
        Case::new("proxy.keepalive", "plain", get("/1"))
            .status(200)
            .body(&echoed("GET /1", &[]))
            .then(get("/2"))
            .status(200)
            .body(&echoed("GET /2", &[]))
            .then(get("/3"))
            .status(200)
            .body(&echoed("GET /3", &[])),
        Case::new(
            "proxy.post_body",
            "plain",
            req(
                "POST",
                "/p",
                &[("content-type", "text/plain")],
                "hello body",
            ),
        )
        .status(200)
        .body(&echoed(
            "POST /p",
            &["content-type: text/plain", "body: hello body"],
        )),
        Case::new("proxy.post_chunked", "plain", chunked_post.to_string())
            .status(200)
            .body(&echoed("POST /c", &["body: hello world"])),
        Case::new("proxy.head", "plain", req("HEAD", "/h", &[], ""))
            .status(200)
            .header("content-length", "34")
            .body(""),
        Case::new("proxy.status_404", "plain", get("/status/404"))
            .status(404)
            .body(&echoed("GET /status/404", &[])),
        Case::new("proxy.status_500", "plain", get("/status/500"))
            .status(500)
            .body(&echoed("GET /status/500", &[])),
        Case::new("proxy.status_204", "plain", get("/status/204"))
            .status(204)
            .no_header("content-length")
            .then(get("/after-204"))
            .status(200),
        Case::new("proxy.chunked_response", "plain", get("/chunked"))
            .status(200)
            .header("transfer-encoding", "chunked")
            .body(&echoed("GET /chunked", &[])),
        Case::new("proxy.set_cookies", "plain", get("/cookies"))
            .status(200)
            .header("set-cookie", "a=1; path=/"),
        Case::new("proxy.rules_forwardfor", "rules", get("/r"))
            .status(200)
            .header("x-resp-rule", "echo-seen")
            .header("x-status", "200")
            .body(&echoed(
                "GET /r",
                &["x-from-rule: abc", "x-forwarded-for: 127.0.0.1"],
            )),
        // forwardfor adds its own header (after the http-request rules ran)
        // and leaves the client's one alone.
        Case::new(
            "proxy.forwardfor_existing",
            "rules",
            req("GET", "/r", &[("x-forwarded-for", "10.1.2.3")], ""),
        )
        .status(200)
        .body(&echoed(
            "GET /r",
            &[
                "x-forwarded-for: 10.1.2.3",
                "x-from-rule: abc",
                "x-forwarded-for: 127.0.0.1",
            ],
        )),
        Case::new("proxy.forwardfor_header", "ff_header", get("/"))
            .status(200)
            .body(&echoed("GET /", &["x-client: 127.0.0.1"])),
        Case::new("proxy.forwardfor_except", "ff_except", get("/"))
            .status(200)
            .body(&echoed("GET /", &[])),
        Case::new("proxy.forwardfor_backend", "ff_backend", get("/"))
            .status(200)
            .body(&echoed("GET /", &["x-forwarded-for: 127.0.0.1"])),
        Case::new("proxy.no_server", "no_server", get("/"))
            .status(503)
            .body(&error_page(503)),
        Case::new("proxy.disabled_server", "disabled", get("/"))
            .status(503)
            .body(&error_page(503)),
        Case::new("proxy.refused", "refused", get("/"))
            .status(503)
            .body(&error_page(503)),
    ];
    run_group(Group::of("proxy", "proxy.cfg", &[], cases));
}

/// The Proxy, Server and Listener classes and the lazy proxy index: the
/// methods' answers read back through Lua services, changes made through
/// Server methods, and scripts shaped like published ones (an auth-request
/// script looking its backend up in `core.backends`, a least-sessions
/// balancer reading `get_stats()`).
#[test]
fn proxy_classes() {
    let no_26 = "HAProxy 2.6 lacks get_rid, is_backup, is_dynamic, tracking and the lazy index";
    let cases = vec![
        Case::new("proxies.model", "model", get("/"))
            .status(200)
            .contains("app uuid=8(string) cap=backend mode=http act=2 bck=1")
            .contains("  a1 puid=1(string) rid=0 addr=127.0.0.1:9001 w=3")
            .contains("status=MAINT")
            .contains("li uuid=10(string) cap=proxy")
            .contains("listeners: sock-1")
            .not_on("haproxy 2.6", no_26),
        Case::new("proxies.ops", "ops", get("/"))
            .status(200)
            .contains("set_weight 300 -> Absolute weight can only be between 0 and 256 inclusive.")
            .contains("drain -> DRAIN")
            .contains("deprecated -> ops 9 o1 1")
            .then(get("/again"))
            .status(200)
            .contains("start -> no check w=1")
            .not_on("haproxy 2.6", no_26),
        Case::new("proxies.set_addr", "addr", get("/set"))
            .status(200)
            .body("IP changed from '127.0.0.1' to '127.0.0.2', port changed from '9102' to '9105' by 'Lua script'\n")
            .then(get("/get"))
            .status(200)
            .body("127.0.0.2:9105\n")
            .then(get("/back"))
            .status(200)
            .body("IP changed from '127.0.0.2' to '127.0.0.1', port changed from '9105' to '9102' by 'Lua script'\n")
            .then(get("/same"))
            .status(200)
            .body("nothing changed\n")
            .then(get("/get"))
            .status(200)
            .body("127.0.0.1:9102\n")
            .not_on("haproxy 2.6", no_26),
        Case::new("proxies.auth_request_shape", "auth", get("/"))
            .status(200)
            .contains("auth server at 127.0.0.1:"),
        Case::new("proxies.least_sessions_shape", "least", get("/"))
            .status(200)
            .contains("app: a1 (0)")
            .not_on("haproxy 2.6", no_26),
        Case::new("proxies.index", "index", get("/"))
            .status(200)
            .contains("counts proxies=10 frontends=7 backends=4")
            .contains("len=0 missing=nil")
            .not_on("haproxy 2.6", no_26),
    ];
    // Lua services build every response here.
    let cases = cases.into_iter().map(Case::any_header_order).collect();
    run_group(Group::of("proxies", "proxies.cfg", &["proxies.lua"], cases));
}

/// Lua sockets (`core.tcp()`) against local servers: an action that asks a
/// check service before allowing a request, conversations with `*l`, byte
/// counts and prefixes, a peer that closes, a silent server (timeouts), a
/// refused connection, a Unix socket, the same from an HTTP service and a
/// task, sockets left open (none outlives its context), and a socket in a
/// sample fetch (refused).
#[test]
fn lua_sockets() {
    let at = |scenario: &str| get(&format!("/{scenario}"));
    let mut cases = vec![
        Case::new("sockets.gate_allows", "gate", get("/index.html"))
            .status(200)
            .body("allowed /index.html\n")
            .then(get("/admin/users"))
            .status(403),
        Case::new("sockets.fetch_refused", "fetch", get("/"))
            .status(200)
            .body("[]\n"),
    ];
    for front in ["act", "svc"] {
        let name = |s: &str| format!("sockets.{front}.{s}");
        cases.push(
            Case::new(&name("talk"), front, at("talk"))
                .status(200)
                .contains("(string:got: one)(string:abcd)(string:pre:ef)(string:gh)")
                .contains("(number:9)(string:ijgot: two)")
                .contains("(string:>got: three)(number:0)()")
                .contains("(string:bye)(nil:nil, string:connection closed.)")
                .contains("()(number:-1)(nil:nil, string:connection closed.)(nil:nil)()"),
        );
        cases.push(
            Case::new(&name("big_send"), front, at("big_send"))
                .status(200)
                .body(
                    "true (number:1)(number:14)(number:16777216)(string:sank: 16777216 intact)\n",
                ),
        );
        cases.push(
            Case::new(&name("peer_close"), front, at("peer_close"))
                .status(200)
                .contains("(string:partial)(nil:nil, string:connection closed.)")
                .contains("(string:got: all")
                .contains("partial)(number:1)(number:8)(string:p:partial)")
                .contains("(string:p:partial)"),
        );
        cases.push(
            Case::new(&name("refused"), front, at("refused"))
                .status(200)
                .body("true (nil:nil, string:Can't connect)(number:-1)(nil:nil, string:connection closed.)(string:pre)(nil:nil)\n"),
        );
        cases.push(
            Case::new(&name("refused_port"), front, at("refused_port"))
                .status(200)
                .body("true (nil:nil, string:Can't connect)\n"),
        );
        cases.push(
            Case::new(&name("timeout"), front, at("timeout"))
                .status(200)
                .contains(
                    "(number:1)(number:1)(number:6)(nil:nil, string:connection closed.)(number:-1)",
                )
                .contains("(string:pre)")
                .contains("(string:got: before")
                .not_on(
                    "haproxy 2.6",
                    "2.6's send on a socket whose timeout expired still reports the bytes as \
                     sent; 3.0 (and luahost) return -1",
                ),
        );
        cases.push(
            Case::new(&name("unix"), front, at("unix"))
                .status(200)
                .contains("(string:got: unix)(string:unix)(string:unix)")
                .contains("(string:got: plain)")
                .contains("(string:got: v4)"),
        );
        cases.push(
            Case::new(&name("abns"), front, at("abns"))
                .status(200)
                .body(
                    "true (number:1)(number:10)(string:got: abns)(nil:nil, string:Can't connect)\n",
                ),
        );
        cases.push(
            Case::new(&name("event_sub"), front, at("event_sub"))
                .status(200)
                .body("true (number:1)(number:11)(string:got: event)(number:200)\n")
                .not_on("haproxy 2.6", "core.event_sub is HAProxy 2.8+"),
        );
        cases.push(
            Case::new(&name("task"), front, at("task"))
                .status(200)
                .contains("(string:got: task)(string:abcdefghijklmnopqrstuvwxyz)(string:abcd)"),
        );
        // Five sockets left open by the script, then (a new context) the
        // number still open at the line service.
        cases.push(
            Case::new(&name("leave_open"), front, at("leave_open"))
                .status(200)
                .contains("(string:got: 5)")
                .then(at("open_count"))
                .status(200)
                .body("true open: 0\n"),
        );
        cases.push(
            Case::new(&name("collected"), front, at("collected"))
                .status(200)
                .body("true (number:1)(number:8)(string:got: gc) open: 0\n"),
        );
    }
    cases.push(
        Case::new("sockets.tls", "act", at("tls"))
            .status(200)
            .body("true (number:1)(number:16)(string:got: secret)(string:sni: none)(boolean:true)(boolean:false, string:'connect_ssl' needs 3 arguments)\n"),
    );
    cases.push(
        Case::new("sockets.tls_options", "svc", at("tls_options"))
            .status(200)
            .body("true (number:1)(number:4)(string:sni: tls.test)(number:1)(number:14)(string:got: verified)(nil:nil, string:Can't connect)(nil:nil, string:Can't connect)\n")
            .luahost_only("a server name (SNI) and verification for connect_ssl are luahost's"),
    );
    cases.push(
        Case::new("sockets.errors", "act", at("errors"))
            .status(200)
            .contains("(boolean:false, string:connect: port missing)")
            .contains(
                "(boolean:false, string:connect: cannot parse destination address 'localhost:')",
            )
            .contains("(boolean:false, string:Unsupported pattern.)")
            .contains("(string:HAProxy class Socket)"),
    );
    run_group(Group::of("sockets", "sockets.cfg", &["sockets.lua"], cases));
}

/// Queues (`core.queue()`): items passed between tasks and an HTTP service
/// with `pop_wait`; `core.wait()` woken by `Queue:alarm()` or its timeout
/// (HAProxy 3.2, so luahost only here).
#[test]
fn lua_queues() {
    const NO_QUEUE: &str = "HAProxy 2.6 has no core.queue()";
    let cases = vec![
        Case::new("queue.basic", "q", get("/basic"))
            .status(200)
            .contains("(number:0)(boolean:true)(boolean:true)(boolean:true)(number:3)")
            .contains("(number:1)(string:a)(string:table)(nil:nil)(number:0)")
            .contains("(boolean:false, string:unexpected argument)")
            .not_on("haproxy 2.6", NO_QUEUE),
        Case::new("queue.task_and_service", "q", get("/roundtrip"))
            .status(200)
            .body("true (string:task saw a)(string:task saw 2)(string:task saw c)\n")
            .then(get("/roundtrip"))
            .status(200)
            .body("true (string:task saw a)(string:task saw 2)(string:task saw c)\n")
            .not_on("haproxy 2.6", NO_QUEUE),
        Case::new("queue.from_a_task", "q", get("/ticks"))
            .status(200)
            .body("true (string:tick1)(string:tick2)(string:tick3)\n")
            .not_on("haproxy 2.6", NO_QUEUE),
        Case::new("queue.pop_wait_in_a_fetch", "fetch", get("/"))
            .status(200)
            .body("[(boolean:false, string:pop_wait() may only be used within task context (requires yielding))]\n")
            .not_on("haproxy 2.6", NO_QUEUE),
        Case::new("queue.alarm_wakes_wait", "q", get("/alarm"))
            .status(200)
            .body("true (boolean:true)(string:x)\n")
            .luahost_only("core.wait() and Queue:alarm() are HAProxy 3.2's"),
        Case::new("queue.wait_timeout", "q", get("/wait_timeout"))
            .status(200)
            .body("true (boolean:true)\n")
            .luahost_only("core.wait() is HAProxy 3.2's"),
    ];
    run_group(Group::of("queues", "queue.cfg", &["queue.lua"], cases));
}

/// Behaviours published scripts found wrong (issue 12, item 9): one action
/// name registered for several rule sets (a CORS script), response rules on
/// Lua services' responses, services that end without a response, and
/// `set_var(..., ifexist)` on proc variables the configuration names.
#[test]
fn script_behaviour() {
    let origin = |path: &str| req("GET", path, &[("origin", "http://site.example")], "");
    let cases = vec![
        // Both registrations of "cors" run, each with its own arguments.
        Case::new("scripts.cors_server", "cors_server", origin("/"))
            .status(200)
            .header("access-control-allow-origin", "http://site.example")
            .header("x-cors-args", "GET,POST|*|x-a")
            .header("x-cors-var", "http://site.example")
            .contains("GET / HTTP/1.1"),
        // In front of a service: the response rule runs on its response and
        // sees the request rule's private data and variables.
        Case::new("scripts.cors_service", "cors_service", origin("/"))
            .status(200)
            .header("access-control-allow-origin", "http://site.example")
            .header("x-cors-args", "GET,POST|*|x-a")
            .header("x-cors-var", "http://site.example")
            .body("hello\n"),
        // Registered twice for one rule set: the second registration runs.
        Case::new("scripts.registered_twice", "twice", get("/"))
            .status(200)
            .contains("x-twice: second"),
        // Native and Lua http-response rules and http-after-response rules
        // on a service's response; the service's variables are visible.
        Case::new("scripts.service_response_rules", "service", get("/"))
            .status(200)
            .header("x-fe-response", "1")
            .header("x-svc-var", "from-service")
            .header("x-seen", "1:200:from-service")
            .header("x-fe-after", "1")
            .body("hello\n"),
        Case::new("scripts.service_response_deny", "service", get("/deny"))
            .status(502)
            .header("x-fe-after", "1")
            .no_header("x-svc"),
        // No response from the service: 500, through the response rules.
        Case::new("scripts.service_silent", "service", get("/silent"))
            .status(500)
            .header("x-fe-response", "1")
            .header("x-seen", "none:500:nil")
            .header("x-fe-after", "1")
            .body(&error_page(500)),
        Case::new("scripts.service_done_early", "service", get("/done"))
            .status(500)
            .header("x-fe-response", "1")
            .body(&error_page(500)),
        Case::new("scripts.service_fails", "service", get("/fails"))
            .status(500)
            .body(&error_page(500)),
        Case::new("scripts.service_after_lua", "service_after", get("/"))
            .status(200)
            .header("x-seen", "1:200:from-service")
            .body("hello\n")
            .not_on("haproxy 2.6", "no Lua http-after-res actions in 2.6"),
        Case::new(
            "scripts.service_after_lua_silent",
            "service_after",
            get("/silent"),
        )
        .status(500)
        .header("x-seen", "none:500:nil")
        .not_on("haproxy 2.6", "no Lua http-after-res actions in 2.6"),
        // The second request sees the values the first one set.
        Case::new("scripts.proc_ifexist", "proc", get("/"))
            .status(200)
            .body(&lines(&[
                "before=nil",
                "proc.named=true/v",
                "proc.set_by_rule=true/v",
                "proc.unset_by_rule=true/v",
                "proc.in_acl=true/v",
                "proc.in_format=true/v",
                "proc.never_named=false/nil",
            ]))
            .then(get("/"))
            .status(200)
            .contains("before=v\n"),
    ];
    // Lua services and actions build most of these headers.
    let cases = cases.into_iter().map(Case::any_header_order).collect();
    run_group(Group::of("scripts", "scripts.cfg", &["scripts.lua"], cases));
}

/// Proxy keywords: `errorfile`, `option http-buffer-request`,
/// `tcp-request connection`, `tcp-request content` in HTTP mode,
/// `use-service` in a backend, and `compression` (bodies compared
/// decompressed: `decoded`).
#[test]
fn proxy_keywords() {
    let post = |path: &str, body: &str| {
        req(
            "POST",
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
    };
    let gz = |path: &str, ae: &str| req("GET", path, &[("accept-encoding", ae)], "");
    let shaped_body = format!("{}\n", "compress me please, ".repeat(20));
    let cases = vec![
        // errorfile
        Case::new("errorfile.frontend_503", "errorfile", get("/"))
            .status(503)
            .body("frontend says busy\n")
            .header("content-type", "text/plain"),
        Case::new("errorfile.backend_wins", "errorfile", get("/be"))
            .status(503)
            .reason("Try Later")
            .body("backend says busy\n")
            .header("x-from", "backend"),
        Case::new("errorfile.deny_403", "errorfile", get("/deny"))
            .status(403)
            .body("not here\n"),
        Case::new("errorfile.empty_file_closes", "errorfile", get("/close")).closed(),
        Case::new(
            "errorfile.bad_request",
            "errorfile",
            "GET / HTTP/1.1\r\nhost: a\r\ncontent-length: x\r\n\r\n".to_string(),
        )
        // The connection's own refusals keep the default page (HAProxy 3.0).
        .status(400)
        .contains("400 Bad request"),
        // A failing Lua service's 500 keeps the default page.
        Case::new("errorfile.failing_service", "errorfile_svc", get("/"))
            .status(500)
            .body(&error_page(500)),
        // HAProxy sends a file without content-length as is, with
        // `connection: close`; luahost adds the content-length.
        Case::new("errorfile.without_length", "errorfile_svc", get("/nolen"))
            .status(502)
            .header("connection", "close")
            .header("content-length", "10")
            .body("no length\n")
            .luahost_only("HAProxy sends the body without content-length, delimited by the close"),
        Case::new(
            "buffer.body_too_late",
            "buffer_slow",
            "POST / HTTP/1.1\r\nhost: test.local\r\ncontent-length: 10\r\n\r\nabc".to_string(),
        )
        .status(408)
        .reason("Slow")
        .body("slow\n")
        .not_on("haproxy 2.6", "2.6 adds connection: close to this 408, 3.0 does not"),
        // option http-buffer-request
        Case::new("buffer.rules_see_the_body", "buffer", post("/show", "a=1&b=2"))
            .status(200)
            .body("len=7 body=a=1&b=2 param=1 lua=a=1&b=2\n"),
        Case::new("buffer.body_still_forwarded", "buffer", post("/fwd", "hello"))
            .status(200)
            .body(&echoed(
                "POST /fwd",
                &[
                    "content-type: application/x-www-form-urlencoded",
                    "body: hello",
                ],
            )),
        Case::new(
            "buffer.chunked_body",
            "buffer",
            "POST /show HTTP/1.1\r\nhost: test.local\r\ntransfer-encoding: chunked\r\n\r\n3\r\na=x\r\n2\r\nyz\r\n0\r\n\r\n"
                .to_string(),
        )
        .status(200)
        .body("len=5 body=a=xyz param=xyz lua=a=xyz\n"),
        // Without the option the rules see what came with the head.
        Case::new("buffer.without_the_option", "nobuffer", post("/", "a=1"))
            .status(200)
            .body("len=3 body=a=1\n"),
        Case::new("buffer.backend_option", "buffer_be", post("/", "abc"))
            .status(200)
            .body("be len=3 body=abc\n"),
        // tcp-request connection
        Case::new("conn.accepted_with_sess_var", "conn_ok", get("/"))
            .status(200)
            .body("sess=seen\n")
            .then(get("/again"))
            .status(200)
            .body("sess=seen\n"),
        Case::new("conn.rejected", "conn_reject", get("/")).closed(),
        // tcp-request content in HTTP mode
        Case::new("content.runs_before_http", "content", get("/"))
            .status(200)
            .body("order=not-accepted,http\n"),
        Case::new("content.accept_stops_the_set", "content", get("/accept"))
            .status(200)
            .body("order=tcp,http\n"),
        Case::new("content.reject_closes", "content", get("/reject")).closed(),
        Case::new("content.per_request", "content", get("/accept"))
            .status(200)
            .body("order=tcp,http\n")
            .then(get("/"))
            .status(200)
            .body("order=not-accepted,http\n"),
        // use-service in a backend
        Case::new("be_service.http", "be_service", get("/"))
            .status(200)
            .body("hello from the service\n")
            .any_header_order(),
        // compression
        Case::new("comp.service_gzip", "comp", gz("/shaped", "gzip"))
            .status(200)
            .header("content-encoding", "gzip")
            .header("transfer-encoding", "chunked")
            .header("vary", "Accept-Encoding")
            .body(&shaped_body)
            .decoded()
            .any_header_order(),
        Case::new("comp.service_deflate", "comp", gz("/shaped", "deflate, gzip;q=0.5"))
            .status(200)
            .header("content-encoding", "deflate")
            .body(&shaped_body)
            .decoded()
            .any_header_order(),
        Case::new("comp.service_length_removed", "comp", gz("/shaped?len=1", "gzip"))
            .status(200)
            .no_header("content-length")
            .body(&shaped_body)
            .decoded()
            .any_header_order(),
        Case::new("comp.no_accept_encoding", "comp", get("/shaped"))
            .status(200)
            .no_header("content-encoding")
            .no_header("vary")
            .any_header_order(),
        Case::new("comp.unknown_encoding", "comp", gz("/shaped", "br"))
            .status(200)
            .no_header("content-encoding")
            .any_header_order(),
        Case::new("comp.q_zero", "comp", gz("/shaped", "gzip;q=0"))
            .status(200)
            .no_header("content-encoding")
            .any_header_order(),
        Case::new("comp.star", "comp", gz("/shaped", "*"))
            .status(200)
            .header("content-encoding", "deflate")
            .decoded()
            .any_header_order(),
        Case::new("comp.type_not_listed", "comp", gz("/shaped?type=image/png", "gzip"))
            .status(200)
            .no_header("content-encoding")
            .any_header_order(),
        Case::new("comp.type_with_parameters", "comp", gz("/shaped?type=text/html;%20charset=utf-8", "gzip"))
            .status(200)
            .header("content-encoding", "gzip")
            .decoded()
            .any_header_order(),
        Case::new("comp.status_201", "comp", gz("/shaped?status=201", "gzip"))
            .status(201)
            .header("content-encoding", "gzip")
            .decoded()
            .any_header_order(),
        Case::new("comp.status_404", "comp", gz("/shaped?status=404", "gzip"))
            .status(404)
            .no_header("content-encoding")
            .any_header_order(),
        Case::new("comp.already_encoded", "comp", gz("/shaped?ce=br", "gzip"))
            .status(200)
            .header("content-encoding", "br")
            .any_header_order(),
        Case::new("comp.no_transform", "comp", gz("/shaped?cc=no-transform", "gzip"))
            .status(200)
            .no_header("content-encoding")
            .any_header_order(),
        Case::new("comp.etag_weakened", "comp", gz("/shaped?etag=%22v1%22", "gzip"))
            .status(200)
            .header("etag", "W/\"v1\"")
            .decoded()
            .any_header_order(),
        Case::new("comp.invalid_etag", "comp", gz("/shaped?etag=v1", "gzip"))
            .status(200)
            .no_header("content-encoding")
            .any_header_order(),
        Case::new("comp.two_etags", "comp", gz("/shaped?etag=%22a%22&etag2=1", "gzip"))
            .status(200)
            .no_header("content-encoding")
            .any_header_order(),
        Case::new("comp.vary_appended", "comp", gz("/shaped?vary=Origin", "gzip"))
            .status(200)
            .header("vary", "Origin,Accept-Encoding")
            .decoded()
            .any_header_order(),
        Case::new("comp.head", "comp", req("HEAD", "/shaped", &[("accept-encoding", "gzip")], ""))
            .status(200)
            .no_header("content-encoding")
            .any_header_order(),
        // luahost forwards HTTP/1.0 requests as HTTP/1.1 and answers with an
        // HTTP/1.0 status line, where HAProxy does the reverse: a difference
        // of forwarding, not of compression, so this case checks luahost
        // alone (HAProxy 3.0 does not compress here either).
        Case::new("comp.http10_client", "comp", "GET /h10 HTTP/1.0\r\nhost: test.local\r\naccept-encoding: gzip\r\n\r\n".to_string())
            .status(200)
            .no_header("content-encoding")
            .luahost_only("HTTP/1.0 forwarding differs from HAProxy's in the version of the lines, not in compression"),
        Case::new("comp.old_mozilla", "comp", req("GET", "/shaped", &[("accept-encoding", "gzip"), ("user-agent", "Mozilla/4.0 (compatible; X)")], ""))
            .status(200)
            .no_header("content-encoding")
            .any_header_order(),
        Case::new("comp.generated_reply", "comp", gz("/return", "gzip"))
            .status(200)
            .no_header("content-encoding")
            .body("a generated reply, never compressed\n"),
        Case::new("comp.server_response", "comp", gz("/s", "gzip"))
            .status(200)
            .header("content-encoding", "gzip")
            .body(&echoed("GET /s", &["accept-encoding: gzip"]))
            .decoded(),
        Case::new("comp.server_chunked", "comp", gz("/chunked", "gzip"))
            .status(200)
            .header("content-encoding", "gzip")
            .body(&echoed("GET /chunked", &["accept-encoding: gzip"]))
            .decoded(),
        Case::new("comp.keepalive", "comp", gz("/1", "gzip"))
            .status(200)
            .decoded()
            .then(get("/2"))
            .status(200)
            .no_header("content-encoding"),
        Case::new("comp.backend_raw_deflate_offload", "comp_be", gz("/o", "gzip, deflate"))
            .status(200)
            .header("content-encoding", "deflate")
            .body(&echoed("GET /o", &[]))
            .decoded(),
        Case::new("comp.identity", "comp_identity", gz("/i", "gzip"))
            .status(200)
            .no_header("content-encoding")
            .no_header("content-length")
            .header("vary", "Accept-Encoding")
            .body(&echoed("GET /i", &["accept-encoding: gzip"])),
    ];
    // HAProxy 2.6 frames Lua service responses on the compression path
    // wrongly (transfer-encoding: chunked up to three times, and on HEAD
    // answers too); 3.0 fixed it.
    let cases = cases
        .into_iter()
        .map(|c| {
            if c.port == "comp" && c.steps[0].request.contains("/shaped") {
                c.not_on(
                    "haproxy 2.6",
                    "2.6 repeats transfer-encoding on compressed Lua service responses",
                )
            } else {
                c
            }
        })
        .collect();
    run_group(Group::of(
        "keywords",
        "keywords.cfg",
        &[
            "keywords.lua",
            "fe503.http",
            "be503.http",
            "e403.http",
            "e400.http",
            "empty.http",
            "e408.http",
            "nolen.http",
        ],
        cases,
    ));
}
