//! Tests of the live model: ids, the runtime changes and their rules, the
//! events they publish, and load balancing while servers come and go.

use super::*;
use crate::config::{ServerAddr, ServerDef};
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;

fn registry(cfg: &str) -> Registry {
    let c = match crate::config::parse_str("t.cfg", cfg) {
        Ok(c) => c,
        Err(e) => panic!("config errors: {e:?}"),
    };
    match Registry::build(&c) {
        Ok(r) => r,
        Err(e) => panic!("build errors: {e:?}"),
    }
}

/// A dynamic server definition as `add server be/NAME ADDR` gives it.
fn dynamic(name: &str, addr: &str, enabled: bool) -> AddServer {
    AddServer {
        def: ServerDef {
            name: name.to_string(),
            addr: ServerAddr::Ip(addr.parse().expect("addr")),
            weight: None,
            maxconn: None,
            disabled: false,
            backup: false,
            check: false,
            health: None,
            location: crate::config::Location {
                file: Arc::from("cli"),
                line: 0,
            },
        },
        enabled,
    }
}

/// Records every event as "KIND name detail".
fn record(reg: &Registry) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    reg.events().subscribe(
        EventMask::ALL,
        Arc::new(move |e: &ServerEvent| {
            let detail = match &e.detail {
                EventDetail::None => String::new(),
                EventDetail::State {
                    admin,
                    old_state,
                    new_state,
                    cause,
                    check,
                    ..
                } => format!(
                    " admin={admin} {}->{} cause='{cause}' check={}",
                    old_state.name(),
                    new_state.name(),
                    check.as_ref().map(|c| c.result.name()).unwrap_or("-")
                ),
                EventDetail::Admin {
                    old_admin,
                    new_admin,
                    ..
                } => format!(" {:?}->{:?}", old_admin.names(), new_admin.names()),
                EventDetail::Check(c) => format!(" {}", c.result.name()),
                EventDetail::InetAddr { prev, next, .. } => format!(" {prev}->{next}"),
            };
            let line = format!(
                "{} {}/{}{} ref={}",
                e.kind.name(),
                e.proxy_name,
                e.name,
                detail,
                e.reference().is_some()
            );
            if let Ok(mut v) = sink.lock() {
                v.push(line);
            }
        }),
    );
    seen
}

fn take(seen: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    std::mem::take(&mut *seen.lock().expect("lock"))
}

fn client() -> IpAddr {
    IpAddr::from([10, 0, 0, 1])
}

/// The name of the server a pick lands on now (slot released at once).
fn pick_name(be: &Arc<Backend>) -> Option<String> {
    be.try_take_other(client(), usize::MAX)
        .map(|slot| slot.server().name.to_string())
}

#[test]
fn proxy_and_server_ids_follow_haproxy() {
    // Checked against HAProxy 3.0: proxies are numbered in order from 1
    // (defaults sections do not count), servers per backend from 1.
    let reg = registry(
        "defaults\n  mode http\nfrontend fe\n  bind 127.0.0.1:1\nbackend b1\n  server s1 127.0.0.1:1\n  server s2 127.0.0.1:2\n  server s3 127.0.0.1:3\nlisten l1\n  bind 127.0.0.1:2\n  server y 127.0.0.1:5\nbackend b3\n  mode tcp\n  server z 127.0.0.1:6\n",
    );
    let uuids: Vec<(&str, i32, &str)> = reg
        .proxies()
        .iter()
        .map(|p| (&*p.name, p.uuid, p.cap.name()))
        .collect();
    assert_eq!(
        uuids,
        [
            ("fe", 1, "frontend"),
            ("b1", 2, "backend"),
            ("l1", 3, "proxy"),
            ("b3", 4, "backend")
        ]
    );
    let b1 = reg.get("b1").expect("b1");
    let puids: Vec<(String, u32, u32)> = b1
        .servers()
        .servers
        .iter()
        .map(|s| (s.name.to_string(), s.puid, s.rid))
        .collect();
    assert_eq!(
        puids,
        [
            ("s1".into(), 1, 0),
            ("s2".into(), 2, 0),
            ("s3".into(), 3, 0)
        ]
    );
    assert!(reg.get("fe").is_none(), "a frontend is no backend");
    assert!(reg.frontend("l1").is_some() && reg.get("l1").is_some());
    assert_eq!(reg.proxy("b3").map(|p| p.uuid), Some(4));
    assert_eq!(reg.proxy_by_uuid(2).map(|p| &*p.name), Some("b1"));
}

