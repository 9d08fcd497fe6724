//! Who holds a port: the process bound to a TCP or UDP address, read from Linux's `/proc`, so
//! that "address in use" can name it. Best effort: `None` wherever it cannot tell (another OS,
//! another user's process). `sockets` is pure; `holder` does the I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`, at most 15 bytes).
    pub name: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {} ({})", self.pid, self.name)
    }
}

/// TCP state `LISTEN` in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// The inodes of the sockets in a `/proc/net/{tcp,tcp6,udp,udp6}` table that keep `addr` from
/// being bound: on the same port, at the same address or where either side is a wildcard, and
/// for TCP only listening ones. Lines that do not parse are skipped.
pub fn sockets(table: &str, proto: Proto, addr: SocketAddr) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            let (ip, port) = parse_local(local)?;
            let clash = port == addr.port()
                && (ip == addr.ip() || ip.is_unspecified() || addr.ip().is_unspecified());
            let bound = proto == Proto::Udp || *state == TCP_LISTEN;
            (clash && bound).then(|| inode.parse().ok()).flatten()
        })
        .filter(|inode| *inode != 0)
        .collect()
}

/// `0100007F:0C38` (IPv4) or 32 hex digits `:PORT` (IPv6): the kernel prints each 32-bit word of
/// the address as a host-order integer, so its native-endian bytes are the address bytes.
fn parse_local(s: &str) -> Option<(IpAddr, u16)> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(b);
            // A v4-mapped address is how a dual-stack socket shows an IPv4 bind.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some((ip, port))
}

/// The process holding `addr` for `proto`, if this machine lets us find out.
#[cfg(target_os = "linux")]
pub fn holder(proto: Proto, addr: SocketAddr) -> Option<Holder> {
    let base = match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    let mut inodes = Vec::new();
    for table in [format!("/proc/net/{base}"), format!("/proc/net/{base}6")] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(sockets(&text, proto, addr));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue; // another user's process
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|target| target.to_str().map(|t| wanted.iter().any(|w| w == t)))
                .unwrap_or(false)
        });
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some(Holder {
                pid,
                name: name.trim().to_owned(),
            });
        }
    }
    None
}

/// The process holding `addr` for `proto`: not known on this OS.
#[cfg(not(target_os = "linux"))]
pub fn holder(_proto: Proto, _addr: SocketAddr) -> Option<Holder> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tables as Linux prints them (x86-64, little-endian).
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0C38 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 00000000:0C39 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0100007F:0C38 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 20 4 30 10 -1
   3: 0200007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1004 1 0000000000000000 100 0 0 10 0
   4: garbage
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0C3A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0C3B 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 100 0 0 10 0
";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn listening_sockets_that_clash_with_an_address() {
        if cfg!(target_endian = "big") {
            return; // the sample tables are little-endian
        }
        let cases: &[(&str, Proto, &str, &[u64])] = &[
            (TCP, Proto::Tcp, "127.0.0.1:3128", &[1001]),
            (TCP, Proto::Tcp, "0.0.0.0:3128", &[1001]),
            (TCP, Proto::Tcp, "127.0.0.2:3128", &[]),
            (TCP, Proto::Tcp, "127.0.0.2:3129", &[1002]),
            (TCP, Proto::Tcp, "127.0.0.2:8080", &[1004]),
            (TCP, Proto::Tcp, "127.0.0.1:8080", &[]),
            // The established connection (state 01) holds no bind; UDP takes any state.
            (TCP, Proto::Udp, "127.0.0.1:3128", &[1001, 1003]),
            (TCP6, Proto::Tcp, "[::1]:3130", &[2001]),
            (TCP6, Proto::Tcp, "10.0.0.1:3130", &[2001]),
            (TCP6, Proto::Tcp, "[::1]:3131", &[2002]),
            (TCP6, Proto::Tcp, "[::2]:3131", &[]),
        ];
        for (table, proto, a, want) in cases {
            assert_eq!(sockets(table, *proto, addr(a)), *want, "{a} {proto:?}");
        }
    }

    #[test]
    fn local_addresses_parse() {
        if cfg!(target_endian = "big") {
            return;
        }
        assert_eq!(
            parse_local("0100007F:0C38"),
            Some((addr("127.0.0.1:3128").ip(), 3128))
        );
        assert_eq!(
            parse_local("0000000000000000FFFF00000100007F:0050"),
            Some((addr("127.0.0.1:80").ip(), 80))
        );
        for bad in [
            "",
            "0100007F",
            "0100007F:",
            "XX00007F:0050",
            "01007F:0050",
            "0100007F:10000",
        ] {
            assert_eq!(parse_local(bad), None, "{bad}");
        }
    }
}
