//! The merge: any delivery order, duplicates, gaps, snapshots and restarts end in the in-order
//! state.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::*;
use crate::peer::journal::{Journal, DEFAULT_JOURNAL_CAPACITY};

pub(crate) const OWN: NodeId = NodeId([0xee; 16]);
pub(crate) const E1: u64 = 1_700_000_000_000;
pub(crate) const E2: u64 = E1 + 5_000;

pub(crate) fn n(i: u8) -> NodeId {
    NodeId([i; 16])
}

pub(crate) fn k(i: u8) -> KeyHash {
    [i; 32]
}

pub(crate) fn have(key: u8, body: u8) -> Update {
    Update::Have {
        key: k(key),
        hash: [body; 32],
        len: u64::from(body) * 100,
        fresh_until: 1_800_000_000,
    }
}

pub(crate) fn complete(body: u8) -> HolderState {
    HolderState::Complete {
        body: [body; 16],
        len: u64::from(body) * 100,
        fresh_until: 1_800_000_000,
    }
}

pub(crate) fn inflight(key: u8) -> Update {
    Update::InFlight { key: k(key) }
}

pub(crate) fn dropped(key: u8) -> Update {
    Update::Dropped { key: k(key) }
}

pub(crate) fn tag(node: NodeId, epoch: u64, seq: u64, update: Update) -> Tagged {
    Tagged {
        node,
        epoch,
        seq,
        update,
    }
}

pub(crate) fn holder(node: NodeId, state: HolderState) -> Holder {
    Holder { node, state }
}

/// The whole observable state: every key's holders.
pub(crate) fn dump(ix: &Index) -> BTreeMap<KeyId, Vec<Holder>> {
    ix.dump()
}

#[test]
fn a_later_seq_replaces_the_nodes_state_for_the_key() {
    // (updates of node 1 applied in order, holders of key 1 afterwards)
    let cases: Vec<(Vec<Update>, Vec<Holder>)> = vec![
        (vec![have(1, 5)], vec![holder(n(1), complete(5))]),
        (vec![inflight(1)], vec![holder(n(1), HolderState::InFlight)]),
        (
            vec![inflight(1), have(1, 5)],
            vec![holder(n(1), complete(5))],
        ),
        (vec![have(1, 5), dropped(1)], vec![]),
        (vec![inflight(1), dropped(1)], vec![]),
        (
            vec![have(1, 5), have(1, 6)],
            vec![holder(n(1), complete(6))],
        ),
        (
            vec![have(1, 5), inflight(1)],
            vec![holder(n(1), HolderState::InFlight)],
        ),
        (vec![dropped(1)], vec![]),
        (
            vec![have(1, 5), dropped(1), have(1, 7)],
            vec![holder(n(1), complete(7))],
        ),
        (vec![have(2, 5)], vec![]),
    ];
    for (updates, want) in cases {
        let mut ix = Index::new(OWN);
        for (i, u) in updates.iter().enumerate() {
            let applied = ix.apply(tag(n(1), E1, i as u64 + 1, u.clone()));
            assert_eq!(applied, Applied::Applied(1), "{updates:?}");
        }
        assert_eq!(ix.holders(&k(1)), want, "{updates:?}");
        assert_eq!(
            ix.entries(),
            dump(&ix).values().map(Vec::len).sum::<usize>()
        );
    }
}

#[test]
fn in_order_updates_apply_one_by_one() {
    let mut ix = Index::new(OWN);
    assert_eq!(ix.applied(n(1)), None);
    assert_eq!(ix.apply(tag(n(1), E1, 1, inflight(1))), Applied::Applied(1));
    assert_eq!(ix.apply(tag(n(1), E1, 2, have(2, 9))), Applied::Applied(1));
    assert_eq!(ix.apply(tag(n(1), E1, 3, have(1, 8))), Applied::Applied(1));
    assert_eq!(ix.holders(&k(1)), vec![holder(n(1), complete(8))]);
    assert_eq!(ix.holders(&k(2)), vec![holder(n(1), complete(9))]);
    assert_eq!(ix.holders(&k(3)), vec![]);
    assert_eq!((ix.keys(), ix.entries(), ix.nodes()), (2, 2, 1));
    assert_eq!(ix.applied(n(1)), Some((E1, 3)));
    assert_eq!(ix.gap(n(1)), None);
}

