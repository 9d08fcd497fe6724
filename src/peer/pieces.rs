//! Verified pieces of complete copies: the holder encodes a byte span of a stored body with its
//! outboard (`bao-tree`: the parent hashes on the path interleaved with the 16 KiB chunk groups),
//! and the requester decodes it against the root hash it was told (the body's blake3), releasing
//! a chunk group only once it matched. Never decides which peer to ask or what to store.
//!
//! Wire format of `GET /peer/v1/pieces/{blake3}?start=S&end=E`: exactly what bao-tree's
//! `encode_ranges_validated` writes for the chunk ranges covering bytes `[S, E)`, with chunk
//! groups of 16 KiB (`cache::outboard::BLOCK`). A span that starts or ends inside a chunk group
//! carries the covered part of that group as aligned subtrees of 1 to 8 KiB with their parent
//! hashes, so the requester still checks every byte before releasing it, and drops only the part
//! of the first 1 KiB chunk before `S`.

use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bao_tree::io::fsm::{ResponseDecoder, ResponseDecoderNext};
use bao_tree::io::{BaoContentItem, DecodeError, EncodeError, Leaf};
use bao_tree::{ChunkNum, ChunkRanges};
use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use iroh_io::AsyncStreamReader;

use crate::body::{self, Body, BoxError};
use crate::cache::outboard::{self, Outboard};
use crate::error::{Error, Kind, Side};
use crate::peer::wire::NodeId;
use crate::peer::{Peers, Source};

/// Bytes per frame the holder sends (a few chunk groups and their parents).
const FRAME: usize = 64 * 1024;
/// Verified groups that are ready at once go on joined up to this many bytes: the fill's
/// writer pays per frame (a write on the blocking pool), not per byte.
const JOINED: usize = 256 * 1024;

/// Why a verified piece stream stopped before the end of its span. `offset` is the first byte
/// not released: everything before it was verified and handed on, nothing after it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PieceError {
    /// Data or a parent hash that does not match the tree: the holder lies or its disk is bad.
    #[error("the piece at byte {offset} does not match its blake3 tree")]
    BadPiece { offset: u64 },
    /// The stream ended before the span did.
    #[error("the piece stream ended early at byte {offset}")]
    Cut { offset: u64 },
    /// Reading the stream failed (connection reset, timeout of the transport).
    #[error("the piece stream failed at byte {offset}: {reason}")]
    Failed { offset: u64, reason: String },
}

/// Why a span in a request cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanError {
    /// A parameter that is not a decimal number (400).
    Malformed,
    /// Empty, reversed or past the end of the body (416).
    Unsatisfiable,
}

/// Path of the pieces of the body `hash` covering bytes `[start, end)`.
pub fn path(hash: &blake3::Hash, start: u64, end: u64) -> String {
    format!("/peer/v1/pieces/{}?start={start}&end={end}", hash.to_hex())
}

/// The span `[start, end)` a query asks for out of a body of `len` bytes (pure). `start`
/// defaults to 0 and `end` to `len`; a span must hold at least one byte, except the whole of an
/// empty body.
pub fn span(query: &str, len: u64) -> Result<(u64, u64), SpanError> {
    let (mut start, mut end) = (0, len);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "start" => &mut start,
            "end" => &mut end,
            _ => continue,
        };
        *slot = value.parse().map_err(|_| SpanError::Malformed)?;
    }
    let whole_empty = len == 0 && start == 0 && end == 0;
    if whole_empty || (start < end && end <= len) {
        Ok((start, end))
    } else {
        Err(SpanError::Unsatisfiable)
    }
}

/// The chunks both sides encode for bytes `[start, end)`; the empty body is its one empty chunk,
/// so that even it is checked against the root.
fn chunks(start: u64, end: u64) -> ChunkRanges {
    ChunkRanges::from(ChunkNum::full_chunks(start)..ChunkNum::chunks(end.max(1)))
}

