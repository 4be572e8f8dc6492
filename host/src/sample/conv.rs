//! Native converters: the transformations that follow a fetch in a sample
//! expression (`,lower`, `,crc32(1)`, `,map_beg(file,default)` ...).
//!
//! Each converter declares the type it reads; the engine casts its input
//! to that type first (a failed cast fails the expression).

use super::expr::{prepare_args, var_value, Arg, ArgKind};
use super::hash;
use super::map::MapFile;
use super::pattern::{self, MatchMethod};
use super::{cast, parse_ip, Sample, SampleCtx, SampleType};
use base64::Engine;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// A converter function: input (already cast), compiled arguments, context.
pub type ConvFn = fn(Sample, &[Arg], &SampleCtx) -> Option<Sample>;
/// Validates and completes compiled arguments; gets the name as written
/// (the map family derives its method from it).
pub type CheckFn = fn(&str, &mut [Arg]) -> Result<(), String>;

/// A converter keyword.
#[derive(Debug)]
pub struct ConvKw {
    /// The name as written in the configuration.
    pub name: &'static str,
    /// The type it reads.
    pub input: SampleType,
    /// The type it produces.
    pub out: SampleType,
    /// Its arguments' kinds.
    pub args: &'static [ArgKind],
    /// How many arguments are mandatory.
    pub min: usize,
    /// The converter itself.
    pub f: ConvFn,
    /// Extra argument validation.
    pub check: Option<CheckFn>,
}

impl ConvKw {
    const fn new(
        name: &'static str,
        input: SampleType,
        out: SampleType,
        args: &'static [ArgKind],
        min: usize,
        f: ConvFn,
    ) -> ConvKw {
        ConvKw {
            name,
            input,
            out,
            args,
            min,
            f,
            check: None,
        }
    }
    const fn check(mut self, c: CheckFn) -> ConvKw {
        self.check = Some(c);
        self
    }
}

/// What a map converter returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOut {
    /// The value as a string (`map_*`, `map_*_str`).
    Str,
    /// The value as an integer (`map_*_int`).
    Int,
    /// The value as an address (`map_*_ip`).
    Ip,
    /// The matching key instead of the value.
    Key,
}

/// How a map converter looks up (derived from its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// How keys are matched.
    pub method: MatchMethod,
    /// `map_regm`: `\N` in the value is replaced by capture groups.
    pub regm: bool,
    /// What is returned.
    pub out: MapOut,
}

/// Reads a map converter name: `map`, `map_<match>`, `map_<match>_<out>`.
pub fn map_spec(name: &str) -> Option<MapSpec> {
    let rest = name.strip_prefix("map")?;
    let mut parts = rest.split('_').skip(1);
    if rest.is_empty() {
        return Some(MapSpec {
            method: MatchMethod::Str,
            regm: false,
            out: MapOut::Str,
        });
    }
    if !rest.starts_with('_') {
        return None;
    }
    let m = parts.next()?;
    let (method, regm) = match m {
        "regm" => (MatchMethod::Reg, true),
        "found" | "bool" | "len" | "bin" => return None,
        m => (MatchMethod::from_name(m)?, false),
    };
    let out = match parts.next() {
        None | Some("str") => MapOut::Str,
        Some("int") => MapOut::Int,
        Some("ip") => MapOut::Ip,
        Some("key") => MapOut::Key,
        Some(_) => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(MapSpec { method, regm, out })
}

fn table() -> &'static HashMap<&'static str, &'static ConvKw> {
    static T: OnceLock<HashMap<&'static str, &'static ConvKw>> = OnceLock::new();
    T.get_or_init(|| CONVERTERS.iter().map(|k| (k.name, k)).collect())
}

/// The converter keyword called `name` (all `map_*` forms share one).
pub fn find(name: &str) -> Option<&'static ConvKw> {
    if let Some(k) = table().get(name) {
        return Some(k);
    }
    map_spec(name).map(|_| &MAP_KW)
}

/// Whether a native converter called `name` exists.
pub fn exists(name: &str) -> bool {
    find(name).is_some()
}

/// The names of all native converters (the map family by its base forms).
pub fn names() -> impl Iterator<Item = &'static str> {
    const MAPS: &[&str] = &[
        "map", "map_str", "map_beg", "map_sub", "map_dir", "map_dom", "map_end", "map_reg",
        "map_regm", "map_int", "map_ip",
    ];
    CONVERTERS
        .iter()
        .map(|k| k.name)
        .chain(MAPS.iter().copied())
}

/// The type converter `kw` produces when written as `name`.
pub fn out_type(kw: &ConvKw, name: &str) -> SampleType {
    if std::ptr::eq(kw, &MAP_KW) {
        return match map_spec(name).map(|s| s.out) {
            Some(MapOut::Int) => SampleType::Sint,
            Some(MapOut::Ip) => SampleType::Ip,
            _ => SampleType::Str,
        };
    }
    kw.out
}

