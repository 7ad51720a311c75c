//! A service run in-process: routes, HTTP errors, broker dispatch and replies, outbox relay, middleware,
//! periodic handlers and shutdown.
#![allow(missing_docs, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minos::messaging::{Broker, BrokerMessage, MemoryBroker, SharedBroker, Subscription};
use minos::prelude::*;
use minos::testing::{TestClient as Client, TestResponse as Answer};
use minos::{Config, Launcher, RunningService};

#[root_entity]
pub struct Counter {
    pub value: i64,
}

/// Another service's view of `Counter`: resolved through `_GetCounterSnapshots`.
#[external_entity(name = "Counter")]
pub struct RemoteCounter {
    pub value: i64,
}

pub struct Commands;

#[command_service]
impl Commands {
    #[enroute(broker = "CreateCounter", rest = "POST /counters")]
    async fn create(&self, request: Request) -> Result<Response> {
        let value: i64 = request
            .json()
            .get("value")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let counter = Counter::create(Counter { value }).await?;
        Ok(Response::json(json!({"uuid": counter.uuid()})).with_status(201))
    }

    #[enroute(rest = "POST /counters/{uuid}/increments")]
    async fn increment(&self, request: Request) -> Result<Response> {
        let mut counter = Counter::get(request.param("uuid")?).await?;
        let by: i64 = request
            .params()
            .get("by")
            .map_or(Ok(1), |b| b.parse())
            .map_err(|_| Error::bad_request("`by` is a number"))?;
        counter.value += by;
        counter.save().await?;
        Ok(Response::json(counter))
    }

    /// Two writers from the same version: the second one's save is a conflict.
    #[enroute(rest = "POST /counters/{uuid}/race")]
    async fn race(&self, request: Request) -> Result<Response> {
        let uuid: Uuid = request.param("uuid")?;
        let mut first = Counter::get(uuid).await?;
        let mut second = Counter::get(uuid).await?;
        first.value += 1;
        first.save().await?;
        second.value += 2;
        second.save().await?;
        Ok(Response::empty())
    }

    /// Reads inside a handler see the handler's own writes, held back until it returns.
    #[enroute(broker = "CreateAndRead")]
    async fn create_and_read(&self, request: Request) -> Result<Response> {
        let value: i64 = request.content()?;
        let mut counter = Counter::create(Counter { value }).await?;
        counter.value += 1;
        counter.save().await?;
        let read = Counter::get(counter.uuid()).await?;
        let found = Counter::find(Condition::eq("value", value + 1)).await?;
        Ok(Response::json(json!({
            "uuid": counter.uuid(),
            "read": {"value": read.value, "version": read.version()},
            "found": found.iter().map(|c| c.uuid()).collect::<Vec<_>>(),
        })))
    }

    #[enroute(rest = "GET /panic")]
    async fn panics(&self, _request: Request) -> Result<Response> {
        panic!("a bug in a handler")
    }

    #[enroute(rest = "GET /slow")]
    async fn slow(&self, _request: Request) -> Result<Response> {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(Response::json("done"))
    }

    #[enroute(rest = "GET /fails")]
    async fn fails(&self, _request: Request) -> Result<Response> {
        Err(Error::Store(minos::store::StoreError::backend(
            "test",
            "disk on fire at /secret/path",
        )))
    }

    #[enroute(broker = "Echo")]
    async fn echo(&self, request: Request) -> Result<Response> {
        let user = request.user().map(|u| u.to_string()).unwrap_or_default();
        Ok(Response::json(request.json().clone()).with_header("seen-user", user))
    }

    #[enroute(broker = "Refuse")]
    async fn refuse(&self, _request: Request) -> Result<Response> {
        Err(Error::bad_request("no, thanks"))
    }

    #[enroute(rest = "GET /whoami")]
    async fn whoami(&self, _request: Request) -> Result<Response> {
        let context = self.context()?;
        Ok(Response::json(json!({"name": context.name()})))
    }
}

/// Event handlers live in a nested module: the registry finds them there too.
mod reactions {
    use super::*;

