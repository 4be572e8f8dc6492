//! Forwarding tests against real servers on 127.0.0.1, each run on a
//! current-thread runtime with a LocalSet (as a worker runs) and bounded by
//! a global timeout.

use super::*;
use crate::txn::{Txn, TxnMode};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a test on a current-thread runtime inside a LocalSet, at most 30 s.
fn run<F: Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .expect("test timed out");
    });
}

fn backends(cfg: &str) -> Registry {
    let c = match crate::config::parse_str("t.cfg", cfg) {
        Ok(c) => c,
        Err(e) => panic!("config errors: {e:?}"),
    };
    match Registry::build(&c) {
        Ok(b) => b,
        Err(e) => panic!("build errors: {e:?}"),
    }
}

/// Puts a server in or out of forced maintenance; false for an unknown server.
fn set_maint(be: &Arc<Backend>, name: &str, on: bool) -> bool {
    match be.server(name) {
        Some(s) => {
            let state = if on {
                AdminState::Maint
            } else {
                AdminState::Ready
            };
            be.set_admin_state(&s, state);
            true
        }
        None => false,
    }
}

fn backend(cfg: &str) -> Arc<Backend> {
    backends(cfg).get("be").cloned().expect("backend 'be'")
}

fn txn(client: &str) -> Txn {
    Txn::new(
        TxnMode::Http,
        client.parse().expect("client address"),
        "127.0.0.1:80".parse().expect("local address"),
        Arc::from("fe"),
        1,
    )
}

/// Forwards a whole request, as the front end does: head by reference.
async fn forward<B>(
    fwd: &Forwarder,
    be: &Arc<Backend>,
    t: &mut Txn,
    req: Request<B>,
) -> Result<Response<UpstreamBody>, ForwardError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (head, body) = req.into_parts();
    fwd.http(be, t, &head, body).await
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", "example.test")
        .body(Empty::new())
        .expect("request")
}

async fn body_bytes(resp: Response<UpstreamBody>) -> Bytes {
    match resp.into_body().collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => panic!("body error: {e}"),
    }
}

async fn body_string(resp: Response<UpstreamBody>) -> String {
    String::from_utf8_lossy(&body_bytes(resp).await).into_owned()
}

/// A body fed through a channel: chunks go out as they are sent.
struct ChanBody(mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

type TestBody = UnsyncBoxBody<Bytes, BoxError>;

fn boxed<B>(b: B) -> TestBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    UnsyncBoxBody::new(b.map_err(Into::into))
}

/// What a test HTTP server saw.
#[derive(Default)]
struct Seen {
    conns: Cell<usize>,
    heads: RefCell<Vec<(String, HeaderMap)>>,
    /// Released by the test to let `/gated` finish its body.
    gate: Notify,
}

