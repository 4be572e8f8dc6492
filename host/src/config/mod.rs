//! The HAProxy-style configuration: its data model and the parser entry points.
//!
//! [`parse_files`] reads one or more files as a single configuration, the way
//! `haproxy -f a.cfg -f b.cfg` does, and returns either the whole [`Config`] or
//! every error found (not only the first one), each naming its file and line.
//!
//! Layout: `lexer` splits lines into words, `units` reads numbers with units,
//! `parser` drives files and sections, `global` and `proxy` handle their
//! keywords, `addr` reads addresses, `rules` reads actions, `acl` reads ACLs
//! and conditions, and `checks` validates what spans several lines.

mod acl;

#[cfg(test)]
pub(crate) use acl::PREDEFINED_ACLS;
mod addr;
mod checks;
mod compression;
mod cond;
mod environ;
pub mod errorfile;
mod global;
mod health;
mod lexer;
mod parser;
mod process;
mod proxy;
mod rules;
mod stats;
pub use stats::{CliAddr, CliLevel, StatsCli, StatsSocket};
mod units;

#[cfg(test)]
mod doc_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use environ::{apply as apply_env, EnvOp};
pub use health::{
    CheckKind, CheckRule, HttpChkLine, HttpSend, Matcher, Observe, OnError, ProxyCheck,
    ServerCheck, DEFAULT_ERROR_LIMIT,
};
pub use process::CpuMap;

/// Where an item was written: file name and 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file name as given on the command line (or to [`parse_str`]).
    pub file: Arc<str>,
    /// The 1-based line number.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A fatal configuration problem; shown as `[ALERT] parsing [file:line] : message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending line, when the problem has one (an unreadable file has none).
    pub location: Option<Location>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "[ALERT] parsing [{loc}] : {}", self.message),
            None => write!(f, "[ALERT] config : {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A non-fatal remark on an accepted configuration (HAProxy's `[WARNING]`),
/// e.g. HTTP rules in a TCP proxy, which are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The line the remark is about.
    pub location: Option<Location>,
    /// The remark.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "[WARNING] parsing [{loc}] : {}", self.message),
            None => write!(f, "[WARNING] config : {}", self.message),
        }
    }
}

/// A message a `.notice` or `.warning` line asked for, shown at load as
/// HAProxy shows it: `[NOTICE] parsing [file:line] : 'text'.`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigNotice {
    /// `NOTICE` or `WARNING`.
    pub level: &'static str,
    /// The directive's line.
    pub location: Location,
    /// The text given.
    pub message: String,
}

impl fmt::Display for ConfigNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] parsing [{}] : '{}'.",
            self.level, self.location, self.message
        )
    }
}

/// Reads and parses configuration files in order as one configuration. As
/// with `haproxy -f DIR`, a directory stands for its `*.cfg` files in lexical
/// order.
pub fn parse_files(paths: &[PathBuf]) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut sources = Vec::with_capacity(paths.len());
    for path in expand_dirs(paths, &mut errors) {
        let name: Arc<str> = Arc::from(path.to_string_lossy().as_ref());
        match std::fs::read(&path) {
            Ok(bytes) => sources.push((name, bytes)),
            Err(e) => errors.push(ConfigError {
                location: None,
                message: format!("could not read configuration file '{name}': {e}"),
            }),
        }
    }
    // Parse what could be read anyway, so that one run reports every error.
    let parsed = parser::parse(
        sources.iter().map(|(n, b)| (n.clone(), b.as_slice())),
        &lexer::ProcessEnv,
    );
    match parsed {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Replaces each directory in `paths` by the `.cfg` files it holds, sorted.
fn expand_dirs(paths: &[PathBuf], errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "cfg"))
                    .collect();
                found.sort();
                files.extend(found);
            }
            Err(e) => errors.push(ConfigError {
                location: None,
                message: format!(
                    "could not read configuration directory '{}': {e}",
                    path.display()
                ),
            }),
        }
    }
    files
}

/// Parses configuration text; `name` stands for the file name in messages.
pub fn parse_str(name: &str, text: &str) -> Result<Config, Vec<ConfigError>> {
    parser::parse(
        std::iter::once((Arc::from(name), text.as_bytes())),
        &lexer::ProcessEnv,
    )
}

