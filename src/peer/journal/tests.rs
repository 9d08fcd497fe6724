//! The journal: incremental answers while it covers the asker, snapshots otherwise.

use std::collections::HashMap;

use super::*;
use crate::peer::index::tests::{
    complete, dropped, have, holder, inflight, k, n, tag, E1, E2, OWN,
};
use crate::peer::index::{Applied, Index};

fn seqs(reply: &IndexReply) -> Option<Vec<u64>> {
    match reply {
        IndexReply::Updates { updates, .. } => Some(updates.iter().map(|t| t.seq).collect()),
        IndexReply::Snapshot { .. } => None,
    }
}

#[test]
fn journal_since_switches_to_a_snapshot_past_its_capacity() {
    // (capacity, updates recorded, since, Some(seqs) for Updates or None for a Snapshot)
    let cases: &[(usize, u64, u64, Option<&[u64]>)] = &[
        (4, 0, 0, Some(&[])),
        (4, 0, 1, None),
        (4, 3, 0, Some(&[1, 2, 3])),
        (4, 4, 0, Some(&[1, 2, 3, 4])),
        (4, 5, 0, None),
        (4, 5, 1, Some(&[2, 3, 4, 5])),
        (4, 6, 1, None),
        (4, 6, 2, Some(&[3, 4, 5, 6])),
        (4, 6, 5, Some(&[6])),
        (4, 6, 6, Some(&[])),
        (4, 6, 7, None),
        (1, 6, 5, Some(&[6])),
        (1, 6, 4, None),
        (0, 6, 6, Some(&[])),
        (0, 6, 5, None),
        (0, 0, 0, Some(&[])),
    ];
    for &(capacity, recorded, since, want) in cases {
        let mut journal = Journal::new(n(1), E1, capacity);
        for i in 0..recorded {
            journal.record(have(i as u8, 1));
        }
        let reply = journal.since(since);
        assert_eq!(
            seqs(&reply).as_deref(),
            want,
            "capacity {capacity}, {recorded} recorded, since {since}"
        );
        if capacity > 0 {
            assert_eq!(
                journal.evicted(),
                recorded.saturating_sub(capacity as u64),
                "what fell off is counted"
            );
        }
        if let IndexReply::Snapshot { seq, epoch, .. } = reply {
            assert_eq!((epoch, seq), (E1, recorded));
        }
    }
}

#[test]
fn a_journal_that_starts_with_a_state_answers_an_empty_asker_with_a_snapshot() {
    let mut start = HashMap::new();
    OwnState::record(&mut start, &have(1, 1));
    let mut journal = Journal::with_state(n(1), E2, 8, start);
    let mut ix = Index::new(OWN);
    // A restarted node: its first update (seq 2) shows a gap to a member that knows nothing.
    let first = journal.record(have(2, 2));
    assert_eq!(first.seq, 2);
    assert!(matches!(ix.apply(first), Applied::Gap { since: 0, .. }));
    assert_eq!(seqs(&journal.since(0)), None, "a snapshot");
    ix.apply_reply(journal.since(0));
    assert_eq!(ix.holders(&k(1)), vec![holder(n(1), complete(1))]);
    assert_eq!(ix.holders(&k(2)), vec![holder(n(1), complete(2))]);
    assert_eq!(seqs(&journal.since(1)), Some(vec![2]));
}

#[test]
fn a_snapshot_gathered_after_its_stamp_converges_once_later_updates_replay() {
    let mut journal = Journal::new(n(1), E1, 8);
    journal.record(have(1, 1));
    assert_eq!(journal.updates_since(Some(E2), 1), None, "another epoch");
    assert_eq!(
        journal.updates_since(None, 0).map(|r| seqs(&r)),
        Some(Some(vec![1]))
    );
    // The stamp is taken, then the state moves on before the entries are read.
    let at = journal.snapshot_at();
    let later = [journal.record(dropped(1)), journal.record(have(2, 2))];
    let snapshot = at.of(journal.state().snapshot()); // already without 1, with 2
    let mut ix = Index::new(OWN);
    ix.apply_reply(snapshot);
    for t in later {
        ix.apply(t);
    }
    assert_eq!(ix.applied(n(1)), Some((E1, 3)));
    assert_eq!(ix.holders(&k(1)), vec![]);
    assert_eq!(ix.holders(&k(2)), vec![holder(n(1), complete(2))]);
}

#[test]
fn journal_since_in_another_epoch_is_a_snapshot() {
    let mut journal = Journal::new(n(1), E2, 8);
    journal.record(have(1, 1));
    journal.record(have(2, 2));
    assert_eq!(seqs(&journal.since_in(E2, 1)), Some(vec![2]));
    assert_eq!(seqs(&journal.since_in(E1, 1)), None);
    assert_eq!(seqs(&journal.since_in(E1, 2)), None);
    assert_eq!(seqs(&journal.since_in(0, 0)), None);
}

#[test]
fn journal_keeps_the_current_state_for_snapshots() {
    let mut journal = Journal::new(n(1), E1, 2);
    assert!(journal.state().is_empty());
    let first = journal.record(inflight(3));
    assert_eq!(first, tag(n(1), E1, 1, inflight(3)));
    journal.record(have(1, 1));
    journal.record(have(3, 3));
    journal.record(inflight(2));
    journal.record(dropped(1));
    journal.record(dropped(9));
    assert_eq!(
        (journal.seq(), journal.epoch(), journal.state().len()),
        (6, E1, 2)
    );
    assert_eq!(
        journal.since(0),
        IndexReply::Snapshot {
            node: n(1),
            epoch: E1,
            seq: 6,
            entries: vec![inflight(2), have(3, 3)],
            next: None,
        }
    );
}
