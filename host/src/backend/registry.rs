//! The registry of proxies: every frontend, backend and listen section by
//! name, with HAProxy's proxy ids, and the backends' live server models.
//!
//! It is the root of the live model: built once at start-up, shared by the
//! workers (through the plan) and the Lua states (through their state info),
//! never a process-wide global. Proxies do not come and go at run time (only
//! servers do), so the proxy list itself is immutable.

use super::events::EventBus;
use super::name_index::NameIndex;
use super::server::Server;
use super::spec::{BackendSpec, SettingsCache};
use super::stream_kill::Reapers;
use super::Backend;
use crate::config::{self, Mode, ProxyKind};
use std::sync::{Arc, Mutex, OnceLock};

/// What a proxy can do (HAProxy's `get_cap()`: "frontend", "backend" or
/// "proxy" for both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyCap {
    Frontend,
    Backend,
    /// A `listen` section: both.
    Listen,
}

impl ProxyCap {
    pub fn is_frontend(self) -> bool {
        matches!(self, ProxyCap::Frontend | ProxyCap::Listen)
    }

    pub fn is_backend(self) -> bool {
        matches!(self, ProxyCap::Backend | ProxyCap::Listen)
    }

    /// The name `Proxy:get_cap()` returns.
    pub fn name(self) -> &'static str {
        match self {
            ProxyCap::Frontend => "frontend",
            ProxyCap::Backend => "backend",
            ProxyCap::Listen => "proxy",
        }
    }
}

/// One proxy (section) of the configuration.
pub struct ProxyEntry {
    pub name: Arc<str>,
    /// HAProxy's `uuid` (`id` keyword, else automatic).
    pub uuid: i32,
    pub cap: ProxyCap,
    pub mode: Mode,
    /// The backend side, for backends and listen sections: built on first
    /// use (see `spec.rs`). Boxed, as the frontend side: with 300,000
    /// backends the entries are one array of 40 bytes each (rather than 112),
    /// and the boxes take the memory the parsed sections give back as the
    /// registry is built (`Registry::take_from`).
    backend: Option<Box<LazyBackend>>,
    /// The frontend side, for frontends and listen sections.
    frontend: Option<Box<FrontendSide>>,
}

/// What a frontend (or listen section) has besides its name and ids.
struct FrontendSide {
    /// The listening addresses (bind lines), in order: listener `sock-N`
    /// is the N-th (HAProxy's default listener names).
    listeners: Box<[std::net::SocketAddr]>,
    /// The run-time control of the listeners (pause, resume, stop), set
    /// once when they are bound; unset under `-c` and for proxies without
    /// listeners.
    control: OnceLock<Arc<crate::proxy::listen_control::FrontendControl>>,
    /// A frontend's connection counters (`scur`, `smax`, `stot`), counted
    /// by the workers that accept its connections.
    frontend_counters: Arc<crate::stats::FrontendCounters>,
}

/// A backend that is built the first time it is asked for.
struct LazyBackend {
    spec: BackendSpec,
    built: OnceLock<Arc<Backend>>,
    /// What every backend of the registry is built with (one pointer per
    /// backend rather than one per item).
    context: Arc<BuildContext>,
}

/// What a backend needs from its registry when it is built.
struct BuildContext {
    events: Arc<EventBus>,
    reapers: Arc<Reapers>,
    /// The Unix time of the start-up: the servers' state dates from it
    /// whenever the backend is built.
    since: u64,
}

impl ProxyEntry {
    /// The name of listener `i` (0-based): HAProxy's default, `sock-N`.
    pub fn listener_name(i: usize) -> String {
        format!("sock-{}", i + 1)
    }

    /// The listening addresses (bind lines) of a frontend, in order
    /// (listener `sock-N` is the N-th); none for a backend.
    pub fn listeners(&self) -> &[std::net::SocketAddr] {
        self.frontend.as_ref().map_or(&[], |f| &f.listeners)
    }

