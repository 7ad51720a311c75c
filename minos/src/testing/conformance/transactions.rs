//! Application transactions: entries, privacy of their writes, reservations, commits, nesting and claims.

use super::super::models::Customer;
use super::holds::{created_then_renamed, open_one};
use super::in_scope;
use crate::prelude::*;
use crate::Error;

/// Transaction entries are stored, updated, and found by status and age.
pub async fn transactions_are_saved_and_found_by_status(repo: Repository) {
    use crate::transaction::{TransactionEntry, TransactionStatus};
    let store = repo.store();
    let outer = TransactionEntry::new(Uuid::new_v4(), None);
    let mut inner = TransactionEntry::new(Uuid::new_v4(), Some(outer.uuid));
    store.save_transaction(&outer).await.unwrap();
    store.save_transaction(&inner).await.unwrap();
    assert_eq!(
        store.transaction(inner.uuid).await.unwrap().as_ref(),
        Some(&inner)
    );
    assert_eq!(store.transaction(Uuid::new_v4()).await.unwrap(), None);
    inner.transition(TransactionStatus::Reserving).unwrap();
    inner.transition(TransactionStatus::Reserved).unwrap();
    store.save_transaction(&inner).await.unwrap();
    let read = store.transaction(inner.uuid).await.unwrap().unwrap();
    assert_eq!(
        (read.status, read.destination),
        (TransactionStatus::Reserved, Some(outer.uuid))
    );
    let later = crate::store::now() + chrono::Duration::seconds(1);
    let reserved = store
        .transactions_in(&[TransactionStatus::Reserved], later)
        .await
        .unwrap();
    assert_eq!(
        reserved.iter().map(|t| t.uuid).collect::<Vec<_>>(),
        [inner.uuid]
    );
    let earlier = inner.updated_at - chrono::Duration::seconds(1);
    assert!(store
        .transactions_in(&[TransactionStatus::Reserved], earlier)
        .await
        .unwrap()
        .is_empty());
    let both = store
        .transactions_in(
            &[TransactionStatus::Pending, TransactionStatus::Reserved],
            later,
        )
        .await
        .unwrap();
    assert_eq!(both.len(), 2);
    let pending = store
        .transactions_in(&[TransactionStatus::Pending], later)
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|t| t.uuid).collect::<Vec<_>>(),
        [outer.uuid]
    );
}

fn customer_names(roots: &[Root<Customer>]) -> Vec<String> {
    let mut names: Vec<String> = roots.iter().map(|c| c.name.clone()).collect();
    names.sort();
    names
}

