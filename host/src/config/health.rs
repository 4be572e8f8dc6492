//! Health-check keywords: the check options of `server` lines (`fastinter`,
//! `port`, `track`, `observe`, ...) and the proxy keywords that describe
//! what a check does (`option httpchk`, `http-check`, `option tcp-check`,
//! `tcp-check`). Messages follow HAProxy 3.0's where they can.

use super::units::time_arg;
use regex::bytes::Regex;
use std::net::IpAddr;
use std::time::Duration;

/// A server's check options beyond `check` (boxed in [`super::ServerDef`]:
/// most servers have none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerCheck {
    /// `inter`: time between checks.
    pub inter: Option<Duration>,
    /// `rise`: successes to consider the server up.
    pub rise: Option<u32>,
    /// `fall`: failures to consider the server down.
    pub fall: Option<u32>,
    /// `fastinter`: the interval while the server is going up or down.
    pub fastinter: Option<Duration>,
    /// `downinter`: the interval while the server is down.
    pub downinter: Option<Duration>,
    /// `port`: the port checks connect to (default: the server's).
    pub port: Option<u16>,
    /// `addr`: the address checks connect to (default: the server's).
    pub addr: Option<IpAddr>,
    /// `track [PROXY/]SERVER`: take the state of another server's checks.
    pub track: Option<Track>,
    /// `observe layer4|layer7`: count errors of real traffic.
    pub observe: Observe,
    /// `error-limit`: consecutive observed errors that trigger `on-error`.
    pub error_limit: Option<u32>,
    /// `on-error`: what observed errors do.
    pub on_error: OnError,
    /// `on-marked-down shutdown-sessions`: kill the server's streams when
    /// it goes down (or into maintenance).
    pub shutdown_on_down: bool,
    /// `on-marked-up shutdown-backup-sessions`: kill the backup servers'
    /// streams when this (active, weighted) server comes up.
    pub shutdown_backups_on_up: bool,
}

/// The server a `track` option names; `proxy` is None for the same proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// The proxy part of `PROXY/SERVER`.
    pub proxy: Option<String>,
    /// The server name.
    pub server: String,
}

/// `observe`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Observe {
    /// No observation (HAProxy's `none`, the default).
    #[default]
    None,
    /// Connection errors to the server count.
    Layer4,
    /// Connection errors and invalid or 5xx (except 501, 505) responses count.
    Layer7,
}

/// `on-error`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnError {
    /// Check sooner (at `fastinter`) — HAProxy's default.
    #[default]
    Fastinter,
    /// Count as one failed check, then check sooner.
    FailCheck,
    /// Count as `fall - 1` failed checks (one more check brings it down).
    SuddenDeath,
    /// Mark the server down at once.
    MarkDown,
}

/// HAProxy's default `error-limit`.
pub const DEFAULT_ERROR_LIMIT: u32 = 10;

/// The proxy side of health checks (boxed in [`super::Proxy`]).
#[derive(Debug, Clone, Default)]
pub struct ProxyCheck {
    /// `option httpchk` or `option tcp-check`; None: a plain connect check.
    pub kind: Option<CheckKind>,
    /// The request line of `option httpchk [METH URI [VER]]`.
    pub httpchk: HttpChkLine,
    /// `http-check` rules, in order.
    pub http_rules: Vec<CheckRule>,
    /// `tcp-check` rules, in order.
    pub tcp_rules: Vec<CheckRule>,
    /// The rules were inherited from a defaults section: a proxy's own first
    /// rule replaces them (HAProxy uses the defaults' rules only for proxies
    /// that have none).
    pub inherited: bool,
}

/// Which kind of check a proxy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// `option httpchk`.
    Http,
    /// `option tcp-check`.
    Tcp,
}

/// The request of `option httpchk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpChkLine {
    /// Method (default OPTIONS).
    pub meth: String,
    /// URI (default /).
    pub uri: String,
    /// Version (default HTTP/1.0).
    pub ver: String,
}

impl Default for HttpChkLine {
    fn default() -> HttpChkLine {
        HttpChkLine {
            meth: "OPTIONS".to_string(),
            uri: "/".to_string(),
            ver: "HTTP/1.0".to_string(),
        }
    }
}

