//! A deterministic simulator of a whole peer group in one process: every node runs the real
//! membership state machine (`membership::swim`: foca, its config, broadcast handler and backlog
//! rule), the real index merge, journal and pull rules, over a simulated network (latency, loss,
//! partitions, link bandwidth) in virtual time from a seeded RNG. No tokio, no sockets, no
//! clocks: same seed, same run. Small on purpose (the swarm bench drives it); never used by a node.

mod net;

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use foca::Timer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::anti_entropy::AntiEntropy;
use super::auth::Sealer;
use super::identity::PeerIdentity;
use super::index::{Applied, Index};
use super::journal::{Journal, DEFAULT_JOURNAL_CAPACITY};
use super::membership::swim::{Step, Swim};
use super::membership::{Counters, Event, Timings};
use super::pulls::{self, PullId, Pulls, Want};
use super::wire::{Head, HeadsReply, IndexReply, NodeId, Tagged, Update};
use super::{DEFAULT_INDEX_PAGE, MAX_SNAPSHOT_READS, SNAPSHOT_QUEUE_WAIT};

pub use net::Network;
use net::Sides;

/// What a simulated group is made of.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes that form the group at the start (each knows every other as alive).
    pub nodes: usize,
    /// Seeds every random choice: the network's and each node's foca.
    pub seed: u64,
    /// The SWIM timings every node uses (as a real node would).
    pub timings: Timings,
    pub network: Network,
    /// How long a catch-up pull waits to connect to an unreachable node (`peers.connect_timeout`).
    pub connect_timeout: Duration,
    /// Two sites joined by a WAN, or one site (`None`).
    pub sites: Option<TwoSites>,
}

/// Two sites: nodes `0..first` are on site "a", the others on site "b" (their `peers.site`
/// labels); gossip packets between the sites cross `wan` instead of `network` (catch-up pulls
/// are modelled on `network` alone).
#[derive(Clone, Debug)]
pub struct TwoSites {
    pub first: usize,
    pub wan: Network,
}

impl TwoSites {
    fn site(&self, node: usize) -> &'static str {
        if node < self.first {
            "a"
        } else {
            "b"
        }
    }
}

impl SimConfig {
    /// `nodes` nodes with the given timings and network, seed 1.
    pub fn new(nodes: usize, timings: Timings, network: Network) -> Self {
        SimConfig {
            nodes,
            seed: 1,
            timings,
            network,
            connect_timeout: Duration::from_millis(250),
            sites: None,
        }
    }
}

impl Node {
    /// The running pull of `of` ends (the guard's drop in `Peers`).
    fn end_pull(&mut self, of: NodeId) {
        if let Some(id) = self.pull_ids.remove(&of) {
            self.pulls.end(of, id);
        }
    }
}

/// A simulated node: the real pieces a peercache node runs for its group, minus the I/O.
struct Node {
    id: NodeId,
    addr: SocketAddr,
    swim: Swim,
    journal: Journal,
    index: Index,
    pulls: Pulls,
    /// The id of the pull running for each node (`Peers` keeps it in the pull's guard).
    pull_ids: HashMap<NodeId, PullId>,
    /// Active members and their addresses, as the node's view says.
    live: HashMap<NodeId, usize>,
    alive: bool,
    bytes_sent: u64,
    bytes_received: u64,
    /// When the node's download link is free again.
    link_free: Duration,
    /// When each snapshot-read slot is free again.
    reads: [Duration; MAX_SNAPSHOT_READS],
    failures: HashMap<NodeId, u32>,
    /// When this node first saw each other node Down (and dropped its entries).
    downs: HashMap<NodeId, Duration>,
    /// Its anti-entropy schedule (times: the simulation's).
    anti_entropy: AntiEntropy,
    /// Counts foca instances: bumped when the node rebuilds foca (a timings switch), so that
    /// the old instance's timers are dropped.
    timers: u64,
    counters: Arc<Counters>,
}

