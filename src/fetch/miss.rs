//! The one miss entry point. Given a key and the request (and the stale entry the lookup found,
//! if any), [`Fetcher::fill`] joins the fill of that key running here, or leads a new one —
//! from a peer that holds or is downloading it, else from the origin, or by revalidating the
//! stale entry — and says what the client gets: a fill to read, a stored entry, or an answer
//! that is not stored. The leader's work runs in a task of its own, so the client that started
//! it may leave at any time without ending the fill. Never builds a response (`front` answers).

use std::sync::Arc;

use http::{HeaderMap, Method, Response, Uri};
use hyper::body::Incoming;

use crate::body;
use crate::cache::head::{Entry, FillHead};
use crate::cache::inflight::{Fill, FillPermit, Join, Outcome};
use crate::cache::key::Variant;
use crate::cache::lookup::{lookup, Lookup};
use crate::cache::rules::Treatment;
use crate::error::Error;
use crate::metrics::{CacheStatus, Metrics};
use crate::peer::wire::NodeId;

use super::origin::{interim_hook, relaying_interim, OnInterim};
use super::peer::{FromPeers, Want};
use super::{Fetched, Fetcher};

/// How many times a request joins again after the fill it followed was abandoned.
const MAX_JOINS: usize = 3;

/// A request the store could not answer by itself.
pub struct Miss<'a> {
    /// The cache key (normalised URL).
    pub key: &'a str,
    pub uri: &'a Uri,
    /// The client's request fields.
    pub headers: &'a HeaderMap,
    pub version: http::Version,
    /// How the rules treat the key (its `Vary` and key fields pick the variant).
    pub treat: &'a Treatment<'a>,
    /// The stored entry to revalidate, when the lookup found a stale one.
    pub stale: Option<&'a Arc<Entry>>,
}

/// A peer's copy a fill is made of.
#[derive(Debug, Clone, Copy)]
pub struct PeerCopy {
    pub node: NodeId,
    /// A stale copy the origin confirmed (304) first.
    pub revalidated: bool,
}

/// What a miss got.
pub enum Got {
    /// A body streaming into `fill`: fetched for this request (`Miss`, or `Peer` with `peer`),
    /// or another request's fill joined (`Collapsed`).
    Fill {
        fill: Arc<Fill>,
        head: Arc<FillHead>,
        status: CacheStatus,
        peer: Option<PeerCopy>,
    },
    /// A stored entry answers: committed meanwhile (`Hit`), freshened by this request's
    /// revalidation (`Revalidated`) or by the one of the fill it joined (`Collapsed`).
    Stored {
        entry: Arc<Entry>,
        status: CacheStatus,
    },
    /// A range that starts no fill, answered from a peer's stored copy (verified pieces).
    Span(super::ranges::PeerSpan),
    /// An answer that is not stored (`why`: a `NotStorable` reason, `too-big`, `max-fills`,
    /// `range-not-filled`…): relay it. `passed`: the client's request went upstream as it was
    /// (its Range and preconditions with it), not a fill's request.
    Direct {
        resp: Response<Incoming>,
        why: &'static str,
        passed: bool,
    },
}

/// What a leader's task did.
enum Led {
    Fetched(Fetched),
    Peer { head: Arc<FillHead>, copy: PeerCopy },
}

/// The request a fill is led for, owned by the leader's task.
struct Wanted {
    key: String,
    uri: Uri,
    headers: HeaderMap,
    version: http::Version,
}

impl Wanted {
    fn of(miss: &Miss<'_>) -> Wanted {
        Wanted {
            key: miss.key.to_owned(),
            uri: miss.uri.clone(),
            headers: miss.headers.clone(),
            version: miss.version,
        }
    }
}

impl Fetcher {
    /// The miss path: join the fill of `miss.key`, or lead one (peers first, unless a stale
    /// entry is revalidated), or — with `cache.max_fills` fills running — fetch it for this
    /// client alone, unstored (counted). A range that `cache.range_fill` lets start no fill
    /// goes upstream as asked, unless a fill of the key runs (see `ranges`).
    pub async fn fill(&self, miss: &Miss<'_>) -> Result<Got, Error> {
        if let Some(got) = self.unfilled_range(miss).await {
            return got;
        }
        for _ in 0..MAX_JOINS {
            match self.inflight.join(miss.key) {
                Join::Leader(permit) => {
                    if miss.stale.is_none() {
                        // A fill may have been committed between the lookup and the join.
                        let found = lookup(&self.store, miss.key, miss.treat, miss.headers).await;
                        if let Lookup::Found(entry) = found {
                            let status = CacheStatus::Hit;
                            return Ok(Got::Stored { entry, status });
                        }
                    }
                    return self.lead_here(permit, miss, true).await;
                }
                Join::Follower(fill) => match fill.head().await {
                    Ok(head) => {
                        let vary = miss.treat.vary(&head.headers());
                        if Variant::of_request(&vary, miss.headers).as_ref() != Some(&head.variant)
                        {
                            break; // another variant: fetch our own
                        }
                        let status = CacheStatus::Collapsed;
                        let peer = None;
                        return Ok(Got::Fill {
                            fill,
                            head,
                            status,
                            peer,
                        });
                    }
                    Err(Outcome::Freshened(entry)) => {
                        let status = CacheStatus::Collapsed;
                        return Ok(Got::Stored { entry, status });
                    }
                    Err(Outcome::Failed(e)) => return Err(e),
                    Err(Outcome::NotShared) => break,
                    Err(_) => continue, // abandoned: somebody (maybe us) leads anew
                },
                Join::Full => return self.unstored(miss).await,
            }
        }
        // A fill nobody joins (another variant, or a response the others may not share).
        match self.inflight.solo() {
            Some(permit) => self.lead_here(permit, miss, false).await,
            None => self.unstored(miss).await,
        }
    }

