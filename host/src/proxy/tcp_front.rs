//! The TCP side of a frontend: `tcp-request content use-service lua.NAME`
//! hands the connection to a Lua TCP service.

use crate::lua::applet_tcp;
use crate::proxy::plan::FrontendPlan;
use crate::proxy::worker::Worker;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use tokio::net::TcpStream;

pub async fn serve(worker: Rc<Worker>, fe: Arc<FrontendPlan>, stream: TcpStream, peer: SocketAddr) {
    let Some(target) = fe.service.clone() else {
        // Nothing to do with the connection: close it.
        return;
    };
    // The socket moves to the worker owning the Lua state; a std socket is
    // Send and is registered again with that worker's event loop.
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            crate::log::warning(&format!("frontend '{}': {peer}: {e}", fe.name));
            return;
        }
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let name = target.name.clone();
    worker.dispatch(
        &target,
        Box::new(move |state| {
            tokio::task::spawn_local(async move {
                applet_tcp::run(state, Rc::from(&*name), std_stream).await;
                let _ = done_tx.send(());
            });
        }),
    );
    // Keep the connection counted on this worker until the applet ends.
    let _ = done_rx.await;
    if crate::log::access_log_enabled() {
        let t = crate::log::UtcTime::now();
        crate::log::access(&format!(
            "{peer} [{}] {} lua.{} closed",
            t.log_date(),
            fe.name,
            target.name
        ));
    }
}
