//! `core.event_sub(types, cb)`, `Server:event_sub(types, cb)` and the
//! EventSub class (`sub:unsub()`).
//!
//! A subscription is an [`Inbox`] (`Send`: the server model's event bus
//! fills it from any thread) and a runner task on the worker that
//! subscribed. The runner hands the events to the callback one at a time,
//! each in a coroutine of its own that may yield (`core.msleep`): the next
//! event is delivered only once the callback has returned, so a
//! subscription sees its events in order. As HAProxy's, a subscription with
//! more than [`MAX_PENDING`] unconsumed events pauses itself with a warning
//! and drops events until its queue has drained; a callback error is logged
//! and the subscription stays.
//!
//! Load-time subscriptions: as in HAProxy 3.0, a `lua-load-per-thread`
//! body subscribes only in the first thread's state (`core.thread` 1); in
//! the other states `core.event_sub` returns nothing at load time, so one
//! handler runs per subscription rather than one per thread. At run time
//! any state may subscribe, and its worker runs the callback.

use crate::lua::exec::{self, ExecCtx, ExecError};
use crate::lua::state::{Phase, StateInfo};
use mlua::{Function, Lua, MultiValue, Table, Value};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Unconsumed events past which a subscription pauses (HAProxy's 100).
pub(crate) const MAX_PENDING: usize = 100;

/// The event types, one bit each.
pub(crate) mod types {
    pub const SERVER_ADD: u32 = 1;
    pub const SERVER_DEL: u32 = 1 << 1;
    pub const SERVER_UP: u32 = 1 << 2;
    pub const SERVER_DOWN: u32 = 1 << 3;
    pub const SERVER_STATE: u32 = 1 << 4;
    pub const SERVER_ADMIN: u32 = 1 << 5;
    pub const SERVER_CHECK: u32 = 1 << 6;
    pub const SERVER_INETADDR: u32 = 1 << 7;
    /// The family: every server event.
    pub const SERVER: u32 = (1 << 8) - 1;

    /// The names scripts use, with their bits.
    pub const NAMES: &[(&str, u32)] = &[
        ("SERVER", SERVER),
        ("SERVER_ADD", SERVER_ADD),
        ("SERVER_DEL", SERVER_DEL),
        ("SERVER_UP", SERVER_UP),
        ("SERVER_DOWN", SERVER_DOWN),
        ("SERVER_STATE", SERVER_STATE),
        ("SERVER_ADMIN", SERVER_ADMIN),
        ("SERVER_CHECK", SERVER_CHECK),
        ("SERVER_INETADDR", SERVER_INETADDR),
    ];

    /// The name of one event type.
    pub fn name(bit: u32) -> &'static str {
        NAMES
            .iter()
            .skip(1)
            .find(|(_, b)| *b == bit)
            .map_or("SERVER", |(n, _)| n)
    }
}

/// A check result as events carry it (HAProxy's `ServerEventCheckRes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckRes {
    /// "FAILED", "PASSED" or "CONDPASS".
    pub result: &'static str,
    pub agent: bool,
    pub duration_ms: u64,
    pub short: &'static str,
    pub desc: &'static str,
    /// The HTTP status, for checks that looked at one.
    pub code: Option<u16>,
    pub health_cur: u32,
    pub rise: u32,
    pub fall: u32,
}

/// The type-specific part of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Detail {
    None,
    /// SERVER_STATE.
    State {
        admin: bool,
        cause: String,
        old_state: &'static str,
        new_state: &'static str,
        requeued: u32,
        /// The check that caused an operational change.
        check: Option<CheckRes>,
    },
    /// SERVER_ADMIN: the admin flags before and after (see [`ADMIN_FLAGS`]).
    Admin {
        cause: String,
        old_admin: u8,
        new_admin: u8,
        requeued: u32,
    },
    /// SERVER_CHECK.
    Check(CheckRes),
}

/// The admin flags of a SERVER_ADMIN event, with their bits.
pub(crate) const ADMIN_FLAGS: &[(&str, u8)] = &[
    ("MAINT", 1),
    ("FMAINT", 2),
    ("IMAINT", 4),
    ("RMAINT", 8),
    ("CMAINT", 16),
    ("DRAIN", 32),
    ("FDRAIN", 64),
    ("IDRAIN", 128),
];

/// One server event, as the bus hands it to subscriptions (`Send`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerEvent {
    /// One of [`types`].
    pub kind: u32,
    pub name: Arc<str>,
    pub puid: i64,
    pub rid: i64,
    pub proxy_name: Arc<str>,
    pub proxy_uuid: i64,
    /// Epoch seconds.
    pub when: i64,
    pub detail: Detail,
}

