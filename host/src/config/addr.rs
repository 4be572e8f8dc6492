//! Reads `bind` and `server` addresses: `127.0.0.1:80`, `*:80`, `:80`,
//! `[::1]:80`, `:::80`, optionally prefixed with `ipv4@` or `ipv6@`.

use super::units::parse_u64;
use super::ServerAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The address family forced by a prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Any,
    V4,
    V6,
}

/// Address prefixes HAProxy knows but luahost cannot serve yet.
const UNSUPPORTED_PREFIXES: &[&str] = &[
    "unix@",
    "abns@",
    "abnsz@",
    "fd@",
    "sockpair@",
    "udp@",
    "udp4@",
    "udp6@",
    "quic4@",
    "quic6@",
    "uxst@",
    "uxdg@",
    "mptcp@",
    "mptcp4@",
    "mptcp6@",
    "rhttp@",
];

/// Removes a family prefix, refusing the ones luahost does not support.
fn family_prefix(text: &str) -> Result<(Family, &str), String> {
    // Every prefix ends in '@': a plain address (nearly every server line)
    // skips the comparisons below.
    if !text.contains('@') && !text.starts_with('/') {
        return Ok((Family::Any, text));
    }
    for (prefix, family) in [
        ("ipv4@", Family::V4),
        ("ipv6@", Family::V6),
        ("tcp4@", Family::V4),
        ("tcp6@", Family::V6),
        ("tcp@", Family::Any),
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return Ok((family, rest));
        }
    }
    if let Some(p) = UNSUPPORTED_PREFIXES.iter().find(|p| text.starts_with(**p)) {
        return Err(format!(
            "'{text}': '{p}' addresses are not supported yet; use an IPv4 or IPv6 address and port"
        ));
    }
    if text.starts_with('/') {
        return Err(format!(
            "'{text}': UNIX socket paths are not supported yet; use an IPv4 or IPv6 address and port"
        ));
    }
    Ok((Family::Any, text))
}

/// Splits `host:port`, where host may be `[v6]`, or a bare v6 address whose
/// last colon introduces the port (HAProxy's reading of `:::80`).
fn split_host_port(text: &str) -> Result<(&str, &str), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("'{text}': missing ']' after the IPv6 address"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(format!("'{text}': missing ':PORT' after the address"));
        };
        return Ok((host, port));
    }
    text.rsplit_once(':')
        .ok_or_else(|| format!("'{text}': missing ':PORT' after the address"))
}

/// Reads a port number (1-65535).
fn port(text: &str, whole: &str) -> Result<u16, String> {
    if text.is_empty() {
        return Err(format!("'{whole}': missing port number after ':'"));
    }
    if text.contains('-') && !text.starts_with('-') {
        return Err(format!("'{whole}': port ranges are not supported yet"));
    }
    if text.starts_with('+') || text.starts_with('-') {
        return Err(format!("'{whole}': port offsets are not supported yet"));
    }
    match parse_u64(text) {
        Some(p @ 1..=65535) => Ok(p as u16),
        _ => Err(format!(
            "'{whole}': invalid port '{text}'; expected a number between 1 and 65535"
        )),
    }
}

/// Checks that `ip` belongs to the family a prefix asked for.
fn check_family(ip: IpAddr, family: Family, whole: &str) -> Result<IpAddr, String> {
    match (family, ip) {
        (Family::V4, IpAddr::V6(_)) => Err(format!("'{whole}': IPv6 address after 'ipv4@'")),
        (Family::V6, IpAddr::V4(_)) => Err(format!("'{whole}': IPv4 address after 'ipv6@'")),
        _ => Ok(ip),
    }
}

/// Reads a listening address; `*` or an empty host means all addresses.
pub(crate) fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    let (family, rest) = family_prefix(text)?;
    let (host, port_text) = split_host_port(rest)?;
    let port = port(port_text, text)?;
    let ip = if host.is_empty() || host == "*" {
        match family {
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    } else {
        let ip: IpAddr = host.parse().map_err(|_| {
            format!(
                "'{text}': '{host}' is not an IP address (host names are not supported in 'bind')"
            )
        })?;
        check_family(ip, family, text)?
    };
    Ok(SocketAddr::new(ip, port))
}

/// Whether `host` looks like a DNS name (letters, digits, '-', '_', '.').
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && host.bytes().any(|b| b.is_ascii_alphabetic())
}

