//! One node's SWIM state machine: the `Foca` value, its broadcast rules, the seeds and the
//! member view, stepped by packets, timers and commands; pure: no I/O, no clocks. The tokio task
//! (`driver`) and the simulator (`peer::sim`) carry out what a step asks for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use foca::{
    AccumulatingRuntime, Codec, Config, Foca, Member, Message, OwnedNotification, PostcardCodec,
    State, Timer,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::peer::identity::PeerIdentity;
use crate::peer::wire::NodeId;

use super::broadcast::{admit, Admit, Dedupe, MAX_BACKLOG};
use super::{
    transmissions, Counters, Event, MemberInfo, MemberState, MAX_BROADCAST_LEN, MAX_JOINED,
    OWN_FANOUT,
};

type PeerFoca = Foca<PeerIdentity, PostcardCodec, StdRng, Dedupe>;

/// Room for broadcasts foca's handler passes on between two steps (a packet carries only a
/// few); past it they are dropped and counted as `events_dropped`.
const DELIVERED_CAPACITY: usize = 1024;

/// Members [`Swim::know`] applies between two drains of foca's notifications.
const KNOW_CHUNK: usize = 256;

/// What a step asks the caller to carry out, in this order: send the packets, schedule the
/// timers, publish the view, then hand on the member events and the broadcasts.
#[derive(Default)]
pub(in crate::peer) struct Step {
    /// Plaintext foca packets and where to send them (the caller seals them).
    pub sends: Vec<(SocketAddr, Bytes)>,
    /// Timers to fire after the given delay.
    pub timers: Vec<(Duration, Timer<PeerIdentity>)>,
    /// The new member view, when it changed.
    pub view: Option<Vec<MemberInfo>>,
    /// `Up` and `Down` events (never to be lost).
    pub members: Vec<Event>,
    /// Payloads other members broadcast, each delivered once.
    pub broadcasts: Vec<Vec<u8>>,
    /// foca was rebuilt with other timings: drop every timer scheduled before (`timers` holds
    /// the new instance's).
    pub reset_timers: bool,
}

impl Step {
    fn clear(&mut self) {
        self.sends.clear();
        self.timers.clear();
        self.view = None;
        self.members.clear();
        self.broadcasts.clear();
        self.reset_timers = false;
    }
}

/// One node's membership state: the only owner of its `Foca` value.
pub(in crate::peer) struct Swim {
    foca: PeerFoca,
    runtime: AccumulatingRuntime<PeerIdentity>,
    delivered: mpsc::Receiver<Vec<u8>>,
    seeds: Vec<SocketAddr>,
    /// Addresses from `join`, re-announced to like seeds; at most [`MAX_JOINED`].
    joined: Vec<SocketAddr>,
    /// Each member's liveness and bump (a new bump = a new process) as last published. Its
    /// address and site are foca's (a process keeps them for its lifetime): the view costs 32
    /// bytes a member beside foca's list, not a second copy of it.
    view: BTreeMap<NodeId, Seen>,
    counters: Arc<Counters>,
    /// The latest broadcast kept out of a full queue, queued once the queue drains.
    held_back: Option<Vec<u8>>,
    /// Rebuild and publish the whole view after every step (the task: Suspect shows on the
    /// status page), or only update the members foca reported a change of and publish no list
    /// (the simulator: the Up and Down events are the same, at a fraction of the cost).
    view_every_step: bool,
    /// Node ids foca reported a change of since the last step.
    touched: Vec<NodeId>,
    /// Rebuild the whole view at the next step (after [`Swim::know`]).
    refresh_all: bool,
    /// The config as given; `max_transmissions` is retuned to the group's size.
    config: Config,
    /// Processes heard of during this step (see [`Swim::introduce`]).
    newcomers: Vec<PeerIdentity>,
    /// The sender of the packet being handled.
    direct: Option<SocketAddr>,
    /// Where foca's custom-broadcast handler hands payloads (kept for a rebuilt instance).
    delivered_tx: mpsc::SyncSender<Vec<u8>>,
    /// Seeds the random generator of a rebuilt instance.
    rng: StdRng,
    /// The config to switch to when an active member of another site shows up.
    across_sites: Option<Config>,
}

