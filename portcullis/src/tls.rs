//! TLS and mutual TLS for the listener.
//!
//! ```yaml
//! tls:
//!   cert: /etc/portcullis/server.pem     # certificate chain, leaf first (PEM)
//!   key: /etc/portcullis/server.key      # its private key (PKCS#8, PKCS#1 or SEC1 PEM)
//!   client_ca: /etc/portcullis/clients.pem  # optional: trust anchors for client certificates
//!   client_identity: san                 # san (default) | cn
//!   client_cert: required                # required (default with client_ca) | optional
//! ```
//!
//! * [`validate`] turns the file model into a [`TlsConfig`] and loads the files
//!   once, so `check-config` reports an unreadable key or a certificate that
//!   does not match it.
//! * [`TlsState`] holds the live [`rustls::ServerConfig`] behind a lock;
//!   [`TlsState::reload`] (SIGHUP) re-reads every file and swaps it in only if
//!   all of them load. New handshakes use the new configuration; connections
//!   already open keep theirs.
//! * [`handshake`] runs inside each connection's task, bounded by
//!   [`HANDSHAKE_TIMEOUT`], so a slow client never holds up the accept loop.
//!   A verified client certificate becomes a [`PeerCertificate`] that the
//!   per-connection service puts into every request's extensions, where
//!   `authn` turns it into a principal.
//!
//! With `client_cert: required` rustls itself refuses a handshake without a
//! certificate that chains to `client_ca`. With `optional` the handshake
//! accepts any certificate whose private key the client proves it holds, and
//! the chain is verified again right after the handshake: only a certificate
//! that passes becomes an identity; one that does not is
//! [`PeerCertificate::Refused`] and never authenticates anybody, so the request
//! needs another credential.
//!
//! The crypto provider is rustls' `ring`, the one the upstream client uses.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::ConfigError;

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest client identity taken from a certificate; longer ones are refused.
const MAX_IDENTITY_LEN: usize = 256;

// ---------------------------------------------------------------- file model

/// The `tls:` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_identity: Option<ClientIdentity>,
    client_cert: Option<ClientCertMode>,
}

/// Which certificate field names the client.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIdentity {
    /// The first DNS or URI subject alternative name.
    #[default]
    San,
    /// The subject's common name (exactly one must be present).
    Cn,
}

/// Whether a client certificate is needed to connect.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertMode {
    /// The handshake fails without a valid client certificate.
    #[default]
    Required,
    /// Clients without one (or with one that does not verify) connect and
    /// authenticate with the usual credentials.
    Optional,
}

// ------------------------------------------------------------ validated model

/// Validated TLS settings: where the files are (they are read again on reload).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// Client-certificate authentication, when `client_ca` is set.
    pub client_auth: Option<ClientAuthConfig>,
}

/// Mutual TLS settings.
#[derive(Debug, Clone)]
pub struct ClientAuthConfig {
    /// Trust anchors for client certificates (PEM, one or more).
    pub ca: PathBuf,
    /// The field that becomes the principal's user.
    pub identity: ClientIdentity,
    /// Required or optional.
    pub mode: ClientCertMode,
}

/// A TLS file that could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("tls.{field}: {message}")]
pub struct TlsError {
    /// The configuration key of the file (`cert`, `key`, `client_ca`).
    pub field: &'static str,
    /// What is wrong (names the path, never the key material).
    pub message: String,
}

impl TlsError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        TlsError {
            field,
            message: message.into(),
        }
    }
}

/// Validates the `tls:` section (loading every file once); problems go to `errors`.
pub fn validate(file: Option<TlsFile>, errors: &mut Vec<ConfigError>) -> Option<TlsConfig> {
    let file = file?;
    let before = errors.len();
    if file.client_ca.is_none() {
        for (set, key) in [
            (file.client_identity.is_some(), "client_identity"),
            (file.client_cert.is_some(), "client_cert"),
        ] {
            if set {
                errors.push(ConfigError {
                    location: format!("tls.{key}"),
                    message: "only meaningful with `client_ca`".into(),
                });
            }
        }
    }
    let config = TlsConfig {
        cert: file.cert,
        key: file.key,
        client_auth: file.client_ca.map(|ca| ClientAuthConfig {
            ca,
            identity: file.client_identity.unwrap_or_default(),
            mode: file.client_cert.unwrap_or_default(),
        }),
    };
    if let Err(e) = Loaded::load(&config) {
        errors.push(ConfigError {
            location: format!("tls.{}", e.field),
            message: e.message,
        });
    }
    (errors.len() == before).then_some(config)
}

