//! Keywords of the `global` section, and the `log` line shared with proxies.

use super::units::{int_arg, size_arg, time_arg};
use super::{
    BlockingCalls, Global, Location, LogDest, LogLevel, LogTarget, LuaLoad, LuaLogStderr,
    LuaPrependPath, PathKind,
};
use std::path::PathBuf;

/// The `global` keywords luahost supports, listed in messages (besides
/// `stats`, see `stats.rs`).
pub(crate) const KEYWORDS: &[&str] = &[
    "lua-load",
    "lua-load-per-thread",
    "lua-prepend-path",
    "nbthread",
    "maxconn",
    "pidfile",
    "log",
    "log-tag",
    "log-send-hostname",
    "tune.bufsize",
    "tune.lua.forced-yield",
    "tune.lua.maxmem",
    "tune.lua.session-timeout",
    "tune.lua.service-timeout",
    "tune.lua.task-timeout",
    "tune.lua.burst-timeout",
    "tune.lua.blocking-calls",
    "tune.lua.bool-sample-conversion",
    "tune.lua.log.loggers",
    "tune.lua.log.stderr",
    "tune.lua.openlibs",
    "tune.lua.bytecode",
    "httpclient.retries",
    "httpclient.timeout.connect",
    "httpclient.ssl.verify",
    "httpclient.ssl.ca-file",
    "httpclient.resolvers.id",
    "httpclient.resolvers.prefer",
    "httpclient.resolvers.disabled",
    "httpclient.pool.idle-timeout",
];

/// The optional standard libraries `tune.lua.openlibs` names (base and
/// coroutine are always opened).
pub(crate) const LUA_LIBS: &[&str] = &[
    "table", "io", "os", "string", "math", "utf8", "package", "debug",
];

/// HAProxy `global` keywords that luahost recognises but does not implement.
pub(crate) const UNSUPPORTED: &[&str] = &[
    "nbproc",
    "ulimit-n",
    "localpeer",
    "external-check",
    "insecure-fork-wanted",
    "quiet",
    "zero-warning",
    "ssl-default-bind-ciphers",
    "ssl-default-bind-ciphersuites",
    "ssl-default-bind-options",
    "ssl-default-server-ciphers",
    "ssl-default-server-options",
    "ssl-dh-param-file",
    "spread-checks",
    "maxsslconn",
    "maxconnrate",
    "maxsessrate",
    "tune.maxrewrite",
    "tune.http.maxhdr",
    "tune.ssl.default-dh-param",
];

const FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2",
    "ftp", "ntp", "audit", "alert", "cron2", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

const FORMATS: &[&str] = &[
    "local", "rfc3164", "rfc5424", "priority", "short", "timed", "iso", "raw",
];

fn log_level(word: &str) -> Option<LogLevel> {
    Some(match word {
        "emerg" => LogLevel::Emerg,
        "alert" => LogLevel::Alert,
        "crit" => LogLevel::Crit,
        "err" => LogLevel::Err,
        "warning" => LogLevel::Warning,
        "notice" => LogLevel::Notice,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        _ => return None,
    })
}

const LEVELS: &str = "emerg, alert, crit, err, warning, notice, info, debug";

/// Fails unless `words` (keyword included) has at most `max` words.
pub(crate) fn at_most(words: &[&str], max: usize) -> Result<(), String> {
    match words.get(max) {
        None => Ok(()),
        Some(extra) => Err(format!(
            "'{}' does not take the argument '{extra}'",
            words.first().copied().unwrap_or_default()
        )),
    }
}

