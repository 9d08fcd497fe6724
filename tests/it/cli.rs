//! The command line: `check` names the line and key of every config error.

use std::process::Command;

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_peercache"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `peercache ARGS`, asserts it succeeds, and returns its stdout.
fn peercache_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_peercache"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn check_accepts_the_shipped_default_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/peercache.toml");
    peercache_ok(&["check".as_ref(), "--config".as_ref(), path.as_ref()]);
}

#[test]
fn check_names_the_line_and_key_of_every_error() {
    let (ok, err) =
        check("[proxy]\nlisten = \"127.0.0.1:3128\"\nlisen = 1\n\n[cache]\nmax_size = \"10XB\"\n");
    assert!(!ok);
    assert!(err.contains(":3:") && err.contains("proxy.lisen"), "{err}");
    assert!(
        err.contains(":6:") && err.contains("cache.max_size"),
        "{err}"
    );
}

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn sigterm_stops_the_proxy_cleanly_and_the_access_log_has_a_line_per_request() {
    let origin = Origin::start().await;
    origin.route(
        "/log",
        Reply::ok("logged").header("cache-control", "max-age=60"),
    );
    let dir = tempdir();
    let mut proc = Proc::start(dir.path(), free_port(), true).await;
    get(proc.addr, &origin.url("/log")).await;
    get(proc.addr, &origin.url("/log")).await;
    let log = dir.path().join("stdout.log");
    let url = origin.url("/log");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines().any(|l| {
                l.contains(" MISS/200 6 GET ") && l.ends_with(&format!("{url} origin complete"))
            }) && text
                .lines()
                .any(|l| l.contains(" HIT/200 6 GET ") && l.contains(" cache complete"))
        })
        .await,
        "access log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // `peercache status --json` prints the running proxy's JSON status, indented; without
    // `--json`, a summary for people.
    let status = |extra: &[&str]| {
        let proxy = format!("http://{}", proc.addr);
        let out = peercache(&[&["status", "--proxy", &proxy], extra].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let json = status(&["--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["counters"]["requests_by_result"]["HIT"], 1);
    assert!(json.lines().count() > 20, "indented: {json}");
    let text = status(&[]);
    assert!(text.contains(&format!("at {}, up ", proc.addr)), "{text}");
    assert!(text.contains("HIT 1  MISS 1  PEER 0"), "{text}");
    assert!(text.contains("hit ratio:  50% "), "{text}");
    assert!(text.contains("bytes saved: 6 B"), "{text}");
    assert!(text.contains("group:      peering off"), "{text}");

    let pid = proc.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut exited = None;
    for _ in 0..500 {
        if let Some(status) = proc.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = exited.expect("peercache exits within 5 s of SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn ca_makes_the_ca_once_and_prints_its_path_and_fingerprint() {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("peercache.toml");
    std::fs::write(
        &conf,
        format!(
            "[cache]\ndir = \"{}\"\n",
            dir.path().join("cache").display()
        ),
    )
    .unwrap();
    let ca = || peercache_ok(&["ca".as_ref(), "--config".as_ref(), conf.as_os_str()]);
    let cert = dir.path().join("cache/ca/ca.pem");
    let key = dir.path().join("cache/ca/ca.key");
    let first = ca();
    assert!(
        first.contains(&format!("made a new CA: {}", cert.display())),
        "{first}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
    }
    // The printed fingerprint is the SHA-256 of the certificate file's DER.
    let der = CertificateDer::from_pem_file(&cert).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    assert!(
        first.contains(&format!("SHA-256 fingerprint: {}", hex.join(":"))),
        "{first}"
    );
    let pem_before = std::fs::read(&cert).unwrap();
    let second = ca();
    assert!(
        second.contains(&format!("CA exists: {}", cert.display())),
        "{second}"
    );
    assert!(second.contains(&hex.join(":")), "same CA: {second}");
    assert_eq!(std::fs::read(&cert).unwrap(), pem_before);
}

#[test]
fn check_refuses_a_ca_certificate_without_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("ca.pem");
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let (ok, err) = check(&format!(
        "[intercept]\nhosts = [\"files.example.org\"]\nca_cert = \"{}\"\n",
        cert.display()
    ));
    assert!(!ok);
    assert!(
        err.contains("intercept.ca_cert") && err.contains("ca.key does not"),
        "{err}"
    );
}
