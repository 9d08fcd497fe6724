//! SWIM group membership over sealed UDP: the one task that owns the `Foca` value and publishes the member view; it never reads or changes the index or the store.
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU8, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use foca::{
    AccumulatingRuntime, BroadcastHandler, Codec, Config, Foca, Invalidates, Message,
    OwnedNotification, PostcardCodec, State, Timer,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant, MissedTickBehavior};

use crate::peer::auth::{ClusterKey, Sealer};
use crate::peer::identity::{PeerIdentity, MAX_SITE_LEN};
use crate::peer::wire::NodeId;

/// Largest payload [`Membership::broadcast`] accepts; larger ones are dropped (logged). Sized so
/// that one always fits in a packet next to the largest header (tested in `identity.rs`).
pub const MAX_BROADCAST_LEN: usize = 1024;

/// foca's packet size (plaintext); the sealed datagram adds [`Sealer::OVERHEAD`].
const MAX_PACKET: usize = 1400;
/// The group size foca's LAN config is computed for (transmissions per update).
const CLUSTER_SIZE_HINT: u32 = 32;
/// How many broadcast hashes are remembered for deduplication (32 bytes each, plus the set).
const SEEN_CAPACITY: usize = 16_384;
/// Broadcast commands folded into one round of messages.
const BROADCAST_BATCH: usize = 256;
/// Most addresses given to [`Membership::join`] that are kept as extra seeds.
pub const MAX_JOINED: usize = 64;

/// One other member of the group, as this node currently sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberInfo {
    /// Its node id.
    pub id: NodeId,
    /// Its advertised address: gossip over UDP, transfer API over TCP.
    pub addr: SocketAddr,
    /// Its site label.
    pub site: String,
    /// Liveness as seen from here.
    pub state: MemberState,
}

/// SWIM liveness. A `Suspect` member is still treated as a member (it may refute the suspicion).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; declared `Down` unless it refutes in time.
    Suspect,
    /// Left, or failed to refute a suspicion.
    Down,
}

impl MemberState {
    /// Alive or Suspect: counts as a member.
    pub fn is_active(self) -> bool {
        !matches!(self, MemberState::Down)
    }

    /// Lowercase name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
        }
    }
}

/// Everything [`Membership::start`] needs.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// This node's id.
    pub id: NodeId,
    /// UDP address to bind (port 0 picks a free port).
    pub bind: SocketAddr,
    /// Address the others use to reach us; a port of 0 means "the bound port". Must not be a
    /// wildcard IP.
    pub advertise: SocketAddr,
    /// Site label (at most [`MAX_SITE_LEN`] bytes).
    pub site: String,
    /// Members to announce to when we know none; entries equal to our own address are skipped.
    pub seeds: Vec<SocketAddr>,
    /// Seals every packet; packets from other keys are dropped and counted.
    pub key: ClusterKey,
}

/// SWIM timings. [`Timings::lan`] is the production default (foca's LAN config);
/// [`Timings::fast`] suits tests on loopback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How often a random member is probed.
    pub probe_period: Duration,
    /// How long to wait for a direct probe reply before asking others; less than `probe_period`.
    pub probe_rtt: Duration,
    /// How long a suspect has to refute before it is declared Down.
    pub suspect_to_down_after: Duration,
    /// How often pending updates and broadcasts are gossiped to a few members.
    pub gossip_every: Duration,
    /// How often to announce to the seeds while we know no member.
    pub reannounce_every: Duration,
}

impl Timings {
    /// foca's `Config::new_lan` for a group of up to ~32 nodes: probe every 1 s, Down after
    /// ~6 s of unrefuted suspicion, gossip every 200 ms; re-announce to seeds every 3 s.
    pub fn lan() -> Self {
        let c = Config::new_lan(cluster_size_hint());
        Timings {
            probe_period: c.probe_period,
            probe_rtt: c.probe_rtt,
            suspect_to_down_after: c.suspect_to_down_after,
            gossip_every: c
                .periodic_gossip
                .map_or(Duration::from_millis(200), |p| p.frequency),
            reannounce_every: Duration::from_secs(3),
        }
    }

    /// Tight timings for tests on loopback: a dead node is Down within ~1.5 s.
    pub fn fast() -> Self {
        Timings {
            probe_period: Duration::from_millis(250),
            probe_rtt: Duration::from_millis(100),
            suspect_to_down_after: Duration::from_millis(1000),
            gossip_every: Duration::from_millis(50),
            reannounce_every: Duration::from_millis(250),
        }
    }

