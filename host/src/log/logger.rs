//! Loggers: a `log` line made live (its socket, format, facility and
//! levels), and the set of loggers of a proxy or of `global`.

use super::sender::{Sink, SinkState};
use super::syslog::{facility_number, frame, HeaderFields, SyslogFormat};
use crate::config::{Config, LogDest, LogLevel, LogTarget};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// HAProxy's default `len`.
const DEFAULT_LEN: usize = 1024;

/// One `log` line.
pub struct Logger {
    sink: Sink,
    state: SinkState,
    /// The target as written, for messages.
    name: String,
    format: SyslogFormat,
    facility: u8,
    /// Lines less severe than this are not sent.
    max_level: u8,
    /// Lines more severe than this are sent with this level.
    min_level: u8,
    max_len: usize,
}

impl Logger {
    /// Opens the logger of a `log` line.
    pub fn open(t: &LogTarget) -> std::io::Result<Logger> {
        Ok(Logger {
            sink: Sink::open(&t.dest)?,
            state: SinkState::new(),
            name: dest_name(&t.dest),
            format: SyslogFormat::from_name(t.format.as_deref()),
            facility: facility_number(&t.facility),
            max_level: t.level.map_or(7, level_number),
            min_level: t.min_level.map_or(0, level_number),
            max_len: t.max_len.unwrap_or(DEFAULT_LEN),
        })
    }

    /// Sends `msg` at `level` if this logger takes that level.
    fn send(&self, level: u8, msg: &[u8], fields: &HeaderFields<'_>) {
        if level > self.max_level {
            return;
        }
        let level = level.max(self.min_level);
        let line = frame(self.format, self.facility, level, fields, msg, self.max_len);
        self.sink.send(&line, &self.state, &self.name);
    }
}

fn level_number(l: LogLevel) -> u8 {
    l as u8
}

fn dest_name(d: &LogDest) -> String {
    match d {
        LogDest::Stdout => "stdout".to_string(),
        LogDest::Stderr => "stderr".to_string(),
        LogDest::Unix(p) => p.display().to_string(),
        LogDest::Udp(a) => a.to_string(),
    }
}

/// The loggers of `global` or of one proxy, with the header's tag and host.
pub struct Loggers {
    loggers: Vec<Arc<Logger>>,
    tag: Arc<str>,
    hostname: Option<Arc<str>>,
}

impl Loggers {
    /// Whether a line sent here goes anywhere.
    pub fn is_empty(&self) -> bool {
        self.loggers.is_empty()
    }

    /// Sends `msg` at `level` (0 emerg .. 7 debug) to every logger.
    pub fn send(&self, level: i32, msg: &[u8]) {
        if self.loggers.is_empty() {
            return;
        }
        let fields = HeaderFields {
            tag: &self.tag,
            hostname: self.hostname.as_deref(),
            pid: std::process::id(),
            now: SystemTime::now(),
        };
        let level = level.clamp(0, 7) as u8;
        for l in &self.loggers {
            l.send(level, msg, &fields);
        }
    }
}

/// Every set of loggers, built once at start-up. Most proxies have either
/// the global loggers (`log global`) or none, whichever their `defaults`
/// gave them: the more common of the two is the fallback, and only the
/// proxies whose loggers differ from it have an entry, so a configuration
/// with hundreds of thousands of backends costs nothing here either way.
struct Registry {
    global: Arc<Loggers>,
    /// The loggers of a proxy without an entry.
    fallback: Arc<Loggers>,
    proxies: HashMap<String, Arc<Loggers>>,
}

static REGISTRY: RwLock<Option<Arc<Registry>>> = RwLock::new(None);

/// Opens the loggers of `global` and of every proxy. `log global` shares
/// the global loggers (one socket each).
pub fn install(cfg: &Config) -> Result<(), String> {
    let mut opened: Vec<(LogTarget, Arc<Logger>)> = Vec::new();
    let mut open = |t: &LogTarget| -> Result<Arc<Logger>, String> {
        if let Some((_, l)) = opened.iter().find(|(o, _)| o == t) {
            return Ok(l.clone());
        }
        let l = Arc::new(
            Logger::open(t).map_err(|e| format!("[{}] cannot open log target: {e}", t.location))?,
        );
        opened.push((t.clone(), l.clone()));
        Ok(l)
    };
    let hostname: Option<Arc<str>> = cfg.global.log_send_hostname.as_ref().map(|h| {
        if h.is_empty() {
            crate::sample::fetch::hostname()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
                .into()
        } else {
            h.as_str().into()
        }
    });
    let global_tag: Arc<str> = cfg
        .global
        .log_tag
        .clone()
        .unwrap_or_else(program_name)
        .into();
    let global_loggers = cfg
        .global
        .logs
        .iter()
        .map(&mut open)
        .collect::<Result<Vec<_>, _>>()?;
    let global = Arc::new(Loggers {
        loggers: global_loggers.clone(),
        tag: global_tag.clone(),
        hostname: hostname.clone(),
    });
    // Proxies without any logger share one empty set.
    let none = Arc::new(Loggers {
        loggers: Vec::new(),
        tag: global_tag.clone(),
        hostname: hostname.clone(),
    });
    fn own_tag(p: &crate::config::Proxy) -> Option<&str> {
        p.logging.as_ref().and_then(|l| l.tag.as_deref())
    }
    let plain = |p: &crate::config::Proxy| p.logs().is_empty() && own_tag(p).is_none();
    // One pass (with 300,000 sections, each pass over them counts).
    let (mut without_loggers, mut with_global) = (0usize, 0usize);
    for p in cfg.proxies.iter().filter(|p| plain(p)) {
        if p.log_global {
            with_global += 1;
        } else {
            without_loggers += 1;
        }
    }
    let none_is_fallback = without_loggers > with_global;
    let fallback = if none_is_fallback {
        none.clone()
    } else {
        global.clone()
    };
    let mut proxies = HashMap::new();
    for p in &cfg.proxies {
        let own_tag = own_tag(p);
        if plain(p) {
            // No loggers, or `log global` alone (the global set): an entry
            // only when that is not the fallback.
            if p.log_global == none_is_fallback {
                let set = if p.log_global { &global } else { &none };
                proxies.insert(p.name.clone(), set.clone());
            }
            continue;
        }
        let mut loggers = Vec::new();
        if p.log_global {
            loggers.extend(global_loggers.iter().cloned());
        }
        for t in p.logs() {
            loggers.push(open(t)?);
        }
        let tag = match own_tag {
            Some(t) => t.into(),
            None => global_tag.clone(),
        };
        proxies.insert(
            p.name.clone(),
            Arc::new(Loggers {
                loggers,
                tag,
                hostname: hostname.clone(),
            }),
        );
    }
    let registry = Registry {
        global,
        fallback,
        proxies,
    };
    if let Ok(mut r) = REGISTRY.write() {
        *r = Some(Arc::new(registry));
    }
    Ok(())
}

