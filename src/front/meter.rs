//! Tunnel accounting: the bytes each way and the last activity of one `CONNECT` tunnel, its idle deadline, and the access-log line and counters written when it ends (in a guard's Drop). Never looks at the bytes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::accesslog::Record;
use crate::front::Arrived;
use crate::front::Proxy;
use crate::metrics::Metrics;

/// Bytes and activity of one tunnel, shared by its IO wrapper, its idle watch and its guard.
pub struct Traffic {
    up: AtomicU64,
    down: AtomicU64,
    /// Milliseconds from `opened` to the last byte in either direction.
    last: AtomicU64,
    opened: Instant,
    metrics: Arc<Metrics>,
}

impl Traffic {
    fn new(opened: Instant, metrics: Arc<Metrics>) -> Traffic {
        Traffic {
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            last: AtomicU64::new(0),
            opened,
            metrics,
        }
    }

    /// Bytes the client sent towards upstream so far.
    pub fn up(&self) -> u64 {
        self.up.load(Relaxed)
    }

    /// Bytes sent to the client so far.
    pub fn down(&self) -> u64 {
        self.down.load(Relaxed)
    }

    fn passed(&self, n: usize, up: bool) {
        let n = n as u64;
        if up {
            self.up.fetch_add(n, Relaxed);
            self.metrics.tunnel_bytes_up.fetch_add(n, Relaxed);
        } else {
            self.down.fetch_add(n, Relaxed);
            self.metrics.tunnel_bytes_down.fetch_add(n, Relaxed);
        }
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last.fetch_max(ms, Relaxed);
    }

    /// Resolves once no byte has passed for `limit`.
    pub async fn idle(&self, limit: Duration) {
        loop {
            let deadline = self.opened + Duration::from_millis(self.last.load(Relaxed)) + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The client side of a tunnel: reads are bytes going up, writes bytes coming down; both are
/// counted as they pass.
pub struct Metered<IO> {
    io: IO,
    traffic: Arc<Traffic>,
}

impl<IO> Metered<IO> {
    pub fn new(io: IO, traffic: Arc<Traffic>) -> Self {
        Metered { io, traffic }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Metered<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0 {
            this.traffic.passed(n, true);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Metered<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.traffic.passed(n, false);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        this.traffic.passed(n, false);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How a tunnel ended, as the access log's last-but-one field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed (or one side did and the other finished).
    Complete,
    /// No byte passed for `proxy.tunnel_idle_timeout`.
    Idle,
    /// The client refused our certificate, sent no TLS or named an unlisted server.
    TlsFailed,
    /// An error, a failed upgrade, or the task was dropped.
    Cut,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::Idle => "idle",
            End::TlsFailed => "tls-failed",
            End::Cut => "cut",
        }
    }
}

/// One open tunnel: counted when opened; when dropped, its bytes, duration and end go to the
/// access log (`TUNNEL/200` or `INTERCEPT/200`, `CONNECT host:port`, `up=N`).
pub struct Tunnel {
    app: Arc<Proxy>,
    client: SocketAddr,
    target: String,
    arrived: Arrived,
    result: &'static str,
    traffic: Arc<Traffic>,
    end: End,
}

impl Tunnel {
    /// `result` is `TUNNEL` for an opaque tunnel, `INTERCEPT` for a decrypted one.
    pub fn open(
        app: &Arc<Proxy>,
        client: SocketAddr,
        target: String,
        arrived: Arrived,
        result: &'static str,
    ) -> Tunnel {
        Metrics::inc(&app.metrics.tunnels);
        Tunnel {
            app: app.clone(),
            client,
            target,
            arrived,
            result,
            traffic: Arc::new(Traffic::new(arrived.began, app.metrics.clone())),
            end: End::Cut,
        }
    }

    pub fn traffic(&self) -> Arc<Traffic> {
        self.traffic.clone()
    }

    /// Records how the tunnel ended (logged on drop; `Cut` until said otherwise).
    pub fn ended(&mut self, end: End) {
        self.end = end;
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if self.end == End::Idle {
            Metrics::inc(&self.app.metrics.tunnels_idle_closed);
        }
        self.app.access.log(&Record {
            start: self.arrived.start,
            duration: self.arrived.began.elapsed(),
            client: self.client,
            result: self.result,
            status: 200,
            bytes: self.traffic.down(),
            method: "CONNECT",
            url: &self.target,
            source: "-",
            end: self.end.as_str(),
            up: Some(self.traffic.up()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn bytes_are_counted_each_way_and_idleness_follows_the_last_byte() {
        let metrics = Arc::new(Metrics::default());
        let traffic = Arc::new(Traffic::new(Instant::now(), metrics.clone()));
        let (near, mut far) = tokio::io::duplex(64);
        let mut client = Metered::new(near, traffic.clone());
        far.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        client.read_exact(&mut got).await.unwrap();
        client.write_all(b"hi").await.unwrap();
        assert_eq!((traffic.up(), traffic.down()), (5, 2));
        assert_eq!(Metrics::get(&metrics.tunnel_bytes_up), 5);
        assert_eq!(Metrics::get(&metrics.tunnel_bytes_down), 2);

        let limit = Duration::from_secs(600);
        tokio::time::advance(Duration::from_secs(599)).await;
        client.write_all(b"!").await.unwrap(); // activity pushes the deadline back
        let idle = traffic.idle(limit);
        tokio::pin!(idle);
        assert!(
            tokio::time::timeout(Duration::from_secs(599), idle.as_mut())
                .await
                .is_err(),
            "not idle 599 s after the last byte"
        );
        tokio::time::timeout(Duration::from_secs(2), idle)
            .await
            .expect("idle 600 s after the last byte");
    }
}
