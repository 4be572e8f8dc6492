//! Big uploads for the tests and the upload benchmark: a client that
//! streams a request body of any size without holding it, a server that
//! discards request bodies (the origin behind a proxy), and the peak
//! resident memory of a process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How the upload's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    ContentLength,
    Chunked,
}

/// The answer to an upload.
#[derive(Debug)]
pub struct Uploaded {
    pub status: u16,
    pub body: String,
    /// From the first byte sent to the end of the response.
    pub elapsed: Duration,
    /// Body bytes the client managed to send.
    pub sent: u64,
}

/// One write of the body (and the size of a chunk when chunked).
const PIECE: usize = 64 * 1024;

/// POSTs `size` zero bytes to `path` on 127.0.0.1:`port` and reads the
/// response. The body is written by a thread of its own while this one
/// waits for the response, so a server that answers early (an error) is
/// seen as it does. `idle` bounds each wait: a server that stops reading
/// or answering for that long fails the upload (Err, with how far it got).
pub fn upload(
    port: u16,
    path: &str,
    size: u64,
    framing: Framing,
    idle: Duration,
) -> Result<Uploaded, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(idle))
        .and_then(|_| stream.set_write_timeout(Some(idle)))
        .map_err(|e| format!("socket: {e}"))?;
    let mut writer = stream.try_clone().map_err(|e| format!("clone: {e}"))?;
    let framing_header = match framing {
        Framing::ContentLength => format!("content-length: {size}"),
        Framing::Chunked => "transfer-encoding: chunked".to_string(),
    };
    let head = format!("POST {path} HTTP/1.1\r\nhost: upload\r\n{framing_header}\r\n\r\n");
    let start = Instant::now();
    let sender = std::thread::spawn(move || -> (u64, Option<String>) {
        let zeros = vec![0u8; PIECE];
        let mut sent = 0u64;
        if let Err(e) = writer.write_all(head.as_bytes()) {
            return (0, Some(e.to_string()));
        }
        while sent < size {
            let n = (size - sent).min(PIECE as u64) as usize;
            let r = match framing {
                Framing::ContentLength => writer.write_all(&zeros[..n]),
                Framing::Chunked => writer
                    .write_all(format!("{n:x}\r\n").as_bytes())
                    .and_then(|_| writer.write_all(&zeros[..n]))
                    .and_then(|_| writer.write_all(b"\r\n")),
            };
            if let Err(e) = r {
                return (sent, Some(e.to_string()));
            }
            sent += n as u64;
        }
        if framing == Framing::Chunked {
            if let Err(e) = writer.write_all(b"0\r\n\r\n") {
                return (sent, Some(e.to_string()));
            }
        }
        (sent, None)
    });
    let mut reader = crate::HttpReader {
        stream,
        buf: Vec::new(),
    };
    let response = reader.read_response(false);
    let elapsed = start.elapsed();
    // The writer ends by itself: done, or failing once the socket closes.
    let _ = reader.stream.shutdown(std::net::Shutdown::Both);
    let (sent, write_error) = sender.join().unwrap_or((0, Some("writer panicked".into())));
    match response {
        Some(r) => Ok(Uploaded {
            status: r.status,
            body: r.text(),
            elapsed,
            sent,
        }),
        None => Err(format!(
            "no response after {elapsed:?}, {sent} of {size} bytes sent{}",
            write_error
                .map(|e| format!(" (write: {e})"))
                .unwrap_or_default()
        )),
    }
}

/// A server that reads requests (keep-alive, content-length or chunked
/// bodies), discards their bodies and answers 200 with the number of body
/// bytes it read. Runs on threads of the calling process until the process
/// ends.
pub struct DiscardOrigin {
    pub port: u16,
}

impl DiscardOrigin {
    pub fn start() -> DiscardOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let port = listener.local_addr().expect("origin address").port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = serve_discarding(conn);
                });
            }
        });
        DiscardOrigin { port }
    }
}

fn serve_discarding(conn: TcpStream) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::with_capacity(256 * 1024, conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut length = 0u64;
        let mut chunked = false;
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                }
            }
        }
        let read = if chunked {
            let mut total = 0;
            loop {
                line.clear();
                r.read_line(&mut line)?;
                let size = line.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size, 16).unwrap_or(0);
                if size == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        line.clear();
                        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break total;
                }
                total += std::io::copy(&mut (&mut r).take(size), &mut std::io::sink())?;
                line.clear();
                r.read_line(&mut line)?;
            }
        } else {
            std::io::copy(&mut (&mut r).take(length), &mut std::io::sink())?
        };
        let body = read.to_string();
        out.write_all(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )?;
    }
}

/// The peak resident set size of process `pid` so far (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
