//! `stats socket`, `stats timeout` and `stats maxconn` in `global`: where
//! the runtime API (the CLI, see `crate::cli`) listens and with which rights.

use super::units::{int_arg, parse_time, parse_u64, TimeUnit};
use super::Location;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A CLI session's rights, as HAProxy's: each level includes the lower ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CliLevel {
    User,
    Operator,
    Admin,
}

impl CliLevel {
    pub fn name(self) -> &'static str {
        match self {
            CliLevel::User => "user",
            CliLevel::Operator => "operator",
            CliLevel::Admin => "admin",
        }
    }
}

/// Where a stats socket listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for CliAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliAddr::Unix(p) => write!(f, "unix@{}", p.display()),
            CliAddr::Tcp(a) if a.is_ipv4() => write!(f, "ipv4@{a}"),
            CliAddr::Tcp(a) => write!(f, "ipv6@{a}"),
        }
    }
}

/// One `stats socket` line.
#[derive(Debug, Clone)]
pub struct StatsSocket {
    pub addr: CliAddr,
    /// `level`; HAProxy's default is operator.
    pub level: CliLevel,
    /// `mode` (octal) of a UNIX socket file.
    pub mode: Option<u32>,
    /// `uid`/`user` and `gid`/`group` owning a UNIX socket file.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub location: Location,
}

/// The `stats` settings of `global`.
#[derive(Debug, Clone, Default)]
pub struct StatsCli {
    pub sockets: Vec<StatsSocket>,
    /// `stats timeout`: how long an idle CLI session is kept (default 10 s).
    pub timeout: Option<Duration>,
    /// `stats maxconn`: concurrent CLI sessions (default 10).
    pub maxconn: Option<usize>,
}

/// Handles a `stats ...` line of `global`; `words[0]` is "stats".
pub(crate) fn keyword(s: &mut StatsCli, words: &[&str], loc: &Location) -> Result<(), String> {
    let sub = words.get(1).copied().unwrap_or_default();
    let arg = words.get(2).copied().unwrap_or_default();
    match sub {
        "socket" => {
            if arg.is_empty() {
                return Err(
                    "'stats socket' in global section expects an address or a path to a UNIX socket"
                        .to_string(),
                );
            }
            let addr = socket_addr(arg)?;
            let mut sock = StatsSocket {
                addr,
                level: CliLevel::Operator,
                mode: None,
                uid: None,
                gid: None,
                location: loc.clone(),
            };
            options(&mut sock, &words[3..])?;
            s.sockets.push(sock);
        }
        "timeout" => {
            let t = match parse_time(arg, TimeUnit::Millis) {
                Ok(t) => t,
                Err(_) if arg.is_empty() => {
                    return Err("'stats timeout' expects a positive value".to_string())
                }
                Err(_) => {
                    let bad = arg
                        .chars()
                        .find(|c| !c.is_ascii_digit())
                        .unwrap_or_default();
                    return Err(format!("'stats timeout' : unexpected character '{bad}'"));
                }
            };
            if t.is_zero() {
                return Err("'stats timeout' expects a positive value".to_string());
            }
            s.timeout = Some(t);
        }
        "maxconn" => {
            s.maxconn = Some(
                parse_u64(arg)
                    .filter(|n| *n > 0 && *n <= i32::MAX as u64)
                    .map(|n| n as usize)
                    .ok_or_else(|| "'stats maxconn' expects a positive value".to_string())?,
            );
        }
        "bind-process" => return Err("'stats bind-process' is not supported anymore.".to_string()),
        _ => {
            return Err(format!(
            "'stats' only supports 'socket', 'maxconn', 'bind-process' and 'timeout' (got '{sub}')"
        ))
        }
    }
    Ok(())
}

/// `/path`, `unix@/path`, `ipv4@IP:PORT`, `ipv6@[IP]:PORT` or `IP:PORT`.
fn socket_addr(text: &str) -> Result<CliAddr, String> {
    let path = text.strip_prefix("unix@").unwrap_or(text);
    if path.starts_with('/') || text.starts_with("unix@") {
        if path.is_empty() {
            return Err(format!(
                "'stats socket' : '{text}': missing UNIX socket path"
            ));
        }
        // sun_path holds 108 bytes, the last one a NUL.
        if path.len() > 107 {
            return Err(format!(
                "'stats socket' : '{text}': UNIX socket path too long (at most 107 characters)"
            ));
        }
        return Ok(CliAddr::Unix(PathBuf::from(path)));
    }
    super::addr::parse_bind(text)
        .map(CliAddr::Tcp)
        .map_err(|e| format!("'stats socket' : {e}"))
}

/// The bind options after the address.
fn options(sock: &mut StatsSocket, words: &[&str]) -> Result<(), String> {
    let mut i = 0;
    while let Some(&kw) = words.get(i) {
        let val = words.get(i + 1).copied();
        match kw {
            "level" => {
                sock.level = match val {
                    Some("user") => CliLevel::User,
                    Some("operator") => CliLevel::Operator,
                    Some("admin") => CliLevel::Admin,
                    _ => {
                        return Err(format!(
                            "'stats socket' : ''{kw}' only supports 'user', 'operator', and 'admin' (got '{}')'",
                            val.unwrap_or_default()
                        ))
                    }
                }
            }
            "mode" => {
                let v = val.unwrap_or_default();
                sock.mode = Some(
                    u32::from_str_radix(v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            format!("'stats socket' : ''{kw}' : missing or invalid mode '{v}' (octal integer expected)'")
                        })?,
                );
            }
            "uid" | "gid" => {
                let v: u32 = int_arg(
                    &format!("stats socket {kw}"),
                    "a numeric id",
                    val,
                    0,
                    u32::MAX as u64,
                )?;
                if kw == "uid" {
                    sock.uid = Some(v);
                } else {
                    sock.gid = Some(v);
                }
            }
            "user" | "group" => {
                let name = val.unwrap_or_default();
                let id = if kw == "user" {
                    super::process::user_id(name)
                } else {
                    super::process::group_id(name)
                };
                match id {
                    Some(id) if kw == "user" => sock.uid = Some(id),
                    Some(id) => sock.gid = Some(id),
                    None => {
                        return Err(format!(
                            "'stats socket' : ''{kw}' : unknown {kw} name '{name}''"
                        ))
                    }
                }
            }
            _ => {
                return Err(format!(
                    "'stats socket' : unknown keyword '{kw}'. luahost supports 'level', 'mode', 'uid', 'gid', 'user' and 'group' here."
                ))
            }
        }
        i += 2;
    }
    Ok(())
}
