//! `peercache status` for people: a short summary of the status JSON (uptime, hit ratio, bytes
//! saved, cache use, members, the last error). Pure; reads only the document it is given, and
//! leaves out what an older node's document lacks.

use std::fmt::Write;

use serde_json::Value;

/// Result names in the order they are shown (the `X-Cache` values, then tunnels).
const RESULTS: [&str; 5] = ["HIT", "MISS", "PEER", "REVALIDATED", "COLLAPSED"];

/// The summary of a status document, a few lines ending with a newline.
pub fn render(s: &Value) -> String {
    let mut out = String::new();
    let counters = &s["counters"];
    let _ = writeln!(
        out,
        "peercache {} at {}, up {}",
        s["version"].as_str().unwrap_or("?"),
        s["listen"].as_str().unwrap_or("?"),
        duration(s["uptime_secs"].as_u64().unwrap_or(0))
    );
    let mut requests: Vec<String> = RESULTS
        .iter()
        .map(|r| {
            format!(
                "{r} {}",
                counters["requests_by_result"][r].as_u64().unwrap_or(0)
            )
        })
        .collect();
    requests.push(format!(
        "TUNNEL {}",
        counters["tunnels"].as_u64().unwrap_or(0)
    ));
    let _ = writeln!(out, "requests:   {}", requests.join("  "));
    let ratio = s["summary"]["hit_ratio"]
        .as_f64()
        .map_or("-".to_owned(), |r| format!("{:.0}%", r * 100.0));
    let _ = writeln!(
        out,
        "hit ratio:  {ratio} (answers without an origin download)   bytes saved: {}",
        bytes(s["summary"]["bytes_saved"].as_u64().unwrap_or(0))
    );
    let cache = &s["cache"];
    let used = cache["used_bytes"]
        .as_u64()
        .or_else(|| cache["weighted_kib"].as_u64().map(|k| k * 1024))
        .unwrap_or(0);
    let max = cache["max_size"].as_u64().unwrap_or(0);
    let share = if max > 0 {
        format!(" ({:.0}%)", used as f64 * 100.0 / max as f64)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "cache:      {} of {}{share}, {} URLs, {} fills in progress",
        bytes(used),
        bytes(max),
        cache["urls"].as_u64().unwrap_or(0),
        s["inflight"].as_u64().unwrap_or(0)
    );
    let errors = counters["errors"].as_u64().unwrap_or(0);
    let last = s["recent_errors"].get(0).map(|e| {
        format!(
            " (last: {} {} {} {}: {})",
            e["status"].as_u64().unwrap_or(0),
            e["kind"].as_str().unwrap_or("?"),
            e["method"].as_str().unwrap_or("?"),
            e["url"].as_str().unwrap_or("?"),
            e["detail"].as_str().unwrap_or("")
        )
    });
    let _ = writeln!(out, "errors:     {errors}{}", last.unwrap_or_default());
    members(&mut out, &s["peers"]);
    out
}

