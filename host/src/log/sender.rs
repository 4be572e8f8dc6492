//! Sends finished log lines without ever blocking the caller: datagram
//! sockets are non-blocking, and stdout/stderr are written only when they
//! can take a line at once. A line that cannot go out now is dropped and
//! counted (`DroppedLogs` in `core.get_info()`, as HAProxy's `show info`).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped because their destination was full.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Where a logger's lines go.
pub enum Sink {
    Stdout,
    Stderr,
    Unix { socket: UnixDatagram, path: PathBuf },
    Udp { socket: UdpSocket, addr: SocketAddr },
}

/// One alert per sink for errors other than "full" (a missing socket,
/// refused datagrams), as HAProxy alerts once per logger.
pub struct SinkState {
    alerted: AtomicBool,
}

impl Sink {
    /// Opens the socket for a destination (no connection: datagrams are
    /// addressed one by one, so a syslog daemon restarting is no problem).
    pub fn open(dest: &crate::config::LogDest) -> io::Result<Sink> {
        use crate::config::LogDest;
        Ok(match dest {
            LogDest::Stdout => Sink::Stdout,
            LogDest::Stderr => Sink::Stderr,
            LogDest::Unix(path) => {
                let socket = UnixDatagram::unbound()?;
                socket.set_nonblocking(true)?;
                Sink::Unix {
                    socket,
                    path: path.clone(),
                }
            }
            LogDest::Udp(addr) => {
                let local: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = UdpSocket::bind(local)?;
                socket.set_nonblocking(true)?;
                Sink::Udp {
                    socket,
                    addr: *addr,
                }
            }
        })
    }

    /// Sends one line. Never blocks: a destination that cannot take it now
    /// drops it and counts it.
    pub fn send(&self, line: &[u8], state: &SinkState, name: &str) {
        let result = match self {
            Sink::Stdout => write_fd(libc::STDOUT_FILENO, line),
            Sink::Stderr => write_fd(libc::STDERR_FILENO, line),
            Sink::Unix { socket, path } => socket.send_to(line, path).map(drop),
            Sink::Udp { socket, addr } => socket.send_to(line, addr).map(drop),
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if !state.alerted.swap(true, Ordering::Relaxed) {
                    super::alert(&format!("sending to logger '{name}' failed: {e}"));
                }
            }
        }
    }
}

impl SinkState {
    pub fn new() -> SinkState {
        SinkState {
            alerted: AtomicBool::new(false),
        }
    }
}

impl Default for SinkState {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes `line` to a standard stream only if it can take it now: a
/// stream that is not writable (a full pipe, a stalled terminal) would
/// block the worker. Lines are at most `len` (<= 65535) bytes; a pipe
/// that polls writable has room for at least a page, which covers lines
/// up to the usual 1024 bytes whole.
fn write_fd(fd: RawFd, line: &[u8]) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: pfd is a valid pollfd for one descriptor; a zero timeout
    // returns at once.
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    if ready == 0 {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    if ready < 0 {
        return Err(io::Error::last_os_error());
    }
    // One write per line, under the stream's lock, so lines of concurrent
    // workers do not interleave with each other or with other output.
    let _guard = StreamLock::take(fd);
    // SAFETY: line is a valid buffer of line.len() bytes; fd is one of the
    // process's standard descriptors, open for its whole life.
    let n = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The std lock of stdout or stderr, held across a raw write.
enum StreamLock {
    Out(#[allow(dead_code)] io::StdoutLock<'static>),
    Err(#[allow(dead_code)] io::StderrLock<'static>),
}

impl StreamLock {
    fn take(fd: RawFd) -> StreamLock {
        if fd == io::stdout().as_raw_fd() {
            StreamLock::Out(io::stdout().lock())
        } else {
            StreamLock::Err(io::stderr().lock())
        }
    }
}
