//! The server event bus: every change the model accepts is published as a
//! [`ServerEvent`] to the subscribed sinks.
//!
//! A sink is a cheap, non-blocking callback (it typically pushes the event
//! onto a queue that a worker drains: per-subscription queues, ordering and
//! the pause policy are built on top, in the Lua layer). Publishing takes
//! no lock: the sink list is an immutable snapshot swapped as a whole on
//! subscribe/unsubscribe, and when nobody subscribes, publishing is one
//! atomic load and the event is never even built.
//!
//! Events of one backend are published in the order the changes were made:
//! changes to a backend are serialised by its writer lock, and publishing
//! happens under it.

use super::server::Server;
use super::state::{AdminFlags, OperState};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

/// The event types (HAProxy's `EVENT_HDL_SUB_SERVER_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerEventKind {
    Add,
    Del,
    Up,
    Down,
    State,
    Admin,
    Check,
    InetAddr,
}

impl ServerEventKind {
    pub const ALL: [ServerEventKind; 8] = [
        ServerEventKind::Add,
        ServerEventKind::Del,
        ServerEventKind::Up,
        ServerEventKind::Down,
        ServerEventKind::State,
        ServerEventKind::Admin,
        ServerEventKind::Check,
        ServerEventKind::InetAddr,
    ];

    /// HAProxy's name, as given to `core.event_sub` and passed to the callback.
    pub fn name(self) -> &'static str {
        match self {
            ServerEventKind::Add => "SERVER_ADD",
            ServerEventKind::Del => "SERVER_DEL",
            ServerEventKind::Up => "SERVER_UP",
            ServerEventKind::Down => "SERVER_DOWN",
            ServerEventKind::State => "SERVER_STATE",
            ServerEventKind::Admin => "SERVER_ADMIN",
            ServerEventKind::Check => "SERVER_CHECK",
            ServerEventKind::InetAddr => "SERVER_INETADDR",
        }
    }

    /// The kind named `name`; `None` for unknown names (the family name
    /// "SERVER" is [`EventMask::from_name`]'s business).
    pub fn from_name(name: &str) -> Option<ServerEventKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of event kinds a sink wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EventMask(u16);

impl EventMask {
    pub const NONE: EventMask = EventMask(0);
    /// The family "SERVER": every server event.
    pub const ALL: EventMask = EventMask(0xff);

    pub fn with(self, kind: ServerEventKind) -> EventMask {
        EventMask(self.0 | kind.bit())
    }

    /// Both sets.
    pub fn union(self, other: EventMask) -> EventMask {
        EventMask(self.0 | other.0)
    }

    pub fn contains(self, kind: ServerEventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// The mask for one of HAProxy's type names: a kind, or "SERVER" for all.
    pub fn from_name(name: &str) -> Option<EventMask> {
        if name == "SERVER" {
            return Some(EventMask::ALL);
        }
        ServerEventKind::from_name(name).map(|k| EventMask::NONE.with(k))
    }
}

/// A check result as reported by the check engine (HAProxy's
/// `event_hdl_cb_data_server_checkres`, Lua `ServerEventCheckRes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// "FAILED", "PASSED" or "CONDPASS".
    pub result: CheckOutcome,
    /// An agent check rather than a health check.
    pub agent: bool,
    /// How long the check took, in milliseconds; -1 for a result that is
    /// no check run (HAProxy's `HANA` from `observe`).
    pub duration_ms: i64,
    /// Status short name (e.g. "L4OK", "L4CON", "L7STS").
    pub reason_short: String,
    /// Status description (e.g. "Layer4 check passed").
    pub reason_desc: String,
    /// Extra code for layer 5+ checks (e.g. the HTTP status), else 0.
    pub reason_code: i32,
    /// Health counter after this check: 0..rise-1 is bad, rise..rise+fall-1 good.
    pub health_cur: u32,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    Failed,
    Passed,
    CondPass,
}

impl CheckOutcome {
    pub fn name(self) -> &'static str {
        match self {
            CheckOutcome::Failed => "FAILED",
            CheckOutcome::Passed => "PASSED",
            CheckOutcome::CondPass => "CONDPASS",
        }
    }
}

/// The data specific to one kind of event.
#[derive(Clone, Debug)]
pub enum EventDetail {
    /// ADD, DEL, UP, DOWN carry only the common data.
    None,
    /// SERVER_STATE (Lua `ServerEventState`).
    State {
        /// An administrative change caused it (else operational).
        admin: bool,
        /// The check behind an operational change by a check.
        check: Option<Box<CheckResult>>,
        cause: &'static str,
        old_state: OperState,
        new_state: OperState,
        requeued: u32,
    },
    /// SERVER_ADMIN (Lua `ServerEventAdmin`).
    Admin {
        cause: &'static str,
        old_admin: AdminFlags,
        new_admin: AdminFlags,
        requeued: u32,
    },
    /// SERVER_CHECK (Lua `ServerEventCheckRes`).
    Check(Box<CheckResult>),
    /// SERVER_INETADDR: the address change.
    InetAddr {
        prev: SocketAddr,
        next: SocketAddr,
        /// Idle connections to the old address are dropped.
        purge_conn: bool,
    },
}

