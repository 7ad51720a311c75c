//! Held writes: holds into a transaction, the claims they answer, and the first hold that opens the
//! transaction's entries.

use super::super::models::Customer;
use super::in_scope;
use crate::prelude::*;
use crate::store::StoreError;
use crate::Error;

/// The two writes of a customer created (named `first`) then renamed (`then`), staged: nothing reaches
/// the store.
pub(super) async fn created_then_renamed(
    repo: &Repository,
    first: &str,
    then: &str,
) -> crate::store::HeldWrites {
    let ((), writes) = repo
        .staged(in_scope(repo, async {
            let mut customer = Customer::create(Customer { name: first.into() })
                .await
                .unwrap();
            customer.name = then.into();
            customer.save().await.unwrap();
        }))
        .await;
    writes
}

/// The writes of `count` customers created, staged: nothing reaches the store.
async fn staged_creations(repo: &Repository, count: usize) -> crate::store::HeldWrites {
    let ((), writes) = repo
        .staged(in_scope(repo, async {
            for i in 0..count {
                Customer::create(Customer {
                    name: format!("c{i}"),
                })
                .await
                .unwrap();
            }
        }))
        .await;
    writes
}

/// A new pending top-level transaction, its entry opened: writes can be held under it.
pub(super) async fn open_one(store: &crate::store::SharedStore) -> Uuid {
    let uuid = Uuid::now_v7();
    let entry = crate::transaction::TransactionEntry::new(uuid, None);
    assert_eq!(store.open_transaction(&entry).await.unwrap(), None);
    uuid
}

/// A transaction's held writes come back in order, apart from other transactions', until released.
pub async fn transactions_hold_writes_until_released(repo: Repository) {
    let store = repo.store();
    let (a, b) = (open_one(store).await, open_one(store).await);
    let writes = created_then_renamed(&repo, "x", "y").await;
    store.hold(a, &writes[..1], None).await.unwrap();
    store.hold(b, &writes, None).await.unwrap();
    let inbox = crate::store::InboxEntry::new("svc", Uuid::new_v4());
    store.hold(a, &writes[1..], Some(&inbox)).await.unwrap();
    assert!(store.is_processed(&inbox).await.unwrap());
    // The same message again: refused, nothing added.
    let again = store.hold(a, &writes[1..], Some(&inbox)).await.unwrap_err();
    assert!(
        matches!(again, StoreError::AlreadyProcessed { .. }),
        "{again}"
    );
    let held = store.held(a).await.unwrap();
    assert_eq!(held, writes);
    assert_eq!(store.held(b).await.unwrap().len(), 2);
    // Nothing held reached the store.
    assert!(repo
        .get::<Customer>(writes[0].0.uuid)
        .await
        .unwrap_err()
        .is_not_found());
    store.release(a).await.unwrap();
    assert!(store.held(a).await.unwrap().is_empty());
    assert_eq!(store.held(b).await.unwrap().len(), 2);
    repo.commit_unit(&store.held(b).await.unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        repo.get::<Customer>(writes[0].0.uuid).await.unwrap().name,
        "y"
    );
}

/// A hold answers whether the transaction then holds a change to a root that existed before (what a
/// reservation claims), counting the writes held before it; new roots alone answer no.
pub async fn a_hold_tells_whether_the_transaction_changes_existing_roots(repo: Repository) {
    let store = repo.store();
    let writes = created_then_renamed(&repo, "x", "y").await;
    let (created, changed) = (&writes[..1], &writes[1..]);
    let inbox = || crate::store::InboxEntry::new("svc", Uuid::new_v4());

    // New roots alone, in one hold or two.
    let fresh = open_one(store).await;
    assert!(!store
        .hold_and_check_claims(fresh, created, Some(&inbox()))
        .await
        .unwrap());
    assert!(!store
        .hold_and_check_claims(fresh, &[], Some(&inbox()))
        .await
        .unwrap());

    // A change held by an earlier hold counts, as does one in this hold.
    let earlier = open_one(store).await;
    store.hold(earlier, changed, None).await.unwrap();
    assert!(store
        .hold_and_check_claims(earlier, created, Some(&inbox()))
        .await
        .unwrap());
    let now = open_one(store).await;
    assert!(store
        .hold_and_check_claims(now, &writes, Some(&inbox()))
        .await
        .unwrap());
    assert!(store
        .hold_and_check_claims(open_one(store).await, changed, None)
        .await
        .unwrap());

    // A redelivered message is refused and adds nothing.
    let once = inbox();
    assert!(!store
        .hold_and_check_claims(fresh, created, Some(&once))
        .await
        .unwrap());
    let again = store
        .hold_and_check_claims(fresh, changed, Some(&once))
        .await
        .unwrap_err();
    assert!(
        matches!(again, StoreError::AlreadyProcessed { .. }),
        "{again}"
    );
    assert_eq!(store.held(fresh).await.unwrap().len(), 2);
}

