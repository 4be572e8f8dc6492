//! Rule sets (`http-request`, `http-response`, `http-after-response`,
//! `tcp-request content`, `tcp-response content`): compiled once from the
//! configuration, executed per transaction.

use crate::config::{self, Action, RedirectKind, ReturnBody};
use crate::lua::action::Outcome;
use crate::lua::vars::VarValue;
use crate::proxy::body::ProxyBody;
use crate::proxy::error_pages;
use crate::proxy::plan::{ServiceTarget, StateKind};
use crate::proxy::worker::Worker;
use crate::sample::acl::CompiledCond;
use crate::sample::{AclSet, LogFormat, Sample, SampleCtx, SampleExpr};
use crate::txn::Txn;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use std::sync::Arc;

/// A rule ready to run.
pub struct CRule {
    pub cond: Option<CompiledCond>,
    pub action: CAction,
    pub location: String,
}

impl CRule {
    /// The Lua fetches and converters this rule's samples use, as
    /// (fetch, converter) pairs, for the start-up check.
    pub fn lua_sample_names(&self) -> Vec<(Option<String>, Option<String>)> {
        let (fetches, convs) = match &self.action {
            CAction::SetHeader { value, .. } | CAction::AddHeader { value, .. } => {
                value.lua_names()
            }
            CAction::SetPath(f) | CAction::SetQuery(f) => f.lua_names(),
            CAction::SetVar { expr, .. } | CAction::Capture { expr, .. } => expr.lua_names(),
            CAction::Return { reply, .. }
            | CAction::Deny {
                reply: Some(reply), ..
            } => reply.lua_names(),
            CAction::Redirect { target, .. } => target.lua_names(),
            _ => (Vec::new(), Vec::new()),
        };
        fetches
            .into_iter()
            .map(|f| (Some(f), None))
            .chain(convs.into_iter().map(|c| (None, Some(c))))
            .collect()
    }
}

/// A compiled action.
pub enum CAction {
    SetHeader {
        name: HeaderName,
        value: LogFormat,
    },
    AddHeader {
        name: HeaderName,
        value: LogFormat,
    },
    DelHeader {
        name: HeaderName,
    },
    ReplaceHeader {
        name: HeaderName,
        regex: regex::Regex,
        replacement: String,
    },
    SetPath(LogFormat),
    SetQuery(LogFormat),
    SetVar {
        var: String,
        expr: SampleExpr,
    },
    UnsetVar(String),
    /// `http-request capture SAMPLE len N`: into request capture `slot`.
    Capture {
        expr: SampleExpr,
        slot: usize,
        len: usize,
    },
    Deny {
        status: Option<u16>,
        reply: Option<CReply>,
    },
    Return {
        status: u16,
        reply: CReply,
    },
    Redirect {
        kind: RedirectKind,
        target: LogFormat,
        code: u16,
        drop_query: bool,
    },
    SetStatus {
        status: u16,
        reason: Option<String>,
    },
    Allow,
    Accept,
    Reject,
    /// `lua.NAME`; the state is resolved once the Lua files are loaded,
    /// with the rule-set kind ("http-req", ...) whose registration runs.
    Lua {
        name: Arc<str>,
        args: Vec<String>,
        state: Option<(StateKind, &'static str)>,
    },
    UseService {
        name: String,
        target: Option<ServiceTarget>,
    },
}

pub enum ReturnPayload {
    Fixed(String),
    Format(LogFormat),
}

/// The reply of `return` (and of `deny` with reply arguments).
pub struct CReply {
    pub content_type: Option<String>,
    pub body: Option<ReturnPayload>,
    pub headers: Vec<(HeaderName, LogFormat)>,
    /// `default-errorfiles`: the default error page of the status.
    pub errorfile: bool,
}

impl CReply {
    fn compile(spec: &config::ReplySpec, err: &dyn Fn(String) -> String) -> Result<CReply, String> {
        let fmt = |s: &str| {
            LogFormat::parse(s).map_err(|e| err(format!("invalid log-format '{s}': {e}")))
        };
        Ok(CReply {
            content_type: spec.content_type.clone(),
            body: match &spec.body {
                None => None,
                Some(ReturnBody::String(s)) => Some(ReturnPayload::Fixed(s.clone())),
                Some(ReturnBody::LfString(s)) => Some(ReturnPayload::Format(fmt(s)?)),
            },
            headers: spec
                .headers
                .iter()
                .map(|(n, v)| Ok((header(n).map_err(err)?, fmt(v)?)))
                .collect::<Result<_, String>>()?,
            errorfile: spec.errorfile,
        })
    }

