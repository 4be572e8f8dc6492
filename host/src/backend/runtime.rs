//! The changes the model accepts at run time, with HAProxy 3.0's rules and
//! messages: adding and deleting servers, administrative state (ready,
//! drain, maintenance), address, weight, maxconn, operational state and
//! check results. Each change is published on the event bus.
//!
//! Callers: the CLI (`add server`, `set server ...`), the check engine
//! ([`Backend::set_oper_state`], [`Backend::report_check`]) and the Lua
//! Server class. Changes to one backend are serialised by its writer lock;
//! requests never take it.

use super::balance::Farm;
use super::events::{CheckOutcome, CheckResult, EventDetail, ServerEvent, ServerEventKind};
use super::registry::Registry;
use super::server::{unix_now, CheckFlags, Server, ServerInit};
use super::state::{
    admin_steps, oper_after_admin, AdminFlags, AdminState, AdminStep, OperCause, OperState,
};
use super::{next_gid, Backend};
use crate::config::{Balance, ServerAddr, ServerDef};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

/// A dynamic server to add (`add server BACKEND/NAME ADDR [options]`).
pub struct AddServer {
    /// The server line's settings (name, address, weight, maxconn, backup,
    /// check...), as the configuration parser reads them.
    pub def: ServerDef,
    /// Start ready and up instead of in forced maintenance (HAProxy's
    /// default for dynamic servers). The CLI never asks for it: HAProxy
    /// 3.0 refuses `enabled` on `add server`. `disabled` in `def` is
    /// ignored.
    pub enabled: bool,
}

/// HAProxy's message when a weight is out of range.
const WEIGHT_RANGE: &str = "Absolute weight can only be between 0 and 256 inclusive.";

impl Registry {
    /// Adds a dynamic server (HAProxy's `add server`). It starts in forced
    /// maintenance and down unless `enabled`; its checks, if any, start
    /// disabled (`enable health` starts them). Errors are HAProxy's CLI
    /// messages (without the trailing newline).
    pub fn add_server(&self, backend: &str, add: &AddServer) -> Result<Arc<Server>, String> {
        let be = self.get(backend).ok_or("No such backend.")?;
        if be.balance() == Balance::Source {
            // HAProxy: only algorithms with BE_LB_PROP_DYN (map-based hashing
            // is not).
            return Err(
                "Backend must use a dynamic load balancing to support dynamic servers.".into(),
            );
        }
        let addr = match &add.def.addr {
            ServerAddr::Ip(a) => *a,
            // A dynamic server does not resolve names (HAProxy: no resolution
            // method), so only addresses are accepted.
            ServerAddr::Host { host, .. } => {
                return Err(format!("could not parse address '{host}'"));
            }
        };
        let weight = add.def.weight.unwrap_or(1);
        if weight > 256 {
            return Err(WEIGHT_RANGE.into());
        }
        let _w = be.lock_writer();
        let farm = be.farm.load_full();
        if farm.find(&add.def.name).is_some() {
            return Err("Already exists a server with the same name in backend.".into());
        }
        // The first id not used in the backend, from 1 on.
        let mut puid = 1u32;
        while farm.servers.iter().any(|s| s.puid == puid) {
            puid += 1;
        }
        let rid = self.next_rid();
        let (admin, oper) = if add.enabled {
            (AdminFlags::default(), OperState::Running)
        } else {
            (AdminFlags(AdminFlags::FMAINT), OperState::Stopped)
        };
        let srv = Arc::new(Server::new(ServerInit {
            name: Arc::from(add.def.name.as_str()),
            addr,
            puid,
            rid,
            weight,
            maxconn: add.def.maxconn.unwrap_or(0),
            backup: add.def.backup,
            dynamic: true,
            on_marked: super::server::OnMarked::of(&add.def),
            admin,
            oper,
            check: if add.def.check {
                CheckFlags::CONFIGURED
            } else {
                0
            },
            gid: next_gid(),
            proxy_name: be.name_arc().clone(),
            proxy_uuid: be.uuid(),
            since: unix_now(),
        }));
        // Set before the Add event: the check engine reads it then.
        let _ = srv.added_with.set(Box::new(add.def.clone()));
        let mut servers = farm.servers.to_vec();
        servers.push(srv.clone());
        be.farm.store(Arc::new(Farm::build(be.balance(), servers)));
        be.publish(ServerEventKind::Add, &srv, || EventDetail::None);
        be.wake_all(&srv);
        crate::log::notice("New server registered.");
        Ok(srv)
    }