/// Writes held into a transaction the store has no entry for are refused, and nothing is written:
/// neither the writes nor the message's inbox entry (its redelivery is handled again). A hold of no
/// writes still records the inbox entry alone.
pub async fn writes_into_a_transaction_without_entry_are_refused(repo: Repository) {
    let store = repo.store();
    let writes = created_then_renamed(&repo, "x", "y").await;
    let unknown = Uuid::now_v7();
    let inbox = crate::store::InboxEntry::new("svc", Uuid::new_v4());
    let refused = [
        store.hold(unknown, &writes, None).await.unwrap_err(),
        store
            .hold(unknown, &writes, Some(&inbox))
            .await
            .unwrap_err(),
        store
            .hold_and_check_claims(unknown, &writes[..1], Some(&inbox))
            .await
            .unwrap_err(),
    ];
    for error in refused {
        assert!(
            matches!(error, StoreError::UnknownTransaction { transaction } if transaction == unknown),
            "{error}"
        );
        assert_eq!(Error::from(error).status(), 409);
    }
    assert!(store.held(unknown).await.unwrap().is_empty());
    assert!(!store.is_processed(&inbox).await.unwrap());
    assert_eq!(store.transaction(unknown).await.unwrap(), None);

    // Nothing to hold: the inbox entry alone is recorded.
    store.hold(unknown, &[], Some(&inbox)).await.unwrap();
    assert!(store.is_processed(&inbox).await.unwrap());

    // Once opened, the same writes are held.
    let entry = crate::transaction::TransactionEntry::new(unknown, None);
    assert_eq!(store.open_transaction(&entry).await.unwrap(), None);
    let next = crate::store::InboxEntry::new("svc", Uuid::new_v4());
    store.hold(unknown, &writes, Some(&next)).await.unwrap();
    assert_eq!(store.held(unknown).await.unwrap(), writes);
}