/// Compiles the textual arguments of `kw` written as `name`.
pub fn prepare(kw: &ConvKw, name: &str, raw: &[String]) -> Result<Vec<Arg>, String> {
    let what = format!("converter '{name}'");
    let mut args = prepare_args(&what, raw, kw.args, kw.min)?;
    if std::ptr::eq(kw, &MAP_KW) {
        // A slot for the lookup spec the check derives from the name.
        args.push(Arg::None);
    }
    if let Some(c) = kw.check {
        c(name, &mut args).map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(args)
}

/// Runs converter `name` (native, or `lua.NAME`) on `input` with textual
/// arguments: Err for an unknown converter or bad arguments, Ok(None) when
/// the conversion fails.
pub fn call(
    name: &str,
    input: Sample,
    args: &[String],
    ctx: &SampleCtx,
) -> Result<Option<Sample>, String> {
    if let Some(l) = name.strip_prefix("lua.") {
        return Ok(ctx.lua.convert(l, ctx.txn, input, args));
    }
    let kw = find(name).ok_or_else(|| format!("unknown converter '{name}'"))?;
    let raw: Vec<String> = if args.is_empty() && kw.min > 0 {
        vec![String::new()]
    } else {
        args.to_vec()
    };
    let a = prepare(kw, name, &raw)?;
    Ok(cast(input, kw.input).and_then(|i| (kw.f)(i, &a, ctx)))
}

use ArgKind as A;
use SampleType as T;

static MAP_KW: ConvKw =
    ConvKw::new("map", T::Any, T::Str, &[A::Map, A::Str], 1, c_map).check(check_map);

static CONVERTERS: &[ConvKw] = &[
    ConvKw::new("lower", T::Str, T::Str, &[], 0, |s, _, _| {
        map_bytes(s, |b| b.to_ascii_lowercase())
    }),
    ConvKw::new("upper", T::Str, T::Str, &[], 0, |s, _, _| {
        map_bytes(s, |b| b.to_ascii_uppercase())
    }),
    ConvKw::new("length", T::Str, T::Sint, &[], 0, c_len),
    ConvKw::new("len", T::Str, T::Sint, &[], 0, c_len),
    ConvKw::new("base64", T::Bin, T::Str, &[], 0, |s, _, _| {
        str_out(b64(&s).as_bytes())
    }),
    ConvKw::new("b64dec", T::Str, T::Bin, &[], 0, |s, _, _| {
        base64::engine::general_purpose::STANDARD
            .decode(bytes(&s))
            .ok()
            .map(|v| Sample::Bin(Bytes::from(v)))
    }),
    ConvKw::new("ub64enc", T::Str, T::Str, &[], 0, |s, _, _| {
        str_out(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(bytes(&s))
                .as_bytes(),
        )
    }),
    ConvKw::new("ub64dec", T::Str, T::Str, &[], 0, c_ub64dec),
    ConvKw::new("hex", T::Bin, T::Str, &[], 0, |s, _, _| {
        str_out(hex_upper(bytes(&s)).as_bytes())
    }),
    ConvKw::new("hex2i", T::Str, T::Sint, &[], 0, c_hex2i),
    ConvKw::new(
        "be2hex",
        T::Bin,
        T::Str,
        &[A::Str, A::Int, A::Int],
        0,
        c_be2hex,
    ),
    ConvKw::new("base2", T::Bin, T::Str, &[], 0, |s, _, _| {
        let v: String = bytes(&s).iter().map(|b| format!("{b:08b}")).collect();
        str_out(v.as_bytes())
    }),
    // Integer arithmetic and logic; arguments may be variables.
    ConvKw::new("add", T::Sint, T::Sint, &[A::IntOrVar], 1, |s, a, c| {
        arith(s, a, c, i64::saturating_add)
    }),
    ConvKw::new("sub", T::Sint, T::Sint, &[A::IntOrVar], 1, |s, a, c| {
        arith(s, a, c, i64::saturating_sub)
    }),
    ConvKw::new("mul", T::Sint, T::Sint, &[A::IntOrVar], 1, |s, a, c| {
        arith(s, a, c, i64::saturating_mul)
    }),
    // Division by zero gives the largest integer, modulo by zero 0.
    ConvKw::new("div", T::Sint, T::Sint, &[A::IntOrVar], 1, |s, a, c| {
        arith(s, a, c, |x, y| {
            if y == 0 {
                i64::MAX
            } else {
                x.saturating_div(y)
            }
        })
    }),
    ConvKw::new("mod", T::Sint, T::Sint, &[A::IntOrVar], 1, |s, a, c| {
        arith(s, a, c, |x, y| {
            if y == 0 {
                0
            } else {
                x.checked_rem(y).unwrap_or(0)
            }
        })
    }),
    ConvKw::new("and", T::Sint, T::Sint, &[A::IntOrVar], 1, |s, a, c| {
        arith(s, a, c, |x, y| x & y)
    }),
    ConvKw::new("or", T::Sint, T::Sint, &[A::IntOrVar], 1, |s, a, c| {
        arith(s, a, c, |x, y| x | y)
    }),
    ConvKw::new("xor", T::Sint, T::Sint, &[A::IntOrVar], 1, |s, a, c| {
        arith(s, a, c, |x, y| x ^ y)
    }),
    ConvKw::new("neg", T::Sint, T::Sint, &[], 0, |s, _, _| {
        Some(Sample::Sint(int(&s)?.checked_neg().unwrap_or(i64::MAX)))
    }),
    ConvKw::new("cpl", T::Sint, T::Sint, &[], 0, |s, _, _| {
        Some(Sample::Sint(!int(&s)?))
    }),
    ConvKw::new("bool", T::Sint, T::Bool, &[], 0, |s, _, _| {
        Some(Sample::Bool(int(&s)? != 0))
    }),
    ConvKw::new("not", T::Sint, T::Bool, &[], 0, |s, _, _| {
        Some(Sample::Bool(int(&s)? == 0))
    }),
    ConvKw::new("odd", T::Sint, T::Bool, &[], 0, |s, _, _| {
        Some(Sample::Bool(int(&s)? & 1 == 1))
    }),
    ConvKw::new("even", T::Sint, T::Bool, &[], 0, |s, _, _| {
        Some(Sample::Bool(int(&s)? & 1 == 0))
    }),
    // Hashes: unsigned 32-bit values (64 for xxh64/xxh3) as integers.
    ConvKw::new("crc32", T::Bin, T::Sint, &[A::Int], 0, |s, a, _| {
        hash32(hash::crc32(bytes(&s)), a)
    }),
    ConvKw::new("crc32c", T::Bin, T::Sint, &[A::Int], 0, |s, a, _| {
        hash32(hash::crc32c(bytes(&s)), a)
    }),
    ConvKw::new("djb2", T::Bin, T::Sint, &[A::Int], 0, |s, a, _| {
        hash32(hash::djb2(bytes(&s)), a)
    }),
    ConvKw::new("sdbm", T::Bin, T::Sint, &[A::Int], 0, |s, a, _| {
        hash32(hash::sdbm(bytes(&s)), a)
    }),
    ConvKw::new("wt6", T::Bin, T::Sint, &[A::Int], 0, |s, a, _| {
        hash32(hash::wt6(bytes(&s)), a)
    }),
    ConvKw::new("xxh32", T::Bin, T::Sint, &[A::Int], 0, |s, a, _| {
        let seed = a[0].int().unwrap_or(0) as u32;
        Some(Sample::Sint(
            xxhash_rust::xxh32::xxh32(bytes(&s), seed) as i64
        ))
    }),
    ConvKw::new("xxh64", T::Bin, T::Sint, &[A::Int], 0, |s, a, _| {
        let seed = a[0].int().unwrap_or(0) as u64;
        Some(Sample::Sint(
            xxhash_rust::xxh64::xxh64(bytes(&s), seed) as i64
        ))
    }),
    ConvKw::new("xxh3", T::Bin, T::Sint, &[A::Int], 0, |s, a, _| {
        let seed = a[0].int().unwrap_or(0) as u64;
        Some(Sample::Sint(
            xxhash_rust::xxh3::xxh3_64_with_seed(bytes(&s), seed) as i64,
        ))
    }),
    ConvKw::new("sha1", T::Bin, T::Bin, &[], 0, |s, _, _| {
        use sha1::Digest;
        Some(Sample::Bin(Bytes::copy_from_slice(&sha1::Sha1::digest(
            bytes(&s),
        ))))
    }),
    ConvKw::new("sha2", T::Bin, T::Bin, &[A::Int], 0, c_sha2).check(check_sha2),
    // Text.
    ConvKw::new("json", T::Str, T::Str, &[A::Str], 0, c_json).check(check_json),
    ConvKw::new("url_dec", T::Str, T::Str, &[A::Int], 0, c_url_dec),
    ConvKw::new("url_enc", T::Str, T::Str, &[A::Str], 0, c_url_enc).check(check_url_enc),
    ConvKw::new(
        "field",
        T::Str,
        T::Str,
        &[A::Int, A::Str, A::Int],
        2,
        |s, a, _| split_pick(s, a, false),
    )
    .check(check_field),
    ConvKw::new(
        "word",
        T::Str,
        T::Str,
        &[A::Int, A::Str, A::Int],
        2,
        |s, a, _| split_pick(s, a, true),
    )
    .check(check_field),
    ConvKw::new(
        "bytes",
        T::Bin,
        T::Bin,
        &[A::IntOrVar, A::IntOrVar],
        1,
        c_bytes,
    ),
    ConvKw::new("ltrim", T::Str, T::Str, &[A::Str], 1, |s, a, _| {
        let b = bytes(&s);
        let st = b
            .iter()
            .position(|c| !a[0].str().contains(c))
            .unwrap_or(b.len());
        str_out(&b[st..])
    }),
    ConvKw::new("rtrim", T::Str, T::Str, &[A::Str], 1, |s, a, _| {
        let b = bytes(&s);
        let e = b
            .iter()
            .rposition(|c| !a[0].str().contains(c))
            .map_or(0, |e| e + 1);
        str_out(&b[..e])
    }),
    ConvKw::new("cut_crlf", T::Str, T::Str, &[], 0, |s, _, _| {
        let b = bytes(&s);
        let e = b
            .iter()
            .position(|&c| c == b'\r' || c == b'\n')
            .unwrap_or(b.len());
        str_out(&b[..e])
    }),
    ConvKw::new("reverse", T::Str, T::Str, &[], 0, |s, _, _| {
        map_bytes(s, |b| b.iter().rev().copied().collect())
    }),
    ConvKw::new(
        "concat",
        T::Str,
        T::Str,
        &[A::Str, A::Var, A::Str],
        0,
        c_concat,
    ),
    ConvKw::new(
        "add_item",
        T::Str,
        T::Str,
        &[A::Str, A::Var, A::Str],
        1,
        c_add_item,
    )
    .check(check_add_item),
    ConvKw::new("iif", T::Bool, T::Str, &[A::Str, A::Str], 2, |s, a, _| {
        let t = matches!(s, Sample::Bool(true));
        str_out(if t { a[0].str() } else { a[1].str() })
    }),
    ConvKw::new(
        "regsub",
        T::Str,
        T::Str,
        &[A::Str, A::Str, A::Str],
        2,
        c_regsub,
    )
    .check(check_regsub),
    ConvKw::new("param", T::Str, T::Str, &[A::Str, A::Str], 1, c_param).check(check_param),
    ConvKw::new("host_only", T::Str, T::Str, &[], 0, |s, _, _| {
        let b = bytes(&s).to_ascii_lowercase();
        let t = String::from_utf8(b).ok()?;
        str_out(host_port(&t).0.as_bytes())
    }),
    ConvKw::new("port_only", T::Str, T::Sint, &[], 0, |s, _, _| {
        let t = std::str::from_utf8(bytes(&s)).ok()?;
        Some(Sample::Sint(
            host_port(t)
                .1
                .and_then(|p| p.parse::<u16>().ok())
                .unwrap_or(0) as i64,
        ))
    }),
    ConvKw::new("strcmp", T::Str, T::Sint, &[A::Var], 1, c_strcmp).check(check_var_required),
    ConvKw::new(
        "secure_memcmp",
        T::Str,
        T::Bool,
        &[A::Var],
        1,
        c_secure_memcmp,
    )
    .check(check_var_required),
    // Addresses.
    ConvKw::new("ipmask", T::Ip, T::Ip, &[A::Str, A::Str], 1, c_ipmask).check(check_ipmask),
    // Dates.
    ConvKw::new(
        "http_date",
        T::Sint,
        T::Str,
        &[A::Int, A::Str],
        0,
        c_http_date,
    )
    .check(check_date_unit),
    ConvKw::new("ltime", T::Sint, T::Str, &[A::Str, A::Int], 1, |s, a, _| {
        strftime_conv(s, a, true)
    }),
    ConvKw::new("utime", T::Sint, T::Str, &[A::Str, A::Int], 1, |s, a, _| {
        strftime_conv(s, a, false)
    }),
    ConvKw::new("date", T::Str, T::Sint, &[], 0, |s, _, _| {
        let t = httpdate::parse_http_date(std::str::from_utf8(bytes(&s)).ok()?.trim()).ok()?;
        let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        Some(Sample::Sint(secs as i64))
    }),
    // Proxy state.
    ConvKw::new("nbsrv", T::Str, T::Sint, &[], 0, |s, _, c| {
        let be = std::str::from_utf8(bytes(&s)).ok()?;
        c.proxies.usable_servers(be).map(|n| Sample::Sint(n as i64))
    }),
    // Debugging aid: passes the sample through.
    ConvKw::new("debug", T::Any, T::Any, &[A::Str, A::Str], 0, |s, _, _| {
        Some(s)
    }),
    // Converters that would write to the transaction are refused with a
    // pointer to the action that does it.
    ConvKw::new(
        "set-var",
        T::Any,
        T::Any,
        &[A::Str, A::Str, A::Str, A::Str, A::Str],
        0,
        |s, _, _| Some(s),
    )
    .check(refuse_write),
    ConvKw::new("unset-var", T::Any, T::Any, &[A::Str], 0, |s, _, _| Some(s)).check(refuse_write),
];

fn bytes(s: &Sample) -> &[u8] {
    match s {
        Sample::Str(b) | Sample::Bin(b) | Sample::Meth(b) => b,
        _ => b"",
    }
}

fn int(s: &Sample) -> Option<i64> {
    match s {
        Sample::Sint(i) => Some(*i),
        Sample::Bool(b) => Some(*b as i64),
        _ => None,
    }
}

fn str_out(b: &[u8]) -> Option<Sample> {
    Some(Sample::Str(Bytes::copy_from_slice(b)))
}

fn map_bytes(s: Sample, f: impl Fn(&[u8]) -> Vec<u8>) -> Option<Sample> {
    Some(Sample::Str(Bytes::from(f(bytes(&s)))))
}

fn c_len(s: Sample, _: &[Arg], _: &SampleCtx) -> Option<Sample> {
    Some(Sample::Sint(bytes(&s).len() as i64))
}

fn b64(s: &Sample) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes(s))
}

