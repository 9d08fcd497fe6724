//! SWIM group membership over sealed UDP, as the rest of the node sees it: the cheap handle
//! (commands in, a `watch` of members out), its settings and its events. The task that owns the
//! `Foca` value lives in `driver`, the custom-broadcast rules in `broadcast`; it never reads or
//! changes the index or the store.

mod broadcast;
mod driver;
pub(in crate::peer) mod swim;

use std::io;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU8};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use foca::Config;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use crate::peer::auth::{ClusterKey, Sealer};
use crate::peer::identity::{PeerIdentity, MAX_SITE_LEN};
use crate::peer::wire::NodeId;

use self::driver::{Driver, Setup};

/// Largest payload [`Membership::broadcast`] accepts; larger ones are dropped (logged). Sized so
/// that one always fits in a packet next to the largest header (tested in `identity.rs`).
pub const MAX_BROADCAST_LEN: usize = 1024;

/// foca's packet size (plaintext); the sealed datagram adds [`Sealer::OVERHEAD`].
const MAX_PACKET: usize = 1400;
/// The group size foca's LAN config is computed for (transmissions per update).
const CLUSTER_SIZE_HINT: u32 = 32;
/// Broadcast commands folded into one round of messages.
const BROADCAST_BATCH: usize = 256;
/// Most addresses given to [`Membership::join`] (discovered candidates, seeds that resolved
/// late) that are kept as extra seeds; the oldest goes first.
pub const MAX_JOINED: usize = 64;
/// Room in the command queue to the task. A broadcast that finds it full is dropped and counted
/// (`broadcasts_dropped`): its successor shows the others a gap, and they pull the journal.
const COMMANDS_CAPACITY: usize = 4096;
/// Room in the events queue a node gives [`Membership::start`] (see [`Membership::events`]).
/// A received broadcast that finds it full is dropped and counted (`events_dropped`), with the
/// same recovery; `Up` and `Down` wait for room instead (there is one per member change).
pub const EVENTS_CAPACITY: usize = 4096;

/// What the membership task refused or dropped because a bound was hit.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets that failed authentication (wrong key, tampered, truncated).
    pub rejected_packets: AtomicU64,
    /// Broadcasts received but dropped: the events queue was full.
    pub events_dropped: AtomicU64,
    /// Our own broadcasts dropped: the command queue was full, or foca's backlog was (only the
    /// latest is held back then; the ones it replaces are counted).
    pub broadcasts_dropped: AtomicU64,
    /// Set once gossip runs on the timings for a group that spans sites
    /// ([`Timings::across_sites`]).
    pub switched_across_sites: AtomicBool,
    /// Gossip bytes sent: sealed UDP payloads (IP and UDP headers not counted).
    pub bytes_sent: AtomicU64,
    /// Gossip bytes received, authenticated or not (IP and UDP headers not counted).
    pub bytes_received: AtomicU64,
}

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

/// Which of foca's presets the timings start from (memberlist's LAN and WAN defaults).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// `Config::new_lan`: probe every 1 s, gossip every 200 ms to 3 members.
    #[default]
    Lan,
    /// `Config::new_wan`: probe every 5 s, gossip every 500 ms to 4 members.
    Wan,
}

impl Profile {
    /// `lan` or `wan`, as `peers.profile` names them.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Lan => "lan",
            Profile::Wan => "wan",
        }
    }
}

/// SWIM timings. [`Timings::lan`] is the production default (foca's LAN config);
/// [`Timings::fast`] suits tests on loopback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timings {
    /// The foca preset the other settings start from.
    pub profile: Profile,
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
    /// The timings to switch to, once and for good, when an active member with another site
    /// label shows up (`peers.profile = "auto"`); `None`: keep these.
    pub across_sites: Option<Box<Timings>>,
}

impl Timings {
    /// foca's `Config::new_lan` for a group of up to ~32 nodes: probe every 1 s, Down after
    /// ~6 s of unrefuted suspicion, gossip every 200 ms; re-announce to seeds every 3 s.
    pub fn lan() -> Self {
        Self::of(Profile::Lan)
    }

    /// foca's `Config::new_wan` for a group of up to ~32 nodes: probe every 5 s (3 s to answer),
    /// Down after ~45 s of unrefuted suspicion, gossip every 500 ms; re-announce every 3 s.
    pub fn wan() -> Self {
        Self::of(Profile::Wan)
    }

