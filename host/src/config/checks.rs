//! Checks that need more than one line: proxy names (as sections open), each
//! proxy once its section is complete, and backend references once every file
//! is read.
//!
//! Per-proxy checks run when the section closes, while its data is still in
//! the CPU cache: a second pass over 300,000 proxies at the end would cost
//! more than parsing them.

use super::proxy::HTTP_OPTIONS;
use super::rules::RuleSet;
use super::{CheckKind, ConfigError, ConfigWarning, Location, Mode, Proxy, ProxyKind};
use std::collections::HashSet;

use crate::name_hash::name_hash;

/// The proxy names, as (hash, proxy index) pairs. Sorting this once at the
/// end is much cheaper than a hash map of owned names: no allocation per
/// proxy and no rehashing while 300,000 backends are read.
#[derive(Default)]
pub(crate) struct Names {
    entries: Vec<(u64, usize)>,
    sorted: bool,
}

impl Names {
    /// Records that proxy `index` is named `name`.
    pub(crate) fn register(&mut self, name: &str, index: usize) {
        self.entries.push((name_hash(name), index));
        self.sorted = false;
    }

    /// Sorts the entries; after this, indexes with the same hash are adjacent
    /// and in declaration order.
    fn sort(&mut self) {
        if !self.sorted {
            // A radix sort on the top bits was tried and measured slower at
            // 300,000 names (perf): its writes land at random in a 4.8 MB
            // list, while this sort partitions it with sequential passes.
            self.entries.sort_unstable();
            self.sorted = true;
        }
    }

    /// The proxies whose name hashes like `name`, in declaration order.
    fn candidates(&self, name: &str) -> &[(u64, usize)] {
        let h = name_hash(name);
        let start = self.entries.partition_point(|e| e.0 < h);
        let len = self.entries[start..].partition_point(|e| e.0 == h);
        &self.entries[start..start + len]
    }

    /// The first proxy with backend capability named `name`.
    fn backend<'p>(&self, proxies: &'p [Proxy], name: &str) -> Option<&'p Proxy> {
        self.candidates(name)
            .iter()
            .filter_map(|&(_, i)| proxies.get(i))
            .find(|p| p.kind.has_backend() && p.name == name)
    }
}

/// Reports proxies whose name is already taken by a proxy with an overlapping
/// capability. HAProxy lets a frontend and a backend share a name, because a
/// backend reference cannot mean a frontend.
fn check_names(proxies: &[Proxy], names: &Names, errors: &mut Vec<ConfigError>) {
    // A hash of its own means a name of its own: the proxy is not read at
    // all (reading 300,000 proxies in hash order misses the cache each time).
    for group in names.entries.chunk_by(|a, b| a.0 == b.0) {
        if group.len() < 2 {
            continue;
        }
        for (k, &(_, i)) in group.iter().enumerate() {
            let Some(p) = proxies.get(i) else { continue };
            let clash = group[..k]
                .iter()
                .filter_map(|&(_, j)| proxies.get(j))
                .find(|q| {
                    q.name == p.name
                        && ((q.kind.has_frontend() && p.kind.has_frontend())
                            || (q.kind.has_backend() && p.kind.has_backend()))
                });
            if let Some(prev) = clash {
                alert(errors, &p.location, duplicate_name(p, prev));
            }
        }
    }
}

fn alert(errors: &mut Vec<ConfigError>, loc: &Location, message: String) {
    errors.push(ConfigError {
        location: Some(loc.clone()),
        message,
    });
}

/// The message for a proxy whose name is taken.
fn duplicate_name(p: &Proxy, prev: &Proxy) -> String {
    format!(
        "{} '{}' has the same name as {} '{}' declared at {}",
        p.kind.keyword(),
        p.name,
        prev.kind.keyword(),
        prev.name,
        prev.location
    )
}

