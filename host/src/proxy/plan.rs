//! From a parsed configuration to what the runtime executes: the frontends
//! with their listeners and Lua services, the Lua files and settings.
//! Everything here is `Send + Sync` and shared by the workers.
//!
//! Configuration that parses but that this version cannot run yet is refused
//! here, with its file:line, rather than silently ignored.

use crate::config::{self, Action, Config, Mode, ProxyKind};
use crate::lua::blocking::BlockingMode;
use crate::lua::state::{LuaSettings, ServiceMode};
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

/// A service reference in the configuration, before the Lua files ran.
#[derive(Clone, Debug)]
pub struct ServiceRule {
    pub name: String,
    pub mode: ServiceMode,
    pub location: String,
}

#[derive(Debug)]
pub struct FrontendPlan {
    pub name: Arc<str>,
    pub mode: FrontMode,
    pub binds: Vec<(SocketAddr, String)>,
    pub service_rule: Option<ServiceRule>,
    /// Filled in once the Lua files are loaded.
    pub service: Option<ServiceTarget>,
    pub http_request_timeout: Option<Duration>,
    pub maxconn: Option<usize>,
}

#[derive(Debug)]
pub struct Plan {
    pub frontends: Vec<Arc<FrontendPlan>>,
    pub shared_files: Vec<LuaFile>,
    pub per_thread_files: Vec<LuaFile>,
    pub nbthread: usize,
    pub maxconn: usize,
    pub bufsize: usize,
    /// How long a hard stop (SIGTERM/SIGINT) waits for requests in flight.
    pub grace: Duration,
    pub settings: LuaSettings,
    pub shared_settings: LuaSettings,
    pub maxmem_bytes: usize,
    pub log_level: Option<i32>,
    pub pidfile: Option<PathBuf>,
}

const DEFAULT_MAXCONN: usize = 4096;
const DEFAULT_BUFSIZE: usize = 16384;