impl Swim {
    /// A node with `identity` that announces to `seeds` (never its own address) when alone.
    pub(in crate::peer) fn new(
        identity: PeerIdentity,
        config: Config,
        mut rng: StdRng,
        seeds: Vec<SocketAddr>,
        counters: Arc<Counters>,
    ) -> Swim {
        let (delivered_tx, delivered) = mpsc::sync_channel(DELIVERED_CAPACITY);
        let spare = StdRng::seed_from_u64(rng.random());
        let foca = Foca::with_custom_broadcast(
            identity,
            config.clone(),
            rng,
            PostcardCodec,
            Dedupe::new(delivered_tx.clone(), counters.clone()),
        );
        Swim {
            foca,
            runtime: AccumulatingRuntime::new(),
            delivered,
            seeds,
            joined: Vec::new(),
            view: BTreeMap::new(),
            counters,
            held_back: None,
            view_every_step: true,
            touched: Vec::new(),
            refresh_all: false,
            config,
            newcomers: Vec::new(),
            direct: None,
            delivered_tx,
            rng: spare,
            across_sites: None,
        }
    }

    /// Switch to `config` (foca's WAN preset) once an active member with another site label
    /// shows up (`peers.profile = "auto"`).
    pub(in crate::peer) fn across_sites(mut self, config: Config) -> Swim {
        self.across_sites = Some(config);
        self
    }

    /// Rebuilds foca with `config`: the same identity, knowing every member as the old instance
    /// did (state and incarnation). foca fixes its probe period and probe timeout when it is
    /// created (`set_config` refuses them), and its authors call recreating it cheap. What the
    /// old instance had not sent yet is lost: a custom broadcast shows up as a gap at its
    /// receivers, who pull it; a pending probe or suspicion starts over.
    fn rebuild(&mut self, config: Config, out: &mut Step) {
        let members: Vec<Member<PeerIdentity>> =
            self.foca.iter_membership_state().cloned().collect();
        let identity = self.foca.identity().clone();
        // The old instance's timers are dropped (here and, by `reset_timers`, the caller's).
        while self.runtime.to_schedule().is_some() {}
        out.reset_timers = true;
        self.foca = Foca::with_custom_broadcast(
            identity,
            config.clone(),
            StdRng::seed_from_u64(self.rng.random()),
            PostcardCodec,
            Dedupe::new(self.delivered_tx.clone(), self.counters.clone()),
        );
        self.config = config;
        if let Err(e) = self
            .foca
            .apply_many(members.into_iter(), false, &mut self.runtime)
        {
            tracing::debug!(error = %e, "members after a timings switch");
        }
        self.retune();
    }

    /// Switches to the timings across sites when an active member of another site is in view.
    fn switch_across_sites(&mut self, out: &mut Step) {
        let own = &self.foca.identity().site;
        let spans = self
            .foca
            .iter_membership_state()
            .any(|m| m.state() != State::Down && m.id().site != *own);
        if !spans {
            return;
        }
        if let Some(config) = self.across_sites.take() {
            tracing::info!("a member of another site is up: gossip switches to WAN timings");
            self.rebuild(config, out);
            self.counters
                .switched_across_sites
                .store(true, Ordering::Relaxed);
        }
    }

    /// Update the view only for the members foca reports a change of, and publish no list
    /// (see `view_every_step`).
    pub(in crate::peer) fn view_on_change_only(mut self) -> Swim {
        self.view_every_step = false;
        self
    }

    pub(in crate::peer) fn identity(&self) -> &PeerIdentity {
        self.foca.identity()
    }

