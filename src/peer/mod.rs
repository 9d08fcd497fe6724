//! The peer group as this node takes part in it: identity, membership, the replicated index
//! (ours and everyone's), and the transfer API. Owns the peer port; asks nothing of the origin.

pub mod anti_entropy;
pub mod auth;
pub mod client;
pub mod conns;
pub mod discovery;
pub mod holders;
pub mod identity;
pub mod index;
pub mod journal;
pub mod membership;
pub mod own;
pub mod pace;
pub mod pieces;
pub mod pulls;
pub mod redirect;
pub mod schedule;
pub mod seeds;
pub mod select;
pub mod sim;
pub mod sites;
pub mod transfer;
pub mod wire;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::body::{self, Body};
use crate::cache::head::Entry;
use crate::cache::inflight::Inflight;
use crate::cache::rules::Rules;
use crate::cache::store::Store;
use crate::config::{Config, Discover, GossipProfile};
use crate::error::Error;
use crate::port_owner::Proto;

use self::anti_entropy::AntiEntropy;
use self::auth::{ClusterKey, ReplayCache, RequestSigner, REPLAY_CAPACITY};
use self::client::PeerClient;
use self::conns::{ConnLimits, Conns};
use self::index::{BodyId, HolderState, Index};
use self::journal::{Journal, DEFAULT_JOURNAL_CAPACITY};
use self::membership::{Event, MemberInfo, MemberState, Membership, MembershipConfig, Timings};
use self::own::StoreState;
use self::pulls::{PullId, Pulls, Want};
use self::seeds::Resolver;
use self::select::{Candidate, Fault, Penalties, RttTable};
use self::wire::{Head, HeadsReply, IndexAsk, IndexReply, KeyHash, NodeId, Tagged, Update};

/// Knobs that tests turn (production uses `Default`).
#[derive(Debug, Clone)]
pub struct PeerTuning {
    /// Gossip timings on one site (`peers.profile` "lan", and "auto" at first).
    pub timings: Timings,
    /// Gossip timings across sites (`peers.profile` "wan", and "auto" once a member of another
    /// site is up).
    pub wan_timings: Timings,
    /// How long a node that claims a cold object waits for competing claims (a little more
    /// than the gossip delay), so that only one node of the group goes to the origin.
    pub claim_window: Duration,
    /// The same while a member of another site is active: a claim must cross the WAN to reach
    /// it (see [`sites::cold_window`]).
    pub wan_claim_window: Duration,
    /// UDP port of multicast DNS discovery (5353; tests use their own so that they find only
    /// each other).
    pub mdns_port: u16,
    /// Stored keys per page of an index snapshot ([`DEFAULT_INDEX_PAGE`]).
    pub index_page: usize,
    /// Transfer connections served at once, in total and per source address.
    pub connections: ConnLimits,
    /// How seed names become addresses (DNS).
    pub resolver: Resolver,
}

/// How long a cold claim waits while the group spans sites: a claim is sent straight to every
/// member, so this covers a one-way WAN delay of up to ~200 ms with room to spare.
pub const WAN_CLAIM_WINDOW: Duration = Duration::from_millis(250);

/// Stored keys per index snapshot page: a page of `Have` entries (at most 85 bytes each in
/// postcard) stays far below the client's reply limit, and reading it is one short store
/// transaction.
pub const DEFAULT_INDEX_PAGE: usize = 8192;

/// Snapshot pages read at the same time; an index pull past this waits for a read up to
/// [`SNAPSHOT_QUEUE_WAIT`], then is answered 503 (counted as `snapshots_refused`) and retried by
/// the puller after a back-off.
pub const MAX_SNAPSHOT_READS: usize = 2;

/// How long an index pull that needs a snapshot page waits for a read slot. A group that forms
/// (or heals) has every member ask every other for a snapshot at once; pages of a small store
/// take well under a millisecond, so they queue for a moment instead of being turned away by
/// the dozen and coming back seconds later. Far below the asker's `client::ANSWER_WAIT`.
pub const SNAPSHOT_QUEUE_WAIT: Duration = Duration::from_millis(500);

impl Default for PeerTuning {
    fn default() -> Self {
        PeerTuning {
            timings: Timings::lan(),
            wan_timings: Timings::wan(),
            claim_window: Duration::from_millis(50),
            wan_claim_window: WAN_CLAIM_WINDOW,
            mdns_port: discovery::MDNS_PORT,
            index_page: DEFAULT_INDEX_PAGE,
            connections: ConnLimits::default(),
            resolver: Resolver::dns(),
        }
    }
}