/// Writes inside a transaction are seen only inside it, publish nothing, and reach the store (and the
/// outbox) when it commits.
pub async fn transaction_writes_are_private_until_committed(repo: Repository) {
    use crate::transaction::{TransactionScope, TransactionStatus};
    let existing = repo.create(Customer { name: "ann".into() }).await.unwrap();
    let sent = repo.store().pending(100).await.unwrap().len();
    let tx = Uuid::new_v4();
    let existing_uuid = existing.uuid();
    let created = in_scope(
        &repo,
        TransactionScope::top(tx).run(async move {
            let created = Customer::create(Customer { name: "bob".into() }).await?;
            let mut ann = Customer::get(existing_uuid).await?;
            ann.name = "anna".into();
            assert!(ann.save().await?);
            // Inside: the writes are visible to reads and queries.
            assert_eq!(Customer::get(existing_uuid).await?.name, "anna");
            assert_eq!(Customer::get(existing_uuid).await?.version(), 2);
            let all = Customer::get_all().await?;
            assert_eq!(customer_names(&all), ["anna", "bob"]);
            let found = Customer::find(Condition::eq("name", "bob")).await?;
            assert_eq!(found.len(), 1);
            let none = Customer::find(Condition::eq("name", "ann")).await?;
            assert!(none.is_empty());
            Ok::<_, Error>(created)
        }),
    )
    .await
    .unwrap();
    // Outside: nothing changed, nothing to publish.
    assert!(repo
        .get::<Customer>(created.uuid())
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(
        repo.get::<Customer>(existing_uuid).await.unwrap().name,
        "ann"
    );
    assert_eq!(repo.store().pending(100).await.unwrap().len(), sent);
    assert_eq!(repo.store().held(tx).await.unwrap().len(), 2);
    // Commit reserves first, then stores and publishes.
    let status = repo.transactions().commit(tx).await.unwrap();
    assert_eq!(status, TransactionStatus::Committed);
    assert_eq!(
        repo.get::<Customer>(existing_uuid).await.unwrap().name,
        "anna"
    );
    assert_eq!(
        repo.get::<Customer>(created.uuid()).await.unwrap().name,
        "bob"
    );
    let topics: Vec<String> = repo.store().pending(100).await.unwrap()[sent..]
        .iter()
        .map(|r| r.message.topic.clone())
        .collect();
    assert_eq!(
        topics,
        ["CustomerCreated", "CustomerUpdated", "CustomerUpdated.name"]
    );
    assert!(repo.store().held(tx).await.unwrap().is_empty());
    // Committing again does nothing; a committed transaction takes no more writes and cannot be rejected.
    assert_eq!(
        repo.transactions().commit(tx).await.unwrap(),
        TransactionStatus::Committed
    );
    let late = in_scope(
        &repo,
        TransactionScope::top(tx).run(Customer::create(Customer {
            name: "late".into(),
        })),
    )
    .await
    .unwrap_err();
    assert_eq!(late.status(), 409, "{late}");
    assert_eq!(
        repo.transactions().reject(tx).await.unwrap_err().status(),
        409
    );
}

/// Reserve refuses writes based on stale versions and siblings touching the same root; a refused or
/// rejected transaction's writes vanish.
pub async fn reserve_refuses_conflicts_and_reject_drops_writes(repo: Repository) {
    use crate::transaction::{TransactionScope, TransactionStatus};
    let ann = repo.create(Customer { name: "ann".into() }).await.unwrap();
    let uuid = ann.uuid();
    let rename = |name: &'static str| async move {
        let mut customer = Customer::get(uuid).await?;
        customer.name = name.into();
        customer.save().await
    };
    let (first, second, third) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for (tx, name) in [(first, "one"), (second, "two"), (third, "three")] {
        in_scope(&repo, TransactionScope::top(tx).run(rename(name)))
            .await
            .unwrap();
    }
    let transactions = repo.transactions();
    assert_eq!(
        transactions.reserve(first).await.unwrap(),
        TransactionStatus::Reserved
    );
    // A sibling touching the same root while `first` is reserved: refused, and rejected.
    let error = transactions.reserve(second).await.unwrap_err();
    assert_eq!(error.status(), 409, "{error}");
    let entry = repo.store().transaction(second).await.unwrap().unwrap();
    assert_eq!(entry.status, TransactionStatus::Rejected);
    assert!(repo.store().held(second).await.unwrap().is_empty());
    // `first` commits; `third` was based on version 1, which is stale now.
    transactions.commit(first).await.unwrap();
    assert_eq!(repo.get::<Customer>(uuid).await.unwrap().name, "one");
    let error = transactions.commit(third).await.unwrap_err();
    assert!(error.is_conflict(), "{error}");
    assert_eq!(repo.get::<Customer>(uuid).await.unwrap().version(), 2);
    // Reject drops the writes; rejecting again is fine; committing a rejected one is a conflict.
    let fourth = Uuid::new_v4();
    in_scope(&repo, TransactionScope::top(fourth).run(rename("four")))
        .await
        .unwrap();
    assert_eq!(
        transactions.reject(fourth).await.unwrap(),
        TransactionStatus::Rejected
    );
    assert_eq!(
        transactions.reject(fourth).await.unwrap(),
        TransactionStatus::Rejected
    );
    assert_eq!(transactions.commit(fourth).await.unwrap_err().status(), 409);
    assert_eq!(repo.get::<Customer>(uuid).await.unwrap().name, "one");
    // Unknown transactions (nothing written here) answer at once and refuse later writes.
    let unknown = Uuid::new_v4();
    assert_eq!(
        transactions.reserve(unknown).await.unwrap(),
        TransactionStatus::Reserved
    );
    let late = in_scope(&repo, TransactionScope::top(unknown).run(rename("late")))
        .await
        .unwrap_err();
    assert_eq!(late.status(), 409);
    // Left reserved too long: the tidy job rejects it.
    let fifth = Uuid::new_v4();
    in_scope(&repo, TransactionScope::top(fifth).run(rename("five")))
        .await
        .unwrap();
    transactions.reserve(fifth).await.unwrap();
    assert!(
        transactions
            .tidy(
                std::time::Duration::ZERO,
                std::time::Duration::from_secs(3600)
            )
            .await
            .unwrap()
            >= 1
    );
    let entry = repo.store().transaction(fifth).await.unwrap().unwrap();
    assert_eq!(entry.status, TransactionStatus::Rejected);
}

