//! The service registry: the original registry's API (minos-python's registration accepted), replicas
//! resolved in turn, the most specific route, clear errors, leases, health probes, a versioned
//! listing, registrations kept in SQLite and shared through PostgreSQL, and services registering
//! themselves.
#![allow(missing_docs, unreachable_pub)]

use std::collections::BTreeSet;
use std::time::Duration;

use minos::discovery::{serve_registry, Registry, RegistryConfig, RegistryServer};
use minos::prelude::*;
use minos::testing::{eventually, test_config, TestClient, TestService};

pub struct Foos;

#[query_service]
impl Foos {
    #[enroute(rest = "GET /foos/{uuid}")]
    async fn get_foo(&self, _request: Request) -> Result<Response> {
        Ok(Response::json("a foo"))
    }

    #[enroute(rest = "POST /foos")]
    async fn create_foo(&self, _request: Request) -> Result<Response> {
        Ok(Response::json("created"))
    }
}

fn fast() -> RegistryConfig {
    RegistryConfig {
        lease_ttl_ms: 60_000,
        probe_interval_ms: 60_000,
        probe_timeout_ms: 500,
        refresh_ms: 100,
    }
}

async fn registry_on(
    repository: Repository,
    config: RegistryConfig,
) -> (RegistryServer, TestClient) {
    let registry = Registry::new(repository.store().clone(), config);
    let server = serve_registry(registry, "127.0.0.1", 0).await.unwrap();
    let client = TestClient::new(server.addr());
    (server, client)
}

/// The status the registry answers when asked which instance serves `GET path`.
async fn resolves(http: &TestClient, path: &str) -> u16 {
    let query = format!("/microservices?verb=GET&path={path}");
    http.get(&query).await.unwrap().status
}

