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
    /// librdkafka properties set on the producer only, after `client`.
    pub producer: std::collections::BTreeMap<String, String>,
    /// librdkafka properties set on the consumers only, after `client`.
    pub consumer: std::collections::BTreeMap<String, String>,
}

/// Which client a configuration is for: its own properties go on top of `client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Producer,
    Consumer,
    Admin,
}

impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOptions")
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("publish_timeout", &self.publish_timeout)
            .field("fetch_wait", &self.fetch_wait)
            .field("client", &crate::launcher::masked(&self.client))
            .field("producer", &crate::launcher::masked(&self.producer))
            .field("consumer", &crate::launcher::masked(&self.consumer))
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

    /// A configuration of a `role` client for `bootstrap` with these options' properties.
    pub(super) fn client_config(&self, bootstrap: &str, role: Role) -> ClientConfig {
        self.client_config_with(bootstrap, role, &[])
    }

    /// A configuration of a `role` client for `bootstrap` with the runtime's `defaults`, then
    /// these options' `client` properties, then the role's own (`producer` or `consumer`): both may
    /// change the defaults; [`check`](Self::check) refuses the properties the runtime sets itself,
    /// which the caller sets after this.
    pub(super) fn client_config_with(
        &self,
        bootstrap: &str,
        role: Role,
        defaults: &[(&str, &str)],
    ) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        let own = match role {
            Role::Producer => Some(&self.producer),
            Role::Consumer => Some(&self.consumer),
            Role::Admin => None,
        };
        for (key, value) in self.client.iter().chain(own.into_iter().flatten()) {
            config.set(key, value);
        }
        config
    }

    /// Refuses settings this build cannot honour, and properties the runtime sets itself, saying what
    /// to do.
    pub(super) fn check(&self) -> Result<()> {
        for (section, properties) in [
            ("client", &self.client),
            ("producer", &self.producer),
            ("consumer", &self.consumer),
        ] {
            if let Some((key, why)) = RUNTIME_PROPERTIES
                .iter()
                .find(|(key, _)| properties.contains_key(*key))
            {
                return Err(Error::Config(format!(
                    "kafka.{section} `{key}`: the runtime sets it ({why}); remove it"
                )));
            }
        }
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
                "kafka: security_protocol `{protocol}` / sasl_mechanism `{mechanism}` need TLS support \
                 in librdkafka: build with the `kafka-tls` feature of minos (it links the system's \
                 OpenSSL: Debian's libssl-dev and pkg-config)"
            )));
        }
        Ok(())
    }
}

/// The librdkafka properties the runtime sets itself, refused in `kafka.client`, `kafka.producer` and
/// `kafka.consumer`, with the reason.
/// The others it sets (`linger.ms`, `socket.nagle.disable`, `session.timeout.ms`,
/// `topic.metadata.refresh.interval.ms`) are defaults that `kafka.client` may change.
const RUNTIME_PROPERTIES: [(&str, &str); 10] = [
    ("bootstrap.servers", "from `broker: kafka://HOST:PORT`"),
    (
        "acks",
        "`all`: an acknowledged publish is on every in-sync replica",
    ),
    (
        "enable.idempotence",
        "a publish retried by the client is stored once",
    ),
    ("message.timeout.ms", "from `kafka.publish_timeout_ms`"),
    ("fetch.wait.max.ms", "from `kafka.fetch_wait_ms`"),
    ("group.id", "one consumer group per service"),
    (
        "enable.auto.commit",
        "offsets are committed once a message is handled",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed once a message is handled",
    ),
    (
        "auto.offset.reset",
        "a new group starts at the end of its topics",
    ),
    (
        "enable.partition.eof",
        "the consumers do not stop at the end of a partition",
    ),
];

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            partitions: 3,
            replication: 1,
            publish_timeout: Duration::from_secs(10),
            fetch_wait: Duration::from_millis(5),
            client: std::collections::BTreeMap::new(),
            producer: std::collections::BTreeMap::new(),
            consumer: std::collections::BTreeMap::new(),
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
            producer: config.producer.clone(),
            consumer: config.consumer.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(client: &[(&str, &str)]) -> KafkaOptions {
        KafkaOptions {
            client: client
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..KafkaOptions::default()
        }
    }

    #[test]
    fn properties_the_runtime_sets_are_refused_saying_why() {
        for (key, hint) in [
            ("acks", "in-sync replica"),
            ("enable.auto.commit", "once a message is handled"),
            ("fetch.wait.max.ms", "kafka.fetch_wait_ms"),
            ("message.timeout.ms", "kafka.publish_timeout_ms"),
        ] {
            let error = with(&[(key, "1")]).check().unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")), "{error}");
            assert!(
                error.contains(hint) && error.contains("remove it"),
                "{error}"
            );
        }
        assert!(with(&[("linger.ms", "0"), ("client.id", "orders")])
            .check()
            .is_ok());
    }

    #[test]
    fn client_properties_change_the_runtime_defaults() {
        let defaults = [("linger.ms", "0"), ("socket.nagle.disable", "true")];
        let config =
            with(&[("linger.ms", "5")]).client_config_with("b:9092", Role::Producer, &defaults);
        assert_eq!(config.get("linger.ms"), Some("5"));
        assert_eq!(config.get("socket.nagle.disable"), Some("true"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
        let plain = with(&[]).client_config_with("b:9092", Role::Producer, &defaults);
        assert_eq!(plain.get("linger.ms"), Some("0"));
    }

    #[test]
    fn producer_and_consumer_properties_reach_only_their_clients() {
        let mut options = with(&[("client.id", "orders"), ("linger.ms", "1")]);
        options.producer = [("linger.ms".to_owned(), "5".to_owned())].into();
        options.consumer = [("fetch.min.bytes".to_owned(), "64".to_owned())].into();
        let producer = options.client_config("b:9092", Role::Producer);
        assert_eq!(
            producer.get("linger.ms"),
            Some("5"),
            "its own win over client"
        );
        assert_eq!(producer.get("fetch.min.bytes"), None);
        assert_eq!(producer.get("client.id"), Some("orders"));
        let consumer = options.client_config("b:9092", Role::Consumer);
        assert_eq!(consumer.get("fetch.min.bytes"), Some("64"));
        assert_eq!(
            consumer.get("linger.ms"),
            Some("1"),
            "client still reaches it"
        );
        assert_eq!(consumer.get("client.id"), Some("orders"));
        let admin = options.client_config("b:9092", Role::Admin);
        assert_eq!(admin.get("fetch.min.bytes"), None);
        assert_eq!(admin.get("linger.ms"), Some("1"));

        let mut refused = with(&[]);
        refused.consumer = [("group.id".to_owned(), "mine".to_owned())].into();
        let error = refused.check().unwrap_err().to_string();
        assert!(error.contains("kafka.consumer `group.id`"), "{error}");
        let mut refused = with(&[]);
        refused.producer = [("acks".to_owned(), "1".to_owned())].into();
        let error = refused.check().unwrap_err().to_string();
        assert!(error.contains("kafka.producer `acks`"), "{error}");
    }
}
