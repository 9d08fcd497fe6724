//! Interim (1xx) responses relayed to a client connection before the final response: a
//! per-connection queue written by the connection's IO, and a per-request window in which the
//! origin's 1xx may enter it. Never stores anything; never writes outside that window.
//!
//! hyper's HTTP/1 server cannot send an arbitrary 1xx (only its own `100 Continue`), so the
//! bytes go around it, relying on how hyper 1.12 drives a connection (`src/proto/h1/`):
//! - `dispatch.rs` `poll_loop` (l. 166-175) calls `poll_flush` on every turn, and `io.rs`
//!   `Buffered::poll_flush` (l. 278-311) passes it on to our IO only once hyper's own write
//!   buffer is empty: bytes written from [`InterimIo::poll_flush`] never land inside a message
//!   hyper is writing;
//! - `dispatch.rs` `poll_write` (l. 356-380) writes a response head only once the service has
//!   returned it, and the service (`forward::handle`) returns only after [`Interim::drained`]:
//!   so the 1xx go out before the final head, and after the previous response (RFC 9110 §15.2).
//!
//! Every client connection has one, plain or intercepted (the IO wrapped is then the TLS
//! stream). A request opens the window with [`Interim::open`] (HTTP/1.1 clients only: RFC 9110 §15.2
//! forbids sending a 1xx to an HTTP/1.0 client); dropping the returned [`Window`] closes it
//! under the queue's lock, so a late 1xx from an origin request that outlived its client's
//! answer is dropped instead of corrupting the next response. Queued bytes are bounded by
//! [`MAX_QUEUED`]; a 1xx that does not fit is dropped and counted.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use http::{HeaderMap, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::fetch::origin::OnInterim;
use crate::http::headers::strip_hop_by_hop;
use crate::metrics::Metrics;

/// Most bytes of 1xx responses queued on one connection at a time.
pub const MAX_QUEUED: usize = 16 * 1024;

/// One connection's queue of interim responses; cheap to clone (the IO, each request).
#[derive(Clone, Default)]
pub struct Interim(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    queued: BytesMut,
    /// The window that may queue now (`None`: closed).
    open: Option<u64>,
    /// The id of the last window opened.
    last: u64,
    /// The connection's IO is gone: nothing will be written any more.
    gone: bool,
    /// The connection task, to be woken to write newly queued bytes.
    io: Option<Waker>,
    /// The request waiting for the queue to drain.
    drained: Option<Waker>,
}

impl Interim {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the window of one request: until the [`Window`] is dropped, its hook may queue.
    pub fn open(&self) -> Window {
        let mut s = self.lock();
        s.last += 1;
        s.open = Some(s.last);
        Window {
            interim: self.clone(),
            id: s.last,
        }
    }

