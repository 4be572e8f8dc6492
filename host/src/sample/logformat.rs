//! Custom log formats (`log-format`, and the `<fmt>` argument of
//! `set-header`, `lf-string` ...): text with `%[expr]` sample expressions
//! and `%alias` items, with `%{+Q}`-style flags.
//!
//! Two renderings, as HAProxy does: for header values and bodies a missing
//! sample prints nothing and control characters become %XX; in logs a
//! missing or empty value prints "-" (`""` when quoted), control
//! characters become #XX and runs of blanks collapse around empty items.

use super::{SampleCtx, SampleExpr};
use crate::txn::Txn;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Per-transaction facts only the logger knows (timers, byte counts,
/// counters); every field is optional and prints as HAProxy prints a value
/// not known yet.
#[derive(Clone, Debug, Default)]
pub struct LogInfo {
    /// When the connection/request was accepted (%t, %T, %Ts, %ms); now
    /// when unset.
    pub accept: Option<SystemTime>,
    /// When the request was received (%tr, %trg, %trl); `accept` when unset.
    pub request: Option<SystemTime>,
    /// The status to log when the transaction has no response (errors
    /// produced by the proxy).
    pub status: Option<u16>,
    /// Handshake time %Th, ms.
    pub t_handshake: Option<i64>,
    /// Idle time before the request %Ti, ms.
    pub t_idle: Option<i64>,
    /// Time to receive the request head %TR, ms.
    pub t_request: Option<i64>,
    /// Time in queue %Tw, ms.
    pub t_queue: Option<i64>,
    /// Time to connect to the server %Tc, ms.
    pub t_connect: Option<i64>,
    /// Server response time %Tr, ms.
    pub t_response: Option<i64>,
    /// Data transfer time %Td, ms.
    pub t_data: Option<i64>,
    /// Active time of the request %Ta, ms.
    pub t_active: Option<i64>,
    /// Total session time %Tt, ms (time since `accept` when unset).
    pub t_total: Option<i64>,
    /// Bytes from the client %U.
    pub bytes_in: u64,
    /// Bytes to the client %B.
    pub bytes_out: u64,
    /// Termination state %ts (two characters), "--" when unset.
    pub term_state: Option<String>,
    /// The unique id (%ID, `unique-id`).
    pub unique_id: Option<String>,
    /// Process connections %ac.
    pub actconn: u64,
    /// Frontend connections %fc.
    pub feconn: u64,
    /// Backend connections %bc.
    pub beconn: u64,
    /// Server connections %sc.
    pub srv_conn: u64,
    /// Retries %rc.
    pub retries: u64,
    /// Server queue %sq.
    pub srv_queue: u64,
    /// Backend queue %bq.
    pub backend_queue: u64,
    /// Request counter %rt.
    pub request_counter: u64,
    /// Frontend log counter %lc.
    pub log_counter: u64,
    /// The server address %si:%sp.
    pub server_addr: Option<SocketAddr>,
    /// The local address of the server connection %bi:%bp.
    pub backend_src: Option<SocketAddr>,
}

/// Output options of an item (`%{+Q,+X,+E}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flags {
    /// Quote strings.
    quote: bool,
    /// Hexadecimal addresses, ports and numbers.
    hex: bool,
    /// Escape `"`, `\` and `]` with a backslash.
    escape: bool,
}

impl Flags {
    fn apply(mut self, spec: &str) -> Flags {
        for f in spec.split(',') {
            let (on, name) = match f.as_bytes().first() {
                Some(b'+') => (true, &f[1..]),
                Some(b'-') => (false, &f[1..]),
                _ => continue,
            };
            match name {
                "Q" => self.quote = on,
                "X" => self.hex = on,
                "E" => self.escape = on,
                // Other encodings (json, cbor, bin) are not supported and
                // ignored, as unknown flags are.
                _ => {}
            }
        }
        self
    }
}

