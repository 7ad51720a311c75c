//! The PostgreSQL store against the real server: the conformance suite, then what only a real server
//! can answer (races between connections, many concurrent writers, migrations, advisory locks).
#![allow(missing_docs)]

use std::sync::Arc;

use minos::prelude::*;
use minos::store::{EventFilter, PostgresStore, TransactionStore};
use minos::testing::models::{Customer, Order};
use minos_support::postgres::{fresh_repository, fresh_schema_url};

mod conformance {
    minos::conformance_tests!(minos_support::postgres::fresh_repository());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_racing_on_one_root_lose_nothing() {
    let url = fresh_schema_url();
    let a = Repository::new(PostgresStore::connect(&url).await.unwrap());
    let b = Repository::new(PostgresStore::connect(&url).await.unwrap());
    let order = a.create(Order::sample("ada", 0.0)).await.unwrap();
    let mut applied = 0;
    for _ in 0..30 {
        let mut via_a = a.get::<Order>(order.uuid()).await.unwrap();
        let mut via_b = b.get::<Order>(order.uuid()).await.unwrap();
        via_a.quantity += 1;
        via_b.quantity += 1;
        let (ra, rb) = tokio::join!(a.save(&mut via_a), b.save(&mut via_b));
        let outcomes = [ra, rb];
        let wins = outcomes.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "exactly one writer wins: {outcomes:?}");
        for outcome in &outcomes {
            if let Err(error) = outcome {
                assert!(error.is_conflict(), "{error}");
            }
        }
        applied += 1;
    }
    let read = b.get::<Order>(order.uuid()).await.unwrap();
    assert_eq!(
        read.quantity,
        1 + applied,
        "every winning increment is kept"
    );
    assert_eq!(read.version(), 1 + applied as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_creates_are_all_stored() {
    let repository = Arc::new(fresh_repository().await);
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let repository = Arc::clone(&repository);
            tokio::spawn(async move {
                repository
                    .create(Customer {
                        name: format!("c{i}"),
                    })
                    .await
            })
        })
        .collect();
    let mut uuids = Vec::new();
    for task in tasks {
        let customer = task.await.unwrap().expect("every create succeeds");
        assert_eq!(customer.version(), 1);
        uuids.push(customer.uuid());
    }
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), 1000);
    let events = repository
        .store()
        .events(&EventFilter::default())
        .await
        .unwrap();
    assert_eq!(events.len(), 1000);
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(repository.store().pending(2000).await.unwrap().len(), 1000);
    let all = Repository::clone(&repository)
        .scope(async { Customer::get_all().await })
        .await
        .unwrap();
    assert_eq!(all.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_with_retries_keep_versions_gapless() {
    let repository = Arc::new(fresh_repository().await);
    let order = repository.create(Order::sample("ada", 0.0)).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let repository = Arc::clone(&repository);
            let uuid = order.uuid();
            tokio::spawn(async move {
                loop {
                    let mut current = repository.get::<Order>(uuid).await.unwrap();
                    current.quantity += 1;
                    match repository.save(&mut current).await {
                        Ok(_) => return,
                        Err(error) if error.is_conflict() => continue,
                        Err(error) => panic!("{error}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let read = repository.get::<Order>(order.uuid()).await.unwrap();
    assert_eq!(read.quantity, 51);
    let versions: Vec<u64> = repository
        .events(order.uuid())
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (1..=51).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_reconnecting_keeps_data() {
    let url = fresh_schema_url();
    let first = Repository::new(PostgresStore::connect(&url).await.unwrap());
    let customer = first.create(Customer { name: "ada".into() }).await.unwrap();
    let again = PostgresStore::connect(&url).await.unwrap();
    again.migrate().await.unwrap();
    let client = again.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT version), max(version)::bigint FROM schema_migrations",
            &[],
        )
        .await
        .unwrap();
    let (applied, distinct, last): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (applied, distinct),
        (last, last),
        "each migration applied once, none skipped"
    );
    assert!(last >= 10, "the inbox's reply column is there: {last}");
    let read = Repository::new(again)
        .get::<Customer>(customer.uuid())
        .await
        .unwrap();
    assert_eq!(read.name, "ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_locks_exclude_each_other_until_released() {
    let store = minos_support::postgres::fresh_store().await;
    let key = format!("test-lock-{}", Uuid::new_v4());
    let held = store.try_lock(&key).await.unwrap().expect("free at first");
    assert!(
        store.try_lock(&key).await.unwrap().is_none(),
        "held elsewhere"
    );
    held.release().await.unwrap();
    let again = store
        .try_lock(&key)
        .await
        .unwrap()
        .expect("free after release");
    drop(again);
    let mut reacquired = None;
    for _ in 0..50 {
        reacquired = store.try_lock(&key).await.unwrap();
        if reacquired.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(reacquired.is_some(), "dropping a guard releases the lock");
}

#[tokio::test]
async fn schema_names_cannot_inject_sql() {
    let url = format!(
        "{}?schema=x\";DROP TABLE events;--",
        minos_support::postgres::url()
    );
    let error = PostgresStore::connect(&url).await.unwrap_err();
    assert!(error.to_string().contains("schema"), "{error}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_unavailable_error() {
    let options = minos::store::PostgresOptions {
        timeout: std::time::Duration::from_millis(500),
        ..Default::default()
    };
    let error = PostgresStore::connect_with("postgresql://postgres@127.0.0.1:1/test", options)
        .await
        .unwrap_err();
    let error = minos::Error::from(error);
    assert_eq!(error.status(), 503, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_relay_per_database_publishes_and_another_takes_over() {
    use minos::messaging::{Broker, MemoryBroker, OutboxRelay};
    use std::time::Duration;

    let url = fresh_schema_url();
    let first = Repository::new(PostgresStore::connect(&url).await.unwrap());
    let second = Repository::new(PostgresStore::connect(&url).await.unwrap());
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let mut received = broker
        .subscribe("observer", &["CustomerCreated".to_owned()])
        .await
        .unwrap();
    let relay = |repository: &Repository| {
        OutboxRelay::new(
            repository.store().clone(),
            Arc::clone(&broker),
            repository.commits(),
        )
        .poll_interval(Duration::from_millis(50))
        .spawn()
    };
    let relay_one = relay(&first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let relay_two = relay(&second);
    for i in 0..30 {
        let repository = if i % 2 == 0 { &first } else { &second };
        repository
            .create(Customer {
                name: format!("c{i}"),
            })
            .await
            .unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 30 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), received.next())
            .await
            .expect("published")
            .unwrap();
        assert!(
            seen.insert(delivery.message.identifier),
            "published twice: {}",
            delivery.message.identifier
        );
        // Handled: a delivery dropped unacknowledged is published again.
        delivery.ack();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), received.next())
            .await
            .is_err(),
        "nothing twice"
    );

    // The leader goes away; the other relay takes over.
    relay_one.stop().await;
    drop(first);
    for i in 0..10 {
        second
            .create(Customer {
                name: format!("after{i}"),
            })
            .await
            .unwrap();
    }
    for _ in 0..10 {
        let delivery = tokio::time::timeout(Duration::from_secs(15), received.next())
            .await
            .expect("taken over")
            .unwrap();
        assert!(seen.insert(delivery.message.identifier));
        delivery.ack();
    }
    relay_two.stop().await;
}

/// The relay lease knows the last outbox row committed before it: rows after it were never published
/// by another relay, so they go out as first deliveries.
#[tokio::test]
async fn the_relay_lease_knows_the_last_row_written_before_it() {
    use minos::store::OutboxStore;

    let url = fresh_schema_url();
    let repository = Repository::new(PostgresStore::connect(&url).await.unwrap());
    let other = PostgresStore::connect(&url).await.unwrap();
    for i in 0..3 {
        repository
            .create(Customer {
                name: format!("c{i}"),
            })
            .await
            .unwrap();
    }
    let before = repository.store().pending(10).await.unwrap();
    assert_eq!(before.len(), 3);
    let lease = repository
        .store()
        .relay_lease()
        .await
        .unwrap()
        .expect("free");
    assert_eq!(lease.horizon(), Some(before[2].id));
    assert!(
        other.relay_lease().await.unwrap().is_none(),
        "one relay per database"
    );
    repository
        .create(Customer {
            name: "after".into(),
        })
        .await
        .unwrap();
    let after = repository.store().pending(10).await.unwrap();
    assert!(after[3].id > lease.horizon().unwrap());
    drop(lease);
}

/// Concurrent transactions take outbox ids in one order and may commit in the other. On the in-process
/// broker the relay reads past the last row it read and marks rows once handled; a row committed below
/// one already published is still found, published and marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_committed_below_one_already_relayed_still_goes_out() {
    use minos::messaging::{Broker, Delivery, MemoryBroker, OutboxRelay, Subscription};
    use std::time::Duration;

    async fn next(received: &mut Subscription) -> Delivery {
        tokio::time::timeout(Duration::from_secs(10), received.next())
            .await
            .expect("published")
            .unwrap()
    }

    let url = fresh_schema_url();
    let store = PostgresStore::connect(&url).await.unwrap();
    let repository = Repository::new(PostgresStore::connect(&url).await.unwrap());
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let mut received = broker
        .subscribe("observer", &["Late".to_owned()])
        .await
        .unwrap();
    let relay = OutboxRelay::new(
        repository.store().clone(),
        Arc::clone(&broker),
        repository.commits(),
    )
    .poll_interval(Duration::from_millis(50))
    .spawn();
    let insert = "INSERT INTO outbox (identifier, topic, key, payload, created_at) \
                  VALUES (gen_random_uuid(), 'Late', 'k', $1, now()) RETURNING id";
    let slow = store.pool().get().await.unwrap();
    slow.batch_execute("BEGIN").await.unwrap();
    let low: i64 = slow
        .query_one(insert, &[&serde_json::json!("low")])
        .await
        .unwrap()
        .get(0);
    let fast = store.pool().get().await.unwrap();
    let high: i64 = fast
        .query_one(insert, &[&serde_json::json!("high")])
        .await
        .unwrap()
        .get(0);
    assert!(low < high);
    let delivery = next(&mut received).await;
    assert_eq!(delivery.message.payload.content, serde_json::json!("high"));
    delivery.ack();
    slow.batch_execute("COMMIT").await.unwrap();
    let delivery = next(&mut received).await;
    assert_eq!(delivery.message.payload.content, serde_json::json!("low"));
    delivery.ack();
    let started = std::time::Instant::now();
    while !repository.store().pending(10).await.unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "handled rows are marked sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), received.next())
            .await
            .is_err(),
        "each row once"
    );
    relay.stop().await;
}

/// The relay takes what this process's appends commit from the store's feed and reads the table for
/// the rest: concurrent creates and saves, units with an inbox entry (their own transactions) and rows
/// another process wrote all go out, each once, each root's in version order, and every row ends
/// marked sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_goes_out_once_whether_handed_over_or_read() {
    use minos::messaging::{Broker, MemoryBroker, OutboxRelay};
    use minos::store::InboxEntry;
    use std::time::Duration;

    let url = fresh_schema_url();
    let repository = Repository::new(PostgresStore::connect(&url).await.unwrap());
    let other = PostgresStore::connect(&url).await.unwrap();
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let topics = ["OrderCreated", "OrderUpdated", "Elsewhere"].map(str::to_owned);
    let mut received = broker.subscribe("observer", &topics).await.unwrap();
    let relay = OutboxRelay::new(
        repository.store().clone(),
        Arc::clone(&broker),
        repository.commits(),
    )
    .spawn();
    let roots = 30;
    let saves = 4;
    let writers: Vec<_> = (0..roots)
        .map(|i| {
            let repository = repository.clone();
            tokio::spawn(async move {
                let mut order = repository
                    .create(Order::sample(&format!("c{i}"), 1.0))
                    .await
                    .unwrap();
                for _ in 0..saves {
                    order.quantity += 1;
                    repository.save(&mut order).await.unwrap();
                }
            })
        })
        .collect();
    // Units in transactions of their own, and rows another process wrote, meanwhile.
    let store = repository.store().clone();
    for i in 0..5 {
        let order = repository
            .staged(repository.create(Order::sample(&format!("unit{i}"), 2.0)))
            .await;
        let (created, writes) = order;
        created.unwrap();
        let entry = InboxEntry::new("svc", uuid::Uuid::new_v4());
        store.commit_unit(&writes, Some(&entry)).await.unwrap();
        let client = other.pool().get().await.unwrap();
        client
            .execute(
                "INSERT INTO outbox (identifier, topic, key, payload, created_at) \
                 VALUES (gen_random_uuid(), 'Elsewhere', 'k', $1, now())",
                &[&serde_json::json!({ "i": i })],
            )
            .await
            .unwrap();
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let expected = roots * (1 + saves) + 5 + 5;
    let wait = Duration::from_secs(10);
    let roots_seen =
        minos_support::relay::receive_once_in_order(&mut received, expected, wait).await;
    assert_eq!(roots_seen, roots + 5);
    minos::testing::eventually("every row marked sent", Duration::from_secs(10), || async {
        store.pending(10).await.unwrap().is_empty()
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), received.next())
            .await
            .is_err(),
        "each row once"
    );
    let events = store.events(&EventFilter::default()).await.unwrap();
    assert_eq!(events.len(), roots * (1 + saves) + 5);
    relay.stop().await;
}

#[tokio::test]
async fn statements_running_too_long_are_cancelled() {
    let options = minos::store::PostgresOptions {
        statement_timeout: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let store = PostgresStore::connect_with(&fresh_schema_url(), options)
        .await
        .unwrap();
    let client = store.pool().get().await.unwrap();
    let error = client.query("SELECT pg_sleep(2)", &[]).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{error:?}"
    );
}

/// Two processes (two stores on one schema) claiming the same root at once: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_from_two_stores_have_one_winner() {
    let url = fresh_schema_url();
    let first = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let second = Arc::new(PostgresStore::connect(&url).await.unwrap());
    for _ in 0..10 {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let roots = [Uuid::new_v4(), Uuid::new_v4()];
        let reversed = [roots[1], roots[0]];
        let (one, two) = tokio::join!(
            first.claim(None, a, &roots),
            second.claim(None, b, &reversed)
        );
        let winners = [one.unwrap(), two.unwrap()]
            .iter()
            .filter(|conflict| conflict.is_none())
            .count();
        assert_eq!(winners, 1);
    }
}

/// Reads and saves of executions and transactions made at once: each caller gets its own answer, an
/// unknown uuid answers nothing, and of two saves of one execution in flight together one wins whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_and_saves_each_get_their_own_answer() {
    use futures_util::future::join_all;
    use minos::saga::ExecutionStatus;
    use minos::store::{ExecutionRecord, SagaStore};
    use minos::transaction::{TransactionEntry, TransactionStatus};

    let store = Arc::new(PostgresStore::connect(&fresh_schema_url()).await.unwrap());
    // PostgreSQL keeps microseconds.
    let at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6);
    let records: Vec<ExecutionRecord> = (0..200)
        .map(|i| ExecutionRecord {
            uuid: Uuid::now_v7(),
            saga: format!("Saga{}", i % 3),
            status: ExecutionStatus::Paused,
            data: json!({"i": i}),
            created_at: at,
            updated_at: at,
        })
        .collect();
    for saved in join_all(records.iter().map(|r| store.save_execution(r))).await {
        saved.unwrap();
    }
    let unknown = Uuid::now_v7();
    let mut asked: Vec<Uuid> = records.iter().map(|r| r.uuid).collect();
    asked.push(unknown);
    asked.push(records[7].uuid);
    let found = join_all(asked.iter().map(|uuid| store.execution(*uuid))).await;
    for (uuid, found) in asked.iter().zip(found) {
        let found = found.unwrap();
        match records.iter().find(|r| r.uuid == *uuid) {
            Some(record) => assert_eq!(found.as_ref(), Some(record)),
            None => assert_eq!(found, None),
        }
    }

    // Two saves of one execution at once: the stored one is one of them, whole.
    let mut finished = records[0].clone();
    finished.status = ExecutionStatus::Finished;
    finished.data = json!({"i": 0, "done": true});
    let mut errored = records[0].clone();
    errored.status = ExecutionStatus::Errored;
    errored.data = json!({"i": 0, "error": "x"});
    let (a, b) = tokio::join!(
        store.save_execution(&finished),
        store.save_execution(&errored)
    );
    a.unwrap();
    b.unwrap();
    let stored = store.execution(records[0].uuid).await.unwrap().unwrap();
    assert!(stored == finished || stored == errored, "{stored:?}");

    // Transactions: entries opened at once are each read back with no writes; unknown ones are none.
    let entries: Vec<TransactionEntry> = (0..50)
        .map(|_| TransactionEntry::new(Uuid::now_v7(), None))
        .collect();
    for opened in join_all(entries.iter().map(|e| store.open_transaction(e))).await {
        assert_eq!(opened.unwrap(), None, "a new entry is opened, not found");
    }
    let mut asked: Vec<Uuid> = entries.iter().map(|e| e.uuid).collect();
    asked.push(unknown);
    let (read, held) = tokio::join!(
        join_all(asked.iter().map(|uuid| store.transaction_and_held(*uuid))),
        join_all(asked.iter().map(|uuid| store.held(*uuid)))
    );
    for ((uuid, read), held) in asked.iter().zip(read).zip(held) {
        assert!(held.unwrap().is_empty());
        match read.unwrap() {
            Some((entry, writes)) => {
                assert_eq!(entry.uuid, *uuid);
                assert_eq!(entry.status, TransactionStatus::Pending);
                assert!(writes.is_empty());
            }
            None => assert_eq!(*uuid, unknown),
        }
    }
}

