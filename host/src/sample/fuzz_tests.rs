//! Fetch and converter fuzzing: every registered fetch and converter called
//! with random argument lists (wrong counts, huge and negative integers,
//! empty and binary strings, bad regexes, missing files) on random inputs
//! and random transactions, directly and through compiled expressions.
//! Nothing may panic; a bad argument is an error, a failed conversion is
//! no sample.

use super::testutil::{tcp_txn, temp_dir, with_response, FakeLua, FakeProxies};
use super::{conv, fetch, Sample, SampleCtx, SampleExpr};
use crate::fuzz::{self, Rng};
use crate::lua::vars::VarValue;
use crate::txn::{Txn, TxnMode};
use bytes::{Bytes, BytesMut};
use hyper::http::Request;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Argument words: each kind's edge cases. `@MAP@` is a real map file.
const ARGS: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "2",
    "7",
    "16",
    "64",
    "255",
    "256",
    "65536",
    "2147483648",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "99999999999999999999",
    "1e3",
    "0x1f",
    "+3",
    " 4",
    "txn.x",
    "txn.s",
    "sess.y",
    "req.z",
    "proc.p",
    "res.r",
    "txn.",
    ".x",
    "txn.x.y",
    "abc",
    "a,b",
    "\\",
    "\\\\",
    "(",
    ")",
    "[a-",
    "^(a+)+$",
    ".*",
    "^/api/(.*)$",
    "\\1",
    "i",
    "g",
    "ig",
    "sha1",
    "sha256",
    "crc32",
    "base64",
    "s",
    "ms",
    "us",
    "d",
    "@MAP@",
    "/nonexistent/file",
    "%[path]",
    "::1",
    "10.0.0.1",
    "255.255.255.255",
    "10.0.0.0/8",
    "1.2.3.4/33",
    "ffff::/129",
    "GET",
    "host",
    "x-list",
    "content-length",
    "cookie",
    "session",
    "id",
    ";",
    "=",
    "&",
    "é",
    "€",
    "\u{0}",
    "\t",
    "%",
    "%2",
    "%zz",
    "%41%42",
];

fn random_text(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => rng.pick(ARGS).to_string(),
        1 => String::from_utf8_lossy(&rng.bytes(24)).into_owned(),
        2 => "a".repeat(rng.below(5000)),
        _ => (0..rng.below(12))
            .map(|_| *rng.pick(&['a', 'Z', '0', '9', ',', '.', ':', '/', '%', ' ', '-', '=']))
            .collect(),
    }
}

fn random_args(rng: &mut Rng, map: &str) -> Vec<String> {
    (0..rng.below(5))
        .map(|_| {
            if rng.one_in(3) {
                random_text(rng)
            } else {
                rng.pick(ARGS).replace("@MAP@", map)
            }
        })
        .collect()
}

fn random_sample(rng: &mut Rng) -> Sample {
    let bytes = |rng: &mut Rng| {
        if rng.one_in(3) {
            Bytes::from(random_text(rng))
        } else {
            Bytes::from(rng.bytes(40))
        }
    };
    match rng.below(7) {
        0 => Sample::Bool(rng.one_in(2)),
        1 => Sample::Sint(*rng.pick(&[0, 1, -1, i64::MAX, i64::MIN, 255, 65536])),
        2 => Sample::Sint(rng.next_u64() as i64),
        3 => Sample::Str(bytes(rng)),
        4 => Sample::Bin(bytes(rng)),
        5 => Sample::Ip(if rng.one_in(2) {
            IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(
                (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()),
            ))
        }),
        _ => Sample::Meth(bytes(rng)),
    }
}

