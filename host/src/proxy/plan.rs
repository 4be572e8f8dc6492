//! From a parsed configuration to what the runtime executes: the frontends
//! with their listeners and Lua services, the Lua files and settings.
//! Everything here is `Send + Sync` and shared by the workers.
//!
//! Configuration that parses but that this version cannot run yet is refused
//! here, with its file:line, rather than silently ignored.

use crate::config::{self, Config, Mode, ProxyKind};
use crate::lua::blocking::BlockingMode;
use crate::lua::state::{LuaSettings, ServiceMode};
use crate::proxy::rules::{self, CAction, CRule};
use crate::sample::AclSet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A lua-load or lua-load-per-thread file.
#[derive(Clone, Debug)]
pub struct LuaFile {
    pub path: PathBuf,
    pub args: Vec<String>,
    /// "file:line" of the directive.
    pub location: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontMode {
    Http,
    Tcp,
}

/// Which Lua state a registered name belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    Shared,
    PerThread,
}

/// A Lua service a frontend uses.
#[derive(Clone, Debug)]
pub struct ServiceTarget {
    pub name: Arc<str>,
    pub state: StateKind,
}

/// The rules and ACLs of a proxy (a frontend's, or a backend's).
pub struct ProxyRules {
    pub acls: AclSet,
    /// `tcp-request connection` (frontends only).
    pub tcp_connection: Vec<CRule>,
    pub http_request: Vec<CRule>,
    pub http_response: Vec<CRule>,
    pub http_after_response: Vec<CRule>,
    pub tcp_request: Vec<CRule>,
    pub tcp_response: Vec<CRule>,
}

/// `use_backend NAME [if|unless COND]`.
pub struct BackendSwitch {
    pub backend: BackendName,
    pub cond: Option<crate::sample::acl::CompiledCond>,
}

/// A backend named in the configuration, or computed per request
/// (`use_backend be_%[req.hdr(host)]`).
pub enum BackendName {
    Static(Arc<str>),
    Dynamic(crate::sample::LogFormat),
}

impl BackendSwitch {
    /// The backend this rule selects for the transaction of `ctx`.
    pub fn name(&self, ctx: &crate::sample::SampleCtx) -> Arc<str> {
        match &self.backend {
            BackendName::Static(n) => n.clone(),
            BackendName::Dynamic(f) => Arc::from(String::from_utf8_lossy(&f.render(ctx)).as_ref()),
        }
    }
}

/// One listening socket to open.
#[derive(Clone)]
pub struct BindPlan {
    pub addr: SocketAddr,
    /// `file:line` of the `bind` line.
    pub location: String,
    /// The backlog passed to listen().
    pub backlog: u32,
}

/// HAProxy's `listener_backlog()`: the bind line's `backlog`, else the
/// frontend's `backlog`, else its `maxconn`, which defaults to the global
/// `maxconn` (0 means unset at each step). The kernel caps the result at
/// net.core.somaxconn.
fn listen_backlog(b: &config::Bind, p: &config::Proxy, g: &config::Global) -> u32 {
    // listen() takes a C int.
    const MAX: usize = i32::MAX as usize;
    let candidates = [
        b.backlog.map(|n| n as usize),
        p.extras.backlog.map(|n| n as usize),
        p.extras.maxconn,
        Some(g.maxconn.unwrap_or(DEFAULT_MAXCONN)),
    ];
    let n = candidates
        .into_iter()
        .flatten()
        .find(|&n| n > 0)
        .unwrap_or(1);
    n.min(MAX) as u32
}

pub struct FrontendPlan {
    pub name: Arc<str>,
    pub mode: FrontMode,
    /// Each listening address, its location and its listen() backlog.
    pub binds: Vec<BindPlan>,
    pub rules: ProxyRules,
    pub use_backends: Vec<BackendSwitch>,
    /// `default_backend`, or the listen section itself when it has servers.
    pub default_backend: Option<Arc<str>>,
    pub http_request_timeout: Option<Duration>,
    /// `option abortonclose`.
    pub abortonclose: bool,
    /// How long a connection may wait idle for its next request:
    /// `timeout http-keep-alive`, else `timeout http-request`, else
    /// `timeout client` (HAProxy's fallbacks).
    pub keep_alive_timeout: Option<Duration>,
    pub maxconn: Option<usize>,
    pub inspect_delay: Option<Duration>,
    /// The frontend's own `option forwardfor` (applied when the backend has none).
    pub forwardfor: Option<crate::backend::ForwardFor>,
    /// Served by worker 0 alone (set by [`resolve_lua`]): the frontend has
    /// no backend and its rules use the shared Lua state, which lives on
    /// worker 0, so every request would otherwise cross to that worker and
    /// back (docs/architecture.md).
    pub on_shared_lua_worker: bool,
    /// The traffic log (none when the frontend has no logger).
    pub log: Option<Arc<crate::log::TrafficLog>>,
    /// `capture request/response header` and `http-request capture` slots.
    pub captures: Option<Arc<crate::log::capture::CaptureSpec>>,
    /// `option http-buffer-request`.
    pub buffer_request: bool,
    /// `errorfile` and `compression`.
    pub http: HttpSettings,
}

