//! Local servers that Lua sockets talk to in the differential tests (the
//! same servers for HAProxy and luahost, started once per test process).
//!
//! The line service (TCP and a Unix socket) answers one line per command:
//! - `ECHO x` -> `got: x\r\n`
//! - `BYTES n` -> n bytes `abcd...` (no end of line)
//! - `CHECK /path` -> `deny` for paths under /admin, else `allow`
//! - `OPEN` -> `open: N`, N the other connections still open once they
//!   have settled (it waits up to 3 s for them to reach 0): how a case shows
//!   that no socket outlived the Lua context that opened it
//! - `PARTIAL` -> `partial` without an end of line, then a close
//! - `BYE` -> `bye`, then a close
//!
//! The TLS line service (a self-signed certificate for `tls.test`, made at
//! start) answers the same commands over TLS, and `SNI` with `sni: NAME`
//! (or `sni: none`), the server name the client sent.
//!
//! The silent service accepts and reads but never answers (it holds each
//! connection 10 s at most).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub struct LocalServers {
    pub line: u16,
    pub silent: u16,
    pub unix: PathBuf,
    /// The line service's name in Linux's abstract namespace (for
    /// `abns@NAME`), unpadded.
    pub abns: String,
    pub tls: u16,
    /// The TLS service's certificate (PEM), for `ca_file`.
    pub tls_cert: PathBuf,
}

/// The servers, started on first use.
pub fn local_servers() -> &'static LocalServers {
    static SERVERS: OnceLock<LocalServers> = OnceLock::new();
    SERVERS.get_or_init(start)
}