/// Counters of the peer side.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Transfer requests refused for their proof of membership (any reason).
    pub rejected_requests: AtomicU64,
    /// Of those, proofs already used: replayed requests.
    pub replayed_requests: AtomicU64,
    /// Of those, refused (503) because the replay cache was full.
    pub replay_cache_full: AtomicU64,
    pub uploads: AtomicU64,
    /// Uploads refused (503) because `max_uploads` were running.
    pub uploads_refused: AtomicU64,
    /// 503 answers we got from busy peers (each ranks that peer last for a moment).
    pub busy_answers: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub bad_hashes: AtomicU64,
    pub failovers: AtomicU64,
    /// Uploaded body bytes sent from blob files with `sendfile`.
    pub sendfile_bytes: AtomicU64,
    /// Index pull rounds we ran (one per request to a member, snapshot pages not counted).
    pub index_pulls: AtomicU64,
    /// Gaps that joined the pull of that node already running instead of starting one.
    pub index_pulls_coalesced: AtomicU64,
    /// Pull rounds that failed (retried with back-off).
    pub index_pull_failures: AtomicU64,
    /// Snapshot pages we served.
    pub snapshot_pages: AtomicU64,
    /// Snapshot pages refused (503) because `MAX_SNAPSHOT_READS` were being read.
    pub snapshots_refused: AtomicU64,
    /// Anti-entropy rounds run (heads asked of a member), and those that failed.
    pub heads_rounds: AtomicU64,
    pub heads_failures: AtomicU64,
    /// Heads (told by a member that pulls from us, or in a round's answer) that showed us behind
    /// a member's stream we hold: each wants a pull of it (untracked streams are pulled too,
    /// uncounted: that is what a member's `Up` does anyway).
    pub heads_behind: AtomicU64,
    /// Gossiped updates dropped because their node is not a live member.
    pub updates_from_strangers: AtomicU64,
    /// Transfer connections refused (503, closed) at the listener's limits.
    pub connections_refused: AtomicU64,
    /// Body bytes received from, and uploaded to, members of another site: what crossed
    /// between sites.
    pub bytes_from_other_sites: AtomicU64,
    pub bytes_to_other_sites: AtomicU64,
    /// Copies fetched from several holders at once (`fetch::parallel`).
    pub multi_copies: AtomicU64,
    /// Pieces (or their rest) given to another holder after theirs failed.
    pub pieces_reassigned: AtomicU64,
    /// Pieces raced by a second, faster holder (the first to finish wins).
    pub pieces_raced: AtomicU64,
    /// Times a holder waited because the next piece lay past the reorder window.
    pub window_waits: AtomicU64,
    /// Bytes held right now by copies, arrived ahead of the bytes handed on.
    pub reorder_bytes: AtomicU64,
}

/// A holder of a key, resolved to an address, in the order to ask them.
#[derive(Debug, Clone)]
pub struct Source {
    pub node: NodeId,
    pub addr: SocketAddr,
    /// On our site (same `site` label).
    pub same_site: bool,
    /// The complete body the index names for it (its [`BodyId`], a prefix of its blake3, and
    /// its length); `None`: it was fetching the key. Its entry names the whole hash, and is
    /// taken only if it matches this (see [`Source::names`]).
    pub complete: Option<(BodyId, u64)>,
}

