//! Zero-copy file bodies: stored bodies go from the blob file to the client socket with Linux
//! `sendfile(2)`, never through user space.
//!
//! hyper cannot send a file, but it hands the `Bytes` of a body to the connection's IO as they
//! are when that IO does vectored writes (hyper 1.12, `src/proto/h1/`):
//! - `io.rs` `Buffered::new` (l. 59-64): `is_write_vectored()` picks `WriteStrategy::Queue`;
//! - `io.rs` `WriteBuf::buffer` (l. 575-583): with `Queue`, a body buf is pushed to a list as is
//!   (only `Flatten` copies it into the head buffer);
//! - `io.rs` `Buffered::poll_flush` (l. 289-295): the head buffer and the queued bufs go to
//!   `poll_write_vectored` as `IoSlice`s pointing at the bufs' own memory (up to 64), and the
//!   queue is advanced by what the IO reports written;
//! - `encode.rs` `Encoder::encode` (l. 143-158): with a `Content-Length`, a data frame is passed
//!   through as `BufKind::Exact` (or `Limited`, a `take` of the same memory), no chunk framing;
//! - `io.rs` `can_headers_buf` (l. 135-137) and `conn.rs` `can_write_head` (l. 575-584): the
//!   next response's head is only written once every queued buf of the previous one was
//!   written, so the body of response N+1 is first polled after response N's bytes all left;
//!   `dispatch.rs` `poll_write` (l. 359-363) even polls the service future (where the answer
//!   is built) only then, though a pipelined request may have been read before.
//!
//! So a body here yields *marker* frames: `Bytes::from_static` slices of one process-wide,
//! zeroed, never-written region. A slice that points into that region is not data; it means "the
//! next `len` bytes of the file job of this connection". `SendfileIo` recognises marker slices
//! by address in `poll_write_vectored` and sends that many bytes of the job's file with
//! `sendfile`, so the counts hyper sees are exactly those of a normal write. Marker bytes reach
//! the IO strictly in order, so the job just keeps a running offset.
//!
//! Nothing may turn a marker into real bytes: a marker slice without a job, or beyond the job's
//! end, and a file that ends early (`sendfile` returning 0) are write errors, which cut the
//! connection; the client then sees fewer bytes than `Content-Length`, never zeros.
//!
//! `sendfile` runs on the runtime thread: a blob that is not in the page cache blocks it on disk
//! reads (as nginx does without `aio threads`). Callers use it for blobs this process has already
//! read whole (verified), which are normally cached.

use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::body::{Body, BoxError};

/// Whether `sendfile` works from files in the store's directory: never off Linux; on Linux most
/// file systems support it, a few FUSE and stacked ones do not, and a hit would then be cut on
/// every try. Sends a small temporary file to `/dev/null` once. Start-up turns `cache.sendfile`
/// off when this is false, so the config alone says whether bodies go out this way.
/// `temp` is a fresh temporary file there (removed here).
pub fn works_with(temp: (std::path::PathBuf, std::fs::File)) -> bool {
    let (path, mut file) = temp;
    let sent = (|| {
        io::Write::write_all(&mut file, b"probe")?;
        let sink = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        send(&sink, &file, &mut 0, 5)
    })();
    let _ = std::fs::remove_file(path);
    sent.is_ok_and(|n| n == 5)
}

/// Size of the marker region, hence the largest marker frame.
pub const MARKER_MAX: usize = 1 << 20;

/// The most one `sendfile` call is asked to send (a socket buffer takes less anyway).
const MAX_SEND: usize = 1 << 20;

/// The marker region: allocated zeroed (calloc'd pages, no memory used until written), leaked
/// and never written.
fn region() -> &'static [u8] {
    static REGION: OnceLock<&'static [u8]> = OnceLock::new();
    REGION.get_or_init(|| vec![0u8; MARKER_MAX].leak())
}

