//! TLS for `Socket:connect_ssl`, through the process's TLS client (tls/).
//!
//! HAProxy's Lua sockets use a server with `ssl verify none` and send no
//! SNI; that is the default here too. A fourth argument to `connect_ssl`
//! (luahost's addition) gives the server name to send as SNI, either as a
//! string or in a table `{server_name=, verify="none"|"required",
//! ca_file=}`; `verify="required"` checks the certificate against the
//! system's roots (or `ca_file`) and the server name (or, without one, the
//! address connected to).

use crate::lua::socket_addr::Destination;
use crate::lua::socket_class::Io;
use crate::tls::{Roots, TlsClient, Verify};
use mlua::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;

/// What a script asked of a TLS connection.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    pub server_name: Option<String>,
    pub verify: Verify,
    pub ca_file: Option<PathBuf>,
}

impl Default for TlsOptions {
    /// HAProxy's: no SNI, no verification.
    fn default() -> TlsOptions {
        TlsOptions {
            server_name: None,
            verify: Verify::None,
            ca_file: None,
        }
    }
}

impl TlsOptions {
    /// Reads `connect_ssl`'s fourth argument (nil, a server name, or a
    /// table of options).
    pub fn from_lua(v: Option<Value>) -> mlua::Result<TlsOptions> {
        let mut o = TlsOptions::default();
        match v {
            None | Some(Value::Nil) => {}
            Some(Value::String(s)) => o.server_name = Some(s.to_str()?.to_string()),
            Some(Value::Table(t)) => {
                o.server_name = t.get::<Option<String>>("server_name")?;
                if let Some(v) = t.get::<Option<String>>("verify")? {
                    o.verify = Verify::parse(&v).ok_or_else(|| {
                        mlua::Error::runtime(format!(
                            "connect_ssl: verify must be 'none' or 'required', not '{v}'"
                        ))
                    })?;
                }
                o.ca_file = t.get::<Option<String>>("ca_file")?.map(PathBuf::from);
            }
            Some(other) => {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #4 to 'connect_ssl' (string or table expected, got {})",
                    other.type_name()
                )))
            }
        }
        Ok(o)
    }
}

thread_local! {
    /// Clients trusting a CA file, built once per file and worker.
    static BY_CA_FILE: RefCell<HashMap<PathBuf, &'static TlsClient>> =
        RefCell::new(HashMap::new());
}

/// The client for `ca_file` (the system's roots without one).
fn client(ca_file: Option<&PathBuf>) -> std::io::Result<&'static TlsClient> {
    let to_io = |e: crate::tls::TlsSetupError| std::io::Error::other(e.to_string());
    let Some(path) = ca_file else {
        return TlsClient::system().map_err(to_io);
    };
    if let Some(c) = BY_CA_FILE.with(|m| m.borrow().get(path).copied()) {
        return Ok(c);
    }
    // Leaked on purpose: one per distinct CA file a script names, kept for
    // the life of the process like the system client.
    let c: &'static TlsClient = Box::leak(Box::new(
        TlsClient::new(&Roots::CaFile(path.clone())).map_err(to_io)?,
    ));
    BY_CA_FILE.with(|m| m.borrow_mut().insert(path.clone(), c));
    Ok(c)
}

/// Runs the TLS handshake over a connected stream.
pub async fn wrap(
    io: Box<dyn Io>,
    dest: &Destination,
    opts: &TlsOptions,
) -> std::io::Result<Box<dyn Io>> {
    let name = match (&opts.server_name, opts.verify, dest) {
        (Some(n), _, _) => Some(n.clone()),
        // Verification needs a name: the address connected to.
        (None, Verify::Required, Destination::Inet(a)) => Some(a.ip().to_string()),
        _ => None,
    };
    let c = client(opts.ca_file.as_ref())?;
    let tls = c.connect(io, name.as_deref(), opts.verify).await?;
    Ok(Box::new(tls))
}
