//! The peer group as this node takes part in it: identity, membership, the replicated index
//! (ours and everyone's), and the transfer API. Owns the peer port; asks nothing of the origin.

pub mod auth;
pub mod client;
pub mod discovery;
pub mod identity;
pub mod index;
pub mod membership;
pub mod own;
pub mod pieces;
pub mod select;
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

use crate::cache::inflight::Inflight;
use crate::cache::rules::Rules;
use crate::cache::store::{Entry, Store};
use crate::config::{Config, Discover};
use crate::error::Error;
use crate::fetch::writer::WriteEnd;
use crate::port_owner::Proto;

use self::auth::{ClusterKey, RequestSigner};
use self::client::PeerClient;
use self::index::{HolderState, Index, Journal, DEFAULT_JOURNAL_CAPACITY};
use self::membership::{Event, MemberInfo, MemberState, Membership, MembershipConfig, Timings};
use self::own::StoreState;
use self::select::{Candidate, Penalties, RttTable};
use self::wire::{IndexReply, KeyHash, NodeId, Tagged, Update};

/// How long a peer that failed us is not asked again.
pub const PENALTY: Duration = Duration::from_secs(60);

/// Knobs that tests turn (production uses `Default`).
#[derive(Debug, Clone)]
pub struct PeerTuning {
    pub timings: Timings,
    /// How long a node that claims a cold object waits for competing claims (a little more
    /// than the gossip delay), so that only one node of the group goes to the origin.
    pub claim_window: Duration,
    /// UDP port of multicast DNS discovery (5353; tests use their own so that they find only
    /// each other).
    pub mdns_port: u16,
}

impl Default for PeerTuning {
    fn default() -> Self {
        PeerTuning {
            timings: Timings::lan(),
            claim_window: Duration::from_millis(50),
            mdns_port: discovery::MDNS_PORT,
        }
    }
}

/// Counters of the peer side.
#[derive(Debug, Default)]
pub struct PeerStats {
    pub rejected_requests: AtomicU64,
    pub uploads: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub bad_hashes: AtomicU64,
    pub failovers: AtomicU64,
    /// Uploaded body bytes sent from blob files with `sendfile`.
    pub sendfile_bytes: AtomicU64,
}

/// A holder of a key, resolved to an address, in the order to ask them.
#[derive(Debug, Clone)]
pub struct Source {
    pub node: NodeId,
    pub addr: SocketAddr,
    pub complete: Option<([u8; 32], u64)>,
}