/// A backend's own rules (its servers live in crate::backend).
pub struct BackendPlan {
    pub mode: FrontMode,
    pub rules: ProxyRules,
    /// `option http-buffer-request`.
    pub buffer_request: bool,
    /// `errorfile` and `compression`.
    pub http: HttpSettings,
}

/// What a proxy changes in the HTTP responses going through it.
#[derive(Default)]
pub struct HttpSettings {
    /// `errorfile CODE FILE` replies.
    pub errors: crate::proxy::error_pages::ErrorFiles,
    /// `compression` (none: not configured).
    pub compression: Option<crate::proxy::compress::Settings>,
}

impl HttpSettings {
    /// Neither errorfiles nor compression: the defaults.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty() && self.compression.is_none()
    }

    fn of(p: &config::Proxy) -> HttpSettings {
        HttpSettings {
            errors: crate::proxy::error_pages::ErrorFiles::from_config(&p.extras.errorfiles),
            compression: p
                .compression
                .as_deref()
                .map(crate::proxy::compress::Settings::from_config),
        }
    }
}

pub struct Plan {
    pub frontends: Vec<Arc<FrontendPlan>>,
    pub backends: HashMap<String, Arc<BackendPlan>>,
    /// The live model of proxies and servers (empty until start-up builds it
    /// after the plan).
    pub registry: Arc<crate::backend::Registry>,
    pub shared_files: Vec<LuaFile>,
    pub per_thread_files: Vec<LuaFile>,
    pub nbthread: usize,
    pub maxconn: usize,
    pub bufsize: usize,
    /// How long a hard stop (SIGTERM/SIGINT) waits for requests in flight.
    pub grace: Duration,
    /// `hard-stop-after`: the longest any stop may wait for connections.
    pub hard_stop_after: Option<Duration>,
    pub settings: LuaSettings,
    pub shared_settings: LuaSettings,
    pub maxmem_bytes: usize,
    pub log_level: Option<i32>,
    pub pidfile: Option<PathBuf>,
}

const DEFAULT_MAXCONN: usize = 4096;
const DEFAULT_BUFSIZE: usize = 16384;

/// Whether a proxy has any rule to run.
fn has_rules(r: &ProxyRules) -> bool {
    !(r.http_request.is_empty()
        && r.http_response.is_empty()
        && r.http_after_response.is_empty()
        && r.tcp_request.is_empty()
        && r.tcp_response.is_empty())
}

