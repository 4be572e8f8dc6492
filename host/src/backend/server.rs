//! A server's live state, and the queue where requests wait for a free slot.
//!
//! Counting is lock-free: a slot is an atomic increment of the server's
//! current count (a compare-and-swap when the server has a `maxconn`), and
//! its release is a decrement (see `slot.rs`). Only requests that find every
//! server full touch the queue's `Notify` (which has an internal mutex).

use super::state::{AdminFlags, OperState};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::Arc;
use tokio::sync::Notify;

/// One server of a backend, with its live state.
///
/// Identity (name, ids, backup, dynamic) is fixed for the server's life;
/// everything an operator or a check can change is an atomic (or, for the
/// address, an atomically swapped snapshot), so the request path reads it
/// without a lock. Changes go through [`Backend`]'s runtime API
/// (`backend/runtime.rs`), which keeps the load-balancing tables in step and
/// publishes the events; the setters here are the model's internals.
pub struct Server {
    pub name: Arc<str>,
    /// Id within its backend (HAProxy's `puid`, the `id` keyword).
    pub puid: u32,
    /// Revision id (HAProxy's `rid`): 0 for configured servers; for dynamic
    /// servers, a counter that moves on when servers were deleted before, so
    /// that a re-added name can be told from the deleted one.
    pub rid: u32,
    pub backup: bool,
    /// Added at run time (`add server`).
    pub dynamic: bool,
    /// `on-marked-down` / `on-marked-up`.
    pub on_marked: OnMarked,
    /// Unique in the process (never reused): keys the per-worker connection
    /// pools and identifies the server in events.
    pub gid: usize,
    /// The backend's name and uuid (for events and `get_proxy`).
    pub proxy_name: Arc<str>,
    pub proxy_uuid: i32,
    /// The configured weight (HAProxy's `iweight`), the base of `set weight
    /// N%`.
    pub initial_weight: u32,
    addr: ArcSwap<SocketAddr>,
    /// The current weight (HAProxy's `uweight`); 0 takes the server out of
    /// load balancing.
    weight: AtomicU32,
    /// `maxconn`; 0 means unlimited.
    maxconn: AtomicUsize,
    /// [`AdminFlags`] bits.
    admin: AtomicU8,
    /// [`OperState`] as u8.
    oper: AtomicU8,
    /// [`CheckFlags`] bits.
    check: AtomicU8,
    /// Removed from its backend (`del server`); set after it left the
    /// load-balancing tables. Requests that already hold a slot complete.
    deleted: AtomicBool,
    /// Connections (TCP) or requests in flight (HTTP) holding a slot.
    pub(super) cur: AtomicUsize,
    /// Bumped to kill the streams using the server (see `stream_kill`).
    kill_generation: AtomicU64,
    /// HAProxy zeroed the health of the server's (maybe unused) check:
    /// it entered (or started in) maintenance, or was forced down. A server
    /// without checks keeps its health at `rise` otherwise, and nothing
    /// but a check brings it back (`show servers state`).
    health_lost: AtomicBool,
    /// The last health check's HAProxy status and result codes
    /// (`status << 8 | result`); 0 before any check reported.
    last_check: AtomicU16,
    /// Requests waiting for this very server (source hashing).
    pub queue: Queue,
    pub counters: ServerCounters,
    /// `track`: the server tracked and the trackers (`track.rs`).
    pub track: super::track::Tracking,
    /// `observe`: who counts the errors of real traffic (`observe.rs`).
    pub(super) observer: std::sync::OnceLock<Arc<dyn super::observe::TrafficObserver>>,
    /// A dynamic server's `add server` settings (its check options: `inter`,
    /// `rise`, `observe`...), for the check engine and `show servers state`.
    pub added_with: std::sync::OnceLock<Box<crate::config::ServerDef>>,
}

/// `on-marked-down shutdown-sessions` and `on-marked-up
/// shutdown-backup-sessions` (HAProxy's `onmarkeddown`/`onmarkedup`): what
/// a server's change of state does to the streams in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OnMarked {
    /// Going down (or into maintenance) kills the server's own streams.
    pub shutdown_sessions: bool,
    /// Coming up kills the streams of the backend's backup servers.
    pub shutdown_backup_sessions: bool,
}

impl OnMarked {
    /// The options of a `server` line (or of `add server`).
    pub fn of(def: &crate::config::ServerDef) -> OnMarked {
        def.health
            .as_deref()
            .map_or(OnMarked::default(), |h| OnMarked {
                shutdown_sessions: h.shutdown_on_down,
                shutdown_backup_sessions: h.shutdown_backups_on_up,
            })
    }
}

