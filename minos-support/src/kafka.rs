//! Kafka for tests: the broker at `MINOS_TEST_KAFKA` (default `127.0.0.1:9092`; `scripts/kafka-dev.sh
//! start` runs one), names unique to each test run.

use std::time::Duration;

use minos::messaging::{KafkaBroker, KafkaOptions};

/// The test broker's bootstrap address.
pub fn bootstrap() -> String {
    std::env::var("MINOS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// `prefix` with a unique suffix, for topics and consumer groups no other run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", minos::Uuid::new_v4().simple())
}

/// A broker client. Panics, naming the address, when the broker cannot be reached: a test that needs
/// Kafka never passes without it.
pub async fn broker() -> KafkaBroker {
    let options = KafkaOptions {
        publish_timeout: Duration::from_secs(10),
        ..KafkaOptions::default()
    };
    let broker = KafkaBroker::connect(&bootstrap(), options)
        .unwrap_or_else(|e| panic!("Kafka client for {}: {e}", bootstrap()));
    if let Err(error) = broker.ensure_topics(&[unique("minos-probe")]).await {
        panic!(
            "Kafka is needed for this test and is not reachable at {}: {error}\n\
             start one with `scripts/kafka-dev.sh start`, or point MINOS_TEST_KAFKA at a broker",
            bootstrap()
        );
    }
    broker
}