#[test]
fn duplicates_and_old_seqs_are_ignored() {
    let mut ix = Index::new(OWN);
    ix.apply(tag(n(1), E1, 1, have(1, 5)));
    ix.apply(tag(n(1), E1, 2, dropped(1)));
    let before = dump(&ix);
    assert_eq!(ix.apply(tag(n(1), E1, 1, have(1, 5))), Applied::Duplicate);
    assert_eq!(ix.apply(tag(n(1), E1, 2, dropped(1))), Applied::Duplicate);
    // A seq we already passed, even with other content, changes nothing.
    assert_eq!(ix.apply(tag(n(1), E1, 1, have(3, 3))), Applied::Duplicate);
    assert_eq!(ix.apply(tag(n(1), E1, 0, have(3, 3))), Applied::Duplicate);
    assert_eq!(dump(&ix), before);
    assert_eq!(ix.applied(n(1)), Some((E1, 2)));
}

#[test]
fn reordered_updates_are_buffered_then_applied_in_seq_order() {
    let mut ix = Index::new(OWN);
    let gap = Applied::Gap {
        node: n(1),
        epoch: E1,
        since: 0,
    };
    assert_eq!(ix.apply(tag(n(1), E1, 3, dropped(1))), gap);
    assert_eq!(ix.holders(&k(1)), vec![]);
    assert_eq!(ix.gap(n(1)), Some((E1, 0)));
    assert_eq!(ix.apply(tag(n(1), E1, 2, have(1, 5))), gap);
    // The same buffered update again is a duplicate, not a second gap report.
    assert_eq!(ix.apply(tag(n(1), E1, 3, dropped(1))), Applied::Duplicate);
    assert_eq!(ix.apply(tag(n(1), E1, 5, have(2, 2))), gap);
    assert_eq!(ix.apply(tag(n(1), E1, 1, inflight(1))), Applied::Applied(3));
    // 1 InFlight, 2 Have, 3 Dropped: gone, whatever the arrival order.
    assert_eq!(ix.holders(&k(1)), vec![]);
    assert_eq!(ix.holders(&k(2)), vec![]);
    assert_eq!(ix.applied(n(1)), Some((E1, 3)));
    assert_eq!(ix.gap(n(1)), Some((E1, 3)));
    assert_eq!(ix.apply(tag(n(1), E1, 4, inflight(2))), Applied::Applied(2));
    assert_eq!(ix.holders(&k(2)), vec![holder(n(1), complete(2))]);
    assert_eq!(ix.gap(n(1)), None);
}

#[test]
fn a_gap_is_filled_by_pulling_the_journal() {
    let mut journal = Journal::new(n(1), E1, DEFAULT_JOURNAL_CAPACITY);
    let sent: Vec<Tagged> = [have(1, 1), have(2, 2), dropped(1), inflight(3), have(3, 3)]
        .into_iter()
        .map(|u| journal.record(u))
        .collect();
    let mut ix = Index::new(OWN);
    assert_eq!(ix.apply(sent[0].clone()), Applied::Applied(1));
    // 2 and 3 are lost.
    let gap = Applied::Gap {
        node: n(1),
        epoch: E1,
        since: 1,
    };
    assert_eq!(ix.apply(sent[3].clone()), gap);
    assert_eq!(ix.apply(sent[4].clone()), gap);
    let reply = journal.since_in(E1, 1);
    assert!(matches!(&reply, IndexReply::Updates { updates, .. } if updates.len() == 4));
    // 2 and 3 take effect, then buffered 4 and 5; the reply's own 4 and 5 are duplicates.
    assert_eq!(ix.apply_reply(reply), 4);
    assert_eq!(ix.applied(n(1)), Some((E1, 5)));
    assert_eq!(ix.gap(n(1)), None);
    assert_eq!(ix.holders(&k(1)), vec![]);
    assert_eq!(ix.holders(&k(2)), vec![holder(n(1), complete(2))]);
    assert_eq!(ix.holders(&k(3)), vec![holder(n(1), complete(3))]);
    // Pulling again changes nothing.
    assert_eq!(ix.apply_reply(journal.since_in(E1, 5)), 0);
    assert_eq!(ix.apply_reply(journal.since_in(E1, 0)), 0);
}