/// What kind of checks a server has, and whether they run (bits of
/// [`Server::check_flags`]). The check engine owns what the checks do; the
/// model keeps these flags because the CLI and Lua toggle them.
pub struct CheckFlags;

impl CheckFlags {
    /// Health checks configured (`check`).
    pub const CONFIGURED: u8 = 0x01;
    /// Health checks running (`enable health` / `check_enable`).
    pub const ENABLED: u8 = 0x02;
    /// Agent checks configured (`agent-check`).
    pub const AGENT_CONFIGURED: u8 = 0x04;
    /// Agent checks running.
    pub const AGENT_ENABLED: u8 = 0x08;
}

/// Counters for `show stat`, `get_stats()` and the like. Relaxed atomics:
/// statistics, not synchronisation.
#[derive(Default)]
pub struct ServerCounters {
    /// Sessions (connections or requests) sent to the server (`stot`).
    pub total: AtomicU64,
    /// Highest `cur` seen (`smax`).
    pub max_cur: AtomicU64,
    /// Times the load balancer picked the server (`lbtot`).
    pub lb_picks: AtomicU64,
    /// Failed connection attempts (`econ`).
    pub connect_errors: AtomicU64,
    /// Invalid or aborted responses (`eresp`).
    pub response_errors: AtomicU64,
    /// Connection retries (`wretr`) and redispatches (`wredis`).
    pub retries: AtomicU64,
    pub redispatches: AtomicU64,
    /// Highest queue length seen (`qmax`).
    pub max_queue: AtomicU64,
    /// Transitions to DOWN (`chkdown`) and failed checks (`chkfail`).
    pub down_transitions: AtomicU64,
    pub failed_checks: AtomicU64,
    /// Unix time of the last state change (`lastchg` is now minus this).
    pub last_change: AtomicU64,
}

