//! TCP forwarding: bytes both ways between the client and a server.
//!
//! Each direction is copied until its end of file, which is then passed on
//! as a half-close (`shutdown(Write)`) to the other side, so that
//! request/response protocols where the client half-closes still get their
//! reply. Both sockets close when both directions are done, when either
//! side fails, or on inactivity.

use super::connect::{connect, io_reason};
use super::{Backend, ForwardError, Forwarder};
use crate::txn::Txn;
use bytes::Bytes;
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Per direction; HAProxy's default buffer size.
const BUF_SIZE: usize = 16 * 1024;

/// Which side failed.
enum Side {
    Client(std::io::Error),
    Server(std::io::Error),
}

impl Forwarder {
    /// Connects `client` to a server of `be` and relays bytes until both
    /// directions are closed. `already_read` (data the frontend read while
    /// inspecting the connection) is sent to the server first. Sets
    /// `txn.backend` and `txn.server`.
    ///
    /// Inactivity (no byte either way) ends the connection after `timeout
    /// tunnel` if set, else the smaller of `timeout client` (listen sections
    /// only) and `timeout server` of the backend's section (either side
    /// expiring ends a TCP relay); with none set, there is no limit, as in
    /// HAProxy.
    pub async fn tcp(
        &self,
        be: &Arc<Backend>,
        txn: &mut Txn,
        mut client: TcpStream,
        already_read: Bytes,
    ) -> Result<(), ForwardError> {
        txn.backend = Some(be.name.clone());
        let client_ip = txn.client.ip();
        let queued = std::time::Instant::now();
        let mut slot = be.take_slot(client_ip, None).await?;
        txn.log.t_queue = Some(super::http::elapsed_ms(queued));
        txn.server = Some(slot.server().name.clone());
        let started = std::time::Instant::now();
        let mut server = connect(be, &mut slot, client_ip, &mut txn.log.retries).await?;
        txn.log.t_connect = Some(super::http::elapsed_ms(started));
        txn.server = Some(slot.server().name.clone());
        let idle = idle_timeout(be);
        if !already_read.is_empty() {
            let write = server.write_all(&already_read);
            let written = match idle {
                Some(t) => tokio::time::timeout(t, write)
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
                None => write.await,
            };
            if let Err(e) = written {
                log_abort(be, &slot.server().name, "server", &e);
                return Err(ForwardError::ServerAborted);
            }
        }
        let up = Cell::new(already_read.len() as u64);
        let down = Cell::new(0);
        let result = relay(&mut client, &mut server, idle, (&up, &down)).await;
        txn.log.bytes_in = up.get();
        txn.log.bytes_out = down.get();
        // The slot is released (and both sockets closed) on return.
        match result {
            Ok(()) => Ok(()),
            Err(None) => {
                crate::log::debug(&format!(
                    "backend '{}': server '{}': connection closed after {} ms of inactivity",
                    be.name,
                    slot.server().name,
                    idle.unwrap_or_default().as_millis()
                ));
                Err(ForwardError::Timeout)
            }
            Err(Some(Side::Client(e))) => {
                log_abort(be, &slot.server().name, "client", &e);
                Err(ForwardError::ClientAborted)
            }
            Err(Some(Side::Server(e))) => {
                log_abort(be, &slot.server().name, "server", &e);
                Err(ForwardError::ServerAborted)
            }
        }
    }
}

fn log_abort(be: &Backend, server: &str, side: &str, e: &std::io::Error) {
    crate::log::debug(&format!(
        "backend '{}': server '{server}': {side} side aborted ({})",
        be.name,
        io_reason(e)
    ));
}

fn idle_timeout(be: &Backend) -> Option<Duration> {
    let t = &be.timeouts;
    t.tunnel.or(match (t.client, t.server) {
        (Some(c), Some(s)) => Some(c.min(s)),
        (c, s) => c.or(s),
    })
}

/// Copies both ways with half-closes. `Err(None)` is an inactivity timeout.
async fn relay(
    client: &mut TcpStream,
    server: &mut TcpStream,
    idle: Option<Duration>,
    (up_bytes, down_bytes): (&Cell<u64>, &Cell<u64>),
) -> Result<(), Option<Side>> {
    let mut bufs = vec![0u8; 2 * BUF_SIZE];
    let (up_buf, down_buf) = bufs.split_at_mut(BUF_SIZE);
    let (mut client_rd, mut client_wr) = client.split();
    let (mut server_rd, mut server_wr) = server.split();
    let last = Cell::new(Instant::now());
    let up = async {
        copy_half(&mut client_rd, &mut server_wr, up_buf, &last, up_bytes)
            .await
            .map_err(|(read_side, e)| {
                if read_side {
                    Side::Client(e)
                } else {
                    Side::Server(e)
                }
            })
    };
    let down = async {
        copy_half(&mut server_rd, &mut client_wr, down_buf, &last, down_bytes)
            .await
            .map_err(|(read_side, e)| {
                if read_side {
                    Side::Server(e)
                } else {
                    Side::Client(e)
                }
            })
    };
    let both = async { tokio::try_join!(up, down).map(|_| ()) };
    match idle {
        None => both.await.map_err(Some),
        Some(t) => tokio::select! {
            r = both => r.map_err(Some),
            _ = inactivity(&last, t) => Err(None),
        },
    }
}

/// Copies one direction until end of file, then half-closes the writer.
/// Errors say whether the read side (true) or the write side failed.
async fn copy_half<R, W>(
    rd: &mut R,
    wr: &mut W,
    buf: &mut [u8],
    last: &Cell<Instant>,
    copied: &Cell<u64>,
) -> Result<(), (bool, std::io::Error)>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    loop {
        let n = rd.read(buf).await.map_err(|e| (true, e))?;
        if n == 0 {
            // The peer may already be gone; closing is all that is left.
            let _ = wr.shutdown().await;
            return Ok(());
        }
        last.set(Instant::now());
        wr.write_all(&buf[..n]).await.map_err(|e| (false, e))?;
        copied.set(copied.get() + n as u64);
        last.set(Instant::now());
    }
}

/// Resolves once nothing moved for `t`.
async fn inactivity(last: &Cell<Instant>, t: Duration) {
    loop {
        let deadline = last.get() + t;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}