/// This node's membership in the peer group.
pub struct Peers {
    pub id: NodeId,
    pub site: String,
    pub store: Store,
    pub inflight: Arc<Inflight>,
    pub signer: Arc<RequestSigner>,
    pub client: PeerClient,
    pub uploads: Arc<Semaphore>,
    pub max_uploads: usize,
    /// How long the transfer API waits for an in-flight fill's response head.
    pub head_wait: Duration,
    pub claim_window: Duration,
    pub stats: PeerStats,
    membership: Membership,
    journal: Mutex<Journal<StoreState>>,
    index: Mutex<Index>,
    penalties: Mutex<Penalties>,
    rtt: Mutex<RttTable>,
    bytes_from: Mutex<HashMap<NodeId, u64>>,
    /// Body bytes uploaded to each member (authenticated callers only, so bounded by the group).
    bytes_to: Mutex<HashMap<NodeId, u64>>,
    /// The freshness rules our advertised lifetimes are computed with.
    rules: Arc<Rules>,
    /// `cache.sendfile`: uploads by content hash may use `sendfile(2)`.
    pub sendfile: bool,
    /// What mDNS discovery found, when it runs.
    discovery_stats: Option<Arc<discovery::DiscoveryStats>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
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

/// The running peer side: its handle plus what `App` must stop at shutdown.
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
        let mut seeds = Vec::new();
        for s in &pc.seeds {
            match tokio::net::lookup_host(s.as_str()).await {
                Ok(addrs) => seeds.extend(addrs),
                Err(e) => tracing::warn!("peers.seeds: cannot resolve {s}: {e}"),
            }
        }
        let (tx, events) = mpsc::unbounded_channel();
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
            tuning.timings.clone(),
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
            client: PeerClient::new(signer, id, pc.connect_timeout, config.upstream.read_timeout),
            uploads: Arc::new(Semaphore::new(pc.max_uploads)),
            max_uploads: pc.max_uploads,
            head_wait: config.upstream.read_timeout,
            claim_window: tuning.claim_window,
            stats: PeerStats::default(),
            membership,
            journal: Mutex::new(Journal::with_state(
                id,
                epoch,
                DEFAULT_JOURNAL_CAPACITY,
                StoreState::new(store.clone(), rules.clone()),
            )),
            index: Mutex::new(Index::new(id)),
            penalties: Mutex::new(Penalties::default()),
            rtt: Mutex::new(RttTable::default()),
            bytes_from: Mutex::new(HashMap::new()),
            bytes_to: Mutex::new(HashMap::new()),
            rules,
            sendfile: config.cache.sendfile,
            discovery_stats: discovery.as_ref().map(|d| d.stats.clone()),
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
        let (stop, stop_rx) = watch::channel(false);
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
        match postcard::to_stdvec(&tagged) {
            Ok(bytes) => self.membership.broadcast(bytes),
            Err(e) => tracing::error!("cannot encode an index update: {e}"),
        }
    }

    /// We store a complete, shareable copy of `entry`.
    pub fn advertise_have(&self, entry: &Entry) {
        self.advertise(own::have(entry, &self.rules, SystemTime::now()));
    }

    /// We start downloading `key` (a claim other nodes may follow).
    pub fn advertise_in_flight(&self, key: &str) {
        let h = lock(&self.journal).state_mut().claim(key);
        self.advertise(Update::InFlight { key: h });
    }

    /// We no longer hold the key with this hash.
    pub fn advertise_dropped(&self, h: &KeyHash) {
        self.advertise(Update::Dropped { key: *h });
    }

    /// A claim of ours came to nothing (the response may not be shared, or the origin failed):
    /// withdraw it unless we hold the key anyway.
    pub fn withdraw(&self, key: &str) {
        if !self.store.holds_shareable(key) && self.inflight.get(key).is_none() {
            self.advertise_dropped(&key_hash(key));
        }
    }

    /// A fill of ours ended: unless it left a shareable copy (advertised as `Have`), our
    /// in-flight claim is withdrawn.
    pub fn fill_ended(&self, key: &str, end: &WriteEnd) {
        tracing::debug!(key, ?end, "fill ended");
        self.withdraw(key);
    }

    /// The key string for one of our key hashes in flight.
    pub fn local_key(&self, h: &KeyHash) -> Option<String> {
        lock(&self.journal).state().claimed(h).map(str::to_owned)
    }

    /// Answer to `GET /peer/v1/index`.
    /// Blocking: a snapshot reads every stored row (outside the journal's lock, so that
    /// advertising goes on meanwhile).
    pub fn index_since(&self, epoch: Option<u64>, since: u64) -> IndexReply {
        let (at, source) = {
            let j = lock(&self.journal);
            if let Some(updates) = j.updates_since(epoch, since) {
                return updates;
            }
            (j.snapshot_at(), j.state().detach())
        };
        at.of(source.snapshot())
    }

    /// The address other nodes reach us at (gossip and transfer).
    pub fn membership_addr(&self) -> SocketAddr {
        self.membership.advertise()
    }

    /// Current members (not us).
    pub fn members(&self) -> Vec<MemberInfo> {
        self.membership.members()
    }

    fn addr_of(&self, node: NodeId) -> Option<(SocketAddr, bool)> {
        self.membership
            .members()
            .into_iter()
            .find(|m| m.id == node && m.state != MemberState::Down)
            .map(|m| (m.addr, m.site == self.site))
    }

    /// Holders of `key` on live members, best first (same site, complete, low RTT, few
    /// uploads), leaving out penalised peers. With `in_flight_below`, in-flight holders count only
    /// when their id is lower (the tie-break between simultaneous claims).
    pub fn sources(&self, key: &KeyHash, in_flight_below: Option<NodeId>) -> Vec<Source> {
        let holders = lock(&self.index).holders(key);
        let mut by_node = HashMap::new();
        let mut cands = Vec::new();
        for h in holders {
            let complete = match h.state {
                HolderState::Complete { hash, len, .. } => Some((hash, len)),
                HolderState::InFlight => None,
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
                rtt: lock(&self.rtt).get(h.node),
                uploads: 0,
            });
            by_node.insert(
                h.node,
                Source {
                    node: h.node,
                    addr,
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

    /// Does anybody else take part in the group right now?
    pub fn has_members(&self) -> bool {
        self.membership
            .members()
            .iter()
            .any(|m| m.state != MemberState::Down)
    }

    /// A peer failed us (unreachable, bad hash, stalled): leave it alone for a while.
    pub fn penalise(&self, node: NodeId) {
        lock(&self.penalties).penalise(node, now_ms(), PENALTY.as_millis() as u64);
    }

    pub fn observe_rtt(&self, node: NodeId, sample: Duration) {
        lock(&self.rtt).observe(node, sample);
    }

    pub fn count_download(&self, node: NodeId, n: u64) {
        *lock(&self.bytes_from).entry(node).or_insert(0) += n;
    }

    pub fn count_upload(&self, to: NodeId, n: u64) {
        *lock(&self.bytes_to).entry(to).or_insert(0) += n;
        self.stats.uploads.fetch_add(1, Relaxed);
        self.stats.bytes_uploaded.fetch_add(n, Relaxed);
    }

    /// The peer part of the status page.
    pub fn status_json(&self) -> serde_json::Value {
        let index = lock(&self.index);
        let bytes_from = lock(&self.bytes_from);
        let bytes_to = lock(&self.bytes_to);
        let rtt = lock(&self.rtt);
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
                })
            })
            .collect();
        serde_json::json!({
            "id": self.id.to_string(),
            "site": self.site,
            "members": members,
            "index": { "keys": index.keys(), "entries": index.entries(), "nodes": index.nodes() },
            "own_claims": lock(&self.journal).state().claims(),
            "rejected_packets": self.membership.rejected_packets(),
            "rejected_requests": self.stats.rejected_requests.load(Relaxed),
            "uploads": self.stats.uploads.load(Relaxed),
            "bytes_uploaded": self.stats.bytes_uploaded.load(Relaxed),
            "bad_hashes": self.stats.bad_hashes.load(Relaxed),
            "failovers": self.stats.failovers.load(Relaxed),
            "sendfile_bytes": self.stats.sendfile_bytes.load(Relaxed),
            "discovery": self.discovery_stats.as_ref().map(|d| d.to_json()),
        })
    }

    fn apply(self: &Arc<Self>, t: Tagged) {
        let applied = lock(&self.index).apply(t);
        if let index::Applied::Gap { node, epoch, since } = applied {
            self.pull(node, Some(epoch), since);
        }
    }

    /// Fetches what we missed of `node`'s updates over TCP, in the background.
    fn pull(self: &Arc<Self>, node: NodeId, epoch: Option<u64>, since: u64) {
        let me = self.clone();
        tokio::spawn(async move {
            for attempt in 0..3u32 {
                let Some((addr, _)) = me.addr_of(node) else {
                    return;
                };
                match me.client.index(addr, epoch, since).await {
                    Ok(reply) => {
                        lock(&me.index).apply_reply(reply);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(%node, attempt, "index pull failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    }
                }
            }
        });
    }
}

/// The group's id for a stored key string (already normalised): its blake3, as
/// `CacheKey::hash` computes it.
pub use crate::cache::key::key_hash;

/// Feeds membership events into the index until the node shuts down.
async fn events_loop(peers: Weak<Peers>, mut events: mpsc::UnboundedReceiver<Event>) {
    while let Some(ev) = events.recv().await {
        let Some(p) = peers.upgrade() else { return };
        match ev {
            Event::Broadcast(bytes) => match postcard::from_bytes::<Tagged>(&bytes) {
                Ok(t) => p.apply(t),
                Err(e) => tracing::debug!("undecodable index update: {e}"),
            },
            Event::Up(m) => {
                tracing::info!(id = %m.id, addr = %m.addr, site = %m.site, "peer up");
                let known = lock(&p.index).applied(m.id);
                match known {
                    Some((epoch, seq)) => p.pull(m.id, Some(epoch), seq),
                    None => p.pull(m.id, None, 0),
                }
            }
            Event::Down(id) => {
                let dropped = lock(&p.index).remove_node(id);
                lock(&p.rtt).forget(id);
                tracing::info!(%id, dropped, "peer down: its index entries are dropped");
            }
        }
    }
}
