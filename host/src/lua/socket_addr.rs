//! Destination addresses as HAProxy's Lua sockets read them
//! (`Socket:connect(address[, port])`), also for `dst=` of the HTTP client.
//!
//! HAProxy hands the string to its address parser (`str2sa_range`, stream
//! sockets, a port allowed, no name resolution), so the accepted forms are:
//! - `ip:port`, `[ipv6]:port`, and an IPv6 address without brackets, whose
//!   port is after its last colon (`::1:8080`);
//! - `ipv4@` and `ipv6@` prefixes, which only accept that family;
//! - `unix@/path` and a bare `/path`: a Unix stream socket;
//! - `abns@name`: a socket in Linux's abstract namespace, whose name HAProxy
//!   pads with zero bytes to the full `sun_path` (so that it reaches
//!   HAProxy's own `abns@` listeners);
//! - an empty host or `*`: the "any" address (0.0.0.0).
//!
//! When the script passes a port argument, HAProxy appends a colon to the
//! string and then puts that port into the address: `connect("::1", 80)`
//! works, and `connect("127.0.0.1:80", 81)` does not parse. Host names are
//! not resolved: `connect("localhost", 80)` fails as in HAProxy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Where a socket connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Inet(SocketAddr),
    /// A Unix socket path (the bytes after `unix@`, or the whole `/path`).
    Unix(Vec<u8>),
    /// A name in the abstract namespace, without the leading zero byte and
    /// before padding.
    Abstract(Vec<u8>),
}

/// Why an address was refused; the messages are HAProxy's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrError {
    /// "connect: cannot parse destination address '%s'" (the string as
    /// HAProxy parsed it, with the appended colon).
    Unparsable(String),
    /// "connect: port missing".
    PortMissing,
}

impl AddrError {
    pub fn message(&self) -> String {
        match self {
            AddrError::Unparsable(s) => format!("connect: cannot parse destination address '{s}'"),
            AddrError::PortMissing => "connect: port missing".to_string(),
        }
    }
}

/// Which address families a prefix allows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Any,
    V4,
    V6,
}

/// Parses `Socket:connect`'s arguments. `port` is the optional second
/// argument (HAProxy: only a port > 0 appends the colon; any given port is
/// then used, truncated to 16 bits as `htons` does).
pub fn parse(address: &[u8], port: Option<i64>) -> Result<Destination, AddrError> {
    let mut text = address.to_vec();
    if port.is_some_and(|p| p > 0) {
        text.push(b':');
    }
    let shown = || String::from_utf8_lossy(&text).into_owned();
    let unparsable = || AddrError::Unparsable(shown());

    let (family, rest): (Family, &[u8]) = if let Some(r) = text.strip_prefix(b"unix@") {
        return Ok(Destination::Unix(r.to_vec()));
    } else if let Some(r) = text.strip_prefix(b"abns@") {
        return Ok(Destination::Abstract(r.to_vec()));
    } else if let Some(r) = text.strip_prefix(b"ipv4@") {
        (Family::V4, r)
    } else if let Some(r) = text.strip_prefix(b"ipv6@") {
        (Family::V6, r)
    } else if text.starts_with(b"/") {
        return Ok(Destination::Unix(text.clone()));
    } else if text.contains(&b'@') {
        // fd@, sockpair@, udp@...: not stream destinations a socket can
        // connect to here.
        return Err(unparsable());
    } else {
        (Family::Any, &text[..])
    };

    let rest = std::str::from_utf8(rest).map_err(|_| unparsable())?;
    // The port is after the last colon, when there is one.
    let (host, port_text) = match rest.rfind(':') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let in_string = match port_text {
        None | Some("") => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(unparsable()),
        },
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = if host.is_empty() || host == "*" {
        match family {
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    } else {
        host.parse().map_err(|_| unparsable())?
    };
    match (family, ip) {
        (Family::V4, IpAddr::V6(_)) | (Family::V6, IpAddr::V4(_)) => return Err(unparsable()),
        _ => {}
    }
    let port = match (in_string, port) {
        (Some(p), _) => p,
        // No port in the string: the argument's, as htons() keeps it.
        (None, Some(p)) => p as u16,
        (None, None) => return Err(AddrError::PortMissing),
    };
    Ok(Destination::Inet(SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(s: &str) -> Destination {
        Destination::Inet(s.parse().expect("a socket address"))
    }

    #[test]
    fn forms_haproxy_accepts() {
        assert_eq!(parse(b"127.0.0.1:80", None), Ok(inet("127.0.0.1:80")));
        assert_eq!(parse(b"127.0.0.1", Some(81)), Ok(inet("127.0.0.1:81")));
        assert_eq!(parse(b"[::1]:80", None), Ok(inet("[::1]:80")));
        assert_eq!(parse(b"::1", Some(80)), Ok(inet("[::1]:80")));
        assert_eq!(parse(b"[::1]", Some(80)), Ok(inet("[::1]:80")));
        assert_eq!(parse(b"::1:8080", None), Ok(inet("[::1]:8080")));
        assert_eq!(parse(b"ipv4@127.0.0.1:80", None), Ok(inet("127.0.0.1:80")));
        assert_eq!(parse(b"ipv6@[::1]:80", None), Ok(inet("[::1]:80")));
        assert_eq!(parse(b":80", None), Ok(inet("0.0.0.0:80")));
        assert_eq!(
            parse(b"unix@/run/x.sock", None),
            Ok(Destination::Unix(b"/run/x.sock".to_vec()))
        );
        assert_eq!(
            parse(b"/run/x.sock", None),
            Ok(Destination::Unix(b"/run/x.sock".to_vec()))
        );
        assert_eq!(
            parse(b"abns@name", None),
            Ok(Destination::Abstract(b"name".to_vec()))
        );
    }

    #[test]
    fn refusals_with_haproxys_messages() {
        let msg = |r: Result<Destination, AddrError>| r.expect_err("refused").message();
        assert_eq!(
            msg(parse(b"localhost", Some(80))),
            "connect: cannot parse destination address 'localhost:'"
        );
        assert_eq!(
            msg(parse(b"nope:x", None)),
            "connect: cannot parse destination address 'nope:x'"
        );
        assert_eq!(msg(parse(b"127.0.0.1", None)), "connect: port missing");
        assert_eq!(
            msg(parse(b"127.0.0.1:80", Some(81))),
            "connect: cannot parse destination address '127.0.0.1:80:'"
        );
        assert!(parse(b"ipv4@::1:80", None).is_err());
        assert!(parse(b"ipv6@127.0.0.1:80", None).is_err());
        assert!(parse(b"fd@3", None).is_err());
        assert!(parse(b"127.0.0.1:70000", None).is_err());
    }
}