    fn lua_names(&self) -> (Vec<String>, Vec<String>) {
        let mut out = (Vec::new(), Vec::new());
        let formats = self.headers.iter().map(|(_, f)| f).chain(match &self.body {
            Some(ReturnPayload::Format(f)) => Some(f),
            _ => None,
        });
        for f in formats {
            let (a, b) = f.lua_names();
            out.0.extend(a);
            out.1.extend(b);
        }
        out
    }

    /// Renders the formats (before the transaction changes).
    fn render(&self, ctx: &SampleCtx) -> RenderedReply {
        RenderedReply {
            body: match &self.body {
                Some(ReturnPayload::Fixed(s)) => bytes::Bytes::from(s.clone()),
                Some(ReturnPayload::Format(f)) => f.render(ctx),
                None => bytes::Bytes::new(),
            },
            headers: self
                .headers
                .iter()
                .map(|(n, f)| (n.clone(), f.render(ctx)))
                .collect(),
        }
    }

    fn response(&self, status: u16, r: RenderedReply) -> Response<ProxyBody> {
        if self.errorfile {
            let mut resp = error_pages::response(status);
            for (n, v) in r.headers {
                if let Ok(v) = HeaderValue::from_maybe_shared(v) {
                    resp.headers_mut().append(n, v);
                }
            }
            return resp;
        }
        text_response(status, r.headers, self.content_type.as_deref(), r.body)
    }
}

/// A reply's formats, rendered.
struct RenderedReply {
    body: bytes::Bytes,
    headers: Vec<(HeaderName, bytes::Bytes)>,
}

/// Where a rule set runs (decides the meaning of deny and of http methods).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RuleSide {
    Request,
    Response,
}

fn var_name(v: &config::VarRef) -> String {
    let scope = match v.scope {
        config::VarScope::Proc => "proc",
        config::VarScope::Sess => "sess",
        config::VarScope::Txn => "txn",
        config::VarScope::Req => "req",
        config::VarScope::Res => "res",
    };
    let full = format!("{scope}.{}", v.name);
    // A proc variable a rule names exists from start-up on (HAProxy).
    crate::lua::vars::declare(&full);
    full
}

fn header(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name '{name}'"))
}

/// Compiles one rule; errors are complete alert lines.
pub fn compile(rule: &config::Rule, acls: &AclSet) -> Result<CRule, String> {
    let loc = rule.location.to_string();
    let err = |what: String| format!("[ALERT] parsing [{loc}] : {what}");
    let cond = match &rule.cond {
        Some(c) => Some(acls.compile_condition(c).map_err(err)?),
        None => None,
    };
    let fmt =
        |s: &str| LogFormat::parse(s).map_err(|e| err(format!("invalid log-format '{s}': {e}")));
    let action = match &rule.action {
        Action::SetHeader { name, value } => CAction::SetHeader {
            name: header(name).map_err(err)?,
            value: fmt(value)?,
        },
        Action::AddHeader { name, value } => CAction::AddHeader {
            name: header(name).map_err(err)?,
            value: fmt(value)?,
        },
        Action::DelHeader { name } => CAction::DelHeader {
            name: header(name).map_err(err)?,
        },
        Action::ReplaceHeader {
            name,
            regex,
            replacement,
        } => CAction::ReplaceHeader {
            name: header(name).map_err(err)?,
            regex: regex::Regex::new(regex)
                .map_err(|e| err(format!("invalid regex '{regex}': {e}")))?,
            replacement: crate::headers::regex_replacement(replacement),
        },
        Action::SetPath { format } => CAction::SetPath(fmt(format)?),
        Action::SetQuery { format } => CAction::SetQuery(fmt(format)?),
        Action::SetVar { var, expr } => CAction::SetVar {
            var: var_name(var),
            expr: SampleExpr::parse(expr)
                .map_err(|e| err(format!("invalid sample expression '{expr}': {e}")))?,
        },
        Action::UnsetVar { var } => CAction::UnsetVar(var_name(var)),
        Action::Capture { expr, len, slot } => CAction::Capture {
            expr: SampleExpr::parse(expr)
                .map_err(|e| err(format!("invalid sample expression '{expr}': {e}")))?,
            slot: *slot,
            len: *len,
        },
        Action::Deny { status, reply } => CAction::Deny {
            status: *status,
            reply: match reply {
                Some(r) => Some(CReply::compile(r, &err)?),
                None => None,
            },
        },
        Action::Return {
            status,
            content_type,
            body,
            headers,
            errorfile,
        } => CAction::Return {
            status: status.unwrap_or(200),
            reply: CReply::compile(
                &config::ReplySpec {
                    content_type: content_type.clone(),
                    body: body.clone(),
                    headers: headers.clone(),
                    errorfile: *errorfile,
                },
                &err,
            )?,
        },
        Action::Redirect {
            kind,
            target,
            code,
            drop_query,
        } => CAction::Redirect {
            kind: *kind,
            target: fmt(target)?,
            code: code.unwrap_or(302),
            drop_query: *drop_query,
        },
        Action::SetStatus { status, reason } => CAction::SetStatus {
            status: *status,
            reason: reason.clone(),
        },
        Action::Allow => CAction::Allow,
        Action::Accept => CAction::Accept,
        Action::Reject => CAction::Reject,
        Action::Lua { name, args } => CAction::Lua {
            name: Arc::from(name.as_str()),
            args: args.clone(),
            state: None,
        },
        Action::UseService { name } => CAction::UseService {
            name: name.clone(),
            target: None,
        },
        #[allow(unreachable_patterns)]
        _ => {
            return Err(err(
                "this action is not supported by luahost yet".to_string()
            ))
        }
    };
    Ok(CRule {
        cond,
        action,
        location: loc,
    })
}

