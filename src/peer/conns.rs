//! How many transfer connections the peer port holds, in total and per source address, and the
//! slot guard that gives one back when its connection ends; no I/O (the listener asks before it
//! serves a connection).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Transfer connections served at once, by default.
pub const MAX_CONNS: usize = 512;
/// Transfer connections served at once from one source address, by default: enough for a
/// member's pooled connections under load, or for several members behind one NAT address (a
/// site reached over a WAN), while one address cannot take every slot.
pub const MAX_CONNS_PER_IP: usize = 64;

/// The listener's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub total: usize,
    pub per_ip: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            total: MAX_CONNS,
            per_ip: MAX_CONNS_PER_IP,
        }
    }
}

/// The connections held now.
///
/// Invariant: `total` is the sum of `by_ip`, which has no zero entries; neither exceeds its
/// limit, so the map holds at most `limits.total` addresses.
#[derive(Debug)]
pub struct Conns {
    limits: ConnLimits,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its slot.
#[derive(Debug)]
pub struct ConnSlot {
    conns: Arc<Conns>,
    ip: IpAddr,
}

impl Conns {
    pub fn new(limits: ConnLimits) -> Arc<Conns> {
        Arc::new(Conns {
            limits,
            held: Mutex::new(Held::default()),
        })
    }

    /// A slot for a connection from `ip`, or `None` when the total or that address is at its
    /// limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = held.by_ip.get(&ip).copied().unwrap_or(0);
        if held.total >= self.limits.total || from_ip >= self.limits.per_ip {
            return None;
        }
        held.total += 1;
        held.by_ip.insert(ip, from_ip + 1);
        Some(ConnSlot {
            conns: self.clone(),
            ip,
        })
    }

    /// (connections held, distinct addresses).
    pub fn held(&self) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        (held.total, held.by_ip.len())
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut held = self.conns.held.lock().unwrap_or_else(|p| p.into_inner());
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_address_cannot_take_every_slot_and_slots_come_back() {
        let conns = Conns::new(ConnLimits {
            total: 5,
            per_ip: 2,
        });
        let a: Vec<ConnSlot> = (0..3).filter_map(|_| conns.admit(ip(1))).collect();
        assert_eq!(a.len(), 2, "per address");
        let b: Vec<ConnSlot> = (0..3).filter_map(|_| conns.admit(ip(2))).collect();
        assert_eq!(b.len(), 2);
        let c = conns.admit(ip(3));
        assert!(c.is_some());
        assert!(conns.admit(ip(4)).is_none(), "in total");
        assert_eq!(conns.held(), (5, 3));
        drop(a);
        assert_eq!(
            conns.held(),
            (3, 2),
            "the address with no connection left is forgotten"
        );
        assert!(conns.admit(ip(1)).is_some());
        drop((b, c));
        assert_eq!(conns.held(), (0, 0));
    }
}
