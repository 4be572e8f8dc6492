//! Destination addresses as HAProxy's Lua sockets read them
//! (`Socket:connect(address[, port])`).
//!
//! HAProxy hands the string to its address parser; its grammar is in
//! stream_addr.rs, shared with the HTTP client's `dst`. An `abns@name`
//! socket's name is padded with zero bytes to the full `sun_path` when
//! connecting (socket_unix.rs), so that it reaches HAProxy's own `abns@`
//! listeners.
//!
//! When the script passes a port argument, HAProxy appends a colon to the
//! string and then puts that port into the address: `connect("::1", 80)`
//! works, and `connect("127.0.0.1:80", 81)` does not parse. Host names are
//! not resolved: `connect("localhost", 80)` fails as in HAProxy.

use crate::stream_addr::{self, StreamAddr};
use std::net::SocketAddr;

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

/// Parses `Socket:connect`'s arguments. `port` is the optional second
/// argument (HAProxy: only a port > 0 appends the colon; any given port is
/// then used, truncated to 16 bits as `htons` does).
pub fn parse(address: &[u8], port: Option<i64>) -> Result<Destination, AddrError> {
    let mut text = address.to_vec();
    if port.is_some_and(|p| p > 0) {
        text.push(b':');
    }
    let parsed = stream_addr::parse(&text)
        .ok_or_else(|| AddrError::Unparsable(String::from_utf8_lossy(&text).into_owned()))?;
    match parsed {
        StreamAddr::Unix(path) => Ok(Destination::Unix(path)),
        StreamAddr::Abstract(name) => Ok(Destination::Abstract(name)),
        StreamAddr::Inet(ip, Some(p)) => Ok(Destination::Inet(SocketAddr::new(ip, p))),
        // No port in the string: the argument's, as htons() keeps it.
        StreamAddr::Inet(ip, None) => match port {
            Some(p) => Ok(Destination::Inet(SocketAddr::new(ip, p as u16))),
            None => Err(AddrError::PortMissing),
        },
    }
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
