//! Creating, changing and deleting roots: versions, conflicts, diffs, replay and timestamps.

use std::sync::Arc;

use serde_json::{json, Value};

use super::super::models::{Customer, Label, Line, Order};
use super::{in_scope, topics};
use crate::prelude::*;
use crate::store::StoreError;
use crate::{Action, Error, SetAction};

/// A created root has version 1, equal timestamps, and reads back equal.
pub async fn create_assigns_identity_version_and_timestamps(repo: Repository) {
    in_scope(&repo, async {
        let order = Order::create(Order::sample("ada", 10.5)).await.unwrap();
        assert_eq!(order.version(), 1);
        assert_eq!(order.created_at(), order.updated_at());
        assert!(!order.uuid().is_nil());
        let read = Order::get(order.uuid()).await.unwrap();
        assert_eq!(read, order);
        let other = Order::create(Order::sample("bob", 1.0)).await.unwrap();
        assert_ne!(other.uuid(), order.uuid());
    })
    .await
}

/// The creation event's diff lists every field, `None` included.
pub async fn create_event_lists_every_field(repo: Repository) {
    let order = repo.create(Order::sample("ada", 1.0)).await.unwrap();
    let events = repo.events(order.uuid()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].action, Action::Create);
    assert_eq!(events[0].version, 1);
    let names: Vec<&str> = events[0]
        .fields_diff
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(names, <Order as crate::Model>::FIELDS);
    let note = events[0]
        .fields_diff
        .iter()
        .find(|d| d.name == "note")
        .unwrap();
    assert_eq!(note.value, Value::Null);
    assert_eq!(note.type_name, "Option<String>");
}

/// An update event holds only the changed fields and bumps the version by one.
pub async fn save_stores_only_changed_fields(repo: Repository) {
    in_scope(&repo, async {
        let mut order = Order::create(Order::sample("ada", 1.0)).await.unwrap();
        order.total = 2.5;
        order.address.city = "Paris".into();
        assert!(order.save().await.unwrap());
        assert_eq!(order.version(), 2);
        assert!(order.updated_at() >= order.created_at());
        let events = repo.events(order.uuid()).await.unwrap();
        let update = &events[1];
        assert_eq!(update.action, Action::Update);
        let changed: Vec<&str> = update.fields_diff.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(changed, ["total", "address"]);
        assert_eq!(update.fields_diff[0].value, json!(2.5));
        assert_eq!(
            update.fields_diff[1].value,
            json!({"city": "Paris", "zip": "69001"})
        );
        let read = Order::get(order.uuid()).await.unwrap();
        assert_eq!(read.total, 2.5);
        assert_eq!(read.address.city, "Paris");
        assert_eq!(read.version(), 2);
    })
    .await
}

/// Saving an unchanged root stores no event and keeps the version.
pub async fn save_without_change_stores_nothing(repo: Repository) {
    in_scope(&repo, async {
        let mut order = Order::create(Order::sample("ada", 1.0)).await.unwrap();
        let pending_before = repo.store().pending(100).await.unwrap().len();
        assert!(!order.save().await.unwrap());
        order.total = 1.0; // same value: still no change
        assert!(!order.save().await.unwrap());
        assert_eq!(order.version(), 1);
        assert_eq!(repo.events(order.uuid()).await.unwrap().len(), 1);
        assert_eq!(
            repo.store().pending(100).await.unwrap().len(),
            pending_before
        );
    })
    .await
}

/// `update` changes fields with a closure and saves them.
pub async fn update_changes_and_saves(repo: Repository) {
    in_scope(&repo, async {
        let mut order = Order::create(Order::sample("ada", 1.0)).await.unwrap();
        assert!(order.update(|o| o.paid = true).await.unwrap());
        assert!(Order::get(order.uuid()).await.unwrap().paid);
        assert!(!order.update(|o| o.paid = true).await.unwrap());
    })
    .await
}

/// `refresh` reloads the stored state, dropping unsaved changes.
pub async fn refresh_drops_unsaved_changes(repo: Repository) {
    in_scope(&repo, async {
        let mut order = Order::create(Order::sample("ada", 1.0)).await.unwrap();
        let mut other = Order::get(order.uuid()).await.unwrap();
        other.quantity = 7;
        other.save().await.unwrap();
        order.customer = "unsaved".into();
        order.refresh().await.unwrap();
        assert_eq!(order.customer, "ada");
        assert_eq!(order.quantity, 7);
        assert_eq!(order.version(), 2);
        assert!(!order.save().await.unwrap());
    })
    .await
}