#[test]
fn a_snapshot_replaces_the_nodes_entries_then_applies_buffered_updates() {
    let mut ix = Index::new(OWN);
    ix.apply(tag(n(1), E1, 1, have(1, 1)));
    ix.apply(tag(n(1), E1, 2, have(2, 2)));
    ix.apply(tag(n(2), E1, 1, have(1, 7)));
    // Updates 12 and 13 arrive before the snapshot taken at 11; 11 itself is buffered too.
    assert!(matches!(
        ix.apply(tag(n(1), E1, 11, have(9, 9))),
        Applied::Gap { .. }
    ));
    assert!(matches!(
        ix.apply(tag(n(1), E1, 12, have(4, 4))),
        Applied::Gap { .. }
    ));
    assert!(matches!(
        ix.apply(tag(n(1), E1, 13, dropped(3))),
        Applied::Gap { .. }
    ));
    let snapshot = IndexReply::Snapshot {
        node: n(1),
        epoch: E1,
        seq: 11,
        entries: vec![have(3, 3), inflight(5), dropped(6)],
        next: None,
    };
    // 2 entries installed + 2 buffered updates (12, 13) applied.
    assert_eq!(ix.apply_reply(snapshot.clone()), 4);
    assert_eq!(ix.applied(n(1)), Some((E1, 13)));
    assert_eq!(ix.gap(n(1)), None);
    assert_eq!(ix.holders(&k(1)), vec![holder(n(2), complete(7))]);
    assert_eq!(ix.holders(&k(2)), vec![]);
    assert_eq!(ix.holders(&k(3)), vec![]);
    assert_eq!(ix.holders(&k(4)), vec![holder(n(1), complete(4))]);
    assert_eq!(ix.holders(&k(5)), vec![holder(n(1), HolderState::InFlight)]);
    assert_eq!(ix.holders(&k(6)), vec![]);
    assert_eq!(ix.holders(&k(9)), vec![]);
    assert_eq!((ix.keys(), ix.entries(), ix.nodes()), (3, 3, 2));
    // The same or an older snapshot is ignored.
    let before = dump(&ix);
    assert_eq!(ix.apply_reply(snapshot), 0);
    let old = IndexReply::Snapshot {
        node: n(1),
        epoch: E1,
        seq: 3,
        entries: vec![],
        next: None,
    };
    assert_eq!(ix.apply_reply(old), 0);
    assert_eq!(dump(&ix), before);
}

#[test]
fn a_new_epoch_resets_the_node_and_an_old_one_is_stale() {
    let mut ix = Index::new(OWN);
    ix.apply(tag(n(1), E1, 1, have(1, 1)));
    ix.apply(tag(n(1), E1, 2, have(2, 2)));
    ix.apply(tag(n(2), E1, 1, have(1, 7)));
    // Restarted process, first update lost: its old entries go at once.
    let gap = Applied::Gap {
        node: n(1),
        epoch: E2,
        since: 0,
    };
    assert_eq!(ix.apply(tag(n(1), E2, 2, have(3, 3))), gap);
    assert_eq!(ix.holders(&k(1)), vec![holder(n(2), complete(7))]);
    assert_eq!(ix.holders(&k(2)), vec![]);
    assert_eq!(ix.applied(n(1)), Some((E2, 0)));
    assert_eq!(ix.apply(tag(n(1), E2, 1, have(2, 8))), Applied::Applied(2));
    // Late gossip from the previous process changes nothing.
    let before = dump(&ix);
    assert_eq!(ix.apply(tag(n(1), E1, 3, have(4, 4))), Applied::Duplicate);
    let stale_updates = IndexReply::Updates {
        node: n(1),
        epoch: E1,
        updates: vec![tag(n(1), E1, 3, have(4, 4))],
    };
    let stale_snapshot = IndexReply::Snapshot {
        node: n(1),
        epoch: E1,
        seq: 9,
        entries: vec![have(4, 4)],
        next: None,
    };
    assert_eq!(ix.apply_reply(stale_updates), 0);
    assert_eq!(ix.apply_reply(stale_snapshot), 0);
    assert_eq!(dump(&ix), before);
    assert_eq!(ix.applied(n(1)), Some((E2, 2)));
    // A new epoch seen first in a snapshot resets too.
    let newer = IndexReply::Snapshot {
        node: n(1),
        epoch: E2 + 1,
        seq: 1,
        entries: vec![have(6, 6)],
        next: None,
    };
    assert_eq!(ix.apply_reply(newer), 1);
    assert_eq!(ix.holders(&k(2)), vec![]);
    assert_eq!(ix.holders(&k(6)), vec![holder(n(1), complete(6))]);
    assert_eq!(ix.applied(n(1)), Some((E2 + 1, 1)));
}

