//! Master-worker mode (`-W`, `master-worker`): a master process that
//! supervises one worker process and reloads it on SIGUSR2.
//!
//! The master parses the configuration (a bad one is refused as in the
//! single-process mode), binds every listener itself, and starts the worker
//! by re-executing this binary with [`WORKER_ENV`] set: the worker adopts the
//! listening sockets named there instead of binding them (re-exec rather than
//! fork: the worker starts threads, and the master's state is of no use to
//! it). Because the master keeps its copy of every listening socket, a
//! reload hands the same kernel sockets, and the connections waiting in
//! their accept queues, to the next worker: nothing is refused or reset.
//!
//! Signals: SIGTERM/SIGINT (hard stop) and SIGUSR1 (soft stop) go to the
//! workers, and the master exits with the current worker's status once the
//! workers are gone. SIGUSR2 re-reads the configuration: if it is bad the
//! errors are logged and the current worker keeps serving; else the master
//! binds the new addresses, starts a new worker, and once that one reports
//! it serves (through a pipe), soft-stops the former one. A worker that dies
//! when no stop was asked makes the master stop the others and exit with
//! the worker's status (HAProxy's default, without `no-exit-on-failure`).
//!
//! The master is single-threaded: the signals are blocked and taken with
//! sigtimedwait(), so that no handler runs while it forks.

use super::pidfile::PidFile;
use super::{listen, plan, process};
use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, ExitCode};
use std::time::Duration;

/// Set in a worker's environment: `READY_FD;ADDR=FD,ADDR=FD...;DETACHED` —
/// the pipe to report "serving" on, the listening sockets it inherits, and
/// `1` when the master is a daemon (the worker then lets go of the
/// terminal once it serves, as a single-process daemon does).
pub const WORKER_ENV: &str = "LUAHOST_MASTER_WORKER";

/// What a worker takes from its master.
pub struct Inherited {
    ready: Option<OwnedFd>,
    listeners: HashMap<SocketAddr, OwnedFd>,
    detached: bool,
}

impl Inherited {
    /// Reads [`WORKER_ENV`]; `None` when this process is not a worker. Called
    /// once at start-up, while the process has one thread.
    pub fn from_env() -> Option<Inherited> {
        let spec = std::env::var(WORKER_ENV).ok()?;
        // The worker's own children (Lua io.popen, ...) are no workers.
        std::env::remove_var(WORKER_ENV);
        // The worker ends with its master (a killed master leaves no orphan
        // serving on sockets nobody supervises).
        // SAFETY: prctl with integer arguments; it changes only this flag.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };
        // The master blocks the signals it takes with sigtimedwait(), and
        // exec keeps the mask: the worker's own handlers need them unblocked.
        // SAFETY: an empty set made here; one thread at this point.
        unsafe {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        }
        let mut parts = spec.split(';');
        let ready = parts.next().unwrap_or_default();
        let socks = parts.next().unwrap_or_default();
        let detached = parts.next() == Some("1");
        let adopt = |fd: &str| -> Option<OwnedFd> {
            // Never the standard descriptors: the master passes new ones.
            let fd: RawFd = fd.parse().ok().filter(|fd| *fd > 2)?;
            // SAFETY: fcntl(F_GETFD) only checks that the number is an open
            // descriptor; the master passed it to this process alone, so
            // owning it here does not alias another owner.
            (unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
                .then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let mut listeners = HashMap::new();
        for item in socks.split(',').filter(|s| !s.is_empty()) {
            if let Some((addr, fd)) = item.rsplit_once('=') {
                if let (Ok(addr), Some(fd)) = (addr.parse::<SocketAddr>(), adopt(fd)) {
                    set_cloexec(fd.as_raw_fd(), true);
                    listeners.insert(addr, fd);
                }
            }
        }
        let ready = adopt(ready);
        if let Some(r) = &ready {
            set_cloexec(r.as_raw_fd(), true);
        }
        Some(Inherited {
            ready,
            listeners,
            detached,
        })
    }

    /// The inherited listening socket bound to `addr`, if the master passed
    /// one (each is taken once).
    pub fn take_listener(&mut self, addr: SocketAddr) -> Option<std::io::Result<TcpListener>> {
        let fd = self.listeners.remove(&addr)?;
        let l = TcpListener::from(fd);
        Some(l.set_nonblocking(true).map(|()| l))
    }

    /// Tells the master that this worker serves. The sockets it did not
    /// adopt (addresses its configuration no longer has) are closed.
    pub fn ready(&mut self) {
        self.listeners.clear();
        if let Some(fd) = self.ready.take() {
            let mut f = std::fs::File::from(fd);
            let _ = std::io::Write::write_all(&mut f, b"1");
        }
        if self.detached {
            process::to_dev_null();
        }
    }
}

fn set_cloexec(fd: RawFd, on: bool) {
    // SAFETY: F_GETFD/F_SETFD on a descriptor the caller owns; only the
    // close-on-exec flag changes.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            let flags = if on {
                flags | libc::FD_CLOEXEC
            } else {
                flags & !libc::FD_CLOEXEC
            };
            libc::fcntl(fd, libc::F_SETFD, flags);
        }
    }
}

