//! TLS for FTPS: the rustls client configuration, certificate verification, and the connector
//! suppaftp uses for the control connection and every data connection of one session.
//!
//! * Verification is on by default, against the system's root certificates
//!   (`rustls-native-certs`: `/etc/ssl/certs` and friends, or `SSL_CERT_FILE`/`SSL_CERT_DIR`), or
//!   only against the certificates of `--ca-file`. `--insecure` accepts any certificate but still
//!   checks the handshake signatures (so the peer at least holds the key of the certificate it
//!   shows).
//! * **One `ClientConfig` per control session.** suppaftp keeps the connector that secured the
//!   control connection and uses it for every data connection of that session. Each session's
//!   config has its own in-memory resumption cache, so each data connection resumes the TLS
//!   session of *its own* control connection: vsftpd with `require_ssl_reuse=YES` (its default)
//!   forks a process per control connection with its own session cache, and refuses a data
//!   connection that does not resume that process's session ("522 SSL connection failed; session
//!   reuse required"). One cache shared by all sessions could offer session A's ticket on session
//!   B's data connection. TLS 1.2 (session IDs or tickets) and TLS 1.3 (tickets) both resume this
//!   way; the tickets a TLS 1.3 server sends after the control handshake are read with the next
//!   reply, before the first data connection opens.
//! * The server name (SNI and certificate check) is the URL's host: a DNS name, or an IP address
//!   for an IP literal (checked against the certificate's IP SANs).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use suppaftp::tokio::{AsyncRustlsStream, AsyncTlsConnector};
use suppaftp::tokio_rustls::TlsConnector;
use suppaftp::tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use suppaftp::tokio_rustls::rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, WebPkiServerVerifier,
};
use suppaftp::tokio_rustls::rustls::crypto::{self, CryptoProvider};
use suppaftp::tokio_rustls::rustls::pki_types::pem::PemObject;
use suppaftp::tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use suppaftp::tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, HandshakeKind, RootCertStore,
    SignatureScheme,
};
use suppaftp::{FtpError, FtpResult};
use tokio::net::TcpStream;

use crate::ftp::url::{FtpUrl, Host};

/// Sessions remembered per control session for resumption. One server name is ever used, so a
/// few suffice (rustls keeps up to 8 TLS 1.3 tickets per name whatever this is).
const SESSION_CACHE: usize = 8;

/// How the server's certificate is checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Verify {
    /// Against the system's root certificates (the default).
    #[default]
    SystemRoots,
    /// Only against the certificates in this PEM file (`--ca-file`).
    CaFile(PathBuf),
    /// Not at all (`--insecure`); the handshake signatures are still checked.
    Insecure,
}

/// A TLS failure, as the user sees it: one line saying what went wrong and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The server answered `AUTH TLS` with a refusal: it has no TLS (or does not offer it).
    #[error(
        "{host} refused AUTH TLS ({reply}): the server does not offer TLS; drop --ftps/ftpes:// \
         to connect without it"
    )]
    NotOffered { host: String, reply: String },
    /// TLS is up, but the server refused `PBSZ 0` or `PROT P`: data would travel in clear text.
    #[error(
        "{host} accepted TLS but refused {command} ({reply}), so the data connections cannot be \
         protected; drop --ftps/ftpes:// to connect without TLS"
    )]
    NoProtection {
        host: String,
        command: String,
        reply: String,
    },
    /// The certificate failed verification.
    #[error(
        "the TLS certificate of {host} is not trusted: {detail}; pass --ca-file with the \
         certificate (PEM) of the authority that signed it, or --insecure to skip verification"
    )]
    Untrusted { host: String, detail: String },
    /// The handshake failed for another reason (not TLS on that port, no common cipher...).
    #[error("TLS with {host} failed on the {channel} connection: {detail}{hint}")]
    Handshake {
        host: String,
        /// "control" or "data".
        channel: &'static str,
        detail: String,
        /// What the server said on the control connection, or advice.
        hint: String,
        /// Trying again cannot help (the server said why it refused).
        permanent: bool,
    },
    /// No usable root certificates, or an unusable `--ca-file`, or a host name TLS cannot use.
    #[error("{0}")]
    Setup(String),
}

impl TlsError {
    /// True when a new session may succeed where this one failed (a handshake cut short).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TlsError::Handshake {
                permanent: false,
                ..
            }
        )
    }
}

/// What one session's TLS did: handshakes, resumptions, and the last certificate failure.
#[derive(Debug, Default)]
pub struct TlsCounters {
    /// Completed handshakes: the control connection's, then one per data connection.
    handshakes: AtomicU64,
    /// Of these, the ones that resumed an earlier session (abbreviated handshakes).
    resumed: AtomicU64,
    /// Handshakes started (a failed one counts here only).
    started: AtomicU64,
    /// Why the last certificate check failed, if one did.
    cert_error: Mutex<Option<String>>,
}