#[test]
fn an_updates_reply_from_a_new_epoch_that_does_not_connect_leaves_a_gap() {
    let mut ix = Index::new(OWN);
    ix.apply(tag(n(1), E1, 1, have(1, 1)));
    let reply = IndexReply::Updates {
        node: n(1),
        epoch: E2,
        updates: vec![tag(n(1), E2, 2, have(2, 2)), tag(n(1), E2, 3, have(3, 3))],
    };
    assert_eq!(ix.apply_reply(reply), 0);
    assert_eq!(ix.holders(&k(1)), vec![]);
    assert_eq!(ix.gap(n(1)), Some((E2, 0)));
}

#[test]
fn an_updates_reply_ignores_updates_of_another_node_or_epoch() {
    let mut ix = Index::new(OWN);
    let reply = IndexReply::Updates {
        node: n(1),
        epoch: E1,
        updates: vec![
            tag(n(2), E1, 1, have(2, 2)),
            tag(n(1), E2, 1, have(3, 3)),
            tag(OWN, E1, 1, have(4, 4)),
            tag(n(1), E1, 1, have(1, 1)),
        ],
    };
    assert_eq!(ix.apply_reply(reply), 1);
    assert_eq!(ix.keys(), 1);
    assert_eq!(ix.holders(&k(1)), vec![holder(n(1), complete(1))]);
    assert_eq!(ix.applied(n(2)), None);
    assert_eq!(ix.applied(n(1)), Some((E1, 1)));
}

#[test]
fn a_dead_node_loses_its_entries_and_comes_back_through_a_pull() {
    let mut ix = Index::new(OWN);
    ix.apply(tag(n(1), E1, 1, have(1, 1)));
    ix.apply(tag(n(1), E1, 2, inflight(2)));
    ix.apply(tag(n(2), E1, 1, have(1, 7)));
    assert_eq!(ix.remove_node(n(1)), 2);
    assert_eq!(ix.holders(&k(1)), vec![holder(n(2), complete(7))]);
    assert_eq!(ix.holders(&k(2)), vec![]);
    assert_eq!((ix.keys(), ix.entries(), ix.nodes()), (1, 1, 1));
    assert_eq!(ix.applied(n(1)), None);
    assert_eq!(ix.remove_node(n(1)), 0);
    assert_eq!(ix.remove_node(n(9)), 0);
    // It was only suspected: its next update shows what we lack.
    assert_eq!(
        ix.apply(tag(n(1), E1, 3, have(3, 3))),
        Applied::Gap {
            node: n(1),
            epoch: E1,
            since: 0
        }
    );
}

#[test]
fn only_a_whole_snapshot_is_applied() {
    let mut ix = Index::new(OWN);
    ix.apply(tag(n(1), E1, 1, have(1, 1)));
    let page = |next| IndexReply::Snapshot {
        node: n(1),
        epoch: E1,
        seq: 5,
        entries: vec![have(2, 2)],
        next,
    };
    assert_eq!(
        ix.apply_reply(page(Some(k(2)))),
        0,
        "a page with more to come"
    );
    assert_eq!(ix.holders(&k(1)), vec![holder(n(1), complete(1))]);
    assert_eq!(ix.applied(n(1)), Some((E1, 1)));
    assert_eq!(ix.apply_reply(page(None)), 1);
    assert_eq!(ix.holders(&k(1)), vec![]);
    assert_eq!(ix.holders(&k(2)), vec![holder(n(1), complete(2))]);
}

#[test]
fn the_nodes_tracked_are_bounded_and_refusals_counted() {
    let mut ix = Index::new(OWN);
    let node = |i: usize| NodeId((i as u128).to_le_bytes());
    for i in 1..=MAX_NODES {
        assert_eq!(
            ix.apply(tag(node(i), E1, 1, have(1, 1))),
            Applied::Applied(1)
        );
    }
    assert_eq!(ix.nodes(), MAX_NODES);
    let stranger = node(MAX_NODES + 1);
    assert_eq!(ix.apply(tag(stranger, E1, 1, have(2, 2))), Applied::Refused);
    let snapshot = IndexReply::Snapshot {
        node: stranger,
        epoch: E1,
        seq: 3,
        entries: vec![have(2, 2)],
        next: None,
    };
    assert_eq!(ix.apply_reply(snapshot), 0);
    assert_eq!(ix.holders(&k(2)), vec![]);
    assert_eq!(ix.refused(), 2);
    // Known nodes go on; a node that leaves makes room.
    assert_eq!(
        ix.apply(tag(node(1), E1, 2, have(3, 3))),
        Applied::Applied(1)
    );
    ix.remove_node(node(2));
    assert_eq!(
        ix.apply(tag(stranger, E1, 1, have(2, 2))),
        Applied::Applied(1)
    );
    assert_eq!(ix.refused(), 2);
}

