//! The check engine's view of the server model: [`ModelServer`] reports
//! results into the live model (SERVER_CHECK, then UP/DOWN with HAProxy's
//! log line, SERVER_UP/DOWN and SERVER_STATE), and [`start`] starts one
//! check task per server with `check` — at start-up, and for servers added
//! at run time with checks enabled.

use super::probe::Plan;
use super::state::Health;
use super::status::{Outcome, Status};
use super::{observe, Checked, Runner, Shared, Spec};
use crate::backend::track;
use crate::backend::{
    Backend, CheckFlags, CheckOutcome, CheckResult, EventMask, OperCause, OperState, Registry,
    Server, ServerEventKind,
};
use crate::config::Config;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// One checked server of the live model.
pub(crate) struct ModelServer {
    backend: Weak<Backend>,
    server: Arc<Server>,
}

impl ModelServer {
    fn result(outcome: &Outcome, health: Health) -> CheckResult {
        CheckResult {
            result: if outcome.passed() {
                CheckOutcome::Passed
            } else {
                CheckOutcome::Failed
            },
            agent: false,
            // A health analysis (`observe`) ran no check: HAProxy's -1.
            duration_ms: if outcome.status == Status::Hana {
                -1
            } else {
                outcome.duration.as_millis() as i64
            },
            reason_short: outcome.status.short().to_string(),
            reason_desc: outcome.status.desc().to_string(),
            reason_code: outcome
                .code
                .filter(|_| outcome.status.is_layer7())
                .map_or(0, i32::from),
            health_cur: health.cur,
            rise: health.rise,
            fall: health.fall,
        }
    }
}

/// A [`ModelServer`] held weakly (by the server's own traffic observer).
struct WeakModelServer {
    backend: Weak<Backend>,
    server: Weak<Server>,
}

impl WeakModelServer {
    fn strong(&self) -> Option<ModelServer> {
        Some(ModelServer {
            backend: self.backend.clone(),
            server: self.server.upgrade()?,
        })
    }
}

impl Checked for WeakModelServer {
    fn addr(&self) -> Option<SocketAddr> {
        self.strong()?.addr()
    }

    fn gone(&self) -> bool {
        self.strong().is_none_or(|m| m.gone())
    }

    fn suspended(&self) -> bool {
        self.strong().is_none_or(|m| m.suspended())
    }

    fn is_up(&self) -> bool {
        self.strong().is_some_and(|m| m.is_up())
    }

    fn report(&self, outcome: &Outcome, health: Health, moved: bool) {
        if let Some(m) = self.strong() {
            m.report(outcome, health, moved);
        }
    }
}

impl Checked for ModelServer {
    fn addr(&self) -> Option<SocketAddr> {
        Some(self.server.addr())
    }

    fn gone(&self) -> bool {
        self.server.is_deleted() || self.backend.strong_count() == 0
    }

    fn suspended(&self) -> bool {
        self.server.check_flags() & CheckFlags::ENABLED == 0 || self.server.admin().in_maint()
    }

    fn is_up(&self) -> bool {
        self.server.oper() != OperState::Stopped
    }

    fn report(&self, outcome: &Outcome, health: Health, moved: bool) {
        let Some(be) = self.backend.upgrade() else {
            return;
        };
        let result = Self::result(outcome, health);
        // HAProxy's CHK_RES_PASSED (3) or CHK_RES_FAILED (2).
        let res_code = if outcome.passed() { 3 } else { 2 };
        self.server.set_last_check(outcome.status.code(), res_code);
        if moved {
            be.report_check(&self.server, &result);
        }
        let was_up = self.server.oper() != OperState::Stopped;
        if health.is_up() == was_up {
            return;
        }
        let new = if health.is_up() {
            OperState::Running
        } else {
            OperState::Stopped
        };
        // HAProxy logs the change (and the backend left with no server)
        // before publishing it and passing it on to the trackers.
        track::log_oper_change(&be, &self.server, new, &outcome.reason_text());
        be.set_oper_state(&self.server, new, OperCause::Health, Some(&result));
    }
}

