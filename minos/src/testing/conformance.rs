//! The store conformance suite: the behaviour every backend must show, written once.
//!
//! Run it against a backend with [`conformance_tests!`](crate::conformance_tests), giving an async
//! expression that makes a fresh, empty [`Repository`] for each case:
//!
//! ```text
//! minos::conformance_tests!(async { minos::Repository::memory() });
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::models::{Address, Customer, Label, Line, Order};
use crate::prelude::*;
use crate::store::{EventFilter, Query, StoreError};
use crate::{Action, Error, Event, SetAction};

/// Generates one `#[tokio::test]` per conformance case, each on a fresh repository from `$make`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            create_assigns_identity_version_and_timestamps,
            create_event_lists_every_field,
            save_stores_only_changed_fields,
            save_without_change_stores_nothing,
            update_changes_and_saves,
            refresh_drops_unsaved_changes,
            get_unknown_is_not_found,
            get_with_another_type_is_not_found,
            delete_makes_reads_fail_and_hides_from_queries,
            stale_writer_gets_a_conflict_and_loses_nothing,
            concurrent_writers_one_wins_per_version,
            outbox_holds_domain_messages_in_order,
            outbox_marks_messages_sent,
            entity_set_diffs_are_incremental,
            value_object_set_diffs_are_incremental,
            replaying_events_gives_the_snapshot,
            timestamps_survive_a_reload,
            comparisons_on_scalars_and_paths,
            one_rule_for_nulls_and_mismatched_kinds,
            boolean_combinations,
            in_contains_and_like,
            meta_fields_are_queryable,
            ordering_and_limit,
            query_values_are_inert,
            invalid_field_paths_are_rejected,
            find_one_reports_no_match,
            queries_are_futures,
            references_store_only_the_uuid,
            create_json_rejects_caller_identity,
            events_read_in_global_order,
            units_commit_all_or_nothing,
            units_record_the_inbox_once,
            staged_writes_wait_for_the_unit_commit,
            transactions_are_saved_and_found_by_status,
            transactions_hold_writes_until_released,
            transaction_writes_are_private_until_committed,
            reserve_refuses_conflicts_and_reject_drops_writes,
            nested_transactions_commit_into_their_destination,
            claims_are_exclusive_per_destination_until_released,
            saga_executions_are_saved_and_listed
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let repository: $crate::Repository = $make.await;
                $crate::testing::conformance::$case(repository).await;
            }
        )*
    };
}

fn topics(records: &[crate::store::OutboxRecord]) -> Vec<&str> {
    records.iter().map(|r| r.message.topic.as_str()).collect()
}

async fn in_scope<F: std::future::Future>(repository: &Repository, future: F) -> F::Output {
    repository.clone().scope(future).await
}

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

/// Created, updated (with one message per field) and deleted messages, keyed by uuid, in order.
pub async fn outbox_holds_domain_messages_in_order(repo: Repository) {
    in_scope(&repo, async {
        let mut order = Order::create(Order::sample("ada", 1.0)).await.unwrap();
        order.total = 2.0;
        order.note = Some("fragile".into());
        order.save().await.unwrap();
        let uuid = order.uuid();
        order.delete().await.unwrap();
        let pending = repo.store().pending(100).await.unwrap();
        assert_eq!(
            topics(&pending),
            [
                "OrderCreated",
                "OrderUpdated",
                "OrderUpdated.total",
                "OrderUpdated.note",
                "OrderDeleted"
            ]
        );
        assert!(pending.windows(2).all(|w| w[0].id < w[1].id));
        assert!(pending.iter().all(|r| r.message.key == uuid.to_string()));
        let created: Event = serde_json::from_value(pending[0].message.content.clone()).unwrap();
        assert_eq!(
            (created.uuid, created.version, created.action),
            (uuid, 1, Action::Create)
        );
        assert_eq!(
            created.fields_diff.len(),
            <Order as crate::Model>::FIELDS.len()
        );
        let updated: Event = serde_json::from_value(pending[1].message.content.clone()).unwrap();
        assert_eq!(updated.fields_diff.len(), 2);
        let single: Event = serde_json::from_value(pending[3].message.content.clone()).unwrap();
        assert_eq!(single.version, 2);
        assert_eq!(single.created_at, updated.created_at);
        assert_eq!(single.fields_diff.len(), 1);
        assert_eq!(single.fields_diff[0].name, "note");
        assert_eq!(single.fields_diff[0].value, json!("fragile"));
        let deleted: Event = serde_json::from_value(pending[4].message.content.clone()).unwrap();
        assert_eq!((deleted.version, deleted.action), (3, Action::Delete));
    })
    .await
}

