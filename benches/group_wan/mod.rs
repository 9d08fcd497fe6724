//! Paced links, and the WAN between two sites of the group bench: every node's peer port sits
//! behind a gateway of its own (TCP and UDP on another port, which the node advertises), so every
//! member reaches it through that gateway. The gateway tells who is calling — by the sender's
//! address for gossip, by the node id in the `x-peercache-auth` proof of a transfer request — and
//! paces and counts the bytes that go from one site to the other on a shared link per direction;
//! traffic within a site passes untouched.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use peercache::peer::pace;

use super::lock;

/// A link of fixed capacity shared by all transfers over it: the node's own upload cap
/// (`peercache::peer::pace`) on the bench's clock.
pub struct Link {
    link: Mutex<pace::Link>,
    zero: tokio::time::Instant,
}

impl Link {
    pub fn mbit(mbit: u64) -> Link {
        Link {
            link: Mutex::new(pace::Link::new(mbit * 1_000_000 / 8)),
            zero: tokio::time::Instant::now(),
        }
    }

    /// Reserves the link for `n` bytes; returns when they may go (after the bytes reserved
    /// before them, idle time up to `pace::BURST` counting, so that timer lateness does not
    /// slow a lone transfer below the link rate).
    pub fn reserve(&self, n: usize) -> tokio::time::Instant {
        let at = lock(&self.link).reserve(n as u64, self.zero.elapsed());
        self.zero + at
    }
}

/// The WAN between site 0 and site 1.
pub struct Wan {
    /// One link per direction: `[0]` carries site 0 → site 1, `[1]` site 1 → site 0.
    links: [Link; 2],
    /// Transfer bytes (responses of the peer API, bodies and heads) that crossed, per direction.
    crossed: [AtomicU64; 2],
    /// Gossip bytes (UDP payloads) that crossed, both directions.
    pub gossip: AtomicU64,
    /// The site of each node id (hex), learnt once the nodes are up; an unknown caller's
    /// traffic passes unpaced and uncounted (only before `learn`, while the group forms).
    ids: Mutex<HashMap<String, u8>>,
    /// The site of each node's IP address (its gossip socket's).
    ips: HashMap<IpAddr, u8>,
}

impl Wan {
    pub fn new(mbit: u64, ips: HashMap<IpAddr, u8>) -> Arc<Wan> {
        Arc::new(Wan {
            links: [Link::mbit(mbit), Link::mbit(mbit)],
            crossed: [AtomicU64::new(0), AtomicU64::new(0)],
            gossip: AtomicU64::new(0),
            ids: Mutex::new(HashMap::new()),
            ips,
        })
    }

    /// Learns that node `id` is on `site`.
    pub fn learn(&self, id: &str, site: u8) {
        lock(&self.ids).insert(id.to_owned(), site);
    }

    /// Transfer bytes that crossed so far, both directions.
    pub fn crossed(&self) -> u64 {
        self.crossed.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Starts node `site`'s gateway on `at` (TCP and UDP) in front of its peer port `target`.
    pub async fn gateway(self: &Arc<Self>, at: SocketAddr, target: SocketAddr, site: u8) {
        let tcp = TcpListener::bind(at).await.expect("bind gateway (TCP)");
        let udp = UdpSocket::bind(at).await.expect("bind gateway (UDP)");
        let wan = self.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = tcp.accept().await {
                let wan = wan.clone();
                tokio::spawn(async move {
                    let _ = wan.carry(inbound, target, site).await;
                });
            }
        });
        let wan = self.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                if wan.ips.get(&from.ip()).is_some_and(|s| *s != site) {
                    wan.gossip.fetch_add(n as u64, Relaxed);
                }
                let _ = udp.send_to(&buf[..n], target).await;
            }
        });
    }

    /// One transfer connection to the node on `site` at `target`: requests pass as they are,
    /// responses to a caller of the other site go over the paced link and are counted.
    async fn carry(
        &self,
        mut inbound: TcpStream,
        target: SocketAddr,
        site: u8,
    ) -> std::io::Result<()> {
        let mut head = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
            let n = inbound.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        // A connection carries one caller's requests; its site is looked up per chunk, since
        // connections opened while the group formed predate `learn`.
        let caller = caller_id(&head);
        let mut outbound = TcpStream::connect(target).await?;
        outbound.set_nodelay(true)?;
        outbound.write_all(&head).await?;
        let (mut in_read, mut in_write) = inbound.into_split();
        let (mut out_read, mut out_write) = outbound.into_split();
        let requests = tokio::io::copy(&mut in_read, &mut out_write);
        let over = || {
            let id = caller.as_ref()?;
            let theirs = lock(&self.ids).get(id).copied()?;
            (theirs != site).then_some(usize::from(site))
        };
        let responses = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = out_read.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                if let Some(dir) = over() {
                    tokio::time::sleep_until(self.links[dir].reserve(n)).await;
                    self.crossed[dir].fetch_add(n as u64, Relaxed);
                }
                in_write.write_all(&buf[..n]).await?;
            }
        };
        tokio::select! {
            r = requests => r.map(drop),
            r = responses => r,
        }
    }
}

/// The node id in the first `x-peercache-auth` proof of a request head (`<node>.<ms>.<nonce>.<mac>`).
fn caller_id(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("x-peercache-auth")
            .then(|| value.trim().split('.').next().unwrap_or("").to_owned())
    })
}
