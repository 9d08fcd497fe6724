//! The access log: one line per request, appended to a bounded buffer by the request (never
//! through `core::fmt`) and written to stdout in batches by a thread of its own; never blocks a request.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::metrics::Metrics;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One finished request.
pub struct Record<'a> {
    pub start: SystemTime,
    pub duration: Duration,
    pub client: SocketAddr,
    /// `X-Cache` value, or TUNNEL / DENIED / ERROR / NONE.
    pub result: &'static str,
    pub status: u16,
    pub bytes: u64,
    pub method: &'a str,
    pub url: &'a str,
    /// Where the body came from: cache, origin, peer, or `-`.
    pub source: &'static str,
    /// `complete` or `cut`; for a tunnel also `idle` (closed by the idle timeout).
    pub end: &'static str,
    /// For a `CONNECT` tunnel, the bytes the client sent upstream (`bytes` is what it
    /// received); printed as a last field `up=N`.
    pub up: Option<u64>,
}

impl Record<'_> {
    /// `1732478103.123 12ms 127.0.0.1 MISS/200 1234 GET http://example.com/ origin complete`;
    /// a tunnel adds its upstream bytes:
    /// `1732478103.123 5012ms 127.0.0.1 TUNNEL/200 5120 CONNECT example.com:443 - complete up=517`
    pub fn line(&self) -> String {
        let mut out = Vec::with_capacity(128);
        self.write(&mut out);
        out.pop(); // the newline
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Appends the line and its newline to `out`.
    fn write(&self, out: &mut Vec<u8>) {
        let t = self.start.duration_since(UNIX_EPOCH).unwrap_or_default();
        push_u64(out, t.as_secs());
        out.push(b'.');
        let ms = u64::from(t.subsec_millis());
        out.extend_from_slice(&[b'0' + (ms / 100) as u8, b'0' + (ms / 10 % 10) as u8]);
        out.push(b'0' + (ms % 10) as u8);
        out.push(b' ');
        push_u64(
            out,
            u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
        );
        out.extend_from_slice(b"ms ");
        push_ip(out, self.client.ip());
        out.push(b' ');
        out.extend_from_slice(self.result.as_bytes());
        out.push(b'/');
        push_u64(out, u64::from(self.status));
        out.push(b' ');
        push_u64(out, self.bytes);
        for field in [self.method, self.url, self.source, self.end] {
            out.push(b' ');
            out.extend_from_slice(field.as_bytes());
        }
        if let Some(up) = self.up {
            out.extend_from_slice(b" up=");
            push_u64(out, up);
        }
        out.push(b'\n');
    }
}

/// Decimal digits of `n`.
fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(crate::grammar::decimal(n, &mut [0; 20]));
}

/// An IPv4 address as four decimals; IPv6 as `Ipv6Addr` displays it (RFC 5952).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Bytes of lines waiting for the writer at most (about 4 000 lines); a line that does not
/// fit is dropped (and counted) instead of growing the buffer: a stalled stdout costs log
/// lines, never memory or request latency.
pub const QUEUE_BYTES: usize = 512 * 1024;

/// How long the writer lets lines gather after the first one of a batch: under load it writes
/// (and is woken) at most this often; a line reaches stdout at most this late.
const BATCH: Duration = Duration::from_millis(20);

/// A handle to the log writer; cheap to clone. Disabled logs drop records.
#[derive(Clone)]
pub struct AccessLog(Option<Arc<Writer>>);

/// How long the last handle waits for the writer to finish (a stalled stdout must not hold up
/// the process's exit).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The lines waiting to be written, whether every handle is gone, and whether the writer ended.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
    finished: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Told when the first line of a batch arrives, and when the log closes.
    wake: Condvar,
    /// Told when the writer ended.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the handles share: the buffer and its bound; the writer thread is told to write what
/// is left and end when the last handle goes (`Drop`), which waits for it (bounded).
struct Writer {
    shared: Arc<Shared>,
    queue: usize,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Writes to stdout; lines dropped at a full buffer are counted in `metrics`.
    pub fn stdout(metrics: Arc<Metrics>) -> AccessLog {
        Self::to(std::io::stdout, QUEUE_BYTES, metrics)
    }