/// Writes the encoding of bytes `[start, end)` of `data` (whose outboard is `ob`) into `tx` in
/// frames of about 64 KiB; checks every chunk group against the outboard first when `validate`.
/// Blocking: run it on the blocking pool. Stops early when the receiver goes away.
pub fn encode(
    data: &std::fs::File,
    ob: &Outboard,
    start: u64,
    end: u64,
    validate: bool,
    tx: body::Sender,
) -> Result<(), EncodeError> {
    let ranges = chunks(start, end);
    let mut out = ToChannel {
        tx,
        buf: Vec::with_capacity(FRAME),
    };
    if validate {
        bao_tree::io::sync::encode_ranges_validated(data, ob, &ranges, &mut out)?;
    } else {
        bao_tree::io::sync::encode_ranges(data, ob, &ranges, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

/// `io::Write` into a channel body, in frames of [`FRAME`] bytes.
struct ToChannel {
    tx: body::Sender,
    buf: Vec<u8>,
}

impl Write for ToChannel {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= FRAME {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let frame = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(FRAME)));
        self.tx
            .blocking_send(Ok(frame))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

/// Told the offset of a bad piece, once.
pub type OnBad = Box<dyn FnOnce(u64) + Send + Sync>;

/// The verified bytes `[start, end)` of the body with blake3 `hash` and length `len`, decoded
/// from `encoded` (a holder's answer to [`path`]). Each frame is a chunk group (or chunk) that
/// matched the tree; on a mismatch the body fails with [`PieceError::BadPiece`] before any byte
/// of the bad group, and `on_bad` is told.
pub fn verify(
    encoded: Body,
    hash: blake3::Hash,
    len: u64,
    (start, end): (u64, u64),
    on_bad: OnBad,
) -> Body {
    let frames = Frames {
        body: encoded,
        buf: Bytes::new(),
    };
    let decoder = ResponseDecoder::new(hash, chunks(start, end), outboard::tree(len), frames);
    Verified {
        step: Mutex::new(Some(Box::pin(decoder.next()))),
        released: start,
        end,
        on_bad: Some(on_bad),
    }
    .boxed()
}

type Step = Pin<Box<dyn Future<Output = ResponseDecoderNext<Frames>> + Send>>;

struct Verified {
    /// The decoder's next step; `None` once it ended. (A `Mutex` only to make the body `Sync`;
    /// it is reached through `&mut` and never locked.)
    step: Mutex<Option<Step>>,
    /// The first byte not yet handed on.
    released: u64,
    end: u64,
    on_bad: Option<OnBad>,
}

impl Verified {
    fn fail(&mut self, e: DecodeError) -> PieceError {
        let offset = self.released;
        let err = match e {
            DecodeError::LeafHashMismatch(_) | DecodeError::ParentHashMismatch(_) => {
                PieceError::BadPiece { offset }
            }
            DecodeError::LeafNotFound(_) | DecodeError::ParentNotFound(_) => {
                PieceError::Cut { offset }
            }
            DecodeError::Io(e) => PieceError::Failed {
                offset,
                reason: e.to_string(),
            },
        };
        if let (PieceError::BadPiece { offset }, Some(told)) = (&err, self.on_bad.take()) {
            told(*offset);
        }
        err
    }

    /// The part of a verified leaf that is still to be handed on.
    fn take(&mut self, leaf: Leaf) -> Result<Bytes, PieceError> {
        let Leaf { offset, data } = leaf;
        let leaf_end = offset + data.len() as u64;
        if offset > self.released {
            // The decoder walks the ranges in order; a gap would be our bug, never a peer's.
            return Err(PieceError::Failed {
                offset: self.released,
                reason: format!("leaf at {offset} skips bytes"),
            });
        }
        let from = (self.released - offset) as usize;
        let to = (leaf_end.min(self.end).saturating_sub(offset) as usize).max(from);
        self.released += (to - from) as u64;
        Ok(data.slice(from..to))
    }
}

impl HttpBody for Verified {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let slot = this.step.get_mut().unwrap_or_else(|p| p.into_inner());
            let Some(step) = slot.as_mut() else {
                return Poll::Ready(None);
            };
            let next = ready!(step.as_mut().poll(cx));
            *slot = None;
            let (decoder, item) = match next {
                ResponseDecoderNext::Done(_) if this.released < this.end => {
                    let offset = this.released;
                    return Poll::Ready(Some(Err(Box::new(PieceError::Cut { offset }))));
                }
                ResponseDecoderNext::Done(_) => return Poll::Ready(None),
                ResponseDecoderNext::More(more) => more,
            };
            let released = match item {
                Ok(BaoContentItem::Leaf(leaf)) => this.take(leaf),
                Ok(BaoContentItem::Parent(_)) => Ok(Bytes::new()),
                Err(e) => Err(this.fail(e)),
            };
            match released {
                Ok(data) => {
                    *this.step.get_mut().unwrap_or_else(|p| p.into_inner()) =
                        Some(Box::pin(decoder.next()));
                    if !data.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Err(e) => return Poll::Ready(Some(Err(Box::new(e)))),
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end - self.released)
    }
}

/// The encoded stream as bao-tree reads it: exact reads across the body's frames.
struct Frames {
    body: Body,
    buf: Bytes,
}

impl Frames {
    /// Fetches the next non-empty data frame into `buf`; `false` at the end of the body.
    async fn more(&mut self) -> io::Result<bool> {
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(io::Error::other)?;
            if let Ok(data) = frame.into_data() {
                if !data.is_empty() {
                    self.buf = data;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

impl AsyncStreamReader for Frames {
    async fn read_bytes(&mut self, len: usize) -> io::Result<Bytes> {
        if self.buf.is_empty() && !self.more().await? {
            return Ok(Bytes::new());
        }
        if self.buf.len() >= len {
            return Ok(self.buf.split_to(len));
        }
        let mut out = BytesMut::with_capacity(len);
        loop {
            let n = (len - out.len()).min(self.buf.len());
            out.extend_from_slice(&self.buf.split_to(n));
            if out.len() == len || !self.more().await? {
                return Ok(out.freeze());
            }
        }
    }

    async fn read<const L: usize>(&mut self) -> io::Result<[u8; L]> {
        let bytes = self.read_bytes(L).await?;
        <[u8; L]>::try_from(&bytes[..]).map_err(|_| io::ErrorKind::UnexpectedEof.into())
    }
}

/// Asks `src` for the verified bytes `[start, len)` of the body `hash` of `len` bytes (see
/// [`fetch_span`]).
pub async fn fetch(
    peers: &Arc<Peers>,
    src: &Source,
    hash: blake3::Hash,
    len: u64,
    start: u64,
) -> Result<Body, Error> {
    fetch_span(peers, src, hash, len, (start, len)).await
}

/// Asks `src` for the verified bytes `[start, end)` of the body `hash` of `len` bytes. A bad
/// piece penalises the holder and counts in `bad_hashes`; the bytes verified so far count as
/// downloaded from it.
pub async fn fetch_span(
    peers: &Arc<Peers>,
    src: &Source,
    hash: blake3::Hash,
    len: u64,
    (start, end): (u64, u64),
) -> Result<Body, Error> {
    let resp = peers
        .client
        .body(src.node, src.addr, &path(&hash, start, end), 0)
        .await?;
    let (node, told, counter) = (src.node, peers.clone(), peers.clone());
    let on_bad: OnBad = Box::new(move |offset| {
        tracing::warn!(%node, %hash, offset, "peer sent a piece that does not match its blake3");
        bad_piece(&told, node, offset);
    });
    let encoded = resp.into_body().map_err(Into::into).boxed();
    let verified = body::coalesced(verify(encoded, hash, len, (start, end), on_bad), JOINED);
    Ok(body::observed(verified, move |n, _| {
        counter.count_download(node, n)
    }))
}

/// Waits up to `wait` for the first verified frame of `body` (a first chunk group, or the whole
/// of an empty body), so that a copy that is bad from its start fails here, before a fill is
/// built on it, and costs a retry with the next source rather than a resume. The frame is kept
/// at the front of the body returned.
pub async fn checked_start(mut body: Body, wait: Duration) -> Result<Body, Error> {
    let peer_error = |kind, detail: String| Error::new(kind, Side::Peer, detail);
    match tokio::time::timeout(wait, body.frame()).await {
        Err(_) => Err(peer_error(
            Kind::ResponseTimeout,
            format!("no verified piece within {wait:?}"),
        )),
        Ok(None) => Ok(body::empty()),
        Ok(Some(Err(e))) => Err(peer_error(Kind::UpstreamProtocol, e.to_string())),
        Ok(Some(Ok(first))) => Ok(body::prefixed(first, body)),
    }
}

/// A holder sent a bad piece: counted, and not asked again for a while (a `Bad` fault).
fn bad_piece(peers: &Peers, node: NodeId, offset: u64) {
    peers
        .stats
        .bad_hashes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let lie = Error::new(
        Kind::UpstreamProtocol,
        Side::Peer,
        format!("bad piece at byte {offset}"),
    );
    peers.failed(node, &lie);
}

#[cfg(test)]
mod tests;
