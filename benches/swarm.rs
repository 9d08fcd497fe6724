//! The peer group at scale, simulated (`peercache::peer::sim`: the real membership state machine,
//! index merge, journal and pull rules over a simulated network in virtual time), plus the index's
//! memory per entry and the CPU cost of applying a large catch-up, measured in-process.
//!
//! For each group size (`SWARM_NODES`, default `100,1000,5000`), profile (`SWARM_PROFILES`,
//! default `lan,wan`) and packet loss in % (`SWARM_LOSS`, default `0,1`) it reports:
//! - gossip bytes per node per second at rest, and while the group advertises `SWARM_RATE`
//!   updates per second in total (default 10, each from a random node);
//! - the time for those updates to take effect at 50 % / 99 % / 100 % of the nodes (mean over
//!   the updates; 100 %: the worst);
//! - the time for the others to declare a killed node Down and drop its entries (50 % / 100 %);
//! - a partition that cuts a site of `SWARM_CUT` nodes (default 50; at most half the group) off
//!   the rest for longer than the suspicion timeout, with updates on both sides, then heals: the
//!   time until every node sees every member and holds every update again;
//! - a new node joining through one seed while the group holds `SWARM_ENTRIES` entries in total
//!   (default 1 000 000, spread over the nodes): the time until it knows every member, and until
//!   its index holds every entry (transfers modelled at the profile's bandwidth and page cost).
//!
//! `SWARM_SEED` (default 1) seeds everything: the same seed gives the same table.
//! Each row prints its phases to stderr as they end (wall time, heap, resident memory) and the
//! process stops when it is resident past `SWARM_MAX_RSS_MB` (default 14 000).
//! `SWARM_ONLY=memory` runs only the index-memory section (`SWARM_ONLY=sim`: only the simulation).
//! Run: `cargo bench --bench swarm`; e.g. `SWARM_NODES=1000 SWARM_PROFILES=lan cargo bench --bench swarm`.

mod common;
mod swarm_real;

use std::alloc::System;
use std::time::{Duration, Instant};

use peercache::peer::index::Index;
use peercache::peer::membership::Timings;
use peercache::peer::sim::{Network, Sim, SimConfig, Spread};
use peercache::peer::wire::{IndexReply, NodeId, Update};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn have(i: u64) -> Update {
    let key = *blake3::hash(&i.to_le_bytes()).as_bytes();
    Update::Have {
        key,
        hash: *blake3::hash(&key).as_bytes(),
        len: 1 << 20,
        fresh_until: 1_900_000_000,
    }
}

fn secs(d: Option<Duration>) -> String {
    match d {
        Some(d) if d.as_secs_f64() >= 10.0 => format!("{:.1} s", d.as_secs_f64()),
        Some(d) if d.as_secs_f64() >= 1.0 => format!("{:.2} s", d.as_secs_f64()),
        Some(d) if d.as_secs_f64() >= 0.1 => format!("{:.0} ms", d.as_secs_f64() * 1000.0),
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1000.0),
        None => "never".into(),
    }
}

/// Resident memory of this process (`/proc/self/statm`), in bytes; 0 where unknown.
fn resident() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Bytes the allocator holds now (allocated minus freed since the start).
fn heap() -> u64 {
    let s = GLOBAL.stats();
    (s.bytes_allocated as u64).saturating_sub(s.bytes_deallocated as u64)
}

/// Prints a row's progress to stderr (so a long row shows it is alive): the phase, the wall
/// time, the heap and the resident memory; stops the process if it is resident past
/// `SWARM_MAX_RSS_MB` (default 14 000: the VM is shared), the row's figures so far with it.
struct Progress {
    label: String,
    wall: Instant,
    max_rss: u64,
    nodes: usize,
    /// When the last line was printed.
    last: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(label: String, nodes: usize) -> Self {
        Progress {
            label,
            wall: Instant::now(),
            max_rss: knob("SWARM_MAX_RSS_MB", 14_000) * 1_000_000,
            nodes,
            last: std::cell::Cell::new(Instant::now()),
        }
    }

    /// [`Progress::phase`] at most every 30 s of wall time, from inside a long phase.
    fn tick(&self, what: &str, sim: &Sim) {
        if self.last.get().elapsed() >= Duration::from_secs(30) {
            self.phase(what, sim);
        }
    }