fn unsupported(loc: &config::Location, what: &str) -> String {
    format!("[ALERT] parsing [{loc}] : {what} is not supported yet by luahost")
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
        prepend_paths: g
            .lua_prepend_paths
            .iter()
            .map(|p| (p.path.clone(), p.kind == config::PathKind::Cpath))
            .collect(),
        nbthread,
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
    for p in &cfg.proxies {
        check_unsupported(p, &mut errors);
        if p.kind == ProxyKind::Backend {
            continue;
        }
        let mode = match p.mode {
            Mode::Http => FrontMode::Http,
            Mode::Tcp => FrontMode::Tcp,
        };
        let mut service_rule = None;
        let rules = match mode {
            FrontMode::Http => &p.http_request,
            FrontMode::Tcp => &p.tcp_request_content,
        };
        for r in rules {
            if let Action::UseService { name } = &r.action {
                if service_rule.is_none() {
                    service_rule = Some(ServiceRule {
                        name: name.clone(),
                        mode: if mode == FrontMode::Http {
                            ServiceMode::Http
                        } else {
                            ServiceMode::Tcp
                        },
                        location: r.location.to_string(),
                    });
                }
            }
        }
        frontends.push(Arc::new(FrontendPlan {
            name: Arc::from(p.name.as_str()),
            mode,
            binds: p
                .binds
                .iter()
                .map(|b| (b.addr, b.location.to_string()))
                .collect(),
            service_rule,
            service: None,
            http_request_timeout: p.timeouts.http_request.or(p.timeouts.client),
            maxconn: p.maxconn,
        }));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Plan {
        frontends,
        shared_files: lua_files(false),
        per_thread_files: lua_files(true),
        nbthread,
        maxconn: g.maxconn.unwrap_or(DEFAULT_MAXCONN).max(1),
        bufsize: g.bufsize.unwrap_or(DEFAULT_BUFSIZE),
        grace: Duration::from_secs(10),
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

/// Refuses what parses but does not run yet (proxying, most rule actions).
fn check_unsupported(p: &config::Proxy, errors: &mut Vec<String>) {
    for s in &p.servers {
        errors.push(unsupported(
            &s.location,
            "'server' (proxying to backend servers)",
        ));
    }
    if let Some((_, loc)) = &p.default_backend {
        errors.push(unsupported(
            loc,
            "'default_backend' (proxying to backend servers)",
        ));
    }
    for u in &p.use_backends {
        errors.push(unsupported(&u.location, "'use_backend'"));
    }
    for a in &p.acls {
        errors.push(unsupported(&a.location, "'acl'"));
    }
    let lists: [(&str, &Vec<config::Rule>); 5] = [
        ("http-request", &p.http_request),
        ("http-response", &p.http_response),
        ("http-after-response", &p.http_after_response),
        ("tcp-request content", &p.tcp_request_content),
        ("tcp-response content", &p.tcp_response_content),
    ];
    for (kw, rules) in lists {
        for r in rules {
            let service_ok = matches!(r.action, Action::UseService { .. })
                && ((kw == "http-request" && p.mode == Mode::Http)
                    || (kw == "tcp-request content" && p.mode == Mode::Tcp));
            if matches!(r.action, Action::UseService { .. }) && !service_ok {
                errors.push(format!(
                    "[ALERT] parsing [{}] : '{kw} use-service' needs 'mode {}' in this proxy",
                    r.location,
                    if kw.starts_with("http") {
                        "http"
                    } else {
                        "tcp"
                    }
                ));
            } else if !service_ok {
                errors.push(unsupported(
                    &r.location,
                    &format!("'{kw} {}'", action_keyword(&r.action)),
                ));
            } else if r.cond.is_some() {
                errors.push(unsupported(&r.location, "a condition on 'use-service'"));
            }
        }
    }
}

/// The keyword of an action, for messages.
fn action_keyword(a: &Action) -> &'static str {
    match a {
        Action::Lua { .. } => "lua.<name>",
        Action::UseService { .. } => "use-service",
        Action::SetHeader { .. } => "set-header",
        Action::AddHeader { .. } => "add-header",
        Action::DelHeader { .. } => "del-header",
        Action::ReplaceHeader { .. } => "replace-header",
        Action::SetPath { .. } => "set-path",
        Action::SetQuery { .. } => "set-query",
        Action::SetVar { .. } => "set-var",
        Action::UnsetVar { .. } => "unset-var",
        Action::Deny { .. } => "deny",
        Action::Return { .. } => "return",
        Action::Redirect { .. } => "redirect",
        Action::SetStatus { .. } => "set-status",
        Action::Allow => "allow",
        Action::Accept => "accept",
        Action::Reject => "reject",
        #[allow(unreachable_patterns)]
        _ => "action",
    }
}

/// Looks up each frontend's service among what the Lua files registered.
/// `registered` lists (name, mode, state) for the shared and per-thread
/// states of worker 0.
pub fn resolve_services(
    plan: &mut Plan,
    registered: &[(String, ServiceMode, StateKind)],
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for fe in &mut plan.frontends {
        let Some(rule) = fe.service_rule.clone() else {
            continue;
        };
        // A per-thread registration wins over a shared one of the same name.
        let found = registered
            .iter()
            .filter(|(n, _, _)| *n == rule.name)
            .min_by_key(|(_, _, s)| if *s == StateKind::PerThread { 0 } else { 1 });
        match found {
            Some((_, mode, state)) if *mode == rule.mode => {
                if let Some(fe) = Arc::get_mut(fe) {
                    fe.service = Some(ServiceTarget { name: Arc::from(rule.name.as_str()), state: *state });
                }
            }
            Some((_, mode, _)) => errors.push(format!(
                "[ALERT] parsing [{}] : Lua service 'lua.{}' is registered for '{}' but used in a {} proxy",
                rule.location,
                rule.name,
                if *mode == ServiceMode::Http { "http" } else { "tcp" },
                if rule.mode == ServiceMode::Http { "http" } else { "tcp" },
            )),
            None => errors.push(format!(
                "[ALERT] parsing [{}] : unknown Lua service 'lua.{}': no lua-load file registers it \
                 with core.register_service()",
                rule.location, rule.name
            )),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
