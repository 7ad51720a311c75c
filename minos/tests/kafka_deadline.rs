//! A command delayed past its deadline by a paused broker (SIGSTOP) is not run once the broker
//! resumes. In a binary of its own, so no other test publishes while the broker is paused.
#![allow(missing_docs, unreachable_pub)]

mod kafka_support;

use std::time::Duration;

use kafka_support::{eventually, start, tallies};
use minos::prelude::*;
use minos_support::kafka::unique;

/// Runs when `MINOS_TEST_KAFKA_PID` names the broker's process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_delayed_past_its_deadline_by_a_paused_broker_is_not_run() {
    let Some(pid) = kafka_support::broker_pid() else {
        return;
    };
    let service = start(&unique("kpaused")).await;
    let signal = |sig: &str| kafka_support::signal_broker(&pid, sig);
    let expired_before = minos::routing::expired_requests();
    let tag = unique("delayed");
    signal("-STOP");
    let resume = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(4)).await;
    });
    // The sender waits 2 s for its reply; the broker holds the command for 4.
    let client = service.context().client().clone();
    let content = json!({"tag": tag});
    let request = tokio::spawn(async move {
        let message = minos::BrokerMessage::new("KCount", content);
        client.request(message, Duration::from_secs(2)).await
    });
    resume.await.unwrap();
    signal("-CONT");
    let answer = request.await.unwrap();
    assert!(answer.is_err(), "the sender gave up: {answer:?}");
    // Once the broker delivers it, the command is past its deadline: not run.
    eventually(
        "the delayed command arrives",
        Duration::from_secs(20),
        || async { minos::routing::expired_requests() > expired_before },
    )
    .await;
    assert_eq!(tallies(&service, &format!("counted:{tag}")).await, 0);
    service.stop().await;
}
