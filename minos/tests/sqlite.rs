//! The embedded store keeps everything across a restart of the process that wrote it.

use minos::prelude::*;
use minos::store::SqliteStore;
use minos::testing::models::Order;

#[tokio::test]
async fn data_and_unsent_messages_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/store.db");
    let uuid = {
        let repository = Repository::sqlite(&path).unwrap();
        let mut order = repository.create(Order::sample("ada", 1.0)).await.unwrap();
        order.paid = true;
        repository.save(&mut order).await.unwrap();
        let first = repository.store().pending(1).await.unwrap();
        repository.store().mark_sent(&[first[0].id]).await.unwrap();
        order.uuid()
    };
    let repository = Repository::new(SqliteStore::open(&path).unwrap());
    let order = repository.get::<Order>(uuid).await.unwrap();
    assert!(order.paid);
    assert_eq!(order.version(), 2);
    let pending: Vec<String> = repository
        .store()
        .pending(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.message.topic)
        .collect();
    assert_eq!(pending, ["OrderUpdated", "OrderUpdated.paid"]);
    assert_eq!(repository.events(uuid).await.unwrap().len(), 2);
}

#[tokio::test]
async fn two_handles_on_one_file_cannot_both_win() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let a = Repository::sqlite(&path).unwrap();
    let b = Repository::sqlite(&path).unwrap();
    let order = a.create(Order::sample("ada", 1.0)).await.unwrap();
    let mut via_a = a.get::<Order>(order.uuid()).await.unwrap();
    let mut via_b = b.get::<Order>(order.uuid()).await.unwrap();
    via_a.quantity = 2;
    via_b.quantity = 3;
    a.save(&mut via_a).await.unwrap();
    let error = b.save(&mut via_b).await.unwrap_err();
    assert!(error.is_conflict(), "{error}");
    assert_eq!(b.get::<Order>(order.uuid()).await.unwrap().quantity, 2);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(
        &path,
        b"this is not sqlite, just some bytes that are long enough to be read",
    )
    .unwrap();
    let error = SqliteStore::open(&path).unwrap_err();
    assert!(error.to_string().starts_with("sqlite store:"), "{error}");
}
