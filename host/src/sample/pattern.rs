//! Pattern matching: the matching methods of ACLs and maps, and the
//! indexes that hold the compiled patterns of one method.
//!
//! Exact strings, prefixes (case-sensitive) and addresses are indexed so that
//! a lookup does not scan the list, and return the finest match (longest
//! prefix, longest network), the first one declared among equals. The other
//! methods keep an ordered list and return the first match. Indexes are
//! updated in place when entries are added, removed or changed at run time.

use super::{cast, str_to_int, Sample, SampleType};
use crate::config;
use bytes::Bytes;
use regex::bytes::{Regex, RegexBuilder};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// A pattern matching method (ACL `-m`, map converter suffixes, `Map.new`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchMethod {
    /// The sample exists; patterns are ignored.
    Found,
    /// The sample is true (or a non-zero integer).
    Bool,
    /// Integer value against integers and ranges.
    Int,
    /// Address against addresses and networks.
    Ip,
    /// Exact binary match against hex patterns.
    Bin,
    /// Length of the sample against integers and ranges.
    Len,
    /// Exact string.
    Str,
    /// Prefix.
    Beg,
    /// Substring.
    Sub,
    /// Slash-delimited part.
    Dir,
    /// Dot-delimited part.
    Dom,
    /// Suffix.
    End,
    /// Regular expression.
    Reg,
    /// HTTP method (the `method` fetch).
    Meth,
}

impl MatchMethod {
    /// The method called `name` (as after `-m`, or a map suffix).
    pub fn from_name(name: &str) -> Option<MatchMethod> {
        use MatchMethod::*;
        Some(match name {
            "found" => Found,
            "bool" => Bool,
            "int" => Int,
            "ip" => Ip,
            "bin" => Bin,
            "len" => Len,
            "str" => Str,
            "beg" => Beg,
            "sub" => Sub,
            "dir" => Dir,
            "dom" => Dom,
            "end" => End,
            "reg" => Reg,
            _ => return None,
        })
    }

    /// The method's name.
    pub fn name(self) -> &'static str {
        use MatchMethod::*;
        match self {
            Found => "found",
            Bool => "bool",
            Int => "int",
            Ip => "ip",
            Bin => "bin",
            Len => "len",
            Str => "str",
            Beg => "beg",
            Sub => "sub",
            Dir => "dir",
            Dom => "dom",
            End => "end",
            Reg => "reg",
            Meth => "meth",
        }
    }

    /// HAProxy's numbering of match methods, as Lua's `Map._str` ... hold.
    pub fn lua_code(self) -> i64 {
        use MatchMethod::*;
        match self {
            Found => 0,
            Bool => 1,
            Int => 2,
            Ip => 3,
            Bin => 4,
            Len => 5,
            Str => 6,
            Beg => 7,
            Sub => 8,
            Dir => 9,
            Dom => 10,
            End => 11,
            Reg => 12,
            Meth => 14,
        }
    }

    /// The method with Lua code `code`; 13 (HAProxy's "regm") reads as reg.
    pub fn from_lua_code(code: i64) -> Option<MatchMethod> {
        use MatchMethod::*;
        Some(match code {
            0 => Found,
            1 => Bool,
            2 => Int,
            3 => Ip,
            4 => Bin,
            5 => Len,
            6 => Str,
            7 => Beg,
            8 => Sub,
            9 => Dir,
            10 => Dom,
            11 => End,
            12 | 13 => Reg,
            _ => return None,
        })
    }

    /// The sample type this method reads (the sample is cast to it first).
    pub fn input_type(self) -> SampleType {
        use MatchMethod::*;
        match self {
            Found | Bool => SampleType::Any,
            Int => SampleType::Sint,
            Ip => SampleType::Ip,
            Bin => SampleType::Bin,
            Meth => SampleType::Meth,
            Len | Str | Beg | Sub | Dir | Dom | End | Reg => SampleType::Str,
        }
    }

    /// Whether `-i` changes anything for this method.
    pub fn uses_case(self) -> bool {
        use MatchMethod::*;
        matches!(self, Str | Beg | Sub | Dir | Dom | End | Reg | Meth)
    }
}

