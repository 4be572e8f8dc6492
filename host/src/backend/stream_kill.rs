//! Killing the streams that use a server: the CLI's `shutdown sessions
//! server`, Lua's `Server:shut_sess()` and `Proxy:shut_bcksess()`.
//!
//! A client connection's task runs under [`guard`], which gives it a kill
//! switch (a [`KillSwitch`], task-local). While the connection holds a
//! server slot ([`super::ConnSlot`]), the switch is listed in its worker's
//! thread-local table of live streams with the server and the server's
//! kill generation at that time. Nothing here is shared between threads on
//! the request path: taking a slot adds a row to a thread-local table and
//! releasing it removes the row.
//!
//! Killing bumps the server's generation (an atomic) and wakes every
//! worker's reaper task ([`Reapers::start`]); each reaper trips the switches
//! of its own rows whose server moved past their generation. A tripped
//! switch makes [`guard`] drop the connection's future: the client and
//! server sockets close, as HAProxy's `SF_ERR_KILLED` closes both sides.
//! Only streams holding a slot at that moment are killed: a keep-alive
//! connection between requests uses no server and stays open.
//!
//! The reapers are listed in a [`Reapers`] that the registry owns and hands
//! to its backends and workers (no process-wide list): a kill reaches the
//! workers serving the registry the killed server belongs to.

use super::server::Server;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;

/// One connection's kill switch.
#[derive(Default)]
struct KillSwitch {
    tripped: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl KillSwitch {
    fn trip(&self) {
        self.tripped.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Resolves once the switch is tripped.
struct Tripped<'a>(&'a KillSwitch);

impl Future for Tripped<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.tripped.get() {
            return Poll::Ready(());
        }
        self.0.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

tokio::task_local! {
    /// The kill switch of the connection whose task is being polled.
    static CURRENT: Rc<KillSwitch>;
}

/// A live stream using a server, in its worker's table.
struct Row {
    server: Arc<Server>,
    /// The server's kill generation when the stream took its slot.
    generation: u64,
    switch: Rc<KillSwitch>,
}

thread_local! {
    static LIVE: RefCell<HashMap<u64, Row>> = RefCell::new(HashMap::new());
}

/// Row keys, unique in the process (a slot may be dropped on another
/// thread than the one that took it; its key then matches nothing there).
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A stream's row in the live table, removed when dropped (with the slot).
#[derive(Debug)]
pub(crate) struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        let key = self.0;
        let _ = LIVE.try_with(|t| t.borrow_mut().remove(&key));
    }
}

/// Lists the current connection as using `server`; None outside a
/// connection run by [`guard`] (such a stream cannot be killed).
pub(crate) fn register(server: &Arc<Server>) -> Option<Registration> {
    let switch = CURRENT.try_with(|s| s.clone()).ok()?;
    let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
    let row = Row {
        server: server.clone(),
        generation: server.kill_generation(),
        switch,
    };
    LIVE.try_with(|t| t.borrow_mut().insert(key, row)).ok()?;
    Some(Registration(key))
}

/// Runs a client connection's future with a kill switch: None when the
/// stream was killed (the future is dropped then, closing its sockets).
pub async fn guard<F: Future>(fut: F) -> Option<F::Output> {
    let switch = Rc::new(KillSwitch::default());
    let watched = switch.clone();
    CURRENT
        .scope(switch, async move {
            tokio::select! {
                biased;
                _ = Tripped(&watched) => None,
                v = fut => Some(v),
            }
        })
        .await
}

/// The reapers of the workers serving one registry, woken by a kill.
#[derive(Default)]
pub struct Reapers {
    wakers: Mutex<Vec<Arc<Notify>>>,
}

impl Reapers {
    fn wakers(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Notify>>> {
        // A push or an iteration cannot leave the list half-changed, so a
        // poisoned lock is still usable.
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Kills the streams now using `server` (on every worker).
    pub fn kill_server_streams(&self, server: &Server) {
        server.bump_kill_generation();
        for r in self.wakers().iter() {
            r.notify_one();
        }
    }

    /// Starts this worker's reaper (once per worker thread, inside its
    /// LocalSet): it trips the switches of the streams whose server was
    /// killed.
    pub fn start(&self) {
        let wake = Arc::new(Notify::new());
        self.wakers().push(wake.clone());
        tokio::task::spawn_local(async move {
            loop {
                wake.notified().await;
                reap();
            }
        });
    }
}

/// Trips the switches of this thread's streams whose server moved on.
fn reap() {
    let _ = LIVE.try_with(|t| {
        for row in t.borrow().values() {
            if row.server.kill_generation() != row.generation && !row.switch.tripped.get() {
                row.switch.trip();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tripped_switch_ends_the_guarded_future() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let switch_seen = Rc::new(Cell::new(None));
            let seen = switch_seen.clone();
            let task = tokio::task::spawn_local(guard(async move {
                seen.set(Some(CURRENT.with(|s| s.clone())));
                std::future::pending::<()>().await
            }));
            tokio::task::yield_now().await;
            let switch: Rc<KillSwitch> = switch_seen.take().expect("switch");
            switch.trip();
            assert_eq!(task.await.expect("join"), None);
        });
    }
}
