//! Messaging against a real Kafka-protocol broker (`MINOS_TEST_KAFKA`, default 127.0.0.1:9092):
//! consumer groups and fan-out, redelivery of unacknowledged messages, the inbox, dead letters and
//! request/reply.
#![allow(missing_docs, unreachable_pub)]

mod kafka_support;

use std::time::Duration;

use kafka_support::{eventually, start, tallies};
use minos::messaging::{Broker, BrokerMessage};
use minos::prelude::*;
use minos::testing::TestClient;
use minos_support::kafka::{bootstrap, broker, unique};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_gets_every_message_once() {
    let broker = broker().await;
    let topic = unique("fanout");
    let topics = [topic.clone()];
    let mut first = broker.subscribe(&unique("group-a"), &topics).await.unwrap();
    let mut second = broker.subscribe(&unique("group-b"), &topics).await.unwrap();
    let sent: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    for (i, id) in sent.iter().enumerate() {
        let mut message = BrokerMessage::new(topic.clone(), json!(i));
        message.identifier = *id;
        message.key = Some(format!("key-{}", i % 4));
        broker.publish(message).await.unwrap();
    }
    for subscription in [&mut first, &mut second] {
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let delivery = tokio::time::timeout(Duration::from_secs(30), subscription.next())
                .await
                .expect("delivery")
                .unwrap();
            got.push(delivery.message.identifier);
            delivery.ack();
        }
        got.sort();
        let mut expected = sent.clone();
        expected.sort();
        assert_eq!(got, expected);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), subscription.next())
                .await
                .is_err(),
            "no duplicates"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_are_delivered_again() {
    let broker = broker().await;
    let topic = unique("redeliver");
    let group = unique("group");
    let topics = [topic.clone()];
    let mut consumer = broker.subscribe(&group, &topics).await.unwrap();
    let message = BrokerMessage::new(topic.clone(), json!("once"));
    broker.publish(message.clone()).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.message.identifier, message.identifier);
    // The consumer dies before committing: no ack.
    drop(delivery);
    drop(consumer);
    let mut replacement = broker.subscribe(&group, &topics).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(60), replacement.next())
        .await
        .expect("redelivered")
        .unwrap();
    assert_eq!(again.message.identifier, message.identifier);
    again.ack();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_handled_once() {
    let service = start(&unique("kinbox")).await;
    let tag = unique("tag");
    let message = BrokerMessage::new("KRecord", json!({"tag": tag}));
    for _ in 0..3 {
        service
            .context()
            .broker()
            .publish(message.clone())
            .await
            .unwrap();
    }
    let recorded = format!("recorded:{tag}");
    eventually("the event was handled", Duration::from_secs(30), || async {
        tallies(&service, &recorded).await >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        tallies(&service, &recorded).await,
        1,
        "three deliveries, one effect"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_and_undecodable_messages_are_parked_and_the_partition_moves_on() {
    let name = unique("kpoison");
    let service = start(&name).await;
    let kafka = broker().await;
    let mut parked = kafka
        .subscribe(&unique("observer"), &[format!("{name}.dead-letter")])
        .await
        .unwrap();

    let garbage = unique("this is not an envelope");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to("KRecord")
                .key("k")
                .payload(garbage.as_bytes()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let poison = BrokerMessage::new("KPoison", json!({"bad": true}));
    kafka.publish(poison.clone()).await.unwrap();
    let tag = unique("after");
    kafka
        .publish(BrokerMessage::new("KRecord", json!({"tag": tag})))
        .await
        .unwrap();

    // Earlier runs may have parked messages on the same topics: look for this run's two.
    let (mut poison_parked, mut garbage_parked) = (false, false);
    while !(poison_parked && garbage_parked) {
        let delivery = tokio::time::timeout(Duration::from_secs(60), parked.next())
            .await
            .expect("a dead letter")
            .unwrap();
        let message = delivery.message.clone();
        delivery.ack();
        let headers = &message.payload.headers;
        if message.identifier == poison.identifier {
            assert_eq!(
                headers.get("error").map(String::as_str),
                Some("indigestible")
            );
            assert_eq!(
                headers.get("original_topic").map(String::as_str),
                Some("KPoison")
            );
            assert_eq!(message.payload.content, json!({"bad": true}));
            poison_parked = true;
        }
        if message.payload.content.get("raw").and_then(|r| r.as_str()) == Some(garbage.as_str()) {
            assert!(headers["error"].contains("undecodable"), "{headers:?}");
            assert_eq!(
                headers.get("original_topic").map(String::as_str),
                Some("KRecord")
            );
            garbage_parked = true;
        }
    }
    let recorded = format!("recorded:{tag}");
    eventually(
        "a later message still flows",
        Duration::from_secs(30),
        || async { tallies(&service, &recorded).await == 1 },
    )
    .await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_matched_by_identifier_not_arrival_order() {
    let service = start(&unique("kreply")).await;
    let client = service.context().client().clone();
    // Once one request is answered, the service's consumer group has its partitions.
    let warm = BrokerMessage::new("KSlowEcho", json!({"delay_ms": 0}));
    client
        .request(warm, Duration::from_secs(60))
        .await
        .expect("a first reply");
    let delays = [350u64, 300, 250, 200, 150, 100, 50, 0];
    let tasks: Vec<_> = delays
        .iter()
        .map(|delay| {
            let client = client.clone();
            let delay = *delay;
            tokio::spawn(async move {
                let request = BrokerMessage::new("KSlowEcho", json!({"delay_ms": delay}));
                let reply = client
                    .request(request, Duration::from_secs(30))
                    .await
                    .unwrap();
                (delay, reply, std::time::Instant::now())
            })
        })
        .collect();
    let mut arrivals = Vec::new();
    for task in tasks {
        let (delay, reply, at) = task.await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content, json!({"delay_ms": delay}));
        arrivals.push((at, delay));
    }
    arrivals.sort();
    let order: Vec<u64> = arrivals.iter().map(|(_, delay)| *delay).collect();
    // Handled in parallel, the quicker requests are answered before slower ones sent earlier.
    assert_ne!(
        order, delays,
        "replies came back in another order than sent: {order:?}"
    );

    let timeout = client
        .request(
            BrokerMessage::new(unique("NobodyAnswers"), json!({})),
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
    assert!(matches!(timeout, Error::Timeout { .. }), "{timeout}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_events_travel_from_the_outbox_through_kafka() {
    let service = start(&unique("kflow")).await;
    let http = TestClient::new(service.addr());
    let tag = unique("flow");
    let answer = http.post("/ktallies", json!({"tag": tag})).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = format!("seen:{tag}");
    eventually(
        "TallyCreated reached the handler",
        Duration::from_secs(30),
        || async { tallies(&service, &seen).await == 1 },
    )
    .await;
    service.stop().await;
}

/// `minos dead-letters`: a parked message is listed and shown; re-driven (twice) it is handled once,
/// by the service that parked it only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_and_redrives_dead_letters_once() {
    let name = unique("kredrive");
    let other = unique("kother");
    let (service, bystander) = (start(&name).await, start(&other).await);
    let tag = unique("flaky");
    kafka_support::fail_for(&name, &tag, true);
    broker()
        .await
        .publish(BrokerMessage::new("KFlaky", json!({"tag": tag})))
        .await
        .unwrap();
    let flaky = format!("flaky:{tag}");
    eventually(
        "the bystander handled it",
        Duration::from_secs(60),
        || async { tallies(&bystander, &flaky).await == 1 },
    )
    .await;

    let service_name = name.as_str();
    let cli = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_minos"))
            .arg("dead-letters")
            .args([
                "--service",
                service_name,
                "--broker",
                &format!("kafka://{}", bootstrap()),
            ])
            .args(&args)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let mut parked = None;
    for _ in 0..60 {
        let (ok, listed) = cli(vec!["--json".into()]).await;
        assert!(ok, "{listed}");
        parked = listed
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|letter| letter["content"]["tag"] == json!(tag));
        if parked.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let parked = parked.expect("the failed event is listed as a dead letter");
    assert_eq!(parked["original_topic"], "KFlaky", "{parked}");
    assert!(
        parked["error"]
            .as_str()
            .unwrap()
            .contains("failing on purpose"),
        "{parked}"
    );
    let identifier = parked["identifier"].as_str().unwrap().to_owned();
    let (ok, text) = cli(vec!["list".into()]).await;
    assert!(
        ok && text.contains(&identifier) && text.contains("KFlaky"),
        "{text}"
    );
    let (ok, shown) = cli(vec!["show".into(), identifier.clone()]).await;
    assert!(
        ok && shown.contains(&tag) && shown.contains("failing on purpose"),
        "{shown}"
    );
    let (ok, said) = cli(vec!["show".into(), Uuid::new_v4().to_string()]).await;
    assert!(!ok && said.contains("no dead letter"), "{said}");
    assert_eq!(tallies(&service, &flaky).await, 0);

    kafka_support::fail_for(&name, &tag, false);
    for _ in 0..2 {
        let (ok, said) = cli(vec!["redrive".into(), identifier.clone()]).await;
        assert!(
            ok && said.contains("re-drove") && said.contains("KFlaky"),
            "{said}"
        );
    }
    eventually(
        "the re-driven event was handled",
        Duration::from_secs(60),
        || async { tallies(&service, &flaky).await >= 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        tallies(&service, &flaky).await,
        1,
        "re-driven twice, handled once"
    );
    assert_eq!(
        tallies(&bystander, &flaky).await,
        1,
        "not handled again by the others"
    );
    let (ok, said) = cli(vec!["redrive".into()]).await;
    assert!(!ok && said.contains("--all"), "{said}");
    // The service's own admin endpoint reads the same topic: listed, re-driven and handled.
    let http = minos::testing::TestClient::new(service.addr());
    let listed = http.get("/dead-letters").await.unwrap();
    assert_eq!(listed.status, 200, "{}", listed.body);
    let entry = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|letter| letter["identifier"] == json!(identifier))
        .cloned()
        .unwrap_or_else(|| panic!("{identifier} not in {}", listed.body));
    assert_eq!(entry["original_topic"], "KFlaky", "{entry}");
    assert_eq!(entry["redriven_and_handled"], json!(true), "{entry}");
    service.stop().await;
    bystander.stop().await;
}

/// The outbox relay over Kafka with a PostgreSQL outbox: what this process's appends and units commit
/// reaches the relay through the store's feed, another process's rows through the table. Each message
/// goes out once, each root's in version order, and every row ends marked sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outbox_relayed_over_kafka_goes_out_once_in_order() {
    use minos::domain::DomainMessage;
    use minos::messaging::OutboxRelay;
    use minos::store::{InboxEntry, PostgresStore};
    use minos::{Action, Event};
    use std::sync::Arc;

    let url = minos_support::postgres::fresh_schema_url();
    let repository = Repository::new(PostgresStore::connect(&url).await.unwrap());
    let other = PostgresStore::connect(&url).await.unwrap();
    let broker: Arc<dyn Broker> = Arc::new(broker().await);
    let topic = unique("relayed");
    let mut received = broker
        .subscribe(&unique("observer"), std::slice::from_ref(&topic))
        .await
        .unwrap();
    let relay = OutboxRelay::new(
        repository.store().clone(),
        Arc::clone(&broker),
        repository.commits(),
    )
    .spawn();
    let named = topic.clone();
    let change = move |uuid: Uuid, version: u64| {
        let event = Event {
            uuid,
            name: "Relayed".into(),
            version,
            action: if version == 1 {
                Action::Create
            } else {
                Action::Update
            },
            created_at: Utc::now(),
            fields_diff: Vec::new(),
        };
        let message = DomainMessage {
            identifier: Uuid::new_v4(),
            topic: named.clone(),
            key: uuid.to_string(),
            content: json!({ "uuid": uuid, "version": version }),
            headers: Default::default(),
        };
        (event, vec![message])
    };
    let (roots, versions) = (12, 4);
    let writers: Vec<_> = (0..roots)
        .map(|i| {
            let store = repository.store().clone();
            let change = change.clone();
            tokio::spawn(async move {
                let uuid = Uuid::now_v7();
                for version in 1..=versions {
                    // Appends, and every third root in units with an inbox entry.
                    let entry = InboxEntry::new("svc", Uuid::new_v4());
                    let entry = (i % 3 == 0).then_some(&entry);
                    store
                        .commit_unit(&[change(uuid, version)], entry)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let client = other.pool().get().await.unwrap();
    for i in 0..5 {
        client
            .execute(
                "INSERT INTO outbox (identifier, topic, key, payload, created_at) \
                 VALUES (gen_random_uuid(), $1, 'elsewhere', $2, now())",
                &[&topic, &json!({ "elsewhere": i })],
            )
            .await
            .unwrap();
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let expected = roots * versions as usize + 5;
    let wait = Duration::from_secs(30);
    let roots_seen =
        minos_support::relay::receive_once_in_order(&mut received, expected, wait).await;
    assert_eq!(roots_seen, roots);
    eventually("every row marked sent", Duration::from_secs(10), || async {
        repository.store().pending(10).await.unwrap().is_empty()
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), received.next())
            .await
            .is_err(),
        "each row once"
    );
    relay.stop().await;
}
