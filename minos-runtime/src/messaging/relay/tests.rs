//! The relay's tests: leases and first deliveries, and marks on a broker that holds messages until
//! handled.

use super::*;
use crate::domain::{Action, DomainMessage, Event};
use crate::messaging::{Broker, MemoryBroker};
use crate::store::{MemoryStore, Store};
use uuid::Uuid;

/// A relay from `store` to `broker` polling every 20 ms.
fn spawn_relay(store: &SharedStore, broker: &Arc<MemoryBroker>, wake: &Arc<Notify>) -> RelayHandle {
    OutboxRelay::new(
        Arc::clone(store),
        Arc::clone(broker) as SharedBroker,
        Arc::clone(wake),
    )
    .poll_interval(Duration::from_millis(20))
    .spawn()
}

async fn write(store: &dyn Store, n: u64) -> Uuid {
    let uuid = Uuid::now_v7();
    let event = Event {
        uuid,
        name: "Foo".into(),
        version: 1,
        action: Action::Create,
        created_at: chrono::Utc::now(),
        fields_diff: Vec::new(),
    };
    let message = DomainMessage {
        identifier: Uuid::now_v7(),
        topic: "FooCreated".into(),
        key: uuid.to_string(),
        content: serde_json::json!(n),
        headers: Default::default(),
    };
    store
        .commit_unit(&[(event, vec![message])], None)
        .await
        .unwrap();
    uuid
}

/// A memory store, an in-process broker and group `g`'s subscription to `FooCreated`.
async fn setup() -> (
    SharedStore,
    Arc<MemoryBroker>,
    crate::messaging::Subscription,
) {
    let store: SharedStore = Arc::new(MemoryStore::new());
    let broker = Arc::new(MemoryBroker::new());
    let received = broker
        .subscribe("g", &["FooCreated".to_owned()])
        .await
        .unwrap();
    (store, broker, received)
}

/// The next delivery's content and whether it is marked as a first delivery.
async fn next(received: &mut crate::messaging::Subscription) -> (serde_json::Value, bool) {
    let (message, first, acknowledge) =
        tokio::time::timeout(Duration::from_secs(5), received.next())
            .await
            .expect("published")
            .expect("open")
            .into_parts();
    acknowledge.ack();
    (message.payload.content, first)
}

#[tokio::test]
async fn rows_written_after_the_lease_go_out_as_first_deliveries() {
    let (store, broker, mut received) = setup().await;
    // Written before the relay holds its lease: an earlier relay may have published it.
    write(store.as_ref(), 0).await;
    let wake = Arc::new(Notify::new());
    let relay = spawn_relay(&store, &broker, &wake);
    assert_eq!(next(&mut received).await, (serde_json::json!(0), false));
    for n in 1..=3 {
        write(store.as_ref(), n).await;
        wake.notify_one();
        assert_eq!(next(&mut received).await, (serde_json::json!(n), true));
    }
    // One relay per store: a second one waits for the lease.
    assert!(store.relay_lease().await.unwrap().is_none());
    relay.stop().await;
    let lease = store.relay_lease().await.unwrap().expect("released");
    assert_eq!(lease.horizon(), Some(4), "the last row written");
    drop(lease);
    // A message published by anything but the relay may be a repeat.
    broker
        .publish(BrokerMessage::new("FooCreated", serde_json::json!(4)))
        .await
        .unwrap();
    assert_eq!(next(&mut received).await, (serde_json::json!(4), false));
    // A relay without a lease's horizon marks nothing as first.
    write(store.as_ref(), 5).await;
    OutboxRelay::new(Arc::clone(&store), broker.clone(), wake)
        .relay_pending()
        .await
        .unwrap();
    assert_eq!(next(&mut received).await, (serde_json::json!(5), false));
}

/// Whether row `id` still waits in the outbox.
async fn unsent(store: &dyn Store, id: i64) -> bool {
    store
        .pending(100)
        .await
        .unwrap()
        .iter()
        .any(|record| record.id == id)
}