#[test]
fn own_updates_are_ignored() {
    let mut ix = Index::new(OWN);
    assert_eq!(ix.apply(tag(OWN, E1, 1, have(1, 1))), Applied::Duplicate);
    assert_eq!(ix.apply(tag(OWN, E1, 5, have(1, 1))), Applied::Duplicate);
    let updates = IndexReply::Updates {
        node: OWN,
        epoch: E1,
        updates: vec![tag(OWN, E1, 1, have(1, 1))],
    };
    let snapshot = IndexReply::Snapshot {
        node: OWN,
        epoch: E1,
        seq: 1,
        entries: vec![have(1, 1)],
        next: None,
    };
    assert_eq!(ix.apply_reply(updates), 0);
    assert_eq!(ix.apply_reply(snapshot), 0);
    assert_eq!(ix.remove_node(OWN), 0);
    assert_eq!((ix.keys(), ix.entries(), ix.nodes()), (0, 0, 0));
    assert_eq!(ix.applied(OWN), None);
}

#[test]
fn holders_of_one_key_from_different_nodes_coexist_in_node_order() {
    let mut ix = Index::new(OWN);
    ix.apply(tag(n(3), E1, 1, inflight(1)));
    ix.apply(tag(n(1), E2, 1, have(1, 5)));
    ix.apply(tag(n(2), E1, 1, have(1, 6)));
    assert_eq!(
        ix.holders(&k(1)),
        vec![
            holder(n(1), complete(5)),
            holder(n(2), complete(6)),
            holder(n(3), HolderState::InFlight),
        ]
    );
    ix.apply(tag(n(2), E1, 2, dropped(1)));
    assert_eq!(ix.holders(&k(1)).len(), 2);
    assert_eq!((ix.keys(), ix.entries(), ix.nodes()), (1, 2, 3));
}

#[test]
fn the_buffer_is_bounded_and_a_pull_still_catches_up() {
    let mut journal = Journal::new(n(1), E1, 2 * MAX_BUFFERED_PER_NODE);
    let sent: Vec<Tagged> = (0..MAX_BUFFERED_PER_NODE + 10)
        .map(|i| journal.record(have((i % 200) as u8, (i % 251) as u8)))
        .collect();
    let mut ix = Index::new(OWN);
    for t in &sent[1..] {
        assert!(matches!(ix.apply(t.clone()), Applied::Gap { since: 0, .. }));
    }
    assert_eq!(ix.pending(n(1)), MAX_BUFFERED_PER_NODE);
    assert_eq!(ix.overflowed(), 9, "counted");
    assert_eq!(
        ix.apply(sent[0].clone()),
        Applied::Applied(1 + MAX_BUFFERED_PER_NODE)
    );
    // The 9 updates that did not fit in the buffer come with the pull.
    let since = MAX_BUFFERED_PER_NODE as u64 + 1;
    assert_eq!(ix.gap(n(1)), None);
    assert_eq!(ix.apply_reply(journal.since(since)), 9);
    let mut truth = Index::new(OWN);
    truth.apply_reply(journal.since_in(0, 0));
    assert_eq!(dump(&ix), dump(&truth));
}

#[test]
fn extreme_seqs_do_not_panic() {
    let mut ix = Index::new(OWN);
    let top = tag(n(1), u64::MAX, u64::MAX, have(1, 1));
    assert!(matches!(ix.apply(top.clone()), Applied::Gap { .. }));
    let snapshot = IndexReply::Snapshot {
        node: n(1),
        epoch: u64::MAX,
        seq: u64::MAX - 1,
        entries: vec![],
        next: None,
    };
    assert_eq!(ix.apply_reply(snapshot), 1);
    assert_eq!(ix.apply(top), Applied::Duplicate);
    let snapshot = IndexReply::Snapshot {
        node: n(1),
        epoch: u64::MAX,
        seq: u64::MAX,
        entries: vec![have(2, 2)],
        next: None,
    };
    assert_eq!(ix.apply_reply(snapshot), 0);
    assert_eq!(ix.holders(&k(1)), vec![holder(n(1), complete(1))]);
    assert_eq!(ix.applied(n(1)), Some((u64::MAX, u64::MAX)));
    let journal = Journal::new(n(2), 1, 4);
    assert!(matches!(
        journal.since(u64::MAX),
        IndexReply::Snapshot { .. }
    ));
}