/// Handles one `global` line; `words[0]` is the keyword.
pub(crate) fn keyword(g: &mut Global, words: &[&str], loc: &Location) -> Result<(), String> {
    let kw = words.first().copied().unwrap_or_default();
    let arg = words.get(1).copied();
    match kw {
        "lua-load" | "lua-load-per-thread" => {
            let file = match arg {
                Some(f) if !f.is_empty() => f,
                _ => return Err(format!("'{kw}' expects a Lua file name")),
            };
            g.lua_loads.push(LuaLoad {
                file: PathBuf::from(file),
                args: words[2..].iter().map(|w| w.to_string()).collect(),
                per_thread: kw == "lua-load-per-thread",
                location: loc.clone(),
            });
        }
        "lua-prepend-path" => {
            let path = match arg {
                Some(p) if !p.is_empty() => p,
                _ => {
                    return Err(
                        "'lua-prepend-path' expects a search path template such as /usr/share/lua/?.lua"
                            .to_string(),
                    )
                }
            };
            let kind = match words.get(2).copied() {
                None | Some("path") => PathKind::Path,
                Some("cpath") => PathKind::Cpath,
                Some(other) => {
                    return Err(format!(
                        "'lua-prepend-path' expects 'path' or 'cpath' after the template, got '{other}'"
                    ))
                }
            };
            at_most(words, 3)?;
            g.lua_prepend_paths.push(LuaPrependPath {
                path: path.to_string(),
                kind,
                location: loc.clone(),
            });
        }
        "nbthread" => {
            g.nbthread = Some(int_arg(kw, "a number of threads", arg, 1, 4096)?);
            at_most(words, 2)?;
        }
        "maxconn" => {
            g.maxconn = Some(int_arg(kw, "a number of connections", arg, 1, u64::MAX)?);
            at_most(words, 2)?;
        }
        "tune.bufsize" => {
            let size = size_arg(kw, arg)?;
            if !(1024..=i32::MAX as u64).contains(&size) {
                return Err(format!(
                    "'tune.bufsize' must be between 1024 and 2147483647 bytes, got '{}'",
                    arg.unwrap_or_default()
                ));
            }
            g.bufsize = usize::try_from(size).ok();
            at_most(words, 2)?;
        }
        "tune.lua.forced-yield" => {
            g.lua.forced_yield = Some(int_arg(
                kw,
                "a number of instructions",
                arg,
                1,
                u32::MAX as u64,
            )?);
            at_most(words, 2)?;
        }
        "tune.lua.maxmem" => {
            // Megabytes; the bound keeps the byte count within a u64.
            g.lua.maxmem_mb = Some(int_arg(
                kw,
                "a size in megabytes (0 for unlimited)",
                arg,
                0,
                u64::MAX >> 20,
            )?);
            at_most(words, 2)?;
        }
        "tune.lua.session-timeout" => {
            g.lua.session_timeout = Some(time_arg(kw, arg)?);
            at_most(words, 2)?;
        }
        "tune.lua.service-timeout" => {
            g.lua.service_timeout = Some(time_arg(kw, arg)?);
            at_most(words, 2)?;
        }
        "tune.lua.task-timeout" => {
            g.lua.task_timeout = Some(time_arg(kw, arg)?);
            at_most(words, 2)?;
        }
        "tune.lua.burst-timeout" => {
            g.lua.burst_timeout = Some(time_arg(kw, arg)?);
            at_most(words, 2)?;
        }
        "tune.lua.blocking-calls" => {
            g.lua.blocking_calls = Some(match arg {
                Some("warn") => BlockingCalls::Warn,
                Some("deny") => BlockingCalls::Deny,
                Some("allow") => BlockingCalls::Allow,
                _ => {
                    return Err(format!(
                        "'tune.lua.blocking-calls' expects 'warn', 'deny' or 'allow'{}",
                        arg.map(|a| format!(", got '{a}'")).unwrap_or_default()
                    ))
                }
            });
            at_most(words, 2)?;
        }
        "tune.lua.bool-sample-conversion" => {
            let normal = match arg {
                Some("normal") => true,
                Some("pre-3.1-bug") => false,
                _ => {
                    return Err(format!(
                        "'{kw}' expects either 'normal' or 'pre-3.1-bug' but got '{}'.",
                        arg.unwrap_or_default()
                    ))
                }
            };
            at_most(words, 2)?;
            // Set after a lua-load it is ignored (the parser warns).
            if g.lua_loads.is_empty() {
                g.lua.bool_sample_normal = Some(normal);
            }
        }
        "tune.lua.log.loggers" => {
            g.lua.log_loggers = Some(match arg {
                Some("on") => true,
                Some("off") => false,
                _ => {
                    return Err(format!(
                        "'{kw}' expects either 'on' or 'off' but got '{}'.",
                        arg.unwrap_or_default()
                    ))
                }
            });
            at_most(words, 2)?;
        }
        "tune.lua.bytecode" => {
            g.lua.bytecode_allowed = Some(match arg {
                Some("allow") => true,
                Some("refuse") => false,
                _ => {
                    return Err(format!(
                        "'tune.lua.bytecode' expects 'refuse' or 'allow'{}",
                        arg.map(|a| format!(", got '{a}'")).unwrap_or_default()
                    ))
                }
            });
            at_most(words, 2)?;
        }
        "tune.lua.log.stderr" => {
            g.lua.log_stderr = Some(match arg {
                Some("on") => LuaLogStderr::On,
                Some("auto") => LuaLogStderr::Auto,
                Some("off") => LuaLogStderr::Off,
                _ => {
                    return Err(format!(
                        "'{kw}' expects either 'on', 'auto', or 'off' but got '{}'.",
                        arg.unwrap_or_default()
                    ))
                }
            });
            at_most(words, 2)?;
        }
        "tune.lua.openlibs" => {
            g.lua.openlibs = openlibs(g, words)?;
        }
        _ if kw.starts_with("httpclient.") => httpclient(g, words)?,
        "pidfile" => {
            match arg {
                Some(f) if !f.is_empty() => g.pidfile = Some(PathBuf::from(f)),
                _ => return Err("'pidfile' expects a file name".to_string()),
            }
            at_most(words, 2)?;
        }
        "stats" => super::stats::keyword(&mut g.stats, words, loc)?,
        "log-tag" => {
            let tag = arg.filter(|t| !t.is_empty()).ok_or("'log-tag' expects a tag")?;
            at_most(words, 2)?;
            g.log_tag = Some(tag.to_string());
        }
        "log-send-hostname" => {
            at_most(words, 2)?;
            g.log_send_hostname = Some(arg.unwrap_or_default().to_string());
        }
        "log" => match parse_log(words, loc)? {
            Some(target) => g.logs.push(target),
            None => {
                return Err(
                    "'log global' only makes sense in a proxy section; in 'global', name a target such as 'stderr local0'"
                        .to_string(),
                )
            }
        },
        _ if UNSUPPORTED.contains(&kw) => {
            return Err(format!(
                "'{kw}' is not supported yet by luahost"
            ))
        }
        _ => {
            return Err(format!(
                "unknown keyword '{kw}' in 'global' section; expected one of: {}",
                KEYWORDS.join(", ")
            ))
        }
    }
    Ok(())
}

