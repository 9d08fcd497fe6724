//! The two-site rule of a miss: when a node copies from the group at once, when it claims a key
//! first and for how long, and which in-flight holders it may follow after its claim; pure: no
//! I/O, no clocks.
//!
//! Goal: an object wanted in several sites crosses the WAN to the origin once and between two
//! sites at most once. Holders on our own site always come first (`select::rank`). When only
//! other sites hold a key, the first requester of our site becomes its *relay*: it claims the key
//! (`in_flight`), waits a LAN claim window for its site mates' claims (the lowest id wins, as for
//! a cold object), copies from the other site and is, while it does, an in-flight holder on our
//! site that its mates follow instead of crossing the WAN themselves.
//!
//! Following must never form a cycle (two nodes each waiting for the other's response head). It
//! does not: after a claim window a node follows a complete holder, an in-flight one with a lower
//! id, or a remote in-flight holder that it saw *with a response head* before it claimed (so that
//! holder's source was already chosen and cannot be us). A node that sees a site mate's claim
//! before its own follows it without claiming until its copy has started.

use std::time::Duration;

use super::wire::NodeId;

/// A holder of a key as a miss sees it (one of `Peers::sources`, best first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub node: NodeId,
    /// Same `site` label as this node.
    pub same_site: bool,
    /// Holds the complete body (else it is downloading it: a claim).
    pub complete: bool,
}

/// What a miss does before it asks a holder for a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Before {
    /// A holder on our own site, complete or in flight: copy from the group at once.
    Copy,
    /// Nobody holds it: claim it and wait the group's claim window for competing claims.
    Cold,
    /// Only other sites hold it: we may become our site's relay. When none of them is complete,
    /// first wait for the response head of `probe` (the best in-flight one): a holder with a head
    /// has chosen its own source. Then claim and wait a LAN claim window for site mates.
    Remote { probe: Option<NodeId> },
}

/// The step before any copy, from the holders of the key in rank order.
pub fn before_claim(holders: &[Seen]) -> Before {
    if holders.is_empty() {
        return Before::Cold;
    }
    if holders.iter().any(|h| h.same_site) {
        return Before::Copy;
    }
    let probe = if holders.iter().any(|h| h.complete) {
        None
    } else {
        holders.first().map(|h| h.node)
    };
    Before::Remote { probe }
}

/// After our claim window: whether `me` may follow holder `h`. A complete holder always; an
/// in-flight one when its claim wins the tie-break (a lower id) or when it is one of `vouched`
/// (remote in-flight holders that answered with a response head before we claimed).
pub fn may_follow(h: &Seen, me: NodeId, vouched: &[NodeId]) -> bool {
    h.complete || h.node < me || vouched.contains(&h.node)
}

/// How long a claim on a cold object waits for competing claims: `lan` while every active member
/// shares our site, `wan` (long enough for a claim to cross the WAN) while one does not.
pub fn cold_window(lan: Duration, wan: Duration, other_sites: bool) -> Duration {
    if other_sites {
        wan.max(lan)
    } else {
        lan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u8) -> NodeId {
        NodeId([i; 16])
    }

    fn here(i: u8, complete: bool) -> Seen {
        Seen {
            node: n(i),
            same_site: true,
            complete,
        }
    }

    fn there(i: u8, complete: bool) -> Seen {
        Seen {
            same_site: false,
            ..here(i, complete)
        }
    }

    #[test]
    fn before_claim_table() {
        let cases: Vec<(&str, Vec<Seen>, Before)> = vec![
            ("nobody holds it", vec![], Before::Cold),
            ("a site mate holds it", vec![here(3, true)], Before::Copy),
            ("a site mate fetches it", vec![here(3, false)], Before::Copy),
            (
                "a site mate fetches it, another site holds it",
                vec![here(3, false), there(1, true)],
                Before::Copy,
            ),
            (
                "only another site holds it: claim without a probe",
                vec![there(1, true)],
                Before::Remote { probe: None },
            ),
            (
                "a complete remote copy needs no probe",
                vec![there(1, false), there(2, true)],
                Before::Remote { probe: None },
            ),
            (
                "only remote claims: probe the best one",
                vec![there(4, false), there(2, false)],
                Before::Remote { probe: Some(n(4)) },
            ),
        ];
        for (name, holders, want) in cases {
            assert_eq!(before_claim(&holders), want, "{name}");
        }
    }

    #[test]
    fn may_follow_table() {
        let me = n(5);
        // (name, holder, vouched, may follow)
        let cases: Vec<(&str, Seen, Vec<NodeId>, bool)> = vec![
            ("complete, higher id", here(9, true), vec![], true),
            ("complete remote", there(9, true), vec![], true),
            ("claim with a lower id", here(2, false), vec![], true),
            (
                "remote claim with a lower id",
                there(2, false),
                vec![],
                true,
            ),
            ("claim with a higher id", here(7, false), vec![], false),
            ("remote claim, higher id", there(7, false), vec![], false),
            (
                "remote claim seen with a head",
                there(7, false),
                vec![n(7)],
                true,
            ),
            (
                "another node vouched for",
                there(7, false),
                vec![n(8)],
                false,
            ),
            ("ourselves", here(5, false), vec![], false),
        ];
        for (name, h, vouched, want) in cases {
            assert_eq!(may_follow(&h, me, &vouched), want, "{name}");
        }
    }

    /// Every follow edge after a claim window points to a complete holder, a lower id, or a
    /// holder that had a head before the follower claimed: a cycle of claimants following each
    /// other in their windows cannot form. Checked on every order of claims of four nodes in two
    /// sites, all claiming at once.
    #[test]
    fn simultaneous_claims_in_two_sites_form_no_cycle_and_cross_once() {
        let site = |i: u8| i % 2; // nodes 1, 3 in site 1; 2, 4 in site 0
        let ids = [1u8, 2, 3, 4];
        let mut follows = std::collections::HashMap::new();
        for &me in &ids {
            let mut holders: Vec<Seen> = ids
                .iter()
                .filter(|&&o| o != me)
                .map(|&o| Seen {
                    node: n(o),
                    same_site: site(o) == site(me),
                    complete: false,
                })
                .filter(|h| may_follow(h, n(me), &[]))
                .collect();
            // Rank: same site first, then id (what `select::rank` does with equal RTTs).
            holders.sort_by_key(|h| (!h.same_site, h.node));
            follows.insert(me, holders.first().map(|h| h.node));
        }
        // The lowest id goes to the origin; each site's lowest follows within or crosses once.
        assert_eq!(follows[&1], None);
        assert_eq!(follows[&2], Some(n(1)), "site 0's relay crosses");
        assert_eq!(follows[&3], Some(n(1)), "same site");
        assert_eq!(follows[&4], Some(n(2)), "its site's relay");
        let crossings = follows
            .iter()
            .filter(|(me, to)| to.is_some_and(|to| site(to.0[0]) != site(**me)))
            .count();
        assert_eq!(crossings, 1);
    }

    #[test]
    fn the_cold_window_covers_the_wan_only_with_other_sites() {
        let (lan, wan) = (Duration::from_millis(50), Duration::from_millis(250));
        assert_eq!(cold_window(lan, wan, false), lan);
        assert_eq!(cold_window(lan, wan, true), wan);
        assert_eq!(
            cold_window(wan, lan, true),
            wan,
            "never shorter than the LAN one"
        );
    }
}