/// Random updates from three nodes (one of which may restart), delivered shuffled with
/// duplicates, or with losses followed by one pull per node: always the in-order state.
#[test]
fn any_interleaving_with_duplicates_ends_in_the_in_order_state() {
    let mut rng = StdRng::seed_from_u64(0x9ee2_cac4e);
    let ids = [n(1), n(2), n(3)];
    // (Updates, Snapshot) replies used by the pulls: both paths must be exercised.
    let mut replies = (0, 0);
    let mut restarts = 0;
    for round in 0..60 {
        let mut journals: Vec<Journal> = ids.iter().map(|id| Journal::new(*id, E1, 8)).collect();
        let mut sent = Vec::new();
        for _ in 0..rng.random_range(1..200) {
            let i = rng.random_range(0..ids.len());
            if rng.random_bool(0.01) {
                let epoch = journals[i].epoch() + rng.random_range(1..1000);
                journals[i] = Journal::new(ids[i], epoch, 8);
                restarts += 1;
            }
            let key = rng.random_range(0..6u8);
            let update = match rng.random_range(0..3) {
                0 => have(key, rng.random()),
                1 => inflight(key),
                _ => dropped(key),
            };
            sent.push(journals[i].record(update));
        }

        let mut in_order = Index::new(OWN);
        for t in &sent {
            assert!(matches!(in_order.apply(t.clone()), Applied::Applied(1)));
        }
        let mut truth = Index::new(OWN);
        for journal in &journals {
            truth.apply_reply(journal.since_in(0, 0));
        }
        let want = dump(&in_order);
        assert_eq!(dump(&truth), want, "round {round}: journals disagree");

        let mut delivered = sent.clone();
        for t in &sent {
            if rng.random_bool(0.3) {
                delivered.push(t.clone());
            }
        }
        delivered.shuffle(&mut rng);

        let mut shuffled = Index::new(OWN);
        for t in &delivered {
            shuffled.apply(t.clone());
        }
        assert_eq!(dump(&shuffled), want, "round {round}: shuffled");

        let mut lossy = Index::new(OWN);
        for t in delivered.iter().filter(|_| rng.random_bool(0.7)) {
            lossy.apply(t.clone());
        }
        for (node, journal) in ids.iter().zip(&journals) {
            let (epoch, since) = lossy.applied(*node).unwrap_or((0, 0));
            let reply = journal.since_in(epoch, since);
            match &reply {
                IndexReply::Updates { .. } => replies.0 += 1,
                IndexReply::Snapshot { .. } => replies.1 += 1,
            }
            lossy.apply_reply(reply);
        }
        assert_eq!(dump(&lossy), want, "round {round}: lossy then pulled");

        for (&node, journal) in ids.iter().zip(&journals) {
            let head = Some((journal.epoch(), journal.seq()));
            // A node that sent nothing is unknown unless pulled from.
            let sent_any = in_order.applied(node).is_some();
            assert_eq!(sent_any, journal.seq() > 0, "round {round}");
            assert_eq!(
                shuffled.applied(node),
                in_order.applied(node),
                "round {round}"
            );
            assert_eq!(lossy.applied(node), head, "round {round}");
            assert_eq!(shuffled.gap(node), None, "round {round}");
            assert_eq!(lossy.gap(node), None, "round {round}");
        }
    }
    assert!(replies.0 > 10 && replies.1 > 10, "{replies:?}");
    assert!(restarts > 5, "{restarts}");
}

