//! Statistics lines with HAProxy's field names (the `show stat` columns,
//! `stat_cols_px`), for a server, a backend, a frontend and a listener: what
//! Lua's `get_stats()` returns and what a `show stat` line is made of.
//!
//! Only the fields HAProxy fills for each kind of line are listed. Counters
//! luahost does not keep yet (bytes, timings, per-status responses) are
//! listed as 0, as HAProxy shows them on an idle proxy.

use super::registry::ProxyEntry;
use super::server::{unix_now, CheckFlags, Server};
use super::state::OperState;
use super::Backend;
use crate::config::{Balance, Mode};
use std::sync::atomic::Ordering;

/// One field's value.
#[derive(Clone, Debug, PartialEq)]
pub enum StatValue {
    Int(i64),
    Str(String),
}

/// A statistics line: (HAProxy field name, value), in `show stat` order.
pub type StatLine = Vec<(&'static str, StatValue)>;

fn int(v: impl TryInto<i64>) -> StatValue {
    StatValue::Int(v.try_into().unwrap_or(i64::MAX))
}

fn text(s: impl Into<String>) -> StatValue {
    StatValue::Str(s.into())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Http => "http",
        Mode::Tcp => "tcp",
    }
}

fn algo_name(b: Balance) -> &'static str {
    match b {
        Balance::RoundRobin => "roundrobin",
        Balance::LeastConn => "leastconn",
        Balance::First => "first",
        Balance::Source => "source",
    }
}