// -------------------------------------------------------------------- loading

/// One generation of TLS material: the rustls configuration and, with mTLS,
/// the verifier its chains are checked against.
pub struct Loaded {
    server: Arc<ServerConfig>,
    client_auth: Option<(Arc<dyn ClientCertVerifier>, ClientAuthConfig)>,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("client_auth", &self.client_auth.as_ref().map(|(_, c)| c))
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path)
        .map_err(|e| TlsError::new(field, format!("cannot read {}: {e}", path.display())))
}

fn certificates(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(field, format!("{} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            field,
            format!("{} holds no CERTIFICATE block", path.display()),
        ));
    }
    Ok(certs)
}

impl Loaded {
    /// Reads and checks every file of `config`.
    pub fn load(config: &TlsConfig) -> Result<Loaded, TlsError> {
        let provider = provider();
        let chain = certificates("cert", &config.cert)?;
        let key_pem = read("key", &config.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            TlsError::new(
                "key",
                format!(
                    "{} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
                    config.key.display()
                ),
            )
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("cert", format!("no usable TLS versions: {e}")))?;
        let (builder, client_auth) = match &config.client_auth {
            None => (builder.with_no_client_auth(), None),
            Some(auth) => {
                let mut roots = RootCertStore::empty();
                for (i, ca) in certificates("client_ca", &auth.ca)?.into_iter().enumerate() {
                    roots.add(ca).map_err(|e| {
                        TlsError::new(
                            "client_ca",
                            format!(
                                "certificate #{} in {} is not a usable trust anchor: {e}",
                                i + 1,
                                auth.ca.display()
                            ),
                        )
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsError::new("client_ca", e.to_string()))?;
                let installed: Arc<dyn ClientCertVerifier> = match auth.mode {
                    ClientCertMode::Required => verifier.clone(),
                    ClientCertMode::Optional => Arc::new(Tolerant(verifier.clone())),
                };
                (
                    builder.with_client_cert_verifier(installed),
                    Some((verifier, auth.clone())),
                )
            }
        };
        let mut server = builder.with_single_cert(chain, key).map_err(|e| {
            TlsError::new(
                "key",
                format!(
                    "{} cannot be used with {}: {e}",
                    config.key.display(),
                    config.cert.display()
                ),
            )
        })?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Loaded {
            server: Arc::new(server),
            client_auth,
        })
    }
}

/// The live TLS configuration of a listener, swappable while it serves.
#[derive(Debug)]
pub struct TlsState {
    config: TlsConfig,
    current: RwLock<Arc<Loaded>>,
}

impl TlsState {
    /// Loads `config`'s files.
    pub fn new(config: TlsConfig) -> Result<TlsState, TlsError> {
        let loaded = Loaded::load(&config)?;
        Ok(TlsState {
            config,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the certificate, key and client CA. On any problem the error
    /// is logged and returned and the configuration in use stays; otherwise
    /// new handshakes use the new files. Open connections are not touched.
    pub fn reload(&self) -> Result<(), TlsError> {
        match Loaded::load(&self.config) {
            Ok(loaded) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
                tracing::info!(cert = %self.config.cert.display(), "TLS certificates reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload refused; the certificates in use stay");
                Err(e)
            }
        }
    }
}

// ------------------------------------------------------------------ handshake

/// What the client's certificate says about it; in every request's extensions.
#[derive(Debug, Clone)]
pub enum PeerCertificate {
    /// A certificate that chains to `client_ca`.
    Verified(Arc<ClientCert>),
    /// A certificate was presented (`client_cert: optional`) but did not verify.
    Refused,
}

/// A verified client certificate.
#[derive(Debug)]
pub struct ClientCert {
    /// SHA-256 of the leaf certificate's DER, lower-case hex.
    pub fingerprint: String,
    /// The configured field's value; `None` when the certificate lacks it.
    pub identity: Option<String>,
}

/// Runs the TLS handshake on `stream` (bounded by [`HANDSHAKE_TIMEOUT`]).
/// `None` when it fails; the reason is logged at debug level.
pub async fn handshake(
    loaded: &Loaded,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(TlsStream<TcpStream>, Option<PeerCertificate>)> {
    let acceptor = TlsAcceptor::from(loaded.server.clone());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return None;
        }
    };
    let cert = loaded.client_auth.as_ref().and_then(|(verifier, auth)| {
        let chain = stream.get_ref().1.peer_certificates()?;
        let (leaf, intermediates) = chain.split_first()?;
        if auth.mode == ClientCertMode::Optional
            && let Err(e) = verifier.verify_client_cert(leaf, intermediates, UnixTime::now())
        {
            tracing::info!(%peer, error = %e, "client certificate did not verify; it will not authenticate anyone");
            return Some(PeerCertificate::Refused);
        }
        Some(PeerCertificate::Verified(Arc::new(ClientCert {
            fingerprint: hex(&Sha256::digest(leaf.as_ref())),
            identity: identity(leaf.as_ref(), auth.identity),
        })))
    });
    Some((stream, cert))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The chosen field of a DER certificate, if present, unambiguous and printable.
pub fn identity(der: &[u8], which: ClientIdentity) -> Option<String> {
    use x509_cert::Certificate;
    use x509_cert::der::oid::ObjectIdentifier;
    use x509_cert::der::{Decode, Encode};
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::{DirectoryString, GeneralName};
    const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

    let cert = Certificate::from_der(der).ok()?;
    let tbs = &cert.tbs_certificate;
    let value = match which {
        ClientIdentity::San => {
            let (_, san) = tbs.get::<SubjectAltName>().ok()??;
            san.0.iter().find_map(|name| match name {
                GeneralName::DnsName(s) | GeneralName::UniformResourceIdentifier(s) => {
                    Some(s.to_string())
                }
                _ => None,
            })?
        }
        ClientIdentity::Cn => {
            let mut cns = tbs
                .subject
                .0
                .iter()
                .flat_map(|rdn| rdn.0.iter())
                .filter(|atv| atv.oid == COMMON_NAME);
            let cn = cns.next()?;
            if cns.next().is_some() {
                return None; // several CNs: ambiguous
            }
            match DirectoryString::from_der(&cn.value.to_der().ok()?).ok()? {
                DirectoryString::Utf8String(s) => s,
                DirectoryString::PrintableString(s) => s.to_string(),
                DirectoryString::TeletexString(s) => s.to_string(),
            }
        }
    };
    let ok = !value.is_empty()
        && value.len() <= MAX_IDENTITY_LEN
        && !value.chars().any(char::is_control);
    ok.then_some(value)
}

/// `client_cert: optional`: asks for a certificate, lets the handshake finish
/// whatever the chain (the client still has to prove it holds the key), and
/// leaves the chain check to [`handshake`], which re-runs it with the real
/// verifier before trusting anything.
#[derive(Debug)]
struct Tolerant(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Tolerant {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, SanType};

    fn cert(sans: Vec<SanType>, cn: Option<DnValue>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn san_is_the_first_dns_or_uri_name() {
        let der = cert(
            vec![
                SanType::IpAddress("10.0.0.1".parse().unwrap()),
                SanType::Rfc822Name("a@example.com".try_into().unwrap()),
                SanType::DnsName("first.internal".try_into().unwrap()),
                SanType::URI("spiffe://example/second".try_into().unwrap()),
            ],
            None,
        );
        assert_eq!(
            identity(&der, ClientIdentity::San).as_deref(),
            Some("first.internal")
        );
        assert_eq!(identity(&der, ClientIdentity::Cn), None);
        let ip_only = cert(vec![SanType::IpAddress("10.0.0.1".parse().unwrap())], None);
        assert_eq!(identity(&ip_only, ClientIdentity::San), None);
        assert_eq!(identity(&cert(vec![], None), ClientIdentity::San), None);
    }

    #[test]
    fn cn_in_any_string_type_and_nothing_unprintable() {
        let utf8 = cert(vec![], Some(DnValue::Utf8String("app-cn".into())));
        assert_eq!(
            identity(&utf8, ClientIdentity::Cn).as_deref(),
            Some("app-cn")
        );
        let printable = cert(
            vec![],
            Some(DnValue::PrintableString("App CN".try_into().unwrap())),
        );
        assert_eq!(
            identity(&printable, ClientIdentity::Cn).as_deref(),
            Some("App CN")
        );
        let control = cert(vec![], Some(DnValue::Utf8String("evil\nuser".into())));
        assert_eq!(identity(&control, ClientIdentity::Cn), None);
        let long = cert(vec![], Some(DnValue::Utf8String("x".repeat(300))));
        assert_eq!(identity(&long, ClientIdentity::Cn), None);
        assert_eq!(identity(b"not a certificate", ClientIdentity::Cn), None);
    }
}