/// A whole configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The merged `global` sections.
    pub global: Global,
    /// Frontends, backends and listen sections, in file order.
    pub proxies: Vec<Proxy>,
    /// Remarks about constructs that were accepted but have no effect.
    pub warnings: Vec<ConfigWarning>,
    /// `.notice` and `.warning` messages, in file order.
    pub notices: Vec<ConfigNotice>,
}

impl Config {
    /// The proxy with backend capability (backend or listen) named `name`.
    pub fn backend(&self, name: &str) -> Option<&Proxy> {
        self.proxies
            .iter()
            .find(|p| p.kind.has_backend() && p.name == name)
    }

    /// The proxy with frontend capability (frontend or listen) named `name`.
    pub fn frontend(&self, name: &str) -> Option<&Proxy> {
        self.proxies
            .iter()
            .find(|p| p.kind.has_frontend() && p.name == name)
    }
}

/// Settings from `global` sections.
#[derive(Debug, Clone, Default)]
pub struct Global {
    /// `lua-load` and `lua-load-per-thread` lines, in order.
    pub lua_loads: Vec<LuaLoad>,
    /// `lua-prepend-path` lines, in order.
    pub lua_prepend_paths: Vec<LuaPrependPath>,
    /// `nbthread`.
    pub nbthread: Option<usize>,
    /// `maxconn`.
    pub maxconn: Option<usize>,
    /// The `tune.lua.*` settings.
    pub lua: LuaTune,
    /// `tune.bufsize`, in bytes.
    pub bufsize: Option<usize>,
    /// `log` lines.
    pub logs: Vec<LogTarget>,
    /// `pidfile`.
    pub pidfile: Option<PathBuf>,
    /// `log-tag`: the tag of syslog headers (the program name when unset).
    pub log_tag: Option<String>,
    /// `log-send-hostname [NAME]`: the host name put in syslog headers
    /// (an empty string: the system's host name).
    pub log_send_hostname: Option<String>,
    /// Process keywords: daemon, privileges, chroot, timers, CPU pinning.
    pub process: Process,
    /// `stats socket`, `stats timeout`, `stats maxconn`: the runtime API.
    pub stats: StatsCli,
    /// The `httpclient.*` keywords.
    pub httpclient: HttpClientConf,
}

/// The `httpclient.*` global keywords (unset: HAProxy's defaults).
#[derive(Debug, Clone, Default)]
pub struct HttpClientConf {
    pub retries: Option<u32>,
    pub connect_timeout: Option<Duration>,
    pub verify: Option<crate::tls::Verify>,
    pub roots: Option<crate::tls::Roots>,
    pub prefer_ipv4: Option<bool>,
    pub resolvers_disabled: Option<bool>,
    /// `httpclient.pool.idle-timeout` (luahost).
    pub idle_timeout: Option<Duration>,
}

/// The `global` keywords about the process itself.
#[derive(Debug, Clone, Default)]
pub struct Process {
    /// `daemon` (or `-D`): detach into the background once listening.
    pub daemon: bool,
    /// `master-worker` (or `-W`): a master process supervises one worker
    /// process and reloads it on SIGUSR2 (proxy/master.rs).
    pub master_worker: bool,
    /// `user`/`uid`: the user to run as once the listeners are bound.
    pub uid: Option<u32>,
    /// `group`/`gid`: the group to run as once the listeners are bound.
    pub gid: Option<u32>,
    /// `chroot`: the directory to enter once the Lua files are loaded.
    pub chroot: Option<PathBuf>,
    /// `hard-stop-after`: the longest a stop may take.
    pub hard_stop_after: Option<Duration>,
    /// `grace`: how long the listeners stay open after a stop signal.
    pub grace: Option<Duration>,
    /// `node`.
    pub node: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `crt-base` (kept for TLS, which luahost does not have yet).
    pub crt_base: Option<String>,
    /// `ca-base` (kept for TLS).
    pub ca_base: Option<String>,
    /// `cpu-map` bindings, in order (a later one replaces an earlier one
    /// for the same thread).
    pub cpu_map: Vec<CpuMap>,
    /// `setenv`/`presetenv`/`unsetenv`/`resetenv`, to apply at start-up.
    pub env: Vec<EnvOp>,
    /// Keywords accepted without effect, with their first line.
    pub no_effect: Vec<(String, Location)>,
    /// `expose-experimental-directives`.
    pub experimental: bool,
}

