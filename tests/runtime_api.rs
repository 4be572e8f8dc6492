//! The runtime API (`stats socket`, HAProxy's CLI): the same configuration
//! runs under luahost, HAProxy 3.0 and (where they agree) HAProxy 2.6, the
//! same command sessions go to each, and the answers must be equal, byte
//! for byte, after masking what differs by nature (times since a change,
//! process ids). One test drives the socket with `socat`, as operators do.
//!
//! `under_load_*`: wrk against a backend of 4 servers while servers are
//! added, deleted, drained and re-weighted over the socket every 10 ms: no
//! request may fail, and no server may receive a request while it is in
//! maintenance (once its last request finished) or deleted.

use luahost_suite::{
    artifacts, free_port, haproxy_peers, require_haproxy_30, scratch_dir, HaproxyPeer,
};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CLI_LUA: &str = r#"
core.register_cli({"hello", "world"}, "say hello", function(applet, a1, a2, a3, a4, a5)
  applet:send("hi " .. tostring(a1) .. " " .. tostring(a2) .. " " .. tostring(a3)
    .. " " .. tostring(a4) .. " " .. tostring(a5) .. "\n")
end)
"#;

/// The ports and paths one proxy uses.
struct Setup {
    dir: PathBuf,
    fe: u16,
    listen: u16,
    cli_tcp: u16,
}

impl Setup {
    fn sock(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sock"))
    }
}

/// The configuration every proxy runs. Servers point at ports where
/// nothing listens: the CLI answers do not depend on traffic.
fn config(s: &Setup, servers: &[u16; 3]) -> String {
    let d = s.dir.display();
    let [p1, p2, p3] = servers;
    format!(
        "global\n    maxconn 1000\n    stats socket {d}/admin.sock mode 600 level admin\n    \
         stats socket {d}/oper.sock level operator\n    stats socket {d}/user.sock level user\n    \
         stats socket ipv4@127.0.0.1:{cli} level admin\n    stats timeout 5s\n    lua-load {d}/cli.lua\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
         frontend fe\n    bind 127.0.0.1:{fe}\n    default_backend be\n\
         backend be\n    balance roundrobin\n    server s1 127.0.0.1:{p1} weight 10\n    \
         server s2 127.0.0.1:{p2} maxconn 5\n    server s3 127.0.0.1:{p3} backup\n    \
         server s4 127.0.0.1:{p3} disabled\n\
         backend bt\n    mode tcp\n    balance leastconn\n    server t1 127.0.0.1:{p1}\n\
         listen lh\n    bind 127.0.0.1:{listen}\n    server l1 127.0.0.1:{p1}\n",
        cli = s.cli_tcp,
        fe = s.fe,
        listen = s.listen,
    )
}

/// Starts `program` (luahost or HAProxy) on the shared configuration and
/// waits for its admin socket.
fn start(program: &Path, tag: &str, servers: &[u16; 3]) -> (Running, Setup) {
    start_with(program, tag, servers, "")
}

