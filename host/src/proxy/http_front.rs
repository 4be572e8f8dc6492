//! The request pipeline of an HTTP frontend: one transaction from its
//! parsed request to its response. The connection itself (parsing, body
//! framing, keep-alive, writing responses) is `h1_server`'s; this module
//! runs the rules, picks a Lua service or a backend, and applies the
//! response rules.

use crate::lua::applet_http::{HttpAppletRequest, HttpReply, ResponseHead};
use crate::proxy::body::ProxyBody;
use crate::proxy::error_pages;
use crate::proxy::h1_server::RequestBody;
use crate::proxy::plan::StateKind;
use crate::proxy::plan::{FrontendPlan, ServiceTarget};
use crate::proxy::rules::{self, RuleSide, Verdict};
use crate::proxy::worker::Worker;
use crate::sample::SampleCtx;
use crate::txn::ServicePrivs;
use crate::txn::{Txn, TxnMode};
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Why a request gets no response: the connection is closed instead
/// (`reject`, `act.ABORT`, `txn:done()` without a reply).
#[derive(Debug)]
pub struct Abort;

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("transaction aborted")
    }
}

impl std::error::Error for Abort {}

/// One transaction: the request's rules, its service or server, the
/// response rules, and its `-d` access line. The transaction comes back
/// with the response for its traffic log line, sent once the response is
/// delivered.
pub(crate) async fn handle(
    worker: Rc<Worker>,
    fe: Arc<FrontendPlan>,
    peer: SocketAddr,
    local: SocketAddr,
    first_request: bool,
    sess: Rc<std::cell::RefCell<std::collections::HashMap<String, crate::lua::vars::VarValue>>>,
    req: Request<RequestBody>,
) -> (Result<Response<ProxyBody>, Abort>, Box<Txn>) {
    crate::stats::count_request();
    let start = Instant::now();
    let line = crate::log::access_log_enabled().then(|| format!("{} {}", req.method(), req.uri()));
    let (parts, body) = req.into_parts();
    let mut txn = Box::new(Txn::new(
        TxnMode::Http,
        peer,
        local,
        fe.name.clone(),
        worker.id + 1,
    ));
    if let Some(c) = &fe.captures {
        c.request(&parts.headers, &mut txn.log);
    }
    txn.req = Some(parts);
    txn.first_request = first_request;
    txn.vars.sess = std::mem::take(&mut *sess.borrow_mut());
    let result = pipeline(&worker, &fe, &mut txn, body).await;
    *sess.borrow_mut() = std::mem::take(&mut txn.vars.sess);
    let mut privs = txn.priv_states.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(service) = txn.service_privs.take() {
        privs = service.front_done(privs);
    }
    if privs != 0 {
        worker.forget_txn(txn.id, privs);
    }
    if let Some(line) = line {
        let t = crate::log::UtcTime::now();
        let status = result
            .as_ref()
            .map_or("-".to_string(), |r| r.status().as_u16().to_string());
        crate::log::access(&format!(
            "{peer} [{}] {} {}/{} {status} {}ms \"{line}\"",
            t.log_date(),
            fe.name,
            txn.backend_name(),
            txn.server.as_deref().unwrap_or("<NOSRV>"),
            start.elapsed().as_millis()
        ));
    }
    if result.is_err() {
        txn.log.terminate("PR");
    }
    // No server or service answered: the response slots stay empty (HAProxy
    // does not capture its own replies' headers), shown as `{|}`.
    if let Some(c) = &fe.captures {
        if txn.log.res_captures.is_empty() {
            c.response(&hyper::HeaderMap::new(), &mut txn.log);
        }
    }
    (result, txn)
}

/// Where a transaction's response came from: only a server's or a Lua
/// service's may be compressed (HAProxy's generated replies skip the
/// response filters).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Generated,
    Server,
    /// A Lua service's.
    Service,
}

/// The per-request state the stages share.
struct Exchange {
    /// `compression`: the algorithm chosen from the request, if any.
    algo: Option<crate::config::CompressionAlgo>,
    /// The backend whose settings chose it (the transaction moves to a
    /// service with its backend name).
    algo_backend: Option<Arc<crate::proxy::plan::BackendPlan>>,
    facts: crate::proxy::compress::RequestFacts,
    /// `option http-buffer-request` already waited for the body.
    buffered: bool,
}

