//! Connecting to a socket in Linux's abstract namespace (`abns@name`),
//! which tokio's `UnixStream::connect` (paths only) cannot name.

use std::os::fd::{FromRawFd, OwnedFd};

/// The length of `sun_path`: HAProxy pads abstract names with zero bytes to
/// all of it, so its own `abns@` listeners are only reached that way.
const SUN_PATH_LEN: usize = 108;

/// Connects a non-blocking Unix stream socket to the abstract name `name`.
/// A Unix connect completes at once or fails (EAGAIN: the listener's
/// backlog is full), so this never waits.
pub fn connect_abstract(name: &[u8]) -> std::io::Result<tokio::net::UnixStream> {
    if name.len() + 1 > SUN_PATH_LEN {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: socket(2) with constant arguments; the result is checked
    // before it is used, and owned by `fd` from then on (closed on drop).
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket just created and owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain data; all zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // sun_path[0] stays 0 (abstract), the name follows, the rest is zeros.
    for (dst, src) in addr.sun_path[1..].iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + SUN_PATH_LEN;
    use std::os::fd::AsRawFd;
    // SAFETY: `addr` is a valid sockaddr_un for the duration of the call,
    // and `len` does not exceed its size.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let std_stream = std::os::unix::net::UnixStream::from(fd);
    tokio::net::UnixStream::from_std(std_stream)
}