/// Checks a complete proxy: a frontend needs a bind (unless it has an
/// invalid one, already reported: `bind_written`), server names are unique,
/// and HTTP settings in a TCP proxy are reported as ignored.
pub(crate) fn check_proxy(
    p: &Proxy,
    bind_written: bool,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigWarning>,
) {
    if p.kind == ProxyKind::Frontend && p.extras.binds.is_empty() && !bind_written {
        alert(
            errors,
            &p.location,
            format!(
                "frontend '{}' has no 'bind' line; a frontend needs at least one listening address",
                p.name
            ),
        );
    }
    check_server_names(p, errors);
    warn_unused_check_rules(p, warnings);
    if p.mode == Mode::Tcp {
        warn_http_in_tcp(p, warnings);
    }
}

fn check_server_names(p: &Proxy, errors: &mut Vec<ConfigError>) {
    let mut report = |s: &super::ServerDef| {
        let message = format!(
            "server '{}' is defined twice in {} '{}'",
            s.name,
            p.kind.keyword(),
            p.name
        );
        alert(errors, &s.location, message);
    };
    // A hash set only pays off for large backends.
    if p.servers.len() <= 16 {
        for (i, s) in p.servers.iter().enumerate() {
            if p.servers[..i].iter().any(|t| t.name == s.name) {
                report(s);
            }
        }
    } else {
        let mut seen: HashSet<&str> = HashSet::with_capacity(p.servers.len());
        for s in &p.servers {
            if !seen.insert(&s.name) {
                report(s);
            }
        }
    }
}

/// `http-check` / `tcp-check` rules without the option that runs them are
/// ignored, as HAProxy says.
fn warn_unused_check_rules(p: &Proxy, warnings: &mut Vec<ConfigWarning>) {
    let Some(pc) = p.health.as_deref() else {
        return;
    };
    if !p.kind.has_backend() || pc.inherited {
        return;
    }
    let unused = [
        (
            "http-check",
            "option httpchk",
            &pc.http_rules,
            CheckKind::Http,
        ),
        (
            "tcp-check",
            "option tcp-check",
            &pc.tcp_rules,
            CheckKind::Tcp,
        ),
    ];
    for (rules, option, list, kind) in unused {
        if !list.is_empty() && pc.kind != Some(kind) {
            warnings.push(ConfigWarning {
                location: Some(p.location.clone()),
                message: format!(
                    "{} '{}' uses {rules} rules without '{option}', so the rules are ignored",
                    p.kind.keyword(),
                    p.name
                ),
            });
        }
    }
}

/// Every `track [PROXY/]SERVER` names an existing server that has checks
/// or tracks another one itself, and closes no loop. As in HAProxy
/// (`srv_apply_track`), links are made in declaration order and a loop is
/// reported by the server whose link would close it, naming the tracked
/// proxy twice as HAProxy's message does.
fn check_tracks(proxies: &[Proxy], names: &Names, errors: &mut Vec<ConfigError>) {
    // (proxy index, server index) of a server -> the one it tracks.
    let mut links: std::collections::HashMap<(usize, usize), (usize, usize)> =
        std::collections::HashMap::new();
    for (pi, p) in proxies.iter().enumerate() {
        if !p.kind.has_backend() {
            continue;
        }
        for (si, s) in p.servers.iter().enumerate() {
            let Some(t) = s.health.as_deref().and_then(|h| h.track.as_ref()) else {
                continue;
            };
            let who = format!("'server {}/{}'", p.name, s.name);
            if s.check {
                alert(
                    errors,
                    &s.location,
                    format!("{who} : unable to enable checks and tracking at the same time!"),
                );
                continue;
            }
            let target = match &t.proxy {
                None => Some(pi),
                Some(name) => names
                    .backend(proxies, name)
                    .and_then(|tp| proxies.iter().position(|x| std::ptr::eq(x, tp))),
            };
            let Some(tpi) = target else {
                let name = t.proxy.as_deref().unwrap_or_default();
                alert(
                    errors,
                    &s.location,
                    format!("{who} : unable to find required proxy '{name}' for tracking."),
                );
                continue;
            };
            let tp = &proxies[tpi];
            let Some(tsi) = tp.servers.iter().position(|x| x.name == t.server) else {
                alert(
                    errors,
                    &s.location,
                    format!(
                        "{who} : unable to find required server '{}' for tracking.",
                        t.server
                    ),
                );
                continue;
            };
            let ts = &tp.servers[tsi];
            let ts_tracks = ts.health.as_deref().is_some_and(|h| h.track.is_some());
            if !ts.check && !ts_tracks {
                alert(
                    errors,
                    &s.location,
                    format!(
                        "{who} : unable to use {}/{} for tracking as it does not have any check nor agent enabled.",
                        tp.name, ts.name
                    ),
                );
                continue;
            }
            // Follow the links made so far from the tracked server.
            let me = (pi, si);
            let mut at = Some((tpi, tsi));
            let mut loops = at == Some(me);
            let mut steps = 0;
            while let Some(cur) = at.and_then(|c| links.get(&c).copied()) {
                if cur == me {
                    loops = true;
                    break;
                }
                at = Some(cur);
                steps += 1;
                if steps > links.len() {
                    break;
                }
            }
            if loops {
                alert(
                    errors,
                    &s.location,
                    format!(
                        "{who} : unable to track {}/{} as it belongs to a tracking chain looping back to {}/{}.",
                        tp.name, ts.name, tp.name, s.name
                    ),
                );
                continue;
            }
            links.insert(me, (tpi, tsi));
        }
    }
}

