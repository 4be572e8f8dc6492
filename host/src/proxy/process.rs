//! The process side of start-up: detaching into the background
//! (`daemon`/`-D`), entering the `chroot`, dropping privileges
//! (`user`/`group`), and pinning worker threads (`cpu-map`).
//!
//! Order, as HAProxy's: the listeners are bound, the Lua files loaded and
//! the init functions run first (they may need the privileges and the full
//! file system), then the process enters its chroot and drops its
//! privileges, then the tasks start and it serves. In
//! daemon mode the parent waits for the child to be serving (or to fail)
//! and exits 0 or 1 accordingly, so a bind error still reaches the
//! terminal and the exit status.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The child's side of the start-up report to the waiting parent.
pub struct Detached {
    report: std::fs::File,
}

impl Detached {
    /// Tells the parent that start-up succeeded, then points stdin, stdout
    /// and stderr at /dev/null (the terminal is the parent's).
    pub fn ready(mut self) {
        let _ = self.report.write_all(b"1");
        to_dev_null();
    }
}

/// Points stdin, stdout and stderr at /dev/null (a daemon lets go of the
/// terminal once it serves).
pub fn to_dev_null() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; `null` stays
            // open for the duration of the calls.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// Forks into the background. Returns in the child (with the handle to
/// report start-up through); the parent waits for that report and exits: 0
/// once the child is serving, 1 if it failed or died first. Must be called
/// while the process has a single thread.
pub fn daemonize() -> Result<Detached, String> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: both descriptors were just created and are owned only here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the caller guarantees a single thread, so the child starts
    // with a consistent copy of the process (no lock held by another thread).
    match unsafe { libc::fork() } {
        -1 => Err(format!("cannot fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(read_end);
            // SAFETY: setsid has no memory-safety preconditions.
            unsafe { libc::setsid() };
            Ok(Detached {
                report: std::fs::File::from(write_end),
            })
        }
        _ => {
            drop(write_end);
            let mut byte = [0u8; 1];
            let ok =
                matches!(std::fs::File::from(read_end).read(&mut byte), Ok(1) if byte[0] == b'1');
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
}

/// Enters `dir` as the root directory.
pub fn chroot(dir: &Path) -> Result<(), String> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("invalid chroot directory '{}'", dir.display()))?;
    // SAFETY: chroot and chdir read NUL-terminated paths.
    if unsafe { libc::chroot(c.as_ptr()) } != 0 || unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        return Err(format!(
            "cannot chroot({}): {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Switches to `gid` and `uid` (group first: afterwards the process may no
/// longer change it). Supplementary groups are reduced to `gid` (or none).
/// glibc applies these to every thread of the process.
pub fn drop_privileges(uid: Option<u32>, gid: Option<u32>) -> Result<(), String> {
    let err = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    let groups: Vec<libc::gid_t> = gid.into_iter().collect();
    // SAFETY: the array holds `groups.len()` valid entries.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(err("cannot set the supplementary groups"));
    }
    if let Some(g) = gid {
        // SAFETY: no memory-safety preconditions.
        if unsafe { libc::setgid(g) } != 0 {
            return Err(err(&format!("cannot set the group id to {g}")));
        }
    }
    if let Some(u) = uid {
        // SAFETY: no memory-safety preconditions.
        if unsafe { libc::setuid(u) } != 0 {
            return Err(err(&format!("cannot set the user id to {u}")));
        }
    }
    Ok(())
}

/// Restricts the calling thread to `cpus`.
pub fn pin_current_thread(cpus: &[u32]) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET bounds-checks against the set's size (1024 CPUs),
        // and the configuration limits CPUs to 0..=63.
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 means the
    // calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "cannot bind to CPUs {cpus:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
