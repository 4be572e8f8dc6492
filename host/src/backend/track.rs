//! Server tracking (`track [BACKEND/]SERVER`): a tracking server runs no
//! check of its own and takes the state of the server it tracks. Changes
//! flow down the chain as HAProxy's `srv_set_stopped` / `srv_set_running` /
//! `srv_set_admin_flag` send them: each tracker changes in turn (newest
//! tracker first, depth first), logs "Server B/S is DOWN via B2/S2. ..."
//! and publishes its own SERVER_DOWN/UP and SERVER_STATE events.
//!
//! Links are weak both ways: tracking never keeps a server or a backend
//! alive. They are made once, when the checks are prepared from the
//! configuration; dynamic servers neither track nor are tracked.

use super::server::Server;
use super::state::{AdminFlags, OperCause, OperState};
use super::Backend;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// One end of a tracking link.
#[derive(Clone)]
pub struct Link {
    pub backend: Weak<Backend>,
    pub server: Weak<Server>,
}

impl Link {
    fn new(backend: &Arc<Backend>, server: &Arc<Server>) -> Link {
        Link {
            backend: Arc::downgrade(backend),
            server: Arc::downgrade(server),
        }
    }

    /// Both ends, while they live.
    pub fn upgrade(&self) -> Option<(Arc<Backend>, Arc<Server>)> {
        Some((self.backend.upgrade()?, self.server.upgrade()?))
    }
}

/// A server's place in tracking chains.
#[derive(Default)]
pub struct Tracking {
    /// The server this one tracks.
    tracked: OnceLock<Link>,
    /// The servers tracking this one, newest first (HAProxy's
    /// `trackers` list, which `Server:get_trackers()` walks).
    trackers: Mutex<Vec<Link>>,
}

impl Tracking {
    /// The server tracked, if any (and still alive).
    pub fn tracked(&self) -> Option<(Arc<Backend>, Arc<Server>)> {
        self.tracked.get()?.upgrade()
    }

    /// Whether this server tracks another one.
    pub fn is_tracking(&self) -> bool {
        self.tracked.get().is_some()
    }

    /// Some server was set to track this one (HAProxy's SRV_F_NAME_REFD,
    /// which stays set): the server cannot be deleted.
    pub fn is_tracked(&self) -> bool {
        !self
            .trackers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The live trackers, newest first.
    pub fn trackers(&self) -> Vec<(Arc<Backend>, Arc<Server>)> {
        self.trackers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Link::upgrade)
            .filter(|(_, s)| !s.is_deleted())
            .collect()
    }
}

/// Makes `tracker` (of `tracker_be`) track `tracked` (of `tracked_be`),
/// and gives it the tracked server's current state. Returns false when
/// `tracker` already tracks a server.
pub fn link(
    tracker_be: &Arc<Backend>,
    tracker: &Arc<Server>,
    tracked_be: &Arc<Backend>,
    tracked: &Arc<Server>,
) -> bool {
    if tracker
        .track
        .tracked
        .set(Link::new(tracked_be, tracked))
        .is_err()
    {
        return false;
    }
    tracked
        .track
        .trackers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(0, Link::new(tracker_be, tracker));
    true
}

/// The end of HAProxy's line for a server's change (`srv_append_more`):
/// the servers left (after going DOWN) or online (UP, stopping) and the
/// sessions. `act`/`bck` count the usable servers after the change.
pub fn change_tail(be: &Backend, srv: &Server, down: bool, act: usize, bck: usize) -> String {
    let on_backup = if act == 0 && bck > 0 {
        " Running on backup."
    } else {
        ""
    };
    if down {
        format!(
            ". {act} active and {bck} backup servers left.{on_backup} {} sessions active, 0 requeued, {} remaining in queue.",
            srv.current(),
            be.pending()
        )
    } else {
        format!(
            ". {act} active and {bck} backup servers online.{on_backup} 0 sessions requeued, {} total in queue.",
            be.pending()
        )
    }
}

