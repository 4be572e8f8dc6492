//! Native sample fetches: what a transaction offers to expressions, ACLs
//! and log formats (addresses, names, request and response parts, buffer
//! contents, variables, constants).

use super::expr::{prepare_args, var_value, Arg, ArgKind};
use super::hash::{full_hash, sdbm};
use super::http::{self as h};
use super::{parse_ip, str_to_int, Sample, SampleCtx, SampleType};
use crate::txn::TxnMode;
use base64::Engine;
use bytes::Bytes;
use hyper::http::header::HeaderMap;
use hyper::http::request;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// A fetch function: arguments compiled by `prepare`, then the context.
pub type FetchFn = fn(&[Arg], &SampleCtx) -> Option<Sample>;
/// Gives every value for ACLs (all occurrences); None when the arguments
/// ask for a single one.
pub type MultiFn = fn(&[Arg], &SampleCtx) -> Option<Vec<Sample>>;
/// Validates compiled arguments beyond their kinds.
pub type CheckFn = fn(&[Arg]) -> Result<(), String>;

/// A fetch keyword.
#[derive(Debug)]
pub struct FetchKw {
    /// The name as written in the configuration.
    pub name: &'static str,
    /// The type it produces.
    pub out: SampleType,
    /// Its arguments' kinds.
    pub args: &'static [ArgKind],
    /// How many arguments are mandatory.
    pub min: usize,
    /// The fetch itself.
    pub f: FetchFn,
    /// Every value, for ACL matching.
    pub multi: Option<MultiFn>,
    /// Extra argument validation.
    pub check: Option<CheckFn>,
}

impl FetchKw {
    const fn new(
        name: &'static str,
        out: SampleType,
        args: &'static [ArgKind],
        min: usize,
        f: FetchFn,
    ) -> FetchKw {
        FetchKw {
            name,
            out,
            args,
            min,
            f,
            multi: None,
            check: None,
        }
    }
    const fn multi(mut self, m: MultiFn) -> FetchKw {
        self.multi = Some(m);
        self
    }
    const fn check(mut self, c: CheckFn) -> FetchKw {
        self.check = Some(c);
        self
    }
}

fn table() -> &'static HashMap<&'static str, &'static FetchKw> {
    static T: OnceLock<HashMap<&'static str, &'static FetchKw>> = OnceLock::new();
    T.get_or_init(|| FETCHES.iter().map(|k| (k.name, k)).collect())
}

/// The fetch keyword called `name`.
pub fn find(name: &str) -> Option<&'static FetchKw> {
    table().get(name).copied()
}

/// Whether a native fetch called `name` exists.
pub fn exists(name: &str) -> bool {
    find(name).is_some()
}

/// The names of all native fetches.
pub fn names() -> impl Iterator<Item = &'static str> {
    FETCHES.iter().map(|k| k.name)
}

/// All native fetch keywords.
pub fn keywords() -> impl Iterator<Item = &'static FetchKw> {
    FETCHES.iter()
}

