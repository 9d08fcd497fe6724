//! Messages exchanged between peers (gossip payloads, index catch-up). serde + postcard; no I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node of the peer group: 16 random bytes chosen at first start.
///
/// Invariant: `Display`, `Debug` and `FromStr` all use the same form, 32 lowercase hex chars
/// (`FromStr` also accepts uppercase).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    /// A fresh id from the thread-local CSPRNG.
    pub fn random() -> Self {
        NodeId(rand::random())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseNodeIdError {
    /// A node id is exactly 32 hex characters.
    #[error("a node id is 32 hex characters, got {0}")]
    Length(usize),
    /// Only `0-9`, `a-f` and `A-F` are allowed.
    #[error("a node id is hex, found {0:?}")]
    NotHex(char),
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let chars: Vec<char> = s.chars().collect();
        if chars.len() != 32 {
            return Err(ParseNodeIdError::Length(chars.len()));
        }
        let mut id = [0u8; 16];
        for (byte, pair) in id.iter_mut().zip(chars.chunks_exact(2)) {
            let mut value = 0u8;
            for &c in pair {
                let digit = c.to_digit(16).ok_or(ParseNodeIdError::NotHex(c))?;
                // to_digit(16) is < 16, so this fits in a u8.
                value = (value << 4) | digit as u8;
            }
            *byte = value;
        }
        Ok(NodeId(id))
    }
}

/// blake3 of the normalised URL (`CacheKey::hash()`).
pub type KeyHash = [u8; 32];

/// One change to what a node holds; the unit of index replication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// The node stores a complete, shareable response for `key` whose body has blake3 `hash`.
    Have {
        key: KeyHash,
        hash: [u8; 32],
        len: u64,
        /// Unix seconds.
        fresh_until: u64,
    },
    /// The node is downloading `key` right now (other nodes may stream from it).
    InFlight { key: KeyHash },
    /// The node no longer holds `key` (evicted, invalidated, fill failed).
    Dropped { key: KeyHash },
}

impl Update {
    /// The cache key this update is about.
    pub fn key(&self) -> &KeyHash {
        match self {
            Update::Have { key, .. } | Update::InFlight { key } | Update::Dropped { key } => key,
        }
    }
}

/// An update as it travels: who, which incarnation of that process (`epoch`, random per start),
/// and its position in that node's sequence (1, 2, 3… per epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tagged {
    pub node: NodeId,
    pub epoch: u64,
    pub seq: u64,
    pub update: Update,
}

/// Answer to `GET /peer/v1/index` (see [`IndexAsk`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexReply {
    /// Everything after N, in order (the journal still covers N+1).
    Updates {
        node: NodeId,
        epoch: u64,
        updates: Vec<Tagged>,
    },
    /// One page of the node's whole current state (Have / InFlight entries) as of `seq`, in
    /// key order. `next`: more follows, ask [`IndexAsk::Page`] after this key; the snapshot is
    /// whole only once a page says `None`, and only a whole one is applied.
    Snapshot {
        node: NodeId,
        epoch: u64,
        seq: u64,
        entries: Vec<Update>,
        next: Option<KeyHash>,
    },
}

/// Where a node's update stream stands: its epoch and the last seq it assigned (or, in a
/// [`HeadsReply`], the last one the answering node applied).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub epoch: u64,
    pub seq: u64,
}

/// Answer to `GET /peer/v1/heads`: the answering node's own head first, then the head of each
/// other node's stream it has applied (see `peer::anti_entropy`).
pub type HeadsReply = Vec<(NodeId, Head)>;

/// What a catch-up pull asks for: the query of `GET /peer/v1/index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexAsk {
    /// `?since=N[&epoch=E][&head_epoch=H&head_seq=S]`: the updates after N (the last seq the
    /// asker applied in epoch E), or the first page of a snapshot when the journal no longer
    /// covers N+1. `head`: the asker's own [`Head`], so that a node the asker pulls from learns
    /// that it lags behind the asker (an update it missed while the two could not reach each
    /// other) and pulls in turn; nodes that do not know the field ignore it.
    Since {
        epoch: Option<u64>,
        since: u64,
        head: Option<Head>,
    },
    /// `?epoch=E&snapshot=S&after=K`: the page after key K of the snapshot stamped S. A node
    /// in another epoch answers with the first page of a new snapshot.
    Page {
        epoch: u64,
        snapshot: u64,
        after: KeyHash,
    },
}

impl IndexAsk {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        match self {
            IndexAsk::Since { epoch, since, head } => {
                let mut q = format!("since={since}");
                if let Some(e) = epoch {
                    q += &format!("&epoch={e}");
                }
                if let Some(h) = head {
                    q += &format!("&head_epoch={}&head_seq={}", h.epoch, h.seq);
                }
                q
            }
            IndexAsk::Page {
                epoch,
                snapshot,
                after,
            } => format!("epoch={epoch}&snapshot={snapshot}&after={}", hex32(after)),
        }
    }

    /// Reads a query made by [`IndexAsk::to_query`]; fields it does not know are ignored, and
    /// malformed numbers read as absent (an asker that gets more than it asked for is fine).
    pub fn parse(query: &str) -> IndexAsk {
        let (mut since, mut epoch, mut snapshot, mut after) = (0, None, None, None);
        let (mut head_epoch, mut head_seq) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("since", v)) => since = v.parse().unwrap_or(0),
                Some(("epoch", v)) => epoch = v.parse().ok(),
                Some(("head_epoch", v)) => head_epoch = v.parse().ok(),
                Some(("head_seq", v)) => head_seq = v.parse().ok(),
                Some(("snapshot", v)) => snapshot = v.parse().ok(),
                Some(("after", v)) => after = parse_hex32(v),
                _ => {}
            }
        }
        match (epoch, snapshot, after) {
            (Some(epoch), Some(snapshot), Some(after)) => IndexAsk::Page {
                epoch,
                snapshot,
                after,
            },
            _ => IndexAsk::Since {
                epoch,
                since,
                head: head_epoch
                    .zip(head_seq)
                    .map(|(epoch, seq)| Head { epoch, seq }),
            },
        }
    }
}

