//! Dead letters on the in-process broker: listed, shown and re-driven through the service's admin
//! endpoints and from code; a re-driven message is handled once however often it is re-driven.
#![allow(missing_docs, unreachable_pub)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use minos::messaging::{BrokerMessage, DeadLetters};
use minos::prelude::*;
use minos::testing::{eventually, test_config, TestService};

#[root_entity]
pub struct Digested {
    pub tag: String,
}

/// While set, `Fragile` events fail.
static FAILING: AtomicBool = AtomicBool::new(true);

pub struct Reactions;

#[query_service]
impl Reactions {
    #[enroute(event = "Fragile")]
    async fn fragile(&self, request: Request) -> Result<()> {
        if FAILING.load(Ordering::SeqCst) {
            return Err(Error::bad_request("not today"));
        }
        let tag = request.json()["tag"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Digested::create(Digested { tag }).await?;
        Ok(())
    }
}

async fn digested(service: &TestService, tag: &str) -> usize {
    Digested::find(Condition::eq("tag", tag))
        .on(service.context().repository())
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_redriven_once() {
    let mut config = test_config("fragile");
    config.handlers.retries = 0;
    let service = TestService::start(config).await.unwrap();
    let http = service.http();
    let broker = service.context().broker().clone();
    let parked = BrokerMessage::new("Fragile", json!({"tag": "t1"}));
    broker.publish(parked.clone()).await.unwrap();

    let letters = DeadLetters::of(service.context());
    eventually(
        "the failed event is parked",
        Duration::from_secs(10),
        || {
            let letters = letters.clone();
            async move { letters.list().await.unwrap().len() == 1 }
        },
    )
    .await;
    let listed = http.get("/dead-letters").await.unwrap();
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        listed.json(),
        json!([{
            "identifier": parked.identifier,
            "original_topic": "Fragile",
            "error": "not today",
            "redriven_and_handled": false,
        }])
    );
    let shown = http
        .get(&format!("/dead-letters/{}", parked.identifier))
        .await
        .unwrap();
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.json()["content"], json!({"tag": "t1"}));
    assert_eq!(shown.json()["headers"]["original_topic"], json!("Fragile"));

    // Clear refusals, nothing sent.
    let unknown = Uuid::new_v4();
    let missing = http.get(&format!("/dead-letters/{unknown}")).await.unwrap();
    assert_eq!(missing.status, 404, "{}", missing.body);
    let missing = http
        .post(&format!("/dead-letters/{unknown}/redrive"), json!({}))
        .await
        .unwrap();
    assert_eq!(missing.status, 404, "{}", missing.body);
    let mixed = http
        .post(
            "/dead-letters/redrive",
            json!({"identifiers": [parked.identifier, unknown]}),
        )
        .await
        .unwrap();
    assert_eq!(mixed.status, 404, "one unknown: none sent: {}", mixed.body);
    let vague = http.post("/dead-letters/redrive", json!({})).await.unwrap();
    assert_eq!(vague.status, 400, "{}", vague.body);
    assert!(vague.body.contains("identifiers"), "{}", vague.body);
    let malformed = http
        .post("/dead-letters/redrive", json!({"identifiers": ["nope"]}))
        .await
        .unwrap();
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(digested(&service, "t1").await, 0);

    // Fixed, then re-driven three times (by identifier, all, from code): handled once.
    FAILING.store(false, Ordering::SeqCst);
    let one = http
        .post(
            &format!("/dead-letters/{}/redrive", parked.identifier),
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(
        one.json()["redriven"][0]["identifier"],
        json!(parked.identifier.to_string())
    );
    assert_eq!(one.json()["redriven"][0]["topic"], json!("Fragile"));
    let all = http
        .post("/dead-letters/redrive", json!({"all": true}))
        .await
        .unwrap();
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(all.json()["redriven"].as_array().unwrap().len(), 1);
    let copies = letters.redrive(&[parked.identifier]).await.unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(
        copies[0].identifier,
        one.json()["redriven"][0]["sent_as"]
            .as_str()
            .unwrap()
            .parse::<Uuid>()
            .unwrap(),
        "the same copy each time"
    );
    eventually(
        "the re-driven event was handled",
        Duration::from_secs(10),
        || {
            let service = &service;
            async move { digested(service, "t1").await >= 1 }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        digested(&service, "t1").await,
        1,
        "re-driven thrice, handled once"
    );
    let listed = http.get("/dead-letters").await.unwrap();
    assert_eq!(listed.json()[0]["redriven_and_handled"], json!(true));
    service.stop().await;
}
