//! `show stat`: HAProxy 3.0's CSV, its 205 columns in its order.
//!
//! Each row starts from what HAProxy prints for an idle proxy or server of
//! the same kind and mode (the templates below, taken from HAProxy 3.0's
//! own output: "0" where it counts, empty where the field does not apply),
//! then the fields luahost knows are filled in from the live model:
//! names, ids, state, weights, current/maximum/total sessions (of
//! frontends too: client connections), queue,
//! limits, errors and retries, check state and counters, address, mode and
//! algorithm. Byte counts, rates, HTTP status counters, timings and the
//! SSL/QUIC/H2/H1 module counters stay at HAProxy's idle values: luahost
//! does not count them.

use crate::backend::{Backend, CheckFlags, OperState, ProxyCap, Registry, Server};
use crate::config::Mode;
use std::fmt::Write;
use std::sync::atomic::Ordering;

const FE_HTTP: &str = ",,,,0,0,,0,0,0,0,0,0,,,,,,,,,,,,,,1,,,,,,0,0,0,0,,,,0,0,0,0,0,0,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,0,0,0,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,,0,0,0,0,0,0,0,0,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,";
const FE_TCP: &str = ",,,,0,0,,0,0,0,0,0,0,,,,,,,,,,,,,,1,,,,,,0,0,0,0,,,,,,,,,,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,tcp,,0,0,0,,0,0,0,,,,,,,,,,,0,,,,,,,,,,0,0,0,0,0,0,0,0,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,";
const SRV_HTTP: &str = ",,0,0,0,0,,0,0,0,,0,,0,0,0,0,,,,,,,,,,1,,,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,,,,,0,,,,,,,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,";
const SRV_TCP: &str = ",,0,0,0,0,,0,0,0,,0,,0,0,0,0,,,,,,,,,,1,,,,0,,2,0,,0,,,,,,,,,,,,,,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,,,tcp,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,,,,,0,,,,,,,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,";
const BE_HTTP: &str = ",,0,0,0,0,,0,0,0,0,0,,0,0,0,0,,,,,,0,,0,,1,,,,0,,1,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,,,,,,,,0,0,0,0,0,,,0,0,0,0,0,,,,,,0,0,0,,,,,,,,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,";
const BE_TCP: &str = ",,0,0,0,0,,0,0,0,0,0,,0,0,0,0,,,,,,0,,0,,1,,,,0,,1,0,,0,,,,,,,,,,,,,,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,tcp,,,,,,,,0,0,0,,,,,0,0,0,0,0,,,,,,0,0,0,,,,,,,,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,";
const HEADER: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,srid,sess_other,h1sess,h2sess,h3sess,req_other,h1req,h2req,h3req,proto,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h3_data,h3_headers,h3_cancel_push,h3_push_promise,h3_max_push_id,h3_goaway,h3_settings,h3_no_error,h3_general_protocol_error,h3_internal_error,h3_stream_creation_error,h3_closed_critical_stream,h3_frame_unexpected,h3_frame_error,h3_excessive_load,h3_id_error,h3_settings_error,h3_missing_settings,h3_request_rejected,h3_request_cancelled,h3_request_incomplete,h3_message_error,h3_connect_error,h3_version_fallback,pack_decompression_failed,qpack_encoder_stream_error,qpack_decoder_stream_error,quic_rxbuf_full,quic_dropped_pkt,quic_dropped_pkt_bufoverrun,quic_dropped_parsing_pkt,quic_socket_full,quic_sendto_err,quic_sendto_err_unknwn,quic_sent_pkt,quic_lost_pkt,quic_too_short_dgram,quic_retry_sent,quic_retry_validated,quic_retry_error,quic_half_open_conn,quic_hdshk_fail,quic_stless_rst_sent,quic_conn_migration_done,quic_transp_err_no_error,quic_transp_err_internal_error,quic_transp_err_connection_refused,quic_transp_err_flow_control_error,quic_transp_err_stream_limit_error,quic_transp_err_stream_state_error,quic_transp_err_final_size_error,quic_transp_err_frame_encoding_error,quic_transp_err_transport_parameter_error,quic_transp_err_connection_id_limit,quic_transp_err_protocol_violation_error,quic_transp_err_invalid_token,quic_transp_err_application_error,quic_transp_err_crypto_buffer_exceeded,quic_transp_err_key_update_error,quic_transp_err_aead_limit_reached,quic_transp_err_no_viable_path,quic_transp_err_crypto_error,quic_transp_err_unknown_error,quic_data_blocked,quic_stream_data_blocked,quic_streams_blocked_bidi,quic_streams_blocked_uni,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,";

