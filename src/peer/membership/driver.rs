//! The membership task: the only owner of the `Foca` value and of the gossip socket. It seals and
//! opens packets, runs foca's timers, re-announces to seeds while alone, and publishes the member
//! view and events; it never reads or changes the index or the store.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use foca::{
    AccumulatingRuntime, Codec, Config, Foca, Message, OwnedNotification, PostcardCodec, State,
    Timer,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant, MissedTickBehavior};

use crate::peer::auth::Sealer;
use crate::peer::identity::PeerIdentity;
use crate::peer::wire::NodeId;

use super::broadcast::{admit, Admit, Dedupe, MAX_BACKLOG};
use super::{
    Command, Counters, Event, MemberInfo, MemberState, BROADCAST_BATCH, MAX_BROADCAST_LEN,
    MAX_JOINED, MAX_PACKET,
};

type PeerFoca = Foca<PeerIdentity, PostcardCodec, StdRng, Dedupe>;
type TimerQueue = BinaryHeap<Reverse<(Instant, Timer<PeerIdentity>)>>;

/// The task's state: the only owner of the `Foca` value and of the socket.
pub(super) struct Driver {
    foca: PeerFoca,
    runtime: AccumulatingRuntime<PeerIdentity>,
    socket: UdpSocket,
    sealer: Sealer,
    timers: TimerQueue,
    seeds: Vec<SocketAddr>,
    /// Addresses from [`Membership::join`], re-announced to like seeds; at most [`MAX_JOINED`].
    joined: Vec<SocketAddr>,
    reannounce_every: Duration,
    events: mpsc::Sender<Event>,
    delivered: mpsc::Receiver<Vec<u8>>,
    view_tx: watch::Sender<Vec<MemberInfo>>,
    /// Last published view, with each member's bump (a new bump = a new process).
    view: BTreeMap<NodeId, (MemberInfo, u64)>,
    counters: Arc<Counters>,
    /// The latest broadcast kept out of a full queue, queued once the queue drains.
    held_back: Option<Vec<u8>>,
}

/// Room for broadcasts foca's handler passes to the task between two flushes (a packet carries
/// only a few); past it they are dropped and counted as `events_dropped`.
const DELIVERED_CAPACITY: usize = 1024;

/// What [`Driver::new`] is built from.
pub(super) struct Setup {
    pub identity: PeerIdentity,
    pub config: Config,
    pub socket: UdpSocket,
    pub sealer: Sealer,
    pub seeds: Vec<SocketAddr>,
    pub reannounce_every: Duration,
    pub events: mpsc::Sender<Event>,
    pub view_tx: watch::Sender<Vec<MemberInfo>>,
    pub counters: Arc<Counters>,
}

/// Why the task's loop woke up.
enum Wake {
    Packet(io::Result<usize>),
    Command(Option<Command>),
    Timers,
    Reannounce,
}

impl Driver {
    pub(super) fn new(s: Setup) -> io::Result<Driver> {
        let rng = StdRng::try_from_os_rng().map_err(io::Error::other)?;
        let (delivered_tx, delivered) = mpsc::channel(DELIVERED_CAPACITY);
        let foca = Foca::with_custom_broadcast(
            s.identity,
            s.config,
            rng,
            PostcardCodec,
            Dedupe::new(delivered_tx, s.counters.clone()),
        );
        Ok(Driver {
            foca,
            runtime: AccumulatingRuntime::new(),
            socket: s.socket,
            sealer: s.sealer,
            timers: BinaryHeap::new(),
            seeds: s.seeds,
            joined: Vec::new(),
            reannounce_every: s.reannounce_every,
            events: s.events,
            delivered,
            view_tx: s.view_tx,
            view: BTreeMap::new(),
            counters: s.counters,
            held_back: None,
        })
    }

    pub(super) async fn run(mut self, mut cmds: mpsc::Receiver<Command>) {
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
            self.counters
                .rejected_packets
                .fetch_add(1, Ordering::Relaxed);
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
        cmds: &mut mpsc::Receiver<Command>,
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
                if self.held_back.replace(payload).is_some() {
                    self.counters
                        .broadcasts_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
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

    /// A candidate from discovery or a late seed: announce to it unless it is us or an active
    /// member.
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

    /// Carries out a command other than a broadcast batch; returns the reply channel of a stop.
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
        for member_event in self.refresh_view() {
            // Rare (one per member change) and never to be lost: wait for room. Err: the node
            // is shutting down.
            let _ = self.events.send(member_event).await;
        }
        while let Ok(payload) = self.delivered.try_recv() {
            if let Err(mpsc::error::TrySendError::Full(_)) =
                self.events.try_send(Event::Broadcast(payload))
            {
                self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Rebuilds the per-node view from foca's members, publishes it if it changed, and returns
    /// the Up/Down events for the differences.
    fn refresh_view(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
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
                events.push(Event::Down(*id));
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
                events.push(Event::Up(info.clone()));
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
        events
    }
}
