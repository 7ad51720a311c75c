//! The `kafka:` section of a service's configuration: the clients' settings, their security, and the
//! secrets that are never shown.

use serde::{Deserialize, Serialize};

/// Kafka settings.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Partitions of the topics the service creates.
    pub partitions: i32,
    /// Replication factor of the topics the service creates.
    pub replication: i32,
    /// How long a publish waits for the broker's acknowledgement.
    pub publish_timeout_ms: u64,
    /// How long the broker may hold a consumer's fetch when no message is there yet (librdkafka's
    /// `fetch.wait.max.ms`). Brokers that answer as soon as a message arrives only poll less often
    /// with a higher value; brokers that wait it out add up to this much to every hop.
    pub fetch_wait_ms: u64,
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl` (librdkafka's
    /// `security.protocol`). TLS and SCRAM need the `kafka-tls` feature of `minos`.
    pub security_protocol: String,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER` (`sasl.mechanism`).
    pub sasl_mechanism: String,
    /// The SASL user name (`sasl.username`).
    pub sasl_username: String,
    /// The SASL password (`sasl.password`): best from `MINOS_KAFKA_SASL_PASSWORD`. Never logged.
    pub sasl_password: Secret,
    /// The CA certificates (PEM) the brokers' certificates must chain to (`ssl.ca.location`).
    pub ssl_ca_location: String,
    /// A client certificate (PEM) for brokers that ask for one (`ssl.certificate.location`).
    pub ssl_certificate_location: String,
    /// Its private key (PEM) (`ssl.key.location`).
    pub ssl_key_location: String,
    /// The key's password, if it is encrypted (`ssl.key.password`). Never logged.
    pub ssl_key_password: Secret,
    /// Any other librdkafka property, passed as is to every client (producer, consumers, admin):
    /// `{"ssl.endpoint.identification.algorithm": "none"}`. Values of keys naming a password or
    /// secret are never logged.
    #[serde(serialize_with = "masked_properties")]
    pub client: std::collections::BTreeMap<String, String>,
    /// librdkafka properties for the producer only, after `client`: `{"linger.ms": "5",
    /// "compression.type": "lz4"}` (a producer property in `client` makes every consumer warn that
    /// it ignores it).
    #[serde(serialize_with = "masked_properties")]
    pub producer: std::collections::BTreeMap<String, String>,
    /// librdkafka properties for the consumers only, after `client`: `{"fetch.min.bytes": "1"}`.
    #[serde(serialize_with = "masked_properties")]
    pub consumer: std::collections::BTreeMap<String, String>,
}

/// Whether a librdkafka property holds a secret (its value is never shown).
fn is_secret_property(key: &str) -> bool {
    ["password", "secret", "pem", "jaas", "token"]
        .iter()
        .any(|word| key.contains(word))
}

/// `properties` with the values of secret-holding keys shown as `***`.
pub(crate) fn masked(
    properties: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<&str, &str> {
    properties
        .iter()
        .map(|(key, value)| {
            let shown = if is_secret_property(key) {
                "***"
            } else {
                value.as_str()
            };
            (key.as_str(), shown)
        })
        .collect()
}

fn masked_properties<S: serde::Serializer>(
    properties: &std::collections::BTreeMap<String, String>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_map(masked(properties))
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .field("fetch_wait_ms", &self.fetch_wait_ms)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &self.sasl_password)
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field("ssl_key_password", &self.ssl_key_password)
            .field("client", &masked(&self.client))
            .field("producer", &masked(&self.producer))
            .field("consumer", &masked(&self.consumer))
            .finish()
    }
}

/// A setting that is never shown: `***` in logs, `Debug` and the configuration the service exposes.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty (not set).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            partitions: 3,
            replication: 1,
            publish_timeout_ms: 10_000,
            fetch_wait_ms: 5,
            security_protocol: String::new(),
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            sasl_password: Secret::default(),
            ssl_ca_location: String::new(),
            ssl_certificate_location: String::new(),
            ssl_key_location: String::new(),
            ssl_key_password: Secret::default(),
            client: std::collections::BTreeMap::new(),
            producer: std::collections::BTreeMap::new(),
            consumer: std::collections::BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::launcher::Config;

    #[test]
    fn kafka_secrets_come_from_the_environment_and_are_never_shown() {
        let config = Config::from_yaml(
            "kafka: {security_protocol: SASL_SSL, sasl_mechanism: scram-sha-512, sasl_username: orders, \
             ssl_ca_location: /etc/kafka/ca.pem, client: {\"sasl.oauthbearer.client.secret\": s3}}",
        )
        .unwrap();
        assert!(config.kafka.sasl_password.is_empty());
        // A variable only this test sets.
        std::env::set_var("MINOS_KAFKA_SASL_PASSWORD", "hunter2-from-env");
        let from_env = Config::from_env();
        std::env::remove_var("MINOS_KAFKA_SASL_PASSWORD");
        let from_env = from_env.unwrap();
        assert_eq!(from_env.kafka.sasl_password.expose(), "hunter2-from-env");
        let mut config = config;
        config.kafka.sasl_password = from_env.kafka.sasl_password.clone();
        let shown = [
            format!("{config:?}"),
            serde_json::to_string(&config).unwrap(),
            format!("{:?}", crate::messaging::KafkaOptions::from(&config.kafka)),
        ];
        for text in &shown {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("s3\""), "{text}");
        }
        let options = crate::messaging::KafkaOptions::from(&config.kafka);
        assert_eq!(options.client["security.protocol"], "sasl_ssl");
        assert_eq!(options.client["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(options.client["sasl.username"], "orders");
        assert_eq!(options.client["sasl.password"], "hunter2-from-env");
        assert_eq!(options.client["ssl.ca.location"], "/etc/kafka/ca.pem");
        assert_eq!(options.client["sasl.oauthbearer.client.secret"], "s3");
        assert!(
            !options.client.contains_key("ssl.key.password"),
            "unset: not passed"
        );
    }

    #[test]
    fn kafka_producer_and_consumer_properties_are_read_and_masked() {
        let config = Config::from_yaml(
            "kafka: {producer: {\"linger.ms\": \"5\", \"sasl.oauthbearer.client.secret\": s4}, \
             consumer: {\"fetch.min.bytes\": \"64\"}}",
        )
        .unwrap();
        let options = crate::messaging::KafkaOptions::from(&config.kafka);
        assert_eq!(options.producer["linger.ms"], "5");
        assert_eq!(options.consumer["fetch.min.bytes"], "64");
        assert!(options.client.is_empty());
        for text in [
            format!("{config:?}"),
            serde_json::to_string(&config).unwrap(),
            format!("{options:?}"),
        ] {
            assert!(!text.contains("s4"), "{text}");
            assert!(text.contains("fetch.min.bytes"), "{text}");
        }
        let error = Config::from_yaml("kafka: {producers: {\"linger.ms\": \"5\"}}")
            .unwrap_err()
            .to_string();
        assert!(error.contains("producers"), "{error}");
    }
}
