//! Pure helpers behind `core.tokenize`, `core.parse_addr`/`match_addr` and the
//! `core.*_date` parsers.

use std::net::IpAddr;

/// Splits `s` on any byte of `seps`; with `noblank`, empty fields are dropped.
pub fn tokenize<'a>(s: &'a [u8], seps: &[u8], noblank: bool) -> Vec<&'a [u8]> {
    s.split(|b| seps.contains(b))
        .filter(|f| !(noblank && f.is_empty()))
        .collect()
}

/// An address with a prefix length: what `core.parse_addr` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Network {
    /// Parses "1.2.3.4", "1.2.3.0/24", "1.2.3.0/255.255.255.0", "::1", "2001:db8::/32".
    pub fn parse(s: &str) -> Option<Network> {
        let s = s.trim();
        let (ip, mask) = match s.split_once('/') {
            Some((ip, mask)) => (ip, Some(mask)),
            None => (s, None),
        };
        let addr: IpAddr = ip.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match mask {
            None => max,
            Some(m) => match m.parse::<u8>() {
                Ok(p) if p <= max => p,
                Ok(_) => return None,
                Err(_) => dotted_mask_prefix(m, addr)?,
            },
        };
        Some(Network { addr, prefix })
    }

    fn bits(addr: IpAddr) -> (u128, u8) {
        match addr {
            IpAddr::V4(a) => (u32::from(a) as u128, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    /// True when the two networks overlap on the shorter of their prefixes
    /// (HAProxy compares both addresses under the smaller mask). IPv4 and
    /// IPv6 compare through IPv4-mapped addresses.
    pub fn matches(&self, other: &Network) -> bool {
        let (a, b) = match (self.addr, other.addr) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => (
                    *self,
                    Network {
                        addr: IpAddr::V4(v4),
                        prefix: other.prefix.saturating_sub(96),
                    },
                ),
                None => return false,
            },
            (IpAddr::V6(v6), IpAddr::V4(_)) => match v6.to_ipv4_mapped() {
                Some(v4) => (
                    Network {
                        addr: IpAddr::V4(v4),
                        prefix: self.prefix.saturating_sub(96),
                    },
                    *other,
                ),
                None => return false,
            },
            _ => (*self, *other),
        };
        let (x, width) = Self::bits(a.addr);
        let (y, _) = Self::bits(b.addr);
        let prefix = a.prefix.min(b.prefix) as u32;
        if prefix == 0 {
            return true;
        }
        let shift = width as u32 - prefix;
        (x >> shift) == (y >> shift)
    }
}

/// "255.255.255.0" -> 24, when it is a contiguous IPv4 mask.
fn dotted_mask_prefix(m: &str, addr: IpAddr) -> Option<u8> {
    if !addr.is_ipv4() {
        return None;
    }
    let mask: std::net::Ipv4Addr = m.parse().ok()?;
    let v = u32::from(mask);
    let ones = v.leading_ones();
    (v.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// The three HTTP date formats of RFC 9110.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DateFormat {
    Imf,
    Rfc850,
    Asctime,
}

/// Recognises which of the three formats `s` is written in, by its shape.
fn date_format(s: &str) -> Option<DateFormat> {
    let comma = s.find(',');
    match comma {
        Some(3) => Some(DateFormat::Imf),
        Some(i) if i > 3 => Some(DateFormat::Rfc850),
        None => Some(DateFormat::Asctime),
        _ => None,
    }
}

/// Parses an HTTP date in the given format (any of the three when None),
/// returning seconds since the epoch.
pub fn parse_http_date(s: &str, only: Option<DateFormat>) -> Option<i64> {
    let s = s.trim();
    if let Some(fmt) = only {
        if date_format(s)? != fmt {
            return None;
        }
    }
    let t = httpdate::parse_http_date(s).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_with_and_without_blanks() {
        let v = tokenize(b"a,,b c", b", ", false);
        assert_eq!(v, vec![&b"a"[..], b"", b"b", b"c"]);
        let v = tokenize(b"a,,b c", b", ", true);
        assert_eq!(v, vec![&b"a"[..], b"b", b"c"]);
    }

    #[test]
    fn networks() {
        let n = Network::parse("192.168.1.0/24").unwrap();
        assert!(n.matches(&Network::parse("192.168.1.77").unwrap()));
        assert!(!n.matches(&Network::parse("192.168.2.1").unwrap()));
        let m = Network::parse("10.0.0.0/255.0.0.0").unwrap();
        assert_eq!(m.prefix, 8);
        assert!(m.matches(&Network::parse("10.9.8.7").unwrap()));
        assert!(Network::parse("::1")
            .unwrap()
            .matches(&Network::parse("::1/128").unwrap()));
        assert!(Network::parse("2001:db8::/32")
            .unwrap()
            .matches(&Network::parse("2001:db8:1::5").unwrap()));
        assert!(Network::parse("1.2.3.4/33").is_none());
        assert!(Network::parse("nope").is_none());
        assert!(Network::parse("10.0.0.0/255.0.255.0").is_none());
    }

    #[test]
    fn dates_in_each_format() {
        let imf = "Sun, 06 Nov 1994 08:49:37 GMT";
        let rfc850 = "Sunday, 06-Nov-94 08:49:37 GMT";
        let asc = "Sun Nov  6 08:49:37 1994";
        for s in [imf, rfc850, asc] {
            assert_eq!(parse_http_date(s, None), Some(784111777), "{s}");
        }
        assert_eq!(parse_http_date(imf, Some(DateFormat::Imf)), Some(784111777));
        assert_eq!(parse_http_date(imf, Some(DateFormat::Rfc850)), None);
        assert_eq!(
            parse_http_date(rfc850, Some(DateFormat::Rfc850)),
            Some(784111777)
        );
        assert_eq!(
            parse_http_date(asc, Some(DateFormat::Asctime)),
            Some(784111777)
        );
        assert_eq!(parse_http_date("garbage", None), None);
    }
}
