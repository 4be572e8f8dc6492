//! The TLS client against a local rustls server holding a self-signed
//! certificate made by rcgen for each test.

use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::*;

/// A self-signed certificate for `names` (DNS names or IP addresses).
struct TestCert {
    pem: String,
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn self_signed(names: &[&str]) -> TestCert {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).expect("rcgen");
    TestCert {
        pem: certified.cert.pem(),
        der: certified.cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der())),
    }
}

/// A TLS echo server answering one line per connection, recording the SNI
/// each client sent.
struct TestServer {
    port: u16,
    sni_seen: Arc<Mutex<Vec<Option<String>>>>,
}

async fn start_server(cert: &TestCert) -> TestServer {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der.clone()], cert.key.clone_key())
    .expect("server cert");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sni_seen = Arc::new(Mutex::new(Vec::new()));
    let seen = sni_seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                seen.lock().expect("lock").push(sni);
                let mut buf = [0u8; 64];
                if let Ok(n) = tls.read(&mut buf).await {
                    let _ = tls.write_all(b"echo:").await;
                    let _ = tls.write_all(&buf[..n]).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    TestServer { port, sni_seen }
}

fn ca_file(cert: &TestCert) -> tempfile_path::TempPath {
    tempfile_path::write(cert.pem.as_bytes())
}

/// A file removed when dropped, in the system's temporary directory.
mod tempfile_path {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct TempPath(pub PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    pub fn write(content: &[u8]) -> TempPath {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "luahost-tls-test-{}-{}.pem",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, content).expect("write temp file");
        TempPath(path)
    }
}

async fn exchange(
    client: &TlsClient,
    port: u16,
    name: Option<&str>,
    verify: Verify,
) -> io::Result<String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = client.connect(tcp, name, verify).await?;
    tls.write_all(b"ping").await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn verified_with_ca_file_sends_sni() {
    let cert = self_signed(&["localhost"]);
    let server = start_server(&cert).await;
    let ca = ca_file(&cert);
    let client = TlsClient::new(&Roots::CaFile(ca.0.clone())).expect("client");
    let answer = exchange(&client, server.port, Some("localhost"), Verify::Required)
        .await
        .expect("handshake");
    assert_eq!(answer, "echo:ping");
    assert_eq!(
        *server.sni_seen.lock().unwrap(),
        vec![Some("localhost".to_string())]
    );
}

#[tokio::test]
async fn self_signed_refused_by_system_roots_accepted_without_verify() {
    let cert = self_signed(&["localhost"]);
    let server = start_server(&cert).await;
    let client = TlsClient::system().expect("system client");
    let err = exchange(client, server.port, Some("localhost"), Verify::Required)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let answer = exchange(client, server.port, Some("localhost"), Verify::None)
        .await
        .expect("verify none");
    assert_eq!(answer, "echo:ping");
}

#[tokio::test]
async fn wrong_name_refused() {
    let cert = self_signed(&["localhost"]);
    let server = start_server(&cert).await;
    let ca = ca_file(&cert);
    let client = TlsClient::new(&Roots::CaFile(ca.0.clone())).expect("client");
    let err = exchange(
        &client,
        server.port,
        Some("other.example"),
        Verify::Required,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn ip_address_name_verified_without_sni() {
    let cert = self_signed(&["127.0.0.1", "::1"]);
    let server = start_server(&cert).await;
    let ca = ca_file(&cert);
    let client = TlsClient::new(&Roots::CaFile(ca.0.clone())).expect("client");
    let answer = exchange(&client, server.port, Some("127.0.0.1"), Verify::Required)
        .await
        .expect("ip name");
    assert_eq!(answer, "echo:ping");
    // The bracketed IPv6 form of a URL host is accepted as a name too.
    assert!(parse_server_name("[::1]").is_ok());
    assert_eq!(*server.sni_seen.lock().unwrap(), vec![None]);
}

#[tokio::test]
async fn no_name_sends_no_sni_and_cannot_verify() {
    let cert = self_signed(&["localhost"]);
    let server = start_server(&cert).await;
    let ca = ca_file(&cert);
    let client = TlsClient::new(&Roots::CaFile(ca.0.clone())).expect("client");
    let answer = exchange(&client, server.port, None, Verify::None)
        .await
        .expect("no name");
    assert_eq!(answer, "echo:ping");
    assert_eq!(*server.sni_seen.lock().unwrap(), vec![None]);
    let err = exchange(&client, server.port, None, Verify::Required)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(parse_server_name("not a name!").is_err());
}

#[test]
fn bad_ca_files_are_errors_naming_the_file() {
    let missing = Roots::CaFile("/nonexistent/ca.pem".into());
    let err = TlsClient::new(&missing).err().expect("missing file");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

    let empty = tempfile_path::write(b"not a certificate\n");
    let err = TlsClient::new(&Roots::CaFile(empty.0.clone()))
        .err()
        .expect("no certificate");
    assert!(err.to_string().contains("no certificate found"), "{err}");

    let mut two = self_signed(&["a.example"]).pem;
    two.push_str(&self_signed(&["b.example"]).pem);
    let both = tempfile_path::write(two.as_bytes());
    assert!(TlsClient::new(&Roots::CaFile(both.0.clone())).is_ok());
    assert_eq!(roots_from_keyword("@system-ca"), Roots::System);
}