#[test]
fn the_holders_of_a_key_may_hold_different_bodies_and_each_is_freed_with_its_hold() {
    let mut ix = Index::new(OWN);
    // Three nodes hold body 5 under key 1: the key's own body, kept once in its record.
    ix.apply(tag(n(1), E1, 1, have(1, 5)));
    ix.apply(tag(n(2), E1, 1, have(1, 5)));
    ix.apply(tag(n(3), E1, 1, have(1, 5)));
    assert_eq!((ix.keys(), ix.entries(), ix.odd_bodies()), (1, 3, 0));
    // Node 4 holds another body under it, node 5 the same hash with another length (a peer's
    // claim is kept as it said it): two odd bodies beside the key's.
    ix.apply(tag(n(4), E1, 1, have(1, 6)));
    let short = Update::Have {
        key: k(1),
        hash: [5; 32],
        len: 1,
        fresh_until: 9,
    };
    ix.apply(tag(n(5), E1, 1, short));
    assert_eq!(ix.odd_bodies(), 2);
    let short = HolderState::Complete {
        body: [5; 16],
        len: 1,
        fresh_until: 9,
    };
    assert_eq!(
        ix.holders(&k(1)),
        vec![
            holder(n(1), complete(5)),
            holder(n(2), complete(5)),
            holder(n(3), complete(5)),
            holder(n(4), complete(6)),
            holder(n(5), short.clone()),
        ]
    );
    // An odd hold replaced by the key's body, or dropped, frees its odd body.
    ix.apply(tag(n(4), E1, 2, have(1, 5)));
    assert_eq!(ix.odd_bodies(), 1);
    ix.apply(tag(n(5), E1, 2, dropped(1)));
    assert_eq!((ix.entries(), ix.odd_bodies()), (4, 0));
    // Node 4 takes body 6 again, then the holders of the key's body leave one by one: the
    // key's body is kept while one holds it, then body 6 becomes the key's own.
    ix.apply(tag(n(4), E1, 3, have(1, 6)));
    assert_eq!(ix.odd_bodies(), 1);
    ix.apply(tag(n(1), E1, 2, inflight(1)));
    assert_eq!(ix.remove_node(n(2)), 1);
    assert_eq!(ix.odd_bodies(), 1, "node 3 still holds body 5");
    ix.apply(tag(n(3), E2, 1, inflight(7)));
    assert_eq!(ix.odd_bodies(), 0, "body 6 is the key's own now");
    assert_eq!(
        ix.holders(&k(1)),
        vec![
            holder(n(1), HolderState::InFlight),
            holder(n(4), complete(6))
        ]
    );
    // The last complete holder goes: the key is held in flight only, then not at all.
    assert_eq!(ix.remove_node(n(4)), 1);
    assert_eq!(ix.holders(&k(1)), vec![holder(n(1), HolderState::InFlight)]);
    ix.apply(tag(n(1), E1, 3, dropped(1)));
    assert_eq!((ix.keys(), ix.entries()), (1, 1), "node 3's key 7 is left");
    assert_eq!(ix.holders(&k(1)), vec![]);
}

#[test]
fn the_index_keeps_a_prefix_of_the_body_hash_and_no_impossible_length() {
    let mut ix = Index::new(OWN);
    let mut hash = [3; 32];
    hash[20] = 9;
    let at = |len| Update::Have {
        key: k(1),
        hash,
        len,
        fresh_until: 5,
    };
    ix.apply(tag(n(1), E1, 1, at(MAX_LEN)));
    assert_eq!(
        ix.holders(&k(1)),
        vec![holder(
            n(1),
            HolderState::Complete {
                body: body_id(&hash),
                len: MAX_LEN,
                fresh_until: 5
            }
        )]
    );
    assert_eq!(body_id(&hash), [3; 16]);
    // Longer than the index can name (256 TiB): the node's hold goes, as if it dropped it.
    ix.apply(tag(n(1), E1, 2, at(MAX_LEN + 1)));
    assert_eq!((ix.keys(), ix.entries()), (0, 0));
    ix.apply(tag(n(1), E1, 3, at(u64::MAX)));
    assert_eq!(ix.holders(&k(1)), vec![]);
}

#[test]
fn freshness_is_kept_to_the_second_until_2106_then_for_ever() {
    let mut ix = Index::new(OWN);
    let at = |fresh_until| Update::Have {
        key: k(1),
        hash: [1; 32],
        len: 1,
        fresh_until,
    };
    let fresh = |ix: &Index| match ix.holders(&k(1)).first().map(|h| h.state.clone()) {
        Some(HolderState::Complete { fresh_until, .. }) => fresh_until,
        other => panic!("{other:?}"),
    };
    ix.apply(tag(n(1), E1, 1, at(4_000_000_000)));
    assert_eq!(fresh(&ix), 4_000_000_000);
    ix.apply(tag(n(1), E1, 2, at(u64::MAX)));
    assert_eq!(fresh(&ix), u64::from(u32::MAX));
}