    /// An authenticated (already opened) packet from the network. Broadcasts new to us are
    /// passed on at once to a few members (foca's `num_indirect_probes`), which makes an update
    /// cross the group in a few network hops instead of a few gossip periods; the relays count
    /// against their transmissions, so this costs no extra bytes.
    pub(in crate::peer) fn on_packet(&mut self, mut plain: Vec<u8>) {
        self.readdress_announce(&mut plain);
        let before = self.foca.custom_broadcast_backlog();
        if let Err(e) = self.foca.handle_data(&plain, &mut self.runtime) {
            tracing::debug!(error = %e, "gossip packet refused");
        }
        if self.foca.custom_broadcast_backlog() > before {
            if let Err(e) = self.foca.broadcast(&mut self.runtime) {
                tracing::debug!(error = %e, "relay");
            }
        }
    }

    /// Runs `f` on foca with the config changed by `tweak`, then restores the config.
    fn with_config(
        &mut self,
        tweak: impl FnOnce(&mut Config),
        f: impl FnOnce(&mut PeerFoca, &mut AccumulatingRuntime<PeerIdentity>),
    ) {
        let mut tweaked = self.config.clone();
        tweak(&mut tweaked);
        if self.foca.set_config(tweaked).is_ok() {
            f(&mut self.foca, &mut self.runtime);
            let _ = self.foca.set_config(self.config.clone());
        } else {
            f(&mut self.foca, &mut self.runtime);
        }
    }

    /// Keeps `max_transmissions` at [`transmissions`] of the group's current size.
    fn retune(&mut self) {
        let want = transmissions(self.foca.num_members() + 1);
        if want != self.config.max_transmissions {
            self.config.max_transmissions = want;
            if let Err(e) = self.foca.set_config(self.config.clone()) {
                tracing::debug!(error = %e, "gossip retune");
            }
        }
    }

    /// A seed is announced to by the address in our config, which may not be the address it
    /// advertises (another IP of the same host); foca would ignore such an `Announce`. The packet
    /// reached our socket and carries the cluster key, so it is meant for us: address it to us.
    fn readdress_announce(&mut self, plain: &mut Vec<u8>) {
        let mut rest: &[u8] = plain;
        let Ok(mut header) = Codec::<PeerIdentity>::decode_header(&mut PostcardCodec, &mut rest)
        else {
            return;
        };
        self.direct = Some(header.src.addr);
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

    /// Timers are due: first requeues a held-back broadcast if the queue drained.
    pub(in crate::peer) fn before_timers(&mut self) {
        if self.held_back.is_some() && self.foca.custom_broadcast_backlog() < MAX_BACKLOG / 2 {
            if let Some(p) = self.held_back.take() {
                self.add_broadcast(p);
            }
        }
    }

    /// One due timer.
    pub(in crate::peer) fn on_timer(&mut self, timer: Timer<PeerIdentity>) {
        if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
            tracing::debug!(error = %e, "gossip timer");
        }
    }

    /// The re-announce tick: while alone, announces to every seed and joined address.
    pub(in crate::peer) fn reannounce(&mut self) {
        if self.foca.num_members() > 0 {
            return;
        }
        for i in 0..self.seeds.len() + self.joined.len() {
            let Some(&seed) = self.seeds.get(i).or_else(|| {
                i.checked_sub(self.seeds.len())
                    .and_then(|j| self.joined.get(j))
            }) else {
                continue;
            };
            if let Err(e) = self
                .foca
                .announce(PeerIdentity::seed(seed), &mut self.runtime)
            {
                tracing::debug!(error = %e, %seed, "announce");
            }
        }
    }