/// A local HTTP/1.1 server named `name`:
/// - `/echo` streams the request body back;
/// - `/gated` sends 64 KiB, waits for `gate`, then sends 5 MiB more;
/// - `/hop` answers with hop-by-hop headers;
/// - anything else answers its name.
async fn http_server(name: &'static str) -> (SocketAddr, Rc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Rc::new(Seen::default());
    let s = seen.clone();
    tokio::task::spawn_local(async move {
        while let Ok((stream, _)) = listener.accept().await {
            s.conns.set(s.conns.get() + 1);
            let s = s.clone();
            tokio::task::spawn_local(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move { Ok::<_, Infallible>(answer(name, &s, req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn answer(name: &'static str, seen: &Rc<Seen>, req: Request<Incoming>) -> Response<TestBody> {
    seen.heads
        .borrow_mut()
        .push((req.uri().to_string(), req.headers().clone()));
    match req.uri().path() {
        "/echo" => Response::new(boxed(req.into_body())),
        "/gated" => {
            let (tx, rx) = mpsc::channel(4);
            let seen = seen.clone();
            tokio::task::spawn_local(async move {
                let _ = tx.send(Bytes::from(vec![b'a'; 64 * 1024])).await;
                seen.gate.notified().await;
                for _ in 0..80 {
                    if tx.send(Bytes::from(vec![b'b'; 64 * 1024])).await.is_err() {
                        return;
                    }
                }
            });
            Response::new(boxed(ChanBody(rx)))
        }
        "/hop" => Response::builder()
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-kept", "1")
            .body(boxed(Full::new(Bytes::from_static(b"hop"))))
            .expect("response"),
        _ => Response::new(boxed(Full::new(Bytes::from_static(name.as_bytes())))),
    }
}

/// An address where nothing listens.
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

fn http_cfg(extra: &str, servers: &[(&str, SocketAddr, &str)]) -> String {
    let mut cfg = format!("backend be\n  mode http\n{extra}");
    for (name, addr, opts) in servers {
        cfg.push_str(&format!("  server {name} {addr} {opts}\n"));
    }
    cfg
}

/// Names of the servers picked by `n` slot takes, slots kept.
async fn take_names(
    be: &Arc<Backend>,
    ip: &str,
    n: usize,
    keep: &mut Vec<ConnSlot>,
) -> Vec<String> {
    let ip: IpAddr = ip.parse().expect("ip");
    let mut names = Vec::new();
    for _ in 0..n {
        match be.take_slot(ip, None).await {
            Ok(slot) => {
                names.push(slot.server().name.to_string());
                keep.push(slot);
            }
            Err(e) => panic!("take_slot: {e}"),
        }
    }
    names
}

fn counts(names: &[String]) -> HashMap<&str, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n.as_str()).or_insert(0) += 1;
    }
    m
}

// ---------------------------------------------------------------- balancing

#[test]
fn roundrobin_follows_weights_over_http() {
    run(async {
        let (a, _) = http_server("A").await;
        let (b, _) = http_server("B").await;
        let be = backend(&http_cfg("", &[("a", a, "weight 3"), ("b", b, "weight 1")]));
        let fwd = Forwarder::new();
        let mut got = Vec::new();
        for _ in 0..8 {
            let mut t = txn("10.0.0.1:1000");
            let resp = forward(&fwd, &be, &mut t, get("/"))
                .await
                .expect("forwarded");
            assert_eq!(t.backend.as_deref(), Some("be"));
            let body = body_string(resp).await;
            assert_eq!(t.server.as_deref(), Some(body.to_lowercase().as_str()));
            got.push(body);
        }
        assert_eq!(got.join(""), "AABAAABA");
    });
}

#[test]
fn leastconn_picks_the_least_loaded_by_weight() {
    run(async {
        let be = backend(
            "backend be\n  balance leastconn\n  server s1 127.0.0.1:1 weight 2\n  server s2 127.0.0.1:2 weight 1\n",
        );
        let mut held = Vec::new();
        let names = take_names(&be, "10.0.0.1", 6, &mut held).await;
        let c = counts(&names);
        assert_eq!((c["s1"], c["s2"]), (4, 2), "{names:?}");
        // Free s1 entirely: it is now by far the least loaded.
        held.retain(|s| &*s.server().name != "s1");
        let names = take_names(&be, "10.0.0.1", 3, &mut held).await;
        assert_eq!(names, ["s1", "s1", "s1"]);
        let loads: Vec<_> = be
            .server_loads()
            .into_iter()
            .map(|(n, l)| (n.to_string(), l))
            .collect();
        assert_eq!(loads, [("s1".to_string(), 3), ("s2".to_string(), 2)]);
    });
}

#[test]
fn leastconn_rotates_between_equal_loads() {
    run(async {
        let be = backend("backend be\n  balance leastconn\n  server s1 127.0.0.1:1\n  server s2 127.0.0.1:2\n  server s3 127.0.0.1:3\n");
        let mut names = Vec::new();
        for _ in 0..9 {
            let mut keep = Vec::new();
            names.extend(take_names(&be, "10.0.0.1", 1, &mut keep).await);
        }
        let c = counts(&names);
        assert_eq!((c["s1"], c["s2"], c["s3"]), (3, 3, 3), "{names:?}");
    });
}

#[test]
fn first_fills_servers_in_order() {
    run(async {
        let be = backend(
            "backend be\n  balance first\n  server s1 127.0.0.1:1 maxconn 2\n  server s2 127.0.0.1:2 maxconn 2\n  server s3 127.0.0.1:3 maxconn 2\n",
        );
        let mut held = Vec::new();
        assert_eq!(
            take_names(&be, "10.0.0.1", 3, &mut held).await,
            ["s1", "s1", "s2"]
        );
        held.remove(0);
        assert_eq!(take_names(&be, "10.0.0.1", 1, &mut held).await, ["s1"]);
    });
}

#[test]
fn source_hashing_is_stable_and_spreads() {
    run(async {
        let be = backend(
            "backend be\n  balance source\n  server s1 127.0.0.1:1\n  server s2 127.0.0.1:2\n  server s3 127.0.0.1:3\n",
        );
        let mut first = Vec::new();
        for i in 0..60 {
            let ip = format!("192.168.{}.{}", i / 10, i % 10 + 1);
            let mut keep = Vec::new();
            let a = take_names(&be, &ip, 1, &mut keep).await;
            keep.clear();
            let b = take_names(&be, &ip, 1, &mut keep).await;
            assert_eq!(a, b, "client {ip} moved");
            first.extend(a);
        }
        let c = counts(&first);
        assert_eq!(c.len(), 3, "every server gets clients: {c:?}");
        // A server going out of service only moves its own clients.
        let before: Vec<String> = first.clone();
        assert!(set_maint(&be, "s2", true));
        for (i, was) in before.iter().enumerate() {
            let ip = format!("192.168.{}.{}", i / 10, i % 10 + 1);
            let mut keep = Vec::new();
            let now = take_names(&be, &ip, 1, &mut keep).await;
            if was != "s2" {
                assert_eq!(&now[0], was);
            } else {
                assert_ne!(now[0], "s2");
            }
        }
    });
}

#[test]
fn backup_servers_only_when_no_active_is_usable() {
    run(async {
        let be = backend(
            "backend be\n  server s1 127.0.0.1:1\n  server b1 127.0.0.1:2 backup\n  server b2 127.0.0.1:3 backup\n",
        );
        let mut held = Vec::new();
        assert_eq!(
            take_names(&be, "10.0.0.1", 3, &mut held).await,
            ["s1", "s1", "s1"]
        );
        assert_eq!(be.usable_servers(), 1);
        set_maint(&be, "s1", true);
        // Only the first backup is used.
        assert_eq!(
            take_names(&be, "10.0.0.1", 3, &mut held).await,
            ["b1", "b1", "b1"]
        );
        assert_eq!(be.usable_servers(), 1);
        set_maint(&be, "b1", true);
        assert_eq!(take_names(&be, "10.0.0.1", 1, &mut held).await, ["b2"]);
        set_maint(&be, "b2", true);
        assert_eq!(be.usable_servers(), 0);
        let err = be.take_slot("10.0.0.1".parse().expect("ip"), None).await;
        assert_eq!(err.map(|_| ()), Err(ForwardError::NoServer));
        assert_eq!(ForwardError::NoServer.status(), 503);
        // Back in service, the active server takes over again.
        set_maint(&be, "s1", false);
        assert_eq!(take_names(&be, "10.0.0.1", 1, &mut held).await, ["s1"]);

        // `disabled` in the configuration works the same way.
        let be = backend(
            "backend be\n  server s1 127.0.0.1:1 disabled\n  server b1 127.0.0.1:2 backup\n",
        );
        assert_eq!(
            take_names(&be, "10.0.0.1", 2, &mut held).await,
            ["b1", "b1"]
        );
    });
}

#[test]
fn disabled_and_zero_weight_servers_are_skipped() {
    run(async {
        let be = backend(
            "backend be\n  server s1 127.0.0.1:1 disabled\n  server s2 127.0.0.1:2\n  server s3 127.0.0.1:3\n  server s4 127.0.0.1:4 weight 0\n",
        );
        assert_eq!(be.usable_servers(), 2);
        let mut held = Vec::new();
        let names = take_names(&be, "10.0.0.1", 10, &mut held).await;
        let c = counts(&names);
        // The disabled server's turns do not all fall to its neighbour.
        assert_eq!(
            (c.get("s2"), c.get("s3"), c.len()),
            (Some(&5), Some(&5), 2),
            "{names:?}"
        );
    });
}

#[test]
fn no_server_at_all_is_503() {
    run(async {
        let be = backend("backend be\n  mode http\n");
        let fwd = Forwarder::new();
        let mut t = txn("10.0.0.1:1000");
        let err = forward(&fwd, &be, &mut t, get("/")).await.map(|_| ());
        assert_eq!(err, Err(ForwardError::NoServer));
        assert_eq!(t.server, None);
    });
}

// ------------------------------------------------------------ maxconn queue

#[test]
fn maxconn_queues_until_a_slot_frees() {
    run(async {
        let be = backend("backend be\n  timeout queue 2s\n  server s1 127.0.0.1:1 maxconn 1\n");
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let first = be.take_slot(ip, None).await.expect("slot");
        let done = Rc::new(Cell::new(None));
        let d = done.clone();
        let be2 = be.clone();
        let waiter = tokio::task::spawn_local(async move {
            let start = Instant::now();
            let r = be2.take_slot(ip, None).await;
            d.set(Some(start.elapsed()));
            r.map(|s| s.server().name.to_string())
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(done.get().is_none(), "the second request must wait");
        drop(first);
        let name = waiter.await.expect("join").expect("slot after release");
        assert_eq!(name, "s1");
        let waited = done.get().expect("done");
        assert!(
            waited >= Duration::from_millis(90) && waited < Duration::from_secs(1),
            "{waited:?}"
        );
    });
}

#[test]
fn queued_requests_take_a_server_put_back_in_service() {
    run(async {
        let be = backend(
            "backend be\n  timeout queue 5s\n  server s1 127.0.0.1:1 maxconn 1\n  server s2 127.0.0.1:2 disabled\n",
        );
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let _first = be.take_slot(ip, None).await.expect("slot");
        let be2 = be.clone();
        let waiter = tokio::task::spawn_local(async move {
            be2.take_slot(ip, None)
                .await
                .map(|s| s.server().name.to_string())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = Instant::now();
        assert!(set_maint(&be, "s2", false));
        let name = waiter.await.expect("join").expect("slot");
        assert_eq!(name, "s2");
        assert!(start.elapsed() < Duration::from_secs(1));
    });
}

#[test]
fn queue_timeout_is_503() {
    run(async {
        let (a, _) = http_server("A").await;
        let be = backend(&http_cfg(
            "  timeout queue 200ms\n",
            &[("s1", a, "maxconn 1")],
        ));
        let fwd = Forwarder::new();
        // The first response is not read: its body holds the only slot.
        let mut t = txn("10.0.0.1:1000");
        let held = forward(&fwd, &be, &mut t, get("/")).await.expect("first");
        let start = Instant::now();
        let err = forward(&fwd, &be, &mut t, get("/")).await.map(|_| ());
        let waited = start.elapsed();
        assert_eq!(err, Err(ForwardError::QueueTimeout));
        assert_eq!(ForwardError::QueueTimeout.status(), 503);
        assert!(
            waited >= Duration::from_millis(190) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        // Once the first body is consumed, the slot is free again.
        assert_eq!(body_string(held).await, "A");
        let resp = forward(&fwd, &be, &mut t, get("/"))
            .await
            .expect("after release");
        assert_eq!(body_string(resp).await, "A");
    });
}

#[test]
fn queue_timeout_defaults_to_connect_timeout() {
    let be = backend("backend be\n  timeout connect 250ms\n  server s1 127.0.0.1:1\n");
    assert_eq!(be.timeouts.queue, Duration::from_millis(250));
    let be = backend("backend be\n  server s1 127.0.0.1:1\n");
    assert_eq!(be.timeouts.connect, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(be.timeouts.queue, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(be.retries, DEFAULT_RETRIES);
}

// ------------------------------------------------------------------ errors

#[test]
fn connect_refused_is_retried_then_503() {
    run(async {
        let dead = dead_addr().await;
        let be = backend(&http_cfg(
            "  retries 2\n  timeout connect 100ms\n",
            &[("s1", dead, "")],
        ));
        let fwd = Forwarder::new();
        let mut t = txn("10.0.0.1:1000");
        let start = Instant::now();
        let err = forward(&fwd, &be, &mut t, get("/")).await.map(|_| ());
        let took = start.elapsed();
        assert_eq!(err, Err(ForwardError::ConnectFailed));
        assert_eq!(ForwardError::ConnectFailed.status(), 503);
        // Two retries, each after a turn-around of min(timeout connect, 1 s).
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(t.server.as_deref(), Some("s1"));
        // The slot was released.
        assert_eq!(
            be.server_loads().into_iter().map(|(_, l)| l).sum::<usize>(),
            0
        );
    });
}

#[test]
fn retries_stay_on_the_server_unless_redispatch() {
    run(async {
        let dead = dead_addr().await;
        let (live, _) = http_server("LIVE").await;
        let cfg = http_cfg(
            "  retries 1\n  timeout connect 50ms\n",
            &[("s1", dead, ""), ("s2", live, "")],
        );
        // Without redispatch (HAProxy's default) the request stays on s1.
        let be = backend(&cfg);
        let fwd = Forwarder::new();
        let mut t = txn("10.0.0.1:1000");
        let err = forward(&fwd, &be, &mut t, get("/")).await.map(|_| ());
        assert_eq!(err, Err(ForwardError::ConnectFailed));
        assert_eq!(t.server.as_deref(), Some("s1"));
        let resp = forward(&fwd, &be, &mut t, get("/"))
            .await
            .expect("s2 answers");
        assert_eq!(body_string(resp).await, "LIVE");

        // With it, the last retry moves to another server.
        let parsed = crate::config::parse_str("t.cfg", &cfg).expect("config");
        let section = parsed.proxies.iter().find(|p| p.name == "be").expect("be");
        let mut be = Backend::build(section, 1, Arc::new(EventBus::default()), Arc::default())
            .expect("build");
        be.redispatch = true;
        let be = Arc::new(be);
        let mut t = txn("10.0.0.1:1000");
        let resp = forward(&fwd, &be, &mut t, get("/"))
            .await
            .expect("redispatched");
        assert_eq!(t.server.as_deref(), Some("s2"));
        assert_eq!(body_string(resp).await, "LIVE");
        assert_eq!(
            be.server_loads().into_iter().map(|(_, l)| l).sum::<usize>(),
            0
        );
    });
}

/// A server that answers "A" to the first request of its first
/// connection, then reads the second request and closes without answering;
/// later connections answer "B". Returns its address and a count of the
/// connections it accepted.
async fn closing_after_one_answer() -> (SocketAddr, Rc<Cell<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Rc::new(Cell::new(0usize));
    let c = conns.clone();
    tokio::task::spawn_local(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.set(c.get() + 1);
            let first = c.get() == 1;
            tokio::task::spawn_local(async move {
                let mut buf = [0u8; 4096];
                let reply: &[u8] = if first { b"A" } else { b"B" };
                if matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n";
                    let _ = s.write_all(&[&head[..], reply].concat()).await;
                }
                if first {
                    let _ = s.read(&mut buf).await;
                }
            });
        }
    });
    (addr, conns)
}

#[test]
fn request_is_resent_when_an_idle_connection_was_closed() {
    run(async {
        let (addr, conns) = closing_after_one_answer().await;
        let be = backend(&http_cfg("  timeout server 2s\n", &[("s1", addr, "")]));
        let fwd = Forwarder::new();
        let mut t = txn("10.0.0.1:1000");
        let resp = forward(&fwd, &be, &mut t, get("/")).await.expect("first");
        assert_eq!(body_string(resp).await, "A");
        assert_eq!(fwd.idle_connections(), 1);
        // The pooled connection looks open (the server has not closed it
        // yet): the request goes out on it, meets the close before any
        // response byte, and is sent again on a new connection (a GET may be
        // repeated).
        let resp = forward(&fwd, &be, &mut t, get("/")).await.expect("resent");
        assert_eq!(body_string(resp).await, "B");
        assert_eq!(conns.get(), 2);
    });
}

#[test]
fn a_post_meeting_a_closed_idle_connection_is_not_resent() {
    run(async {
        let (addr, conns) = closing_after_one_answer().await;
        let be = backend(&http_cfg("  timeout server 2s\n", &[("s1", addr, "")]));
        let fwd = Forwarder::new();
        let mut t = txn("10.0.0.1:1000");
        let resp = forward(&fwd, &be, &mut t, get("/")).await.expect("first");
        assert_eq!(body_string(resp).await, "A");
        // The server may have acted on a POST before closing: not repeated.
        let post = Request::builder()
            .method("POST")
            .uri("/")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let err = forward(&fwd, &be, &mut t, post).await.map(|_| ());
        assert_eq!(err, Err(ForwardError::BadResponse));
        assert_eq!(conns.get(), 1);
    });
}

#[test]
fn server_silence_is_504() {
    run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::task::spawn_local(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s); // accepted, never answered
            }
        });
        let be = backend(&http_cfg("  timeout server 200ms\n", &[("s1", addr, "")]));
        let fwd = Forwarder::new();
        let mut t = txn("10.0.0.1:1000");
        let start = Instant::now();
        let err = forward(&fwd, &be, &mut t, get("/")).await.map(|_| ());
        let took = start.elapsed();
        assert_eq!(err, Err(ForwardError::Timeout));
        assert_eq!(ForwardError::Timeout.status(), 504);
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(fwd.idle_connections(), 0);
    });
}

#[test]
fn invalid_or_missing_response_is_502() {
    run(async {
        for reply in [&b"NOT HTTP AT ALL\r\n\r\n"[..], &b""[..]] {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::task::spawn_local(async move {
                if let Ok((mut s, _)) = listener.accept().await {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(reply).await;
                    // Dropped: closed.
                }
            });
            let be = backend(&http_cfg("  timeout server 2s\n", &[("s1", addr, "")]));
            let fwd = Forwarder::new();
            let mut t = txn("10.0.0.1:1000");
            let err = forward(&fwd, &be, &mut t, get("/")).await.map(|_| ());
            assert_eq!(err, Err(ForwardError::BadResponse));
            assert_eq!(ForwardError::BadResponse.status(), 502);
        }
    });
}

// --------------------------------------------------------------- streaming

#[test]
fn large_bodies_stream_both_ways() {
    run(async {
        let (a, _) = http_server("A").await;
        let be = backend(&http_cfg("  timeout server 5s\n", &[("s1", a, "")]));
        let fwd = Forwarder::new();
        let mut t = txn("10.0.0.1:1000");

        // Upload: the echo comes back before the upload is over.
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let req = Request::builder()
            .method("POST")
            .uri("/echo")
            .header("host", "example.test")
            .body(ChanBody(rx))
            .expect("request");
        tx.send(Bytes::from(vec![7u8; 64 * 1024]))
            .await
            .expect("send");
        let resp = forward(&fwd, &be, &mut t, req)
            .await
            .expect("response head during upload");
        let mut body = resp.into_body();
        let mut received = 0usize;
        while received < 64 * 1024 {
            match body.frame().await {
                Some(Ok(f)) => received += f.data_ref().map_or(0, |d| d.len()),
                other => panic!("unexpected end: {:?}", other.map(|r| r.map(|_| ()))),
            }
        }
        const TOTAL: usize = 5 * 1024 * 1024;
        let writer = tokio::task::spawn_local(async move {
            let mut sent = 64 * 1024;
            while sent < TOTAL {
                let n = (TOTAL - sent).min(100_000);
                if tx.send(Bytes::from(vec![7u8; n])).await.is_err() {
                    return;
                }
                sent += n;
            }
        });
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("echo frame");
            if let Some(d) = frame.data_ref() {
                assert!(d.iter().all(|&b| b == 7));
                received += d.len();
            }
        }
        writer.await.expect("writer");
        assert_eq!(received, TOTAL);
        drop(body);

        // Download: the first chunk arrives before the server has produced
        // the rest (it waits for us), so nothing is buffered whole.
        let (b, seen_b) = http_server("B").await;
        let be = backend(&http_cfg("  timeout server 5s\n", &[("s1", b, "")]));
        let resp = forward(&fwd, &be, &mut t, get("/gated"))
            .await
            .expect("download head");
        let mut body = resp.into_body();
        let first = body.frame().await.expect("first frame").expect("ok");
        let mut got = first.data_ref().map_or(0, |d| d.len());
        while got < 64 * 1024 {
            let f = body.frame().await.expect("frame").expect("ok");
            got += f.data_ref().map_or(0, |d| d.len());
        }
        seen_b.gate.notify_one();
        while let Some(f) = body.frame().await {
            got += f.expect("ok").data_ref().map_or(0, |d| d.len());
        }
        assert_eq!(got, 81 * 64 * 1024);
    });
}

#[test]
fn stalled_response_body_times_out() {
    run(async {
        let (b, seen) = http_server("B").await;
        let be = backend(&http_cfg("  timeout server 200ms\n", &[("s1", b, "")]));
        let fwd = Forwarder::new();
        let mut t = txn("10.0.0.1:1000");
        let resp = forward(&fwd, &be, &mut t, get("/gated"))
            .await
            .expect("head");
        let start = Instant::now();
        let r = resp.into_body().collect().await;
        assert!(r.is_err(), "a stalled body ends in an error");
        assert!(start.elapsed() >= Duration::from_millis(190));
        assert_eq!(
            be.server_loads().into_iter().map(|(_, l)| l).sum::<usize>(),
            0
        );
        assert_eq!(fwd.idle_connections(), 0);
        drop(seen);
    });
}

// ----------------------------------------------------------- connections

#[test]
fn connections_are_reused() {
    run(async {
        let (a, seen) = http_server("A").await;
        let be = backend(&http_cfg("", &[("s1", a, "")]));
        let fwd = Forwarder::new();
        for _ in 0..5 {
            let mut t = txn("10.0.0.1:1000");
            let resp = forward(&fwd, &be, &mut t, get("/"))
                .await
                .expect("forwarded");
            assert_eq!(body_string(resp).await, "A");
        }
        assert_eq!(seen.conns.get(), 1);
        assert_eq!(fwd.idle_connections(), 1);
        // Two at once need two connections; both are kept afterwards.
        let mut t1 = txn("10.0.0.1:1000");
        let mut t2 = txn("10.0.0.1:1000");
        let r1 = forward(&fwd, &be, &mut t1, get("/")).await.expect("r1");
        let r2 = forward(&fwd, &be, &mut t2, get("/")).await.expect("r2");
        assert_eq!(body_string(r1).await + &body_string(r2).await, "AA");
        assert_eq!(seen.conns.get(), 2);
        assert_eq!(fwd.idle_connections(), 2);
        // A POST with a body reuses them too.
        let req = Request::builder()
            .method("POST")
            .uri("/echo")
            .header("host", "example.test")
            .body(Full::new(Bytes::from_static(b"payload")))
            .expect("request");
        let resp = forward(&fwd, &be, &mut t1, req).await.expect("post");
        assert_eq!(body_string(resp).await, "payload");
        assert_eq!(seen.conns.get(), 2);
    });
}

#[test]
fn httpclose_opens_a_connection_per_request() {
    run(async {
        let (a, seen) = http_server("A").await;
        let be = backend(&http_cfg("  option httpclose\n", &[("s1", a, "")]));
        let fwd = Forwarder::new();
        for _ in 0..4 {
            let mut t = txn("10.0.0.1:1000");
            let resp = forward(&fwd, &be, &mut t, get("/"))
                .await
                .expect("forwarded");
            assert_eq!(body_string(resp).await, "A");
        }
        assert_eq!(seen.conns.get(), 4);
        assert_eq!(fwd.idle_connections(), 0);
        let heads = seen.heads.borrow();
        assert!(heads
            .iter()
            .all(|(_, h)| h.get("connection").is_some_and(|v| v == "close")));
    });
}

// ----------------------------------------------------------------- headers

#[test]
fn forwardfor_adds_the_client_address() {
    run(async {
        let (a, seen) = http_server("A").await;
        let fwd = Forwarder::new();
        let cases: [(&str, &str, Option<&str>, &[&str]); 5] = [
            ("  option forwardfor\n", "10.1.2.3:999", None, &["10.1.2.3"]),
            (
                "  option forwardfor\n",
                "10.1.2.3:999",
                Some("1.1.1.1"),
                &["1.1.1.1", "10.1.2.3"],
            ),
            (
                "  option forwardfor except 10.0.0.0/8\n",
                "10.1.2.3:999",
                None,
                &[],
            ),
            (
                "  option forwardfor except 10.0.0.0/8\n",
                "[2001:db8::1]:999",
                None,
                &["2001:db8::1"],
            ),
            (
                "  option forwardfor if-none\n",
                "10.1.2.3:999",
                Some("1.1.1.1"),
                &["1.1.1.1"],
            ),
        ];
        for (opt, client, existing, want) in cases {
            let be = backend(&http_cfg(opt, &[("s1", a, "")]));
            let mut req = get("/");
            if let Some(v) = existing {
                req.headers_mut()
                    .insert("x-forwarded-for", v.parse().expect("value"));
            }
            let mut t = txn(client);
            let resp = forward(&fwd, &be, &mut t, req).await.expect("forwarded");
            body_string(resp).await;
            let heads = seen.heads.borrow();
            let (_, h) = heads.last().expect("seen");
            let got: Vec<_> = h
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.to_str().unwrap_or("?").to_string())
                .collect();
            assert_eq!(got, want, "{opt} from {client}");
        }
        // A custom header name.
        let be = backend(&http_cfg(
            "  option forwardfor header X-Client\n",
            &[("s1", a, "")],
        ));
        let mut t = txn("192.168.1.1:5");
        body_string(
            forward(&fwd, &be, &mut t, get("/"))
                .await
                .expect("forwarded"),
        )
        .await;
        let heads = seen.heads.borrow();
        let (_, h) = heads.last().expect("seen");
        assert_eq!(
            h.get("x-client").map(|v| v.as_bytes()),
            Some(&b"192.168.1.1"[..])
        );
        assert!(h.get("x-forwarded-for").is_none());
    });
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    run(async {
        let (a, seen) = http_server("A").await;
        let be = backend(&http_cfg("", &[("s1", a, "")]));
        let fwd = Forwarder::new();
        let req = Request::builder()
            .uri("http://example.test/p?q=1")
            .header("host", "example.test")
            .header("connection", "keep-alive, x-private")
            // A header the connection lists is forwarded here: the client's
            // own were removed when its request was parsed (h1_server), so
            // this one was set by the rules and must reach the server.
            .header("x-private", "set-by-a-rule")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("upgrade", "websocket")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .header("proxy-connection", "keep-alive")
            .header("x-kept", "yes")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let mut t = txn("10.0.0.1:1000");
        let resp = forward(&fwd, &be, &mut t, req).await.expect("forwarded");
        body_string(resp).await;
        {
            let heads = seen.heads.borrow();
            let (uri, h) = heads.last().expect("seen");
            assert_eq!(uri, "/p?q=1", "origin form");
            assert_eq!(
                h.get("host").map(|v| v.as_bytes()),
                Some(&b"example.test"[..])
            );
            assert_eq!(
                h.get("x-private").map(|v| v.as_bytes()),
                Some(&b"set-by-a-rule"[..])
            );
            for gone in [
                "connection",
                "keep-alive",
                "te",
                "upgrade",
                "proxy-authorization",
                "proxy-connection",
            ] {
                assert!(h.get(gone).is_none(), "{gone} forwarded");
            }
            assert_eq!(h.get("x-kept").map(|v| v.as_bytes()), Some(&b"yes"[..]));
        }
        // And in responses.
        let resp = forward(&fwd, &be, &mut t, get("/hop"))
            .await
            .expect("forwarded");
        let h = resp.headers().clone();
        assert_eq!(body_string(resp).await, "hop");
        for gone in ["connection", "x-hop", "keep-alive", "proxy-authenticate"] {
            assert!(h.get(gone).is_none(), "{gone} forwarded");
        }
        assert!(h.get("x-kept").is_some());
    });
}

// --------------------------------------------------------------------- TCP

/// A TCP server that reads until the client half-closes, then replies with
/// what it got and closes.
async fn tcp_reply_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::task::spawn_local(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::task::spawn_local(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_ok() {
                    let reply =
                        format!("got {} bytes: {}", got.len(), String::from_utf8_lossy(&got));
                    let _ = s.write_all(reply.as_bytes()).await;
                }
            });
        }
    });
    addr
}