/// Compiles the textual arguments of `kw`.
pub fn prepare(kw: &FetchKw, raw: &[String]) -> Result<Vec<Arg>, String> {
    // The common case at runtime (a Lua `txn.f:path()`): nothing to compile.
    if raw.is_empty() && kw.args.is_empty() {
        return Ok(Vec::new());
    }
    let what = format!("fetch method '{}'", kw.name);
    let args = prepare_args(&what, raw, kw.args, kw.min)?;
    if let Some(c) = kw.check {
        c(&args).map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(args)
}

/// Runs fetch `kw` with textual arguments (see [`call`]).
pub fn call_kw(kw: &FetchKw, args: &[String], ctx: &SampleCtx) -> Result<Option<Sample>, String> {
    let a = if args.is_empty() && kw.min > 0 {
        prepare(kw, &[String::new()])?
    } else {
        prepare(kw, args)?
    };
    Ok((kw.f)(&a, ctx))
}

/// Runs fetch `name` (native, or `lua.NAME`) with textual arguments:
/// Err for an unknown fetch or bad arguments, Ok(None) when it finds
/// nothing.
pub fn call(name: &str, args: &[String], ctx: &SampleCtx) -> Result<Option<Sample>, String> {
    if let Some(l) = name.strip_prefix("lua.") {
        return Ok(ctx.lua.fetch(l, ctx.txn, args));
    }
    let kw = find(name).ok_or_else(|| format!("unknown fetch method '{name}'"))?;
    call_kw(kw, args, ctx)
}

use ArgKind as A;
use SampleType as T;

static FETCHES: &[FetchKw] = &[
    // Internal states and constants.
    FetchKw::new("always_true", T::Bool, &[], 0, |_, _| {
        Some(Sample::Bool(true))
    }),
    FetchKw::new("always_false", T::Bool, &[], 0, |_, _| {
        Some(Sample::Bool(false))
    }),
    FetchKw::new("bin", T::Bin, &[A::Str], 1, f_bin).check(check_bin),
    FetchKw::new("bool", T::Bool, &[A::Str], 1, f_bool).check(check_bool),
    FetchKw::new("int", T::Sint, &[A::Int], 1, |a, _| {
        a[0].int().map(Sample::Sint)
    }),
    FetchKw::new("ipv4", T::Ip, &[A::Str], 1, f_ip).check(check_ipv4),
    FetchKw::new("ipv6", T::Ip, &[A::Str], 1, f_ip).check(check_ipv6),
    FetchKw::new("meth", T::Meth, &[A::Str], 1, |a, _| {
        Some(Sample::Meth(bytes_of(&a[0])))
    }),
    FetchKw::new("str", T::Str, &[A::Str], 1, |a, _| {
        Some(Sample::Str(bytes_of(&a[0])))
    }),
    FetchKw::new("date", T::Sint, &[A::Int, A::Str], 0, f_date).check(check_unit),
    FetchKw::new("date_us", T::Sint, &[], 0, |_, _| {
        Some(Sample::Sint(now().subsec_micros() as i64))
    }),
    FetchKw::new("env", T::Str, &[A::Str], 1, f_env),
    FetchKw::new("hostname", T::Str, &[], 0, |_, _| {
        hostname().map(Sample::Str)
    }),
    FetchKw::new("nbsrv", T::Sint, &[A::Str], 0, f_nbsrv),
    FetchKw::new("pid", T::Sint, &[], 0, |_, _| {
        Some(Sample::Sint(std::process::id() as i64))
    }),
    FetchKw::new("proc", T::Sint, &[], 0, |_, _| Some(Sample::Sint(1))),
    FetchKw::new("rand", T::Sint, &[A::Int], 0, f_rand),
    FetchKw::new("stopping", T::Bool, &[], 0, |_, _| {
        Some(Sample::Bool(false))
    }),
    // HAProxy numbers threads from 0; the transaction's worker number
    // starts at 1.
    FetchKw::new("thread", T::Sint, &[], 0, |_, c| {
        Some(Sample::Sint(c.txn.thread.saturating_sub(1) as i64))
    }),
    FetchKw::new("uuid", T::Str, &[A::Int], 0, f_uuid).check(check_uuid),
    FetchKw::new("var", T::Any, &[A::Var, A::Str], 1, f_var).check(check_var_set),
    // Layer 4.
    FetchKw::new("src", T::Ip, &[], 0, |_, c| {
        Some(Sample::Ip(ip_of(c.txn.client)))
    }),
    FetchKw::new("src_port", T::Sint, &[], 0, |_, c| {
        Some(Sample::Sint(c.txn.client.port() as i64))
    }),
    FetchKw::new("dst", T::Ip, &[], 0, |_, c| {
        Some(Sample::Ip(ip_of(c.txn.local)))
    }),
    FetchKw::new("dst_port", T::Sint, &[], 0, |_, c| {
        Some(Sample::Sint(c.txn.local.port() as i64))
    }),
    FetchKw::new("fc_src", T::Ip, &[], 0, |_, c| {
        Some(Sample::Ip(ip_of(c.txn.client)))
    }),
    FetchKw::new("fc_src_port", T::Sint, &[], 0, |_, c| {
        Some(Sample::Sint(c.txn.client.port() as i64))
    }),
    FetchKw::new("fc_dst", T::Ip, &[], 0, |_, c| {
        Some(Sample::Ip(ip_of(c.txn.local)))
    }),
    FetchKw::new("fc_dst_port", T::Sint, &[], 0, |_, c| {
        Some(Sample::Sint(c.txn.local.port() as i64))
    }),
    // HTTP: true for the first request of a connection.
    FetchKw::new("http_first_req", T::Bool, &[], 0, |_, c| {
        (c.txn.mode == crate::txn::TxnMode::Http).then_some(Sample::Bool(c.txn.first_request))
    }),
    FetchKw::new("fe_name", T::Str, &[], 0, |_, c| {
        Some(str_sample(c.txn.frontend.as_bytes()))
    }),
    FetchKw::new("be_name", T::Str, &[], 0, |_, c| {
        Some(str_sample(c.txn.backend_name().as_bytes()))
    }),
    FetchKw::new("srv_name", T::Str, &[], 0, |_, c| {
        c.txn.server.as_deref().map(|s| str_sample(s.as_bytes()))
    }),
    // No TLS on the client side.
    FetchKw::new("ssl_fc", T::Bool, &[], 0, |_, _| Some(Sample::Bool(false))),
    FetchKw::new("ssl_fc_has_sni", T::Bool, &[], 0, |_, _| {
        Some(Sample::Bool(false))
    }),
    FetchKw::new("ssl_c_used", T::Bool, &[], 0, |_, _| {
        Some(Sample::Bool(false))
    }),
    FetchKw::new("ssl_fc_sni", T::Str, &[], 0, |_, _| None),
    FetchKw::new("ssl_fc_protocol", T::Str, &[], 0, |_, _| None),
    FetchKw::new("ssl_fc_cipher", T::Str, &[], 0, |_, _| None),
    // Layer 6: buffer contents.
    FetchKw::new("req.len", T::Sint, &[], 0, f_req_len),
    FetchKw::new("req_len", T::Sint, &[], 0, f_req_len),
    FetchKw::new("req.payload", T::Bin, &[A::Int, A::Int], 2, f_req_payload).check(check_payload),
    FetchKw::new("payload", T::Bin, &[A::Int, A::Int], 2, f_req_payload).check(check_payload),
    FetchKw::new("res.len", T::Sint, &[], 0, |_, c| {
        Some(Sample::Sint(c.txn.res_buf.len() as i64))
    }),
    FetchKw::new("res.payload", T::Bin, &[A::Int, A::Int], 2, f_res_payload).check(check_payload),
    FetchKw::new("req.proto_http", T::Bool, &[], 0, f_proto_http),
    FetchKw::new("req_proto_http", T::Bool, &[], 0, f_proto_http),
    FetchKw::new("req.ssl_sni", T::Str, &[], 0, |_, c| {
        h::tls_sni(&c.txn.req_buf).map(Sample::Str)
    }),
    FetchKw::new("req_ssl_sni", T::Str, &[], 0, |_, c| {
        h::tls_sni(&c.txn.req_buf).map(Sample::Str)
    }),
    FetchKw::new("req.ssl_hello_type", T::Sint, &[], 0, |_, c| {
        h::tls_hello_type(&c.txn.req_buf).map(Sample::Sint)
    }),
    FetchKw::new("req_ssl_hello_type", T::Sint, &[], 0, |_, c| {
        h::tls_hello_type(&c.txn.req_buf).map(Sample::Sint)
    }),
    // Layer 7: request line and target.
    FetchKw::new("method", T::Meth, &[], 0, |_, c| {
        Some(Sample::Meth(Bytes::copy_from_slice(
            req(c)?.method.as_str().as_bytes(),
        )))
    }),
    FetchKw::new("capture.req.hdr", T::Str, &[A::Int], 1, |a, c| {
        captured(&c.txn.log.req_captures, a)
    }),
    FetchKw::new("capture.res.hdr", T::Str, &[A::Int], 1, |a, c| {
        captured(&c.txn.log.res_captures, a)
    }),
    FetchKw::new("capture.req.method", T::Str, &[], 0, |_, c| {
        Some(str_sample(req(c)?.method.as_str().as_bytes()))
    }),
    FetchKw::new("path", T::Str, &[], 0, |_, c| {
        Some(str_sample(h::path(&target_of(c)?)?.as_bytes()))
    }),
    FetchKw::new("pathq", T::Str, &[], 0, f_pathq),
    FetchKw::new("capture.req.uri", T::Str, &[], 0, f_pathq),
    FetchKw::new("query", T::Str, &[A::Str], 0, f_query).check(check_query),
    FetchKw::new("url", T::Str, &[], 0, |_, c| {
        Some(str_sample(target_of(c)?.as_bytes()))
    }),
    FetchKw::new("url_ip", T::Ip, &[], 0, f_url_ip),
    FetchKw::new("url_port", T::Sint, &[], 0, f_url_port),
    FetchKw::new("base", T::Str, &[], 0, |_, c| {
        Some(Sample::Str(base(c, false)?))
    }),
    FetchKw::new("baseq", T::Str, &[], 0, |_, c| {
        Some(Sample::Str(base(c, true)?))
    }),
    FetchKw::new("base32", T::Sint, &[], 0, |_, c| {
        Some(Sample::Sint(full_hash(sdbm(&base(c, false)?)) as i64))
    }),
    FetchKw::new("url32", T::Sint, &[], 0, f_url32),
    FetchKw::new("urlp", T::Str, &[A::Str, A::Str, A::Str], 0, f_urlp).multi(m_urlp),
    FetchKw::new("url_param", T::Str, &[A::Str, A::Str, A::Str], 0, f_urlp).multi(m_urlp),
    FetchKw::new("urlp_val", T::Sint, &[A::Str, A::Str, A::Str], 0, |a, c| {
        f_urlp(a, c).map(to_sint)
    }),
    FetchKw::new("req.ver", T::Str, &[], 0, |_, c| {
        Some(str_sample(h::version_str(req(c)?.version).as_bytes()))
    }),
    FetchKw::new("req_ver", T::Str, &[], 0, |_, c| {
        Some(str_sample(h::version_str(req(c)?.version).as_bytes()))
    }),
    FetchKw::new("capture.req.ver", T::Str, &[], 0, |_, c| {
        Some(Sample::Str(Bytes::from(format!(
            "HTTP/{}",
            h::version_str(req(c)?.version)
        ))))
    }),
    // Request headers.
    FetchKw::new("req.hdr", T::Str, &[A::Str, A::Int], 0, |a, c| {
        hdr(&req(c)?.headers, a, false)
    })
    .multi(|a, c| hdr_all(&req(c)?.headers, a, false)),
    FetchKw::new("req.fhdr", T::Str, &[A::Str, A::Int], 0, |a, c| {
        hdr(&req(c)?.headers, a, true)
    })
    .multi(|a, c| hdr_all(&req(c)?.headers, a, true)),
    FetchKw::new("req.hdr_cnt", T::Sint, &[A::Str], 0, |a, c| {
        hdr_cnt(&req(c)?.headers, a, false)
    }),
    FetchKw::new("req.fhdr_cnt", T::Sint, &[A::Str], 0, |a, c| {
        hdr_cnt(&req(c)?.headers, a, true)
    }),
    FetchKw::new("req.hdr_ip", T::Ip, &[A::Str, A::Int], 0, |a, c| {
        hdr(&req(c)?.headers, a, false).and_then(to_ip)
    })
    .multi(|a, c| {
        Some(
            hdr_all(&req(c)?.headers, a, false)?
                .into_iter()
                .filter_map(to_ip)
                .collect(),
        )
    }),
    FetchKw::new("req.hdr_val", T::Sint, &[A::Str, A::Int], 0, |a, c| {
        hdr(&req(c)?.headers, a, false).map(to_sint)
    })
    .multi(|a, c| {
        Some(
            hdr_all(&req(c)?.headers, a, false)?
                .into_iter()
                .map(to_sint)
                .collect(),
        )
    }),
    FetchKw::new("req.hdr_names", T::Str, &[A::Str], 0, |a, c| {
        Some(hdr_names(&req(c)?.headers, a))
    }),
    FetchKw::new("req.hdrs", T::Str, &[], 0, |_, c| {
        Some(Sample::Str(h::header_block(&req(c)?.headers)))
    }),
    // hdr() and friends read the response once there is one (HAProxy
    // picks the direction of the rule; a response rule sees a response).
    FetchKw::new("hdr", T::Str, &[A::Str, A::Int], 0, |a, c| {
        dir_headers(c, |h| hdr(h, a, false))
    })
    .multi(|a, c| dir_headers(c, |h| hdr_all(h, a, false))),
    FetchKw::new("fhdr", T::Str, &[A::Str, A::Int], 0, |a, c| {
        dir_headers(c, |h| hdr(h, a, true))
    })
    .multi(|a, c| dir_headers(c, |h| hdr_all(h, a, true))),
    FetchKw::new("hdr_cnt", T::Sint, &[A::Str], 0, |a, c| {
        dir_headers(c, |h| hdr_cnt(h, a, false))
    }),
    FetchKw::new("hdr_ip", T::Ip, &[A::Str, A::Int], 0, |a, c| {
        dir_headers(c, |h| hdr(h, a, false)).and_then(to_ip)
    }),
    FetchKw::new("hdr_val", T::Sint, &[A::Str, A::Int], 0, |a, c| {
        dir_headers(c, |h| hdr(h, a, false)).map(to_sint)
    }),
    // Request cookies.
    FetchKw::new("req.cook", T::Str, &[A::Str], 0, |a, c| {
        cook(h::request_cookies(&req(c)?.headers), a)
    })
    .multi(|a, c| cook_all(h::request_cookies(&req(c)?.headers), a)),
    FetchKw::new("cook", T::Str, &[A::Str], 0, |a, c| {
        cook(h::request_cookies(&req(c)?.headers), a)
    })
    .multi(|a, c| cook_all(h::request_cookies(&req(c)?.headers), a)),
    FetchKw::new("req.cook_cnt", T::Sint, &[A::Str], 0, |a, c| {
        cook_cnt(h::request_cookies(&req(c)?.headers), a)
    }),
    FetchKw::new("cook_cnt", T::Sint, &[A::Str], 0, |a, c| {
        cook_cnt(h::request_cookies(&req(c)?.headers), a)
    }),
    FetchKw::new("req.cook_val", T::Sint, &[A::Str], 0, |a, c| {
        cook(h::request_cookies(&req(c)?.headers), a).map(to_sint)
    }),
    FetchKw::new("cook_val", T::Sint, &[A::Str], 0, |a, c| {
        cook(h::request_cookies(&req(c)?.headers), a).map(to_sint)
    }),
    FetchKw::new("req.cook_names", T::Str, &[A::Str], 0, |a, c| {
        Some(cook_names(h::request_cookies(&req(c)?.headers), a))
    }),
    // Authorization.
    FetchKw::new("http_auth_type", T::Str, &[], 0, |_, c| {
        auth(c).map(|(t, _)| t)
    }),
    FetchKw::new("http_auth_user", T::Str, &[], 0, |_, c| {
        basic_creds(c).map(|(u, _)| u)
    }),
    FetchKw::new("http_auth_pass", T::Str, &[], 0, |_, c| {
        basic_creds(c).map(|(_, p)| p)
    }),
    FetchKw::new("http_auth_bearer", T::Str, &[A::Str], 0, f_bearer),
    // Request body.
    FetchKw::new("req.body", T::Bin, &[], 0, |_, c| {
        c.txn.req_body.clone().map(Sample::Bin)
    }),
    FetchKw::new("req.body_len", T::Sint, &[], 0, |_, c| {
        c.txn
            .req_body
            .as_ref()
            .map(|b| Sample::Sint(b.len() as i64))
    }),
    FetchKw::new("req.body_size", T::Sint, &[], 0, f_body_size),
    FetchKw::new("req.body_param", T::Str, &[A::Str, A::Str], 0, f_body_param).multi(m_body_param),
    // Response.
    FetchKw::new("status", T::Sint, &[], 0, |_, c| {
        Some(Sample::Sint(c.txn.res.as_ref()?.status.as_u16() as i64))
    }),
    FetchKw::new("txn.status", T::Sint, &[], 0, f_txn_status),
    FetchKw::new("res.ver", T::Str, &[], 0, |_, c| {
        Some(str_sample(
            h::version_str(c.txn.res.as_ref()?.version).as_bytes(),
        ))
    }),
    FetchKw::new("resp_ver", T::Str, &[], 0, |_, c| {
        Some(str_sample(
            h::version_str(c.txn.res.as_ref()?.version).as_bytes(),
        ))
    }),
    FetchKw::new("capture.res.ver", T::Str, &[], 0, |_, c| {
        Some(Sample::Str(Bytes::from(format!(
            "HTTP/{}",
            h::version_str(c.txn.res.as_ref()?.version)
        ))))
    }),
    FetchKw::new("res.hdr", T::Str, &[A::Str, A::Int], 0, |a, c| {
        hdr(&c.txn.res.as_ref()?.headers, a, false)
    })
    .multi(|a, c| hdr_all(&c.txn.res.as_ref()?.headers, a, false)),
    FetchKw::new("shdr", T::Str, &[A::Str, A::Int], 0, |a, c| {
        hdr(&c.txn.res.as_ref()?.headers, a, false)
    })
    .multi(|a, c| hdr_all(&c.txn.res.as_ref()?.headers, a, false)),
    FetchKw::new("res.fhdr", T::Str, &[A::Str, A::Int], 0, |a, c| {
        hdr(&c.txn.res.as_ref()?.headers, a, true)
    })
    .multi(|a, c| hdr_all(&c.txn.res.as_ref()?.headers, a, true)),
    FetchKw::new("res.hdr_cnt", T::Sint, &[A::Str], 0, |a, c| {
        hdr_cnt(&c.txn.res.as_ref()?.headers, a, false)
    }),
    FetchKw::new("shdr_cnt", T::Sint, &[A::Str], 0, |a, c| {
        hdr_cnt(&c.txn.res.as_ref()?.headers, a, false)
    }),
    FetchKw::new("res.fhdr_cnt", T::Sint, &[A::Str], 0, |a, c| {
        hdr_cnt(&c.txn.res.as_ref()?.headers, a, true)
    }),
    FetchKw::new("res.hdr_ip", T::Ip, &[A::Str, A::Int], 0, |a, c| {
        hdr(&c.txn.res.as_ref()?.headers, a, false).and_then(to_ip)
    }),
    FetchKw::new("res.hdr_val", T::Sint, &[A::Str, A::Int], 0, |a, c| {
        hdr(&c.txn.res.as_ref()?.headers, a, false).map(to_sint)
    }),
    FetchKw::new("res.hdr_names", T::Str, &[A::Str], 0, |a, c| {
        Some(hdr_names(&c.txn.res.as_ref()?.headers, a))
    }),
    FetchKw::new("res.hdrs", T::Str, &[], 0, |_, c| {
        Some(Sample::Str(h::header_block(&c.txn.res.as_ref()?.headers)))
    }),
    FetchKw::new("res.cook", T::Str, &[A::Str], 0, |a, c| {
        cook(h::response_cookies(&c.txn.res.as_ref()?.headers), a)
    })
    .multi(|a, c| cook_all(h::response_cookies(&c.txn.res.as_ref()?.headers), a)),
    FetchKw::new("scook", T::Str, &[A::Str], 0, |a, c| {
        cook(h::response_cookies(&c.txn.res.as_ref()?.headers), a)
    })
    .multi(|a, c| cook_all(h::response_cookies(&c.txn.res.as_ref()?.headers), a)),
    FetchKw::new("res.cook_cnt", T::Sint, &[A::Str], 0, |a, c| {
        cook_cnt(h::response_cookies(&c.txn.res.as_ref()?.headers), a)
    }),
    FetchKw::new("res.cook_val", T::Sint, &[A::Str], 0, |a, c| {
        cook(h::response_cookies(&c.txn.res.as_ref()?.headers), a).map(to_sint)
    }),
    FetchKw::new("res.cook_names", T::Str, &[A::Str], 0, |a, c| {
        Some(cook_names(
            h::response_cookies(&c.txn.res.as_ref()?.headers),
            a,
        ))
    }),
];

/// The request head: the transaction's, or in TCP mode one parsed from the
/// buffered request data.
enum ReqRef<'a> {
    Borrowed(&'a request::Parts),
    Parsed(Box<request::Parts>),
}

impl std::ops::Deref for ReqRef<'_> {
    type Target = request::Parts;
    fn deref(&self) -> &request::Parts {
        match self {
            ReqRef::Borrowed(p) => p,
            ReqRef::Parsed(p) => p,
        }
    }
}