/// The inbox entry of a handler that wrote nothing (an event's, without a reply) is held a moment and
/// recorded with the others: look-ups see it at once, a copy is refused, another process sees it once
/// the store settled (or within a few milliseconds), and a command's entry, which keeps its reply, is
/// recorded at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_entries_of_handlers_that_wrote_nothing_are_recorded_together() {
    use minos::store::{InboxEntry, InboxStore, StoreError};

    let url = fresh_schema_url();
    let here = Repository::new(PostgresStore::connect(&url).await.unwrap());
    let elsewhere = PostgresStore::connect(&url).await.unwrap();
    let entries: Vec<InboxEntry> = (0..300)
        .map(|i| InboxEntry::new(format!("svc{}", i % 2), Uuid::new_v4()))
        .collect();
    for entry in &entries {
        assert!(here
            .commit_unit(&Vec::new(), Some(entry))
            .await
            .unwrap()
            .is_empty());
    }
    for entry in &entries {
        assert!(here.store().is_processed(entry).await.unwrap(), "{entry:?}");
        let copy = here
            .commit_unit(&Vec::new(), Some(entry))
            .await
            .unwrap_err();
        assert!(
            matches!(copy, Error::Store(StoreError::AlreadyProcessed { .. })),
            "{copy}"
        );
    }
    // A unit with writes for a message whose entry is held is a copy too.
    let customer = here.create(Customer { name: "c".into() }).await.unwrap();
    let mut renamed = here.get::<Customer>(customer.uuid()).await.unwrap();
    renamed.name = "d".into();
    let (saved, writes) = here
        .staged(here.clone().scope(async { renamed.save().await }))
        .await;
    saved.unwrap();
    assert_eq!(writes.len(), 1);
    let copy = here
        .commit_unit(&writes, Some(&entries[5]))
        .await
        .unwrap_err();
    assert!(
        matches!(copy, Error::Store(StoreError::AlreadyProcessed { .. })),
        "{copy}"
    );
    assert_eq!(
        here.get::<Customer>(customer.uuid()).await.unwrap().name,
        "c"
    );
    here.store().settle().await.unwrap();
    for entry in &entries {
        assert!(elsewhere.is_processed(entry).await.unwrap(), "{entry:?}");
    }
    let rows = elsewhere
        .pool()
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM inbox", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(rows, 300, "each entry once");

    // Without settling: another process sees the entry within a few milliseconds.
    let later = InboxEntry::new("svc0", Uuid::new_v4());
    here.commit_unit(&Vec::new(), Some(&later)).await.unwrap();
    let mut waited = 0;
    while !elsewhere.is_processed(&later).await.unwrap() {
        assert!(waited < 500, "not recorded after {waited} ms");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        waited += 5;
    }

    // A command's entry keeps its reply: recorded before the unit answers.
    let mut command = InboxEntry::new("svc1", Uuid::new_v4());
    command.reply = Some(json!({"status": 200, "content": "done", "headers": {}}));
    here.commit_unit(&Vec::new(), Some(&command)).await.unwrap();
    assert_eq!(
        elsewhere.recorded_reply(&command).await.unwrap(),
        command.reply
    );
    // Recorded a second ago and forgotten by the memory: still found, by the look-up's statement.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert!(here.store().is_processed(&entries[0]).await.unwrap());
    assert!(!here
        .store()
        .is_processed(&InboxEntry::new("svc0", Uuid::new_v4()))
        .await
        .unwrap());
}
