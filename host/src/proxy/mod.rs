//! The proxy: start-up (configuration to running workers), signals, and stop.
//!
//! Start-up order, as HAProxy's: parse the configuration; bind every
//! listener; load the Lua files (bodies run, registrations happen); check
//! that every `lua.NAME` the configuration uses exists; run the init
//! functions; enter the chroot and drop privileges; start the tasks; serve.
//! Any error before serving is reported and the process exits 1 without
//! serving anything. In daemon mode a child process does all this after the
//! configuration is parsed, and the command exits once it serves.

pub mod body;
pub mod compress;
pub mod error_pages;
pub mod h1_server;
pub mod http_front;
mod listen;
pub mod listen_control;
pub mod master;
mod pidfile;
pub mod plan;
mod process;
pub mod rules;
pub mod startup_trace;
mod stdio;
mod stop_signals;
pub mod tcp_front;
pub(crate) mod traffic_log;
mod wake_gate;
pub mod worker;

use crate::lua::state::LuaSettings;
use pidfile::PidFile;
use plan::{Plan, Registered, StateKind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use worker::{SharedJob, SharedLua, Worker};

/// The process's run state, broadcast to the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    Running,
    /// SIGUSR1: stop accepting, exit once idle.
    Soft,
    /// SIGTERM/SIGINT: stop accepting, finish requests in flight (bounded by
    /// the grace period), exit.
    Hard,
}

/// Command-line options of the proxy mode.
pub struct Options {
    pub files: Vec<PathBuf>,
    pub check_only: bool,
    pub debug: bool,
    pub pidfile: Option<PathBuf>,
    /// `-D`: detach into the background, as `daemon` does.
    pub daemon: bool,
    /// `-W`: run as a master supervising one worker process.
    pub master_worker: bool,
}

/// What a worker reports after loading its Lua states.
type Loaded = Result<Vec<(String, Registered, StateKind)>, String>;

static BUFSIZE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(16384);

/// `tune.bufsize`.
pub fn bufsize() -> usize {
    BUFSIZE.load(std::sync::atomic::Ordering::Relaxed)
}

/// What the main thread tells a worker after the checks.
enum Go {
    /// Run the init functions with this plan.
    Serve(Arc<Plan>),
    /// Start the tasks and serve (sent once every init function succeeded
    /// and the process entered its chroot and dropped its privileges); worker
    /// 0 also serves the stats sockets.
    Start(Option<Box<crate::cli::Start>>),
    Abort,
}

/// Prints each configuration error, then HAProxy's closing alert; the exit
/// code of a refused configuration.
pub(crate) fn config_refused(errors: impl IntoIterator<Item = impl std::fmt::Display>) -> ExitCode {
    for e in errors {
        eprintln!("{e}");
    }
    eprintln!("[ALERT] Fatal errors found in configuration.");
    ExitCode::from(1)
}

