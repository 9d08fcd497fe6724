//! The systemd unit in `packaging/` passes `systemd-analyze verify` (and scores as hardened),
//! where systemd is installed.

use std::process::Command;

use crate::support::*;

const UNIT: &str = include_str!("../../packaging/peercache.service");

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let Some(analyze) = on_path("systemd-analyze") else {
        println!("SKIPPED: no systemd-analyze on the PATH");
        return;
    };
    for line in [
        "DynamicUser=yes",
        "StateDirectory=peercache",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "ExecStart=/usr/local/bin/peercache run --config /etc/peercache/peercache.toml",
    ] {
        assert!(UNIT.lines().any(|l| l == line), "{line} missing");
    }
    // verify checks that the program exists: point it at the one just built.
    let dir = tempdir();
    let unit = dir.path().join("peercache.service");
    std::fs::write(
        &unit,
        UNIT.replace("/usr/local/bin/peercache", env!("CARGO_BIN_EXE_peercache")),
    )
    .unwrap();
    let out = Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");

    let out = Command::new(&analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let marker = "Overall exposure level for peercache.service: ";
    let Some(at) = text.find(marker) else {
        println!("SKIPPED the exposure score: this systemd-analyze has no offline security check");
        return;
    };
    let level: f64 = text[at + marker.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        level <= 2.0,
        "exposure {level} (0 = locked down, 10 = none):\n{text}"
    );
}