/// What a rule set decided.
// Moved once per rule set run; boxing the response would cost an allocation
// per generated answer for no gain.
#[allow(clippy::large_enum_variant)]
pub enum Verdict {
    /// All rules ran (or `allow`/STOP): go on with the transaction.
    Continue,
    /// Answer with this response now (deny, return, redirect, txn:done...).
    Respond(Response<ProxyBody>),
    /// Hand the request to a Lua service.
    Service(ServiceTarget),
    /// Close the connection without a response (TCP reject, act.ABORT).
    Abort,
}

/// Evaluates a rule's condition.
fn applies(rule: &CRule, ctx: &SampleCtx) -> bool {
    rule.cond.as_ref().is_none_or(|c| c.eval(ctx))
}

/// A generated response; headers in HAProxy's order (custom headers first,
/// then content-length and content-type).
fn text_response(
    status: u16,
    headers: Vec<(HeaderName, bytes::Bytes)>,
    content_type: Option<&str>,
    body: bytes::Bytes,
) -> Response<ProxyBody> {
    let len = body.len();
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let h = r.headers_mut();
    for (n, v) in headers {
        if let Ok(v) = HeaderValue::from_maybe_shared(v) {
            h.append(n, v);
        }
    }
    h.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert(hyper::header::CONTENT_TYPE, ct);
    }
    r
}

/// The response for `txn:done(reply)` (an empty reply object gives an empty
/// 200); without a reply the transaction ends with no response.
pub fn reply_response(reply: crate::lua::txn_class::ReplyData) -> Response<ProxyBody> {
    let len = reply.body.len();
    let mut r = Response::new(ProxyBody::full(reply.body));
    *r.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    for (n, v) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            r.headers_mut().append(n, v);
        }
    }
    r.headers_mut()
        .insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
    // Only Reply:set_status(code, reason) sets a reason (txn:reply{reason=}
    // is ignored, as in HAProxy).
    if let Some(reason) = reply.reason {
        crate::proxy::http_front::set_reason(&mut r, reason);
    }
    r
}

/// Runs `rules` on `txn`. `acls` are the owning proxy's.
pub async fn run(worker: &Worker, rules: &[CRule], txn: &mut Box<Txn>, side: RuleSide) -> Verdict {
    for rule in rules {
        let verdict = {
            let samples = worker.samples();
            let ctx = SampleCtx::new(txn, &samples, &*worker.plan.registry);
            if !applies(rule, &ctx) {
                continue;
            }
            match &rule.action {
                CAction::SetHeader { value, .. } | CAction::AddHeader { value, .. } => {
                    Some(Step::Header(value.render(&ctx)))
                }
                CAction::SetPath(f) | CAction::SetQuery(f) => Some(Step::Text(f.render(&ctx))),
                CAction::SetVar { expr, .. } | CAction::Capture { expr, .. } => {
                    Some(Step::Sample(expr.eval(&ctx)))
                }
                CAction::Return { reply, .. }
                | CAction::Deny {
                    reply: Some(reply), ..
                } => Some(Step::Reply(reply.render(&ctx))),
                CAction::Redirect { target, .. } => Some(Step::Text(target.render(&ctx))),
                _ => None,
            }
        };
        match apply(worker, rule, verdict, txn, side).await {
            Applied::Next => {}
            Applied::Stop => return Verdict::Continue,
            Applied::Verdict(v) => return v,
        }
    }
    Verdict::Continue
}