#[tokio::test]
async fn on_the_in_process_broker_a_row_is_marked_sent_once_its_message_was_handled() {
    let (store, broker, mut received) = setup().await;
    let wake = Arc::new(Notify::new());
    let relay = spawn_relay(&store, &broker, &wake);
    write(store.as_ref(), 1).await;
    wake.notify_one();
    let delivery = tokio::time::timeout(Duration::from_secs(5), received.next())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        unsent(store.as_ref(), 1).await,
        "published but not handled: still in the outbox"
    );
    // Dropped unhandled (its consumer failed): published again, as a repeat.
    drop(delivery);
    let (message, first, acknowledge) =
        tokio::time::timeout(Duration::from_secs(5), received.next())
            .await
            .expect("published again")
            .unwrap()
            .into_parts();
    assert_eq!(message.payload.content, serde_json::json!(1));
    assert!(!first, "a repeat is no first delivery");
    acknowledge.ack();
    let started = std::time::Instant::now();
    while unsent(store.as_ref(), 1).await {
        assert!(started.elapsed() < Duration::from_secs(5), "never marked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Held (its consumers are about to stop): nothing more goes out.
    relay.hold().await;
    write(store.as_ref(), 3).await;
    wake.notify_one();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), received.next())
            .await
            .is_err(),
        "a held relay publishes nothing"
    );
    assert!(
        unsent(store.as_ref(), 2).await,
        "row 2 waits for the next start"
    );
    relay.stop().await;
    let relay = spawn_relay(&store, &broker, &wake);
    let (content, first) = next(&mut received).await;
    assert_eq!(content, serde_json::json!(3));
    assert!(!first, "written before this relay's lease");
    // Stopped while a message is in its handler: its row stays for the next start.
    write(store.as_ref(), 2).await;
    wake.notify_one();
    let held = tokio::time::timeout(Duration::from_secs(5), received.next())
        .await
        .unwrap()
        .unwrap();
    relay.stop().await;
    assert!(unsent(store.as_ref(), 3).await);
    drop(held);
    drop(received);
    // The next run (a new broker: the old one's memory is gone) publishes it again.
    let broker = Arc::new(MemoryBroker::new());
    let mut received = broker
        .subscribe("g", &["FooCreated".to_owned()])
        .await
        .unwrap();
    let relay = spawn_relay(&store, &broker, &wake);
    assert_eq!(next(&mut received).await, (serde_json::json!(2), false));
    relay.stop().await;
    assert!(!unsent(store.as_ref(), 3).await, "handled, then marked");
}

#[test]
fn the_sweep_reads_below_every_row_in_flight_and_dropped_rows_wait_their_delay() {
    let mut flight = InFlight::new(Duration::from_millis(500));
    assert!(!flight.sweep_due(Duration::ZERO), "nothing read yet");
    flight.cursor = 3;
    assert_eq!(flight.floor(), 4, "nothing in flight: everything read");
    flight.ids.extend([2, 3]);
    assert_eq!(flight.floor(), 2);
    flight.note(Receipt {
        id: 2,
        handled: false,
    });
    assert!(flight.handled.is_empty());
    let retry = flight.next_due(true).expect("published again later");
    assert!(retry > Instant::now() + Duration::from_millis(400));
    assert_eq!(flight.next_due(false), None, "held: nothing to publish");
    flight.note(Receipt {
        id: 3,
        handled: true,
    });
    assert_eq!(
        (
            flight.floor(),
            flight.handled.iter().copied().collect::<Vec<_>>()
        ),
        (3, vec![3]),
        "a sweep reads below the rows whose marks wait"
    );
    assert!(flight.next_due(false).is_some(), "a mark is due");
    // Handled and waiting for its mark, or dropped and waiting for its delay: nothing publishes
    // either now.
    assert!(flight.taken(3) && flight.taken(2) && !flight.taken(1));
}