impl From<config::MatchMethod> for MatchMethod {
    fn from(m: config::MatchMethod) -> Self {
        use config::MatchMethod as C;
        match m {
            C::Found => MatchMethod::Found,
            C::Bool => MatchMethod::Bool,
            C::Int => MatchMethod::Int,
            C::Ip => MatchMethod::Ip,
            C::Bin => MatchMethod::Bin,
            C::Len => MatchMethod::Len,
            C::Str => MatchMethod::Str,
            C::Sub => MatchMethod::Sub,
            C::Reg => MatchMethod::Reg,
            C::Beg => MatchMethod::Beg,
            C::End => MatchMethod::End,
            C::Dir => MatchMethod::Dir,
            C::Dom => MatchMethod::Dom,
        }
    }
}

/// One pattern as written (the key) and its map value (empty for ACLs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The pattern as written.
    pub key: Bytes,
    /// The map value (empty for ACL lists).
    pub value: Bytes,
}

/// An inclusive integer range; open ends are i64::MIN / i64::MAX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// The lowest value in the range.
    pub min: i64,
    /// The highest value in the range.
    pub max: i64,
}

impl Range {
    fn contains(&self, v: i64) -> bool {
        self.min <= v && v <= self.max
    }
}

/// Parses an integer pattern as HAProxy does (see `int_pattern`).
pub fn parse_range(text: &str) -> Result<Range, String> {
    super::int_pattern::parse_int_pattern(text)
}

/// Parses an address pattern: an IPv4 address (short forms allowed) with an
/// optional `/bits` or `/dotted.mask`, or an IPv6 address with `/bits`.
/// Returns the network (host bits cleared) and its prefix length.
pub fn parse_net(text: &str) -> Result<(IpAddr, u8), String> {
    let bad = || format!("'{text}' is not a valid IPv4 or IPv6 address or network");
    let (addr, mask) = match text.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (text, None),
    };
    let ip = super::parse_ip(addr).ok_or_else(bad)?;
    match ip {
        IpAddr::V4(a) => {
            let bits = match mask {
                None => 32,
                Some(m) if !m.is_empty() && m.bytes().all(|c| c.is_ascii_digit()) => {
                    m.parse::<u8>().ok().filter(|b| *b <= 32).ok_or_else(bad)?
                }
                Some(m) => {
                    let mv = u32::from(m.parse::<Ipv4Addr>().map_err(|_| bad())?);
                    // Only contiguous masks describe a network.
                    if mv.leading_ones() + mv.trailing_zeros() != 32 {
                        return Err(format!("'{text}': the netmask must be contiguous"));
                    }
                    mv.leading_ones() as u8
                }
            };
            Ok((
                IpAddr::V4(Ipv4Addr::from(mask_v4(u32::from(a), bits))),
                bits,
            ))
        }
        IpAddr::V6(a) => {
            let bits = match mask {
                None => 128,
                Some(m) => m.parse::<u8>().ok().filter(|b| *b <= 128).ok_or_else(bad)?,
            };
            Ok((
                IpAddr::V6(Ipv6Addr::from(mask_v6(u128::from(a), bits))),
                bits,
            ))
        }
    }
}

pub(crate) fn mask_v4(a: u32, bits: u8) -> u32 {
    if bits == 0 {
        0
    } else {
        a & (u32::MAX << (32 - bits as u32))
    }
}

pub(crate) fn mask_v6(a: u128, bits: u8) -> u128 {
    if bits == 0 {
        0
    } else {
        a & (u128::MAX << (128 - bits as u32))
    }
}

/// Decodes a hex pattern (`-m bin`).
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err(format!("'{text}' is not an even number of hex digits"));
    }
    b.chunks(2)
        .map(|p| {
            let h = (p[0] as char).to_digit(16);
            let l = (p[1] as char).to_digit(16);
            match (h, l) {
                (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
                _ => Err(format!("'{text}' is not a valid hex string")),
            }
        })
        .collect()
}

/// Compiles a regex pattern.
pub fn compile_regex(text: &str, icase: bool) -> Result<Regex, String> {
    RegexBuilder::new(text)
        .case_insensitive(icase)
        .build()
        .map_err(|e| format!("invalid regex '{text}': {e}"))
}

fn lower(b: &[u8]) -> Vec<u8> {
    b.to_ascii_lowercase()
}

