//! Response body types: fixed bodies, channel bodies fed by a task (file tails, pass-through), a
//! body with a frame already read put back in front, a window onto a span of another body, a
//! wrapper that reports the bytes sent when the body ends, one that holds frames back to a rate
//! and one that joins the frames ready at once. An `Err` frame aborts the response, so a client sees a cut connection
//! instead of a short body that looks complete.

use std::future::Future;
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

/// `inner`, each data frame held back until the instant `reserve(its length)` names (a rate
/// cap: the caller's link decides when a frame may go).
pub fn paced<F>(inner: Body, reserve: F) -> Body
where
    F: FnMut(u64) -> tokio::time::Instant + Send + Sync + Unpin + 'static,
{
    Paced {
        inner,
        reserve,
        held: None,
    }
    .boxed()
}

/// See [`paced`].
struct Paced<F> {
    inner: Body,
    reserve: F,
    /// A frame waiting for its turn, and the wait.
    held: Option<(Frame<Bytes>, Pin<Box<tokio::time::Sleep>>)>,
}

impl<F> HttpBody for Paced<F>
where
    F: FnMut(u64) -> tokio::time::Instant + Send + Sync + Unpin + 'static,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some((_, wait)) = self.held.as_mut() {
            std::task::ready!(wait.as_mut().poll(cx));
            return Poll::Ready(self.held.take().map(|(frame, _)| Ok(frame)));
        }
        let frame = match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        let Some(n) = frame.data_ref().map(|d| d.len() as u64) else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let at = (self.reserve)(n);
        if at <= tokio::time::Instant::now() {
            return Poll::Ready(Some(Ok(frame)));
        }
        self.held = Some((frame, Box::pin(tokio::time::sleep_until(at))));
        self.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let held = self
            .held
            .as_ref()
            .and_then(|(f, _)| f.data_ref())
            .map_or(0, |d| d.len() as u64);
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint.set_lower(inner.lower() + held);
        hint
    }
}

/// `inner` with the data frames that are ready at once joined into one, up to about `max`
/// bytes (frames already there are never held back to wait for more): fewer, larger frames for
/// a reader that pays per frame. An end or error after joined bytes comes on the next poll.
pub fn coalesced(inner: Body, max: usize) -> Body {
    Coalesced {
        inner,
        max,
        next: None,
    }
    .boxed()
}

/// See [`coalesced`].
struct Coalesced {
    inner: Body,
    max: usize,
    /// What the inner body gave after the bytes returned last: its end, an error or trailers.
    next: Option<Option<Result<Frame<Bytes>, BoxError>>>,
}

impl HttpBody for Coalesced {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(next) = self.next.take() {
            return Poll::Ready(next);
        }
        // One frame goes as it is; a second one starts a copy of both.
        let mut single: Option<Bytes> = None;
        let mut joined = bytes::BytesMut::new();
        loop {
            let len = single.as_ref().map_or(joined.len(), Bytes::len);
            if len >= self.max {
                break;
            }
            let other = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending if len == 0 => return Poll::Pending,
                Poll::Pending => break,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(first) = single.take() {
                            joined.reserve(self.max.max(first.len() + data.len()));
                            joined.extend_from_slice(&first);
                            joined.extend_from_slice(&data);
                        } else if joined.is_empty() {
                            single = Some(data);
                        } else {
                            joined.extend_from_slice(&data);
                        }
                        continue;
                    }
                    Err(frame) => Some(Ok(frame)),
                },
                Poll::Ready(other) => other,
            };
            if len == 0 {
                return Poll::Ready(other);
            }
            self.next = Some(other);
            break;
        }
        let data = single.unwrap_or_else(|| joined.freeze());
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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

/// Bytes `[skip, skip + take)` of `inner`: the bytes before are read and dropped, the body ends
/// after the last one (`inner` is dropped with it). An `inner` that ends or fails before the
/// span is complete fails the window: a cut, never a short body.
pub fn window(inner: Body, skip: u64, take: u64) -> Body {
    Window {
        inner,
        skip,
        left: take,
    }
    .boxed()
}

/// See [`window`].
struct Window {
    inner: Body,
    skip: u64,
    left: u64,
}

impl HttpBody for Window {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    return Poll::Ready(Some(Err("the body ended before the range did".into())))
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let Ok(mut data) = frame.into_data() else {
                continue; // trailers of a body cut short are not the span's
            };
            let n = data.len() as u64;
            if self.skip >= n {
                self.skip -= n;
                continue;
            }
            let from = self.skip as usize; // < n
            self.skip = 0;
            let to = data
                .len()
                .min(from.saturating_add(usize::try_from(self.left).unwrap_or(usize::MAX)));
            data = data.slice(from..to);
            self.left -= data.len() as u64;
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
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

