//! The TCP side of a frontend: `tcp-request content` rules, then a Lua TCP
//! service (`use-service lua.NAME`) or forwarding to a backend.

use crate::lua::applet_tcp;
use crate::lua::vars::VarValue;
use crate::proxy::plan::{FrontendPlan, ServiceTarget};
use crate::proxy::rules::{self, RuleSide, Verdict};
use crate::proxy::traffic_log::{self, Moment};
use crate::proxy::worker::Worker;
use crate::sample::SampleCtx;
use crate::txn::{Txn, TxnMode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Runs the frontend's `tcp-request connection` rules on a new
/// connection; `None` when they reject it (it is then closed without a
/// word), else the session variables they set.
pub async fn connection_rules(
    worker: &Worker,
    fe: &FrontendPlan,
    stream: &TcpStream,
    peer: SocketAddr,
) -> Option<HashMap<String, VarValue>> {
    let local = stream.local_addr().unwrap_or(peer);
    let mode = match fe.mode {
        crate::proxy::plan::FrontMode::Http => TxnMode::Http,
        crate::proxy::plan::FrontMode::Tcp => TxnMode::Tcp,
    };
    let mut txn = Box::new(Txn::new(mode, peer, local, fe.name.clone(), worker.id + 1));
    let verdict = rules::run(
        worker,
        &fe.rules.tcp_connection,
        &mut txn,
        RuleSide::Request,
    )
    .await;
    forget_privs(worker, &txn);
    match verdict {
        Verdict::Continue => Some(std::mem::take(&mut txn.vars.sess)),
        _ => {
            if crate::log::access_log_enabled() {
                let t = crate::log::UtcTime::now();
                crate::log::access(&format!(
                    "{peer} [{}] {} rejected by tcp-request connection",
                    t.log_date(),
                    fe.name
                ));
            }
            None
        }
    }
}

pub async fn serve(
    worker: Rc<Worker>,
    fe: Arc<FrontendPlan>,
    mut stream: TcpStream,
    peer: SocketAddr,
    sess: HashMap<String, VarValue>,
) {
    let local = stream.local_addr().unwrap_or(peer);
    let accept = Moment::now();
    if fe.log.as_ref().is_some_and(|l| !l.dontlognull()) {
        traffic_log::connected(&worker, &fe, peer, local);
    }
    let mut txn = Box::new(Txn::new(
        TxnMode::Tcp,
        peer,
        local,
        fe.name.clone(),
        worker.id + 1,
    ));
    txn.vars.sess = sess;
    if !fe.rules.tcp_request.is_empty() {
        inspect(&fe, &mut stream, &mut txn).await;
    }
    let verdict = rules::run(&worker, &fe.rules.tcp_request, &mut txn, RuleSide::Request).await;
    let outcome = match verdict {
        Verdict::Service(target) => {
            let name = format!("lua.{}", target.name);
            let for_log = service_log_txn(&fe, &txn, &name);
            run_service(&worker, &fe, target, stream, txn).await;
            if let Some(t) = for_log {
                traffic_log::tcp_finished(&worker, &fe, &t, accept);
            }
            if crate::log::access_log_enabled() {
                let t = crate::log::UtcTime::now();
                crate::log::access(&format!(
                    "{peer} [{}] {} {name} closed",
                    t.log_date(),
                    fe.name
                ));
            }
            return;
        }
        Verdict::Abort | Verdict::Respond(_) => {
            txn.log.terminate("PR");
            "rejected"
        }
        Verdict::Continue => match select_backend(&worker, &fe, &txn) {
            Some(name) => {
                txn.backend = Some(name.clone());
                // The backend's own content rules.
                if let Some(be) = worker.plan.backends.get(&*name).cloned() {
                    match rules::run(&worker, &be.rules.tcp_request, &mut txn, RuleSide::Request)
                        .await
                    {
                        Verdict::Continue => {}
                        Verdict::Service(target) => {
                            let name = format!("lua.{}", target.name);
                            let for_log = service_log_txn(&fe, &txn, &name);
                            run_service(&worker, &fe, target, stream, txn).await;
                            if let Some(t) = for_log {
                                traffic_log::tcp_finished(&worker, &fe, &t, accept);
                            }
                            return;
                        }
                        Verdict::Abort | Verdict::Respond(_) => {
                            forget_privs(&worker, &txn);
                            txn.log.terminate("PR");
                            traffic_log::tcp_finished(&worker, &fe, &txn, accept);
                            return;
                        }
                    }
                }
                match worker.plan.registry.get(&name).cloned() {
                    Some(be) => {
                        let initial = txn.req_buf.split().freeze();
                        match worker.forwarder.tcp(&be, &mut txn, stream, initial).await {
                            Ok(()) => "forwarded",
                            Err(e) => {
                                txn.log.terminate(tcp_term_state(&e));
                                "forward failed"
                            }
                        }
                    }
                    None => {
                        txn.log.terminate("SC");
                        "no backend"
                    }
                }
            }
            None => {
                txn.log.terminate("SC");
                "no backend"
            }
        },
    };
    forget_privs(&worker, &txn);
    traffic_log::tcp_finished(&worker, &fe, &txn, accept);
    if crate::log::access_log_enabled() {
        let t = crate::log::UtcTime::now();
        crate::log::access(&format!(
            "{peer} [{}] {} {}/{} {outcome}",
            t.log_date(),
            fe.name,
            txn.backend_name(),
            txn.server.as_deref().unwrap_or("<NOSRV>")
        ));
    }
}

/// The termination state of a relay that failed: in TCP the data phase
/// is the whole connection once the server answered the connect.
fn tcp_term_state(e: &crate::backend::ForwardError) -> &'static str {
    use crate::backend::ForwardError as E;
    match e {
        // Inactivity ends both sides at once; HAProxy reports the client's.
        E::Timeout => "cD",
        E::ClientAborted => "CD",
        E::ServerAborted => "SD",
        other => other.term_state(),
    }
}