fn c_ub64dec(s: Sample, _: &[Arg], _: &SampleCtx) -> Option<Sample> {
    use base64::engine::{
        general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig,
    };
    let engine = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    engine
        .decode(bytes(&s))
        .ok()
        .map(|v| Sample::Str(Bytes::from(v)))
}

pub(crate) fn hex_upper(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(b.len() * 2);
    for &c in b {
        s.push(D[(c >> 4) as usize] as char);
        s.push(D[(c & 15) as usize] as char);
    }
    s
}

fn c_hex2i(s: Sample, _: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let b = bytes(&s);
    if b.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        v = (v << 4) | (c as char).to_digit(16)? as u64;
    }
    Some(Sample::Sint(v as i64))
}

fn c_be2hex(s: Sample, a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let b = bytes(&s);
    let sep = a[0].str();
    let chunk = a[1].int().filter(|c| *c > 0).unwrap_or(1) as usize;
    let truncate = a[2].int().unwrap_or(0) != 0;
    let mut out = Vec::new();
    for (i, part) in b.chunks(chunk).enumerate() {
        if truncate && part.len() < chunk {
            break;
        }
        if i > 0 {
            out.extend_from_slice(sep);
        }
        out.extend_from_slice(hex_upper(part).as_bytes());
    }
    Some(Sample::Str(Bytes::from(out)))
}

fn arith(s: Sample, a: &[Arg], c: &SampleCtx, op: fn(i64, i64) -> i64) -> Option<Sample> {
    let x = int(&s)?;
    let y = a[0].int_or_var(c).unwrap_or(0);
    Some(Sample::Sint(op(x, y)))
}

fn hash32(h: u32, a: &[Arg]) -> Option<Sample> {
    let h = if a[0].int().unwrap_or(0) != 0 {
        hash::full_hash(h)
    } else {
        h
    };
    Some(Sample::Sint(h as i64))
}

fn check_sha2(_: &str, a: &mut [Arg]) -> Result<(), String> {
    match a[0].int() {
        None | Some(224 | 256 | 384 | 512) => Ok(()),
        Some(b) => Err(format!(
            "unsupported number of bits {b} (224, 256, 384 or 512)"
        )),
    }
}

fn c_sha2(s: Sample, a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    use sha2::Digest;
    let b = bytes(&s);
    let d: Vec<u8> = match a[0].int().unwrap_or(256) {
        224 => sha2::Sha224::digest(b).to_vec(),
        384 => sha2::Sha384::digest(b).to_vec(),
        512 => sha2::Sha512::digest(b).to_vec(),
        _ => sha2::Sha256::digest(b).to_vec(),
    };
    Some(Sample::Bin(Bytes::from(d)))
}

/// How `json` reads its input.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JsonIn {
    Ascii,
    Utf8,
    Utf8s,
    Utf8p,
    Utf8ps,
}

fn json_mode(a: &Arg) -> Option<JsonIn> {
    Some(match a.str() {
        b"" | b"ascii" => JsonIn::Ascii,
        b"utf8" => JsonIn::Utf8,
        b"utf8s" => JsonIn::Utf8s,
        b"utf8p" => JsonIn::Utf8p,
        b"utf8ps" => JsonIn::Utf8ps,
        _ => return None,
    })
}

fn check_json(_: &str, a: &mut [Arg]) -> Result<(), String> {
    json_mode(&a[0]).map(|_| ()).ok_or_else(|| {
        "unexpected input code type (allowed: ascii, utf8, utf8s, utf8p, utf8ps)".to_string()
    })
}

/// One decoded UTF-8 character: its value, length, and problems.
struct Utf8Char {
    c: u32,
    len: usize,
    bad_seq: bool,
    overlong: bool,
    bad_range: bool,
}

/// Decodes one character the lenient way HAProxy does (up to 6-byte
/// sequences, reporting overlong forms and forbidden ranges).
fn utf8_next(s: &[u8]) -> Utf8Char {
    let b0 = s[0];
    let bad = |c: u32, len: usize| Utf8Char {
        c,
        len,
        bad_seq: true,
        overlong: false,
        bad_range: false,
    };
    let (mut c, extra) = match b0 {
        0x00..=0x7f => {
            return Utf8Char {
                c: b0 as u32,
                len: 1,
                bad_seq: false,
                overlong: false,
                bad_range: false,
            }
        }
        0xc0..=0xdf => ((b0 & 0x1f) as u32, 1),
        0xe0..=0xef => ((b0 & 0x0f) as u32, 2),
        0xf0..=0xf7 => ((b0 & 0x07) as u32, 3),
        0xf8..=0xfb => ((b0 & 0x03) as u32, 4),
        0xfc..=0xfd => ((b0 & 0x01) as u32, 5),
        _ => return bad(b0 as u32, 1),
    };
    if s.len() < extra + 1 {
        return bad(b0 as u32, 1);
    }
    for (i, &b) in s[1..=extra].iter().enumerate() {
        if b & 0xc0 != 0x80 {
            return bad(c, i + 1);
        }
        c = (c << 6) | (b & 0x3f) as u32;
    }
    let len = extra + 1;
    let overlong = (c <= 0x7f && len > 1)
        || ((0x80..=0x7ff).contains(&c) && len > 2)
        || ((0x800..=0xffff).contains(&c) && len > 3)
        || ((0x10000..=0x1f_ffff).contains(&c) && len > 4);
    let bad_range = (0xd800..=0xdfff).contains(&c) || (0xfffe..=0xffff).contains(&c);
    Utf8Char {
        c,
        len,
        bad_seq: false,
        overlong,
        bad_range,
    }
}

