//! Keywords of `defaults`, `frontend`, `backend` and `listen` sections, and
//! how a new proxy inherits from the defaults section above it.

use super::acl::{is_name_char, parse_acl_line};
use super::addr::{parse_bind, parse_server};
use super::global::{at_most, parse_log};
use super::health;
use super::rules::{parse_rule, RuleSet};
use super::units::{int_arg, time_arg};
use super::{
    Balance, Bind, CheckKind, ErrorFileDef, Extras, ForwardFor, Location, Mode, Proxy, ProxyCheck,
    ProxyExtras, ProxyKind, ProxyOptions, ServerDef, SharedTimeouts, Timeouts, UseBackend,
};
use std::sync::Arc;

/// The section a proxy keyword appears in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SectionKind {
    Defaults,
    Frontend,
    Backend,
    Listen,
}

impl SectionKind {
    /// The section keyword.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SectionKind::Defaults => "defaults",
            SectionKind::Frontend => "frontend",
            SectionKind::Backend => "backend",
            SectionKind::Listen => "listen",
        }
    }

    fn bit(self) -> u8 {
        match self {
            SectionKind::Defaults => D,
            SectionKind::Frontend => F,
            SectionKind::Backend => B,
            SectionKind::Listen => L,
        }
    }
}

impl From<ProxyKind> for SectionKind {
    fn from(kind: ProxyKind) -> SectionKind {
        match kind {
            ProxyKind::Frontend => SectionKind::Frontend,
            ProxyKind::Backend => SectionKind::Backend,
            ProxyKind::Listen => SectionKind::Listen,
        }
    }
}

// Section bits for the applicability tables (HAProxy's keyword matrix).
const D: u8 = 1;
const F: u8 = 2;
const B: u8 = 4;
const L: u8 = 8;
const ALL: u8 = D | F | B | L;

/// The proxy keywords luahost supports and the sections each may appear in.
pub(super) const KEYWORDS: &[(&str, u8)] = &[
    ("mode", ALL),
    ("bind", F | L),
    ("timeout", ALL),
    ("maxconn", D | F | L),
    ("backlog", D | F | L),
    ("default_backend", D | F | L),
    ("use_backend", F | L),
    ("acl", F | B | L),
    ("http-request", F | B | L),
    ("http-response", F | B | L),
    ("http-after-response", F | B | L),
    ("tcp-request", ALL),
    ("tcp-response", B | L),
    ("server", B | L),
    ("balance", D | B | L),
    ("option", ALL),
    ("no", ALL),
    ("retries", D | B | L),
    ("log", ALL),
    ("log-tag", ALL),
    ("log-format", D | F | L),
    ("capture", F | L),
    ("description", F | B | L),
    ("http-check", D | B | L),
    ("tcp-check", D | B | L),
    ("errorfile", ALL),
    ("compression", ALL),
    ("filter", F | B | L),
];

/// The `timeout` kinds and where each applies.
pub(super) const TIMEOUTS: &[(&str, u8)] = &[
    ("client", D | F | L),
    ("server", D | B | L),
    ("connect", D | B | L),
    ("http-request", ALL),
    ("http-keep-alive", ALL),
    ("queue", D | B | L),
    ("tunnel", D | B | L),
    ("check", D | B | L),
];

/// The `option` names and where each applies.
pub(super) const OPTIONS: &[(&str, u8)] = &[
    ("forwardfor", ALL),
    ("http-keep-alive", ALL),
    ("httpclose", ALL),
    ("httplog", D | F | L),
    ("tcplog", D | F | L),
    ("dontlognull", D | F | L),
    ("log-separate-errors", D | F | L),
    ("abortonclose", ALL),
    ("httpchk", D | B | L),
    ("tcp-check", D | B | L),
    ("http-buffer-request", ALL),
];

/// The `option` names that only make sense in HTTP mode.
pub(crate) const HTTP_OPTIONS: &[&str] = &[
    "forwardfor",
    "http-keep-alive",
    "httpclose",
    "httplog",
    "http-buffer-request",
];

