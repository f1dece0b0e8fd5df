//! The cluster CA and the TLS configurations every Chorus connection uses (issue 6, point 1).
//!
//! ```text
//!   chorus ca init / chorus up ──▶ Ca::create ──▶ DIR/ca.crt, DIR/ca.key (0600)
//!   ctld start  ──▶ Ca::load ──▶ issue_controller (in memory: SANs = its addresses,
//!                                chorus:controller:ID, server + client auth)
//!   noded Join  ──▶ ctld: issue_node (the node's own ed25519 key, chorus:node:NAME)
//!   chorus user cert ──▶ issue_user (the user's key made where the user is)
//!   every server: server_tls (client certificates from the CA: optional on the client and
//!                 node listener, required on the peer listener)
//!   every client: client_tls (trusts the CA only) ──▶ https://HOST:PORT
//!   a server reads who called: peer certificate ──▶ principal_of ──▶ core::identity::Principal
//! ```
//!
//! rustls checks the chain, the validity period and the key usage; this module only reads
//! the identity out of a certificate the handshake already verified.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chorus_core::identity::{IdentityError, Principal, User};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The CA's certificate and key in its directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";

const DAY: u64 = 86_400;
/// The CA lasts ten years; what it issues, a year (controllers make theirs at every start).
pub const CA_DAYS: u64 = 3650;
pub const LEAF_DAYS: u64 = 365;

/// Why a certificate or key cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "no cluster CA in {}: create one with `chorus ca init {}` (a controller group shares one: copy it)",
        dir.display(), dir.display()
    )]
    NoCa { dir: PathBuf },
    #[error("{} is readable by others (mode {mode:o}): chmod 600 it", path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{what}: {why}")]
    Bad { what: String, why: String },
    #[error("the certificate's identity: {0}")]
    Identity(#[from] IdentityError),
}

fn bad(what: impl Into<String>, why: impl ToString) -> TlsError {
    TlsError::Bad { what: what.into(), why: why.to_string() }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.to_owned(), source }
}

/// Writes a secret (a key, a token) readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(contents.as_bytes()).and_then(|()| f.sync_all()).map_err(io(path))
}

/// Reads a secret, refusing one that others may read.
pub fn read_private(path: &Path) -> Result<String, TlsError> {
    let mode = std::fs::metadata(path).map_err(io(path))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(TlsError::Exposed { path: path.to_owned(), mode: mode & 0o777 });
    }
    std::fs::read_to_string(path).map_err(io(path))
}

/// Reads a file that is not secret (a certificate).
pub fn read_public(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn at(secs: u64) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(secs as i64).map_err(|e| bad("time", e))
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f; // a positive integer
    SerialNumber::from_slice(&b)
}

/// An ed25519 public key as rcgen signs for it: the node keeps the secret.
struct Ed25519Public<'a>(&'a [u8; 32]);

impl PublicKeyData for Ed25519Public<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

