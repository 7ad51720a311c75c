//! Kafka over TLS and with SCRAM-SHA-512 logins, against two local nisshi brokers with certificates from
//! a test CA (`scripts/kafka-secure.sh`, run by `scripts/test.sh`, which sets `MINOS_TEST_KAFKA_SECURE`
//! to the directory of `ca.pem` and `other-ca.pem`): 127.0.0.1:9094 serves TLS, 127.0.0.1:9095 TLS with
//! logins (user `minos`).
#![allow(missing_docs, unreachable_pub)]

use std::time::Duration;

use minos::messaging::{Broker, BrokerMessage, KafkaBroker, KafkaOptions};
use minos::prelude::*;
use minos::testing::{test_config, TestService};

pub struct SecureCommands;

#[command_service]
impl SecureCommands {
    #[enroute(broker = "SecureEcho")]
    async fn echo(&self, request: Request) -> Result<Response> {
        Ok(Response::json(request.json().clone()))
    }
}

/// The directory with the test CA, or `None` (the test says it did not run).
fn secure_dir() -> Option<String> {
    let dir = std::env::var("MINOS_TEST_KAFKA_SECURE").ok();
    if dir.is_none() {
        eprintln!("MINOS_TEST_KAFKA_SECURE is not set (scripts/test.sh sets it): not run");
    }
    dir
}

fn password() -> String {
    std::env::var("MINOS_TEST_KAFKA_SASL_PASSWORD").unwrap_or_else(|_| "minos-test-secret".into())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::new_v4().simple())
}

/// A service on `port` with `kafka` settings answers a command over the broker.
async fn round_trip(port: u16, kafka: minos::launcher::KafkaConfig) {
    let mut config = test_config(&unique("secure"));
    config.broker = format!("kafka://127.0.0.1:{port}");
    config.kafka = kafka;
    let service = TestService::start(config).await.unwrap();
    let health = service.http().get("/system/health").await.unwrap();
    assert_eq!(health.status, 200, "{}", health.body);
    let reply = tokio::time::timeout(
        Duration::from_secs(60),
        service.send("SecureEcho", json!({"over": port})),
    )
    .await
    .expect("a reply within a minute")
    .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.content);
    assert_eq!(reply.content, json!({"over": port}));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_talks_over_tls_and_with_scram_logins() {
    let Some(dir) = secure_dir() else { return };
    round_trip(
        9094,
        minos::launcher::KafkaConfig {
            security_protocol: "ssl".into(),
            ssl_ca_location: format!("{dir}/ca.pem"),
            ..Default::default()
        },
    )
    .await;
    round_trip(
        9095,
        minos::launcher::KafkaConfig {
            security_protocol: "sasl_ssl".into(),
            sasl_mechanism: "SCRAM-SHA-512".into(),
            sasl_username: "minos".into(),
            sasl_password: password().as_str().into(),
            ssl_ca_location: format!("{dir}/ca.pem"),
            ..Default::default()
        },
    )
    .await;
}

/// What the broker refuses — a certificate from another CA, a wrong password — fails the publish with
/// the reason, within the publish timeout, and the password is in no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_certificates_and_logins_fail_clearly() {
    let Some(dir) = secure_dir() else { return };
    let options = |pairs: &[(&str, String)]| KafkaOptions {
        publish_timeout: Duration::from_secs(5),
        client: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        ..KafkaOptions::default()
    };
    let cases = [
        (
            "another CA",
            "certificate verify failed",
            9094,
            options(&[
                ("security.protocol", "ssl".into()),
                ("ssl.ca.location", format!("{dir}/other-ca.pem")),
            ]),
        ),
        (
            "a wrong password",
            "uthentication",
            9095,
            options(&[
                ("security.protocol", "sasl_ssl".into()),
                ("sasl.mechanism", "SCRAM-SHA-512".into()),
                ("sasl.username", "minos".into()),
                ("sasl.password", "not-the-password".into()),
                ("ssl.ca.location", format!("{dir}/ca.pem")),
            ]),
        ),
    ];
    for (what, reason, port, options) in cases {
        let broker = KafkaBroker::connect(&format!("127.0.0.1:{port}"), options).unwrap();
        let refused = tokio::time::timeout(
            Duration::from_secs(60),
            broker.publish(BrokerMessage::new(unique("Refused"), json!({}))),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within a minute"));
        let error = refused.expect_err(what).to_string();
        println!("{what}: {error}");
        assert!(!error.contains("not-the-password"), "{error}");
        assert!(
            error.contains(reason),
            "{what}: the error says why: {error}"
        );
        let ping = broker.ping().await.expect_err("the health check fails too");
        assert!(ping.to_string().contains(reason), "{ping}");
    }
}
