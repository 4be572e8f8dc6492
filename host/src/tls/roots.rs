//! Root certificate stores: the system's, or one PEM file's.

use std::path::Path;
use std::sync::OnceLock;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use super::TlsSetupError;

/// The system's trusted roots, read once per process (rustls-native-certs:
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`, else the distribution's bundle).
/// Certificates the store holds but webpki cannot use are skipped, as the
/// system's other TLS clients skip them.
pub fn system_store() -> RootCertStore {
    static STORE: OnceLock<RootCertStore> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                crate::log::warning(&format!("TLS: reading the system's root certificates: {e}"));
            }
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                crate::log::warning(
                    "TLS: no system root certificates found; verified connections will fail",
                );
            }
            store
        })
        .clone()
}

/// The certificates of the PEM file `path` (HAProxy's `ca-file`); a file that
/// cannot be read or holds no usable certificate is an error naming it.
pub fn ca_file_store(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let shown = path.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            TlsSetupError(format!(
                "unable to load CA file '{shown}': {}",
                describe(&e)
            ))
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TlsSetupError(format!(
                "unable to load CA file '{shown}': {}",
                describe(&e)
            ))
        })?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsSetupError(format!(
            "unable to load CA file '{shown}': no certificate found"
        )));
    }
    Ok(store)
}

fn describe(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("invalid PEM ({other:?})"),
    }
}