fn req<'a>(c: &'a SampleCtx) -> Option<ReqRef<'a>> {
    if let Some(p) = &c.txn.req {
        return Some(ReqRef::Borrowed(p));
    }
    if c.txn.mode == TxnMode::Tcp {
        return h::parse_request_head(&c.txn.req_buf).map(|p| ReqRef::Parsed(Box::new(p)));
    }
    None
}

/// The request target as received.
fn target_of(c: &SampleCtx) -> Option<String> {
    let r = req(c)?;
    Some(h::target(&r))
}

/// Runs `f` on the response headers once there is a response, else on
/// the request headers.
fn dir_headers<R>(c: &SampleCtx, f: impl FnOnce(&HeaderMap) -> Option<R>) -> Option<R> {
    if let Some(r) = &c.txn.res {
        return f(&r.headers);
    }
    let r = req(c)?;
    f(&r.headers)
}

fn bytes_of(a: &Arg) -> Bytes {
    Bytes::copy_from_slice(a.str())
}

fn str_sample(b: &[u8]) -> Sample {
    Sample::Str(Bytes::copy_from_slice(b))
}

fn to_sint(s: Sample) -> Sample {
    match s {
        Sample::Str(b) => Sample::Sint(str_to_int(&b)),
        other => other,
    }
}

