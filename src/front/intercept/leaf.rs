//! Leaf certificates for intercepted hosts: issued by the CA on first use (rcgen), one TLS server config per name kept in a bounded in-memory cache. No sockets, no files.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::StoresServerSessions;
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::ServerConfig;

use super::ca::{random_serial, Ca};
use crate::metrics::Metrics;

/// How far back a leaf's validity starts (clients whose clock is behind still accept it).
pub const LEAF_BACKDATE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a leaf is valid after it is issued (never past the CA's own end).
pub const LEAF_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Names whose server config is kept; the least used beyond this are issued again on demand.
pub const LEAF_CACHE_NAMES: u64 = 1024;
/// How long a cached leaf is used: well within its lifetime, so a served leaf always has at
/// least 29 days left.
const LEAF_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// TLS sessions kept for resumption, shared by all names.
const TLS_SESSIONS: usize = 4096;

/// Issues the leaf for `name` (a host name or an IP literal, lower-case), for the key `key`:
/// SAN `name` (an IP SAN for an address), common name `name` when it fits (64 characters),
/// server-auth only, a random serial, valid from `now - LEAF_BACKDATE` to
/// `min(now + LEAF_LIFETIME, CA's end)`, signed by `ca`. Pure apart from the random serial.
pub fn issue(
    ca: &Ca,
    key: &KeyPair,
    name: &str,
    now: SystemTime,
) -> Result<CertificateDer<'static>, String> {
    let mut params = CertificateParams::default();
    let san = match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(
            name.try_into()
                .map_err(|e| format!("cannot name {name:?} in a certificate: {e}"))?,
        ),
    };
    params.subject_alt_names = vec![san];
    let mut dn = DistinguishedName::new();
    if name.len() <= 64 {
        dn.push(DnType::CommonName, name);
    }
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    params.not_before = (now - LEAF_BACKDATE).into();
    params.not_after = (now + LEAF_LIFETIME).min(ca.not_after()).into();
    let cert = params
        .signed_by(key, ca.issuer())
        .map_err(|e| format!("cannot sign a certificate for {name}: {e}"))?;
    Ok(cert.der().clone())
}

/// The CA plus the cache of per-name server configs.
///
/// All leaves share one ECDSA P-256 key made at start-up and held only in memory (as mitmproxy
/// does): a leaf then costs one signature, not a key generation, and the CA's key signs
/// certificates only, never a handshake.
pub struct Leaves {
    ca: Ca,
    key: KeyPair,
    signing_key: Arc<dyn SigningKey>,
    sessions: Arc<dyn StoresServerSessions>,
    configs: moka::sync::Cache<String, Arc<ServerConfig>>,
    metrics: Arc<Metrics>,
}

