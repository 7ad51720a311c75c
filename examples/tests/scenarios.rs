//! The quickstart's behaviour stated given/when/then with `minos::testing::Scenario`: memory store, an
//! in-process broker that records what is published, no process to start.

#[allow(dead_code)]
mod quickstart {
    include!("../quickstart/main.rs");
}

use minos::prelude::*;
use minos::testing::Scenario;
use minos::{Action, Event, FieldDiff};
use quickstart::Foo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_foo_stores_and_publishes_foo_created() -> minos::Result<()> {
    let foo = Scenario::named("foo").await?;

    let created = foo.when_post("/foos", json!({"bar": "test"})).await;

    created.then_status(200);
    let events = created.then_events(&["FooCreated"]).await;
    assert_eq!(events[0].field::<String>("bar")?.as_deref(), Some("test"));
    assert_eq!(created.body()["uuid"], json!(events[0].uuid));
    let published = created.then_published(&["FooCreated"]).await;
    assert_eq!(
        published[0].key.as_deref(),
        Some(events[0].uuid.to_string().as_str())
    );
    foo.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_store_and_publish_nothing() -> minos::Result<()> {
    let foo = Scenario::named("foo").await?;

    let empty = foo.when_post("/foos", json!({"bar": "  "})).await;
    empty.then_error(400, "`bar` must not be empty");
    empty.then_no_events().await;

    let malformed = foo.when_post("/foos", json!({"baz": 1})).await;
    malformed.then_status(400);
    malformed.then_no_events().await;
    assert!(
        malformed.messages().is_empty(),
        "{:?}",
        malformed.messages()
    );

    let by_broker = foo.when_command("CreateFoo", json!({"bar": ""})).await;
    by_broker.then_error(400, "must not be empty");
    foo.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_foos_the_views_list_and_count_them() -> minos::Result<()> {
    let foo = Scenario::named("foo").await?;
    let first = foo.given(Foo { bar: "a".into() }).await?;
    foo.given(Foo { bar: "b".into() }).await?;
    // Events another writer stored: a third Foo, created then renamed.
    let uuid = Uuid::new_v4();
    let at = Utc::now();
    foo.given_events([
        Event {
            uuid,
            name: "Foo".into(),
            version: 1,
            action: Action::Create,
            created_at: at,
            fields_diff: vec![FieldDiff::whole("bar", "String", json!("c"))],
        },
        Event {
            uuid,
            name: "Foo".into(),
            version: 2,
            action: Action::Update,
            created_at: at,
            fields_diff: vec![FieldDiff::whole("bar", "String", json!("a"))],
        },
    ])
    .await?;

    let listed = foo.when_get("/foos?bar=a").await;
    listed.then_status(200);
    let uuids: Vec<&Value> = listed
        .body()
        .as_array()
        .unwrap()
        .iter()
        .map(|row| &row["uuid"])
        .collect();
    assert!(uuids.contains(&&json!(first.uuid())), "{}", listed.body());
    let example = foo.when_get("/foos/example").await;
    assert_eq!(example.body()["foos_created_seen"], 3, "{}", example.body());
    let read = foo.when_get(&format!("/foos/{uuid}")).await;
    read.then_status(200);
    assert_eq!(
        (&read.body()["bar"], &read.body()["version"]),
        (&json!("a"), &json!(2))
    );
    read.then_no_events().await;
    foo.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_foo_is_a_404_and_a_malformed_uuid_a_400() -> minos::Result<()> {
    let foo = Scenario::named("foo").await?;
    foo.when_get(&format!("/foos/{}", Uuid::new_v4()))
        .await
        .then_status(404);
    foo.when_get("/foos/not-a-uuid").await.then_status(400);
    foo.stop().await;
    Ok(())
}