impl TlsCounters {
    /// (completed handshakes, resumed handshakes).
    pub fn handshakes(&self) -> (u64, u64) {
        (
            self.handshakes.load(Ordering::Relaxed),
            self.resumed.load(Ordering::Relaxed),
        )
    }

    /// Whether any handshake was started (for explicit TLS: the server accepted `AUTH TLS`).
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed) > 0
    }

    /// Why the certificate was refused, if it was.
    pub fn cert_error(&self) -> Option<String> {
        self.cert_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The TLS side of one download: shared settings, and a fresh client config per session.
pub struct TlsClient {
    /// Roots, verifier, protocol versions; no resumption state (each session adds its own).
    base: ClientConfig,
    verifier: Arc<dyn ServerCertVerifier>,
    name: ServerName<'static>,
    host: String,
    implicit: bool,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("name", &self.name)
            .field("implicit", &self.implicit)
            .finish()
    }
}

impl TlsClient {
    /// Builds the client for `url` (which must use TLS): loads the roots `verify` names.
    pub fn new(url: &FtpUrl, verify: &Verify) -> Result<TlsClient, TlsError> {
        let provider = Arc::new(crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match verify {
            Verify::Insecure => Arc::new(AcceptAnyCertificate(provider.clone())),
            Verify::SystemRoots => webpki_verifier(system_roots()?, &provider)?,
            Verify::CaFile(path) => webpki_verifier(ca_file_roots(path)?, &provider)?,
        };
        let base = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(format!("cannot set up TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        let host = url.host_for_connect();
        let name = match &url.host {
            Host::Domain(d) => ServerName::try_from(d.clone()).map_err(|_| {
                TlsError::Setup(format!(
                    "the host name '{d}' cannot be used for TLS (not a valid DNS name)"
                ))
            })?,
            Host::Ipv4(a) => ServerName::IpAddress(std::net::IpAddr::V4(*a).into()),
            Host::Ipv6(a) => ServerName::IpAddress(std::net::IpAddr::V6(*a).into()),
        };
        Ok(TlsClient {
            base,
            verifier,
            name,
            host,
            implicit: url.tls == crate::ftp::url::Tls::Implicit,
        })
    }

    /// Implicit TLS (`ftps://`): the control connection starts with the handshake.
    pub fn implicit(&self) -> bool {
        self.implicit
    }

    /// The host as the user wrote it, for messages.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A connector for one control session: its own client config with its own resumption
    /// cache (see the module documentation), and the counters it reports to.
    pub(crate) fn session(&self) -> (Connector, Arc<TlsCounters>) {
        let counters = Arc::new(TlsCounters::default());
        let mut config = self.base.clone();
        let store: Arc<dyn ClientSessionStore> =
            Arc::new(ClientSessionMemoryCache::new(SESSION_CACHE));
        config.resumption = Resumption::store(store.clone());
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(Recording {
                inner: self.verifier.clone(),
                counters: counters.clone(),
            }));
        let connector = Connector {
            tls: TlsConnector::from(Arc::new(config)),
            name: self.name.clone(),
            counters: counters.clone(),
            store,
        };
        (connector, counters)
    }

    /// The user-facing error for a handshake that failed with `detail` (suppaftp passes only the
    /// text on): a certificate failure if the verifier recorded one.
    pub(crate) fn handshake_error(
        &self,
        counters: &TlsCounters,
        channel: &'static str,
        detail: String,
        server_said: Option<String>,
    ) -> TlsError {
        if let Some(detail) = counters.cert_error() {
            return TlsError::Untrusted {
                host: self.host.clone(),
                detail,
            };
        }
        let (hint, permanent) = match server_said {
            Some(reply) => (format!("; the server said: {reply}"), true),
            None if channel == "control" && self.implicit => (
                "; is this port implicit FTPS? (ftps:// is TLS from the first byte, usually on \
                 port 990; for AUTH TLS on port 21 use ftpes:// or --ftps)"
                    .to_owned(),
                false,
            ),
            None => (String::new(), false),
        };
        TlsError::Handshake {
            host: self.host.clone(),
            channel,
            detail,
            hint,
            permanent,
        }
    }
}

/// The verifier of `--ca-file` or the system roots.
fn webpki_verifier(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Setup(format!("cannot set up certificate verification: {e}")))?;
    Ok(verifier)
}

/// The system's trusted roots; an error when there are none.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = match found.errors.first() {
            Some(e) => format!(" ({e})"),
            None => String::new(),
        };
        return Err(TlsError::Setup(format!(
            "no trusted root certificates found on this system{why}, so no server certificate \
             can be verified; install the ca-certificates package, or pass --ca-file with the \
             server's CA certificate (PEM)"
        )));
    }
    Ok(roots)
}