    /// Queues one of our payloads for the group (see [`admit`]); [`Swim::broadcast`] sends.
    pub(in crate::peer) fn add_broadcast(&mut self, payload: Vec<u8>) {
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
        // Our own update gets `OWN_FANOUT` sends at once on top of the usual transmissions.
        let extra = u8::try_from(OWN_FANOUT).unwrap_or(u8::MAX);
        self.with_config(
            |c| c.max_transmissions = c.max_transmissions.saturating_add(extra),
            |foca, _| match foca.add_broadcast(&payload) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!("gossip broadcast dropped: identical payload already sent")
                }
                Err(e) => tracing::warn!(error = %e, "gossip broadcast dropped"),
            },
        );
    }

    /// Sends what is queued to [`OWN_FANOUT`] members at once (after one or more
    /// [`Swim::add_broadcast`]).
    pub(in crate::peer) fn broadcast(&mut self) {
        let fanout = std::num::NonZeroUsize::new(OWN_FANOUT).unwrap_or(std::num::NonZeroUsize::MIN);
        self.with_config(
            |c| c.num_indirect_probes = fanout,
            |foca, runtime| {
                if let Err(e) = foca.broadcast(runtime) {
                    tracing::debug!(error = %e, "broadcast");
                }
            },
        );
    }

    /// A candidate from discovery or a late seed: announce to it unless it is us (`local` is
    /// the bound address) or an active member.
    pub(in crate::peer) fn join(&mut self, addr: SocketAddr, local: SocketAddr) {
        let me = self.foca.identity().addr;
        let member = self
            .foca
            .iter_membership_state()
            .any(|m| m.id().addr == addr && m.state() != State::Down);
        if addr == me || addr == local || member {
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
    }

    /// Starts out knowing `members` as alive without telling anyone (a group that formed
    /// earlier: the simulator's starting point).
    ///
    /// The members are applied [`KNOW_CHUNK`] at a time, foca's notifications drained after each
    /// chunk: its runtime keeps the capacity its queue once needed, and a notification per
    /// member (168 bytes each) would leave every simulated node of a 5 000-node group holding
    /// 1.4 MB for good. The member events are not needed: the next step rebuilds the whole view.
    pub(in crate::peer) fn know(&mut self, members: impl Iterator<Item = PeerIdentity>) {
        let mut members = members.map(Member::alive).peekable();
        while members.peek().is_some() {
            let chunk = members.by_ref().take(KNOW_CHUNK);
            if let Err(e) = self.foca.apply_many(chunk, false, &mut self.runtime) {
                tracing::debug!(error = %e, "known members");
            }
            while let Some(n) = self.runtime.to_notify() {
                self.notice(n);
            }
            self.touched.clear();
        }
        self.refresh_all = true;
    }

    /// Leaves the group cleanly: tells a few members we are Down.
    pub(in crate::peer) fn leave(&mut self) {
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(error = %e, "leave");
        }
    }

    /// Hands over what foca asked for since the last step (into `out`, cleared first).
    pub(in crate::peer) fn step(&mut self, out: &mut Step) {
        out.clear();
        self.retune();
        while let Some(n) = self.runtime.to_notify() {
            self.notice(n);
        }
        let mut newcomers = std::mem::take(&mut self.newcomers);
        // A group that formed before us (`know`) needs no introductions.
        let known = std::mem::take(&mut self.refresh_all);
        if self.view_every_step || known {
            self.touched.clear();
            self.refresh_view(out, &mut newcomers);
        } else {
            let mut touched = std::mem::take(&mut self.touched);
            touched.sort_unstable();
            touched.dedup();
            for id in touched.drain(..) {
                self.refresh_member(id, out, &mut newcomers);
            }
            self.touched = touched;
        }
        if known {
            // Every member was new: not kept, so that the buffer does not stay the group's size.
            newcomers = Vec::new();
        } else {
            self.introduce(&newcomers);
            newcomers.clear();
        }
        self.newcomers = newcomers;
        self.direct = None;
        if self.across_sites.is_some() {
            self.switch_across_sites(out);
        }
        while let Some((dst, data)) = self.runtime.to_send() {
            out.sends.push((dst.addr, data));
        }
        while let Some(t) = self.runtime.to_schedule() {
            out.timers.push(t);
        }
        while let Ok(payload) = self.delivered.try_recv() {
            out.broadcasts.push(payload);
        }
    }

    /// Notes what foca reported: the members to look at again at this step, and log lines.
    fn notice(&mut self, n: OwnedNotification<PeerIdentity>) {
        match n {
            OwnedNotification::MemberUp(p) | OwnedNotification::MemberDown(p) => {
                self.touched.push(p.id)
            }
            OwnedNotification::Rename(a, b) => self.touched.extend([a.id, b.id]),
            OwnedNotification::Rejoin(id) => {
                tracing::info!(identity = ?id, "declared down by the group; rejoined")
            }
            OwnedNotification::Idle => tracing::info!("no other peer is reachable"),
            OwnedNotification::Defunct => tracing::debug!("our identity is down"),
            other => tracing::trace!(notification = ?other, "gossip"),
        }
    }

    /// Announces to each process we just heard of second-hand (a new node, or a restarted
    /// one), so that it hears of us at once: its `Feed` reply aside, it learns our identity from
    /// the packet. Without this a node that joins a large group learns the members only as
    /// they happen to probe it (about one a second whatever the group's size), and pulls their
    /// index entries only then. A process that spoke to us itself knows us already.
    fn introduce(&mut self, newcomers: &[PeerIdentity]) {
        for p in newcomers {
            if Some(p.addr) == self.direct {
                continue;
            }
            if let Err(e) = self.foca.announce(p.clone(), &mut self.runtime) {
                tracing::debug!(error = %e, addr = %p.addr, "introduction");
            }
        }
    }

    /// Rebuilds the per-node view from foca's members; sets `out.view` if it changed and adds
    /// the Up/Down events for the differences.
    fn refresh_view(&mut self, out: &mut Step, newcomers: &mut Vec<PeerIdentity>) {
        let own = self.foca.identity().id;
        let mut next: BTreeMap<NodeId, (MemberInfo, u64)> = BTreeMap::new();
        for m in self.foca.iter_membership_state() {
            let pid = m.id();
            if pid.id == own {
                continue; // a previous process of ours, at another address
            }
            let state = member_state(m.state());
            match next.get(&pid.id) {
                Some((have, bump)) if rank(have.state, *bump) >= rank(state, pid.bump) => {}
                _ => {
                    next.insert(pid.id, (info(pid, state), pid.bump));
                }
            }
        }
        for (id, old) in &self.view {
            if let Some(p) = change(*id, Some(old), next.get(id), out) {
                newcomers.push(p);
            }
        }
        for (id, new) in &next {
            if !self.view.contains_key(id) {
                if let Some(p) = change(*id, None, Some(new), out) {
                    newcomers.push(p);
                }
            }
        }
        let changed = next.len() != self.view.len()
            || next
                .iter()
                .zip(&self.view)
                .any(|((a_id, (a, a_bump)), (b_id, b))| {
                    a_id != b_id || a.state != b.state || *a_bump != b.bump
                });
        if changed {
            out.view = Some(next.values().map(|(info, _)| info.clone()).collect());
        }
        self.view = next.iter().map(|(id, new)| (*id, Seen::of(new))).collect();
    }

    /// Updates the view for node `id` only (foca reported a change of one of its identities),
    /// adding its Up/Down event; publishes no list.
    fn refresh_member(&mut self, id: NodeId, out: &mut Step, newcomers: &mut Vec<PeerIdentity>) {
        if id == self.foca.identity().id {
            return;
        }
        let mut best: Option<(MemberState, u64, &PeerIdentity)> = None;
        for m in self.foca.iter_membership_state() {
            let pid = m.id();
            if pid.id != id {
                continue;
            }
            let state = member_state(m.state());
            if best.is_none_or(|(s, b, _)| rank(s, b) < rank(state, pid.bump)) {
                best = Some((state, pid.bump, pid));
            }
        }
        let new = best.map(|(state, bump, pid)| (info(pid, state), bump));
        if let Some(p) = change(id, self.view.get(&id), new.as_ref(), out) {
            newcomers.push(p);
        }
        match new {
            Some(entry) => self.view.insert(id, Seen::of(&entry)),
            None => self.view.remove(&id),
        };
    }
}