/// Escapes a string for a JSON string value as HAProxy's `json` does:
/// `"` `\` `/` and the usual control escapes, anything else outside
/// printable ASCII as \uXXXX.
fn c_json(s: Sample, a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let mode = json_mode(&a[0])?;
    let b = bytes(&s);
    let mut out = Vec::with_capacity(b.len() + 8);
    let mut i = 0;
    while i < b.len() {
        let c = if mode == JsonIn::Ascii {
            i += 1;
            b[i - 1] as u32
        } else {
            let u = utf8_next(&b[i..]);
            i += u.len;
            let fatal = u.bad_seq || u.bad_range;
            match mode {
                JsonIn::Utf8 if fatal || u.overlong => return None,
                JsonIn::Utf8s if fatal || u.overlong => continue,
                JsonIn::Utf8p if fatal => return None,
                JsonIn::Utf8ps if fatal => continue,
                _ => {}
            }
            if u.c > 0xffff {
                if matches!(mode, JsonIn::Utf8 | JsonIn::Utf8p) {
                    return None;
                }
                continue;
            }
            u.c
        };
        match c {
            0x22 => out.extend_from_slice(b"\\\""),
            0x5c => out.extend_from_slice(b"\\\\"),
            0x2f => out.extend_from_slice(b"\\/"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x20..=0x7e => out.push(c as u8),
            _ => out.extend_from_slice(format!("\\u{:04x}", c).as_bytes()),
        }
    }
    Some(Sample::Str(Bytes::from(out)))
}

/// Decodes %XX sequences; '+' is a space in forms (or after a '?').
/// A malformed escape fails.
pub(crate) fn url_decode(b: &[u8], form: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut in_query = form;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = (*b.get(i + 1)? as char).to_digit(16)?;
                let l = (*b.get(i + 2)? as char).to_digit(16)?;
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
            b'+' if in_query => out.push(b' '),
            b'?' => {
                in_query = true;
                out.push(b'?');
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

fn c_url_dec(s: Sample, a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let form = a[0].int().unwrap_or(0) != 0;
    url_decode(bytes(&s), form).map(|v| Sample::Str(Bytes::from(v)))
}

fn check_url_enc(_: &str, a: &mut [Arg]) -> Result<(), String> {
    match a[0].str() {
        b"" | b"query" => Ok(()),
        _ => Err("only the 'query' encoding is supported".to_string()),
    }
}

fn c_url_enc(s: Sample, _: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let mut out = Vec::new();
    for &c in bytes(&s) {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c);
        } else {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        }
    }
    Some(Sample::Str(Bytes::from(out)))
}

fn check_field(_: &str, a: &mut [Arg]) -> Result<(), String> {
    if a[0].int() == Some(0) {
        return Err("the index must not be 0 (1 is the first, -1 the last)".to_string());
    }
    if a[1].str().is_empty() {
        return Err("missing delimiters".to_string());
    }
    if a[2].int().is_some_and(|c| c < 0) {
        return Err("the count must not be negative".to_string());
    }
    Ok(())
}

/// `field` (every delimiter separates) and `word` (runs of delimiters
/// separate, empty words do not count): returns `count` items from index
/// `idx` (1-based, negative from the end; count 0 = all the rest) with the
/// delimiters between them.
fn split_pick(s: Sample, a: &[Arg], words: bool) -> Option<Sample> {
    let b = bytes(&s);
    let idx = a[0].int()?;
    let delims = a[1].str();
    let count = a[2].int().unwrap_or(1).max(0) as usize;
    // Item boundaries as (start, end) byte ranges.
    let mut items: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for (i, c) in b.iter().enumerate() {
        if delims.contains(c) {
            items.push((start, i));
            start = i + 1;
        }
    }
    items.push((start, b.len()));
    if words {
        items.retain(|(s, e)| e > s);
    }
    let n = items.len() as i64;
    let (first, last) = if idx > 0 {
        let first = idx - 1;
        if first >= n {
            return None;
        }
        let last = if count == 0 {
            n - 1
        } else {
            first.saturating_add(count as i64 - 1).min(n - 1)
        };
        (first, last)
    } else {
        let last = n + idx;
        if last < 0 {
            return None;
        }
        let first = if count == 0 {
            0
        } else {
            (last - count as i64 + 1).max(0)
        };
        (first, last)
    };
    let from = items[first as usize].0;
    let to = items[last as usize].1;
    str_out(&b[from..to])
}

fn c_bytes(s: Sample, a: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let b = bytes(&s);
    let off = a[0].int_or_var(c).filter(|o| *o >= 0)? as usize;
    if off >= b.len() {
        return Some(Sample::Bin(Bytes::new()));
    }
    let len = match &a[1] {
        Arg::None => b.len() - off,
        arg => (arg.int_or_var(c).filter(|l| *l >= 0)? as usize).min(b.len() - off),
    };
    Some(Sample::Bin(Bytes::copy_from_slice(&b[off..off + len])))
}

/// The text of a variable, or nothing when it is not set.
fn var_text(a: &Arg, c: &SampleCtx) -> Option<Bytes> {
    match a {
        Arg::Var(v) => var_value(c, v).map(|s| s.to_bytes()),
        _ => None,
    }
}

fn c_concat(s: Sample, a: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let mut out = bytes(&s).to_vec();
    out.extend_from_slice(a[0].str());
    if let Some(v) = var_text(&a[1], c) {
        out.extend_from_slice(&v);
    }
    out.extend_from_slice(a[2].str());
    Some(Sample::Str(Bytes::from(out)))
}

fn check_add_item(_: &str, a: &mut [Arg]) -> Result<(), String> {
    if matches!(a[1], Arg::None) && matches!(a[2], Arg::None) {
        return Err("expects a variable name or a suffix after the delimiter".to_string());
    }
    Ok(())
}

fn c_add_item(s: Sample, a: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let mut out = bytes(&s).to_vec();
    let v = var_text(&a[1], c).unwrap_or_default();
    let suffix = a[2].str();
    if !out.is_empty() && (!v.is_empty() || !suffix.is_empty()) {
        out.extend_from_slice(a[0].str());
    }
    out.extend_from_slice(&v);
    out.extend_from_slice(suffix);
    Some(Sample::Str(Bytes::from(out)))
}

fn check_regsub(_: &str, a: &mut [Arg]) -> Result<(), String> {
    let flags = a[2].str();
    if let Some(f) = flags.iter().find(|c| !matches!(c, b'i' | b'g')) {
        return Err(format!(
            "unknown flag '{}' (i and g are supported)",
            *f as char
        ));
    }
    let re =
        std::str::from_utf8(a[0].str()).map_err(|_| "the regex is not valid UTF-8".to_string())?;
    let r = pattern::compile_regex(re, flags.contains(&b'i'))?;
    a[0] = Arg::Regex(Arc::new(r));
    Ok(())
}

fn c_regsub(s: Sample, a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let Arg::Regex(re) = &a[0] else { return None };
    let b = bytes(&s);
    let subst = a[1].str();
    let global = a[2].str().contains(&b'g');
    let mut out = Vec::with_capacity(b.len());
    let mut last = 0;
    for caps in re.captures_iter(b) {
        let Some(m) = caps.get(0) else { continue };
        out.extend_from_slice(&b[last..m.start()]);
        let groups: Vec<Option<Vec<u8>>> = caps
            .iter()
            .map(|g| g.map(|g| g.as_bytes().to_vec()))
            .collect();
        out.extend_from_slice(&pattern::expand_backrefs(subst, &groups));
        last = m.end();
        if !global {
            break;
        }
    }
    out.extend_from_slice(&b[last..]);
    Some(Sample::Str(Bytes::from(out)))
}

fn param_delim(a: &Arg) -> Result<u8, String> {
    let d = a.str();
    match d {
        b"" => Ok(b'&'),
        [c] => Ok(*c),
        [b'0', b'x' | b'X', h, l] => {
            let h = (*h as char).to_digit(16);
            let l = (*l as char).to_digit(16);
            match (h, l) {
                (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
                _ => Err("the delimiter must be one character or 0xHH".to_string()),
            }
        }
        _ => Err("the delimiter must be one character or 0xHH".to_string()),
    }
}

fn check_param(_: &str, a: &mut [Arg]) -> Result<(), String> {
    let d = param_delim(&a[1])?;
    a[1] = Arg::Int(d as i64);
    Ok(())
}

fn c_param(s: Sample, a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let delim = a[1].int().unwrap_or(b'&' as i64) as u8;
    let name = a[0].str();
    bytes(&s).split(|&c| c == delim).find_map(|p| {
        let (n, v) = match p.iter().position(|&c| c == b'=') {
            Some(e) => (&p[..e], &p[e + 1..]),
            None => (p, &b""[..]),
        };
        (n == name).then(|| Sample::Str(Bytes::copy_from_slice(v)))
    })
}

/// Splits a Host header value into host and port ("[::1]:80" keeps its
/// brackets).
fn host_port(t: &str) -> (&str, Option<&str>) {
    if t.starts_with('[') {
        return match t.find(']') {
            Some(e) => (&t[..=e], t[e + 1..].strip_prefix(':')),
            None => (t, None),
        };
    }
    match t.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (t, None),
    }
}

fn check_var_required(_: &str, a: &mut [Arg]) -> Result<(), String> {
    match a[0] {
        Arg::Var(_) => Ok(()),
        _ => Err("expects a variable name".to_string()),
    }
}

fn c_strcmp(s: Sample, a: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let v = var_text(&a[0], c)?;
    let x = bytes(&s);
    let diff = x
        .iter()
        .zip(v.iter())
        .find(|(p, q)| p != q)
        .map(|(p, q)| *p as i64 - *q as i64)
        .unwrap_or(x.len() as i64 - v.len() as i64);
    Some(Sample::Sint(diff))
}

fn c_secure_memcmp(s: Sample, a: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let v = var_text(&a[0], c)?;
    let x = bytes(&s);
    if x.len() != v.len() {
        return Some(Sample::Bool(false));
    }
    // Constant time for equal lengths: no early exit.
    let acc = x
        .iter()
        .zip(v.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q));
    Some(Sample::Bool(acc == 0))
}