/// Builds the plan; errors are complete alert lines.
pub fn build(cfg: &Config) -> Result<Plan, Vec<String>> {
    let mut errors = Vec::new();
    let g = &cfg.global;
    let nbthread = g
        .nbthread
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let lua_files = |per_thread: bool| -> Vec<LuaFile> {
        g.lua_loads
            .iter()
            .filter(|l| l.per_thread == per_thread)
            .map(|l| LuaFile {
                path: l.file.clone(),
                args: l.args.clone(),
                location: l.location.to_string(),
            })
            .collect()
    };
    let t = &g.lua;
    let base = LuaSettings {
        forced_yield: t.forced_yield.unwrap_or(10_000),
        session_timeout: t.session_timeout.or(Some(Duration::from_secs(4))),
        service_timeout: t.service_timeout.or(Some(Duration::from_secs(4))),
        // HAProxy's default: tasks have no execution limit. An explicit 0
        // also means none.
        task_timeout: t.task_timeout.filter(|d| !d.is_zero()),
        burst_timeout: t
            .burst_timeout
            .or(Some(Duration::from_millis(1000)))
            .filter(|d| !d.is_zero()),
        blocking: match t.blocking_calls {
            Some(config::BlockingCalls::Deny) => BlockingMode::Deny,
            Some(config::BlockingCalls::Allow) => BlockingMode::Allow,
            _ => BlockingMode::Warn,
        },
        bytecode_allowed: t.bytecode_allowed.unwrap_or(false),
        prepend_paths: g
            .lua_prepend_paths
            .iter()
            .map(|p| (p.path.clone(), p.kind == config::PathKind::Cpath))
            .collect(),
        nbthread,
        openlibs: t.openlibs.clone(),
    };
    let base = LuaSettings {
        session_timeout: base.session_timeout.filter(|d| !d.is_zero()),
        service_timeout: base.service_timeout.filter(|d| !d.is_zero()),
        ..base
    };
    // The shared state is entered by every worker in turn, so it yields more
    // often by default (HAProxy: MAX(500, 10000 / nbthread)).
    let shared_settings = LuaSettings {
        forced_yield: t
            .forced_yield
            .unwrap_or_else(|| (10_000 / nbthread as u32).max(500)),
        ..base.clone()
    };

    let mut frontends = Vec::new();
    let mut backends = HashMap::new();
    for p in &cfg.proxies {
        // Rule sets that parse but are not run yet: refused, not ignored.
        for r in &p.extras.tcp_response_content {
            errors.push(format!(
                "[ALERT] parsing [{}] : 'tcp-response content' rules are not supported yet",
                r.location
            ));
        }
        let rules = match compile_rules(p) {
            Ok(r) => r,
            Err(mut e) => {
                errors.append(&mut e);
                continue;
            }
        };
        let mode = match p.mode {
            Mode::Http => FrontMode::Http,
            Mode::Tcp => FrontMode::Tcp,
        };
        let buffer_request = p.options.http_buffer_request && mode == FrontMode::Http;
        if p.kind == ProxyKind::Backend {
            // Only backends with something to run or change get a plan: one
            // without behaves the same absent, and a configuration may have
            // hundreds of thousands of them.
            let http = HttpSettings::of(p);
            if has_rules(&rules) || buffer_request || !http.is_empty() {
                let plan = BackendPlan {
                    mode,
                    rules,
                    buffer_request,
                    http,
                };
                backends.insert(p.name.clone(), Arc::new(plan));
            }
            continue;
        }
        let default_backend = match (&p.extras.default_backend, p.kind) {
            (Some((name, _)), _) => Some(Arc::from(name.as_str())),
            // A listen section is its own backend when it has servers.
            (None, ProxyKind::Listen) if !p.servers.is_empty() => Some(Arc::from(p.name.as_str())),
            _ => None,
        };
        // A listen section's rules run as its frontend's; its backend part
        // has none, and needs a plan only for its errorfiles and compression.
        let listen_http = (p.kind == ProxyKind::Listen && !p.servers.is_empty())
            .then(|| HttpSettings::of(p))
            .filter(|http| !http.is_empty());
        if let Some(listen_http) = listen_http {
            let plan = BackendPlan {
                mode,
                rules: ProxyRules {
                    acls: AclSet::default(),
                    tcp_connection: Vec::new(),
                    http_request: Vec::new(),
                    http_response: Vec::new(),
                    http_after_response: Vec::new(),
                    tcp_request: Vec::new(),
                    tcp_response: Vec::new(),
                },
                // The frontend part already waited for the body.
                buffer_request: false,
                http: listen_http,
            };
            backends.insert(p.name.clone(), Arc::new(plan));
        }
        let use_backends = p
            .extras
            .use_backends
            .iter()
            .filter_map(|u| {
                let backend = if u.is_dynamic() {
                    match crate::sample::LogFormat::parse(&u.name) {
                        Ok(f) => BackendName::Dynamic(f),
                        Err(e) => {
                            errors.push(format!(
                                "[ALERT] parsing [{}] : invalid backend name format: {e}",
                                u.location
                            ));
                            return None;
                        }
                    }
                } else {
                    BackendName::Static(Arc::from(u.name.as_str()))
                };
                Some((u, backend))
            })
            .map(|(u, backend)| BackendSwitch {
                backend,
                // Conditions were checked by compile_rules above.
                cond: u
                    .cond
                    .as_ref()
                    .and_then(|c| rules.acls.compile_condition(c).ok()),
            })
            .collect();
        let log = match crate::log::TrafficLog::new(&p.name, p, mode == FrontMode::Http) {
            Ok(l) => l.map(Arc::new),
            Err(e) => {
                let at = p.logging.as_ref().and_then(|l| l.format.as_ref());
                let at = at.map_or_else(|| p.location.to_string(), |(_, loc)| loc.to_string());
                errors.push(format!("[ALERT] parsing [{at}] : {e}"));
                None
            }
        };
        let captures = match crate::log::capture::CaptureSpec::from_config(p) {
            Ok(c) => c.map(Arc::new),
            Err(e) => {
                errors.push(format!("[ALERT] parsing [{}] : {e}", p.location));
                None
            }
        };
        frontends.push(Arc::new(FrontendPlan {
            name: Arc::from(p.name.as_str()),
            mode,
            binds: p
                .extras
                .binds
                .iter()
                .map(|b| BindPlan {
                    addr: b.addr,
                    location: b.location.to_string(),
                    backlog: listen_backlog(b, p, g),
                })
                .collect(),
            rules,
            use_backends,
            default_backend,
            http_request_timeout: p.timeouts.http_request.or(p.timeouts.client),
            abortonclose: p.options.abortonclose,
            keep_alive_timeout: p
                .timeouts
                .http_keep_alive
                .or(p.timeouts.http_request)
                .or(p.timeouts.client),
            maxconn: p.extras.maxconn,
            inspect_delay: p.extras.tcp_request_inspect_delay,
            forwardfor: p
                .options
                .forwardfor
                .as_deref()
                .and_then(|ff| crate::backend::ForwardFor::from_config(ff).ok()),
            on_shared_lua_worker: false,
            log,
            captures,
            buffer_request,
            http: HttpSettings::of(p),
        }));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Plan {
        registry: Arc::new(crate::backend::Registry::empty()),
        frontends,
        backends,
        shared_files: lua_files(false),
        per_thread_files: lua_files(true),
        nbthread,
        maxconn: g.maxconn.unwrap_or(DEFAULT_MAXCONN).max(1),
        bufsize: g.bufsize.unwrap_or(DEFAULT_BUFSIZE),
        grace: g.process.hard_stop_after.unwrap_or(Duration::from_secs(10)),
        hard_stop_after: g.process.hard_stop_after,
        settings: base,
        shared_settings,
        maxmem_bytes: t.maxmem_mb.unwrap_or(0).saturating_mul(1024 * 1024) as usize,
        log_level: g
            .logs
            .iter()
            .filter_map(|l| l.level.map(|lv| lv as i32))
            .max(),
        pidfile: g.pidfile.clone(),
    })
}

