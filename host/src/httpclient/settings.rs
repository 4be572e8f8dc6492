//! The `httpclient.*` global keywords, process-wide once the configuration
//! is read.

use std::sync::OnceLock;
use std::time::Duration;

use crate::tls::{Roots, TlsClient, TlsSetupError, Verify};

#[derive(Debug, Clone)]
pub struct Settings {
    /// `httpclient.retries`: new connection attempts after a failed one.
    pub retries: u32,
    /// `httpclient.timeout.connect`.
    pub connect_timeout: Duration,
    /// `httpclient.ssl.verify`.
    pub verify: Verify,
    /// `httpclient.ssl.ca-file` (`@system-ca` by default).
    pub roots: Roots,
    /// Not `httpclient.resolvers.disabled on`: host names are resolved.
    pub resolve: bool,
    /// `httpclient.resolvers.prefer ipv4` (HAProxy prefers IPv6).
    pub prefer_ipv4: bool,
    /// `httpclient.pool.idle-timeout` (luahost): how long an idle pooled
    /// connection stays open.
    pub idle_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            retries: 3,
            connect_timeout: Duration::from_millis(5000),
            verify: Verify::Required,
            roots: Roots::System,
            resolve: true,
            prefer_ipv4: false,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

impl Settings {
    /// The settings the configuration's keywords give.
    pub fn from_config(c: &crate::config::HttpClientConf) -> Settings {
        let d = Settings::default();
        Settings {
            retries: c.retries.unwrap_or(d.retries),
            connect_timeout: c.connect_timeout.unwrap_or(d.connect_timeout),
            verify: c.verify.unwrap_or(d.verify),
            roots: c.roots.clone().unwrap_or(d.roots),
            resolve: !c.resolvers_disabled.unwrap_or(false),
            prefer_ipv4: c.prefer_ipv4.unwrap_or(d.prefer_ipv4),
            idle_timeout: c.idle_timeout.unwrap_or(d.idle_timeout),
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();
static CA_CLIENT: OnceLock<Result<TlsClient, String>> = OnceLock::new();

/// Fixes the process's settings (once, at start-up).
pub fn set(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

pub fn get() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

/// The TLS client for `https://` URLs: the system's roots, or the
/// configured CA file's.
pub fn tls_client() -> Result<&'static TlsClient, TlsSetupError> {
    match &get().roots {
        Roots::System => TlsClient::system(),
        roots @ Roots::CaFile(_) => CA_CLIENT
            .get_or_init(|| TlsClient::new(roots).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| TlsSetupError::new(e.clone())),
    }
}
