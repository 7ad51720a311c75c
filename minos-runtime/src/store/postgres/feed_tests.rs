//! The relay's feed on the real server: what the append writers hand over is what the table holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::{Action, DomainMessage, Event};
use crate::store::{EventStore, InboxEntry, OutboxStore, PostgresStore};

async fn store() -> PostgresStore {
    let base = std::env::var("MINOS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("minos_t_{}", Uuid::new_v4().simple());
    let separator = if base.contains('?') { '&' } else { '?' };
    PostgresStore::connect(&format!("{base}{separator}schema={schema}"))
        .await
        .unwrap()
}

/// Version `version` of root `uuid`, with `messages` messages (the first with a trace header).
fn change(uuid: Uuid, version: u64, messages: usize) -> (Event, Vec<DomainMessage>) {
    let event = Event {
        uuid,
        name: "Foo".into(),
        version,
        action: match version {
            1 => Action::Create,
            _ => Action::Update,
        },
        created_at: chrono::Utc::now(),
        fields_diff: Vec::new(),
    };
    let messages = (0..messages)
        .map(|i| DomainMessage {
            identifier: Uuid::new_v4(),
            topic: format!("FooChanged.{i}"),
            key: uuid.to_string(),
            content: serde_json::json!({ "version": version, "i": i }),
            headers: match i {
                0 => BTreeMap::from([("traceparent".to_owned(), format!("00-{}", uuid.simple()))]),
                _ => BTreeMap::new(),
            },
        })
        .collect();
    (event, messages)
}

/// Creates (batched by the writers, alone, with several messages), updates and units in transactions
/// of their own are handed over exactly as a read of the table returns them: ids, messages, every
/// header (the log position the statement adds) and the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rows_the_writers_hand_over_are_the_rows_the_table_holds() {
    let store = Arc::new(store().await);
    let feed = store.feed().expect("the PostgreSQL store feeds its relay");
    // No relay takes rows: nothing is kept.
    let (event, messages) = change(Uuid::now_v7(), 1, 1);
    store.commit_unit(&[(event, messages)], None).await.unwrap();
    assert!(feed.take(100).is_empty());
    assert!(!feed.take_dirty().0);
    let skipped = store.pending(10).await.unwrap();
    assert_eq!(skipped.len(), 1);

    feed.enable(Arc::new(Notify::new()), Some(skipped[0].id));
    let roots: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();
    let creates = roots.iter().enumerate().map(|(i, &uuid)| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let (event, messages) = change(uuid, 1, 1 + i % 3);
            store.commit_unit(&[(event, messages)], None).await.unwrap();
        })
    });
    for task in futures_util::future::join_all(creates).await {
        task.unwrap();
    }
    let updates = roots.iter().map(|&uuid| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let (event, messages) = change(uuid, 2, 2);
            store.commit_unit(&[(event, messages)], None).await.unwrap();
        })
    });
    for task in futures_util::future::join_all(updates).await {
        task.unwrap();
    }
    let fed = feed.take(10_000);
    let table = store
        .pending_in(skipped[0].id + 1..i64::MAX, 10_000)
        .await
        .unwrap();
    let written: usize = (0..40).map(|i| 1 + i % 3).sum::<usize>() + 40 * 2;
    assert_eq!(table.len(), written);
    assert!(table
        .iter()
        .all(|row| row.message.headers.contains_key("position")));
    assert_eq!(fed, table, "the feed holds what the table holds");
    assert!(!feed.take_dirty().0, "nothing was committed past the feed");

    // A unit with an inbox entry commits in a transaction of its own, and hands its rows over too;
    // a copy of it is refused before it writes anything.
    let root = Uuid::now_v7();
    let unit = [change(root, 1, 2), change(root, 2, 1)];
    let entry = InboxEntry::new("svc", Uuid::new_v4());
    store.commit_unit(&unit, Some(&entry)).await.unwrap();
    let fed = feed.take(100);
    let last = table.last().unwrap().id;
    assert_eq!(
        fed,
        store.pending_in(last + 1..i64::MAX, 100).await.unwrap()
    );
    assert_eq!(fed.len(), 3);
    assert!(store.commit_unit(&unit, Some(&entry)).await.is_err());
    assert!(feed.take(100).is_empty());
    assert!(!feed.take_dirty().0);

    // A failed append (a version conflict) hands nothing over and loses nothing.
    let (event, messages) = change(roots[0], 2, 1);
    assert!(store.commit_unit(&[(event, messages)], None).await.is_err());
    assert!(feed.take(100).is_empty());
    feed.disable();
    let (event, messages) = change(Uuid::now_v7(), 1, 1);
    store.commit_unit(&[(event, messages)], None).await.unwrap();
    assert!(feed.take(100).is_empty(), "a disabled feed keeps nothing");
}