/// HAProxy accepts HTTP rules and options in a TCP proxy but ignores them;
/// say so once per kind of setting.
fn warn_http_in_tcp(p: &Proxy, warnings: &mut Vec<ConfigWarning>) {
    let sets = [
        (RuleSet::HttpRequest, &p.extras.http_request),
        (RuleSet::HttpResponse, &p.extras.http_response),
        (RuleSet::HttpAfterResponse, &p.extras.http_after_response),
    ];
    let o = &p.options;
    let options = [
        o.forwardfor.is_some(),
        o.http_keep_alive,
        o.httpclose,
        o.httplog,
        o.http_buffer_request,
    ];
    let kind = p.kind.keyword();
    for (name, on) in HTTP_OPTIONS.iter().zip(options) {
        if on {
            warnings.push(ConfigWarning {
                location: Some(p.location.clone()),
                message: format!(
                    "'option {name}' is ignored in {kind} '{}' because it is in tcp mode",
                    p.name
                ),
            });
        }
    }
    for (set, rules) in sets {
        if let Some(first) = rules.first() {
            warnings.push(ConfigWarning {
                location: Some(first.location.clone()),
                message: format!(
                    "'{}' rules are ignored in {kind} '{}' because it is in tcp mode",
                    set.keyword(),
                    p.name
                ),
            });
        }
    }
}

/// Checks proxy names, then the `default_backend` and static `use_backend`
/// names of the proxies at `frontends`: each must name a backend or listen
/// section, and an HTTP frontend cannot hand over to a TCP backend.
pub(crate) fn check_references(
    proxies: &[Proxy],
    frontends: &[usize],
    names: &mut Names,
    errors: &mut Vec<ConfigError>,
) {
    names.sort();
    check_names(proxies, names, errors);
    check_tracks(proxies, names, errors);
    for p in frontends.iter().filter_map(|&i| proxies.get(i)) {
        let defaults = p
            .extras
            .default_backend
            .iter()
            .map(|(n, l)| ("default_backend", n.as_str(), l));
        let rules = p
            .extras
            .use_backends
            .iter()
            .filter(|u| !u.is_dynamic())
            .map(|u| ("use_backend", u.name.as_str(), &u.location));
        for (kw, name, loc) in defaults.chain(rules) {
            let kind = p.kind.keyword();
            match names.backend(proxies, name) {
                None => alert(
                    errors,
                    loc,
                    format!(
                        "{kind} '{}': '{kw}' names backend '{name}', which does not exist",
                        p.name
                    ),
                ),
                Some(b) if p.mode == Mode::Http && b.mode == Mode::Tcp => alert(
                    errors,
                    loc,
                    format!(
                        "{kind} '{}' is in http mode but its '{kw}' backend '{name}' is in tcp mode",
                        p.name
                    ),
                ),
                Some(_) => {}
            }
        }
    }
}