/// What the master needs from a configuration.
struct Loaded {
    binds: Vec<plan::BindPlan>,
    pidfile: Option<std::path::PathBuf>,
    daemon: bool,
}

/// Parses the configuration as the worker will (without loading Lua),
/// returning HAProxy-style error lines when it is bad.
fn load(files: &[std::path::PathBuf]) -> Result<Loaded, Vec<String>> {
    let cfg = crate::config::parse_files(files)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    loaded(&cfg)
}

/// What the master keeps of a parsed configuration.
fn loaded(cfg: &crate::config::Config) -> Result<Loaded, Vec<String>> {
    let plan = plan::build(cfg)?;
    Ok(Loaded {
        binds: plan
            .frontends
            .iter()
            .flat_map(|f| f.binds.clone())
            .collect(),
        pidfile: plan.pidfile.clone(),
        daemon: cfg.global.process.daemon,
    })
}

/// "[NOTICE]   (pid) : msg", as HAProxy's master prints its lines.
fn say(level: &str, msg: &str) {
    eprintln!(
        "{:<10} ({}) : {msg}",
        format!("[{level}]"),
        std::process::id()
    );
}

/// A worker process and, until it reports serving, its report pipe.
struct WorkerProc {
    child: Child,
    ready: Option<std::fs::File>,
}

impl WorkerProc {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill() on our own child's pid (not yet reaped, so the pid
        // cannot have been reused).
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// The exit status once it ended, as HAProxy reports it: the code, or
    /// 128 + the signal number, with a word for it.
    fn ended(&mut self) -> Option<(i32, String)> {
        use std::os::unix::process::ExitStatusExt;
        let st = self.child.try_wait().ok()??;
        Some(match (st.code(), st.signal()) {
            (Some(c), _) => (c, "Exit".to_string()),
            (None, Some(s)) => (128 + s, signal_name(s).to_string()),
            _ => (1, "Exit".to_string()),
        })
    }

    /// Whether the worker reported serving: `Some(true)` yes, `Some(false)`
    /// it closed the pipe without (it failed), `None` not yet.
    fn poll_ready(&mut self) -> Option<bool> {
        let f = self.ready.as_mut()?;
        let mut b = [0u8; 1];
        match f.read(&mut b) {
            Ok(1) if b[0] == b'1' => {
                self.ready = None;
                Some(true)
            }
            Ok(_) => {
                self.ready = None;
                Some(false)
            }
            Err(_) => None,
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "Terminated",
        libc::SIGKILL => "Killed",
        libc::SIGINT => "Interrupt",
        libc::SIGSEGV => "Segmentation fault",
        libc::SIGABRT => "Aborted",
        _ => "Signal",
    }
}

/// The master's listening sockets, one per address, kept across reloads.
#[derive(Default)]
struct Sockets(HashMap<SocketAddr, TcpListener>);

impl Sockets {
    /// Binds the addresses of `binds` not bound yet, and closes the
    /// master's copy of those no longer configured (a former worker keeps
    /// its own copy until it stops).
    fn update(&mut self, binds: &[plan::BindPlan]) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let mut new = HashMap::new();
        for b in binds {
            if self.0.contains_key(&b.addr) || new.contains_key(&b.addr) {
                continue;
            }
            match listen::bind(b.addr, b.backlog) {
                Ok(l) => {
                    new.insert(b.addr, l);
                }
                Err(e) => errors.push(format!(
                    "[ALERT] parsing [{}] : cannot bind {}: {e}",
                    b.location, b.addr
                )),
            }
        }
        if !errors.is_empty() {
            // The sockets in use stay; the ones just bound close.
            return Err(errors);
        }
        self.0
            .retain(|addr, _| binds.iter().any(|b| b.addr == *addr));
        self.0.extend(new);
        Ok(())
    }

