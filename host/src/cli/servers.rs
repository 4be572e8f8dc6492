//! The commands that read or change backends and servers, with HAProxy
//! 3.0's arguments, answers and messages. Changes go through the live
//! model's runtime API (`backend/runtime.rs`), which publishes the events.

use super::commands::{Builtin, Command};
use super::session::{say, Answer};
use super::Shared;
use crate::backend::track;
use crate::backend::{
    AddServer, AdminFlags, AdminState, Backend, CheckFlags, OperCause, OperState, Server,
};
use crate::config::Balance;
use std::fmt::Write;
use std::sync::Arc;

/// Runs server command `b` (`cmd`'s words lead `words`).
pub fn run(shared: &Shared, cmd: &Command, b: Builtin, words: &[String]) -> Answer {
    // The words after the command's own ones.
    let args: Vec<&str> = words
        .iter()
        .skip(cmd.words.len())
        .map(String::as_str)
        .collect();
    let arg = |i: usize| args.get(i).copied().unwrap_or("");
    match b {
        Builtin::ShowStat => Answer::Text(super::stat_csv::show_stat(
            &shared.registry,
            &super::stat_csv::StatContext {
                frontend_maxconn: &|name| shared.frontend_maxconn(name),
                rise_fall: &|s| shared.rise_fall(s),
                fullconn: &|name| shared.config.fullconn.get(name).copied().unwrap_or(1),
            },
        )),
        Builtin::ShowServersState => show_servers_state(shared, arg(0)),
        Builtin::ShowBackend => {
            let mut out = String::from("# name\n");
            for be in shared.registry.backends() {
                let _ = writeln!(out, "{}", be.name());
            }
            Answer::Text(out)
        }
        Builtin::AddServer => add_server(shared, &args),
        Builtin::DelServer => del_server(shared, arg(0)),
        Builtin::EnableServer | Builtin::DisableServer => with_server(shared, arg(0), |be, s| {
            let state = if b == Builtin::EnableServer {
                AdminState::Ready
            } else {
                AdminState::Maint
            };
            be.set_admin_state(s, state);
            Answer::Text(String::new())
        }),
        Builtin::EnableHealth | Builtin::DisableHealth => with_server(shared, arg(0), |_, s| {
            if b == Builtin::EnableHealth {
                if s.check_flags() & CheckFlags::CONFIGURED == 0 {
                    return say("Health check was not configured on this server, cannot enable.");
                }
                s.set_check_flags(CheckFlags::ENABLED, true);
            } else {
                s.set_check_flags(CheckFlags::ENABLED, false);
            }
            Answer::Text(String::new())
        }),
        Builtin::GetWeight => {
            let Some((be, s)) = parse_be_srv(arg(0)) else {
                return say("Require 'backend/server'.");
            };
            let Some(b) = shared.registry.get(be) else {
                return say("No such backend.");
            };
            let Some(s) = b.server(s) else {
                return say("No such server.");
            };
            Answer::Text(format!("{} (initial {})\n", s.weight(), s.initial_weight))
        }
        Builtin::SetWeight => with_server(shared, arg(0), |be, s| set_weight(be, s, arg(1))),
        Builtin::SetMaxconnServer => with_server(shared, arg(0), |be, s| {
            match be.set_maxconn_request(s, arg(1)) {
                None => Answer::Text(String::new()),
                Some(e) => say(e),
            }
        }),
        Builtin::SetServer => with_server(shared, arg(0), |be, s| set_server(be, s, &args[1..])),
        Builtin::ShutdownSessionsServer => with_server(shared, arg(0), |be, s| {
            be.kill_server_streams(s);
            Answer::Text(String::new())
        }),
        Builtin::DisableFrontend | Builtin::EnableFrontend | Builtin::ShutdownFrontend => {
            frontend_control(shared, b, arg(0))
        }
        _ => say("Unknown command."),
    }
}