fn python_body(port: u16) -> Value {
    // Exactly what minos-python's discovery client sends.
    json!({"address": "127.0.0.1", "port": port, "endpoints": [["GET", "/foos/{uuid}"], ["POST", "/foos"]]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_resolved_in_turn_and_the_most_specific_route_wins() {
    let (server, http) = registry_on(Repository::memory(), fast()).await;
    for port in [7001, 7002] {
        let created = http
            .post("/microservices/foo", python_body(port))
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
        assert_eq!(
            created.json()["instance"],
            json!(format!("127.0.0.1:{port}"))
        );
    }
    let example =
        json!({"address": "127.0.0.1", "port": 7003, "endpoints": [["GET", "/foos/example"]]});
    assert_eq!(
        http.post("/microservices/bar", example)
            .await
            .unwrap()
            .status,
        201
    );

    let mut ports = BTreeSet::new();
    for _ in 0..4 {
        let found = http
            .get("/microservices?verb=GET&path=/foos/123")
            .await
            .unwrap();
        assert_eq!(found.status, 200, "{}", found.body);
        let body = found.json();
        assert_eq!(body["name"], json!("foo"));
        assert_eq!(body["status"], json!(true));
        assert_eq!(
            body["endpoints"],
            json!([["GET", "/foos/{uuid}"], ["POST", "/foos"]])
        );
        ports.insert(body["port"].as_u64().unwrap());
    }
    assert_eq!(
        ports,
        BTreeSet::from([7001, 7002]),
        "spread over both replicas"
    );
    let example = http
        .get("/microservices?verb=GET&path=/foos/example")
        .await
        .unwrap();
    assert_eq!(example.json()["name"], json!("bar"));

    let listing = http.get("/microservices").await.unwrap().json();
    assert_eq!(listing["services"][1]["name"], json!("foo"));
    assert_eq!(
        listing["services"][1]["instances"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let endpoints = http.get("/endpoints").await.unwrap().json();
    assert_eq!(endpoints.as_array().unwrap().len(), 3);

    // One replica leaves, then the whole service.
    let gone = http
        .delete("/microservices/foo/instances/127.0.0.1:7001")
        .await
        .unwrap();
    assert_eq!(gone.status, 200, "{}", gone.body);
    for _ in 0..3 {
        let found = http
            .get("/microservices?verb=GET&path=/foos/1")
            .await
            .unwrap();
        assert_eq!(found.json()["port"], json!(7002));
    }
    assert_eq!(http.delete("/microservices/foo").await.unwrap().status, 200);
    let none = http
        .get("/microservices?verb=GET&path=/foos/1")
        .await
        .unwrap();
    assert_eq!(none.status, 404, "{}", none.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_json_error() {
    let (server, http) = registry_on(Repository::memory(), fast()).await;
    let cases: [(&str, &str, Option<&str>, u16, &str); 10] = [
        ("POST", "/microservices/foo", None, 400, "empty body"),
        (
            "POST",
            "/microservices/foo",
            Some("{"),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/microservices/foo",
            Some(r#"{"port": 1, "endpoints": []}"#),
            400,
            "`address` is missing",
        ),
        (
            "POST",
            "/microservices/foo",
            Some(r#"{"address": "h", "port": 0, "endpoints": []}"#),
            400,
            "`port`",
        ),
        (
            "POST",
            "/microservices/foo",
            Some(r#"{"address": "h", "port": 1, "endpoints": [["GET", "/x/{id"]]}"#),
            400,
            "/x/{id",
        ),
        (
            "DELETE",
            "/microservices/nobody",
            None,
            404,
            "no service `nobody`",
        ),
        (
            "GET",
            "/microservices?verb=GET",
            None,
            400,
            "Missing either 'verb' or 'path'",
        ),
        (
            "GET",
            "/microservices?verb=GET&path=/foos/{uuid}",
            None,
            400,
            "cannot have",
        ),
        (
            "GET",
            "/microservices?verb=GET&path=/nothing",
            None,
            404,
            "no healthy service",
        ),
        (
            "PUT",
            "/microservices/foo/instances/x/heartbeat",
            None,
            404,
            "register again",
        ),
    ];
    for (method, path, body, status, message) in cases {
        let answer = http
            .request(method, path, body.map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.body);
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains(message), "{method} {path}: {error}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_run_out_and_failing_instances_are_not_resolved() {
    let config = RegistryConfig {
        lease_ttl_ms: 400,
        probe_interval_ms: 100,
        ..fast()
    };
    let (server, http) = registry_on(Repository::memory(), config).await;
    // A live service passes its probes; a registration pointing nowhere fails them.
    let live = TestService::named("live").await.unwrap();
    let mut body = python_body(live.addr().port());
    body["instance"] = json!("live-1");
    assert_eq!(
        http.post("/microservices/live", body).await.unwrap().status,
        201
    );
    let dead = json!({"address": "127.0.0.1", "port": 9, "endpoints": [["GET", "/dead"]]});
    assert_eq!(
        http.post("/microservices/dead", dead).await.unwrap().status,
        201
    );
    eventually(
        "the dead instance is marked unhealthy",
        Duration::from_secs(5),
        || async { resolves(&http, "/dead").await == 404 },
    )
    .await;
    assert_eq!(
        resolves(&http, "/foos/1").await,
        200,
        "the live one passes its probes"
    );
    // Heartbeats keep a lease; without them it runs out.
    for _ in 0..8 {
        let renewed = http
            .request(
                "PUT",
                "/microservices/live/instances/live-1/heartbeat",
                None,
            )
            .await
            .unwrap();
        assert_eq!(renewed.status, 200, "{}", renewed.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listing = http.get("/microservices").await.unwrap().json();
    let names: Vec<&str> = listing["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["live"], "the dead one's lease ran out: {listing}");
    eventually(
        "the live lease runs out without heartbeats",
        Duration::from_secs(5),
        || async { http.get("/microservices").await.unwrap().json()["services"] == json!([]) },
    )
    .await;
    live.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_waits_for_the_next_version() {
    let (server, http) = registry_on(Repository::memory(), fast()).await;
    let version = http.get("/microservices").await.unwrap().json()["version"]
        .as_u64()
        .unwrap();
    let waiting = {
        let http = http.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let listing = http
                .get(&format!("/microservices?since={version}&wait_ms=5000"))
                .await
                .unwrap()
                .json();
            (listing, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    http.post("/microservices/foo", python_body(7001))
        .await
        .unwrap();
    let (listing, waited) = waiting.await.unwrap();
    assert!(listing["version"].as_u64().unwrap() > version, "{listing}");
    assert_eq!(listing["services"][0]["name"], json!("foo"));
    assert!(
        waited < Duration::from_secs(4),
        "woken by the change, not the timeout: {waited:?}"
    );
    // Unchanged: answers after the wait with the same version.
    let current = listing["version"].as_u64().unwrap();
    let same = http
        .get(&format!("/microservices?since={current}&wait_ms=100"))
        .await
        .unwrap()
        .json();
    assert_eq!(same["version"], json!(current));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_a_restart_and_replicas_share_postgres() {
    // SQLite: a new registry on the same file still knows the instance.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.db");
    let (server, http) = registry_on(Repository::sqlite(&file).unwrap(), fast()).await;
    http.post("/microservices/foo", python_body(7001))
        .await
        .unwrap();
    server.stop().await;
    let (server, http) = registry_on(Repository::sqlite(&file).unwrap(), fast()).await;
    let listing = http.get("/microservices").await.unwrap().json();
    assert_eq!(listing["services"][0]["name"], json!("foo"), "{listing}");
    assert_eq!(listing["services"][0]["instances"][0]["port"], json!(7001));
    server.stop().await;

    // PostgreSQL: two registries on one database agree. A live instance, so that the health probes
    // of both pass.
    let live = TestService::named("live").await.unwrap();
    let url = minos_support::postgres::fresh_schema_url();
    let (a, http_a) = registry_on(Repository::postgres(&url).await.unwrap(), fast()).await;
    let (b, http_b) = registry_on(Repository::postgres(&url).await.unwrap(), fast()).await;
    let registered = http_a
        .post("/microservices/foo", python_body(live.addr().port()))
        .await
        .unwrap();
    assert_eq!(registered.status, 201, "{}", registered.body);
    eventually(
        "the other replica resolves it",
        Duration::from_secs(5),
        || async { resolves(&http_b, "/foos/9").await == 200 },
    )
    .await;
    assert_eq!(
        http_b.delete("/microservices/foo").await.unwrap().status,
        200
    );
    eventually(
        "the first replica forgets it",
        Duration::from_secs(5),
        || async { resolves(&http_a, "/foos/9").await == 404 },
    )
    .await;
    a.stop().await;
    b.stop().await;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_registers_itself_and_unregisters_when_it_stops() {
    let (server, http) = registry_on(Repository::memory(), fast()).await;
    let mut config = test_config("self-registering");
    config.discovery.url = format!("http://{}", server.addr());
    config.discovery.heartbeat_ms = 100;
    let service = TestService::start(config).await.unwrap();
    let port = service.addr().port();
    eventually("the service registered", Duration::from_secs(5), || async {
        resolves(&http, "/foos/1").await == 200
    })
    .await;
    let found = http
        .get("/microservices?verb=GET&path=/foos/1")
        .await
        .unwrap()
        .json();
    assert_eq!(found["name"], json!("self-registering"));
    assert_eq!(found["port"], json!(port));
    assert_eq!(found["instance"], json!(format!("127.0.0.1:{port}")));
    let endpoints: BTreeSet<String> = found["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e[0].as_str().unwrap(), e[1].as_str().unwrap()))
        .collect();
    assert!(
        endpoints.contains("GET /foos/{uuid}") && endpoints.contains("POST /foos"),
        "{endpoints:?}"
    );
    // The registry forgets it (its store wiped): the next heartbeat registers it again.
    http.delete("/microservices/self-registering")
        .await
        .unwrap();
    eventually(
        "the service registered again",
        Duration::from_secs(5),
        || async { resolves(&http, "/foos/1").await == 200 },
    )
    .await;
    service.stop().await;
    let gone = http
        .get("/microservices?verb=GET&path=/foos/1")
        .await
        .unwrap();
    assert_eq!(gone.status, 404, "unregistered on stop: {}", gone.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_store_fails_stops_being_resolved() {
    let config = RegistryConfig {
        probe_interval_ms: 100,
        ..fast()
    };
    let (server, http) = registry_on(Repository::memory(), config).await;
    let storage = minos_support::postgres::fresh_schema_url();
    let schema = storage.rsplit("schema=").next().unwrap().to_owned();
    let mut service_config = test_config("stored");
    service_config.storage = storage;
    service_config.discovery.url = format!("http://{}", server.addr());
    let service = TestService::start(service_config).await.unwrap();
    eventually("the service registered", Duration::from_secs(5), || async {
        resolves(&http, "/foos/1").await == 200
    })
    .await;
    let (client, connection) =
        tokio_postgres::connect(&minos_support::postgres::url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    assert_eq!(
        service.http().get("/system/health").await.unwrap().status,
        503
    );
    eventually(
        "the registry stops resolving to it",
        Duration::from_secs(5),
        || async { resolves(&http, "/foos/1").await == 404 },
    )
    .await;
    service.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_at_start_is_joined_when_it_comes_up() {
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = test_config("patient");
    config.discovery.url = format!("http://127.0.0.1:{port}");
    config.discovery.heartbeat_ms = 100;
    let service = TestService::start(config).await.unwrap();
    assert_eq!(
        service.http().get("/foos/1").await.unwrap().status,
        200,
        "the service serves while the registry is down"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let registry = Registry::new(Repository::memory().store().clone(), fast());
    let server = serve_registry(registry, "127.0.0.1", port).await.unwrap();
    let http = TestClient::new(server.addr());
    eventually(
        "the service registered once the registry came up",
        Duration::from_secs(10),
        || async { resolves(&http, "/foos/1").await == 200 },
    )
    .await;
    service.stop().await;
    server.stop().await;
}