/// A marker frame standing for the next `len` (1..=`MARKER_MAX`) bytes of the current job.
fn marker(len: usize) -> Bytes {
    debug_assert!(len > 0 && len <= MARKER_MAX);
    Bytes::from_static(&region()[..len.min(MARKER_MAX)])
}

/// Whether a non-empty slice lies inside the marker region.
fn is_marker(s: &[u8]) -> bool {
    let r = region().as_ptr_range();
    let p = s.as_ptr_range();
    !s.is_empty() && p.start >= r.start && p.end <= r.end
}

/// What one vectored write does.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Nothing to write (no slices, or only empty ones).
    Nothing,
    /// Write the first `n` slices normally (they hold no marker).
    Plain(usize),
    /// Send this many bytes of the job's file.
    File(usize),
}

/// Empty slices are skipped; a leading marker slice is sent from the file, otherwise the plain
/// slices up to (not including) the first marker are written.
fn plan(bufs: &[IoSlice<'_>]) -> Plan {
    let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
        return Plan::Nothing;
    };
    if is_marker(&bufs[first]) {
        return Plan::File(bufs[first].len());
    }
    let n = bufs[first..]
        .iter()
        .position(|b| is_marker(b))
        .map_or(bufs.len(), |i| first + i);
    Plan::Plain(n)
}

/// Told how many bytes each `sendfile` sent (the caller's counters).
pub type Counter = Arc<dyn Fn(u64) + Send + Sync>;

/// The file bytes a response still owes, in order.
pub struct Job {
    file: Arc<File>,
    next_offset: u64,
    remaining: u64,
    counter: Option<Counter>,
}

impl Job {
    /// Where the next `want` marker bytes come from: (file offset, count), at most `MAX_SEND`.
    fn next(&self, want: usize) -> io::Result<(u64, usize)> {
        if want as u64 > self.remaining {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "marker bytes beyond the end of the file job",
            ));
        }
        Ok((self.next_offset, want.min(MAX_SEND)))
    }

    /// `n` bytes were sent.
    fn advance(&mut self, n: usize) {
        debug_assert!(n as u64 <= self.remaining);
        self.next_offset += n as u64;
        self.remaining -= n as u64;
    }
}

/// The file job of one connection, shared by its IO and its responses' bodies.
#[derive(Clone, Default)]
pub struct Slot(Arc<Mutex<Option<Job>>>);

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Job>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `job` the current one. The previous job is done by then (see the module comment);
    /// if it is not (its body was cut), that connection is being closed anyway.
    fn install(&self, job: Job) {
        let old = self.lock().replace(job);
        if let Some(old) = old.filter(|j| j.remaining > 0) {
            tracing::debug!(
                left = old.remaining,
                "file job replaced before it was sent whole"
            );
        }
    }
}

/// A body of `[start, end)` of `file` sent with `sendfile` by the `SendfileIo` sharing `slot`.
/// Its job is installed when hyper first polls it (after the previous response is written), and
/// it yields markers only after that. `counter` is told the bytes as they are sent.
pub fn body(slot: Slot, file: Arc<File>, start: u64, end: u64, counter: Option<Counter>) -> Body {
    let left = end.saturating_sub(start);
    MarkerBody {
        slot,
        job: Some(Job {
            file,
            next_offset: start,
            remaining: left,
            counter,
        }),
        left,
    }
    .boxed()
}

struct MarkerBody {
    slot: Slot,
    /// Until the first poll.
    job: Option<Job>,
    /// Marker bytes still to yield.
    left: u64,
}