/// `disable frontend`, `enable frontend`, `shutdown frontend`.
fn frontend_control(shared: &Shared, b: Builtin, name: &str) -> Answer {
    if name.is_empty() {
        return say("A frontend name is expected.");
    }
    let Some((entry, ctl)) = shared
        .registry
        .frontend(name)
        .and_then(|e| Some((e, e.control()?.clone())))
    else {
        return say("No such frontend.");
    };
    let done = match b {
        Builtin::DisableFrontend => ctl.pause(),
        Builtin::EnableFrontend => ctl.resume(),
        _ => ctl.stop(crate::lua::proxy_class::cumulated_conns(entry)),
    };
    match done {
        Ok(()) => Answer::Text(String::new()),
        Err(e) => say(e.message()),
    }
}

/// `BACKEND/SERVER` split at the first '/'; None without a server part.
fn parse_be_srv(text: &str) -> Option<(&str, &str)> {
    let (be, srv) = text.split_once('/')?;
    (!srv.is_empty()).then_some((be, srv))
}

/// HAProxy's `cli_find_server`: the server named by `text`, or the
/// message saying why not.
fn with_server(
    shared: &Shared,
    text: &str,
    f: impl FnOnce(&Arc<Backend>, &Arc<Server>) -> Answer,
) -> Answer {
    let Some((be, srv)) = parse_be_srv(text) else {
        return say("Require 'backend/server'.");
    };
    let Some(b) = shared.registry.get(be) else {
        return say("No such backend.");
    };
    let Some(s) = b.server(srv) else {
        return say("No such server.");
    };
    f(b, &s)
}

/// HAProxy's `server_parse_weight_change_request`.
fn set_weight(be: &Backend, s: &Arc<Server>, text: &str) -> Answer {
    match be.set_weight_request(s, text) {
        None => Answer::Text(String::new()),
        Some(e) => say(&e),
    }
}

/// `set server B/S state|weight|addr|health|agent ...`.
fn set_server(be: &Backend, s: &Arc<Server>, args: &[&str]) -> Answer {
    let arg = |i: usize| args.get(i).copied().unwrap_or("");
    match arg(0) {
        "weight" => set_weight(be, s, arg(1)),
        "state" => {
            let state = match arg(1) {
                "ready" => AdminState::Ready,
                "drain" => AdminState::Drain,
                "maint" => AdminState::Maint,
                _ => return say("'set server <srv> state' expects 'ready', 'drain' and 'maint'."),
            };
            be.set_admin_state(s, state);
            Answer::Text(String::new())
        }
        "health" => {
            if s.track.is_tracking() {
                return say("cannot change health on a tracking server.");
            }
            let state = match arg(1) {
                "up" => OperState::Running,
                "stopping" => OperState::Stopping,
                "down" => OperState::Stopped,
                _ => {
                    return say("'set server <srv> health' expects 'up', 'stopping', or 'down'.")
                }
            };
            be.force_oper_state(s, state, OperCause::Cli);
            Answer::Text(String::new())
        }
        "agent" => say("agent checks are not enabled on this server."),
        "addr" => set_addr(be, s, arg(1), (arg(2) == "port").then(|| arg(3))),
        "agent-addr" | "agent-port" | "agent-send" | "check-addr" | "check-port" | "fqdn"
        | "ssl" => say(&format!(
            "'set server <srv> {}' is not supported by luahost.",
            arg(0)
        )),
        _ => say("usage: set server <backend>/<server> addr | agent | agent-addr | agent-port | agent-send | check-addr | check-port | fqdn | health | ssl | state | weight"),
    }
}

/// HAProxy's `srv_update_addr_port` for `set server B/S addr A [port P]`.
fn set_addr(be: &Backend, s: &Arc<Server>, addr: &str, port: Option<&str>) -> Answer {
    if addr.is_empty() {
        return say("set server <b>/<s> addr requires an address and optionally a port.");
    }
    say(&be.update_addr_port(s, Some(addr), port, "stats socket command"))
}

