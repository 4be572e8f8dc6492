//! The stats sockets: binding them at start-up (with the other listeners,
//! so a busy address fails start-up like a busy `bind`), and accepting
//! sessions on worker 0's event loop.

use super::session;
use super::Shared;
use crate::config::{CliAddr, CliLevel, StatsSocket};
use crate::lua::applet_tcp::AppletStream;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// A bound stats socket, not yet accepting.
pub struct Bound {
    pub listener: Listener,
    pub level: CliLevel,
    /// The socket file, removed when the process stops.
    pub path: Option<PathBuf>,
}

pub enum Listener {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

/// Binds `s`. A UNIX socket is bound under a temporary name, given its
/// mode and owner, then renamed over the path, as HAProxy does: a stale
/// file from an earlier run is replaced, and clients never see a socket
/// with the wrong permissions.
pub fn bind(s: &StatsSocket) -> Result<Bound, String> {
    let fail = |e: &dyn std::fmt::Display| {
        format!(
            "[ALERT] parsing [{}] : 'stats socket' : cannot bind {}: {e}",
            s.location, s.addr
        )
    };
    match &s.addr {
        CliAddr::Tcp(addr) => {
            let l = std::net::TcpListener::bind(addr).map_err(|e| fail(&e))?;
            l.set_nonblocking(true).map_err(|e| fail(&e))?;
            Ok(Bound {
                listener: Listener::Tcp(l),
                level: s.level,
                path: None,
            })
        }
        CliAddr::Unix(path) => {
            let mut tmp = path.clone().into_os_string();
            tmp.push(format!(".{}.tmp", std::process::id()));
            let tmp = PathBuf::from(tmp);
            let _ = std::fs::remove_file(&tmp);
            let l = std::os::unix::net::UnixListener::bind(&tmp).map_err(|e| fail(&e))?;
            let setup = || -> std::io::Result<()> {
                if let Some(mode) = s.mode {
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
                }
                if s.uid.is_some() || s.gid.is_some() {
                    std::os::unix::fs::chown(&tmp, s.uid, s.gid)?;
                }
                std::fs::rename(&tmp, path)?;
                l.set_nonblocking(true)
            };
            if let Err(e) = setup() {
                let _ = std::fs::remove_file(&tmp);
                return Err(fail(&e));
            }
            Ok(Bound {
                listener: Listener::Unix(l),
                level: s.level,
                path: Some(path.clone()),
            })
        }
    }
}

/// Accepts sessions on `b` until the task is dropped; at most `slots`
/// sessions at once over all sockets (`stats maxconn`).
pub async fn accept_loop(shared: Arc<Shared>, b: Bound, slots: Arc<Semaphore>) {
    let level = b.level;
    match b.listener {
        Listener::Tcp(l) => {
            let Ok(l) = tokio::net::TcpListener::from_std(l) else {
                crate::log::alert("stats socket: cannot register the listener");
                return;
            };
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Ok((s, peer)) = l.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::task::spawn_local(async move {
                    session::serve(shared, AppletStream::Tcp(s), level, peer).await;
                    drop(permit);
                });
            }
        }
        Listener::Unix(l) => {
            let Ok(l) = tokio::net::UnixListener::from_std(l) else {
                crate::log::alert("stats socket: cannot register the listener");
                return;
            };
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                // A UNIX client has no IP address; Lua sees 0.0.0.0:0.
                let peer = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
                tokio::task::spawn_local(async move {
                    session::serve(shared, AppletStream::Unix(s), level, peer).await;
                    drop(permit);
                });
            }
        }
    }
}