enum Ev {
    /// The node starts; `known`: it knows the initial group already.
    Start {
        node: usize,
        known: bool,
    },
    Packet {
        to: usize,
        data: Bytes,
    },
    Timer {
        node: usize,
        /// The node's foca instance it was scheduled by ([`Node::timers`]).
        of: u64,
        timer: Timer<PeerIdentity>,
    },
    Reannounce(usize),
    /// A catch-up request from `from` reaches `to`.
    Ask {
        from: usize,
        to: usize,
    },
    /// The answer reaches `to`; `None`: refused or unreachable.
    Reply {
        to: usize,
        from: usize,
        reply: Option<IndexReply>,
    },
    Retry {
        node: usize,
        of: usize,
    },
    /// An anti-entropy round of `node` may be due.
    AntiEntropy(usize),
    /// `from` asks `to` for its heads (`GET /peer/v1/heads`).
    HeadsAsk {
        from: usize,
        to: usize,
    },
    HeadsReply {
        to: usize,
        heads: HeadsReply,
    },
}

struct Queued {
    at: Duration,
    seq: u64,
    /// Boxed: the heap moves its items around, and a timer holds a whole identity.
    ev: Box<Ev>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// An advertised update being followed to every node that was alive when it was sent.
struct Probe {
    origin: usize,
    epoch: u64,
    seq: u64,
    at: Duration,
    /// Per node: when the update took effect in its index (None: not yet, or not a target).
    reached: Vec<Option<Duration>>,
    targets: usize,
    count: usize,
}

/// A handle on an advertised update, for [`Sim::spread`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeId(usize);

/// How far an advertised update got: when it took effect at 50 %, 99 % and 100 % of the nodes
/// alive when it was sent (`None`: not yet), counted from the moment it was advertised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub p100: Option<Duration>,
    pub reached: usize,
    pub targets: usize,
}

/// Totals over all nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Gossip bytes sent (sealed payloads, as the real counter counts them).
    pub gossip_sent: u64,
    pub gossip_received: u64,
    /// Catch-up pull rounds started and failed (refused or unreachable).
    pub pulls: u64,
    pub pull_failures: u64,
    /// Catch-up reply bytes (TCP).
    pub pull_bytes: u64,
    /// Anti-entropy rounds answered, and their reply bytes (TCP).
    pub heads_rounds: u64,
    pub heads_bytes: u64,
    /// Events processed.
    pub events: u64,
    /// Times a node saw another go Down (a flap, when the other was alive all along).
    pub downs: u64,
}

/// A simulated peer group.
pub struct Sim {
    now: Duration,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    rng: StdRng,
    nodes: Vec<Node>,
    by_addr: HashMap<SocketAddr, usize>,
    by_id: HashMap<NodeId, usize>,
    net: Network,
    sides: Sides,
    cfg: SimConfig,
    probes: Vec<Probe>,
    /// Origin node → probes not yet everywhere.
    watching: HashMap<usize, Vec<usize>>,
    step: Step,
    totals: Totals,
    /// Origin → the head of its journal that the nodes then in the group are taken to hold
    /// already, and how many nodes that was ([`Sim::preload_held`]).
    held: HashMap<usize, (Head, usize)>,
}

/// The simulated address of node `i`: 10.x.y.z:3129.
fn addr_of(i: usize) -> SocketAddr {
    let ip = 0x0a00_0000u32.wrapping_add(u32::try_from(i).unwrap_or(u32::MAX) + 1);
    SocketAddr::from((Ipv4Addr::from(ip), 3129))
}