    /// Writes to the sink `open()` gives on a thread of its own, through a buffer of at most
    /// `queue` bytes (a line longer than that is dropped).
    pub fn to<W, F>(open: F, queue: usize, metrics: Arc<Metrics>) -> AccessLog
    where
        W: Write,
        F: FnOnce() -> W + Send + 'static,
    {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        let theirs = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("peercache-accesslog".into())
            .spawn(move || {
                write_batches(&theirs, open());
                theirs.lock().finished = true;
                theirs.done.notify_all();
            });
        match spawned {
            Ok(_) => AccessLog(Some(Arc::new(Writer {
                shared,
                queue,
                metrics,
            }))),
            Err(e) => {
                tracing::warn!("access log off: cannot start its writer thread: {e}");
                AccessLog(None)
            }
        }
    }

    pub fn disabled() -> AccessLog {
        AccessLog(None)
    }

    /// Appends the line of `r` to the batch; never blocks on the sink.
    pub fn log(&self, r: &Record<'_>) {
        let Some(w) = &self.0 else { return };
        let mut pending = w.shared.lock();
        let before = pending.bytes.len();
        r.write(&mut pending.bytes);
        if pending.bytes.len() > w.queue {
            pending.bytes.truncate(before);
            drop(pending);
            Metrics::inc(&w.metrics.access_log_dropped);
            return;
        }
        drop(pending);
        if before == 0 {
            w.shared.wake.notify_one();
        }
    }
}

impl Drop for Writer {
    /// The last lines are written before the process goes on, unless the sink is stalled.
    fn drop(&mut self) {
        let mut pending = self.shared.lock();
        pending.closed = true;
        self.shared.wake.notify_one();
        let _ = self
            .shared
            .done
            .wait_timeout_while(pending, CLOSE_WAIT, |p| !p.finished);
    }
}

/// The writer thread: waits for a first line, lets more gather for [`BATCH`], takes them all
/// and writes them with one `write_all`, the two buffers trading places; ends once the log
/// closed and everything is written.
fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.bytes.is_empty() && !pending.closed {
            pending = shared.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
        }
        if pending.bytes.is_empty() {
            return; // closed, nothing left
        }
        if !pending.closed {
            pending = shared
                .wake
                .wait_timeout_while(pending, BATCH, |p| !p.closed)
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
        std::mem::swap(&mut pending.bytes, &mut spare);
        drop(pending);
        let _ = out.write_all(&spare);
        let _ = out.flush();
        spare.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

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
        let r = |n: u64| Record {
            start: UNIX_EPOCH,
            duration: Duration::ZERO,
            client: "127.0.0.1:1".parse().unwrap(),
            result: "MISS",
            status: 200,
            bytes: n,
            method: "GET",
            url: "http://a/",
            source: "origin",
            end: "complete",
            up: None,
        };
        let line = r(0).line().len() + 1;
        let log = AccessLog::to(move || sink, 2 * line, metrics.clone());
        log.log(&r(0));
        began.recv().unwrap(); // the writer holds line 0, stuck in the sink
        for n in 1..=12 {
            log.log(&r(n)); // 1 and 2 wait in the buffer; the other ten are dropped
        }
        assert_eq!(Metrics::get(&metrics.access_log_dropped), 10);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(log); // the last handle: what is left is written before `drop` returns
        let written: String = seen.try_iter().collect();
        let bytes: Vec<&str> = written
            .lines()
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
            method: "GET",
            url: "http://example.com/",
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
            method: "CONNECT",
            url: "example.com:443",
            source: "-",
            up: Some(517),
            ..r
        };
        assert_eq!(
            tunnel.line(),
            "1700000000.123 12ms 127.0.0.1 TUNNEL/200 1234 CONNECT example.com:443 - complete up=517"
        );
        // Milliseconds keep their leading zeros; zero counts and an IPv6 client print plainly.
        let v6 = Record {
            start: UNIX_EPOCH + Duration::from_millis(1_700_000_000_005),
            duration: Duration::ZERO,
            client: "[::1]:5555".parse().unwrap(),
            bytes: 0,
            status: 304,
            ..tunnel
        };
        assert_eq!(
            v6.line(),
            "1700000000.005 0ms ::1 TUNNEL/304 0 CONNECT example.com:443 - complete up=517"
        );
    }
}
