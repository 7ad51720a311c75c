//! CQRS views on PostgreSQL: store and views in the real server, the same cases as on the embedded
//! defaults, then what only PostgreSQL shows (commit order racing ids, index plans over many rows).
#![allow(missing_docs, unreachable_pub)]

const BACKEND: &str = "postgres";

include!("views_support/cases.rs");

/// A row the database refuses, written by the second of two views applying a page together (its
/// rows go out with the page's commit): that view fails alone, naming the row; the first goes on, and
/// once the row is no longer written the second catches up, each event applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_fails_its_own_view_alone() {
    let service = TestService::start(config("views-refused-row"))
        .await
        .unwrap();
    let (_, position) = create(&service, "first", 1).await;
    get_after(&service, "/items/totals", position).await;
    // Both views live at one position: they take the next page together, the listing first.
    eventually("both views live together", Duration::from_secs(5), || {
        let service = &service;
        async move {
            let state = views_state(service).await;
            state[0]["state"] == "live"
                && state[1]["state"] == "live"
                && state[0]["sources"][0]["position"] == state[1]["sources"][0]["position"]
        }
    })
    .await;
    NUL_IN_TOTALS.store(true, AtomicOrdering::SeqCst);
    create(&service, "nul", 2).await;
    eventually("the listing to show nul", Duration::from_secs(5), || {
        let client = service.http().clone();
        async move {
            client
                .get("/items?name=nul")
                .await
                .unwrap()
                .json()
                .as_array()
                .map(Vec::len)
                == Some(1)
        }
    })
    .await;
    eventually(
        "the totals to report the refused row",
        Duration::from_secs(5),
        || {
            let service = &service;
            async move {
                let state = views_state(service).await;
                // The refused row is the totals view's alone: the listing never fails for it.
                assert_ne!(state[0]["state"], "failed", "{state}");
                let error = state[1]["sources"][0]["error"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                state[1]["state"] == "failed" && error.contains("view ItemTotals row")
            }
        },
    )
    .await;
    let totals = service.http().get("/items/totals").await.unwrap().json();
    assert_eq!(totals["created"], 1, "nul is not counted yet: {totals}");
    NUL_IN_TOTALS.store(false, AtomicOrdering::SeqCst);
    let (_, position) = create(&service, "after", 3).await;
    let listed = get_after(&service, "/items?limit=100", position.clone()).await;
    assert_eq!(
        listed.json().as_array().unwrap().len(),
        3,
        "{}",
        listed.body
    );
    let totals = get_after(&service, "/items/totals", position).await.json();
    assert_eq!(totals["created"], 3, "{totals}");
    service.stop().await;
}

mod commit_order {
    use minos::store::{EventFilter, EventStore, Position, PostgresStore};
    use minos::{Action, Event};

    fn item(version: u64, uuid: minos::Uuid) -> Event {
        Event {
            uuid,
            name: "Item".into(),
            version,
            action: Action::Create,
            created_at: chrono::Utc::now(),
            fields_diff: vec![],
        }
    }

    /// The race a reader following ids loses: a transaction takes id N, another takes N+1 and
    /// commits first. Following positions, the reader sees neither until N commits, then both, in
    /// commit order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_following_positions_never_skips_a_late_commit() {
        let url = minos_support::postgres::fresh_schema_url();
        let store = PostgresStore::connect(&url).await.unwrap();
        let late = store.pool().get().await.unwrap();
        let late_uuid = minos::Uuid::new_v4();
        late.batch_execute(&format!(
            "BEGIN; INSERT INTO events (uuid, name, version, action, data, created_at) \
             VALUES ('{late_uuid}', 'Item', 1, 'create', '[]', now())"
        ))
        .await
        .unwrap();
        let early = store
            .append(&item(1, minos::Uuid::new_v4()), &[])
            .await
            .unwrap();