/// A Lua script to load at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuaLoad {
    /// The script path as written; like HAProxy, relative paths are relative to
    /// the working directory, not to the configuration file.
    pub file: PathBuf,
    /// Arguments given after the file name (visible to the script as `...`).
    pub args: Vec<String>,
    /// Loaded once per thread (`lua-load-per-thread`) rather than shared.
    pub per_thread: bool,
    /// Where it was written.
    pub location: Location,
}

/// Which Lua search path `lua-prepend-path` extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// `package.path` (Lua modules); the default.
    Path,
    /// `package.cpath` (native modules).
    Cpath,
}

/// A `lua-prepend-path` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuaPrependPath {
    /// The template to prepend, e.g. `/usr/share/lua/?.lua`.
    pub path: String,
    /// Which search path it goes in front of.
    pub kind: PathKind,
    /// Where it was written.
    pub location: Location,
}

/// The `tune.lua.*` settings; `None` means the built-in default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LuaTune {
    /// `tune.lua.forced-yield`: instructions between forced yields.
    pub forced_yield: Option<u32>,
    /// `tune.lua.maxmem` in megabytes; `Some(0)` explicitly means unlimited.
    pub maxmem_mb: Option<u64>,
    /// `tune.lua.session-timeout`: limit for actions and fetches.
    pub session_timeout: Option<Duration>,
    /// `tune.lua.service-timeout`: limit for applets (services).
    pub service_timeout: Option<Duration>,
    /// `tune.lua.task-timeout`: limit for tasks.
    pub task_timeout: Option<Duration>,
    /// `tune.lua.burst-timeout`: longest run between yields.
    pub burst_timeout: Option<Duration>,
    /// `tune.lua.blocking-calls` (luahost extension).
    pub blocking_calls: Option<BlockingCalls>,
    /// `tune.lua.bool-sample-conversion`: `Some(true)` for `normal`
    /// (boolean samples reach Lua as booleans), `Some(false)` for
    /// `pre-3.1-bug` (as integers 0/1, the default).
    pub bool_sample_normal: Option<bool>,
    /// `tune.lua.log.loggers`.
    pub log_loggers: Option<bool>,
    /// `tune.lua.log.stderr`.
    pub log_stderr: Option<LuaLogStderr>,
    /// `tune.lua.openlibs`: the optional standard libraries a state opens
    /// (`None`: all of them).
    pub openlibs: Option<Vec<String>>,
    /// `tune.lua.bytecode` (luahost extension): whether binary chunks load
    /// at runtime.
    pub bytecode_allowed: Option<bool>,
}

/// `tune.lua.log.stderr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LuaLogStderr {
    /// Always also to stderr.
    On,
    /// To stderr only when the message has no logger to go to.
    Auto,
    /// Never to stderr.
    Off,
}

/// What to do when a script makes a blocking call in a context that must not block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockingCalls {
    /// Allow it and log a warning.
    Warn,
    /// Refuse it with a Lua error.
    Deny,
    /// Allow it silently.
    Allow,
}

/// A `log` line: where lines go, in which format, at which levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    /// Where lines go.
    pub dest: LogDest,
    /// `format NAME` (rfc3164, rfc5424, short, raw, iso, timed, priority, local).
    pub format: Option<String>,
    /// `len N`: maximum line length.
    pub max_len: Option<usize>,
    /// The syslog facility, e.g. `local0`.
    pub facility: String,
    /// The highest level sent; all levels when absent.
    pub level: Option<LogLevel>,
    /// The lowest level a line is shown with.
    pub min_level: Option<LogLevel>,
    /// Where it was written.
    pub location: Location,
}

/// Where a `log` line sends its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    /// The process's standard output (`stdout`, `fd@1`).
    Stdout,
    /// The process's standard error (`stderr`, `fd@2`).
    Stderr,
    /// A unix datagram socket (`/dev/log`, `unix@PATH`).
    Unix(PathBuf),
    /// A syslog server over UDP (`HOST[:PORT]`, `udp@`, `ipv4@`, `ipv6@`).
    Udp(SocketAddr),
}

