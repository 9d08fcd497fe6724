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

#[test]
fn check_accepts_the_shipped_default_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/peercache.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_peercache"))
        .args(["check", "--config", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