/// Finds `pat` in `s` bounded by delimiters (or the ends) on both sides
/// (HAProxy's dir and dom matching). `pat` was stripped of leading and
/// trailing delimiters and lowercased when `icase`.
fn match_word(s: &[u8], pat: &[u8], delims: &[u8], icase: bool) -> bool {
    let n = pat.len();
    if n == 0 || n > s.len() {
        return false;
    }
    let mut at_boundary = true;
    for i in 0..=(s.len() - n) {
        if delims.contains(&s[i]) {
            at_boundary = true;
            continue;
        }
        if at_boundary {
            let w = &s[i..i + n];
            let same = if icase {
                w.eq_ignore_ascii_case(pat)
            } else {
                w == pat
            };
            if same && (i + n == s.len() || delims.contains(&s[i + n])) {
                return true;
            }
        }
        at_boundary = false;
    }
    false
}

const DIR_DELIMS: &[u8] = b"/?";
const DOM_DELIMS: &[u8] = b"/?.:";

fn trim_delims<'a>(p: &'a [u8], delims: &[u8]) -> &'a [u8] {
    let start = p
        .iter()
        .position(|c| !delims.contains(c))
        .unwrap_or(p.len());
    let end = p
        .iter()
        .rposition(|c| !delims.contains(c))
        .map_or(start, |e| e + 1);
    &p[start..end.max(start)]
}

/// A compiled list pattern.
#[derive(Debug)]
enum ListPat {
    /// Bytes to compare (lowercased when case-insensitive).
    Bytes(Vec<u8>),
    Regex(Arc<Regex>),
    Range(Range),
}

#[derive(Debug)]
struct ListItem {
    pat: ListPat,
    entry: Entry,
}

/// Entries by normalized key; several entries may share a key (the first
/// one wins, the others show up when it is removed).
type Multi<K> = HashMap<K, Vec<Entry>>;

#[derive(Debug)]
enum Index {
    /// No pattern is consulted (found, bool).
    Nothing,
    /// Exact match on normalized bytes (str, bin).
    Exact(Multi<Vec<u8>>),
    /// Longest prefix (case-sensitive beg); `lens` counts keys per length.
    Prefix {
        keys: Multi<Vec<u8>>,
        lens: BTreeMap<usize, usize>,
    },
    /// Longest network first.
    Ip {
        v4: BTreeMap<u8, Multi<u32>>,
        v6: BTreeMap<u8, Multi<u128>>,
    },
    /// First match in declaration order.
    List(Vec<ListItem>),
}

/// The compiled patterns of one matching method (and case sensitivity).
#[derive(Debug)]
pub struct PatternIndex {
    method: MatchMethod,
    icase: bool,
    index: Index,
}

fn remove_from<K: std::hash::Hash + Eq>(m: &mut Multi<K>, nk: K, key: &[u8]) -> usize {
    let mut removed = 0;
    if let Some(v) = m.get_mut(&nk) {
        let before = v.len();
        v.retain(|e| e.key != key);
        removed = before - v.len();
        if v.is_empty() {
            m.remove(&nk);
        }
    }
    removed
}

impl PatternIndex {
    /// An empty index for `method`; `icase` is ignored by methods that
    /// have no case.
    pub fn new(method: MatchMethod, icase: bool) -> PatternIndex {
        use MatchMethod::*;
        let icase = icase && method.uses_case();
        let index = match method {
            Found | Bool => Index::Nothing,
            Str | Bin => Index::Exact(HashMap::new()),
            Beg if !icase => Index::Prefix {
                keys: HashMap::new(),
                lens: BTreeMap::new(),
            },
            Ip => Index::Ip {
                v4: BTreeMap::new(),
                v6: BTreeMap::new(),
            },
            _ => Index::List(Vec::new()),
        };
        PatternIndex {
            method,
            icase,
            index,
        }
    }

    /// The matching method.
    pub fn method(&self) -> MatchMethod {
        self.method
    }

    /// Whether matching ignores case.
    pub fn icase(&self) -> bool {
        self.icase
    }

    /// Checks that `key` is a valid pattern for this method.
    pub fn check(&self, key: &[u8]) -> Result<(), String> {
        self.compile(key).map(|_| ())
    }

    fn text(key: &[u8]) -> Result<&str, String> {
        std::str::from_utf8(key).map_err(|_| "pattern is not valid UTF-8".to_string())
    }