impl Sim {
    /// A settled group of `cfg.nodes` nodes: each knows every other as alive and every index is
    /// in sync (empty); the nodes start at random moments within one probe period.
    pub fn new(cfg: SimConfig) -> Sim {
        let mut sim = Sim {
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(cfg.seed),
            nodes: Vec::with_capacity(cfg.nodes),
            by_addr: HashMap::new(),
            by_id: HashMap::new(),
            net: cfg.network.clone(),
            sides: Sides::default(),
            cfg,
            probes: Vec::new(),
            watching: HashMap::new(),
            step: Step::default(),
            totals: Totals::default(),
            held: HashMap::new(),
        };
        for _ in 0..sim.cfg.nodes {
            sim.push_node(Vec::new(), None);
        }
        let everyone: Vec<PeerIdentity> = sim
            .nodes
            .iter()
            .map(|n| n.swim.identity().clone())
            .collect();
        for (i, node) in sim.nodes.iter_mut().enumerate() {
            let others = everyone
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| p.clone());
            node.swim.know(others);
        }
        let period = sim.cfg.timings.probe_period;
        for i in 0..sim.nodes.len() {
            let at = period.mul_f64(sim.rng.random::<f64>());
            sim.schedule(
                at,
                Ev::Start {
                    node: i,
                    known: true,
                },
            );
        }
        sim
    }

    /// Adds node `i` (the next number) on `site` (by default "default", or its side of
    /// [`SimConfig::sites`]).
    fn push_node(&mut self, seeds: Vec<SocketAddr>, site: Option<&str>) -> usize {
        let i = self.nodes.len();
        let addr = addr_of(i);
        let id = NodeId(self.rng.random());
        let site = site.unwrap_or_else(|| self.cfg.sites.as_ref().map_or("default", |s| s.site(i)));
        let identity = PeerIdentity::new(id, addr, site.into(), 1_700_000_000_000, 0);
        let rng = StdRng::seed_from_u64(self.rng.random());
        let counters = Arc::new(Counters::default());
        let mut swim = Swim::new(
            identity,
            self.cfg.timings.foca_config(),
            rng,
            seeds,
            counters.clone(),
        )
        .view_on_change_only();
        if let Some(t) = &self.cfg.timings.across_sites {
            swim = swim.across_sites(t.foca_config());
        }
        let epoch = 1_700_000_000_000 + i as u64;
        self.nodes.push(Node {
            id,
            addr,
            swim,
            journal: Journal::new(id, epoch, DEFAULT_JOURNAL_CAPACITY),
            index: Index::new(id),
            pulls: Pulls::default(),
            pull_ids: HashMap::new(),
            live: HashMap::new(),
            alive: true,
            bytes_sent: 0,
            bytes_received: 0,
            link_free: Duration::ZERO,
            reads: [Duration::ZERO; MAX_SNAPSHOT_READS],
            failures: HashMap::new(),
            downs: HashMap::new(),
            anti_entropy: AntiEntropy::default(),
            timers: 0,
            counters,
        });
        self.by_addr.insert(addr, i);
        self.by_id.insert(id, i);
        i
    }

    fn schedule(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev: Box::new(ev),
        }));
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Nodes, dead ones included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Runs every event up to `now + d`.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until, |_| false);
    }

    /// Runs until `done` holds (checked every `check` of virtual time) or `deadline`; returns
    /// whether `done` held.
    pub fn run_until_every(
        &mut self,
        deadline: Duration,
        check: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if self.now >= deadline {
                return false;
            }
            let next = (self.now + check).min(deadline);
            self.run_until(next, |_| false);
        }
    }

    /// Runs events until `deadline`, or until `stop` holds after an event; returns whether it
    /// stopped.
    pub fn run_until(&mut self, deadline: Duration, mut stop: impl FnMut(&Sim) -> bool) -> bool {
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > deadline {
                break;
            }
            let Some(Reverse(q)) = self.queue.pop() else {
                break;
            };
            self.now = q.at;
            self.totals.events += 1;
            self.handle(*q.ev);
            if stop(self) {
                return true;
            }
        }
        self.now = self.now.max(deadline);
        false
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Start { node, known } => {
                if !self.nodes[node].alive {
                    return;
                }
                // The first check; each one schedules the next.
                let due = self.nodes[node].anti_entropy.due(0);
                self.schedule(self.now.max(due), Ev::AntiEntropy(node));
                if known {
                    // A settled group: the members are known and the indexes in sync.
                    let mut step = std::mem::take(&mut self.step);
                    self.nodes[node].swim.step(&mut step);
                    self.carry_out(node, &mut step, true);
                    self.step = step;
                } else {
                    self.schedule(self.now, Ev::Reannounce(node));
                }
            }
            Ev::Packet { to, data } => {
                let n = &mut self.nodes[to];
                if !n.alive {
                    return;
                }
                n.bytes_received += (data.len() + Sealer::OVERHEAD) as u64;
                n.swim.on_packet(data.to_vec());
                self.flush(to);
            }
            Ev::Timer { node, of, timer } => {
                if !self.nodes[node].alive || self.nodes[node].timers != of {
                    return;
                }
                let swim = &mut self.nodes[node].swim;
                swim.before_timers();
                swim.on_timer(timer);
                self.flush(node);
            }
            Ev::Reannounce(node) => {
                if !self.nodes[node].alive {
                    return;
                }
                self.nodes[node].swim.reannounce();
                self.flush(node);
                let next = self.now + self.cfg.timings.reannounce_every;
                self.schedule(next, Ev::Reannounce(node));
            }
            Ev::Ask { from, to } => self.on_ask(from, to),
            Ev::Reply { to, from, reply } => self.on_reply(to, from, reply),
            Ev::Retry { node, of } => self.ask(node, of),
            Ev::AntiEntropy(node) => self.anti_entropy(node),
            Ev::HeadsAsk { from, to } => self.on_heads_ask(from, to),
            Ev::HeadsReply { to, heads } => self.on_heads(to, heads),
        }
    }

    /// `anti_entropy_loop`: a round with a random member if one is due, then the next one.
    fn anti_entropy(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if !n.alive {
            return;
        }
        let members = n.live.len();
        let started = n.anti_entropy.start(self.now, members);
        let next = n.anti_entropy.due(members);
        self.schedule(next, Ev::AntiEntropy(node));
        if !started {
            return;
        }
        let mut live: Vec<usize> = self.nodes[node].live.values().copied().collect();
        if live.is_empty() {
            return;
        }
        live.sort_unstable();
        let to = live[self.rng.random_range(0..live.len())];
        if self.nodes[to].alive && self.sides.connected(node, to) {
            // SYN, SYN-ACK, then the request.
            let at = self.now
                + self.net.delay(&mut self.rng)
                + self.net.delay(&mut self.rng)
                + self.net.delay(&mut self.rng);
            self.schedule(at, Ev::HeadsAsk { from: node, to });
        }
    }

    /// The member answers with its heads (`Peers::heads`).
    fn on_heads_ask(&mut self, from: usize, to: usize) {
        let holder = &self.nodes[to];
        if !holder.alive {
            return;
        }
        let mut heads = vec![(holder.id, holder.journal.head())];
        heads.extend(holder.index.heads());
        let bytes = postcard::to_stdvec(&heads).map_or(0, |b| b.len());
        self.totals.heads_rounds += 1;
        self.totals.heads_bytes += bytes as u64;
        let ready = self.now + self.net.delay(&mut self.rng);
        let link = &mut self.nodes[from].link_free;
        let done = ready.max(*link) + self.net.transfer(bytes);
        *link = done;
        self.schedule(done, Ev::HeadsReply { to: from, heads });
    }

    /// `Peers::compare_heads`: pulls from each member whose head is past ours.
    fn on_heads(&mut self, node: usize, heads: HeadsReply) {
        if !self.nodes[node].alive {
            return;
        }
        for (id, head) in heads {
            let n = &mut self.nodes[node];
            if id != n.id && n.live.contains_key(&id) && n.index.heard(id, head.epoch, head.seq) {
                self.pull(node, id);
            }
        }
    }

    fn flush(&mut self, node: usize) {
        let mut step = std::mem::take(&mut self.step);
        self.nodes[node].swim.step(&mut step);
        self.carry_out(node, &mut step, false);
        self.step = step;
    }

    /// Carries out a step of `node`'s state machine, as the tokio task and `Peers` would.
    fn carry_out(&mut self, node: usize, step: &mut Step, settled: bool) {
        for (dst, data) in step.sends.drain(..) {
            self.nodes[node].bytes_sent += (data.len() + Sealer::OVERHEAD) as u64;
            let Some(&to) = self.by_addr.get(&dst) else {
                continue;
            };
            let net = match &self.cfg.sites {
                Some(s) if s.site(node) != s.site(to) => &s.wan,
                _ => &self.net,
            };
            if net.lost(&mut self.rng) || !self.sides.connected(node, to) {
                continue;
            }
            let at = self.now + net.delay(&mut self.rng);
            self.schedule(at, Ev::Packet { to, data });
        }
        if step.reset_timers {
            self.nodes[node].timers += 1;
        }
        let of = self.nodes[node].timers;
        for (after, timer) in step.timers.drain(..) {
            self.schedule(self.now + after, Ev::Timer { node, of, timer });
        }
        // The sim's nodes publish no view list: their Up and Down events say the same.
        for ev in step.members.drain(..) {
            match ev {
                Event::Up(m) => {
                    if let Some(&i) = self.by_addr.get(&m.addr) {
                        self.nodes[node].live.insert(m.id, i);
                    }
                    if !settled {
                        self.pull(node, m.id);
                    }
                }
                Event::Down(id) => {
                    self.totals.downs += 1;
                    let now = self.now;
                    let n = &mut self.nodes[node];
                    n.live.remove(&id);
                    n.index.remove_node(id);
                    n.downs.entry(id).or_insert(now);
                }
                Event::Broadcast(_) => {}
            }
        }
        for payload in step.broadcasts.drain(..) {
            let Ok(t) = postcard::from_bytes::<Tagged>(&payload) else {
                continue;
            };
            if !self.nodes[node].live.contains_key(&t.node) {
                continue; // a stranger's: pulled on its Up
            }
            let origin = self.by_id.get(&t.node).copied();
            match self.nodes[node].index.apply(t) {
                Applied::Applied(_) => {
                    if let Some(origin) = origin {
                        self.reached(node, origin);
                    }
                }
                Applied::Gap { node: of, .. } => self.pull(node, of),
                Applied::Duplicate | Applied::Refused => {}
            }
        }
    }

    fn index_of(&self, node: usize, id: NodeId) -> Option<usize> {
        self.nodes[node].live.get(&id).copied()
    }

    /// `Peers::pull`: one pull per node at a time, members only.
    fn pull(&mut self, node: usize, of: NodeId) {
        let Some(holder) = self.index_of(node, of) else {
            return;
        };
        if self.holds_already(node, holder) {
            return;
        }
        if let Want::Start(id) = self.nodes[node].pulls.want(of) {
            self.nodes[node].pull_ids.insert(of, id);
            self.ask(node, holder);
        }
    }

    /// One pull round from `node` to `holder` (`Peers::catch_up`): connect, ask, page.
    fn ask(&mut self, node: usize, holder: usize) {
        let of = self.nodes[holder].id;
        if !self.nodes[node].alive {
            return;
        }
        if self.index_of(node, of).is_none() {
            self.nodes[node].end_pull(of);
            return;
        }
        self.totals.pulls += 1;
        if !self.nodes[holder].alive || !self.sides.connected(node, holder) {
            let at = self.now + self.cfg.connect_timeout;
            self.schedule(
                at,
                Ev::Reply {
                    to: node,
                    from: holder,
                    reply: None,
                },
            );
            return;
        }
        // SYN, SYN-ACK, then the request.
        let at = self.now
            + self.net.delay(&mut self.rng)
            + self.net.delay(&mut self.rng)
            + self.net.delay(&mut self.rng);
        self.schedule(
            at,
            Ev::Ask {
                from: node,
                to: holder,
            },
        );
    }

    /// The holder answers (`Peers::index_updates` / `index_page`), and learns where the
    /// asker's stream stands (`Peers::heard_head`).
    fn on_ask(&mut self, from: usize, to: usize) {
        let applied = self.nodes[from].index.applied(self.nodes[to].id);
        let one_way = self.net.delay(&mut self.rng);
        if !self.nodes[to].alive {
            let at = self.now + self.cfg.connect_timeout;
            self.schedule(
                at,
                Ev::Reply {
                    to: from,
                    from: to,
                    reply: None,
                },
            );
            return;
        }
        let (asker, head) = (self.nodes[from].id, self.nodes[from].journal.head());
        let holder = &mut self.nodes[to];
        if holder.live.contains_key(&asker) && holder.index.heard(asker, head.epoch, head.seq) {
            self.pull(to, asker);
        }
        let holder = &mut self.nodes[to];
        let (epoch, since) = match applied {
            Some((e, s)) => (Some(e), s),
            None => (None, 0),
        };
        // When the holder starts reading: at once for the journal, else when a snapshot read
        // slot is free, if that is within `SNAPSHOT_QUEUE_WAIT` (503 after that wait if not).
        let now = self.now;
        let (reply, pages, start) = match holder.journal.updates_since(epoch, since) {
            Some(updates) => (Some(updates), 0u32, now),
            None => {
                let slot = holder
                    .reads
                    .iter_mut()
                    .min()
                    .filter(|free| **free <= now + SNAPSHOT_QUEUE_WAIT);
                match slot {
                    None => (None, 0, now + SNAPSHOT_QUEUE_WAIT),
                    Some(slot) => {
                        let start = now.max(*slot);
                        let entries: Vec<Update> =
                            holder.journal.state().values().cloned().collect();
                        let pages = entries.len().div_ceil(DEFAULT_INDEX_PAGE).max(1);
                        let pages = u32::try_from(pages).unwrap_or(u32::MAX);
                        *slot = start + self.net.page_cost * pages;
                        (Some(holder.journal.snapshot_at().of(entries)), pages, start)
                    }
                }
            }
        };
        let Some(reply) = reply else {
            self.schedule(
                start + one_way,
                Ev::Reply {
                    to: from,
                    from: to,
                    reply: None,
                },
            );
            return;
        };
        let bytes = postcard::to_stdvec(&reply).map_or(0, |b| b.len());
        self.totals.pull_bytes += bytes as u64;
        // Each further page is one more round trip and store read.
        let paging = (one_way * 2 + self.net.page_cost) * pages.saturating_sub(1)
            + self.net.page_cost * pages.min(1);
        let ready = start + one_way + paging;
        let link = &mut self.nodes[from].link_free;
        let done = ready.max(*link) + self.net.transfer(bytes);
        *link = done;
        self.schedule(
            done,
            Ev::Reply {
                to: from,
                from: to,
                reply: Some(reply),
            },
        );
    }

    /// `Peers::puller` after a round: apply, go again while it helps, back off on failure.
    fn on_reply(&mut self, node: usize, holder: usize, reply: Option<IndexReply>) {
        if !self.nodes[node].alive {
            return;
        }
        let of = self.nodes[holder].id;
        let n = &mut self.nodes[node];
        match reply {
            Some(reply) => {
                n.failures.remove(&of);
                let applied = n.index.apply_reply(reply);
                let gapped = n.index.gap(of).is_some();
                let again = match n.pull_ids.get(&of) {
                    Some(&id) => n.pulls.round_done(of, id, applied > 0 && gapped),
                    None => false,
                };
                if !again {
                    n.pull_ids.remove(&of);
                }
                if applied > 0 {
                    self.reached(node, holder);
                }
                if again {
                    self.ask(node, holder);
                }
            }
            None => {
                self.totals.pull_failures += 1;
                let behind = n.index.behind(of);
                let failures = n.failures.entry(of).or_insert(0);
                match pulls::retry_after(*failures, behind, self.rng.random()) {
                    Some(wait) if n.live.contains_key(&of) => {
                        *failures += 1;
                        let at = self.now + wait;
                        self.schedule(at, Ev::Retry { node, of: holder });
                    }
                    _ => {
                        n.failures.remove(&of);
                        n.end_pull(of);
                    }
                }
            }
        }
    }

    /// Records the probes of `origin` that took effect at `node`.
    fn reached(&mut self, node: usize, origin: usize) {
        let Some(ids) = self.watching.get_mut(&origin) else {
            return;
        };
        let applied = self.nodes[node].index.applied(self.nodes[origin].id);
        let now = self.now;
        ids.retain(|&p| {
            let probe = &mut self.probes[p];
            let slot = &mut probe.reached[node];
            if slot.is_none()
                && node != probe.origin
                && applied.is_some_and(|(e, s)| e == probe.epoch && s >= probe.seq)
                && probe.targets > 0
            {
                *slot = Some(now - probe.at);
                probe.count += 1;
            }
            probe.count < probe.targets
        });
    }

    /// `node` records `update` in its journal and gossips it at once (`Peers::advertise`).
    pub fn advertise(&mut self, node: usize, update: Update) -> ProbeId {
        let tagged = self.nodes[node].journal.record(update);
        let id = ProbeId(self.probes.len());
        let mut reached = vec![None; self.nodes.len()];
        // Targets: the other live nodes; a dead one is never reached.
        let targets = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != node && n.alive)
            .count();
        for (i, n) in self.nodes.iter().enumerate() {
            if i == node || !n.alive {
                reached[i] = Some(Duration::MAX);
            }
        }
        self.probes.push(Probe {
            origin: node,
            epoch: tagged.epoch,
            seq: tagged.seq,
            at: self.now,
            reached,
            targets,
            count: 0,
        });
        if targets > 0 {
            self.watching.entry(node).or_default().push(id.0);
        }
        if let Ok(bytes) = postcard::to_stdvec(&tagged) {
            let swim = &mut self.nodes[node].swim;
            swim.add_broadcast(bytes);
            swim.broadcast();
        }
        self.flush(node);
        id
    }

    /// Records `updates` in `node`'s journal without gossiping them (what it held before the
    /// run: the others learn it only through a pull).
    pub fn preload(&mut self, node: usize, updates: impl Iterator<Item = Update>) {
        let n = &mut self.nodes[node];
        for u in updates {
            n.journal.record(u);
        }
    }

    /// [`Sim::preload`], as what the whole group held before the run: the nodes in the group
    /// now are taken to hold these entries already (a settled group), so they never pull them;
    /// a node that joins later pulls them as usual. Their indexes do not store them: a group
    /// of 1 000 nodes each holding a 1 M-entry index would take ~100 GB, and what the swarm
    /// bench measures with them, a new node's catch-up, reads only the holders' journals.
    pub fn preload_held(&mut self, node: usize, updates: impl Iterator<Item = Update>) {
        self.preload(node, updates);
        let head = self.nodes[node].journal.head();
        self.held.insert(node, (head, self.nodes.len()));
    }

    /// Whether `node` is taken to hold `holder`'s stream at its current head already
    /// ([`Sim::preload_held`]).
    fn holds_already(&self, node: usize, holder: usize) -> bool {
        self.held.get(&holder).is_some_and(|&(head, present)| {
            node < present && self.nodes[holder].journal.head() == head
        })
    }

    /// How far an advertised update got.
    pub fn spread(&self, probe: ProbeId) -> Spread {
        let p = &self.probes[probe.0];
        let mut times: Vec<Duration> = p
            .reached
            .iter()
            .flatten()
            .copied()
            .filter(|t| *t != Duration::MAX)
            .collect();
        times.sort();
        let at = |q: f64| quantile(&times, p.targets, q);
        Spread {
            p50: at(0.5),
            p99: at(0.99),
            p100: at(1.0),
            reached: times.len(),
            targets: p.targets,
        }
    }

    /// Stops `node` as a crash would: it sends and answers nothing from now on.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].alive = false;
    }

    /// Splits the group: nodes on different sides (by `side_of`) lose every packet and
    /// connection between them until [`Sim::heal`].
    pub fn partition(&mut self, side_of: impl Fn(usize) -> u8) {
        self.sides = Sides::split(self.nodes.len(), side_of);
    }

    pub fn heal(&mut self) {
        self.sides = Sides::default();
    }

    /// Sets the packet loss from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.net.loss = loss;
    }

    /// A new, empty node that joins through `seed` (announces to it, as a configured seed);
    /// returns its number.
    pub fn join(&mut self, seed: usize) -> usize {
        self.join_on(seed, None)
    }

    /// [`Sim::join`] for a node labelled with `site`.
    pub fn join_site(&mut self, seed: usize, site: &str) -> usize {
        self.join_on(seed, Some(site))
    }

    fn join_on(&mut self, seed: usize, site: Option<&str>) -> usize {
        let seed_addr = self.nodes[seed].addr;
        let i = self.push_node(vec![seed_addr], site);
        for p in &mut self.probes {
            p.reached.push(Some(Duration::MAX));
        }
        self.schedule(
            self.now,
            Ev::Start {
                node: i,
                known: false,
            },
        );
        i
    }

    /// When the live nodes other than `victim` saw it Down (and dropped its entries), counted
    /// from `since`: (50 %, 99 %, 100 %, how many saw it).
    pub fn down_spread(&self, victim: usize, since: Duration) -> Spread {
        let id = self.nodes[victim].id;
        let observers: Vec<&Node> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != victim && n.alive)
            .map(|(_, n)| n)
            .collect();
        let mut times: Vec<Duration> = observers
            .iter()
            .filter_map(|n| n.downs.get(&id))
            .map(|t| t.saturating_sub(since))
            .collect();
        times.sort();
        let at = |q: f64| quantile(&times, observers.len(), q);
        Spread {
            p50: at(0.5),
            p99: at(0.99),
            p100: at(1.0),
            reached: times.len(),
            targets: observers.len(),
        }
    }

    /// Whether `of`'s entries are held by `node` in full: it applied `of`'s latest update.
    pub fn in_sync(&self, node: usize, of: usize) -> bool {
        let o = &self.nodes[of];
        let head = (o.journal.epoch(), o.journal.seq());
        match self.nodes[node].index.applied(o.id) {
            Some(applied) => applied == head,
            None => o.journal.seq() == 0 && o.journal.state().is_empty(),
        }
    }

    /// Whether every live node holds every one of `origins`' entries in full and sees every
    /// other live node as a member.
    pub fn converged(&self, origins: &[usize]) -> bool {
        let alive = self.nodes.iter().filter(|n| n.alive).count();
        self.nodes.iter().enumerate().all(|(i, n)| {
            !n.alive
                || (n.live.len() + 1 >= alive
                    && origins
                        .iter()
                        .all(|&o| o == i || !self.nodes[o].alive || self.in_sync(i, o)))
        })
    }

    /// Whether `node` sees `other` as an active member.
    pub fn sees(&self, node: usize, other: usize) -> bool {
        self.nodes[node].live.contains_key(&self.nodes[other].id)
    }

    /// Members `node` sees as active.
    pub fn members(&self, node: usize) -> usize {
        self.nodes[node].live.len()
    }

    /// (key, node) entries in `node`'s index.
    pub fn index_entries(&self, node: usize) -> usize {
        self.nodes[node].index.entries()
    }

    /// Gossip bytes `node` sent and received so far (sealed payloads).
    pub fn gossip_bytes(&self, node: usize) -> (u64, u64) {
        let n = &self.nodes[node];
        (n.bytes_sent, n.bytes_received)
    }

    /// Nodes whose gossip switched to the timings across sites ([`Timings::across_sites`]).
    pub fn switched(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| {
                n.counters
                    .switched_across_sites
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .count()
    }

    pub fn totals(&self) -> Totals {
        let mut t = self.totals;
        for n in &self.nodes {
            t.gossip_sent += n.bytes_sent;
            t.gossip_received += n.bytes_received;
        }
        t
    }
}

/// The time by which a share `q` of `targets` was reached, given the sorted times.
fn quantile(sorted: &[Duration], targets: usize, q: f64) -> Option<Duration> {
    if targets == 0 {
        return Some(Duration::ZERO);
    }
    let need = ((targets as f64 * q).ceil() as usize).clamp(1, targets);
    sorted.get(need - 1).copied()
}

#[cfg(test)]
mod tests;