    fn check(&self) -> Result<(), &'static str> {
        let all = [
            self.probe_period,
            self.probe_rtt,
            self.suspect_to_down_after,
            self.gossip_every,
            self.reannounce_every,
        ];
        if all.iter().any(Duration::is_zero) {
            return Err("membership timings must not be zero");
        }
        if self.probe_rtt >= self.probe_period {
            return Err("probe_rtt must be shorter than probe_period");
        }
        Ok(())
    }

    fn foca_config(&self) -> Config {
        let mut c = Config::new_lan(cluster_size_hint());
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.suspect_to_down_after = self.suspect_to_down_after;
        if let Some(g) = c.periodic_gossip.as_mut() {
            g.frequency = self.gossip_every;
        }
        // foca sends a broadcast straight to `num_indirect_probes` members and counts each send
        // against `max_transmissions`; both at the group-size hint, so an index update (a claim
        // on a cold object above all) reaches every member of a group of that size at once
        // instead of waiting for relays on the periodic gossip.
        let fanout = usize::try_from(CLUSTER_SIZE_HINT).unwrap_or(32);
        c.num_indirect_probes = NonZeroUsize::new(fanout).unwrap_or(NonZeroUsize::MIN);
        c.max_transmissions =
            NonZeroU8::new(u8::try_from(fanout).unwrap_or(u8::MAX)).unwrap_or(NonZeroU8::MIN);
        c
    }
}

impl Default for Timings {
    fn default() -> Self {
        Timings::lan()
    }
}

fn cluster_size_hint() -> NonZeroU32 {
    NonZeroU32::new(CLUSTER_SIZE_HINT).unwrap_or(NonZeroU32::MIN)
}

/// What the rest of the node hears from the group.
#[derive(Debug)]
pub enum Event {
    /// A member joined, rejoined (a new process with the same id), or changed address or site.
    /// A good moment to pull its index.
    Up(MemberInfo),
    /// A member left or was declared Down: drop everything it advertised.
    Down(NodeId),
    /// A payload another member passed to [`Membership::broadcast`]; delivered once.
    Broadcast(Vec<u8>),
}

/// Handle to the membership task. Cheap to clone; the task stops on [`Membership::leave`],
/// [`Membership::abort`], or when every handle is dropped (like `abort`).
#[derive(Clone)]
pub struct Membership {
    cmds: mpsc::UnboundedSender<Command>,
    view: watch::Receiver<Vec<MemberInfo>>,
    rejected: Arc<AtomicU64>,
    local_addr: SocketAddr,
    identity: Arc<PeerIdentity>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", &self.identity)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

enum Command {
    Broadcast(Vec<u8>),
    Join(SocketAddr),
    Leave(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
}

impl Membership {
    /// Binds the UDP socket, starts the task, announces to every seed (and keeps re-announcing
    /// to seeds every few seconds while it knows no member, so a node started before its seeds
    /// still joins). Uses [`Timings::lan`].
    pub async fn start(
        cfg: MembershipConfig,
        events: mpsc::UnboundedSender<Event>,
    ) -> io::Result<Membership> {
        Self::start_with_timings(cfg, Timings::lan(), events).await
    }

    /// [`Membership::start`] with explicit timings (tests use [`Timings::fast`]).
    pub async fn start_with_timings(
        cfg: MembershipConfig,
        timings: Timings,
        events: mpsc::UnboundedSender<Event>,
    ) -> io::Result<Membership> {
        let socket = UdpSocket::bind(cfg.bind).await?;
        Self::start_on(socket, cfg, timings, events)
    }

    /// [`Membership::start_with_timings`] on a socket bound beforehand (`cfg.bind` is not used):
    /// the node binds every port before it writes anything to disk.
    pub fn start_on(
        socket: UdpSocket,
        cfg: MembershipConfig,
        timings: Timings,
        events: mpsc::UnboundedSender<Event>,
    ) -> io::Result<Membership> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        timings.check().map_err(|m| invalid(m.to_owned()))?;
        if cfg.site.len() > MAX_SITE_LEN {
            return Err(invalid(format!(
                "peer site label is {} bytes long; the limit is {MAX_SITE_LEN}",
                cfg.site.len()
            )));
        }
        let local_addr = socket.local_addr()?;
        let advertise = if cfg.advertise.port() == 0 {
            SocketAddr::new(cfg.advertise.ip(), local_addr.port())
        } else {
            cfg.advertise
        };
        if advertise.ip().is_unspecified() {
            return Err(invalid(format!(
                "peer advertise address {advertise} is a wildcard; other nodes cannot reach it"
            )));
        }
        let seeds: Vec<SocketAddr> = cfg
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != advertise && *s != local_addr)
            .collect();

        let identity = PeerIdentity::new(cfg.id, advertise, cfg.site, unix_ms(), rand::random());
        let rng = StdRng::try_from_os_rng().map_err(io::Error::other)?;
        let (delivered_tx, delivered) = mpsc::unbounded_channel();
        let foca = Foca::with_custom_broadcast(
            identity.clone(),
            timings.foca_config(),
            rng,
            PostcardCodec,
            Dedupe::new(delivered_tx),
        );
        let (view_tx, view) = watch::channel(Vec::new());
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let rejected = Arc::new(AtomicU64::new(0));
        tracing::info!(
            node = %identity.id, %advertise, bind = %local_addr, seeds = seeds.len(),
            key = %cfg.key.fingerprint(), "joining peer group"
        );
        let driver = Driver {
            foca,
            runtime: AccumulatingRuntime::new(),
            socket,
            sealer: Sealer::new(&cfg.key),
            timers: BinaryHeap::new(),
            seeds,
            joined: Vec::new(),
            reannounce_every: timings.reannounce_every,
            events,
            delivered,
            view_tx,
            view: BTreeMap::new(),
            rejected: Arc::clone(&rejected),
            held_back: None,
        };
        tokio::spawn(driver.run(cmd_rx));
        Ok(Membership {
            cmds,
            view,
            rejected,
            local_addr,
            identity: Arc::new(identity),
        })
    }

