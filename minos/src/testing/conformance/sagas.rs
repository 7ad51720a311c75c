//! Saga executions.

use serde_json::json;

use crate::prelude::*;

/// Saga executions are stored, replaced, read back and listed newest first, by status.
pub async fn saga_executions_are_saved_and_listed(repo: Repository) {
    use crate::saga::ExecutionStatus::{Errored, Finished, Paused};
    use crate::store::ExecutionRecord;
    let store = repo.store();
    let start = crate::store::now();
    let mut records = Vec::new();
    for (i, status) in [Paused, Finished, Paused].into_iter().enumerate() {
        let record = ExecutionRecord {
            uuid: Uuid::new_v4(),
            saga: "AddFooBar".into(),
            status,
            data: json!({"context": {"n": i}}),
            created_at: start,
            updated_at: start + chrono::Duration::milliseconds(i as i64),
        };
        store.save_execution(&record).await.unwrap();
        records.push(record);
    }
    assert_eq!(
        store.execution(records[1].uuid).await.unwrap().as_ref(),
        Some(&records[1])
    );
    assert_eq!(store.execution(Uuid::new_v4()).await.unwrap(), None);
    let paused: Vec<Uuid> = store
        .executions(Some(Paused), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.uuid)
        .collect();
    assert_eq!(paused, [records[2].uuid, records[0].uuid]);
    records[0].status = Errored;
    records[0].updated_at = start + chrono::Duration::seconds(1);
    store.save_execution(&records[0]).await.unwrap();
    let all = store.executions(None, 2).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], records[0]);
    assert_eq!(store.executions(Some(Paused), 10).await.unwrap().len(), 1);
    // Unchanged since before a time, oldest first.
    records[1].status = Paused;
    store.save_execution(&records[1]).await.unwrap();
    let stale: Vec<Uuid> = store
        .stale_executions(Paused, start + chrono::Duration::milliseconds(2), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.uuid)
        .collect();
    assert_eq!(stale, [records[1].uuid]);
    let stale = store
        .stale_executions(Paused, start + chrono::Duration::seconds(5), 1)
        .await
        .unwrap();
    assert_eq!(stale[0].uuid, records[1].uuid, "oldest first, limited");
}

/// Many executions saved and read at once, and many transactions read at once: each caller gets its
/// own answer (the latest save of its execution; its entry and its writes, in order), an unknown one
/// none.
pub async fn concurrent_saves_and_reads_answer_each_caller(repo: Repository) {
    use crate::saga::ExecutionStatus::{Finished, Paused};
    use crate::store::ExecutionRecord;
    let store = repo.store().clone();
    let start = crate::store::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..48i64 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut record = ExecutionRecord {
                uuid: Uuid::new_v4(),
                saga: format!("Saga{i}"),
                status: Paused,
                data: json!({"n": i}),
                created_at: start,
                updated_at: start,
            };
            for _ in 0..(i % 3) {
                tokio::task::yield_now().await;
            }
            store.save_execution(&record).await.unwrap();
            assert_eq!(
                store.execution(record.uuid).await.unwrap(),
                Some(record.clone())
            );
            record.status = Finished;
            record.data = json!({"n": i, "done": true});
            record.updated_at = start + chrono::Duration::milliseconds(i + 1);
            store.save_execution(&record).await.unwrap();
            assert_eq!(store.execution(record.uuid).await.unwrap(), Some(record));
            assert_eq!(store.execution(Uuid::new_v4()).await.unwrap(), None);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    let mut expected = Vec::new();
    for i in 0..12 {
        let uuid = super::holds::open_one(&store).await;
        let writes = super::holds::created_then_renamed(&repo, &format!("a{i}"), "b").await;
        store.hold(uuid, &writes[..i % 2 + 1], None).await.unwrap();
        expected.push((uuid, writes[..i % 2 + 1].to_vec()));
    }
    let mut reads = tokio::task::JoinSet::new();
    for (uuid, writes) in expected.iter().chain(expected.iter()).cloned() {
        let store = store.clone();
        reads.spawn(async move {
            let (entry, held) = store.transaction_and_held(uuid).await.unwrap().unwrap();
            assert_eq!(entry.uuid, uuid);
            assert_eq!(entry.status, crate::transaction::TransactionStatus::Pending);
            assert_eq!(held, writes);
            assert!(store
                .transaction_and_held(Uuid::new_v4())
                .await
                .unwrap()
                .is_none());
        });
    }
    while let Some(done) = reads.join_next().await {
        done.unwrap();
    }
}