/// One row being built: the template's fields, set by column name.
struct Row(Vec<String>);

impl Row {
    fn from(template: &str) -> Row {
        Row(template.split(',').map(str::to_string).collect())
    }

    fn set(&mut self, column: &str, value: impl ToString) {
        if let Some(i) = column_index(column) {
            if let Some(f) = self.0.get_mut(i) {
                *f = value.to_string();
            }
        }
    }

    fn line(&self) -> String {
        self.0.join(",")
    }
}

fn column_index(name: &str) -> Option<usize> {
    HEADER
        .trim_start_matches("# ")
        .split(',')
        .position(|c| c == name)
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Http => "http",
        _ => "tcp",
    }
}

/// What `show stat` needs besides the model.
pub struct StatContext<'a> {
    /// `maxconn` of each frontend (the global one when it has none).
    pub frontend_maxconn: &'a dyn Fn(&str) -> usize,
    /// `check_rise`/`check_fall` of a server with checks.
    pub rise_fall: &'a dyn Fn(&Server) -> (u32, u32),
    /// A backend's `fullconn`.
    pub fullconn: &'a dyn Fn(&str) -> usize,
}

/// The whole CSV, header first, one row per frontend, server and backend.
pub fn show_stat(reg: &Registry, ctx: &StatContext<'_>) -> String {
    let now = crate::cli::unix_now();
    let mut out = String::from(HEADER);
    out.push('\n');
    for p in reg.proxies() {
        let mode = mode_name(p.mode);
        if p.cap.is_frontend() {
            let mut r = Row::from(if p.mode == Mode::Http {
                FE_HTTP
            } else {
                FE_TCP
            });
            r.set("pxname", &p.name);
            r.set("svname", "FRONTEND");
            let count = |read: fn(&crate::stats::FrontendCounters) -> usize| {
                p.frontend_counters().map_or(0, |c| read(c))
            };
            r.set("scur", count(|c| c.cur.load(Ordering::Relaxed)));
            r.set("smax", count(|c| c.max.load(Ordering::Relaxed)));
            r.set("stot", count(|c| c.total.load(Ordering::Relaxed)));
            r.set("slim", (ctx.frontend_maxconn)(&p.name));
            r.set("status", "OPEN");
            r.set("iid", p.uuid);
            r.set("sid", 0);
            r.set("mode", mode);
            let _ = writeln!(out, "{}", r.line());
        }
        if p.cap == ProxyCap::Frontend {
            continue;
        }
        let Some(be) = p.backend() else { continue };
        let farm = be.servers();
        for s in farm.servers.iter() {
            let _ = writeln!(out, "{}", server_row(be, s, p.mode, now, ctx).line());
        }
        let _ = writeln!(out, "{}", backend_row(be, p.uuid, p.mode, now, ctx).line());
    }
    out
}