pub fn run(opts: Options) -> ExitCode {
    // A worker of a master-worker pair: it adopts its master's sockets.
    let mut inherited = master::Inherited::from_env();
    // Before any Lua state exists: scripts' output appears line by line.
    stdio::line_buffer_stdout();
    startup_trace::start();
    let mut cfg = match crate::config::parse_files(&opts.files) {
        Ok(c) => c,
        Err(errors) => return config_refused(errors),
    };
    startup_trace::mark("parse");
    if (opts.master_worker || cfg.global.process.master_worker)
        && !opts.check_only
        && inherited.is_none()
    {
        return master::run(cfg, &opts.files, opts.daemon, opts.debug, opts.pidfile);
    }
    // setenv & co. take effect now, while the process has one thread, so
    // the Lua states see them (os.getenv).
    crate::config::apply_env(&cfg.global.process.env);
    for n in &cfg.notices {
        eprintln!("{n}");
    }
    for w in &cfg.warnings {
        eprintln!("{w}");
    }
    if !cfg.global.process.no_effect.is_empty() {
        let list: Vec<String> = cfg
            .global
            .process
            .no_effect
            .iter()
            .map(|(kw, loc)| format!("{kw} ({loc})"))
            .collect();
        eprintln!(
            "[NOTICE] config : accepted without effect: {}",
            list.join(", ")
        );
    }
    let proc_cfg = cfg.global.process.clone();
    // Before the plan: each frontend's traffic log holds its loggers.
    if let Err(e) = crate::log::install_loggers(&cfg) {
        eprintln!("[ALERT] config : {e}");
        return ExitCode::from(1);
    }
    let mut plan = match plan::build(&cfg) {
        Ok(p) => p,
        Err(errors) => return config_refused(errors),
    };
    startup_trace::mark("loggers + plan");
    if opts.debug {
        crate::log::set_max_level(crate::log::DEBUG);
        crate::log::set_access_log(true);
    } else if let Some(level) = plan.log_level {
        crate::log::set_max_level(level);
    }
    crate::lua::memory::set_limit(plan.maxmem_bytes);
    crate::httpclient::settings::set(crate::httpclient::settings::Settings::from_config(
        &cfg.global.httpclient,
    ));
    crate::lua::sample_bridge::set_bool_sample_normal(
        cfg.global.lua.bool_sample_normal.unwrap_or(false),
    );
    crate::log::set_lua_routing(
        cfg.global.lua.log_loggers.unwrap_or(true),
        cfg.global
            .lua
            .log_stderr
            .unwrap_or(crate::config::LuaLogStderr::Auto),
    );
    BUFSIZE.store(plan.bufsize, std::sync::atomic::Ordering::Relaxed);
    // What the CLI and the health checks take from the configuration,
    // before the registry consumes its sections.
    let cli_timeout = cfg.global.stats.timeout;
    let cli_maxconn = cfg.global.stats.maxconn;
    let cli_facts = crate::cli::ConfigFacts::from_config(&cfg);
    let checks_wanted = crate::checks::model::wanted(&cfg);
    startup_trace::mark("cli + checks");
    // Each section is dropped as soon as its registry entry is built: the
    // memory of the parsed configuration goes while the registry's comes.
    match crate::backend::Registry::take_from(&mut cfg) {
        Ok(r) => plan.registry = Arc::new(r),
        Err(errors) => return config_refused(errors),
    }
    startup_trace::mark("registry");
    let cli_socket_defs = std::mem::take(&mut cfg.global.stats.sockets);
    let checks = crate::checks::model::prepare(checks_wanted, &plan.registry);
    // Everything needed is in the plan and the registry now: what is left
    // of the parsed configuration goes before Lua loads.
    drop(cfg);
    startup_trace::mark("config dropped");
    crate::stats::init(plan.maxconn);
    crate::stats::set_identity(proc_cfg.node.clone(), proc_cfg.description.clone());
    if opts.check_only {
        // Checking loads the Lua files once, on one worker.
        plan.nbthread = 1;
    }

    // In daemon mode everything from here on runs in the child; the parent
    // exits once the child reports that it serves (or fails).
    // As in HAProxy, -d (foreground debugging) overrides daemon mode.
    // A worker never detaches: its master does.
    let detached = if (opts.daemon || proc_cfg.daemon)
        && !opts.check_only
        && !opts.debug
        && inherited.is_none()
    {
        match process::daemonize() {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("[ALERT] {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    // Written before anything listens, removed on every exit path.
    let _pidfile = if opts.check_only || inherited.is_some() {
        PidFile::none()
    } else {
        PidFile::write(opts.pidfile.clone().or(plan.pidfile.clone()))
    };
    // Signals before listeners: a stop that comes while starting waits for
    // the proxy to serve rather than killing it (stop_signals.rs).
    let signals = match stop_signals::StopSignals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("[ALERT] cannot install the signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    // Bind before loading Lua so a busy port is reported like any other error.
    let mut listeners = Vec::new();
    let mut errors = Vec::new();
    if !opts.check_only {
        for fe in &plan.frontends {
            for b in &fe.binds {
                let bound = match inherited.as_mut().and_then(|i| i.take_listener(b.addr)) {
                    Some(adopted) => adopted,
                    None => listen::bind(b.addr, b.backlog),
                };
                match bound {
                    Ok(l) => listeners.push((fe.name.clone(), l)),
                    Err(e) => errors.push(format!(
                        "[ALERT] parsing [{}] : cannot bind {}: {e}",
                        b.location, b.addr
                    )),
                }
            }
        }
    }
    // Each frontend's run-time control holds its own copy of its sockets.
    if !opts.check_only {
        for fe in &plan.frontends {
            let socks = listeners
                .iter()
                .filter(|(name, _)| *name == fe.name)
                .zip(&fe.binds)
                .filter_map(|((_, l), b)| Some((l.try_clone().ok()?, b.backlog)))
                .collect();
            let ctl = listen_control::FrontendControl::new(fe.name.clone(), socks);
            if let Some(entry) = plan.registry.frontend(&fe.name) {
                entry.set_control(std::sync::Arc::new(ctl));
            }
        }
    }
    // The stats sockets, bound with the frontends' listeners.
    let mut cli_sockets = Vec::new();
    if !opts.check_only {
        for s in &cli_socket_defs {
            match crate::cli::listener::bind(s) {
                Ok(b) => cli_sockets.push(b),
                Err(e) => errors.push(e),
            }
        }
    }
    if !errors.is_empty() {
        for e in errors {
            eprintln!("{e}");
        }
        return ExitCode::from(1);
    }

    let nb = plan.nbthread;
    let (loaded_tx, loaded_rx) = std_mpsc::channel::<(usize, Loaded)>();
    let (init_tx, init_rx) = std_mpsc::channel::<Result<(), String>>();
    let (shutdown_tx, shutdown_rx) = watch::channel(Shutdown::Running);
    let (shared_tx, shared_rx) = mpsc::unbounded_channel::<SharedJob>();
    let has_shared = !plan.shared_files.is_empty();
    let maxconn = Arc::new(Semaphore::new(plan.maxconn));
    let settings = plan.settings.clone();
    let shared_settings = plan.shared_settings.clone();
    let load_plan = Arc::new(plan::Plan {
        frontends: Vec::new(),
        ..clone_plan(&plan)
    });

    let mut go_txs = Vec::new();
    let mut handles = Vec::new();
    let mut shared_rx = Some(shared_rx);
    for id in 0..nb {
        let (go_tx, go_rx) = std_mpsc::channel::<Go>();
        go_txs.push(go_tx);
        let worker_listeners: Vec<_> = listeners
            .iter()
            .filter_map(|(name, l): &(Arc<str>, std::net::TcpListener)| {
                Some((name.clone(), l.try_clone().ok()?))
            })
            .collect();
        let ctx = WorkerStart {
            id,
            load_plan: load_plan.clone(),
            settings: settings.clone(),
            shared_settings: shared_settings.clone(),
            loaded_tx: loaded_tx.clone(),
            init_tx: init_tx.clone(),
            go_rx,
            shutdown_rx: shutdown_rx.clone(),
            shared_rx: if id == 0 { shared_rx.take() } else { None },
            shared_tx: if has_shared && id != 0 {
                Some(shared_tx.clone())
            } else {
                None
            },
            listeners: worker_listeners,
            maxconn: maxconn.clone(),
            // A later cpu-map line replaces an earlier one for a thread.
            cpus: proc_cfg
                .cpu_map
                .iter()
                .rev()
                .find(|m| m.thread as usize == id + 1)
                .map(|m| m.cpus.clone()),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("luahost-worker-{id}"))
            .spawn(move || worker_main(ctx));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("[ALERT] cannot start worker thread {id}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    drop(loaded_tx);
    drop(init_tx);
    drop(shared_tx);
    // The workers hold their own copies: the sockets close when the workers
    // stop accepting (soft stop), not when this thread exits.
    drop(listeners);
    // The workers hold their own receivers.
    drop(shutdown_rx);

    // Collect what the workers loaded.
    let mut registered = Vec::new();
    let mut failed = false;
    for _ in 0..nb {
        match loaded_rx.recv() {
            Ok((0, Ok(list))) => registered = list,
            Ok((_, Ok(_))) => {}
            Ok((_, Err(e))) => {
                if !failed {
                    eprintln!("[ALERT] {e}");
                }
                failed = true;
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if !failed {
        if let Err(errors) = plan::resolve_lua(&mut plan, &registered) {
            for e in errors {
                eprintln!("{e}");
            }
            failed = true;
        }
    }
    if failed || opts.check_only {
        for tx in &go_txs {
            let _ = tx.send(Go::Abort);
        }
        for h in handles {
            let _ = h.join();
        }
        if failed {
            eprintln!("[ALERT] Fatal errors found in configuration.");
            return ExitCode::from(1);
        }
        println!("Configuration file is valid");
        return ExitCode::SUCCESS;
    }

    let plan = Arc::new(plan);
    for tx in &go_txs {
        let _ = tx.send(Go::Serve(plan.clone()));
    }
    // The init functions run before anything is served; a failing one stops
    // start-up, as in HAProxy.
    let mut init_failed = false;
    for _ in 0..nb {
        match init_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("[ALERT] {e}");
                init_failed = true;
            }
            Err(_) => {
                init_failed = true;
                break;
            }
        }
    }
    if !init_failed {
        // Bound, loaded and initialised (as in HAProxy, where the init
        // functions run before the chroot and the privilege drop): now the
        // process may lose access to the file system and its privileges,
        // before any task or connection runs.
        let confined = match &proc_cfg.chroot {
            Some(dir) => process::chroot(dir),
            None => Ok(()),
        }
        .and_then(|()| process::drop_privileges(proc_cfg.uid, proc_cfg.gid));
        if let Err(e) = confined {
            eprintln!("[ALERT] {e}");
            init_failed = true;
        }
    }
    let mut cli = Some(Box::new(crate::cli::Start {
        sockets: cli_sockets,
        timeout: cli_timeout,
        maxconn: cli_maxconn,
        nbthread: plan.nbthread,
        registry: plan.registry.clone(),
        config: cli_facts,
    }));
    for tx in &go_txs {
        let _ = tx.send(if init_failed {
            Go::Abort
        } else {
            Go::Start(cli.take())
        });
    }
    if init_failed {
        let _ = shutdown_tx.send(Shutdown::Hard);
        drop(shutdown_tx);
        for h in handles {
            let _ = h.join();
        }
        eprintln!("[ALERT] Fatal errors found in configuration.");
        return ExitCode::from(1);
    }
    crate::log::notice(&format!(
        "luahost {} started: {} worker thread(s), {} frontend(s)",
        env!("CARGO_PKG_VERSION"),
        plan.nbthread,
        plan.frontends.len()
    ));
    // Health checks start once everything serves, on their own thread.
    let _checks = match crate::checks::model::start(checks, &plan.registry) {
        Ok(r) => r,
        Err(e) => {
            crate::log::alert(&format!("cannot start the health checks: {e}"));
            None
        }
    };
    if let Some(d) = detached {
        d.ready();
    }
    if let Some(i) = inherited.as_mut() {
        i.ready();
    }
    let watchdog = StopWatchdog {
        grace: plan.grace,
        pidfile: _pidfile.path().map(Path::to_path_buf),
    };
    wait_for_signals(
        signals,
        shutdown_tx,
        proc_cfg.grace,
        watchdog,
        plan.registry.clone(),
    );
    for h in handles {
        let _ = h.join();
    }
    ExitCode::SUCCESS
}

/// A copy of the plan without the frontends (workers load Lua from it before
/// the services are resolved).
fn clone_plan(p: &Plan) -> Plan {
    Plan {
        frontends: Vec::new(),
        backends: Default::default(),
        registry: p.registry.clone(),
        shared_files: p.shared_files.clone(),
        per_thread_files: p.per_thread_files.clone(),
        nbthread: p.nbthread,
        maxconn: p.maxconn,
        bufsize: p.bufsize,
        grace: p.grace,
        settings: p.settings.clone(),
        shared_settings: p.shared_settings.clone(),
        maxmem_bytes: p.maxmem_bytes,
        log_level: p.log_level,
        pidfile: p.pidfile.clone(),
        hard_stop_after: p.hard_stop_after,
    }
}

struct WorkerStart {
    id: usize,
    load_plan: Arc<Plan>,
    settings: LuaSettings,
    shared_settings: LuaSettings,
    loaded_tx: std_mpsc::Sender<(usize, Loaded)>,
    init_tx: std_mpsc::Sender<Result<(), String>>,
    go_rx: std_mpsc::Receiver<Go>,
    shutdown_rx: watch::Receiver<Shutdown>,
    shared_rx: Option<mpsc::UnboundedReceiver<SharedJob>>,
    shared_tx: Option<mpsc::UnboundedSender<SharedJob>>,
    listeners: Vec<(Arc<str>, std::net::TcpListener)>,
    maxconn: Arc<Semaphore>,
    /// `cpu-map`: the CPUs this worker thread may run on.
    cpus: Option<Vec<u32>>,
}

fn worker_main(w: WorkerStart) {
    if let Some(cpus) = &w.cpus {
        if let Err(e) = process::pin_current_thread(cpus) {
            crate::log::warning(&format!("cpu-map: worker thread {}: {e}", w.id + 1));
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = w
                .loaded_tx
                .send((w.id, Err(format!("cannot create the event loop: {e}"))));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let settings = Rc::new(w.settings);
        let shared_settings = Rc::new(w.shared_settings);
        let (per_thread, shared) =
            match worker::load_states(w.id, &w.load_plan, &settings, &shared_settings) {
                Ok(s) => s,
                Err(e) => {
                    let _ = w.loaded_tx.send((w.id, Err(e)));
                    return;
                }
            };
        if w.id == 0 {
            startup_trace::mark("lua loaded (worker 0)");
        }
        let mut registered = Vec::new();
        for (state, kind) in [
            (&shared, StateKind::Shared),
            (&per_thread, StateKind::PerThread),
        ] {
            if let Some(s) = state {
                let regs = s.info.regs.borrow();
                for (name, reg) in regs.services.iter() {
                    registered.push((name.clone(), Registered::Service(reg.mode), kind));
                }
                for (name, by_kind) in regs.actions.iter() {
                    for a in by_kind {
                        registered.push((
                            name.clone(),
                            Registered::Action {
                                kind: a.kind,
                                nb_args: a.nb_args,
                            },
                            kind,
                        ));
                    }
                }
                for name in regs.fetches.keys() {
                    registered.push((name.clone(), Registered::Fetch, kind));
                }
                for name in regs.converters.keys() {
                    registered.push((name.clone(), Registered::Converter, kind));
                }
            }
        }
        if w.id == 0 {
            let states: Vec<&Rc<crate::lua::state::HostState>> =
                [&shared, &per_thread].into_iter().flatten().collect();
            crate::cli::lua_cli::publish(&states);
        }
        let _ = w.loaded_tx.send((w.id, Ok(registered)));
        let plan = match w.go_rx.recv() {
            Ok(Go::Serve(plan)) => plan,
            _ => return,
        };
        // Init functions: the shared state's once (here on worker 0), each
        // per-thread state's on its own worker.
        let mut init = Ok(());
        for s in [&shared, &per_thread].into_iter().flatten() {
            if let Err(e) = s.run_inits_and_start().await {
                init = Err(e);
                break;
            }
        }
        let failed = init.is_err();
        if w.id == 0 {
            startup_trace::mark("init run (worker 0)");
        }
        let _ = w.init_tx.send(init);
        if failed {
            return;
        }
        // Blocking here keeps the tasks spawned above from running until the
        // process is confined (chroot, privileges).
        let cli = match w.go_rx.recv() {
            Ok(Go::Start(cli)) => cli,
            _ => return,
        };
        let shared_lua = match (&shared, w.shared_tx) {
            (Some(s), _) => SharedLua::Local(s.clone()),
            (None, Some(tx)) => SharedLua::Remote(tx),
            (None, None) => SharedLua::None,
        };
        if w.id == 0 {
            crate::cli::lua_cli::serve_jobs(shared.clone(), per_thread.clone());
        }
        if let Some(cli) = cli {
            crate::cli::serve(*cli, w.shutdown_rx.clone());
        }
        let mut job_loop = None;
        if let (Some(s), Some(mut rx)) = (shared.clone(), w.shared_rx) {
            // Jobs from other workers for the shared state.
            job_loop = Some(tokio::task::spawn_local(async move {
                while let Some(job) = rx.recv().await {
                    // A job that panics must not end the loop: every later
                    // request needing the shared state would fail.
                    let state = s.clone();
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || job(state)))
                        .is_err()
                    {
                        crate::log::alert(
                            "internal error: a job for the shared Lua state panicked",
                        );
                    }
                }
            }));
        }
        let worker = Rc::new(Worker {
            id: w.id,
            per_thread,
            shared: shared_lua,
            plan: plan.clone(),
            forwarder: crate::backend::Forwarder::new(),
        });
        let listeners = w
            .listeners
            .into_iter()
            .filter_map(|(name, l)| {
                Some((plan.frontends.iter().find(|f| f.name == name)?.clone(), l))
            })
            .collect();
        plan.registry.reapers().start();
        worker::serve(worker, listeners, w.shutdown_rx, w.maxconn).await;
        // Worker 0 keeps the shared state for the other workers' requests in
        // flight: the job loop ends when they have all stopped (and dropped
        // their senders), or after the grace period.
        if let Some(jobs) = job_loop {
            let _ = tokio::time::timeout(plan.grace, jobs).await;
        }
    });
}

/// Ends the process when a hard stop outlasts its grace period.
///
/// A worker normally finishes its requests within the grace period and
/// exits. One stuck in Lua where no hook can reach it (a long C call, or a
/// script's own hook function, which Lua runs with hooks disabled) would never
/// return to its event loop: after the grace period and a short margin, this
/// thread ends the process with status 1 instead of leaving it to SIGKILL.
struct StopWatchdog {
    grace: Duration,
    pidfile: Option<PathBuf>,
}

/// How long after the grace period the watchdog waits for the workers.
const STOP_MARGIN: Duration = Duration::from_secs(2);

impl StopWatchdog {
    fn arm(self) {
        let spawned = std::thread::Builder::new()
            .name("luahost-stop-watchdog".into())
            .spawn(move || {
                std::thread::sleep(self.grace + STOP_MARGIN);
                crate::log::alert(&format!(
                    "stop: a worker is still busy {} s after the stop began (stuck in Lua?); exiting",
                    (self.grace + STOP_MARGIN).as_secs()
                ));
                if let Some(p) = &self.pidfile {
                    let _ = std::fs::remove_file(p);
                }
                // SAFETY: _exit ends the process at once, without running
                // atexit handlers or destructors, which the stuck worker
                // thread could still be using.
                unsafe { libc::_exit(1) }
            });
        if let Err(e) = spawned {
            crate::log::alert(&format!("cannot start the stop watchdog: {e}"));
        }
    }
}

/// Waits for SIGTERM/SIGINT (hard stop) or SIGUSR1 (soft stop), registered
/// since start-up, and tells the workers; returns when they may be joined. With `grace`, a soft stop
/// keeps accepting for that long first (HAProxy's `grace`). A hard stop arms
/// the watchdog.
fn wait_for_signals(
    signals: stop_signals::StopSignals,
    tx: watch::Sender<Shutdown>,
    grace: Option<std::time::Duration>,
    watchdog: StopWatchdog,
    registry: Arc<crate::backend::Registry>,
) {
    let stop_signals::StopSignals {
        rt,
        mut term,
        mut int,
        mut usr1,
    } = signals;
    rt.block_on(async move {
        let mut mode = tokio::select! {
            _ = term.recv() => Shutdown::Hard,
            _ = int.recv() => Shutdown::Hard,
            _ = usr1.recv() => Shutdown::Soft,
        };
        if let (Shutdown::Soft, Some(grace)) = (mode, grace) {
            crate::log::notice("soft stop requested: still accepting during the grace period");
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = term.recv() => mode = Shutdown::Hard,
                _ = int.recv() => mode = Shutdown::Hard,
            }
        }
        crate::log::notice(match mode {
            Shutdown::Soft => "soft stop: no longer accepting connections; exiting when idle",
            _ => "stopping: finishing the requests in flight",
        });
        // The run-time controls' copies of the listening sockets close too,
        // so the sockets close once the workers stop accepting.
        listen_control::release_all(&registry);
        let _ = tx.send(mode);
        if mode == Shutdown::Soft {
            // A later SIGTERM/SIGINT turns a soft stop into a hard one.
            tokio::select! {
                _ = term.recv() => { let _ = tx.send(Shutdown::Hard); watchdog.arm(); }
                _ = int.recv() => { let _ = tx.send(Shutdown::Hard); watchdog.arm(); }
                _ = tx.closed() => {}
            }
        } else {
            watchdog.arm();
        }
    });
}