/// The settings a server starts with.
pub(crate) struct ServerInit {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub puid: u32,
    pub rid: u32,
    pub weight: u32,
    pub maxconn: usize,
    pub backup: bool,
    pub dynamic: bool,
    pub on_marked: OnMarked,
    pub admin: AdminFlags,
    pub oper: OperState,
    pub check: u8,
    pub gid: usize,
    pub proxy_name: Arc<str>,
    pub proxy_uuid: i32,
    /// Unix time of the state it starts in (`lastchg` counts from it).
    pub since: u64,
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Server {
    pub(crate) fn new(init: ServerInit) -> Server {
        let counters = ServerCounters::default();
        counters.last_change.store(init.since, Ordering::Relaxed);
        Server {
            name: init.name,
            puid: init.puid,
            rid: init.rid,
            backup: init.backup,
            dynamic: init.dynamic,
            on_marked: init.on_marked,
            gid: init.gid,
            proxy_name: init.proxy_name,
            proxy_uuid: init.proxy_uuid,
            initial_weight: init.weight,
            addr: ArcSwap::from_pointee(init.addr),
            weight: AtomicU32::new(init.weight),
            maxconn: AtomicUsize::new(init.maxconn),
            admin: AtomicU8::new(init.admin.0),
            oper: AtomicU8::new(init.oper as u8),
            check: AtomicU8::new(init.check),
            deleted: AtomicBool::new(false),
            cur: AtomicUsize::new(0),
            kill_generation: AtomicU64::new(0),
            last_check: AtomicU16::new(0),
            health_lost: AtomicBool::new(init.admin.in_maint()),
            queue: Queue::default(),
            counters,
            track: Default::default(),
            observer: std::sync::OnceLock::new(),
            added_with: std::sync::OnceLock::new(),
        }
    }

    /// Where the streams using this server are in their kill count: a
    /// stream that took its slot at an older value is to be killed.
    pub(super) fn kill_generation(&self) -> u64 {
        self.kill_generation.load(Ordering::Acquire)
    }

    pub(super) fn bump_kill_generation(&self) {
        self.kill_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Where to connect now.
    pub fn addr(&self) -> SocketAddr {
        **self.addr.load()
    }

    pub(super) fn store_addr(&self, addr: SocketAddr) {
        self.addr.store(Arc::new(addr));
    }

    /// The current weight (`uweight`).
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub(super) fn store_weight(&self, w: u32) {
        self.weight.store(w, Ordering::SeqCst);
    }

    /// `maxconn`, 0 for unlimited.
    pub fn maxconn(&self) -> usize {
        self.maxconn.load(Ordering::Relaxed)
    }

    pub(super) fn store_maxconn(&self, n: usize) {
        self.maxconn.store(n, Ordering::Relaxed);
    }

    pub fn admin(&self) -> AdminFlags {
        AdminFlags(self.admin.load(Ordering::SeqCst))
    }

    pub(super) fn store_admin(&self, f: AdminFlags) {
        self.admin.store(f.0, Ordering::SeqCst);
    }

    pub fn oper(&self) -> OperState {
        OperState::from_u8(self.oper.load(Ordering::SeqCst))
    }

    pub(super) fn store_oper(&self, s: OperState) {
        self.oper.store(s as u8, Ordering::SeqCst);
    }

    /// [`CheckFlags`] bits.
    pub fn check_flags(&self) -> u8 {
        self.check.load(Ordering::Relaxed)
    }

    /// Sets (`on`) or clears the [`CheckFlags`] bits in `bits`.
    pub fn set_check_flags(&self, bits: u8, on: bool) {
        if on {
            self.check.fetch_or(bits, Ordering::Relaxed);
        } else {
            self.check.fetch_and(!bits, Ordering::Relaxed);
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    pub(super) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::SeqCst);
    }

    /// HAProxy's `server_is_draining`: no weight left, or a drain flag.
    pub fn is_draining(&self) -> bool {
        self.weight() == 0 || self.admin().draining()
    }

    /// Can take new load-balanced traffic: not deleted, not in maintenance
    /// or drain, operationally up (not DOWN or NOLB), weight > 0.
    pub fn usable(&self) -> bool {
        let admin = self.admin();
        !admin.in_maint()
            && !admin.draining()
            && self.oper().takes_new_traffic()
            && self.weight() > 0
            && !self.is_deleted()
    }

    /// Notes that HAProxy would have zeroed the check's health.
    pub fn lose_health(&self) {
        self.health_lost.store(true, Ordering::Relaxed);
    }

    /// Whether [`Server::lose_health`] happened.
    pub fn health_lost(&self) -> bool {
        self.health_lost.load(Ordering::Relaxed)
    }

    /// Records the last check's HAProxy status code (`HCHK_STATUS_*`) and
    /// result (`CHK_RES_*`), for `show servers state`.
    pub fn set_last_check(&self, status: u8, result: u8) {
        self.last_check.store(
            u16::from(status) << 8 | u16::from(result),
            Ordering::Relaxed,
        );
    }

    /// The last check's (status, result) codes; None before any check.
    pub fn last_check(&self) -> Option<(u8, u8)> {
        let v = self.last_check.load(Ordering::Relaxed);
        (v != 0).then_some(((v >> 8) as u8, v as u8))
    }

    /// Current load.
    pub fn current(&self) -> usize {
        // SeqCst pairs with the queue's waiter count (see `Queue`).
        self.cur.load(Ordering::SeqCst)
    }

    /// Requests waiting for this server (`qcur`, `get_pend_conn`).
    pub fn pending(&self) -> usize {
        self.queue.waiting.load(Ordering::Relaxed)
    }

    /// Whether a slot is free right now.
    pub fn has_room(&self) -> bool {
        let max = self.maxconn();
        max == 0 || self.current() < max
    }

    /// Takes a slot if one is free and the server is still usable.
    ///
    /// The usability is checked again after the count was taken: an
    /// administrator who puts the server in maintenance stores the flag
    /// before looking at the count (`del server` refuses a server with
    /// connections), so with sequentially consistent operations either the
    /// administrator sees this slot or this request sees the flag and backs
    /// out. No new request reaches a server in maintenance or deleted.
    pub fn try_take(&self) -> bool {
        let max = self.maxconn();
        if max == 0 {
            self.cur.fetch_add(1, Ordering::SeqCst);
        } else {
            let mut cur = self.cur.load(Ordering::SeqCst);
            loop {
                if cur >= max {
                    return false;
                }
                match self.cur.compare_exchange_weak(
                    cur,
                    cur + 1,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => break,
                    Err(now) => cur = now,
                }
            }
        }
        if !self.usable() {
            self.cur.fetch_sub(1, Ordering::SeqCst);
            self.queue.wake_one_if_waiting();
            return false;
        }
        let now = self.cur.load(Ordering::Relaxed) as u64;
        self.counters.total.fetch_add(1, Ordering::Relaxed);
        self.counters.lb_picks.fetch_add(1, Ordering::Relaxed);
        self.counters.max_cur.fetch_max(now, Ordering::Relaxed);
        true
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
pub struct Queue {
    pub(super) waiting: AtomicUsize,
    pub(super) notify: Notify,
}

impl Queue {
    pub fn wake_all(&self) {
        self.notify.notify_waiters();
    }

    pub(super) fn wake_one_if_waiting(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_one();
        }
    }
}