    fn of(profile: Profile) -> Self {
        let c = base_config(profile);
        Timings {
            profile,
            probe_period: c.probe_period,
            probe_rtt: c.probe_rtt,
            suspect_to_down_after: c.suspect_to_down_after,
            gossip_every: c
                .periodic_gossip
                .map_or(Duration::from_millis(200), |p| p.frequency),
            reannounce_every: Duration::from_secs(3),
            across_sites: None,
        }
    }

    /// The LAN preset until a member of another site shows up, then the WAN preset
    /// (`peers.profile = "auto"`).
    pub fn auto() -> Self {
        Timings {
            across_sites: Some(Box::new(Self::wan())),
            ..Self::lan()
        }
    }

    /// Tight timings for tests on loopback: a dead node is Down within ~1.5 s.
    pub fn fast() -> Self {
        Timings {
            profile: Profile::Lan,
            probe_period: Duration::from_millis(250),
            probe_rtt: Duration::from_millis(100),
            suspect_to_down_after: Duration::from_millis(1000),
            gossip_every: Duration::from_millis(50),
            reannounce_every: Duration::from_millis(250),
            across_sites: None,
        }
    }

    pub(in crate::peer) fn check(&self) -> Result<(), &'static str> {
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
        match &self.across_sites {
            Some(t) if t.across_sites.is_some() => Err("timings across sites switch only once"),
            Some(t) => t.check(),
            None => Ok(()),
        }
    }

    pub(in crate::peer) fn foca_config(&self) -> Config {
        let mut c = base_config(self.profile);
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.suspect_to_down_after = self.suspect_to_down_after;
        if let Some(g) = c.periodic_gossip.as_mut() {
            g.frequency = self.gossip_every;
        }
        // After a partition heals, the two sides hold each other Down and ignore each other's
        // packets; only an announce to a Down member starts the rejoins. foca's 65 s (125 s on
        // a WAN) left part of a healed group apart for that long (swarm bench); every 5 probe
        // periods costs a node two small packets per 5 s while it remembers a Down member.
        if let Some(a) = c.periodic_announce_to_down_members.as_mut() {
            a.frequency = self.probe_period * 5;
        }
        // How often each update is passed on follows the group's size (`swim` retunes it as
        // members come and go); our own broadcasts go to `OWN_FANOUT` members at once on top.
        c.max_transmissions = transmissions(CLUSTER_SIZE_HINT as usize);
        c
    }
}

/// Members a node sends its own index update to at once (all of a group of up to 33 nodes, so a
/// claim on a cold object is everywhere within one hop); the others get it from relays.
pub(in crate::peer) const OWN_FANOUT: usize = CLUSTER_SIZE_HINT as usize;

/// How many times each node passes on each update in a group of `group` nodes:
/// `ln(group + 1) + 7`, at least 8. Every node sends each update to that many random members, so
/// a given node is missed by all of them with odds of about `e^-transmissions`: this makes the
/// chance that any node of the group misses an update about `e^-7` (0.1 %), whatever its size (a
/// missed update is repaired by the gap its origin's next update shows). Each transmission costs
/// every node about one update's bytes, so the gossip bandwidth under updates grows with
/// `log(group)` only; the fixed 32 used before cost about twice as much for the same reach.
pub(in crate::peer) fn transmissions(group: usize) -> NonZeroU8 {
    let t = ((group as f64 + 1.0).ln() + 7.0).ceil().clamp(8.0, 255.0);
    NonZeroU8::new(t as u8).unwrap_or(NonZeroU8::MIN)
}

