//! A server's run-time state, the connection slots that count its load,
//! and the queue where requests wait for a free slot.
//!
//! Counting is lock-free: a slot is an atomic increment of the server's
//! current count (a compare-and-swap when the server has a `maxconn`), and
//! its release is a decrement. Only requests that find every server full
//! touch the queue's `Notify` (which has an internal mutex).

use super::balance::Pick;
use super::{Backend, ForwardError};
use crate::config::ServerDef;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// One server of a backend.
pub(crate) struct Server {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    /// `weight`; 0 takes the server out of load balancing.
    pub weight: u32,
    /// `maxconn`; 0 means unlimited.
    pub maxconn: usize,
    pub backup: bool,
    /// Index over all servers of all backends, for the per-worker pools.
    pub gid: usize,
    /// In maintenance (`disabled`), changeable at run time.
    disabled: AtomicBool,
    /// Connections (TCP) or requests in flight (HTTP) holding a slot.
    cur: AtomicUsize,
    /// Requests waiting for this very server (source hashing).
    pub queue: Queue,
}

impl Server {
    pub fn new(def: &ServerDef, addr: SocketAddr, gid: usize) -> Server {
        Server {
            name: Arc::from(def.name.as_str()),
            addr,
            weight: def.weight.unwrap_or(1),
            maxconn: def.maxconn.unwrap_or(0),
            backup: def.backup,
            gid,
            disabled: AtomicBool::new(def.disabled),
            cur: AtomicUsize::new(0),
            queue: Queue::default(),
        }
    }

    /// Can take traffic from load balancing (not in maintenance, weight > 0).
    pub fn usable(&self) -> bool {
        self.weight > 0 && !self.disabled.load(Ordering::Relaxed)
    }

    pub fn set_disabled(&self, disabled: bool) {
        self.disabled.store(disabled, Ordering::Relaxed);
    }

    /// Current load.
    pub fn current(&self) -> usize {
        // SeqCst pairs with the queue's waiter count (see `Queue`).
        self.cur.load(Ordering::SeqCst)
    }

    /// Whether a slot is free right now.
    pub fn has_room(&self) -> bool {
        self.maxconn == 0 || self.current() < self.maxconn
    }

    /// Takes a slot if one is free.
    pub fn try_take(&self) -> bool {
        if self.maxconn == 0 {
            self.cur.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        let mut cur = self.cur.load(Ordering::SeqCst);
        while cur < self.maxconn {
            match self
                .cur
                .compare_exchange_weak(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }
}

/// A place to wait for a free slot: a waiter count (so that releasing a slot
/// only touches the `Notify` when someone waits) and the `Notify`.
///
/// Lost wake-ups are avoided Dekker-style with sequentially consistent
/// operations: a waiter increments `waiting`, registers with the `Notify`,
/// then re-checks the servers; a releaser decrements the server's count,
/// then reads `waiting`. One of the two always sees the other.
#[derive(Default)]
pub(crate) struct Queue {
    waiting: AtomicUsize,
    notify: Notify,
}

impl Queue {
    pub fn wake_all(&self) {
        self.notify.notify_waiters();
    }

    fn wake_one_if_waiting(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_one();
        }
    }
}

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
/// the backend so that it can outlive the call that took it (an HTTP
/// response body keeps it until the body ends).
pub struct ConnSlot {
    be: Arc<Backend>,
    idx: usize,
}

impl ConnSlot {
    pub(crate) fn server(&self) -> &Server {
        &self.be.servers[self.idx]
    }

    pub(crate) fn index(&self) -> usize {
        self.idx
    }

    pub(crate) fn be_name(&self) -> &str {
        &self.be.name
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let s = &self.be.servers[self.idx];
        s.cur.fetch_sub(1, Ordering::SeqCst);
        s.queue.wake_one_if_waiting();
        self.be.queue.wake_one_if_waiting();
    }
}

impl std::fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnSlot({}/{})", self.be.name, self.server().name)
    }
}

impl Backend {
    /// Picks a server and takes one of its slots, waiting in the queue (up
    /// to `timeout queue`) when the chosen server, or every server, is full.
    /// `exclude` keeps one server out (redispatch after a failure).
    pub(crate) async fn take_slot(
        self: &Arc<Self>,
        client: IpAddr,
        exclude: Option<usize>,
    ) -> Result<ConnSlot, ForwardError> {
        let target = match self.lb.pick(&self.servers, client, exclude) {
            Pick::Got(idx) => return Ok(self.slot(idx)),
            Pick::None => {
                crate::log::warning(&format!("backend '{}': no server available", self.name));
                return Err(ForwardError::NoServer);
            }
            Pick::Full(target) => target,
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
        mut target: Option<usize>,
    ) -> Result<ConnSlot, ForwardError> {
        let deadline = tokio::time::Instant::now() + self.timeouts.queue;
        loop {
            // Source hashing waits for its server; the other algorithms
            // take whichever server frees a slot first.
            let queue = match target {
                Some(idx) => &self.servers[idx].queue,
                None => &self.queue,
            };
            let _waiting = Waiting::new(&queue.waiting);
            let notified = queue.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.lb.pick(&self.servers, client, exclude) {
                Pick::Got(idx) => return Ok(self.slot(idx)),
                Pick::None => {
                    crate::log::warning(&format!("backend '{}': no server available", self.name));
                    return Err(ForwardError::NoServer);
                }
                Pick::Full(t) if t != target => {
                    // The server set changed under us: wait in the right queue.
                    target = t;
                    continue;
                }
                Pick::Full(_) => {}
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

    /// Takes a slot without waiting, from another server than `exclude` if
    /// the algorithm finds one (redispatch).
    pub(crate) fn try_take_other(
        self: &Arc<Self>,
        client: IpAddr,
        exclude: usize,
    ) -> Option<ConnSlot> {
        match self.lb.pick(&self.servers, client, Some(exclude)) {
            Pick::Got(idx) => Some(self.slot(idx)),
            _ => None,
        }
    }

    /// Wraps a slot already counted by `Lb::pick`.
    fn slot(self: &Arc<Self>, idx: usize) -> ConnSlot {
        ConnSlot {
            be: self.clone(),
            idx,
        }
    }
}