/// What the log line of a connection handed to a Lua TCP service shows
/// (the service takes the transaction): `frontend/<lua.NAME>`, locally
/// processed. Byte counts are not known for services.
fn service_log_txn(fe: &FrontendPlan, txn: &Txn, name: &str) -> Option<Txn> {
    fe.log.as_ref()?;
    let mut t = Txn::new(
        TxnMode::Tcp,
        txn.client,
        txn.local,
        txn.frontend.clone(),
        txn.thread,
    );
    t.server = Some(Arc::from(format!("<{name}>")));
    t.log.term = Some("LR");
    t.log.bytes_in = txn.req_buf.len() as u64;
    Some(t)
}

/// Reads what the client sends first, for the content rules: up to
/// `tcp-request inspect-delay` (without one, only what is already there).
async fn inspect(fe: &FrontendPlan, stream: &mut TcpStream, txn: &mut Txn) {
    let limit = crate::proxy::bufsize();
    txn.req_buf.reserve(limit.min(16 * 1024));
    match fe.inspect_delay {
        Some(delay) => {
            let deadline = tokio::time::Instant::now() + delay;
            // Wait for a first chunk, then take whatever else is there.
            if let Ok(Ok(n)) =
                tokio::time::timeout_at(deadline, stream.read_buf(&mut txn.req_buf)).await
            {
                if n > 0 {
                    let _ = try_read_more(stream, txn, limit);
                }
            }
        }
        None => {
            let _ = try_read_more(stream, txn, limit);
        }
    }
}

fn try_read_more(stream: &TcpStream, txn: &mut Txn, limit: usize) -> std::io::Result<()> {
    let mut tmp = [0u8; 8192];
    while txn.req_buf.len() < limit {
        match stream.try_read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => txn.req_buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn select_backend(worker: &Worker, fe: &FrontendPlan, txn: &Txn) -> Option<Arc<str>> {
    let samples = worker.samples();
    let ctx = SampleCtx::new(txn, &samples, &*worker.plan.registry);
    for sw in &fe.use_backends {
        if sw.cond.as_ref().is_none_or(|c| c.eval(&ctx)) {
            return Some(sw.name(&ctx));
        }
    }
    fe.default_backend.clone()
}

async fn run_service(
    worker: &Worker,
    fe: &FrontendPlan,
    target: ServiceTarget,
    stream: TcpStream,
    mut txn: Box<Txn>,
) {
    // The socket moves to the worker owning the Lua state; a std socket is
    // Send and is registered again with that worker's event loop.
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            crate::log::warning(&format!("frontend '{}': {}: {e}", fe.name, txn.client));
            return;
        }
    };
    let initial = txn.req_buf.split().freeze();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let name = target.name.clone();
    worker.dispatch(
        &target,
        Box::new(move |state| {
            tokio::task::spawn_local(async move {
                applet_tcp::run(state, Rc::from(&*name), std_stream, initial, txn).await;
                let _ = done_tx.send(());
            });
        }),
    );
    // Keep the connection counted on this worker until the applet ends.
    let _ = done_rx.await;
}

/// Drops the `set_priv` data Lua actions left for this connection.
fn forget_privs(worker: &Worker, txn: &Txn) {
    let privs = txn.priv_states.load(std::sync::atomic::Ordering::Relaxed);
    if privs != 0 {
        worker.forget_txn(txn.id, privs);
    }
}