/// What a backend's checks share: the plan and the timeouts.
struct BackendChecks {
    plan: Arc<Plan>,
    connect_timeout: Duration,
    check_timeout: Option<Duration>,
}

/// The checks to start, taken from the configuration before it is dropped.
pub(crate) struct Prepared {
    servers: Vec<(Arc<Backend>, Arc<Server>, Spec)>,
    per_backend: HashMap<String, BackendChecks>,
}

/// What the checks need of one backend's configuration, taken before the
/// sections are consumed by the registry (`Registry::take_from`).
struct WantedBackend {
    name: String,
    checks: BackendChecks,
    /// Whether the backend has check settings of its own.
    own_settings: bool,
    /// The servers with `check`, their settings resolved.
    checked: Vec<(String, Spec)>,
    /// The servers with `track`: tracker, then the tracked `PROXY/SERVER`.
    tracks: Vec<(String, Option<String>, String)>,
}

/// The check settings of a configuration: the first half of
/// [`prepare`], which reads only the configuration (see [`wanted`]).
pub(crate) struct Wanted {
    backends: Vec<WantedBackend>,
}

/// Resolves the check settings of every server with `check` and the
/// `track` links, from the configuration alone (before the registry takes
/// its sections).
///
/// Only backends with check settings of their own (`option httpchk` and
/// the like, `timeout check`) get an entry for servers added later: the
/// others share one default, derived from the backend when a server is
/// added, so that many backends cost nothing here.
pub(crate) fn wanted(cfg: &Config) -> Wanted {
    let mut backends = Vec::new();
    for p in cfg.proxies.iter().filter(|p| p.kind.has_backend()) {
        let own_settings = p.health.is_some() || p.timeouts.check.is_some();
        // Servers with `check` start checks; those with `track` follow one.
        // The tracked `PROXY/SERVER` of a server with `track`.
        let track_of = |s: &crate::config::ServerDef| {
            let t = s.health.as_deref()?.track.as_ref()?;
            Some((t.proxy.clone(), t.server.clone()))
        };
        let tracks =
            |s: &crate::config::ServerDef| s.health.as_deref().is_some_and(|h| h.track.is_some());
        if !own_settings && !p.servers.iter().any(|s| s.check || tracks(s)) {
            continue;
        }
        let connect = p
            .timeouts
            .connect
            .unwrap_or(crate::backend::DEFAULT_CONNECT_TIMEOUT);
        let plan = Arc::new(Plan::of(p.health.as_deref()));
        let checked = p
            .servers
            .iter()
            .filter(|s| s.check)
            .filter_map(|s| {
                let spec = super::spec_of(s, &plan, connect, p.timeouts.check)?;
                Some((s.name.clone(), spec))
            })
            .collect();
        let tracks = p
            .servers
            .iter()
            .filter_map(|s| {
                let (proxy, server) = track_of(s)?;
                Some((s.name.clone(), proxy, server))
            })
            .collect();
        backends.push(WantedBackend {
            name: p.name.clone(),
            checks: BackendChecks {
                plan,
                connect_timeout: connect,
                check_timeout: p.timeouts.check,
            },
            own_settings,
            checked,
            tracks,
        });
    }
    Wanted { backends }
}

/// Finds the servers of [`wanted`]'s settings in the live model (building
/// the backends that have checks) and links the trackers.
pub(crate) fn prepare(wanted: Wanted, registry: &Arc<Registry>) -> Prepared {
    let mut per_backend: HashMap<String, BackendChecks> = HashMap::new();
    let mut servers = Vec::new();
    for w in wanted.backends {
        let Some(be) = registry.get(&w.name) else {
            continue;
        };
        for (name, spec) in w.checked {
            if let Some(srv) = be.server(&name) {
                servers.push((be.clone(), srv, spec));
            }
        }
        link_tracks(&w.tracks, be, registry);
        if w.own_settings {
            per_backend.insert(w.name, w.checks);
        }
    }
    Prepared {
        servers,
        per_backend,
    }
}