/// A syslog severity, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `emerg`
    Emerg,
    /// `alert`
    Alert,
    /// `crit`
    Crit,
    /// `err`
    Err,
    /// `warning`
    Warning,
    /// `notice`
    Notice,
    /// `info`
    Info,
    /// `debug`
    Debug,
}

/// What a proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// HTTP: requests and responses are parsed.
    Http,
    /// Plain TCP; HAProxy's default.
    #[default]
    Tcp,
}

/// The kind of section a proxy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// Accepts connections.
    Frontend,
    /// Holds servers.
    Backend,
    /// Both at once.
    Listen,
}

impl ProxyKind {
    /// The section keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            ProxyKind::Frontend => "frontend",
            ProxyKind::Backend => "backend",
            ProxyKind::Listen => "listen",
        }
    }

    /// Accepts connections (frontend or listen).
    pub fn has_frontend(self) -> bool {
        matches!(self, ProxyKind::Frontend | ProxyKind::Listen)
    }

    /// Holds servers (backend or listen).
    pub fn has_backend(self) -> bool {
        matches!(self, ProxyKind::Backend | ProxyKind::Listen)
    }
}

/// A frontend, backend or listen section, with its defaults applied.
///
/// What every proxy has is stored inline; what a plain backend (servers and
/// nothing else) does not use lives behind boxes, so that such a backend costs
/// a few pointers: with 300,000 backends, each byte here is 300 kB.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// The section name.
    pub name: String,
    /// The section kind.
    pub kind: ProxyKind,
    /// `mode`.
    pub mode: Mode,
    /// `balance`.
    pub balance: Balance,
    /// `log global`: use the global log targets.
    pub log_global: bool,
    /// The section header line.
    pub location: Location,
    /// `timeout` settings: shared by the proxies that inherit the same
    /// ones from a `defaults` section (copy-on-write: a `timeout` line in
    /// the proxy gives it its own; see [`SharedTimeouts`]).
    pub timeouts: Arc<Timeouts>,
    /// `server` lines.
    pub servers: Vec<ServerDef>,
    /// `retries`.
    pub retries: Option<u32>,
    /// `option` flags.
    pub options: ProxyOptions,
    /// Binds, limits, backend selection, ACLs, rules, error files and
    /// description: empty for a plain backend, so boxed (see [`Extras`]).
    pub extras: Extras,
    /// `log` lines, `log-tag`, `log-format` and captures (boxed: most
    /// proxies have none; [`Proxy::logs`] reads the `log` lines).
    pub logging: Option<Box<ProxyLogging>>,
    /// `option httpchk`, `option tcp-check` and their `http-check` /
    /// `tcp-check` rules (boxed: most proxies have none).
    pub health: Option<Box<ProxyCheck>>,
    /// `compression ...` and `filter compression` (boxed: rare).
    pub compression: Option<Box<Compression>>,
}

impl Proxy {
    /// The proxy's own `log` lines (not the global ones `log global` adds).
    pub fn logs(&self) -> &[LogTarget] {
        self.logging.as_deref().map_or(&[], |l| &l.logs)
    }
}

/// The settings of a proxy that a backend with only servers does not use:
/// what a frontend needs (binds, limits, backend selection), ACLs and rule
/// lists, error files and the description.
#[derive(Debug, Clone, Default)]
pub struct ProxyExtras {
    /// `bind` addresses.
    pub binds: Vec<Bind>,
    /// `maxconn`.
    pub maxconn: Option<usize>,
    /// `backlog`: the listen queue of this frontend's binds (0 or unset:
    /// derived from `maxconn`, as in HAProxy).
    pub backlog: Option<u32>,
    /// `default_backend` and where it was written (possibly in a defaults section).
    pub default_backend: Option<(String, Location)>,
    /// `use_backend` rules, in order.
    pub use_backends: Vec<UseBackend>,
    /// `acl` lines, in order; several lines with one name are OR-ed.
    pub acls: Vec<AclDef>,
    /// `http-request` rules.
    pub http_request: Vec<Rule>,
    /// `http-response` rules.
    pub http_response: Vec<Rule>,
    /// `http-after-response` rules.
    pub http_after_response: Vec<Rule>,
    /// `tcp-request connection` rules (frontend capability only).
    pub tcp_request_connection: Vec<Rule>,
    /// `tcp-request content` rules.
    pub tcp_request_content: Vec<Rule>,
    /// `tcp-response content` rules.
    pub tcp_response_content: Vec<Rule>,
    /// `tcp-request inspect-delay`.
    pub tcp_request_inspect_delay: Option<Duration>,
    /// `errorfile CODE FILE` lines, the last one of a status winning.
    pub errorfiles: Vec<ErrorFileDef>,
    /// `description`.
    pub description: Option<String>,
}