/// An unknown uuid is a not-found error.
pub async fn get_unknown_is_not_found(repo: Repository) {
    let error = repo.get::<Order>(Uuid::new_v4()).await.unwrap_err();
    assert!(error.is_not_found(), "{error}");
    assert_eq!(error.status(), 404);
}

/// A uuid of another type is not found as this type.
pub async fn get_with_another_type_is_not_found(repo: Repository) {
    let customer = repo.create(Customer { name: "ada".into() }).await.unwrap();
    let error = repo.get::<Order>(customer.uuid()).await.unwrap_err();
    assert!(error.is_not_found(), "{error}");
}

/// After a delete: reads say "already deleted", saves and deletes fail, queries skip it.
pub async fn delete_makes_reads_fail_and_hides_from_queries(repo: Repository) {
    in_scope(&repo, async {
        let order = Order::create(Order::sample("ada", 1.0)).await.unwrap();
        let keep = Order::create(Order::sample("bob", 1.0)).await.unwrap();
        let mut stale = Order::get(order.uuid()).await.unwrap();
        let uuid = order.uuid();
        order.delete().await.unwrap();
        let error = Order::get(uuid).await.unwrap_err();
        assert!(error.is_deleted(), "{error}");
        assert_eq!(error.status(), 410);
        stale.total = 3.0;
        assert!(stale.save().await.unwrap_err().is_deleted());
        assert!(stale.clone().delete().await.unwrap_err().is_deleted());
        let all = Order::get_all().await.unwrap();
        assert_eq!(
            all.iter().map(|o| o.uuid()).collect::<Vec<_>>(),
            [keep.uuid()]
        );
        let events = repo.events(uuid).await.unwrap();
        assert_eq!(events.last().unwrap().action, Action::Delete);
        assert_eq!(events.last().unwrap().version, 2);
        assert!(events.last().unwrap().fields_diff.is_empty());
    })
    .await
}

/// Two writers from one version: the second gets a conflict, the first's change stays, nothing is lost.
pub async fn stale_writer_gets_a_conflict_and_loses_nothing(repo: Repository) {
    in_scope(&repo, async {
        let order = Order::create(Order::sample("ada", 1.0)).await.unwrap();
        let mut first = Order::get(order.uuid()).await.unwrap();
        let mut second = Order::get(order.uuid()).await.unwrap();
        first.quantity = 2;
        first.save().await.unwrap();
        second.paid = true;
        let error = second.save().await.unwrap_err();
        assert!(error.is_conflict(), "{error}");
        assert_eq!(error.status(), 409);
        match error {
            Error::Store(StoreError::Conflict {
                expected, actual, ..
            }) => {
                assert_eq!((expected, actual), (1, 2));
            }
            other => panic!("expected a conflict, got {other}"),
        }
        // The loser keeps its change and version, so it can reload and retry.
        assert_eq!(second.version(), 1);
        assert!(second.paid);
        second.refresh().await.unwrap();
        second.paid = true;
        second.save().await.unwrap();
        let read = Order::get(order.uuid()).await.unwrap();
        assert_eq!((read.quantity, read.paid, read.version()), (2, true, 3));
    })
    .await
}