/// The `%` aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alias {
    ClientIp,
    ClientPort,
    FrontendIp,
    FrontendPort,
    Frontend,
    FrontendTransport,
    Backend,
    Server,
    Status,
    Request,
    Method,
    Uri,
    UriPath,
    PathOnly,
    Query,
    Version,
    DateLocalMs,
    DateUtc,
    DateLocal,
    Timestamp,
    Millis,
    ReqDateLocalMs,
    ReqDateUtc,
    ReqDateLocal,
    Th,
    Ti,
    Tq,
    TR,
    Tw,
    Tc,
    Tr,
    Td,
    Ta,
    Tt,
    Tu,
    Pid,
    Hostname,
    UniqueId,
    BytesOut,
    BytesIn,
    TermState,
    TermStateCookie,
    ActConn,
    FeConn,
    BeConn,
    SrvConn,
    Retries,
    SrvQueue,
    BeQueue,
    ReqCounter,
    LogCounter,
    BackendIp,
    BackendPort,
    ServerIp,
    ServerPort,
    CaptureCookieReq,
    CaptureCookieRes,
    CapturedReq,
    CapturedRes,
    CapturedReqList,
    CapturedResList,
    SslCipher,
    SslVersion,
}

fn alias(name: &str) -> Option<Alias> {
    use Alias::*;
    Some(match name {
        "ci" => ClientIp,
        "cp" => ClientPort,
        "fi" => FrontendIp,
        "fp" => FrontendPort,
        "f" => Frontend,
        "ft" => FrontendTransport,
        "b" => Backend,
        "s" => Server,
        "ST" => Status,
        "r" => Request,
        "HM" => Method,
        "HU" => Uri,
        "HP" => UriPath,
        "HPO" => PathOnly,
        "HQ" => Query,
        "HV" => Version,
        "t" => DateLocalMs,
        "T" => DateUtc,
        "Tl" => DateLocal,
        "Ts" => Timestamp,
        "ms" => Millis,
        "tr" => ReqDateLocalMs,
        "trg" => ReqDateUtc,
        "trl" => ReqDateLocal,
        "Th" => Th,
        "Ti" => Ti,
        "Tq" => Tq,
        "TR" => TR,
        "Tw" => Tw,
        "Tc" => Tc,
        "Tr" => Tr,
        "Td" => Td,
        "Ta" => Ta,
        "Tt" => Tt,
        "Tu" => Tu,
        "pid" => Pid,
        "H" => Hostname,
        "ID" => UniqueId,
        "B" => BytesOut,
        "U" => BytesIn,
        "ts" => TermState,
        "tsc" => TermStateCookie,
        "ac" => ActConn,
        "fc" => FeConn,
        "bc" => BeConn,
        "sc" => SrvConn,
        "rc" => Retries,
        "sq" => SrvQueue,
        "bq" => BeQueue,
        "rt" => ReqCounter,
        "lc" => LogCounter,
        "bi" => BackendIp,
        "bp" => BackendPort,
        "si" => ServerIp,
        "sp" => ServerPort,
        "CC" => CaptureCookieReq,
        "CS" => CaptureCookieRes,
        "hr" => CapturedReq,
        "hs" => CapturedRes,
        "hrl" => CapturedReqList,
        "hsl" => CapturedResList,
        "sslc" => SslCipher,
        "sslv" => SslVersion,
        _ => return None,
    })
}

#[derive(Debug)]
enum Node {
    Text(Vec<u8>),
    /// A run of blanks: kept as is in header values, one space in logs.
    Sep(Vec<u8>),
    Expr(Box<SampleExpr>, Flags),
    Alias(Alias, Flags),
}

/// A compiled log format.
#[derive(Debug)]
pub struct LogFormat {
    nodes: Vec<Node>,
}

