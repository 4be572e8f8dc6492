//! The check engine's view of the server model: [`ModelServer`] reports
//! results into the live model (SERVER_CHECK, then UP/DOWN with HAProxy's
//! log line, SERVER_UP/DOWN and SERVER_STATE), and [`start`] starts one
//! check task per server with `check` — at start-up, and for servers added
//! at run time with checks enabled.

use super::probe::Plan;
use super::state::{Health, Intervals};
use super::status::Outcome;
use super::{Checked, Runner, Spec, DEFAULT_FALL, DEFAULT_INTER, DEFAULT_RISE};
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
            duration_ms: outcome.duration.as_millis() as u64,
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
        // HAProxy logs the change before publishing it.
        let (act, bck) = be.up_servers();
        let (act, bck) = match (new, self.server.backup) {
            (OperState::Stopped, false) => (act.saturating_sub(1), bck),
            (OperState::Stopped, true) => (act, bck.saturating_sub(1)),
            (_, false) => (act + 1, bck),
            (_, true) => (act, bck + 1),
        };
        crate::log::warning(&state_line(&be, &self.server, new, outcome, act, bck));
        if !be.set_oper_state(&self.server, new, OperCause::Health, Some(&result)) {
            return;
        }
        if new == OperState::Stopped && act == 0 && bck == 0 {
            crate::log::alert(&format!("backend '{}' has no server available!", be.name()));
        }
    }
}

/// HAProxy's line for a server going UP or DOWN because of a check.
fn state_line(
    be: &Backend,
    srv: &Server,
    new: OperState,
    outcome: &Outcome,
    act: usize,
    bck: usize,
) -> String {
    let who = if srv.backup {
        "Backup Server"
    } else {
        "Server"
    };
    let mut s = format!("{who} {}/{} is ", be.name(), srv.name);
    s.push_str(if new == OperState::Stopped {
        "DOWN"
    } else {
        "UP"
    });
    s.push_str(&outcome.reason_text());
    if new == OperState::Stopped {
        s.push_str(&format!(". {act} active and {bck} backup servers left."));
        if act == 0 && bck > 0 {
            s.push_str(" Running on backup.");
        }
        s.push_str(&format!(
            " {} sessions active, 0 requeued, {} remaining in queue.",
            srv.current(),
            be.pending()
        ));
    } else {
        s.push_str(&format!(
            ". {act} active and {bck} backup servers online. 0 sessions requeued, {} total in queue.",
            be.pending()
        ));
    }
    s
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

/// Resolves the check settings of every server with `check`.
///
/// Only backends with check settings of their own (`option httpchk` and
/// the like, `timeout check`) get an entry for servers added later: the
/// others share one default, derived from the backend when a server is
/// added, so that many backends cost nothing here.
pub(crate) fn prepare(cfg: &Config, registry: &Arc<Registry>) -> Prepared {
    let mut per_backend: HashMap<String, BackendChecks> = HashMap::new();
    let mut servers = Vec::new();
    for p in cfg.proxies.iter().filter(|p| p.kind.has_backend()) {
        let own_settings = p.health.is_some() || p.timeouts.check.is_some();
        if !own_settings && !p.servers.iter().any(|s| s.check) {
            continue;
        }
        let connect = p
            .timeouts
            .connect
            .unwrap_or(crate::backend::DEFAULT_CONNECT_TIMEOUT);
        let plan = Arc::new(Plan::of(p.health.as_deref()));
        let Some(be) = registry.get(&p.name) else {
            continue;
        };
        for s in p.servers.iter().filter(|s| s.check) {
            let Some(spec) = super::spec_of(p, s, &plan, connect) else {
                continue;
            };
            if let Some(srv) = be.server(&s.name) {
                servers.push((be.clone(), srv, spec));
            }
        }
        if own_settings {
            per_backend.insert(
                p.name.clone(),
                BackendChecks {
                    plan,
                    connect_timeout: connect,
                    check_timeout: p.timeouts.check,
                },
            );
        }
    }
    Prepared {
        servers,
        per_backend,
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
        let target = Arc::new(ModelServer {
            backend: Arc::downgrade(&be),
            server: srv,
        });
        runner.spawn(spec, target, delay);
    }
    watch_added_servers(registry, &runner, per_backend);
    Ok(Some(runner))
}

/// Servers added at run time (`add server ... check`) get a check task
/// with the backend's check settings and HAProxy's default intervals and
/// counts. It stays idle until `enable health` (checks of a new dynamic
/// server start disabled).
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
        let (plan, connect_timeout, check_timeout) = match per_backend.get(&*ev.proxy_name) {
            Some(bc) => (bc.plan.clone(), bc.connect_timeout, bc.check_timeout),
            None => (default_plan.clone(), be.connect_timeout(), None),
        };
        let spec = Spec {
            plan,
            intervals: Intervals {
                inter: DEFAULT_INTER,
                fastinter: DEFAULT_INTER,
                downinter: DEFAULT_INTER,
            },
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            port: None,
            addr: None,
            connect_timeout,
            check_timeout,
        };
        let target = Arc::new(ModelServer {
            backend: Arc::downgrade(be),
            server: srv,
        });
        Runner::spawn_on(&handle, spec, target, Duration::ZERO);
    });
    registry
        .events()
        .subscribe(EventMask::NONE.with(ServerEventKind::Add), sink);
}
