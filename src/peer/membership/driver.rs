//! The membership task: owns the gossip socket and the node's [`Swim`] state machine; it seals
//! and opens packets, runs the timers on tokio time, re-announces to seeds while alone, and
//! publishes the member view and events; it never reads or changes the index or the store.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use foca::{Config, Timer};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant, MissedTickBehavior};

use crate::peer::auth::Sealer;
use crate::peer::identity::PeerIdentity;

use super::swim::{Step, Swim};
use super::{Command, Counters, Event, MemberInfo, BROADCAST_BATCH, MAX_PACKET};

type TimerQueue = BinaryHeap<Reverse<(Instant, Timer<PeerIdentity>)>>;

/// The task's state: the socket, the sealer, the timers and the state machine.
pub(super) struct Driver {
    swim: Swim,
    step: Step,
    socket: UdpSocket,
    sealer: Sealer,
    timers: TimerQueue,
    reannounce_every: Duration,
    events: mpsc::Sender<Event>,
    view_tx: watch::Sender<Vec<MemberInfo>>,
    counters: Arc<Counters>,
}

/// What [`Driver::new`] is built from.
pub(super) struct Setup {
    pub identity: PeerIdentity,
    pub config: Config,
    /// The config to switch to when a member of another site shows up.
    pub across_sites: Option<Config>,
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
        let mut swim = Swim::new(s.identity, s.config, rng, s.seeds, s.counters.clone());
        if let Some(wan) = s.across_sites {
            swim = swim.across_sites(wan);
        }
        Ok(Driver {
            swim,
            step: Step::default(),
            socket: s.socket,
            sealer: s.sealer,
            timers: BinaryHeap::new(),
            reannounce_every: s.reannounce_every,
            events: s.events,
            view_tx: s.view_tx,
            counters: s.counters,
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
                Wake::Reannounce => {
                    self.swim.reannounce();
                    self.flush().await;
                }
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
        tracing::info!(node = %self.swim.identity().id, "left peer group");
        // Close the socket before answering, so a restart may bind the same port at once.
        drop(self);
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
    }

    fn on_packet(&mut self, packet: &[u8]) {
        self.counters
            .bytes_received
            .fetch_add(packet.len() as u64, Ordering::Relaxed);
        let Some(plain) = self.sealer.open(packet) else {
            self.counters
                .rejected_packets
                .fetch_add(1, Ordering::Relaxed);
            tracing::trace!(len = packet.len(), "dropped unauthenticated gossip packet");
            return;
        };
        self.swim.on_packet(plain);
    }

    async fn on_timers(&mut self) {
        self.swim.before_timers();
        let now = Instant::now();
        while self
            .timers
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= now)
        {
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            self.swim.on_timer(timer);
            self.flush().await;
        }
    }

    /// Adds `first` and any broadcasts queued behind it, then sends one round at once. Returns
    /// the reply channel if a stop command was queued behind them.
    async fn on_broadcasts(
        &mut self,
        first: Vec<u8>,
        cmds: &mut mpsc::Receiver<Command>,
    ) -> Option<oneshot::Sender<()>> {
        self.swim.add_broadcast(first);
        let mut next = None;
        for _ in 0..BROADCAST_BATCH {
            match cmds.try_recv() {
                Ok(Command::Broadcast(p)) => self.swim.add_broadcast(p),
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        self.swim.broadcast();
        self.flush().await;
        match next {
            Some(cmd) => self.on_command(cmd).await,
            None => None,
        }
    }

    /// Carries out a command other than a broadcast batch; returns the reply channel of a stop.
    async fn on_command(&mut self, cmd: Command) -> Option<oneshot::Sender<()>> {
        let reply = match cmd {
            Command::Broadcast(p) => {
                self.swim.add_broadcast(p);
                None
            }
            Command::Join(addr) => {
                let local = self
                    .socket
                    .local_addr()
                    .unwrap_or(self.swim.identity().addr);
                self.swim.join(addr, local);
                None
            }
            Command::Leave(reply) => {
                self.swim.leave();
                Some(reply)
            }
            Command::Stop(reply) => return Some(reply),
        };
        self.flush().await;
        reply
    }

    /// Carries out what the state machine asked for: send, schedule, then publish the view, its
    /// events, and the broadcasts that arrived.
    async fn flush(&mut self) {
        self.swim.step(&mut self.step);
        for (dst, data) in &self.step.sends {
            let packet = self.sealer.seal(data);
            match self.socket.send_to(&packet, dst).await {
                Ok(n) => {
                    self.counters
                        .bytes_sent
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!(error = %e, to = %dst, "gossip send failed"),
            }
        }
        let now = Instant::now();
        if self.step.reset_timers {
            // A new foca instance: the old one's timers mean nothing to it.
            self.timers.clear();
        }
        for (after, timer) in self.step.timers.drain(..) {
            let at = now
                .checked_add(after)
                .unwrap_or_else(|| now + Duration::from_secs(86_400));
            self.timers.push(Reverse((at, timer)));
        }
        if let Some(list) = self.step.view.take() {
            self.view_tx.send_replace(list);
        }
        for member_event in self.step.members.drain(..) {
            // Rare (one per member change) and never to be lost: wait for room. Err: the node
            // is shutting down.
            let _ = self.events.send(member_event).await;
        }
        for payload in self.step.broadcasts.drain(..) {
            if let Err(mpsc::error::TrySendError::Full(_)) =
                self.events.try_send(Event::Broadcast(payload))
            {
                self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