/// Finds the live Lua Server object of an event (None once the server is
/// gone): set by the server model, which owns the Server class.
pub(crate) type LiveServer = fn(&Lua, &ServerEvent) -> mlua::Result<Option<Value>>;

/// Attaches a subscription to the event source and detaches it.
pub(crate) trait Source {
    /// Starts delivering events to `inbox`; returns a handle for `detach`.
    fn attach(&self, inbox: Arc<Inbox>) -> u64;
    fn detach(&self, id: u64);
}

/// The events waiting for one subscription, filled by the bus.
pub(crate) struct Inbox {
    /// The subscribed types.
    mask: u32,
    /// Server:event_sub: only this server's events (proxy uuid, puid, rid).
    server: Option<(i64, i64, i64)>,
    queue: Mutex<VecDeque<ServerEvent>>,
    paused: AtomicBool,
    ended: AtomicBool,
    /// Events dropped while paused.
    dropped: AtomicU64,
    wake: Notify,
    /// Where the callback was defined, for the warning.
    origin: String,
}

impl Inbox {
    fn new(mask: u32, server: Option<(i64, i64, i64)>, origin: String) -> Inbox {
        Inbox {
            mask,
            server,
            queue: Mutex::new(VecDeque::new()),
            paused: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            wake: Notify::new(),
            origin,
        }
    }

    /// Whether this subscription wants `ev`.
    pub(crate) fn wants(&self, ev: &ServerEvent) -> bool {
        self.mask & ev.kind != 0
            && self
                .server
                .is_none_or(|s| s == (ev.proxy_uuid, ev.puid, ev.rid))
            && !self.ended.load(Ordering::Relaxed)
    }

    /// Queues `ev` (from any thread). A paused subscription drops it; the
    /// event that takes the queue past [`MAX_PENDING`] pauses it, with
    /// HAProxy's warning and what to do about it.
    pub(crate) fn offer(&self, ev: &ServerEvent) {
        if !self.wants(ev) {
            return;
        }
        if self.paused.load(Ordering::Relaxed) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let len = {
            let Ok(mut q) = self.queue.lock() else { return };
            q.push_back(ev.clone());
            q.len()
        };
        if len > MAX_PENDING && !self.paused.swap(true, Ordering::Relaxed) {
            crate::log::warning(&format!(
                "Lua event_hdl: pausing the subscription because the handler fails to keep up \
                 the pace ({len} unconsumed events) from {}. Events are dropped until it catches \
                 up: make the handler faster, hand heavy work to a core.register_task() task, or \
                 subscribe to fewer event types.",
                self.origin
            ));
        }
        self.wake.notify_one();
    }

    fn pop(&self) -> Option<ServerEvent> {
        self.queue.lock().ok()?.pop_front()
    }

    fn is_empty(&self) -> bool {
        self.queue.lock().map(|q| q.is_empty()).unwrap_or(true)
    }

    /// A paused subscription whose queue has drained resumes.
    fn resume_if_drained(&self) {
        if self.paused.load(Ordering::Relaxed) && self.is_empty() {
            let lost = self.dropped.swap(0, Ordering::Relaxed);
            self.paused.store(false, Ordering::Relaxed);
            crate::log::notice(&format!(
                "Lua event_hdl: resuming the subscription from {} ({lost} events were dropped while it was paused).",
                self.origin
            ));
        }
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Relaxed);
        if let Ok(mut q) = self.queue.lock() {
            q.clear();
        }
        self.wake.notify_one();
    }
}

/// The native side of an EventSub object.
struct SubHandle {
    inbox: Arc<Inbox>,
    source: Arc<dyn Source>,
    id: u64,
}

impl SubHandle {
    fn unsub(&self) {
        if !self.inbox.ended.load(Ordering::Relaxed) {
            self.inbox.end();
            self.source.detach(self.id);
        }
    }
}

/// Reads the event type list: HAProxy's argument errors.
fn parse_types(v: &Value) -> mlua::Result<u32> {
    let Value::Table(t) = v else {
        return Err(mlua::Error::runtime(format!(
            "bad argument #1 to 'event_sub' (table of strings expected, got {})",
            v.type_name()
        )));
    };
    let mut mask = 0;
    for pair in t.pairs::<Value, Value>() {
        let (_, v) = pair?;
        let Value::String(s) = &v else {
            return Err(mlua::Error::runtime(
                "bad argument #1 to 'event_sub' (table of strings expected, got table)",
            ));
        };
        let name = s.to_str()?.to_string();
        match types::NAMES.iter().find(|(n, _)| *n == name) {
            Some((_, bit)) => mask |= bit,
            None => {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #1 to 'event_sub' ('{name}' event type is unknown)"
                )))
            }
        }
    }
    if mask == 0 {
        return Err(mlua::Error::runtime(
            "event_sub: no valid event types were provided",
        ));
    }
    Ok(mask)
}