/// Reads an address from a header value (an IPv4 address may carry a
/// port, which is dropped; IPv6 may be bracketed).
fn to_ip(s: Sample) -> Option<Sample> {
    let Sample::Str(b) = s else { return None };
    let t = std::str::from_utf8(&b).ok()?.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(Sample::Ip(ip));
    }
    let (host, port) = h::split_host_port(t);
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return None;
    }
    host.parse::<IpAddr>().ok().map(Sample::Ip)
}

/// IPv4 clients of a dual-stack listener show as IPv4, as HAProxy shows
/// them on an IPv4 listener.
fn ip_of(a: SocketAddr) -> IpAddr {
    a.ip().to_canonical()
}

fn now() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn check_bin(a: &[Arg]) -> Result<(), String> {
    super::pattern::parse_hex(std::str::from_utf8(a[0].str()).unwrap_or("")).map(|_| ())
}

fn f_bin(a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let v = super::pattern::parse_hex(std::str::from_utf8(a[0].str()).ok()?).ok()?;
    Some(Sample::Bin(Bytes::from(v)))
}

fn check_bool(a: &[Arg]) -> Result<(), String> {
    match a[0].str() {
        b"true" | b"1" | b"false" | b"0" => Ok(()),
        _ => Err("expects 'true', 'false', '1' or '0'".to_string()),
    }
}

fn f_bool(a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    Some(Sample::Bool(matches!(a[0].str(), b"true" | b"1")))
}

fn check_ipv4(a: &[Arg]) -> Result<(), String> {
    match std::str::from_utf8(a[0].str()).ok().and_then(parse_ip) {
        Some(IpAddr::V4(_)) => Ok(()),
        _ => Err("expects an IPv4 address".to_string()),
    }
}

fn check_ipv6(a: &[Arg]) -> Result<(), String> {
    match std::str::from_utf8(a[0].str())
        .ok()
        .map(|s| s.parse::<std::net::Ipv6Addr>())
    {
        Some(Ok(_)) => Ok(()),
        _ => Err("expects an IPv6 address".to_string()),
    }
}

fn f_ip(a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    parse_ip(std::str::from_utf8(a[0].str()).ok()?).map(Sample::Ip)
}

fn check_unit(a: &[Arg]) -> Result<(), String> {
    match a.get(1) {
        Some(Arg::Str(u)) if !matches!(&u[..], b"s" | b"ms" | b"us") => {
            Err("the unit must be 's', 'ms' or 'us'".to_string())
        }
        _ => Ok(()),
    }
}

fn f_date(a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let n = now();
    let off = a[0].int().unwrap_or(0);
    let base = match a[1].str() {
        b"ms" => n.as_millis() as i64,
        b"us" => n.as_micros() as i64,
        _ => n.as_secs() as i64,
    };
    Some(Sample::Sint(base.saturating_add(off)))
}

fn f_env(a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let name = std::str::from_utf8(a[0].str()).ok()?;
    let v = std::env::var_os(name)?;
    Some(Sample::Str(Bytes::from(v.into_encoded_bytes())))
}

/// The system host name.
pub(crate) fn hostname() -> Option<Bytes> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    Some(Bytes::copy_from_slice(&buf[..end]))
}

fn f_nbsrv(a: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let be = match &a[0] {
        Arg::Str(b) if !b.is_empty() => std::str::from_utf8(b).ok()?.to_string(),
        _ => c.txn.backend_name().to_string(),
    };
    c.proxies
        .usable_servers(&be)
        .map(|n| Sample::Sint(n as i64))
}

/// A fast non-cryptographic random number (xorshift64*), per thread,
/// seeded from the standard library's random hasher keys.
pub(crate) fn random_u64() -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(now().as_nanos());
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

fn f_rand(a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let r = (random_u64() >> 32) as u32 as u64;
    let v = match a[0].int() {
        // Scale the 32-bit value into the range, as HAProxy does.
        Some(range) if range > 0 => ((r as u128 * range as u128) >> 32) as i64,
        _ => r as i64,
    };
    Some(Sample::Sint(v))
}

fn check_uuid(a: &[Arg]) -> Result<(), String> {
    match a[0].int() {
        None | Some(4) | Some(7) => Ok(()),
        Some(v) => Err(format!("unsupported UUID version {v} (4 and 7 are)")),
    }
}

fn f_uuid(a: &[Arg], _: &SampleCtx) -> Option<Sample> {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&random_u64().to_be_bytes());
    b[8..].copy_from_slice(&random_u64().to_be_bytes());
    let version = a[0].int().unwrap_or(4) as u8;
    if version == 7 {
        let ms = now().as_millis() as u64;
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    }
    b[6] = (b[6] & 0x0f) | (version << 4);
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    let s = format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    );
    Some(Sample::Str(Bytes::from(s)))
}

fn check_var_set(a: &[Arg]) -> Result<(), String> {
    match a[0] {
        Arg::Var(_) => Ok(()),
        _ => Err("expects a variable name".to_string()),
    }
}

fn f_var(a: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let Arg::Var(name) = &a[0] else { return None };
    var_value(c, name).or_else(|| match &a[1] {
        Arg::Str(d) => Some(Sample::Str(d.clone())),
        _ => None,
    })
}