/// One step of a check sequence.
#[derive(Debug, Clone)]
pub enum CheckRule {
    /// `connect [port N] [addr IP]`.
    Connect {
        /// The port to connect to (default: the server's check port).
        port: Option<u16>,
        /// The address to connect to (default: the server's check address).
        addr: Option<IpAddr>,
    },
    /// `tcp-check send` / `send-binary`: bytes to write.
    Send(Vec<u8>),
    /// `http-check send`: the parts of the request that replace
    /// `option httpchk`'s.
    HttpSend(Box<HttpSend>),
    /// `expect [!] KIND PATTERN`.
    Expect {
        /// `!`: the check passes when the pattern does not match.
        negate: bool,
        /// What is matched.
        matcher: Matcher,
    },
}

/// The parts of an `http-check send` line.
#[derive(Debug, Clone, Default)]
pub struct HttpSend {
    /// `meth`.
    pub meth: Option<String>,
    /// `uri`.
    pub uri: Option<String>,
    /// `ver`.
    pub ver: Option<String>,
    /// `hdr NAME VALUE`, in order.
    pub hdrs: Vec<(String, String)>,
    /// `body STRING`.
    pub body: Option<String>,
}

/// The pattern of an `expect` rule.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `status CODES`: a list of codes and ranges (`200,300-399`).
    Status(Vec<(u16, u16)>),
    /// `rstatus REGEX` on the status code.
    RStatus(Regex),
    /// `string TEXT` in the body (HTTP) or the received data (TCP).
    String(Vec<u8>),
    /// `rstring REGEX` on the body or the received data.
    RString(Regex),
    /// `binary HEX` in the received data (TCP).
    Binary(Vec<u8>),
}

impl ProxyCheck {
    /// The rules of this proxy's check kind.
    pub fn rules(&self) -> &[CheckRule] {
        match self.kind {
            Some(CheckKind::Http) => &self.http_rules,
            Some(CheckKind::Tcp) => &self.tcp_rules,
            None => &[],
        }
    }

    fn own_rules(&mut self) {
        if self.inherited {
            self.http_rules.clear();
            self.tcp_rules.clear();
            self.inherited = false;
        }
    }
}

/// `option httpchk [METH URI [VER]]` (HAProxy also takes a lone URI).
pub(crate) fn option_httpchk(pc: &mut ProxyCheck, args: &[&str]) -> Result<(), String> {
    let mut line = HttpChkLine::default();
    match args {
        [] => {}
        [uri] => line.uri = uri.to_string(),
        [meth, uri] => {
            line.meth = meth.to_string();
            line.uri = uri.to_string();
        }
        [meth, uri, ver] => {
            line.meth = meth.to_string();
            line.uri = uri.to_string();
            line.ver = ver.to_string();
        }
        [_, _, _, extra, ..] => {
            return Err(format!(
                "'option httpchk' cannot handle unexpected argument '{extra}'"
            ))
        }
    }
    pc.kind = Some(CheckKind::Http);
    pc.httpchk = line;
    Ok(())
}

/// `option tcp-check`.
pub(crate) fn option_tcp_check(pc: &mut ProxyCheck, args: &[&str]) -> Result<(), String> {
    if let Some(extra) = args.first() {
        return Err(format!(
            "'option tcp-check' does not take the argument '{extra}'"
        ));
    }
    pc.kind = Some(CheckKind::Tcp);
    Ok(())
}

/// `http-check ...`; `words` starts after `http-check`.
pub(crate) fn http_check(pc: &mut ProxyCheck, words: &[&str]) -> Result<(), String> {
    let rule = match words.first().copied() {
        Some("connect") => connect("http-check connect", &words[1..])?,
        Some("send") => http_send(&words[1..])?,
        Some("expect") => expect("http-check expect", true, &words[1..])?,
        Some("comment") => return Ok(()),
        other => {
            return Err(format!(
                "'http-check' only supports 'connect', 'send', 'expect' and 'comment' (luahost has no 'disable-on-404', 'send-state' or variables yet){}",
                got(other)
            ))
        }
    };
    pc.own_rules();
    pc.http_rules.push(rule);
    Ok(())
}