fn base_config(profile: Profile) -> Config {
    match profile {
        Profile::Lan => Config::new_lan(cluster_size_hint()),
        Profile::Wan => Config::new_wan(cluster_size_hint()),
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
    /// The preset the timings started with, and the one switched to across sites.
    profile: Profile,
    across_sites: Option<Profile>,
    cmds: mpsc::Sender<Command>,
    view: watch::Receiver<Vec<MemberInfo>>,
    counters: Arc<Counters>,
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
        events: mpsc::Sender<Event>,
    ) -> io::Result<Membership> {
        Self::start_with_timings(cfg, Timings::lan(), events).await
    }

    /// [`Membership::start`] with explicit timings (tests use [`Timings::fast`]).
    pub async fn start_with_timings(
        cfg: MembershipConfig,
        timings: Timings,
        events: mpsc::Sender<Event>,
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
        events: mpsc::Sender<Event>,
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

        let identity = PeerIdentity::new(
            cfg.id,
            advertise,
            cfg.site.into(),
            unix_ms(),
            rand::random(),
        );
        let (view_tx, view) = watch::channel(Vec::new());
        let (cmds, cmd_rx) = mpsc::channel(COMMANDS_CAPACITY);
        let counters = Arc::new(Counters::default());
        tracing::info!(
            node = %identity.id, %advertise, bind = %local_addr, seeds = seeds.len(),
            key = %cfg.key.fingerprint(), "joining peer group"
        );
        let driver = Driver::new(Setup {
            identity: identity.clone(),
            config: timings.foca_config(),
            across_sites: timings.across_sites.as_ref().map(|t| t.foca_config()),
            socket,
            sealer: Sealer::new(&cfg.key),
            seeds,
            reannounce_every: timings.reannounce_every,
            events,
            view_tx,
            counters: Arc::clone(&counters),
        })?;
        tokio::spawn(driver.run(cmd_rx));
        Ok(Membership {
            profile: timings.profile,
            across_sites: timings.across_sites.as_ref().map(|t| t.profile),
            cmds,
            view,
            counters,
            local_addr,
            identity: Arc::new(identity),
        })
    }

    /// Disseminates `payload` (at most [`MAX_BROADCAST_LEN`] bytes) to every member as a foca
    /// custom broadcast, sent at once. Each payload reaches every other member's `events` as
    /// `Event::Broadcast` exactly once (deduplicated by blake3 of the payload over the last
    /// 16 Ki payloads), so identical payloads count as one. Members that join later never get it.
    pub fn broadcast(&self, payload: Vec<u8>) {
        match self.cmds.try_send(Command::Broadcast(payload)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters
                    .broadcasts_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
            // Closed: the task has stopped, there is no group to tell.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Announces this node to `addr` (a candidate found by discovery, or a seed that resolved
    /// late), unless an active member is already there; the address is also re-announced to
    /// while this node knows no member, like a seed (at most [`MAX_JOINED`] such addresses are
    /// kept). Only a node holding the cluster key can answer, so a wrong candidate costs one
    /// dropped packet. With the command queue full the address is dropped (logged): discovery
    /// and the seed retries offer it again.
    pub fn join(&self, addr: SocketAddr) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.cmds.try_send(Command::Join(addr)) {
            tracing::debug!(%addr, "membership command queue full: join dropped");
        }
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
        self.counters.rejected_packets.load(Ordering::Relaxed)
    }

    /// Everything the task refused or dropped (see [`Counters`]).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The preset gossip runs on now: `profile`, or the one of [`Timings::across_sites`] once
    /// switched to.
    pub fn profile(&self) -> Profile {
        match (
            &self.across_sites,
            self.counters.switched_across_sites.load(Ordering::Relaxed),
        ) {
            (Some(p), true) => *p,
            _ => self.profile,
        }
    }

    /// The member `id` as seen now (Down ones included), without copying the whole view.
    pub fn member(&self, id: NodeId) -> Option<MemberInfo> {
        self.view.borrow().iter().find(|m| m.id == id).cloned()
    }

    /// A bounded events queue of [`EVENTS_CAPACITY`] for [`Membership::start`].
    pub fn events() -> (mpsc::Sender<Event>, mpsc::Receiver<Event>) {
        mpsc::channel(EVENTS_CAPACITY)
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
        if self.cmds.send(cmd(tx)).await.is_ok() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_are_checked() {
        assert!(Timings::lan().check().is_ok());
        assert!(Timings::fast().check().is_ok());
        let slow_rtt = Timings {
            probe_rtt: Duration::from_secs(5),
            ..Timings::fast()
        };
        assert!(slow_rtt.check().is_err());
        let zero = Timings {
            gossip_every: Duration::ZERO,
            ..Timings::fast()
        };
        assert!(zero.check().is_err());
        assert!(Timings::auto().check().is_ok());
        let twice = Timings {
            across_sites: Some(Box::new(Timings::auto())),
            ..Timings::lan()
        };
        assert!(twice.check().is_err(), "one switch only");
        let bad_wan = Timings {
            across_sites: Some(Box::new(slow_rtt.clone())),
            ..Timings::lan()
        };
        assert!(
            bad_wan.check().is_err(),
            "the timings switched to are checked too"
        );
    }

    #[test]
    fn transmissions_grow_with_the_log_of_the_group() {
        let cases = [
            (1, 8),
            (32, 11),
            (100, 12),
            (1000, 14),
            (5000, 16),
            (1 << 40, 35),
        ];
        for (group, want) in cases {
            assert_eq!(transmissions(group).get(), want, "{group}");
        }
    }
}
