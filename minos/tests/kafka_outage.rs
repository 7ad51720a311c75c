//! The Kafka broker paused (SIGSTOP) for 20 s while commands arrive. In a binary of its own, so no other
//! test publishes while the broker is paused. The binary ships its log records (`log.aggregate`) with a
//! small buffer: while the broker is away records are dropped and counted, never waited for.
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
    let log = minos::launcher::LogConfig {
        aggregate: true,
        buffer: 64,
        ..minos::launcher::LogConfig::from("info")
    };
    let _telemetry = minos::telemetry::init(
        "koutage",
        &log,
        &minos::launcher::TelemetryConfig::default(),
    )
    .unwrap();
    let service = Arc::new(start(&unique("koutage")).await);
    let http = TestClient::new(service.addr());
    let mut shipped = service
        .context()
        .broker()
        .listen(minos::telemetry::LOG_TOPIC)
        .await
        .unwrap();
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
            // More records than the shipping buffer holds: the surplus is dropped, not waited for.
            let logged = std::time::Instant::now();
            for n in 0..100 {
                tracing::info!(n, "a record written while the broker is away");
            }
            assert!(
                logged.elapsed() < Duration::from_millis(500),
                "{:?}",
                logged.elapsed()
            );
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
    // The drops are reported with the next batch shipped, and counted in the metrics.
    let reported = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let delivery = shipped.next().await.expect("the log topic");
            let batch: minos::telemetry::ship::LogBatch =
                serde_json::from_value(delivery.message.payload.content).unwrap();
            if batch.dropped > 0 {
                return batch.dropped;
            }
        }
    })
    .await
    .expect("a batch reporting the dropped records");
    assert!(reported >= 500, "{reported}");
    let metrics = http.get("/metrics").await.unwrap().body;
    let dropped: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("minos_log_records_dropped_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(dropped >= 500, "{metrics}");
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