fn f_req_len(_: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let n = match c.txn.mode {
        TxnMode::Tcp => c.txn.req_buf.len(),
        TxnMode::Http => c.txn.req_body.as_ref().map_or(0, |b| b.len()),
    };
    Some(Sample::Sint(n as i64))
}

fn check_payload(a: &[Arg]) -> Result<(), String> {
    if a.iter().any(|x| x.int().is_some_and(|v| v < 0)) {
        return Err("offset and length must not be negative".to_string());
    }
    Ok(())
}

fn payload(buf: &[u8], a: &[Arg]) -> Option<Sample> {
    let off = a[0].int()? as usize;
    let len = a[1].int()? as usize;
    let end = if len == 0 {
        buf.len()
    } else {
        off.checked_add(len)?
    };
    if off > buf.len() || end > buf.len() || off > end {
        return None;
    }
    Some(Sample::Bin(Bytes::copy_from_slice(&buf[off..end])))
}

fn f_req_payload(a: &[Arg], c: &SampleCtx) -> Option<Sample> {
    match c.txn.mode {
        TxnMode::Tcp => payload(&c.txn.req_buf, a),
        TxnMode::Http => payload(c.txn.req_body.as_deref()?, a),
    }
}

fn f_res_payload(a: &[Arg], c: &SampleCtx) -> Option<Sample> {
    payload(&c.txn.res_buf, a)
}

fn f_proto_http(_: &[Arg], c: &SampleCtx) -> Option<Sample> {
    Some(Sample::Bool(match c.txn.mode {
        TxnMode::Http => c.txn.req.is_some(),
        TxnMode::Tcp => h::parse_request_head(&c.txn.req_buf).is_some(),
    }))
}

/// `capture.req.hdr(N)` / `capture.res.hdr(N)`: the value in slot N.
fn captured(slots: &[Option<Bytes>], a: &[Arg]) -> Option<Sample> {
    let n = usize::try_from(a[0].int()?).ok()?;
    slots.get(n)?.clone().map(Sample::Str)
}

fn f_pathq(_: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let t = target_of(c)?;
    let s = h::path_start(&t)?;
    Some(str_sample(&t.as_bytes()[s..]))
}

fn check_query(a: &[Arg]) -> Result<(), String> {
    match &a[0] {
        Arg::Str(o) if !o.is_empty() && &o[..] != b"with_qm" => {
            Err("unknown option (only 'with_qm' is supported)".to_string())
        }
        _ => Ok(()),
    }
}

fn f_query(a: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let t = target_of(c)?;
    let q = h::query(&t)?;
    if a[0].str() == b"with_qm" && !q.is_empty() {
        return Some(Sample::Str(Bytes::from(format!("?{q}"))));
    }
    Some(str_sample(q.as_bytes()))
}

fn f_url_ip(_: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let t = target_of(c)?;
    let (host, _) = h::split_host_port(h::url_host(&t)?);
    host.parse::<IpAddr>().ok().map(Sample::Ip)
}

fn f_url_port(_: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let t = target_of(c)?;
    let port = h::url_host(&t)
        .and_then(|a| h::split_host_port(a).1)
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(80);
    Some(Sample::Sint(port as i64))
}

/// The first Host header followed by the path (and the query string).
fn base(c: &SampleCtx, with_query: bool) -> Option<Bytes> {
    let r = req(c)?;
    let t = h::target(&r);
    let p = if with_query {
        &t[h::path_start(&t)?..]
    } else {
        h::path(&t)?
    };
    let mut out = Vec::new();
    if let Some(host) = r.headers.get("host") {
        out.extend_from_slice(h::trim(host.as_bytes()));
    }
    out.extend_from_slice(p.as_bytes());
    Some(Bytes::from(out))
}

fn f_url32(_: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let r = req(c)?;
    let mut v = Vec::new();
    if let Some(host) = r.headers.get("host") {
        v.extend_from_slice(h::trim(host.as_bytes()));
    }
    v.extend_from_slice(h::target(&r).as_bytes());
    Some(Sample::Sint(full_hash(sdbm(&v)) as i64))
}

fn urlp_values(a: &[Arg], c: &SampleCtx) -> Option<Vec<Sample>> {
    let t = target_of(c)?;
    let delim = a[1].str().first().copied();
    let icase = a[2].str() == b"i";
    let name = a[0].str();
    Some(
        h::url_params(t.as_bytes(), delim)
            .into_iter()
            .filter(|(n, _)| {
                name.is_empty()
                    || if icase {
                        n.eq_ignore_ascii_case(name)
                    } else {
                        *n == name
                    }
            })
            .map(|(_, v)| str_sample(v))
            .collect(),
    )
}

fn f_urlp(a: &[Arg], c: &SampleCtx) -> Option<Sample> {
    urlp_values(a, c)?.into_iter().next()
}

fn m_urlp(a: &[Arg], c: &SampleCtx) -> Option<Vec<Sample>> {
    urlp_values(a, c)
}

fn occ_arg(a: &[Arg]) -> Option<i64> {
    a.get(1).and_then(Arg::int)
}

fn name_arg(a: &[Arg]) -> &str {
    std::str::from_utf8(a[0].str()).unwrap_or("")
}

fn hdr(hm: &HeaderMap, a: &[Arg], full: bool) -> Option<Sample> {
    let vals = h::header_values(hm, name_arg(a), full);
    h::pick(vals, occ_arg(a).unwrap_or(-1)).map(Sample::Str)
}

fn hdr_all(hm: &HeaderMap, a: &[Arg], full: bool) -> Option<Vec<Sample>> {
    if occ_arg(a).is_some() {
        return None;
    }
    Some(
        h::header_values(hm, name_arg(a), full)
            .into_iter()
            .map(Sample::Str)
            .collect(),
    )
}

fn hdr_cnt(hm: &HeaderMap, a: &[Arg], full: bool) -> Option<Sample> {
    Some(Sample::Sint(
        h::header_values(hm, name_arg(a), full).len() as i64
    ))
}

fn delim_arg(a: &[Arg]) -> u8 {
    a[0].str().first().copied().unwrap_or(b',')
}

fn hdr_names(hm: &HeaderMap, a: &[Arg]) -> Sample {
    let d = [delim_arg(a)];
    Sample::Str(Bytes::from(
        h::header_names(hm)
            .iter()
            .map(|n| n.as_bytes())
            .collect::<Vec<_>>()
            .join(&d[..]),
    ))
}

/// The last cookie called `name` (the first cookie when no name).
fn cook(cookies: Vec<(Bytes, Bytes)>, a: &[Arg]) -> Option<Sample> {
    let name = a[0].str();
    let found = if name.is_empty() {
        cookies.into_iter().next()
    } else {
        cookies.into_iter().rev().find(|(n, _)| n == name)
    };
    found.map(|(_, v)| Sample::Str(v))
}

fn cook_all(cookies: Vec<(Bytes, Bytes)>, a: &[Arg]) -> Option<Vec<Sample>> {
    let name = a[0].str();
    Some(
        cookies
            .into_iter()
            .filter(|(n, _)| name.is_empty() || n == name)
            .map(|(_, v)| Sample::Str(v))
            .collect(),
    )
}

fn cook_cnt(cookies: Vec<(Bytes, Bytes)>, a: &[Arg]) -> Option<Sample> {
    let name = a[0].str();
    Some(Sample::Sint(
        cookies
            .iter()
            .filter(|(n, _)| name.is_empty() || n == name)
            .count() as i64,
    ))
}

fn cook_names(cookies: Vec<(Bytes, Bytes)>, a: &[Arg]) -> Sample {
    let d = [delim_arg(a)];
    Sample::Str(Bytes::from(
        cookies
            .iter()
            .map(|(n, _)| &n[..])
            .collect::<Vec<_>>()
            .join(&d[..]),
    ))
}