fn member_state(s: State) -> MemberState {
    match s {
        State::Alive => MemberState::Alive,
        State::Suspect => MemberState::Suspect,
        State::Down => MemberState::Down,
    }
}

/// What the view keeps of a member: its liveness and which process it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    state: MemberState,
    bump: u64,
}

impl Seen {
    fn of((info, bump): &(MemberInfo, u64)) -> Self {
        Seen {
            state: info.state,
            bump: *bump,
        }
    }
}

/// One entry per node id: an active identity over a Down one, then the newest.
fn rank(state: MemberState, bump: u64) -> (bool, u64) {
    (state.is_active(), bump)
}

fn info(pid: &PeerIdentity, state: MemberState) -> MemberInfo {
    MemberInfo {
        id: pid.id,
        addr: pid.addr,
        site: pid.site.to_string(),
        state,
    }
}

/// The event for node `id`'s entry going from `old` to `new`, if any: Down when it stops being
/// active, Up when it becomes active or is a new process (a process keeps its address and site
/// for its lifetime: another one is another process). Returns the identity of a process we did
/// not know before (a new node, or a new bump).
fn change(
    id: NodeId,
    old: Option<&Seen>,
    new: Option<&(MemberInfo, u64)>,
    out: &mut Step,
) -> Option<PeerIdentity> {
    let was_active = old.is_some_and(|o| o.state.is_active());
    match new {
        Some((info, bump)) if info.state.is_active() => {
            let new_process = old.is_none_or(|o| o.bump != *bump);
            let up = !was_active || new_process;
            if up {
                tracing::info!(node = %info.id, addr = %info.addr, site = %info.site, "peer up");
                out.members.push(Event::Up(info.clone()));
            }
            new_process.then(|| PeerIdentity {
                id: info.id,
                addr: info.addr,
                site: info.site.as_str().into(),
                bump: *bump,
            })
        }
        _ => {
            if was_active {
                let addr = new.map(|(info, _)| info.addr);
                tracing::info!(node = %id, addr = ?addr, "peer down");
                out.members.push(Event::Down(id));
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_up_when_it_becomes_active_or_is_a_new_process_and_down_when_it_stops() {
        let info = |state| MemberInfo {
            id: NodeId([7; 16]),
            addr: "10.0.0.7:3129".parse().expect("addr"),
            site: "lab".into(),
            state,
        };
        let seen = |state, bump| Seen { state, bump };
        use MemberState::{Alive, Down, Suspect};
        // (old, new, Up / Down / nothing, a new process to introduce)
        let cases = [
            (None, Some((Alive, 1)), "up", true),
            (Some((Alive, 1)), Some((Alive, 1)), "", false),
            (Some((Alive, 1)), Some((Suspect, 1)), "", false),
            (Some((Suspect, 1)), Some((Alive, 1)), "", false),
            (Some((Alive, 1)), Some((Alive, 2)), "up", true),
            (Some((Down, 1)), Some((Alive, 1)), "up", false),
            (Some((Down, 1)), Some((Alive, 2)), "up", true),
            (Some((Alive, 1)), Some((Down, 1)), "down", false),
            (Some((Suspect, 1)), None, "down", false),
            (Some((Down, 1)), None, "", false),
            (None, Some((Down, 1)), "", false),
        ];
        for (old, new, event, introduced) in cases {
            let old = old.map(|(s, b)| seen(s, b));
            let new = new.map(|(s, b)| (info(s), b));
            let mut out = Step::default();
            let newcomer = change(NodeId([7; 16]), old.as_ref(), new.as_ref(), &mut out);
            let got = match out.members.as_slice() {
                [] => "",
                [Event::Up(m)] if m.id == NodeId([7; 16]) => "up",
                [Event::Down(id)] if *id == NodeId([7; 16]) => "down",
                _ => "other",
            };
            assert_eq!(got, event, "{old:?} → {new:?}");
            assert_eq!(newcomer.is_some(), introduced, "{old:?} → {new:?}");
        }
    }
}