/// The `httpclient.*` keywords, with HAProxy 3.0's messages.
fn httpclient(g: &mut Global, words: &[&str]) -> Result<(), String> {
    let kw = words.first().copied().unwrap_or_default();
    let arg = words.get(1).copied();
    let h = &mut g.httpclient;
    let extra = || {
        words.get(2).map_or(Ok(()), |w| {
            Err(format!("'{kw}' cannot handle unexpected argument '{w}'."))
        })
    };
    match kw {
        "httpclient.retries" => {
            let Some(n) = arg else {
                return Err(format!("'{kw}' expects an integer argument."));
            };
            extra()?;
            // HAProxy reads it with atol(): leading digits, else 0.
            let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
            h.retries = Some(digits.parse::<u32>().unwrap_or(0));
        }
        "httpclient.timeout.connect" => {
            if arg.is_none() {
                return Err(format!("'{kw}' expects an integer argument."));
            }
            h.connect_timeout = Some(time_arg(kw, arg)?);
            extra()?;
        }
        "httpclient.ssl.verify" => {
            h.verify = Some(match arg.and_then(crate::tls::Verify::parse) {
                Some(v) => v,
                None => return Err(format!("'{kw}' expects 'none' or 'required' as argument.")),
            });
            extra()?;
        }
        "httpclient.ssl.ca-file" => {
            let file = arg.unwrap_or_default();
            extra()?;
            let roots = crate::tls::roots_from_keyword(file);
            // Loaded now, so that a bad file is reported at its line.
            if let Err(e) = crate::tls::TlsClient::new(&roots) {
                return Err(format!(
                    "httpclient: cannot initialize SSL verify with 'ca-file \"{file}\"': {e}"
                ));
            }
            h.roots = Some(roots);
        }
        "httpclient.resolvers.id" => {
            let id = arg.unwrap_or_default();
            extra()?;
            // luahost resolves with the system's resolver, which is what
            // HAProxy's "default" section (built from resolv.conf) is;
            // other `resolvers` sections are not supported.
            if id != "default" {
                return Err(format!(
                    "Proxy '<HTTPCLIENT>': Can't find resolvers section '{id}' for do-resolve action \
                     (luahost resolves names with the system's resolver, HAProxy's 'default' section)."
                ));
            }
        }
        "httpclient.resolvers.prefer" => {
            h.prefer_ipv4 = Some(match arg {
                Some("ipv4") => true,
                Some("ipv6") => false,
                _ => return Err(format!("'{kw}' expects 'ipv4' or 'ipv6' as argument.")),
            });
            extra()?;
        }
        "httpclient.resolvers.disabled" => {
            h.resolvers_disabled = Some(match arg {
                Some("on") => true,
                Some("off") => false,
                _ => {
                    return Err(format!(
                        "'{kw}' expects either 'on' or 'off' but got '{}'.",
                        arg.unwrap_or_default()
                    ))
                }
            });
            extra()?;
        }
        "httpclient.pool.idle-timeout" => {
            h.idle_timeout = Some(time_arg(kw, arg)?);
            extra()?;
        }
        _ => {
            return Err(format!(
                "unknown keyword '{kw}' in 'global' section; expected one of: {}",
                KEYWORDS.join(", ")
            ))
        }
    }
    Ok(())
}