/// HAProxy proxy keywords that luahost recognises but does not implement.
pub(super) const UNSUPPORTED: &[&str] = &[
    "bind-process",
    "clitimeout",
    "contimeout",
    "cookie",
    "declare",
    "default-server",
    "disabled",
    "dispatch",
    "email-alert",
    "enabled",
    "errorfiles",
    "errorloc",
    "errorloc302",
    "errorloc303",
    "error-log-format",
    "external-check",
    "force-persist",
    "fullconn",
    "guid",
    "hash-type",
    "http-error",
    "http-reuse",
    "http-send-name-header",
    "id",
    "ignore-persist",
    "load-server-state-from-file",
    "log-format-sd",
    "max-keep-alive-queue",
    "monitor-uri",
    "persist",
    "rate-limit",
    "redirect",
    "retry-on",
    "server-state-file-name",
    "server-template",
    "source",
    "srvtimeout",
    "stats",
    "stick",
    "stick-table",
    "unique-id-format",
    "unique-id-header",
    "use-server",
];

/// Section names joined for "allowed in" messages.
fn sections(mask: u8) -> String {
    let names: Vec<&str> = [
        SectionKind::Defaults,
        SectionKind::Frontend,
        SectionKind::Backend,
        SectionKind::Listen,
    ]
    .iter()
    .filter(|s| mask & s.bit() != 0)
    .map(|s| s.name())
    .collect();
    names.join(", ")
}

/// Fails when `what` (with applicability `mask`) is used in `sect`.
fn check_section(what: &str, mask: u8, sect: SectionKind) -> Result<(), String> {
    if mask & sect.bit() != 0 {
        return Ok(());
    }
    Err(format!(
        "'{what}' is not allowed in a '{}' section (allowed in: {})",
        sect.name(),
        sections(mask)
    ))
}

/// A fresh defaults template: HAProxy's built-in defaults.
pub(crate) fn builtin_defaults(loc: &Location) -> Proxy {
    Proxy {
        name: String::new(),
        kind: ProxyKind::Listen,
        mode: Mode::default(),
        balance: Balance::default(),
        log_global: false,
        location: loc.clone(),
        timeouts: Arc::new(Timeouts::default()),
        servers: Vec::new(),
        retries: None,
        options: ProxyOptions::default(),
        extras: Extras::default(),
        logging: None,
        health: None,
        compression: None,
    }
}

/// A new proxy that takes from `defaults` what HAProxy copies for its kind:
/// frontend settings only with frontend capability, backend settings only
/// with backend capability, the rest always. Nothing is allocated for what
/// the defaults do not set, so a backend under plain defaults costs its
/// name and its inline fields.
pub(crate) fn inherit(
    defaults: &Proxy,
    name: &str,
    kind: ProxyKind,
    loc: &Location,
    shared: &mut SharedTimeouts,
) -> Proxy {
    let fe = kind.has_frontend();
    let be = kind.has_backend();
    let d = &defaults.timeouts;
    let pick = |cap: bool, v: Option<std::time::Duration>| if cap { v } else { None };
    Proxy {
        name: name.to_string(),
        kind,
        mode: defaults.mode,
        balance: if be {
            defaults.balance
        } else {
            Balance::default()
        },
        log_global: defaults.log_global,
        location: loc.clone(),
        timeouts: shared.get(Timeouts {
            client: pick(fe, d.client),
            server: pick(be, d.server),
            connect: pick(be, d.connect),
            http_request: d.http_request,
            http_keep_alive: d.http_keep_alive,
            queue: pick(be, d.queue),
            tunnel: pick(be, d.tunnel),
            check: pick(be, d.check),
        }),
        servers: Vec::new(),
        retries: if be { defaults.retries } else { None },
        options: defaults.options.clone(),
        extras: inherit_extras(&defaults.extras, fe),
        // `log` lines and log-tag for every proxy, log-format only with
        // frontend capability; captures are never in defaults.
        logging: defaults.logging.as_ref().and_then(|l| {
            let inherited = super::ProxyLogging {
                logs: l.logs.clone(),
                tag: l.tag.clone(),
                format: if fe { l.format.clone() } else { None },
                ..Default::default()
            };
            (inherited != super::ProxyLogging::default()).then(|| Box::new(inherited))
        }),
        health: if be { inherit_checks(defaults) } else { None },
        compression: defaults.compression.clone(),
    }
}

