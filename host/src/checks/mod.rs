//! Health checks: one tokio task per checked server, on a thread of its
//! own ("checks"), so a check never holds up a worker. Each task runs its
//! backend's [`probe::Plan`] every `inter` (`fastinter` / `downinter` as
//! the health moves, [`state::Intervals`]), counts the results with
//! HAProxy's rise/fall counter ([`state::Health`]) and reports every
//! result to the server model through [`Checked`], which applies UP/DOWN
//! (the balancer honours it), logs it in HAProxy's words and publishes the
//! events.
//!
//! Layout: `status` (HAProxy's status names), `probe` (one check run),
//! `state` (the counter and intervals), `observe` (errors of real traffic
//! and `on-error`), `model` (the live model's side), this file (the
//! tasks).

pub(crate) mod model;
pub(crate) mod observe;
pub(crate) mod probe;
pub(crate) mod state;
pub(crate) mod status;

use probe::{Plan, Target};
use state::{Health, Intervals};
use status::Outcome;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// HAProxy's default `inter`.
pub(crate) const DEFAULT_INTER: Duration = Duration::from_secs(2);
/// HAProxy's default `rise` and `fall`.
pub(crate) const DEFAULT_RISE: u32 = 2;
pub(crate) const DEFAULT_FALL: u32 = 3;

/// The server side of a check: what the model lets the check task see and
/// do.
pub(crate) trait Checked: Send + Sync + 'static {
    /// The server's current address (it may change at run time); None
    /// while it has none.
    fn addr(&self) -> Option<SocketAddr>;
    /// The server is gone (deleted): the task ends.
    fn gone(&self) -> bool;
    /// Checks are suspended (maintenance, `disable health`).
    fn suspended(&self) -> bool;
    /// The server is operationally up (changed by checks, and also by the
    /// CLI, Lua's `check_force_*` or leaving maintenance).
    fn is_up(&self) -> bool;
    /// One result. `moved`: the counter changed (HAProxy reports the check
    /// then, SERVER_CHECK). When `health.is_up()` differs from the
    /// server's operational state, the model changes it.
    fn report(&self, outcome: &Outcome, health: Health, moved: bool);
}

/// A server's check settings, resolved from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub plan: Arc<Plan>,
    pub intervals: Intervals,
    pub rise: u32,
    pub fall: u32,
    /// `port` / `addr` server options.
    pub port: Option<u16>,
    pub addr: Option<IpAddr>,
    /// `timeout connect` of the backend.
    pub connect_timeout: Duration,
    /// `timeout check`, if set.
    pub check_timeout: Option<Duration>,
    /// `observe` with its `error-limit` and `on-error`; None without.
    pub observe: Option<observe::Settings>,
}

impl Spec {
    /// HAProxy's timeouts: with `timeout check`, connecting may take
    /// min(timeout connect, inter) and reading `timeout check`; without it,
    /// `inter` bounds both.
    fn target(&self, server: SocketAddr) -> Target {
        let mut addr = server;
        if let Some(a) = self.addr {
            addr.set_ip(a);
        }
        if let Some(p) = self.port {
            addr.set_port(p);
        }
        let inter = self.intervals.inter;
        let (connect_timeout, read_timeout) = match self.check_timeout {
            Some(t) => (self.connect_timeout.min(inter), t),
            None => (inter, inter),
        };
        Target {
            addr,
            connect_timeout,
            read_timeout,
        }
    }
}

/// The thread that runs every check task.
pub(crate) struct Runner {
    pub(crate) handle: tokio::runtime::Handle,
}

impl Runner {
    /// Starts the "checks" thread.
    pub(crate) fn start() -> std::io::Result<Runner> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("checks".to_string())
            .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        Ok(Runner { handle })
    }

    /// Starts checking `server` after `delay` (spread so that the checks of
    /// many servers do not all start at once).
    pub(crate) fn spawn(
        &self,
        spec: Spec,
        server: Arc<dyn Checked>,
        shared: Arc<Shared>,
        delay: Duration,
    ) {
        Runner::spawn_on(&self.handle, spec, server, shared, delay)
    }

    /// [`Runner::spawn`] from anywhere that holds the runner's handle.
    pub(crate) fn spawn_on(
        handle: &tokio::runtime::Handle,
        spec: Spec,
        server: Arc<dyn Checked>,
        shared: Arc<Shared>,
        delay: Duration,
    ) {
        handle.spawn(async move {
            tokio::time::sleep(delay).await;
            run(spec, server, shared).await;
        });
    }
}

/// What a server's check task shares with the traffic observer (when the
/// server has `observe`): the rise/fall counter, the observed errors in a
/// row, and HAProxy's CHK_ST_FASTINTER (the next interval is `fastinter`).
pub(crate) struct Shared {
    health: std::sync::Mutex<Health>,
    errors: AtomicU32,
    fast: AtomicBool,
}

impl Shared {
    pub(crate) fn new(rise: u32, fall: u32) -> Shared {
        Shared {
            health: std::sync::Mutex::new(Health::new(rise, fall)),
            errors: AtomicU32::new(0),
            fast: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the counter (a poisoned lock still holds a valid
    /// counter: every change is a plain store).
    pub(crate) fn with_health<R>(&self, f: impl FnOnce(&mut Health) -> R) -> R {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut h)
    }
}

/// One server's check loop.
async fn run(spec: Spec, server: Arc<dyn Checked>, shared: Arc<Shared>) {
    loop {
        if server.gone() {
            return;
        }
        if !server.suspended() {
            let up = server.is_up();
            shared.with_health(|h| h.follow(up));
            if let Some(addr) = server.addr() {
                let outcome = probe::run(&spec.plan, spec.target(addr)).await;
                let (health, change) = shared.with_health(|h| {
                    let change = if outcome.passed() { h.pass() } else { h.fail() };
                    (*h, change)
                });
                if outcome.passed() {
                    // HAProxy clears the observed errors on a passed check.
                    shared.errors.store(0, Ordering::Relaxed);
                }
                if server.gone() {
                    return;
                }
                server.report(&outcome, health, change.moved);
            }
        }
        let health = shared.with_health(|h| *h);
        let fast = shared.fast.swap(false, Ordering::Relaxed);
        tokio::time::sleep(spec.intervals.next(&health, fast)).await;
    }
}

/// The check spec of a server (None without `check`); `check_timeout` is
/// its backend's `timeout check`.
pub(crate) fn spec_of(
    s: &crate::config::ServerDef,
    plan: &Arc<Plan>,
    connect_timeout: Duration,
    check_timeout: Option<Duration>,
) -> Option<Spec> {
    if !s.check {
        return None;
    }
    let h = s.health.as_deref();
    let inter = s.inter().unwrap_or(DEFAULT_INTER);
    Some(Spec {
        plan: plan.clone(),
        intervals: Intervals {
            inter,
            fastinter: h.and_then(|h| h.fastinter).unwrap_or(inter),
            downinter: h.and_then(|h| h.downinter).unwrap_or(inter),
        },
        rise: s.rise().unwrap_or(DEFAULT_RISE),
        fall: s.fall().unwrap_or(DEFAULT_FALL),
        port: h.and_then(|h| h.port),
        addr: h.and_then(|h| h.addr),
        connect_timeout,
        check_timeout,
        observe: h.and_then(observe::Settings::of),
    })
}