/// [`start`] with `extra` sections after the shared configuration.
fn start_with(program: &Path, tag: &str, servers: &[u16; 3], extra: &str) -> (Running, Setup) {
    let setup = Setup {
        dir: scratch_dir(&format!("runtime_api_{tag}")),
        fe: free_port(),
        listen: free_port(),
        cli_tcp: free_port(),
    };
    std::fs::write(setup.dir.join("cli.lua"), CLI_LUA).expect("write lua");
    let cfg = setup.dir.join("p.cfg");
    std::fs::write(&cfg, config(&setup, servers) + extra).expect("write cfg");
    let log = std::fs::File::create(setup.dir.join("stderr")).expect("log");
    let mut cmd = Command::new(program);
    if program != artifacts().luahost() {
        cmd.arg("-db");
    }
    let child = cmd
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start proxy");
    let mut running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Sockets are bound one after the other: wait for all of them.
    while ["admin", "oper", "user"]
        .iter()
        .any(|n| UnixStream::connect(setup.sock(n)).is_err())
    {
        if let Ok(Some(st)) = running.0.try_wait() {
            panic!(
                "{tag} exited ({st}): {}",
                std::fs::read_to_string(setup.dir.join("stderr")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{tag}: no stats socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    (running, setup)
}

/// Sends `input` on a UNIX stats socket, half-closes, and reads until the
/// proxy closes.
fn ask(path: &Path, input: &str) -> String {
    let mut s = UnixStream::connect(path).expect("connect stats socket");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(input.as_bytes()).expect("send");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The same with socat, as `echo "..." | socat stdio unix-connect:PATH`.
fn ask_socat(path: &Path, input: &str) -> String {
    let mut child = Command::new("socat")
        .arg("-t2")
        .arg("stdio")
        .arg(format!("unix-connect:{}", path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat (CI installs it)");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("to socat");
    }
    let out = child.wait_with_output().expect("socat output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Masks what differs by nature: the seconds since a state change in
/// `show servers state` (10th field) and `show stat` (`lastchg`, `pid`).
fn mask(text: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let fields: Vec<&str> = line.trim_end_matches('\n').split(' ').collect();
        if fields.len() == 25 && fields[0].parse::<u32>().is_ok() {
            let mut f = fields.clone();
            f[9] = "T";
            out.push_str(&f.join(" "));
            out.push_str(&line[line.trim_end_matches('\n').len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Columns of `show stat` that luahost fills from its model and compares.
const STAT_COLUMNS: &[&str] = &[
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "downtime",
    "iid",
    "sid",
    "lbtot",
    "type",
    "check_rise",
    "check_fall",
    "check_health",
    "addr",
    "mode",
    "algo",
    "uweight",
    "srid",
];

/// `show stat` reduced to the compared columns (the header must be equal
/// as a whole).
fn stat_view(csv: &str) -> (String, Vec<Vec<String>>) {
    let mut lines = csv.lines();
    let header = lines.next().unwrap_or_default().to_string();
    let names: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let idx: Vec<usize> = STAT_COLUMNS
        .iter()
        .map(|c| names.iter().position(|n| n == c).expect("column"))
        .collect();
    let chkdown = STAT_COLUMNS.iter().position(|c| *c == "chkdown");
    let downtime = STAT_COLUMNS.iter().position(|c| *c == "downtime");
    let rows = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let mut row: Vec<String> = idx
                .iter()
                .map(|&i| f.get(i).copied().unwrap_or("?").to_string())
                .collect();
            // A backend's own down transitions and down time are not
            // counted by luahost (its servers' are).
            if f.get(1) == Some(&"BACKEND") {
                for c in [chkdown, downtime].into_iter().flatten() {
                    row[c] = "-".into();
                }
            }
            row
        })
        .collect();
    (header, rows)
}

/// One proxy under test.
struct Peer {
    label: String,
    _proc: Running,
    setup: Setup,
}

fn peers(test: &str, servers: &[u16; 3], with_26: bool) -> (Peer, Vec<Peer>) {
    let (p, s) = start(&artifacts().luahost(), &format!("{test}_luahost"), servers);
    let ours = Peer {
        label: "luahost".into(),
        _proc: p,
        setup: s,
    };
    let theirs = haproxy_peers()
        .into_iter()
        .filter(|h: &HaproxyPeer| with_26 || !h.label.ends_with("2.6"))
        .map(|h| {
            let tag = format!("{test}_{}", h.label.replace(' ', "_"));
            let (p, s) = start(&h.program, &tag, servers);
            Peer {
                label: h.label,
                _proc: p,
                setup: s,
            }
        })
        .collect();
    (ours, theirs)
}

/// Asks every peer the same sessions, in order; each answer must equal the
/// reference's after masking. `not_on_26` lists the sessions where HAProxy
/// 2.6 answers otherwise than 3.0 (which luahost follows). All mismatches
/// are reported together.
fn same_answers(ours: &Peer, theirs: &[Peer], sessions: &[(&str, &str)], not_on_26: &[&str]) {
    let mut failures = Vec::new();
    for (sock, input) in sessions {
        let mine = mask(&ask(&ours.setup.sock(sock), input));
        for t in theirs {
            let reference = mask(&ask(&t.setup.sock(sock), input));
            if t.label.ends_with("2.6") && not_on_26.contains(input) {
                continue;
            }
            if mine != reference {
                failures.push(format!(
                    "session {input:?} on {sock}.sock: luahost vs {}\n  luahost: {mine:?}\n  {}: {reference:?}",
                    t.label, t.label
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn dead_ports() -> [u16; 3] {
    [free_port(), free_port(), free_port()]
}

#[test]
fn level_refusals_and_error_messages_match_haproxy() {
    let (ours, theirs) = peers("levels", &dead_ports(), true);
    let mut sessions: Vec<(&str, &str)> = Vec::new();
    // Commands above the socket's level.
    for cmd in [
        "set server be/s1 state drain\n",
        "set server be/s1 weight 5\n",
        "set server be/s1 addr 127.0.0.2\n",
        "add server be/x 127.0.0.1:1\n",
        "del server be/s1\n",
        "disable server be/s1\n",
        "enable server be/s1\n",
        "enable health be/s1\n",
        "disable health be/s1\n",
        "set maxconn server be/s1 3\n",
        "set weight be/s1 5\n",
    ] {
        sessions.push(("user", cmd));
        sessions.push(("oper", cmd));
    }
    sessions.push(("user", "show sess\n"));
    sessions.push(("user", "operator\n"));
    sessions.push(("oper", "show cli level\n"));
    sessions.push(("user", "show cli level\n"));
    sessions.push(("admin", "user; show cli level\n"));
    sessions.push(("admin", "operator; set server be/s1 state drain\n"));
    // HAProxy's error messages.
    for cmd in [
        "set server be/s1 state foo\n",
        "set server be/zz state drain\n",
        "set server zz/s1 state drain\n",
        "set server be state drain\n",
        "set server be/s1\n",
        "set server be/s1 weight 300\n",
        "set server be/s1 weight abc\n",
        "set server be/s1 weight 5x\n",
        "set server be/s1 weight\n",
        "set server be/s1 weight -5%\n",
        "set server be/s1 addr foo\n",
        "set server be/s1 addr\n",
        "set server be/s1 health sideways\n",
        "set maxconn server be/s1 abc\n",
        "set maxconn server be/s1\n",
        "set maxconn server be/s1 5x\n",
        "enable health be/s1\n",
        "disable server\n",
        "disable server be/nope\n",
        "del server be/s1\n",
        "del server be/zz\n",
        "del server be\n",
        "add server zz/x 1.2.3.4:5\n",
        "add server be/s1 127.0.0.1:1\n",
        "add server be\n",
        "add server be/x\n",
        "get weight be/s1\n",
        "get weight be/zz\n",
        "show servers state zz\n",
        "show servers state\n",
        "show servers state bt\n",
    ] {
        sessions.push(("admin", cmd));
    }
    // HAProxy 2.6 leaves out the empty line after these messages, and
    // names the updater after an invalid address.
    let not_on_26 = [
        "set server be/s1 weight abc\n",
        "set server be/s1 weight 5x\n",
        "set server be/s1 addr foo\n",
        "set maxconn server be/s1 abc\n",
        "set maxconn server be/s1 5x\n",
        "del server be/s1\n",
        "del server be/zz\n",
        "del server be\n",
        "add server zz/x 1.2.3.4:5\n",
        "add server be\n",
    ];
    same_answers(&ours, &theirs, &sessions, &not_on_26);
}

#[test]
fn server_changes_show_in_servers_state_and_stat_as_in_haproxy() {
    let ports = dead_ports();
    let (ours, theirs) = peers("changes", &ports, false);
    let p1 = ports[0];
    let changes = format!(
        "set server be/s1 weight 50%\nset server be/s2 state drain\nset maxconn server be/s2 7\n\
         set server be/s1 addr 127.0.0.2 port {p}\nset server be/s1 addr 127.0.0.1 port {p1}\n\
         set server be/s1 addr 127.0.0.1\nadd server be/s5 127.0.0.1:{p1} weight 7 maxconn 3\n\
         add server be/s6 127.0.0.1:{p1} disabled\nset server lh/l1 weight 0\n\
         get weight be/s1\nset weight be/s1 20\nget weight be/s1\nset server be/s3 state drain\n",
        p = free_port()
    );
    let mut sessions: Vec<(&str, &str)> = Vec::new();
    let lines: Vec<String> = changes.lines().map(|l| format!("{l}\n")).collect();
    for l in &lines {
        sessions.push(("admin", l.as_str()));
    }
    sessions.push(("admin", "show servers state\n"));
    sessions.push(("admin", "show backend\n"));
    sessions.push(("admin", "del server be/s5\n"));
    sessions.push(("admin", "set server be/s5 state maint\n"));
    sessions.push(("admin", "del server be/s5\n"));
    sessions.push(("admin", "set server be/s5 state maint\n"));
    sessions.push(("admin", "show servers state be\n"));
    same_answers(&ours, &theirs, &sessions, &[]);
    // show stat: the whole header, and the columns luahost knows; one
    // client connection open on each proxy's frontend (its `scur`).
    let _c = TcpStream::connect(("127.0.0.1", ours.setup.fe)).expect("client");
    std::thread::sleep(Duration::from_millis(200));
    let (h_ours, mut r_ours) = stat_view(&ask(&ours.setup.sock("admin"), "show stat\n"));
    // One connection came and stayed: luahost's frontend peak is exactly 1.
    // HAProxy's is 1 or 2: with two threads, both may count a connection
    // in advance before one of them accepts it (listener_accept's
    // speculative increment), and its peak keeps that count; so the
    // frontend's smax is compared here, not against HAProxy.
    let smax = STAT_COLUMNS
        .iter()
        .position(|c| *c == "smax")
        .expect("smax");
    let fe_row = |rows: &[Vec<String>]| {
        rows.iter()
            .position(|r| r[0] == "fe" && r[1] == "FRONTEND")
            .expect("fe FRONTEND row")
    };
    let i = fe_row(&r_ours);
    assert_eq!(
        r_ours[i][smax], "1",
        "luahost's frontend peak: {:?}",
        r_ours[i]
    );
    r_ours[i][smax] = "-".into();
    for t in &theirs {
        let _c = TcpStream::connect(("127.0.0.1", t.setup.fe)).expect("client");
        std::thread::sleep(Duration::from_millis(200));
        let (h, mut r) = stat_view(&ask(&t.setup.sock("admin"), "show stat\n"));
        let i = fe_row(&r);
        assert!(
            ["1", "2"].contains(&r[i][smax].as_str()),
            "{}'s frontend peak: {:?}",
            t.label,
            r[i]
        );
        r[i][smax] = "-".into();
        assert_eq!(h_ours, h, "show stat header: luahost vs {}", t.label);
        assert_eq!(
            r_ours, r,
            "show stat rows ({STAT_COLUMNS:?}): luahost vs {}",
            t.label
        );
    }
}

#[test]
fn cli_protocol_over_socat_matches_haproxy() {
    let (ours, theirs) = peers("protocol", &dead_ports(), false);
    let sessions = [
        // One command per line; the session ends after the first line.
        "show cli level\nshow cli level\n",
        // ';' separates commands of one line.
        "show backend; show cli level\n",
        // Escapes: '\;' is not a separator.
        "show\\;x backend\n",
        // Interactive mode: '> ' prompts until quit.
        "prompt\nshow cli level\n\nset server be/s1 state foo\nquit\n",
        "prompt\nshow backend; show cli level\nprompt\nshow cli level\n",
        // An empty line, blanks, CRLF.
        "\n",
        "   \n",
        "show cli level\r\n",
        // No terminator: not run.
        "show cli level",
        // A register_cli command: its words and arguments.
        "hello world a b c\n",
        "hello world\n",
        "help hello\n",
        "help del server\n",
        "quit\n",
    ];
    for input in sessions {
        let mine = ask_socat(&ours.setup.sock("admin"), input);
        for t in &theirs {
            let reference = ask_socat(&t.setup.sock("admin"), input);
            assert_eq!(mine, reference, "session {input:?}: luahost vs {}", t.label);
        }
    }
    // `help` lists the Lua command with its usage as given.
    let help = ask_socat(&ours.setup.sock("admin"), "help\n");
    assert!(help.starts_with("The following commands are valid at this level:\n"));
    assert!(help.contains("\n  say hello\n"), "{help}");
    assert!(help.ends_with("  quit                                    : disconnect\n\n"));
    // An unknown command: HAProxy's first line (the proposals depend on
    // each one's command set).
    let unknown = ask_socat(&ours.setup.sock("admin"), "shwo stat\n");
    for t in &theirs {
        let reference = ask_socat(&t.setup.sock("admin"), "shwo stat\n");
        assert_eq!(
            unknown.lines().next(),
            reference.lines().next(),
            "unknown command: luahost vs {}",
            t.label
        );
    }
    // show info: HAProxy 3.0's fields, in its order.
    let names = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.split_once(": ").map(|(k, _)| k.to_string()))
            .collect()
    };
    let info = ask(&ours.setup.sock("admin"), "show info\n");
    assert!(info.starts_with("Name: luahost\n"), "{info}");
    assert!(info.ends_with("\n\n"), "{info}");
    for t in &theirs {
        let reference = ask(&t.setup.sock("admin"), "show info\n");
        assert_eq!(
            names(&info),
            names(&reference),
            "show info fields: luahost vs {}",
            t.label
        );
    }
    // The TCP stats socket speaks the same protocol.
    let mut s = TcpStream::connect(("127.0.0.1", ours.setup.cli_tcp)).expect("tcp cli");
    s.write_all(b"show cli level\n").expect("send");
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert_eq!(got, "admin\n\n");
}

/// luahost only: HAProxy 3.0 gives a CLI command's applet nothing to read.
#[test]
fn register_cli_commands_read_the_session_and_survive_errors() {
    let dir = scratch_dir("runtime_api_lua_cli");
    let sock = dir.join("a.sock");
    std::fs::write(
        dir.join("c.lua"),
        r#"
core.register_cli({"echo", "lines"}, "echo lines N : echo N lines back", function(applet, w1, w2, n)
  for i = 1, tonumber(n) do
    local l = applet:getline()
    applet:send(i .. ":" .. l)
  end
end)
core.register_cli({"fail"}, "fail : raise an error", function(applet)
  error("on purpose")
end)
core.register_cli({"who"}, "who : the thread", function(applet)
  applet:send("thread " .. core.thread .. "\n")
end)
"#,
    )
    .expect("lua");
    std::fs::write(
        dir.join("p.cfg"),
        format!(
            "global\n    nbthread 2\n    stats socket {} level user\n    stats timeout 1s\n    lua-load-per-thread c.lua\n",
            sock.display()
        ),
    )
    .expect("cfg");
    let log = std::fs::File::create(dir.join("stderr")).expect("log");
    let _p = Running(
        Command::new(artifacts().luahost())
            .arg("-f")
            .arg("p.cfg")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("luahost"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    // getline reads the lines after the command; the session goes on.
    assert_eq!(
        ask(
            &sock,
            "prompt\necho lines 2\nfirst\nsecond\nshow cli level\nquit\n"
        ),
        "\n> 1:first\n2:second\n\n> user\n\n> "
    );
    // A failing command logs, answers the empty line, and the session
    // goes on; it ran on worker 0's per-thread state.
    assert_eq!(ask(&sock, "fail; who\n"), "\nthread 1\n\n");
    let log = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    assert!(
        log.contains("Lua cli '<lua.cli.fail>': ") && log.contains("on purpose"),
        "{log}"
    );
    // `prompt timed`: the uptime in the prompt.
    let timed = ask(&sock, "prompt timed\nquit\n");
    assert!(
        timed.starts_with("\n[0:00:") && timed.ends_with("]> ") && timed.len() == 15,
        "{timed:?}"
    );
    // Any level may run them; help lists them.
    let help = ask(&sock, "help\n");
    assert!(
        help.contains("\n  echo lines N : echo N lines back\n"),
        "{help}"
    );
    // stats timeout: an idle session is closed.
    let mut s = UnixStream::connect(&sock).expect("connect");
    s.write_all(b"prompt\n").expect("send");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    // Ok: luahost closed the session (a read timeout here would be an Err).
    let closed = s.read_to_end(&mut got);
    assert!(closed.is_ok(), "the idle session stays open: {closed:?}");
    assert_eq!(got, b"\n> ");
}

#[test]
fn stats_socket_configuration_errors_name_file_and_line() {
    let dir = scratch_dir("runtime_api_cfg_errors");
    for (line, want) in [
        (
            "stats socket /tmp/x.sock level root",
            "'level' only supports 'user', 'operator', and 'admin'",
        ),
        ("stats socket", "expects an address or a path to a UNIX socket"),
        ("stats timeout 0", "'stats timeout' expects a positive value"),
        ("stats sockets /x", "'stats' only supports 'socket', 'maxconn', 'bind-process' and 'timeout' (got 'sockets')"),
        ("stats socket /tmp/x.sock mode 9z", "invalid mode"),
    ] {
        let cfg = dir.join("bad.cfg");
        std::fs::write(&cfg, format!("global\n    {line}\n")).expect("write");
        let out = luahost_suite::run_with_timeout(
            Command::new(artifacts().luahost()).arg("-c").arg("-f").arg(&cfg),
            20,
        );
        assert_eq!(out.status, Some(1), "{line}: {}", out.stderr);
        assert!(out.stderr.contains("bad.cfg:2"), "{line}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{line}: {}", out.stderr);
    }
}

// ---------------------------------------------------------------------------
// Under load
// ---------------------------------------------------------------------------

/// A keep-alive HTTP server that answers 200 and notes when each request
/// arrived.
struct Origin {
    port: u16,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

fn origin(stop: Arc<AtomicBool>) -> Origin {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let port = l.local_addr().expect("addr").port();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let a = arrivals.clone();
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((c, _)) => {
                    let a = a.clone();
                    std::thread::spawn(move || serve_origin(c, a));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    Origin { port, arrivals }
}

fn serve_origin(mut c: TcpStream, arrivals: Arc<Mutex<Vec<Instant>>>) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if let Ok(mut v) = arrivals.lock() {
                v.push(Instant::now());
            }
            buf.drain(..end + 4);
            if c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
        match c.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// Sends one command on the admin socket and returns the answer.
fn admin(sock: &Path, cmd: &str) -> String {
    ask(sock, &format!("{cmd}\n"))
}

/// A server's current sessions (`scur`) from `show stat`.
fn scur(sock: &Path, server: &str) -> Option<u64> {
    let csv = admin(sock, "show stat");
    csv.lines()
        .find(|l| l.starts_with(&format!("be,{server},")))
        .and_then(|l| l.split(',').nth(4))
        .and_then(|v| v.parse().ok())
}

/// A time during which a server must receive nothing.
struct Window {
    server: usize,
    from: Instant,
    to: Option<Instant>,
}

#[test]
fn under_load_churning_servers_loses_no_request_and_spares_removed_ones() {
    if luahost_suite::require_program("wrk", "the under-load test").is_none() {
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    // s1..s4 configured; d1, d2 added and deleted over and over.
    let origins: Vec<Origin> = (0..6).map(|_| origin(stop.clone())).collect();
    let dir = scratch_dir("runtime_api_load");
    let fe = free_port();
    let sock = dir.join("admin.sock");
    let mut cfg = format!(
        "global\n    nbthread 2\n    stats socket {} level admin\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n    \
         retries 3\nfrontend fe\n    bind 127.0.0.1:{fe}\n    default_backend be\nbackend be\n    balance roundrobin\n",
        sock.display()
    );
    for (i, o) in origins.iter().take(4).enumerate() {
        cfg.push_str(&format!("    server s{} 127.0.0.1:{}\n", i + 1, o.port));
    }
    std::fs::write(dir.join("p.cfg"), &cfg).expect("cfg");
    let log = std::fs::File::create(dir.join("stderr")).expect("log");
    let _proc = Running(
        Command::new(artifacts().luahost())
            .arg("-f")
            .arg(dir.join("p.cfg"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("luahost"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() || TcpStream::connect(("127.0.0.1", fe)).is_err() {
        assert!(Instant::now() < deadline, "luahost did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let wrk = Command::new("wrk")
        .args(["-t1", "-c8", "-d10s", "--latency"])
        .arg(format!("http://127.0.0.1:{fe}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk");
    let started = Instant::now();
    let names = ["s1", "s2", "s3", "s4", "d1", "d2"];
    let mut windows: Vec<Window> = Vec::new();
    // Servers in maintenance or deleted whose window has not started yet
    // (waiting for their last request to finish).
    let mut pending: Vec<usize> = Vec::new();
    let mut dynamic_present = [false, false];
    let mut ops = 0u32;
    let mut step = 0usize;
    while started.elapsed() < Duration::from_millis(9_500) {
        step += 1;
        std::thread::sleep(Duration::from_millis(10));
        ops += 1;
        match step % 8 {
            // Re-weight a configured server.
            0 | 4 => {
                let s = names[step % 4];
                let w = 1 + (step * 7) % 200;
                let a = admin(&sock, &format!("set server be/{s} weight {w}"));
                assert_eq!(a, "\n", "set weight {s}");
            }
            // Drain a configured server, or bring it back.
            1 => {
                let s = names[(step / 8) % 4];
                assert_eq!(
                    admin(&sock, &format!("set server be/{s} state drain")),
                    "\n"
                );
            }
            5 => {
                let s = names[(step / 8) % 4];
                assert_eq!(
                    admin(&sock, &format!("set server be/{s} state ready")),
                    "\n"
                );
            }
            // Put a configured server in maintenance (its window opens once
            // its last request finished), then back.
            2 => {
                let i = (step / 8 + 1) % 4;
                assert_eq!(
                    admin(&sock, &format!("set server be/{} state maint", names[i])),
                    "\n"
                );
                pending.push(i);
            }
            6 => {
                let i = (step / 8 + 1) % 4;
                let from_now = Instant::now();
                pending.retain(|&p| p != i);
                for w in windows
                    .iter_mut()
                    .filter(|w| w.server == i && w.to.is_none())
                {
                    w.to = Some(from_now);
                }
                assert_eq!(
                    admin(&sock, &format!("set server be/{} state ready", names[i])),
                    "\n"
                );
            }
            // Add a dynamic server (ready), or delete it.
            3 | 7 => {
                let d = (step / 8) % 2;
                let i = 4 + d;
                if dynamic_present[d] {
                    admin(&sock, &format!("set server be/{} state maint", names[i]));
                    let a = admin(&sock, &format!("del server be/{}", names[i]));
                    if a == "Server deleted.\n\n" {
                        dynamic_present[d] = false;
                        pending.retain(|&p| p != i);
                        for w in windows
                            .iter_mut()
                            .filter(|w| w.server == i && w.to.is_none())
                        {
                            w.to = Some(Instant::now());
                        }
                        // Deleted: nothing may arrive until it is added again.
                        windows.push(Window {
                            server: i,
                            from: Instant::now(),
                            to: None,
                        });
                    } else {
                        assert_eq!(
                            a,
                            "Server still has connections attached to it, cannot remove it.\n\n"
                        );
                        pending.push(i);
                    }
                } else {
                    let now = Instant::now();
                    for w in windows
                        .iter_mut()
                        .filter(|w| w.server == i && w.to.is_none())
                    {
                        w.to = Some(now);
                    }
                    let a = admin(
                        &sock,
                        &format!(
                            "add server be/{} 127.0.0.1:{} weight {}",
                            names[i],
                            origins[i].port,
                            10 + step % 50
                        ),
                    );
                    assert_eq!(a, "New server registered.\n\n");
                    assert_eq!(
                        admin(&sock, &format!("set server be/{} state ready", names[i])),
                        "\n"
                    );
                    dynamic_present[d] = true;
                }
            }
            _ => {}
        }
        // Open the windows of servers in maintenance once idle.
        pending.retain(|&i| {
            if scur(&sock, names[i]) == Some(0) {
                windows.push(Window {
                    server: i,
                    from: Instant::now(),
                    to: None,
                });
                false
            } else {
                true
            }
        });
    }
    let out = wrk.wait_with_output().expect("wrk output");
    stop.store(true, Ordering::Relaxed);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let end = Instant::now();
    // wrk: every request answered 200, no socket error.
    assert!(!report.contains("Non-2xx"), "{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    let done: u64 = report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(done > 100, "wrk did too little: {report}");
    // Nothing reached a server in maintenance (once idle) or deleted.
    let mut total = 0;
    for (i, o) in origins.iter().enumerate() {
        let arrivals = o.arrivals.lock().map(|v| v.clone()).unwrap_or_default();
        total += arrivals.len() as u64;
        for w in windows.iter().filter(|w| w.server == i) {
            let to = w.to.unwrap_or(end);
            let inside = arrivals.iter().filter(|t| **t > w.from && **t < to).count();
            assert_eq!(
                inside,
                0,
                "{} received {inside} request(s) while in maintenance or deleted ({:?} long)",
                names[i],
                to - w.from
            );
        }
    }
    // Every answered request reached a server once (wrk may have a few in
    // flight when it stops).
    assert!(total >= done, "servers saw {total}, wrk completed {done}");
    assert!(ops > 300, "only {ops} operations in 10 s");
    assert!(
        windows.len() > 20,
        "too few maintenance/deletion windows: {}",
        windows.len()
    );
    eprintln!(
        "under load: {done} requests, {ops} CLI operations, {} windows\n{report}",
        windows.len()
    );
}

/// The columns of `show servers state` that say what a server's checks
/// did: name, op state, admin state, weights, check health, check state.
fn check_columns(answer: &str) -> Vec<String> {
    answer
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() == 25 && f[0].parse::<u32>().is_ok()).then(|| {
                [3, 5, 6, 7, 8, 12, 13]
                    .iter()
                    .map(|&i| f[i])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
        .collect()
}

/// `add server` takes HAProxy 3.0's check options (`check`, `inter`,
/// `rise`, `fall`, `port`, `weight`, `maxconn`) and `track`: a dynamic
/// server starts in maintenance with checks disabled; once enabled, its
/// checks use its own `port` (passing on a live port while the server's
/// own port is dead), a tracker follows its configured server, and
/// `track` is refused for missing or dynamic servers and with `check`,
/// with HAProxy's messages. Compared with HAProxy 3.0.
#[test]
fn dynamic_servers_take_check_options_and_track_as_in_haproxy() {
    // Connect checks pass on a listener that never accepts: the kernel
    // completes the handshake.
    let live = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let live_port = live.local_addr().expect("addr").port();
    let dead = free_port();
    let ports = dead_ports();
    let extra = format!(
        "backend bc\n    balance roundrobin\n    server c1 127.0.0.1:{dead} check inter 100ms rise 1 fall 1\n"
    );
    let mut runs = vec![(
        "luahost".to_string(),
        start_with(&artifacts().luahost(), "dyn_checks_luahost", &ports, &extra),
    )];
    for h in haproxy_peers()
        .into_iter()
        .filter(|h| !h.label.ends_with("2.6"))
    {
        let tag = format!("dyn_checks_{}", h.label.replace(' ', "_"));
        runs.push((
            h.label.clone(),
            start_with(&h.program, &tag, &ports, &extra),
        ));
    }
    let adds = [
        format!("add server bc/d1 127.0.0.1:{dead} check inter 100ms rise 1 fall 1 port {live_port} weight 7 maxconn 5\n"),
        format!("add server bc/d2 127.0.0.1:{dead} check inter 100ms rise 3 fall 2\n"),
        format!("add server bc/d3 127.0.0.1:{live_port} track c1\n"),
        format!("add server bc/d4 127.0.0.1:{live_port} track d1\n"),
        format!("add server bc/d5 127.0.0.1:{live_port} track nope\n"),
        format!("add server bc/d6 127.0.0.1:{live_port} track zz/c1\n"),
        format!("add server bc/d7 127.0.0.1:{live_port} track c1 check\n"),
        format!("add server bc/d8 127.0.0.1:{live_port} enabled\n"),
        "enable server bc/d1\n".to_string(),
        "enable server bc/d2\n".to_string(),
        "enable server bc/d3\n".to_string(),
        "enable health bc/d1\n".to_string(),
        "enable health bc/d2\n".to_string(),
        "enable health bc/d3\n".to_string(),
        "set server bc/c1 state maint\n".to_string(),
        "del server bc/c1\n".to_string(),
        "set server bc/c1 state ready\n".to_string(),
    ];
    let mut answers: Vec<(String, Vec<String>)> = Vec::new();
    for (label, (_, setup)) in &runs {
        let mut got: Vec<String> = adds.iter().map(|a| ask(&setup.sock("admin"), a)).collect();
        answers.push((label.clone(), got.clone()));
        // Checks every 100 ms: d2 (dead port) goes DOWN, d1 (live check
        // port) stays UP, d3 follows c1 (dead port) DOWN.
        std::thread::sleep(Duration::from_millis(1200));
        got = check_columns(&ask(&setup.sock("admin"), "show servers state bc\n"));
        answers.push((format!("{label} state"), got));
    }
    let expected_state = [
        "c1 0 0 1 1 0 6",
        "d1 2 0 7 7 1 6",
        "d2 0 0 1 1 0 6",
        "d3 0 0 1 1 0 0",
    ];
    for (label, got) in &answers {
        if label.ends_with(" state") {
            assert_eq!(got, &expected_state, "{label}");
        }
    }
    let ours = &answers[0].1;
    assert_eq!(
        ours[3],
        "unable to use bc/d1 for tracking as it is a dynamic server.\n\n"
    );
    for (label, got) in answers.iter().skip(2).step_by(2) {
        assert_eq!(ours, got, "add/enable answers: luahost vs {label}");
    }
    drop(live);
}

/// Every column of `show servers state` (but the seconds since the last
/// change) against HAProxy 3.0, for servers with `check`, `check port N`,
/// `addr`, `disabled`, a host name, drained, tracked, forced down, checked
/// and down, and a dynamic server with a check port and address: the last
/// check's status and result codes, the check health, the check port and
/// address (which HAProxy also gives the agent), and the fqdn.
#[test]
fn show_servers_state_columns_match_haproxy3() {
    let live = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let p = live.local_addr().expect("addr").port();
    let dead = free_port();
    let other = free_port();
    let extra = format!(
        "backend bs\n    \
         server s1 127.0.0.1:{p} check inter 100ms\n    \
         server s2 127.0.0.1:{p} check port {other} inter 100ms\n    \
         server s3 127.0.0.1:{p} check addr 127.0.0.2 port {p} inter 100ms\n    \
         server s4 127.0.0.1:{p} disabled\n    \
         server s5 127.0.0.1:{p}\n    \
         server s6 127.0.0.1:{p} track s1\n    \
         server s7 localhost:{p}\n    \
         server s8 127.0.0.1:{dead} check inter 100ms\n    \
         server s9 127.0.0.1:{p} check disabled\n"
    );
    let ports = dead_ports();
    let mut runs = vec![(
        "luahost".to_string(),
        start_with(&artifacts().luahost(), "state_cols_luahost", &ports, &extra),
    )];
    if let Some(h) = require_haproxy_30("show servers state is compared with HAProxy 3.0") {
        let tag = format!("state_cols_{}", h.label.replace(' ', "_"));
        runs.push((
            h.label.clone(),
            start_with(&h.program, &tag, &ports, &extra),
        ));
    }
    let mut got = Vec::new();
    for (label, (_, setup)) in &runs {
        // The checks settle (every 100 ms; s2, s3 and s8 fail).
        std::thread::sleep(Duration::from_millis(800));
        ask(
            &setup.sock("admin"),
            &format!(
                "set server bs/s5 state drain; set server bs/s1 state drain; \
                 add server bs/d1 127.0.0.1:{p} check port {other} addr 127.0.0.1\n"
            ),
        );
        ask(&setup.sock("admin"), "set server bs/s1 health down\n");
        // A check running at the moment of the dump shows as in progress
        // (srv_check_state bit 1) with its result reset: a passing moment,
        // not a state. Dump again (bounded) until no check is running.
        let mut lines: Vec<String> = Vec::new();
        for _ in 0..40 {
            lines = ask(&setup.sock("admin"), "show servers state bs\n")
                .lines()
                .filter(|l| l.split(' ').count() == 25 && !l.starts_with('#'))
                .map(|l| {
                    let mut f: Vec<&str> = l.split(' ').collect();
                    f.remove(9);
                    f.join(" ")
                })
                .collect();
            let in_progress = |l: &String| {
                l.split(' ')
                    .nth(12)
                    .and_then(|v| v.parse::<u32>().ok())
                    .is_some_and(|st| st & 1 == 1)
            };
            if !lines.iter().any(in_progress) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        got.push((label.clone(), lines));
    }
    let ours = &got[0].1;
    assert_eq!(ours.len(), 10, "{ours:?}");
    // s1: the last check passed (L4OK 6, PASSED 3), then forced down
    // (health 0); s2: its check port refuses (L4CON 8, FAILED 2).
    assert!(ours[0].contains(" 6 3 0 6 "), "{}", ours[0]);
    assert!(
        ours[1].ends_with(&format!(" 0 {other} - - {other}")),
        "{}",
        ours[1]
    );
    assert!(ours[6].contains(" localhost "), "{}", ours[6]);
    for (label, theirs) in got.iter().skip(1) {
        assert_eq!(ours, theirs, "show servers state: luahost vs {label}");
    }
    drop(live);
}