/// Many tasks saving from the same version: exactly one wins; the versions stay gapless.
pub async fn concurrent_writers_one_wins_per_version(repo: Repository) {
    let order = repo.create(Order::sample("ada", 1.0)).await.unwrap();
    let repo = Arc::new(repo);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let repo = Arc::clone(&repo);
        let mut copy = order.clone();
        tasks.push(tokio::spawn(async move {
            copy.quantity = 100 + i;
            repo.save(&mut copy).await.map(|_| i)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(i) => winners.push(i),
            Err(error) => assert!(error.is_conflict(), "{error}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let read = repo.get::<Order>(order.uuid()).await.unwrap();
    assert_eq!(read.quantity, 100 + winners[0]);
    let versions: Vec<u64> = repo
        .events(order.uuid())
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2]);
}

/// Adding, changing and removing entity-set members diffs member by member.
pub async fn entity_set_diffs_are_incremental(repo: Repository) {
    in_scope(&repo, async {
        let mut order = Order::sample("ada", 1.0);
        let kept = order.lines.add(Line {
            product: "tea".into(),
            amount: 1,
        });
        let removed = order.lines.add(Line {
            product: "cup".into(),
            amount: 2,
        });
        let mut order = Order::create(order).await.unwrap();
        repo.store().mark_sent(&ids(&repo).await).await.unwrap();

        order.lines.get_mut(&kept).unwrap().amount = 5;
        order.lines.remove(&removed);
        let added = order.lines.add(Line {
            product: "pot".into(),
            amount: 1,
        });
        order.save().await.unwrap();

        let pending = repo.store().pending(100).await.unwrap();
        assert_eq!(
            topics(&pending),
            [
                "OrderUpdated",
                "OrderUpdated.lines.update",
                "OrderUpdated.lines.create",
                "OrderUpdated.lines.delete"
            ]
        );
        let update = &repo.events(order.uuid()).await.unwrap()[1];
        assert_eq!(update.fields_diff.len(), 3);
        assert_eq!(update.fields_diff[0].action, Some(SetAction::Update));
        assert_eq!(update.fields_diff[0].value["uuid"], json!(kept.to_string()));
        assert_eq!(update.fields_diff[0].value["amount"], json!(5));

        let read = Order::get(order.uuid()).await.unwrap();
        let members: Vec<(Uuid, String, i64)> = read
            .lines
            .iter()
            .map(|(u, l)| (*u, l.product.clone(), l.amount))
            .collect();
        assert_eq!(
            members,
            [(kept, "tea".to_owned(), 5), (added, "pot".to_owned(), 1)]
        );
    })
    .await
}

/// Adding and removing value-object-set members diffs member by member.
pub async fn value_object_set_diffs_are_incremental(repo: Repository) {
    in_scope(&repo, async {
        let mut order = Order::sample("ada", 1.0);
        order.labels.insert(Label { text: "old".into() });
        let mut order = Order::create(order).await.unwrap();
        repo.store().mark_sent(&ids(&repo).await).await.unwrap();
        assert!(!order.labels.insert(Label { text: "old".into() }));
        order.labels.insert(Label { text: "new".into() });
        order.labels.remove(&Label { text: "old".into() });
        order.save().await.unwrap();
        let pending = repo.store().pending(100).await.unwrap();
        assert_eq!(
            topics(&pending),
            [
                "OrderUpdated",
                "OrderUpdated.labels.create",
                "OrderUpdated.labels.delete"
            ]
        );
        let read = Order::get(order.uuid()).await.unwrap();
        let labels: Vec<&str> = read.labels.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(labels, ["new"]);
    })
    .await
}

async fn ids(repo: &Repository) -> Vec<i64> {
    repo.store()
        .pending(1000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect()
}

/// Folding a root's events gives the same root as its snapshot.
pub async fn replaying_events_gives_the_snapshot(repo: Repository) {
    in_scope(&repo, async {
        let mut order = Order::create(Order::sample("ada", 1.0)).await.unwrap();
        for i in 0..5 {
            order.quantity = i;
            order.tags.push(format!("t{i}"));
            order.lines.add(Line {
                product: format!("p{i}"),
                amount: i,
            });
            order.extra.insert(format!("k{i}"), i);
            order.save().await.unwrap();
        }
        let events = repo.events(order.uuid()).await.unwrap();
        assert_eq!(events.len(), 6);
        let replayed = Root::<Order>::replay(&events).unwrap().unwrap();
        let read = Order::get(order.uuid()).await.unwrap();
        assert_eq!(replayed, read);
        assert_eq!(read, order);
    })
    .await
}

/// Times read back equal to the ones returned at write time.
pub async fn timestamps_survive_a_reload(repo: Repository) {
    in_scope(&repo, async {
        let mut order = Order::create(Order::sample("ada", 1.0)).await.unwrap();
        order.quantity = 3;
        order.save().await.unwrap();
        let read = Order::get(order.uuid()).await.unwrap();
        assert_eq!(read.created_at(), order.created_at());
        assert_eq!(read.updated_at(), order.updated_at());
        assert_eq!(read.placed, order.placed);
    })
    .await
}
