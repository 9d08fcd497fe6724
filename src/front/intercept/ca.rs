//! The interception CA: made (rcgen, ECDSA P-256) or read from its two PEM files, checked, and described (path, SHA-256 fingerprint); the key file is written once, mode 0600. Never issues leaves (`leaf` does) and never sends the key anywhere.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// How long a CA made here is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far back a new CA's validity starts (tolerates clients whose clock is a little behind).
const CA_BACKDATE: Duration = Duration::from_secs(24 * 3600);
/// The longest machine name put in a CA's common name (which holds 64 characters).
const MAX_MACHINE_NAME: usize = 40;

/// A usable CA: its certificate, and the key that signs leaves.
///
/// Invariants: the certificate is a CA (`basicConstraints CA:TRUE`), was valid at the `now` it
/// was loaded with, and its public key is the signing key's.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    not_after: SystemTime,
}

/// Whether [`load_or_create`] made the CA or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Created,
    Existing,
}

impl Ca {
    /// A new self-signed CA named "peercache CA on `machine`", valid from a day before `now`
    /// for [`CA_LIFETIME`], allowed to sign leaves only (path length 0). Returns the
    /// certificate and PKCS#8 key, both PEM. Pure apart from the random key and serial.
    pub fn generate(machine: &str, now: SystemTime) -> Result<(String, String), String> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot make a key: {e}"))?;
        let mut params = CertificateParams::default();
        let machine: String = machine.chars().take(MAX_MACHINE_NAME).collect();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("peercache CA on {machine}"));
        dn.push(DnType::OrganizationName, "peercache");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = (now - CA_BACKDATE).into();
        params.not_after = (now + CA_LIFETIME).into();
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("cannot sign the CA certificate: {e}"))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Reads a CA from its PEM texts and checks it (see the invariants); `cert_name` and
    /// `key_name` name the files in messages.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        now: SystemTime,
        cert_name: &str,
        key_name: &str,
    ) -> Result<Ca, String> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("{cert_name}: no PEM certificate ({e})"))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| format!("{cert_name}: not a valid certificate ({e})"))?;
        if !x509.is_ca() {
            return Err(format!(
                "{cert_name}: not a CA certificate (it lacks basicConstraints CA:TRUE)"
            ));
        }
        let validity = x509.validity();
        let at = |secs: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
        let (not_before, not_after) = (
            at(validity.not_before.timestamp()),
            at(validity.not_after.timestamp()),
        );
        if now < not_before || now > not_after {
            return Err(format!(
                "{cert_name}: the CA is valid only from {} to {}: move both CA files away and \
                 run `peercache ca` to make a new one",
                httpdate::fmt_http_date(not_before),
                httpdate::fmt_http_date(not_after)
            ));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| {
            format!(
                "{key_name}: not a usable PKCS#8 private key ({e}); a \"BEGIN EC PRIVATE KEY\" or \
                 \"BEGIN RSA PRIVATE KEY\" file converts with \
                 `openssl pkcs8 -topk8 -nocrypt -in OLD -out NEW`"
            )
        })?;
        if key.public_key_raw() != x509.public_key().subject_public_key.data.as_ref() {
            return Err(format!(
                "{key_name}: this key does not belong to the certificate {cert_name}"
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| format!("{cert_name}: cannot sign with this CA ({e})"))?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            issuer,
            not_after,
        })
    }

    /// The certificate as PEM text, as served at `/_peercache/ca.pem`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// SHA-256 of the certificate, as `openssl x509 -fingerprint -sha256` prints it
    /// (upper-case hex pairs joined by colons).
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.cert_der);
        let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        hex.join(":")
    }

    /// The end of the CA's validity; no leaf outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub(super) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

/// A random positive 128-bit serial number (RFC 5280 §4.1.2.2 allows up to 20 bytes).
pub(super) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// Reads the CA at `cert` and `key`; when neither file exists, makes a new one first (key
/// written with mode 0600, each file complete before it appears). One file without the other is
/// an error: a CA is never replaced behind the user's back.
pub fn load_or_create(cert: &Path, key: &Path, now: SystemTime) -> Result<(Ca, Origin), String> {
    let origin = if present(cert, key)? {
        Origin::Existing
    } else {
        let (cert_pem, key_pem) = Ca::generate(&machine_name(), now)?;
        write_new(key, &key_pem, 0o600)?;
        write_new(cert, &cert_pem, 0o644)?;
        Origin::Created
    };
    if let Some(w) = key_warning(key) {
        tracing::warn!("{w}");
    }
    Ok((read(cert, key, now)?, origin))
}

/// What `run` will find, without changing anything: `Ok(true)` when both files exist and make a
/// usable CA, `Ok(false)` when neither exists (the first run makes them), else what is wrong.
pub fn check(cert: &Path, key: &Path, now: SystemTime) -> Result<bool, String> {
    if !present(cert, key)? {
        return Ok(false);
    }
    read(cert, key, now).map(|_| true)
}

