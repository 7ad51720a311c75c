//! The outbox, the global event order, units of writes and the inbox.

use serde_json::json;

use super::super::models::{Address, Customer, Order};
use super::{in_scope, topics};
use crate::prelude::*;
use crate::store::{EventFilter, StoreError};
use crate::{Action, Error, Event};

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
        // Each message carries where the log put its event (header `position`).
        let filter = EventFilter {
            uuid: Some(uuid),
            ..EventFilter::default()
        };
        let stored = repo.store().events(&filter).await.unwrap();
        assert_eq!(stored.len(), 3);
        for (record, version) in pending.iter().zip([1, 2, 2, 2, 3]) {
            let event = stored.iter().find(|e| e.event.version == version).unwrap();
            assert_eq!(
                record
                    .message
                    .headers
                    .get(crate::messaging::headers::POSITION),
                Some(&event.position().to_string()),
                "{}",
                record.message.topic
            );
        }
    })
    .await
}

/// A creation appended alone: its message keeps its headers beside its position; creating the root
/// again is a conflict that writes nothing, and the first creation stays as it was.
pub async fn a_lone_creation_keeps_its_headers_and_is_refused_twice(repo: Repository) {
    let store = repo.store();
    let event = creation("ada");
    let mut messages = event.domain_messages().unwrap();
    assert_eq!(messages.len(), 1);
    messages[0].headers.insert(
        "traceparent".into(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    );
    let stored = store.append(&event, &messages).await.unwrap();
    let pending = store.pending(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    let headers = &pending[0].message.headers;
    assert_eq!(
        headers.get("traceparent").map(String::as_str),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(
        headers.get(crate::messaging::headers::POSITION),
        Some(&stored.position().to_string())
    );
    assert_eq!(pending[0].message.identifier, messages[0].identifier);
    assert_eq!(pending[0].message.content, messages[0].content);

    // The same root created again, with another message and other fields.
    let mut again = event.clone();
    again.fields_diff = vec![crate::FieldDiff::whole("name", "String", json!("bob"))];
    let error = store
        .append(&again, &again.domain_messages().unwrap())
        .await
        .unwrap_err();
    match error {
        StoreError::Conflict {
            uuid,
            expected,
            actual,
            ..
        } => assert_eq!((uuid, expected, actual), (event.uuid, 0, 1)),
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(store.pending(10).await.unwrap().len(), 1);
    let filter = EventFilter {
        uuid: Some(event.uuid),
        ..EventFilter::default()
    };
    assert_eq!(store.events(&filter).await.unwrap().len(), 1);
    let customer = repo.get::<Customer>(event.uuid).await.unwrap().into_inner();
    assert_eq!(customer.name, "ada");

    // Creations appended at once (a store may commit them together): the one of an existing root
    // fails alone.
    let fresh: Vec<Event> = (0..8).map(|i| creation(&format!("c{i}"))).collect();
    let appends: Vec<_> = fresh
        .iter()
        .chain([&again])
        .map(|event| {
            let (store, event) = (store.clone(), event.clone());
            tokio::spawn(async move {
                store
                    .append(&event, &event.domain_messages().unwrap())
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for append in appends {
        results.push(append.await.unwrap());
    }
    assert!(results[..8].iter().all(Result::is_ok), "{results:?}");
    assert!(
        matches!(results[8], Err(StoreError::Conflict { .. })),
        "{results:?}"
    );
    let pending = store.pending(20).await.unwrap();
    assert_eq!(pending.len(), 9);
    for created in &fresh {
        let customer = repo.get::<Customer>(created.uuid).await.unwrap();
        assert_eq!(customer.version(), 1);
        assert!(pending
            .iter()
            .any(|r| r.message.key == created.uuid.to_string()));
    }
    assert_eq!(store.events(&filter).await.unwrap().len(), 1);
    for (created, result) in fresh.iter().zip(&results) {
        assert_eq!(
            position_header(&pending, |m| m.key == created.uuid.to_string()),
            Some(&result.as_ref().unwrap().position().to_string())
        );
    }

    // Creations committed as one unit: with the existing root among them nothing is written; without
    // it, all are, each message with its event's position.
    let unit: Vec<(Event, Vec<_>)> = (0..3)
        .map(|i| {
            let created = creation(&format!("u{i}"));
            let messages = created.domain_messages().unwrap();
            (created, messages)
        })
        .collect();
    let mut refused = unit.clone();
    refused.insert(1, (again.clone(), again.domain_messages().unwrap()));
    let error = repo.commit_unit(&refused, None).await.unwrap_err();
    assert!(error.is_conflict(), "{error}");
    assert_eq!(store.pending(20).await.unwrap().len(), 9);
    assert!(repo.get::<Customer>(unit[0].0.uuid).await.is_err());
    let stored = repo.commit_unit(&unit, None).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert!(
        stored.windows(2).all(|w| w[0].id < w[1].id),
        "in the unit's order"
    );
    let pending = store.pending(20).await.unwrap();
    assert_eq!(pending.len(), 12);
    for (written, (created, messages)) in stored.iter().zip(&unit) {
        assert_eq!(written.event.uuid, created.uuid);
        assert_eq!(
            position_header(&pending, |m| m.identifier == messages[0].identifier),
            Some(&written.position().to_string())
        );
    }
}

/// A new Customer's creation event.
fn creation(name: &str) -> Event {
    Event {
        uuid: uuid::Uuid::now_v7(),
        name: "Customer".into(),
        version: 1,
        action: Action::Create,
        created_at: crate::store::now(),
        fields_diff: vec![crate::FieldDiff::whole("name", "String", json!(name))],
    }
}

/// The `position` header of the pending message `which` picks (which must be there).
fn position_header(
    pending: &[crate::store::OutboxRecord],
    which: impl Fn(&crate::domain::DomainMessage) -> bool,
) -> Option<&String> {
    let record = pending.iter().find(|r| which(&r.message)).unwrap();
    record
        .message
        .headers
        .get(crate::messaging::headers::POSITION)
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

/// Many units at once, every other one failing on its second append: a store that commits writers
/// together (group commit) still rolls back each failing unit alone and keeps every other one whole.
pub async fn concurrent_units_fail_alone(repo: Repository) {
    let mut roots = Vec::new();
    for i in 0..32 {
        roots.push(
            repo.create(Customer {
                name: format!("c{i}"),
            })
            .await
            .unwrap(),
        );
    }
    let pending = repo.store().pending(1000).await.unwrap().len();
    let repo = std::sync::Arc::new(repo);
    let mut tasks = Vec::new();
    for (i, pair) in roots.chunks(2).enumerate() {
        let (first, second) = (pair[0].clone(), pair[1].clone());
        let repo = std::sync::Arc::clone(&repo);
        tasks.push(tokio::spawn(async move {
            let one = event_of(&first, 2, Action::Update, &format!("u{i}"));
            // Odd units name a version the second root is not at: they must leave nothing behind.
            let version = if i % 2 == 1 { 7 } else { 2 };
            let two = event_of(&second, version, Action::Update, &format!("u{i}"));
            let writes = vec![
                (one.clone(), one.domain_messages().unwrap()),
                (two.clone(), two.domain_messages().unwrap()),
            ];
            (i, repo.commit_unit(&writes, None).await)
        }));
    }
    for task in tasks {
        let (i, result) = task.await.unwrap();
        match i % 2 {
            0 => assert_eq!(result.unwrap().len(), 2, "unit {i}"),
            _ => assert!(result.unwrap_err().is_conflict(), "unit {i}"),
        }
    }
    for (i, pair) in roots.chunks(2).enumerate() {
        for root in pair {
            let read = repo.get::<Customer>(root.uuid()).await.unwrap();
            match i % 2 {
                0 => assert_eq!(
                    (read.name.as_str(), read.version()),
                    (format!("u{i}").as_str(), 2)
                ),
                _ => assert_eq!(read.version(), 1, "unit {i} was rolled back whole"),
            }
        }
    }
    let per_append = event_of(&roots[0], 2, Action::Update, "x")
        .domain_messages()
        .unwrap()
        .len();
    assert_eq!(
        repo.store().pending(1000).await.unwrap().len(),
        pending + 16 * per_append,
        "the messages of the 16 committed appends, none of the others"
    );
}

/// A unit with an inbox entry is committed once; a redelivery writes nothing.
pub async fn units_record_the_inbox_once(repo: Repository) {
    let a = repo.create(Customer { name: "a".into() }).await.unwrap();
    let entry = crate::store::InboxEntry::new("svc", Uuid::new_v4());
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
    let other = crate::store::InboxEntry::new("other", entry.identifier);
    repo.commit_unit(&Vec::new(), Some(&other)).await.unwrap();
    assert!(repo.store().is_processed(&other).await.unwrap());
}

/// Many handlers recording and looking up inbox entries at once (the same message delivered twice
/// side by side among them): each entry is recorded once, the second delivery refused, and every
/// look-up answers for its own entry.
pub async fn concurrent_inbox_entries_are_each_recorded_once(repo: Repository) {
    let entries: Vec<_> = (0..48)
        .map(|i| crate::store::InboxEntry::new(format!("svc{}", i % 3), Uuid::new_v4()))
        .collect();
    let mut records = tokio::task::JoinSet::new();
    for (i, entry) in entries.iter().chain(entries.iter()).enumerate() {
        let (repo, entry) = (repo.clone(), entry.clone());
        records.spawn(async move {
            let outcome = repo.commit_unit(&Vec::new(), Some(&entry)).await;
            (i % 48, outcome)
        });
    }
    let mut recorded = [0usize; 48];
    while let Some(joined) = records.join_next().await {
        let (i, outcome) = joined.unwrap();
        match outcome {
            Ok(stored) => {
                assert!(stored.is_empty());
                recorded[i] += 1;
            }
            Err(error) => assert!(
                matches!(error, Error::Store(StoreError::AlreadyProcessed { .. })),
                "{error}"
            ),
        }
    }
    assert_eq!(recorded, [1; 48], "each entry recorded exactly once");

    let unknown: Vec<_> = (0..16)
        .map(|_| crate::store::InboxEntry::new("svc0", Uuid::new_v4()))
        .collect();
    let mut lookups = tokio::task::JoinSet::new();
    for (entry, expected) in entries
        .iter()
        .map(|e| (e, true))
        .chain(unknown.iter().map(|e| (e, false)))
    {
        let (store, entry) = (repo.store().clone(), entry.clone());
        lookups.spawn(async move { (store.is_processed(&entry).await.unwrap(), expected, entry) });
    }
    while let Some(joined) = lookups.join_next().await {
        let (found, expected, entry) = joined.unwrap();
        assert_eq!(found, expected, "{entry:?}");
    }
    // The same identifier under another consumer is another entry.
    let other = crate::store::InboxEntry::new("another", entries[0].identifier);
    assert!(!repo.store().is_processed(&other).await.unwrap());
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

/// A command's reply is kept with its inbox entry, whether the entry is recorded with writes, alone or
/// with a transaction's held writes, and read back whole (a NUL character too); an entry recorded without
/// one, or with one over `INBOX_REPLY_MAX`, has none.
pub async fn the_inbox_keeps_a_commands_reply(repo: Repository) {
    let store = repo.store();
    let reply =
        json!({"status": 200, "content": {"n": 1, "text": "a\u{0}b"}, "headers": {"h": "v"}});
    let mut with_writes = crate::store::InboxEntry::new("svc", Uuid::new_v4());
    with_writes.reply = Some(reply.clone());
    let a = repo.create(Customer { name: "a".into() }).await.unwrap();
    let update = event_of(&a, 2, Action::Update, "replied");
    repo.commit_unit(
        &vec![(update.clone(), update.domain_messages().unwrap())],
        Some(&with_writes),
    )
    .await
    .unwrap();
    assert_eq!(
        store.recorded_reply(&with_writes).await.unwrap(),
        Some(reply.clone())
    );
    // Looked up by consumer and identifier alone.
    let key = crate::store::InboxEntry::new("svc", with_writes.identifier);
    assert_eq!(
        store.recorded_reply(&key).await.unwrap(),
        Some(reply.clone())
    );

    let mut alone = crate::store::InboxEntry::new("svc", Uuid::new_v4());
    alone.reply = Some(json!({"status": 400, "content": {"error": "no"}, "headers": {}}));
    repo.commit_unit(&Vec::new(), Some(&alone)).await.unwrap();
    assert_eq!(store.recorded_reply(&alone).await.unwrap(), alone.reply);

    let mut held = crate::store::InboxEntry::new("svc", Uuid::new_v4());
    held.reply = Some(reply.clone());
    store.hold(Uuid::new_v4(), &[], Some(&held)).await.unwrap();
    assert_eq!(store.recorded_reply(&held).await.unwrap(), Some(reply));

    let plain = crate::store::InboxEntry::new("svc", Uuid::new_v4());
    repo.commit_unit(&Vec::new(), Some(&plain)).await.unwrap();
    assert_eq!(store.recorded_reply(&plain).await.unwrap(), None);
    let mut huge = crate::store::InboxEntry::new("svc", Uuid::new_v4());
    huge.reply = Some(json!({"content": "x".repeat(crate::store::INBOX_REPLY_MAX)}));
    repo.commit_unit(&Vec::new(), Some(&huge)).await.unwrap();
    assert!(store.is_processed(&huge).await.unwrap());
    assert_eq!(store.recorded_reply(&huge).await.unwrap(), None);
    let unknown = crate::store::InboxEntry::new("svc", Uuid::new_v4());
    assert_eq!(store.recorded_reply(&unknown).await.unwrap(), None);
}