    fn phase(&self, what: &str, sim: &Sim) {
        self.last.set(Instant::now());
        let (heap, rss) = (heap(), resident());
        eprintln!(
            "[{}] {what}: wall {:.0} s, virtual {:.1} s, {} events, gossip sent {:.1} MB, heap {:.2} GB ({:.0} KB per node), resident {:.2} GB",
            self.label,
            self.wall.elapsed().as_secs_f64(),
            sim.now().as_secs_f64(),
            sim.totals().events,
            sim.totals().gossip_sent as f64 / 1e6,
            heap as f64 / 1e9,
            heap as f64 / 1e3 / self.nodes as f64,
            rss as f64 / 1e9,
        );
        if rss > self.max_rss {
            eprintln!("[{}] resident past SWARM_MAX_RSS_MB: stopped", self.label);
            std::process::exit(2);
        }
    }
}

fn kib(bytes_per_s: f64) -> String {
    format!("{:.2} KiB/s", bytes_per_s / 1024.0)
}

struct Profile {
    name: &'static str,
    timings: Timings,
    network: Network,
    /// How long the group runs at rest, and how long updates are advertised.
    window: Duration,
    /// How long a partition lasts (longer than the suspicion timeout).
    partition: Duration,
    /// Longest wait for any one figure.
    limit: Duration,
}

fn profile(name: &str) -> Option<Profile> {
    match name {
        "lan" => Some(Profile {
            name: "LAN",
            timings: Timings::lan(),
            network: Network::lan(),
            window: Duration::from_secs(10),
            partition: Duration::from_secs(15),
            limit: Duration::from_secs(120),
        }),
        "wan" => Some(Profile {
            name: "WAN",
            timings: Timings::wan(),
            network: Network::wan(),
            window: Duration::from_secs(20),
            partition: Duration::from_secs(60),
            limit: Duration::from_secs(300),
        }),
        _ => None,
    }
}

/// One row of the table.
struct Row {
    rest: f64,
    busy: f64,
    spread: (Option<Duration>, Option<Duration>, Option<Duration>),
    missed: usize,
    down: Spread,
    heal: Option<Duration>,
    join_members: Option<Duration>,
    join_entries: Option<Duration>,
    wall: Duration,
}

fn run(
    nodes: usize,
    p: &Profile,
    loss: f64,
    seed: u64,
    rate: u64,
    entries: u64,
    cut: usize,
) -> Row {
    let wall = Instant::now();
    let cfg = SimConfig {
        seed,
        ..SimConfig::new(nodes, p.timings.clone(), p.network.clone().with_loss(loss))
    };
    let progress = Progress::new(format!("{nodes} {} {} %", p.name, loss * 100.0), nodes);
    let mut sim = Sim::new(cfg);
    progress.phase("group built", &sim);
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut pick = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    sim.run_for(p.timings.probe_period * 3);
    progress.phase("started", &sim);

    // At rest.
    let before = sim.totals().gossip_sent;
    sim.run_for(p.window);
    progress.phase("at rest", &sim);
    let rest = (sim.totals().gossip_sent - before) as f64 / nodes as f64 / p.window.as_secs_f64();

    // Updates at `rate` per second from random nodes.
    let before = sim.totals().gossip_sent;
    let every = Duration::from_secs(1) / u32::try_from(rate.max(1)).unwrap_or(1);
    let mut probes = Vec::new();
    let start = sim.now();
    let mut next_key = 1u64 << 40;
    while sim.now() < start + p.window {
        let origin = pick(nodes);
        next_key += 1;
        probes.push(sim.advertise(origin, have(next_key)));
        sim.run_for(every);
        progress.tick("updates", &sim);
    }
    let busy = (sim.totals().gossip_sent - before) as f64 / nodes as f64 / p.window.as_secs_f64();
    sim.run_for(p.timings.suspect_to_down_after);
    let spreads: Vec<Spread> = probes.iter().map(|id| sim.spread(*id)).collect();
    let mean = |f: fn(&Spread) -> Option<Duration>| -> Option<Duration> {
        let v: Option<Vec<Duration>> = spreads.iter().map(f).collect();
        v.map(|v| v.iter().sum::<Duration>() / u32::try_from(v.len().max(1)).unwrap_or(1))
    };
    let worst = spreads
        .iter()
        .map(|s| s.p100)
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max());
    let missed = spreads.iter().map(|s| s.targets - s.reached).sum();
    let spread = (mean(|s| s.p50), mean(|s| s.p99), worst);
    progress.phase("updates spread", &sim);

    // A node dies.
    let victim = pick(nodes);
    sim.advertise(victim, have(1));
    sim.run_for(Duration::from_secs(1));
    let killed_at = sim.now();
    sim.kill(victim);
    let deadline = sim.now() + p.limit;
    sim.run_until_every(deadline, Duration::from_millis(100), |s| {
        progress.tick("killed node", s);
        s.down_spread(victim, killed_at).p100.is_some()
    });
    let down = sim.down_spread(victim, killed_at);
    progress.phase("killed node dropped", &sim);

    // A site is cut off, then back.
    let cut = cut.clamp(1, nodes / 2);
    sim.partition(|i| u8::from(i >= nodes - cut));
    let mut origins = Vec::new();
    let t = sim.now();
    while sim.now() < t + p.partition {
        let o = pick(nodes);
        if o != victim {
            next_key += 1;
            sim.advertise(o, have(next_key));
            origins.push(o);
        }
        sim.run_for(p.partition / 8);
        progress.tick("cut off", &sim);
    }
    progress.phase("cut off", &sim);
    sim.heal();
    let healed = sim.now();
    let deadline = healed + p.limit;
    let converged = sim.run_until_every(deadline, Duration::from_secs(1), |s| {
        progress.tick("healing", s);
        s.converged(&origins)
    });
    let heal = converged.then(|| sim.now() - healed);
    progress.phase("healed", &sim);

    // A new node joins a group holding `entries` entries.
    let per = entries / nodes as u64;
    let mut key = 0;
    for n in 0..nodes {
        if n != victim {
            sim.preload_held(
                n,
                (0..per).map(|_| {
                    key += 1;
                    have(key)
                }),
            );
        }
    }
    progress.phase("preloaded", &sim);
    let want = (nodes - 2) * per as usize; // not the dead node's, nor its own
    let joined_at = sim.now();
    let newbie = sim.join((victim + 1) % nodes);
    let deadline = joined_at + p.limit;
    let mut join_members = None;
    sim.run_until_every(deadline, Duration::from_millis(100), |s| {
        progress.tick("joining", s);
        if join_members.is_none() && s.members(newbie) + 2 >= nodes {
            join_members = Some(s.now() - joined_at);
        }
        s.index_entries(newbie) >= want && join_members.is_some()
    });
    let join_entries = (sim.index_entries(newbie) >= want).then(|| sim.now() - joined_at);
    progress.phase("joined", &sim);

    Row {
        rest,
        busy,
        spread,
        missed,
        down,
        heal,
        join_members,
        join_entries,
        wall: wall.elapsed(),
    }
}

