//! Connecting to a server: `timeout connect` per attempt, `retries` more
//! attempts after a failure, HAProxy's turn-around delay between attempts on
//! the same server, and the optional redispatch of the last retry.

use super::observe::Traffic;
use super::slot::ConnSlot;
use super::{Backend, ForwardError};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Connects to the slot's server. With redispatch enabled, the last retry
/// may move `slot` to another server (the caller reads the server from the
/// slot afterwards). `retries` counts the attempts after the first (the
/// log's `%rc`).
pub(crate) async fn connect(
    be: &Arc<Backend>,
    slot: &mut ConnSlot,
    client: IpAddr,
    retries: &mut u32,
) -> Result<TcpStream, ForwardError> {
    let timeout = be.timeouts.connect;
    // Waiting a little before retrying the same server avoids hammering a
    // server that is restarting (HAProxy: min(timeout connect, 1 s)).
    let turn_around = timeout.min(Duration::from_secs(1));
    let mut attempt = 0u32;
    loop {
        let addr = slot.server().addr();
        let (why, after_timeout) =
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    // Requests and responses are written whole: send at once.
                    let _ = stream.set_nodelay(true);
                    slot.server().observe(Traffic::L4Ok);
                    return Ok(stream);
                }
                Ok(Err(e)) => (io_reason(&e), false),
                Err(_) => (format!("no answer within {} ms", timeout.as_millis()), true),
            };
        slot.server()
            .counters
            .connect_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        slot.server().observe(Traffic::L4Err);
        if attempt >= be.retries {
            crate::log::warning(&format!(
                "backend '{}': server '{}' connect failed ({why}), giving up after {} retries",
                be.name,
                slot.server().name,
                be.retries
            ));
            return Err(ForwardError::ConnectFailed);
        }
        attempt += 1;
        slot.server()
            .counters
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *retries = attempt;
        crate::log::warning(&format!(
            "backend '{}': server '{}' connect failed ({why}), retrying ({attempt}/{})",
            be.name,
            slot.server().name,
            be.retries
        ));
        if be.redispatch && attempt == be.retries {
            if let Some(other) = be.try_take_other(client, slot.server().gid) {
                // The old slot is released when replaced.
                other
                    .server()
                    .counters
                    .redispatches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                *slot = other;
                continue;
            }
        }
        // A timeout already spent its time waiting; a refusal came fast.
        if !after_timeout {
            tokio::time::sleep(turn_around).await;
        }
    }
}

/// An I/O error as a short reason: "Connection refused" rather than
/// "Connection refused (os error 111)".
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let mut s = e.to_string();
    if let Some(pos) = s.find(" (os error") {
        s.truncate(pos);
    }
    s
}
