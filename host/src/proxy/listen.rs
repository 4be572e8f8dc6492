//! Opening listening sockets with the backlog HAProxy would give them.
//!
//! std's `TcpListener::bind` always listens with a backlog of 128. The
//! configured backlog (plan.rs `listen_backlog`: the bind's or frontend's
//! `backlog`, else `maxconn`) is then applied by calling listen() again on
//! the same socket, which Linux allows on a listening socket to change its
//! queue length. The kernel caps it at net.core.somaxconn.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

/// Binds `addr` (std sets SO_REUSEADDR, so a restart does not wait for
/// TIME_WAIT sockets) and listens with `backlog`.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor belongs to `listener`, which is alive for the
    // whole call; listen() only changes the socket's queue length.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), backlog) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}
