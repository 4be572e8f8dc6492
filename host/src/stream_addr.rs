//! HAProxy's address syntax for a stream destination, as its address parser
//! (`str2sa_range`: stream sockets, a port allowed, no name resolution)
//! reads it. Used by Lua's `Socket:connect` (lua/socket_addr.rs, which adds
//! the port argument and requires a port) and by the HTTP client's `dst`
//! (whose missing port is the URL's).
//!
//! The forms:
//! - `ip:port`, `[ipv6]:port`, `[ipv6]`, and an IPv6 address without
//!   brackets, whose port is after its last colon (`::1:8080` is `::1` port
//!   8080; a bare `::1` is the host `:` port 1, which does not parse: HAProxy
//!   3.0 refuses it too);
//! - `ipv4@` and `ipv6@` prefixes, which only accept that family;
//! - `unix@/path` and a bare `/path`: a Unix stream socket;
//! - `abns@name`: a socket in Linux's abstract namespace;
//! - an empty host or `*`: the "any" address (0.0.0.0, or :: after `ipv6@`).
//!
//! Other `prefix@` forms (`fd@`, `sockpair@`, `udp@`...) are not stream
//! destinations one can connect to, and host names are not resolved.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A parsed destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StreamAddr {
    /// An IP address, with the port when the text had one.
    Inet(IpAddr, Option<u16>),
    /// A Unix socket path (the bytes after `unix@`, or the whole `/path`);
    /// may be empty (HAProxy accepts `unix@`, the connection then fails).
    Unix(Vec<u8>),
    /// A name in the abstract namespace, without the leading zero byte.
    Abstract(Vec<u8>),
}

/// Which address families a prefix allows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Any,
    V4,
    V6,
}

/// Parses `text`; None when HAProxy's parser refuses it.
pub fn parse(text: &[u8]) -> Option<StreamAddr> {
    let (family, rest): (Family, &[u8]) = if let Some(r) = text.strip_prefix(b"unix@") {
        return Some(StreamAddr::Unix(r.to_vec()));
    } else if let Some(r) = text.strip_prefix(b"abns@") {
        return Some(StreamAddr::Abstract(r.to_vec()));
    } else if let Some(r) = text.strip_prefix(b"ipv4@") {
        (Family::V4, r)
    } else if let Some(r) = text.strip_prefix(b"ipv6@") {
        (Family::V6, r)
    } else if text.starts_with(b"/") {
        return Some(StreamAddr::Unix(text.to_vec()));
    } else if text.contains(&b'@') {
        return None;
    } else {
        (Family::Any, text)
    };
    let rest = std::str::from_utf8(rest).ok()?;
    // As str2sa_range: the last ':' or ']', whichever comes first from the
    // end; a colon there starts the port, a bracket means no port.
    let (host, port_text) = match rest.rfind([':', ']']) {
        Some(i) if rest.as_bytes()[i] == b':' => (&rest[..i], &rest[i + 1..]),
        _ => (rest, ""),
    };
    let port = match port_text {
        "" => None,
        p if p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse::<u16>().ok()?),
        _ => return None,
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
        host.parse().ok()?
    };
    match (family, ip) {
        (Family::V4, IpAddr::V6(_)) | (Family::V6, IpAddr::V4(_)) => None,
        _ => Some(StreamAddr::Inet(ip, port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an IP address")
    }

    #[test]
    fn haproxy_address_forms() {
        let (v4, v6) = (ip("127.0.0.1"), ip("::1"));
        let inet = |ip, port| Some(StreamAddr::Inet(ip, port));
        assert_eq!(parse(b"127.0.0.1:80"), inet(v4, Some(80)));
        assert_eq!(parse(b"127.0.0.1"), inet(v4, None));
        assert_eq!(parse(b"127.0.0.1:"), inet(v4, None));
        assert_eq!(parse(b"ipv4@127.0.0.1:80"), inet(v4, Some(80)));
        assert_eq!(parse(b"[::1]:8080"), inet(v6, Some(8080)));
        assert_eq!(parse(b"[::1]"), inet(v6, None));
        assert_eq!(parse(b"ipv6@[::1]:8080"), inet(v6, Some(8080)));
        assert_eq!(parse(b"::1:8080"), inet(v6, Some(8080)));
        assert_eq!(parse(b"::1:"), inet(v6, None));
        assert_eq!(parse(b":80"), inet(ip("0.0.0.0"), Some(80)));
        assert_eq!(parse(b"*:80"), inet(ip("0.0.0.0"), Some(80)));
        assert_eq!(parse(b"ipv6@:80"), inet(ip("::"), Some(80)));
        assert_eq!(
            parse(b"unix@/run/s.sock"),
            Some(StreamAddr::Unix(b"/run/s.sock".to_vec()))
        );
        assert_eq!(
            parse(b"/run/s.sock"),
            Some(StreamAddr::Unix(b"/run/s.sock".to_vec()))
        );
        assert_eq!(
            parse(b"abns@name"),
            Some(StreamAddr::Abstract(b"name".to_vec()))
        );
        // Accepted by HAProxy 3.0's httpclient (the connection fails).
        assert_eq!(parse(b"unix@"), Some(StreamAddr::Unix(Vec::new())));
    }

    #[test]
    fn refusals() {
        // HAProxy 3.0: "invalid address: ':' in '::1'".
        assert_eq!(parse(b"::1"), None);
        assert_eq!(parse(b"ipv6@127.0.0.1:80"), None);
        assert_eq!(parse(b"ipv4@::1:80"), None);
        assert_eq!(parse(b"nonsense@@"), None);
        assert_eq!(parse(b"fd@3"), None);
        assert_eq!(parse(b"example.com:80"), None);
        assert_eq!(parse(b"127.0.0.1:99999"), None);
        assert_eq!(parse(b"127.0.0.1:8x"), None);
        assert_eq!(parse(b"[::1]x"), None);
    }
}