/// The Authorization scheme and its credentials.
fn auth(c: &SampleCtx) -> Option<(Sample, Bytes)> {
    let r = req(c)?;
    let v = h::trim(r.headers.get("authorization")?.as_bytes());
    let sp = v.iter().position(|&c| c == b' ').unwrap_or(v.len());
    let rest = h::trim(&v[sp..]);
    Some((str_sample(&v[..sp]), Bytes::copy_from_slice(rest)))
}

fn basic_creds(c: &SampleCtx) -> Option<(Sample, Sample)> {
    let (scheme, creds) = auth(c)?;
    if !scheme.to_bytes().eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let dec = base64::engine::general_purpose::STANDARD
        .decode(&creds)
        .ok()?;
    let p = dec.iter().position(|&c| c == b':')?;
    Some((str_sample(&dec[..p]), str_sample(&dec[p + 1..])))
}

fn f_bearer(a: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let r = req(c)?;
    let name = match a[0].str() {
        b"" => "authorization",
        n => std::str::from_utf8(n).ok()?,
    };
    let v = h::trim(r.headers.get(name)?.as_bytes());
    let sp = v.iter().position(|&c| c == b' ')?;
    if !v[..sp].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    Some(str_sample(h::trim(&v[sp..])))
}

fn f_body_size(_: &[Arg], c: &SampleCtx) -> Option<Sample> {
    let r = req(c)?;
    if let Some(cl) = r.headers.get("content-length") {
        return Some(Sample::Sint(str_to_int(cl.as_bytes())));
    }
    c.txn
        .req_body
        .as_ref()
        .map(|b| Sample::Sint(b.len() as i64))
}

fn body_params(a: &[Arg], c: &SampleCtx) -> Option<Vec<Sample>> {
    let body = c.txn.req_body.as_ref()?;
    let name = a[0].str();
    let icase = a[1].str() == b"i";
    Some(
        body.split(|&c| c == b'&')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (n, v) = match p.iter().position(|&c| c == b'=') {
                    Some(e) => (&p[..e], &p[e + 1..]),
                    None => (p, &b""[..]),
                };
                let hit = name.is_empty()
                    || if icase {
                        n.eq_ignore_ascii_case(name)
                    } else {
                        n == name
                    };
                hit.then(|| str_sample(v))
            })
            .collect(),
    )
}

fn f_body_param(a: &[Arg], c: &SampleCtx) -> Option<Sample> {
    body_params(a, c)?.into_iter().next()
}

fn m_body_param(a: &[Arg], c: &SampleCtx) -> Option<Vec<Sample>> {
    body_params(a, c)
}