impl ProxyExtras {
    /// Nothing set: what a proxy without extras reads.
    const NONE: ProxyExtras = ProxyExtras {
        binds: Vec::new(),
        maxconn: None,
        backlog: None,
        default_backend: None,
        use_backends: Vec::new(),
        acls: Vec::new(),
        http_request: Vec::new(),
        http_response: Vec::new(),
        http_after_response: Vec::new(),
        tcp_request_connection: Vec::new(),
        tcp_request_content: Vec::new(),
        tcp_response_content: Vec::new(),
        tcp_request_inspect_delay: None,
        errorfiles: Vec::new(),
        description: None,
    };
}

/// The [`ProxyExtras`] of a proxy, allocated by the first line that sets
/// one. Reading goes through `Deref` (an empty record when none was set),
/// writing through [`Extras::get_mut`].
#[derive(Debug, Clone, Default)]
pub struct Extras(Option<Box<ProxyExtras>>);

/// What [`Extras`] reads as when nothing was set.
static NO_EXTRAS: ProxyExtras = ProxyExtras::NONE;

impl Extras {
    /// The record, created empty if the proxy had none.
    pub fn get_mut(&mut self) -> &mut ProxyExtras {
        self.0.get_or_insert_with(Box::default)
    }

    /// Whether anything was set (the record exists).
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

impl From<ProxyExtras> for Extras {
    fn from(e: ProxyExtras) -> Extras {
        Extras(Some(Box::new(e)))
    }
}

impl std::ops::Deref for Extras {
    type Target = ProxyExtras;

    fn deref(&self) -> &ProxyExtras {
        self.0.as_deref().unwrap_or(&NO_EXTRAS)
    }
}

/// The logging settings of a proxy: its `log` lines, `log-tag`,
/// `log-format` and captures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyLogging {
    /// Proxy-specific `log` targets.
    pub logs: Vec<LogTarget>,
    /// `log-tag`.
    pub tag: Option<String>,
    /// `log-format`, with its line.
    pub format: Option<(String, Location)>,
    /// `capture request header NAME len N`, then `http-request capture ...
    /// len N` slots, in the order they were declared.
    pub req_captures: Vec<Capture>,
    /// `capture response header NAME len N` (and `http-response capture`).
    pub res_captures: Vec<Capture>,
}

/// A capture slot: the header it takes (none for `http-request capture`,
/// whose rule fills it) and its length limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The header name for `capture request/response header`.
    pub header: Option<String>,
    /// The longest value kept, in bytes.
    pub len: usize,
}

/// `errorfile CODE FILE`: the file, a complete HTTP response read and
/// checked at load time, replaces the page luahost generates for CODE.
#[derive(Debug, Clone)]
pub struct ErrorFileDef {
    /// The status whose generated page it replaces.
    pub status: u16,
    /// The response as read from the file.
    pub reply: std::sync::Arc<errorfile::RawReply>,
    /// Where it was written.
    pub location: Location,
}

/// A compression algorithm of `compression algo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionAlgo {
    /// `identity`: no compression (a placeholder HAProxy accepts).
    Identity,
    /// `gzip`.
    Gzip,
    /// `deflate`: zlib-wrapped deflate (RFC 1950), as HAProxy sends it.
    Deflate,
    /// `raw-deflate`: deflate without the zlib wrapper, announced as
    /// `deflate`.
    RawDeflate,
}

/// Which direction `compression direction` compresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CompressionDirection {
    /// Responses (the default).
    #[default]
    Response,
    /// Requests only.
    Request,
    /// Both.
    Both,
}

/// The `compression` settings of a proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compression {
    /// `compression algo`, in preference order (empty: no compression).
    pub algos: Vec<CompressionAlgo>,
    /// `compression type`: the content types to compress (empty: all).
    pub types: Vec<String>,
    /// `compression offload`: remove `Accept-Encoding` from requests.
    pub offload: bool,
    /// `compression direction`.
    pub direction: CompressionDirection,
    /// `filter compression` was written.
    pub filter: bool,
}