/// A value computed from samples before the transaction is modified.
#[allow(clippy::large_enum_variant)]
enum Step {
    Header(bytes::Bytes),
    Text(bytes::Bytes),
    Sample(Option<Sample>),
    Reply(RenderedReply),
}

#[allow(clippy::large_enum_variant)]
enum Applied {
    Next,
    Stop,
    Verdict(Verdict),
}

fn headers_mut(txn: &mut Txn, side: RuleSide) -> Option<&mut hyper::HeaderMap> {
    match side {
        RuleSide::Request => txn.req.as_mut().map(|r| &mut r.headers),
        RuleSide::Response => txn.res.as_mut().map(|r| &mut r.headers),
    }
}

async fn apply(
    worker: &Worker,
    rule: &CRule,
    step: Option<Step>,
    txn: &mut Box<Txn>,
    side: RuleSide,
) -> Applied {
    match (&rule.action, step) {
        (CAction::SetHeader { name, .. }, Some(Step::Header(v))) => {
            if let (Some(h), Ok(v)) = (headers_mut(txn, side), HeaderValue::from_maybe_shared(v)) {
                crate::headers::set(h, name.clone(), v);
            }
            Applied::Next
        }
        (CAction::AddHeader { name, .. }, Some(Step::Header(v))) => {
            if let (Some(h), Ok(v)) = (headers_mut(txn, side), HeaderValue::from_maybe_shared(v)) {
                h.append(name.clone(), v);
            }
            Applied::Next
        }
        (CAction::DelHeader { name }, _) => {
            if let Some(h) = headers_mut(txn, side) {
                crate::headers::delete(h, name);
            }
            Applied::Next
        }
        (
            CAction::ReplaceHeader {
                name,
                regex,
                replacement,
            },
            _,
        ) => {
            if let Some(h) = headers_mut(txn, side) {
                // Rewritten where they stand; a value that doesn't match, or
                // whose rewrite is not a valid header value, is kept.
                crate::headers::rewrite(h, name, |v| {
                    let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    match regex.captures(&text) {
                        Some(caps) => {
                            let mut out = String::new();
                            caps.expand(replacement, &mut out);
                            HeaderValue::from_str(&out).unwrap_or_else(|_| v.clone())
                        }
                        None => v.clone(),
                    }
                });
            }
            Applied::Next
        }
        (CAction::SetPath(_), Some(Step::Text(path))) => {
            if let Some(req) = txn.req.as_mut() {
                let q = req.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
                let path = String::from_utf8_lossy(&path).into_owned();
                if let Ok(u) = format!("{path}{q}").parse() {
                    req.uri = u;
                }
            }
            Applied::Next
        }
        (CAction::SetQuery(_), Some(Step::Text(q))) => {
            if let Some(req) = txn.req.as_mut() {
                let q = String::from_utf8_lossy(&q).into_owned();
                let q = q.strip_prefix('?').unwrap_or(&q);
                // As HAProxy: an empty query keeps its '?'.
                let uri = format!("{}?{q}", req.uri.path());
                if let Ok(u) = uri.parse() {
                    req.uri = u;
                }
            }
            Applied::Next
        }
        (CAction::SetVar { var, .. }, Some(Step::Sample(s))) => {
            if let Some(s) = s {
                let v = match s {
                    Sample::Bool(b) => VarValue::Bool(b),
                    Sample::Sint(i) => VarValue::Int(i),
                    other => VarValue::Str(other.to_bytes().to_vec()),
                };
                txn.vars.set(var, v, false);
            }
            Applied::Next
        }
        (CAction::Capture { slot, len, .. }, Some(Step::Sample(s))) => {
            if let Some(s) = s {
                crate::log::capture::store(&mut txn.log, *slot, &s.to_bytes(), *len);
            }
            Applied::Next
        }
        (CAction::UnsetVar(var), _) => {
            txn.vars.unset(var);
            Applied::Next
        }
        (CAction::Deny { status, reply }, step) => {
            let default = if side == RuleSide::Request { 403 } else { 502 };
            // Blocked by the proxy, in the request or response phase.
            txn.log.terminate(if side == RuleSide::Request {
                "PR"
            } else {
                "PH"
            });
            let status = status.unwrap_or(default);
            Applied::Verdict(Verdict::Respond(match (reply, step) {
                (Some(reply), Some(Step::Reply(r))) => reply.response(status, r),
                _ => error_pages::response(status),
            }))
        }
        (CAction::Return { status, reply }, Some(Step::Reply(r))) => {
            txn.log.terminate("LR");
            Applied::Verdict(Verdict::Respond(reply.response(*status, r)))
        }
        (
            CAction::Redirect {
                kind,
                code,
                drop_query,
                ..
            },
            Some(Step::Text(target)),
        ) => {
            txn.log.terminate("LR");
            let target = String::from_utf8_lossy(&target).into_owned();
            // The original path (and query unless drop-query).
            let pq = txn
                .req
                .as_ref()
                .map(|r| {
                    if *drop_query {
                        r.uri.path().to_string()
                    } else {
                        r.uri
                            .path_and_query()
                            .map_or("/", |p| p.as_str())
                            .to_string()
                    }
                })
                .unwrap_or_else(|| "/".to_string());
            let location = match kind {
                RedirectKind::Prefix => format!("{}{pq}", target.trim_end_matches('/')),
                RedirectKind::Scheme => {
                    let host = txn
                        .req
                        .as_ref()
                        .and_then(|r| r.headers.get(hyper::header::HOST))
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    format!("{target}://{host}{pq}")
                }
                RedirectKind::Location => target,
            };
            let mut r = text_response(*code, Vec::new(), None, bytes::Bytes::new());
            // content-length, location, cache-control: HAProxy's order.
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().append(hyper::header::LOCATION, v);
            }
            // HAProxy marks temporary redirects as not cacheable.
            if matches!(*code, 302 | 303 | 307) {
                r.headers_mut().insert(
                    hyper::header::CACHE_CONTROL,
                    HeaderValue::from_static("no-cache"),
                );
            }
            Applied::Verdict(Verdict::Respond(r))
        }
        (CAction::SetStatus { status, reason }, _) => {
            if let (Some(res), Ok(s)) = (txn.res.as_mut(), StatusCode::from_u16(*status)) {
                res.status = s;
                res.extensions.remove::<hyper::ext::ReasonPhrase>();
                if let Some(r) = reason
                    .clone()
                    .and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok())
                {
                    res.extensions.insert(r);
                }
            }
            Applied::Next
        }
        (CAction::Allow, _) | (CAction::Accept, _) => Applied::Stop,
        (CAction::Reject, _) => Applied::Verdict(Verdict::Abort),
        (
            CAction::UseService {
                target: Some(t), ..
            },
            _,
        ) => Applied::Verdict(Verdict::Service(t.clone())),
        (
            CAction::Lua {
                name,
                args,
                state: Some((kind, set)),
            },
            _,
        ) => {
            // Boxed: the Lua call's state is large, and every request's
            // future would carry it (and copy it) whether or not a Lua
            // action runs.
            let (back, outcome) = Box::pin(worker.run_lua_action(
                *kind,
                set,
                name.clone(),
                std::mem::replace(txn, placeholder(txn)),
                args.clone(),
            ))
            .await;
            match back {
                Some(t) => *txn = t,
                None => return Applied::Verdict(Verdict::Abort),
            }
            match outcome {
                Outcome::Continue => Applied::Next,
                Outcome::Stop => Applied::Stop,
                Outcome::Deny => {
                    let status = if side == RuleSide::Request { 403 } else { 502 };
                    Applied::Verdict(Verdict::Respond(error_pages::response(status)))
                }
                Outcome::Error => Applied::Verdict(Verdict::Respond(error_pages::response(500))),
                Outcome::Invalid => {
                    let mut r = error_pages::response(400);
                    r.headers_mut()
                        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                    Applied::Verdict(Verdict::Respond(r))
                }
                // HAProxy 2.6 answers an aborted request with its 503 page.
                Outcome::Abort if side == RuleSide::Request => {
                    Applied::Verdict(Verdict::Respond(error_pages::response(503)))
                }
                Outcome::Abort => Applied::Verdict(Verdict::Abort),
                Outcome::Done(Some(reply)) => {
                    Applied::Verdict(Verdict::Respond(reply_response(reply)))
                }
                Outcome::Done(None) => Applied::Verdict(Verdict::Abort),
            }
        }
        // A rule whose value could not be computed (should not happen), or a
        // Lua name that was not resolved (refused at start-up).
        _ => Applied::Next,
    }
}

/// A stand-in left in the caller's slot while the transaction is away in a
/// Lua action (it moves to the Lua state's worker and comes back).
fn placeholder(txn: &Txn) -> Box<Txn> {
    Box::new(Txn::new(
        txn.mode,
        txn.client,
        txn.local,
        txn.frontend.clone(),
        txn.thread,
    ))
}
