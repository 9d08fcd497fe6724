//! What `run` will need that can be checked without binding a port or writing anything: the
//! cluster key file, the upstream CA file, the interception CA, the cache directory. `peercache check` reports it and
//! `run` refuses to start on an error. Reads the file system; never changes it.

use std::fmt;
use std::path::Path;

use crate::config::Config;
use crate::fetch::connect;
use crate::front::intercept::ca;
use crate::peer::auth::ClusterKey;

/// One problem, named by the config key to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub key: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Everything found: errors stop `run`, warnings do not.
#[derive(Debug, Default)]
pub struct Report {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

/// Checks the files and directories `config` names.
pub fn check(config: &Config) -> Report {
    let mut report = Report::default();
    let mut error = |key, message| report.errors.push(Finding { key, message });
    if config.peers.enabled {
        if let Err(m) = ClusterKey::load(&config.peers.key_file) {
            error("peers.key_file", m);
        }
    }
    if let Some(ca) = &config.upstream.ca_file {
        if let Err(m) = connect::load_ca_file(ca) {
            error("upstream.ca_file", m);
        }
    }
    let intercept = &config.intercept;
    let intercepting = !intercept.hosts.is_empty();
    if intercepting {
        let now = std::time::SystemTime::now();
        if let Err(m) = ca::check(&intercept.ca_cert, &intercept.ca_key, now) {
            error("intercept.ca_cert", m);
        }
    }
    if let Err(m) = cache_dir(&config.cache.dir) {
        error("cache.dir", m);
    }
    if config.peers.enabled {
        for message in ClusterKey::file_warnings(&config.peers.key_file) {
            report.warnings.push(Finding {
                key: "peers.key_file",
                message,
            });
        }
    }
    if let Some(message) = ca::key_warning(&intercept.ca_key).filter(|_| intercepting) {
        report.warnings.push(Finding {
            key: "intercept.ca_key",
            message,
        });
    }
    report
}

/// The cache directory is a directory this user can write, or can be created (its nearest
/// existing ancestor is one).
fn cache_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(format!(
            "{shown} exists and is not a directory: set cache.dir to a directory"
        )),
        Ok(_) => writable(dir).map_err(|e| {
            format!(
                "{shown} is not writable by this user ({e}): give it to the user peercache runs \
                 as, or set cache.dir to another directory"
            )
        }),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            let parent = dir
                .ancestors()
                .skip(1)
                .map(|a| {
                    if a.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        a
                    }
                })
                .find(|a| a.exists())
                .unwrap_or(Path::new("."));
            let p = parent.display();
            match std::fs::metadata(parent) {
                Ok(meta) if !meta.is_dir() => Err(format!(
                    "{shown} cannot be created: {p} is not a directory; set cache.dir to a \
                     path under a directory"
                )),
                Ok(_) => writable(parent).map_err(|e| {
                    format!(
                        "{shown} does not exist and cannot be created: {p} is not writable by \
                         this user ({e}); create {shown} for the user peercache runs as, or set \
                         cache.dir"
                    )
                }),
                Err(e) => Err(format!("{shown} cannot be created: {p}: {e}")),
            }
        }
        Err(e) => Err(format!("{shown}: {e}")),
    }
}

/// Can this process create files in `dir`? (`access(2)`: root passes unless the file system is
/// read-only.)
#[cfg(target_os = "linux")]
fn writable(dir: &Path) -> Result<(), String> {
    use rustix::fs::{access, Access};
    access(dir, Access::WRITE_OK | Access::EXEC_OK).map_err(|e| e.to_string())
}

/// Can this process create files in `dir`? (Only the read-only flag is known here.)
#[cfg(not(target_os = "linux"))]
fn writable(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.permissions().readonly() => Err("read-only".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("a-file");
        std::fs::write(&file, "x").expect("write");
        assert_eq!(cache_dir(tmp.path()), Ok(()), "an existing directory");
        assert_eq!(
            cache_dir(&tmp.path().join("new/deeper")),
            Ok(()),
            "creatable"
        );
        assert_eq!(
            cache_dir(Path::new("relative-dir-that-is-not-there")),
            Ok(())
        );
        let e = cache_dir(&file).expect_err("a file");
        assert!(
            e.ends_with("exists and is not a directory: set cache.dir to a directory"),
            "{e}"
        );
        let e = cache_dir(&file.join("cache")).expect_err("under a file");
        assert!(
            e.contains(&format!("{} is not a directory", file.display())),
            "{e}"
        );
    }

    #[test]
    fn a_config_with_every_problem() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let key = tmp.path().join("cluster.key");
        let file = tmp.path().join("a-file");
        std::fs::write(&file, "x").expect("write");
        let mut c = Config::default_config();
        c.peers.enabled = true;
        c.peers.key_file = key.clone();
        c.upstream.ca_file = Some(tmp.path().join("missing-ca.pem"));
        c.intercept.hosts = crate::config::HostPatterns::parse(["files.example.org"]).unwrap();
        c.intercept.ca_cert = tmp.path().join("ca.pem");
        c.intercept.ca_key = file.clone(); // a key without its certificate
        c.cache.dir = file.join("cache");
        let r = check(&c);
        let keys: Vec<&str> = r.errors.iter().map(|f| f.key).collect();
        assert_eq!(
            keys,
            [
                "peers.key_file",
                "upstream.ca_file",
                "intercept.ca_cert",
                "cache.dir"
            ],
            "{r:?}"
        );
        assert!(r.errors[2].message.contains("exists but"), "{r:?}");
        assert!(r.errors[0].message.contains("peercache keygen"), "{r:?}");
        if cfg!(unix) {
            let warned: Vec<&str> = r.warnings.iter().map(|f| f.key).collect();
            assert_eq!(warned, ["intercept.ca_key"], "a 0644 key: {r:?}");
        }

        ClusterKey::write_new(&key).expect("keygen");
        c.upstream.ca_file = None;
        c.intercept.ca_key = tmp.path().join("ca.key"); // neither CA file: run makes them
        c.cache.dir = tmp.path().join("cache");
        let r = check(&c);
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
        assert!(!c.cache.dir.exists(), "check creates nothing");
    }
}