/// What a new proxy takes from the defaults' extras: `maxconn`, `backlog`
/// and `default_backend` with frontend capability, the inspect delay and
/// the error files always (rules and ACLs are never inherited).
fn inherit_extras(d: &Extras, fe: bool) -> Extras {
    // The common case, decided without building a record to throw away.
    let inherited = (fe
        && (d.maxconn.is_some() || d.backlog.is_some() || d.default_backend.is_some()))
        || d.tcp_request_inspect_delay.is_some()
        || !d.errorfiles.is_empty();
    if !inherited {
        return Extras::default();
    }
    Extras::from(ProxyExtras {
        maxconn: if fe { d.maxconn } else { None },
        backlog: if fe { d.backlog } else { None },
        default_backend: if fe { d.default_backend.clone() } else { None },
        tcp_request_inspect_delay: d.tcp_request_inspect_delay,
        errorfiles: d.errorfiles.clone(),
        ..Default::default()
    })
}

/// Checks a proxy, server or backend name against HAProxy's character rule.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} name must not be empty"));
    }
    // Names are ASCII nearly always: one byte test each, and the message
    // (which names the offending character) only when one fails.
    if name.bytes().all(|b| is_name_char(char::from(b))) {
        return Ok(());
    }
    match name.chars().find(|&c| !is_name_char(c)) {
        Some(c) => Err(format!(
            "character '{c}' is not permitted in {what} name '{name}' (letters, digits, '-', '_', '.' and ':' are)"
        )),
        None => Ok(()),
    }
}