    /// Deletes a server (HAProxy's `del server`): refused unless it is in
    /// maintenance with no connection and nothing queued. Requests already
    /// holding a slot on it complete; it leaves the load-balancing tables
    /// first. Errors are HAProxy's CLI messages.
    pub fn del_server(&self, backend: &str, server: &str) -> Result<(), String> {
        let be = self.get(backend).ok_or("No such backend.")?;
        let _w = be.lock_writer();
        let farm = be.farm.load_full();
        let srv = farm.find(server).ok_or("No such server.")?.clone();
        if srv.track.is_tracked() {
            return Err("This server cannot be removed at runtime due to other configuration elements pointing to it.".into());
        }
        if !srv.admin().in_maint() {
            return Err("Only servers in maintenance mode can be deleted.".into());
        }
        // The maintenance flag was stored before this read: a request that
        // takes a slot after it sees the flag and backs out (Server::try_take).
        if srv.current() > 0 || srv.pending() > 0 {
            return Err("Server still has connections attached to it, cannot remove it.".into());
        }
        let servers: Vec<Arc<Server>> = farm
            .servers
            .iter()
            .filter(|s| s.gid != srv.gid)
            .cloned()
            .collect();
        be.farm.store(Arc::new(Farm::build(be.balance(), servers)));
        srv.mark_deleted();
        self.note_deletion();
        be.publish(ServerEventKind::Del, &srv, || EventDetail::None);
        be.wake_all(&srv);
        crate::log::notice("Server deleted.");
        Ok(())
    }
}