/// A transaction's first hold opens the entries of its chain (each pending, inside the one before)
/// and holds the writes, all or nothing: refused into a transaction that is no longer pending or for a
/// redelivered message, nothing written; concurrent first holds of one transaction all get in.
pub async fn a_first_hold_opens_the_chain(repo: Repository) {
    use crate::transaction::{TransactionEntry, TransactionStatus};
    let store = repo.store();
    let writes = created_then_renamed(&repo, "x", "y").await;
    let (outer, inner) = (Uuid::now_v7(), Uuid::now_v7());
    let chain = [
        TransactionEntry::new(outer, None),
        TransactionEntry::new(inner, Some(outer)),
    ];
    let inbox = crate::store::InboxEntry::new("svc", Uuid::new_v4());
    // Only new roots: no claims; asked not to check: `false` whatever is held.
    assert!(!store
        .open_and_hold(&chain, &writes[..1], Some(&inbox), true)
        .await
        .unwrap());
    let (outer_entry, inner_entry) = (
        store.transaction(outer).await.unwrap().unwrap(),
        store.transaction(inner).await.unwrap().unwrap(),
    );
    assert_eq!(
        (outer_entry.status, outer_entry.destination),
        (TransactionStatus::Pending, None)
    );
    assert_eq!(
        (inner_entry.status, inner_entry.destination),
        (TransactionStatus::Pending, Some(outer))
    );
    assert!(store.is_processed(&inbox).await.unwrap());
    assert_eq!(store.held(inner).await.unwrap(), writes[..1]);
    assert!(store.held(outer).await.unwrap().is_empty());

    // Opened already: the next writes go in; the redelivered message adds nothing.
    let again = store
        .open_and_hold(&chain, &writes[1..], Some(&inbox), true)
        .await
        .unwrap_err();
    assert!(
        matches!(again, StoreError::AlreadyProcessed { .. }),
        "{again}"
    );
    assert!(store
        .open_and_hold(&chain, &writes[1..], None, true)
        .await
        .unwrap());
    assert!(!store
        .open_and_hold(&chain, &writes[1..], None, false)
        .await
        .unwrap());
    assert_eq!(store.held(inner).await.unwrap().len(), 3);

    // No longer pending: refused, nothing written.
    let mut rejected = store.transaction(inner).await.unwrap().unwrap();
    rejected.transition(TransactionStatus::Rejected).unwrap();
    store.settle_transaction(&rejected).await.unwrap();
    let late = crate::store::InboxEntry::new("svc", Uuid::new_v4());
    let closed = store
        .open_and_hold(&chain, &writes, Some(&late), true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            closed,
            StoreError::TransactionClosed { transaction, status: TransactionStatus::Rejected }
                if transaction == inner
        ),
        "{closed}"
    );
    assert_eq!(Error::from(closed).status(), 409);
    assert!(store.held(inner).await.unwrap().is_empty());
    assert!(!store.is_processed(&late).await.unwrap());

    // Eight first holds of one new transaction at once: each gets in, once.
    let shared = Uuid::now_v7();
    let mut holds = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (store, write) = (store.clone(), writes[..1].to_vec());
        holds.spawn(async move {
            let chain = [TransactionEntry::new(shared, None)];
            let inbox = crate::store::InboxEntry::new("svc", Uuid::new_v4());
            store
                .open_and_hold(&chain, &write, Some(&inbox), false)
                .await
        });
    }
    while let Some(result) = holds.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(store.held(shared).await.unwrap().len(), 8);
}

/// Writes held into a transaction that is no longer pending (reserved, committed, rejected) are
/// refused, every hold after the first too, and nothing is written: neither the writes nor the
/// message's inbox entry.
pub async fn holds_need_a_pending_transaction(repo: Repository) {
    use crate::transaction::TransactionStatus;
    let store = repo.store();
    let writes = created_then_renamed(&repo, "x", "y").await;
    for end in [
        TransactionStatus::Reserved,
        TransactionStatus::Committed,
        TransactionStatus::Rejected,
    ] {
        let uuid = open_one(store).await;
        store.hold(uuid, &writes[..1], None).await.unwrap();
        let mut entry = store.transaction(uuid).await.unwrap().unwrap();
        entry.status = end;
        store.save_transaction(&entry).await.unwrap();
        let inbox = crate::store::InboxEntry::new("svc", Uuid::new_v4());
        let refused = [
            store
                .hold(uuid, &writes[1..], Some(&inbox))
                .await
                .unwrap_err(),
            store
                .hold_and_check_claims(uuid, &writes[1..], None)
                .await
                .unwrap_err(),
        ];
        for error in refused {
            assert!(
                matches!(error, StoreError::TransactionClosed { transaction, status }
                    if transaction == uuid && status == end),
                "{end:?}: {error}"
            );
            assert_eq!(Error::from(error).status(), 409);
        }
        assert_eq!(store.held(uuid).await.unwrap(), writes[..1]);
        assert!(!store.is_processed(&inbox).await.unwrap());
    }
}