/// A listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The address; `*:80` and `:80` mean 0.0.0.0:80.
    pub addr: SocketAddr,
    /// The `backlog` bind option (0 or unset: the frontend's).
    pub backlog: Option<u32>,
    /// Where it was written.
    pub location: Location,
}

/// The timeout records handed out to proxies as they inherit from a
/// `defaults` section: a proxy whose timeouts equal one already handed out
/// shares it, so that hundreds of thousands of backends under one
/// `defaults` hold one record (per kind of proxy) rather than a copy each.
#[derive(Default)]
pub(crate) struct SharedTimeouts {
    /// The most recent records (few: one per kind of proxy per defaults).
    recent: Vec<Arc<Timeouts>>,
}

impl SharedTimeouts {
    /// The shared record equal to `t`.
    pub(crate) fn get(&mut self, t: Timeouts) -> Arc<Timeouts> {
        if let Some(r) = self.recent.iter().find(|r| ***r == t) {
            return r.clone();
        }
        if self.recent.len() >= 8 {
            self.recent.remove(0);
        }
        let r = Arc::new(t);
        self.recent.push(r.clone());
        r
    }
}

/// The `timeout` settings of a proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// `timeout client`: client inactivity.
    pub client: Option<Duration>,
    /// `timeout server`: server inactivity.
    pub server: Option<Duration>,
    /// `timeout connect`: connecting to a server.
    pub connect: Option<Duration>,
    /// `timeout http-request`: receiving a complete request.
    pub http_request: Option<Duration>,
    /// `timeout http-keep-alive`: waiting for the next request.
    pub http_keep_alive: Option<Duration>,
    /// `timeout queue`: waiting for a free server slot.
    pub queue: Option<Duration>,
    /// `timeout tunnel`: inactivity once a tunnel is established.
    pub tunnel: Option<Duration>,
    /// `timeout check`: reading a health check's answer once connected.
    pub check: Option<Duration>,
}

/// A `use_backend` rule.
#[derive(Debug, Clone)]
pub struct UseBackend {
    /// The backend name, or a log-format expression when [`Self::is_dynamic`].
    pub name: String,
    /// The condition; none means always.
    pub cond: Option<Condition>,
    /// Where it was written.
    pub location: Location,
}

impl UseBackend {
    /// The name is computed per request (contains `%[...]`), so it was not
    /// checked against the configured backends.
    pub fn is_dynamic(&self) -> bool {
        self.name.contains("%[")
    }
}

/// An ACL: a sample fetch matched against patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclDef {
    /// The ACL name; empty for an anonymous `{ ... }` ACL.
    pub name: String,
    /// The fetch expression as written, converters included, e.g. `req.hdr(host),lower`.
    pub criterion: String,
    /// The flags, in order.
    pub flags: Vec<AclFlag>,
    /// The patterns, in order.
    pub patterns: Vec<String>,
    /// Where it was written.
    pub location: Location,
}

/// An ACL flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclFlag {
    /// `-i`: case-insensitive matching.
    IgnoreCase,
    /// `-f FILE`: load patterns from a file.
    File(String),
    /// `-m METHOD`: force the matching method.
    Match(MatchMethod),
    /// `-n`: no DNS resolution of patterns.
    NoDns,
    /// `-M`: the `-f` file is a map.
    Map,
    /// `-u ID`: the pattern list's unique id.
    UniqueId(String),
}

/// An ACL matching method (`-m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchMethod {
    /// `found`
    Found,
    /// `bool`
    Bool,
    /// `int`
    Int,
    /// `ip`
    Ip,
    /// `bin`
    Bin,
    /// `len`
    Len,
    /// `str`
    Str,
    /// `sub`
    Sub,
    /// `reg`
    Reg,
    /// `beg`
    Beg,
    /// `end`
    End,
    /// `dir`
    Dir,
    /// `dom`
    Dom,
}

/// An `if` or `unless` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `if` or `unless`.
    pub kind: CondKind,
    /// The expression.
    pub expr: CondExpr,
}

/// Whether a condition applies when its expression is true or false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondKind {
    /// `if`
    If,
    /// `unless`
    Unless,
}