/// Reads `tune.lua.openlibs all|none|LIB[,LIB...]` with HAProxy's rules:
/// it comes before any `lua-load`, and a restriction also before any
/// `lua-prepend-path`. `None` means all libraries.
fn openlibs(g: &Global, words: &[&str]) -> Result<Option<Vec<String>>, String> {
    let kw = "tune.lua.openlibs";
    at_most(words, 2)?;
    let arg = words.get(1).copied().unwrap_or_default();
    if arg.is_empty() {
        return Err(format!(
            "'{kw}' expects 'all', 'none', or a comma-separated list of libraries: {}",
            LUA_LIBS.join(",")
        ));
    }
    if !g.lua_loads.is_empty() {
        return Err(format!(
            "'{kw}' must be set before any \"lua-load\" or \"lua-load-per-thread\" directive."
        ));
    }
    let mut all = false;
    let mut none = false;
    let mut libs: Vec<String> = Vec::new();
    for token in arg.split(',').filter(|t| !t.is_empty()) {
        match token {
            "all" => all = true,
            "none" => none = true,
            lib if LUA_LIBS.contains(&lib) => {
                if !libs.iter().any(|l| l == lib) {
                    libs.push(lib.to_string());
                }
            }
            other => {
                return Err(format!(
                    "'{kw}': unknown library '{other}', expected one of: all,none,{}",
                    LUA_LIBS.join(",")
                ))
            }
        }
    }
    if none && (all || !libs.is_empty()) {
        return Err(format!(
            "'{kw}': 'none' cannot be combined with other libraries."
        ));
    }
    let everything = all || LUA_LIBS.iter().all(|l| libs.iter().any(|x| x == l));
    if !everything && !g.lua_prepend_paths.is_empty() {
        return Err(format!(
            "'{kw}' must appear before any 'lua-load', 'lua-load-per-thread' or 'lua-prepend-path' directive"
        ));
    }
    Ok(if everything { None } else { Some(libs) })
}

/// The default syslog port.
const SYSLOG_PORT: u16 = 514;