/// The life of one HTTP transaction.
async fn pipeline(
    worker: &Worker,
    fe: &FrontendPlan,
    txn: &mut Box<Txn>,
    mut body: RequestBody,
) -> Result<Response<ProxyBody>, Abort> {
    let facts = match txn.req.as_ref() {
        Some(p) => crate::proxy::compress::RequestFacts::of(&p.method, p.version),
        None => {
            crate::proxy::compress::RequestFacts::of(&hyper::Method::GET, hyper::Version::HTTP_11)
        }
    };
    // A body that came with the head is already in HAProxy's buffer, where
    // `req.body` finds it even without `option http-buffer-request`.
    txn.req_body = body.arrived();
    let mut ex = Exchange {
        algo: None,
        algo_backend: None,
        facts,
        buffered: false,
    };
    let (resp, origin) = request_stages(worker, fe, txn, &mut body, &mut ex).await?;
    let resp = match substitute_error(worker, fe, txn, resp) {
        Some(r) => r,
        None => return Err(Abort),
    };
    let resp = after_response(worker, fe, txn, resp).await?;
    Ok(compress(fe, resp, origin, &ex))
}

/// The request's rules, then a service or a server: the response and
/// where it came from.
async fn request_stages(
    worker: &Worker,
    fe: &FrontendPlan,
    txn: &mut Box<Txn>,
    body: &mut RequestBody,
    ex: &mut Exchange,
) -> Result<(Response<ProxyBody>, Origin), Abort> {
    // tcp-request content rules run once per request in HTTP mode, before
    // the HTTP rules (HAProxy's INSPECT_FE analyser comes first); the body
    // is waited for between the two (its HTTP_BODY analyser).
    for (set, http) in [
        (&fe.rules.tcp_request, false),
        (&fe.rules.http_request, true),
    ] {
        if http && fe.buffer_request {
            if let Some(r) = buffer_body(fe, txn, body, ex).await? {
                return Ok((r, Origin::Generated));
            }
        }
        if set.is_empty() {
            continue;
        }
        match rules::run(worker, set, txn, RuleSide::Request).await {
            Verdict::Continue => {}
            Verdict::Respond(r) => return Ok((r, Origin::Generated)),
            Verdict::Service(t) => {
                let body = std::mem::replace(body, RequestBody::empty());
                return service_stage(worker, fe, None, &t, txn, body, ex).await;
            }
            Verdict::Abort => return Err(Abort),
        }
    }
    if fe.buffer_request {
        if let Some(r) = buffer_body(fe, txn, body, ex).await? {
            return Ok((r, Origin::Generated));
        }
    }
    let body = std::mem::replace(body, RequestBody::empty());
    match select_backend(worker, fe, txn) {
        Some(name) => backend_stage(worker, fe, &name, txn, body, ex).await,
        None => {
            txn.log.terminate("SC");
            Ok((error_pages::response(503), Origin::Generated))
        }
    }
}

/// `option http-buffer-request`: waits for the request body, up to the
/// buffer size, so that `req.body` and Lua see it; the bytes stay at the
/// front of the body for its reader. A body still incomplete after `timeout
/// http-request` is answered 408, as HAProxy does; `Some` is that answer.
async fn buffer_body(
    fe: &FrontendPlan,
    txn: &mut Txn,
    body: &mut RequestBody,
    ex: &mut Exchange,
) -> Result<Option<Response<ProxyBody>>, Abort> {
    if ex.buffered {
        return Ok(None);
    }
    ex.buffered = true;
    // HAProxy keeps `tune.maxrewrite` (1024 by default) of the buffer free.
    let limit = crate::proxy::bufsize().saturating_sub(1024).max(1);
    let wait = fe
        .http_request_timeout
        .unwrap_or(crate::proxy::h1_server::DEFAULT_REQUEST_TIMEOUT);
    match tokio::time::timeout(wait, body.buffer(limit)).await {
        Ok(Ok(b)) => {
            txn.req_body = Some(b);
            Ok(None)
        }
        Ok(Err(_)) => Err(Abort),
        // No `connection: close` (HAProxy 3.0 sends none); the connection
        // still ends, as the rest of the body never came.
        Err(_) => Ok(Some(error_pages::response(408))),
    }
}

/// A default error page becomes the backend's or the frontend's
/// `errorfile` reply for its status (None: an empty file, close).
fn substitute_error(
    worker: &Worker,
    fe: &FrontendPlan,
    txn: &Txn,
    resp: Response<ProxyBody>,
) -> Option<Response<ProxyBody>> {
    if resp
        .extensions()
        .get::<error_pages::DefaultPage>()
        .is_none()
    {
        return Some(resp);
    }
    let be = backend_plan(worker, txn);
    let files = [be.as_ref().map(|b| &b.http.errors), Some(&fe.http.errors)];
    let files: Vec<&error_pages::ErrorFiles> = files.into_iter().flatten().collect();
    match error_pages::substitute(resp, &files) {
        error_pages::Substitute::Keep(r) | error_pages::Substitute::Reply(r) => Some(r),
        error_pages::Substitute::Close => None,
    }
}