/// Links the servers of a backend (live in `be`) that `track` another one;
/// the configuration checks made sure the tracked servers exist and form no
/// loop. A tracker of a server in maintenance starts in maintenance too
/// (IMAINT).
fn link_tracks(
    tracks: &[(String, Option<String>, String)],
    be: &Arc<Backend>,
    registry: &Registry,
) {
    for (tracker, proxy, server) in tracks {
        let tracked_be = match proxy {
            Some(name) => registry.get(name),
            None => Some(be),
        };
        let (Some(tbe), Some(tracker)) = (tracked_be, be.server(tracker)) else {
            continue;
        };
        let Some(tracked) = tbe.server(server) else {
            continue;
        };
        if track::link(be, &tracker, tbe, &tracked) && tracked.admin().in_maint() {
            be.change_admin_flag(&tracker, crate::backend::AdminFlags::IMAINT, true);
        }
    }
}

/// Starts the prepared checks, and watches for servers added at run time.
/// Returns the runner (it lives as long as the process).
pub(crate) fn start(
    prepared: Prepared,
    registry: &Arc<Registry>,
) -> std::io::Result<Option<Runner>> {
    let Prepared {
        servers,
        per_backend,
    } = prepared;
    let runner = Runner::start()?;
    // Spread the first checks over the smallest interval, as HAProxy does,
    // so that many servers are not all checked at the same instant.
    let n = servers.len().max(1) as u32;
    for (i, (be, srv, spec)) in servers.into_iter().enumerate() {
        let delay = spec.intervals.inter.min(Duration::from_secs(1)) * i as u32 / n;
        let (target, shared) = task_parts(&be, srv, &spec);
        runner.spawn(spec, target, shared, delay);
    }
    watch_added_servers(registry, &runner, per_backend);
    Ok(Some(runner))
}

/// The model side of one check task and the state it shares with the
/// traffic observer, installed on the server when it has `observe`.
fn task_parts(be: &Arc<Backend>, srv: Arc<Server>, spec: &Spec) -> (Arc<ModelServer>, Arc<Shared>) {
    let shared = Arc::new(Shared::new(spec.rise, spec.fall));
    let target = Arc::new(ModelServer {
        backend: Arc::downgrade(be),
        server: srv.clone(),
    });
    if let Some(settings) = spec.observe {
        srv.set_observer(Arc::new(observe::Observer {
            settings,
            shared: shared.clone(),
            // Weak: the server holds its observer.
            server: Arc::new(WeakModelServer {
                backend: Arc::downgrade(be),
                server: Arc::downgrade(&srv),
            }),
        }));
    }
    (target, shared)
}

/// Servers added at run time (`add server ... check`) get a check task
/// with the backend's check settings and their own options (`inter`,
/// `rise`, `fall`, `fastinter`, `port`, `addr`, `observe`...). It stays
/// idle until `enable health` (checks of a new dynamic server start
/// disabled).
fn watch_added_servers(
    registry: &Arc<Registry>,
    runner: &Runner,
    per_backend: HashMap<String, BackendChecks>,
) {
    let handle = runner.handle.clone();
    let weak_registry = Arc::downgrade(registry);
    // The plan of backends without check settings of their own: a connect.
    let default_plan = Arc::new(Plan::of(None));
    let sink = Arc::new(move |ev: &crate::backend::ServerEvent| {
        let Some(srv) = ev.reference() else { return };
        if srv.check_flags() & CheckFlags::CONFIGURED == 0 {
            return;
        }
        let Some(reg) = weak_registry.upgrade() else {
            return;
        };
        let Some(be) = reg.get(&ev.proxy_name) else {
            return;
        };
        let Some(def) = srv.added_with.get() else {
            return;
        };
        let (plan, connect_timeout, check_timeout) = match per_backend.get(&*ev.proxy_name) {
            Some(bc) => (bc.plan.clone(), bc.connect_timeout, bc.check_timeout),
            None => (default_plan.clone(), be.connect_timeout(), None),
        };
        let Some(spec) = super::spec_of(def, &plan, connect_timeout, check_timeout) else {
            return;
        };
        let (target, shared) = task_parts(be, srv, &spec);
        Runner::spawn_on(&handle, spec, target, shared, Duration::ZERO);
    });
    registry
        .events()
        .subscribe(EventMask::NONE.with(ServerEventKind::Add), sink);
}