/// This node's membership in the peer group.
pub struct Peers {
    pub id: NodeId,
    pub site: String,
    pub store: Store,
    pub inflight: Arc<Inflight>,
    pub signer: Arc<RequestSigner>,
    /// Proofs accepted recently: each is accepted once.
    pub replay: ReplayCache,
    pub client: PeerClient,
    pub uploads: Arc<Semaphore>,
    pub max_uploads: usize,
    /// How long the transfer API waits for an in-flight fill's response head.
    pub head_wait: Duration,
    /// The claim window on one site; across sites see [`Peers::cold_claim_window`].
    pub claim_window: Duration,
    pub wan_claim_window: Duration,
    /// Stored keys per snapshot page we serve.
    pub index_page: usize,
    /// Snapshot page reads allowed at once ([`MAX_SNAPSHOT_READS`]).
    pub snapshot_reads: Arc<Semaphore>,
    /// Transfer connections held on the peer port.
    pub conns: Arc<Conns>,
    pub stats: PeerStats,
    membership: Membership,
    journal: Mutex<Journal<StoreState>>,
    index: Mutex<Index>,
    /// The catch-up pulls running, one per node.
    pulls: Mutex<Pulls>,
    /// When to compare stream heads with a random member (see [`anti_entropy`]).
    anti_entropy: Mutex<AntiEntropy>,
    penalties: Mutex<Penalties>,
    rtt: Mutex<RttTable>,
    bytes_from: Mutex<HashMap<NodeId, u64>>,
    /// Body bytes uploaded to each live member (forgotten when it goes Down).
    bytes_to: Mutex<HashMap<NodeId, u64>>,
    /// The freshness rules our advertised lifetimes are computed with.
    rules: Arc<Rules>,
    /// `cache.sendfile`: uploads by content hash may use `sendfile(2)`.
    pub sendfile: bool,
    /// What mDNS discovery found, when it runs.
    discovery_stats: Option<Arc<discovery::DiscoveryStats>>,
    /// `peers.parallel_holders`: most holders one copy is fetched from at once.
    pub parallel_holders: usize,
    /// `peers.piece_size`: the piece of such a copy.
    pub piece_size: u64,
    /// `peers.upload_rate`: the link every upload frame reserves, when capped.
    upload_link: Option<Mutex<pace::Link>>,
    /// The zero of the upload link's clock.
    started: tokio::time::Instant,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wall-clock unix time in ms (for penalties and peer-request stamps).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The node id kept in the cache directory (created at first start).
pub fn node_id(dir: &Path) -> Result<NodeId, Error> {
    let path = dir.join("node-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return text
            .trim()
            .parse()
            .map_err(|e| Error::storage(format!("{}: {e}", path.display())));
    }
    let id = NodeId::random();
    std::fs::write(&path, format!("{id}\n"))
        .map_err(|e| Error::storage(format!("{}: {e}", path.display())))?;
    Ok(id)
}

/// The running peer side: its handle plus what `app::Server` must stop at shutdown.
pub struct Started {
    pub peers: Arc<Peers>,
    pub transfer_addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    /// mDNS announcing and browsing, with `peers.discover = "mdns"`; withdrawn when dropped.
    discovery: Option<discovery::Mdns>,
}

impl Started {
    /// Withdraws the mDNS announcement, leaves the group cleanly and stops the transfer API.
    pub async fn stop(mut self) {
        drop(self.discovery.take());
        let _ = self.stop.send(true);
        self.peers.membership.clone().leave().await;
        let _ = self.server.await;
    }
}

/// The peer port: TCP for the transfer API and UDP for gossip on the same port number, bound
/// before the node writes anything to disk.
#[derive(Debug)]
pub struct PeerSockets {
    tcp: TcpListener,
    udp: UdpSocket,
}

impl PeerSockets {
    /// Binds TCP on `listen`, then UDP on the port TCP got (`listen` may say port 0). The error
    /// says which protocol failed, on which address.
    pub async fn bind(listen: SocketAddr) -> Result<PeerSockets, (Proto, SocketAddr, io::Error)> {
        let tcp = TcpListener::bind(listen)
            .await
            .map_err(|e| (Proto::Tcp, listen, e))?;
        let bound = tcp.local_addr().map_err(|e| (Proto::Tcp, listen, e))?;
        let udp = UdpSocket::bind(bound)
            .await
            .map_err(|e| (Proto::Udp, bound, e))?;
        Ok(PeerSockets { tcp, udp })
    }
}

impl Peers {
    /// Reads (or creates) the node id, joins the group through the seeds on the bound peer
    /// port and starts serving the transfer API.
    pub async fn start(
        config: &Config,
        key: ClusterKey,
        sockets: PeerSockets,
        store: Store,
        inflight: Arc<Inflight>,
        rules: Arc<Rules>,
        tuning: PeerTuning,
    ) -> Result<Started, Error> {
        let pc = &config.peers;
        let dir = config.cache.dir.clone();
        let id = tokio::task::spawn_blocking(move || node_id(&dir))
            .await
            .map_err(|e| Error::internal(e.to_string()))??;
        let PeerSockets { tcp: listener, udp } = sockets;
        let transfer_addr = listener
            .local_addr()
            .map_err(|e| Error::internal(e.to_string()))?;
        let advertise = pc.advertise.unwrap_or(transfer_addr);
        let (seeds, unresolved) = seeds::resolve_all(&pc.seeds, &tuning.resolver).await;
        let (tx, events) = Membership::events();
        let timings = match pc.profile {
            GossipProfile::Lan => tuning.timings.clone(),
            GossipProfile::Wan => tuning.wan_timings.clone(),
            GossipProfile::Auto => Timings {
                across_sites: Some(Box::new(tuning.wan_timings.clone())),
                ..tuning.timings.clone()
            },
        };
        let membership = Membership::start_on(
            udp,
            MembershipConfig {
                id,
                bind: transfer_addr,
                advertise,
                site: pc.site.clone(),
                seeds,
                key: key.clone(),
            },
            timings.clone(),
            tx,
        )
        .map_err(|e| Error::internal(format!("peer gossip on {transfer_addr}: {e}")))?;
        let discovery = match pc.discover {
            Discover::None => None,
            Discover::Mdns => {
                let cfg = discovery::MdnsConfig {
                    id,
                    site: pc.site.clone(),
                    advertise: membership.advertise(),
                    fingerprint: key.fingerprint(),
                    port: tuning.mdns_port,
                };
                let mdns = discovery::Mdns::start(cfg, membership.clone()).map_err(|e| {
                    Error::internal(format!("peers.discover: cannot start mDNS: {e}"))
                })?;
                Some(mdns)
            }
        };
        let signer = Arc::new(RequestSigner::new(&key));
        let epoch = now_ms();
        let peers = Arc::new(Peers {
            id,
            site: pc.site.clone(),
            store: store.clone(),
            inflight,
            signer: signer.clone(),
            replay: ReplayCache::new(REPLAY_CAPACITY, now_ms()),
            client: PeerClient::new(
                signer,
                id,
                Some(transfer_addr.ip()).filter(|ip| !ip.is_unspecified()),
                pc.connect_timeout,
                config.upstream.read_timeout,
            ),
            uploads: Arc::new(Semaphore::new(pc.max_uploads)),
            max_uploads: pc.max_uploads,
            head_wait: config.upstream.read_timeout,
            claim_window: tuning.claim_window,
            wan_claim_window: tuning.wan_claim_window,
            index_page: tuning.index_page.max(1),
            snapshot_reads: Arc::new(Semaphore::new(MAX_SNAPSHOT_READS)),
            conns: Conns::new(tuning.connections),
            stats: PeerStats::default(),
            membership,
            journal: Mutex::new(Journal::with_state(
                id,
                epoch,
                DEFAULT_JOURNAL_CAPACITY,
                StoreState::new(store.clone(), rules.clone()),
            )),
            // A content server finds holders by body (`peer::holders`).
            index: Mutex::new(
                Index::new(id)
                    .with_body_holders(config.mirrors.iter().any(|m| m.redirect_to_peers)),
            ),
            pulls: Mutex::new(Pulls::default()),
            anti_entropy: Mutex::new(AntiEntropy::default()),
            penalties: Mutex::new(Penalties::default()),
            rtt: Mutex::new(RttTable::default()),
            bytes_from: Mutex::new(HashMap::new()),
            bytes_to: Mutex::new(HashMap::new()),
            rules,
            sendfile: config.cache.sendfile,
            discovery_stats: discovery.as_ref().map(|d| d.stats.clone()),
            parallel_holders: pc.parallel_holders,
            piece_size: pc.piece_size,
            upload_link: (pc.upload_rate > 0).then(|| Mutex::new(pace::Link::new(pc.upload_rate))),
            started: tokio::time::Instant::now(),
        });
        // What we already hold needs no updates: members pull a snapshot (read from the store)
        // when they see us come up.
        let weak = Arc::downgrade(&peers);
        store.on_removed(Box::new(move |key| {
            if let Some(p) = weak.upgrade() {
                p.advertise_dropped(key);
            }
        }));
        tokio::spawn(events_loop(Arc::downgrade(&peers), events));
        if !unresolved.is_empty() {
            tokio::spawn(seeds::keep_resolving(
                Arc::downgrade(&peers),
                unresolved,
                tuning.resolver.clone(),
                timings.reannounce_every,
            ));
        }
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(anti_entropy_loop(Arc::downgrade(&peers), stop_rx.clone()));
        let server = tokio::spawn(transfer::serve(listener, peers.clone(), stop_rx));
        tracing::info!(%id, %transfer_addr, "peer group: joined as {advertise}");
        Ok(Started {
            peers,
            transfer_addr,
            stop,
            server,
            discovery,
        })
    }