/// Snapshots from `nodes` nodes holding `entries` entries in all, each key held by `per_key`.
fn snapshots(nodes: usize, entries: usize, per_key: usize) -> Vec<IndexReply> {
    let keys = (entries / per_key).max(1);
    let per_node = entries / nodes;
    (0..nodes)
        .map(|n| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(n as u64 + 1).to_le_bytes());
            IndexReply::Snapshot {
                node: NodeId(id),
                epoch: 1,
                seq: 1,
                entries: (0..per_node)
                    .map(|j| have(((n * per_node + j) % keys) as u64))
                    .collect(),
                next: None,
            }
        })
        .collect()
}

/// Bytes held per (key, node) entry by an index that applied `entries` entries from `nodes`
/// nodes (each key held by `per_key` of them), counted by the global allocator (allocated minus
/// freed while building it; the snapshots are built and freed inside the count), and the CPU
/// time of applying the snapshots (built beforehand). `body_holders`: as on a content server
/// (`Index::with_body_holders`).
fn index_memory(
    nodes: usize,
    entries: usize,
    per_key: usize,
    body_holders: bool,
) -> (f64, Duration) {
    let own = NodeId([0xff; 16]);
    let region = Region::new(GLOBAL);
    let mut index = Index::new(own).with_body_holders(body_holders);
    for r in snapshots(nodes, entries, per_key) {
        index.apply_reply(r);
    }
    let stats = region.change();
    let held = stats.bytes_allocated as f64 - stats.bytes_deallocated as f64;
    let per_entry = held / index.entries().max(1) as f64;
    drop(index);

    let replies = snapshots(nodes, entries, per_key);
    let t = Instant::now();
    let mut index = Index::new(own).with_body_holders(body_holders);
    for r in replies {
        index.apply_reply(r);
    }
    let cpu = t.elapsed();
    assert_eq!(index.entries(), nodes * (entries / nodes));
    (per_entry, cpu)
}