/// A connected (client, accepted) pair through a local listener.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (accepted, _) = l.accept().await.expect("accept");
    (client, accepted)
}

#[test]
fn tcp_forwarding_honours_half_close() {
    run(async {
        let srv = tcp_reply_server().await;
        let be = backend(&format!(
            "listen be\n  mode tcp\n  bind 127.0.0.1:8080\n  timeout client 5s\n  timeout server 5s\n  server s1 {srv}\n"
        ));
        let (mut client, accepted) = tcp_pair().await;
        let be2 = be.clone();
        let relay = tokio::task::spawn_local(async move {
            let fwd = Forwarder::new();
            let mut t = txn("10.0.0.1:1000");
            let r = fwd
                .tcp(&be2, &mut t, accepted, Bytes::from_static(b"pre-"))
                .await;
            (r, t.server)
        });
        client.write_all(b"hello").await.expect("write");
        client.shutdown().await.expect("half-close");
        let mut reply = String::new();
        client.read_to_string(&mut reply).await.expect("read reply");
        assert_eq!(reply, "got 9 bytes: pre-hello");
        let (r, server) = relay.await.expect("join");
        assert_eq!(r, Ok(()));
        assert_eq!(server.as_deref(), Some("s1"));
        assert_eq!(
            be.server_loads().into_iter().map(|(_, l)| l).sum::<usize>(),
            0
        );
    });
}