    pub static CREATED_A: Mutex<Vec<Uuid>> = Mutex::new(Vec::new());
    pub static CREATED_B: Mutex<Vec<Uuid>> = Mutex::new(Vec::new());
    pub static VERSIONS: Mutex<Vec<(Uuid, u64)>> = Mutex::new(Vec::new());
    pub static REBOOTS: AtomicUsize = AtomicUsize::new(0);
    pub static TICKS: AtomicUsize = AtomicUsize::new(0);

    pub struct Reactions;

    #[query_service]
    impl Reactions {
        #[enroute(event = "CounterCreated")]
        async fn first(&self, request: Request) -> Result<()> {
            let event: minos::Event = request.content()?;
            CREATED_A.lock().unwrap().push(event.uuid);
            Ok(())
        }

        #[enroute(event = "CounterCreated")]
        async fn second(&self, request: Request) -> Result<()> {
            let event: minos::Event = request.content()?;
            // An event handler learns its topic without matching on the origin.
            assert_eq!(request.topic(), Some("CounterCreated"));
            CREATED_B.lock().unwrap().push(event.uuid);
            Ok(())
        }

        #[enroute(event = "CounterUpdated.value")]
        async fn value_changed(&self, request: Request) -> Result<()> {
            let event: minos::Event = request.content()?;
            // Slow down a little, so out-of-order handling would show.
            tokio::time::sleep(Duration::from_millis(2)).await;
            VERSIONS.lock().unwrap().push((event.uuid, event.version));
            Ok(())
        }

