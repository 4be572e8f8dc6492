//! Statistics lines with HAProxy's field names (the `show stat` columns,
//! `stat_cols_px`), for a server, a backend, a frontend and a listener: what
//! Lua's `get_stats()` returns and what a `show stat` line is made of.
//!
//! Only the fields HAProxy fills for each kind of line are listed. Counters
//! luahost does not keep yet (bytes, timings, per-status responses) are
//! listed as 0, as HAProxy shows them on an idle proxy.

use super::registry::ProxyEntry;
use super::server::{unix_now, CheckFlags, Server, ServerCounters};
use super::state::OperState;
use super::Backend;
use crate::config::{Balance, Mode};
use std::sync::atomic::{AtomicU64, Ordering};

/// One field's value.
#[derive(Clone, Debug, PartialEq)]
pub enum StatValue {
    Int(i64),
    Str(String),
}

/// A statistics line: (HAProxy field name, value), in `show stat` order.
pub type StatLine = Vec<(&'static str, StatValue)>;

/// Responses by status class, which luahost does not count yet.
const HRSP: &[&str] = &[
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
];
/// Average times (and rewrites), which luahost does not measure yet.
const TIMES: &[&str] = &["qtime", "ctime", "rtime", "ttime", "wrew"];
/// Connection pool gauges of servers and backends.
const CONN_POOL: &[&str] = &[
    "idle_conn_cur",
    "safe_conn_cur",
    "used_conn_cur",
    "need_conn_est",
];
/// Idle connections and the highest times of servers and backends.
const MAX_TIMES: &[&str] = &[
    "srv_icur",
    "qtime_max",
    "ctime_max",
    "rtime_max",
    "ttime_max",
];
/// Compression counters of frontends and backends.
const COMP: &[&str] = &["comp_in", "comp_out", "comp_byp", "comp_rsp"];

/// A line being built, field by field in `show stat` order.
struct Line(StatLine);

impl Line {
    /// A line starting with its identity (`pxname`, `svname`).
    fn new(pxname: &str, svname: &str) -> Line {
        let mut l = Line(Vec::with_capacity(64));
        l.text("pxname", pxname).text("svname", svname);
        l
    }

    fn int(&mut self, name: &'static str, v: impl TryInto<i64>) -> &mut Line {
        self.0
            .push((name, StatValue::Int(v.try_into().unwrap_or(i64::MAX))));
        self
    }

    fn text(&mut self, name: &'static str, s: impl Into<String>) -> &mut Line {
        self.0.push((name, StatValue::Str(s.into())));
        self
    }

    /// Fields listed as 0: what luahost does not measure.
    fn zeros(&mut self, names: &[&'static str]) -> &mut Line {
        for n in names {
            self.int(n, 0);
        }
        self
    }

    /// `pid` (always 1: one process), `iid`, `sid`.
    fn ids(&mut self, iid: impl TryInto<i64>, sid: impl TryInto<i64>) -> &mut Line {
        self.int("pid", 1).int("iid", iid).int("sid", sid)
    }

    /// The times and connection gauges of a server or backend line, from
    /// `lastsess` (-1: never) to `need_conn_est`; `cache` adds a backend's
    /// cache counters.
    fn times(&mut self, cache: bool) -> &mut Line {
        self.int("lastsess", -1).zeros(TIMES);
        if cache {
            self.zeros(&["cache_lookups", "cache_hits"]);
        }
        self.zeros(&["eint"]).zeros(CONN_POOL)
    }
}

/// The counters a server keeps, of one server or summed over a backend's
/// servers.
#[derive(Default)]
struct Counts {
    total: u64,
    max_cur: u64,
    lb_picks: u64,
    connect_errors: u64,
    response_errors: u64,
    retries: u64,
    redispatches: u64,
}

impl Counts {
    fn of(c: &ServerCounters) -> Counts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            total: get(&c.total),
            max_cur: get(&c.max_cur),
            lb_picks: get(&c.lb_picks),
            connect_errors: get(&c.connect_errors),
            response_errors: get(&c.response_errors),
            retries: get(&c.retries),
            redispatches: get(&c.redispatches),
        }
    }

    fn add(self, o: Counts) -> Counts {
        Counts {
            total: self.total.saturating_add(o.total),
            max_cur: self.max_cur.saturating_add(o.max_cur),
            lb_picks: self.lb_picks.saturating_add(o.lb_picks),
            connect_errors: self.connect_errors.saturating_add(o.connect_errors),
            response_errors: self.response_errors.saturating_add(o.response_errors),
            retries: self.retries.saturating_add(o.retries),
            redispatches: self.redispatches.saturating_add(o.redispatches),
        }
    }

    /// `econ`, `eresp`, `wretr`, `wredis`.
    fn errors(&self, l: &mut Line) {
        l.int("econ", self.connect_errors)
            .int("eresp", self.response_errors)
            .int("wretr", self.retries)
            .int("wredis", self.redispatches);
    }
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

/// HAProxy's `status` of a server (`stats_fill_sv_line`), without the
/// transitional "UP 1/3"-style states, which need the check engine's
/// health counter. Whether the server is checked is asked of the end of
/// its tracking chain (HAProxy's `ref`): a tracker of a checked server
/// says UP, not "no check".
pub fn server_status(s: &Server) -> &'static str {
    let admin = s.admin();
    if admin.in_maint() {
        return "MAINT";
    }
    match s.oper() {
        OperState::Running | OperState::Starting => {
            if admin.draining() {
                "DRAIN"
            } else if ref_checked(s) {
                "UP"
            } else {
                "no check"
            }
        }
        OperState::Stopping => "NOLB",
        OperState::Stopped => "DOWN",
    }
}

