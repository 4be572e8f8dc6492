//! What a backend is built from, kept compact until the backend is first
//! used.
//!
//! A configuration may have hundreds of thousands of backends, most of
//! which a process never forwards to. The registry therefore keeps, per
//! backend, only this spec (its servers' settings, and a settings record
//! shared with every backend configured alike — typically all those under
//! one `defaults` section), and builds the live [`Backend`](super::Backend)
//! (server states, balancing tables, queues) the first time something asks
//! for it. Everything that can fail — resolving server host names, checking
//! `option forwardfor` — is done here, at start-up, so errors are still
//! reported before the process serves.

use super::ForwardFor;
use crate::config::{self, Balance, Mode, ServerAddr};
use std::net::SocketAddr;
use std::sync::Arc;

/// The settings of a backend besides its servers, shared by the backends
/// configured alike.
pub(crate) struct BackendSettings {
    pub mode: Mode,
    pub balance: Balance,
    pub timeouts: config::Timeouts,
    pub retries: Option<u32>,
    pub httpclose: bool,
    pub forwardfor: Option<ForwardFor>,
}

/// One configured server, its host name resolved.
pub(crate) struct ServerSpec {
    pub name: Box<str>,
    pub addr: SocketAddr,
    pub weight: u32,
    pub maxconn: usize,
    pub backup: bool,
    pub disabled: bool,
    pub check: bool,
    /// `on-marked-down` / `on-marked-up`.
    pub on_marked: super::server::OnMarked,
}

/// A backend as configured, ready to be built.
pub(crate) struct BackendSpec {
    pub settings: Arc<BackendSettings>,
    pub servers: Box<[ServerSpec]>,
}

/// Hands out shared settings records: a backend configured like the one
/// before it gets the same record. (Backends come in runs under a
/// `defaults` section, so comparing with the last one finds nearly all the
/// sharing without a map.)
#[derive(Default)]
pub(crate) struct SettingsCache {
    last: Option<(SettingsKey, Arc<BackendSettings>)>,
}

/// The configuration values a settings record is built from.
struct SettingsKey {
    mode: Mode,
    balance: Balance,
    timeouts: config::Timeouts,
    retries: Option<u32>,
    httpclose: bool,
    forwardfor: Option<Box<config::ForwardFor>>,
}

impl SettingsKey {
    /// Whether section `p` has these values (without copying them).
    fn matches(&self, p: &config::Proxy) -> bool {
        self.mode == p.mode
            && self.balance == p.balance
            && self.timeouts == *p.timeouts
            && self.retries == p.retries
            && self.httpclose == p.options.httpclose
            && self.forwardfor == p.options.forwardfor
    }
}

impl SettingsCache {
    fn settings(&mut self, p: &config::Proxy) -> Result<Arc<BackendSettings>, String> {
        if let Some((last, record)) = &self.last {
            if last.matches(p) {
                return Ok(record.clone());
            }
        }
        let forwardfor = match &p.options.forwardfor {
            Some(ff) => Some(ForwardFor::from_config(ff)?),
            None => None,
        };
        let record = Arc::new(BackendSettings {
            mode: p.mode,
            balance: p.balance,
            timeouts: *p.timeouts,
            retries: p.retries,
            httpclose: p.options.httpclose,
            forwardfor,
        });
        let key = SettingsKey {
            mode: p.mode,
            balance: p.balance,
            timeouts: *p.timeouts,
            retries: p.retries,
            httpclose: p.options.httpclose,
            forwardfor: p.options.forwardfor.clone(),
        };
        self.last = Some((key, record.clone()));
        Ok(record)
    }
}

impl BackendSpec {
    /// The spec of a backend (or listen) section, resolving its servers'
    /// host names now (as HAProxy does at start-up). Every problem is
    /// reported, formatted as a configuration alert.
    pub(crate) fn from_config(
        p: &config::Proxy,
        cache: &mut SettingsCache,
    ) -> Result<BackendSpec, Vec<String>> {
        let mut errors = Vec::new();
        let mut servers = Vec::with_capacity(p.servers.len());
        for s in &p.servers {
            let addr = match &s.addr {
                ServerAddr::Ip(a) => *a,
                ServerAddr::Host { host, port } => match super::resolve(host, *port) {
                    Ok(a) => a,
                    Err(why) => {
                        errors.push(format!(
                            "[ALERT] parsing [{}] : {} '{}', server '{}': cannot resolve '{host}': {why}",
                            s.location,
                            p.kind.keyword(),
                            p.name,
                            s.name
                        ));
                        continue;
                    }
                },
            };
            servers.push(ServerSpec {
                name: s.name.as_str().into(),
                addr,
                weight: s.weight.unwrap_or(1),
                maxconn: s.maxconn.unwrap_or(0),
                backup: s.backup,
                disabled: s.disabled,
                check: s.check,
                on_marked: super::server::OnMarked::of(s),
            });
        }
        let settings = cache.settings(p).map_err(|why| {
            format!(
                "[ALERT] parsing [{}] : {} '{}': 'option forwardfor': {why}",
                p.location,
                p.kind.keyword(),
                p.name
            )
        });
        match settings {
            Ok(settings) if errors.is_empty() => Ok(BackendSpec {
                settings,
                servers: servers.into_boxed_slice(),
            }),
            Ok(_) => Err(errors),
            Err(e) => {
                errors.push(e);
                Err(errors)
            }
        }
    }
}