fn mask_bits(text: &[u8], v6: bool) -> Result<u8, String> {
    let t = std::str::from_utf8(text).map_err(|_| "invalid mask".to_string())?;
    if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) {
        let max = if v6 { 128 } else { 32 };
        return t
            .parse::<u8>()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("'{t}' is not a valid mask length"));
    }
    let ones = match (t.parse::<IpAddr>(), v6) {
        (Ok(IpAddr::V4(m)), false) => {
            let v = u32::from(m);
            (v.leading_ones() + v.trailing_zeros() == 32).then_some(v.leading_ones())
        }
        (Ok(IpAddr::V6(m)), true) => {
            let v = u128::from(m);
            (v.leading_ones() + v.trailing_zeros() == 128).then_some(v.leading_ones())
        }
        _ => None,
    };
    ones.map(|o| o as u8).ok_or_else(|| {
        format!(
            "'{t}' is not a valid {} mask",
            if v6 { "IPv6" } else { "IPv4" }
        )
    })
}

fn check_ipmask(_: &str, a: &mut [Arg]) -> Result<(), String> {
    let m4 = mask_bits(a[0].str(), false)?;
    a[0] = Arg::Int(m4 as i64);
    if let Arg::Str(m) = &a[1] {
        let m6 = mask_bits(m, true)?;
        a[1] = Arg::Int(m6 as i64);
    }
    Ok(())
}

fn c_ipmask(s: Sample, a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let Sample::Ip(ip) = s else { return None };
    Some(Sample::Ip(match ip {
        IpAddr::V4(v) => IpAddr::V4(pattern::mask_v4(u32::from(v), a[0].int()? as u8).into()),
        // Without an IPv6 mask, IPv6 addresses do not convert (HAProxy's
        // historical behaviour).
        IpAddr::V6(v) => IpAddr::V6(pattern::mask_v6(u128::from(v), a[1].int()? as u8).into()),
    }))
}

fn check_date_unit(_: &str, a: &mut [Arg]) -> Result<(), String> {
    match a[1].str() {
        b"" | b"s" | b"ms" | b"us" => Ok(()),
        _ => Err("the unit must be 's', 'ms' or 'us'".to_string()),
    }
}

fn c_http_date(s: Sample, a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let v = int(&s)?.checked_add(a[0].int().unwrap_or(0))?;
    let (secs, frac) = match a[1].str() {
        b"ms" => (
            v.div_euclid(1000),
            Some(format!(".{:03}", v.rem_euclid(1000))),
        ),
        b"us" => (
            v.div_euclid(1_000_000),
            Some(format!(".{:06}", v.rem_euclid(1_000_000))),
        ),
        _ => (v, None),
    };
    let t = if secs >= 0 {
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs as u64))?
    } else {
        std::time::UNIX_EPOCH.checked_sub(std::time::Duration::from_secs(secs.unsigned_abs()))?
    };
    // httpdate only handles years 1970..9999.
    if !(0..253_402_300_800).contains(&secs) {
        return None;
    }
    let d = httpdate::fmt_http_date(t);
    let d = match frac {
        Some(f) => d.replacen(" GMT", &format!("{f} GMT"), 1),
        None => d,
    };
    Some(Sample::Str(Bytes::from(d)))
}

/// Formats epoch seconds with strftime(3), in local time or UTC.
pub(crate) fn strftime(fmt: &[u8], secs: i64, local: bool) -> Option<Vec<u8>> {
    let cfmt = std::ffi::CString::new(fmt).ok()?;
    // time_t is 64-bit on the platforms the host supports.
    let t = secs as libc::time_t;
    // SAFETY: tm is plain data, filled by localtime_r/gmtime_r from a valid
    // time_t; strftime writes at most buf.len() bytes into buf and the
    // format is NUL-terminated.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let ok = if local {
            !libc::localtime_r(&t, &mut tm).is_null()
        } else {
            !libc::gmtime_r(&t, &mut tm).is_null()
        };
        if !ok {
            return None;
        }
        let mut buf = vec![0u8; 1024];
        let n = libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            cfmt.as_ptr(),
            &tm,
        );
        if n == 0 && !fmt.is_empty() {
            return None;
        }
        buf.truncate(n);
        Some(buf)
    }
}

fn strftime_conv(s: Sample, a: &[Arg], local: bool) -> Option<Sample> {
    let t = int(&s)?.checked_add(a[1].int().unwrap_or(0))?;
    strftime(a[0].str(), t, local).map(|v| Sample::Str(Bytes::from(v)))
}

fn refuse_write(name: &str, _: &mut [Arg]) -> Result<(), String> {
    Err(format!(
        "not supported: converters cannot modify the transaction; use the 'http-request {name}(...)' action instead"
    ))
}

fn check_map(name: &str, a: &mut [Arg]) -> Result<(), String> {
    let spec = map_spec(name).ok_or_else(|| "unknown map converter".to_string())?;
    let Arg::Map(m) = &a[0] else {
        return Err("expects a map file".to_string());
    };
    m.prepare(spec.method, false)?;
    if spec.out == MapOut::Key && !matches!(a[1], Arg::None) {
        return Err("a default value is not supported when the key is returned".to_string());
    }
    // Values must be readable as the output type, like HAProxy checks at
    // load time.
    for e in m.entries() {
        map_value(&e.value, spec.out).ok_or_else(|| {
            format!(
                "unable to parse '{}' in file '{}'",
                String::from_utf8_lossy(&e.value),
                m.name()
            )
        })?;
    }
    if let Arg::Str(d) = &a[1] {
        map_value(d, spec.out)
            .ok_or_else(|| format!("invalid default value '{}'", String::from_utf8_lossy(d)))?;
    }
    a[2] = Arg::Int(map_spec_code(spec));
    Ok(())
}

/// Packs a map spec into an integer argument.
fn map_spec_code(s: MapSpec) -> i64 {
    let out = match s.out {
        MapOut::Str => 0,
        MapOut::Int => 1,
        MapOut::Ip => 2,
        MapOut::Key => 3,
    };
    s.method.lua_code() * 16 + (s.regm as i64) * 8 + out
}

fn map_spec_decode(code: i64) -> Option<MapSpec> {
    let out = match code & 7 {
        0 => MapOut::Str,
        1 => MapOut::Int,
        2 => MapOut::Ip,
        _ => MapOut::Key,
    };
    Some(MapSpec {
        method: MatchMethod::from_lua_code(code / 16)?,
        regm: code & 8 != 0,
        out,
    })
}

fn map_value(v: &[u8], out: MapOut) -> Option<Sample> {
    Some(match out {
        MapOut::Str | MapOut::Key => Sample::Str(Bytes::copy_from_slice(v)),
        MapOut::Int => Sample::Sint(std::str::from_utf8(v).ok()?.trim().parse().ok()?),
        MapOut::Ip => Sample::Ip(parse_ip(std::str::from_utf8(v).ok()?.trim())?),
    })
}

fn c_map(s: Sample, a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let Arg::Map(m) = &a[0] else { return None };
    let spec = map_spec_decode(a.get(2)?.int()?)?;
    let found = lookup_map(m, spec, &s);
    match found {
        Some(v) => map_value(&v, spec.out),
        None => match &a[1] {
            Arg::Str(d) => map_value(d, spec.out),
            _ => None,
        },
    }
}