/// Where `func` was defined ("file.lua:12"), for messages.
fn origin(lua: &Lua, func: &Function) -> String {
    let _ = lua;
    let info = func.info();
    match (info.short_src, info.line_defined) {
        (Some(src), Some(line)) => format!("{src}:{line}"),
        (Some(src), None) => src,
        _ => "?".to_string(),
    }
}

/// The wiring a state needs to subscribe: the event source and the live
/// server lookup, set once the server model exists.
#[derive(Clone)]
pub(crate) struct Wiring {
    pub source: Arc<dyn Source>,
    pub live: LiveServer,
}

/// `core.event_sub` / `Server:event_sub`: subscribes `func` to the types
/// in `types_arg` (of one server when `server` is set) and returns the
/// EventSub object, or nothing in a per-thread state other than the first
/// at load time.
pub(crate) fn subscribe(
    lua: &Lua,
    info: &Rc<StateInfo>,
    wiring: &Wiring,
    class: &crate::lua::class::Class,
    types_arg: Value,
    func: Value,
    server: Option<(i64, i64, i64)>,
) -> mlua::Result<MultiValue> {
    if info.phase.get() == Phase::Body && info.thread_num > 1 {
        return Ok(MultiValue::new());
    }
    let mask = parse_types(&types_arg)?;
    let Value::Function(func) = func else {
        return Err(mlua::Error::runtime(format!(
            "bad argument #2 to 'event_sub' (function expected, got {})",
            func.type_name()
        )));
    };
    let inbox = Arc::new(Inbox::new(mask, server, origin(lua, &func)));
    let id = wiring.source.attach(inbox.clone());
    let handle = SubHandle {
        inbox: inbox.clone(),
        source: wiring.source.clone(),
        id,
    };
    let sub = class.instantiate(lua, handle)?;
    tokio::task::spawn_local(runner(
        lua.clone(),
        info.clone(),
        inbox,
        func,
        sub.clone(),
        wiring.live,
    ));
    Ok(MultiValue::from_vec(vec![Value::Table(sub)]))
}

/// The EventSub class: `unsub()`.
pub(crate) fn class(lua: &Lua) -> mlua::Result<crate::lua::class::Class> {
    let class = crate::lua::class::Class::new(lua, "EventSub")?;
    class.method(
        "unsub",
        lua.create_function(|_, this: Table| {
            let ud: mlua::AnyUserData = this.raw_get(0)?;
            let h = ud.borrow::<SubHandle>()?;
            h.unsub();
            Ok(())
        })?,
    )?;
    Ok(class)
}

/// Delivers a subscription's events to its callback, one at a time.
async fn runner(
    lua: Lua,
    info: Rc<StateInfo>,
    inbox: Arc<Inbox>,
    func: Function,
    sub: Table,
    live: LiveServer,
) {
    loop {
        let ev = loop {
            if inbox.ended.load(Ordering::Relaxed) {
                return;
            }
            if let Some(ev) = inbox.pop() {
                break ev;
            }
            inbox.resume_if_drained();
            inbox.wake.notified().await;
        };
        let args = match event_args(&lua, &ev, &sub, live) {
            Ok(a) => a,
            Err(e) => {
                crate::log::log(
                    crate::log::ERR,
                    &format!("Lua event_hdl: {}.", crate::lua::errors::message(&e)),
                );
                continue;
            }
        };
        let ctx = ExecCtx::new(info.settings.task_budget(), true);
        match exec::run_coroutine::<()>(&lua, ctx, func.clone(), args).await {
            Ok(()) | Err(ExecError::Done) => {}
            Err(e) => crate::log::log(crate::log::ERR, &format!("Lua event_hdl: {}.", e.message())),
        }
        if inbox.is_empty() {
            inbox.resume_if_drained();
        }
    }
}

