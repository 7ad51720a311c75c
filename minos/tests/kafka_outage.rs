//! The Kafka broker paused (SIGSTOP) for 20 s while commands arrive. In a binary of its own, so no other
//! test publishes while the broker is paused.
#![allow(missing_docs, unreachable_pub)]

mod kafka_support;

use std::sync::Arc;
use std::time::Duration;

use kafka_support::{eventually, start, tallies};
use minos::prelude::*;
use minos::testing::TestClient;
use minos_support::kafka::unique;

/// The broker is paused (SIGSTOP) for 20 s while commands arrive; once it resumes every event is
/// published and handled, none twice. Runs when `MINOS_TEST_KAFKA_PID` names the broker's process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_delays_events_without_losing_or_doubling_them() {
    let Some(pid) = kafka_support::broker_pid() else {
        return;
    };
    let service = Arc::new(start(&unique("koutage")).await);
    let http = TestClient::new(service.addr());
    let signal = |sig: &str| kafka_support::signal_broker(&pid, sig);
    signal("-STOP");
    let result = std::panic::AssertUnwindSafe(async {
        // The health check names the broker while it does not answer.
        let health = http.get("/system/health").await.unwrap();
        assert_eq!(health.status, 503, "{}", health.body);
        assert_eq!(
            health.json()["checks"]["broker"]["status"],
            json!("unavailable"),
            "{}",
            health.body
        );
        assert_eq!(health.json()["checks"]["store"]["status"], json!("ok"));
        let mut tags = Vec::new();
        for i in 0..10 {
            let tag = unique(&format!("outage{i}"));
            let answer = http.post("/ktallies", json!({"tag": tag})).await.unwrap();
            assert_eq!(
                answer.status, 200,
                "commands are accepted while the broker is down: {}",
                answer.body
            );
            tags.push(tag);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        tags
    });
    let tags = futures_util::FutureExt::catch_unwind(result).await;
    signal("-CONT");
    let tags = tags.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    for tag in &tags {
        let seen = format!("seen:{tag}");
        eventually(
            &format!("{seen} after the outage"),
            Duration::from_secs(90),
            || async { tallies(&service, &seen).await >= 1 },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for tag in &tags {
        assert_eq!(
            tallies(&service, &format!("seen:{tag}")).await,
            1,
            "handled once: {tag}"
        );
    }
    if let Ok(service) = Arc::try_unwrap(service) {
        service.stop().await;
    }
}
