//! `GET /system/health` tells the truth: 200 while the store and the broker answer, 503 with the failing
//! check named once the store cannot do its work; `GET /system/live` answers while the process serves.
#![allow(missing_docs, unreachable_pub)]

use minos::prelude::*;
use minos::testing::{test_config, TestService};
use minos_support::postgres::{fresh_schema_url, url};

pub struct Pings;

#[query_service]
impl Pings {
    #[enroute(rest = "GET /ping")]
    async fn ping(&self, _request: Request) -> Result<Response> {
        Ok(Response::json("pong"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_store_and_the_broker() {
    let storage = fresh_schema_url();
    let schema = storage.rsplit("schema=").next().unwrap().to_owned();
    let mut config = test_config("healthy");
    config.storage = storage;
    let service = TestService::start(config).await.unwrap();

    let health = service.http().get("/system/health").await.unwrap();
    assert_eq!(health.status, 200, "{}", health.body);
    let body = health.json();
    assert_eq!(body["status"], json!("ok"));
    assert_eq!(body["name"], json!("healthy"));
    assert_eq!(body["port"], json!(service.addr().port()));
    assert_eq!(body["checks"]["store"]["status"], json!("ok"));
    assert_eq!(body["checks"]["broker"]["status"], json!("ok"));

    // The store loses its tables: the service cannot do its work any more.
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    let health = service.http().get("/system/health").await.unwrap();
    assert_eq!(health.status, 503, "{}", health.body);
    let body = health.json();
    assert_eq!(body["status"], json!("unavailable"));
    assert_eq!(body["checks"]["store"]["status"], json!("unavailable"));
    assert!(
        body["checks"]["store"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(body["checks"]["broker"]["status"], json!("ok"));

    // Liveness only says the process serves.
    let live = service.http().get("/system/live").await.unwrap();
    assert_eq!((live.status, live.json()), (200, json!({"status": "ok"})));
    service.stop().await;
}