fn server_row(be: &Backend, s: &Server, mode: Mode, now: u64, ctx: &StatContext<'_>) -> Row {
    let c = &s.counters;
    let mut r = Row::from(if mode == Mode::Http {
        SRV_HTTP
    } else {
        SRV_TCP
    });
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    r.set("pxname", be.name());
    r.set("svname", &s.name);
    r.set("qcur", s.pending());
    r.set("qmax", load(&c.max_queue));
    r.set("scur", s.current());
    r.set("smax", load(&c.max_cur));
    if s.maxconn() > 0 {
        r.set("slim", s.maxconn());
    }
    r.set("stot", load(&c.total));
    r.set("econ", load(&c.connect_errors));
    r.set("eresp", load(&c.response_errors));
    r.set("wretr", load(&c.retries));
    r.set("wredis", load(&c.redispatches));
    r.set("status", crate::backend::stat_fields::server_status(s));
    r.set("weight", s.weight());
    r.set("uweight", s.weight());
    r.set("act", u8::from(!s.backup));
    r.set("bck", u8::from(s.backup));
    r.set("lastchg", now.saturating_sub(load(&c.last_change)));
    r.set("iid", s.proxy_uuid);
    r.set("sid", s.puid);
    r.set("srid", s.rid);
    r.set("lbtot", load(&c.lb_picks));
    r.set("addr", s.addr());
    if s.check_flags() & CheckFlags::CONFIGURED != 0 {
        let (rise, fall) = (ctx.rise_fall)(s);
        r.set("chkfail", load(&c.failed_checks));
        r.set("chkdown", load(&c.down_transitions));
        r.set("downtime", 0);
        r.set("check_rise", rise);
        r.set("check_fall", fall);
        r.set(
            "check_health",
            if s.oper() == OperState::Stopped {
                0
            } else {
                rise + fall - 1
            },
        );
    }
    r
}

fn backend_row(be: &Backend, uuid: i32, mode: Mode, now: u64, ctx: &StatContext<'_>) -> Row {
    let farm = be.servers();
    let mut r = Row::from(if mode == Mode::Http { BE_HTTP } else { BE_TCP });
    // Servers that take traffic now (HAProxy's srv_act/srv_bck count the
    // ones with an effective weight: up, not in maintenance nor drain).
    let live = |s: &&std::sync::Arc<Server>| s.usable();
    let act: Vec<_> = farm
        .servers
        .iter()
        .filter(|s| !s.backup)
        .filter(live)
        .collect();
    let bck: Vec<_> = farm
        .servers
        .iter()
        .filter(|s| s.backup)
        .filter(live)
        .collect();
    let weight: u32 = if act.is_empty() {
        bck.iter().map(|s| s.weight()).sum()
    } else {
        act.iter().map(|s| s.weight()).sum()
    };
    let sum = |f: &dyn Fn(&Server) -> u64| farm.servers.iter().map(|s| f(s)).sum::<u64>();
    r.set("pxname", be.name());
    r.set("svname", "BACKEND");
    r.set("qcur", be.pending());
    r.set("scur", sum(&|s| s.current() as u64));
    r.set("stot", sum(&|s| s.counters.total.load(Ordering::Relaxed)));
    r.set(
        "econ",
        sum(&|s| s.counters.connect_errors.load(Ordering::Relaxed)),
    );
    r.set(
        "eresp",
        sum(&|s| s.counters.response_errors.load(Ordering::Relaxed)),
    );
    r.set(
        "wretr",
        sum(&|s| s.counters.retries.load(Ordering::Relaxed)),
    );
    r.set(
        "wredis",
        sum(&|s| s.counters.redispatches.load(Ordering::Relaxed)),
    );
    r.set("slim", (ctx.fullconn)(be.name()));
    r.set(
        "status",
        if act.is_empty() && bck.is_empty() {
            "DOWN"
        } else {
            "UP"
        },
    );
    r.set("weight", weight);
    r.set("uweight", weight);
    r.set("act", act.len());
    r.set("bck", bck.len());
    let last = farm
        .servers
        .iter()
        .map(|s| s.counters.last_change.load(Ordering::Relaxed))
        .max()
        .unwrap_or(now);
    r.set("lastchg", now.saturating_sub(last));
    r.set(
        "chkdown",
        sum(&|s| s.counters.down_transitions.load(Ordering::Relaxed)),
    );
    r.set("iid", uuid);
    r.set("sid", 0);
    r.set(
        "lbtot",
        sum(&|s| s.counters.lb_picks.load(Ordering::Relaxed)),
    );
    r.set("mode", mode_name(mode));
    r.set("algo", crate::cli::servers::algo_name(be));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_have_every_column() {
        let n = HEADER.split(',').count();
        for t in [FE_HTTP, FE_TCP, SRV_HTTP, SRV_TCP, BE_HTTP, BE_TCP] {
            assert_eq!(t.split(',').count(), n);
        }
        assert_eq!(column_index("pxname"), Some(0));
        assert_eq!(column_index("h1_spliced_bytes_out"), Some(204));
    }
}