/// `add server B/S ADDR[:PORT] [options]`: the options are read by the
/// configuration parser (the `server` keyword's), so a dynamic server takes
/// what a configured one takes.
fn add_server(shared: &Shared, args: &[&str]) -> Answer {
    let Some((be, name)) = args.first().and_then(|t| parse_be_srv(t)) else {
        return say("Require 'backend/server'.");
    };
    if shared.registry.get(be).is_none() {
        return say("No such backend.");
    }
    let Some(addr) = args.get(1) else {
        return say("'server' expects <name> and <addr>[:<port>] as arguments.");
    };
    // HAProxy 3.0 accepts only the keywords marked for dynamic servers;
    // of those luahost reads, `enabled` is not one (a dynamic server
    // starts in maintenance, `enable server` brings it in).
    if args[2..].contains(&"enabled") {
        return say("'enabled' option is not accepted for dynamic server");
    }
    // `track` names a server of the running process, which the parser of a
    // lone server line cannot see: it is taken out and resolved here.
    let mut options: Vec<&str> = args[2..].to_vec();
    let track = match options.iter().position(|w| *w == "track") {
        Some(i) => {
            let Some(&target) = options.get(i + 1) else {
                return say(&format!(
                    "'server {be}/{name}' : 'track' expects [<proxy>/]<server> as argument."
                ));
            };
            options.drain(i..i + 2);
            Some(target)
        }
        None => None,
    };
    let line = std::iter::once(format!("server {name} {addr}"))
        .chain(options.iter().map(|w| w.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let text = format!("backend runtime-api\n    {line}\n");
    let def = match crate::config::parse_str("add server", &text) {
        Ok(cfg) => cfg
            .proxies
            .into_iter()
            .next()
            .and_then(|p| p.servers.into_iter().next()),
        Err(errors) => {
            let e = errors
                .into_iter()
                .next()
                .map(|e| e.message)
                .unwrap_or_default();
            return say(&e);
        }
    };
    let Some(def) = def else {
        return say("'server' expects <name> and <addr>[:<port>] as arguments.");
    };
    let tracked = match track {
        Some(_) if def.check => {
            return say("unable to enable checks and tracking at the same time!");
        }
        Some(t) => match tracked_server(shared, be, t) {
            Ok(found) => Some(found),
            Err(e) => return say(&e),
        },
        None => None,
    };
    let disabled = def.disabled;
    let add = AddServer {
        def,
        enabled: false,
    };
    match shared.registry.add_server(be, &add) {
        Ok(srv) => {
            if let (Some((tbe, ts)), Some(b)) = (tracked, shared.registry.get(be)) {
                track::link(b, &srv, &tbe, &ts);
                if ts.oper() == OperState::Stopped {
                    b.set_oper_state(&srv, OperState::Stopped, OperCause::None, None);
                }
            }
            // `disabled`: maintenance "from the configuration" too (HAProxy
            // shows admin state 5, not 1).
            if disabled {
                if let Some(b) = shared.registry.get(be) {
                    b.change_admin_flag(&srv, AdminFlags::CMAINT, true);
                }
            }
            say("New server registered.")
        }
        Err(e) => say(&e),
    }
}

/// The server `track [PROXY/]SERVER` names for a dynamic server of `be`,
/// with HAProxy's checks (`srv_apply_track`): it exists, is not dynamic,
/// and has checks or tracks another server.
fn tracked_server(
    shared: &Shared,
    be: &str,
    target: &str,
) -> Result<(Arc<Backend>, Arc<Server>), String> {
    let (pname, sname) = match target.rsplit_once('/') {
        Some((p, s)) => (p, s),
        None => (be, target),
    };
    let tbe = shared.registry.get(pname).ok_or(format!(
        "unable to find required proxy '{pname}' for tracking."
    ))?;
    let ts = tbe.server(sname).ok_or(format!(
        "unable to find required server '{sname}' for tracking."
    ))?;
    if ts.dynamic {
        return Err(format!(
            "unable to use {pname}/{sname} for tracking as it is a dynamic server."
        ));
    }
    if ts.check_flags() & CheckFlags::CONFIGURED == 0 && !ts.track.is_tracking() {
        return Err(format!(
            "unable to use {pname}/{sname} for tracking as it does not have any check nor agent enabled."
        ));
    }
    Ok((tbe.clone(), ts))
}

/// `del server B/S`.
fn del_server(shared: &Shared, text: &str) -> Answer {
    let Some((be, srv)) = parse_be_srv(text) else {
        return say("Require 'backend/server'.");
    };
    match shared.registry.del_server(be, srv) {
        Ok(()) => say("Server deleted."),
        Err(e) => say(&e),
    }
}

/// `show servers state [BACKEND]`: format version 1, HAProxy's columns.
fn show_servers_state(shared: &Shared, only: &str) -> Answer {
    let mut out = String::from("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n");
    let backends: Vec<&Arc<Backend>> = if only.is_empty() {
        shared.registry.backends().collect()
    } else {
        match shared.registry.get(only) {
            Some(b) => vec![b],
            None => return say("Can't find backend."),
        }
    };
    let now = crate::cli::unix_now();
    for be in backends {
        for s in be.servers().servers.iter() {
            let a = s.addr();
            let admin = s.admin();
            let configured = s.check_flags() & CheckFlags::CONFIGURED != 0;
            let (rise, fall) = shared.rise_fall(s);
            let up = s.oper() != OperState::Stopped;
            // HAProxy's check.state bits: CONFIGURED 0x02, ENABLED 0x04,
            // PAUSED 0x08 (checks pause during maintenance).
            let mut chk_state = 0;
            if configured {
                chk_state |= 0x02;
            }
            if s.check_flags() & CheckFlags::ENABLED != 0 {
                chk_state |= 0x04;
            }
            // Checks pause when a server enters maintenance (or starts in
            // it by configuration); a dynamic server created in
            // maintenance has not entered it, and has never gone down.
            let created_in_maint = s.dynamic
                && admin.0 & AdminFlags::CMAINT == 0
                && s.counters
                    .down_transitions
                    .load(std::sync::atomic::Ordering::Relaxed)
                    == 0;
            if admin.in_maint() && !created_in_maint {
                chk_state |= 0x08;
            }
            // A server without checks keeps its health at `rise` (HAProxy
            // leaves an unchecked tracker's alone when it follows the
            // tracked one down) until maintenance or a forced DOWN zeroes
            // it for good (HAProxy's `_srv_update_status_adm`, the
            // configuration's `disabled` and dynamic servers included).
            let health = match (up, configured) {
                _ if admin.in_maint() => 0,
                (_, false) if s.health_lost() => 0,
                (_, false) => rise,
                (false, true) => 0,
                (true, true) => rise + fall - 1,
            };
            let (check_status, check_result) = shared.check_codes(s);
            let t = shared.check_target(s);
            // HAProxy's `addr` and `port` set the agent's too when it has
            // none of its own (luahost has no agent checks).
            let check_addr = t.check_addr.map_or("-".to_string(), |a| a.to_string());
            let check_port = t.check_port.unwrap_or(0);
            let _ = writeln!(
                out,
                "{} {} {} {} {} {} {} {} {} {} {} {} {} {} 0 0 0 {} {} - 0 {check_port} {check_addr} {check_addr} {check_port}",
                be.uuid(),
                be.name(),
                s.puid,
                s.name,
                a.ip(),
                s.oper() as u8,
                admin.0,
                s.weight(),
                s.initial_weight,
                now.saturating_sub(
                    s.counters
                        .last_change
                        .load(std::sync::atomic::Ordering::Relaxed)
                ),
                check_status,
                check_result,
                health,
                chk_state,
                t.fqdn.as_deref().unwrap_or("-"),
                a.port(),
            );
        }
    }
    Answer::Text(out)
}

/// The `algo` column of `show stat`.
pub fn algo_name(be: &Backend) -> &'static str {
    match be.balance() {
        Balance::RoundRobin => "roundrobin",
        Balance::LeastConn => "leastconn",
        Balance::First => "first",
        Balance::Source => "source",
    }
}
