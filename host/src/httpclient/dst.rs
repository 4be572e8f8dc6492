//! The `dst` argument: HAProxy's address format for a stream destination
//! (`ip:port`, `[ipv6]:port`, `ipv4@`/`ipv6@` prefixes, `unix@/path` or a
//! bare `/path`, `abns@name`). Names are not resolved, as HAProxy's parser
//! does not resolve them here. Without a port the URL's port is used.
//!
//! (The Lua socket branch has its own parser for `Socket:connect`; the two
//! accept the same forms and can be merged.)

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dst {
    /// An IP address, with the port if the string had one.
    Inet(IpAddr, Option<u16>),
    Unix(Vec<u8>),
    /// A name in Linux's abstract namespace (without the leading zero byte).
    Abstract(Vec<u8>),
}

impl Dst {
    /// The socket address for an `Inet` destination, with `url_port` when
    /// the destination named none.
    pub fn socket_addr(ip: IpAddr, port: Option<u16>, url_port: u16) -> SocketAddr {
        SocketAddr::new(ip, port.unwrap_or(url_port))
    }
}

pub fn parse(text: &str) -> Option<Dst> {
    if let Some(path) = text.strip_prefix("unix@") {
        return (!path.is_empty()).then(|| Dst::Unix(path.as_bytes().to_vec()));
    }
    if let Some(name) = text.strip_prefix("abns@") {
        return (!name.is_empty()).then(|| Dst::Abstract(name.as_bytes().to_vec()));
    }
    if text.starts_with('/') {
        return Some(Dst::Unix(text.as_bytes().to_vec()));
    }
    let (want_v4, want_v6, rest) = if let Some(r) = text.strip_prefix("ipv4@") {
        (true, false, r)
    } else if let Some(r) = text.strip_prefix("ipv6@") {
        (false, true, r)
    } else if text.contains('@') {
        return None;
    } else {
        (true, true, text)
    };
    // `[v6]:port`, a bare address (v4 or v6, no port), else `host:port`
    // split at the last colon.
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let close = r.find(']')?;
        let after = &r[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (&r[..close], port)
    } else if let Ok(ip) = rest.parse::<IpAddr>() {
        return family_ok(ip, want_v4, want_v6).then_some(Dst::Inet(ip, None));
    } else {
        let i = rest.rfind(':')?;
        let digits = &rest[i + 1..];
        let port = if digits.is_empty() {
            None
        } else {
            Some(digits.parse::<u16>().ok()?)
        };
        (&rest[..i], port)
    };
    let ip: IpAddr = host.parse().ok()?;
    family_ok(ip, want_v4, want_v6).then_some(Dst::Inet(ip, port))
}

fn family_ok(ip: IpAddr, v4: bool, v6: bool) -> bool {
    (ip.is_ipv4() && v4) || (ip.is_ipv6() && v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_address_forms() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(parse("127.0.0.1:80"), Some(Dst::Inet(v4, Some(80))));
        assert_eq!(parse("127.0.0.1"), Some(Dst::Inet(v4, None)));
        assert_eq!(parse("ipv4@127.0.0.1:80"), Some(Dst::Inet(v4, Some(80))));
        assert_eq!(parse("ipv6@127.0.0.1:80"), None);
        assert_eq!(parse("[::1]:8080"), Some(Dst::Inet(v6, Some(8080))));
        assert_eq!(parse("ipv6@[::1]:8080"), Some(Dst::Inet(v6, Some(8080))));
        assert_eq!(parse("::1"), Some(Dst::Inet(v6, None)));
        assert_eq!(
            parse("unix@/run/s.sock"),
            Some(Dst::Unix(b"/run/s.sock".to_vec()))
        );
        assert_eq!(
            parse("/run/s.sock"),
            Some(Dst::Unix(b"/run/s.sock".to_vec()))
        );
        assert_eq!(parse("abns@name"), Some(Dst::Abstract(b"name".to_vec())));
        assert_eq!(parse("nonsense@@"), None);
        assert_eq!(parse("example.com:80"), None);
        assert_eq!(parse("127.0.0.1:99999"), None);
        assert_eq!(parse("unix@"), None);
    }
}