/// A pending top-level transaction that changes existing roots commits without a reservation round
/// where the store can (its claims taken and its versions checked in the commit); either way nothing of
/// it is held or claimed once committed. A root another transaction reserved, or a version that moved
/// meanwhile, rejects it and writes nothing.
pub async fn pending_changes_commit_unless_claimed_or_stale(repo: Repository) {
    use crate::store::ClaimedCommit;
    use crate::transaction::{TransactionEntry, TransactionScope, TransactionStatus};
    let store = repo.store();
    let bob = repo.create(Customer { name: "bob".into() }).await.unwrap();
    let uuid = bob.uuid();
    let rename = |name: &'static str| async move {
        let mut customer = Customer::get(uuid).await?;
        customer.name = name.into();
        customer.save().await
    };
    let (reserved, blocked, direct, stale) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    for (tx, name) in [
        (reserved, "reserved"),
        (blocked, "blocked"),
        (direct, "direct"),
        (stale, "stale"),
    ] {
        in_scope(&repo, TransactionScope::top(tx).run(rename(name)))
            .await
            .unwrap();
    }
    let transactions = repo.transactions();
    let status = |tx: Uuid| async move { store.transaction(tx).await.unwrap().unwrap().status };

    // Another transaction holds the root: refused with a 409 naming it, rejected, nothing written.
    transactions.reserve(reserved).await.unwrap();
    let error = transactions.commit(blocked).await.unwrap_err();
    assert_eq!(error.status(), 409, "{error}");
    assert!(error.to_string().contains(&reserved.to_string()), "{error}");
    assert_eq!(status(blocked).await, TransactionStatus::Rejected);
    assert!(store.held(blocked).await.unwrap().is_empty());
    assert_eq!(repo.get::<Customer>(uuid).await.unwrap().name, "bob");
    assert_eq!(
        store.claim(None, blocked, &[uuid]).await.unwrap(),
        Some((uuid, reserved)),
        "the holder keeps its claim"
    );
    transactions.reject(reserved).await.unwrap();

    // Free again: committed from pending, and no claim is left behind.
    assert_eq!(
        transactions.commit(direct).await.unwrap(),
        TransactionStatus::Committed
    );
    let stored = repo.get::<Customer>(uuid).await.unwrap();
    assert_eq!((stored.name.as_str(), stored.version()), ("direct", 2));
    assert_eq!(status(direct).await, TransactionStatus::Committed);
    assert!(store.held(direct).await.unwrap().is_empty());
    let probe = Uuid::now_v7();
    assert_eq!(store.claim(None, probe, &[uuid]).await.unwrap(), None);
    store.release(probe).await.unwrap();

    // `stale` was based on version 1: a conflict, rejected, nothing written.
    let error = transactions.commit(stale).await.unwrap_err();
    assert!(error.is_conflict(), "{error}");
    assert_eq!(status(stale).await, TransactionStatus::Rejected);
    assert_eq!(repo.get::<Customer>(uuid).await.unwrap().version(), 2);

    // The store's one step, where it has one: refused while another transaction holds the root.
    let next = Uuid::now_v7();
    in_scope(&repo, TransactionScope::top(next).run(rename("next")))
        .await
        .unwrap();
    let held = store.held(next).await.unwrap();
    let mut committed = TransactionEntry::new(next, None);
    for step in [
        TransactionStatus::Reserved,
        TransactionStatus::Committing,
        TransactionStatus::Committed,
    ] {
        committed.transition(step).unwrap();
    }
    assert_eq!(store.claim(None, probe, &[uuid]).await.unwrap(), None);
    match store
        .claim_and_commit(&committed, &held, &[uuid])
        .await
        .unwrap()
    {
        ClaimedCommit::Unsupported => return,
        ClaimedCommit::Committed(_) => panic!("committed over another transaction's claim"),
        ClaimedCommit::Held { root, holder } => assert_eq!((root, holder), (uuid, Some(probe))),
    }
    assert_eq!(status(next).await, TransactionStatus::Pending);
    assert_eq!(store.held(next).await.unwrap(), held);
    assert_eq!(repo.get::<Customer>(uuid).await.unwrap().version(), 2);
    store.release(probe).await.unwrap();
    let ClaimedCommit::Committed(events) = store
        .claim_and_commit(&committed, &held, &[uuid])
        .await
        .unwrap()
    else {
        panic!("a free root is claimed and committed");
    };
    assert_eq!(events.len(), 1);
    assert_eq!(repo.get::<Customer>(uuid).await.unwrap().name, "next");
    assert_eq!(status(next).await, TransactionStatus::Committed);
    assert!(store.held(next).await.unwrap().is_empty());
    assert_eq!(store.claim(None, probe, &[uuid]).await.unwrap(), None);
}