    /// Resolves once every queued byte is written, or the connection is gone.
    pub async fn drained(&self) {
        std::future::poll_fn(|cx| {
            let mut s = self.lock();
            if s.queued.is_empty() || s.gone {
                return Poll::Ready(());
            }
            s.drained = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// Queues `status` and `headers` as one response in window `id`; false when the window is
    /// closed, the status is no relayable 1xx, or it does not fit.
    fn push(&self, id: u64, status: StatusCode, headers: &HeaderMap) -> bool {
        let Some(bytes) = encode(status, headers) else {
            return false;
        };
        let mut s = self.lock();
        if s.open != Some(id) || s.gone || s.queued.len() + bytes.len() > MAX_QUEUED {
            return false;
        }
        s.queued.extend_from_slice(&bytes);
        if let Some(w) = s.io.take() {
            w.wake();
        }
        true
    }
}

/// One request's permission to queue interim responses; dropping it closes the window.
pub struct Window {
    interim: Interim,
    id: u64,
}

impl Window {
    /// The hook the origin client calls with each 1xx (see `fetch::origin::relaying_interim`),
    /// counting what it relays and what it drops.
    pub fn hook(&self, metrics: Arc<Metrics>) -> OnInterim {
        let (interim, id) = (self.interim.clone(), self.id);
        Arc::new(move |status, headers| {
            let counter: &AtomicU64 = if interim.push(id, status, headers) {
                &metrics.interim_relayed
            } else {
                &metrics.interim_dropped
            };
            Metrics::inc(counter);
        })
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        let mut s = self.interim.lock();
        if s.open == Some(self.id) {
            s.open = None;
        }
    }
}

/// The bytes of one interim response, `None` unless 102..=199: `100 Continue` is hyper's own
/// business (it answers `Expect` itself) and `101` is an upgrade. Hop-by-hop fields are not
/// relayed (RFC 9110 §7.6.1).
fn encode(status: StatusCode, headers: &HeaderMap) -> Option<Vec<u8>> {
    if !(102..=199).contains(&status.as_u16()) {
        return None;
    }
    let mut fields = headers.clone();
    strip_hop_by_hop(&mut fields);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Some(out)
}

/// A client connection's IO that writes queued interim responses whenever hyper flushes with
/// nothing of its own left to write (see the module comment).
pub struct InterimIo<T> {
    inner: T,
    interim: Interim,
}

impl<T> InterimIo<T> {
    pub fn new(inner: T, interim: Interim) -> Self {
        InterimIo { inner, interim }
    }
}

impl<T> Drop for InterimIo<T> {
    fn drop(&mut self) {
        let mut s = self.interim.lock();
        s.gone = true;
        if let Some(w) = s.drained.take() {
            w.wake();
        }
    }
}

impl<T: AsyncWrite + Unpin> InterimIo<T> {
    /// Writes the queued bytes; `Ready(Ok)` once none is left.
    fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.interim.lock();
        if !s.io.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.io = Some(cx.waker().clone());
        }
        while !s.queued.is_empty() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &s.queued) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => {
                    s.gone = true;
                    if let Some(w) = s.drained.take() {
                        w.wake();
                    }
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            };
            s.queued.advance(n);
        }
        if let Some(w) = s.drained.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for InterimIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for InterimIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_interim(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        {
            let mut s = self.interim.lock();
            s.gone = true;
            if let Some(w) = s.drained.take() {
                w.wake();
            }
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn hints() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("link", "</style.css>; rel=preload".parse().expect("value"));
        h.insert("connection", "x-hop".parse().expect("value"));
        h.insert("x-hop", "1".parse().expect("value"));
        h
    }

    #[test]
    fn only_102_to_199_are_encoded_without_hop_by_hop_fields() {
        let got = encode(StatusCode::EARLY_HINTS, &hints()).expect("103");
        assert_eq!(
            String::from_utf8(got).expect("ascii"),
            "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
        );
        let unknown = StatusCode::from_u16(199).expect("status");
        assert_eq!(
            encode(unknown, &HeaderMap::new()).as_deref(),
            Some(&b"HTTP/1.1 199 \r\n\r\n"[..])
        );
        for code in [100, 101, 200, 304] {
            let s = StatusCode::from_u16(code).expect("status");
            assert!(encode(s, &hints()).is_none(), "{code}");
        }
    }

    #[test]
    fn a_window_queues_until_dropped_and_within_the_bound() {
        let interim = Interim::default();
        let metrics = Arc::new(Metrics::default());
        let window = interim.open();
        let hook = window.hook(metrics.clone());
        hook(StatusCode::EARLY_HINTS, &hints());
        assert_eq!(Metrics::get(&metrics.interim_relayed), 1);
        // A huge 1xx does not fit: dropped and counted, the queue unchanged.
        let mut big = HeaderMap::new();
        big.insert("link", "x".repeat(MAX_QUEUED).parse().expect("value"));
        let before = interim.lock().queued.len();
        hook(StatusCode::EARLY_HINTS, &big);
        assert_eq!(interim.lock().queued.len(), before);
        assert_eq!(Metrics::get(&metrics.interim_dropped), 1);
        // The next request's window does not reopen this one's hook.
        drop(window);
        let next = interim.open();
        hook(StatusCode::EARLY_HINTS, &hints());
        assert_eq!(interim.lock().queued.len(), before);
        assert_eq!(Metrics::get(&metrics.interim_dropped), 2);
        drop(next);
    }

    #[tokio::test]
    async fn queued_bytes_go_out_on_flush_and_release_the_waiting_request() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let interim = Interim::default();
        let mut io = InterimIo::new(server, interim.clone());
        let window = interim.open();
        window.hook(Arc::new(Metrics::default()))(StatusCode::EARLY_HINTS, &hints());
        drop(window);
        let waiting = tokio::spawn({
            let interim = interim.clone();
            async move { interim.drained().await }
        });
        // A plain write does not carry the queue (hyper may owe bytes of a message).
        io.write_all(b"x").await.expect("write");
        assert!(!interim.lock().queued.is_empty());
        io.flush().await.expect("flush");
        waiting.await.expect("drained");
        drop(io);
        let mut got = String::new();
        let mut client = client;
        client.read_to_string(&mut got).await.expect("read");
        assert_eq!(
            got,
            "xHTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_gone_connection_releases_the_waiting_request() {
        let (_client, server) = tokio::io::duplex(64);
        let interim = Interim::default();
        let io = InterimIo::new(server, interim.clone());
        let window = interim.open();
        window.hook(Arc::new(Metrics::default()))(StatusCode::EARLY_HINTS, &hints());
        drop(io);
        interim.drained().await;
    }
}