#[test]
fn dynamic_servers_start_in_maintenance_and_follow_haproxy_rules() {
    let reg = registry("backend be\n  server s1 127.0.0.1:1\n  server s2 127.0.0.1:2\n");
    let seen = record(&reg);
    let be = reg.get("be").expect("be").clone();

    assert_eq!(
        reg.add_server("nope", &dynamic("d", "127.0.0.1:3", false))
            .err(),
        Some("No such backend.".to_string())
    );
    assert_eq!(
        reg.add_server("be", &dynamic("s1", "127.0.0.1:3", false))
            .err(),
        Some("Already exists a server with the same name in backend.".to_string())
    );
    let d = reg
        .add_server("be", &dynamic("d", "127.0.0.1:3", false))
        .expect("added");
    assert_eq!((d.puid, d.rid, d.dynamic), (3, 0, true));
    assert_eq!(d.admin().0, AdminFlags::FMAINT);
    assert_eq!(d.oper(), OperState::Stopped);
    assert_eq!(take(&seen), ["SERVER_ADD be/d ref=true"]);
    // In maintenance: never picked.
    for _ in 0..6 {
        assert_ne!(pick_name(&be).as_deref(), Some("d"));
    }

    be.set_admin_state(&d, AdminState::Ready);
    assert_eq!(
        take(&seen),
        [
            "SERVER_ADMIN be/d [\"MAINT\", \"FMAINT\"]->[] ref=true",
            "SERVER_UP be/d ref=true",
            "SERVER_STATE be/d admin=true STOPPED->RUNNING cause='' check=- ref=true",
        ]
    );
    let picked: Vec<String> = (0..6).filter_map(|_| pick_name(&be)).collect();
    assert!(picked.iter().any(|n| n == "d"), "{picked:?}");

    assert_eq!(
        reg.del_server("be", "d").err(),
        Some("Only servers in maintenance mode can be deleted.".to_string())
    );
    assert_eq!(
        reg.del_server("be", "zz").err(),
        Some("No such server.".to_string())
    );
    // A request in flight on it: maintenance takes it out of balancing, but
    // deleting waits for the request.
    let held = loop {
        match be.try_take_other(client(), usize::MAX) {
            Some(slot) if &*slot.server().name == "d" => break slot,
            Some(_) => {}
            None => panic!("no server"),
        }
    };
    be.set_admin_state(&d, AdminState::Maint);
    assert_eq!(
        take(&seen),
        [
            "SERVER_ADMIN be/d []->[\"MAINT\", \"FMAINT\"] ref=true",
            "SERVER_DOWN be/d ref=true",
            "SERVER_STATE be/d admin=true RUNNING->STOPPED cause='' check=- ref=true",
        ]
    );
    assert_eq!(
        reg.del_server("be", "d").err(),
        Some("Server still has connections attached to it, cannot remove it.".to_string())
    );
    drop(held);
    reg.del_server("be", "d").expect("deleted");
    assert!(d.is_deleted());
    assert!(be.server("d").is_none());
    assert_eq!(take(&seen), ["SERVER_DEL be/d ref=false"]);

    // Re-added after a deletion: a new revision id; the first free puid.
    let again = reg
        .add_server("be", &dynamic("d", "127.0.0.1:4", true))
        .expect("re-added");
    assert_eq!((again.puid, again.rid), (3, 1));
    assert_eq!(again.oper(), OperState::Running, "'enabled' starts it up");
    let other = reg
        .add_server("be", &dynamic("e", "127.0.0.1:5", false))
        .expect("added");
    assert_eq!((other.puid, other.rid), (4, 1), "no deletion in between");
}

