//! The {{name}} service's behaviour, given/when/then: memory store, in-process broker, no network.

use minos::prelude::*;
use minos::testing::Scenario;
use {{crate}}::{{Entity}};

#[tokio::test]
async fn creating_stores_and_publishes_{{snake}}_created() -> minos::Result<()> {
    let service = Scenario::named("{{name}}").await?;

    let created = service.when_post("/{{path}}", json!({"name": "first"})).await;

    created.then_status(200);
    let events = created.then_events(&["{{Entity}}Created"]).await;
    assert_eq!(events[0].field::<String>("name")?.as_deref(), Some("first"));
    assert_eq!(created.body()["uuid"], json!(events[0].uuid));
    created.then_published(&["{{Entity}}Created"]).await;
    service.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_empty_name_is_refused_and_nothing_is_stored() -> minos::Result<()> {
    let service = Scenario::named("{{name}}").await?;

    let refused = service.when_post("/{{path}}", json!({"name": " "})).await;

    refused.then_error(400, "must not be empty");
    refused.then_no_events().await;
    service.stop().await;
    Ok(())
}

#[tokio::test]
async fn other_services_create_with_the_command() -> minos::Result<()> {
    let service = Scenario::named("{{name}}").await?;

    let reply = service
        .when_command("Create{{Entity}}", json!({"name": "by broker"}))
        .await;

    reply.then_status(200);
    reply.then_events(&["{{Entity}}Created"]).await;
    service.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_created_{{snake}}_is_read_and_listed() -> minos::Result<()> {
    let service = Scenario::named("{{name}}").await?;
    let existing = service
        .given({{Entity}} {
            name: "existing".into(),
        })
        .await?;

    let read = service
        .when_get(&format!("/{{path}}/{}", existing.uuid()))
        .await;
    read.then_status(200);
    assert_eq!(read.body()["name"], "existing");

    let listed = service.when_get("/{{path}}").await;
    listed.then_status(200);
    assert_eq!(listed.body()[0]["uuid"], json!(existing.uuid()));
    service.stop().await;
    Ok(())
}
