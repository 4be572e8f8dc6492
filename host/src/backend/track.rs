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

/// The end of HAProxy's line for a server going UP or DOWN: the servers
/// left or online and the sessions. `act`/`bck` count the usable servers
/// after the change.
pub fn change_tail(be: &Backend, srv: &Server, down: bool, act: usize, bck: usize) -> String {
    if down {
        let mut s = format!(". {act} active and {bck} backup servers left.");
        if act == 0 && bck > 0 {
            s.push_str(" Running on backup.");
        }
        s.push_str(&format!(
            " {} sessions active, 0 requeued, {} remaining in queue.",
            srv.current(),
            be.pending()
        ));
        s
    } else {
        format!(
            ". {act} active and {bck} backup servers online. 0 sessions requeued, {} total in queue.",
            be.pending()
        )
    }
}

/// The usable servers of `be` once `srv` has gone `down` (or up).
pub fn counts_after(be: &Backend, srv: &Server, down: bool) -> (usize, usize) {
    let (act, bck) = be.up_servers();
    match (down, srv.backup) {
        (true, false) => (act.saturating_sub(1), bck),
        (true, true) => (act, bck.saturating_sub(1)),
        (false, false) => (act + 1, bck),
        (false, true) => (act, bck + 1),
    }
}

/// "Server" or "Backup Server", as HAProxy's state lines begin.
pub fn who(srv: &Server) -> &'static str {
    if srv.backup {
        "Backup Server"
    } else {
        "Server"
    }
}

impl Backend {
    /// Passes an operational change of `srv` (of this backend) on to its
    /// trackers: each one that is not in maintenance goes DOWN (or UP) "via"
    /// `srv`, with HAProxy's log line, then passes it on in turn.
    pub(super) fn propagate_oper(&self, srv: &Arc<Server>, state: OperState) {
        let down = state == OperState::Stopped;
        for (tbe, t) in srv.track.trackers() {
            if t.admin().in_maint() || t.is_deleted() {
                continue;
            }
            let was_down = t.oper() == OperState::Stopped;
            if was_down == down {
                continue;
            }
            let (act, bck) = counts_after(&tbe, &t, down);
            crate::log::warning(&format!(
                "{} {}/{} is {} via {}/{}{}",
                who(&t),
                tbe.name(),
                t.name,
                if down { "DOWN" } else { "UP" },
                self.name(),
                srv.name,
                change_tail(&tbe, &t, down, act, bck)
            ));
            // HAProxy says the backend has no server left before going on
            // down the chain.
            if down && act == 0 && bck == 0 {
                crate::log::alert(&format!(
                    "backend '{}' has no server available!",
                    tbe.name()
                ));
            }
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