/// Writes held while the transaction's commit runs are either committed with it or refused (the
/// transaction no longer pending): none is acknowledged and then lost.
pub async fn writes_held_while_a_commit_runs_are_committed_or_refused(repo: Repository) {
    use crate::transaction::TransactionStatus;
    const WRITES: usize = 24;
    for round in 0..4 {
        let writes = staged_creations(&repo, WRITES).await;
        assert_eq!(writes.len(), WRITES);
        let store = repo.store().clone();
        let uuid = open_one(&store).await;
        let mut holds = tokio::task::JoinSet::new();
        for (i, write) in writes.iter().enumerate() {
            let (store, write) = (store.clone(), vec![write.clone()]);
            holds.spawn(async move {
                for _ in 0..(i % 4) {
                    tokio::task::yield_now().await;
                }
                (write[0].0.uuid, store.hold(uuid, &write, None).await)
            });
        }
        let transactions = repo.transactions();
        let commit = tokio::spawn(async move { transactions.commit(uuid).await });
        let mut outcomes = Vec::new();
        while let Some(outcome) = holds.join_next().await {
            outcomes.push(outcome.unwrap());
        }
        assert_eq!(commit.await.unwrap().unwrap(), TransactionStatus::Committed);
        for (root, held) in outcomes {
            let stored = repo.get::<Customer>(root).await;
            match held {
                Ok(()) => assert!(stored.is_ok(), "round {round}: held write {root} lost"),
                Err(error) => {
                    assert!(
                        matches!(error, StoreError::TransactionClosed { transaction, .. } if transaction == uuid),
                        "round {round}: {error}"
                    );
                    assert!(stored.unwrap_err().is_not_found(), "round {round}");
                }
            }
        }
        assert!(store.held(uuid).await.unwrap().is_empty());
    }
}

/// The writes of a rename of customer `uuid` (from the version stored now) to `name`, staged.
async fn renamed(repo: &Repository, uuid: Uuid, name: &str) -> crate::store::HeldWrites {
    let ((), writes) = repo
        .staged(in_scope(repo, async {
            let mut customer = Customer::get(uuid).await.unwrap();
            customer.name = name.into();
            customer.save().await.unwrap();
        }))
        .await;
    writes
}

