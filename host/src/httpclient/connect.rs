//! Opening a connection to one destination: TCP or Unix socket within
//! `httpclient.timeout.connect`, then TLS for `https://`.

use std::io;
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};

use super::stream::Stream;
use crate::tls::{TlsClient, Verify};

/// Where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Inet(SocketAddr),
    Unix(Vec<u8>),
    /// Linux's abstract namespace, name without the leading zero byte.
    Abstract(Vec<u8>),
}

/// TLS for a connection: the name sent as SNI and verified, and whether
/// the certificate is verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsParams {
    pub name: String,
    pub verify: Verify,
}

#[derive(Debug)]
pub enum ConnectError {
    /// The socket could not connect (refused, unreachable, timed out).
    Connect(io::Error),
    /// Connected, but the TLS handshake failed.
    Tls(io::Error),
}

/// HAProxy pads `abns@` names with zero bytes to the whole `sun_path`, so
/// that an HAProxy `abns@` listener is reached under the same name.
const ABNS_LEN: usize = 107;

pub async fn open(
    target: &Target,
    tls: Option<(&TlsClient, &TlsParams)>,
    connect_timeout: Duration,
) -> Result<Stream, ConnectError> {
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connection timed out");
    let plain = async {
        match target {
            Target::Inet(addr) => {
                let s = TcpStream::connect(addr).await?;
                // Requests are written whole; no reason to wait for more.
                s.set_nodelay(true)?;
                Ok::<_, io::Error>(PlainStream::Tcp(s))
            }
            Target::Unix(path) => {
                let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
                Ok(PlainStream::Unix(UnixStream::connect(path).await?))
            }
            Target::Abstract(name) => {
                let mut padded = name.clone();
                if padded.len() < ABNS_LEN {
                    padded.resize(ABNS_LEN, 0);
                }
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(&padded)?;
                // A Unix-domain connect completes at once (or fails): it
                // does not wait on a network.
                let s = std::os::unix::net::UnixStream::connect_addr(&addr)?;
                s.set_nonblocking(true)?;
                Ok(PlainStream::Unix(UnixStream::from_std(s)?))
            }
        }
    };
    let plain = match tokio::time::timeout(connect_timeout, plain).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Connect(e)),
        Err(_) => return Err(ConnectError::Connect(timed_out())),
    };
    let Some((client, params)) = tls else {
        return Ok(match plain {
            PlainStream::Tcp(s) => Stream::Tcp(s),
            PlainStream::Unix(s) => Stream::Unix(s),
        });
    };
    let name = Some(params.name.as_str());
    // The handshake is part of connecting: bounded by the same timeout.
    let handshake = async {
        match plain {
            PlainStream::Tcp(s) => client
                .connect(s, name, params.verify)
                .await
                .map(|t| Stream::TlsTcp(Box::new(t))),
            PlainStream::Unix(s) => client
                .connect(s, name, params.verify)
                .await
                .map(|t| Stream::TlsUnix(Box::new(t))),
        }
    };
    match tokio::time::timeout(connect_timeout, handshake).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(ConnectError::Tls(e)),
        Err(_) => Err(ConnectError::Tls(timed_out())),
    }
}

enum PlainStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}