/// Handles one line of a proxy or defaults section; `words[0]` is the
/// keyword. `Ok(Some(text))` is a warning about the line.
pub(crate) fn keyword(
    p: &mut Proxy,
    sect: SectionKind,
    words: &[&str],
    loc: &Location,
) -> Result<Option<String>, String> {
    let kw = words.first().copied().unwrap_or_default();
    let Some(&(_, mask)) = KEYWORDS.iter().find(|(k, _)| *k == kw) else {
        return Err(unknown_keyword(kw, sect));
    };
    check_section(kw, mask, sect)?;
    let arg = words.get(1).copied();
    match kw {
        "mode" => {
            p.mode = match arg {
                Some("http") => Mode::Http,
                Some("tcp") => Mode::Tcp,
                _ => return Err(format!("'mode' expects 'http' or 'tcp'{}", got(arg))),
            };
            at_most(words, 2)?;
        }
        "bind" => bind(p, words, loc)?,
        "timeout" => return timeout(p, sect, words),
        "maxconn" => {
            p.extras.get_mut().maxconn =
                Some(int_arg(kw, "a number of connections", arg, 1, u64::MAX)?);
            at_most(words, 2)?;
        }
        "backlog" => {
            p.extras.get_mut().backlog = Some(int_arg(
                kw,
                "a number of pending connections",
                arg,
                0,
                MAX_BACKLOG,
            )?);
            at_most(words, 2)?;
        }
        "default_backend" => {
            let name = arg.ok_or("'default_backend' expects a backend name")?;
            check_name("backend", name)?;
            at_most(words, 2)?;
            p.extras.get_mut().default_backend = Some((name.to_string(), loc.clone()));
        }
        "use_backend" => use_backend(p, words, loc)?,
        "acl" => {
            let acl = parse_acl_line(words, loc)?;
            push(&mut p.extras.get_mut().acls, acl);
        }
        "http-request" => rule(p, RuleSet::HttpRequest, &words[1..], sect, loc)?,
        "http-response" => rule(p, RuleSet::HttpResponse, &words[1..], sect, loc)?,
        "http-after-response" => rule(p, RuleSet::HttpAfterResponse, &words[1..], sect, loc)?,
        "tcp-request" => match arg {
            Some("content") => {
                check_section("tcp-request content", F | B | L, sect)?;
                rule(p, RuleSet::TcpRequestContent, &words[2..], sect, loc)?;
            }
            Some("connection") => {
                if sect == SectionKind::Defaults {
                    return Err(
                        "'tcp-request connection' rules in a 'defaults' section are not supported yet"
                            .to_string(),
                    );
                }
                check_section("tcp-request connection", F | L, sect)?;
                rule(p, RuleSet::TcpRequestConnection, &words[2..], sect, loc)?;
            }
            Some("inspect-delay") => {
                p.extras.get_mut().tcp_request_inspect_delay = Some(time_arg(
                    "tcp-request inspect-delay",
                    words.get(2).copied(),
                )?);
                at_most(words, 3)?;
            }
            Some("session") => return Err("'tcp-request session' is not supported yet".to_string()),
            _ => {
                return Err(format!(
                    "'tcp-request' expects 'connection', 'content' or 'inspect-delay'{}",
                    got(arg)
                ))
            }
        },
        "tcp-response" => match arg {
            Some("content") => rule(p, RuleSet::TcpResponseContent, &words[2..], sect, loc)?,
            Some("inspect-delay") => {
                return Err("'tcp-response inspect-delay' is not supported yet".to_string())
            }
            _ => return Err(format!("'tcp-response' expects 'content'{}", got(arg))),
        },
        "server" => server(p, words, loc)?,
        "balance" => {
            p.balance = balance(arg)?;
            at_most(words, 2)?;
        }
        "option" => option(p, sect, &words[1..], true)?,
        "no" => match arg {
            Some("option") => option(p, sect, &words[2..], false)?,
            Some("log") => {
                at_most(words, 2)?;
                p.log_global = false;
                if let Some(l) = p.logging.as_mut() {
                    l.logs.clear();
                }
            }
            _ => {
                return Err(format!(
                    "'no' only applies to 'option' and 'log'{}",
                    got(arg)
                ))
            }
        },
        "retries" => {
            p.retries = Some(int_arg(kw, "a number of retries", arg, 0, u32::MAX as u64)?);
            at_most(words, 2)?;
        }
        "log" => match parse_log(words, loc)? {
            Some(target) => push(&mut logging(p).logs, target),
            None => p.log_global = true,
        },
        "http-check" => health::http_check(proxy_check(p), &words[1..])?,
        "tcp-check" => health::tcp_check(proxy_check(p), &words[1..])?,
        "log-tag" => {
            let tag = arg
                .filter(|t| !t.is_empty())
                .ok_or("'log-tag' expects a tag")?;
            at_most(words, 2)?;
            logging(p).tag = Some(tag.to_string());
        }
        "log-format" => {
            let Some(format) = arg else {
                return Err("'log-format' expects a format string".to_string());
            };
            at_most(words, 2)?;
            // Compiled (and checked) with the proxy's rules at start-up.
            logging(p).format = Some((format.to_string(), loc.clone()));
        }
        "capture" => capture(p, words)?,
        "description" => {
            if words.len() < 2 {
                return Err("'description' expects a text".to_string());
            }
            p.extras.get_mut().description = Some(words[1..].join(" "));
        }
        "errorfile" => {
            let (status, reply) = super::errorfile::parse_line(words)?;
            let errorfiles = &mut p.extras.get_mut().errorfiles;
            errorfiles.retain(|e| e.status != status);
            push(
                errorfiles,
                ErrorFileDef {
                    status,
                    reply: std::sync::Arc::new(reply),
                    location: loc.clone(),
                },
            );
        }
        "compression" => {
            return super::compression::keyword(p, words, sect == SectionKind::Defaults)
        }
        "filter" => super::compression::filter(p, words)?,
        _ => return Err(unknown_keyword(kw, sect)),
    }
    Ok(None)
}

/// HAProxy algorithms luahost does not implement (some take arguments).
const UNSUPPORTED_BALANCE: &[&str] = &[
    "static-rr",
    "uri",
    "url_param",
    "random",
    "rdp-cookie",
    "hash",
    "hdr(",
    "random(",
    "rdp-cookie(",
    "hash(",
];

