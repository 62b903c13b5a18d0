//! TLS for the control stream: the server's identity (generated once into the data dir, or
//! provided by the operator) and the client's verifier that accepts exactly one pinned
//! certificate.
//!
//! Invariants: the private key file is created with mode 0600 before any byte is written;
//! the client never sends its token to a server whose leaf certificate hash differs from
//! the pin (the check happens inside the TLS handshake).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use portunus_core::endpoint::San;
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::secret::sha256_hex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// File names inside the data dir.
pub const CERT_FILE: &str = "server.crt";
/// Private key file, mode 0600.
pub const KEY_FILE: &str = "server.key";

/// The ring provider: the only crypto provider in the dependency graph.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default provider. Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The server's certificate and key.
#[derive(Clone)]
pub struct TlsIdentity {
    /// PEM of the leaf certificate.
    pub cert_pem: String,
    /// PEM of the private key.
    pub key_pem: String,
    /// SHA-256 of the leaf's DER, lowercase hex: what clients pin.
    pub sha256: String,
    /// The leaf's subject alternative names.
    pub sans: Vec<San>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("sha256", &self.sha256)
            .field("sans", &self.sans)
            .finish_non_exhaustive()
    }
}

/// Loads `server.crt`/`server.key` from `dir`, or generates a self-signed pair covering
/// `names` (host names and IP literals) when neither exists. Returns the identity and
/// whether it was generated now.
pub fn load_or_generate(dir: &Path, names: &[String]) -> Result<(TlsIdentity, bool), Failure> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let cert_pem = fs::read_to_string(&cert_path).map_err(|e| io_failure("read", &cert_path, e))?;
            let key_pem = fs::read_to_string(&key_path).map_err(|e| io_failure("read", &key_path, e))?;
            Ok((identity_from_pem(cert_pem, key_pem)?, false))
        }
        (false, false) => {
            let mut unique: Vec<String> = Vec::new();
            for name in names {
                let name = name.trim().to_ascii_lowercase();
                if !name.is_empty() && !unique.contains(&name) {
                    unique.push(name);
                }
            }
            let generated = rcgen::generate_simple_self_signed(unique).map_err(|e| {
                Failure::new(ErrorCode::Internal, format!("certificate generation failed: {e}"))
            })?;
            let cert_pem = generated.cert.pem();
            let key_pem = generated.signing_key.serialize_pem();
            write_new_file(&key_path, key_pem.as_bytes(), 0o600)?;
            write_new_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
            Ok((identity_from_pem(cert_pem, key_pem)?, true))
        }
        _ => Err(Failure::new(
            ErrorCode::InvalidConfig,
            format!("{} and {} must both exist or both be absent", cert_path.display(), key_path.display()),
        )),
    }
}

/// Builds an identity from PEM text, computing the pin and reading the SANs.
pub fn identity_from_pem(cert_pem: String, key_pem: String) -> Result<TlsIdentity, Failure> {
    let bad = |what: &str| Failure::new(ErrorCode::InvalidConfig, format!("server certificate: {what}"));
    let der =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| bad("no PEM certificate found"))?;
    rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| bad("no PEM private key found"))?;
    let sans = read_sans(&der).ok_or_else(|| bad("not a parseable X.509 certificate"))?;
    Ok(TlsIdentity { sha256: sha256_hex(der.as_ref()), cert_pem, key_pem, sans })
}

fn read_sans(der: &CertificateDer<'_>) -> Option<Vec<San>> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(dns) => sans.push(San::Dns((*dns).to_owned())),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => sans.push(San::Ip(std::net::IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?))),
                    16 => sans.push(San::Ip(std::net::IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?))),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some(sans)
}

/// Creates `path` exclusively with `mode`, writes `bytes` and syncs it. Never overwrites.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io_failure("create", path, e))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| io_failure("write", path, e))
}

fn io_failure(what: &str, path: &Path, err: std::io::Error) -> Failure {
    Failure::new(ErrorCode::IoError, format!("cannot {what} {}: {err}", path.display()))
}

/// rustls server config for the control listener (ALPN h2).
pub fn server_config(identity: &TlsIdentity) -> Result<rustls::ServerConfig, Failure> {
    let bad = |e: &dyn std::fmt::Display| Failure::new(ErrorCode::InvalidConfig, format!("server TLS: {e}"));
    let cert = CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).map_err(|e| bad(&e))?;
    let key =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| bad(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts exactly one end-entity certificate, identified by its SHA-256, and remembers the
/// hash it saw when it refused one, so the caller can report expected vs got.
#[derive(Debug)]
pub struct PinnedVerifier {
    pin: String,
    provider: Arc<CryptoProvider>,
    refused: Mutex<Option<String>>,
}

impl PinnedVerifier {
    /// A verifier for `pin` (hex, any case).
    pub fn new(pin: &str) -> Arc<Self> {
        Arc::new(PinnedVerifier {
            pin: pin.to_ascii_lowercase(),
            provider: provider(),
            refused: Mutex::new(None),
        })
    }

    /// The fingerprint of the last refused certificate, if any; clears it.
    pub fn take_refused(&self) -> Option<String> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The pinned fingerprint.
    pub fn pin(&self) -> &str {
        &self.pin
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = sha256_hex(end_entity.as_ref());
        if portunus_core::secret::constant_time_eq(got.as_bytes(), self.pin.as_bytes()) {
            Ok(ServerCertVerified::assertion())
        } else {
            *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(got);
            Err(rustls::Error::General("server certificate does not match the pinned fingerprint".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// rustls client config that trusts only the pinned certificate (ALPN h2).
pub fn pinned_client_config(verifier: Arc<PinnedVerifier>) -> Result<rustls::ClientConfig, Failure> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::new(ErrorCode::Internal, format!("client TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