/// 32 bytes → 64 lowercase hex characters (key hashes and content hashes in paths and queries).
pub fn hex32(b: &[u8; 32]) -> String {
    blake3::Hash::from_bytes(*b).to_hex().to_string()
}

/// 64 hex characters → 32 bytes.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    blake3::Hash::from_hex(s).ok().map(|h| *h.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_hex_round_trips() {
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8) * 17;
        }
        let id = NodeId(bytes);
        let hex = id.to_string();
        assert_eq!(hex, "00112233445566778899aabbccddeeff");
        assert_eq!(format!("{id:?}"), hex);
        assert_eq!(hex.parse::<NodeId>(), Ok(id));
        assert_eq!(hex.to_uppercase().parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn node_id_rejects_bad_hex() {
        let cases: &[(&str, ParseNodeIdError)] = &[
            ("", ParseNodeIdError::Length(0)),
            ("00112233", ParseNodeIdError::Length(8)),
            (
                "00112233445566778899aabbccddeeff00",
                ParseNodeIdError::Length(34),
            ),
            (
                "00112233445566778899aabbccddeefg",
                ParseNodeIdError::NotHex('g'),
            ),
            (
                "0011223344556677889 aabbccddeeff",
                ParseNodeIdError::NotHex(' '),
            ),
            // 31 chars + one 2-byte char: counted in chars, never sliced mid-char.
            (
                "00112233445566778899aabbccddeefé",
                ParseNodeIdError::NotHex('é'),
            ),
            (
                "+0112233445566778899aabbccddeeff",
                ParseNodeIdError::NotHex('+'),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<NodeId>().as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(NodeId::random(), NodeId::random());
    }

    #[test]
    fn update_key() {
        let k = [7u8; 32];
        let updates = [
            Update::Have {
                key: k,
                hash: [1; 32],
                len: 3,
                fresh_until: 4,
            },
            Update::InFlight { key: k },
            Update::Dropped { key: k },
        ];
        for u in &updates {
            assert_eq!(u.key(), &k);
        }
    }

    #[test]
    fn postcard_round_trips() {
        let node = NodeId([9; 16]);
        let tagged = Tagged {
            node,
            epoch: 42,
            seq: 7,
            update: Update::Have {
                key: [1; 32],
                hash: [2; 32],
                len: 1 << 40,
                fresh_until: 1_700_000_000,
            },
        };
        let bytes = postcard::to_stdvec(&tagged).expect("serialise");
        assert_eq!(postcard::from_bytes::<Tagged>(&bytes), Ok(tagged.clone()));

        let replies = [
            IndexReply::Updates {
                node,
                epoch: 42,
                updates: vec![tagged],
            },
            IndexReply::Snapshot {
                node,
                epoch: 42,
                seq: 7,
                entries: vec![Update::InFlight { key: [3; 32] }],
                next: Some([4; 32]),
            },
        ];
        for reply in replies {
            let bytes = postcard::to_stdvec(&reply).expect("serialise");
            assert_eq!(postcard::from_bytes::<IndexReply>(&bytes), Ok(reply));
        }
    }

    #[test]
    fn index_asks_round_trip_through_their_query() {
        let asks = [
            IndexAsk::Since {
                epoch: None,
                since: 0,
                head: None,
            },
            IndexAsk::Since {
                epoch: Some(1_700_000_000_000),
                since: 42,
                head: None,
            },
            IndexAsk::Since {
                epoch: None,
                since: 0,
                head: Some(Head {
                    epoch: 1_700_000_000_001,
                    seq: 9,
                }),
            },
            IndexAsk::Page {
                epoch: 7,
                snapshot: 9,
                after: [0xab; 32],
            },
        ];
        for ask in asks {
            assert_eq!(IndexAsk::parse(&ask.to_query()), ask, "{}", ask.to_query());
        }
        // Bad or partial queries read as the plainest ask, never a panic.
        let since0 = IndexAsk::Since {
            epoch: None,
            since: 0,
            head: None,
        };
        for q in [
            "",
            "since=x",
            "snapshot=1&after=00",
            "epoch=1&snapshot=2&after=zz",
            "after=é",
            &format!("epoch=1&snapshot=2&after={}", "é".repeat(32)),
            "&&=&since",
            "head_epoch=1",
            "head_seq=2&head_epoch=x",
        ] {
            let ask = IndexAsk::parse(q);
            assert!(
                matches!(
                    ask,
                    IndexAsk::Since {
                        since: 0,
                        head: None,
                        ..
                    }
                ),
                "{q}: {ask:?}"
            );
        }
        assert_eq!(IndexAsk::parse("since=-1"), since0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let inputs: &[&[u8]] = &[&[], &[0xff; 3], &[2, 0, 0], &[0; 5], &[1, 9, 9, 9, 9, 9]];
        for input in inputs {
            assert!(postcard::from_bytes::<Tagged>(input).is_err());
            assert!(postcard::from_bytes::<IndexReply>(input).is_err());
        }
    }
}