/// `tcp-check ...`; `words` starts after `tcp-check`.
pub(crate) fn tcp_check(pc: &mut ProxyCheck, words: &[&str]) -> Result<(), String> {
    let rule = match words.first().copied() {
        Some("connect") => connect("tcp-check connect", &words[1..])?,
        Some("send") => {
            let data = words.get(1).ok_or(
                "'tcp-check send' : 'string' expects a send as argument",
            )?;
            no_more("tcp-check send", &words[2..])?;
            CheckRule::Send(data.as_bytes().to_vec())
        }
        Some("send-binary") => {
            let hex = words.get(1).ok_or(
                "'tcp-check send-binary' : 'binary' expects a send as argument",
            )?;
            no_more("tcp-check send-binary", &words[2..])?;
            CheckRule::Send(parse_hex("tcp-check send-binary", hex)?)
        }
        Some("expect") => expect("tcp-check expect", false, &words[1..])?,
        Some("comment") => return Ok(()),
        other => {
            return Err(format!(
                "'tcp-check' only supports 'connect', 'send', 'send-binary', 'expect' and 'comment' (luahost has no variables yet){}",
                got(other)
            ))
        }
    };
    pc.own_rules();
    pc.tcp_rules.push(rule);
    Ok(())
}

fn got(word: Option<&str>) -> String {
    word.map(|w| format!(" but got '{w}'")).unwrap_or_default()
}

fn no_more(what: &str, rest: &[&str]) -> Result<(), String> {
    match rest.first() {
        None => Ok(()),
        Some(w) => Err(format!("'{what}' : unexpected argument '{w}'")),
    }
}

/// `connect [default] [port N] [addr IP] [comment TEXT]`.
fn connect(what: &str, args: &[&str]) -> Result<CheckRule, String> {
    let (mut port, mut addr) = (None, None);
    let mut i = 0;
    while let Some(&opt) = args.get(i) {
        let value = args.get(i + 1).copied();
        match opt {
            "default" => {
                i += 1;
                continue;
            }
            "port" => port = Some(parse_port(&format!("'{what}' : 'port'"), value)?),
            "addr" => addr = Some(parse_ip(&format!("'{what}' : 'addr'"), value)?),
            "comment" => {
                value.ok_or(format!("'{what}' : 'comment' expects a string as argument"))?;
            }
            other => {
                return Err(format!(
                "'{what}' : luahost supports 'default', 'port', 'addr' and 'comment' but got '{other}' as argument"
            ))
            }
        }
        i += 2;
    }
    Ok(CheckRule::Connect { port, addr })
}

/// `http-check send [meth M] [uri U] [ver V] [hdr N V]* [body S]`.
fn http_send(args: &[&str]) -> Result<CheckRule, String> {
    let mut s = HttpSend::default();
    let mut i = 0;
    while let Some(&opt) = args.get(i) {
        let value = args.get(i + 1).map(|v| v.to_string());
        let need = |v: Option<String>, noun: &str| {
            v.ok_or(format!(
                "'http-check send' : '{opt}' expects {noun} as argument."
            ))
        };
        match opt {
            "meth" => s.meth = Some(need(value, "a string")?),
            "uri" => s.uri = Some(need(value, "a string")?),
            "ver" => s.ver = Some(need(value, "a string")?),
            "body" => s.body = Some(need(value, "a string")?),
            "comment" => {
                need(value, "a string")?;
            }
            "hdr" => {
                let name = need(value, "a header name and a value")?;
                let v = args.get(i + 2).ok_or(
                    "'http-check send' : 'hdr' expects a header name and a value as argument.",
                )?;
                s.hdrs.push((name, v.to_string()));
                i += 1;
            }
            other => {
                return Err(format!(
                    "'http-check send' : luahost supports 'meth', 'uri', 'ver', 'hdr', 'body' and 'comment' but got '{other}' as argument."
                ))
            }
        }
        i += 2;
    }
    Ok(CheckRule::HttpSend(Box::new(s)))
}

