//! The options every Kafka client of a service is made with (the `kafka:` section, its security
//! settings), and the context that keeps librdkafka's complaints for the errors they explain.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;

use crate::error::{Error, Result};

/// Kafka settings beyond the bootstrap servers.
#[derive(Clone)]
pub struct KafkaOptions {
    /// Partitions of the topics this service creates.
    pub partitions: i32,
    /// Replication factor of the topics this service creates.
    pub replication: i32,
    /// How long a publish may wait for the broker's acknowledgement before it fails.
    pub publish_timeout: Duration,
    /// How long the broker may hold a fetch when no message is there yet (`fetch.wait.max.ms`).
    pub fetch_wait: Duration,
    /// librdkafka properties set on every client (producer, consumers, admin) after the defaults:
    /// the security settings, and anything else. Values of keys naming a password or a secret are
    /// never shown.
    pub client: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOptions")
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("publish_timeout", &self.publish_timeout)
            .field("fetch_wait", &self.fetch_wait)
            .field("client", &crate::launcher::masked(&self.client))
            .finish()
    }
}

impl KafkaOptions {
    /// The options of the `MINOS_KAFKA_*` environment variables (the `kafka:` section's keys:
    /// `MINOS_KAFKA_SECURITY_PROTOCOL`, `MINOS_KAFKA_SASL_PASSWORD`, …), the defaults otherwise: what
    /// the `minos` commands and the dashboard connect with.
    pub fn from_env() -> Result<Self> {
        Ok((&crate::launcher::Config::from_env()?.kafka).into())
    }

    /// A client configuration for `bootstrap` with these options' properties.
    pub(super) fn client_config(&self, bootstrap: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        for (key, value) in &self.client {
            config.set(key, value);
        }
        config
    }

    /// Refuses settings this build cannot honour, saying what to do.
    pub(super) fn check(&self) -> Result<()> {
        let protocol = self
            .client
            .get("security.protocol")
            .map(|p| p.to_ascii_lowercase())
            .unwrap_or_default();
        if !["", "plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&protocol.as_str()) {
            return Err(Error::Config(format!(
                "kafka.security_protocol `{protocol}`: use plaintext, ssl, sasl_plaintext or sasl_ssl"
            )));
        }
        let mechanism = self
            .client
            .get("sasl.mechanism")
            .map(|m| m.to_ascii_uppercase())
            .unwrap_or_default();
        let needs_tls = protocol.contains("ssl") || mechanism.starts_with("SCRAM");
        if needs_tls && !cfg!(feature = "kafka-tls") {
            return Err(Error::Config(format!(
                "kafka: security_protocol `{protocol}` / sasl_mechanism `{mechanism}` need TLS support                  in librdkafka: build with the `kafka-tls` feature of minos (it links the system's                  OpenSSL: Debian's libssl-dev and pkg-config)"
            )));
        }
        Ok(())
    }
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            partitions: 3,
            replication: 1,
            publish_timeout: Duration::from_secs(10),
            fetch_wait: Duration::from_millis(5),
            client: std::collections::BTreeMap::new(),
        }
    }
}

impl From<&crate::launcher::KafkaConfig> for KafkaOptions {
    /// The options of a service's `kafka:` section (at least one partition and one replica).
    fn from(config: &crate::launcher::KafkaConfig) -> Self {
        KafkaOptions {
            partitions: config.partitions.max(1),
            replication: config.replication.max(1),
            publish_timeout: Duration::from_millis(config.publish_timeout_ms),
            fetch_wait: Duration::from_millis(config.fetch_wait_ms),
            client: client_properties(config),
        }
    }
}

/// Keeps librdkafka's last complaint about the connection (`SSL handshake failed: … certificate verify
/// failed`, `SASL authentication error: …`), logged when it happens and added to the errors it explains.
#[derive(Clone, Default)]
pub(crate) struct Complaints(Arc<Mutex<Option<String>>>);

impl Complaints {
    pub(super) fn last(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn record(&self, reason: &str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reason.to_owned());
    }
}

impl rdkafka::client::ClientContext for Complaints {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as Level;
        match level {
            Level::Emerg | Level::Alert | Level::Critical | Level::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}");
                self.record(message);
            }
            Level::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            Level::Notice | Level::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            Level::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client");
        // "1/1 brokers are down" says less than the complaint before it.
        if !reason.contains("brokers are down") {
            self.record(reason);
        }
    }
}

/// The librdkafka properties of a `kafka:` section: its security settings, then `client:`.
fn client_properties(
    config: &crate::launcher::KafkaConfig,
) -> std::collections::BTreeMap<String, String> {
    let mut properties = std::collections::BTreeMap::new();
    for (key, value) in [
        (
            "security.protocol",
            config.security_protocol.to_ascii_lowercase(),
        ),
        ("sasl.mechanism", config.sasl_mechanism.to_ascii_uppercase()),
        ("sasl.username", config.sasl_username.clone()),
        ("sasl.password", config.sasl_password.expose().to_owned()),
        ("ssl.ca.location", config.ssl_ca_location.clone()),
        (
            "ssl.certificate.location",
            config.ssl_certificate_location.clone(),
        ),
        ("ssl.key.location", config.ssl_key_location.clone()),
        (
            "ssl.key.password",
            config.ssl_key_password.expose().to_owned(),
        ),
    ] {
        if !value.is_empty() {
            properties.insert(key.to_owned(), value);
        }
    }
    properties.extend(config.client.clone());
    properties
}

#[cfg(test)]
mod security_tests {
    use super::*;
    use crate::messaging::KafkaBroker;

    fn options(pairs: &[(&str, &str)]) -> KafkaOptions {
        KafkaOptions {
            client: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..KafkaOptions::default()
        }
    }

    #[test]
    fn unknown_protocols_are_refused_saying_what_to_write() {
        let error = KafkaBroker::connect("127.0.0.1:1", options(&[("security.protocol", "tls")]))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("sasl_ssl"), "{error}");
    }

    #[cfg(not(feature = "kafka-tls"))]
    #[test]
    fn tls_without_the_feature_names_the_feature() {
        let error = KafkaBroker::connect("127.0.0.1:1", options(&[("security.protocol", "ssl")]))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("kafka-tls"), "{error}");
    }
}
