//! Taking a server slot for a request: pick a server on the backend's
//! current server snapshot, or wait in a queue (up to `timeout queue`) when
//! the servers are full.
//!
//! A [`ConnSlot`] holds its server (an `Arc`), not an index: the server list
//! may be replaced (servers added, deleted, re-weighted) while the request
//! runs, and a request already routed to a server that gets deleted still
//! completes.

use super::balance::Pick;
use super::server::Server;
use super::{Backend, ForwardError};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts one waiter for as long as it lives (also when the waiting future
/// is dropped because the client went away).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Waiting<'a> {
        n.fetch_add(1, Ordering::SeqCst);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A taken server slot; released (and a waiter woken) when dropped. Holds
/// the backend and the server so that it can outlive the call that took it
/// (an HTTP response body keeps it until the body ends) and the server's
/// removal from the backend.
pub struct ConnSlot {
    be: Arc<Backend>,
    server: Arc<Server>,
    /// The stream's row in its worker's table of killable streams.
    _kill: Option<super::stream_kill::Registration>,
}

impl ConnSlot {
    pub(crate) fn server(&self) -> &Arc<Server> {
        &self.server
    }

    pub(crate) fn be_name(&self) -> &str {
        &self.be.name
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let s = &self.server;
        s.cur.fetch_sub(1, Ordering::SeqCst);
        s.queue.wake_one_if_waiting();
        self.be.queue.wake_one_if_waiting();
    }
}

impl std::fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnSlot({}/{})", self.be.name, self.server.name)
    }
}

/// Where a request waits: a server's own queue (source hashing) or the
/// backend's.
type Target = Option<Arc<Server>>;

fn same_target(a: &Target, b: &Target) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.gid == b.gid,
        (None, None) => true,
        _ => false,
    }
}

impl Backend {
    /// Picks on the current server snapshot; a `Got` becomes a slot.
    fn pick_now(
        self: &Arc<Self>,
        client: IpAddr,
        exclude: Option<usize>,
    ) -> Result<ConnSlot, Pick<Arc<Server>>> {
        let farm = self.farm.load();
        match self.lb.pick(&farm, client, exclude) {
            Pick::Got(idx) => {
                let server = farm.servers[idx].clone();
                Ok(ConnSlot {
                    be: self.clone(),
                    _kill: super::stream_kill::register(&server),
                    server,
                })
            }
            Pick::Full(t) => Err(Pick::Full(t.map(|i| farm.servers[i].clone()))),
            Pick::None => Err(Pick::None),
        }
    }

    /// Picks a server and takes one of its slots, waiting in the queue (up
    /// to `timeout queue`) when the chosen server, or every server, is full.
    /// `exclude` (a server's `gid`) keeps one server out (redispatch after a
    /// failure).
    pub(crate) async fn take_slot(
        self: &Arc<Self>,
        client: IpAddr,
        exclude: Option<usize>,
    ) -> Result<ConnSlot, ForwardError> {
        let target = match self.pick_now(client, exclude) {
            Ok(slot) => return Ok(slot),
            Err(Pick::Full(target)) => target,
            Err(_) => {
                crate::log::warning(&format!("backend '{}': no server available", self.name));
                return Err(ForwardError::NoServer);
            }
        };
        // Boxed: the waiting state is large and rarely needed, and every
        // request's future would otherwise carry it.
        Box::pin(self.wait_for_slot(client, exclude, target)).await
    }

    /// Waits in the queue of `target` (a server, or the whole backend when
    /// None) for a slot, up to `timeout queue`.
    async fn wait_for_slot(
        self: &Arc<Self>,
        client: IpAddr,
        exclude: Option<usize>,
        mut target: Target,
    ) -> Result<ConnSlot, ForwardError> {
        let deadline = tokio::time::Instant::now() + self.timeouts.queue;
        loop {
            // Source hashing waits for its server; the other algorithms
            // take whichever server frees a slot first.
            // The queue's owner is held apart from `target`, which may change.
            let owner = target.clone();
            let queue = match &owner {
                Some(s) => &s.queue,
                None => &self.queue,
            };
            let _waiting = Waiting::new(&queue.waiting);
            if let Some(s) = &owner {
                let waiting = queue.waiting.load(Ordering::Relaxed) as u64;
                s.counters.max_queue.fetch_max(waiting, Ordering::Relaxed);
            }
            let notified = queue.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.pick_now(client, exclude) {
                Ok(slot) => return Ok(slot),
                Err(Pick::Full(t)) if !same_target(&t, &target) => {
                    // The server set changed under us: wait in the right queue.
                    target = t;
                    continue;
                }
                Err(Pick::Full(_)) => {}
                Err(_) => {
                    crate::log::warning(&format!("backend '{}': no server available", self.name));
                    return Err(ForwardError::NoServer);
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {
                    crate::log::warning(&format!(
                        "backend '{}': no free server slot within timeout queue ({} ms)",
                        self.name,
                        self.timeouts.queue.as_millis()
                    ));
                    return Err(ForwardError::QueueTimeout);
                }
            }
        }
    }

    /// Takes a slot without waiting, from another server than `exclude` (a
    /// `gid`) if the algorithm finds one (redispatch).
    pub(crate) fn try_take_other(
        self: &Arc<Self>,
        client: IpAddr,
        exclude: usize,
    ) -> Option<ConnSlot> {
        self.pick_now(client, Some(exclude)).ok()
    }
}