    /// A frontend's connection counters (none for a backend).
    pub fn frontend_counters(&self) -> Option<&Arc<crate::stats::FrontendCounters>> {
        self.frontend.as_ref().map(|f| &f.frontend_counters)
    }

    /// The control of this frontend's listeners, once they are bound.
    pub fn control(&self) -> Option<&Arc<crate::proxy::listen_control::FrontendControl>> {
        self.frontend.as_ref()?.control.get()
    }

    /// Sets the control of this frontend's listeners (once, at start-up;
    /// nothing for a proxy that is not a frontend).
    pub fn set_control(&self, control: Arc<crate::proxy::listen_control::FrontendControl>) {
        if let Some(f) = &self.frontend {
            let _ = f.control.set(control);
        }
    }

    /// The backend side (backends and listen sections), built now if it
    /// was not yet.
    pub fn backend(&self) -> Option<&Arc<Backend>> {
        let lazy = self.backend.as_ref()?;
        Some(lazy.built.get_or_init(|| {
            Arc::new(Backend::from_spec(
                self.name.clone(),
                self.uuid,
                &lazy.spec,
                lazy.context.events.clone(),
                lazy.context.reapers.clone(),
                lazy.context.since,
            ))
        }))
    }

    /// Whether the backend side was built (tests of the laziness).
    #[cfg(test)]
    pub fn backend_built(&self) -> bool {
        self.backend
            .as_ref()
            .is_some_and(|l| l.built.get().is_some())
    }

    /// The settings record of the backend side (tests of the sharing).
    #[cfg(test)]
    pub(crate) fn settings_record(&self) -> Option<Arc<super::spec::BackendSettings>> {
        self.backend.as_ref().map(|l| l.spec.settings.clone())
    }
}

/// Every proxy of the configuration, in configuration order.
pub struct Registry {
    proxies: Box<[ProxyEntry]>,
    /// Positions in `proxies` of the backends (and listen sections) by name.
    backends: NameIndex,
    /// Positions of the frontends (and listen sections) by name.
    frontends: NameIndex,
    events: Arc<EventBus>,
    /// The workers' reapers, which kill the streams using a server.
    reapers: Arc<Reapers>,
    /// HAProxy's `srv_id_reuse_cnt`: the source of dynamic servers' `rid`
    /// (see `runtime.rs`); only touched by add/del server.
    rid_counter: Mutex<u64>,
}

impl Registry {
    /// A registry without proxies (a Lua state outside the proxy, tests).
    pub fn empty() -> Registry {
        Registry {
            proxies: Box::new([]),
            backends: NameIndex::default(),
            frontends: NameIndex::default(),
            events: Arc::new(EventBus::default()),
            reapers: Arc::new(Reapers::default()),
            rid_counter: Mutex::new(0),
        }
    }

    /// Builds the registry, resolving server host names now (as HAProxy does
    /// at startup); each backend's live state is built on first use. Every
    /// problem is reported, formatted as configuration alerts.
    pub fn build(cfg: &config::Config) -> Result<Registry, Vec<String>> {
        let mut b = Builder::new(cfg);
        for p in &cfg.proxies {
            b.add(p);
        }
        b.finish()
    }

    /// [`Registry::build`], taking the sections out of `cfg` (its `proxies`
    /// are left empty): each section is dropped as soon as its entry is
    /// built, so the memory of the parsed configuration is given back while
    /// the registry's is taken, and the start-up's peak is not their sum.
    /// Whatever else needs the sections (the CLI's facts, the check
    /// settings) takes it before.
    pub fn take_from(cfg: &mut config::Config) -> Result<Registry, Vec<String>> {
        let mut b = Builder::new(cfg);
        let mut proxies = std::mem::take(&mut cfg.proxies);
        let len = proxies.len();
        let base = proxies.as_mut_ptr();
        // SAFETY: the length is set to 0 first, so the vector owns no
        // element any more and drops none: each element is read in place
        // and dropped exactly once below, then the vector frees its buffer.
        // Should `add` panic, the elements not yet reached leak (no double
        // drop). Why not `for p in proxies`: that moves each 456-byte
        // section out of the buffer before dropping it, a copy of the whole
        // 137 MB array with 300,000 sections.
        unsafe {
            proxies.set_len(0);
            for i in 0..len {
                let p = base.add(i);
                b.add(&*p);
                std::ptr::drop_in_place(p);
            }
        }
        drop(proxies);
        b.finish()
    }