/// Reads the `balance` algorithm.
fn balance(arg: Option<&str>) -> Result<Balance, String> {
    Ok(match arg {
        Some("roundrobin") => Balance::RoundRobin,
        Some("leastconn") => Balance::LeastConn,
        Some("first") => Balance::First,
        Some("source") => Balance::Source,
        Some(other)
            if UNSUPPORTED_BALANCE
                .iter()
                .any(|u| other == *u || (u.ends_with('(') && other.starts_with(u))) =>
        {
            return Err(format!(
                "'balance {other}' is not supported yet; supported: roundrobin, leastconn, first, source"
            ));
        }
        _ => {
            let expected = "roundrobin, leastconn, first or source";
            return Err(format!("'balance' expects {expected}{}", got(arg)));
        }
    })
}

/// Appends to a per-proxy list. Most proxies hold one item per list (a
/// backend with one server), and an empty vector's first push would reserve
/// room for four: about 140 MB more for 300,000 one-server backends.
fn push<T>(list: &mut Vec<T>, item: T) {
    if list.is_empty() {
        list.reserve_exact(1);
    }
    list.push(item);
}

/// ", got 'X'" when there was a word, for messages.
fn got(word: Option<&str>) -> String {
    word.map(|w| format!(", got '{w}'")).unwrap_or_default()
}

/// The message for a keyword with no entry in [`KEYWORDS`].
fn unknown_keyword(kw: &str, sect: SectionKind) -> String {
    let section = sect.name();
    if super::global::KEYWORDS.contains(&kw)
        || super::global::UNSUPPORTED.contains(&kw)
        || super::process::is_keyword(kw)
    {
        return format!("'{kw}' is a 'global' keyword; it is not allowed in a '{section}' section");
    }
    if UNSUPPORTED.contains(&kw) {
        return format!("'{kw}' is not supported yet by luahost");
    }
    let allowed: Vec<&str> = KEYWORDS
        .iter()
        .filter(|(_, m)| m & sect.bit() != 0)
        .map(|(k, _)| *k)
        .collect();
    format!(
        "unknown keyword '{kw}' in '{section}' section; expected one of: {}",
        allowed.join(", ")
    )
}

/// The proxy's check settings, created on first use.
fn proxy_check(p: &mut Proxy) -> &mut ProxyCheck {
    p.health.get_or_insert_with(Box::default)
}

/// What a new backend takes from the defaults' check settings: everything,
/// with the rules marked as inherited (the backend's own rules replace them).
fn inherit_checks(defaults: &Proxy) -> Option<Box<ProxyCheck>> {
    let mut pc = defaults.health.clone()?;
    pc.inherited = true;
    Some(pc)
}

/// The largest `backlog`: listen() takes an int (and the kernel caps it at
/// net.core.somaxconn anyway).
const MAX_BACKLOG: u64 = i32::MAX as u64;