#[test]
fn source_hashing_refuses_dynamic_servers() {
    let reg = registry("backend be\n  balance source\n  server s1 127.0.0.1:1\n");
    assert_eq!(
        reg.add_server("be", &dynamic("d", "127.0.0.1:3", true))
            .err(),
        Some("Backend must use a dynamic load balancing to support dynamic servers.".into())
    );
    let be = reg.get("be").expect("be");
    let s1 = be.server("s1").expect("s1");
    assert!(be.set_weight(&s1, 0).is_ok());
    assert_eq!(
        be.set_weight(&s1, 7).err().as_deref(),
        Some("Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.")
    );
}

#[test]
fn drain_and_weight_changes_steer_new_traffic() {
    let reg = registry("backend be\n  server s1 127.0.0.1:1\n  server s2 127.0.0.1:2\n");
    let be = reg.get("be").expect("be").clone();
    let s1 = be.server("s1").expect("s1");
    let s2 = be.server("s2").expect("s2");
    // Weight 3:1 after a rebuild of the table.
    be.set_weight(&s1, 3).expect("weight");
    let picks: Vec<String> = (0..40).filter_map(|_| pick_name(&be)).collect();
    let n1 = picks.iter().filter(|n| *n == "s1").count();
    assert_eq!(n1, 30, "{picks:?}");
    // Drain: no new traffic, the server stays up.
    be.set_admin_state(&s2, AdminState::Drain);
    assert!(s2.is_draining() && s2.oper() == OperState::Running);
    assert!((0..8).all(|_| pick_name(&be).as_deref() == Some("s1")));
    // Weight 0 takes s1 out too: nothing left.
    be.set_weight(&s1, 0).expect("weight");
    assert_eq!(pick_name(&be), None);
    be.set_admin_state(&s2, AdminState::Ready);
    assert!((0..4).all(|_| pick_name(&be).as_deref() == Some("s2")));
    assert_eq!(be.usable_servers(), 1);
    assert_eq!(be.up_servers(), (1, 0), "s1 has weight 0");
    assert_eq!(be.total_weight(), 1);
    // HAProxy's weight requests.
    assert_eq!(Backend::parse_weight(&s1, "50%"), Ok(0));
    assert_eq!(Backend::parse_weight(&s2, "200%"), Ok(2));
    assert_eq!(
        Backend::parse_weight(&s1, "3x").err().as_deref(),
        Some("Trailing garbage in weight string")
    );
    assert_eq!(
        Backend::parse_weight(&s1, "257").err().as_deref(),
        Some("Absolute weight can only be between 0 and 256 inclusive.")
    );
    assert_eq!(
        Backend::parse_weight(&s1, "x").err().as_deref(),
        Some("Empty weight string empty or preceded by garbage")
    );
}