/// Sent messages leave the pending list; the rest keep their order.
pub async fn outbox_marks_messages_sent(repo: Repository) {
    for name in ["a", "b", "c"] {
        repo.create(Customer { name: name.into() }).await.unwrap();
    }
    let pending = repo.store().pending(2).await.unwrap();
    assert_eq!(pending.len(), 2);
    repo.store().mark_sent(&[pending[0].id]).await.unwrap();
    let rest = repo.store().pending(10).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].id, pending[1].id);
    let names: Vec<&str> = rest
        .iter()
        .map(|r| {
            r.message.content["fields_diff"][0]["value"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["b", "c"]);
    repo.store()
        .mark_sent(&rest.iter().map(|r| r.id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(repo.store().pending(10).await.unwrap().is_empty());
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

/// customer, total, quantity, paid, note, tags, city
type SeedRow = (
    &'static str,
    f64,
    i64,
    bool,
    Option<&'static str>,
    &'static [&'static str],
    &'static str,
);

async fn seed(repo: &Repository) -> Vec<Root<Order>> {
    let mut out = Vec::new();
    let rows: [SeedRow; 4] = [
        ("ada", 10.0, 1, true, Some("gift"), &["red", "big"], "Paris"),
        ("bob", 20.5, 2, false, None, &["blue"], "Lyon"),
        ("Cy", 5.25, 3, true, Some("Gift wrap"), &[], "Paris"),
        ("dee_x", 20.5, 4, false, Some("x%y"), &["red"], "Nice"),
    ];
    for (customer, total, quantity, paid, note, tags, city) in rows {
        let mut order = Order::sample(customer, total);
        order.quantity = quantity;
        order.paid = paid;
        order.note = note.map(str::to_owned);
        order.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        order.address.city = city.into();
        order.extra = BTreeMap::from([("score".to_owned(), quantity * 10)]);
        out.push(repo.create(order).await.unwrap());
    }
    out
}

async fn customers(repo: &Repository, condition: Condition) -> Vec<String> {
    let query = Query {
        condition,
        ..Query::default()
    };
    let found = repo.find::<Order>(&query).await.unwrap();
    found.iter().map(|o| o.customer.clone()).collect()
}

/// `=`, `≠`, `<`, `≤`, `>`, `≥` on numbers, strings, booleans, nulls and dotted paths.
pub async fn comparisons_on_scalars_and_paths(repo: Repository) {
    seed(&repo).await;
    assert_eq!(
        customers(&repo, Condition::eq("customer", "bob")).await,
        ["bob"]
    );
    assert_eq!(
        customers(&repo, Condition::eq("total", 20.5)).await,
        ["bob", "dee_x"]
    );
    assert_eq!(customers(&repo, Condition::eq("quantity", 3)).await, ["Cy"]);
    assert_eq!(
        customers(&repo, Condition::eq("paid", true)).await,
        ["ada", "Cy"]
    );
    assert_eq!(
        customers(&repo, Condition::ne("paid", true)).await,
        ["bob", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::eq("note", Value::Null)).await,
        ["bob"]
    );
    assert_eq!(
        customers(&repo, Condition::ne("note", "gift")).await,
        ["bob", "Cy", "dee_x"]
    );
    assert_eq!(customers(&repo, Condition::lt("total", 10.0)).await, ["Cy"]);
    assert_eq!(
        customers(&repo, Condition::le("total", 10)).await,
        ["ada", "Cy"]
    );
    assert_eq!(
        customers(&repo, Condition::gt("quantity", 2)).await,
        ["Cy", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::ge("quantity", 2)).await,
        ["bob", "Cy", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::lt("customer", "bob")).await,
        ["ada", "Cy"]
    );
    assert_eq!(
        customers(&repo, Condition::eq("address.city", "Paris")).await,
        ["ada", "Cy"]
    );
    assert_eq!(
        customers(&repo, Condition::gt("extra.score", 25)).await,
        ["Cy", "dee_x"]
    );
    assert!(customers(&repo, Condition::eq("address.nowhere", "x"))
        .await
        .is_empty());
}

/// One rule on every store: `ne` is `!eq` (null and missing fields included), `eq(f, null)` matches
/// missing or null fields, values of different kinds are never equal and never ordered.
pub async fn one_rule_for_nulls_and_mismatched_kinds(repo: Repository) {
    seed(&repo).await;
    let all = ["ada", "bob", "Cy", "dee_x"];
    // Null.
    assert_eq!(
        customers(&repo, Condition::ne("note", Value::Null)).await,
        ["ada", "Cy", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::eq("nowhere", Value::Null)).await,
        all
    );
    assert!(customers(&repo, Condition::ne("nowhere", Value::Null))
        .await
        .is_empty());
    assert_eq!(customers(&repo, Condition::ne("nowhere", "x")).await, all);
    for cmp in [
        Condition::lt("note", Value::Null),
        Condition::ge("note", Value::Null),
        Condition::gt("nowhere", 1),
    ] {
        assert!(customers(&repo, cmp.clone()).await.is_empty(), "{cmp:?}");
    }
    // `ne` and `!eq` agree, and so do `!ne` and `eq`.
    for (field, value) in [
        ("note", json!("gift")),
        ("note", Value::Null),
        ("paid", json!(true)),
        ("quantity", json!(2)),
        ("nowhere", json!(1)),
    ] {
        assert_eq!(
            customers(&repo, Condition::ne(field, value.clone())).await,
            customers(&repo, !Condition::eq(field, value.clone())).await,
            "ne and !eq on {field} {value}"
        );
        assert_eq!(
            customers(&repo, !Condition::ne(field, value.clone())).await,
            customers(&repo, Condition::eq(field, value.clone())).await,
            "!ne and eq on {field} {value}"
        );
    }
    // A string is not a number, a number is not a boolean, on data and meta fields alike.
    assert!(customers(&repo, Condition::eq("version", "1"))
        .await
        .is_empty());
    assert_eq!(customers(&repo, Condition::eq("version", 1)).await, all);
    assert!(customers(&repo, Condition::eq("quantity", "1"))
        .await
        .is_empty());
    assert!(customers(&repo, Condition::eq("paid", 1)).await.is_empty());
    assert!(customers(&repo, Condition::eq("paid", 0)).await.is_empty());
    assert!(customers(&repo, Condition::eq("customer", 1))
        .await
        .is_empty());
    assert!(customers(&repo, Condition::gt("customer", 1))
        .await
        .is_empty());
    assert!(customers(&repo, Condition::lt("quantity", "9"))
        .await
        .is_empty());
    assert!(customers(&repo, Condition::lt("paid", 5)).await.is_empty());
    assert!(customers(&repo, Condition::gt("version", "0"))
        .await
        .is_empty());
    assert_eq!(customers(&repo, Condition::ne("paid", 1)).await, all);
    // Numbers compare by value; booleans order false < true.
    assert_eq!(
        customers(&repo, Condition::eq("quantity", 3.0)).await,
        ["Cy"]
    );
    assert_eq!(
        customers(&repo, Condition::gt("paid", false)).await,
        ["ada", "Cy"]
    );
    // `is_in` is any `eq`: a null candidate matches missing or null fields.
    assert_eq!(
        customers(
            &repo,
            Condition::is_in("note", [json!("gift"), Value::Null])
        )
        .await,
        ["ada", "bob"]
    );
    assert!(customers(&repo, Condition::is_in("quantity", ["1", "2"]))
        .await
        .is_empty());
    // Arrays and objects: equal as values, never ordered.
    assert_eq!(
        customers(&repo, Condition::eq("tags", json!(["red", "big"]))).await,
        ["ada"]
    );
    assert_eq!(
        customers(
            &repo,
            Condition::eq("address", json!({"city": "Nice", "zip": "69001"}))
        )
        .await,
        ["dee_x"]
    );
    assert!(customers(&repo, Condition::gt("tags", json!(["a"])))
        .await
        .is_empty());
    // Membership and patterns follow the same kinds; their negations include missing fields.
    assert!(customers(&repo, Condition::contains("tags", 1))
        .await
        .is_empty());
    assert_eq!(
        customers(&repo, !Condition::like("note", "gift")).await,
        ["bob", "Cy", "dee_x"]
    );
    assert_eq!(
        customers(&repo, !Condition::like("nowhere", "%")).await,
        all
    );
    assert_eq!(
        customers(&repo, !Condition::contains("nowhere", "red")).await,
        all
    );
}

/// TRUE, FALSE, AND, OR, NOT and their empty forms.
pub async fn boolean_combinations(repo: Repository) {
    seed(&repo).await;
    assert_eq!(customers(&repo, Condition::True).await.len(), 4);
    assert!(customers(&repo, Condition::False).await.is_empty());
    assert_eq!(
        customers(
            &repo,
            Condition::eq("paid", true) & Condition::eq("address.city", "Paris")
        )
        .await,
        ["ada", "Cy"]
    );
    assert_eq!(
        customers(
            &repo,
            Condition::eq("customer", "ada") | Condition::gt("quantity", 3)
        )
        .await,
        ["ada", "dee_x"]
    );
    assert_eq!(
        customers(&repo, !Condition::eq("paid", true)).await,
        ["bob", "dee_x"]
    );
    assert_eq!(
        customers(&repo, !Condition::eq("note", "gift")).await,
        ["bob", "Cy", "dee_x"]
    );
    assert_eq!(customers(&repo, Condition::and([])).await.len(), 4);
    assert!(customers(&repo, Condition::or([])).await.is_empty());
    assert_eq!(
        customers(&repo, !(Condition::False | Condition::eq("quantity", 1))).await,
        ["bob", "Cy", "dee_x"]
    );
}

/// IN, CONTAINS (array membership) and LIKE (full, case-sensitive match, `%` and `_`).
pub async fn in_contains_and_like(repo: Repository) {
    seed(&repo).await;
    assert_eq!(
        customers(&repo, Condition::is_in("quantity", [1, 4, 9])).await,
        ["ada", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::is_in("customer", ["Cy", "zed"])).await,
        ["Cy"]
    );
    assert!(
        customers(&repo, Condition::is_in("customer", Vec::<String>::new()))
            .await
            .is_empty()
    );
    assert_eq!(
        customers(&repo, Condition::contains("tags", "red")).await,
        ["ada", "dee_x"]
    );
    assert!(customers(&repo, Condition::contains("customer", "a"))
        .await
        .is_empty());
    assert_eq!(
        customers(&repo, Condition::like("note", "gift")).await,
        ["ada"]
    );
    assert_eq!(
        customers(&repo, Condition::like("note", "%ift%")).await,
        ["ada", "Cy"]
    );
    assert_eq!(
        customers(&repo, Condition::like("note", "Gift%")).await,
        ["Cy"]
    );
    assert!(customers(&repo, Condition::like("note", "gif"))
        .await
        .is_empty());
    assert_eq!(
        customers(&repo, Condition::like("customer", "_o_")).await,
        ["bob"]
    );
    assert_eq!(
        customers(&repo, Condition::like("customer", "dee_%")).await,
        ["dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::like("note", "x%")).await,
        ["dee_x"]
    );
    assert!(customers(&repo, Condition::like("quantity", "1"))
        .await
        .is_empty());
}

/// `uuid`, `version`, `created_at` and `updated_at` can be filtered and sorted on.
pub async fn meta_fields_are_queryable(repo: Repository) {
    let orders = seed(&repo).await;
    let mut bob = repo.get::<Order>(orders[1].uuid()).await.unwrap();
    bob.quantity = 20;
    repo.save(&mut bob).await.unwrap();
    assert_eq!(customers(&repo, Condition::eq("version", 2)).await, ["bob"]);
    assert_eq!(
        customers(&repo, Condition::eq("uuid", orders[2].uuid().to_string())).await,
        ["Cy"]
    );
    let since = crate::store::format_time(orders[2].created_at());
    assert_eq!(
        customers(&repo, Condition::ge("created_at", since)).await,
        ["Cy", "dee_x"]
    );
    // Uuids, times and references are condition values as they are, no `.to_string()`.
    assert_eq!(
        customers(&repo, Condition::eq("uuid", orders[2].uuid())).await,
        ["Cy"]
    );
    let uuids: Vec<Uuid> = orders.iter().skip(2).map(|o| o.uuid()).collect();
    assert_eq!(
        customers(&repo, Condition::is_in("uuid", uuids)).await,
        ["Cy", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::ge("created_at", orders[2].created_at())).await,
        ["Cy", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::lt("created_at", orders[1].created_at())).await,
        ["ada"]
    );
    assert_eq!(
        customers(&repo, Condition::eq("customer_ref", None::<Ref<Customer>>))
            .await
            .len(),
        4
    );
    let query = Query {
        ordering: Some(Ordering::desc("updated_at")),
        limit: Some(1),
        ..Query::default()
    };
    assert_eq!(repo.find::<Order>(&query).await.unwrap()[0].customer, "bob");
}

/// Ordering ascending and descending (ties keep insertion order), and limit.
pub async fn ordering_and_limit(repo: Repository) {
    seed(&repo).await;
    in_scope(&repo, async {
        let names =
            |found: Vec<Root<Order>>| found.iter().map(|o| o.customer.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(Order::get_all().await.unwrap()),
            ["ada", "bob", "Cy", "dee_x"]
        );
        assert_eq!(
            names(
                Order::get_all()
                    .order_by(Ordering::asc("total"))
                    .await
                    .unwrap()
            ),
            ["Cy", "ada", "bob", "dee_x"]
        );
        assert_eq!(
            names(
                Order::get_all()
                    .order_by(Ordering::desc("quantity"))
                    .limit(2)
                    .await
                    .unwrap()
            ),
            ["dee_x", "Cy"]
        );
        assert_eq!(
            names(
                Order::get_all()
                    .order_by(Ordering::asc("customer"))
                    .await
                    .unwrap()
            ),
            ["Cy", "ada", "bob", "dee_x"]
        );
        assert_eq!(
            names(
                Order::find(Condition::eq("paid", false))
                    .order_by(Ordering::desc("address.city"))
                    .await
                    .unwrap()
            ),
            ["dee_x", "bob"]
        );
        assert_eq!(
            names(
                Order::get_all()
                    .order_by(Ordering::asc("note"))
                    .await
                    .unwrap()
            ),
            ["bob", "Cy", "ada", "dee_x"]
        );
        assert!(Order::get_all().limit(0).await.unwrap().is_empty());
    })
    .await
}

/// Values that look like SQL are compared as plain values.
pub async fn query_values_are_inert(repo: Repository) {
    seed(&repo).await;
    let attacks = [
        "' OR '1'='1",
        "ada' --",
        "\"); DROP TABLE snapshots; --",
        "%' OR 1=1 OR customer LIKE '%",
    ];
    for attack in attacks {
        assert!(
            customers(&repo, Condition::eq("customer", attack))
                .await
                .is_empty(),
            "{attack}"
        );
        assert!(
            customers(&repo, Condition::like("customer", attack))
                .await
                .is_empty(),
            "{attack}"
        );
        assert!(
            customers(&repo, Condition::is_in("customer", [attack]))
                .await
                .is_empty(),
            "{attack}"
        );
    }
    // The data is still all there.
    assert_eq!(customers(&repo, Condition::True).await.len(), 4);
    let mut evil = Order::sample("x'); DELETE FROM events; --", 1.0);
    evil.note = Some("\"}, \"paid\": true".into());
    let evil = repo.create(evil).await.unwrap();
    let read = repo.get::<Order>(evil.uuid()).await.unwrap();
    assert_eq!(read.customer, "x'); DELETE FROM events; --");
    assert!(!read.paid);
    assert_eq!(
        customers(
            &repo,
            Condition::eq("customer", "x'); DELETE FROM events; --")
        )
        .await
        .len(),
        1
    );
}

/// Field paths that are not dotted identifiers are refused before reaching the backend.
pub async fn invalid_field_paths_are_rejected(repo: Repository) {
    seed(&repo).await;
    for path in ["customer') OR 1=1 --", "a..b", "", "$.customer", "a b"] {
        let query = Query {
            condition: Condition::eq(path, "x"),
            ..Query::default()
        };
        let error = repo.find::<Order>(&query).await.unwrap_err();
        assert!(
            matches!(error, Error::Store(StoreError::InvalidQuery(_))),
            "{path}: {error}"
        );
        assert_eq!(error.status(), 400);
        let ordered = Query {
            ordering: Some(Ordering::asc(path)),
            ..Query::default()
        };
        assert!(repo.find::<Order>(&ordered).await.is_err(), "{path}");
    }
}

/// `find_one` returns the first match, or a not-found error.
pub async fn find_one_reports_no_match(repo: Repository) {
    seed(&repo).await;
    in_scope(&repo, async {
        let found = Order::find_one(Condition::eq("quantity", 2)).await.unwrap();
        assert_eq!(found.customer, "bob");
        let error = Order::find_one(Condition::eq("quantity", 99))
            .await
            .unwrap_err();
        assert!(error.is_not_found(), "{error}");
    })
    .await
}

/// `Foo::find(..)` and `Foo::get_all()` are futures: they can be handed to anything that takes one,
/// and run on the repository of the task that polls them.
pub async fn queries_are_futures(repo: Repository) {
    seed(&repo).await;
    let all = repo.clone().scope(Order::get_all()).await.unwrap();
    assert_eq!(all.len(), 4);
    let query = Order::find(Condition::eq("paid", true))
        .order_by(crate::Ordering::desc("quantity"))
        .limit(1);
    let spawned = tokio::spawn(repo.clone().scope(query))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(spawned.len(), 1);
    assert_eq!(spawned[0].customer, "Cy");
    let no_repository = tokio::spawn(Order::get_all()).await.unwrap().unwrap_err();
    assert!(
        matches!(no_repository, Error::NoRepository),
        "{no_repository}"
    );
}

/// A `Ref` is stored as the uuid alone and reads back unresolved.
pub async fn references_store_only_the_uuid(repo: Repository) {
    in_scope(&repo, async {
        let customer = Customer::create(Customer { name: "ada".into() })
            .await
            .unwrap();
        let mut order = Order::sample("ada", 1.0);
        order.customer_ref = Some(Ref::resolved(customer.clone()));
        let order = Order::create(order).await.unwrap();
        let events = repo.events(order.uuid()).await.unwrap();
        let diff = events[0]
            .fields_diff
            .iter()
            .find(|d| d.name == "customer_ref")
            .unwrap();
        assert_eq!(diff.value, json!(customer.uuid().to_string()));
        let read = Order::get(order.uuid()).await.unwrap();
        let reference = read.customer_ref.as_ref().unwrap();
        assert_eq!(reference.uuid(), customer.uuid());
        assert!(!reference.is_resolved());
        let found = Order::find(Condition::eq("customer_ref", customer.uuid().to_string()))
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
    })
    .await
}

/// The JSON entry point refuses caller-supplied identity, version and timestamps.
pub async fn create_json_rejects_caller_identity(repo: Repository) {
    for key in crate::RESERVED_FIELDS {
        let mut fields = serde_json::Map::new();
        fields.insert("name".into(), json!("ada"));
        fields.insert(key.into(), json!(1));
        let error = repo.create_json("Customer", fields).await.unwrap_err();
        assert!(
            matches!(error, Error::ReservedField { ref field } if field == key),
            "{error}"
        );
        assert_eq!(error.status(), 400);
    }
    assert!(repo
        .store()
        .events(&EventFilter::default())
        .await
        .unwrap()
        .is_empty());
    let mut fields = serde_json::Map::new();
    fields.insert("name".into(), json!("ada"));
    let snapshot = repo.create_json("Customer", fields).await.unwrap();
    let read = repo.get::<Customer>(snapshot.uuid).await.unwrap();
    assert_eq!(read.name, "ada");
}

/// Events of several roots come back in commit order; filters by uuid, name and position work.
pub async fn events_read_in_global_order(repo: Repository) {
    let a = repo.create(Customer { name: "a".into() }).await.unwrap();
    let b = repo.create(Order::sample("b", 1.0)).await.unwrap();
    let mut a2 = a.clone();
    a2.name = "a2".into();
    repo.save(&mut a2).await.unwrap();
    let all = repo.store().events(&EventFilter::default()).await.unwrap();
    let order: Vec<(Uuid, u64)> = all
        .iter()
        .map(|s| (s.event.uuid, s.event.version))
        .collect();
    assert_eq!(order, [(a.uuid(), 1), (b.uuid(), 1), (a.uuid(), 2)]);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let customers = EventFilter {
        name: Some("Customer".into()),
        ..EventFilter::default()
    };
    assert_eq!(repo.store().events(&customers).await.unwrap().len(), 2);
    let after = EventFilter {
        after_id: Some(all[0].id),
        limit: Some(1),
        ..EventFilter::default()
    };
    let next = repo.store().events(&after).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event.uuid, b.uuid());
}

#[allow(dead_code)]
fn assert_address_is_a_value(address: Address) -> Address {
    address
}

fn event_of(root: &Root<Customer>, version: u64, action: Action, name: &str) -> Event {
    Event {
        uuid: root.uuid(),
        name: "Customer".into(),
        version,
        action,
        created_at: crate::store::now(),
        fields_diff: vec![crate::FieldDiff::whole("name", "String", json!(name))],
    }
}

/// A unit whose second append conflicts stores nothing at all.
pub async fn units_commit_all_or_nothing(repo: Repository) {
    let a = repo.create(Customer { name: "a".into() }).await.unwrap();
    let b = repo.create(Customer { name: "b".into() }).await.unwrap();
    let pending = repo.store().pending(100).await.unwrap().len();
    let good = event_of(&a, 2, Action::Update, "a2");
    let stale = event_of(&b, 5, Action::Update, "b5");
    let writes = vec![
        (good.clone(), good.domain_messages().unwrap()),
        (stale.clone(), stale.domain_messages().unwrap()),
    ];
    let error = repo.commit_unit(&writes, None).await.unwrap_err();
    assert!(error.is_conflict(), "{error}");
    assert_eq!(
        repo.get::<Customer>(a.uuid()).await.unwrap().name,
        "a",
        "the first append was rolled back"
    );
    assert_eq!(repo.store().pending(100).await.unwrap().len(), pending);

    let next = event_of(&b, 2, Action::Update, "b2");
    let writes = vec![
        (good.clone(), good.domain_messages().unwrap()),
        (next.clone(), next.domain_messages().unwrap()),
    ];
    let stored = repo.commit_unit(&writes, None).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(repo.get::<Customer>(a.uuid()).await.unwrap().name, "a2");
    assert_eq!(repo.get::<Customer>(b.uuid()).await.unwrap().name, "b2");
}

/// A unit with an inbox entry is committed once; a redelivery writes nothing.
pub async fn units_record_the_inbox_once(repo: Repository) {
    let a = repo.create(Customer { name: "a".into() }).await.unwrap();
    let entry = crate::store::InboxEntry {
        consumer: "svc".into(),
        identifier: Uuid::new_v4(),
    };
    assert!(!repo.store().is_processed(&entry).await.unwrap());
    let update = event_of(&a, 2, Action::Update, "once");
    let writes = vec![(update.clone(), update.domain_messages().unwrap())];
    repo.commit_unit(&writes, Some(&entry)).await.unwrap();
    assert!(repo.store().is_processed(&entry).await.unwrap());
    let again = event_of(&a, 3, Action::Update, "twice");
    let error = repo
        .commit_unit(
            &vec![(again.clone(), again.domain_messages().unwrap())],
            Some(&entry),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Store(StoreError::AlreadyProcessed { .. })),
        "{error}"
    );
    let read = repo.get::<Customer>(a.uuid()).await.unwrap();
    assert_eq!((read.name.as_str(), read.version()), ("once", 2));
    let other = crate::store::InboxEntry {
        consumer: "other".into(),
        identifier: entry.identifier,
    };
    repo.commit_unit(&Vec::new(), Some(&other)).await.unwrap();
    assert!(repo.store().is_processed(&other).await.unwrap());
}

/// Writes inside `staged` reach the store only through `commit_unit`.
pub async fn staged_writes_wait_for_the_unit_commit(repo: Repository) {
    let (result, writes) = repo
        .staged(in_scope(&repo, async {
            let mut customer = Customer::create(Customer { name: "x".into() }).await?;
            customer.name = "y".into();
            customer.save().await?;
            Ok::<_, Error>(customer)
        }))
        .await;
    let customer = result.unwrap();
    assert_eq!(customer.version(), 2);
    assert_eq!(writes.len(), 2);
    assert!(repo
        .get::<Customer>(customer.uuid())
        .await
        .unwrap_err()
        .is_not_found());
    assert!(repo.store().pending(10).await.unwrap().is_empty());
    repo.commit_unit(&writes, None).await.unwrap();
    let read = repo.get::<Customer>(customer.uuid()).await.unwrap();
    assert_eq!((read.name.as_str(), read.version()), ("y", 2));
    let topics: Vec<String> = repo
        .store()
        .pending(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.message.topic)
        .collect();
    assert_eq!(
        topics,
        ["CustomerCreated", "CustomerUpdated", "CustomerUpdated.name"]
    );
}

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

/// A transaction's held writes come back in order, apart from other transactions', until released.
pub async fn transactions_hold_writes_until_released(repo: Repository) {
    let store = repo.store();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let ((), writes) = repo
        .staged(in_scope(&repo, async {
            let mut customer = Customer::create(Customer { name: "x".into() })
                .await
                .unwrap();
            customer.name = "y".into();
            customer.save().await.unwrap();
        }))
        .await;
    store.hold(a, &writes[..1], None).await.unwrap();
    store.hold(b, &writes, None).await.unwrap();
    let inbox = crate::store::InboxEntry {
        consumer: "svc".into(),
        identifier: Uuid::new_v4(),
    };
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