    /// The normalized or compiled form of a key.
    fn compile(&self, key: &[u8]) -> Result<Compiled, String> {
        use MatchMethod::*;
        let norm = |k: &[u8]| if self.icase { lower(k) } else { k.to_vec() };
        Ok(match self.method {
            Found | Bool => Compiled::Nothing,
            Str | Beg | Sub | End | Meth => Compiled::Bytes(norm(key)),
            Bin => Compiled::Bytes(parse_hex(Self::text(key)?)?),
            Dir => Compiled::Bytes(norm(trim_delims(key, DIR_DELIMS))),
            Dom => Compiled::Bytes(norm(trim_delims(key, DOM_DELIMS))),
            Int | Len => Compiled::Range(parse_range(Self::text(key)?)?),
            Reg => Compiled::Regex(Arc::new(compile_regex(Self::text(key)?, self.icase)?)),
            Ip => {
                let (net, bits) = parse_net(Self::text(key)?)?;
                Compiled::Net(net, bits)
            }
        })
    }

    /// Adds an entry at the end (it loses against earlier equal keys).
    pub fn add(&mut self, entry: Entry) -> Result<(), String> {
        let c = self.compile(&entry.key)?;
        match (&mut self.index, c) {
            (Index::Nothing, _) => {}
            (Index::Exact(m), Compiled::Bytes(k)) => m.entry(k).or_default().push(entry),
            (Index::Prefix { keys, lens }, Compiled::Bytes(k)) => {
                *lens.entry(k.len()).or_default() += 1;
                keys.entry(k).or_default().push(entry);
            }
            (Index::Ip { v4, .. }, Compiled::Net(IpAddr::V4(a), bits)) => v4
                .entry(bits)
                .or_default()
                .entry(u32::from(a))
                .or_default()
                .push(entry),
            (Index::Ip { v6, .. }, Compiled::Net(IpAddr::V6(a), bits)) => v6
                .entry(bits)
                .or_default()
                .entry(u128::from(a))
                .or_default()
                .push(entry),
            (Index::List(l), c) => {
                let pat = match c {
                    Compiled::Bytes(b) => ListPat::Bytes(b),
                    Compiled::Regex(r) => ListPat::Regex(r),
                    Compiled::Range(r) => ListPat::Range(r),
                    Compiled::Nothing | Compiled::Net(..) => {
                        return Err("internal: pattern kind mismatch".to_string())
                    }
                };
                l.push(ListItem { pat, entry });
            }
            _ => return Err("internal: pattern kind mismatch".to_string()),
        }
        Ok(())
    }

    /// Removes every entry whose key is `key`; returns how many.
    pub fn remove(&mut self, key: &[u8]) -> usize {
        let compiled = self.compile(key).ok();
        match (&mut self.index, compiled) {
            (Index::Nothing, _) => 0,
            (Index::Exact(m), Some(Compiled::Bytes(k))) => remove_from(m, k, key),
            (Index::Prefix { keys, lens }, Some(Compiled::Bytes(k))) => {
                let len = k.len();
                let n = remove_from(keys, k, key);
                if n > 0 {
                    if let Some(c) = lens.get_mut(&len) {
                        *c = c.saturating_sub(n);
                        if *c == 0 {
                            lens.remove(&len);
                        }
                    }
                }
                n
            }
            (Index::Ip { v4, .. }, Some(Compiled::Net(IpAddr::V4(a), bits))) => {
                let Some(m) = v4.get_mut(&bits) else { return 0 };
                let n = remove_from(m, u32::from(a), key);
                if m.is_empty() {
                    v4.remove(&bits);
                }
                n
            }
            (Index::Ip { v6, .. }, Some(Compiled::Net(IpAddr::V6(a), bits))) => {
                let Some(m) = v6.get_mut(&bits) else { return 0 };
                let n = remove_from(m, u128::from(a), key);
                if m.is_empty() {
                    v6.remove(&bits);
                }
                n
            }
            (Index::List(l), _) => {
                let before = l.len();
                l.retain(|i| i.entry.key != key);
                before - l.len()
            }
            _ => 0,
        }
    }

    /// Sets the value of every entry whose key is `key`; returns how many.
    pub fn set_value(&mut self, key: &[u8], value: &Bytes) -> usize {
        let mut n = 0;
        let mut upd = |e: &mut Entry| {
            if e.key == key {
                e.value = value.clone();
                n += 1;
            }
        };
        match &mut self.index {
            Index::Nothing => {}
            Index::Exact(m) | Index::Prefix { keys: m, .. } => {
                m.values_mut().flatten().for_each(&mut upd)
            }
            Index::Ip { v4, v6 } => {
                v4.values_mut()
                    .flat_map(|m| m.values_mut())
                    .flatten()
                    .for_each(&mut upd);
                v6.values_mut()
                    .flat_map(|m| m.values_mut())
                    .flatten()
                    .for_each(&mut upd);
            }
            Index::List(l) => l.iter_mut().for_each(|i| upd(&mut i.entry)),
        }
        n
    }

