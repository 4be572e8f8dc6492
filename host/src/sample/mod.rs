//! The sample engine: fetches read typed values from a transaction,
//! converters transform them, ACLs match them against patterns and
//! log-format strings print them, with HAProxy's semantics.
//!
//! Everything here is compiled once at configuration time (expressions,
//! ACLs, log formats) and then shared read-only by all workers, so compiled
//! types are `Send + Sync`. Pattern files (`-f`, `map(...)`, `Map.new`) are
//! loaded once per file and shared; runtime changes (`core.set_map` ...)
//! are seen by every user of the file.

#![allow(dead_code)]

pub mod acl;
pub mod conv;
pub mod expr;
pub mod fetch;
mod hash;
mod http;
mod int_pattern;
pub mod logformat;
pub mod map;
pub mod pattern;
pub mod types;

pub use acl::AclSet;
pub use expr::SampleExpr;
pub use logformat::LogFormat;
pub use types::Sample;

use crate::txn::Txn;
use bytes::Bytes;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What samples are evaluated against.
pub struct SampleCtx<'a> {
    /// The transaction the fetches read.
    pub txn: &'a Txn,
    /// Fetches and converters registered by Lua scripts (`lua.NAME`).
    pub lua: &'a dyn LuaSamples,
    /// Proxy state (`nbsrv`).
    pub proxies: &'a dyn ProxyInfo,
}

impl<'a> SampleCtx<'a> {
    /// A context over `txn`.
    pub fn new(txn: &'a Txn, lua: &'a dyn LuaSamples, proxies: &'a dyn ProxyInfo) -> Self {
        SampleCtx { txn, lua, proxies }
    }
}

/// Lua fetches/converters registered by scripts (`lua.NAME`).
pub trait LuaSamples {
    /// Runs Lua fetch `name`; None when it fails or returns nothing usable.
    fn fetch(&self, name: &str, txn: &Txn, args: &[String]) -> Option<Sample>;
    /// Runs Lua converter `name` on `input`.
    fn convert(&self, name: &str, txn: &Txn, input: Sample, args: &[String]) -> Option<Sample>;
}

/// Proxy state for fetches such as `nbsrv(backend)`.
pub trait ProxyInfo {
    /// The number of usable servers of `backend`; None when there is no
    /// such backend.
    fn usable_servers(&self, backend: &str) -> Option<usize>;
}

/// A `LuaSamples` with no Lua: every `lua.*` call fails.
pub struct NoLua;

impl LuaSamples for NoLua {
    fn fetch(&self, _: &str, _: &Txn, _: &[String]) -> Option<Sample> {
        None
    }
    fn convert(&self, _: &str, _: &Txn, _: Sample, _: &[String]) -> Option<Sample> {
        None
    }
}

/// A `ProxyInfo` that knows no backend.
pub struct NoProxies;

impl ProxyInfo for NoProxies {
    fn usable_servers(&self, _: &str) -> Option<usize> {
        None
    }
}

/// The static type of a fetch's or converter's output (HAProxy's sample
/// types); `Any` when only known at run time (variables, Lua).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleType {
    /// A boolean.
    Bool,
    /// A signed integer.
    Sint,
    /// An IPv4 or IPv6 address.
    Ip,
    /// Text.
    Str,
    /// Binary data.
    Bin,
    /// An HTTP method.
    Meth,
    /// Only known at run time.
    Any,
}

impl SampleType {
    /// The type of a sample value.
    pub fn of(s: &Sample) -> SampleType {
        match s {
            Sample::Bool(_) => SampleType::Bool,
            Sample::Sint(_) => SampleType::Sint,
            Sample::Str(_) => SampleType::Str,
            Sample::Bin(_) => SampleType::Bin,
            Sample::Ip(_) => SampleType::Ip,
            Sample::Meth(_) => SampleType::Meth,
        }
    }

    /// HAProxy's name of the type, for error messages.
    pub fn name(self) -> &'static str {
        match self {
            SampleType::Bool => "boolean",
            SampleType::Sint => "integer",
            SampleType::Ip => "address",
            SampleType::Str => "string",
            SampleType::Bin => "binary",
            SampleType::Meth => "method",
            SampleType::Any => "any",
        }
    }

    /// Whether a value of this type can be cast to `to` (HAProxy's cast
    /// matrix); casts that depend on the value (string to address) may
    /// still fail at run time.
    pub fn can_cast(self, to: SampleType) -> bool {
        use SampleType::*;
        if self == to || self == Any || to == Any {
            return true;
        }
        matches!(
            (self, to),
            (Bool, Sint | Str | Bin)
                | (Sint, Bool | Ip | Str | Bin)
                | (Ip, Sint | Str | Bin)
                | (Str, Bool | Sint | Ip | Bin | Meth)
                | (Bin, Str)
                | (Meth, Str | Bin)
        )
    }
}

/// Parses an integer the way HAProxy casts a string to an integer: an
/// optional sign, then the leading digits; anything after them is ignored
/// and no digit at all gives 0. Saturates instead of overflowing.
pub(crate) fn str_to_int(s: &[u8]) -> i64 {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut v: i64 = 0;
    for &c in digits.iter().take_while(|c| c.is_ascii_digit()) {
        let d = (c - b'0') as i64;
        v = if neg {
            v.saturating_mul(10).saturating_sub(d)
        } else {
            v.saturating_mul(10).saturating_add(d)
        };
    }
    v
}

