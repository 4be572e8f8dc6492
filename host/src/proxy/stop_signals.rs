//! The stop signals: SIGTERM and SIGINT (hard stop), SIGUSR1 (soft stop).
//!
//! They are registered before the listeners are bound, as HAProxy registers
//! its handlers before it binds. A signal that arrives while luahost starts
//! (loading Lua, running the init functions) is then kept and acted on once
//! it serves, instead of its default action ending the process at once and
//! resetting the connections the kernel already queued on the listeners.

use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The registered signals and the runtime that delivers them.
pub(super) struct StopSignals {
    pub(super) rt: Runtime,
    pub(super) term: Signal,
    pub(super) int: Signal,
    pub(super) usr1: Signal,
}

impl StopSignals {
    /// Registers the handlers: from here on these signals no longer end the
    /// process by themselves.
    pub(super) fn install() -> std::io::Result<StopSignals> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Registration needs the runtime's signal driver in context; the
        // signals are delivered once the runtime runs (wait_for_signals).
        let (term, int, usr1) = {
            let _context = rt.enter();
            (
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
                signal(SignalKind::user_defined1())?,
            )
        };
        Ok(StopSignals {
            rt,
            term,
            int,
            usr1,
        })
    }
}