/// The body holders a pass over every key finds: what `body_holders` must answer.
fn body_holders_by_scan(ix: &Index, body: &BodyId, len: u64) -> Vec<NodeId> {
    let mut out: Vec<NodeId> = ix
        .dump()
        .into_values()
        .flatten()
        .filter(|h| h.state.complete_body() == Some((*body, len)))
        .map(|h| h.node)
        .collect();
    out.sort();
    out.dedup();
    out
}

impl HolderState {
    fn complete_body(&self) -> Option<(BodyId, u64)> {
        match self {
            HolderState::Complete { body, len, .. } => Some((*body, *len)),
            HolderState::InFlight => None,
        }
    }
}

#[test]
fn a_content_server_finds_the_holders_of_a_body_under_any_key() {
    let body = |b: u8| ([b; 16], u64::from(b) * 100);
    let mut ix = Index::new(OWN).with_body_holders(true);
    // Node 1 holds body 5 under key 1 (its own URL), node 2 under key 2 (an alias), node 3
    // under both; node 4 is still fetching key 1.
    ix.apply(tag(n(1), E1, 1, have(1, 5)));
    ix.apply(tag(n(2), E1, 1, have(2, 5)));
    ix.apply(tag(n(3), E1, 1, have(1, 5)));
    ix.apply(tag(n(3), E1, 2, have(2, 5)));
    ix.apply(tag(n(4), E1, 1, inflight(1)));
    let (h, len) = body(5);
    assert_eq!(ix.body_holders(&h, len), [n(1), n(2), n(3)]);
    assert_eq!(
        ix.body_holders(&h, len + 1),
        [],
        "another length is another body"
    );
    assert_eq!(ix.body_holders(&[6; 16], len), []);
    // Node 3 drops one of its two keys: it still holds the body.
    ix.apply(tag(n(3), E1, 3, dropped(1)));
    assert_eq!(ix.body_holders(&h, len), [n(1), n(2), n(3)]);
    // Node 1 replaces its copy with another body; node 2 goes down; node 3 restarts.
    ix.apply(tag(n(1), E1, 2, have(1, 6)));
    ix.remove_node(n(2));
    ix.apply(tag(n(3), E2, 1, inflight(2)));
    assert_eq!(ix.body_holders(&h, len), []);
    let (h6, len6) = body(6);
    assert_eq!(ix.body_holders(&h6, len6), [n(1)]);
    // A whole snapshot brings node 2 back with the body under a third key.
    ix.apply_reply(IndexReply::Snapshot {
        node: n(2),
        epoch: E2,
        seq: 4,
        entries: vec![have(9, 5), have(1, 6)],
        next: None,
    });
    assert_eq!(ix.body_holders(&h, len), [n(2)]);
    assert_eq!(ix.body_holders(&h6, len6), [n(1), n(2)]);
    // An index that was not asked to keep them answers nothing (and pays nothing).
    let mut plain = Index::new(OWN);
    plain.apply(tag(n(1), E1, 1, have(1, 5)));
    assert_eq!(plain.body_holders(&h, len), []);
}

#[test]
fn body_holders_always_match_a_pass_over_the_keys() {
    let mut rng = StdRng::seed_from_u64(10);
    let mut ix = Index::new(OWN).with_body_holders(true);
    let mut seqs = [(E1, 0u64); 6];
    for step in 0..4000 {
        let node = rng.random_range(1..6u8);
        let (epoch, seq) = &mut seqs[usize::from(node)];
        match rng.random_range(0..20) {
            0 => {
                ix.remove_node(n(node));
                *seq = 0;
            }
            1 => {
                *epoch += 1;
                *seq = 1;
                ix.apply(tag(n(node), *epoch, 1, inflight(1)));
            }
            r => {
                *seq += 1;
                let (key, body) = (rng.random_range(1..8u8), rng.random_range(1..5u8));
                let update = match r % 3 {
                    0 => dropped(key),
                    1 => inflight(key),
                    _ => have(key, body),
                };
                ix.apply(tag(n(node), *epoch, *seq, update));
            }
        }
        for body in 1..5u8 {
            let (h, len) = ([body; 16], u64::from(body) * 100);
            assert_eq!(
                ix.body_holders(&h, len),
                body_holders_by_scan(&ix, &h, len),
                "step {step}, body {body}"
            );
        }
    }
}