    /// Records one of our updates and gossips it at once.
    fn advertise(&self, update: Update) {
        let tagged = lock(&self.journal).record(update);
        self.gossip(&tagged);
    }

    fn gossip(&self, tagged: &Tagged) {
        match postcard::to_stdvec(tagged) {
            Ok(bytes) => self.membership.broadcast(bytes),
            Err(e) => tracing::error!("cannot encode an index update: {e}"),
        }
    }

    /// We store a complete, shareable copy of `entry`.
    pub fn advertise_have(&self, entry: &Entry) {
        self.advertise(own::have(entry, &self.rules, SystemTime::now()));
    }

    /// We start downloading `key`: advertises `in_flight` (a claim other nodes may follow) and
    /// returns the claim, which withdraws it when dropped. Hold it as long as the fill runs
    /// (`FillPermit::hold`).
    pub fn claim(self: &Arc<Self>, key: &str) -> Claim {
        let (h, token) = lock(&self.journal).state_mut().claim(key);
        self.advertise(Update::InFlight { key: h });
        Claim {
            peers: Arc::downgrade(self),
            key: key.to_owned(),
            token,
        }
    }

    /// We no longer hold the key with this hash.
    pub fn advertise_dropped(&self, h: &KeyHash) {
        self.advertise(Update::Dropped { key: *h });
    }

    /// A claim ends. Unless a `Have` or `Dropped` of its key was recorded since (or a later
    /// claim replaced it), it is withdrawn: `Dropped`, or `Have` again when the store still
    /// holds a shareable variant of the key (the claim had replaced that `Have` at the others).
    fn end_claim(self: &Arc<Self>, key: &str, token: u64) {
        let h = key_hash(key);
        let dropped = {
            let mut journal = lock(&self.journal);
            if !journal.state().is_open(&h, token) {
                return;
            }
            (!self.store.holds_shareable(key)).then(|| journal.record(Update::Dropped { key: h }))
        };
        match dropped {
            Some(tagged) => self.gossip(&tagged),
            None => {
                // Reading the entry may touch the disk: not here, in a `Drop`.
                let (me, key) = (self.clone(), key.to_owned());
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn_blocking(move || {
                        let shareable = me
                            .store
                            .get(&key)
                            .and_then(|v| v.entries.iter().find(|e| e.shareable).cloned());
                        match shareable {
                            Some(e) => me.advertise_have(&e),
                            None => me.advertise_dropped(&h),
                        }
                    });
                }
            }
        }
    }