fn lookup_map(m: &MapFile, spec: MapSpec, s: &Sample) -> Option<Bytes> {
    if spec.regm {
        return m.lookup_regm(false, s);
    }
    let e = m.lookup_entry(spec.method, false, s)?;
    Some(if spec.out == MapOut::Key {
        e.key
    } else {
        e.value
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lua::vars::VarValue;
    use crate::sample::testutil::{ctx, s, tcp_txn, temp_dir};

    fn cv(name: &str, input: Sample, args: &[&str]) -> Option<Sample> {
        let mut t = tcp_txn();
        t.vars.set("txn.v", VarValue::Str(b"VAR".to_vec()), false);
        t.vars.set("txn.n", VarValue::Int(2), false);
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        call(name, input, &a, &ctx(&t)).unwrap()
    }

    fn err(name: &str, args: &[&str]) -> String {
        let t = tcp_txn();
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        call(name, s("x"), &a, &ctx(&t)).unwrap_err()
    }

    fn txt(v: Option<Sample>) -> String {
        String::from_utf8_lossy(&v.expect("converter failed").to_bytes()).into_owned()
    }

    #[test]
    fn case_and_length() {
        assert_eq!(cv("lower", s("AbC"), &[]), Some(s("abc")));
        assert_eq!(cv("upper", s("AbC"), &[]), Some(s("ABC")));
        assert_eq!(cv("length", s("abcd"), &[]), Some(Sample::Sint(4)));
        assert_eq!(cv("len", s(""), &[]), Some(Sample::Sint(0)));
        // Non-string inputs are cast first.
        assert_eq!(
            cv("lower", Sample::Ip("1.2.3.4".parse().unwrap()), &[]),
            Some(s("1.2.3.4"))
        );
        assert_eq!(cv("upper", Sample::Bool(true), &[]), Some(s("1")));
    }

    // Expected values are what HAProxy 2.6 prints for `str(abc),<conv>`.
    #[test]
    fn hashes() {
        let h = |n: &str, a: &[&str]| cv(n, s("abc"), a);
        assert_eq!(h("crc32", &[]), Some(Sample::Sint(891_568_578)));
        assert_eq!(h("crc32", &["1"]), Some(Sample::Sint(930_845_320)));
        assert_eq!(
            cv("crc32c", s("123456789"), &[]),
            Some(Sample::Sint(3_808_858_755))
        );
        assert_eq!(h("djb2", &[]), Some(Sample::Sint(193_485_963)));
        assert_eq!(h("djb2", &["1"]), Some(Sample::Sint(2_235_766_107)));
        assert_eq!(h("sdbm", &[]), Some(Sample::Sint(807_794_786)));
        assert_eq!(h("sdbm", &["1"]), Some(Sample::Sint(659_243_622)));
        assert_eq!(h("wt6", &[]), Some(Sample::Sint(2_483_038_440)));
        assert_eq!(h("wt6", &["1"]), Some(Sample::Sint(266_135_527)));
        assert_eq!(h("xxh32", &[]), Some(Sample::Sint(852_579_327)));
        assert_eq!(h("xxh32", &["1"]), Some(Sample::Sint(2_856_167_679)));
        assert_eq!(
            h("xxh64", &[]),
            Some(Sample::Sint(4_952_883_123_889_572_249))
        );
        assert_eq!(
            h("xxh64", &["5"]),
            Some(Sample::Sint(-1_753_195_980_308_443_340))
        );
        assert_eq!(
            h("xxh3", &[]),
            Some(Sample::Sint(8_696_274_497_037_089_104))
        );
        assert_eq!(
            txt(cv("hex", h("sha1", &[]).unwrap(), &[])),
            "A9993E364706816ABA3E25717850C26C9CD0D89D"
        );
        assert_eq!(
            txt(cv("hex", h("sha2", &["224"]).unwrap(), &[])),
            "23097D223405D8228642A477BDA255B32AADBCE4BDA0B3F7E36C9DA7"
        );
        assert_eq!(
            txt(cv("hex", h("sha2", &[]).unwrap(), &[])),
            "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
        );
        assert_eq!(h("sha2", &["384"]).unwrap().to_bytes().len(), 48);
        assert_eq!(h("sha2", &["512"]).unwrap().to_bytes().len(), 64);
        assert!(err("sha2", &["100"]).contains("unsupported number of bits"));
        // An integer hashes as its 8 bytes.
        assert_eq!(
            cv("crc32", Sample::Sint(1), &[]),
            Some(Sample::Sint(hash::crc32(&[0, 0, 0, 0, 0, 0, 0, 1]) as i64))
        );
    }

    #[test]
    fn encodings() {
        assert_eq!(cv("hex", s("abz"), &[]), Some(s("61627A")));
        assert_eq!(
            cv("hex", Sample::Sint(255), &[]),
            Some(s("00000000000000FF"))
        );
        assert_eq!(cv("base64", s("abcd"), &[]), Some(s("YWJjZA==")));
        assert_eq!(cv("base64", s("a?>b"), &[]), Some(s("YT8+Yg==")));
        assert_eq!(
            cv("b64dec", s("YWJjZA=="), &[]),
            Some(Sample::Bin(Bytes::from_static(b"abcd")))
        );
        assert_eq!(cv("b64dec", s("YWJjZA"), &[]), None);
        assert_eq!(cv("b64dec", s("YW=JjZA"), &[]), None);
        assert_eq!(cv("ub64enc", s("a?>b"), &[]), Some(s("YT8-Yg")));
        assert_eq!(cv("ub64dec", s("YT8-Yg"), &[]), Some(s("a?>b")));
        assert_eq!(cv("ub64dec", s("YT8-Yg=="), &[]), Some(s("a?>b")));
        assert_eq!(cv("hex2i", s("ff"), &[]), Some(Sample::Sint(255)));
        assert_eq!(cv("hex2i", s("abc"), &[]), Some(Sample::Sint(2748)));
        assert_eq!(
            cv("hex2i", s("FFFFFFFFFFFFFFFF"), &[]),
            Some(Sample::Sint(-1))
        );
        assert_eq!(cv("hex2i", s("zz"), &[]), None);
        assert_eq!(
            cv("be2hex", s("abcdefg"), &[":", "2"]),
            Some(s("6162:6364:6566:67"))
        );
        assert_eq!(
            cv("be2hex", s("abcdefg"), &["--", "2", "1"]),
            Some(s("6162--6364--6566"))
        );
        assert_eq!(cv("be2hex", s("abc"), &[]), Some(s("616263")));
        assert_eq!(cv("base2", s("A"), &[]), Some(s("01000001")));
        assert_eq!(
            cv("url_enc", s("a b/c?d=e&f~g.h-i_j%k+l\"m"), &[]),
            Some(s("a%20b%2Fc%3Fd%3De%26f~g.h-i_j%25k%2Bl%22m"))
        );
        assert!(err("url_enc", &["path"]).contains("query"));
    }

    #[test]
    fn url_decoding() {
        assert_eq!(cv("url_dec", s("a%20b+c"), &[]), Some(s("a b+c")));
        assert_eq!(cv("url_dec", s("a%20b+c"), &["1"]), Some(s("a b c")));
        assert_eq!(cv("url_dec", s("a+b?c+d"), &[]), Some(s("a+b?c d")));
        assert_eq!(cv("url_dec", s("a+b%3Fc+d"), &[]), Some(s("a+b?c+d")));
        assert_eq!(cv("url_dec", s("a%zzb"), &[]), None);
        assert_eq!(cv("url_dec", s("a%2"), &[]), None);
    }

    #[test]
    fn json_escaping() {
        let input = Sample::Str(Bytes::from_static(
            b"He said \"hi\" \xc3\xa9 / \xe2\x82\xac\x01\t",
        ));
        assert_eq!(
            txt(cv("json", input.clone(), &[])),
            "He said \\\"hi\\\" \\u00c3\\u00a9 \\/ \\u00e2\\u0082\\u00ac\\u0001\\t"
        );
        assert_eq!(
            txt(cv("json", input, &["utf8"])),
            "He said \\\"hi\\\" \\u00e9 \\/ \\u20ac\\u0001\\t"
        );
        let bad = Sample::Str(Bytes::from_static(
            b"a\xc3(b\xf0\x9f\x98\x80c\xc0\xafd\xed\xa0\x80e",
        ));
        assert_eq!(txt(cv("json", bad.clone(), &["utf8s"])), "a(bcde");
        assert_eq!(txt(cv("json", bad.clone(), &["utf8ps"])), "a(bc\\/de");
        assert_eq!(cv("json", bad.clone(), &["utf8"]), None);
        assert_eq!(cv("json", bad.clone(), &["utf8p"]), None);
        assert_eq!(
            txt(cv("json", bad, &["ascii"])),
            "a\\u00c3(b\\u00f0\\u009f\\u0098\\u0080c\\u00c0\\u00afd\\u00ed\\u00a0\\u0080e"
        );
        assert_eq!(
            txt(cv("json", s("\x08\x0c\r\n\\"), &[])),
            "\\b\\f\\r\\n\\\\"
        );
        assert!(err("json", &["latin1"]).contains("unexpected input code"));
    }

    #[test]
    fn field_and_word_as_documented() {
        let f = |a: &[&str]| cv("field", s("f1_f2_f3__f5"), a).map(|v| txt(Some(v)));
        assert_eq!(f(&["4", "_"]).as_deref(), Some(""));
        assert_eq!(f(&["5", "_"]).as_deref(), Some("f5"));
        assert_eq!(f(&["6", "_"]), None);
        assert_eq!(f(&["2", "_", "0"]).as_deref(), Some("f2_f3__f5"));
        assert_eq!(f(&["2", "_", "2"]).as_deref(), Some("f2_f3"));
        assert_eq!(f(&["-2", "_", "3"]).as_deref(), Some("f2_f3_"));
        assert_eq!(f(&["-3", "_", "0"]).as_deref(), Some("f1_f2_f3"));
        assert_eq!(f(&["4", "_", "9"]).as_deref(), Some("_f5"));
        assert_eq!(f(&["-5", "_"]).as_deref(), Some("f1"));
        assert_eq!(f(&["-6", "_"]), None);
        let w = |i: &str, a: &[&str]| cv("word", s(i), a).map(|v| txt(Some(v)));
        let x = "f1_f2_f3__f5";
        assert_eq!(w(x, &["4", "_"]).as_deref(), Some("f5"));
        assert_eq!(w(x, &["5", "_"]), None);
        assert_eq!(w(x, &["2", "_", "0"]).as_deref(), Some("f2_f3__f5"));
        assert_eq!(w(x, &["3", "_", "2"]).as_deref(), Some("f3__f5"));
        assert_eq!(w(x, &["-2", "_", "3"]).as_deref(), Some("f1_f2_f3"));
        assert_eq!(w(x, &["-3", "_", "0"]).as_deref(), Some("f1_f2"));
        assert_eq!(w(x, &["3", "_", "9"]).as_deref(), Some("f3__f5"));
        assert_eq!(w("/f1/f2/f3/f4", &["1", "/"]).as_deref(), Some("f1"));
        assert_eq!(w("/f1////f2/f3/f4", &["2", "/"]).as_deref(), Some("f2"));
        assert_eq!(w("a__", &["-1", "_"]).as_deref(), Some("a"));
        assert_eq!(w("a.b;c", &["3", ".;"]).as_deref(), Some("c"));
        assert!(err("word", &["0", "_"]).contains("must not be 0"));
        assert!(err("field", &["1", ""]).contains("missing delimiters"));
        assert!(err("field", &["1"]).contains("at least 2"));
    }

    #[test]
    fn bytes_trim_concat() {
        assert_eq!(
            cv("bytes", s("012345"), &["2"]),
            Some(Sample::Bin(Bytes::from_static(b"2345")))
        );
        assert_eq!(
            cv("bytes", s("012345"), &["1", "3"]),
            Some(Sample::Bin(Bytes::from_static(b"123")))
        );
        assert_eq!(
            cv("bytes", s("012345"), &["9"]),
            Some(Sample::Bin(Bytes::new()))
        );
        assert_eq!(
            cv("bytes", s("012345"), &["1", "9"]),
            Some(Sample::Bin(Bytes::from_static(b"12345")))
        );
        assert_eq!(
            cv("bytes", s("012345"), &["txn.n"]),
            Some(Sample::Bin(Bytes::from_static(b"2345")))
        );
        assert_eq!(cv("bytes", s("012345"), &["-1"]), None);
        assert_eq!(cv("ltrim", s("xyaxy"), &["xy"]), Some(s("axy")));
        assert_eq!(cv("rtrim", s("xxaxx"), &["x"]), Some(s("xxa")));
        assert_eq!(cv("rtrim", s("xx"), &["x"]), Some(s("")));
        assert_eq!(cv("cut_crlf", s("ab\r\nc"), &[]), Some(s("ab")));
        assert_eq!(cv("reverse", s("abc"), &[]), Some(s("cba")));
        assert_eq!(
            cv("concat", s("a"), &["<", "txn.v", ">"]),
            Some(s("a<VAR>"))
        );
        assert_eq!(cv("concat", s("a"), &["", "txn.nope", ""]), Some(s("a")));
        assert_eq!(cv("concat", s("a"), &["x"]), Some(s("ax")));
        assert_eq!(cv("concat", s(""), &["", "txn.v"]), Some(s("VAR")));
        assert_eq!(cv("concat", s("a"), &[]), Some(s("a")));
        assert!(err("concat", &["", "bad var"]).contains("not a valid variable"));
        assert_eq!(cv("add_item", s("a"), &["-", "txn.v"]), Some(s("a-VAR")));
        assert_eq!(cv("add_item", s(""), &["-", "txn.v", "s"]), Some(s("VARs")));
        assert_eq!(cv("add_item", s("a"), &["-", "txn.nope"]), Some(s("a")));
        assert!(err("add_item", &["-"]).contains("expects a variable"));
    }

    #[test]
    fn arithmetic() {
        let i = Sample::Sint;
        assert_eq!(cv("add", i(1), &["2"]), Some(i(3)));
        assert_eq!(cv("add", i(1), &["txn.n"]), Some(i(3)));
        assert_eq!(cv("add", i(1), &["txn.v"]), Some(i(1)));
        assert_eq!(cv("add", s("12abc"), &["1"]), Some(i(13)));
        assert_eq!(cv("add", i(i64::MAX), &["1"]), Some(i(i64::MAX)));
        assert_eq!(cv("sub", i(i64::MIN), &["1"]), Some(i(i64::MIN)));
        assert_eq!(cv("mul", i(i64::MAX), &["2"]), Some(i(i64::MAX)));
        assert_eq!(cv("div", i(5), &["0"]), Some(i(i64::MAX)));
        assert_eq!(cv("div", i(-7), &["2"]), Some(i(-3)));
        assert_eq!(cv("mod", i(5), &["0"]), Some(i(0)));
        assert_eq!(cv("mod", i(-7), &["3"]), Some(i(-1)));
        assert_eq!(cv("and", i(6), &["3"]), Some(i(2)));
        assert_eq!(cv("or", i(6), &["3"]), Some(i(7)));
        assert_eq!(cv("xor", i(6), &["3"]), Some(i(5)));
        assert_eq!(cv("neg", i(i64::MIN), &[]), Some(i(i64::MAX)));
        assert_eq!(cv("cpl", i(0), &[]), Some(i(-1)));
        assert_eq!(cv("bool", i(3), &[]), Some(Sample::Bool(true)));
        assert_eq!(cv("not", i(3), &[]), Some(Sample::Bool(false)));
        assert_eq!(cv("odd", i(3), &[]), Some(Sample::Bool(true)));
        assert_eq!(cv("even", i(3), &[]), Some(Sample::Bool(false)));
        assert_eq!(
            cv("iif", Sample::Bool(true), &["yes", "no"]),
            Some(s("yes"))
        );
        assert_eq!(cv("iif", i(0), &["yes", "no"]), Some(s("no")));
        assert!(err("add", &[]).contains("neither an integer nor a variable"));
    }

    #[test]
    fn regsub_param_hosts() {
        assert_eq!(
            cv("regsub", s("/////a///b/c"), &["/+", "/", "g"]),
            Some(s("/a/b/c"))
        );
        assert_eq!(
            cv("regsub", s("/////a///b/c"), &["/+", "/"]),
            Some(s("/a///b/c"))
        );
        assert_eq!(
            cv(
                "regsub",
                s("fooBAR12"),
                &["(foo|bar)([0-9]+)?", "<\\2\\1>", "ig"]
            ),
            Some(s("<foo><12BAR>"))
        );
        assert_eq!(
            cv("regsub", s("aaa"), &["x*", "-", "g"]),
            Some(s("-a-a-a-"))
        );
        assert!(err("regsub", &["(", "x"]).contains("invalid regex"));
        assert!(err("regsub", &["a", "x", "q"]).contains("unknown flag"));
        assert_eq!(cv("param", s("a=b&c=d&a=r"), &["a"]), Some(s("b")));
        assert_eq!(cv("param", s("a&b=c"), &["a"]), Some(s("")));
        assert_eq!(cv("param", s("a=1;b=2;c=4"), &["b", ";"]), Some(s("2")));
        assert_eq!(cv("param", s("a=1\x01b=2"), &["b", "0x01"]), Some(s("2")));
        assert_eq!(cv("param", s("x=1"), &["y"]), None);
        assert!(err("param", &["a", "ab"]).contains("delimiter"));
        assert_eq!(
            cv("host_only", s("WWW.Example.com:8080"), &[]),
            Some(s("www.example.com"))
        );
        assert_eq!(cv("host_only", s("[::1]:80"), &[]), Some(s("[::1]")));
        assert_eq!(
            cv("port_only", s("example.com:8080"), &[]),
            Some(Sample::Sint(8080))
        );
        assert_eq!(
            cv("port_only", s("example.com"), &[]),
            Some(Sample::Sint(0))
        );
        assert_eq!(cv("port_only", s("[::1]:81"), &[]), Some(Sample::Sint(81)));
    }

    #[test]
    fn comparisons() {
        assert_eq!(cv("strcmp", s("abc"), &["txn.v"]), Some(Sample::Sint(11)));
        assert_eq!(cv("strcmp", s("VAR"), &["txn.v"]), Some(Sample::Sint(0)));
        assert_eq!(cv("strcmp", s("VARX"), &["txn.v"]), Some(Sample::Sint(1)));
        assert_eq!(cv("strcmp", s("x"), &["txn.nope"]), None);
        assert_eq!(
            cv("secure_memcmp", s("VAR"), &["txn.v"]),
            Some(Sample::Bool(true))
        );
        assert_eq!(
            cv("secure_memcmp", s("VAX"), &["txn.v"]),
            Some(Sample::Bool(false))
        );
        assert_eq!(
            cv("secure_memcmp", s("VA"), &["txn.v"]),
            Some(Sample::Bool(false))
        );
        assert!(err("strcmp", &[""]).contains("expects a variable"));
    }

    #[test]
    fn ip_masks() {
        let ip = |t: &str| Sample::Ip(t.parse().unwrap());
        assert_eq!(
            cv("ipmask", s("192.168.1.77"), &["24"]),
            Some(ip("192.168.1.0"))
        );
        assert_eq!(
            cv("ipmask", ip("192.168.1.77"), &["255.255.0.0"]),
            Some(ip("192.168.0.0"))
        );
        assert_eq!(
            cv("ipmask", ip("2001:db8::1"), &["24", "64"]),
            Some(ip("2001:db8::"))
        );
        assert_eq!(
            cv("ipmask", ip("2001:db8:1:2::1"), &["24", "ffff:ffff::"]),
            Some(ip("2001:db8::"))
        );
        assert_eq!(cv("ipmask", ip("2001:db8::1"), &["24"]), None);
        assert_eq!(cv("ipmask", s("not an ip"), &["24"]), None);
        assert!(err("ipmask", &["33"]).contains("mask length"));
        assert!(err("ipmask", &["255.0.255.0"]).contains("IPv4 mask"));
        assert!(err("ipmask", &["24", "129"]).contains("mask length"));
    }

    #[test]
    fn dates() {
        assert_eq!(
            cv("http_date", Sample::Sint(784_111_777), &[]),
            Some(s("Sun, 06 Nov 1994 08:49:37 GMT"))
        );
        assert_eq!(
            cv("http_date", Sample::Sint(784_111_777), &["3600"]),
            Some(s("Sun, 06 Nov 1994 09:49:37 GMT"))
        );
        assert_eq!(
            cv("http_date", Sample::Sint(784_111_777_123), &["0", "ms"]),
            Some(s("Sun, 06 Nov 1994 08:49:37.123 GMT"))
        );
        assert_eq!(cv("http_date", Sample::Sint(-5), &[]), None);
        assert!(err("http_date", &["0", "h"]).contains("unit"));
        assert_eq!(
            cv("utime", Sample::Sint(784_111_777), &["%Y-%m-%d %H:%M:%S"]),
            Some(s("1994-11-06 08:49:37"))
        );
        assert!(cv("ltime", Sample::Sint(784_111_777), &["%Y"]).is_some());
        assert_eq!(
            cv("date", s("Sun, 06 Nov 1994 08:49:37 GMT"), &[]),
            Some(Sample::Sint(784_111_777))
        );
        assert_eq!(
            cv("date", s("Sunday, 06-Nov-94 08:49:37 GMT"), &[]),
            Some(Sample::Sint(784_111_777))
        );
        assert_eq!(
            cv("date", s("Sun Nov  6 08:49:37 1994"), &[]),
            Some(Sample::Sint(784_111_777))
        );
        assert_eq!(cv("date", s("yesterday"), &[]), None);
    }

    #[test]
    fn maps() {
        let d = temp_dir("conv-maps");
        let w = |n: &str, t: &str| {
            let p = d.join(n);
            std::fs::write(&p, t).unwrap();
            p.to_string_lossy().into_owned()
        };
        let t = w("t.map", "/api api\n/api/v2 v2\n.png png\n");
        let re = w("re.map", "^/u/([a-z]+)/([0-9]+) id=\\2,name=\\1\n");
        let int = w("int.map", "10:20 teen\n5 five\n");
        let si = w("si.map", "a 42\nb -7\n");
        let ip = w(
            "ip.map",
            "10.0.0.0/8 net8\n10.1.0.0/16 net16\n10.2.0.0/16 10.9.9.9\n",
        );
        let bad = w("bad.map", "a 42x\n");
        assert_eq!(cv("map", s("/api"), &[&t]), Some(s("api")));
        assert_eq!(cv("map_str", s("/nope"), &[&t]), None);
        assert_eq!(cv("map_str", s("/nope"), &[&t, "dflt"]), Some(s("dflt")));
        assert_eq!(cv("map_beg", s("/api/v2/x"), &[&t, "none"]), Some(s("v2")));
        assert_eq!(cv("map_end", s("x.png"), &[&t, "none"]), Some(s("png")));
        assert_eq!(cv("map_sub", s("x/api/y"), &[&t]), Some(s("api")));
        assert_eq!(cv("map_dir", s("/a/api/b"), &[&t]), Some(s("api")));
        assert_eq!(cv("map_dom", s("a.png"), &[&t]), Some(s("png")));
        assert_eq!(
            cv("map_reg", s("/u/bob/42"), &[&re]),
            Some(s("id=\\2,name=\\1"))
        );
        assert_eq!(
            cv("map_regm", s("/u/bob/42"), &[&re, "none"]),
            Some(s("id=42,name=bob"))
        );
        assert_eq!(cv("map_int", s("15"), &[&int, "none"]), Some(s("teen")));
        assert_eq!(cv("map_int", s("15x"), &[&int, "none"]), Some(s("teen")));
        assert_eq!(cv("map_int", Sample::Sint(5), &[&int]), Some(s("five")));
        assert_eq!(
            cv("map_str_int", s("a"), &[&si, "5"]),
            Some(Sample::Sint(42))
        );
        assert_eq!(cv("map_str_int", s("b"), &[&si]), Some(Sample::Sint(-7)));
        assert_eq!(
            cv("map_str_int", s("z"), &[&si, "5"]),
            Some(Sample::Sint(5))
        );
        assert_eq!(
            cv("map_ip", s("10.1.2.3"), &[&ip, "none"]),
            Some(s("net16"))
        );
        assert_eq!(
            cv("map_ip", Sample::Ip("10.3.2.3".parse().unwrap()), &[&ip]),
            Some(s("net8"))
        );
        assert!(err("map_ip_ip", &[&ip]).contains("unable to parse 'net8'"));
        let ipip = w("ipip.map", "10.2.0.0/16 10.9.9.9\n");
        assert_eq!(
            cv("map_ip_ip", s("10.2.0.1"), &[&ipip]),
            Some(Sample::Ip("10.9.9.9".parse().unwrap()))
        );
        assert_eq!(
            cv("map_ip_ip", s("10.3.0.1"), &[&ipip, "127.0.0.1"]),
            Some(Sample::Ip("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            cv("map_ip_key", s("10.1.2.3"), &[&ip]),
            Some(s("10.1.0.0/16"))
        );
        assert!(err("map_str_int", &[&bad]).contains("unable to parse '42x'"));
        assert!(err("map_ip", &[&t]).contains("not a valid IPv4 or IPv6"));
        assert!(err("map_str_int", &[&si, "x"]).contains("invalid default"));
        assert!(err("map_key", &[&t]).contains("unknown converter"));
        assert!(err("map_str_key", &[&t, "d"]).contains("default value is not supported"));
        assert!(err("map", &[]).contains("map file"));
        assert!(!exists("map_nope"));
        assert!(!exists("mapx"));
        assert!(exists("map_beg_int"));
        assert_eq!(
            out_type(find("map_beg_int").unwrap(), "map_beg_int"),
            SampleType::Sint
        );
        assert_eq!(
            out_type(find("map_ip_ip").unwrap(), "map_ip_ip"),
            SampleType::Ip
        );
        assert_eq!(out_type(find("map").unwrap(), "map"), SampleType::Str);
    }

    #[test]
    fn misc() {
        let t = tcp_txn();
        let c = ctx(&t);
        assert_eq!(
            call("nbsrv", s("app"), &[], &c).unwrap(),
            Some(Sample::Sint(2))
        );
        assert_eq!(call("nbsrv", s("nope"), &[], &c).unwrap(), None);
        assert_eq!(
            call("debug", Sample::Sint(3), &[], &c).unwrap(),
            Some(Sample::Sint(3))
        );
        assert_eq!(
            call("lua.wrap", s("x"), &["*".into()], &c).unwrap(),
            Some(s("*x*"))
        );
        assert!(call("set-var", s("x"), &["txn.x".into()], &c)
            .unwrap_err()
            .contains("not supported"));
        assert!(call("nope", s("x"), &[], &c)
            .unwrap_err()
            .contains("unknown converter"));
        assert!(names().any(|n| n == "map_beg"));
        let mut seen = std::collections::HashSet::new();
        for n in names() {
            assert!(seen.insert(n), "duplicate converter {n}");
        }
        // An input that cannot be cast fails the conversion.
        assert_eq!(
            call("ipmask", Sample::Bool(true), &["24".into()], &c).unwrap(),
            None
        );
    }
}