/// The usable servers of `be` (HAProxy's `srv_act`, `srv_bck`) once `srv`
/// is in operational state `new`: a server counts when it takes new
/// traffic (not DOWN, not NOLB), is out of maintenance and drain, and has
/// a weight.
pub fn counts_after(be: &Backend, srv: &Server, new: OperState) -> (usize, usize) {
    let (mut act, mut bck) = be.up_servers();
    let slot = if srv.backup { &mut bck } else { &mut act };
    if srv.usable() {
        *slot = slot.saturating_sub(1);
    }
    let admin = srv.admin();
    if new.takes_new_traffic() && !admin.in_maint() && !admin.draining() && srv.weight() > 0 {
        *slot += 1;
    }
    (act, bck)
}

/// "Server" or "Backup Server", as HAProxy's state lines begin.
pub fn who(srv: &Server) -> &'static str {
    if srv.backup {
        "Backup Server"
    } else {
        "Server"
    }
}

/// How HAProxy's line names the state reached.
fn state_word(state: OperState) -> &'static str {
    match state {
        OperState::Stopped => "DOWN",
        OperState::Stopping => "stopping",
        OperState::Starting | OperState::Running => "UP",
    }
}

/// Logs HAProxy's line for `srv` (of `be`) going to `new`
/// (`_srv_update_status_op`): "Server be/s1 is DOWN{middle}. 1 active and
/// 0 backup servers left. ..." as a warning, then the backend's alert when
/// the change leaves it without a usable server. `middle` is the cause:
/// a check's reason, ", changed from Lua script", " via be/s0"...
pub fn log_oper_change(be: &Backend, srv: &Server, new: OperState, middle: &str) {
    let (act_before, bck_before) = be.up_servers();
    let (act, bck) = counts_after(be, srv, new);
    crate::log::warning(&format!(
        "{} {}/{} is {}{middle}{}",
        who(srv),
        be.name(),
        srv.name,
        state_word(new),
        change_tail(be, srv, new == OperState::Stopped, act, bck)
    ));
    if act_before + bck_before > 0 && act + bck == 0 {
        crate::log::alert(&format!("backend '{}' has no server available!", be.name()));
    }
}

impl Backend {
    /// Passes an operational change of `srv` (of this backend) on to its
    /// trackers, as HAProxy's `srv_set_stopped`/`_running`/`_stopping` do:
    /// each one that is not in maintenance and not already in that state
    /// (UP counting STARTING and RUNNING alike) goes DOWN, UP or NOLB "via"
    /// `srv`, with HAProxy's log line, then passes it on in turn.
    pub(super) fn propagate_oper(&self, srv: &Arc<Server>, state: OperState) {
        for (tbe, t) in srv.track.trackers() {
            if t.admin().in_maint() || t.is_deleted() || same_state(t.oper(), state) {
                continue;
            }
            let via = format!(" via {}/{}", self.name(), srv.name);
            log_oper_change(&tbe, &t, state, &via);
            // This recurses down the chain (loops are refused at load).
            tbe.set_oper_state(&t, state, OperCause::None, None);
        }
    }

    /// Passes an administrative change of `srv` on to its trackers: any
    /// maintenance becomes IMAINT, any drain IDRAIN (HAProxy's inherited
    /// flags), recursively.
    pub(super) fn propagate_admin(&self, srv: &Arc<Server>) {
        let admin = srv.admin();
        for (tbe, t) in srv.track.trackers() {
            tbe.change_admin_flag(&t, AdminFlags::IMAINT, admin.in_maint());
            tbe.change_admin_flag(&t, AdminFlags::IDRAIN, admin.draining());
        }
    }
}

/// Whether a tracker in state `now` already is where `target` would take
/// it (HAProxy stops going down a chain there).
pub(super) fn same_state(now: OperState, target: OperState) -> bool {
    now == target || (now.takes_new_traffic() && target.takes_new_traffic())
}