fn backend_plan(worker: &Worker, txn: &Txn) -> Option<Arc<crate::proxy::plan::BackendPlan>> {
    txn.backend
        .as_ref()
        .and_then(|b| worker.plan.backends.get(&**b))
        .cloned()
}

/// The compression settings that apply: the backend's, then the frontend's.
fn compression_settings<'a>(
    be: Option<&'a crate::proxy::plan::BackendPlan>,
    fe: &'a FrontendPlan,
) -> [Option<&'a crate::proxy::compress::Settings>; 2] {
    [
        be.and_then(|b| b.http.compression.as_ref()),
        fe.http.compression.as_ref(),
    ]
}

/// Chooses the compression for the request about to be served (and
/// applies `compression offload` to its headers).
fn choose_compression(
    worker: &Worker,
    fe: &FrontendPlan,
    txn: &Txn,
    headers: &mut hyper::HeaderMap,
    ex: &mut Exchange,
) {
    let be = backend_plan(worker, txn);
    let settings = compression_settings(be.as_deref(), fe);
    if settings.iter().any(Option::is_some) {
        ex.algo = crate::proxy::compress::choose(headers, &settings);
    }
    ex.algo_backend = be;
}

/// Compresses a server's or service's response when the request chose an
/// algorithm and the response qualifies.
fn compress(
    fe: &FrontendPlan,
    resp: Response<ProxyBody>,
    origin: Origin,
    ex: &Exchange,
) -> Response<ProxyBody> {
    let Some(algo) = ex.algo.filter(|_| origin != Origin::Generated) else {
        return resp;
    };
    let settings = compression_settings(ex.algo_backend.as_deref(), fe);
    crate::proxy::compress::apply(resp, algo, &ex.facts, &settings)
}

/// `use_backend` rules in order, then `default_backend`.
fn select_backend(worker: &Worker, fe: &FrontendPlan, txn: &Txn) -> Option<Arc<str>> {
    let samples = worker.samples();
    let ctx = SampleCtx::new(txn, &samples, &*worker.plan.registry);
    for sw in &fe.use_backends {
        let matched = sw.cond.as_ref().is_none_or(|c| c.eval(&ctx));
        if matched {
            return Some(sw.name(&ctx));
        }
    }
    fe.default_backend.clone()
}

/// Backend rules, forwarding, and the response rules.
async fn backend_stage(
    worker: &Worker,
    fe: &FrontendPlan,
    name: &Arc<str>,
    txn: &mut Box<Txn>,
    mut body: RequestBody,
    ex: &mut Exchange,
) -> Result<(Response<ProxyBody>, Origin), Abort> {
    let generated = |r| Ok((r, Origin::Generated));
    txn.backend = Some(name.clone());
    let be_rules = worker.plan.backends.get(&**name).cloned();
    if let Some(be) = &be_rules {
        if be.buffer_request {
            if let Some(r) = buffer_body(fe, txn, &mut body, ex).await? {
                return generated(r);
            }
        }
        // The backend's tcp-request content rules, then its http-request rules.
        for set in [&be.rules.tcp_request, &be.rules.http_request] {
            if set.is_empty() {
                continue;
            }
            match rules::run(worker, set, txn, RuleSide::Request).await {
                Verdict::Continue => {}
                Verdict::Respond(r) => return generated(r),
                Verdict::Service(t) => {
                    let be_response = Some(&be.rules.http_response[..]);
                    return service_stage(worker, fe, be_response, &t, txn, body, ex).await;
                }
                Verdict::Abort => return Err(Abort),
            }
        }
    }
    let Some(backend) = worker.plan.registry.get(name).cloned() else {
        txn.log.terminate("SC");
        crate::log::warning(&format!(
            "frontend '{}': backend '{name}' has no server",
            fe.name
        ));
        return generated(error_pages::response(503));
    };
    let Some(mut parts) = txn.req.take() else {
        return generated(error_pages::response(500));
    };
    if backend.forwardfor().is_none() {
        if let Some(ff) = &fe.forwardfor {
            crate::backend::add_forwarded_for(&mut parts.headers, ff, txn.client.ip());
        }
    }
    choose_compression(worker, fe, txn, &mut parts.headers, ex);
    let upstream = worker.forwarder.http(&backend, txn, &parts, body).await;
    txn.req = Some(parts);
    let resp = match upstream {
        Ok(r) => r,
        Err(e) => {
            txn.log.terminate(e.term_state());
            return generated(error_pages::response(e.status()));
        }
    };
    let resp = resp.map(ProxyBody::Upstream);
    let be_response = be_rules.as_ref().map(|b| &b.rules.http_response[..]);
    response_rules(worker, fe, be_response, txn, resp, Origin::Server).await
}