/// Reads a `log` target: `stdout`/`stderr` (`fd@1`/`fd@2`), a unix
/// datagram socket (`/path`, `unix@path`), or a UDP syslog server
/// (`host[:port]`, `udp@`, `udp4@`, `udp6@`, `ipv4@`, `ipv6@`; port 514 by default).
fn log_dest(target: &str) -> Result<LogDest, String> {
    match target {
        "stdout" | "fd@1" => return Ok(LogDest::Stdout),
        "stderr" | "fd@2" => return Ok(LogDest::Stderr),
        _ => {}
    }
    if target.starts_with('/') {
        return Ok(LogDest::Unix(PathBuf::from(target)));
    }
    let (prefix, rest) = match target.split_once('@') {
        Some((p, r)) => (Some(p), r),
        None => (None, target),
    };
    match prefix {
        Some("unix") => return Ok(LogDest::Unix(PathBuf::from(rest))),
        None | Some("udp" | "udp4" | "udp6" | "ipv4" | "ipv6") => {}
        Some(other) => {
            return Err(format!(
                "log target '{target}': the '{other}@' address family is not supported; use a unix socket path, HOST[:PORT], udp@HOST[:PORT], stdout or stderr"
            ))
        }
    }
    let want_v6 = matches!(prefix, Some("udp6" | "ipv6"));
    let want_v4 = matches!(prefix, Some("udp4" | "ipv4"));
    udp_addr(rest, want_v4, want_v6).map(LogDest::Udp)
}

/// `host[:port]` or `[v6]:port` or a bare IPv6 address, resolved once.
fn udp_addr(text: &str, want_v4: bool, want_v6: bool) -> Result<std::net::SocketAddr, String> {
    use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
    let bad = |why: &str| format!("log target '{text}': {why}");
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, SYSLOG_PORT));
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse::<u16>()
                .map_err(|_| bad("the port must be a number from 0 to 65535"))?,
        ),
        None => (text, SYSLOG_PORT),
    };
    if host.is_empty() {
        return Err(bad("no host given"));
    }
    let found = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve '{host}': {e}")))?;
    found
        .into_iter()
        .find(|a| (!want_v4 || a.is_ipv4()) && (!want_v6 || a.is_ipv6()))
        .ok_or_else(|| bad("no address of the requested family"))
}

/// Reads `log TARGET [len N] [format F] FACILITY [LEVEL [MINLEVEL]]`; returns
/// `None` for `log global`.
pub(crate) fn parse_log(words: &[&str], loc: &Location) -> Result<Option<LogTarget>, String> {
    let dest =
        match words.get(1).copied() {
            Some("global") => {
                at_most(words, 2)?;
                return Ok(None);
            }
            Some(target) => log_dest(target)?,
            None => return Err(
                "'log' expects a target (a unix socket path, HOST[:PORT], udp@HOST[:PORT], stdout or stderr) and a syslog facility, or 'global'"
                    .to_string(),
            ),
        };
    let mut max_len = None;
    let mut format = None;
    let mut i = 2;
    loop {
        match words.get(i).copied() {
            Some("len") => {
                max_len = Some(int_arg(
                    "log len",
                    "a line length",
                    words.get(i + 1).copied(),
                    80,
                    65535,
                )?);
                i += 2;
            }
            Some("format") => {
                let f = words.get(i + 1).copied();
                match f {
                    Some(f) if FORMATS.contains(&f) => format = Some(f.to_string()),
                    _ => {
                        return Err(format!(
                            "'log format' expects one of: {}{}",
                            FORMATS.join(", "),
                            f.map(|f| format!("; got '{f}'")).unwrap_or_default()
                        ))
                    }
                }
                i += 2;
            }
            Some("sample") => return Err("'log ... sample' is not supported yet".to_string()),
            _ => break,
        }
    }
    let facility = match words.get(i).copied() {
        Some(f) if FACILITIES.contains(&f) => f.to_string(),
        other => {
            return Err(format!(
                "'log' expects a syslog facility (one of: {}){}",
                FACILITIES.join(", "),
                other.map(|f| format!(", got '{f}'")).unwrap_or_default()
            ))
        }
    };
    let mut levels = [None, None];
    for (slot, word) in levels
        .iter_mut()
        .zip(words.get(i + 1..).unwrap_or_default())
    {
        *slot =
            Some(log_level(word).ok_or_else(|| {
                format!("'log' expects a level (one of: {LEVELS}), got '{word}'")
            })?);
    }
    at_most(words, i + 3)?;
    Ok(Some(LogTarget {
        dest,
        format,
        max_len,
        facility,
        level: levels[0],
        min_level: levels[1],
        location: loc.clone(),
    }))
}