/// `event, data, sub, when`.
fn event_args(
    lua: &Lua,
    ev: &ServerEvent,
    sub: &Table,
    live: LiveServer,
) -> mlua::Result<MultiValue> {
    let data = lua.create_table()?;
    data.raw_set("name", &*ev.name)?;
    data.raw_set("puid", ev.puid)?;
    data.raw_set("rid", ev.rid)?;
    data.raw_set("proxy_name", &*ev.proxy_name)?;
    data.raw_set("proxy_uuid", ev.proxy_uuid)?;
    match &ev.detail {
        Detail::None => {}
        Detail::State {
            admin,
            cause,
            old_state,
            new_state,
            requeued,
            check,
        } => {
            let t = lua.create_table()?;
            t.raw_set("admin", *admin)?;
            if let Some(c) = check {
                t.raw_set("check", check_table(lua, c)?)?;
            }
            t.raw_set("cause", cause.as_str())?;
            t.raw_set("old_state", *old_state)?;
            t.raw_set("new_state", *new_state)?;
            t.raw_set("requeued", *requeued)?;
            data.raw_set("state", t)?;
        }
        Detail::Admin {
            cause,
            old_admin,
            new_admin,
            requeued,
        } => {
            let t = lua.create_table()?;
            t.raw_set("cause", cause.as_str())?;
            t.raw_set("old_admin", admin_table(lua, *old_admin)?)?;
            t.raw_set("new_admin", admin_table(lua, *new_admin)?)?;
            t.raw_set("requeued", *requeued)?;
            data.raw_set("admin", t)?;
        }
        Detail::Check(c) => data.raw_set("check", check_table(lua, c)?)?,
    }
    if ev.kind != types::SERVER_DEL {
        if let Some(server) = live(lua, ev)? {
            data.raw_set("reference", server)?;
        }
    }
    Ok(MultiValue::from_vec(vec![
        Value::String(lua.create_string(types::name(ev.kind))?),
        Value::Table(data),
        Value::Table(sub.clone()),
        Value::Integer(ev.when),
    ]))
}

fn check_table(lua: &Lua, c: &CheckRes) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("result", c.result)?;
    t.raw_set("agent", c.agent)?;
    t.raw_set("duration", c.duration_ms)?;
    let reason = lua.create_table()?;
    reason.raw_set("short", c.short)?;
    reason.raw_set("desc", c.desc)?;
    if let Some(code) = c.code {
        reason.raw_set("code", code)?;
    }
    t.raw_set("reason", reason)?;
    let health = lua.create_table()?;
    health.raw_set("cur", c.health_cur)?;
    health.raw_set("rise", c.rise)?;
    health.raw_set("fall", c.fall)?;
    t.raw_set("health", health)?;
    Ok(t)
}

fn admin_table(lua: &Lua, flags: u8) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for (name, bit) in ADMIN_FLAGS {
        t.raw_set(*name, flags & bit != 0)?;
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u32) -> ServerEvent {
        ServerEvent {
            kind,
            name: Arc::from("s1"),
            puid: 1,
            rid: 0,
            proxy_name: Arc::from("be"),
            proxy_uuid: 2,
            when: 0,
            detail: Detail::None,
        }
    }

    #[test]
    fn pauses_past_the_limit_and_resumes_once_drained() {
        let inbox = Inbox::new(types::SERVER, None, "t.lua:1".into());
        for _ in 0..MAX_PENDING + 5 {
            inbox.offer(&event(types::SERVER_STATE));
        }
        assert!(inbox.paused.load(Ordering::Relaxed));
        assert_eq!(inbox.queue.lock().unwrap().len(), MAX_PENDING + 1);
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 4);
        while inbox.pop().is_some() {}
        inbox.resume_if_drained();
        assert!(!inbox.paused.load(Ordering::Relaxed));
        inbox.offer(&event(types::SERVER_UP));
        assert_eq!(inbox.queue.lock().unwrap().len(), 1);
    }

    #[test]
    fn filters_by_type_and_server() {
        let inbox = Inbox::new(types::SERVER_UP, Some((2, 1, 0)), "t.lua:1".into());
        assert!(inbox.wants(&event(types::SERVER_UP)));
        assert!(!inbox.wants(&event(types::SERVER_DOWN)));
        let mut other = event(types::SERVER_UP);
        other.puid = 3;
        assert!(!inbox.wants(&other));
    }

    #[test]
    fn type_names() {
        assert_eq!(types::name(types::SERVER_CHECK), "SERVER_CHECK");
        let lua = Lua::new();
        let t = lua
            .create_sequence_from(["SERVER_UP", "SERVER_DOWN"])
            .unwrap();
        assert_eq!(
            parse_types(&Value::Table(t)).unwrap(),
            types::SERVER_UP | types::SERVER_DOWN
        );
        let t = lua.create_sequence_from(["NOPE"]).unwrap();
        let e = parse_types(&Value::Table(t)).unwrap_err().to_string();
        assert!(e.contains("'NOPE' event type is unknown"), "{e}");
    }
}