    fn spec(&self) -> String {
        self.0
            .iter()
            .map(|(a, l)| format!("{a}={}", l.as_raw_fd()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Starts a worker: this binary, with the same arguments, inheriting the
/// listening sockets and the write end of a report pipe.
fn spawn(sockets: &Sockets, detached: bool) -> Result<WorkerProc, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: both descriptors were just created and are owned only here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The children inherit exactly these: the sockets and the write end.
    for l in sockets.0.values() {
        set_cloexec(l.as_raw_fd(), false);
    }
    set_cloexec(write_end.as_raw_fd(), false);
    let spawned = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(
            WORKER_ENV,
            format!(
                "{};{};{}",
                write_end.as_raw_fd(),
                sockets.spec(),
                u8::from(detached)
            ),
        )
        .spawn();
    for l in sockets.0.values() {
        set_cloexec(l.as_raw_fd(), true);
    }
    drop(write_end);
    let child = spawned.map_err(|e| format!("cannot start a worker: {e}"))?;
    let ready = std::fs::File::from(read_end);
    // SAFETY: O_NONBLOCK on our own pipe end: reads return EAGAIN instead of
    // waiting, so the master keeps taking signals.
    unsafe {
        let fl = libc::fcntl(ready.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(ready.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    say("NOTICE", &format!("New worker ({}) forked", child.id()));
    Ok(WorkerProc {
        child,
        ready: Some(ready),
    })
}

/// The signals the master takes, blocked so that sigtimedwait() gets them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set, then pthread_sigmask on
    // the (only) thread. std's Command unblocks them again in the children.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGCHLD,
            libc::SIGHUP,
        ] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// The next signal, or `None` after `wait`.
fn next_signal(set: &libc::sigset_t, wait: Duration) -> Option<libc::c_int> {
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: sigtimedwait reads the set and the timeout; no info wanted.
    let s = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (s > 0).then_some(s)
}

/// Runs the master on `parsed`, the configuration the process parsed at
/// start (parsed again from `files` at each reload). `daemon` is `-D`; the
/// configuration's `daemon` counts too. Returns the exit status.
pub fn run(
    parsed: crate::config::Config,
    files: &[std::path::PathBuf],
    daemon: bool,
    debug: bool,
    pidfile: Option<std::path::PathBuf>,
) -> ExitCode {
    let cfg = match loaded(&parsed) {
        Ok(c) => c,
        Err(errors) => return super::config_refused(errors),
    };
    drop(parsed);
    let mut detached = None;
    if (daemon || cfg.daemon) && !debug {
        match process::daemonize() {
            Ok(d) => detached = Some(d),
            Err(e) => {
                eprintln!("[ALERT] {e}");
                return ExitCode::from(1);
            }
        }
    }
    // The pid file holds the master's pid, as HAProxy's does.
    let _pidfile = PidFile::write(pidfile.or(cfg.pidfile.clone()));
    let set = block_signals();
    let mut sockets = Sockets::default();
    if let Err(errors) = sockets.update(&cfg.binds) {
        for e in errors {
            eprintln!("{e}");
        }
        return ExitCode::from(1);
    }
    let mut current = match spawn(&sockets, detached.is_some()) {
        Ok(w) => w,
        Err(e) => {
            say("ALERT", &e);
            return ExitCode::from(1);
        }
    };
    // Start-up: wait for the first worker to serve, or fail.
    let mut early = Early::default();
    loop {
        match current.poll_ready() {
            Some(true) => break,
            Some(false) => {
                let code = loop {
                    if let Some((c, _)) = current.ended() {
                        break c;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                };
                return ExitCode::from(u8::try_from(code).unwrap_or(1).max(1));
            }
            None => {}
        }
        match next_signal(&set, Duration::from_millis(50)) {
            Some(sig @ (libc::SIGTERM | libc::SIGINT | libc::SIGUSR1)) => {
                // Stopping while starting: the worker takes it once serving.
                current.signal(sig);
                early.stopping = true;
            }
            // A reload asked while starting happens once the worker serves.
            Some(libc::SIGUSR2) => early.reload = true,
            _ => {}
        }
    }
    say("NOTICE", "Loading success.");
    let was_detached = detached.is_some();
    if let Some(d) = detached {
        d.ready();
    }
    supervise(files, &set, &mut sockets, current, was_detached, early)
}

/// Signals taken while the first worker was starting.
#[derive(Default)]
struct Early {
    stopping: bool,
    reload: bool,
}

/// The master's loop once a worker serves.
fn supervise(
    files: &[std::path::PathBuf],
    set: &libc::sigset_t,
    sockets: &mut Sockets,
    mut current: WorkerProc,
    detached: bool,
    early: Early,
) -> ExitCode {
    let mut pending: Option<WorkerProc> = None;
    let mut former: Vec<WorkerProc> = Vec::new();
    let mut stopping = early.stopping;
    let mut asked = early.reload.then_some(libc::SIGUSR2);
    loop {
        match asked
            .take()
            .or_else(|| next_signal(set, Duration::from_millis(50)))
        {
            Some(sig @ (libc::SIGTERM | libc::SIGINT | libc::SIGUSR1)) => {
                stopping = true;
                for w in std::iter::once(&current).chain(&pending).chain(&former) {
                    w.signal(sig);
                }
            }
            Some(libc::SIGUSR2) if !stopping => {
                if pending.is_some() {
                    say(
                        "WARNING",
                        "A reload is already in progress; ignoring SIGUSR2.",
                    );
                } else {
                    pending = reload(files, sockets, &current, detached);
                }
            }
            _ => {}
        }
        if let Some(mut p) = pending.take() {
            match p.poll_ready() {
                Some(true) => {
                    say("NOTICE", "Loading success.");
                    current.signal(libc::SIGUSR1);
                    former.push(std::mem::replace(&mut current, p));
                }
                Some(false) => {
                    let pid = p.pid();
                    former.push(p);
                    say(
                        "ALERT",
                        &format!(
                            "Reload failed: the new worker ({pid}) exited before serving; worker ({}) keeps serving.",
                            current.pid()
                        ),
                    );
                }
                None => pending = Some(p),
            }
        }
        former.retain_mut(|w| match w.ended() {
            Some((code, why)) => {
                say(
                    "WARNING",
                    &format!(
                        "Former worker ({}) exited with code {code} ({why})",
                        w.pid()
                    ),
                );
                false
            }
            None => true,
        });
        if let Some((code, why)) = current.ended() {
            if !stopping {
                say(
                    "ALERT",
                    &format!(
                        "Current worker ({}) exited with code {code} ({why})",
                        current.pid()
                    ),
                );
                say(
                    "ALERT",
                    "exit-on-failure: killing every processes with SIGTERM",
                );
            }
            for w in pending.iter().chain(&former) {
                w.signal(libc::SIGTERM);
            }
            for w in pending.iter_mut().chain(former.iter_mut()) {
                let _ = w.child.wait();
            }
            say(
                "WARNING",
                &format!("All workers exited. Exiting... ({code})"),
            );
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
    }
}

/// SIGUSR2: re-reads the configuration and starts a new worker on it; on a
/// bad configuration (or a listener that cannot be bound) logs why and
/// keeps the current worker.
fn reload(
    files: &[std::path::PathBuf],
    sockets: &mut Sockets,
    current: &WorkerProc,
    detached: bool,
) -> Option<WorkerProc> {
    say("WARNING", "Reloading: reading the configuration again");
    let keep = |errors: Vec<String>| {
        for e in errors {
            eprintln!("{e}");
        }
        say(
            "ALERT",
            &format!(
                "Reload failed: errors in the configuration; worker ({}) keeps serving.",
                current.pid()
            ),
        );
        None
    };
    let cfg = match load(files) {
        Ok(c) => c,
        Err(errors) => return keep(errors),
    };
    if let Err(errors) = sockets.update(&cfg.binds) {
        return keep(errors);
    }
    match spawn(sockets, detached) {
        Ok(w) => Some(w),
        Err(e) => keep(vec![format!("[ALERT] {e}")]),
    }
}
