//! The access log: one line per request, written to stdout by a dedicated thread so that request
//! tasks never block on the terminal.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One finished request.
pub struct Record {
    pub start: SystemTime,
    pub duration: Duration,
    pub client: SocketAddr,
    /// `X-Cache` value, or TUNNEL / DENIED / ERROR / NONE.
    pub result: &'static str,
    pub status: u16,
    pub bytes: u64,
    pub method: String,
    pub url: String,
    /// Where the body came from: cache, origin, peer, or `-`.
    pub source: &'static str,
    /// `complete` or `cut`; for a tunnel also `idle` (closed by the idle timeout).
    pub end: &'static str,
    /// For a `CONNECT` tunnel, the bytes the client sent upstream (`bytes` is what it
    /// received); printed as a last field `up=N`.
    pub up: Option<u64>,
}

impl Record {
    /// `1732478103.123 12ms 127.0.0.1 MISS/200 1234 GET http://example.com/ origin complete`;
    /// a tunnel adds its upstream bytes:
    /// `1732478103.123 5012ms 127.0.0.1 TUNNEL/200 5120 CONNECT example.com:443 - complete up=517`
    pub fn line(&self) -> String {
        let t = self.start.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut line = format!(
            "{}.{:03} {}ms {} {}/{} {} {} {} {} {}",
            t.as_secs(),
            t.subsec_millis(),
            self.duration.as_millis(),
            self.client.ip(),
            self.result,
            self.status,
            self.bytes,
            self.method,
            self.url,
            self.source,
            self.end
        );
        if let Some(up) = self.up {
            line.push_str(&format!(" up={up}"));
        }
        line
    }
}

/// A handle to the log writer; cheap to clone. Disabled logs drop records.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<String>>,
}

impl AccessLog {
    pub fn stdout() -> AccessLog {
        let (tx, rx) = mpsc::channel::<String>();
        let spawned = std::thread::Builder::new()
            .name("peercache-accesslog".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                while let Ok(line) = rx.recv() {
                    let mut out = stdout.lock();
                    let _ = writeln!(out, "{line}");
                    while let Ok(more) = rx.try_recv() {
                        let _ = writeln!(out, "{more}");
                    }
                    let _ = out.flush();
                }
            });
        AccessLog {
            tx: spawned.ok().map(|_| tx),
        }
    }

    pub fn disabled() -> AccessLog {
        AccessLog { tx: None }
    }

    pub fn log(&self, r: &Record) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(r.line());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_every_field_in_order() {
        let r = Record {
            start: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            duration: Duration::from_millis(12),
            client: "127.0.0.1:5555".parse().unwrap(),
            result: "MISS",
            status: 200,
            bytes: 1234,
            method: "GET".into(),
            url: "http://example.com/".into(),
            source: "origin",
            end: "complete",
            up: None,
        };
        assert_eq!(
            r.line(),
            "1700000000.123 12ms 127.0.0.1 MISS/200 1234 GET http://example.com/ origin complete"
        );
        let tunnel = Record {
            result: "TUNNEL",
            method: "CONNECT".into(),
            url: "example.com:443".into(),
            source: "-",
            up: Some(517),
            ..r
        };
        assert_eq!(
            tunnel.line(),
            "1700000000.123 12ms 127.0.0.1 TUNNEL/200 1234 CONNECT example.com:443 - complete up=517"
        );
    }
}