fn f_txn_status(_: &[Arg], c: &SampleCtx) -> Option<Sample> {
    Some(Sample::Sint(c.txn.res.as_ref()?.status.as_u16() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lua::vars::VarValue;
    use crate::sample::testutil::{ctx, http_txn, s, tcp_txn, with_response};

    fn f(name: &str, args: &[&str], t: &crate::txn::Txn) -> Option<Sample> {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        call(name, &a, &ctx(t)).unwrap()
    }

    fn req_txn() -> crate::txn::Txn {
        http_txn(
            "GET",
            "/p/q?x=1&y=2&x=3",
            &[
                ("host", "Example.com"),
                ("x-a", "a, b"),
                ("x-a", "c"),
                ("x-q", "\"x,y\", z"),
                ("x-e", ""),
                ("cookie", "a=1; b= 22 ; a=3"),
                ("x-ip", "10.1.2.3:8080"),
                ("x-n", "42abc"),
                ("authorization", "Basic dXNlcjpwYTpzcw=="),
            ],
        )
    }

    #[test]
    fn constants() {
        let t = tcp_txn();
        assert_eq!(f("always_true", &[], &t), Some(Sample::Bool(true)));
        assert_eq!(f("always_false", &[], &t), Some(Sample::Bool(false)));
        assert_eq!(f("int", &["-12"], &t), Some(Sample::Sint(-12)));
        assert_eq!(f("str", &["abc"], &t), Some(s("abc")));
        assert_eq!(f("str", &[], &t), Some(s("")));
        assert_eq!(
            f("bin", &["4142"], &t),
            Some(Sample::Bin(Bytes::from_static(b"AB")))
        );
        assert_eq!(f("bool", &["true"], &t), Some(Sample::Bool(true)));
        assert_eq!(f("bool", &["0"], &t), Some(Sample::Bool(false)));
        assert_eq!(
            f("ipv4", &["1.2.3.4"], &t),
            Some(Sample::Ip("1.2.3.4".parse().unwrap()))
        );
        assert_eq!(
            f("ipv6", &["::1"], &t),
            Some(Sample::Ip("::1".parse().unwrap()))
        );
        assert_eq!(
            f("meth", &["GET"], &t),
            Some(Sample::Meth(Bytes::from_static(b"GET")))
        );
        assert_eq!(f("proc", &[], &t), Some(Sample::Sint(1)));
        assert_eq!(f("thread", &[], &t), Some(Sample::Sint(0)));
        assert_eq!(
            f("pid", &[], &t),
            Some(Sample::Sint(std::process::id() as i64))
        );
        assert_eq!(f("stopping", &[], &t), Some(Sample::Bool(false)));
        assert!(f("hostname", &[], &t).is_some());
        let e = |n: &str, a: &[&str]| {
            let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
            call(n, &a, &ctx(&t)).unwrap_err()
        };
        assert!(e("bin", &["zz"]).contains("not a valid hex"));
        assert!(e("bool", &["maybe"]).contains("expects 'true'"));
        assert!(e("ipv4", &["::1"]).contains("IPv4"));
        assert!(e("ipv6", &["1.2.3.4"]).contains("IPv6"));
        assert!(e("int", &["x"]).contains("not an integer"));
        assert!(e("nope", &[]).contains("unknown fetch"));
        assert!(e("date", &["1", "h"]).contains("unit"));
        assert!(e("uuid", &["5"]).contains("unsupported"));
    }

    #[test]
    fn time_random_env() {
        let t = tcp_txn();
        let d = f("date", &[], &t).and_then(|s| s.to_int()).unwrap();
        let d5 = f("date", &["5"], &t).and_then(|s| s.to_int()).unwrap();
        assert!((d5 - d - 5).abs() <= 1);
        let ms = f("date", &["0", "ms"], &t)
            .and_then(|s| s.to_int())
            .unwrap();
        assert!((ms / 1000 - d).abs() <= 1);
        let us = f("date", &["0", "us"], &t)
            .and_then(|s| s.to_int())
            .unwrap();
        assert!((us / 1_000_000 - d).abs() <= 1);
        assert!((0..1_000_000).contains(&f("date_us", &[], &t).and_then(|s| s.to_int()).unwrap()));
        for _ in 0..200 {
            let r = f("rand", &["10"], &t).and_then(|s| s.to_int()).unwrap();
            assert!((0..10).contains(&r));
            let r = f("rand", &[&i64::MAX.to_string()], &t)
                .and_then(|s| s.to_int())
                .unwrap();
            assert!(r >= 0);
            let r = f("rand", &["10"], &t).and_then(|s| s.to_int()).unwrap();
            assert!((0..10).contains(&r));
            let r = f("rand", &[], &t).and_then(|s| s.to_int()).unwrap();
            assert!((0..=u32::MAX as i64).contains(&r));
        }
        std::env::set_var("LUAHOST_SAMPLE_TEST_ENV", "val");
        assert_eq!(f("env", &["LUAHOST_SAMPLE_TEST_ENV"], &t), Some(s("val")));
        assert_eq!(f("env", &["LUAHOST_SAMPLE_TEST_NOPE"], &t), None);
        let u = f("uuid", &[], &t).unwrap().to_bytes();
        assert_eq!(u.len(), 36);
        assert_eq!(u[14], b'4');
        let u7 = f("uuid", &["7"], &t).unwrap().to_bytes();
        assert_eq!(u7[14], b'7');
    }

    #[test]
    fn layer4_and_names() {
        let mut t = tcp_txn();
        assert_eq!(
            f("src", &[], &t),
            Some(Sample::Ip("192.0.2.7".parse().unwrap()))
        );
        assert_eq!(f("src_port", &[], &t), Some(Sample::Sint(40000)));
        assert_eq!(
            f("dst", &[], &t),
            Some(Sample::Ip("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(f("dst_port", &[], &t), Some(Sample::Sint(8080)));
        assert_eq!(f("fe_name", &[], &t), Some(s("fe")));
        assert_eq!(f("be_name", &[], &t), Some(s("fe")));
        assert_eq!(f("srv_name", &[], &t), None);
        t.backend = Some("app".into());
        t.server = Some("s1".into());
        assert_eq!(f("be_name", &[], &t), Some(s("app")));
        assert_eq!(f("srv_name", &[], &t), Some(s("s1")));
        assert_eq!(f("nbsrv", &[], &t), Some(Sample::Sint(2)));
        assert_eq!(f("nbsrv", &["down"], &t), Some(Sample::Sint(0)));
        assert_eq!(f("nbsrv", &["nope"], &t), None);
        assert_eq!(f("ssl_fc", &[], &t), Some(Sample::Bool(false)));
        assert_eq!(f("ssl_fc_sni", &[], &t), None);
        t.client = "[::ffff:1.2.3.4]:5".parse().unwrap();
        assert_eq!(
            f("src", &[], &t),
            Some(Sample::Ip("1.2.3.4".parse().unwrap()))
        );
        t.thread = 3;
        assert_eq!(f("thread", &[], &t), Some(Sample::Sint(2)));
    }

    #[test]
    fn variables() {
        let mut t = tcp_txn();
        t.vars.set("txn.i", VarValue::Int(7), false);
        t.vars.set("req.s", VarValue::Str(b"x".to_vec()), false);
        t.vars.set("sess.b", VarValue::Bool(true), false);
        assert_eq!(f("var", &["txn.i"], &t), Some(Sample::Sint(7)));
        assert_eq!(f("var", &["req.s"], &t), Some(s("x")));
        assert_eq!(f("var", &["sess.b"], &t), Some(Sample::Bool(true)));
        assert_eq!(f("var", &["txn.none"], &t), None);
        assert_eq!(f("var", &["txn.none", "def"], &t), Some(s("def")));
        assert!(call("var", &[], &ctx(&t)).unwrap_err().contains("variable"));
        assert!(call("var", &["bad".into()], &ctx(&t))
            .unwrap_err()
            .contains("not a valid variable"));
        assert_eq!(
            call("lua.echo", &["a".into()], &ctx(&t)).unwrap(),
            Some(s("a"))
        );
    }

    #[test]
    fn request_line() {
        let t = req_txn();
        assert_eq!(
            f("method", &[], &t),
            Some(Sample::Meth(Bytes::from_static(b"GET")))
        );
        assert_eq!(f("path", &[], &t), Some(s("/p/q")));
        assert_eq!(f("query", &[], &t), Some(s("x=1&y=2&x=3")));
        assert_eq!(f("query", &["with_qm"], &t), Some(s("?x=1&y=2&x=3")));
        assert_eq!(f("url", &[], &t), Some(s("/p/q?x=1&y=2&x=3")));
        assert_eq!(f("pathq", &[], &t), Some(s("/p/q?x=1&y=2&x=3")));
        assert_eq!(f("base", &[], &t), Some(s("Example.com/p/q")));
        assert_eq!(f("baseq", &[], &t), Some(s("Example.com/p/q?x=1&y=2&x=3")));
        // HAProxy 2.6 prints these for the same request.
        assert_eq!(f("base32", &[], &t), Some(Sample::Sint(1_978_376_760)));
        assert_eq!(f("url32", &[], &t), Some(Sample::Sint(3_025_256_127)));
        assert_eq!(f("req.ver", &[], &t), Some(s("1.1")));
        assert_eq!(f("capture.req.ver", &[], &t), Some(s("HTTP/1.1")));
        assert_eq!(f("capture.req.method", &[], &t), Some(s("GET")));
        assert_eq!(f("capture.req.uri", &[], &t), Some(s("/p/q?x=1&y=2&x=3")));
        assert_eq!(f("urlp", &["x"], &t), Some(s("1")));
        assert_eq!(f("url_param", &["y"], &t), Some(s("2")));
        assert_eq!(f("urlp", &[], &t), Some(s("1")));
        assert_eq!(f("urlp", &["X", "", "i"], &t), Some(s("1")));
        assert_eq!(f("urlp", &["X"], &t), None);
        assert_eq!(f("urlp_val", &["y"], &t), Some(Sample::Sint(2)));
        assert_eq!(f("url_port", &[], &t), Some(Sample::Sint(80)));
        assert_eq!(f("url_ip", &[], &t), None);
        let kw = find("urlp").unwrap();
        let a = prepare(kw, &["x".to_string()]).unwrap();
        assert_eq!(
            (kw.multi.unwrap())(&a, &ctx(&t)),
            Some(vec![s("1"), s("3")])
        );

        let t = http_txn("GET", "http://10.0.0.9:81/a?b", &[]);
        assert_eq!(f("path", &[], &t), Some(s("/a")));
        assert_eq!(
            f("url_ip", &[], &t),
            Some(Sample::Ip("10.0.0.9".parse().unwrap()))
        );
        assert_eq!(f("url_port", &[], &t), Some(Sample::Sint(81)));
        assert_eq!(f("base", &[], &t), Some(s("/a")));
        let t = http_txn("OPTIONS", "*", &[]);
        assert_eq!(f("path", &[], &t), None);
        assert_eq!(f("url", &[], &t), Some(s("*")));
        assert_eq!(f("query", &[], &t), None);
    }

    #[test]
    fn request_headers() {
        let t = req_txn();
        // Values as HAProxy 2.6 prints them for the same request.
        assert_eq!(f("req.hdr", &["x-a"], &t), Some(s("c")));
        assert_eq!(f("req.hdr", &["X-A", "1"], &t), Some(s("a")));
        assert_eq!(f("req.hdr", &["x-a", "-2"], &t), Some(s("b")));
        assert_eq!(f("req.hdr", &["x-a", "0"], &t), Some(s("c")));
        assert_eq!(f("req.hdr", &["x-a", "9"], &t), None);
        assert_eq!(f("req.fhdr", &["x-a"], &t), Some(s("c")));
        assert_eq!(f("req.fhdr", &["x-a", "1"], &t), Some(s("a, b")));
        assert_eq!(f("req.hdr_cnt", &["x-a"], &t), Some(Sample::Sint(3)));
        assert_eq!(f("req.fhdr_cnt", &["x-a"], &t), Some(Sample::Sint(2)));
        assert_eq!(f("req.hdr", &["x-q", "1"], &t), Some(s("\"x,y\"")));
        assert_eq!(f("req.hdr", &["x-e"], &t), Some(s("")));
        assert_eq!(f("req.hdr_cnt", &["x-e"], &t), Some(Sample::Sint(1)));
        assert_eq!(f("req.hdr_cnt", &["nothere"], &t), Some(Sample::Sint(0)));
        assert_eq!(f("req.hdr", &["nothere"], &t), None);
        assert_eq!(f("req.hdr", &["bad name"], &t), None);
        assert_eq!(f("hdr", &["host"], &t), Some(s("Example.com")));
        assert_eq!(f("hdr_cnt", &["x-a"], &t), Some(Sample::Sint(3)));
        assert_eq!(f("req.hdr", &[], &t), Some(s("Basic dXNlcjpwYTpzcw==")));
        assert_eq!(
            f("req.hdr_ip", &["x-ip"], &t),
            Some(Sample::Ip("10.1.2.3".parse().unwrap()))
        );
        assert_eq!(f("req.hdr_ip", &["host"], &t), None);
        assert_eq!(f("req.hdr_val", &["x-n"], &t), Some(Sample::Sint(42)));
        let names = f("req.hdr_names", &[], &t).unwrap().to_bytes();
        assert!(names.starts_with(b"host,x-a,x-a,x-q"));
        let names = f("req.hdr_names", &[":"], &t).unwrap().to_bytes();
        assert!(names.starts_with(b"host:x-a"));
        let block = f("req.hdrs", &[], &t).unwrap().to_bytes();
        assert!(block.starts_with(b"host: Example.com\r\nx-a: a, b\r\nx-a: c\r\n"));
        assert!(block.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn cookies_and_auth() {
        let t = req_txn();
        assert_eq!(f("req.cook", &["a"], &t), Some(s("3")));
        assert_eq!(f("req.cook", &[], &t), Some(s("1")));
        assert_eq!(f("cook", &["b"], &t), Some(s("22")));
        assert_eq!(f("req.cook", &["z"], &t), None);
        assert_eq!(f("req.cook_cnt", &["a"], &t), Some(Sample::Sint(2)));
        assert_eq!(f("req.cook_cnt", &[], &t), Some(Sample::Sint(3)));
        assert_eq!(f("req.cook_val", &["b"], &t), Some(Sample::Sint(22)));
        assert_eq!(f("req.cook_names", &[], &t), Some(s("a,b,a")));
        assert_eq!(f("http_auth_type", &[], &t), Some(s("Basic")));
        assert_eq!(f("http_auth_user", &[], &t), Some(s("user")));
        assert_eq!(f("http_auth_pass", &[], &t), Some(s("pa:ss")));
        assert_eq!(f("http_auth_bearer", &[], &t), None);
        let t = http_txn(
            "GET",
            "/",
            &[("authorization", "Bearer tok.en"), ("x-t", "bearer zz")],
        );
        assert_eq!(f("http_auth_bearer", &[], &t), Some(s("tok.en")));
        assert_eq!(f("http_auth_bearer", &["x-t"], &t), Some(s("zz")));
        assert_eq!(f("http_auth_user", &[], &t), None);
    }

    #[test]
    fn body() {
        let mut t = http_txn("POST", "/", &[("content-length", "11")]);
        assert_eq!(f("req.body", &[], &t), None);
        assert_eq!(f("req.len", &[], &t), Some(Sample::Sint(0)));
        assert_eq!(f("req.body_size", &[], &t), Some(Sample::Sint(11)));
        t.req_body = Some(Bytes::from_static(b"a=1&B=2&a=3"));
        assert_eq!(
            f("req.body", &[], &t),
            Some(Sample::Bin(Bytes::from_static(b"a=1&B=2&a=3")))
        );
        assert_eq!(f("req.body_len", &[], &t), Some(Sample::Sint(11)));
        assert_eq!(f("req.len", &[], &t), Some(Sample::Sint(11)));
        assert_eq!(f("req.body_param", &["a"], &t), Some(s("1")));
        assert_eq!(f("req.body_param", &["b"], &t), None);
        assert_eq!(f("req.body_param", &["b", "i"], &t), Some(s("2")));
        assert_eq!(f("req.body_param", &[], &t), Some(s("1")));
        assert_eq!(
            f("req.payload", &["2", "3"], &t),
            Some(Sample::Bin(Bytes::from_static(b"1&B")))
        );
    }

    #[test]
    fn response() {
        let t = req_txn();
        assert_eq!(f("status", &[], &t), None);
        assert_eq!(f("res.hdr", &["x"], &t), None);
        let t = with_response(
            t,
            404,
            &[
                ("x-r", "1, 2"),
                ("set-cookie", "s=v; Path=/"),
                ("set-cookie", "t=w"),
                ("x-ip", "[::1]:80"),
            ],
        );
        assert_eq!(f("status", &[], &t), Some(Sample::Sint(404)));
        assert_eq!(f("txn.status", &[], &t), Some(Sample::Sint(404)));
        assert_eq!(f("res.ver", &[], &t), Some(s("1.1")));
        assert_eq!(f("res.hdr", &["x-r"], &t), Some(s("2")));
        assert_eq!(f("shdr", &["x-r", "1"], &t), Some(s("1")));
        assert_eq!(f("res.fhdr", &["x-r"], &t), Some(s("1, 2")));
        assert_eq!(f("res.hdr_cnt", &["x-r"], &t), Some(Sample::Sint(2)));
        assert_eq!(f("res.fhdr_cnt", &["x-r"], &t), Some(Sample::Sint(1)));
        assert_eq!(f("res.hdr_val", &["x-r"], &t), Some(Sample::Sint(2)));
        assert_eq!(
            f("res.hdr_ip", &["x-ip"], &t),
            Some(Sample::Ip("::1".parse().unwrap()))
        );
        assert_eq!(f("res.cook", &["s"], &t), Some(s("v")));
        assert_eq!(f("res.cook_cnt", &[], &t), Some(Sample::Sint(2)));
        assert_eq!(f("res.cook_names", &[], &t), Some(s("s,t")));
        // hdr() follows the response once there is one.
        assert_eq!(f("hdr", &["x-r"], &t), Some(s("2")));
        assert!(f("res.hdrs", &[], &t)
            .unwrap()
            .to_bytes()
            .starts_with(b"x-r: 1, 2\r\n"));
    }

    #[test]
    fn tcp_buffers() {
        let mut t = tcp_txn();
        assert_eq!(f("req.len", &[], &t), Some(Sample::Sint(0)));
        assert_eq!(f("req.proto_http", &[], &t), Some(Sample::Bool(false)));
        t.req_buf
            .extend_from_slice(b"GET /x?a=1 HTTP/1.1\r\nHost: h.example\r\n");
        assert_eq!(f("req.proto_http", &[], &t), Some(Sample::Bool(false)));
        assert_eq!(f("req.hdr", &["host"], &t), None);
        t.req_buf.extend_from_slice(b"\r\n");
        assert_eq!(f("req.proto_http", &[], &t), Some(Sample::Bool(true)));
        assert_eq!(f("req.hdr", &["host"], &t), Some(s("h.example")));
        assert_eq!(f("path", &[], &t), Some(s("/x")));
        assert_eq!(
            f("method", &[], &t),
            Some(Sample::Meth(Bytes::from_static(b"GET")))
        );
        assert_eq!(f("req.len", &[], &t), Some(Sample::Sint(40)));
        assert_eq!(
            f("req.payload", &["0", "3"], &t),
            Some(Sample::Bin(Bytes::from_static(b"GET")))
        );
        assert_eq!(
            f("req.payload", &["38", "0"], &t),
            Some(Sample::Bin(Bytes::from_static(b"\r\n")))
        );
        assert_eq!(f("req.payload", &["38", "5"], &t), None);
        assert!(call("req.payload", &["-1".into(), "1".into()], &ctx(&t)).is_err());

        let mut t = tcp_txn();
        t.req_buf
            .extend_from_slice(&crate::sample::http::tests::client_hello("secure.example"));
        assert_eq!(f("req.ssl_sni", &[], &t), Some(s("secure.example")));
        assert_eq!(f("req_ssl_sni", &[], &t), Some(s("secure.example")));
        assert_eq!(f("req.ssl_hello_type", &[], &t), Some(Sample::Sint(1)));
        assert_eq!(f("req.proto_http", &[], &t), Some(Sample::Bool(false)));
        t.res_buf.extend_from_slice(b"hello");
        assert_eq!(f("res.len", &[], &t), Some(Sample::Sint(5)));
        assert_eq!(
            f("res.payload", &["1", "2"], &t),
            Some(Sample::Bin(Bytes::from_static(b"el")))
        );
    }

    #[test]
    fn names_listed() {
        assert!(names().any(|n| n == "req.hdr"));
        assert!(exists("src"));
        assert!(!exists("hdr_beg"));
        let mut seen = std::collections::HashSet::new();
        for n in names() {
            assert!(seen.insert(n), "duplicate fetch {n}");
        }
    }
}