/// Reads a server address: an IP address or host name, and a port.
pub(crate) fn parse_server(text: &str) -> Result<ServerAddr, String> {
    let (family, rest) = family_prefix(text)?;
    let (host, port_text) = split_host_port(rest)?;
    let port = port(port_text, text)?;
    if host.is_empty() || host == "*" {
        return Err(format!(
            "'{text}': a server needs a host (an IP address or a host name)"
        ));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        let ip = check_family(ip, family, text)?;
        return Ok(ServerAddr::Ip(SocketAddr::new(ip, port)));
    }
    if is_host_name(host) {
        return Ok(ServerAddr::Host {
            host: host.to_string(),
            port,
        });
    }
    Err(format!(
        "'{text}': '{host}' is neither an IP address nor a host name"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(s: &str) -> SocketAddr {
        match parse_bind(s) {
            Ok(a) => a,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bind_forms() {
        assert_eq!(bind("127.0.0.1:80"), sa("127.0.0.1:80"));
        assert_eq!(bind("*:80"), sa("0.0.0.0:80"));
        assert_eq!(bind(":80"), sa("0.0.0.0:80"));
        assert_eq!(bind("0.0.0.0:8080"), sa("0.0.0.0:8080"));
        assert_eq!(bind("[::1]:80"), sa("[::1]:80"));
        assert_eq!(bind(":::80"), sa("[::]:80"));
        assert_eq!(bind("::1:443"), sa("[::1]:443"));
        assert_eq!(bind("ipv6@:::80"), sa("[::]:80"));
        assert_eq!(bind("ipv6@:80"), sa("[::]:80"));
        assert_eq!(bind("ipv6@*:80"), sa("[::]:80"));
        assert_eq!(bind("ipv4@:80"), sa("0.0.0.0:80"));
        assert_eq!(bind("ipv4@10.1.2.3:65535"), sa("10.1.2.3:65535"));
        assert_eq!(bind("tcp6@[::]:1"), sa("[::]:1"));
    }

    #[test]
    fn bind_errors() {
        let e = |s: &str| parse_bind(s).unwrap_err();
        assert!(e("127.0.0.1").contains("missing ':PORT'"));
        assert!(e("80").contains("missing ':PORT'"));
        assert!(e("127.0.0.1:").contains("missing port number"));
        assert!(e(":0").contains("invalid port '0'"));
        assert!(e(":65536").contains("invalid port '65536'"));
        assert!(e(":http").contains("invalid port 'http'"));
        assert!(e(":80-90").contains("port ranges"));
        assert!(e(":+1").contains("port offsets"));
        assert!(e("localhost:80").contains("host names are not supported"));
        assert!(e("[::1:80").contains("missing ']'"));
        assert!(e("[::1]80").contains("missing ':PORT'"));
        assert!(e("ipv4@[::1]:80").contains("IPv6 address after 'ipv4@'"));
        assert!(e("ipv6@1.2.3.4:80").contains("IPv4 address after 'ipv6@'"));
        assert!(e("unix@/tmp/s").contains("'unix@' addresses are not supported yet"));
        assert!(e("/var/run/x.sock").contains("UNIX socket"));
        assert!(e("1.2.3.4.5:80").contains("not an IP address"));
    }

    #[test]
    fn server_forms() {
        assert_eq!(
            parse_server("10.0.0.1:8080"),
            Ok(ServerAddr::Ip(sa("10.0.0.1:8080")))
        );
        assert_eq!(
            parse_server("[2001:db8::1]:443"),
            Ok(ServerAddr::Ip(sa("[2001:db8::1]:443")))
        );
        assert_eq!(
            parse_server("app-1.internal:80"),
            Ok(ServerAddr::Host {
                host: "app-1.internal".into(),
                port: 80
            })
        );
        assert_eq!(
            parse_server("ipv4@127.0.0.1:1"),
            Ok(ServerAddr::Ip(sa("127.0.0.1:1")))
        );
        assert_eq!(
            ServerAddr::Host {
                host: "a".into(),
                port: 1
            }
            .to_string(),
            "a:1"
        );
    }

    #[test]
    fn server_errors() {
        let e = |s: &str| parse_server(s).unwrap_err();
        assert!(e("*:80").contains("needs a host"));
        assert!(e(":80").contains("needs a host"));
        assert!(e("app").contains("missing ':PORT'"));
        assert!(e("app:0").contains("invalid port"));
        assert!(e("a b:80").contains("neither an IP address nor a host name"));
        assert!(e("1.2.3.4.5:80").contains("neither"));
    }
}