    /// The entry matching `sample`, if any (None for found/bool, which
    /// have no entries: use [`PatternIndex::matches`]).
    pub fn lookup(&self, sample: &Sample) -> Option<&Entry> {
        let s = cast(sample.clone(), self.method.input_type())?;
        match &self.index {
            Index::Nothing => None,
            Index::Exact(m) => {
                let b = sample_bytes(&s)?;
                let hit = if self.icase {
                    m.get(&lower(b))
                } else {
                    m.get(b)
                };
                hit.and_then(|v| v.first())
            }
            Index::Prefix { keys, lens } => {
                let b = sample_bytes(&s)?;
                lens.keys()
                    .rev()
                    .filter(|&&l| l <= b.len())
                    .find_map(|&l| keys.get(&b[..l]).and_then(|v| v.first()))
            }
            Index::Ip { v4, v6 } => {
                let Sample::Ip(ip) = s else { return None };
                lookup_ip(v4, v6, ip)
            }
            Index::List(l) => l
                .iter()
                .find(|i| self.item_matches(&i.pat, &s))
                .map(|i| &i.entry),
        }
    }

    /// Like `lookup` for a regex index, also returning the capture groups
    /// of the matching regex (for `map_regm`).
    pub fn lookup_captures(&self, sample: &Sample) -> Option<(&Entry, Vec<Option<Vec<u8>>>)> {
        let s = cast(sample.clone(), SampleType::Str)?;
        let b = sample_bytes(&s)?;
        let Index::List(l) = &self.index else {
            return None;
        };
        l.iter().find_map(|i| match &i.pat {
            ListPat::Regex(r) => r.captures(b).map(|c| {
                let caps = c.iter().map(|m| m.map(|m| m.as_bytes().to_vec())).collect();
                (&i.entry, caps)
            }),
            _ => None,
        })
    }

    /// Whether `sample` matches (found and bool need no pattern).
    pub fn matches(&self, sample: &Sample) -> bool {
        match self.method {
            MatchMethod::Found => true,
            MatchMethod::Bool => match sample {
                Sample::Bool(b) => *b,
                Sample::Sint(i) => *i != 0,
                Sample::Str(b) => str_to_int(b) != 0,
                _ => false,
            },
            _ => self.lookup(sample).is_some(),
        }
    }