/// The global loggers (none before start-up).
pub fn global() -> Option<Arc<Loggers>> {
    let r = REGISTRY.read().ok()?;
    r.as_ref().map(|r| r.global.clone())
}

/// The loggers of the proxy named `name` (the global ones for a proxy
/// with only `log global`).
pub fn proxy(name: &str) -> Option<Arc<Loggers>> {
    let r = REGISTRY.read().ok()?;
    let r = r.as_ref()?;
    Some(r.proxies.get(name).unwrap_or(&r.fallback).clone())
}

/// The default tag: the program's name, as HAProxy uses its own.
fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "luahost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `log ... FACILITY LEVEL MINLEVEL`: lines less severe than LEVEL are
    /// not sent, lines more severe than MINLEVEL are sent as MINLEVEL.
    #[test]
    fn max_and_min_levels() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let cfg = crate::config::parse_str(
            "t.cfg",
            &format!(
                "global\n  log 127.0.0.1:{} format priority local0 notice err\n",
                rx.local_addr().expect("addr").port()
            ),
        )
        .expect("config");
        let logger = Logger::open(&cfg.global.logs[0]).expect("open");
        let fields = HeaderFields {
            tag: "t",
            hostname: None,
            pid: 1,
            now: SystemTime::now(),
        };
        // alert (1) -> sent as err (3); info (6) -> dropped; notice (5) as is.
        for level in [1, 6, 5] {
            logger.send(level, b"m", &fields);
        }
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        for _ in 0..2 {
            let n = rx.recv(&mut buf).expect("a line");
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(got, ["<131>m\n", "<133>m\n"]);
    }

    // One test touches the process-wide registry (tests run in parallel).
    #[test]
    fn proxies_get_global_own_or_no_loggers() {
        let cfg = crate::config::parse_str(
            "t.cfg",
            "global\n  log stderr local0\n  log-tag gtag\n\
             defaults\n  mode http\n  log global\n\
             frontend plain\n  bind :1\n  default_backend be\n\
             frontend tagged\n  bind :2\n  log-tag mine\n  default_backend be\n\
             frontend own\n  bind :3\n  log stdout local1\n  default_backend be\n\
             frontend quiet\n  bind :4\n  no log\n  default_backend be\n\
             backend be\n  server s 127.0.0.1:1\n",
        )
        .expect("config");
        install(&cfg).expect("install");
        let g = global().expect("global");
        assert_eq!((g.loggers.len(), &*g.tag), (1, "gtag"));
        let plain = proxy("plain").expect("plain");
        assert!(Arc::ptr_eq(&plain, &g), "log global alone shares the set");
        let tagged = proxy("tagged").expect("tagged");
        assert_eq!((tagged.loggers.len(), &*tagged.tag), (1, "mine"));
        // The global logger is shared (one socket), its own is added.
        let own = proxy("own").expect("own");
        assert_eq!(own.loggers.len(), 2);
        assert!(Arc::ptr_eq(&own.loggers[0], &g.loggers[0]));
        assert!(proxy("quiet").expect("quiet").is_empty());

        // Mostly proxies without loggers (a `defaults` without `log
        // global`): no logger is the fallback, and `log global` still
        // gets the global set.
        let cfg = crate::config::parse_str(
            "t.cfg",
            "global\n  log stderr local0\n\
             defaults\n  mode http\n\
             frontend fe\n  bind :1\n  log global\n  default_backend b1\n\
             backend b1\n  server s 127.0.0.1:1\n\
             backend b2\n  server s 127.0.0.1:1\n",
        )
        .expect("config");
        install(&cfg).expect("install");
        let g = global().expect("global");
        assert!(Arc::ptr_eq(&proxy("fe").expect("fe"), &g));
        assert!(proxy("b1").expect("b1").is_empty());
        assert!(proxy("b2").expect("b2").is_empty());
        // Only the exception has an entry.
        let entries = REGISTRY
            .read()
            .ok()
            .and_then(|r| r.as_ref().map(|r| r.proxies.len()));
        assert_eq!(entries, Some(1));
    }
}
