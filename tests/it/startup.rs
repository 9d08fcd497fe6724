//! Starting up: `check` and `run` name the setting and the fix for every mistake on the machine
//! (key file, busy port, cache directory), and nothing is written before the ports are bound.

use std::path::Path;
use std::process::Output;

use crate::support::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `text` as `dir/peercache.toml` and returns its path.
fn conf(dir: &Path, text: &str) -> String {
    let path = dir.join("peercache.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A peering node on free loopback ports (the peer port given), its cache under `dir`.
fn peer_node(dir: &Path, peer_port: u16, key: &Path) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:{}\"\n[cache]\ndir = \"{}\"\n[peers]\nenabled = true\n\
         listen = \"127.0.0.1:{peer_port}\"\nkey_file = \"{}\"\n",
        free_port(),
        dir.join("cache").display(),
        key.display()
    )
}

#[test]
fn check_names_the_key_and_the_fix_for_each_mistake() {
    let dir = tempdir();
    let d = dir.path();
    let key = d.join("cluster.key");
    let file = d.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let peers = |extra: &str| {
        format!(
            "[cache]\ndir = \"{}\"\n[peers]\nenabled = true\nlisten = \"127.0.0.1:3129\"\n\
             key_file = \"{}\"\n{extra}",
            d.join("cache").display(),
            key.display()
        )
    };

    // A missing key file: names `peercache keygen FILE`, and creates nothing.
    let path = conf(d, &peers(""));
    let out = peercache(&["check", "--config", &path]);
    let err = stderr(&out);
    assert!(!out.status.success());
    let want = format!(
        "{path}: peers.key_file: cluster key file {k} does not exist: create it with \
         `peercache keygen {k}`",
        k = key.display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(!err.contains("internal"), "{err}");
    assert!(!d.join("cache").exists(), "check creates nothing");

    // A key file of the wrong size.
    std::fs::write(&key, "abc").unwrap();
    let err = stderr(&peercache(&["check", "--config", &path]));
    assert!(
        err.contains("found 3 bytes (create one with `peercache keygen FILE`)"),
        "{err}"
    );

    // A key anyone can read: a warning, and the config is usable.
    std::fs::remove_file(&key).unwrap();
    assert!(peercache(&["keygen", &key.display().to_string()])
        .status
        .success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = peercache(&["check", "--config", &path]);
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(
            err.starts_with(&format!("warning: {path}: peers.key_file: ")),
            "{err}"
        );
        assert!(
            err.contains(&format!("run chmod 600 {}", key.display())),
            "{err}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = peercache(&["check", "--config", &path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "config ok\n");

    // A cache directory that cannot be created.
    let bad_dir = peers("").replace(
        &d.join("cache").display().to_string(),
        &file.join("cache").display().to_string(),
    );
    let path = conf(d, &bad_dir);
    let err = stderr(&peercache(&["check", "--config", &path]));
    let want = format!(
        "{path}: cache.dir: {}/cache cannot be created: {} is not a directory",
        file.display(),
        file.display()
    );
    assert!(err.contains(&want), "{err}");

    // A site label longer than gossip carries: the line and the key.
    let path = conf(d, &peers(&format!("site = \"{}\"\n", "s".repeat(65))));
    let err = stderr(&peercache(&["check", "--config", &path]));
    assert!(
        err.contains(&format!(
            "{path}:7: peers.site: too long: 65 bytes, the limit is 64"
        )),
        "{err}"
    );
}

#[test]
fn run_names_the_missing_key_file_and_creates_nothing() {
    let dir = tempdir();
    let d = dir.path();
    let key = d.join("cluster.key");
    let path = conf(d, &peer_node(d, free_port(), &key));
    let out = peercache(&["run", "--config", &path]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("peercache keygen {}", key.display())),
        "{err}"
    );
    assert!(!err.contains("internal"), "{err}");
    assert!(!d.join("cache").exists(), "nothing created: {err}");
}

#[test]
fn a_busy_port_is_named_with_the_process_that_holds_it_and_nothing_is_created() {
    let dir = tempdir();
    let d = dir.path();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let path = conf(
        d,
        &format!(
            "[proxy]\nlisten = \"{addr}\"\n[cache]\ndir = \"{}\"\n[log]\naccess = false\n",
            d.join("cache").display()
        ),
    );
    assert_busy(&path, "proxy.listen", &format!("{addr} (TCP)"), d);

    // The gossip half of the peer port (UDP) is taken: the same story for peers.listen.
    let key = d.join("cluster.key");
    write_key(&key, 1);
    let port = free_port();
    let udp = std::net::UdpSocket::bind(format!("127.0.0.1:{port}")).unwrap();
    let path = conf(d, &peer_node(d, port, &key));
    assert_busy(&path, "peers.listen", &format!("127.0.0.1:{port} (UDP)"), d);
    drop((held, udp));
}

/// Runs the node of `path`: it must refuse to start because `what` (held by this test) is busy,
/// naming `key`, this process and the fix, with `dir/cache` not created.
fn assert_busy(path: &str, key: &str, what: &str, dir: &Path) {
    let out = peercache(&["run", "--config", path]);
    let err = stderr(&out);
    assert!(!out.status.success());
    let want = format!("peercache: {key}: {what} is already in use");
    assert!(err.contains(&want), "{err}");
    if cfg!(target_os = "linux") {
        let by = format!("by process {} (", std::process::id());
        assert!(err.contains(&by), "the holder is this test: {err}");
    }
    assert!(
        err.contains(&format!("set {key} to a free address")),
        "{err}"
    );
    assert!(
        !dir.join("cache").exists(),
        "the cache directory is not created: {err}"
    );
}

#[test]
fn status_names_the_address_it_tried() {
    let port = free_port();
    let out = peercache(&["status", "--proxy", &format!("http://127.0.0.1:{port}")]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.starts_with(&format!(
            "peercache status: cannot reach the proxy at 127.0.0.1:{port}: "
        )),
        "{err}"
    );
    assert!(err.contains("is `peercache run` running there?"), "{err}");
}