    /// The name at a position, for the name indexes.
    fn names<'a>(&'a self) -> impl Fn(u32) -> Option<&'a str> + 'a {
        |at| self.proxies.get(at as usize).map(|p| &*p.name)
    }

    /// The backend (or listen section) named `name`.    /// The backend (or listen section) named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        let at = self.backends.get(name, self.names())?;
        self.proxies.get(at as usize)?.backend()
    }

    /// The server `server` of backend `backend`.
    pub fn find_server(&self, backend: &str, server: &str) -> Option<(Arc<Backend>, Arc<Server>)> {
        let be = self.get(backend)?;
        let srv = be.server(server)?;
        Some((be.clone(), srv))
    }

    /// The position of the backend (or listen section) `name`.
    pub fn backend_position(&self, name: &str) -> Option<usize> {
        self.backends.get(name, self.names()).map(|at| at as usize)
    }

    /// The position of the frontend (or listen section) `name`.
    pub fn frontend_position(&self, name: &str) -> Option<usize> {
        self.frontends.get(name, self.names()).map(|at| at as usize)
    }

    /// The position of the proxy `name` (`core.proxies[name]`): the first in
    /// configuration order when a frontend and a backend share the name.
    pub fn proxy_position(&self, name: &str) -> Option<usize> {
        match (self.frontend_position(name), self.backend_position(name)) {
            (Some(f), Some(b)) => Some(f.min(b)),
            (Some(x), None) | (None, Some(x)) => Some(x),
            (None, None) => None,
        }
    }

    /// The frontend (or listen section) named `name`.
    pub fn frontend(&self, name: &str) -> Option<&ProxyEntry> {
        let at = self.frontends.get(name, self.names())?;
        self.proxies.get(at as usize)
    }

    /// The backend-capable proxy named `name`, as an entry.
    pub fn backend_entry(&self, name: &str) -> Option<&ProxyEntry> {
        let at = self.backends.get(name, self.names())?;
        self.proxies.get(at as usize)
    }

    /// A proxy by name, frontend or backend (`core.proxies[name]`): the first
    /// in configuration order when a frontend and a backend share the name.
    pub fn proxy(&self, name: &str) -> Option<&ProxyEntry> {
        self.proxies.get(self.proxy_position(name)?)
    }

    /// A proxy by `uuid`.
    pub fn proxy_by_uuid(&self, uuid: i32) -> Option<&ProxyEntry> {
        self.proxies.iter().find(|p| p.uuid == uuid)
    }

    /// Every proxy, in configuration order.
    pub fn proxies(&self) -> &[ProxyEntry] {
        &self.proxies
    }

    /// The proxy at position `at` (for enumerating without holding a borrow).
    pub fn proxy_at(&self, at: usize) -> Option<&ProxyEntry> {
        self.proxies.get(at)
    }

    /// Every backend, in configuration order.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> + '_ {
        self.proxies.iter().filter_map(|p| p.backend())
    }

    /// Number of servers over all backends now.
    pub fn server_count(&self) -> usize {
        self.backends().map(|b| b.servers().servers.len()).sum()
    }

    pub(super) fn reuse_counter(&self) -> &Mutex<u64> {
        &self.rid_counter
    }

    /// The reapers of the workers serving this registry (each worker
    /// starts its own, see `stream_kill.rs`).
    pub fn reapers(&self) -> &Arc<Reapers> {
        &self.reapers
    }

    /// The process's server event bus.
    pub fn events(&self) -> &Arc<EventBus> {
        &self.events
    }
}

