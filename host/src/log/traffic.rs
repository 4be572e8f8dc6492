//! The traffic log: one line per HTTP transaction or TCP connection, in the
//! frontend's `log-format`, `option httplog` or `option tcplog` shape (or
//! HAProxy's legacy "Connect from" line), sent to the frontend's loggers.

use super::Loggers;
use crate::sample::logformat::LogInfo;
use crate::sample::{LogFormat, SampleCtx};
use bytes::Bytes;
use std::sync::Arc;

/// `option httplog`, as HAProxy defines it.
pub const HTTPLOG: &str = "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs %{+Q}r";

/// `option tcplog`, as HAProxy defines it.
pub const TCPLOG: &str = "%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq";

/// Facts gathered along a transaction for its log line.
#[derive(Debug, Default, Clone)]
pub struct TxnFacts {
    /// Time waiting for a server slot, ms (set once a server is sought).
    pub t_queue: Option<i64>,
    /// Time to connect to the server, ms (0 for a reused connection).
    pub t_connect: Option<i64>,
    /// Time from sending the request to the response head, ms.
    pub t_response: Option<i64>,
    /// Connection attempts after the first (`%rc`).
    pub retries: u32,
    /// The termination state's two characters (`--` when unset).
    pub term: Option<&'static str>,
    /// Captured request values, one per slot (`%hr`, `capture.req.hdr`).
    pub req_captures: Vec<Option<Bytes>>,
    /// Captured response values, one per slot (`%hs`, `capture.res.hdr`).
    pub res_captures: Vec<Option<Bytes>>,
    /// TCP: bytes from the client, and to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// HTTP: the size `%B` counts for the response head, taken when the
    /// response came from the server or service, before the response rules
    /// and compression changed it (HAProxy counts what it received). None
    /// for a response luahost generated: its final head is counted.
    pub head_size: Option<u64>,
}

impl TxnFacts {
    /// Sets the termination state unless an earlier stage set one.
    pub fn terminate(&mut self, term: &'static str) {
        self.term.get_or_insert(term);
    }
}

/// The line shape of a frontend.
enum Shape {
    /// No format: HAProxy's "Connect from" line at accept.
    Legacy,
    /// `log-format`, `option httplog` or `option tcplog`.
    Format(LogFormat),
}

/// The traffic log of one frontend.
pub struct TrafficLog {
    shape: Shape,
    loggers: Arc<Loggers>,
    /// `option dontlognull`.
    dontlognull: bool,
    /// `option log-separate-errors`.
    separate_errors: bool,
    http: bool,
}

impl TrafficLog {
    /// The traffic log of a frontend, or none when it has no loggers.
    /// `format` is the frontend's `log-format` text, if any.
    pub fn new(
        name: &str,
        p: &crate::config::Proxy,
        http: bool,
    ) -> Result<Option<TrafficLog>, String> {
        let Some(loggers) = super::logger::proxy(name).filter(|l| !l.is_empty()) else {
            return Ok(None);
        };
        let text = match p.logging.as_ref().and_then(|l| l.format.as_ref()) {
            Some((f, _)) => Some(f.as_str()),
            None if p.options.httplog && http => Some(HTTPLOG),
            // `option httplog` in a TCP frontend logs as tcplog (HAProxy
            // warns and does the same).
            None if p.options.httplog || p.options.tcplog => Some(TCPLOG),
            None => None,
        };
        let shape = match text {
            Some(t) => Shape::Format(
                LogFormat::parse(t).map_err(|e| format!("invalid log-format '{t}': {e}"))?,
            ),
            None => Shape::Legacy,
        };
        Ok(Some(TrafficLog {
            shape,
            loggers,
            dontlognull: p.options.dontlognull,
            separate_errors: p.options.log_separate_errors,
            http,
        }))
    }

    /// Whether `dontlognull` is set (connections without data are not logged).
    pub fn dontlognull(&self) -> bool {
        self.dontlognull
    }

    /// The legacy line, when the frontend has no format: sent once per
    /// connection, at accept in TCP, with the first request in HTTP.
    pub fn connected(&self, ctx: &SampleCtx) {
        if let Shape::Legacy = self.shape {
            let t = ctx.txn;
            let line = format!(
                "Connect from {} to {} ({}/{})",
                t.client,
                t.local,
                t.frontend,
                if self.http { "HTTP" } else { "TCP" }
            );
            self.loggers.send(super::INFO, line.as_bytes());
        }
    }

    /// The end of a transaction: its line, at `info` (at `err` for a failed
    /// one with `option log-separate-errors`), or at the level a script set
    /// with `txn:set_loglevel()` (none for `core.silent`). Nothing for the
    /// legacy shape or, with `dontlognull`, when the client sent nothing.
    pub fn finished(&self, ctx: &SampleCtx, info: &LogInfo) {
        let Shape::Format(format) = &self.shape else {
            return;
        };
        if self.dontlognull && info.bytes_in == 0 {
            return;
        }
        let level = match ctx.txn.log_level {
            Some(level) if level < 0 => return,
            Some(level) => level,
            None if self.separate_errors && self.is_error(ctx, info) => super::ERR,
            None => super::INFO,
        };
        let line = format.render_log(ctx, Some(info));
        self.loggers.send(level, &line);
    }

    /// HAProxy's "error" for log-separate-errors: a termination state past
    /// "locally processed", a retry, or an HTTP status of 500 and more.
    fn is_error(&self, ctx: &SampleCtx, info: &LogInfo) -> bool {
        let term = info.term_state.as_deref().unwrap_or("--");
        let failed = !matches!(term.as_bytes().first(), Some(b'-' | b'L') | None);
        let status = ctx
            .txn
            .res
            .as_ref()
            .map(|r| r.status.as_u16())
            .or(info.status)
            .unwrap_or(0);
        failed || info.retries > 0 || (self.http && status >= 500)
    }
}