    /// The key string for one of our key hashes in flight.
    pub fn local_key(&self, h: &KeyHash) -> Option<String> {
        lock(&self.journal).state().claimed(h).map(str::to_owned)
    }

    /// The answer to an index pull that the journal covers (no store read), if it does.
    pub fn index_updates(&self, ask: &IndexAsk) -> Option<IndexReply> {
        match ask {
            IndexAsk::Since { epoch, since, .. } => {
                lock(&self.journal).updates_since(*epoch, *since)
            }
            IndexAsk::Page { .. } => None,
        }
    }

    /// Member `node` pulls from us and says where its own stream stands: when we lag behind it
    /// (an update of its that we missed, say while the two of us could not reach each other,
    /// and that no later one of its showed as a gap), we pull from it in turn.
    pub fn heard_head(self: &Arc<Self>, node: NodeId, head: Head) {
        if self.addr_of(node).is_none() {
            return;
        }
        let (tracked, behind) = {
            let mut index = lock(&self.index);
            let tracked = index.applied(node).is_some();
            (tracked, index.heard(node, head.epoch, head.seq))
        };
        if behind {
            if tracked {
                self.stats.heads_behind.fetch_add(1, Relaxed);
            }
            self.pull(node);
        }
    }

    /// Where our stream and every stream we applied stand (`GET /peer/v1/heads`).
    pub fn heads(&self) -> HeadsReply {
        let own = lock(&self.journal).head();
        let mut heads = vec![(self.id, own)];
        heads.extend(lock(&self.index).heads());
        heads
    }

    /// An anti-entropy round: asks `node` where the streams it applied stand, and pulls from
    /// each member it is ahead of us on (at most [`index::MAX_NODES`] heads are read).
    async fn compare_heads(self: &Arc<Self>, node: NodeId) {
        let Some((addr, _)) = self.addr_of(node) else {
            return;
        };
        self.stats.heads_rounds.fetch_add(1, Relaxed);
        match self.client.heads(node, addr).await {
            Ok(heads) => {
                for (n, head) in heads.into_iter().take(index::MAX_NODES + 1) {
                    if n != self.id {
                        self.heard_head(n, head);
                    }
                }
            }
            Err(e) => {
                self.stats.heads_failures.fetch_add(1, Relaxed);
                tracing::debug!(%node, "anti-entropy round failed: {e}");
            }
        }
    }

    /// The active members' ids.
    fn active_members(&self) -> Vec<NodeId> {
        self.membership
            .members()
            .into_iter()
            .filter(|m| m.state.is_active())
            .map(|m| m.id)
            .collect()
    }

    /// One page of a snapshot for `ask`: the first page of a new snapshot, or the page after the
    /// asker's key of the snapshot it started in our current epoch. Blocking: reads up to
    /// `index_page` rows of the store (outside the journal's lock, so advertising goes on).
    pub fn index_page(&self, ask: &IndexAsk) -> IndexReply {
        let (at, source, after) = {
            let j = lock(&self.journal);
            let after = match ask {
                IndexAsk::Page {
                    epoch,
                    snapshot,
                    after,
                } if *epoch == j.epoch() => Some((*snapshot, *after)),
                _ => None,
            };
            let at = j.snapshot_at();
            match after {
                Some((seq, key)) => (at.at_seq(seq), j.state().detach(), Some(key)),
                None => (at, j.state().detach(), None),
            }
        };
        let (entries, next) = source.page(after.as_ref(), self.index_page);
        at.page(entries, next)
    }

    /// The address other nodes reach us at (gossip and transfer).
    pub fn membership_addr(&self) -> SocketAddr {
        self.membership.advertise()
    }

    /// Current members (not us).
    pub fn members(&self) -> Vec<MemberInfo> {
        self.membership.members()
    }

    /// A live member's address, and whether it is on our site.
    fn addr_of(&self, node: NodeId) -> Option<(SocketAddr, bool)> {
        self.membership
            .member(node)
            .filter(|m| m.state.is_active())
            .map(|m| (m.addr, m.site == self.site))
    }

    /// Holders of `key` on live members, best first (see [`select::rank`]), leaving out
    /// penalised peers. With `in_flight_below`, in-flight holders count only
    /// when their id is lower (the tie-break between simultaneous claims).
    pub fn sources(&self, key: &KeyHash, in_flight_below: Option<NodeId>) -> Vec<Source> {
        let holders = lock(&self.index).holders(key);
        let now_secs = now_ms() / 1000;
        let mut by_node = HashMap::new();
        let mut cands = Vec::new();
        for h in holders {
            let (complete, fresh) = match h.state {
                HolderState::Complete {
                    body,
                    len,
                    fresh_until,
                } => (Some((body, len)), fresh_until > now_secs),
                HolderState::InFlight => (None, false),
            };
            if complete.is_none() && in_flight_below.is_some_and(|me| h.node >= me) {
                continue;
            }
            let Some((addr, same_site)) = self.addr_of(h.node) else {
                continue;
            };
            cands.push(Candidate {
                node: h.node,
                same_site,
                complete: complete.is_some(),
                fresh,
                rtt: lock(&self.rtt).get(h.node),
                uploads: self.client.reported_uploads(h.node).unwrap_or(0),
            });
            by_node.insert(
                h.node,
                Source {
                    node: h.node,
                    addr,
                    same_site,
                    complete,
                },
            );
        }
        let order = select::rank(cands, &lock(&self.penalties), now_ms());
        order
            .into_iter()
            .filter_map(|n| by_node.remove(&n))
            .collect()
    }