    fn item_matches(&self, pat: &ListPat, s: &Sample) -> bool {
        use MatchMethod::*;
        match (self.method, pat) {
            (Int, ListPat::Range(r)) => matches!(s, Sample::Sint(v) if r.contains(*v)),
            (Len, ListPat::Range(r)) => {
                sample_bytes(s).is_some_and(|b| r.contains(b.len().min(i64::MAX as usize) as i64))
            }
            (Reg, ListPat::Regex(r)) => sample_bytes(s).is_some_and(|b| r.is_match(b)),
            (m, ListPat::Bytes(p)) => {
                let Some(b) = sample_bytes(s) else {
                    return false;
                };
                let folded;
                let b = if self.icase {
                    folded = lower(b);
                    &folded[..]
                } else {
                    b
                };
                match m {
                    Beg => b.starts_with(p),
                    End => b.ends_with(p),
                    Sub => p.is_empty() || b.windows(p.len()).any(|w| w == &p[..]),
                    Dir => match_word(b, p, DIR_DELIMS, false),
                    Dom => match_word(b, p, DOM_DELIMS, false),
                    Str | Meth => b == &p[..],
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

enum Compiled {
    Nothing,
    Bytes(Vec<u8>),
    Regex(Arc<Regex>),
    Range(Range),
    Net(IpAddr, u8),
}

fn sample_bytes(s: &Sample) -> Option<&[u8]> {
    match s {
        Sample::Str(b) | Sample::Bin(b) | Sample::Meth(b) => Some(b),
        _ => None,
    }
}

fn lookup_v4(v4: &BTreeMap<u8, Multi<u32>>, a: Ipv4Addr) -> Option<&Entry> {
    let a = u32::from(a);
    v4.iter()
        .rev()
        .find_map(|(bits, m)| m.get(&mask_v4(a, *bits)).and_then(|v| v.first()))
}

fn lookup_v6(v6: &BTreeMap<u8, Multi<u128>>, a: Ipv6Addr) -> Option<&Entry> {
    let a = u128::from(a);
    v6.iter()
        .rev()
        .find_map(|(bits, m)| m.get(&mask_v6(a, *bits)).and_then(|v| v.first()))
}

/// The IPv4 address an IPv6 address carries, for matching against IPv4
/// patterns: `::ffff:a.b.c.d`, `::a.b.c.d` or 6to4 `2002:AABB:CCDD::`.
pub(crate) fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = a.octets();
    let seg = a.segments();
    if o[..10].iter().all(|&b| b == 0)
        && ((o[10] == 0xff && o[11] == 0xff) || (o[10] == 0 && o[11] == 0))
    {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

fn lookup_ip<'a>(
    v4: &'a BTreeMap<u8, Multi<u32>>,
    v6: &'a BTreeMap<u8, Multi<u128>>,
    ip: IpAddr,
) -> Option<&'a Entry> {
    match ip {
        IpAddr::V4(a) => lookup_v4(v4, a).or_else(|| lookup_v6(v6, a.to_ipv6_mapped())),
        IpAddr::V6(a) => lookup_v6(v6, a).or_else(|| lookup_v4(v4, embedded_v4(a)?)),
    }
}

/// Expands `\1`..`\9` in `value` with the capture groups (`map_regm`).
pub fn expand_backrefs(value: &[u8], caps: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'\\' && i + 1 < value.len() && value[i + 1].is_ascii_digit() {
            let n = (value[i + 1] - b'0') as usize;
            if let Some(Some(c)) = caps.get(n) {
                out.extend_from_slice(c);
            }
            i += 2;
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::testutil::s;

    fn idx(method: MatchMethod, icase: bool, keys: &[&str]) -> PatternIndex {
        let mut i = PatternIndex::new(method, icase);
        for (n, k) in keys.iter().enumerate() {
            i.add(Entry {
                key: Bytes::copy_from_slice(k.as_bytes()),
                value: Bytes::from(format!("v{n}")),
            })
            .unwrap();
        }
        i
    }

    fn hit(i: &PatternIndex, v: Sample) -> Option<String> {
        i.lookup(&v)
            .map(|e| String::from_utf8_lossy(&e.value).into_owned())
    }

    #[test]
    fn exact_and_case() {
        let i = idx(MatchMethod::Str, false, &["abc", "ABC", "abc"]);
        assert_eq!(hit(&i, s("abc")).as_deref(), Some("v0"));
        assert_eq!(hit(&i, s("ABC")).as_deref(), Some("v1"));
        assert_eq!(hit(&i, s("abcd")), None);
        let i = idx(MatchMethod::Str, true, &["ABC"]);
        assert_eq!(hit(&i, s("aBc")).as_deref(), Some("v0"));
        // Integers are matched as their text.
        let i = idx(MatchMethod::Str, false, &["42"]);
        assert!(i.matches(&Sample::Sint(42)));
    }

    #[test]
    fn prefixes_longest_wins() {
        let i = idx(MatchMethod::Beg, false, &["/api", "/api/v2", "/"]);
        assert_eq!(hit(&i, s("/api/v2/x")).as_deref(), Some("v1"));
        assert_eq!(hit(&i, s("/api/v1")).as_deref(), Some("v0"));
        assert_eq!(hit(&i, s("/x")).as_deref(), Some("v2"));
        assert_eq!(hit(&i, s("x")), None);
        // Case-insensitive prefixes keep declaration order.
        let i = idx(MatchMethod::Beg, true, &["/API", "/api/V2"]);
        assert_eq!(hit(&i, s("/Api/v2/x")).as_deref(), Some("v0"));
        assert_eq!(hit(&i, s("/b")), None);
    }

    #[test]
    fn suffix_substring_regex() {
        let i = idx(MatchMethod::End, false, &[".png", ".jpg"]);
        assert_eq!(hit(&i, s("/a/b.jpg")).as_deref(), Some("v1"));
        assert_eq!(hit(&i, s("/a/b.JPG")), None);
        let i = idx(MatchMethod::End, true, &[".png", ".jpg"]);
        assert_eq!(hit(&i, s("/a/b.JPG")).as_deref(), Some("v1"));
        let i = idx(MatchMethod::Sub, false, &["admin", "root"]);
        assert_eq!(hit(&i, s("/x/root/y")).as_deref(), Some("v1"));
        assert_eq!(hit(&i, s("/x/ro/y")), None);
        let i = idx(MatchMethod::Reg, false, &["^/api/v[0-9]+/", "x$"]);
        assert_eq!(hit(&i, s("/api/v12/users")).as_deref(), Some("v0"));
        assert_eq!(hit(&i, s("/api/vx/usersx")).as_deref(), Some("v1"));
        assert_eq!(hit(&i, s("/API/v1/")), None);
        let i = idx(MatchMethod::Reg, true, &["^/api/v[0-9]+/"]);
        assert_eq!(hit(&i, s("/API/V1/")).as_deref(), Some("v0"));
        assert!(PatternIndex::new(MatchMethod::Reg, false)
            .check(b"(")
            .is_err());
    }

    #[test]
    fn dir_and_dom_as_documented() {
        // The manual's example, except that "png" does match: it is a
        // slash-delimited part, and HAProxy 2.6 matches it too.
        let subject = s("/images/png/logo/32x32.png");
        for ok in [
            "/images",
            "/images/png",
            "images/png",
            "/png/logo",
            "logo/32x32.png",
            "32x32.png",
            "png",
        ] {
            let i = idx(MatchMethod::Dir, false, &[ok]);
            assert!(i.matches(&subject), "dir {ok}");
        }
        for ko in ["32x32", "image", "pn"] {
            let i = idx(MatchMethod::Dir, false, &[ko]);
            assert!(!i.matches(&subject), "dir {ko}");
        }
        let subject = s("http://www1.dc-eu.example.com:80/blah");
        for ok in [
            "http",
            "www1",
            ".www1",
            "dc-eu",
            "example",
            "com",
            "80",
            "dc-eu.example",
            "blah",
            ":www1:",
        ] {
            let i = idx(MatchMethod::Dom, false, &[ok]);
            assert!(i.matches(&subject), "dom {ok}");
        }
        for ko in ["eu", "dc", "ww1", ""] {
            let i = idx(MatchMethod::Dom, false, &[ko]);
            assert!(!i.matches(&subject), "dom {ko}");
        }
        let i = idx(MatchMethod::Dom, true, &["EXAMPLE.com"]);
        assert!(i.matches(&s("www.Example.COM")));
    }

    #[test]
    fn integers_and_lengths() {
        let i = idx(MatchMethod::Int, false, &["5", "10:20", ":-1", "1000:"]);
        assert_eq!(hit(&i, Sample::Sint(5)).as_deref(), Some("v0"));
        assert_eq!(hit(&i, Sample::Sint(15)).as_deref(), Some("v1"));
        assert_eq!(hit(&i, Sample::Sint(-7)).as_deref(), Some("v2"));
        assert_eq!(hit(&i, Sample::Sint(5000)).as_deref(), Some("v3"));
        assert_eq!(hit(&i, Sample::Sint(6)), None);
        // Booleans and strings are cast to integers.
        let i = idx(MatchMethod::Int, false, &["1"]);
        assert!(i.matches(&Sample::Bool(true)));
        assert!(i.matches(&s("1")));
        let i = idx(MatchMethod::Len, false, &["3", "10:"]);
        assert!(i.matches(&s("abc")));
        assert!(!i.matches(&s("abcd")));
        assert!(i.matches(&s("0123456789")));
        assert!(parse_range("x").is_err());
        assert!(parse_range(":").is_err());
        assert!(parse_range("-5:-1").is_err());
        assert_eq!(
            parse_range(":-1").unwrap(),
            Range {
                min: i64::MIN,
                max: -1
            }
        );
    }

    #[test]
    fn addresses() {
        let i = idx(
            MatchMethod::Ip,
            false,
            &[
                "10.0.0.0/8",
                "10.1.0.0/16",
                "192.168.1.5",
                "2001:db8::/32",
                "127.1/8",
                "172.16.0.0/255.240.0.0",
            ],
        );
        let ip = |t: &str| Sample::Ip(t.parse().unwrap());
        assert_eq!(hit(&i, ip("10.1.2.3")).as_deref(), Some("v1"));
        assert_eq!(hit(&i, ip("10.2.2.3")).as_deref(), Some("v0"));
        assert_eq!(hit(&i, ip("192.168.1.5")).as_deref(), Some("v2"));
        assert_eq!(hit(&i, ip("192.168.1.6")), None);
        assert_eq!(hit(&i, ip("2001:db8:1::5")).as_deref(), Some("v3"));
        assert_eq!(hit(&i, ip("127.0.0.1")).as_deref(), Some("v4"));
        assert_eq!(hit(&i, ip("172.20.0.1")).as_deref(), Some("v5"));
        // IPv6 forms that carry an IPv4 address match IPv4 patterns.
        assert_eq!(hit(&i, ip("::ffff:10.1.0.1")).as_deref(), Some("v1"));
        assert_eq!(hit(&i, ip("2002:0a01:0001::")).as_deref(), Some("v1"));
        // Strings are parsed.
        assert_eq!(hit(&i, s("192.168.1.5")).as_deref(), Some("v2"));
        assert_eq!(hit(&i, s("nope")), None);
        // IPv4 samples match IPv6 patterns through ::ffff:0:0/96.
        let i = idx(MatchMethod::Ip, false, &["::ffff:0:0/96"]);
        assert!(i.matches(&ip("1.2.3.4")));
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("10.0.0.0/255.0.255.0").is_err());
        assert!(parse_net("host.example").is_err());
        assert!(parse_net("::1/129").is_err());
    }

    #[test]
    fn binary_found_bool() {
        let i = idx(MatchMethod::Bin, false, &["48656c6c6f0a"]);
        assert!(i.matches(&Sample::Bin(Bytes::from_static(b"Hello\n"))));
        assert!(!i.matches(&Sample::Bin(Bytes::from_static(b"Hello"))));
        assert!(PatternIndex::new(MatchMethod::Bin, false)
            .check(b"abc")
            .is_err());
        assert!(PatternIndex::new(MatchMethod::Bin, false)
            .check(b"zz")
            .is_err());
        let f = PatternIndex::new(MatchMethod::Found, false);
        assert!(f.matches(&s("")));
        let b = PatternIndex::new(MatchMethod::Bool, false);
        assert!(b.matches(&Sample::Bool(true)));
        assert!(!b.matches(&Sample::Bool(false)));
        assert!(b.matches(&Sample::Sint(3)));
        assert!(!b.matches(&Sample::Sint(0)));
    }

    #[test]
    fn runtime_changes() {
        let mut i = idx(MatchMethod::Str, true, &["A", "a"]);
        assert_eq!(hit(&i, s("a")).as_deref(), Some("v0"));
        assert_eq!(i.remove(b"A"), 1);
        assert_eq!(hit(&i, s("a")).as_deref(), Some("v1"));
        assert_eq!(i.set_value(b"a", &Bytes::from_static(b"new")), 1);
        assert_eq!(hit(&i, s("A")).as_deref(), Some("new"));
        assert_eq!(i.remove(b"a"), 1);
        assert_eq!(hit(&i, s("a")), None);

        let mut i = idx(MatchMethod::Beg, false, &["/a", "/a/b"]);
        assert_eq!(i.remove(b"/a/b"), 1);
        assert_eq!(hit(&i, s("/a/b/c")).as_deref(), Some("v0"));
        let mut i = idx(MatchMethod::Ip, false, &["10.0.0.0/8"]);
        assert_eq!(i.remove(b"10.0.0.0/8"), 1);
        assert!(!i.matches(&Sample::Ip("10.1.1.1".parse().unwrap())));
        let mut i = idx(MatchMethod::Sub, false, &["x", "y"]);
        assert_eq!(i.remove(b"x"), 1);
        assert_eq!(hit(&i, s("xy")).as_deref(), Some("v1"));
    }

    #[test]
    fn regm_backrefs() {
        let i = idx(MatchMethod::Reg, false, &["^/u/([a-z]+)/([0-9]+)"]);
        let (e, caps) = i.lookup_captures(&s("/u/bob/42/x")).unwrap();
        assert_eq!(e.key, Bytes::from_static(b"^/u/([a-z]+)/([0-9]+)"));
        assert_eq!(
            expand_backrefs(b"id=\\2 name=\\1 \\9", &caps),
            b"id=42 name=bob ".to_vec()
        );
    }

    #[test]
    fn lua_codes_round_trip() {
        for m in [
            "found", "bool", "int", "ip", "bin", "len", "str", "beg", "sub", "dir", "dom", "end",
            "reg",
        ] {
            let m = MatchMethod::from_name(m).unwrap();
            assert_eq!(MatchMethod::from_lua_code(m.lua_code()), Some(m));
        }
        assert_eq!(MatchMethod::from_lua_code(13), Some(MatchMethod::Reg));
        assert_eq!(MatchMethod::from_lua_code(99), None);
    }
}