/// `--real N`: N real processes beside the simulation of N nodes (LAN, no loss).
fn real(n: usize, seed: u64, rate: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let r = rt.block_on(swarm_real::run(n, dir.path()));
    drop(rt);
    let lan = profile("lan").expect("lan profile");
    let s = run(n, &lan, 0.0, seed, rate, 10_000, 50);
    let mean = |v: Option<Vec<Duration>>| {
        v.map(|v| v.iter().sum::<Duration>() / u32::try_from(v.len().max(1)).unwrap_or(1))
    };
    let p50 = mean(r.reach.iter().map(|t| t.0).collect());
    let p99 = mean(r.reach.iter().map(|t| t.1).collect());
    let worst = r
        .reach
        .iter()
        .map(|t| t.2)
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max());
    println!(
        "## {n} real processes on loopback beside the simulation of {n} nodes (LAN timings)\n"
    );
    println!(
        "Real group formed in {:.1} s; its status pages were polled every {:.0} ms on average, \
         the slowest poll of all {n} taking {} (the resolution of the real propagation times: a \
         node counts from the end of the poll that found the entry).\n",
        r.ready.as_secs_f64(),
        r.poll.as_secs_f64() * 1000.0,
        secs(Some(r.slowest_poll)),
    );
    let sums: Vec<String> = r
        .counters
        .iter()
        .map(|(k, a, b)| format!("{k} {a} → {b}"))
        .collect();
    println!(
        "Real counters summed over the nodes, at rest → once the entries spread: {}.\n",
        sums.join(", ")
    );
    println!("| figure | real ({n} processes) | simulated ({n} nodes) |");
    println!("|---|---|---|");
    println!(
        "| gossip at rest, per node | {} | {} |",
        kib(r.rest),
        kib(s.rest)
    );
    println!(
        "| entry reaches 50 % | {} | {} |",
        secs(p50),
        secs(s.spread.0)
    );
    println!(
        "| entry reaches 99 % | {} | {} |",
        secs(p99),
        secs(s.spread.1)
    );
    println!(
        "| entry reaches 100 % (worst) | {} | {} |",
        secs(worst),
        secs(s.spread.2)
    );
    println!(
        "| killed node dropped by 50 % | {} | {} |",
        secs(r.down.0),
        secs(s.down.p50)
    );
    println!(
        "| killed node dropped by 100 % | {} | {} |",
        secs(r.down.1),
        secs(s.down.p100)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list`
    }
    if let Some(at) = args.iter().position(|a| a == "--real") {
        let n = args.get(at + 1).and_then(|v| v.parse().ok()).unwrap_or(50);
        real(n, knob("SWARM_SEED", 1), knob("SWARM_RATE", 10));
        return;
    }
    let sizes: Vec<usize> = env_list("SWARM_NODES", "100,1000,5000")
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let profiles: Vec<Profile> = env_list("SWARM_PROFILES", "lan,wan")
        .iter()
        .filter_map(|s| profile(s))
        .collect();
    let losses: Vec<f64> = env_list("SWARM_LOSS", "0,1")
        .iter()
        .filter_map(|s| s.parse::<f64>().ok())
        .collect();
    let seed = knob("SWARM_SEED", 1);
    let rate = knob("SWARM_RATE", 10);
    let entries = knob("SWARM_ENTRIES", 1_000_000);
    let cut = knob("SWARM_CUT", 50) as usize;

    let only = std::env::var("SWARM_ONLY").unwrap_or_default();
    if only != "sim" {
        println!("## Index memory and catch-up CPU (in-process, counting allocator)\n");
        println!("| entries | nodes | holders per key | bytes per entry | apply time |");
        println!("|---|---|---|---|---|");
        let rows = [
            (1000, 1, false),
            (1000, 2, false),
            (1000, 4, false),
            (1000, 10, false),
            (100, 1, false),
            (1000, 1, true),
        ];
        for (nodes, per_key, server) in rows {
            let (per, cpu) = index_memory(nodes, entries as usize, per_key, server);
            let server = if server { " (content server)" } else { "" };
            println!(
                "| {entries} | {nodes} | {per_key}{server} | {per:.1} B | {} |",
                secs(Some(cpu))
            );
        }
        println!();
    }
    if only == "memory" {
        return;
    }
    println!("## Simulated group (seed {seed}; {rate} updates/s group-wide; {entries} entries for the join)\n");
    println!(
        "| nodes | profile | loss | gossip at rest | gossip at {rate}/s | reach 50 % | 99 % | 100 % (worst) | missed | dead: dropped by 50 % | 100 % | {cut}-node site cut off: heal | join: members | join: {entries} entries | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        for p in &profiles {
            for &loss in &losses {
                let r = run(n, p, loss / 100.0, seed, rate, entries, cut);
                println!(
                    "| {n} | {} | {loss} % | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} s |",
                    p.name,
                    kib(r.rest),
                    kib(r.busy),
                    secs(r.spread.0),
                    secs(r.spread.1),
                    secs(r.spread.2),
                    r.missed,
                    secs(r.down.p50),
                    secs(r.down.p100),
                    secs(r.heal),
                    secs(r.join_members),
                    secs(r.join_entries),
                    r.wall.as_secs_f64(),
                );
            }
        }
    }
}