/// What an item produced.
enum Val {
    /// Nothing at all (captures that are not configured).
    Nothing,
    /// No value: "-" in logs, empty in headers.
    Missing,
    /// Text, subject to quoting and escaping.
    Text(Bytes),
    /// A number or address: never quoted as text.
    Plain(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Header,
    Log,
}

impl LogFormat {
    /// Parses a format string.
    pub fn parse(text: &str) -> Result<LogFormat, String> {
        let b = text.as_bytes();
        let mut nodes = Vec::new();
        let mut text_buf: Vec<u8> = Vec::new();
        let mut defaults = Flags::default();
        let mut i = 0;
        let flush = |buf: &mut Vec<u8>, nodes: &mut Vec<Node>| {
            if !buf.is_empty() {
                nodes.push(Node::Text(std::mem::take(buf)));
            }
        };
        while i < b.len() {
            let c = b[i];
            if c == b' ' {
                flush(&mut text_buf, &mut nodes);
                let start = i;
                while i < b.len() && b[i] == b' ' {
                    i += 1;
                }
                nodes.push(Node::Sep(b[start..i].to_vec()));
                continue;
            }
            if c != b'%' {
                text_buf.push(c);
                i += 1;
                continue;
            }
            // An item: %[(name)][{flags}](alias|[expr]), or %%.
            i += 1;
            let Some(&n) = b.get(i) else {
                return Err("truncated line after '%'".to_string());
            };
            if n == b'%' {
                text_buf.push(b'%');
                i += 1;
                continue;
            }
            if n.is_ascii_digit() || n == b' ' || n == b'\t' {
                return Err(format!(
                    "unexpected alias name near '{}' at position {i}: to write a single '%', use '%%'",
                    n as char
                ));
            }
            if n == b'(' {
                let Some(end) = text[i..].find(')') else {
                    return Err(format!("truncated line after '{}'", &text[i - 1..]));
                };
                let name = &text[i + 1..i + end];
                let bad = name
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':')));
                if let Some(c) = bad {
                    return Err(format!("invalid character in custom name near '{c}'"));
                }
                i += end + 1;
            }
            let mut flags = defaults;
            let mut had_args = false;
            if b.get(i) == Some(&b'{') {
                let Some(end) = text[i..].find('}') else {
                    return Err(format!("truncated line after '{}'", &text[i - 1..]));
                };
                flags = flags.apply(&text[i + 1..i + end]);
                had_args = true;
                i += end + 1;
            }
            match b.get(i) {
                Some(b'[') => {
                    flush(&mut text_buf, &mut nodes);
                    let (expr, used) = SampleExpr::parse_prefix(&text[i + 1..]).map_err(|e| {
                        format!(
                            "failed to parse sample expression <{}>: {e}",
                            &text[i + 1..]
                        )
                    })?;
                    let end = i + 1 + used;
                    match b.get(end) {
                        Some(b']') => {}
                        Some(&c) => {
                            return Err(format!(
                                "expected ']' after '{}', but found '{}'",
                                expr.text(),
                                c as char
                            ))
                        }
                        None => return Err(format!("missing ']' after '{}'", expr.text())),
                    }
                    nodes.push(Node::Expr(Box::new(expr), flags));
                    i = end + 1;
                }
                Some(c) if c.is_ascii_alphabetic() => {
                    let start = i;
                    while i < b.len() && b[i].is_ascii_alphanumeric() {
                        i += 1;
                    }
                    let name = &text[start..i];
                    if name == "o" {
                        // %o: its flags apply to every following item.
                        defaults = flags;
                        continue;
                    }
                    let Some(a) = alias(name) else {
                        return Err(format!("no such format alias '%{name}'"));
                    };
                    flush(&mut text_buf, &mut nodes);
                    nodes.push(Node::Alias(a, flags));
                }
                _ if had_args => {
                    return Err(format!("flags '%{{...}}' must be followed by an alias or an expression at position {i}"));
                }
                None => return Err("truncated line after '%'".to_string()),
                // '%' followed by another character is dropped, the
                // character kept (HAProxy's behaviour).
                Some(_) => {}
            }
        }
        flush(&mut text_buf, &mut nodes);
        Ok(LogFormat { nodes })
    }

    /// Whether the format has no item (plain text).
    pub fn is_constant(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| matches!(n, Node::Text(_) | Node::Sep(_)))
    }

    /// The Lua fetches and converters the format's expressions call.
    pub fn lua_names(&self) -> (Vec<String>, Vec<String>) {
        let mut f = Vec::new();
        let mut c = Vec::new();
        for n in &self.nodes {
            if let Node::Expr(e, _) = n {
                let (a, b) = e.lua_names();
                f.extend(a);
                c.extend(b);
            }
        }
        (f, c)
    }

    /// The sample expressions of the format.
    pub fn exprs(&self) -> impl Iterator<Item = &SampleExpr> {
        self.nodes.iter().filter_map(|n| match n {
            Node::Expr(e, _) => Some(&**e),
            _ => None,
        })
    }

    /// Renders for a header value, a body or a variable: missing samples
    /// print nothing, control characters (but tab) become %XX.
    pub fn render(&self, ctx: &SampleCtx) -> Bytes {
        self.render_mode(ctx, None, Mode::Header)
    }

    /// Renders a log line with what the logger knows (`info`: timers,
    /// counters; None prints them as not known yet): missing or empty
    /// values print "-", control characters become #XX and blanks collapse
    /// around empty items.
    pub fn render_log(&self, ctx: &SampleCtx, info: Option<&LogInfo>) -> Bytes {
        self.render_mode(ctx, info, Mode::Log)
    }

    fn render_mode(&self, ctx: &SampleCtx, info: Option<&LogInfo>, mode: Mode) -> Bytes {
        let mut out: Vec<u8> = Vec::with_capacity(128);
        // Whether the last thing written in a log is a separator (blanks
        // at the start of a log line are dropped).
        let mut last_sep = true;
        for n in &self.nodes {
            match n {
                Node::Text(t) => {
                    out.extend_from_slice(t);
                    last_sep = false;
                }
                Node::Sep(s) => match mode {
                    Mode::Header => out.extend_from_slice(s),
                    Mode::Log => {
                        if !last_sep {
                            out.push(b' ');
                            last_sep = true;
                        }
                    }
                },
                Node::Expr(e, flags) => {
                    let v = match e.eval(ctx) {
                        Some(s) => Val::Text(s.to_bytes()),
                        None => Val::Missing,
                    };
                    // HAProxy does not quote samples in header values.
                    let f = match mode {
                        Mode::Header => Flags {
                            quote: false,
                            ..*flags
                        },
                        Mode::Log => *flags,
                    };
                    if emit(&mut out, v, f, mode) {
                        last_sep = false;
                    }
                }
                Node::Alias(a, flags) => {
                    if emit(
                        &mut out,
                        alias_value(*a, *flags, ctx, info, mode),
                        *flags,
                        mode,
                    ) {
                        last_sep = false;
                    }
                }
            }
        }
        Bytes::from(out)
    }
}