/// A warning when the key file can be read by other users than its owner.
pub fn key_warning(key: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            return Some(format!(
                "the CA key {} is readable by other users: chmod 600 it",
                key.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = key;
    None
}

/// Whether both CA files exist (`false`: neither does; one without the other is an error).
fn present(cert: &Path, key: &Path) -> Result<bool, String> {
    match (cert.exists(), key.exists()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (has_cert, _) => {
            let (there, missing) = if has_cert { (cert, key) } else { (key, cert) };
            Err(format!(
                "{} exists but {} does not: restore the missing file, or move {} away to make a \
                 new CA (clients will then have to trust the new one)",
                there.display(),
                missing.display(),
                there.display()
            ))
        }
    }
}

fn read(cert: &Path, key: &Path, now: SystemTime) -> Result<Ca, String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let (cert_name, key_name) = (cert.display().to_string(), key.display().to_string());
    Ca::from_pem(&cert_pem, &key_pem, now, &cert_name, &key_name)
}

/// Writes `text` to a new file at `path` with `mode` (Unix): into a temporary file beside it,
/// then renamed, so a crash never leaves a partial file; parent directories are created.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

/// This machine's name, for the CA's common name.
fn machine_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            let name = std::fs::read_to_string(p).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .unwrap_or_else(|| "an unnamed machine".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn a_new_ca_names_its_machine_and_is_a_ten_year_ca() {
        let (cert, key) = Ca::generate("build-box", now()).unwrap();
        assert!(key.contains("BEGIN PRIVATE KEY"));
        let ca = Ca::from_pem(&cert, &key, now(), "ca.pem", "ca.key").unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        let subject = x509.subject().to_string();
        assert!(
            subject.contains("CN=peercache CA on build-box"),
            "{subject}"
        );
        assert_eq!(x509.subject(), x509.issuer(), "self-signed");
        let bc = x509.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let v = x509.validity();
        let start = now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(v.not_before.timestamp(), start - 24 * 3600);
        assert_eq!(v.not_after.timestamp(), start + 10 * 365 * 24 * 3600);
        assert_eq!(ca.not_after(), now() + CA_LIFETIME);
        let fp = ca.fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.chars().all(|c| c == ':' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_ca_is_checked_when_read() {
        let (cert, key) = Ca::generate("a", now()).unwrap();
        let (other_cert, other_key) = Ca::generate("b", now()).unwrap();
        let err = |c: &str, k: &str, at: SystemTime| {
            Ca::from_pem(c, k, at, "ca.pem", "ca.key")
                .err()
                .expect("refused")
        };
        assert!(err(&cert, &other_key, now()).contains("does not belong"));
        assert!(err(&other_cert, &key, now()).contains("does not belong"));
        assert!(err("", &key, now()).contains("no PEM certificate"));
        assert!(err(&cert, "nonsense", now()).contains("PKCS#8"));
        let later = now() + CA_LIFETIME + Duration::from_secs(1);
        assert!(err(&cert, &key, later).contains("valid only from"));
        // A leaf certificate is not a CA.
        let leaf = rcgen::generate_simple_self_signed(vec!["x.example".to_owned()]).unwrap();
        let leaf_key = leaf.signing_key.serialize_pem();
        let real_now = SystemTime::now();
        assert!(err(&leaf.cert.pem(), &leaf_key, real_now).contains("not a CA"));
    }

    #[test]
    fn load_or_create_makes_the_files_once_and_keeps_the_key_private() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca/ca.pem"), dir.path().join("ca/ca.key"));
        let (made, origin) = load_or_create(&cert, &key, now()).unwrap();
        assert_eq!(origin, Origin::Created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, origin) = load_or_create(&cert, &key, now()).unwrap();
        assert_eq!(origin, Origin::Existing);
        assert_eq!(again.fingerprint(), made.fingerprint());
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), made.cert_pem());

        std::fs::remove_file(&key).unwrap();
        let e = load_or_create(&cert, &key, now()).err().expect("refused");
        assert!(e.contains("exists but") && e.contains("ca.key"), "{e}");
        assert!(cert.exists(), "the certificate is left alone");
        assert!(check(&cert, &key, now()).is_err());
    }

    #[test]
    fn check_reads_and_never_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        assert_eq!(
            check(&cert, &key, now()),
            Ok(false),
            "none yet: run makes it"
        );
        assert!(!cert.exists() && !key.exists());
        load_or_create(&cert, &key, now()).unwrap();
        assert_eq!(check(&cert, &key, now()), Ok(true));
        assert_eq!(key_warning(&key), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(key_warning(&key).is_some_and(|w| w.contains("chmod 600")));
        }
        std::fs::write(&key, "not a key").unwrap();
        assert!(check(&cert, &key, now()).unwrap_err().contains("PKCS#8"));
    }
}