/// Whether the server at the end of `s`'s tracking chain (`s` itself when
/// it tracks none) runs health checks. Loops are refused at load; the walk
/// is bounded anyway.
fn ref_checked(s: &Server) -> bool {
    let checked = |s: &Server| s.check_flags() & CheckFlags::ENABLED != 0;
    let Some((_, mut end)) = s.track.tracked() else {
        return checked(s);
    };
    for _ in 0..64 {
        match end.track.tracked() {
            Some((_, next)) => end = next,
            None => break,
        }
    }
    checked(&end)
}

/// A server's line (`show stat` type 2, Lua `Server:get_stats()`).
pub fn server_line(be: &Backend, s: &Server) -> StatLine {
    let c = &s.counters;
    let counts = Counts::of(c);
    let mut l = Line::new(be.name(), &s.name);
    l.int("qcur", s.pending())
        .int("qmax", c.max_queue.load(Ordering::Relaxed))
        .int("scur", s.current())
        .int("smax", counts.max_cur);
    if s.maxconn() > 0 {
        l.int("slim", s.maxconn());
    }
    l.int("stot", counts.total).zeros(&["bin", "bout", "dresp"]);
    counts.errors(&mut l);
    l.text("status", server_status(s).to_string())
        .int("weight", s.weight())
        .int("act", u8::from(!s.backup))
        .int("bck", u8::from(s.backup));
    if s.check_flags() & CheckFlags::ENABLED != 0 {
        l.int("chkfail", c.failed_checks.load(Ordering::Relaxed))
            .int("chkdown", c.down_transitions.load(Ordering::Relaxed));
    }
    let since = unix_now().saturating_sub(c.last_change.load(Ordering::Relaxed));
    l.int("lastchg", since)
        .ids(be.uuid(), s.puid)
        .int("lbtot", counts.lb_picks)
        .int("type", 2)
        .zeros(&["rate", "rate_max"])
        .zeros(HRSP)
        .zeros(&["cli_abrt", "srv_abrt"])
        .times(false)
        .int("uweight", s.weight())
        .zeros(MAX_TIMES)
        .text("mode", mode_name(be.mode()))
        .zeros(&["reuse", "connect", "req_tot"])
        .int("srid", s.rid)
        .text("addr", s.addr().to_string());
    l.0
}

/// A backend's line (`show stat` type 1, Lua `Proxy:get_stats()` for a
/// backend or listen section).
pub fn backend_line(be: &Backend) -> StatLine {
    let farm = be.servers();
    let counts = farm
        .servers
        .iter()
        .map(|s| Counts::of(&s.counters))
        .fold(Counts::default(), Counts::add);
    let current: usize = farm.servers.iter().map(|s| s.current()).sum();
    let (act, bck) = be.up_servers();
    let weight = be.total_weight();
    let mut l = Line::new(be.name(), "BACKEND");
    l.int("qcur", be.pending())
        .int("qmax", 0)
        .int("scur", current)
        .int("smax", counts.max_cur)
        .int("stot", counts.total)
        .zeros(&["bin", "bout", "dreq", "dresp"]);
    counts.errors(&mut l);
    l.text("status", if act + bck > 0 { "UP" } else { "DOWN" })
        .int("weight", weight)
        .int("act", act)
        .int("bck", bck)
        .zeros(&["chkdown", "lastchg", "downtime"])
        .ids(be.uuid(), 0)
        .int("lbtot", counts.lb_picks)
        .int("type", 1)
        .zeros(&["rate", "rate_max"])
        .zeros(HRSP)
        .zeros(&["req_tot", "cli_abrt", "srv_abrt"])
        .zeros(COMP)
        .times(true)
        .int("uweight", weight)
        .zeros(&[
            "agg_server_status",
            "agg_server_check_status",
            "agg_check_status",
        ])
        .zeros(MAX_TIMES)
        .text("algo", algo_name(be.balance()))
        .text("mode", mode_name(be.mode()))
        .zeros(&["reuse", "connect", "srid"]);
    l.0
}

/// A frontend's line (`show stat` type 0), or a listener's (type 3) when
/// `listener` names it.
pub fn frontend_line(p: &ProxyEntry, listener: Option<&str>) -> StatLine {
    let mut l = Line::new(&p.name, listener.unwrap_or("FRONTEND"));
    l.zeros(&[
        "scur", "smax", "stot", "bin", "bout", "dreq", "dresp", "ereq",
    ])
    .text("status", "OPEN")
    .ids(p.uuid, 0)
    .int("type", if listener.is_some() { 3 } else { 0 });
    if listener.is_none() {
        l.zeros(&["rate", "rate_lim", "rate_max"])
            .zeros(HRSP)
            .zeros(&["req_rate", "req_rate_max", "req_tot"])
            .zeros(COMP)
            .zeros(&[
                "conn_rate",
                "conn_rate_max",
                "conn_tot",
                "intercepted",
                "dcon",
                "dses",
            ]);
    }
    l.zeros(&["wrew", "eint"]).text("mode", mode_name(p.mode));
    l.0
}
