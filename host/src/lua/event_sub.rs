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

use crate::backend::{
    AdminFlags, CheckResult, EventBus, EventDetail, EventMask, ServerEvent, SubscriptionId,
};
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

/// The events waiting for one subscription, filled by the bus.
pub(crate) struct Inbox {
    /// The subscribed types.
    mask: EventMask,
    /// Server:event_sub: only this server's events (its process-wide id).
    server: Option<usize>,
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
    fn new(mask: EventMask, server: Option<usize>, origin: String) -> Inbox {
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
        self.mask.contains(ev.kind)
            && self.server.is_none_or(|gid| gid == ev.server_gid)
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
    bus: Arc<EventBus>,
    id: SubscriptionId,
}

impl SubHandle {
    fn unsub(&self) {
        if !self.inbox.ended.load(Ordering::Relaxed) {
            self.inbox.end();
            self.bus.unsubscribe(self.id);
        }
    }
}

/// Reads the event type list: HAProxy's argument errors.
fn parse_types(v: &Value) -> mlua::Result<EventMask> {
    let Value::Table(t) = v else {
        return Err(mlua::Error::runtime(format!(
            "bad argument #1 to 'event_sub' (table of strings expected, got {})",
            v.type_name()
        )));
    };
    let mut mask = EventMask::NONE;
    for pair in t.pairs::<Value, Value>() {
        let (_, v) = pair?;
        let Value::String(s) = &v else {
            return Err(mlua::Error::runtime(
                "bad argument #1 to 'event_sub' (table of strings expected, got table)",
            ));
        };
        let name = s.to_str()?.to_string();
        match EventMask::from_name(&name) {
            Some(m) => mask = mask.union(m),
            None => {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #1 to 'event_sub' ('{name}' event type is unknown)"
                )))
            }
        }
    }
    if mask == EventMask::NONE {
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

/// `core.event_sub` / `Server:event_sub`: subscribes `func` to the types
/// in `types_arg` (of one server when `server` is set) and returns the
/// EventSub object, or nothing in a per-thread state other than the first
/// at load time.
pub(crate) fn subscribe(
    lua: &Lua,
    info: &Rc<StateInfo>,
    types_arg: Value,
    func: Value,
    server: Option<usize>,
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
    let bus = info.registry.borrow().events().clone();
    let sink_inbox = inbox.clone();
    let id = bus.subscribe(mask, Arc::new(move |ev: &ServerEvent| sink_inbox.offer(ev)));
    let handle = SubHandle {
        inbox: inbox.clone(),
        bus,
        id,
    };
    let class = class_of(lua)?;
    let sub = class.instantiate(lua, handle)?;
    tokio::task::spawn_local(runner(lua.clone(), info.clone(), inbox, func, sub.clone()));
    Ok(MultiValue::from_vec(vec![Value::Table(sub)]))
}

/// The EventSub class of this state (made on first use).
fn class_of(lua: &Lua) -> mlua::Result<crate::lua::class::Class> {
    if let Some(c) = lua.app_data_ref::<EventSubClass>() {
        return Ok(c.0.clone());
    }
    let c = class(lua)?;
    lua.set_app_data(EventSubClass(c.clone()));
    Ok(c)
}

struct EventSubClass(crate::lua::class::Class);

/// Installs `core.event_sub`.
pub(crate) fn install(lua: &Lua, core: &Table, info: &Rc<StateInfo>) -> mlua::Result<()> {
    let info = info.clone();
    core.set(
        "event_sub",
        lua.create_function(move |lua, (types_arg, func): (Value, Value)| {
            subscribe(lua, &info, types_arg, func, None)
        })?,
    )
}

/// `Server:event_sub(types, cb)`: the subscription sees only this
/// server's events. Added to the Server class.
pub(crate) fn server_method(
    lua: &Lua,
    server_class: &crate::lua::class::Class,
) -> mlua::Result<()> {
    server_class.method(
        "event_sub",
        lua.create_function(|lua, (this, types_arg, func): (Value, Value, Value)| {
            let h = crate::lua::class::native::<crate::lua::proxy_index::ServerHandle>(
                &this,
                "Server",
                "event_sub",
            )?;
            let gid = h.srv.gid;
            drop(h);
            let info = crate::lua::txn_methods::state_info(lua)?;
            subscribe(lua, &info, types_arg, func, Some(gid))
        })?,
    )
}

/// The EventSub class: `unsub()`.
fn class(lua: &Lua) -> mlua::Result<crate::lua::class::Class> {
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
async fn runner(lua: Lua, info: Rc<StateInfo>, inbox: Arc<Inbox>, func: Function, sub: Table) {
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
        let args = match event_args(&lua, &ev, &sub) {
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
fn event_args(lua: &Lua, ev: &ServerEvent, sub: &Table) -> mlua::Result<MultiValue> {
    let data = lua.create_table_with_capacity(0, 8)?;
    data.raw_set("name", &*ev.name)?;
    data.raw_set("puid", ev.puid)?;
    data.raw_set("rid", ev.rid)?;
    data.raw_set("proxy_name", &*ev.proxy_name)?;
    data.raw_set("proxy_uuid", ev.proxy_uuid)?;
    match &ev.detail {
        EventDetail::None | EventDetail::InetAddr { .. } => {}
        EventDetail::State {
            admin,
            check,
            cause,
            old_state,
            new_state,
            requeued,
        } => {
            let t = lua.create_table_with_capacity(0, 7)?;
            t.raw_set("admin", *admin)?;
            if let Some(c) = check {
                t.raw_set("check", check_table(lua, c)?)?;
            }
            t.raw_set("cause", *cause)?;
            t.raw_set("old_state", old_state.name())?;
            t.raw_set("new_state", new_state.name())?;
            t.raw_set("requeued", *requeued)?;
            data.raw_set("state", t)?;
        }
        EventDetail::Admin {
            cause,
            old_admin,
            new_admin,
            requeued,
        } => {
            let t = lua.create_table_with_capacity(0, 4)?;
            t.raw_set("cause", *cause)?;
            t.raw_set("old_admin", admin_table(lua, *old_admin)?)?;
            t.raw_set("new_admin", admin_table(lua, *new_admin)?)?;
            t.raw_set("requeued", *requeued)?;
            data.raw_set("admin", t)?;
        }
        EventDetail::Check(c) => data.raw_set("check", check_table(lua, c)?)?,
    }
    // Looked up now, as HAProxy does: absent once the server is gone.
    if let Some(srv) = ev.reference() {
        let reg = crate::lua::proxy_index::registry(lua)?;
        if let Some(be) = reg.get(&ev.proxy_name).cloned() {
            let obj = crate::lua::proxy_index::new_server(lua, &reg, &be, &srv)?;
            data.raw_set("reference", obj)?;
        }
    }
    let when = ev
        .when
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(MultiValue::from_vec(vec![
        Value::String(lua.create_string(ev.kind.name())?),
        Value::Table(data),
        Value::Table(sub.clone()),
        Value::Integer(when),
    ]))
}

fn check_table(lua: &Lua, c: &CheckResult) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 5)?;
    t.raw_set("result", c.result.name())?;
    t.raw_set("agent", c.agent)?;
    t.raw_set("duration", c.duration_ms)?;
    let reason = lua.create_table_with_capacity(0, 3)?;
    reason.raw_set("short", c.reason_short.as_str())?;
    reason.raw_set("desc", c.reason_desc.as_str())?;
    // HAProxy sets the code only for checks that looked at the answer.
    if c.reason_code != 0 {
        reason.raw_set("code", c.reason_code)?;
    }
    t.raw_set("reason", reason)?;
    let health = lua.create_table_with_capacity(0, 3)?;
    health.raw_set("cur", c.health_cur)?;
    health.raw_set("rise", c.rise)?;
    health.raw_set("fall", c.fall)?;
    t.raw_set("health", health)?;
    Ok(t)
}

/// HAProxy's admin matrix: every flag, true or false.
fn admin_table(lua: &Lua, flags: AdminFlags) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 8)?;
    let on = |bits: u8| flags.0 & bits != 0;
    t.raw_set("MAINT", on(AdminFlags::MAINT))?;
    t.raw_set("FMAINT", on(AdminFlags::FMAINT))?;
    t.raw_set("IMAINT", on(AdminFlags::IMAINT))?;
    t.raw_set("RMAINT", on(AdminFlags::RMAINT))?;
    t.raw_set("CMAINT", on(AdminFlags::CMAINT))?;
    t.raw_set("DRAIN", on(AdminFlags::DRAIN))?;
    t.raw_set("FDRAIN", on(AdminFlags::FDRAIN))?;
    t.raw_set("IDRAIN", on(AdminFlags::IDRAIN))?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ServerEventKind;

    fn event(kind: ServerEventKind) -> ServerEvent {
        ServerEvent::for_test(kind, 7)
    }

    #[test]
    fn pauses_past_the_limit_and_resumes_once_drained() {
        let inbox = Inbox::new(EventMask::ALL, None, "t.lua:1".into());
        for _ in 0..MAX_PENDING + 5 {
            inbox.offer(&event(ServerEventKind::State));
        }
        assert!(inbox.paused.load(Ordering::Relaxed));
        assert_eq!(inbox.queue.lock().unwrap().len(), MAX_PENDING + 1);
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 4);
        while inbox.pop().is_some() {}
        inbox.resume_if_drained();
        assert!(!inbox.paused.load(Ordering::Relaxed));
        inbox.offer(&event(ServerEventKind::Up));
        assert_eq!(inbox.queue.lock().unwrap().len(), 1);
    }

    #[test]
    fn filters_by_type_and_server() {
        let up = EventMask::NONE.with(ServerEventKind::Up);
        let inbox = Inbox::new(up, Some(7), "t.lua:1".into());
        assert!(inbox.wants(&event(ServerEventKind::Up)));
        assert!(!inbox.wants(&event(ServerEventKind::Down)));
        let other = ServerEvent::for_test(ServerEventKind::Up, 8);
        assert!(!inbox.wants(&other));
    }

    #[test]
    fn type_names() {
        let lua = Lua::new();
        let t = lua
            .create_sequence_from(["SERVER_UP", "SERVER_DOWN"])
            .unwrap();
        let m = parse_types(&Value::Table(t)).unwrap();
        assert!(m.contains(ServerEventKind::Up) && m.contains(ServerEventKind::Down));
        assert!(!m.contains(ServerEventKind::State));
        let t = lua.create_sequence_from(["NOPE"]).unwrap();
        let e = parse_types(&Value::Table(t)).unwrap_err().to_string();
        assert!(e.contains("'NOPE' event type is unknown"), "{e}");
    }
}