    /// How long a claim on a cold object waits for competing claims: longer while an active
    /// member is on another site (see [`sites::cold_window`]).
    pub fn cold_claim_window(&self) -> Duration {
        let other_sites = self
            .membership
            .members()
            .iter()
            .any(|m| m.state.is_active() && m.site != self.site);
        sites::cold_window(self.claim_window, self.wan_claim_window, other_sites)
    }

    /// Does anybody else take part in the group right now?
    pub fn has_members(&self) -> bool {
        self.membership
            .members()
            .iter()
            .any(|m| m.state != MemberState::Down)
    }

    /// A request to `node` failed with `e`: what it costs the peer (see [`Fault`]), recorded
    /// and returned; `None` when the failure was not the peer's.
    pub fn failed(&self, node: NodeId, e: &Error) -> Option<Fault> {
        let fault = Fault::of(e)?;
        self.charge(node, fault);
        Some(fault)
    }

    /// What `fault` costs `node` (see [`Fault`]): recorded, and a busy answer counted.
    pub fn charge(&self, node: NodeId, fault: Fault) {
        if fault == Fault::Busy {
            self.stats.busy_answers.fetch_add(1, Relaxed);
        }
        lock(&self.penalties).record(node, fault, now_ms());
    }

    pub fn observe_rtt(&self, node: NodeId, sample: Duration) {
        lock(&self.rtt).observe(node, sample);
    }

    /// Body bytes received from `node`, kept per live member only (forgotten when it goes
    /// Down), so the map is bounded by the group.
    pub fn count_download(&self, node: NodeId, n: u64) {
        if let Some((_, same_site)) = self.addr_of(node) {
            *lock(&self.bytes_from).entry(node).or_insert(0) += n;
            if !same_site {
                self.stats.bytes_from_other_sites.fetch_add(n, Relaxed);
            }
        }
    }

    /// The upload body `b`, held to `peers.upload_rate` with every other upload when capped.
    pub fn paced(self: &Arc<Self>, b: Body) -> Body {
        if self.upload_link.is_none() {
            return b;
        }
        let peers = self.clone();
        body::paced(b, move |n| peers.reserve_upload(n))
    }

    /// Whether uploads are capped (`peers.upload_rate`).
    pub fn upload_capped(&self) -> bool {
        self.upload_link.is_some()
    }

    /// When an upload frame of `n` bytes may go.
    fn reserve_upload(&self, n: u64) -> tokio::time::Instant {
        let Some(link) = &self.upload_link else {
            return tokio::time::Instant::now();
        };
        let at = lock(link).reserve(n, self.started.elapsed());
        self.started + at
    }

    /// An upload of `n` body bytes to `to`; per-member bytes are kept for live members only (a
    /// member may sign as any node id), so the map is bounded by the group.
    pub fn count_upload(&self, to: NodeId, n: u64) {
        if let Some((_, same_site)) = self.addr_of(to) {
            *lock(&self.bytes_to).entry(to).or_insert(0) += n;
            if !same_site {
                self.stats.bytes_to_other_sites.fetch_add(n, Relaxed);
            }
        }
        self.stats.uploads.fetch_add(1, Relaxed);
        self.stats.bytes_uploaded.fetch_add(n, Relaxed);
    }

