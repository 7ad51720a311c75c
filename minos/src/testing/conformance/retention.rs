//! Retention: only finished rows older than the cut-off go.

use serde_json::json;

use super::super::models::Customer;
use crate::prelude::*;
use crate::store::{ExecutionRecord, InboxEntry, Retained};

/// Retention removes ended transactions (with anything they still held or claimed), finished and
/// errored saga executions, old inbox entries and published outbox messages, in batches of at most the
/// limit; pending and reserved transactions, running and paused executions, unsent messages and rows
/// newer than the cut-off stay.
pub async fn retention_removes_only_finished_rows(repo: Repository) {
    use crate::domain::TransactionStatus::{Committed, Pending, Rejected, Reserved};
    use crate::saga::ExecutionStatus::{Errored, Finished, Paused, Running};
    let store = repo.store();
    let start = crate::store::now();
    let old = start - chrono::Duration::minutes(10);
    let cut = start - chrono::Duration::minutes(1);
    let recent = start;

    // Transactions.
    let mut transactions = Vec::new();
    for (status, at) in [
        (Committed, old),
        (Rejected, old),
        (Pending, old),
        (Reserved, old),
        (Committed, recent),
    ] {
        let mut entry = crate::domain::TransactionEntry::new(Uuid::new_v4(), None);
        entry.status = status;
        entry.updated_at = at;
        store.save_transaction(&entry).await.unwrap();
        transactions.push(entry.uuid);
    }
    // An end interrupted before its writes and claims were released.
    let a = repo.create(Customer { name: "a".into() }).await.unwrap();
    let root = Uuid::new_v4();
    let update = crate::domain::Event {
        uuid: a.uuid(),
        name: "Customer".into(),
        version: 2,
        action: crate::Action::Update,
        created_at: start,
        fields_diff: vec![crate::FieldDiff::whole("name", "String", json!("b"))],
    };
    // (Held while it was pending; the end saved, the release not done.)
    let ended = store.transaction(transactions[1]).await.unwrap().unwrap();
    let mut pending = ended.clone();
    pending.status = Pending;
    store.save_transaction(&pending).await.unwrap();
    store
        .hold(transactions[1], &[(update, Vec::new())], None)
        .await
        .unwrap();
    store.save_transaction(&ended).await.unwrap();
    assert_eq!(
        store.claim(None, transactions[1], &[root]).await.unwrap(),
        None
    );
    assert_eq!(
        store.purge(Retained::Transactions, cut, 1).await.unwrap(),
        1,
        "at most the limit"
    );
    assert_eq!(
        store.purge(Retained::Transactions, cut, 10).await.unwrap(),
        1
    );
    assert_eq!(
        store.purge(Retained::Transactions, cut, 10).await.unwrap(),
        0
    );
    for (i, kept) in [false, false, true, true, true].into_iter().enumerate() {
        assert_eq!(
            store.transaction(transactions[i]).await.unwrap().is_some(),
            kept,
            "transaction {i}"
        );
    }
    assert!(store.held(transactions[1]).await.unwrap().is_empty());
    assert_eq!(
        store.claim(None, Uuid::new_v4(), &[root]).await.unwrap(),
        None,
        "the removed transaction's claim went with it"
    );

    // Saga executions.
    let mut executions = Vec::new();
    for (status, at) in [
        (Finished, old),
        (Errored, old),
        (Paused, old),
        (Running, old),
        (Finished, recent),
    ] {
        let record = ExecutionRecord {
            uuid: Uuid::new_v4(),
            saga: "AddFooBar".into(),
            status,
            data: json!({}),
            created_at: old,
            updated_at: at,
        };
        store.save_execution(&record).await.unwrap();
        executions.push(record.uuid);
    }
    assert_eq!(store.purge(Retained::Sagas, cut, 10).await.unwrap(), 2);
    for (i, kept) in [false, false, true, true, true].into_iter().enumerate() {
        assert_eq!(
            store.execution(executions[i]).await.unwrap().is_some(),
            kept,
            "execution {i}"
        );
    }

    // Inbox entries are recorded now: an earlier cut-off keeps them, a later one removes them.
    let entry = InboxEntry::new("svc", Uuid::new_v4());
    repo.commit_unit(&Vec::new(), Some(&entry)).await.unwrap();
    assert_eq!(store.purge(Retained::Inbox, cut, 10).await.unwrap(), 0);
    assert!(store.is_processed(&entry).await.unwrap());
    let later = crate::store::now() + chrono::Duration::minutes(1);
    assert_eq!(store.purge(Retained::Inbox, later, 10).await.unwrap(), 1);
    assert!(!store.is_processed(&entry).await.unwrap());

    // Outbox: published messages may go, unsent ones never.
    repo.create(Customer { name: "c".into() }).await.unwrap();
    let pending = store.pending(10).await.unwrap();
    assert_eq!(pending.len(), 2);
    store.mark_sent(&[pending[0].id]).await.unwrap();
    assert_eq!(store.purge(Retained::Outbox, cut, 10).await.unwrap(), 0);
    let removed = store.purge(Retained::Outbox, later, 10).await.unwrap();
    // The memory backend drops a message as soon as it is published; the others keep it until now.
    assert!(removed <= 1, "{removed}");
    assert_eq!(store.purge(Retained::Outbox, later, 10).await.unwrap(), 0);
    let unsent = store.pending(10).await.unwrap();
    assert_eq!(unsent.len(), 1);
    assert_eq!(unsent[0].id, pending[1].id);
}