/// A condition expression: OR of ANDs of possibly negated ACLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CondExpr {
    /// `a || b || ...` (also written `or`).
    Or(Vec<CondExpr>),
    /// `a b ...`: all must match.
    And(Vec<CondExpr>),
    /// `!a`
    Not(Box<CondExpr>),
    /// A named ACL (declared earlier in the proxy, or predefined like `TRUE`).
    Acl(String),
    /// An inline `{ criterion [flags] [patterns] }` ACL.
    Anonymous(Box<AclDef>),
}

/// One `http-request`, `http-response`, `http-after-response`,
/// `tcp-request content` or `tcp-response content` rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// What to do.
    pub action: Action,
    /// When to do it; none means always.
    pub cond: Option<Condition>,
    /// The action's words as written, action name first, condition excluded.
    pub words: Vec<String>,
    /// Where it was written.
    pub location: Location,
}

/// The reply arguments shared by `return` and `deny`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplySpec {
    /// The Content-Type of the body.
    pub content_type: Option<String>,
    /// The body.
    pub body: Option<ReturnBody>,
    /// `hdr NAME FMT` headers.
    pub headers: Vec<(String, String)>,
    /// `default-errorfiles`.
    pub errorfile: bool,
}

/// A rule action. Format strings are kept as written (log-format syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `lua.NAME [args]`: run an action registered by a script.
    Lua {
        /// The registered name, without `lua.`.
        name: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// `capture SAMPLE len N`: keep the sample's text in a capture slot
    /// of the frontend (shown by `%hr`/`%hs`, `capture.req.hdr(N)`).
    Capture {
        /// The sample expression, as written.
        expr: String,
        /// The longest value kept.
        len: usize,
        /// The capture slot; set once the rule is added to its proxy.
        slot: usize,
    },
    /// `use-service lua.NAME`: answer with a service registered by a script.
    UseService {
        /// The registered name, without `lua.`.
        name: String,
    },
    /// `set-header NAME FMT`
    SetHeader {
        /// Header name.
        name: String,
        /// Value format.
        value: String,
    },
    /// `add-header NAME FMT`
    AddHeader {
        /// Header name.
        name: String,
        /// Value format.
        value: String,
    },
    /// `del-header NAME`
    DelHeader {
        /// Header name.
        name: String,
    },
    /// `replace-header NAME REGEX REPLACEMENT`
    ReplaceHeader {
        /// Header name.
        name: String,
        /// Regex matched against the whole value.
        regex: String,
        /// Replacement format (may use `\1`...).
        replacement: String,
    },
    /// `set-path FMT`
    SetPath {
        /// New path format.
        format: String,
    },
    /// `set-query FMT`
    SetQuery {
        /// New query string format.
        format: String,
    },
    /// `set-var(SCOPE.NAME) EXPR`
    SetVar {
        /// The variable.
        var: VarRef,
        /// The sample expression as written.
        expr: String,
    },
    /// `unset-var(SCOPE.NAME)`
    UnsetVar {
        /// The variable.
        var: VarRef,
    },
    /// `deny [deny_status N | status N] [reply arguments as for return]`
    Deny {
        /// The status to answer with (403 when absent).
        status: Option<u16>,
        /// A custom reply instead of the default error page.
        reply: Option<Box<ReplySpec>>,
    },
    /// `return [status N] [content-type T] [string S | lf-string FMT]`
    Return {
        /// The status (200 when absent).
        status: Option<u16>,
        /// The Content-Type of the body.
        content_type: Option<String>,
        /// The body.
        body: Option<ReturnBody>,
        /// `hdr NAME FMT` headers added to the reply.
        headers: Vec<(String, String)>,
        /// `default-errorfiles`: reply with the default error page of the status.
        errorfile: bool,
    },
    /// `redirect location|prefix|scheme X [code N]`
    Redirect {
        /// What `target` replaces.
        kind: RedirectKind,
        /// The target format.
        target: String,
        /// The status (302 when absent).
        code: Option<u16>,
        /// `drop-query`: the query string is not appended (prefix/scheme).
        drop_query: bool,
    },
    /// `set-status N [reason R]`
    SetStatus {
        /// The new status.
        status: u16,
        /// The new reason phrase.
        reason: Option<String>,
    },
    /// `allow`: stop evaluating this rule set and let the message through.
    Allow,
    /// `accept` (tcp rules).
    Accept,
    /// `reject` (tcp rules): close the connection.
    Reject,
}

