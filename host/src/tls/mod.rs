//! The process's one TLS client (rustls, ring provider; no OpenSSL).
//!
//! Every outgoing TLS connection goes through a [`TlsClient`]: Lua sockets
//! (`Socket:connect_ssl`), the HTTP client (`core.httpclient()`) and, later,
//! `server ... ssl`. A client holds two rustls configurations built once: one
//! that verifies the server's certificate chain against a root store (the
//! system's, or a CA file's) and one that accepts any certificate
//! (`verify none`). Both keep rustls' in-memory session cache, so a
//! reconnection to the same server resumes its session instead of paying a
//! full handshake.

mod insecure;
mod roots;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

pub use tokio_rustls::client::TlsStream;

/// Whether the server's certificate is checked (HAProxy's `verify` keyword).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verify {
    /// Accept any certificate (`verify none`).
    None,
    /// The chain must lead to a trusted root and name the server
    /// (`verify required`).
    Required,
}

impl Verify {
    /// Parses HAProxy's `none` / `required` words.
    pub fn parse(word: &str) -> Option<Verify> {
        match word {
            "none" => Some(Verify::None),
            "required" => Some(Verify::Required),
            _ => None,
        }
    }
}

/// Where a client's trusted roots come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Roots {
    /// The system's store (Debian: /etc/ssl/certs/ca-certificates.crt;
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` override it). HAProxy's `@system-ca`.
    System,
    /// The certificates of one PEM file (HAProxy's `ca-file`).
    CaFile(PathBuf),
}

/// A TLS client: connects a byte stream to a TLS server.
pub struct TlsClient {
    verifying: Arc<ClientConfig>,
    accepting_any: Arc<ClientConfig>,
}

/// Why a TLS client could not be built (a bad CA file, mostly).
#[derive(Debug)]
pub struct TlsSetupError(String);

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsSetupError {}

impl TlsSetupError {
    pub fn new(message: String) -> TlsSetupError {
        TlsSetupError(message)
    }
}

impl TlsClient {
    /// A client trusting `roots`.
    pub fn new(roots: &Roots) -> Result<TlsClient, TlsSetupError> {
        let store = match roots {
            Roots::System => roots::system_store(),
            Roots::CaFile(path) => roots::ca_file_store(path)?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifying = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError(format!("TLS client: {e}")))?
            .with_root_certificates(store)
            .with_no_client_auth();
        let accepting_any = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError(format!("TLS client: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(insecure::AcceptAnyCertificate::new(
                provider,
            )))
            .with_no_client_auth();
        Ok(TlsClient {
            verifying: Arc::new(verifying),
            accepting_any: Arc::new(accepting_any),
        })
    }

    /// The process's client trusting the system's roots, built on first use
    /// (reading the system store takes a few milliseconds) and shared after.
    /// A missing or unreadable store gives an empty one: verifications then
    /// fail with an error naming the unknown issuer.
    pub fn system() -> Result<&'static TlsClient, TlsSetupError> {
        static SYSTEM: OnceLock<Result<TlsClient, String>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| TlsClient::new(&Roots::System).map_err(|e| e.0))
            .as_ref()
            .map_err(|e| TlsSetupError(e.clone()))
    }

    /// Runs the TLS handshake over `stream`.
    ///
    /// `server_name` is sent as SNI when it is a DNS name and is the name the
    /// certificate must carry under `Verify::Required`; an IP address literal
    /// is checked against the certificate's IP addresses and sends no SNI
    /// (as TLS forbids). With `None` nothing is sent; verification then has
    /// nothing to check the certificate against and is refused, so callers
    /// that verify pass a name (the URL's host, or the peer's IP address).
    pub async fn connect<S>(
        &self,
        stream: S,
        server_name: Option<&str>,
        verify: Verify,
    ) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = match server_name {
            Some(name) => parse_server_name(name)?,
            None if verify == Verify::Required => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "TLS: certificate verification needs a server name",
                ));
            }
            // rustls needs a name; an IP address sends no SNI, and the
            // accepting verifier ignores it.
            None => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into()),
        };
        let config = match verify {
            Verify::Required => &self.verifying,
            Verify::None => &self.accepting_any,
        };
        TlsConnector::from(config.clone())
            .connect(name, stream)
            .await
    }
}

/// `name` as rustls wants it: a DNS name or an IP address literal (IPv6 with
/// or without brackets).
fn parse_server_name(name: &str) -> io::Result<ServerName<'static>> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TLS: invalid server name '{name}'"),
        )
    })
}

/// The roots a `ca-file` argument names: HAProxy's `@system-ca`, or a file.
pub fn roots_from_keyword(path: &str) -> Roots {
    if path == "@system-ca" {
        Roots::System
    } else {
        Roots::CaFile(Path::new(path).to_path_buf())
    }
}