/// A certificate issued with a key made for it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster's certificate authority. Every controller of a group holds the same one: any
/// of them may lead, and the leader issues node certificates.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA for `cluster` (an ECDSA P-256 key), valid from `now` for [`CA_DAYS`].
    pub fn create(cluster: &str, now: u64) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(|e| bad("CA key", e))?;
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, format!("Chorus cluster CA ({cluster})"));
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = at(now.saturating_sub(3600))?;
        p.not_after = at(now + CA_DAYS * DAY)?;
        p.serial_number = Some(random_serial());
        let cert = p.self_signed(&key).map_err(|e| bad("CA certificate", e))?;
        Ok(Self { cert_pem: cert.pem(), cert_der: cert.der().to_vec(), key })
    }

    /// Reads `DIR/ca.crt` and `DIR/ca.key` (which only its owner may read).
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let (cert, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if !cert.exists() || !key.exists() {
            return Err(TlsError::NoCa { dir: dir.to_owned() });
        }
        let cert_pem = read_public(&cert)?;
        let key = KeyPair::from_pem(&read_private(&key)?).map_err(|e| bad(CA_KEY, e))?;
        let cert_der = pem_der(&cert_pem).ok_or_else(|| bad(CA_CERT, "no certificate"))?;
        let ca = Self { cert_pem, cert_der, key };
        ca.issuer()?;
        Ok(ca)
    }

    /// Writes `DIR/ca.crt` and `DIR/ca.key` (0600), making DIR (0700) if needed.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        write_private(&dir.join(CA_KEY), &self.key.serialize_pem())?;
        let cert = dir.join(CA_CERT);
        std::fs::write(&cert, &self.cert_pem).map_err(io(&cert))
    }

    /// Loads the CA in `dir`, or makes and saves one there if it has none.
    pub fn load_or_create(dir: &Path, cluster: &str, now: u64) -> Result<Self, TlsError> {
        match Self::load(dir) {
            Err(TlsError::NoCa { .. }) if !dir.join(CA_KEY).exists() => {
                let ca = Self::create(cluster, now)?;
                ca.save(dir)?;
                Ok(ca)
            }
            other => other,
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, TlsError> {
        Issuer::from_ca_cert_der(&self.cert_der.clone().into(), &self.key)
            .map_err(|e| bad(CA_CERT, e))
    }

    fn sign(
        &self,
        who: &Principal,
        key: &impl PublicKeyData,
        hosts: &[String],
        now: u64,
        days: u64,
    ) -> Result<String, TlsError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, who.to_string());
        p.not_before = at(now.saturating_sub(3600))?;
        p.not_after = at(now + days * DAY)?;
        p.serial_number = Some(random_serial());
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        for uri in who.uris() {
            p.subject_alt_names.push(SanType::URI(uri.try_into().map_err(|e| bad("URI", e))?));
        }
        if !hosts.is_empty() {
            p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        for h in hosts {
            p.subject_alt_names.push(match h.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(h.clone().try_into().map_err(|e| bad(h, e))?),
            });
        }
        let cert = p.signed_by(key, &self.issuer()?).map_err(|e| bad("certificate", e))?;
        Ok(cert.pem())
    }

    /// A controller's certificate and a new key: a server for `hosts` (names and addresses
    /// clients reach it by), and a client of its peers.
    pub fn issue_controller(
        &self,
        id: u64,
        hosts: &[String],
        now: u64,
    ) -> Result<Issued, TlsError> {
        let key = KeyPair::generate().map_err(|e| bad("controller key", e))?;
        let cert_pem = self.sign(&Principal::Controller(id), &key, hosts, now, LEAF_DAYS)?;
        Ok(Issued { cert_pem, key_pem: key.serialize_pem() })
    }

    /// A node's certificate, for the ed25519 key it proved it holds.
    pub fn issue_node(
        &self,
        name: &str,
        public_key: &[u8; 32],
        now: u64,
    ) -> Result<String, TlsError> {
        self.sign(
            &Principal::Node(name.to_owned()),
            &Ed25519Public(public_key),
            &[],
            now,
            LEAF_DAYS,
        )
    }

    /// A user's certificate, for the public key (SubjectPublicKeyInfo, DER) the user made.
    pub fn issue_user(
        &self,
        user: &User,
        spki_der: &[u8],
        days: u64,
        now: u64,
    ) -> Result<String, TlsError> {
        let key =
            rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| bad("public key", e))?;
        self.sign(&Principal::User(user.clone()), &key, &[], now, days)
    }
}

/// A new client key (ECDSA P-256): its PEM (to keep, 0600) and its public key (to certify).
pub fn new_client_key() -> Result<(String, Vec<u8>), TlsError> {
    let key = KeyPair::generate().map_err(|e| bad("key", e))?;
    Ok((key.serialize_pem(), key.subject_public_key_info()))
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok().map(|c| c.to_vec())
}

/// What a certificate says: who, for which public key, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub principal: Principal,
    /// The subject public key's bits (for ed25519: the 32-byte key).
    pub public_key: Vec<u8>,
    /// Seconds since the epoch.
    pub not_after: i64,
}