/// Compiles a proxy's ACLs and rule sets.
fn compile_rules(p: &config::Proxy) -> Result<ProxyRules, Vec<String>> {
    let acls = AclSet::compile(&p.extras.acls).map_err(|errs| {
        errs.into_iter()
            .map(|(loc, e)| format!("[ALERT] parsing [{loc}] : {e}"))
            .collect::<Vec<_>>()
    })?;
    let mut errors = Vec::new();
    let mut set = |rules: &[config::Rule]| -> Vec<CRule> {
        rules
            .iter()
            .filter_map(|r| match rules::compile(r, &acls) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(e);
                    None
                }
            })
            .collect()
    };
    let tcp_connection = set(&p.extras.tcp_request_connection);
    let http_request = set(&p.extras.http_request);
    let http_response = set(&p.extras.http_response);
    let http_after_response = set(&p.extras.http_after_response);
    let tcp_request = set(&p.extras.tcp_request_content);
    let tcp_response = set(&p.extras.tcp_response_content);
    for u in &p.extras.use_backends {
        if let Some(c) = &u.cond {
            if let Err(e) = acls.check_condition(c) {
                errors.push(format!("[ALERT] parsing [{}] : {e}", u.location));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ProxyRules {
        acls,
        tcp_connection,
        http_request,
        http_response,
        http_after_response,
        tcp_request,
        tcp_response,
    })
}

/// What a Lua state registered, as reported by the workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registered {
    Service(ServiceMode),
    /// One registration per rule-set kind ("http-req", ...), with its
    /// mandatory argument count.
    Action {
        kind: &'static str,
        nb_args: usize,
    },
    Fetch,
    Converter,
}