/// `bind ADDR[,ADDR...] [backlog N]`; other bind options are refused.
fn bind(p: &mut Proxy, words: &[&str], loc: &Location) -> Result<(), String> {
    let Some(list) = words.get(1) else {
        return Err(
            "'bind' expects an address such as :80, 127.0.0.1:8080 or [::1]:443".to_string(),
        );
    };
    let mut backlog = None;
    let mut opts = words.get(2..).unwrap_or_default().iter();
    while let Some(&opt) = opts.next() {
        match opt {
            "backlog" => {
                let n = opts.next().copied();
                backlog = Some(int_arg(
                    "bind backlog",
                    "a number of pending connections",
                    n,
                    0,
                    MAX_BACKLOG,
                )?);
            }
            _ => {
                return Err(format!(
                "bind option '{opt}' is not supported yet; give only the address (and 'backlog N')"
            ))
            }
        }
    }
    // Parse the whole list before adding anything, so an error adds nothing.
    let addrs = list
        .split(',')
        .map(|a| parse_bind(a).map_err(|e| format!("'bind': {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let binds = &mut p.extras.get_mut().binds;
    for addr in addrs {
        let location = loc.clone();
        push(
            binds,
            Bind {
                addr,
                backlog,
                location,
            },
        );
    }
    Ok(())
}

/// `timeout KIND VALUE`. A kind that does not apply to the section's
/// capability is ignored with a warning, as HAProxy does.
fn timeout(p: &mut Proxy, sect: SectionKind, words: &[&str]) -> Result<Option<String>, String> {
    let kind = words.get(1).copied();
    let Some(&(name, mask)) = TIMEOUTS.iter().find(|(k, _)| Some(*k) == kind) else {
        let known: Vec<&str> = TIMEOUTS.iter().map(|(k, _)| *k).collect();
        return Err(match kind {
            Some(k @ ("tarpit" | "client-fin" | "server-fin" | "client-hs")) => {
                format!("'timeout {k}' is not supported yet")
            }
            _ => format!(
                "'timeout' expects one of: {}{}",
                known.join(", "),
                got(kind)
            ),
        });
    };
    let what = format!("timeout {name}");
    let value = time_arg(&what, words.get(2).copied())?;
    at_most(words, 3)?;
    if mask & sect.bit() == 0 {
        let cap = if sect == SectionKind::Frontend {
            "backend"
        } else {
            "frontend"
        };
        return Ok(Some(format!(
            "'{what}' will be ignored because {} '{}' has no {cap} capability",
            sect.name(),
            p.name
        )));
    }
    let t = Arc::make_mut(&mut p.timeouts);
    let slot = match name {
        "client" => &mut t.client,
        "server" => &mut t.server,
        "connect" => &mut t.connect,
        "http-request" => &mut t.http_request,
        "http-keep-alive" => &mut t.http_keep_alive,
        "queue" => &mut t.queue,
        "check" => &mut t.check,
        _ => &mut t.tunnel,
    };
    *slot = Some(value);
    Ok(None)
}

/// `use_backend NAME [if|unless COND]`.
fn use_backend(p: &mut Proxy, words: &[&str], loc: &Location) -> Result<(), String> {
    let Some(&name) = words.get(1) else {
        return Err(
            "'use_backend' expects a backend name and an optional 'if' or 'unless' condition"
                .to_string(),
        );
    };
    // A name with %[...] is computed per request and cannot be checked here.
    if !name.contains("%[") {
        check_name("backend", name)?;
    }
    let cond = match words.get(2) {
        None => None,
        Some(&("if" | "unless")) => Some(super::acl::parse_condition(
            &words[2..],
            &p.extras.acls,
            loc,
        )?),
        Some(other) => {
            return Err(format!(
                "'use_backend': unexpected argument '{other}'; expected 'if' or 'unless'"
            ))
        }
    };
    push(
        &mut p.extras.get_mut().use_backends,
        UseBackend {
            name: name.to_string(),
            cond,
            location: loc.clone(),
        },
    );
    Ok(())
}

/// The proxy's logging settings, created on first use.
fn logging(p: &mut Proxy) -> &mut super::ProxyLogging {
    p.logging.get_or_insert_with(Default::default)
}

/// `capture request header NAME len N` / `capture response header NAME len N`.
fn capture(p: &mut Proxy, words: &[&str]) -> Result<(), String> {
    let usage = "'capture' expects 'request header NAME len N' or 'response header NAME len N'";
    let (Some(&side), Some(&"header"), Some(&name), Some(&"len")) =
        (words.get(1), words.get(2), words.get(3), words.get(4))
    else {
        if words.get(1) == Some(&"cookie") {
            return Err("'capture cookie' is not supported yet".to_string());
        }
        return Err(usage.to_string());
    };
    let len: usize = int_arg("capture len", "a length", words.get(5).copied(), 1, 65535)?;
    at_most(words, 6)?;
    let slot = super::Capture {
        header: Some(name.to_string()),
        len,
    };
    match side {
        "request" => logging(p).req_captures.push(slot),
        "response" => logging(p).res_captures.push(slot),
        _ => return Err(usage.to_string()),
    }
    Ok(())
}

/// One rule of `set`; `words` starts at the action.
fn rule(
    p: &mut Proxy,
    set: RuleSet,
    words: &[&str],
    sect: SectionKind,
    loc: &Location,
) -> Result<(), String> {
    let mut rule = parse_rule(set, words, &p.extras.acls, loc)?;
    if let super::Action::Capture { len, slot, .. } = &mut rule.action {
        // `http-request capture ... len N` declares a new request slot.
        if sect != SectionKind::Frontend && sect != SectionKind::Listen {
            return Err(
                "'http-request capture ... len' is only allowed in a 'frontend' or 'listen' section"
                    .to_string(),
            );
        }
        let captures = &mut logging(p).req_captures;
        *slot = captures.len();
        captures.push(super::Capture {
            header: None,
            len: *len,
        });
    }
    let e = p.extras.get_mut();
    let list = match set {
        RuleSet::HttpRequest => &mut e.http_request,
        RuleSet::HttpResponse => &mut e.http_response,
        RuleSet::HttpAfterResponse => &mut e.http_after_response,
        RuleSet::TcpRequestConnection => &mut e.tcp_request_connection,
        RuleSet::TcpRequestContent => &mut e.tcp_request_content,
        RuleSet::TcpResponseContent => &mut e.tcp_response_content,
    };
    push(list, rule);
    Ok(())
}

/// `option NAME [args]` (`enable`) or `no option NAME` (not `enable`);
/// `words` starts at the option name.
fn option(p: &mut Proxy, sect: SectionKind, words: &[&str], enable: bool) -> Result<(), String> {
    let prefix = if enable { "option" } else { "no option" };
    let name = words.first().copied();
    let Some(&(name, mask)) = OPTIONS.iter().find(|(k, _)| Some(*k) == name) else {
        let known: Vec<&str> = OPTIONS.iter().map(|(k, _)| *k).collect();
        return Err(format!(
            "'{prefix}' expects one of: {}{}",
            known.join(", "),
            name.map(|n| format!("; '{n}' is not supported (yet)"))
                .unwrap_or_default()
        ));
    };
    let what = format!("option {name}");
    check_section(&what, mask, sect)?;
    match (name, enable) {
        ("httpchk", true) => return health::option_httpchk(proxy_check(p), &words[1..]),
        ("tcp-check", true) => return health::option_tcp_check(proxy_check(p), &words[1..]),
        ("httpchk" | "tcp-check", false) => {
            let pc = proxy_check(p);
            let kind = if name == "httpchk" {
                CheckKind::Http
            } else {
                CheckKind::Tcp
            };
            if pc.kind == Some(kind) {
                pc.kind = None;
            }
            return Ok(());
        }
        _ => {}
    }
    let o = &mut p.options;
    if name == "forwardfor" && enable {
        o.forwardfor = Some(Box::new(forwardfor(&words[1..])?));
        return Ok(());
    }
    if let Some(extra) = words.get(1) {
        return Err(format!(
            "'{prefix} {name}' does not take the argument '{extra}'"
        ));
    }
    match name {
        "forwardfor" => o.forwardfor = None,
        // These pairs are one setting in HAProxy: the last line wins.
        "http-keep-alive" => {
            o.http_keep_alive = enable;
            o.httpclose &= !enable;
        }
        "httpclose" => {
            o.httpclose = enable;
            o.http_keep_alive &= !enable;
        }
        "httplog" => {
            o.httplog = enable;
            o.tcplog &= !enable;
        }
        "tcplog" => {
            o.tcplog = enable;
            o.httplog &= !enable;
        }
        "abortonclose" => o.abortonclose = enable,
        "dontlognull" => o.dontlognull = enable,
        "log-separate-errors" => o.log_separate_errors = enable,
        "http-buffer-request" => o.http_buffer_request = enable,
        _ => return Err(format!("'{prefix} {name}' is not handled")),
    }
    Ok(())
}

/// The arguments of `option forwardfor`.
fn forwardfor(args: &[&str]) -> Result<ForwardFor, String> {
    const WHAT: &str = "'option forwardfor'";
    let mut ff = ForwardFor::default();
    let mut i = 0;
    while let Some(&key) = args.get(i) {
        if key == "if-none" {
            ff.if_none = true;
            i += 1;
            continue;
        }
        let value = args.get(i + 1).map(|v| v.to_string());
        let (slot, expects) = match key {
            "except" => (&mut ff.except, "a network such as 10.0.0.0/8"),
            "header" => (&mut ff.header, "a header name"),
            other => {
                return Err(format!(
                    "{WHAT}: unknown argument '{other}'; expected except NETWORK, header NAME or if-none"
                ))
            }
        };
        *slot = Some(value.ok_or_else(|| format!("'option forwardfor {key}' expects {expects}"))?);
        i += 2;
    }
    Ok(ff)
}

/// The server options luahost supports, listed in messages.
const SERVER_OPTIONS: &str = "weight, maxconn, disabled, enabled, backup, check, inter, \
fastinter, downinter, rise, fall, port, addr, track, observe, error-limit, on-error, \
on-marked-down, on-marked-up";

/// `inter`: a non-zero delay, with HAProxy's messages.
fn check_delay(
    who: &str,
    name: &str,
    kw: &str,
    value: Option<&str>,
) -> Result<std::time::Duration, String> {
    let Some(v) = value else {
        return Err(format!("{who} : '{kw}' expects a delay as argument."));
    };
    let d = time_arg(kw, Some(v)).map_err(|e| format!("{who} : {e}"))?;
    if d.is_zero() {
        return Err(format!(
            "{who} : invalid value 0 for argument '{kw}' of server {name}."
        ));
    }
    Ok(d)
}

/// `rise` and `fall`: a number above 0.
fn positive(who: &str, kw: &str, value: Option<&str>) -> Result<u32, String> {
    let n = value.and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    if n == 0 {
        return Err(format!("{who} : '{kw}' has to be > 0."));
    }
    Ok(n)
}

/// `server NAME ADDR [options]`.
fn server(p: &mut Proxy, words: &[&str], loc: &Location) -> Result<(), String> {
    let (Some(&name), Some(&addr)) = (words.get(1), words.get(2)) else {
        return Err("'server' expects a name and an address such as 10.0.0.1:8080".to_string());
    };
    // Duplicate names are checked once the whole configuration is read, with
    // a hash set, so that huge backends stay linear.
    check_name("server", name)?;
    let mut s = ServerDef {
        name: name.to_string(),
        addr: parse_server(addr).map_err(|e| format!("server '{name}': {e}"))?,
        weight: None,
        maxconn: None,
        disabled: false,
        backup: false,
        check: false,
        health: None,
        location: loc.clone(),
    };
    // For messages about the options; most server lines have none.
    let who = if words.len() > 3 {
        format!("'server {}/{name}'", p.name)
    } else {
        String::new()
    };
    let mut i = 3;
    while let Some(&opt) = words.get(i) {
        let value = words.get(i + 1).copied();
        // Flags take no value; the other options take one.
        let flag = match opt {
            "disabled" => Some((&mut s.disabled, true)),
            "enabled" => Some((&mut s.disabled, false)),
            "backup" => Some((&mut s.backup, true)),
            "no-backup" => Some((&mut s.backup, false)),
            "check" => Some((&mut s.check, true)),
            "no-check" => Some((&mut s.check, false)),
            _ => None,
        };
        if let Some((field, on)) = flag {
            *field = on;
            i += 1;
            continue;
        }
        match opt {
            "weight" => s.weight = Some(int_arg("server weight", "a weight", value, 0, 256)?),
            "maxconn" => {
                let noun = "a number of connections";
                s.maxconn = Some(int_arg("server maxconn", noun, value, 0, u64::MAX)?);
            }
            "inter" => {
                let inter = check_delay(&who, name, "inter", value)?;
                s.health.get_or_insert_with(Box::default).inter = Some(inter);
            }
            "rise" | "fall" => {
                let n = positive(&who, opt, value)?;
                let h = s.health.get_or_insert_with(Box::default);
                if opt == "rise" {
                    h.rise = Some(n)
                } else {
                    h.fall = Some(n)
                }
            }
            other if health::server_option(&mut s.health, &who, name, other, value)? => {}
            other => {
                return Err(format!(
                    "server '{name}': option '{other}' is not supported yet; supported: {SERVER_OPTIONS}"
                ))
            }
        }
        i += 2;
    }
    push(&mut p.servers, s);
    Ok(())
}