        // Following ids, the early commit is visible and the late one is not there yet...
        let by_id = store
            .events(&EventFilter {
                name: Some("Item".into()),
                ..EventFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(by_id.len(), 1);
        let late_id = early.id - 1;
        assert!(by_id[0].id > late_id);
        // ...while following positions, nothing is settled before the late transaction ends.
        let by_position = store.log("Item", Position::START, 100).await.unwrap();
        assert!(by_position.is_empty(), "{by_position:?}");

        late.batch_execute("COMMIT").await.unwrap();
        // An id reader at the early event's id never sees the late one: skipped for good.
        let after_early = store
            .events(&EventFilter {
                name: Some("Item".into()),
                after_id: Some(early.id),
                ..EventFilter::default()
            })
            .await
            .unwrap();
        assert!(after_early.is_empty());
        // The position reader gets both, the late transaction's first (it began first), once no
        // older transaction of the server is open (other tests run beside this one).
        let mut by_position = Vec::new();
        for _ in 0..500 {
            by_position = store.log("Item", Position::START, 100).await.unwrap();
            if by_position.len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let uuids: Vec<minos::Uuid> = by_position.iter().map(|e| e.event.uuid).collect();
        assert_eq!(uuids, [late_uuid, early.event.uuid]);
        assert!(by_position[0].position() < by_position[1].position());
        assert_eq!(by_position[1].position(), early.position());
        assert_eq!(store.log_behind("Item", Position::START).await.unwrap(), 2);
        assert_eq!(
            store
                .log_behind("Item", by_position[0].position())
                .await
                .unwrap(),
            1
        );
    }
}

/// With 100,000 rows, a condition on an `#[index]` field is an index lookup; on another field, a scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_field_is_an_index_lookup_over_many_rows() {
    let config = config("views-pg-plan");
    let service = TestService::start(config.clone()).await.unwrap();
    let store = minos::store::PostgresStore::connect(&config.storage)
        .await
        .unwrap();
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO view_item_summary (uuid, name, price, _minos_data) \
             SELECT gen_random_uuid()::text, 'n' || g, g, jsonb_build_object('name', 'n' || g) \
             FROM generate_series(1, 100000) AS g; ANALYZE view_item_summary",
        )
        .await
        .unwrap();
    let indexed = service
        .http()
        .get("/items/plan?field=name")
        .await
        .unwrap()
        .json();
    let indexed = indexed.as_str().unwrap();
    assert!(
        indexed.contains("Index Scan") && indexed.contains("view_item_summary__name"),
        "{indexed}"
    );
    let scanned = service
        .http()
        .get("/items/plan?field=price")
        .await
        .unwrap()
        .json();
    assert!(scanned.as_str().unwrap().contains("Seq Scan"), "{scanned}");
    service.stop().await;
}

/// Two replicas of one service on one PostgreSQL store and view database, each taking commands: each
/// applies the other's events it finds after its own position, sees the position moved when it tries
/// to advance it, and rolls that page back. The non-idempotent count shows every event applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_view_database_apply_each_event_once() {
    let config = config("views-replicas");
    let first = TestService::start(config.clone()).await.unwrap();
    let second = TestService::start(config).await.unwrap();
    // One command at a time, alternating, each read back through its replica's views: the other
    // replica last saw the position before the previous command, which its next page finds moved.
    for i in 0..30 {
        let replica = [&first, &second][i % 2];
        let (_, position) = create(replica, &format!("r{i}"), i as i64).await;
        let totals = get_after(replica, "/items/totals", position).await.json();
        assert_eq!(totals["created"], i + 1, "{totals}");
    }
    for replica in [&first, &second] {
        eventually(
            "every item to be projected",
            Duration::from_secs(20),
            || {
                let client = replica.http().clone();
                async move { client.get("/items/totals").await.unwrap().json()["created"] == 30 }
            },
        )
        .await;
    }
    // Several polls later, nothing was applied twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for replica in [&first, &second] {
        let totals = replica.http().get("/items/totals").await.unwrap().json();
        assert_eq!(totals["created"], 30, "{totals}");
        let listed = replica
            .http()
            .get("/items?limit=1000")
            .await
            .unwrap()
            .json();
        assert_eq!(listed.as_array().unwrap().len(), 30);
    }
    first.stop().await;
    second.stop().await;
}