        #[enroute(periodic = "@reboot")]
        async fn on_start(&self, _request: Request) -> Result<()> {
            REBOOTS.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        #[enroute(periodic = "* * * * * *")]
        async fn every_second(&self, _request: Request) -> Result<()> {
            TICKS.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        /// Creates a counter tagged with the message's `tag`: redeliveries must not create another.
        #[enroute(event = "Tally")]
        async fn tally(&self, request: Request) -> Result<()> {
            let tag = request.json()["tag"].as_i64().unwrap_or_default();
            Counter::create(Counter { value: tag }).await?;
            Ok(())
        }

        #[enroute(event = "Poison")]
        async fn poison(&self, _request: Request) -> Result<()> {
            Err(Error::bad_request("cannot digest this"))
        }

        #[enroute(rest = "GET /counters/{uuid}")]
        async fn get(&self, request: Request) -> Result<Response> {
            Ok(Response::json(Counter::get(request.param("uuid")?).await?))
        }
    }
}

pub static ORDER: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

#[middleware]
async fn tag_named(request: Request, next: Next) -> Result<Response> {
    if request.header("x-trace").is_some() {
        ORDER.lock().unwrap().push("named");
    }
    Ok(next.run(request).await?.with_header("x-named", "yes"))
}

fn config(name: &str) -> Config {
    let mut config = Config::from_yaml("").unwrap();
    config.name = name.into();
    config.storage = "memory".into();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.http.body_limit = 1024;
    config.http.shutdown_timeout_secs = 5;
    config
}

async fn start(name: &str) -> (RunningService, Client) {
    let service = Launcher::with_config(config(name)).start().await.unwrap();
    let client = Client::new(format!("http://{}", service.addr()));
    (service, client)
}

async fn call(client: &Client, method: &'static str, path: &str, body: Option<&str>) -> Answer {
    client
        .request(method, path, body.map(str::to_owned))
        .await
        .unwrap()
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    minos::testing::eventually(what, Duration::from_secs(4), || {
        let done = check();
        async move { done }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_and_every_event_handler_runs() {
    let (service, client) = start("counters").await;
    let created = call(&client, "POST", "/counters", Some(r#"{"value": 5}"#)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let uuid: Uuid = serde_json::from_value(created.json()["uuid"].clone()).unwrap();
    let read = call(&client, "GET", &format!("/counters/{uuid}"), None).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["value"], json!(5));
    assert_eq!(read.json()["version"], json!(1));
    eventually("both CounterCreated handlers ran", || {
        reactions::CREATED_A.lock().unwrap().contains(&uuid)
            && reactions::CREATED_B.lock().unwrap().contains(&uuid)
    })
    .await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_json_with_the_right_status() {
    let (service, client) = start("errors").await;
    let bad_json = call(&client, "POST", "/counters", Some("{\"value\": ")).await;
    assert_eq!(bad_json.status, 400);
    assert!(
        bad_json.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON body"),
        "{}",
        bad_json.body
    );

    let unknown = call(&client, "GET", "/nowhere", None).await;
    assert_eq!(
        (unknown.status, unknown.json()["status"].clone()),
        (404, json!(404))
    );

    let wrong_method = call(&client, "DELETE", "/counters", None).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("POST"));

    let big = format!("{{\"value\": 1, \"pad\": \"{}\"}}", "x".repeat(4096));
    let too_large = call(&client, "POST", "/counters", Some(&big)).await;
    assert_eq!(too_large.status, 413, "{}", too_large.body);

    let missing = call(
        &client,
        "GET",
        &format!("/counters/{}", Uuid::new_v4()),
        None,
    )
    .await;
    assert_eq!(missing.status, 404);
    let not_a_uuid = call(&client, "GET", "/counters/not-a-uuid", None).await;
    assert_eq!(not_a_uuid.status, 400);
    assert!(
        not_a_uuid.body.contains("invalid parameter `uuid`"),
        "{}",
        not_a_uuid.body
    );

    let created = call(&client, "POST", "/counters", Some("{}")).await;
    let uuid = created.json()["uuid"].as_str().unwrap().to_owned();
    let conflict = call(&client, "POST", &format!("/counters/{uuid}/race"), None).await;
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    assert!(
        conflict.body.contains("version conflict"),
        "{}",
        conflict.body
    );
    let after = call(&client, "GET", &format!("/counters/{uuid}"), None).await;
    assert_eq!(
        after.json()["value"],
        json!(1),
        "the first writer's change is kept"
    );

    let failure = call(&client, "GET", "/fails", None).await;
    assert_eq!(failure.status, 500);
    assert_eq!(failure.json()["error"], json!("internal error"));
    assert!(
        !failure.body.contains("secret"),
        "details stay in the log: {}",
        failure.body
    );

    let panic = call(&client, "GET", "/panic", None).await;
    assert_eq!(panic.status, 500);
    assert!(!panic.body.contains("a bug"), "{}", panic.body);
    let still_up = call(&client, "GET", "/system/health", None).await;
    assert_eq!(still_up.status, 200);
    assert_eq!(still_up.json()["status"], json!("ok"));
    assert_eq!(still_up.json()["name"], json!("errors"));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_commands_reply_with_status_and_headers() {
    let (service, _client) = start("broker").await;
    let client = service.context().client().clone();
    let mut message = BrokerMessage::new("Echo", json!({"hello": "world"}));
    let user = Uuid::new_v4();
    message
        .payload
        .headers
        .insert("user".into(), user.to_string());
    let reply = client
        .request(message, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content, json!({"hello": "world"}));
    assert_eq!(reply.headers.get("seen-user"), Some(&user.to_string()));
    assert_eq!(reply.headers.get("user"), Some(&user.to_string()));

    let refused = client.send("Refuse", json!({})).await.unwrap();
    assert_eq!(refused.status, 400);
    let error = refused.into_content::<serde_json::Value>().unwrap_err();
    assert_eq!(error.to_string(), "no, thanks");

    let created = client
        .send("CreateCounter", json!({"value": 3}))
        .await
        .unwrap();
    assert_eq!(created.status, 201);
    let uuid: Uuid = serde_json::from_value(created.content["uuid"].clone()).unwrap();
    let stored = service
        .context()
        .repository()
        .get::<Counter>(uuid)
        .await
        .unwrap();
    assert_eq!(stored.value, 3);

    let nobody = client
        .request(
            BrokerMessage::new("NobodyListens", json!({})),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(matches!(nobody, Error::Timeout { .. }), "{nobody}");
    assert_eq!(nobody.status(), 504);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_match_requests_by_identifier_when_interleaved() {
    let (service, _client) = start("interleaved").await;
    let client = service.context().client().clone();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            (i, client.send("Echo", json!({"i": i})).await.unwrap())
        }));
    }
    for task in tasks {
        let (i, reply) = task.await.unwrap();
        assert_eq!(reply.content, json!({"i": i}));
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_roots_events_are_handled_in_version_order() {
    let (service, client) = start("ordered").await;
    let created = call(&client, "POST", "/counters", Some("{}")).await;
    let uuid: Uuid = serde_json::from_value(created.json()["uuid"].clone()).unwrap();
    for _ in 0..20 {
        let answer = call(
            &client,
            "POST",
            &format!("/counters/{uuid}/increments"),
            None,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let mine = || -> Vec<u64> {
        reactions::VERSIONS
            .lock()
            .unwrap()
            .iter()
            .filter(|(u, _)| *u == uuid)
            .map(|(_, v)| *v)
            .collect()
    };
    eventually("20 CounterUpdated.value events", || mine().len() == 20).await;
    assert_eq!(mine(), (2..=21).collect::<Vec<u64>>());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_before_start_are_published_on_start() {
    // A "crash" between commit and relay: the event and its message are stored, nothing published.
    let repository = Repository::memory();
    let orphan = repository.create(Counter { value: 42 }).await.unwrap();
    assert_eq!(repository.store().pending(10).await.unwrap().len(), 1);

    let service = Launcher::with_config(config("recovered"))
        .repository(repository.clone())
        .broker(Arc::new(MemoryBroker::new()))
        .start()
        .await
        .unwrap();
    eventually("the orphaned CounterCreated was handled", || {
        reactions::CREATED_A
            .lock()
            .unwrap()
            .contains(&orphan.uuid())
    })
    .await;
    eventually("the outbox is drained", || {
        futures_lite_block(repository.store().pending(10))
            .map(|p| p.is_empty())
            .unwrap_or(false)
    })
    .await;
    service.stop().await;
}

fn futures_lite_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_wraps_every_handler_first_listed_outermost() {
    let mut config = config("middleware");
    config.middleware = vec!["tag_named".into()];
    let service = Launcher::with_config(config)
        .middleware(|request: Request, next: Next| async move {
            if request.header("x-trace").is_some() {
                ORDER.lock().unwrap().push("code");
            }
            let response = next.run(request).await?;
            Ok(response.with_header("x-code", "yes"))
        })
        .start()
        .await
        .unwrap();
    let client = service.context().client().clone();
    let mut message = BrokerMessage::new("Echo", json!(1));
    message.payload.headers.insert("x-trace".into(), "1".into());
    let reply = client
        .request(message, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply.headers.get("x-code").map(String::as_str), Some("yes"));
    assert_eq!(
        reply.headers.get("x-named").map(String::as_str),
        Some("yes")
    );
    assert_eq!(ORDER.lock().unwrap().as_slice(), ["code", "named"]);
    service.stop().await;

    let mut bad = config_with_middleware("missing_one");
    bad.name = "bad-middleware".into();
    let error = Launcher::with_config(bad).start().await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("middleware `missing_one` is not registered"),
        "{error}"
    );
}

fn config_with_middleware(name: &str) -> Config {
    let mut config = config("x");
    config.middleware = vec![name.into()];
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_handlers_run_at_start_and_on_schedule() {
    let before = reactions::REBOOTS.load(Ordering::SeqCst);
    let (service, _client) = start("periodic").await;
    eventually("@reboot ran", || {
        reactions::REBOOTS.load(Ordering::SeqCst) > before
    })
    .await;
    let ticks = reactions::TICKS.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        reactions::TICKS.load(Ordering::SeqCst) > ticks,
        "the every-second handler ran"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    let (service, client) = start("draining").await;
    let slow = tokio::spawn({
        let client = client.clone();
        async move { call(&client, "GET", "/slow", None).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    service.stop().await;
    let answer = slow.await.unwrap();
    assert_eq!((answer.status, answer.json()), (200, json!("done")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_reach_the_context_through_self() {
    let (service, client) = start("context-name").await;
    let answer = call(&client, "GET", "/whoami", None).await;
    assert_eq!(answer.json(), json!({"name": "context-name"}));
    service.stop().await;
}

#[test]
fn the_route_table_holds_nested_handlers_sorted() {
    let table = minos::routing::RouteTable::collect().unwrap();
    let description = table.describe();
    assert!(description.contains("Reactions::first"), "{description}");
    assert!(
        description.contains("broker Event CounterCreated"),
        "{description}"
    );
    assert!(
        description.contains("rest GET /counters/{uuid}"),
        "{description}"
    );
    assert!(description.contains("periodic @reboot"), "{description}");
    assert_eq!(table.broker_handlers("CounterCreated").len(), 2);
    let routes: Vec<_> = table.entries().iter().map(|e| e.route).collect();
    let mut sorted = routes.clone();
    sorted.sort();
    assert_eq!(routes, sorted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_message_is_handled_once() {
    let (service, _client) = start("inbox").await;
    let tag = 7_000_000 + (Uuid::new_v4().as_u128() % 1_000_000) as i64;
    let message = BrokerMessage::new("Tally", json!({"tag": tag}));
    let broker = service.context().broker().clone();
    for _ in 0..3 {
        broker.publish(message.clone()).await.unwrap();
    }
    let repository = service.context().repository().clone();
    let count = || {
        let repository = repository.clone();
        futures_lite_block(async move {
            Counter::find(Condition::eq("value", tag))
                .on(&repository)
                .await
                .unwrap()
                .len()
        })
    };
    eventually("the tally was stored", || count() >= 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(), 1, "three deliveries of one message, one effect");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_parked_and_later_messages_flow() {
    let mut config = config("poisoned");
    config.handlers.retries = 1;
    let service = Launcher::with_config(config).start().await.unwrap();
    let broker = service.context().broker().clone();
    let mut parked = broker
        .subscribe("observer", &["poisoned.dead-letter".to_owned()])
        .await
        .unwrap();
    let poison = BrokerMessage::new("Poison", json!({"bad": true}));
    broker.publish(poison.clone()).await.unwrap();
    let tag = 8_000_000 + (Uuid::new_v4().as_u128() % 1_000_000) as i64;
    broker
        .publish(BrokerMessage::new("Tally", json!({"tag": tag})))
        .await
        .unwrap();

    let delivery = tokio::time::timeout(Duration::from_secs(10), parked.next())
        .await
        .unwrap()
        .unwrap();
    let message = delivery.message;
    assert_eq!(message.identifier, poison.identifier);
    assert_eq!(message.payload.content, json!({"bad": true}));
    assert_eq!(
        message
            .payload
            .headers
            .get("original_topic")
            .map(String::as_str),
        Some("Poison")
    );
    assert_eq!(
        message.payload.headers.get("error").map(String::as_str),
        Some("cannot digest this")
    );
    // The dashboard's overview of the instance and the metrics count it.
    let http = Client::new(service.addr());
    let overview = http.get("/system/overview").await.unwrap();
    assert_eq!(overview.status, 200, "{}", overview.body);
    let overview = overview.json();
    assert_eq!(
        overview["dead_letters"]["Poison"]["count"],
        json!(1),
        "{overview}"
    );
    assert_eq!(
        overview["dead_letters"]["Poison"]["last_error"],
        json!("cannot digest this")
    );
    assert_eq!(
        overview["dead_letters"]["Poison"]["last_identifier"],
        json!(poison.identifier)
    );
    let metrics = http.get("/metrics").await.unwrap().body;
    for expected in [
        "minos_broker_messages_total{topic=\"Poison\",outcome=\"retried\"} 1",
        "minos_broker_messages_total{topic=\"Poison\",outcome=\"dead_lettered\"} 1",
    ] {
        assert!(metrics.contains(expected), "no `{expected}` in\n{metrics}");
    }

    let repository = service.context().repository().clone();
    eventually("the next message was handled", || {
        let repository = repository.clone();
        futures_lite_block(async move {
            Counter::find(Condition::eq("value", tag))
                .on(&repository)
                .await
                .unwrap()
                .len()
                == 1
        })
    })
    .await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_answers_snapshot_queries_and_refs_resolve() {
    let (service, _client) = start("snapshots").await;
    let repository = service.context().repository().clone();
    let a = repository.create(Counter { value: 1 }).await.unwrap();
    let b = repository.create(Counter { value: 2 }).await.unwrap();
    let client = service.context().client().clone();

    let reply = client
        .send(
            "_GetCounterSnapshots",
            json!({"uuids": [b.uuid(), a.uuid()]}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.content);
    let values: Vec<i64> = reply
        .content
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, [2, 1]);
    assert_eq!(reply.content[0]["uuid"], json!(b.uuid().to_string()));
    assert_eq!(reply.content[0]["version"], json!(1));

    let unknown = Uuid::new_v4();
    let missing = client
        .send(
            "_GetCounterSnapshots",
            json!({"uuids": [a.uuid(), unknown]}),
        )
        .await
        .unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.content["error"]
        .as_str()
        .unwrap()
        .contains(&unknown.to_string()));
    let bad = client
        .send("_GetCounterSnapshots", json!({"ids": []}))
        .await
        .unwrap();
    assert_eq!(bad.status, 400);

    let (remote, local, failed) = service
        .context()
        .clone()
        .scope(async {
            let mut remote = vec![Ref::<RemoteCounter>::new(a.uuid()), Ref::new(b.uuid())];
            minos::routing::resolve_all(&mut remote).await.unwrap();
            let mut local = Ref::<Counter>::new(b.uuid());
            let value = local.resolve().await.unwrap().value;
            let failed = Ref::<RemoteCounter>::new(unknown)
                .resolve()
                .await
                .map(|r| r.value);
            (remote, value, failed)
        })
        .await;
    assert_eq!(remote[0].model().unwrap().value, 1);
    assert_eq!(remote[1].model().unwrap().version(), 1);
    assert_eq!(local, 2);
    let error = failed.unwrap_err();
    assert_eq!(error.status(), 404, "{error}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_list_the_rest_routes_and_broker_channels() {
    let (service, client) = start("specs").await;
    let openapi = call(&client, "GET", "/spec/openapi", None).await.json();
    assert_eq!(openapi["openapi"], json!("3.1.0"));
    assert_eq!(openapi["info"]["title"], json!("specs"));
    let get = &openapi["paths"]["/counters/{uuid}"]["get"];
    assert!(
        get["operationId"]
            .as_str()
            .unwrap()
            .ends_with("Reactions::get"),
        "{get}"
    );
    assert_eq!(get["parameters"][0]["name"], json!("uuid"));
    assert!(openapi["paths"]["/counters"]["post"].is_object());
    let asyncapi = call(&client, "GET", "/spec/asyncapi", None).await.json();
    assert!(
        asyncapi["channels"]["CreateCounter"].is_object(),
        "{asyncapi}"
    );
    assert!(
        asyncapi["channels"]["CounterCreated"].is_object(),
        "{asyncapi}"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_reads_its_own_writes_before_they_are_committed() {
    let (service, _client) = start("read-own-writes").await;
    let client = service.context().client().clone();
    let reply = client.send("CreateAndRead", json!(41)).await.unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.content);
    let uuid = reply.content["uuid"].clone();
    assert_eq!(reply.content["read"], json!({"value": 42, "version": 2}));
    assert_eq!(reply.content["found"], json!([uuid]));
    // Committed together when the handler returned.
    let uuid: Uuid = serde_json::from_value(uuid).unwrap();
    let stored = service
        .context()
        .repository()
        .get::<Counter>(uuid)
        .await
        .unwrap();
    assert_eq!((stored.value, stored.version()), (42, 2));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_keeps_its_repository_to_itself() {
    let (service, _client) = start("no-default").await;
    // Outside the service's handlers there is no repository unless the application opts into one.
    let error = Counter::get(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(error, Error::NoRepository), "{error}");
    // A task spawned from outside reaches the service's repository through its context.
    let uuid = service
        .context()
        .clone()
        .scope(async {
            Counter::create(Counter { value: 7 })
                .await
                .map(|c| c.uuid())
        })
        .await
        .unwrap();
    let stored = service
        .context()
        .repository()
        .get::<Counter>(uuid)
        .await
        .unwrap();
    assert_eq!(stored.value, 7);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_starts_a_service_in_one_line() {
    let service = minos::testing::TestService::named("one-line")
        .await
        .unwrap();
    let created = service
        .http()
        .post("/counters", json!({"value": 2}))
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let uuid: Uuid = created.content::<Value>().unwrap()["uuid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let read = service
        .http()
        .get(&format!("/counters/{uuid}"))
        .await
        .unwrap();
    assert_eq!(read.json()["value"], json!(2));
    assert_eq!(read.header("content-type"), Some("application/json"));
    let reply = service
        .send("CreateCounter", json!({"value": 3}))
        .await
        .unwrap();
    assert_eq!(reply.status, 201);
    minos::testing::eventually(
        "the CounterCreated handler ran",
        Duration::from_secs(4),
        || async { reactions::CREATED_A.lock().unwrap().contains(&uuid) },
    )
    .await;
    service.stop().await;
}

/// The in-process broker, except that the next `failures` replies (messages on a `….replies` topic) fail
/// to publish, as during a broker hiccup.
#[derive(Debug)]
struct LosingReplies {
    inner: MemoryBroker,
    failures: AtomicUsize,
    refused: AtomicUsize,
}

#[async_trait::async_trait]
impl Broker for LosingReplies {
    async fn publish(&self, message: BrokerMessage) -> Result<()> {
        let fail = message.topic.ends_with(".replies")
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if fail {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Error::broker_message("the broker is briefly unavailable"));
        }
        self.inner.publish(message).await
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Subscription> {
        self.inner.subscribe(group, topics).await
    }

    async fn listen(&self, topic: &str) -> Result<Subscription> {
        self.inner.listen(topic).await
    }

    async fn ready_for_more(&self) {
        self.inner.ready_for_more().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_fails_to_publish_is_sent_again() {
    let broker = Arc::new(LosingReplies {
        inner: MemoryBroker::new(),
        failures: AtomicUsize::new(2),
        refused: AtomicUsize::new(0),
    });
    let service = Launcher::with_config(config("losing-replies"))
        .broker(Arc::clone(&broker) as SharedBroker)
        .start()
        .await
        .unwrap();
    let client = service.context().client().clone();
    let reply = client
        .send("Echo", json!({"n": 7}))
        .await
        .expect("the reply arrives after two failed publishes");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content, json!({"n": 7}));
    assert_eq!(
        broker.refused.load(Ordering::SeqCst),
        2,
        "both failures were hit"
    );

    // A broker that keeps failing: the reply is given up after its attempts, and the requester gets a
    // clear timeout rather than waiting for ever.
    broker.failures.store(100, Ordering::SeqCst);
    broker.refused.store(0, Ordering::SeqCst);
    let command = BrokerMessage::new("Echo", json!({"n": 8}));
    let lost = client
        .request(command.clone(), Duration::from_secs(3))
        .await;
    assert!(lost.is_err(), "no reply can arrive: {lost:?}");
    assert_eq!(
        broker.refused.load(Ordering::SeqCst),
        4,
        "four attempts, then given up"
    );

    // The same command delivered again (as after a crash that lost the reply): it is not run again, and
    // it is answered with the reply kept in the inbox.
    broker.failures.store(0, Ordering::SeqCst);
    let again = client
        .request(command, Duration::from_secs(3))
        .await
        .expect("the redelivered command is answered again");
    assert_eq!((again.status, again.content), (200, json!({"n": 8})));
    let metrics = service.context().metrics().render();
    assert!(
        metrics.contains("minos_broker_messages_total{topic=\"Echo\",outcome=\"duplicate\"} 1"),
        "recognised as a redelivery, not run again:\n{metrics}"
    );
    service.stop().await;
}