    /// Disseminates `payload` (at most [`MAX_BROADCAST_LEN`] bytes) to every member as a foca
    /// custom broadcast, sent at once. Each payload reaches every other member's `events` as
    /// `Event::Broadcast` exactly once (deduplicated by blake3 of the payload over the last
    /// 16 Ki payloads), so identical payloads count as one. Members that join later never get it.
    pub fn broadcast(&self, payload: Vec<u8>) {
        // A closed channel means the task has stopped: there is no group to tell.
        let _ = self.cmds.send(Command::Broadcast(payload));
    }

    /// Announces this node to `addr` (a candidate found by discovery), unless an active member
    /// is already there; the address is also re-announced to while this node knows no member,
    /// like a seed (at most [`MAX_JOINED`] such addresses are kept). Only a node holding the
    /// cluster key can answer, so a wrong candidate costs one dropped packet.
    pub fn join(&self, addr: SocketAddr) {
        let _ = self.cmds.send(Command::Join(addr));
    }

    /// Current view of the other members (Down ones included until foca forgets them), sorted by
    /// id; one entry per node id, never this node.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.view.borrow().clone()
    }

    /// The member view as a watch channel, updated on every change.
    pub fn subscribe(&self) -> watch::Receiver<Vec<MemberInfo>> {
        self.view.clone()
    }

    /// Packets dropped because they failed authentication (wrong key, tampered, truncated).
    pub fn rejected_packets(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// The bound UDP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.identity.id
    }

    /// The address the others use for this node.
    pub fn advertise(&self) -> SocketAddr {
        self.identity.addr
    }

    /// Leaves the group cleanly (foca `leave_cluster`, packets flushed) and stops the task; the
    /// socket is closed when this returns.
    pub async fn leave(self) {
        self.stop_with(Command::Leave).await;
    }

    /// Stops the task without telling anyone, as a crash would: the others declare this node
    /// Down after the suspicion timeout. The socket is closed when this returns.
    pub async fn abort(self) {
        self.stop_with(Command::Stop).await;
    }

    async fn stop_with(self, cmd: fn(oneshot::Sender<()>) -> Command) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(cmd(tx)).is_ok() {
            // Err: the task had already stopped.
            let _ = rx.await;
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Dedupe key of a custom broadcast: blake3 of its bytes.
struct PayloadHash([u8; 32]);

impl Invalidates for PayloadHash {
    fn invalidates(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// foca's broadcast handler: relays each payload once and hands new ones from the network to the
/// task (which forwards them as `Event::Broadcast` after the member events of the same packet).
struct Dedupe {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    delivered: mpsc::UnboundedSender<Vec<u8>>,
}

impl Dedupe {
    fn new(delivered: mpsc::UnboundedSender<Vec<u8>>) -> Self {
        Dedupe {
            seen: HashSet::new(),
            order: VecDeque::new(),
            delivered,
        }
    }
}

impl BroadcastHandler<PeerIdentity> for Dedupe {
    type Key = PayloadHash;
    type Error = Infallible;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&PeerIdentity>,
    ) -> Result<Option<PayloadHash>, Infallible> {
        let hash = *blake3::hash(data).as_bytes();
        if !self.seen.insert(hash) {
            return Ok(None);
        }
        self.order.push_back(hash);
        if self.order.len() > SEEN_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        // `None` is our own `add_broadcast`: remembered so it is never delivered back to us.
        if sender.is_some() {
            let _ = self.delivered.send(data.to_vec());
        }
        Ok(Some(PayloadHash(hash)))
    }
}

type PeerFoca = Foca<PeerIdentity, PostcardCodec, StdRng, Dedupe>;
type TimerQueue = BinaryHeap<Reverse<(Instant, Timer<PeerIdentity>)>>;

/// The task's state: the only owner of the `Foca` value and of the socket.
struct Driver {
    foca: PeerFoca,
    runtime: AccumulatingRuntime<PeerIdentity>,
    socket: UdpSocket,
    sealer: Sealer,
    timers: TimerQueue,
    seeds: Vec<SocketAddr>,
    /// Addresses from [`Membership::join`], re-announced to like seeds; at most [`MAX_JOINED`].
    joined: Vec<SocketAddr>,
    reannounce_every: Duration,
    events: mpsc::UnboundedSender<Event>,
    delivered: mpsc::UnboundedReceiver<Vec<u8>>,
    view_tx: watch::Sender<Vec<MemberInfo>>,
    /// Last published view, with each member's bump (a new bump = a new process).
    view: BTreeMap<NodeId, (MemberInfo, u64)>,
    rejected: Arc<AtomicU64>,
    /// The latest broadcast kept out of a full queue, queued once the queue drains.
    held_back: Option<Vec<u8>>,
}

/// Why the task's loop woke up.
enum Wake {
    Packet(io::Result<usize>),
    Command(Option<Command>),
    Timers,
    Reannounce,
}

/// Most broadcasts waiting in foca's queue. foca keeps each one until it has been sent
/// `max_transmissions` times, so updates produced faster than gossip carries them would pile up
/// without bound; beyond this many, new ones are held back (only the latest is kept).
const MAX_BACKLOG: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Queue,
    Alone,
    HoldBack,
}

/// Whether a new broadcast enters foca's queue. Dropping an index update loses nothing for
/// good: each carries its sequence number, so a member that receives a later one sees the gap
/// and pulls the journal; the held-back latest one is queued when the queue drains, so the
/// last update of a burst is not lost either.
fn admit(members: usize, backlog: usize) -> Admit {
    if members == 0 {
        Admit::Alone
    } else if backlog >= MAX_BACKLOG {
        Admit::HoldBack
    } else {
        Admit::Queue
    }
}

impl Driver {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; MAX_PACKET + Sealer::OVERHEAD + 512];
        let mut reannounce = tokio::time::interval(self.reannounce_every);
        reannounce.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let reply = loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let wake = tokio::select! {
                r = self.socket.recv_from(&mut buf) => Wake::Packet(r.map(|(n, _)| n)),
                c = cmds.recv() => Wake::Command(c),
                () = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => Wake::Timers,
                _ = reannounce.tick() => Wake::Reannounce,
            };
            match wake {
                Wake::Packet(Ok(n)) => {
                    let packet = buf.get(..n).unwrap_or_default();
                    self.on_packet(packet);
                    self.flush().await;
                }
                Wake::Packet(Err(e)) => tracing::debug!(error = %e, "gossip socket receive failed"),
                Wake::Timers => self.on_timers().await,
                Wake::Reannounce => self.reannounce().await,
                Wake::Command(None) => break None,
                Wake::Command(Some(Command::Broadcast(p))) => {
                    if let Some(reply) = self.on_broadcasts(p, &mut cmds).await {
                        break Some(reply);
                    }
                }
                Wake::Command(Some(other)) => {
                    if let Some(reply) = self.on_command(other).await {
                        break Some(reply);
                    }
                }
            }
        };
        tracing::info!(node = %self.foca.identity().id, "left peer group");
        // Close the socket before answering, so a restart may bind the same port at once.
        drop(self);
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
    }

    fn on_packet(&mut self, packet: &[u8]) {
        let Some(mut plain) = self.sealer.open(packet) else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(len = packet.len(), "dropped unauthenticated gossip packet");
            return;
        };
        self.readdress_announce(&mut plain);
        if let Err(e) = self.foca.handle_data(&plain, &mut self.runtime) {
            tracing::debug!(error = %e, "gossip packet refused");
        }
    }

    /// A seed is announced to by the address in our config, which may not be the address it
    /// advertises (another IP of the same host); foca would ignore such an `Announce`. The packet
    /// reached our socket and carries the cluster key, so it is meant for us: address it to us.
    fn readdress_announce(&self, plain: &mut Vec<u8>) {
        let mut rest: &[u8] = plain;
        let Ok(mut header) = Codec::<PeerIdentity>::decode_header(&mut PostcardCodec, &mut rest)
        else {
            return;
        };
        let me = self.foca.identity();
        if header.message != Message::Announce || !rest.is_empty() || header.dst.addr == me.addr {
            return;
        }
        header.dst = me.clone();
        let mut out = Vec::with_capacity(plain.len());
        if PostcardCodec.encode_header(&header, &mut out).is_ok() {
            *plain = out;
        }
    }

    async fn on_timers(&mut self) {
        if self.held_back.is_some() && self.foca.custom_broadcast_backlog() < MAX_BACKLOG / 2 {
            if let Some(p) = self.held_back.take() {
                self.add_broadcast(p);
            }
        }
        let now = Instant::now();
        while self
            .timers
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= now)
        {
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(error = %e, "gossip timer");
            }
            self.flush().await;
        }
    }

    async fn reannounce(&mut self) {
        if self.foca.num_members() > 0 {
            return;
        }
        for seed in self
            .seeds
            .iter()
            .chain(&self.joined)
            .copied()
            .collect::<Vec<_>>()
        {
            if let Err(e) = self
                .foca
                .announce(PeerIdentity::seed(seed), &mut self.runtime)
            {
                tracing::debug!(error = %e, %seed, "announce");
            }
        }
        self.flush().await;
    }

    /// Adds `first` and any broadcasts queued behind it, then sends one round at once. Returns
    /// the reply channel if a stop command was queued behind them.
    async fn on_broadcasts(
        &mut self,
        first: Vec<u8>,
        cmds: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Option<oneshot::Sender<()>> {
        self.add_broadcast(first);
        let mut next = None;
        for _ in 0..BROADCAST_BATCH {
            match cmds.try_recv() {
                Ok(Command::Broadcast(p)) => self.add_broadcast(p),
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        if let Err(e) = self.foca.broadcast(&mut self.runtime) {
            tracing::debug!(error = %e, "broadcast");
        }
        self.flush().await;
        match next {
            Some(cmd) => self.on_command(cmd).await,
            None => None,
        }
    }

    fn add_broadcast(&mut self, payload: Vec<u8>) {
        if payload.is_empty() || payload.len() > MAX_BROADCAST_LEN {
            tracing::warn!(
                len = payload.len(),
                max = MAX_BROADCAST_LEN,
                "gossip broadcast dropped: empty or too large"
            );
            return;
        }
        match admit(
            self.foca.num_members(),
            self.foca.custom_broadcast_backlog(),
        ) {
            Admit::Queue => self.held_back = None,
            // Nobody to tell: a member that joins later pulls what it needs on its `Up`.
            Admit::Alone => return,
            Admit::HoldBack => {
                self.held_back = Some(payload);
                return;
            }
        }
        match self.foca.add_broadcast(&payload) {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!("gossip broadcast dropped: identical payload already sent")
            }
            Err(e) => tracing::warn!(error = %e, "gossip broadcast dropped"),
        }
    }

    /// A candidate from discovery: announce to it unless it is us or an active member.
    async fn on_join(&mut self, addr: SocketAddr) {
        let me = self.foca.identity().addr;
        let member = self
            .view
            .values()
            .any(|(m, _)| m.addr == addr && m.state.is_active());
        if addr == me || addr == self.socket.local_addr().unwrap_or(me) || member {
            return;
        }
        if !self.joined.contains(&addr) && !self.seeds.contains(&addr) {
            if self.joined.len() >= MAX_JOINED {
                self.joined.remove(0);
            }
            self.joined.push(addr);
        }
        if let Err(e) = self
            .foca
            .announce(PeerIdentity::seed(addr), &mut self.runtime)
        {
            tracing::debug!(error = %e, %addr, "announce to a discovered node");
        }
        self.flush().await;
    }

    async fn on_command(&mut self, cmd: Command) -> Option<oneshot::Sender<()>> {
        match cmd {
            Command::Broadcast(p) => {
                self.add_broadcast(p);
                None
            }
            Command::Join(addr) => {
                self.on_join(addr).await;
                None
            }
            Command::Leave(reply) => {
                if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
                    tracing::debug!(error = %e, "leave");
                }
                self.flush().await;
                Some(reply)
            }
            Command::Stop(reply) => Some(reply),
        }
    }

    /// Carries out what foca asked for: send, schedule, then publish the view, its events, and
    /// the broadcasts that arrived.
    async fn flush(&mut self) {
        while let Some((dst, data)) = self.runtime.to_send() {
            let packet = self.sealer.seal(&data);
            if let Err(e) = self.socket.send_to(&packet, dst.addr).await {
                tracing::debug!(error = %e, to = %dst.addr, "gossip send failed");
            }
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            let at = now
                .checked_add(after)
                .unwrap_or_else(|| now + Duration::from_secs(86_400));
            self.timers.push(Reverse((at, timer)));
        }
        while let Some(n) = self.runtime.to_notify() {
            match n {
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(identity = ?id, "declared down by the group; rejoined")
                }
                OwnedNotification::Idle => tracing::info!("no other peer is reachable"),
                OwnedNotification::Defunct => tracing::debug!("our identity is down"),
                other => tracing::trace!(notification = ?other, "gossip"),
            }
        }
        self.refresh_view();
        while let Ok(payload) = self.delivered.try_recv() {
            let _ = self.events.send(Event::Broadcast(payload));
        }
    }

    /// Rebuilds the per-node view from foca's members, emits Up/Down for the differences and
    /// publishes it if it changed.
    fn refresh_view(&mut self) {
        let own = self.foca.identity().id;
        let mut next: BTreeMap<NodeId, (MemberInfo, u64)> = BTreeMap::new();
        for m in self.foca.iter_membership_state() {
            let pid = m.id();
            if pid.id == own {
                continue; // a previous process of ours, at another address
            }
            let state = match m.state() {
                State::Alive => MemberState::Alive,
                State::Suspect => MemberState::Suspect,
                State::Down => MemberState::Down,
            };
            let info = MemberInfo {
                id: pid.id,
                addr: pid.addr,
                site: pid.site.clone(),
                state,
            };
            // One entry per node id: an active identity over a Down one, then the newest.
            let rank = (state.is_active(), pid.bump);
            match next.get(&pid.id) {
                Some((have, bump)) if (have.state.is_active(), *bump) >= rank => {}
                _ => {
                    next.insert(pid.id, (info, pid.bump));
                }
            }
        }

        for (id, (old, _)) in &self.view {
            let still_active = next.get(id).is_some_and(|(n, _)| n.state.is_active());
            if old.state.is_active() && !still_active {
                tracing::info!(node = %id, addr = %old.addr, "peer down");
                let _ = self.events.send(Event::Down(*id));
            }
        }
        for (id, (info, bump)) in &next {
            if !info.state.is_active() {
                continue;
            }
            let up = match self.view.get(id) {
                None => true,
                Some((old, old_bump)) => {
                    !old.state.is_active()
                        || old_bump != bump
                        || old.addr != info.addr
                        || old.site != info.site
                }
            };
            if up {
                tracing::info!(node = %id, addr = %info.addr, site = %info.site, "peer up");
                let _ = self.events.send(Event::Up(info.clone()));
            }
        }

        let list: Vec<MemberInfo> = next.values().map(|(info, _)| info.clone()).collect();
        self.view_tx.send_if_modified(|current| {
            if *current == list {
                false
            } else {
                *current = list;
                true
            }
        });
        self.view = next;
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn broadcasts_are_queued_only_with_members_and_room() {
        assert_eq!(admit(0, 0), Admit::Alone);
        assert_eq!(admit(3, 0), Admit::Queue);
        assert_eq!(admit(3, MAX_BACKLOG - 1), Admit::Queue);
        assert_eq!(admit(3, MAX_BACKLOG), Admit::HoldBack);
    }
    use super::*;
    use std::future::Future;

    const WAIT: Duration = Duration::from_secs(10);

    struct Node {
        m: Membership,
        events: mpsc::UnboundedReceiver<Event>,
    }

    impl Node {
        fn id(&self) -> NodeId {
            self.m.node_id()
        }
    }

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    async fn start(
        id: NodeId,
        key: &ClusterKey,
        port: u16,
        seeds: &[SocketAddr],
        timings: Timings,
    ) -> Node {
        let (tx, events) = mpsc::unbounded_channel();
        let cfg = MembershipConfig {
            id,
            bind: loopback(port),
            advertise: loopback(0),
            site: "lab".into(),
            seeds: seeds.to_vec(),
            key: key.clone(),
        };
        let m = Membership::start_with_timings(cfg, timings, tx)
            .await
            .expect("start membership");
        Node { m, events }
    }

    /// A seed and two nodes that join through it, each seeing the other two.
    async fn trio(key: &ClusterKey, timings: Timings) -> (Node, Node, Node) {
        let a = start(NodeId::random(), key, 0, &[], timings.clone()).await;
        let seed = [a.m.advertise()];
        let b = start(NodeId::random(), key, 0, &seed, timings.clone()).await;
        let c = start(NodeId::random(), key, 0, &seed, timings).await;
        for n in [&a, &b, &c] {
            wait_view(&n.m, "every node sees two alive members", |v| {
                alive(v).len() == 2
            })
            .await;
        }
        (a, b, c)
    }

    fn alive(v: &[MemberInfo]) -> Vec<NodeId> {
        v.iter()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| m.id)
            .collect()
    }

    fn state_of(v: &[MemberInfo], id: NodeId) -> Option<MemberState> {
        v.iter().find(|m| m.id == id).map(|m| m.state)
    }

    async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
        match tokio::time::timeout(WAIT, f).await {
            Ok(v) => v,
            Err(_) => panic!("timed out after {WAIT:?} waiting until {what}"),
        }
    }

    async fn wait_view(m: &Membership, what: &str, pred: impl FnMut(&Vec<MemberInfo>) -> bool) {
        let mut rx = m.subscribe();
        within(what, rx.wait_for(pred))
            .await
            .expect("membership task alive");
    }

    /// Polls a condition that has no channel (a counter) until it holds, within `WAIT`.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        within(what, async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// Waits for the first event matching `pred`, skipping others.
    async fn next_event(n: &mut Node, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        within(what, async {
            loop {
                match n.events.recv().await {
                    Some(e) if pred(&e) => return e,
                    Some(_) => {}
                    None => panic!("event channel closed"),
                }
            }
        })
        .await
    }

    fn drain(n: &mut Node) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(e) = n.events.try_recv() {
            out.push(e);
        }
        out
    }

    #[tokio::test]
    async fn three_nodes_join_through_one_seed() {
        let key = ClusterKey::generate();
        let (mut a, mut b, mut c) = trio(&key, Timings::fast()).await;
        let ids = [a.id(), b.id(), c.id()];
        for n in [&mut a, &mut b, &mut c] {
            let me = n.id();
            let mut others: Vec<NodeId> = ids.iter().copied().filter(|i| *i != me).collect();
            others.sort();
            assert_eq!(alive(&n.m.members()), others);
            let ups: Vec<NodeId> = drain(n)
                .into_iter()
                .filter_map(|e| match e {
                    Event::Up(info) => Some(info.id),
                    _ => None,
                })
                .collect();
            for o in &others {
                assert!(ups.contains(o), "Up for {o} on {me}: {ups:?}");
            }
            assert!(n.m.members().iter().all(|m| m.site == "lab"));
            assert_eq!(n.m.rejected_packets(), 0);
        }
        let info =
            a.m.members()
                .into_iter()
                .find(|m| m.id == b.id())
                .expect("b");
        assert_eq!(info.addr, b.m.advertise());
    }

    #[tokio::test]
    async fn a_node_started_before_its_seed_joins_when_the_seed_appears() {
        let key = ClusterKey::generate();
        // Hold the seed's future port and see the early node's announce go unanswered.
        let holder = UdpSocket::bind(loopback(0)).await.expect("bind");
        let seed_addr = holder.local_addr().expect("addr");
        let b = start(NodeId::random(), &key, 0, &[seed_addr], Timings::fast()).await;
        let mut buf = [0u8; 2048];
        within("the early node announces", holder.recv_from(&mut buf))
            .await
            .expect("recv");
        drop(holder);

        let a = start(
            NodeId::random(),
            &key,
            seed_addr.port(),
            &[],
            Timings::fast(),
        )
        .await;
        wait_view(&b.m, "b sees the seed", |v| alive(v) == [a.id()]).await;
        wait_view(&a.m, "the seed sees b", |v| alive(v) == [b.id()]).await;
    }

    #[tokio::test]
    async fn a_seed_listed_by_another_of_its_addresses_accepts_the_announce() {
        let key = ClusterKey::generate();
        let (tx, _a_events) = mpsc::unbounded_channel();
        let cfg = MembershipConfig {
            id: NodeId::random(),
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            advertise: loopback(0),
            site: "lab".into(),
            seeds: Vec::new(),
            key: key.clone(),
        };
        let a = Membership::start_with_timings(cfg, Timings::fast(), tx)
            .await
            .expect("start seed");
        // The seed advertises 127.0.0.1 but is listed as 127.0.0.2 (same host, same socket).
        let listed = SocketAddr::from(([127, 0, 0, 2], a.local_addr().port()));
        let b = start(NodeId::random(), &key, 0, &[listed], Timings::fast()).await;
        wait_view(&b.m, "b joins through the other address", |v| {
            alive(v) == [a.node_id()]
        })
        .await;
        let seen = b.m.members();
        assert_eq!(seen[0].addr, a.advertise());
    }

    #[tokio::test]
    async fn a_broadcast_reaches_every_other_member_exactly_once() {
        let key = ClusterKey::generate();
        let (a, b, c) = trio(&key, Timings::fast()).await;
        let mut nodes = [a, b, c];
        for n in nodes.iter_mut() {
            drain(n);
        }
        let payload = |from: usize, i: usize| format!("update {i} from node {from}").into_bytes();
        for i in 0..10 {
            nodes[0].m.broadcast(payload(0, i));
            nodes[1].m.broadcast(payload(1, i));
        }
        for (me, node) in nodes.iter_mut().enumerate() {
            let mut want: Vec<Vec<u8>> = (0..2)
                .filter(|from| *from != me)
                .flat_map(|from| (0..10).map(move |i| payload(from, i)))
                .collect();
            want.sort();
            let mut got = Vec::new();
            while got.len() < want.len() {
                let e = next_event(node, "all broadcasts arrive", |e| {
                    matches!(e, Event::Broadcast(_))
                })
                .await;
                if let Event::Broadcast(p) = e {
                    got.push(p);
                }
            }
            got.sort();
            assert_eq!(got, want, "node {me} got each payload once, never its own");
        }
        // Every payload is retransmitted several times (gossip every 50 ms): watch a window of
        // retransmissions for any second delivery.
        tokio::time::sleep(Duration::from_millis(800)).await;
        for (me, node) in nodes.iter_mut().enumerate() {
            let again: Vec<Event> = drain(node)
                .into_iter()
                .filter(|e| matches!(e, Event::Broadcast(_)))
                .collect();
            assert!(again.is_empty(), "node {me} got duplicates: {again:?}");
        }
    }

    #[tokio::test]
    async fn a_node_with_another_key_cannot_join() {
        let key = ClusterKey::generate();
        let a = start(NodeId::random(), &key, 0, &[], Timings::fast()).await;
        let seed = [a.m.advertise()];
        let b = start(NodeId::random(), &key, 0, &seed, Timings::fast()).await;
        let intruder = start(
            NodeId::random(),
            &ClusterKey::generate(),
            0,
            &seed,
            Timings::fast(),
        )
        .await;
        wait_view(&b.m, "b joins", |v| alive(v) == [a.id()]).await;
        until("the seed rejects several announces", || {
            a.m.rejected_packets() >= 3
        })
        .await;
        for n in [&a.m, &b.m] {
            assert_eq!(state_of(&n.members(), intruder.id()), None);
        }
        assert!(intruder.m.members().is_empty());
        assert_eq!(b.m.rejected_packets(), 0);
    }

    #[tokio::test]
    async fn a_stopped_node_is_declared_down() {
        let key = ClusterKey::generate();
        let (mut a, b, c) = trio(&key, Timings::fast()).await;
        let gone = c.id();
        drain(&mut a);
        c.m.abort().await;
        for n in [&a.m, &b.m] {
            wait_view(n, "the stopped node is Down", |v| {
                state_of(v, gone) == Some(MemberState::Down)
            })
            .await;
        }
        let e = next_event(&mut a, "Down event", |e| matches!(e, Event::Down(_))).await;
        assert!(matches!(e, Event::Down(id) if id == gone));
        assert_eq!(alive(&a.m.members()), [b.id()]);
    }

    #[tokio::test]
    async fn a_clean_leave_is_seen_as_down_quickly() {
        // Suspicion takes 60 s here, so a Down within the 10 s wait can only come from the leave.
        let t = Timings {
            suspect_to_down_after: Duration::from_secs(60),
            ..Timings::fast()
        };
        let key = ClusterKey::generate();
        let (mut a, b, c) = trio(&key, t).await;
        let gone = c.id();
        drain(&mut a);
        c.m.leave().await;
        for n in [&a.m, &b.m] {
            wait_view(n, "the leaver is Down", |v| {
                state_of(v, gone) == Some(MemberState::Down)
            })
            .await;
        }
        let e = next_event(&mut a, "Down event", |e| matches!(e, Event::Down(_))).await;
        assert!(matches!(e, Event::Down(id) if id == gone));
    }

    #[tokio::test]
    async fn a_restarted_node_is_alive_again_after_being_declared_down() {
        let key = ClusterKey::generate();
        let (mut a, b, c) = trio(&key, Timings::fast()).await;
        let id = c.id();
        let port = c.m.local_addr().port();
        c.m.abort().await;
        for n in [&a.m, &b.m] {
            wait_view(n, "the stopped node is Down", |v| {
                state_of(v, id) == Some(MemberState::Down)
            })
            .await;
        }
        drain(&mut a);

        let c2 = start(id, &key, port, &[a.m.advertise()], Timings::fast()).await;
        for n in [&a.m, &b.m] {
            wait_view(n, "the restarted node is Alive", |v| {
                state_of(v, id) == Some(MemberState::Alive)
            })
            .await;
        }
        wait_view(&c2.m, "the restarted node sees both", |v| {
            alive(v).len() == 2
        })
        .await;
        let e = next_event(&mut a, "Up event", |e| matches!(e, Event::Up(_))).await;
        assert!(matches!(e, Event::Up(info) if info.id == id && info.addr == c2.m.advertise()));
        // Exactly one entry per node id.
        assert_eq!(a.m.members().len(), 2);
    }

    #[tokio::test]
    async fn a_node_restarted_before_suspicion_ends_rejoins_without_a_down() {
        let t = Timings {
            suspect_to_down_after: Duration::from_secs(60),
            ..Timings::fast()
        };
        let key = ClusterKey::generate();
        let (mut a, mut b, c) = trio(&key, t.clone()).await;
        let id = c.id();
        let port = c.m.local_addr().port();
        drain(&mut a);
        drain(&mut b);
        c.m.abort().await;
        let c2 = start(id, &key, port, &[a.m.advertise()], t).await;
        for n in [&mut a, &mut b] {
            // The new process (a new bump) is announced as Up so its index can be pulled again.
            let e = next_event(n, "Up for the new process", |e| matches!(e, Event::Up(_))).await;
            assert!(matches!(e, Event::Up(info) if info.id == id));
            assert!(!drain(n).iter().any(|e| matches!(e, Event::Down(_))));
            assert_eq!(state_of(&n.m.members(), id), Some(MemberState::Alive));
        }
        wait_view(&c2.m, "the restarted node sees both", |v| {
            alive(v).len() == 2
        })
        .await;
    }

    #[tokio::test]
    async fn bad_settings_are_refused() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let cfg = MembershipConfig {
            id: NodeId::random(),
            bind: loopback(0),
            advertise: SocketAddr::from(([0, 0, 0, 0], 0)),
            site: "x".into(),
            seeds: Vec::new(),
            key: ClusterKey::generate(),
        };
        let e = Membership::start_with_timings(cfg.clone(), Timings::fast(), tx.clone())
            .await
            .expect_err("wildcard advertise");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let long_site = MembershipConfig {
            site: "s".repeat(MAX_SITE_LEN + 1),
            advertise: loopback(0),
            ..cfg.clone()
        };
        let e = Membership::start_with_timings(long_site, Timings::fast(), tx.clone())
            .await
            .expect_err("long site");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let bad_t = Timings {
            probe_rtt: Duration::from_secs(5),
            ..Timings::fast()
        };
        let ok_cfg = MembershipConfig {
            advertise: loopback(0),
            ..cfg
        };
        let e = Membership::start_with_timings(ok_cfg, bad_t, tx)
            .await
            .expect_err("rtt > period");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(Timings::lan().check().is_ok());
    }
}
