//! The access log: one line per request, written to stdout by a dedicated thread so that request
//! tasks never block on the terminal.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};

use crate::metrics::Metrics;
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

/// Lines waiting for the writer at most; one more is dropped (and counted) instead of
/// growing the queue: a stalled stdout costs log lines, never memory or request latency.
pub const QUEUE: usize = 4096;

/// A handle to the log writer; cheap to clone. Disabled logs drop records.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<mpsc::SyncSender<String>>,
    metrics: Option<Arc<Metrics>>,
}

impl AccessLog {
    /// Writes to stdout; lines dropped at a full queue are counted in `metrics`.
    pub fn stdout(metrics: Arc<Metrics>) -> AccessLog {
        Self::to(std::io::stdout, QUEUE, metrics)
    }

    /// Writes to the sink `open()` gives on a thread of its own, through a queue of `queue`
    /// lines.
    pub fn to<W, F>(open: F, queue: usize, metrics: Arc<Metrics>) -> AccessLog
    where
        W: Write,
        F: FnOnce() -> W + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel::<String>(queue);
        let spawned = std::thread::Builder::new()
            .name("peercache-accesslog".into())
            .spawn(move || {
                let mut out = open();
                while let Ok(line) = rx.recv() {
                    let _ = writeln!(out, "{line}");
                    while let Ok(more) = rx.try_recv() {
                        let _ = writeln!(out, "{more}");
                    }
                    let _ = out.flush();
                }
            });
        AccessLog {
            tx: spawned.ok().map(|_| tx),
            metrics: Some(metrics),
        }
    }

    pub fn disabled() -> AccessLog {
        AccessLog {
            tx: None,
            metrics: None,
        }
    }

    /// Queues the line of `r`; never blocks.
    pub fn log(&self, r: &Record) {
        let Some(tx) = &self.tx else { return };
        if let Err(mpsc::TrySendError::Full(_)) = tx.try_send(r.line()) {
            if let Some(m) = &self.metrics {
                Metrics::inc(&m.access_log_dropped);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that says when a write begins, then waits until the test lets it through.
    struct Stalled {
        gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
        began: mpsc::Sender<()>,
        seen: mpsc::Sender<String>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.began.send(());
            let (open, cv) = &*self.gate;
            let mut o = open.lock().unwrap();
            while !*o {
                o = cv.wait(o).unwrap();
            }
            let _ = self.seen.send(String::from_utf8_lossy(buf).into_owned());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_sink_costs_counted_lines_not_memory() {
        let metrics = Arc::new(Metrics::default());
        let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let (began_tx, began) = mpsc::channel();
        let (seen_tx, seen) = mpsc::channel();
        let sink = Stalled {
            gate: gate.clone(),
            began: began_tx,
            seen: seen_tx,
        };
        let log = AccessLog::to(move || sink, 2, metrics.clone());
        let r = |n: u64| Record {
            start: UNIX_EPOCH,
            duration: Duration::ZERO,
            client: "127.0.0.1:1".parse().unwrap(),
            result: "MISS",
            status: 200,
            bytes: n,
            method: "GET".into(),
            url: "http://a/".into(),
            source: "origin",
            end: "complete",
            up: None,
        };
        log.log(&r(0));
        began.recv().unwrap(); // the writer holds line 0, stuck in the sink
        for n in 1..=12 {
            log.log(&r(n)); // 1 and 2 wait in the queue; the other ten are dropped
        }
        assert_eq!(Metrics::get(&metrics.access_log_dropped), 10);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(log);
        let written: Vec<String> = seen.iter().filter(|l| l.as_str() != "\n").collect();
        let bytes: Vec<&str> = written
            .iter()
            .map(|l| l.split(' ').nth(4).unwrap())
            .collect();
        assert_eq!(bytes, ["0", "1", "2"], "the line taken and the two queued");
    }

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