/// A Lua service's response, through the `http-response` rules as HAProxy
/// runs them on it: the backend's (`be_response`, when a backend's rule
/// called the service), then the frontend's.
async fn service_stage(
    worker: &Worker,
    fe: &FrontendPlan,
    be_response: Option<&[rules::CRule]>,
    target: &ServiceTarget,
    txn: &mut Box<Txn>,
    body: RequestBody,
    ex: &mut Exchange,
) -> Result<(Response<ProxyBody>, Origin), Abort> {
    let (resp, origin) = start_service(worker, fe, target, txn, body, ex).await;
    response_rules(worker, fe, be_response, txn, resp, origin).await
}

/// The `http-response` rules of the backend (`be_response`), then of the
/// frontend (HAProxy's order), on a response from a server or a service
/// (`origin`); a rule's own reply is a generated one.
async fn response_rules(
    worker: &Worker,
    fe: &FrontendPlan,
    be_response: Option<&[rules::CRule]>,
    txn: &mut Box<Txn>,
    resp: Response<ProxyBody>,
    origin: Origin,
) -> Result<(Response<ProxyBody>, Origin), Abort> {
    let generated = |r| Ok((r, Origin::Generated));
    let sets = be_response
        .into_iter()
        .chain(std::iter::once(&fe.rules.http_response[..]))
        .filter(|s| !s.is_empty());
    let (res_parts, res_body) = resp.into_parts();
    if fe.log.is_some() {
        // `%B` counts the head as it came, whatever the rules change.
        txn.log.head_size = Some(crate::proxy::traffic_log::logged_head_size(&res_parts));
    }
    // HAProxy captures response headers as they come from the server or
    // service, before the rules (and never on the replies it generates).
    if let Some(c) = &fe.captures {
        c.response(&res_parts.headers, &mut txn.log);
    }
    txn.res = Some(res_parts);
    for set in sets {
        match rules::run(worker, set, txn, RuleSide::Response).await {
            Verdict::Continue => {}
            Verdict::Respond(r) => {
                // A reply replaces the response: its own head is counted.
                txn.log.head_size = None;
                return generated(r);
            }
            Verdict::Service(_) | Verdict::Abort => return Err(Abort),
        }
    }
    let Some(res_parts) = txn.res.take() else {
        return generated(error_pages::response(502));
    };
    Ok((Response::from_parts(res_parts, res_body), origin))
}

