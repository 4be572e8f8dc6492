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
//! `state` (the counter and intervals), this file (the tasks).

pub(crate) mod model;
pub(crate) mod probe;
pub(crate) mod state;
pub(crate) mod status;

use probe::{Plan, Target};
use state::{Health, Intervals};
use status::Outcome;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
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

/// Commands and readings shared between a check task and the rest of the
/// process (Lua's `check_force_*`, stats).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The counter's current value, for stats.
    pub health: AtomicU32,
    /// A forced state waiting for the task: 0 none, 1 up, 2 down.
    force: AtomicU8,
    /// Use `fastinter` for the next check (an observed error).
    fast: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Shared {
    /// Forces the health up or down at once (the task applies it).
    pub(crate) fn force(&self, up: bool) {
        self.force.store(if up { 1 } else { 2 }, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Asks for the next check sooner (`fastinter`).
    pub(crate) fn hurry(&self) {
        self.fast.store(true, Ordering::Relaxed);
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
        delay: Duration,
    ) -> Arc<Shared> {
        Runner::spawn_on(&self.handle, spec, server, delay)
    }

    /// [`Runner::spawn`] from anywhere that holds the runner's handle.
    pub(crate) fn spawn_on(
        handle: &tokio::runtime::Handle,
        spec: Spec,
        server: Arc<dyn Checked>,
        delay: Duration,
    ) -> Arc<Shared> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        handle.spawn(async move {
            tokio::time::sleep(delay).await;
            run(spec, server, s).await;
        });
        shared
    }
}

/// One server's check loop.
async fn run(spec: Spec, server: Arc<dyn Checked>, shared: Arc<Shared>) {
    let mut health = Health::new(spec.rise, spec.fall);
    shared.health.store(health.cur, Ordering::Relaxed);
    loop {
        if server.gone() {
            return;
        }
        apply_forced(&mut health, &server, &shared);
        if !server.suspended() {
            if let Some(addr) = server.addr() {
                let outcome = probe::run(&spec.plan, spec.target(addr)).await;
                let change = if outcome.passed() {
                    health.pass()
                } else {
                    health.fail()
                };
                shared.health.store(health.cur, Ordering::Relaxed);
                if server.gone() {
                    return;
                }
                server.report(&outcome, health, change.moved);
            }
        }
        let fast = shared.fast.swap(false, Ordering::Relaxed);
        let wait = spec.intervals.next(&health, fast);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.wake.notified() => {}
        }
    }
}

/// Applies a forced state (`check_force_up` / `check_force_down`).
fn apply_forced(health: &mut Health, server: &Arc<dyn Checked>, shared: &Shared) {
    let up = match shared.force.swap(0, Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => return,
    };
    if up {
        health.force_up();
    } else {
        health.force_down();
    }
    shared.health.store(health.cur, Ordering::Relaxed);
    let status = if up {
        status::Status::L4Ok
    } else {
        status::Status::L4Con
    };
    let outcome = Outcome::new(status, Some("forced by the administrator".to_string()));
    server.report(&outcome, *health, true);
}

/// The check spec of a server of backend `p` (None without `check`).
pub(crate) fn spec_of(
    p: &crate::config::Proxy,
    s: &crate::config::ServerDef,
    plan: &Arc<Plan>,
    connect_timeout: Duration,
) -> Option<Spec> {
    if !s.check {
        return None;
    }
    let h = s.health.as_deref();
    let inter = s.inter.unwrap_or(DEFAULT_INTER);
    Some(Spec {
        plan: plan.clone(),
        intervals: Intervals {
            inter,
            fastinter: h.and_then(|h| h.fastinter).unwrap_or(inter),
            downinter: h.and_then(|h| h.downinter).unwrap_or(inter),
        },
        rise: s.rise.unwrap_or(DEFAULT_RISE),
        fall: s.fall.unwrap_or(DEFAULT_FALL),
        port: h.and_then(|h| h.port),
        addr: h.and_then(|h| h.addr),
        connect_timeout,
        check_timeout: p.timeouts.check,
    })
}
