//! TLS for `Socket:connect_ssl` (filled in with the process's TLS client).

use crate::lua::socket_addr::Destination;
use crate::lua::socket_class::Io;

/// Wraps a connected stream in a TLS client session.
pub async fn wrap(
    _io: Box<dyn Io>,
    _dest: &Destination,
    _server_name: Option<&str>,
) -> std::io::Result<Box<dyn Io>> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "TLS client not merged yet",
    ))
}