/// `expect [!] KIND PATTERN [comment TEXT]`.
fn expect(what: &str, http: bool, args: &[&str]) -> Result<CheckRule, String> {
    let mut args = args;
    let mut negate = false;
    if args.first() == Some(&"!") {
        negate = true;
        args = &args[1..];
    }
    let Some(&kind) = args.first() else {
        return Err(format!(
            "'{what}' : expects at least a matching pattern as arguments."
        ));
    };
    // `!status` is written either way.
    let kind = match kind.strip_prefix('!') {
        Some(k) => {
            negate = true;
            k
        }
        None => kind,
    };
    let pattern = args.get(1).copied();
    let need = || {
        pattern.ok_or(format!(
            "'{what}' : '{kind}' expects a <pattern> as argument."
        ))
    };
    let regex =
        |p: &str| Regex::new(p).map_err(|e| format!("'{what}' : regex '{p}' is invalid ({e})."));
    let matcher = match kind {
        "status" if http => Matcher::Status(parse_status_list(what, need()?)?),
        "rstatus" if http => Matcher::RStatus(regex(need()?)?),
        "string" => Matcher::String(need()?.as_bytes().to_vec()),
        "rstring" => Matcher::RString(regex(need()?)?),
        "binary" if !http => Matcher::Binary(parse_hex(what, need()?)?),
        other => {
            let supported = if http {
                "[!]status, [!]rstatus, [!]string or [!]rstring"
            } else {
                "[!]string, [!]rstring or [!]binary"
            };
            return Err(format!(
                "'{what}' : luahost supports {supported} but got '{other}' as argument."
            ));
        }
    };
    match args.get(2..).unwrap_or_default() {
        [] | ["comment", _] => {}
        [other, ..] => return Err(format!("'{what}' : unexpected argument '{other}'.")),
    }
    Ok(CheckRule::Expect { negate, matcher })
}

/// `200`, `200-399`, `200,302,500-599`.
fn parse_status_list(what: &str, text: &str) -> Result<Vec<(u16, u16)>, String> {
    let code = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|c| (100..=999).contains(c))
            .ok_or(format!("'{what}' : invalid status code '{s}' in '{text}'."))
    };
    text.split(',')
        .map(|part| match part.split_once('-') {
            Some((lo, hi)) => Ok((code(lo)?, code(hi)?)),
            None => code(part).map(|c| (c, c)),
        })
        .collect()
}