/// One server event, with the data HAProxy 3.0 passes to Lua
/// (`ServerEvent`): the server's name, ids and proxy, and a reference to the
/// live server while it still exists.
#[derive(Clone, Debug)]
pub struct ServerEvent {
    pub kind: ServerEventKind,
    /// When it happened.
    pub when: SystemTime,
    pub name: Arc<str>,
    pub puid: u32,
    pub rid: u32,
    pub proxy_name: Arc<str>,
    pub proxy_uuid: i32,
    /// The process-wide server id (see [`Server::gid`]), for sinks that
    /// follow one server (`Server:event_sub`).
    pub server_gid: usize,
    /// The live server; dead (fails to upgrade) once it is deleted and
    /// released. SERVER_DEL never exposes it (HAProxy's rule): use
    /// [`ServerEvent::reference`].
    server: Weak<Server>,
    pub detail: EventDetail,
}

impl ServerEvent {
    pub(crate) fn new(kind: ServerEventKind, server: &Arc<Server>, detail: EventDetail) -> Self {
        ServerEvent {
            kind,
            when: SystemTime::now(),
            name: server.name.clone(),
            puid: server.puid,
            rid: server.rid,
            proxy_name: server.proxy_name.clone(),
            proxy_uuid: server.proxy_uuid,
            server_gid: server.gid,
            server: Arc::downgrade(server),
            detail,
        }
    }

    /// An event about no live server (Lua layer tests).
    #[cfg(test)]
    pub(crate) fn for_test(kind: ServerEventKind, server_gid: usize) -> Self {
        ServerEvent {
            kind,
            when: SystemTime::now(),
            name: Arc::from("s1"),
            puid: 1,
            rid: 0,
            proxy_name: Arc::from("be"),
            proxy_uuid: 2,
            server_gid,
            server: Weak::new(),
            detail: EventDetail::None,
        }
    }

    /// The live server, when it still exists (never for SERVER_DEL, and not
    /// once the server was deleted).
    pub fn reference(&self) -> Option<Arc<Server>> {
        if self.kind == ServerEventKind::Del {
            return None;
        }
        self.server.upgrade().filter(|s| !s.is_deleted())
    }
}

/// A subscriber's callback. It runs on the thread that made the change
/// (a worker, the CLI, a check), so it must be cheap and must not block:
/// queue the event and return.
pub type EventSink = Arc<dyn Fn(&ServerEvent) + Send + Sync>;

/// A subscription id, for [`EventBus::unsubscribe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

struct Subscriber {
    id: SubscriptionId,
    mask: EventMask,
    sink: EventSink,
}

/// The process's server event bus (one per [`super::Registry`]).
pub struct EventBus {
    subscribers: ArcSwap<Vec<Subscriber>>,
    /// Whether anyone listens: the publish fast path.
    any: AtomicBool,
    next_id: AtomicU64,
    /// Serialises subscribe/unsubscribe (never taken when publishing).
    edit: Mutex<()>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            subscribers: ArcSwap::from_pointee(Vec::new()),
            any: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            edit: Mutex::new(()),
        }
    }
}

impl EventBus {
    /// Adds a sink for the kinds in `mask`; it receives every later event of
    /// those kinds until unsubscribed.
    pub fn subscribe(&self, mask: EventMask, sink: EventSink) -> SubscriptionId {
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let _edit = self.edit.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<Subscriber> = Vec::with_capacity(self.subscribers.load().len() + 1);
        for s in self.subscribers.load().iter() {
            list.push(Subscriber {
                id: s.id,
                mask: s.mask,
                sink: s.sink.clone(),
            });
        }
        list.push(Subscriber { id, mask, sink });
        self.subscribers.store(Arc::new(list));
        self.any.store(true, Ordering::SeqCst);
        id
    }

    /// Removes a sink; false when the id is unknown (already removed). The
    /// sink may still be called once by a publish already under way.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let _edit = self.edit.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.subscribers.load();
        if !current.iter().any(|s| s.id == id) {
            return false;
        }
        let list: Vec<Subscriber> = current
            .iter()
            .filter(|s| s.id != id)
            .map(|s| Subscriber {
                id: s.id,
                mask: s.mask,
                sink: s.sink.clone(),
            })
            .collect();
        self.any.store(!list.is_empty(), Ordering::SeqCst);
        self.subscribers.store(Arc::new(list));
        true
    }

    /// Whether anyone listens (publishers may skip preparing data).
    pub fn has_subscribers(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// Publishes the event `make` builds, if anyone wants its kind.
    pub(crate) fn publish(&self, kind: ServerEventKind, make: impl FnOnce() -> ServerEvent) {
        if !self.has_subscribers() {
            return;
        }
        let subs = self.subscribers.load();
        if !subs.iter().any(|s| s.mask.contains(kind)) {
            return;
        }
        let event = make();
        for s in subs.iter().filter(|s| s.mask.contains(kind)) {
            (s.sink)(&event);
        }
    }
}