    #[tokio::test(start_paused = true)]
    async fn a_paced_body_lets_each_frame_go_at_the_instant_reserved_for_it() {
        let (tx, inner) = channel(Some(9));
        tokio::spawn(async move {
            for part in [&b"abc"[..], b"def", b"ghi"] {
                tx.send(Ok(Bytes::from_static(part))).await.ok();
            }
        });
        let t0 = tokio::time::Instant::now();
        // 100 ms of link per byte, frames back to back.
        let mut next = t0;
        let mut body = paced(inner, move |n| {
            let at = next;
            next += std::time::Duration::from_millis(100 * n);
            at
        });
        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            seen.push((data, t0.elapsed().as_millis()));
        }
        assert_eq!(
            seen,
            vec![
                (Bytes::from_static(b"abc"), 0),
                (Bytes::from_static(b"def"), 300),
                (Bytes::from_static(b"ghi"), 600),
            ]
        );
    }

    /// A channel body sending `frames`, then failing when `fail`.
    fn frames(frames: &[&'static [u8]], fail: bool) -> Body {
        let (tx, body) = channel(None);
        let frames: Vec<Bytes> = frames.iter().map(|f| Bytes::from_static(f)).collect();
        tokio::spawn(async move {
            for f in frames {
                tx.send(Ok(f)).await.ok();
            }
            if fail {
                tx.send(Err("cut".into())).await.ok();
            }
        });
        body
    }

    #[tokio::test]
    async fn a_window_is_its_span_or_a_cut() {
        let parts: &[&[u8]] = &[b"abc", b"defg", b"", b"hij"];
        // (skip, take, what the client gets)
        let cases: &[(u64, u64, Option<&[u8]>)] = &[
            (0, 10, Some(b"abcdefghij")),
            (2, 3, Some(b"cde")),
            (3, 4, Some(b"defg")),
            (7, 3, Some(b"hij")),
            (9, 1, Some(b"j")),
            (0, 0, Some(b"")),
            (8, 3, None),
            (20, 1, None),
        ];
        for (skip, take, want) in cases {
            let body = window(frames(parts, false), *skip, *take);
            assert_eq!(body.size_hint().exact(), Some(*take));
            let got = body.collect().await.map(|c| c.to_bytes()).ok();
            assert_eq!(got.as_deref(), *want, "skip {skip} take {take}");
        }
        // A failure inside the span cuts it; one after it is never read.
        assert!(window(frames(&[b"abc"], true), 1, 5)
            .collect()
            .await
            .is_err());
        let early = window(frames(&[b"abc", b"def"], true), 1, 4)
            .collect()
            .await;
        assert_eq!(
            early.map(|c| c.to_bytes()).ok().as_deref(),
            Some(&b"bcde"[..])
        );
    }

    #[tokio::test]
    async fn frames_ready_at_once_are_joined_up_to_the_maximum_and_an_error_follows_them() {
        async fn next(body: &mut Body) -> Result<Bytes, String> {
            match body.frame().await {
                Some(Ok(f)) => Ok(f.into_data().unwrap_or_default()),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("end".into()),
            }
        }
        let (tx, inner) = channel(None);
        for part in [&b"ab"[..], b"cd", b"ef"] {
            tx.send(Ok(Bytes::from_static(part))).await.unwrap();
        }
        let mut body = coalesced(inner, 4);
        // "ab" and "cd" reach the maximum; "ef" is all that is ready after them.
        assert_eq!(next(&mut body).await.as_deref(), Ok(&b"abcd"[..]));
        assert_eq!(next(&mut body).await.as_deref(), Ok(&b"ef"[..]));
        tx.send(Ok(Bytes::from_static(b"gh"))).await.unwrap();
        tx.send(Err("cut".into())).await.unwrap();
        drop(tx);
        assert_eq!(next(&mut body).await.as_deref(), Ok(&b"gh"[..]));
        assert_eq!(next(&mut body).await, Err("cut".into()));
        // Nothing ready is never made to wait for more.
        let (tx, inner) = channel(None);
        let mut body = coalesced(inner, 1 << 20);
        tx.send(Ok(Bytes::from_static(b"x"))).await.unwrap();
        assert_eq!(next(&mut body).await.as_deref(), Ok(&b"x"[..]));
        drop(tx);
        assert_eq!(next(&mut body).await, Err("end".into()));
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