/// A hex string (`send-binary`, `expect binary`).
fn parse_hex(what: &str, text: &str) -> Result<Vec<u8>, String> {
    let digit = |c: u8| {
        (c as char).to_digit(16).map(|d| d as u8).ok_or(format!(
            "'{what}' : '{text}' invalid binary string (an hex digit is expected (found '{}')).",
            c as char
        ))
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(format!(
            "'{what}' : '{text}' invalid binary string (odd number of hex digits)."
        ));
    }
    bytes
        .chunks(2)
        .map(|pair| Ok((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}

fn parse_port(what: &str, value: Option<&str>) -> Result<u16, String> {
    let v = value.ok_or(format!("{what} expects a port number as argument."))?;
    v.parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or(format!("{what} : invalid port '{v}'."))
}

fn parse_ip(what: &str, value: Option<&str>) -> Result<IpAddr, String> {
    let v = value.ok_or(format!("{what} expects an address as argument."))?;
    v.parse::<IpAddr>()
        .map_err(|_| format!("{what} : invalid address: '{v}' (luahost takes an IP address here)"))
}

/// Applies one server check option with a value (`fastinter 1s`);
/// returns false when `opt` is not a check option. `who` is
/// `'server PROXY/NAME'`.
pub(crate) fn server_option(
    sc: &mut Option<Box<ServerCheck>>,
    who: &str,
    name: &str,
    opt: &str,
    value: Option<&str>,
) -> Result<bool, String> {
    const OPTIONS: &[&str] = &[
        "fastinter",
        "downinter",
        "port",
        "addr",
        "track",
        "observe",
        "error-limit",
        "on-error",
        "on-marked-down",
        "on-marked-up",
    ];
    if !OPTIONS.contains(&opt) {
        return Ok(false);
    }
    let s = sc.get_or_insert_with(Box::default);
    let delay = |kw: &str| -> Result<Duration, String> {
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
    };
    match opt {
        "fastinter" => s.fastinter = Some(delay(opt)?),
        "downinter" => s.downinter = Some(delay(opt)?),
        "port" => {
            let v = value.ok_or(format!("{who} : 'port' expects a port number as argument."))?;
            // HAProxy keeps the low 16 bits of larger numbers; only a
            // number is required.
            let n: u64 = v
                .parse()
                .map_err(|_| format!("{who} : invalid port '{v}' for 'port'."))?;
            s.port = Some((n & 0xffff) as u16);
        }
        "addr" => {
            let v = value.ok_or(format!("{who} : 'addr' expects an address as argument."))?;
            s.addr = Some(v.parse::<IpAddr>().map_err(|_| {
                format!("{who} : 'addr' : invalid address: '{v}' in '{v}' (luahost takes an IP address here).")
            })?);
        }
        "track" => {
            let v = value.ok_or(format!(
                "{who} : 'track' expects [<proxy>/]<server> as argument."
            ))?;
            s.track = Some(match v.split_once('/') {
                Some((p, srv)) => Track {
                    proxy: Some(p.to_string()),
                    server: srv.to_string(),
                },
                None => Track {
                    proxy: None,
                    server: v.to_string(),
                },
            });
        }
        "observe" => {
            s.observe = match value {
                Some("none") => Observe::None,
                Some("layer4") => Observe::Layer4,
                Some("layer7") => Observe::Layer7,
                other => {
                    return Err(format!(
                        "{who} : 'observe' expects one of 'none', 'layer4', 'layer7' but got '{}'.",
                        other.unwrap_or_default()
                    ))
                }
            }
        }
        "error-limit" => {
            let v = value.ok_or(format!("{who} : 'error-limit' expects an integer argument."))?;
            let n: u32 = v.parse().unwrap_or(0);
            if n == 0 {
                return Err(format!("{who} : error-limit has to be > 0."));
            }
            s.error_limit = Some(n);
        }
        "on-error" => {
            s.on_error = match value {
                Some("fastinter") => OnError::Fastinter,
                Some("fail-check") => OnError::FailCheck,
                Some("sudden-death") => OnError::SuddenDeath,
                Some("mark-down") => OnError::MarkDown,
                other => {
                    return Err(format!(
                        "{who} : 'on-error' expects one of 'fastinter', 'fail-check', 'sudden-death' or 'mark-down' but got '{}'.",
                        other.unwrap_or_default()
                    ))
                }
            }
        }
        "on-marked-down" | "on-marked-up" => {
            let (want, field) = if opt == "on-marked-down" {
                ("shutdown-sessions", &mut s.shutdown_on_down)
            } else {
                ("shutdown-backup-sessions", &mut s.shutdown_backups_on_up)
            };
            if value != Some(want) {
                return Err(format!(
                    "{who} : '{opt}' expects '{want}' but got '{}'.",
                    value.unwrap_or_default()
                ));
            }
            *field = true;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(words: &str) -> Result<CheckRule, String> {
        let mut pc = ProxyCheck::default();
        let w: Vec<&str> = words.split_whitespace().collect();
        http_check(&mut pc, &w)?;
        pc.http_rules.pop().ok_or_else(|| "none".to_string())
    }

    #[test]
    fn status_lists() {
        let r = parse_status_list("x", "200,300-399").unwrap();
        assert_eq!(r, vec![(200, 200), (300, 399)]);
        assert!(parse_status_list("x", "abc").is_err());
        assert!(parse_status_list("x", "20").is_err());
    }

    #[test]
    fn expect_forms() {
        assert!(matches!(
            http("expect ! string ok"),
            Ok(CheckRule::Expect {
                negate: true,
                matcher: Matcher::String(_)
            })
        ));
        assert!(matches!(
            http("expect !status 500"),
            Ok(CheckRule::Expect {
                negate: true,
                matcher: Matcher::Status(_)
            })
        ));
        assert!(http("expect status")
            .unwrap_err()
            .contains("expects a <pattern>"));
        assert!(http("expect foo 200").unwrap_err().contains("got 'foo'"));
        assert!(http("expect rstring [")
            .unwrap_err()
            .contains("regex '[' is invalid"));
        assert!(http("bogus").unwrap_err().contains("but got 'bogus'"));
    }

    #[test]
    fn hex() {
        assert_eq!(parse_hex("x", "4f4B").unwrap(), b"OK");
        assert!(parse_hex("x", "zz").unwrap_err().contains("found 'z'"));
    }

    #[test]
    fn defaults_rules_are_replaced_by_own_rules() {
        let mut pc = ProxyCheck::default();
        http_check(&mut pc, &["expect", "status", "200"]).unwrap();
        pc.inherited = true;
        http_check(&mut pc, &["expect", "status", "204"]).unwrap();
        assert_eq!(pc.http_rules.len(), 1);
        assert!(
            matches!(&pc.http_rules[0], CheckRule::Expect { matcher: Matcher::Status(s), .. } if s[0].0 == 204)
        );
    }
}