#[test]
fn checks_address_and_maxconn_changes_publish_events() {
    let reg = registry("backend be\n  server s1 127.0.0.1:1 check\n");
    let seen = record(&reg);
    let be = reg.get("be").expect("be").clone();
    let s1 = be.server("s1").expect("s1");
    let failed = CheckResult {
        result: CheckOutcome::Failed,
        agent: false,
        duration_ms: 1,
        reason_short: "L4CON".into(),
        reason_desc: "Layer4 connection problem".into(),
        reason_code: 0,
        health_cur: 0,
        rise: 2,
        fall: 3,
    };
    be.report_check(&s1, &failed);
    assert!(be.set_oper_state(&s1, OperState::Stopped, OperCause::Health, Some(&failed)));
    assert_eq!(
        take(&seen),
        [
            "SERVER_CHECK be/s1 FAILED ref=true",
            "SERVER_DOWN be/s1 ref=true",
            "SERVER_STATE be/s1 admin=false RUNNING->STOPPED cause='' check=FAILED ref=true",
        ]
    );
    assert_eq!(pick_name(&be), None, "a DOWN server gets no traffic");
    assert_eq!(s1.counters.down_transitions.load(Ordering::Relaxed), 1);
    assert!(be.set_oper_state(&s1, OperState::Running, OperCause::Lua, None));
    assert_eq!(
        take(&seen),
        [
            "SERVER_UP be/s1 ref=true",
            "SERVER_STATE be/s1 admin=false STOPPED->RUNNING cause='changed from Lua script' check=- ref=true",
        ]
    );
    // NOLB: up, but no new load-balanced traffic.
    be.set_oper_state(&s1, OperState::Stopping, OperCause::Cli, None);
    assert_eq!(pick_name(&be), None);
    be.set_oper_state(&s1, OperState::Running, OperCause::Cli, None);
    take(&seen);
    // In maintenance, check results do not move the state.
    be.set_admin_state(&s1, AdminState::Maint);
    take(&seen);
    assert!(!be.set_oper_state(&s1, OperState::Running, OperCause::Health, None));
    assert_eq!(s1.oper(), OperState::Stopped);
    be.set_admin_state(&s1, AdminState::Ready);
    take(&seen);

    let prev = be.set_addr(&s1, "127.0.0.2:81".parse().expect("addr"));
    assert_eq!(prev, "127.0.0.1:1".parse().expect("addr"));
    assert_eq!(s1.addr(), "127.0.0.2:81".parse().expect("addr"));
    assert_eq!(
        take(&seen),
        ["SERVER_INETADDR be/s1 127.0.0.1:1->127.0.0.2:81 ref=true"]
    );
    assert_eq!(
        be.update_addr_port(&s1, Some("127.0.0.2"), Some("82"), "Lua script"),
        "port changed from '81' to '82' by 'Lua script'"
    );
    assert_eq!(
        be.update_addr_port(&s1, Some("127.0.0.3"), None, "Lua script"),
        "IP changed from '127.0.0.2' to '127.0.0.3' by 'Lua script'"
    );
    assert_eq!(
        be.update_addr_port(&s1, Some("127.0.0.3"), Some("82"), "x"),
        "nothing changed"
    );
    assert_eq!(
        be.update_addr_port(&s1, Some("nope"), None, "x"),
        "Invalid addr 'nope'"
    );
    take(&seen);
    assert_eq!(
        be.set_maxconn_request(&s1, "1x"),
        Some("Trailing garbage in maxconn string")
    );
    assert_eq!(be.set_maxconn_request(&s1, "1"), None);
    let held = be.try_take_other(client(), usize::MAX).expect("slot");
    assert!(
        be.try_take_other(client(), usize::MAX).is_none(),
        "maxconn 1"
    );
    drop(held);
    assert!(be.try_take_other(client(), usize::MAX).is_some());
}

