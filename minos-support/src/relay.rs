//! What an outbox relay delivered, checked: each message once, each root's versions in order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use minos::messaging::Subscription;

/// Receives `expected` deliveries from `received` (acknowledging each, waiting up to `wait` for
/// each), then checks that none came twice and that the messages whose content names a `uuid` and a
/// `version` came, for each uuid, as versions 1, 2, 3… in that order. Answers how many uuids came.
pub async fn receive_once_in_order(
    received: &mut Subscription,
    expected: usize,
    wait: Duration,
) -> usize {
    let mut seen = HashSet::new();
    let mut order: Vec<(String, u64)> = Vec::new();
    while seen.len() < expected {
        let delivery = tokio::time::timeout(wait, received.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {expected} published: {order:?}", seen.len()))
            .expect("the subscription is open");
        assert!(
            seen.insert(delivery.message.identifier),
            "published twice: {:?}",
            delivery.message
        );
        let content = &delivery.message.payload.content;
        if let (Some(uuid), Some(version)) = (content["uuid"].as_str(), content["version"].as_u64())
        {
            order.push((uuid.to_owned(), version));
        }
        delivery.ack();
    }
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (uuid, version) in &order {
        let before = last.insert(uuid, *version).unwrap_or(0);
        assert_eq!(
            *version,
            before + 1,
            "each root's messages in order: {uuid} in {order:?}"
        );
    }
    last.len()
}