/// Writes one item; returns whether anything was written.
fn emit(out: &mut Vec<u8>, v: Val, f: Flags, mode: Mode) -> bool {
    match v {
        Val::Nothing => false,
        Val::Missing => {
            match mode {
                Mode::Header => {}
                Mode::Log if f.quote => out.extend_from_slice(b"\"\""),
                Mode::Log => out.push(b'-'),
            }
            true
        }
        Val::Plain(s) => {
            if f.quote {
                out.push(b'"');
                out.extend_from_slice(s.as_bytes());
                out.push(b'"');
            } else {
                out.extend_from_slice(s.as_bytes());
            }
            true
        }
        Val::Text(t) if t.is_empty() && mode == Mode::Log => emit(out, Val::Missing, f, mode),
        Val::Text(t) => {
            if f.quote {
                out.push(b'"');
            }
            for &c in t.iter() {
                if f.escape && matches!(c, b'"' | b'\\' | b']') {
                    out.push(b'\\');
                    out.push(c);
                    continue;
                }
                let ctl =
                    (c < 0x20 && c != b'\t') || c == 0x7f || (mode == Mode::Log && c == b'\t');
                if ctl {
                    let esc = if mode == Mode::Log { b'#' } else { b'%' };
                    out.extend_from_slice(format!("{}{:02X}", esc as char, c).as_bytes());
                } else {
                    out.push(c);
                }
            }
            if f.quote {
                out.push(b'"');
            }
            true
        }
    }
}

fn text(s: impl Into<Bytes>) -> Val {
    Val::Text(s.into())
}

fn num(v: i64, f: Flags) -> Val {
    if f.hex {
        Val::Plain(format!("{:X}", v))
    } else {
        Val::Plain(v.to_string())
    }
}

fn timer(v: Option<i64>) -> Val {
    Val::Plain(v.unwrap_or(-1).to_string())
}

fn ip_val(a: Option<SocketAddr>, f: Flags) -> Val {
    let Some(a) = a else { return Val::Missing };
    match (a.ip().to_canonical(), f.hex) {
        (std::net::IpAddr::V4(v), true) => Val::Plain(format!("{:08X}", u32::from(v))),
        (std::net::IpAddr::V6(v), true) => Val::Plain(format!("{:032X}", u128::from(v))),
        (ip, false) => Val::Plain(ip.to_string()),
    }
}

fn port_val(a: Option<SocketAddr>, f: Flags) -> Val {
    let Some(a) = a else { return Val::Missing };
    if f.hex {
        Val::Plain(format!("{:04X}", a.port()))
    } else {
        Val::Plain(a.port().to_string())
    }
}

fn secs(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        Err(_) => (0, 0),
    }
}

