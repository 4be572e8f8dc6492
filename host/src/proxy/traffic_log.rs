//! The glue between the front ends and the traffic log: the times and
//! counts a front end measured become the fields of the log line.

use crate::proxy::plan::FrontendPlan;
use crate::proxy::worker::Worker;
use crate::sample::logformat::LogInfo;
use crate::sample::SampleCtx;
use crate::txn::{Txn, TxnMode};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// A moment, as a wall-clock time (for dates) and a monotonic instant
/// (for durations).
#[derive(Clone, Copy)]
pub(crate) struct Moment {
    pub wall: SystemTime,
    pub mono: Instant,
}

impl Moment {
    pub fn now() -> Moment {
        Moment {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    /// The moment `mono` (earlier than now), with its wall-clock time.
    pub fn at(mono: Instant) -> Moment {
        let ago = mono.elapsed();
        Moment {
            wall: SystemTime::now()
                .checked_sub(ago)
                .unwrap_or_else(SystemTime::now),
            mono,
        }
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// When an HTTP request's parts happened, for its log line.
#[derive(Clone, Copy)]
pub(crate) struct RequestTimes {
    /// The stream's start: the connection's accept for its first request,
    /// the end of the previous exchange for the next ones (%t, %Tt).
    pub accept: Moment,
    /// The request's first byte (%tr); `accept` when it came with it.
    pub first_byte: Instant,
    /// The request head complete (%TR ends).
    pub head_done: Instant,
    /// The head's size in bytes (part of %U).
    pub head_len: usize,
}

/// What the writer of a response reports.
pub(crate) struct Delivery {
    /// The status sent (none when the connection closed without answer).
    pub status: Option<u16>,
    /// Bytes written to the client, head included (%B).
    pub bytes_out: u64,
    /// The termination state when nothing earlier set one.
    pub term: &'static str,
}

/// Sends the line of a finished HTTP transaction.
pub(crate) fn http_finished(
    worker: &Worker,
    fe: &FrontendPlan,
    txn: &Txn,
    times: &RequestTimes,
    d: Delivery,
) {
    let Some(log) = &fe.log else { return };
    let now = Instant::now();
    let request = Moment::at(times.first_byte);
    let info = LogInfo {
        accept: Some(times.accept.wall),
        request: Some(request.wall),
        status: d.status,
        t_handshake: Some(0),
        t_idle: Some(ms(times
            .first_byte
            .saturating_duration_since(times.accept.mono))),
        t_request: Some(ms(times
            .head_done
            .saturating_duration_since(times.first_byte))),
        t_queue: txn.log.t_queue,
        t_connect: txn.log.t_connect,
        t_response: txn.log.t_response,
        t_data: None,
        t_active: Some(ms(now.saturating_duration_since(times.first_byte))),
        t_total: Some(ms(now.saturating_duration_since(times.accept.mono))),
        bytes_in: times.head_len as u64 + request_body_len(txn),
        retries: u64::from(txn.log.retries),
        bytes_out: d.bytes_out,
        term_state: Some(term_state(txn, d.term)),
        ..counters()
    };
    let samples = worker.samples();
    let ctx = SampleCtx::new(txn, &samples, &*worker.plan.registry);
    log.finished(&ctx, &info);
}

/// The request body's announced length (part of %U).
fn request_body_len(txn: &Txn) -> u64 {
    txn.req
        .as_ref()
        .and_then(|r| r.headers.get(hyper::header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The size HAProxy counts for a response head in `%B`: not the bytes on
/// the wire but its internal (HTX) form: a 21-byte start-line block, the
/// version, status code and reason, and each header's name and value
/// (without the `Connection` header, which its H1 layer writes itself).
/// Checked against HAProxy 3.0 with a server's, a Lua service's and an
/// error page's responses.
pub(crate) fn logged_head_size(parts: &hyper::http::response::Parts) -> u64 {
    const START_LINE_BLOCK: u64 = 21;
    let version = match parts.version {
        hyper::Version::HTTP_10 => 8,
        hyper::Version::HTTP_11 => 8,
        _ => 6,
    };
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| r.as_bytes().len())
        .or_else(|| parts.status.canonical_reason().map(str::len))
        .unwrap_or(0) as u64;
    let headers: u64 = parts
        .headers
        .iter()
        .filter(|(n, _)| *n != hyper::header::CONNECTION)
        .map(|(n, v)| (n.as_str().len() + v.len()) as u64)
        .sum();
    START_LINE_BLOCK + version + 3 + reason + headers
}

/// Sends the line of a request refused before it was parsed (`<BADREQ>`),
/// as HAProxy logs it: no byte counted, timers not reached.
pub(crate) fn http_refused(
    worker: &Worker,
    fe: &FrontendPlan,
    peer: SocketAddr,
    local: SocketAddr,
    accept: Moment,
    status: u16,
    term: &'static str,
) {
    let Some(log) = &fe.log else { return };
    let txn = Txn::new(TxnMode::Http, peer, local, fe.name.clone(), worker.id + 1);
    let now = Instant::now();
    let info = LogInfo {
        accept: Some(accept.wall),
        request: Some(accept.wall),
        status: Some(status),
        t_active: Some(ms(now.saturating_duration_since(accept.mono))),
        t_total: Some(ms(now.saturating_duration_since(accept.mono))),
        // Counted as data for `dontlognull`: the callers check it for
        // connections that sent nothing.
        bytes_in: 1,
        term_state: Some(term.to_string()),
        ..counters()
    };
    let samples = worker.samples();
    let ctx = SampleCtx::new(&txn, &samples, &*worker.plan.registry);
    log.finished(&ctx, &info);
}

/// Sends the line of a finished TCP connection.
pub(crate) fn tcp_finished(worker: &Worker, fe: &FrontendPlan, txn: &Txn, accept: Moment) {
    let Some(log) = &fe.log else { return };
    let now = Instant::now();
    let info = LogInfo {
        accept: Some(accept.wall),
        request: Some(accept.wall),
        t_handshake: Some(0),
        t_idle: Some(0),
        t_request: None,
        t_queue: txn.log.t_queue,
        t_connect: txn.log.t_connect,
        t_total: Some(ms(now.saturating_duration_since(accept.mono))),
        bytes_in: txn.log.bytes_in,
        bytes_out: txn.log.bytes_out,
        retries: u64::from(txn.log.retries),
        term_state: Some(term_state(txn, "--")),
        ..counters()
    };
    let samples = worker.samples();
    let ctx = SampleCtx::new(txn, &samples, &*worker.plan.registry);
    log.finished(&ctx, &info);
}

/// The legacy "Connect from" line of a frontend without a log format.
pub(crate) fn connected(worker: &Worker, fe: &FrontendPlan, peer: SocketAddr, local: SocketAddr) {
    let Some(log) = &fe.log else { return };
    let txn = Txn::new(TxnMode::Tcp, peer, local, fe.name.clone(), worker.id + 1);
    let samples = worker.samples();
    let ctx = SampleCtx::new(&txn, &samples, &*worker.plan.registry);
    log.connected(&ctx);
}

/// The first two characters of the termination state (the set-cookie
/// pair `%tsc` adds is always `--`, luahost having no cookie persistence).
fn term_state(txn: &Txn, default: &'static str) -> String {
    txn.log.term.unwrap_or(default).to_string()
}

/// The connection counters luahost keeps (process-wide: `%ac` and `%fc`
/// are both the process's current connections; the backend and server
/// connection of a finished transaction are already released, as in
/// HAProxy's line, so `%bc` and `%sc` are 0).
fn counters() -> LogInfo {
    let s = crate::stats::snapshot();
    LogInfo {
        actconn: s.curr_conns as u64,
        feconn: s.curr_conns as u64,
        request_counter: s.cum_req as u64,
        ..LogInfo::default()
    }
}
