//! The service's Kafka producer, replaced when librdkafka declares it broken, and the dead letters it
//! parks undecodable messages with.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::json;

use super::{kafka_error, Complaints};

/// The producer type: librdkafka's complaints recorded (see [`Complaints`]).
pub(super) type KafkaProducer = FutureProducer<Complaints>;
use crate::error::Result;
use crate::messaging::BrokerMessage;

pub(super) struct DeadLetters {
    pub(super) producer: Arc<SharedProducer>,
    pub(super) topic: String,
    pub(super) timeout: Duration,
}

impl DeadLetters {
    /// Parks a message that cannot even be decoded, so the partition moves on.
    pub(super) async fn park_raw(&self, topic: &str, raw: &[u8], error: &str) -> Result<()> {
        let mut message = BrokerMessage::new(
            self.topic.clone(),
            json!({"raw": String::from_utf8_lossy(raw)}),
        );
        message
            .payload
            .headers
            .insert(crate::messaging::headers::ERROR.into(), error.to_owned());
        message.payload.headers.insert(
            crate::messaging::headers::ORIGINAL_TOPIC.into(),
            topic.to_owned(),
        );
        let payload = message.to_json();
        let key = message.identifier.to_string();
        self.producer
            .send(&self.topic, &key, &payload, self.timeout)
            .await
            .map_err(|e| kafka_error("publishing a dead letter", e))
    }
}

/// The service's one producer, made again when librdkafka declares it unusable. An idempotent producer
/// whose sequence the broker refused (`OutOfOrderSequenceNumber`, say) is fatally broken: every later send
/// fails until it is replaced, so without this the service could publish nothing until restarted.
pub(super) struct SharedProducer {
    config: ClientConfig,
    complaints: Complaints,
    current: RwLock<KafkaProducer>,
}

impl SharedProducer {
    pub(super) fn new(config: ClientConfig, complaints: Complaints) -> Result<Arc<Self>> {
        let producer = config
            .create_with_context(complaints.clone())
            .map_err(|e| kafka_error("producer", e))?;
        Ok(Arc::new(SharedProducer {
            config,
            complaints,
            current: RwLock::new(producer),
        }))
    }

    /// The producer in use (a cheap handle).
    pub(super) fn get(&self) -> KafkaProducer {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Sends one record and waits for the broker's acknowledgement. A send that failed because the
    /// producer is fatally broken is sent again, once, on a new producer (a message that did reach the
    /// broker is then there twice, which consumers' inboxes skip).
    pub(super) async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> std::result::Result<(), KafkaError> {
        let producer = self.get();
        let record = || FutureRecord::to(topic).key(key).payload(payload);
        match producer.send(record(), timeout).await {
            Ok(_) => Ok(()),
            Err((error, _)) => {
                if !self.renew_if_fatal(&producer) {
                    return Err(error);
                }
                self.get()
                    .send(record(), timeout)
                    .await
                    .map(|_| ())
                    .map_err(|(error, _)| error)
            }
        }
    }

    /// Replaces `used` when it has a fatal error (unless another send already did); whether the
    /// producer now in place is a new one.
    fn renew_if_fatal(&self, used: &KafkaProducer) -> bool {
        let Some((code, reason)) = used.client().fatal_error() else {
            return false;
        };
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.client().native_ptr() != used.client().native_ptr() {
            return true;
        }
        match self
            .config
            .create_with_context::<_, KafkaProducer>(self.complaints.clone())
        {
            Ok(fresh) => {
                tracing::error!(?code, %reason, "the Kafka producer hit a fatal error: replaced it with a new one");
                *current = fresh;
                true
            }
            Err(error) => {
                tracing::error!(?code, %reason, %error, "the Kafka producer hit a fatal error and a new one could not be made");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::Producer;
    use rdkafka::Offset;
    use serde_json::json;

    use crate::messaging::{Broker, BrokerMessage, KafkaBroker, KafkaOptions};

    /// A producer that hit a fatal error is replaced, and the publish that failed on it goes out on the
    /// new one (against the broker at `MINOS_TEST_KAFKA`, default 127.0.0.1:9092).
    #[tokio::test]
    #[allow(unsafe_code)]
    async fn a_fatally_broken_producer_is_replaced() {
        let bootstrap =
            std::env::var("MINOS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
        let broker = KafkaBroker::connect(&bootstrap, KafkaOptions::default()).expect("client");
        let topic = format!("minos-fatal-{}", uuid::Uuid::new_v4().simple());
        broker
            .publish(BrokerMessage::new(topic.clone(), json!(1)))
            .await
            .unwrap_or_else(|e| {
                panic!("this test needs Kafka at {bootstrap} (scripts/kafka-dev.sh start): {e}")
            });
        let broken = broker.producer.get();
        let reason = std::ffi::CString::new("fabricated by the test").expect("C string");
        // SAFETY: `broken` keeps the producer's handle alive for the call, and `reason` is a valid
        // C string that outlives it; librdkafka provides this call for exactly this test.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                broken.client().native_ptr(),
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
        assert!(
            broken.client().fatal_error().is_some(),
            "the fabricated fatal error is set"
        );
        broker
            .publish(BrokerMessage::new(topic.clone(), json!(2)))
            .await
            .expect("the publish goes out on a new producer");
        let fresh = broker.producer.get();
        assert_ne!(fresh.client().native_ptr(), broken.client().native_ptr());
        assert!(fresh.client().fatal_error().is_none());
        broker
            .publish(BrokerMessage::new(topic.clone(), json!(3)))
            .await
            .expect("later publishes use the new producer");
        let ends = broker
            .ends(std::slice::from_ref(&topic))
            .await
            .expect("ends");
        let stored: i64 = ends
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(n) => n,
                _ => 0,
            })
            .sum();
        assert_eq!(stored, 3, "each of the three messages is on the topic once");
    }
}
