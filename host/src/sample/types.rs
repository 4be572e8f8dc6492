//! HAProxy's sample: the typed value that fetches produce, converters
//! transform, ACLs match and log-format strings print.

use bytes::Bytes;
use std::net::IpAddr;

/// A sample value with HAProxy's basic types.
#[derive(Clone, Debug, PartialEq)]
pub enum Sample {
    Bool(bool),
    /// Signed integer (HAProxy's "sint").
    Sint(i64),
    /// Text (may hold any bytes; HAProxy's "str").
    Str(Bytes),
    /// Binary (HAProxy's "bin"); prints as raw bytes.
    Bin(Bytes),
    Ip(IpAddr),
    /// An HTTP method (HAProxy's "meth").
    Meth(Bytes),
}

impl Sample {
    pub fn str(s: impl Into<Bytes>) -> Sample {
        Sample::Str(s.into())
    }

    /// HAProxy's type name ("bool", "sint", "str", "bin", "ipv4"/"ipv6", "meth").
    pub fn type_name(&self) -> &'static str {
        match self {
            Sample::Bool(_) => "bool",
            Sample::Sint(_) => "sint",
            Sample::Str(_) => "str",
            Sample::Bin(_) => "bin",
            Sample::Ip(IpAddr::V4(_)) => "ipv4",
            Sample::Ip(IpAddr::V6(_)) => "ipv6",
            Sample::Meth(_) => "meth",
        }
    }

    /// The sample as text, as HAProxy casts it to a string (booleans and
    /// integers in decimal, addresses in their usual notation).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Sample::Bool(b) => Bytes::from(if *b { "1" } else { "0" }),
            Sample::Sint(i) => Bytes::from(i.to_string()),
            Sample::Str(s) | Sample::Bin(s) | Sample::Meth(s) => s.clone(),
            Sample::Ip(ip) => Bytes::from(ip.to_string()),
        }
    }

    /// The sample as an integer, when HAProxy can cast it (strings are
    /// parsed as decimal integers; booleans are 0/1).
    pub fn to_int(&self) -> Option<i64> {
        match self {
            Sample::Bool(b) => Some(*b as i64),
            Sample::Sint(i) => Some(*i),
            Sample::Str(s) | Sample::Bin(s) => std::str::from_utf8(s).ok()?.trim().parse().ok(),
            _ => None,
        }
    }

    /// Truth value for conditions: booleans as is, integers non-zero,
    /// anything else true when present.
    pub fn truthy(&self) -> bool {
        match self {
            Sample::Bool(b) => *b,
            Sample::Sint(i) => *i != 0,
            _ => true,
        }
    }
}
