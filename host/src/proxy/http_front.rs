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
    (result, txn)
}

/// The life of one HTTP transaction.
async fn pipeline(
    worker: &Worker,
    fe: &FrontendPlan,
    txn: &mut Box<Txn>,
    body: RequestBody,
) -> Result<Response<ProxyBody>, Abort> {
    // An empty rule set skips building the rules' future (most proxies).
    let verdict = if fe.rules.http_request.is_empty() {
        Verdict::Continue
    } else {
        rules::run(worker, &fe.rules.http_request, txn, RuleSide::Request).await
    };
    let resp = match verdict {
        Verdict::Continue => match select_backend(worker, fe, txn) {
            Some(name) => backend_stage(worker, fe, &name, txn, body).await?,
            None => {
                txn.log.terminate("SC");
                error_pages::response(503)
            }
        },
        Verdict::Respond(r) => r,
        Verdict::Service(t) => service_stage(worker, fe, None, &t, txn, body).await?,
        Verdict::Abort => return Err(Abort),
    };
    after_response(worker, fe, txn, resp).await
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
    body: RequestBody,
) -> Result<Response<ProxyBody>, Abort> {
    txn.backend = Some(name.clone());
    let be_rules = worker.plan.backends.get(&**name).cloned();
    if let Some(be) = be_rules
        .as_ref()
        .filter(|b| !b.rules.http_request.is_empty())
    {
        match rules::run(worker, &be.rules.http_request, txn, RuleSide::Request).await {
            Verdict::Continue => {}
            Verdict::Respond(r) => return Ok(r),
            Verdict::Service(t) => {
                let be_response = Some(&be.rules.http_response[..]);
                return service_stage(worker, fe, be_response, &t, txn, body).await;
            }
            Verdict::Abort => return Err(Abort),
        }
    }
    let Some(backend) = worker.plan.registry.get(name).cloned() else {
        txn.log.terminate("SC");
        crate::log::warning(&format!(
            "frontend '{}': backend '{name}' has no server",
            fe.name
        ));
        return Ok(error_pages::response(503));
    };
    let Some(mut parts) = txn.req.take() else {
        return Ok(error_pages::response(500));
    };
    if backend.forwardfor().is_none() {
        if let Some(ff) = &fe.forwardfor {
            crate::backend::add_forwarded_for(&mut parts.headers, ff, txn.client.ip());
        }
    }
    let upstream = worker.forwarder.http(&backend, txn, &parts, body).await;
    txn.req = Some(parts);
    let resp = match upstream {
        Ok(r) => r,
        Err(e) => {
            txn.log.terminate(e.term_state());
            return Ok(error_pages::response(e.status()));
        }
    };
    let resp = resp.map(ProxyBody::Upstream);
    let be_response = be_rules.as_ref().map(|b| &b.rules.http_response[..]);
    response_rules(worker, fe, be_response, txn, resp).await
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
) -> Result<Response<ProxyBody>, Abort> {
    let resp = start_service(worker, fe, target, txn, body).await;
    response_rules(worker, fe, be_response, txn, resp).await
}

/// The `http-response` rules of the backend (`be_response`), then of the
/// frontend (HAProxy's order), on a response from a server or a service.
async fn response_rules(
    worker: &Worker,
    fe: &FrontendPlan,
    be_response: Option<&[rules::CRule]>,
    txn: &mut Box<Txn>,
    resp: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, Abort> {
    let sets = be_response
        .into_iter()
        .chain(std::iter::once(&fe.rules.http_response[..]))
        .filter(|s| !s.is_empty());
    let (res_parts, res_body) = resp.into_parts();
    txn.res = Some(res_parts);
    for set in sets {
        match rules::run(worker, set, txn, RuleSide::Response).await {
            Verdict::Continue => {}
            Verdict::Respond(r) => return Ok(r),
            Verdict::Service(_) | Verdict::Abort => return Err(Abort),
        }
    }
    let Some(res_parts) = txn.res.take() else {
        return Ok(error_pages::response(502));
    };
    Ok(Response::from_parts(res_parts, res_body))
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
            Verdict::Respond(r) => return Ok(r),
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
) -> Response<ProxyBody> {
    let Some(parts) = txn.req.as_ref() else {
        return error_pages::response(500);
    };
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
                Some(head) => build_response(head, body_rx),
                // No response from the service: HAProxy's 500.
                None => error_pages::response(500),
            }
        }
        // The service could not start.
        Err(_) => error_pages::response(500),
    }
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
