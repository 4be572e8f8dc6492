//! Pausing, resuming and stopping a frontend's listeners at run time: the
//! CLI's `disable frontend`, `enable frontend` and `shutdown frontend`, and
//! Lua's `Proxy:pause()`, `resume()` and `stop()`.
//!
//! As HAProxy on Linux, pausing releases the port without closing the
//! socket: `connect(AF_UNSPEC)` takes a listening socket out of the
//! listening state (the kernel refuses new connections and resets those
//! waiting in the backlog), and resuming calls `listen()` again on the same
//! bound socket. Stopping does the same as pausing, for good, and the
//! workers close their copies of the socket.
//!
//! Every worker accepts on its own copy (a dup) of each socket; the copies
//! share one kernel socket, so the control acts on its own copy and tells
//! the workers' accept loops through a watch channel, so that they stop
//! polling a socket that does not listen (and end on a stop).
//!
//! One control per frontend, made when its listeners are bound and kept on
//! the frontend's registry entry (`ProxyEntry::control`): the CLI, the
//! workers and every Lua state reach it through the registry they were
//! given, not through a global.

use crate::backend::Registry;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What a frontend's listeners do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenState {
    Ready,
    /// Not listening; `resume` makes them listen again.
    Paused,
    /// Closed for good.
    Stopped,
}

/// Why a change was refused: HAProxy's CLI messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    AlreadyPaused,
    AlreadyReady,
    WasStopped {
        resuming: bool,
    },
    AlreadyStopped,
    /// The kernel refused (the message says which call).
    Failed(&'static str),
}

impl Refused {
    pub fn message(self) -> &'static str {
        match self {
            Refused::AlreadyPaused => "All sockets are already disabled.",
            Refused::AlreadyReady => "All sockets are already enabled.",
            Refused::WasStopped { resuming: false } => {
                "Frontend was previously shut down, cannot disable."
            }
            Refused::WasStopped { resuming: true } => {
                "Frontend was previously shut down, cannot enable."
            }
            Refused::AlreadyStopped => "Frontend was already shut down.",
            Refused::Failed(m) => m,
        }
    }
}

/// One frontend's listeners.
pub struct FrontendControl {
    name: Arc<str>,
    /// The control's copies of the sockets, with their listen() backlog;
    /// emptied (closed) on stop.
    sockets: Mutex<Vec<(TcpListener, u32)>>,
    state: watch::Sender<ListenState>,
}

impl FrontendControl {
    pub fn new(name: Arc<str>, sockets: Vec<(TcpListener, u32)>) -> FrontendControl {
        FrontendControl {
            name,
            sockets: Mutex::new(sockets),
            state: watch::Sender::new(ListenState::Ready),
        }
    }

    /// What the accept loops watch.
    pub fn watch(&self) -> watch::Receiver<ListenState> {
        self.state.subscribe()
    }

    pub fn state(&self) -> ListenState {
        *self.state.borrow()
    }

    /// Stops listening until [`resume`](Self::resume).
    pub fn pause(&self) -> Result<(), Refused> {
        let socks = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        match self.state() {
            ListenState::Stopped => return Err(Refused::WasStopped { resuming: false }),
            ListenState::Paused => return Err(Refused::AlreadyPaused),
            ListenState::Ready => {}
        }
        for (l, _) in socks.iter() {
            unlisten(l).map_err(|_| {
                Refused::Failed("Failed to pause frontend, check logs for precise cause.")
            })?;
        }
        self.state.send_replace(ListenState::Paused);
        crate::log::warning(&format!("Paused frontend {}.", self.name));
        Ok(())
    }

    /// Listens again after a pause.
    pub fn resume(&self) -> Result<(), Refused> {
        let socks = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        match self.state() {
            ListenState::Stopped => return Err(Refused::WasStopped { resuming: true }),
            ListenState::Ready => return Err(Refused::AlreadyReady),
            ListenState::Paused => {}
        }
        for (l, backlog) in socks.iter() {
            let backlog = libc::c_int::try_from(*backlog).unwrap_or(libc::c_int::MAX);
            // SAFETY: the descriptor belongs to `l`, alive for the call;
            // listen() on a bound socket only (re)starts listening.
            if unsafe { libc::listen(l.as_raw_fd(), backlog) } != 0 {
                return Err(Refused::Failed(
                    "Failed to resume frontend, check logs for precise cause (port conflict?).",
                ));
            }
        }
        self.state.send_replace(ListenState::Ready);
        crate::log::warning(&format!("Resumed frontend {}.", self.name));
        Ok(())
    }

    /// Closes the listeners for good; `cumulated` is the frontend's and the
    /// backend side's connection count, for HAProxy's log line.
    pub fn stop(&self, cumulated: (u64, u64)) -> Result<(), Refused> {
        let mut socks = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        if self.state() == ListenState::Stopped {
            return Err(Refused::AlreadyStopped);
        }
        // Refuse at once, whatever copies the workers still hold.
        for (l, _) in socks.iter() {
            let _ = unlisten(l);
        }
        socks.clear();
        self.state.send_replace(ListenState::Stopped);
        crate::log::warning(&format!(
            "Proxy {} stopped (cumulated conns: FE: {}, BE: {}).",
            self.name, cumulated.0, cumulated.1
        ));
        Ok(())
    }
}

/// Takes a listening socket out of the listening state (HAProxy's
/// `tcp_suspend_receiver` on Linux): `connect()` to an AF_UNSPEC address.
fn unlisten(l: &TcpListener) -> std::io::Result<()> {
    // SAFETY: an all-zero sockaddr is a valid AF_UNSPEC address (the
    // family is 0); the descriptor belongs to `l`, alive for the call.
    let rc = unsafe {
        let sa: libc::sockaddr = std::mem::zeroed();
        libc::connect(
            l.as_raw_fd(),
            &sa,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        crate::log::warning(&format!("cannot pause a listener: {e}"));
        return Err(e);
    }
    Ok(())
}

/// Lets go of every control's sockets when the process stops (soft or
/// hard): the workers' copies are then the last ones, and a socket closes
/// when its accept loops end. The frontends count as stopped from then on.
pub fn release_all(registry: &Registry) {
    for ctl in registry.proxies().iter().filter_map(|e| e.control()) {
        let mut socks = ctl.sockets.lock().unwrap_or_else(|p| p.into_inner());
        socks.clear();
        ctl.state.send_replace(ListenState::Stopped);
    }
}