/// Parses an IPv4 address as inet_aton does for decimal parts: "127.1" is
/// 127.0.0.1 and "10.12" is 10.0.0.12 (the last part fills the remaining
/// bytes), which is how HAProxy reads IPv4 patterns.
pub(crate) fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    if s.is_empty() || s.len() > 15 {
        return None;
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let nums: Vec<u64> = parts
        .iter()
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - head.len() as u32);
    if rest_bits < 64 && *last >= (1u64 << rest_bits) {
        return None;
    }
    let mut v: u32 = 0;
    for (i, &n) in head.iter().enumerate() {
        v |= (n as u32) << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(v | *last as u32))
}

/// Parses an IPv4 (strict dotted quad or the short forms above) or IPv6
/// address.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    parse_ipv4_loose(s).map(IpAddr::V4)
}

/// Casts a sample to `to` as HAProxy does; None when the value does not
/// convert (e.g. a string that is not an address).
pub fn cast(s: Sample, to: SampleType) -> Option<Sample> {
    use SampleType as T;
    if to == T::Any || SampleType::of(&s) == to {
        return Some(s);
    }
    Some(match (s, to) {
        (Sample::Bool(b), T::Sint) => Sample::Sint(b as i64),
        (Sample::Sint(i), T::Bool) => Sample::Bool(i != 0),
        (Sample::Str(b), T::Bool) => Sample::Bool(str_to_int(&b) != 0),
        (Sample::Str(b), T::Sint) => Sample::Sint(str_to_int(&b)),
        (Sample::Ip(IpAddr::V4(a)), T::Sint) => Sample::Sint(u32::from(a) as i64),
        (Sample::Sint(i), T::Ip) => Sample::Ip(IpAddr::V4(Ipv4Addr::from(i as u32))),
        (Sample::Str(b), T::Ip) => Sample::Ip(parse_ip(std::str::from_utf8(&b).ok()?)?),
        (Sample::Str(b), T::Meth) => Sample::Meth(b),
        // Integers become their 8 bytes in network order, addresses their
        // 4 or 16 bytes (what `int(255),hex` shows in HAProxy).
        (Sample::Sint(i), T::Bin) => Sample::Bin(Bytes::copy_from_slice(&i.to_be_bytes())),
        (Sample::Bool(b), T::Bin) => Sample::Bin(Bytes::copy_from_slice(&(b as i64).to_be_bytes())),
        (Sample::Ip(IpAddr::V4(a)), T::Bin) => Sample::Bin(Bytes::copy_from_slice(&a.octets())),
        (Sample::Ip(IpAddr::V6(a)), T::Bin) => Sample::Bin(Bytes::copy_from_slice(&a.octets())),
        (Sample::Str(b) | Sample::Meth(b), T::Bin) => Sample::Bin(b),
        (s, T::Str) => Sample::Str(s.to_bytes()),
        _ => return None,
    })
}

/// Maps an IPv4 address to its IPv6 form `::ffff:a.b.c.d`.
pub(crate) fn v4_mapped(a: Ipv4Addr) -> Ipv6Addr {
    a.to_ipv6_mapped()
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_to_int_like_haproxy() {
        assert_eq!(str_to_int(b"12abc"), 12);
        assert_eq!(str_to_int(b"abc"), 0);
        assert_eq!(str_to_int(b" 7"), 0);
        assert_eq!(str_to_int(b"-3"), -3);
        assert_eq!(str_to_int(b"+4"), 4);
        assert_eq!(str_to_int(b""), 0);
        assert_eq!(str_to_int(b"99999999999999999999999"), i64::MAX);
        assert_eq!(str_to_int(b"-99999999999999999999999"), i64::MIN);
    }

    #[test]
    fn loose_ipv4() {
        assert_eq!(parse_ipv4_loose("127.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(parse_ipv4_loose("10.12"), Some(Ipv4Addr::new(10, 0, 0, 12)));
        assert_eq!(
            parse_ipv4_loose("192.168.1"),
            Some(Ipv4Addr::new(192, 168, 0, 1))
        );
        assert_eq!(parse_ipv4_loose("1.2.3.4"), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(
            parse_ipv4_loose("16909060"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(parse_ipv4_loose("1.2.3.256"), None);
        assert_eq!(parse_ipv4_loose("1.2.3.4.5"), None);
        assert_eq!(parse_ipv4_loose("1..2"), None);
        assert_eq!(parse_ipv4_loose("a.b"), None);
        assert_eq!(parse_ipv4_loose(""), None);
    }

    #[test]
    fn casts() {
        let s = |t: &str| Sample::Str(Bytes::copy_from_slice(t.as_bytes()));
        assert_eq!(cast(s("12abc"), SampleType::Sint), Some(Sample::Sint(12)));
        assert_eq!(cast(Sample::Bool(true), SampleType::Str), Some(s("1")));
        assert_eq!(cast(Sample::Sint(-5), SampleType::Str), Some(s("-5")));
        assert_eq!(
            cast(Sample::Sint(255), SampleType::Bin),
            Some(Sample::Bin(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 255])))
        );
        assert_eq!(
            cast(s("1.2.3.4"), SampleType::Ip),
            Some(Sample::Ip("1.2.3.4".parse().unwrap()))
        );
        assert_eq!(cast(s("nope"), SampleType::Ip), None);
        assert_eq!(
            cast(Sample::Ip("1.2.3.4".parse().unwrap()), SampleType::Sint),
            Some(Sample::Sint(16909060))
        );
        assert_eq!(
            cast(Sample::Ip("::1".parse().unwrap()), SampleType::Sint),
            None
        );
        assert_eq!(cast(Sample::Bool(true), SampleType::Ip), None);
        assert!(SampleType::Str.can_cast(SampleType::Ip));
        assert!(!SampleType::Bool.can_cast(SampleType::Ip));
        assert!(!SampleType::Bin.can_cast(SampleType::Sint));
        assert!(SampleType::Any.can_cast(SampleType::Ip));
    }
}