impl HttpBody for MarkerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if let Some(job) = self.job.take() {
            self.slot.install(job);
        }
        let n = self.left.min(MARKER_MAX as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(marker(n as usize)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

/// A client connection whose writes send marker slices from the connection's file job.
///
/// While a file job is being sent the socket is corked (`TCP_CORK`, as nginx's `tcp_nopush`):
/// `sendfile` feeds the socket in pipe-sized pieces, and with `TCP_NODELAY` each piece would
/// otherwise leave with a short tail segment (measured: about a third less throughput on
/// loopback). The response head is corked in with the body; the cork is pulled when the job's
/// last byte is sent, or before any plain write.
pub struct SendfileIo {
    tcp: TcpStream,
    slot: Slot,
    corked: bool,
}

impl SendfileIo {
    pub fn new(tcp: TcpStream, slot: Slot) -> Self {
        SendfileIo {
            tcp,
            slot,
            corked: false,
        }
    }

    fn set_cork(&mut self, on: bool) {
        if self.corked != on {
            if let Err(e) = cork(&self.tcp, on) {
                tracing::debug!("TCP_CORK {on}: {e}");
            }
            self.corked = on;
        }
    }

    /// Sends up to `want` bytes of the current job with `sendfile`.
    fn poll_sendfile(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            self.set_cork(true);
            let mut slot = self.slot.lock();
            let Some(job) = slot.as_mut() else {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "marker bytes without a file job",
                )));
            };
            let (mut offset, count) = job.next(want)?;
            let tcp = &self.tcp;
            let file: &File = &job.file;
            match tcp.try_io(tokio::io::Interest::WRITABLE, || {
                send(tcp, file, &mut offset, count)
            }) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stored body shorter than its entry",
                    )))
                }
                Ok(n) => {
                    job.advance(n);
                    if let Some(count) = &job.counter {
                        count(n as u64);
                    }
                    if job.remaining == 0 {
                        *slot = None;
                        drop(slot);
                        self.set_cork(false);
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn send(
    out: impl rustix::fd::AsFd,
    file: &File,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    rustix::fs::sendfile(out, file, Some(offset), count).map_err(io::Error::from)
}

#[cfg(target_os = "linux")]
fn cork(sock: &TcpStream, on: bool) -> io::Result<()> {
    rustix::net::sockopt::set_tcp_cork(sock, on).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn cork(_: &TcpStream, _: bool) -> io::Result<()> {
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send<T>(_: T, _: &File, _: &mut u64, _: usize) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "sendfile is Linux only",
    ))
}

impl AsyncRead for SendfileIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match plan(bufs) {
            Plan::Nothing => Poll::Ready(Ok(0)),
            Plan::Plain(n) => {
                // A head followed by file bytes goes out with them; anything else uncorked.
                let file_next = bufs.get(n).is_some_and(|b| is_marker(b));
                self.set_cork(file_next);
                Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[..n])
            }
            Plan::File(len) => self.poll_sendfile(cx, len),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_probe_finds_sendfile_working_here_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.part");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        assert!(works_with((path, file)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn markers_are_told_apart_from_data_by_address() {
        let m = marker(10);
        assert!(is_marker(&m));
        assert!(is_marker(&m[3..7]));
        assert!(is_marker(&marker(MARKER_MAX)));
        // Equal contents elsewhere are data.
        let zeros = vec![0u8; 10];
        assert!(!is_marker(&zeros));
        assert!(!is_marker(b""));
        assert!(!is_marker(&m[..0]));
    }

    #[test]
    fn a_write_plans_plain_slices_up_to_the_first_marker() {
        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        let (m1, m2) = (marker(100), marker(5));
        assert_eq!(plan(&[]), Plan::Nothing);
        assert_eq!(plan(&[IoSlice::new(b"")]), Plan::Nothing);
        assert_eq!(
            plan(&[IoSlice::new(head), IoSlice::new(&m1)]),
            Plan::Plain(1)
        );
        assert_eq!(
            plan(&[IoSlice::new(head), IoSlice::new(b"x"), IoSlice::new(&m1)]),
            Plan::Plain(2)
        );
        assert_eq!(
            plan(&[IoSlice::new(head), IoSlice::new(b"x")]),
            Plan::Plain(2)
        );
        assert_eq!(
            plan(&[IoSlice::new(b""), IoSlice::new(&m1), IoSlice::new(&m2)]),
            Plan::File(100)
        );
        assert_eq!(
            plan(&[IoSlice::new(&m2), IoSlice::new(head)]),
            Plan::File(5)
        );
    }

    fn job(remaining: u64) -> Job {
        let file = tempfile::tempfile().unwrap();
        Job {
            file: Arc::new(file),
            next_offset: 1000,
            remaining,
            counter: None,
        }
    }

    #[test]
    fn a_job_hands_out_its_bytes_in_order_and_never_more() {
        let mut j = job(3 << 20);
        assert_eq!(j.next(100).unwrap(), (1000, 100));
        j.advance(60);
        assert_eq!(j.next(40).unwrap(), (1060, 40));
        j.advance(40);
        // One call sends at most MAX_SEND.
        assert_eq!(j.next(2 << 20).unwrap(), (1100, MAX_SEND));
        j.advance(MAX_SEND);
        let left = (3 << 20) - 100 - MAX_SEND;
        assert_eq!(j.remaining, left as u64);
        assert!(j.next(left + 1).is_err());
        assert_eq!(j.next(left).unwrap().0, 1100 + MAX_SEND as u64);
    }

    #[test]
    fn a_body_yields_markers_only_after_installing_its_job() {
        use std::task::Waker;
        let slot = Slot::default();
        let file = Arc::new(tempfile::tempfile().unwrap());
        let mut b = body(slot.clone(), file, 10, 10 + MARKER_MAX as u64 + 7, None);
        assert!(slot.lock().is_none());
        assert_eq!(b.size_hint().exact(), Some(MARKER_MAX as u64 + 7));
        let mut cx = Context::from_waker(Waker::noop());
        let mut sizes = vec![];
        while let Poll::Ready(Some(f)) = Pin::new(&mut b).poll_frame(&mut cx) {
            let d = f.unwrap().into_data().unwrap();
            assert!(is_marker(&d));
            let j = slot.lock();
            let j = j.as_ref().expect("job installed before the first marker");
            assert_eq!((j.next_offset, j.remaining), (10, MARKER_MAX as u64 + 7));
            sizes.push(d.len());
        }
        assert_eq!(sizes, vec![MARKER_MAX, 7]);
        assert!(b.is_end_stream());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_file_job_goes_out_corked_with_its_head_and_uncorked_at_its_end() {
        use std::io::Write;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let slot = Slot::default();
        let mut io = SendfileIo::new(server, slot.clone());
        let corked = |io: &SendfileIo| rustix::net::sockopt::tcp_cork(&io.tcp).unwrap();
        let mut b = body(slot, Arc::new(f), 100, 300_000, None);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut b).poll_frame(&mut cx) else {
            panic!("a marker frame")
        };
        let m = frame.into_data().unwrap();
        let reader = tokio::spawn(async move {
            let mut got = vec![0; 6 + 299_900];
            client.read_exact(&mut got).await.unwrap();
            got
        });
        let head = b"HEAD\r\n";
        let n = io
            .write_vectored(&[IoSlice::new(head), IoSlice::new(&m)])
            .await
            .unwrap();
        assert_eq!(n, head.len(), "the head alone, corked");
        assert!(corked(&io));
        let mut sent = 0;
        while sent < m.len() {
            assert!(corked(&io), "corked while file bytes are owed");
            sent += io
                .write_vectored(&[IoSlice::new(&m[sent..])])
                .await
                .unwrap();
        }
        assert!(!corked(&io), "uncorked after the last byte");
        let got = reader.await.unwrap();
        assert_eq!(&got[..6], head);
        assert!(got[6..] == data[100..]);
        // Beyond the job: an error, never bytes.
        let extra = marker(1);
        assert!(io.write_vectored(&[IoSlice::new(&extra)]).await.is_err());
    }
}