impl Leaves {
    pub fn new(ca: Ca, metrics: Arc<Metrics>) -> Result<Leaves, String> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot make the leaf key: {e}"))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| format!("cannot use the leaf key: {e}"))?;
        Ok(Leaves {
            ca,
            key,
            signing_key,
            sessions: rustls::server::ServerSessionMemoryCache::new(TLS_SESSIONS),
            configs: moka::sync::Cache::builder()
                .max_capacity(LEAF_CACHE_NAMES)
                .time_to_live(LEAF_CACHE_TTL)
                .build(),
            metrics,
        })
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The TLS server config presenting the leaf for `name` (lower-case host name or IP
    /// literal), issued now unless cached. HTTP/1.1 only (ALPN `http/1.1`).
    pub fn server_config(&self, name: &str, now: SystemTime) -> Result<Arc<ServerConfig>, String> {
        self.configs
            .try_get_with_by_ref(name, || self.build(name, now))
            .map_err(|e| e.to_string())
    }

    /// Names whose config is cached now.
    pub fn cached(&self) -> u64 {
        self.configs.run_pending_tasks();
        self.configs.entry_count()
    }

    fn build(&self, name: &str, now: SystemTime) -> Result<Arc<ServerConfig>, String> {
        let leaf = issue(&self.ca, &self.key, name, now)?;
        Metrics::inc(&self.metrics.intercept_leaves_issued);
        let certified = CertifiedKey::new(vec![leaf], self.signing_key.clone());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.session_storage = self.sessions.clone();
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn ca() -> Ca {
        let (cert, key) = Ca::generate("test", now()).unwrap();
        Ca::from_pem(&cert, &key, now(), "ca.pem", "ca.key").unwrap()
    }

    fn leaf_key() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    /// Verifies `leaf` for `name` at `at` as a client trusting only `ca` would.
    fn verify(
        ca: &Ca,
        leaf: &CertificateDer<'_>,
        name: &str,
        at: SystemTime,
    ) -> Result<(), String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let at = UnixTime::since_unix_epoch(at.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        verifier
            .verify_server_cert(leaf, &[], &name, &[], at)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_leaf_names_its_host_and_chains_to_the_ca() {
        let (ca, key) = (ca(), leaf_key());
        let der = issue(&ca, &key, "files.example.org", now()).unwrap();
        verify(&ca, &der, "files.example.org", now()).unwrap();
        assert!(verify(&ca, &der, "other.example.org", now()).is_err());

        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let (_, ca_x509) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert_eq!(x509.issuer(), ca_x509.subject());
        assert!(!x509.is_ca());
        let san = x509.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            format!("{:?}", san.general_names),
            "[DNSName(\"files.example.org\")]"
        );
        let start = now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let v = x509.validity();
        assert_eq!(v.not_before.timestamp(), start - 7 * 24 * 3600);
        assert_eq!(v.not_after.timestamp(), start + 30 * 24 * 3600);
        // Valid for the whole window, and not after it.
        verify(&ca, &der, "files.example.org", now() + LEAF_LIFETIME).unwrap();
        let after = now() + LEAF_LIFETIME + Duration::from_secs(1);
        assert!(verify(&ca, &der, "files.example.org", after).is_err());
    }

    #[test]
    fn an_address_gets_an_ip_san() {
        let (ca, key) = (ca(), leaf_key());
        for ip in ["127.0.0.1", "::1"] {
            let der = issue(&ca, &key, ip, now()).unwrap();
            verify(&ca, &der, ip, now()).unwrap();
            let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
            let san = x509.subject_alternative_name().unwrap().unwrap().value;
            assert!(
                format!("{:?}", san.general_names).starts_with("[IPAddress("),
                "{ip}: {san:?}"
            );
        }
    }

    #[test]
    fn serials_differ_and_no_leaf_outlives_its_ca() {
        let (ca, key) = (ca(), leaf_key());
        let a = issue(&ca, &key, "a.example", now()).unwrap();
        let b = issue(&ca, &key, "a.example", now()).unwrap();
        let serial = |d: &CertificateDer<'_>| {
            x509_parser::parse_x509_certificate(d)
                .unwrap()
                .1
                .raw_serial()
                .to_vec()
        };
        assert_ne!(serial(&a), serial(&b));
        let late = ca.not_after() - Duration::from_secs(3600);
        let der = issue(&ca, &key, "a.example", late).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let end = ca
            .not_after()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(x509.validity().not_after.timestamp(), end.as_secs() as i64);
    }

    #[test]
    fn configs_are_issued_once_per_name_and_counted() {
        let metrics = Arc::new(Metrics::default());
        let leaves = Leaves::new(ca(), metrics.clone()).unwrap();
        let a = leaves.server_config("a.example", now()).unwrap();
        let again = leaves.server_config("a.example", now()).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        leaves.server_config("b.example", now()).unwrap();
        assert_eq!(Metrics::get(&metrics.intercept_leaves_issued), 2);
        assert_eq!(leaves.cached(), 2);
        assert_eq!(a.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