/// A transaction: TCP with buffered bytes, or HTTP with random (valid)
/// request headers, maybe a response, a body and variables.
fn random_txn(rng: &mut Rng) -> Txn {
    let mut t = tcp_txn();
    t.req_buf = BytesMut::from(&rng.bytes(64)[..]);
    t.res_buf = BytesMut::from(&rng.bytes(16)[..]);
    if rng.one_in(2) {
        t.vars
            .set("txn.x", VarValue::Int(rng.next_u64() as i64), false);
        t.vars.set("txn.s", VarValue::Str(rng.bytes(10)), false);
    }
    if rng.one_in(4) {
        return t;
    }
    const URIS: &[&str] = &[
        "/",
        "/api/v1/x?id=42&id=7&flag",
        "/a/b/../c?x=%41%zz&=&&",
        "*",
        "/%00?%",
        "http://example.com:8080/p?q=1",
        "/?;;=",
    ];
    const NAMES: &[&str] = &[
        "host",
        "x-list",
        "cookie",
        "content-length",
        "x-n",
        "user-agent",
        "set-cookie",
        "x-forwarded-for",
        "authorization",
        "content-type",
    ];
    const VALUES: &[&str] = &[
        "",
        "example.com",
        "a, b,c ,,",
        "session=abc; id=7; =x; y",
        "12",
        "-5",
        "99999999999999999999",
        "1.2.3.4, ::1, bogus",
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "Basic !!!",
        "text/html; charset=utf-8",
        "\t x \t",
    ];
    let method = *rng.pick(&["GET", "POST", "HEAD", "OPTIONS", "BREW", "CONNECT"]);
    let mut b = Request::builder().method(method).uri(*rng.pick(URIS));
    for _ in 0..rng.below(8) {
        b = b.header(*rng.pick(NAMES), *rng.pick(VALUES));
    }
    let Ok(req) = b.body(()) else {
        return t;
    };
    t.mode = TxnMode::Http;
    t.req = Some(req.into_parts().0);
    if rng.one_in(2) {
        t.req_body = Some(Bytes::from(rng.bytes(64)));
    }
    if rng.one_in(2) {
        let status = *rng.pick(&[200, 204, 301, 404, 500, 599]);
        t = with_response(t, status, &[("set-cookie", "a=b"), ("content-length", "3")]);
    }
    t
}

fn map_file() -> String {
    let dir = temp_dir("conv-fuzz");
    let path = dir.join("f.map");
    let _ = std::fs::write(
        &path,
        "abc 1\n10.0.0.0/8 net\n/api api\n^a(.*)$ \\1\n42 answer\n",
    );
    path.display().to_string()
}

/// Seeds that once found a bug (see the commit that added each).
const REGRESSIONS: &[u64] = &[];

#[test]
fn fuzz_every_fetch_and_converter_with_random_arguments() {
    let map = map_file();
    let fetches: Vec<&fetch::FetchKw> = fetch::keywords().collect();
    let convs: Vec<&str> = conv::names().collect();
    fuzz::run("fuzz_fetch_conv", 60, REGRESSIONS, |rng| {
        let t = random_txn(rng);
        let ctx = SampleCtx::new(&t, &FakeLua, &FakeProxies);
        for kw in &fetches {
            let args = random_args(rng, &map);
            if let Err(e) = fetch::call_kw(kw, &args, &ctx) {
                if e.is_empty() {
                    return Err(format!("fetch {} {args:?}: empty error", kw.name));
                }
            }
        }
        for name in &convs {
            let args = random_args(rng, &map);
            let input = random_sample(rng);
            if let Err(e) = conv::call(name, input, &args, &ctx) {
                if e.is_empty() {
                    return Err(format!("converter {name} {args:?}: empty error"));
                }
            }
        }
        Ok(())
    });
}

/// The same keywords through the expression parser and evaluator: random
/// chains of a fetch and converters, with arguments written in the text.
#[test]
fn fuzz_sample_expressions() {
    let map = map_file();
    let fetches: Vec<&str> = fetch::names().collect();
    let convs: Vec<&str> = conv::names().collect();
    fuzz::run("fuzz_sample_expr", 400, REGRESSIONS, |rng| {
        let mut text = rng.pick(&fetches).to_string();
        let arglist = |rng: &mut Rng| {
            let args = random_args(rng, &map);
            if args.is_empty() && rng.one_in(2) {
                String::new()
            } else {
                format!("({})", args.join(","))
            }
        };
        text.push_str(&arglist(rng));
        for _ in 0..rng.below(4) {
            text.push(',');
            let name: &str = convs[rng.below(convs.len())];
            text.push_str(name);
            text.push_str(&arglist(rng));
        }
        if rng.one_in(5) {
            let cut: Vec<char> = text.chars().collect();
            text = cut[..rng.below(cut.len() + 1)].iter().collect();
        }
        let t = random_txn(rng);
        let ctx = SampleCtx::new(&t, &FakeLua, &FakeProxies);
        match SampleExpr::parse(&text) {
            Ok(e) => {
                let _ = e.eval(&ctx);
                let _ = e.eval_all(&ctx);
                let _ = e.out_type();
            }
            Err(msg) if msg.is_empty() => return Err(format!("{text:?}: empty error")),
            Err(_) => {}
        }
        Ok(())
    });
}