/// A `return` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnBody {
    /// `string S`: sent as is.
    String(String),
    /// `lf-string FMT`: a log-format string evaluated per request.
    LfString(String),
}

/// What a redirect target replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// The whole location.
    Location,
    /// A prefix put in front of the original path.
    Prefix,
    /// The scheme.
    Scheme,
}

/// A variable named in `set-var(...)` / `unset-var(...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarRef {
    /// Its scope.
    pub scope: VarScope,
    /// Its name within the scope.
    pub name: String,
}

/// A variable scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarScope {
    /// `proc`: the whole process.
    Proc,
    /// `sess`: the client session.
    Sess,
    /// `txn`: the transaction.
    Txn,
    /// `req`: the request processing.
    Req,
    /// `res`: the response processing.
    Res,
}

/// A `server` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDef {
    /// The server name.
    pub name: String,
    /// Where to connect.
    pub addr: ServerAddr,
    /// `weight` (HAProxy's default is 1).
    pub weight: Option<u32>,
    /// `maxconn`.
    pub maxconn: Option<usize>,
    /// `disabled`: starts in maintenance.
    pub disabled: bool,
    /// `backup`: used only when no active server is up.
    pub backup: bool,
    /// `check`: health checks enabled.
    pub check: bool,
    /// The check options (`inter`, `rise`, `fall`, `fastinter`, `port`,
    /// `track`, `observe`...); boxed: most servers have none, and a server
    /// line pays only for what it sets.
    pub health: Option<Box<ServerCheck>>,
    /// Where it was written.
    pub location: Location,
}

/// A server address: an IP address, or a host name resolved at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A host name and port, not resolved by the parser.
    Host {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl ServerDef {
    /// `inter`: time between checks.
    pub fn inter(&self) -> Option<Duration> {
        self.health.as_deref().and_then(|h| h.inter)
    }

    /// `rise`: successes to consider the server up.
    pub fn rise(&self) -> Option<u32> {
        self.health.as_deref().and_then(|h| h.rise)
    }

    /// `fall`: failures to consider the server down.
    pub fn fall(&self) -> Option<u32> {
        self.health.as_deref().and_then(|h| h.fall)
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Ip(a) => write!(f, "{a}"),
            ServerAddr::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// A load-balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// `roundrobin`, the default.
    #[default]
    RoundRobin,
    /// `leastconn`
    LeastConn,
    /// `first`
    First,
    /// `source`: hash of the client address.
    Source,
}

/// The `option` flags luahost knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyOptions {
    /// `option forwardfor` (boxed: rare, and it would otherwise make every
    /// proxy 48 bytes larger).
    pub forwardfor: Option<Box<ForwardFor>>,
    /// `option http-keep-alive` (cleared by `option httpclose`).
    pub http_keep_alive: bool,
    /// `option httpclose` (cleared by `option http-keep-alive`).
    pub httpclose: bool,
    /// `option httplog` (cleared by `option tcplog`).
    pub httplog: bool,
    /// `option tcplog` (cleared by `option httplog`).
    pub tcplog: bool,
    /// `option dontlognull`.
    pub dontlognull: bool,
    /// `option log-separate-errors`: lines of failed transactions at `err`.
    pub log_separate_errors: bool,
    /// `option abortonclose`: a client that closes its side while its
    /// request is still being processed aborts it (by default it is still
    /// answered, which a half-closed client needs).
    pub abortonclose: bool,
    /// `option http-buffer-request`: wait for the request body (up to the
    /// buffer size) before the `http-request` rules run.
    pub http_buffer_request: bool,
}

/// `option forwardfor [except NET] [header NAME] [if-none]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardFor {
    /// A network whose clients get no header, as written.
    pub except: Option<String>,
    /// The header name (X-Forwarded-For when absent).
    pub header: Option<String>,
    /// Only add the header when the request has none.
    pub if_none: bool,
}

/// Builds a location; a helper for the submodules.
fn location(file: &Arc<str>, line: usize) -> Location {
    Location {
        file: file.clone(),
        line,
    }
}