fn members(out: &mut String, peers: &Value) {
    if peers.is_null() {
        let _ = writeln!(out, "group:      peering off");
        return;
    }
    let list = peers["members"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let active = list
        .iter()
        .filter(|m| m["state"].as_str() != Some("down"))
        .count();
    let gossip = peers["gossip_profile"]
        .as_str()
        .map_or(String::new(), |p| format!(" ({p} gossip)"));
    let _ = writeln!(
        out,
        "group:      node {} at site {:?}{gossip}, {active} active member{}",
        short_id(peers["id"].as_str().unwrap_or("?")),
        peers["site"].as_str().unwrap_or("?"),
        if active == 1 { "" } else { "s" }
    );
    let cross = &peers["cross_site"];
    if cross.is_object() {
        let _ = writeln!(
            out,
            "  across sites: received {}  sent {}",
            bytes(cross["bytes_received"].as_u64().unwrap_or(0)),
            bytes(cross["bytes_sent"].as_u64().unwrap_or(0))
        );
    }
    for m in list {
        let rtt = m["rtt_ms"]
            .as_f64()
            .map_or("-".to_owned(), |ms| format!("{ms:.1} ms"));
        let _ = writeln!(
            out,
            "  {}  {}  site {:?}  {}  rtt {rtt}  received {}  sent {}",
            short_id(m["id"].as_str().unwrap_or("?")),
            m["addr"].as_str().unwrap_or("?"),
            m["site"].as_str().unwrap_or("?"),
            m["state"].as_str().unwrap_or("?"),
            bytes(m["bytes_from"].as_u64().unwrap_or(0)),
            bytes(m["bytes_to"].as_u64().unwrap_or(0))
        );
    }
}

/// The first 8 characters of a node id (enough to tell members apart).
fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// `512 B`, `1.5 KiB`, `20.0 MiB`… (powers of 1024, one decimal).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `45s`, `12m 05s`, `3h 02m`, `4d 07h`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_whole_document() {
        let doc = json!({
            "version": "0.1.0", "listen": "10.0.0.11:3128", "uptime_secs": 7384,
            "cache": { "max_size": 10u64 << 30, "used_bytes": 5u64 << 29, "urls": 1234 },
            "inflight": 2,
            "counters": {
                "requests_by_result": { "HIT": 120, "MISS": 30, "PEER": 12, "REVALIDATED": 3, "COLLAPSED": 1 },
                "tunnels": 40, "errors": 5,
            },
            "summary": { "hit_ratio": 0.8192, "bytes_saved": 1288490189 },
            "recent_errors": [
                { "status": 502, "kind": "connect-failed", "method": "GET", "url": "http://x.example/", "detail": "refused" }
            ],
            "peers": {
                "id": "0123456789abcdef0123456789abcdef", "site": "office", "gossip_profile": "wan",
                "cross_site": { "bytes_received": 0, "bytes_sent": 2048 },
                "members": [
                    { "id": "fedcba9876543210fedcba9876543210", "addr": "10.0.0.12:3129", "site": "office",
                      "state": "alive", "rtt_ms": 0.84, "bytes_from": 12582912, "bytes_to": 3072 },
                    { "id": "aaaaaaaabbbbbbbbccccccccdddddddd", "addr": "10.0.0.13:3129", "site": "lab",
                      "state": "down", "rtt_ms": null, "bytes_from": 0, "bytes_to": 0 }
                ]
            }
        });
        assert_eq!(
            render(&doc),
            "peercache 0.1.0 at 10.0.0.11:3128, up 2h 03m\n\
             requests:   HIT 120  MISS 30  PEER 12  REVALIDATED 3  COLLAPSED 1  TUNNEL 40\n\
             hit ratio:  82% (answers without an origin download)   bytes saved: 1.2 GiB\n\
             cache:      2.5 GiB of 10.0 GiB (25%), 1234 URLs, 2 fills in progress\n\
             errors:     5 (last: 502 connect-failed GET http://x.example/: refused)\n\
             group:      node 01234567 at site \"office\" (wan gossip), 1 active member\n\
             \x20 across sites: received 0 B  sent 2.0 KiB\n\
             \x20 fedcba98  10.0.0.12:3129  site \"office\"  alive  rtt 0.8 ms  received 12.0 MiB  sent 3.0 KiB\n\
             \x20 aaaaaaaa  10.0.0.13:3129  site \"lab\"  down  rtt -  received 0 B  sent 0 B\n"
        );
    }

    #[test]
    fn an_older_or_idle_node_leaves_fields_out() {
        let doc = json!({ "version": "0.1.0", "listen": "127.0.0.1:3128", "uptime_secs": 5,
                          "cache": { "max_size": 0, "weighted_kib": 2, "urls": 0 }, "peers": null });
        let text = render(&doc);
        assert!(text.contains("hit ratio:  - "), "{text}");
        assert!(
            text.contains("cache:      2.0 KiB of 0 B, 0 URLs"),
            "{text}"
        );
        assert!(text.contains("errors:     0\n"), "{text}");
        assert!(text.ends_with("group:      peering off\n"), "{text}");
    }

    #[test]
    fn units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
        for (secs, want) in [
            (0, "0s"),
            (59, "59s"),
            (65, "1m 05s"),
            (3600, "1h 00m"),
            (90_061, "1d 01h"),
        ] {
            assert_eq!(duration(secs), want);
        }
    }
}