/// Reads a certificate (DER). Only a certificate the TLS handshake verified is to be believed.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad("certificate", e))?;
    let sans = cert.subject_alternative_name().map_err(|e| bad("certificate", e))?;
    let uris = sans.iter().flat_map(|s| s.value.general_names.iter()).filter_map(|g| match g {
        x509_parser::extensions::GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    Ok(CertInfo {
        principal: Principal::from_uris(uris)?,
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// [`cert_info`] of a PEM certificate.
pub fn cert_info_pem(pem: &str) -> Result<CertInfo, TlsError> {
    cert_info(&pem_der(pem).ok_or_else(|| bad("certificate", "no PEM certificate"))?)
}

/// Who a verified peer certificate names.
pub fn principal_of(der: &[u8]) -> Result<Principal, TlsError> {
    Ok(cert_info(der)?.principal)
}

/// A node's ed25519 secret seed as a PKCS#8 PEM key, for its TLS client identity
/// (RFC 8410: a fixed prefix, then the 32 bytes).
pub fn ed25519_key_pem(seed: &[u8; 32]) -> Result<String, TlsError> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(seed);
    let key = KeyPair::from_pkcs8_der_and_sign_algo(&der.into(), &rcgen::PKCS_ED25519)
        .map_err(|e| bad("node key", e))?;
    Ok(key.serialize_pem())
}

/// `host:port` → `https://host:port`; full URLs are kept.
pub fn https(addr: &str) -> String {
    if addr.contains("://") { addr.to_owned() } else { format!("https://{addr}") }
}

/// A client's TLS: it trusts the cluster CA only, and shows `identity` (certificate and key
/// PEM) when it has one.
pub fn client_tls(ca_pem: &str, identity: Option<(&str, &str)>) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    match identity {
        Some((cert, key)) => tls.identity(Identity::from_pem(cert, key)),
        None => tls,
    }
}

/// An endpoint at `addr` over `tls`.
pub fn endpoint(addr: &str, tls: &ClientTlsConfig) -> Result<Endpoint, tonic::transport::Error> {
    Endpoint::from_shared(https(addr))?.tls_config(tls.clone())
}

/// Whether a server asks every client for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Checked when shown; a client without one must bring a token (clients, nodes joining).
    Optional,
    /// No certificate, no connection (the peer API).
    Required,
}

/// A server's TLS: its certificate, and client certificates checked against the CA.
pub fn server_tls(ca_pem: &str, me: &Issued, clients: ClientCerts) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(&me.cert_pem, &me.key_pem))
        .client_ca_root(Certificate::from_pem(ca_pem))
        .client_auth_optional(clients == ClientCerts::Optional)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::identity::Role;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_node_certificate_names_the_node_and_certifies_its_own_key() {
        let ca = Ca::create("test", NOW).unwrap();
        let seed = [3u8; 32];
        let key = chorus_core::attest::public_key(&seed);
        let pem = ca.issue_node("node1", &key, NOW).unwrap();
        let info = cert_info_pem(&pem).unwrap();
        assert_eq!(info.principal, Principal::Node("node1".into()));
        assert_eq!(info.public_key, key.to_vec());
        assert_eq!(info.not_after, (NOW + LEAF_DAYS * DAY) as i64);
        // The key PEM is what rustls reads for the node's side of the handshake.
        let kp = KeyPair::from_pem(&ed25519_key_pem(&seed).unwrap()).expect("PKCS#8 ed25519");
        assert_eq!(kp.public_key_raw(), key);
    }

    #[test]
    fn a_user_certificate_carries_name_uid_gid_and_role() {
        let ca = Ca::create("test", NOW).unwrap();
        let (_, spki) = new_client_key().unwrap();
        let user =
            User { name: "alice".into(), uid: 1001, gid: 100, role: Role::Operator("op1".into()) };
        let pem = ca.issue_user(&user, &spki, 30, NOW).unwrap();
        assert_eq!(cert_info_pem(&pem).unwrap().principal, Principal::User(user));
        let c = ca.issue_controller(2, &["127.0.0.1".into(), "localhost".into()], NOW).unwrap();
        assert_eq!(cert_info_pem(&c.cert_pem).unwrap().principal, Principal::Controller(2));
    }

    #[test]
    fn a_saved_ca_loads_back_and_its_key_must_stay_private() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), "test", NOW).unwrap();
        let again = Ca::load_or_create(dir.path(), "test", NOW).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem(), "made once");
        let mode = std::fs::metadata(dir.path().join(CA_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        again.issue_node("n", &[7u8; 32], NOW).expect("the loaded CA signs");
        std::fs::set_permissions(dir.path().join(CA_KEY), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(matches!(Ca::load(dir.path()), Err(TlsError::Exposed { .. })));
        let empty = tempfile::tempdir().unwrap();
        let e = Ca::load(empty.path()).unwrap_err().to_string();
        assert!(e.contains("chorus ca init"), "{e}");
    }
}
