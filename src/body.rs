//! Response body types: fixed bodies, channel bodies fed by a task (file tails, pass-through), a
//! body with a frame already read put back in front, and a wrapper that reports the bytes sent
//! when the body ends. An `Err` frame aborts the response, so a client sees a cut connection
//! instead of a short body that looks complete.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use tokio::sync::mpsc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response peercache sends.
pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A failure reading a client's request body on its way upstream (chunks that are not chunks, a
/// client gone mid-upload): the client's fault, whichever component notices it first.
#[derive(Debug)]
pub struct ClientBodyError(BoxError);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the client's request body: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {}

/// A client's request body to send upstream; its errors are [`ClientBodyError`]s.
pub fn from_client<B>(incoming: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    incoming
        .map_err(|e| Box::new(ClientBodyError(e.into())) as BoxError)
        .boxed()
}

/// The sending half of a channel body. Dropping it without `finish` after an `abort` cuts the body.
pub type Sender = mpsc::Sender<Result<Bytes, BoxError>>;

/// A body whose frames come from a task. `len` (when known) is announced as an exact size hint.
pub fn channel(len: Option<u64>) -> (Sender, Body) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody { rx, len }.boxed())
}

struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
    len: Option<u64>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => {
                if let Some(n) = self.len.as_mut() {
                    *n = n.saturating_sub(b.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }

    /// A body of known length ends with its last byte (hyper may not poll it again).
    fn is_end_stream(&self) -> bool {
        self.len == Some(0)
    }
}

/// How a body ended, as seen by `Observed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Every byte was handed to the connection.
    Complete,
    /// The body failed (source cut) or the client went away first.
    Cut,
}

/// Wraps a body and calls `done(bytes, end)` exactly once: when it ends, fails, or is dropped.
pub fn observed<F>(inner: Body, done: F) -> Body
where
    F: FnOnce(u64, BodyEnd) + Send + Sync + 'static,
{
    let ended = inner.is_end_stream();
    let mut b = Observed {
        inner,
        bytes: 0,
        done: Some(done),
    };
    if ended {
        b.finish(BodyEnd::Complete);
    }
    b.boxed()
}

/// See [`observed`]; `done` is held in place (one allocation per body, the box of the body).
struct Observed<F: FnOnce(u64, BodyEnd)> {
    inner: Body,
    bytes: u64,
    done: Option<F>,
}

impl<F: FnOnce(u64, BodyEnd)> Observed<F> {
    fn finish(&mut self, end: BodyEnd) {
        if let Some(done) = self.done.take() {
            done(self.bytes, end);
        }
    }
}

// `done` is never pinned (it is only ever taken out and called).
impl<F: FnOnce(u64, BodyEnd)> Unpin for Observed<F> {}

impl<F: FnOnce(u64, BodyEnd)> HttpBody for Observed<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(BodyEnd::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(BodyEnd::Cut),
            Poll::Ready(None) => self.finish(BodyEnd::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<F: FnOnce(u64, BodyEnd)> Drop for Observed<F> {
    fn drop(&mut self) {
        self.finish(BodyEnd::Cut);
    }
}

/// `first`, a frame already read from `rest`, then the rest of that body.
pub fn prefixed(first: Frame<Bytes>, rest: Body) -> Body {
    Prefixed {
        first: Some(first),
        rest,
    }
    .boxed()
}

/// See [`prefixed`].
struct Prefixed {
    first: Option<Frame<Bytes>>,
    rest: Body,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.first.take() {
            Some(f) => Poll::Ready(Some(Ok(f))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn channel_body_delivers_frames_then_ends() {
        let (tx, body) = channel(Some(6));
        assert_eq!(body.size_hint().exact(), Some(6));
        tokio::spawn(async move {
            tx.send(Ok(Bytes::from_static(b"abc"))).await.ok();
            tx.send(Ok(Bytes::from_static(b"def"))).await.ok();
        });
        let got = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(got.ok().as_deref(), Some(&b"abcdef"[..]));
    }

    #[tokio::test]
    async fn an_error_frame_fails_the_body() {
        let (tx, body) = channel(None);
        tokio::spawn(async move {
            tx.send(Ok(Bytes::from_static(b"abc"))).await.ok();
            tx.send(Err("cut".into())).await.ok();
        });
        assert!(body.collect().await.is_err());
    }

    #[tokio::test]
    async fn observed_reports_bytes_and_end_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let body = observed(full("hello"), move |n, end| {
            s.lock().map(|mut v| v.push((n, end))).ok();
        });
        let _ = body.collect().await;
        assert_eq!(*seen.lock().unwrap(), vec![(5, BodyEnd::Complete)]);

        let s = seen.clone();
        let (tx, body) = channel(None);
        let body = observed(body, move |n, end| {
            s.lock().map(|mut v| v.push((n, end))).ok();
        });
        drop(tx);
        drop(body);
        assert_eq!(seen.lock().unwrap()[1], (0, BodyEnd::Cut));
    }
}
