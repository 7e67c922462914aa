//! FTPS for the test server: certificate loading, and a rustls config per control connection.
//!
//! Explicit FTPS (`AUTH TLS`) is libunftp's own. libunftp has no implicit FTPS, so for
//! [`TlsFiles::implicit`] the test server does the TLS handshake on the client's connection
//! itself and relays the decrypted control channel to libunftp over a loopback TCP connection;
//! data connections go straight to libunftp (they are TLS because the client sends `PROT P`).
//!
//! Like vsftpd, which forks a process with its own TLS session cache for each control connection,
//! every control connection gets its own rustls config and session cache: a data connection can
//! only resume the session of its own control connection. The cache is stateful (no ticket
//! encryption key), for TLS 1.2 session IDs and TLS 1.3 tickets alike, so [`super::Stats`] can
//! count every handshake and every resumption.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, atomic::Ordering};

use suppaftp::tokio_rustls::rustls::{
    self, ServerConfig, SupportedProtocolVersion,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert, StoresServerSessions},
    sign::CertifiedKey,
};

use super::Shared;

/// The certificate and key of an FTPS test server, and how it offers TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// Implicit FTPS: TLS from the first byte (otherwise explicit, `AUTH TLS`).
    pub implicit: bool,
    /// Offer TLS 1.2 only (otherwise 1.2 and 1.3).
    pub tls12_only: bool,
    /// Refuse plain-text logins and data connections (libunftp: "534 A TLS connection is
    /// required...").
    pub required: bool,
}

impl TlsFiles {
    /// Explicit FTPS with this certificate chain and key, TLS 1.2 and 1.3.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
            implicit: false,
            tls12_only: false,
            required: false,
        }
    }

    /// TLS required on the control and data connections.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Implicit FTPS instead.
    pub fn implicit(mut self) -> Self {
        self.implicit = true;
        self
    }

    /// TLS 1.2 only.
    pub fn tls12_only(mut self) -> Self {
        self.tls12_only = true;
        self
    }
}

/// Loaded certificate and settings, shared by all control connections of a server.
#[derive(Debug)]
pub(super) struct ServerTls {
    key: Arc<CertifiedKey>,
    pub(super) implicit: bool,
    pub(super) required: bool,
    tls12_only: bool,
}

fn invalid(what: &str, path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("test server TLS {what} {}: {e}", path.display()),
    )
}

impl ServerTls {
    /// Reads and checks the certificate chain and key.
    pub(super) fn load(files: &TlsFiles) -> std::io::Result<ServerTls> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| invalid("certificate", &files.cert, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("certificate", &files.cert, e))?;
        if certs.is_empty() {
            return Err(invalid("certificate", &files.cert, "no certificate"));
        }
        let key =
            PrivateKeyDer::from_pem_file(&files.key).map_err(|e| invalid("key", &files.key, e))?;
        let key = CertifiedKey::from_der(certs, key, &ring::default_provider())
            .map_err(|e| invalid("key", &files.key, e))?;
        Ok(ServerTls {
            key: Arc::new(key),
            implicit: files.implicit,
            required: files.required,
            tls12_only: files.tls12_only,
        })
    }

    /// A rustls config for one control connection and its data connections, with a session
    /// cache of its own, counting handshakes and resumptions into `shared`.
    pub(super) fn connection_config(
        &self,
        shared: &Arc<Shared>,
    ) -> std::io::Result<Arc<ServerConfig>> {
        let versions: &[&'static SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS12, &rustls::version::TLS13]
        };
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(versions)
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(CountingResolver {
                key: self.key.clone(),
                shared: shared.clone(),
            }));
        // No ticketer: resumption is stateful, through this connection's own cache.
        config.session_storage = Arc::new(SessionCache {
            sessions: Mutex::new(HashMap::new()),
            shared: shared.clone(),
        });
        Ok(Arc::new(config))
    }
}

/// The one certificate, counting handshakes (rustls asks for a certificate on every handshake,
/// resumed or not).
#[derive(Debug)]
struct CountingResolver {
    key: Arc<CertifiedKey>,
    shared: Arc<Shared>,
}

impl ResolvesServerCert for CountingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.shared
            .counters
            .tls_handshakes
            .fetch_add(1, Ordering::Relaxed);
        Some(self.key.clone())
    }
}

/// The session cache of one control connection; a hit is a resumption.
#[derive(Debug)]
struct SessionCache {
    sessions: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    shared: Arc<Shared>,
}

impl SessionCache {
    fn hit(&self, found: Option<Vec<u8>>) -> Option<Vec<u8>> {
        if found.is_some() {
            self.shared
                .counters
                .tls_resumed
                .fetch_add(1, Ordering::Relaxed);
        }
        found
    }
}

impl StoresServerSessions for SessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= 1024 {
            map.clear();
        }
        map.insert(key, value);
        true
    }

    /// TLS 1.2 session IDs.
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let found = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        self.hit(found)
    }

    /// TLS 1.3 tickets (single use).
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let found = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        self.hit(found)
    }

    fn can_cache(&self) -> bool {
        true
    }
}