#[test]
fn unsubscribed_sinks_stop_and_masks_filter() {
    let reg = registry("backend be\n  server s1 127.0.0.1:1\n");
    let be = reg.get("be").expect("be").clone();
    let s1 = be.server("s1").expect("s1");
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let mask = EventMask::from_name("SERVER_DOWN").expect("known type");
    let id = reg.events().subscribe(
        mask,
        Arc::new(move |_: &ServerEvent| {
            c.fetch_add(1, Ordering::SeqCst);
        }),
    );
    assert!(EventMask::from_name("SERVER_NOPE").is_none());
    be.set_admin_state(&s1, AdminState::Maint);
    be.set_admin_state(&s1, AdminState::Ready);
    assert_eq!(count.load(Ordering::SeqCst), 1, "only SERVER_DOWN");
    assert!(reg.events().unsubscribe(id));
    assert!(!reg.events().unsubscribe(id));
    assert!(!reg.events().has_subscribers());
    be.set_admin_state(&s1, AdminState::Maint);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

/// Servers added, drained, put in maintenance, re-weighted and deleted
/// while two threads keep taking slots: no slot is ever held on a deleted
/// server, none is taken on a server already in maintenance, and every
/// pick finds a server (s1 stays in service throughout).
#[test]
fn churn_never_routes_to_deleted_or_maintenance_servers() {
    let reg = Arc::new(registry(
        "backend be\n  balance leastconn\n  server s1 127.0.0.1:1\n",
    ));
    let be = reg.get("be").expect("be").clone();
    let stop = Arc::new(AtomicBool::new(false));
    let mut pickers = Vec::new();
    for _ in 0..2 {
        let be = be.clone();
        let stop = stop.clone();
        pickers.push(std::thread::spawn(move || {
            let mut picks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Some(slot) = be.try_take_other(client(), usize::MAX) else {
                    return Err("no server".to_string());
                };
                let s = slot.server();
                // While the slot is held, deletion is refused.
                for _ in 0..50 {
                    if s.is_deleted() {
                        return Err(format!("slot held on deleted {}", s.name));
                    }
                    std::hint::spin_loop();
                }
                picks += 1;
            }
            Ok(picks)
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(700);
    let mut round = 0u32;
    while std::time::Instant::now() < deadline {
        let name = format!("d{}", round % 3);
        let srv = reg
            .add_server("be", &dynamic(&name, "127.0.0.1:9", true))
            .expect("add");
        let _ = be.set_weight(&srv, 1 + round % 4);
        std::thread::sleep(Duration::from_micros(300));
        be.set_admin_state(&srv, AdminState::Drain);
        be.set_admin_state(&srv, AdminState::Maint);
        // Taken after the maintenance flag: never on this server.
        for _ in 0..20 {
            if let Some(slot) = be.try_take_other(client(), usize::MAX) {
                assert_ne!(slot.server().gid, srv.gid, "picked in maintenance");
            }
        }
        loop {
            match reg.del_server("be", &name) {
                Ok(()) => break,
                Err(e) if e.starts_with("Server still has connections") => std::thread::yield_now(),
                Err(e) => panic!("del server: {e}"),
            }
        }
        round += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for p in pickers {
        match p.join() {
            Ok(Ok(picks)) => assert!(picks > 0),
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("picker panicked"),
        }
    }
    assert!(round > 10, "only {round} rounds");
    assert_eq!(be.servers().servers.len(), 1);
}

/// `track`: a tracker follows the tracked server DOWN and UP (its own
/// events after the tracked one's), takes IMAINT/IDRAIN when the tracked
/// server enters maintenance or drain, and leaving maintenance while the
/// tracked server is DOWN keeps it DOWN.
#[test]
fn trackers_follow_state_and_maintenance() {
    let reg = registry(
        "backend be\n  server s1 127.0.0.1:1 check\n  server s2 127.0.0.1:1\n  server s3 127.0.0.1:1\n",
    );
    let be = reg.get("be").expect("be").clone();
    let (s1, s2, s3) = (
        be.server("s1").expect("s1"),
        be.server("s2").expect("s2"),
        be.server("s3").expect("s3"),
    );
    assert!(track::link(&be, &s2, &be, &s1));
    assert!(track::link(&be, &s3, &be, &s2));
    assert!(!track::link(&be, &s2, &be, &s3), "one tracked server only");
    let seen = record(&reg);
    be.set_oper_state(&s1, OperState::Stopped, OperCause::Health, None);
    assert_eq!(
        (s2.oper(), s3.oper()),
        (OperState::Stopped, OperState::Stopped)
    );
    let names: Vec<String> = take(&seen)
        .into_iter()
        .filter(|e| e.starts_with("SERVER_DOWN"))
        .collect();
    assert_eq!(
        names,
        [
            "SERVER_DOWN be/s1 ref=true",
            "SERVER_DOWN be/s2 ref=true",
            "SERVER_DOWN be/s3 ref=true"
        ]
    );
    // Maintenance passes down as IMAINT; leaving it while s1 is DOWN keeps
    // the trackers DOWN.
    be.set_admin_state(&s1, AdminState::Maint);
    assert_eq!(s3.admin().0, AdminFlags::IMAINT);
    be.set_oper_state(&s1, OperState::Stopped, OperCause::Cli, None);
    be.set_admin_state(&s1, AdminState::Drain);
    assert_eq!(s2.admin().0, AdminFlags::IDRAIN);
    assert_eq!(s1.oper(), OperState::Running);
    assert_eq!(s3.oper(), OperState::Running);
    be.set_oper_state(&s1, OperState::Stopped, OperCause::Cli, None);
    be.set_admin_state(&s2, AdminState::Maint);
    be.set_admin_state(&s2, AdminState::Ready);
    assert_eq!(s2.oper(), OperState::Stopped, "s1 is DOWN");
    be.set_oper_state(&s1, OperState::Running, OperCause::Cli, None);
    assert_eq!(s3.oper(), OperState::Running);
    assert!(s1.track.is_tracked() && !s3.track.is_tracked());
    assert_eq!(
        reg.del_server("be", "s1"),
        Err("This server cannot be removed at runtime due to other configuration elements pointing to it.".into())
    );
}

#[test]
fn backends_are_built_on_first_use_with_shared_settings() {
    let r = registry(
        "defaults\n  mode http\n  timeout connect 2s\n\
         frontend fe\n  bind 127.0.0.1:1\n  default_backend b1\n\
         backend b1\n  server s1 127.0.0.1:1\n\
         backend b2\n  server s1 127.0.0.1:2\n  server s2 127.0.0.1:3 backup\n\
         backend b3\n  timeout connect 3s\n  server s1 127.0.0.1:4\n",
    );
    let entry = |name: &str| r.backend_entry(name).expect("entry");
    for name in ["b1", "b2", "b3"] {
        assert!(!entry(name).backend_built(), "{name} built at start-up");
    }
    // Backends configured alike share one settings record.
    let settings = |name: &str| entry(name).settings_record().expect("settings");
    assert!(Arc::ptr_eq(&settings("b1"), &settings("b2")));
    assert!(!Arc::ptr_eq(&settings("b2"), &settings("b3")));

    // Asking for one builds that one only, as configured.
    let b2 = r.get("b2").expect("b2");
    assert!(entry("b2").backend_built());
    assert!(!entry("b1").backend_built() && !entry("b3").backend_built());
    assert_eq!(b2.uuid(), 3);
    assert_eq!(b2.connect_timeout(), Duration::from_secs(2));
    let names: Vec<(String, u32, bool)> = b2
        .servers()
        .servers
        .iter()
        .map(|s| (s.name.to_string(), s.puid, s.backup))
        .collect();
    assert_eq!(
        names,
        [("s1".to_string(), 1, false), ("s2".to_string(), 2, true)]
    );
    // The same object every time.
    assert!(Arc::ptr_eq(b2, r.get("b2").expect("b2 again")));
    assert_eq!(
        r.get("b3").expect("b3").connect_timeout(),
        Duration::from_secs(3)
    );
}

#[test]
fn the_registry_takes_the_sections_out_of_the_configuration() {
    // The peak of a start-up with many backends is not the parsed
    // configuration plus the registry: the registry consumes the sections.
    let text = "defaults\n  mode http\n\
                frontend fe\n  bind 127.0.0.1:1\n  default_backend b1\n\
                backend b1\n  server s1 127.0.0.1:1\n\
                listen both\n  bind 127.0.0.1:2\n  server s1 127.0.0.1:2\n\
                backend fe\n  server s9 127.0.0.1:9\n";
    let mut cfg = match crate::config::parse_str("t.cfg", text) {
        Ok(c) => c,
        Err(e) => panic!("config errors: {e:?}"),
    };
    let r = match Registry::take_from(&mut cfg) {
        Ok(r) => r,
        Err(e) => panic!("build errors: {e:?}"),
    };
    assert!(cfg.proxies.is_empty(), "the sections were taken");
    // It answers as the registry built from borrowed sections does.
    let same = registry(text);
    let ids = |r: &Registry| -> Vec<(String, i32, &'static str, Vec<std::net::SocketAddr>)> {
        r.proxies()
            .iter()
            .map(|p| {
                (
                    p.name.to_string(),
                    p.uuid,
                    p.cap.name(),
                    p.listeners().to_vec(),
                )
            })
            .collect()
    };
    assert_eq!(ids(&r), ids(&same));
    assert_eq!(r.backend_position("b1"), Some(1));
    assert_eq!(r.frontend_position("both"), Some(2));
    assert_eq!(r.backend_position("both"), Some(2));
    // A frontend and a backend sharing a name: each index has its own.
    assert_eq!(r.frontend_position("fe"), Some(0));
    assert_eq!(r.backend_position("fe"), Some(3));
    assert_eq!(r.proxy_position("fe"), Some(0));
    assert_eq!(r.backend_position("nope"), None);
    let fe = r.get("fe").expect("backend fe");
    assert_eq!(fe.servers().servers[0].name.to_string(), "s9");
}

#[test]
fn a_registry_entry_is_small() {
    // 300,000 backends are one array of entries: what an entry holds
    // inline is paid 300,000 times (see ProxyEntry's comment).
    assert!(
        std::mem::size_of::<ProxyEntry>() <= 40,
        "{} bytes",
        std::mem::size_of::<ProxyEntry>()
    );
}