/// Builds a registry section by section (see `Registry::build`).
///
/// Proxy ids follow HAProxy 3.0 (`check_config_validity`): walking the
/// sections in order with a counter starting at 1 that moves on for every
/// section, a section without an `id` takes the first id not used from
/// the counter on.
struct Builder {
    proxies: Vec<ProxyEntry>,
    errors: Vec<String>,
    context: Arc<BuildContext>,
    settings: SettingsCache,
    /// The id of the first section.
    first: i32,
}

impl Builder {
    fn new(cfg: &config::Config) -> Builder {
        // No `id` keyword for proxies yet: every id is automatic, so the
        // counter is the position. The CLI's own frontend ("GLOBAL", which
        // any `stats` line in `global` creates) takes id 1 in HAProxy,
        // before every section.
        let s = &cfg.global.stats;
        let first = if s.sockets.is_empty() && s.timeout.is_none() && s.maxconn.is_none() {
            1
        } else {
            2
        };
        Builder {
            proxies: Vec::with_capacity(cfg.proxies.len()),
            errors: Vec::new(),
            context: Arc::new(BuildContext {
                events: Arc::new(EventBus::default()),
                reapers: Arc::new(Reapers::default()),
                since: super::server::unix_now(),
            }),
            settings: SettingsCache::default(),
            first,
        }
    }

    /// Adds the entry of section `p`, the next in configuration order.
    fn add(&mut self, p: &config::Proxy) {
        let uuid = self.proxies.len() as i32 + self.first;
        let cap = match p.kind {
            ProxyKind::Frontend => ProxyCap::Frontend,
            ProxyKind::Backend => ProxyCap::Backend,
            ProxyKind::Listen => ProxyCap::Listen,
        };
        let backend = if p.kind.has_backend() {
            match BackendSpec::from_config(p, &mut self.settings) {
                Ok(spec) => Some(Box::new(LazyBackend {
                    spec,
                    built: OnceLock::new(),
                    context: self.context.clone(),
                })),
                Err(mut e) => {
                    self.errors.append(&mut e);
                    None
                }
            }
        } else {
            None
        };
        self.proxies.push(ProxyEntry {
            name: Arc::from(p.name.as_str()),
            uuid,
            cap,
            mode: p.mode,
            backend,
            frontend: cap.is_frontend().then(|| {
                Box::new(FrontendSide {
                    listeners: p.extras.binds.iter().map(|b| b.addr).collect(),
                    control: OnceLock::new(),
                    frontend_counters: Default::default(),
                })
            }),
        });
    }

    fn finish(self) -> Result<Registry, Vec<String>> {
        if self.errors.is_empty() {
            let proxies = self.proxies.into_boxed_slice();
            let list: &[ProxyEntry] = &proxies;
            let name_at = |at: u32| list.get(at as usize).map(|p| &*p.name);
            // Positions where `cap` holds.
            let having = |cap: fn(ProxyCap) -> bool| {
                (0..list.len() as u32)
                    .filter(move |&at| list.get(at as usize).is_some_and(|p| cap(p.cap)))
            };
            let backends = NameIndex::of(having(ProxyCap::is_backend), name_at);
            let frontends = NameIndex::of(having(ProxyCap::is_frontend), name_at);
            Ok(Registry {
                proxies,
                backends,
                frontends,
                events: self.context.events.clone(),
                reapers: self.context.reapers.clone(),
                rid_counter: Mutex::new(0),
            })
        } else {
            Err(self.errors)
        }
    }
}

/// `nbsrv(backend)` and the like read the live model.
impl crate::sample::ProxyInfo for Registry {
    fn usable_servers(&self, backend: &str) -> Option<usize> {
        self.get(backend).map(|b| b.usable_servers())
    }
}
