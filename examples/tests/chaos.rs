//! The chaos soak: `foo` and `foobar` as processes over PostgreSQL and Kafka take creates and sagas from
//! several clients while one of them is SIGKILLed and restarted every few seconds and the broker is paused
//! for a while. Afterwards every acknowledged create exists exactly once in the event store and went out as
//! exactly one domain message, handled once; every acknowledged saga ended finished, or errored with its
//! compensation run; no outbox row is left unsent. The numbers are printed.
//!
//! `MINOS_CHAOS_COMMANDS` (default 1,000) and `MINOS_CHAOS_SAGAS` (default 50) set the size, spread
//! over `MINOS_CHAOS_SECONDS` (default 30) so that the kills land in the middle of the work; sagas wait
//! `MINOS_CHAOS_SAGA_TIMEOUT_MS` (default 120,000) for a reply before they fail and compensate. By hand:
//! `MINOS_CHAOS_COMMANDS=10000 MINOS_CHAOS_SAGAS=500 MINOS_CHAOS_SECONDS=120 scripts/test.sh -p
//! minos-examples --test chaos`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minos::messaging::Broker;
use minos::store::PostgresStore;
use minos_support::http::Client;
use minos_support::postgres::fresh_schema_url;
use minos_support::process::spawn_listening;
use serde_json::{json, Value};

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Service {
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bootstrap() -> String {
    std::env::var("MINOS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn start(binary: &str, name: &str, storage: &str, port: u16) -> Service {
    let mut command = Command::new(binary);
    command
        .env("MINOS_NAME", name)
        .env("MINOS_STORAGE", storage)
        .env("MINOS_BROKER", format!("kafka://{}", bootstrap()))
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        .env("MINOS_HTTP_PORT", port.to_string())
        // How long a saga waits for a reply before it fails and compensates.
        .env(
            "MINOS_SAGA_TIMEOUT_MS",
            size("MINOS_CHAOS_SAGA_TIMEOUT_MS", 120_000).to_string(),
        )
        // Executions interrupted by a kill are resumed soon after the restart.
        .env("MINOS_SAGA_RESUME_AFTER_MS", "2000")
        .env("MINOS_SAGA_TIDY_INTERVAL_MS", "500");
    let started = spawn_listening(&mut command, name, Duration::from_secs(90));
    // Nobody reads its lines after start-up: let them go.
    std::thread::spawn(move || for _ in started.lines {});
    Service {
        child: started.child,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn client(addr: &str) -> Client {
    Client::new(format!("http://{addr}"))
}

/// A service that is killed and restarted on the same port.
struct Victim {
    binary: &'static str,
    name: String,
    storage: String,
    port: u16,
    running: Mutex<Option<Service>>,
}

impl Victim {
    fn new(binary: &'static str, name: String, storage: String) -> Arc<Self> {
        let port = free_port();
        let service = start(binary, &name, &storage, port);
        Arc::new(Victim {
            binary,
            name,
            storage,
            port,
            running: Mutex::new(Some(service)),
        })
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn kill_and_restart(&self) {
        let mut running = self.running.lock().unwrap();
        if let Some(mut service) = running.take() {
            service.child.kill().unwrap();
            service.child.wait().unwrap();
        }
        *running = Some(start(self.binary, &self.name, &self.storage, self.port));
    }
}

/// Waits until `done` of `total` is due, `seconds` spreading the whole.
fn pace(started: Instant, seconds: f64, done: usize, total: usize) {
    let due = started + Duration::from_secs_f64(seconds * done as f64 / total.max(1) as f64);
    if let Some(wait) = due.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

/// A count over one of the services' tables.
async fn count(tables: &PostgresStore, sql: &str) -> i64 {
    let client = tables.pool().get().await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[test]
fn acknowledged_work_survives_kills_and_a_paused_broker_exactly_once() {
    let commands = size("MINOS_CHAOS_COMMANDS", 1_000);
    let sagas = size("MINOS_CHAOS_SAGAS", 50);
    let seconds = size("MINOS_CHAOS_SECONDS", 30) as f64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let suffix = &minos::Uuid::new_v4().simple().to_string()[..8];
    let (foo_name, foobar_name) = (format!("cfoo-{suffix}"), format!("cfoobar-{suffix}"));
    let foobar = Victim::new(
        env!("CARGO_BIN_EXE_foobar"),
        foobar_name,
        fresh_schema_url(),
    );
    let foo = Victim::new(
        env!("CARGO_BIN_EXE_foo"),
        foo_name.clone(),
        fresh_schema_url(),
    );
    // Both services' tables, read beside them.
    let (foo_tables, foobar_tables) = runtime.block_on(async {
        (
            PostgresStore::connect(&foo.storage).await.unwrap(),
            PostgresStore::connect(&foobar.storage).await.unwrap(),
        )
    });

    // Every FooCreated message on the topic: event uuid → the message identifiers seen for it.
    let received: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Arc::default();
    {
        let received = Arc::clone(&received);
        let mut subscription = runtime.block_on(async {
            let broker = minos_support::kafka::broker().await;
            let group = minos_support::kafka::unique("chaos-observer");
            broker
                .subscribe(&group, &["FooCreated".to_owned()])
                .await
                .unwrap()
        });
        runtime.spawn(async move {
            while let Some(delivery) = subscription.next().await {
                let message = &delivery.message;
                if let Some(uuid) = message.payload.content["uuid"].as_str() {
                    received
                        .lock()
                        .unwrap()
                        .entry(uuid.to_owned())
                        .or_default()
                        .insert(message.identifier.to_string());
                }
            }
        });
    }

    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let acked_creates: Arc<Mutex<Vec<String>>> = Arc::default();
    let acked_sagas: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (foo, acked, refused, next) = (
            Arc::clone(&foo),
            Arc::clone(&acked_creates),
            Arc::clone(&refused),
            Arc::clone(&next),
        );
        workers.push(std::thread::spawn(move || {
            let http = client(&foo.addr());
            loop {
                let done = acked.lock().unwrap().len();
                if done >= commands {
                    break;
                }
                pace(started, seconds, done, commands);
                let i = next.fetch_add(1, Ordering::Relaxed);
                match http.post("/foos", &json!({"bar": format!("chaos-{i}")}).to_string()) {
                    Ok(answer) if answer.status == 200 => {
                        let uuid = answer.json()["uuid"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().push(uuid);
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }));
    }
    for _ in 0..2 {
        let (foo, acked, refused) = (
            Arc::clone(&foo),
            Arc::clone(&acked_sagas),
            Arc::clone(&refused),
        );
        workers.push(std::thread::spawn(move || {
            let http = client(&foo.addr());
            loop {
                let done = acked.lock().unwrap().len();
                if done >= sagas {
                    break;
                }
                pace(started, seconds, done, sagas);
                let created = http.post("/foos", &json!({"bar": "saga"}).to_string());
                let Ok(created) = created.map(|a| a.json()) else {
                    refused.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let Some(uuid) = created["uuid"].as_str() else {
                    refused.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let body = json!({"uuid": uuid, "something": "chaos"}).to_string();
                match http.post("/foos/add-foobar", &body) {
                    Ok(answer) if answer.status == 200 => {
                        let execution = answer.json()["uuid"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().push(execution);
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }));
    }

    // The chaos: a kill every 3 s (foobar three times out of four, foo the fourth), the broker paused
    // for 5 s once.
    let broker_pid = std::env::var("MINOS_TEST_KAFKA_PID").ok();
    if broker_pid.is_none() {
        println!("MINOS_TEST_KAFKA_PID is not set: the broker is not paused");
    }
    let (kills, pauses) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let chaos = {
        let (foo, foobar, done) = (Arc::clone(&foo), Arc::clone(&foobar), Arc::clone(&done));
        let (kills, pauses) = (Arc::clone(&kills), Arc::clone(&pauses));
        std::thread::spawn(move || {
            let mut round = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(3));
                if done.load(Ordering::Relaxed) {
                    break;
                }
                round += 1;
                if round == 2 {
                    if let Some(pid) = &broker_pid {
                        let kill = |sig: &str| {
                            Command::new("kill").args([sig, pid]).status().unwrap();
                        };
                        kill("-STOP");
                        std::thread::sleep(Duration::from_secs(5));
                        kill("-CONT");
                        pauses.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                match round % 4 {
                    0 => foo.kill_and_restart(),
                    _ => foobar.kill_and_restart(),
                }
                kills.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for worker in workers {
        worker.join().unwrap();
    }
    let load_took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    chaos.join().unwrap();

    // Every acknowledged saga ends.
    let http = client(&foo.addr());
    let executions: Vec<String> = acked_sagas.lock().unwrap().clone();
    let mut outcomes: BTreeMap<String, Value> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(400);
    for execution in &executions {
        loop {
            let answer = http.get(&format!("/saga/executions/{execution}"));
            if let Ok(answer) = answer {
                let body = answer.json();
                if body["status"] == json!("finished") || body["status"] == json!("errored") {
                    outcomes.insert(execution.clone(), body);
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "saga {execution} did not end within the deadline"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let finished = outcomes
        .values()
        .filter(|o| o["status"] == json!("finished"))
        .count();
    for (execution, outcome) in &outcomes {
        if outcome["status"] == json!("errored") {
            assert_eq!(
                outcome["context"]["compensated"],
                json!(true),
                "saga {execution} errored without its compensation: {outcome}"
            );
        }
    }

    // Nothing waits in either outbox, and every FooCreated message arrived.
    let creates: Vec<String> = acked_creates.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let unsent = loop {
        let unsent = runtime.block_on(async {
            count(
                &foo_tables,
                "SELECT count(*) FROM outbox WHERE sent_at IS NULL",
            )
            .await
                + count(
                    &foobar_tables,
                    "SELECT count(*) FROM outbox WHERE sent_at IS NULL",
                )
                .await
        });
        let all_received = {
            let received = received.lock().unwrap();
            creates.iter().all(|uuid| received.contains_key(uuid))
        };
        if (unsent == 0 && all_received) || Instant::now() > deadline {
            break unsent;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(unsent, 0, "outbox rows left unsent");

    // Exactly once: one creation event per acknowledged create, one domain message for it, handled
    // once by foo's own FooCreated handler.
    let (duplicated_events, missing_events, handled) = runtime.block_on(async {
        let duplicated = count(&foo_tables,
            "SELECT count(*) FROM (SELECT uuid FROM events WHERE name = 'Foo' AND action = 'create' \
             GROUP BY uuid HAVING count(*) > 1) d",
        )
        .await;
        let list = creates
            .iter()
            .map(|u| format!("'{u}'"))
            .collect::<Vec<_>>()
            .join(",");
        let stored = count(&foo_tables,
            &format!(
                "SELECT count(DISTINCT uuid) FROM events WHERE name = 'Foo' AND action = 'create' \
                 AND uuid IN ({list})"
            ),
        )
        .await;
        let handled = count(&foo_tables,
            &format!("SELECT count(*) FROM inbox WHERE consumer = '{foo_name}'"),
        )
        .await;
        (duplicated, creates.len() as i64 - stored, handled)
    });
    assert_eq!(duplicated_events, 0, "a create stored twice");
    assert_eq!(missing_events, 0, "an acknowledged create missing");
    let received = received.lock().unwrap().clone();
    let missing_messages: Vec<&String> = creates
        .iter()
        .filter(|uuid| !received.contains_key(*uuid))
        .collect();
    let doubled_messages: Vec<(&String, &BTreeSet<String>)> =
        received.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        missing_messages.is_empty(),
        "never published: {missing_messages:?}"
    );
    assert!(
        doubled_messages.is_empty(),
        "one create published as several messages: {doubled_messages:?}"
    );
    let messages: usize = received.values().map(BTreeSet::len).sum();
    // foo's inbox holds the FooCreated messages it handled and the saga replies and foobar events it
    // received: at least one entry per message, each at most once (its key).
    assert!(
        handled as usize >= messages,
        "{handled} inbox entries for {messages} messages"
    );

    // Every finished saga's FooBar exists once in foobar's store.
    let foobars: Vec<String> = outcomes
        .values()
        .filter(|o| o["status"] == json!("finished"))
        .map(|o| o["context"]["foobar_uuid"].as_str().unwrap().to_owned())
        .collect();
    if !foobars.is_empty() {
        let list = foobars
            .iter()
            .map(|u| format!("'{u}'"))
            .collect::<Vec<_>>()
            .join(",");
        let stored = runtime.block_on(count(
            &foobar_tables,
            &format!(
                "SELECT count(*) FROM events WHERE name = 'FooBar' AND action = 'create' \
                 AND uuid IN ({list})"
            ),
        ));
        assert_eq!(
            stored as usize,
            foobars.len(),
            "each finished saga's FooBar once"
        );
    }

    println!(
        "chaos soak: {} creates and {} sagas acknowledged in {:.1} s ({} requests refused while a \
         service was down); {} kills, {} broker pauses; {} FooCreated messages received, none \
         doubled, none missing; sagas: {} finished, {} errored and compensated; outbox rows unsent: 0",
        creates.len(),
        executions.len(),
        load_took.as_secs_f64(),
        refused.load(Ordering::Relaxed),
        kills.load(Ordering::Relaxed),
        pauses.load(Ordering::Relaxed),
        messages,
        finished,
        outcomes.len() - finished,
    );
    drop(foo);
    drop(foobar);
}