/// "10/Oct/2000:13:55:36.123" (local), "... +0000" forms.
fn date(t: SystemTime, local: bool, millis: bool, zone: bool) -> Val {
    let (s, ms) = secs(t);
    let fmt: &[u8] = if zone {
        b"%d/%b/%Y:%H:%M:%S %z"
    } else {
        b"%d/%b/%Y:%H:%M:%S"
    };
    match super::conv::strftime(fmt, s, local) {
        Some(mut v) => {
            if millis {
                v.extend_from_slice(format!(".{ms:03}").as_bytes());
            }
            Val::Plain(String::from_utf8_lossy(&v).into_owned())
        }
        None => Val::Missing,
    }
}

/// The request line parts: (method, target, version).
fn request_parts(txn: &Txn) -> Option<(String, String, String)> {
    let r = txn.req.as_ref()?;
    Some((
        r.method.as_str().to_string(),
        r.uri.to_string(),
        format!("HTTP/{}", super::http::version_str(r.version)),
    ))
}

/// Encodes a request line for logs: non-printable characters, '"' and '#'
/// as #XX.
fn log_encode(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if !(0x20..0x7f).contains(&c) || c == b'"' || c == b'#' {
            o.push_str(&format!("#{c:02X}"));
        } else {
            o.push(c as char);
        }
    }
    o
}

/// The request-line aliases without a request: `<BADREQ>` in a log line
/// (as HAProxy prints them for a bad request or a TCP stream), nothing in
/// a header value.
fn no_request(mode: Mode) -> Val {
    match mode {
        Mode::Log => text("<BADREQ>"),
        Mode::Header => Val::Missing,
    }
}

/// Captured headers: already encoded, never quoted; nothing at all when
/// the frontend has no capture slot.
fn captured(v: Option<String>) -> Val {
    v.map_or(Val::Nothing, Val::Plain)
}