/// `http-after-response` rules, on every response including generated ones.
async fn after_response(
    worker: &Worker,
    fe: &FrontendPlan,
    txn: &mut Box<Txn>,
    resp: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, Abort> {
    let be = txn
        .backend
        .as_ref()
        .and_then(|b| worker.plan.backends.get(&**b))
        .cloned();
    let be_rules = be
        .as_ref()
        .map(|b| &b.rules.http_after_response)
        .filter(|r| !r.is_empty());
    if fe.rules.http_after_response.is_empty() && be_rules.is_none() {
        return Ok(resp);
    }
    let (parts, body) = resp.into_parts();
    txn.res = Some(parts);
    // The backend's rules, then the frontend's, as for http-response.
    for set in be_rules
        .into_iter()
        .chain(std::iter::once(&fe.rules.http_after_response))
    {
        match rules::run(worker, set, txn, RuleSide::Response).await {
            Verdict::Respond(r) => {
                txn.log.head_size = None;
                return Ok(r);
            }
            Verdict::Abort | Verdict::Service(_) => return Err(Abort),
            Verdict::Continue => {}
        }
    }
    match txn.res.take() {
        Some(parts) => Ok(Response::from_parts(parts, body)),
        None => Ok(error_pages::response(500)),
    }
}

/// Hands the request to a Lua HTTP service and waits for its response head.
async fn start_service(
    worker: &Worker,
    fe: &FrontendPlan,
    target: &ServiceTarget,
    txn: &mut Box<Txn>,
    body: RequestBody,
    ex: &mut Exchange,
) -> (Response<ProxyBody>, Origin) {
    let Some(parts) = txn.req.as_mut() else {
        return (error_pages::response(500), Origin::Generated);
    };
    // The compression is chosen (and `compression offload` applied) on the
    // request the service will see.
    let mut headers = std::mem::take(&mut parts.headers);
    choose_compression(worker, fe, txn, &mut headers, ex);
    let Some(parts) = txn.req.as_mut() else {
        return (error_pages::response(500), Origin::Generated);
    };
    parts.headers = headers;
    // The service takes the transaction; its log line keeps the request
    // line and the captures, and names the service as HAProxy does.
    let for_log = fe.log.is_some().then(|| copy_head(parts)).flatten();
    let content_length = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut applet_req = HttpAppletRequest {
        content_length,
        body: Some(body),
        txn: Some(std::mem::replace(
            txn,
            Box::new(Txn::new(
                txn.mode,
                txn.client,
                txn.local,
                txn.frontend.clone(),
                txn.thread,
            )),
        )),
        privs: ServicePrivs::new(0),
    };
    let privs = ServicePrivs::new(match target.state {
        StateKind::Shared => 1,
        StateKind::PerThread => 2,
    });
    applet_req.privs = privs.clone();
    if fe.log.is_some() {
        txn.req = for_log;
        if let Some(old) = applet_req.txn.as_ref() {
            txn.log.req_captures = old.log.req_captures.clone();
        }
        txn.server = Some(Arc::from(format!("<lua.{}>", target.name)));
        txn.log.terminate("LR");
        // An applet is reached at once: no queue, no connect, no wait
        // (0/0/0 in HAProxy's line).
        txn.log.t_queue = Some(0);
        txn.log.t_connect = Some(0);
        txn.log.t_response = Some(0);
    }
    let (head_tx, head_rx) = oneshot::channel();
    let (body_tx, body_rx) = mpsc::channel(8);
    worker.start_http_service(
        target,
        applet_req,
        HttpReply {
            head: head_tx,
            body: body_tx,
        },
    );
    match head_rx.await {
        Ok(start) => {
            // The response rules run on the service's copy of the
            // transaction (its variables, the request it saw).
            if let Some(copy) = start.txn {
                // What the front end gathered for the log line stays.
                let log = std::mem::take(&mut txn.log);
                let server = txn.server.take();
                *txn = copy;
                txn.log = log;
                if server.is_some() {
                    txn.server = server;
                }
                txn.service_privs = Some(privs);
            }
            match start.head {
                Some(head) => (build_response(head, body_rx), Origin::Service),
                // No response from the service: HAProxy's 500.
                None => (service_error(), Origin::Service),
            }
        }
        // The service could not start.
        Err(_) => (service_error(), Origin::Service),
    }
}

/// The 500 of a service that failed or sent no response: HAProxy 3.0 sends
/// its default page here, not an errorfile.
fn service_error() -> Response<ProxyBody> {
    let mut r = error_pages::response(500);
    r.extensions_mut().remove::<error_pages::DefaultPage>();
    r
}

/// A copy of a request head (method, target, version, headers).
fn copy_head(parts: &hyper::http::request::Parts) -> Option<hyper::http::request::Parts> {
    let mut copy = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version)
        .body(())
        .ok()?
        .into_parts()
        .0;
    copy.headers = parts.headers.clone();
    Some(copy)
}

fn build_response(
    head: ResponseHead,
    body_rx: mpsc::Receiver<crate::lua::applet_http::BodyChunk>,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Stream(body_rx));
    *resp.status_mut() = StatusCode::from_u16(head.status).unwrap_or(StatusCode::OK);
    *resp.headers_mut() = head.headers;
    if let Some(reason) = head.reason {
        set_reason(&mut resp, reason);
    }
    // HAProxy closes after a body-less status that announced no length
    // (the applet would otherwise have been chunked).
    let status = resp.status().as_u16();
    if (status == 204 || status == 304)
        && !resp.headers().contains_key(hyper::header::CONTENT_LENGTH)
    {
        resp.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A non-canonical reason phrase (AppletHTTP:set_status, reply objects,
/// set-status ... reason, http:res_set_status).
pub fn set_reason<B>(resp: &mut Response<B>, reason: String) {
    if let Ok(r) = hyper::ext::ReasonPhrase::try_from(reason) {
        resp.extensions_mut().insert(r);
    }
}
