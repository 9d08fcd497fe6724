//! The one error type of the data path: what went wrong, and whose fault it was. No I/O.

use std::fmt;

/// Who is to blame for a failure: `front::respond::status_of` answers by it first (then by the
/// kind), the peer side charges `Peer` faults to the peer, and a stale entry may stand in
/// only for a failure that is not the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we cannot serve (4xx, or just close).
    Downstream,
    /// The origin or parent proxy failed (502/504).
    Upstream,
    /// A peer failed; callers fall back to another source before this reaches a client.
    Peer,
    /// Our own fault (500).
    Internal,
}

/// A flat list of failure kinds; each has a stable name used in logs and in the
/// `X-Peercache-Error` response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    BadRequest,
    Forbidden,
    PortNotAllowed,
    LoopDetected,
    NotFound,
    /// A request inside an intercepted tunnel for another host than the tunnel's.
    Misdirected,
    OnlyIfCached,
    ConnectFailed,
    ConnectTimeout,
    ResponseTimeout,
    UpstreamProtocol,
    UpstreamBodyCut,
    /// A source refused for lack of capacity for now (a peer at `max_uploads`); try another.
    Busy,
    Tls,
    Storage,
    Internal,
}

impl Kind {
    /// Stable kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::BadRequest => "bad-request",
            Kind::Forbidden => "forbidden",
            Kind::PortNotAllowed => "port-not-allowed",
            Kind::LoopDetected => "loop-detected",
            Kind::NotFound => "not-found",
            Kind::Misdirected => "misdirected",
            Kind::OnlyIfCached => "only-if-cached",
            Kind::ConnectFailed => "connect-failed",
            Kind::ConnectTimeout => "connect-timeout",
            Kind::ResponseTimeout => "response-timeout",
            Kind::UpstreamProtocol => "upstream-protocol",
            Kind::UpstreamBodyCut => "upstream-body-cut",
            Kind::Busy => "busy",
            Kind::Tls => "tls",
            Kind::Storage => "storage",
            Kind::Internal => "internal",
        }
    }
}

/// An error with its kind, the side at fault and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub side: Side,
    pub detail: String,
}

impl Error {
    pub fn new(kind: Kind, side: Side, detail: impl Into<String>) -> Self {
        Error {
            kind,
            side,
            detail: detail.into(),
        }
    }
    pub fn downstream(kind: Kind, detail: impl Into<String>) -> Self {
        Self::new(kind, Side::Downstream, detail)
    }
    pub fn upstream(kind: Kind, detail: impl Into<String>) -> Self {
        Self::new(kind, Side::Upstream, detail)
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(Kind::Internal, Side::Internal, detail)
    }
    pub fn storage(detail: impl fmt::Display) -> Self {
        Self::new(Kind::Storage, Side::Internal, detail.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