/// Inside a transaction, a change made from a stale copy of a root is refused when it is saved: the
/// second of two copies read before the first was saved gets a conflict, and a root created and then
/// changed in the same transaction is saved without one.
pub async fn stale_copies_in_a_transaction_conflict_when_saved(repo: Repository) {
    use crate::transaction::TransactionScope;
    let cid = repo
        .create(Customer { name: "c".into() })
        .await
        .unwrap()
        .uuid();
    let tx = Uuid::now_v7();
    let outcome = in_scope(
        &repo,
        TransactionScope::top(tx).run(async move {
            let mut first = Customer::get(cid).await?;
            let mut second = Customer::get(cid).await?;
            first.name = "first".into();
            first.save().await?;
            second.name = "second".into();
            let stale = second.save().await;
            let mut created = Customer::create(Customer { name: "new".into() }).await?;
            created.name = "renamed".into();
            created.save().await?;
            Ok::<_, Error>((stale, created.uuid()))
        }),
    )
    .await
    .unwrap();
    let (stale, created) = outcome;
    let error = stale.unwrap_err();
    assert!(error.is_conflict(), "{error}");
    repo.transactions().commit(tx).await.unwrap();
    assert_eq!(repo.get::<Customer>(cid).await.unwrap().name, "first");
    let renamed = repo.get::<Customer>(created).await.unwrap();
    assert_eq!((renamed.name.as_str(), renamed.version()), ("renamed", 2));
}

/// A nested transaction commits into its destination: visible there, still unpublished, and stored when
/// the destination commits at the top level.
pub async fn nested_transactions_commit_into_their_destination(repo: Repository) {
    use crate::transaction::{TransactionScope, TransactionStatus};
    let (outer, inner) = (Uuid::new_v4(), Uuid::new_v4());
    let scope = TransactionScope::new(vec![outer, inner]).unwrap();
    let created = in_scope(
        &repo,
        scope.run(Customer::create(Customer { name: "kid".into() })),
    )
    .await
    .unwrap();
    let uuid = created.uuid();
    let seen_outer = in_scope(&repo, TransactionScope::top(outer).run(Customer::get(uuid))).await;
    assert!(seen_outer.unwrap_err().is_not_found());
    let transactions = repo.transactions();
    assert_eq!(
        transactions.commit(inner).await.unwrap(),
        TransactionStatus::Committed
    );
    let seen_outer = in_scope(&repo, TransactionScope::top(outer).run(Customer::get(uuid)))
        .await
        .unwrap();
    assert_eq!(seen_outer.name, "kid");
    assert!(repo.get::<Customer>(uuid).await.unwrap_err().is_not_found());
    assert!(repo.store().pending(10).await.unwrap().is_empty());
    transactions.commit(outer).await.unwrap();
    assert_eq!(repo.get::<Customer>(uuid).await.unwrap().name, "kid");
    assert_eq!(repo.store().pending(10).await.unwrap().len(), 1);
}