/// The certificates of a PEM file (`--ca-file`) as the only roots.
fn ca_file_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let shown = path.display();
    let pem = std::fs::read(path)
        .map_err(|e| TlsError::Setup(format!("cannot read --ca-file {shown}: {e}")))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Setup(format!("--ca-file {shown} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Setup(format!(
            "--ca-file {shown} contains no certificate (expected PEM blocks \
             '-----BEGIN CERTIFICATE-----')"
        )));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            TlsError::Setup(format!(
                "--ca-file {shown} has a certificate that cannot be used: {e}"
            ))
        })?;
    }
    Ok(roots)
}

/// Describes a certificate failure in words.
fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "it is not signed by a trusted certificate authority (unknown issuer; a self-signed \
             certificate looks like this too)"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(c) => c.to_string(),
        other => other.to_string(),
    }
}

/// The configured verifier, remembering why it refused a certificate (suppaftp reports a
/// handshake failure as text only).
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    counters: Arc<TlsCounters>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| {
                *self
                    .counters
                    .cert_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(describe(e));
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `--insecure`: any certificate is accepted, but the handshake signatures are verified with
/// the crypto provider, as usual.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The connector of one session, kept by suppaftp for all its data connections. It uses the
/// server name from the URL (not the text suppaftp passes) and counts handshakes and
/// resumptions.
pub(crate) struct Connector {
    tls: TlsConnector,
    name: ServerName<'static>,
    counters: Arc<TlsCounters>,
    /// This session's resumption cache (the config holds it; kept here for the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    store: Arc<dyn ClientSessionStore>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("name", &self.name)
            .finish()
    }
}

#[async_trait::async_trait]
impl AsyncTlsConnector for Connector {
    type Stream = AsyncRustlsStream;

    async fn connect(&self, _domain: &str, stream: TcpStream) -> FtpResult<AsyncRustlsStream> {
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        let tls = self
            .tls
            .connect(self.name.clone(), stream)
            .await
            .map_err(|e| FtpError::SecureError(e.to_string()))?;
        self.counters.handshakes.fetch_add(1, Ordering::Relaxed);
        if tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) {
            self.counters.resumed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(AsyncRustlsStream::from(tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> FtpUrl {
        FtpUrl::parse(s).unwrap()
    }

    #[test]
    fn server_name_is_the_host_or_its_ip_address() {
        let c = TlsClient::new(&url("ftpes://Files.Example/x"), &Verify::Insecure).unwrap();
        assert_eq!(
            c.name,
            ServerName::try_from("files.example".to_owned()).unwrap()
        );
        assert!(!c.implicit());
        let c = TlsClient::new(&url("ftps://127.0.0.1/x"), &Verify::Insecure).unwrap();
        assert!(matches!(c.name, ServerName::IpAddress(_)), "{:?}", c.name);
        assert!(c.implicit());
        let c = TlsClient::new(&url("ftps://[::1]:2990/x"), &Verify::Insecure).unwrap();
        assert!(matches!(c.name, ServerName::IpAddress(_)), "{:?}", c.name);
        assert_eq!(c.host(), "::1");
    }

    #[test]
    fn ca_file_problems_are_one_line_setup_errors() {
        let dir = tempfile::tempdir().unwrap();
        let u = url("ftpes://h/x");
        let missing = dir.path().join("missing.pem");
        let err = TlsClient::new(&u, &Verify::CaFile(missing)).unwrap_err();
        assert!(matches!(err, TlsError::Setup(_)), "{err}");
        assert!(err.to_string().contains("cannot read --ca-file"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = TlsClient::new(&u, &Verify::CaFile(empty)).unwrap_err();
        assert!(err.to_string().contains("contains no certificate"), "{err}");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn each_session_gets_its_own_resumption_cache() {
        let c = TlsClient::new(&url("ftpes://h/x"), &Verify::Insecure).unwrap();
        let (a, _) = c.session();
        let (b, _) = c.session();
        assert!(
            !Arc::ptr_eq(a.tls.config(), b.tls.config()),
            "one config per session"
        );
        // Different caches: what one session stores is invisible to the other.
        let name = ServerName::try_from("h").unwrap();
        a.store
            .set_kx_hint(name.clone(), rustls::NamedGroup::X25519);
        assert!(a.store.kx_hint(&name).is_some());
        assert!(b.store.kx_hint(&name).is_none());
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = TlsError::NotOffered {
            host: "h".into(),
            reply: "502 TLS/SSL not configured".into(),
        };
        assert!(e.to_string().contains("drop --ftps/ftpes://"), "{e}");
        let e = TlsError::Untrusted {
            host: "h".into(),
            detail: "x".into(),
        };
        assert!(e.to_string().contains("--ca-file"), "{e}");
        assert!(e.to_string().contains("--insecure"), "{e}");
        assert!(!e.is_transient());
    }
}