/// Writes held while the transaction's reservation runs are checked with it or refused: a reserved
/// transaction commits. A stale write that got in rejects the reservation (409); once reserved, every
/// root its writes change is claimed, so a sibling changing one of them is refused.
pub async fn writes_held_while_a_reservation_runs_are_checked_or_refused(repo: Repository) {
    use crate::transaction::TransactionStatus;
    const FILLERS: usize = 16;
    let store = repo.store().clone();
    let transactions = repo.transactions();
    for round in 0..8usize {
        let stale_root = repo.create(Customer { name: "s".into() }).await.unwrap();
        let fresh_root = repo.create(Customer { name: "f".into() }).await.unwrap();
        // Based on version 1, then version 2 is stored: stale.
        let stale = renamed(&repo, stale_root.uuid(), "late").await;
        repo.commit_unit(&renamed(&repo, stale_root.uuid(), "now").await, None)
            .await
            .unwrap();
        let fresh = renamed(&repo, fresh_root.uuid(), "fresh").await;
        let sibling_write = renamed(&repo, fresh_root.uuid(), "sibling").await;
        let fillers = staged_creations(&repo, FILLERS).await;
        let uuid = open_one(&store).await;
        // Odd rounds start with a change (the reservation claims), even ones with a creation.
        let first = match round % 2 {
            0 => fillers[..1].to_vec(),
            _ => {
                let other = repo.create(Customer { name: "o".into() }).await.unwrap();
                renamed(&repo, other.uuid(), "other").await
            }
        };
        store.hold(uuid, &first, None).await.unwrap();
        let mut racing: Vec<(&str, crate::store::HeldWrites)> = fillers[1..]
            .iter()
            .map(|w| ("filler", vec![w.clone()]))
            .collect();
        racing.insert(round % racing.len(), ("stale", stale));
        racing.insert((round * 5 + 3) % racing.len(), ("fresh", fresh));
        let mut holds = tokio::task::JoinSet::new();
        for (i, (what, write)) in racing.into_iter().enumerate() {
            let store = store.clone();
            holds.spawn(async move {
                for _ in 0..(i % 4) {
                    tokio::task::yield_now().await;
                }
                (what, store.hold(uuid, &write, None).await)
            });
        }
        let reserving = transactions.clone();
        let reserve = tokio::spawn(async move { reserving.reserve(uuid).await });
        let mut outcomes = std::collections::BTreeMap::new();
        while let Some(outcome) = holds.join_next().await {
            let (what, held) = outcome.unwrap();
            if let Err(error) = &held {
                assert!(
                    matches!(error, StoreError::TransactionClosed { transaction, .. } if *transaction == uuid),
                    "round {round}: {error}"
                );
            }
            if what != "filler" {
                outcomes.insert(what, held.is_ok());
            }
        }
        match reserve.await.unwrap() {
            Ok(status) => {
                assert_eq!(status, TransactionStatus::Reserved, "round {round}");
                assert!(
                    !outcomes["stale"],
                    "round {round}: a stale write was held and the transaction still reserved"
                );
                if outcomes["fresh"] {
                    // The root it changes is claimed: a sibling changing it is refused.
                    let sibling = open_one(&store).await;
                    store.hold(sibling, &sibling_write, None).await.unwrap();
                    let refused = transactions.reserve(sibling).await.unwrap_err();
                    assert_eq!(refused.status(), 409, "round {round}: {refused}");
                }
                assert_eq!(
                    transactions.commit(uuid).await.unwrap(),
                    TransactionStatus::Committed,
                    "round {round}"
                );
                let expected = if outcomes["fresh"] { "fresh" } else { "f" };
                assert_eq!(
                    repo.get::<Customer>(fresh_root.uuid()).await.unwrap().name,
                    expected,
                    "round {round}"
                );
            }
            Err(error) => {
                assert!(error.is_conflict(), "round {round}: {error}");
                assert!(
                    outcomes["stale"],
                    "round {round}: refused without a stale write: {error}"
                );
                let entry = store.transaction(uuid).await.unwrap().unwrap();
                assert_eq!(entry.status, TransactionStatus::Rejected, "round {round}");
                assert!(store.held(uuid).await.unwrap().is_empty(), "round {round}");
                assert_eq!(
                    repo.get::<Customer>(fresh_root.uuid()).await.unwrap().name,
                    "f"
                );
            }
        }
        assert_eq!(
            repo.get::<Customer>(stale_root.uuid()).await.unwrap().name,
            "now",
            "round {round}"
        );
    }
}

/// Writes held while the transaction is rejected are dropped with it or refused: once the reject
/// answers, the transaction holds nothing.
pub async fn writes_held_while_a_reject_runs_are_dropped(repo: Repository) {
    use crate::transaction::TransactionStatus;
    const WRITES: usize = 24;
    let store = repo.store().clone();
    let transactions = repo.transactions();
    for round in 0..4 {
        let writes = staged_creations(&repo, WRITES).await;
        let uuid = open_one(&store).await;
        let mut holds = tokio::task::JoinSet::new();
        for (i, write) in writes.iter().enumerate() {
            let (store, write) = (store.clone(), vec![write.clone()]);
            holds.spawn(async move {
                for _ in 0..(i % 4) {
                    tokio::task::yield_now().await;
                }
                store.hold(uuid, &write, None).await
            });
        }
        let rejecting = transactions.clone();
        let reject = tokio::spawn(async move { rejecting.reject(uuid).await });
        while let Some(held) = holds.join_next().await {
            if let Err(error) = held.unwrap() {
                assert!(
                    matches!(error, StoreError::TransactionClosed { transaction, status: TransactionStatus::Rejected } if transaction == uuid),
                    "round {round}: {error}"
                );
            }
        }
        assert_eq!(reject.await.unwrap().unwrap(), TransactionStatus::Rejected);
        assert!(
            store.held(uuid).await.unwrap().is_empty(),
            "round {round}: writes left under a rejected transaction"
        );
        for (event, _) in &writes {
            assert!(repo
                .get::<Customer>(event.uuid)
                .await
                .unwrap_err()
                .is_not_found());
        }
    }
}