    /// stale-while-revalidate (RFC 5861 §3): revalidates `stale` in the background, unless a
    /// fill of the key already runs (or none may start).
    pub fn refresh(&self, miss: &Miss<'_>, stale: Arc<Entry>) {
        let Join::Leader(permit) = self.inflight.join(miss.key) else {
            return;
        };
        let task = self.lead_in_task(permit, Wanted::of(miss), Some(stale), false, None);
        let key = miss.key.to_owned();
        tokio::spawn(async move {
            if let Ok(Err(e)) = task.await {
                tracing::info!(%key, "background revalidation failed: {e}");
            }
        });
    }

    /// Leads the fill of `permit` for this request and waits for what the leader got;
    /// `group`: try the peers first on a miss.
    async fn lead_here(
        &self,
        permit: FillPermit,
        miss: &Miss<'_>,
        group: bool,
    ) -> Result<Got, Error> {
        let fill = permit.fill().clone();
        let stale = miss.stale.cloned();
        let led = self
            .lead_in_task(permit, Wanted::of(miss), stale, group, interim_hook())
            .await
            .map_err(|e| Error::internal(format!("the fill's leader failed: {e}")))??;
        Ok(match led {
            Led::Peer { head, copy } => Got::Fill {
                fill,
                head,
                status: CacheStatus::Peer,
                peer: Some(copy),
            },
            Led::Fetched(Fetched::Filling(head)) => Got::Fill {
                fill,
                head,
                status: CacheStatus::Miss,
                peer: None,
            },
            Led::Fetched(Fetched::Redirected { head, node }) => Got::Fill {
                fill,
                head,
                status: CacheStatus::Peer,
                peer: Some(PeerCopy {
                    node,
                    revalidated: false,
                }),
            },
            Led::Fetched(Fetched::Freshened(entry)) => Got::Stored {
                entry,
                status: CacheStatus::Revalidated,
            },
            Led::Fetched(Fetched::Direct { resp, why }) => Got::Direct {
                resp,
                why,
                passed: false,
            },
        })
    }

    /// Leads the fill of `permit` in a task of its own: a stale entry is revalidated with the
    /// origin, a miss goes to the peer group (with `group`; not for a fill others cannot join),
    /// then to the origin; `interim` is told the origin's 1xx. The client that started it may
    /// leave at any time, before the response head too, without ending the fill: requests that
    /// joined it, or join later, still read it, and the origin is asked once. A peer claim made
    /// on the way is held by the permit and ends with the fill.
    fn lead_in_task(
        &self,
        permit: FillPermit,
        want: Wanted,
        stale: Option<Arc<Entry>>,
        group: bool,
        interim: Option<OnInterim>,
    ) -> tokio::task::JoinHandle<Result<Led, Error>> {
        let fetcher = self.clone();
        tokio::spawn(relaying_interim(interim, async move {
            let Wanted {
                key,
                uri,
                headers,
                version,
            } = &want;
            let permit = match stale {
                None if group => {
                    let want = Want {
                        key,
                        uri,
                        headers,
                        version: *version,
                    };
                    match fetcher.via_peers(permit, &want).await? {
                        FromPeers::Peer {
                            head,
                            revalidated,
                            node,
                        } => {
                            let copy = PeerCopy { node, revalidated };
                            return Ok(Led::Peer { head, copy });
                        }
                        FromPeers::Origin(fetched) => return Ok(Led::Fetched(fetched)),
                        FromPeers::NotHere(permit) => permit,
                    }
                }
                _ => permit,
            };
            fetcher
                .lead(permit, key, uri, headers, *version, stale.as_ref())
                .await
                .map(Led::Fetched)
        }))
    }

    /// A miss fetched for its client alone and not stored: `cache.max_fills` fills are running.
    async fn unstored(&self, miss: &Miss<'_>) -> Result<Got, Error> {
        Metrics::inc(&self.metrics.fills_passed_unstored);
        self.passed(miss, "max-fills").await
    }

    /// The client's GET sent upstream as it is (Range and preconditions with it), its answer
    /// not stored, for the reason `why`.
    pub(super) async fn passed(&self, miss: &Miss<'_>, why: &'static str) -> Result<Got, Error> {
        let resp = self
            .pass(
                Method::GET,
                miss.uri,
                miss.headers,
                miss.version,
                body::empty(),
            )
            .await?;
        Ok(Got::Direct {
            resp,
            why,
            passed: true,
        })
    }
}