    /// The peer part of the status page.
    pub fn status_json(&self) -> serde_json::Value {
        let gossip = self.membership.counters();
        let (conns_held, conns_addresses) = self.conns.held();
        let index = lock(&self.index);
        let bytes_from = lock(&self.bytes_from);
        let bytes_to = lock(&self.bytes_to);
        let rtt = lock(&self.rtt);
        let (penalties, now) = (lock(&self.penalties), now_ms());
        let members: Vec<serde_json::Value> = self
            .membership
            .members()
            .into_iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id.to_string(),
                    "addr": m.addr.to_string(),
                    "site": m.site,
                    "state": m.state.as_str(),
                    "rtt_ms": rtt.get(m.id).map(|d| d.as_secs_f64() * 1000.0),
                    "bytes_from": bytes_from.get(&m.id).copied().unwrap_or(0),
                    "bytes_to": bytes_to.get(&m.id).copied().unwrap_or(0),
                    // Left out of source choice for now (bad copy, stalled, dead).
                    "penalised": penalties.is_penalised(m.id, now),
                })
            })
            .collect();
        serde_json::json!({
            "id": self.id.to_string(),
            "addr": self.membership_addr().to_string(),
            "site": self.site,
            "gossip_profile": self.membership.profile().as_str(),
            "members": members,
            // Body bytes exchanged with members of other sites (what crossed between sites).
            "cross_site": {
                "bytes_received": self.stats.bytes_from_other_sites.load(Relaxed),
                "bytes_sent": self.stats.bytes_to_other_sites.load(Relaxed),
            },
            "index": {
                "keys": index.keys(),
                "entries": index.entries(),
                "nodes": index.nodes(),
                "refused_nodes": index.refused(),
                "buffer_overflows": index.overflowed(),
                "updates_from_strangers": self.stats.updates_from_strangers.load(Relaxed),
            },
            "journal_evicted": lock(&self.journal).evicted(),
            "gossip_events_dropped": gossip.events_dropped.load(Relaxed),
            "gossip_broadcasts_dropped": gossip.broadcasts_dropped.load(Relaxed),
            "gossip_bytes_sent": gossip.bytes_sent.load(Relaxed),
            "gossip_bytes_received": gossip.bytes_received.load(Relaxed),
            "connections": { "held": conns_held, "addresses": conns_addresses },
            "connections_refused": self.stats.connections_refused.load(Relaxed),
            "own_claims": lock(&self.journal).state().claims(),
            "rejected_packets": self.membership.rejected_packets(),
            "rejected_requests": self.stats.rejected_requests.load(Relaxed),
            "replayed_requests": self.stats.replayed_requests.load(Relaxed),
            "replay_cache_full": self.stats.replay_cache_full.load(Relaxed),
            "uploads": self.stats.uploads.load(Relaxed),
            "uploads_refused": self.stats.uploads_refused.load(Relaxed),
            "busy_answers": self.stats.busy_answers.load(Relaxed),
            "bytes_uploaded": self.stats.bytes_uploaded.load(Relaxed),
            "bad_hashes": self.stats.bad_hashes.load(Relaxed),
            "failovers": self.stats.failovers.load(Relaxed),
            "multi_copies": self.stats.multi_copies.load(Relaxed),
            "pieces_reassigned": self.stats.pieces_reassigned.load(Relaxed),
            "pieces_raced": self.stats.pieces_raced.load(Relaxed),
            "window_waits": self.stats.window_waits.load(Relaxed),
            "reorder_bytes": self.stats.reorder_bytes.load(Relaxed),
            "sendfile_bytes": self.stats.sendfile_bytes.load(Relaxed),
            "index_pulls": self.stats.index_pulls.load(Relaxed),
            "index_pulls_running": lock(&self.pulls).running(),
            "index_pulls_coalesced": self.stats.index_pulls_coalesced.load(Relaxed),
            "index_pull_failures": self.stats.index_pull_failures.load(Relaxed),
            "snapshot_pages": self.stats.snapshot_pages.load(Relaxed),
            "snapshots_refused": self.stats.snapshots_refused.load(Relaxed),
            "heads_rounds": self.stats.heads_rounds.load(Relaxed),
            "heads_failures": self.stats.heads_failures.load(Relaxed),
            "heads_behind": self.stats.heads_behind.load(Relaxed),
            "discovery": self.discovery_stats.as_ref().map(|d| d.to_json()),
        })
    }

    /// Applies a gossiped update from a live member; anyone else's is dropped and counted (a
    /// member we learn of later is pulled from on its `Up`), so the index holds no state for
    /// strangers.
    fn apply(self: &Arc<Self>, t: Tagged) {
        if self.addr_of(t.node).is_none() {
            self.stats.updates_from_strangers.fetch_add(1, Relaxed);
            return;
        }
        let applied = lock(&self.index).apply(t);
        if let index::Applied::Gap { node, .. } = applied {
            self.pull(node);
        }
    }

    /// Wants what we miss of `node`'s updates pulled over TCP: starts its puller unless one
    /// runs (then that one goes again when it ends). Only members are pulled from.
    fn pull(self: &Arc<Self>, node: NodeId) {
        if self.addr_of(node).is_none() {
            return;
        }
        match lock(&self.pulls).want(node) {
            Want::Start(id) => {
                let pull = Pull {
                    peers: self.clone(),
                    node,
                    id,
                };
                tokio::spawn(pull.run());
            }
            Want::Coalesced => {
                self.stats.index_pulls_coalesced.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The one pull of a node's index, running; dropping it (returned, gave up, cancelled) ends it.
struct Pull {
    peers: Arc<Peers>,
    node: NodeId,
    id: PullId,
}

impl Drop for Pull {
    fn drop(&mut self) {
        lock(&self.peers.pulls).end(self.node, self.id);
    }
}

impl Pull {
    /// Rounds until the node's index shows no gap (or no progress), with back-off on failure
    /// (see [`pulls::retry_after`]); ends when the node leaves.
    async fn run(self) {
        let (peers, node) = (&self.peers, self.node);
        let mut failures = 0;
        while let Some((addr, _)) = peers.addr_of(node) {
            peers.stats.index_pulls.fetch_add(1, Relaxed);
            match peers.catch_up(node, addr).await {
                Ok(applied) => {
                    failures = 0;
                    let gapped = lock(&peers.index).gap(node).is_some();
                    if !lock(&peers.pulls).round_done(node, self.id, applied > 0 && gapped) {
                        return;
                    }
                }
                Err(e) => {
                    peers.stats.index_pull_failures.fetch_add(1, Relaxed);
                    tracing::debug!(%node, failures, "index pull failed: {e}");
                    let behind = lock(&peers.index).behind(node);
                    let Some(wait) = pulls::retry_after(failures, behind, rand::random()) else {
                        return;
                    };
                    failures += 1;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

impl Peers {
    /// One pull round: asks `node` for what follows what we applied, gathers a paged snapshot
    /// page by page, and applies the whole. Returns how many updates or entries took effect.
    async fn catch_up(&self, node: NodeId, addr: SocketAddr) -> Result<usize, Error> {
        let head = Some(lock(&self.journal).head());
        let ask = match lock(&self.index).applied(node) {
            Some((epoch, since)) => IndexAsk::Since {
                epoch: Some(epoch),
                since,
                head,
            },
            None => IndexAsk::Since {
                epoch: None,
                since: 0,
                head,
            },
        };
        let changed = || {
            Error::new(
                crate::error::Kind::UpstreamProtocol,
                crate::error::Side::Peer,
                format!("peer {addr}: another node's index, or its snapshot changed while paging"),
            )
        };
        let mut reply = self.client.index(node, addr, ask).await?;
        if reply_node(&reply) != node {
            return Err(changed());
        }
        while let IndexReply::Snapshot {
            epoch,
            seq,
            entries,
            next,
            ..
        } = &mut reply
        {
            let Some(after) = next.take() else {
                break;
            };
            let ask = IndexAsk::Page {
                epoch: *epoch,
                snapshot: *seq,
                after,
            };
            match self.client.index(node, addr, ask).await? {
                IndexReply::Snapshot {
                    node: n,
                    epoch: e,
                    seq: s,
                    entries: more,
                    next: more_next,
                } if n == node && e == *epoch && s == *seq => {
                    entries.extend(more);
                    *next = more_next;
                }
                _ => return Err(changed()),
            }
        }
        Ok(lock(&self.index).apply_reply(reply))
    }
}

fn reply_node(reply: &IndexReply) -> NodeId {
    match reply {
        IndexReply::Updates { node, .. } | IndexReply::Snapshot { node, .. } => *node,
    }
}

/// Our claim on a key we are fetching (`in_flight` in the group's index): dropping it withdraws
/// the claim unless the fill left a shareable copy (advertised as `Have`), so that however the
/// fill ends — failed, not shareable, or cancelled with its client — the group is not told
/// forever that we are fetching it.
#[must_use = "dropping a claim withdraws it at once"]
pub struct Claim {
    peers: Weak<Peers>,
    key: String,
    token: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(p) = self.peers.upgrade() {
            p.end_claim(&self.key, self.token);
        }
    }
}

/// The group's id for a stored key string (already normalised): its blake3, as
/// `CacheKey::hash` computes it.
pub use crate::cache::key::key_hash;

/// Runs the anti-entropy rounds with random members (see [`anti_entropy`]), one at a time,
/// until the node leaves the group (`stop`) or shuts down.
async fn anti_entropy_loop(peers: Weak<Peers>, mut stop: watch::Receiver<bool>) {
    let start = tokio::time::Instant::now();
    loop {
        let due = match peers.upgrade() {
            Some(p) => lock(&p.anti_entropy).due(p.active_members().len()),
            None => return,
        };
        tokio::select! {
            () = tokio::time::sleep_until(start + due) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let Some(p) = peers.upgrade() else { return };
        let members = p.active_members();
        if lock(&p.anti_entropy).start(start.elapsed(), members.len()) && !members.is_empty() {
            let node = members[rand::random_range(0..members.len())];
            p.compare_heads(node).await;
        }
    }
}

/// Feeds membership events into the index until the node shuts down.
async fn events_loop(peers: Weak<Peers>, mut events: mpsc::Receiver<Event>) {
    while let Some(ev) = events.recv().await {
        let Some(p) = peers.upgrade() else { return };
        match ev {
            Event::Broadcast(bytes) => match postcard::from_bytes::<Tagged>(&bytes) {
                Ok(t) => p.apply(t),
                Err(e) => tracing::debug!("undecodable index update: {e}"),
            },
            Event::Up(m) => {
                tracing::info!(id = %m.id, addr = %m.addr, site = %m.site, "peer up");
                p.pull(m.id);
            }
            Event::Down(id) => {
                let dropped = lock(&p.index).remove_node(id);
                lock(&p.rtt).forget(id);
                lock(&p.bytes_from).remove(&id);
                lock(&p.bytes_to).remove(&id);
                p.client.forget(id);
                tracing::info!(%id, dropped, "peer down: its index entries are dropped");
            }
        }
    }
}
