//! A long-lived Kafka: a service new to it (new consumer group, empty store) does not run the
//! commands and events sent before it started, requests past their deadline are not run, and reply
//! topics do not pile up over restarts.
#![allow(missing_docs, unreachable_pub)]

mod kafka_support;

use std::time::Duration;

use kafka_support::{eventually, start, tallies};
use minos::messaging::{Broker, BrokerClient, BrokerMessage, SharedBroker};
use minos::prelude::*;
use minos_support::kafka::{bootstrap, broker, unique};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn old(topic: &str, tag: &str, n: usize) -> Vec<BrokerMessage> {
    (0..n)
        .map(|i| {
            let mut message = BrokerMessage::new(topic, json!({"tag": tag, "n": i}));
            message.key = Some(format!("k{}", i % 7));
            message
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_service_runs_none_of_the_commands_sent_before_it_started() {
    let kafka = broker().await;
    let history = unique("history");
    // 1,000 commands from the past: sent raw, with no deadline (as another client might).
    for result in kafka.publish_all(old("KCount", &history, 1000)).await {
        result.unwrap();
    }
    let service = start(&unique("knew")).await;
    let now = unique("now");
    let reply = service
        .context()
        .client()
        .send("KCount", json!({"tag": now}))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.content);
    let counted = format!("counted:{now}");
    // Every service subscribed to the topic (other tests run some) runs it: wait for this one's run.
    eventually(
        "the new command runs here",
        Duration::from_secs(30),
        || async { tallies(&service, &counted).await >= 1 },
    )
    .await;
    // Given time to read anything old it would read, it ran none of it, and the new one once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tallies(&service, &format!("counted:{history}")).await, 0);
    assert_eq!(tallies(&service, &counted).await, 1);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_before_a_new_service_started_are_not_handled_by_it() {
    let kafka = broker().await;
    let before = unique("before");
    for result in kafka.publish_all(old("KRecord", &before, 50)).await {
        result.unwrap();
    }
    let service = start(&unique("kevents")).await;
    let after = unique("after");
    service
        .context()
        .broker()
        .publish(BrokerMessage::new("KRecord", json!({"tag": after})))
        .await
        .unwrap();
    let recorded = format!("recorded:{after}");
    eventually(
        "the new event is handled",
        Duration::from_secs(30),
        || async { tallies(&service, &recorded).await == 1 },
    )
    .await;
    assert_eq!(tallies(&service, &format!("recorded:{before}")).await, 0);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_not_run() {
    let service = start(&unique("kdeadline")).await;
    let expired_before = minos::routing::expired_requests();
    let late = unique("late");
    let mut message = BrokerMessage::new("KCount", json!({"tag": late}));
    message.set_deadline(minos::chrono::Utc::now() - minos::chrono::Duration::seconds(1));
    let answer = service
        .context()
        .client()
        .request(message, Duration::from_secs(2))
        .await;
    assert!(
        answer.is_err(),
        "no reply to an expired request: {answer:?}"
    );
    assert_eq!(tallies(&service, &format!("counted:{late}")).await, 0);
    assert!(minos::routing::expired_requests() > expired_before);
    service.stop().await;
}

fn topics_starting_with(prefix: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_topics_stay_bounded_over_fifty_restarts() {
    let service = start(&unique("kecho")).await;
    let kafka: SharedBroker = std::sync::Arc::new(broker().await);
    let caller = unique("kcaller");
    for round in 0..50 {
        // A restart of the caller: a new client, as a new process would make.
        let client = BrokerClient::new(std::sync::Arc::clone(&kafka), &caller)
            .with_timeout(Duration::from_secs(30));
        let reply = client
            .send("KSlowEcho", json!({"round": round}))
            .await
            .unwrap();
        assert_eq!(reply.content["round"], json!(round));
    }
    assert_eq!(topics_starting_with(&caller), [format!("{caller}.replies")]);

    // Two instances at once share the topic, and each gets its own replies.
    let (a, b) = (
        BrokerClient::new(std::sync::Arc::clone(&kafka), &caller),
        BrokerClient::new(std::sync::Arc::clone(&kafka), &caller),
    );
    let (ra, rb) = tokio::join!(
        a.send("KSlowEcho", json!({"who": "a", "delay_ms": 200})),
        b.send("KSlowEcho", json!({"who": "b"}))
    );
    assert_eq!(ra.unwrap().content["who"], json!("a"));
    assert_eq!(rb.unwrap().content["who"], json!("b"));
    service.stop().await;
}