/// A proxy's rule sets with their register_action names.
fn rule_sets(r: &mut ProxyRules) -> [(&mut Vec<CRule>, &'static str); 6] {
    [
        // No Lua action may appear there; its conditions may use Lua fetches.
        (&mut r.tcp_connection, "tcp-req"),
        (&mut r.http_request, "http-req"),
        (&mut r.http_response, "http-res"),
        (&mut r.http_after_response, "http-after-res"),
        (&mut r.tcp_request, "tcp-req"),
        (&mut r.tcp_response, "tcp-res"),
    ]
}

/// Binds the `lua.NAME` references of the configuration to the Lua state
/// that registered each name. `registered` lists (name, kind, state) for the
/// shared and per-thread states of worker 0.
pub fn resolve_lua(
    plan: &mut Plan,
    registered: &[(String, Registered, StateKind)],
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    // A per-thread registration wins over a shared one of the same name.
    let find = |name: &str, want: &dyn Fn(&Registered) -> bool| {
        registered
            .iter()
            .filter(|(n, k, _)| n == name && want(k))
            .min_by_key(|(_, _, s)| if *s == StateKind::PerThread { 0 } else { 1 })
            .map(|(_, k, s)| (k.clone(), *s))
    };
    // `set` is the rule set's kind as register_action spells it.
    // `uses_shared` is set when a rule's Lua lives in the shared state.
    let resolve_set = |rules: &mut Vec<CRule>,
                       mode: Option<FrontMode>,
                       set: &'static str,
                       errors: &mut Vec<String>,
                       uses_shared: &mut bool| {
        for r in rules.iter_mut() {
            let loc = r.location.clone();
            match &mut r.action {
                CAction::Lua { name, state, args } => {
                    match find(
                        name,
                        &|k| matches!(k, Registered::Action { kind, .. } if *kind == set),
                    ) {
                        Some((Registered::Action { nb_args, .. }, s)) => {
                            if args.len() < nb_args {
                                errors.push(format!(
                                    "[ALERT] parsing [{loc}] : Lua action 'lua.{name}' expects at least {nb_args} argument(s), got {}",
                                    args.len()
                                ));
                            }
                            *state = Some((s, set));
                            *uses_shared |= s == StateKind::Shared;
                        }
                        _ => {
                            // Registered, but for other rule sets only?
                            let mut kinds: Vec<&str> = registered
                                .iter()
                                .filter_map(|(n, k, _)| match k {
                                    Registered::Action { kind, .. } if n == &**name => Some(*kind),
                                    _ => None,
                                })
                                .collect();
                            kinds.sort_unstable();
                            kinds.dedup();
                            errors.push(if kinds.is_empty() {
                                format!(
                                    "[ALERT] parsing [{loc}] : unknown Lua action 'lua.{name}': no lua-load file registers it with core.register_action()"
                                )
                            } else {
                                format!(
                                    "[ALERT] parsing [{loc}] : Lua action 'lua.{name}' is not registered for '{set}' \
                                     (core.register_action gave: {})",
                                    kinds.join(", ")
                                )
                            });
                        }
                    }
                }
                CAction::UseService { name, target } => {
                    match find(name, &|k| matches!(k, Registered::Service(_))) {
                        Some((Registered::Service(m), s)) => {
                            let expected = match mode {
                                Some(FrontMode::Tcp) => ServiceMode::Tcp,
                                _ => ServiceMode::Http,
                            };
                            if m != expected {
                                errors.push(format!(
                                    "[ALERT] parsing [{loc}] : Lua service 'lua.{name}' is registered for '{}' but used in a {} proxy",
                                    if m == ServiceMode::Http { "http" } else { "tcp" },
                                    if expected == ServiceMode::Http { "http" } else { "tcp" },
                                ));
                            } else {
                                *target = Some(ServiceTarget { name: Arc::from(name.as_str()), state: s });
                                *uses_shared |= s == StateKind::Shared;
                            }
                        }
                        _ => errors.push(format!(
                            "[ALERT] parsing [{loc}] : unknown Lua service 'lua.{name}': no lua-load file registers it with core.register_service()"
                        )),
                    }
                }
                _ => {}
            }
            for (fetch, conv) in r.lua_sample_names() {
                if let Some(f) = fetch {
                    match find(&f, &|k| *k == Registered::Fetch) {
                        Some((_, s)) => *uses_shared |= s == StateKind::Shared,
                        None => errors.push(format!(
                            "[ALERT] parsing [{loc}] : unknown Lua sample fetch 'lua.{f}'"
                        )),
                    }
                }
                if let Some(c) = conv {
                    match find(&c, &|k| *k == Registered::Converter) {
                        Some((_, s)) => *uses_shared |= s == StateKind::Shared,
                        None => errors.push(format!(
                            "[ALERT] parsing [{loc}] : unknown Lua converter 'lua.{c}'"
                        )),
                    }
                }
            }
        }
    };
    for fe in &mut plan.frontends {
        let mode = fe.mode;
        let Some(fe) = Arc::get_mut(fe) else { continue };
        let mut uses_shared = false;
        for (set, kind) in rule_sets(&mut fe.rules) {
            resolve_set(set, Some(mode), kind, &mut errors, &mut uses_shared);
        }
        fe.on_shared_lua_worker =
            uses_shared && fe.default_backend.is_none() && fe.use_backends.is_empty();
    }
    for be in plan.backends.values_mut() {
        let Some(be) = Arc::get_mut(be) else { continue };
        let mode = be.mode;
        let r = &mut be.rules;
        for (set, kind) in rule_sets(r) {
            resolve_set(set, Some(mode), kind, &mut errors, &mut false);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
