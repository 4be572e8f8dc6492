//! Helpers for the sample engine's tests: transactions built from raw
//! request text, and fake Lua/proxy providers.

use super::{LuaSamples, ProxyInfo, Sample, SampleCtx};
use crate::txn::{Txn, TxnMode};
use bytes::Bytes;
use hyper::http::{Request, Response};
use std::sync::Arc;

/// A TCP-mode transaction with nothing buffered.
pub fn tcp_txn() -> Txn {
    Txn::new(
        TxnMode::Tcp,
        "192.0.2.7:40000".parse().unwrap(),
        "10.0.0.1:8080".parse().unwrap(),
        Arc::from("fe"),
        1,
    )
}

/// An HTTP transaction for `method uri` with `headers` (name, value).
pub fn http_txn(method: &str, uri: &str, headers: &[(&str, &str)]) -> Txn {
    let mut t = tcp_txn();
    t.mode = TxnMode::Http;
    let mut b = Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    t.req = Some(b.body(()).unwrap().into_parts().0);
    t
}

/// Adds a response with `status` and `headers` to `t`.
pub fn with_response(mut t: Txn, status: u16, headers: &[(&str, &str)]) -> Txn {
    let mut b = Response::builder().status(status);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    t.res = Some(b.body(()).unwrap().into_parts().0);
    t
}

/// Lua fetches/converters for tests: fetch `lua.echo(a,b)` returns "a|b",
/// converter `lua.wrap(x)` returns "x<input>x".
pub struct FakeLua;

impl LuaSamples for FakeLua {
    fn fetch(&self, name: &str, _: &Txn, args: &[String]) -> Option<Sample> {
        (name == "echo").then(|| Sample::Str(Bytes::from(args.join("|"))))
    }
    fn convert(&self, name: &str, _: &Txn, input: Sample, args: &[String]) -> Option<Sample> {
        if name != "wrap" {
            return None;
        }
        let w = args.first().cloned().unwrap_or_default();
        let mut v = w.clone().into_bytes();
        v.extend_from_slice(&input.to_bytes());
        v.extend_from_slice(w.as_bytes());
        Some(Sample::Str(Bytes::from(v)))
    }
}

/// Backends "app" (2 usable servers) and "down" (0).
pub struct FakeProxies;

impl ProxyInfo for FakeProxies {
    fn usable_servers(&self, backend: &str) -> Option<usize> {
        match backend {
            "app" => Some(2),
            "down" => Some(0),
            _ => None,
        }
    }
}

/// A context over `t` with the fakes.
pub fn ctx(t: &Txn) -> SampleCtx<'_> {
    SampleCtx::new(t, &FakeLua, &FakeProxies)
}

/// A string sample.
pub fn s(v: &str) -> Sample {
    Sample::Str(Bytes::copy_from_slice(v.as_bytes()))
}

/// A fresh directory under the system temp dir for file-based tests.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "luahost-sample-{}-{}-{}",
        tag,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