fn start() -> LocalServers {
    // Connections to the line service (TCP and Unix) open now.
    let open = Arc::new(AtomicUsize::new(0));
    let line = TcpListener::bind("127.0.0.1:0").expect("bind the line service");
    let line_port = line.local_addr().expect("line address").port();
    let o = open.clone();
    std::thread::spawn(move || {
        for conn in line.incoming().flatten() {
            let o = o.clone();
            std::thread::spawn(move || serve_lines(conn, o));
        }
    });
    let dir = luahost_suite::scratch_dir("lua-socket-servers");
    let unix = dir.join("line.sock");
    let _ = std::fs::remove_file(&unix);
    let ul = UnixListener::bind(&unix).expect("bind the unix line service");
    let o = open.clone();
    std::thread::spawn(move || {
        for conn in ul.incoming().flatten() {
            let o = o.clone();
            std::thread::spawn(move || serve_lines(conn, o));
        }
    });
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind the silent service");
    let silent_port = silent.local_addr().expect("silent address").port();
    std::thread::spawn(move || {
        for mut conn in silent.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut sink = [0u8; 1024];
                let end = Instant::now() + Duration::from_secs(10);
                while Instant::now() < end {
                    match conn.read(&mut sink) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    let abns = format!("luahost-line-{}", std::process::id());
    let al = abstract_listener(&abns);
    let o = open.clone();
    std::thread::spawn(move || {
        for conn in al.incoming().flatten() {
            let o = o.clone();
            std::thread::spawn(move || serve_lines(conn, o));
        }
    });
    let (tls, tls_cert) = start_tls(&dir, open.clone());
    LocalServers {
        line: line_port,
        silent: silent_port,
        unix,
        abns,
        tls,
        tls_cert,
    }
}

/// A listener in the abstract namespace for `name`. HAProxy (and luahost,
/// as HAProxy) pads an `abns@` name with zero bytes to the whole
/// `sun_path` (108 bytes, the first one the abstract marker), so the
/// listener binds the padded name.
fn abstract_listener(name: &str) -> UnixListener {
    use std::os::linux::net::SocketAddrExt;
    let mut padded = name.as_bytes().to_vec();
    padded.resize(107, 0);
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&padded)
        .expect("an abstract socket name");
    UnixListener::bind_addr(&addr).expect("bind the abstract line service")
}

/// A stream the line service can serve.
trait Stream: Read + Write + Sized {
    fn try_clone_stream(&self) -> std::io::Result<Self>;
    fn set_timeout(&self, d: Duration);
}

impl Stream for TcpStream {
    fn try_clone_stream(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn set_timeout(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
    }
}

impl Stream for UnixStream {
    fn try_clone_stream(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn set_timeout(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
    }
}

/// Counts a connection while it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(open: &Arc<AtomicUsize>) -> Counted {
        open.fetch_add(1, Ordering::SeqCst);
        Counted(open.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The TLS line service: (port, certificate file).
fn start_tls(dir: &std::path::Path, open: Arc<AtomicUsize>) -> (u16, PathBuf) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let certified =
        rcgen::generate_simple_self_signed(vec!["tls.test".to_string()]).expect("rcgen");
    let cert_file = dir.join("tls.pem");
    std::fs::write(&cert_file, certified.cert.pem()).expect("write the certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("the server certificate");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the TLS service");
    let port = listener.local_addr().expect("TLS address").port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, open) = (config.clone(), open.clone());
            std::thread::spawn(move || {
                let _counted = Counted::new(&open);
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut pending = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match tls.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&chunk[..n]);
                    while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=nl).collect();
                        let cmd = String::from_utf8_lossy(&line);
                        let cmd = cmd.trim_end_matches(['\r', '\n']);
                        let answer = match cmd.split_once(' ').unwrap_or((cmd, "")) {
                            ("ECHO", arg) => format!("got: {arg}\r\n"),
                            ("SNI", _) => {
                                format!("sni: {}\n", tls.conn.server_name().unwrap_or("none"))
                            }
                            _ => "what?\n".to_string(),
                        };
                        if tls.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, cert_file)
}

fn serve_lines<S: Stream>(conn: S, open: Arc<AtomicUsize>) {
    let _counted = Counted::new(&open);
    // Bounds a connection a proxy keeps open but idle.
    conn.set_timeout(Duration::from_secs(30));
    let Ok(mut out) = conn.try_clone_stream() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let cmd = line.trim_end_matches(['\r', '\n']);
        let (word, arg) = cmd.split_once(' ').unwrap_or((cmd, ""));
        let answer: Vec<u8> = match word {
            "ECHO" => format!("got: {arg}\r\n").into_bytes(),
            "BYTES" => {
                let n: usize = arg.parse().unwrap_or(0).min(1 << 20);
                (0..n).map(|i| b'a' + (i % 26) as u8).collect()
            }
            "CHECK" => {
                if arg.starts_with("/admin") {
                    b"deny\n".to_vec()
                } else {
                    b"allow\n".to_vec()
                }
            }
            "OPEN" => {
                let end = Instant::now() + Duration::from_secs(3);
                // This connection is one of them.
                while open.load(Ordering::SeqCst) > 1 && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(10));
                }
                format!("open: {}\n", open.load(Ordering::SeqCst) - 1).into_bytes()
            }
            // SINK n: n bytes follow (read after a pause, so that a large
            // write fills the sender's socket buffer first); they must be
            // 8-byte blocks naming the MiB they are in ("0000000\n" for the
            // first MiB, "0000001\n" for the second, ...).
            "SINK" => {
                let n: usize = arg.parse().unwrap_or(0).min(16 << 20);
                std::thread::sleep(Duration::from_millis(200));
                let mut body = vec![0u8; n];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let intact = body
                    .chunks(8)
                    .enumerate()
                    .all(|(i, block)| block == format!("{:07}\n", (i * 8) >> 20).as_bytes());
                format!("sank: {n} {}\n", if intact { "intact" } else { "garbled" }).into_bytes()
            }
            "PARTIAL" => {
                let _ = out.write_all(b"partial");
                return;
            }
            "BYE" => {
                let _ = out.write_all(b"bye\n");
                return;
            }
            _ => b"what?\n".to_vec(),
        };
        if out.write_all(&answer).is_err() {
            return;
        }
    }
}