/// A root is claimed by one transaction per destination at a time, all of a claim or none, until the
/// holder is released.
pub async fn claims_are_exclusive_per_destination_until_released(repo: Repository) {
    let store = repo.store();
    let (t1, t2, outer) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (r1, r2, r3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(store.claim(None, t1, &[r1, r2]).await.unwrap(), None);
    // Again by the holder: fine.
    assert_eq!(store.claim(None, t1, &[r1]).await.unwrap(), None);
    // r2 is taken: nothing of this claim is kept (r3 stays free).
    assert_eq!(
        store.claim(None, t2, &[r3, r2]).await.unwrap(),
        Some((r2, t1))
    );
    assert_eq!(
        store.claim(Some(outer), t2, &[r2]).await.unwrap(),
        None,
        "another destination"
    );
    let t3 = Uuid::new_v4();
    assert_eq!(store.claim(None, t3, &[r3]).await.unwrap(), None);
    store.release(t1).await.unwrap();
    assert_eq!(store.claim(None, t2, &[r1, r2]).await.unwrap(), None);
}

/// An entry is opened once (a second opening answers the first), read together with its held writes,
/// and settled in one step: its status saved, its writes and claims gone. A store that commits a
/// top-level transaction in one step stores its writes and settles it together; either way, a pending
/// transaction holding only new roots commits without a reservation round.
pub async fn transactions_open_read_and_settle_in_one_step(repo: Repository) {
    use crate::transaction::{TransactionEntry, TransactionStatus};
    let store = repo.store();
    let (uuid, other) = (Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(store.transaction_and_held(uuid).await.unwrap(), None);
    let opened = TransactionEntry::new(uuid, None);
    assert_eq!(store.open_transaction(&opened).await.unwrap(), None);
    let again = store
        .open_transaction(&TransactionEntry::new(uuid, Some(other)))
        .await
        .unwrap()
        .expect("the first opening's entry");
    assert_eq!(
        (again.status, again.destination),
        (TransactionStatus::Pending, None)
    );
    let writes = created_then_renamed(&repo, "a", "b").await;
    store.hold(uuid, &writes, None).await.unwrap();
    let (entry, held) = store.transaction_and_held(uuid).await.unwrap().unwrap();
    assert_eq!(
        (entry.uuid, entry.status),
        (uuid, TransactionStatus::Pending)
    );
    assert_eq!(held, writes);

    // Settled: the status, and nothing held or claimed any more.
    let root = Uuid::now_v7();
    assert_eq!(store.claim(None, uuid, &[root]).await.unwrap(), None);
    let mut rejected = entry.clone();
    rejected.transition(TransactionStatus::Rejected).unwrap();
    store.settle_transaction(&rejected).await.unwrap();
    let (entry, held) = store.transaction_and_held(uuid).await.unwrap().unwrap();
    assert_eq!(entry.status, TransactionStatus::Rejected);
    assert!(held.is_empty());
    assert_eq!(store.claim(None, other, &[root]).await.unwrap(), None);

    // Committed in one step (where the store can): the writes stored, the entry settled.
    let atomic = open_one(store).await;
    store.hold(atomic, &writes, None).await.unwrap();
    let mut committed = TransactionEntry::new(atomic, None);
    for next in [
        TransactionStatus::Reserved,
        TransactionStatus::Committing,
        TransactionStatus::Committed,
    ] {
        committed.transition(next).unwrap();
    }
    if let Some(stored) = store.commit_transaction(&committed, &writes).await.unwrap() {
        assert_eq!(stored.len(), 2);
        let (entry, held) = store.transaction_and_held(atomic).await.unwrap().unwrap();
        assert_eq!(entry.status, TransactionStatus::Committed);
        assert!(held.is_empty());
        assert_eq!(
            repo.get::<Customer>(writes[0].0.uuid).await.unwrap().name,
            "b"
        );
    }

    // Only new roots, still pending: a commit needs no reservation round first.
    let one_phase = Uuid::now_v7();
    let scope = TransactionScope::top(one_phase);
    let created = in_scope(
        &repo,
        scope.run(Customer::create(Customer { name: "new".into() })),
    )
    .await
    .unwrap();
    let transactions = repo.transactions();
    assert_eq!(
        transactions.commit(one_phase).await.unwrap(),
        TransactionStatus::Committed
    );
    assert_eq!(
        repo.get::<Customer>(created.uuid()).await.unwrap().name,
        "new"
    );
    let (entry, held) = store
        .transaction_and_held(one_phase)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, TransactionStatus::Committed);
    assert!(held.is_empty());
    // Committing again is a no-op; rejecting a committed transaction is refused.
    assert_eq!(
        transactions.commit(one_phase).await.unwrap(),
        TransactionStatus::Committed
    );
    assert!(transactions.reject(one_phase).await.is_err());
}