/// The fields every kind of line shares once the identity is set; zeros for
/// what luahost does not measure.
fn zero_fields(line: &mut StatLine, names: &[&'static str]) {
    for n in names {
        line.push((n, int(0)));
    }
}

/// HAProxy's `status` of a server (`srv_hlt_st`), without the transitional
/// "UP 1/3"-style states, which need the check engine's health counter.
pub fn server_status(s: &Server) -> String {
    let admin = s.admin();
    if admin.in_maint() {
        return "MAINT".into();
    }
    let checked = s.check_flags() & CheckFlags::ENABLED != 0;
    match s.oper() {
        OperState::Running | OperState::Starting => {
            if admin.draining() {
                "DRAIN".into()
            } else if checked {
                "UP".into()
            } else {
                "no check".into()
            }
        }
        OperState::Stopping => "NOLB".into(),
        OperState::Stopped => "DOWN".into(),
    }
}

/// A server's line (`show stat` type 2, Lua `Server:get_stats()`).
pub fn server_line(be: &Backend, s: &Server) -> StatLine {
    let c = &s.counters;
    let mut l: StatLine = Vec::with_capacity(64);
    l.push(("pxname", text(be.name())));
    l.push(("svname", text(&*s.name)));
    l.push(("qcur", int(s.pending())));
    l.push(("qmax", int(c.max_queue.load(Ordering::Relaxed))));
    l.push(("scur", int(s.current())));
    l.push(("smax", int(c.max_cur.load(Ordering::Relaxed))));
    if s.maxconn() > 0 {
        l.push(("slim", int(s.maxconn())));
    }
    l.push(("stot", int(c.total.load(Ordering::Relaxed))));
    zero_fields(&mut l, &["bin", "bout", "dresp"]);
    l.push(("econ", int(c.connect_errors.load(Ordering::Relaxed))));
    l.push(("eresp", int(c.response_errors.load(Ordering::Relaxed))));
    l.push(("wretr", int(c.retries.load(Ordering::Relaxed))));
    l.push(("wredis", int(c.redispatches.load(Ordering::Relaxed))));
    l.push(("status", text(server_status(s))));
    l.push(("weight", int(s.weight())));
    l.push(("act", int(u8::from(!s.backup))));
    l.push(("bck", int(u8::from(s.backup))));
    if s.check_flags() & CheckFlags::ENABLED != 0 {
        l.push(("chkfail", int(c.failed_checks.load(Ordering::Relaxed))));
        l.push(("chkdown", int(c.down_transitions.load(Ordering::Relaxed))));
    }
    let since = unix_now().saturating_sub(c.last_change.load(Ordering::Relaxed));
    l.push(("lastchg", int(since)));
    l.push(("pid", int(1)));
    l.push(("iid", int(be.uuid())));
    l.push(("sid", int(s.puid)));
    l.push(("lbtot", int(c.lb_picks.load(Ordering::Relaxed))));
    l.push(("type", int(2)));
    zero_fields(&mut l, &["rate", "rate_max"]);
    zero_fields(
        &mut l,
        &[
            "hrsp_1xx",
            "hrsp_2xx",
            "hrsp_3xx",
            "hrsp_4xx",
            "hrsp_5xx",
            "hrsp_other",
            "cli_abrt",
            "srv_abrt",
        ],
    );
    l.push(("lastsess", int(-1)));
    zero_fields(
        &mut l,
        &[
            "qtime",
            "ctime",
            "rtime",
            "ttime",
            "wrew",
            "eint",
            "idle_conn_cur",
            "safe_conn_cur",
            "used_conn_cur",
            "need_conn_est",
        ],
    );
    l.push(("uweight", int(s.weight())));
    zero_fields(
        &mut l,
        &[
            "srv_icur",
            "qtime_max",
            "ctime_max",
            "rtime_max",
            "ttime_max",
        ],
    );
    l.push(("mode", text(mode_name(be.mode()))));
    zero_fields(&mut l, &["reuse", "connect", "req_tot"]);
    l.push(("srid", int(s.rid)));
    l.push(("addr", text(s.addr().to_string())));
    l
}

/// A backend's line (`show stat` type 1, Lua `Proxy:get_stats()` for a
/// backend or listen section).
pub fn backend_line(be: &Backend) -> StatLine {
    let farm = be.servers();
    let sum = |f: &dyn Fn(&Server) -> u64| farm.servers.iter().map(|s| f(s)).sum::<u64>();
    let (act, bck) = be.up_servers();
    let mut l: StatLine = Vec::with_capacity(64);
    l.push(("pxname", text(be.name())));
    l.push(("svname", text("BACKEND")));
    l.push(("qcur", int(be.pending())));
    l.push(("qmax", int(0)));
    l.push(("scur", int(sum(&|s| s.current() as u64))));
    l.push((
        "smax",
        int(sum(&|s| s.counters.max_cur.load(Ordering::Relaxed))),
    ));
    l.push((
        "stot",
        int(sum(&|s| s.counters.total.load(Ordering::Relaxed))),
    ));
    zero_fields(&mut l, &["bin", "bout", "dreq", "dresp"]);
    l.push((
        "econ",
        int(sum(&|s| s.counters.connect_errors.load(Ordering::Relaxed))),
    ));
    l.push((
        "eresp",
        int(sum(&|s| s.counters.response_errors.load(Ordering::Relaxed))),
    ));
    l.push((
        "wretr",
        int(sum(&|s| s.counters.retries.load(Ordering::Relaxed))),
    ));
    l.push((
        "wredis",
        int(sum(&|s| s.counters.redispatches.load(Ordering::Relaxed))),
    ));
    let up = act + bck > 0;
    l.push(("status", text(if up { "UP" } else { "DOWN" })));
    let weight = be.total_weight();
    l.push(("weight", int(weight)));
    l.push(("act", int(act)));
    l.push(("bck", int(bck)));
    l.push(("chkdown", int(0)));
    l.push(("lastchg", int(0)));
    l.push(("downtime", int(0)));
    l.push(("pid", int(1)));
    l.push(("iid", int(be.uuid())));
    l.push(("sid", int(0)));
    l.push((
        "lbtot",
        int(sum(&|s| s.counters.lb_picks.load(Ordering::Relaxed))),
    ));
    l.push(("type", int(1)));
    zero_fields(
        &mut l,
        &[
            "rate",
            "rate_max",
            "hrsp_1xx",
            "hrsp_2xx",
            "hrsp_3xx",
            "hrsp_4xx",
            "hrsp_5xx",
            "hrsp_other",
            "req_tot",
            "cli_abrt",
            "srv_abrt",
            "comp_in",
            "comp_out",
            "comp_byp",
            "comp_rsp",
        ],
    );
    l.push(("lastsess", int(-1)));
    zero_fields(
        &mut l,
        &[
            "qtime",
            "ctime",
            "rtime",
            "ttime",
            "wrew",
            "cache_lookups",
            "cache_hits",
            "eint",
            "idle_conn_cur",
            "safe_conn_cur",
            "used_conn_cur",
            "need_conn_est",
        ],
    );
    l.push(("uweight", int(weight)));
    zero_fields(
        &mut l,
        &[
            "agg_server_status",
            "agg_server_check_status",
            "agg_check_status",
            "srv_icur",
            "qtime_max",
            "ctime_max",
            "rtime_max",
            "ttime_max",
        ],
    );
    l.push(("algo", text(algo_name(be.balance()))));
    l.push(("mode", text(mode_name(be.mode()))));
    zero_fields(&mut l, &["reuse", "connect"]);
    l.push(("srid", int(0)));
    l
}

/// A frontend's line (`show stat` type 0), or a listener's (type 3) when
/// `listener` names it.
pub fn frontend_line(p: &ProxyEntry, listener: Option<&str>) -> StatLine {
    let mut l: StatLine = Vec::with_capacity(48);
    l.push(("pxname", text(&*p.name)));
    l.push(("svname", text(listener.unwrap_or("FRONTEND"))));
    zero_fields(&mut l, &["scur", "smax"]);
    l.push(("stot", int(0)));
    zero_fields(&mut l, &["bin", "bout", "dreq", "dresp", "ereq"]);
    l.push(("status", text("OPEN")));
    l.push(("pid", int(1)));
    l.push(("iid", int(p.uuid)));
    l.push(("sid", int(0)));
    l.push(("type", int(if listener.is_some() { 3 } else { 0 })));
    if listener.is_none() {
        zero_fields(
            &mut l,
            &[
                "rate",
                "rate_lim",
                "rate_max",
                "hrsp_1xx",
                "hrsp_2xx",
                "hrsp_3xx",
                "hrsp_4xx",
                "hrsp_5xx",
                "hrsp_other",
                "req_rate",
                "req_rate_max",
                "req_tot",
                "comp_in",
                "comp_out",
                "comp_byp",
                "comp_rsp",
                "conn_rate",
                "conn_rate_max",
                "conn_tot",
                "intercepted",
                "dcon",
                "dses",
            ],
        );
    }
    zero_fields(&mut l, &["wrew", "eint"]);
    l.push(("mode", text(mode_name(p.mode))));
    l
}