#[test]
fn tcp_inactivity_and_connect_failures() {
    run(async {
        // A server that accepts and stays silent: the relay ends on inactivity.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::task::spawn_local(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let be = backend(&format!(
            "defaults\n  timeout client 10s\nbackend be\n  mode tcp\n  timeout server 10s\n  timeout tunnel 200ms\n  server s1 {addr}\n"
        ));
        let (mut client, accepted) = tcp_pair().await;
        let fwd = Forwarder::new();
        let mut t = txn("10.0.0.1:1000");
        let start = Instant::now();
        let r = fwd.tcp(&be, &mut t, accepted, Bytes::new()).await;
        assert_eq!(r, Err(ForwardError::Timeout));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(3),
            "{took:?}"
        );
        let mut rest = Vec::new();
        assert_eq!(
            client.read_to_end(&mut rest).await.map(|_| rest.len()).ok(),
            Some(0)
        );

        // Nothing listening: retried, then given up.
        let dead = dead_addr().await;
        let be = backend(&format!(
            "backend be\n  mode tcp\n  retries 1\n  timeout connect 100ms\n  server s1 {dead}\n"
        ));
        let (_client, accepted) = tcp_pair().await;
        let r = fwd.tcp(&be, &mut t, accepted, Bytes::new()).await;
        assert_eq!(r, Err(ForwardError::ConnectFailed));
    });
}