impl Backend {
    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        // A panic while holding it left no half-made change (changes are
        // single stores), so a poisoned lock is still usable.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(
        &self,
        kind: ServerEventKind,
        srv: &Arc<Server>,
        detail: impl FnOnce() -> EventDetail,
    ) {
        self.events
            .publish(kind, || ServerEvent::new(kind, srv, detail()));
    }

    /// Queued requests pick again: a server back in service has room, and
    /// those waiting for one now out of service must move on.
    fn wake_all(&self, srv: &Server) {
        srv.queue.wake_all();
        self.queue.wake_all();
    }

    /// Sets the administrative state as HAProxy's `set server B/S state
    /// ready|drain|maint` and Lua's `set_ready`/`set_drain`/`set_maint` do.
    /// Entering maintenance takes the server down; leaving it brings it up
    /// (the checks, if any, then decide). Publishes SERVER_ADMIN per flag
    /// change, and SERVER_DOWN/UP and SERVER_STATE when the operational state
    /// changes.
    pub fn set_admin_state(&self, srv: &Arc<Server>, state: AdminState) {
        {
            let _w = self.lock_writer();
            for step in admin_steps(state) {
                self.apply_admin_step(srv, step);
            }
        }
        self.propagate_admin(srv);
    }

    /// Sets or clears administrative flags directly (e.g. RMAINT, or
    /// IMAINT/IDRAIN for tracking), one event per effective change.
    pub fn change_admin_flag(&self, srv: &Arc<Server>, flag: u8, on: bool) {
        let step = if on {
            AdminStep::Set(flag)
        } else {
            AdminStep::Clear(flag)
        };
        let changed = {
            let _w = self.lock_writer();
            self.apply_admin_step(srv, step)
        };
        if changed {
            self.propagate_admin(srv);
        }
    }

    /// Applies one flag change; false when it changed nothing.
    fn apply_admin_step(&self, srv: &Arc<Server>, step: AdminStep) -> bool {
        let before = srv.admin();
        let after = step.apply(before);
        if before == after || srv.is_deleted() {
            return false;
        }
        let old_oper = srv.oper();
        let mut new_oper = oper_after_admin(before, after, old_oper);
        // A tracking server leaving maintenance takes the tracked one's
        // state, not UP (HAProxy's `srv_clear_admin_flag`).
        if new_oper != OperState::Stopped && !after.in_maint() {
            if let Some((_, tracked)) = srv.track.tracked() {
                if tracked.oper() == OperState::Stopped {
                    new_oper = OperState::Stopped;
                }
            }
        }
        srv.store_admin(after);
        srv.store_oper(new_oper);
        let left_maint = before.in_maint() && !after.in_maint();
        if after.in_maint() && !before.in_maint() {
            srv.lose_health();
        }
        self.on_marked(srv, old_oper, new_oper, left_maint);
        self.publish(ServerEventKind::Admin, srv, || EventDetail::Admin {
            cause: "",
            old_admin: before,
            new_admin: after,
            requeued: 0,
        });
        self.after_oper_change(srv, old_oper, new_oper, true, "", None);
        self.wake_all(srv);
        true
    }

    /// HAProxy's `on-marked-down shutdown-sessions` and `on-marked-up
    /// shutdown-backup-sessions` for a change of `srv` from `old` to `new`
    /// (`_srv_update_status_op`/`_adm`): going down (a check, tracking,
    /// forcing, entering maintenance) kills its streams; coming up (NOLB to
    /// UP included), or leaving maintenance whatever the state reached,
    /// kills the backup servers' streams when `srv` is active and weighted.
    fn on_marked(&self, srv: &Server, old: OperState, new: OperState, left_maint: bool) {
        let on = srv.on_marked;
        if old != OperState::Stopped && new == OperState::Stopped {
            if on.shutdown_sessions {
                self.kill_server_streams(srv);
            }
        } else if (left_maint || (old != new && new.takes_new_traffic()))
            && on.shutdown_backup_sessions
            && !srv.backup
            && srv.weight() > 0
        {
            self.kill_backup_streams();
        }
    }

    /// Publishes UP/DOWN and STATE for an operational change, and keeps the
    /// counters (`chkdown`, `lastchg`).
    fn after_oper_change(
        &self,
        srv: &Arc<Server>,
        old: OperState,
        new: OperState,
        admin: bool,
        cause: &'static str,
        check: Option<&CheckResult>,
    ) {
        if old == new {
            return;
        }
        srv.counters
            .last_change
            .store(unix_now(), Ordering::Relaxed);
        if old == OperState::Stopped {
            self.publish(ServerEventKind::Up, srv, || EventDetail::None);
        } else if new == OperState::Stopped {
            srv.counters
                .down_transitions
                .fetch_add(1, Ordering::Relaxed);
            self.publish(ServerEventKind::Down, srv, || EventDetail::None);
        }
        self.publish(ServerEventKind::State, srv, || EventDetail::State {
            admin,
            check: check.map(|c| Box::new(c.clone())),
            cause,
            old_state: old,
            new_state: new,
            requeued: 0,
        });
    }

    /// Sets the operational state (the check engine: UP/DOWN/NOLB after
    /// rise/fall; Lua `check_force_*`; the CLI `set server ... health`).
    /// Ignored (false) while the server is in maintenance, where HAProxy
    /// pauses checks, or deleted. `check` is the result behind a change by a
    /// check (`cause` Health or Agent), passed on in SERVER_STATE.
    pub fn set_oper_state(
        &self,
        srv: &Arc<Server>,
        state: OperState,
        cause: OperCause,
        check: Option<&CheckResult>,
    ) -> bool {
        let old = {
            let _w = self.lock_writer();
            if srv.admin().in_maint() || srv.is_deleted() {
                return false;
            }
            let old = srv.oper();
            srv.store_oper(state);
            self.on_marked(srv, old, state, false);
            self.after_oper_change(srv, old, state, false, cause.text(), check);
            self.wake_all(srv);
            old
        };
        // Outside the lock: a tracker may be in this very backend.
        if old != state {
            self.propagate_oper(srv, state);
        }
        true
    }

    /// A forced operational change (CLI `set server ... health`, Lua
    /// `check_force_up/nolb/down`), as HAProxy's `srv_set_running`,
    /// `_stopping` and `_stopped`: nothing in maintenance or when already
    /// there (UP counting STARTING and RUNNING alike); otherwise HAProxy's
    /// line ("Server be/s1 is DOWN, changed from CLI. ..."), the change, and
    /// the trackers following.
    pub fn force_oper_state(&self, srv: &Arc<Server>, state: OperState, cause: OperCause) {
        if srv.admin().in_maint() || srv.is_deleted() || super::track::same_state(srv.oper(), state)
        {
            return;
        }
        if state == OperState::Stopped {
            srv.lose_health();
        }
        let middle = format!(", {}", cause.text());
        super::track::log_oper_change(self, srv, state, &middle);
        self.set_oper_state(srv, state, cause, None);
    }

    /// Publishes a check's result (SERVER_CHECK) and counts failures
    /// (`chkfail`). The state change it may lead to is
    /// [`Backend::set_oper_state`]'s business.
    pub fn report_check(&self, srv: &Arc<Server>, result: &CheckResult) {
        if result.result == CheckOutcome::Failed {
            srv.counters.failed_checks.fetch_add(1, Ordering::Relaxed);
        }
        let _w = self.lock_writer();
        self.publish(ServerEventKind::Check, srv, || {
            EventDetail::Check(Box::new(result.clone()))
        });
    }

    /// Changes the address (CLI `set server B/S addr`, Lua `set_addr`). New
    /// connections go to the new address; pooled idle connections to the old
    /// one are not reused. Publishes SERVER_INETADDR. Returns the old address.
    pub fn set_addr(&self, srv: &Arc<Server>, addr: SocketAddr) -> SocketAddr {
        let _w = self.lock_writer();
        let prev = srv.addr();
        if prev != addr {
            srv.store_addr(addr);
            self.publish(ServerEventKind::InetAddr, srv, || EventDetail::InetAddr {
                prev,
                next: addr,
                purge_conn: true,
            });
        }
        prev
    }

    /// HAProxy's `srv_update_addr_port`: changes the address and/or port
    /// given as text (CLI `set server B/S addr A [port P]`, Lua
    /// `set_addr(a[, p])`) and returns HAProxy's report, e.g. "IP changed
    /// from '10.0.0.1' to '10.0.0.2', port changed from '80' to '81' by 'Lua
    /// script'", or "nothing changed", or the error ("Invalid addr 'x'").
    /// `by` names the updater ("stats socket command", "Lua script").
    /// Port maps (`+N`/`-N`) are not supported: the number is taken as is.
    pub fn update_addr_port(
        &self,
        srv: &Arc<Server>,
        addr: Option<&str>,
        port: Option<&str>,
        by: &str,
    ) -> String {
        let cur = srv.addr();
        let ip = match addr {
            Some(a) => match a.parse::<std::net::IpAddr>() {
                Ok(ip) => ip,
                Err(_) => return format!("Invalid addr '{a}'"),
            },
            None => cur.ip(),
        };
        let new_port = match port {
            Some(p) => match leading_int(p) {
                Some(n) => n as u16,
                None => return format!("problem converting port '{p}' to an int"),
            },
            None => cur.port(),
        };
        let mut msg = String::new();
        if ip != cur.ip() {
            msg = format!("IP changed from '{}' to '{ip}'", cur.ip());
        }
        if new_port != cur.port() {
            if !msg.is_empty() {
                msg.push_str(", ");
            }
            msg.push_str(&format!(
                "port changed from '{}' to '{new_port}'",
                cur.port()
            ));
        }
        if msg.is_empty() {
            return "nothing changed".into();
        }
        self.set_addr(srv, SocketAddr::new(ip, new_port));
        msg.push_str(&format!(" by '{by}'"));
        msg
    }

    /// HAProxy's `server_parse_maxconn_change_request`: `None` when applied,
    /// else the error.
    pub fn set_maxconn_request(&self, srv: &Arc<Server>, text: &str) -> Option<&'static str> {
        if text.is_empty() {
            return Some("Require <maxconn>.");
        }
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        let len = digits.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return Some("maxconn string empty or preceded by garbage");
        }
        if len != digits.len() {
            return Some("Trailing garbage in maxconn string");
        }
        let v: i64 = text.parse().unwrap_or(0);
        self.set_maxconn(srv, v.max(0) as usize);
        None
    }

    /// HAProxy's `server_parse_weight_change_request`: `None` when applied,
    /// else the error.
    pub fn set_weight_request(&self, srv: &Arc<Server>, text: &str) -> Option<String> {
        Self::parse_weight(srv, text)
            .and_then(|w| self.set_weight(srv, w))
            .err()
    }

    /// Sets the weight (0..=256; CLI `set server B/S weight`, Lua
    /// `set_weight`) and rebuilds the balancing tables. With a static
    /// algorithm (`balance source`) only 0 and the configured weight are
    /// accepted, as in HAProxy. Errors are HAProxy's messages.
    pub fn set_weight(&self, srv: &Arc<Server>, weight: u32) -> Result<(), String> {
        if weight > 256 {
            return Err(WEIGHT_RANGE.into());
        }
        if self.balance() == Balance::Source && weight != 0 && weight != srv.initial_weight {
            return Err(
                "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'."
                    .into(),
            );
        }
        let _w = self.lock_writer();
        if srv.weight() == weight {
            return Ok(());
        }
        srv.store_weight(weight);
        let farm = self.farm.load_full();
        self.farm
            .store(Arc::new(Farm::build(self.balance(), farm.servers.to_vec())));
        self.wake_all(srv);
        Ok(())
    }

    /// Parses a weight request as HAProxy's `set weight` does: `N` (0..=256)
    /// or `N%` of the configured weight, with HAProxy's messages.
    pub fn parse_weight(srv: &Server, text: &str) -> Result<u32, String> {
        if text.is_empty() {
            return Err("Require <weight> or <weight%>.".into());
        }
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        let len = digits.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return Err("Empty weight string empty or preceded by garbage".into());
        }
        let sign_len = text.len() - digits.len();
        let w: i64 = text[..sign_len + len].parse().unwrap_or(i64::MAX);
        let rest = &digits[len..];
        if rest == "%" {
            if w < 0 {
                return Err("Relative weight must be positive.".into());
            }
            let w = i64::from(srv.initial_weight) * w.min(25_600) / 100;
            return Ok(w.min(256) as u32);
        }
        if !(0..=256).contains(&w) {
            return Err(WEIGHT_RANGE.into());
        }
        if !rest.is_empty() {
            return Err("Trailing garbage in weight string".into());
        }
        Ok(w as u32)
    }

    /// Sets `maxconn` (0: unlimited; CLI `set maxconn server`, Lua
    /// `set_maxconn`); queued requests try again.
    pub fn set_maxconn(&self, srv: &Arc<Server>, maxconn: usize) {
        let _w = self.lock_writer();
        srv.store_maxconn(maxconn);
        self.wake_all(srv);
    }
}

/// The integer at the start of `text` (strtol-like: optional sign, digits),
/// None without digits.
fn leading_int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let len = digits.bytes().take_while(u8::is_ascii_digit).count();
    if len == 0 {
        return None;
    }
    let sign_len = text.len() - digits.len();
    text[..sign_len + len].parse().ok()
}

impl Registry {
    /// HAProxy's revision id for a server added now: a process-wide counter
    /// that moves on (by one) once after any run of deletions, so a server
    /// re-added under a deleted one's name gets another rid.
    fn next_rid(&self) -> u32 {
        let mut cnt = self
            .reuse_counter()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *cnt & 1 == 1 {
            *cnt += 1;
        }
        (*cnt / 2) as u32
    }

    fn note_deletion(&self) {
        let mut cnt = self
            .reuse_counter()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *cnt |= 1;
    }
}
