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