// ------------------------------------------------------------ construction

#[test]
fn build_resolves_names_and_reports_errors() {
    let b = backends("backend be\n  server s1 localhost:8080\nlisten li\n  bind 127.0.0.1:8080\n  server s2 127.0.0.1:1\n");
    let be = b.get("be").expect("be");
    assert_eq!(be.name(), "be");
    assert!(be.servers().servers[0].addr().ip().is_loopback());
    assert!(b.get("li").is_some(), "listen sections are backends too");
    assert_eq!(b.server_count(), 2);
    assert!(b.get("nope").is_none());

    let cfg = crate::config::parse_str(
        "t.cfg",
        "backend be\n  option forwardfor except 10.0.0.0/99\n  server s1 no-such-host.invalid:80\n",
    )
    .expect("config");
    let errs = match Registry::build(&cfg) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e,
    };
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].starts_with("[ALERT] parsing [t.cfg:3] : backend 'be', server 's1': cannot resolve 'no-such-host.invalid'"), "{errs:#?}");
    assert!(
        errs[1].starts_with("[ALERT] parsing [t.cfg:1] : backend 'be': 'option forwardfor'"),
        "{errs:#?}"
    );
}

#[test]
fn shared_types_are_thread_safe() {
    fn shared<T: Send + Sync>() {}
    shared::<Registry>();
    shared::<Arc<Backend>>();
    shared::<ForwardError>();
    fn movable<T: Send>() {}
    movable::<UpstreamBody>();
}

#[test]
fn networks_parse_and_match() {
    let n = |s: &str| IpNet::parse(s);
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let net = n("10.0.0.0/8").expect("net");
    assert!(net.contains(ip("10.200.1.1")));
    assert!(net.contains(ip("::ffff:10.1.1.1")));
    assert!(!net.contains(ip("11.0.0.1")));
    assert!(!net.contains(ip("::1")));
    let one = n("127.0.0.1").expect("host");
    assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
    let mask = n("192.168.0.0/255.255.0.0").expect("mask");
    assert!(mask.contains(ip("192.168.7.7")) && !mask.contains(ip("192.169.0.1")));
    let v6 = n("2001:db8::/32").expect("v6");
    assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
    assert!(n("0.0.0.0/0").expect("all").contains(ip("8.8.8.8")));
    for bad in [
        "10.0.0.0/33",
        "10.0.0.0/255.0.255.0",
        "nope",
        "::1/129",
        "10.0.0.0/",
    ] {
        assert!(n(bad).is_none(), "{bad}");
    }
}