fn alias_value(a: Alias, f: Flags, ctx: &SampleCtx, log: Option<&LogInfo>, mode: Mode) -> Val {
    use Alias::*;
    let txn = ctx.txn;
    let info = |g: fn(&LogInfo) -> u64| Val::Plain(log.map_or(0, g).to_string());
    let accept = log.and_then(|l| l.accept).unwrap_or_else(SystemTime::now);
    let request = log.and_then(|l| l.request).unwrap_or(accept);
    match a {
        ClientIp => ip_val(Some(txn.client), f),
        ClientPort => port_val(Some(txn.client), f),
        FrontendIp => ip_val(Some(txn.local), f),
        FrontendPort => port_val(Some(txn.local), f),
        Frontend | FrontendTransport => text(Bytes::copy_from_slice(txn.frontend.as_bytes())),
        Backend => text(Bytes::copy_from_slice(txn.backend_name().as_bytes())),
        Server => text(Bytes::from(
            txn.server.as_deref().unwrap_or("<NOSRV>").to_string(),
        )),
        Status => {
            let st = txn
                .res
                .as_ref()
                .map(|r| r.status.as_u16())
                .or(log.and_then(|l| l.status));
            num(st.map_or(-1, |s| s as i64), Flags { hex: false, ..f })
        }
        Request => match request_parts(txn) {
            Some((m, u, v)) => {
                let line = format!("{m} {u} {v}");
                text(if mode == Mode::Log {
                    log_encode(&line)
                } else {
                    line
                })
            }
            None => text("<BADREQ>"),
        },
        Method => request_parts(txn).map_or(no_request(mode), |(m, _, _)| text(m)),
        Uri => request_parts(txn).map_or(no_request(mode), |(_, u, _)| text(u)),
        UriPath => request_parts(txn).map_or(no_request(mode), |(_, u, _)| {
            text(u.split('?').next().unwrap_or("").to_string())
        }),
        PathOnly => match request_parts(txn) {
            Some((_, u, _)) => super::http::path(&u).map_or(Val::Missing, |p| text(p.to_string())),
            None => no_request(mode),
        },
        Query => request_parts(txn).map_or(no_request(mode), |(_, u, _)| match u.split_once('?') {
            Some((_, q)) => text(format!("?{q}")),
            None => text(""),
        }),
        Version => request_parts(txn).map_or(no_request(mode), |(_, _, v)| text(v)),
        DateLocalMs => date(accept, true, true, false),
        DateUtc => date(accept, false, false, true),
        DateLocal => date(accept, true, false, true),
        Timestamp => num(secs(accept).0, f),
        Millis => Val::Plain(format!("{:03}", secs(accept).1)),
        ReqDateLocalMs => date(request, true, true, false),
        ReqDateUtc => date(request, false, false, true),
        ReqDateLocal => date(request, true, false, true),
        Th => timer(log.and_then(|l| l.t_handshake)),
        Ti => timer(log.and_then(|l| l.t_idle)),
        TR => timer(log.and_then(|l| l.t_request)),
        Tq => timer(log.and_then(|l| {
            let t = l
                .t_handshake
                .unwrap_or(0)
                .saturating_add(l.t_idle.unwrap_or(0));
            Some(t.saturating_add(l.t_request?))
        })),
        Tw => timer(log.and_then(|l| l.t_queue)),
        Tc => timer(log.and_then(|l| l.t_connect)),
        Tr => timer(log.and_then(|l| l.t_response)),
        Td => timer(log.and_then(|l| l.t_data)),
        Ta => timer(log.and_then(|l| l.t_active)),
        Tu => timer(log.and_then(|l| {
            let waits = [l.t_queue, l.t_connect, l.t_response];
            Some(
                waits
                    .iter()
                    .fold(l.t_active?, |a, w| a.saturating_sub(w.unwrap_or(0))),
            )
        })),
        Tt => {
            let since = SystemTime::now()
                .duration_since(accept)
                .unwrap_or(Duration::ZERO)
                .as_millis() as i64;
            Val::Plain(log.and_then(|l| l.t_total).unwrap_or(since).to_string())
        }
        Pid => num(std::process::id() as i64, f),
        Hostname => super::fetch::hostname().map_or(Val::Missing, Val::Text),
        UniqueId => log
            .and_then(|l| l.unique_id.clone())
            .map_or(Val::Missing, text),
        BytesOut => info(|l| l.bytes_out),
        BytesIn => info(|l| l.bytes_in),
        TermState => text(
            log.and_then(|l| l.term_state.clone())
                .unwrap_or_else(|| "--".to_string()),
        ),
        TermStateCookie => {
            let ts = log
                .and_then(|l| l.term_state.clone())
                .unwrap_or_else(|| "--".to_string());
            text(format!("{ts}--"))
        }
        ActConn => info(|l| l.actconn),
        FeConn => info(|l| l.feconn),
        BeConn => info(|l| l.beconn),
        SrvConn => info(|l| l.srv_conn),
        Retries => info(|l| l.retries),
        SrvQueue => info(|l| l.srv_queue),
        BeQueue => info(|l| l.backend_queue),
        ReqCounter => info(|l| l.request_counter),
        LogCounter => info(|l| l.log_counter),
        BackendIp => ip_val(log.and_then(|l| l.backend_src), f),
        BackendPort => port_val(log.and_then(|l| l.backend_src), f),
        ServerIp => ip_val(log.and_then(|l| l.server_addr), f),
        ServerPort => port_val(log.and_then(|l| l.server_addr), f),
        CaptureCookieReq | CaptureCookieRes | SslCipher | SslVersion => Val::Missing,
        CapturedReq => captured(crate::log::capture::braces(&txn.log.req_captures)),
        CapturedRes => captured(crate::log::capture::braces(&txn.log.res_captures)),
        CapturedReqList => captured(crate::log::capture::list(&txn.log.req_captures)),
        CapturedResList => captured(crate::log::capture::list(&txn.log.res_captures)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lua::vars::VarValue;
    use crate::sample::testutil::{http_txn, tcp_txn, with_response, FakeLua, FakeProxies};

    fn ctx(t: &Txn) -> SampleCtx<'_> {
        SampleCtx::new(t, &FakeLua, &FakeProxies)
    }

    fn hdr(fmt: &str, t: &Txn) -> String {
        String::from_utf8_lossy(&LogFormat::parse(fmt).unwrap().render(&ctx(t))).into_owned()
    }

    fn log(fmt: &str, t: &Txn) -> String {
        String::from_utf8_lossy(&LogFormat::parse(fmt).unwrap().render_log(&ctx(t), None))
            .into_owned()
    }

    fn req() -> Txn {
        let mut t = http_txn("GET", "/p/q?x=1", &[("host", "h")]);
        t.vars
            .set("txn.h", VarValue::Str(b"a#b\"c\x01d\te".to_vec()), false);
        t
    }

    #[test]
    fn samples_and_text() {
        let t = req();
        assert_eq!(hdr("%[req.hdr(host),upper]-%[path]", &t), "H-/p/q");
        assert_eq!(hdr("100%% sure", &t), "100% sure");
        assert_eq!(hdr("plain  text", &t), "plain  text");
        assert_eq!(hdr("%[str(a]b)]", &t), "a]b");
        assert_eq!(hdr("%[lua.echo(x,y)]", &t), "x|y");
        assert!(LogFormat::parse("plain").unwrap().is_constant());
        assert!(!LogFormat::parse("%ci").unwrap().is_constant());
    }

    // The header-value and log renderings below follow what HAProxy 2.6
    // produces for the same formats.
    #[test]
    fn missing_values() {
        let t = req();
        assert_eq!(hdr("[%[var(txn.nothere)]]", &t), "[]");
        assert_eq!(hdr("[%[str(),lower]]", &t), "[]");
        assert_eq!(hdr("[%{+Q}[var(txn.nothere)]]", &t), "[]");
        assert_eq!(log("m=[%[var(txn.nothere)]]", &t), "m=[-]");
        assert_eq!(log("e=[%[str()]]", &t), "e=[-]");
        assert_eq!(log("qm=[%{+Q}[var(txn.nothere)]]", &t), "qm=[\"\"]");
        assert_eq!(log("qe=[%{+Q}[str()]]", &t), "qe=[\"\"]");
        assert_eq!(
            log("q=[%{+Q}[str(a)]] qi=[%{+Q}[int(3)]]", &t),
            "q=[\"a\"] qi=[\"3\"]"
        );
    }

    #[test]
    fn escaping() {
        let t = req();
        assert_eq!(hdr("%[var(txn.h)]", &t), "a#b\"c%01d\te");
        assert_eq!(hdr("%[str(a),concat(\\r\\n,,b)]", &t), "a%0D%0Ab");
        assert_eq!(log("%[var(txn.h)]", &t), "a#b\"c#01d#09e");
        assert_eq!(log("%{+E}[str(a\\\"b]c)]", &t), "a\\\"b\\]c");
        assert_eq!(hdr("%{+E}[str(a\\\"b]c)]", &t), "a\\\"b\\]c");
    }

    #[test]
    fn request_aliases() {
        let t = req();
        assert_eq!(
            hdr("%HM %HU %HP %HPO %HQ %HV", &t),
            "GET /p/q?x=1 /p/q /p/q ?x=1 HTTP/1.1"
        );
        assert_eq!(
            hdr("%r|%{+Q}r", &t),
            "GET /p/q?x=1 HTTP/1.1|\"GET /p/q?x=1 HTTP/1.1\""
        );
        let t2 = http_txn("GET", "/a%22b?q=1", &[]);
        assert_eq!(log("%r", &t2), "GET /a%22b?q=1 HTTP/1.1");
        assert_eq!(log("%r", &tcp_txn()), "<BADREQ>");
        // As HAProxy's log.c: no request prints <BADREQ> in a log line.
        assert_eq!(log("%HM %HP %HV", &tcp_txn()), "<BADREQ> <BADREQ> <BADREQ>");
        assert_eq!(hdr("[%HM]", &tcp_txn()), "[]");
        let t3 = http_txn("GET", "/plain", &[]);
        assert_eq!(hdr("[%HQ]", &t3), "[]");
    }

    #[test]
    fn connection_aliases() {
        let mut t = req();
        assert_eq!(
            hdr("%ci:%cp %fi:%fp %f %ft %b %s %ST", &t),
            "192.0.2.7:40000 10.0.0.1:8080 fe fe fe <NOSRV> -1"
        );
        assert_eq!(
            hdr("%{+X}ci %{+X}cp %{+Q}ci %{+Q}b", &t),
            "C0000207 9C40 \"192.0.2.7\" \"fe\""
        );
        t.backend = Some("app".into());
        t.server = Some("s1".into());
        let t = with_response(t, 302, &[]);
        assert_eq!(hdr("%b/%s %ST", &t), "app/s1 302");
        assert_eq!(hdr("%pid", &t), std::process::id().to_string());
        assert_eq!(hdr("%{+X}pid", &t), format!("{:X}", std::process::id()));
        assert!(!hdr("%H", &t).is_empty());
    }

    #[test]
    fn flags_propagate_with_o() {
        let t = req();
        assert_eq!(hdr("%{+Q}o %[str(a)] %b", &t), " a \"fe\"");
        assert_eq!(log("%{+Q}o %[str(a)] %b %{-Q}f", &t), "\"a\" \"fe\" fe");
    }

    #[test]
    fn dates_and_timers() {
        let t = req();
        let info = LogInfo {
            accept: Some(UNIX_EPOCH + Duration::from_millis(784_111_777_042)),
            status: Some(503),
            t_request: Some(3),
            t_idle: Some(1),
            t_queue: Some(0),
            t_connect: Some(2),
            t_response: Some(10),
            t_active: Some(20),
            t_total: Some(25),
            bytes_in: 120,
            bytes_out: 4096,
            term_state: Some("SC".to_string()),
            unique_id: Some("uid-1".to_string()),
            feconn: 3,
            server_addr: Some("10.1.1.1:80".parse().unwrap()),
            ..LogInfo::default()
        };
        let c = ctx(&t);
        let r = |f: &str| {
            String::from_utf8_lossy(&LogFormat::parse(f).unwrap().render_log(&c, Some(&info)))
                .into_owned()
        };
        assert_eq!(r("%T"), "06/Nov/1994:08:49:37 +0000");
        assert_eq!(r("%Ts %ms"), "784111777 042");
        assert!(r("%t").ends_with(":37.042"), "{}", r("%t"));
        assert_eq!(r("%TR/%Tw/%Tc/%Tr/%Ta %Tq %Tt %Tu"), "3/0/2/10/20 4 25 8");
        assert_eq!(r("%Th %Td"), "-1 -1");
        assert_eq!(r("%ST %B %U %ts %tsc %ID"), "503 4096 120 SC SC-- uid-1");
        assert_eq!(r("%ac/%fc/%bc/%sc/%rc %sq/%bq"), "0/3/0/0/0 0/0");
        assert_eq!(r("%si:%sp %bi:%bp"), "10.1.1.1:80 -:-");
        // Without log information: the session is starting.
        let t = req();
        assert_eq!(log("%Tt %B %ts %Tw", &t), "0 0 -- -1");
    }

    #[test]
    fn blanks_collapse_in_logs() {
        let t = req();
        let f = "%ci %hr %hs %{+Q}r";
        assert_eq!(log(f, &t), "192.0.2.7 \"GET /p/q?x=1 HTTP/1.1\"");
        assert_eq!(hdr(f, &t), "192.0.2.7   \"GET /p/q?x=1 HTTP/1.1\"");
        assert_eq!(log("a    b", &t), "a b");
        assert_eq!(log("%CC %CS", &t), "- -");
    }

    #[test]
    fn standard_formats_parse() {
        for f in [
            "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs %{+Q}r",
            "%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq",
            "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs %{+Q}r %[ssl_fc_sni]/%sslv/%sslc",
            "%{+json}o %(request)r %(custom_expr:str)[str(custom)]",
        ] {
            LogFormat::parse(f).unwrap();
        }
    }

    #[test]
    fn parse_errors() {
        let e = |f: &str| LogFormat::parse(f).unwrap_err();
        assert_eq!(e("abc %"), "truncated line after '%'");
        assert!(e("%zz").contains("no such format alias '%zz'"));
        assert!(e("%[path").contains("missing ']' after 'path'"));
        assert!(e("%[path x]").contains("expected ']' after 'path', but found ' '"));
        assert!(e("%[nofetch]").contains("unknown fetch method 'nofetch'"));
        assert!(e("%5").contains("use '%%'"));
        assert!(e("% x").contains("use '%%'"));
        assert!(e("%{+Q").contains("truncated"));
        assert!(e("%{+Q}-").contains("must be followed"));
        assert!(e("%(bad name)r").contains("invalid character"));
        // '%' before another character is dropped.
        assert_eq!(hdr("a%-b", &req()), "a-b");
    }

    #[test]
    fn lua_names_collected() {
        let f = LogFormat::parse("%[lua.a] %[str(x),lua.b] %ci").unwrap();
        assert_eq!(
            f.lua_names(),
            (vec!["a".to_string()], vec!["b".to_string()])
        );
        assert_eq!(f.exprs().count(), 2);
    }

    #[test]
    fn thread_safe() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LogFormat>();
    }
}
