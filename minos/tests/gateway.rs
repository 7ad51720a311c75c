//! `minos gateway` with real processes: the registry (`minos discovery`) and the gateway run as the
//! `minos` binary; the services are small HTTP servers in the test, registered with the registry
//! directly. Routing and spreading, the error statuses (404, 405, 413, 502, 503, 504), forwarded
//! and hop-by-hop headers, a streamed response, CORS, the table following the registry (and
//! outliving it), and composed routes.
#![allow(missing_docs, unreachable_pub)]

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::stream;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use minos::testing::TestClient;
use minos_support::process::spawn_listening;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------------
// Processes

/// A `minos` process, killed when dropped (a failing test leaves nothing running).
struct Process {
    child: Child,
    addr: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(mut command: Command, label: &'static str) -> Process {
    tokio::task::spawn_blocking(move || {
        command.env("RUST_LOG", "info").stderr(Stdio::inherit());
        let started = spawn_listening(&mut command, label, Duration::from_secs(30));
        // Keep reading its output, so that it never blocks on a full pipe.
        let lines = started.lines;
        std::thread::spawn(move || while lines.recv().is_ok() {});
        Process {
            child: started.child,
            addr: started.addr,
        }
    })
    .await
    .expect("the process starts")
}

async fn registry(dir: &Path) -> Process {
    registry_on(dir, 0).await
}

async fn registry_on(dir: &Path, port: u16) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_minos"));
    let storage = format!("sqlite://{}", dir.join("discovery.db").display());
    command
        .args([
            "discovery",
            "--port",
            &port.to_string(),
            "--storage",
            &storage,
        ])
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        // The backends here do not all answer health probes: no probes, no expiry during a test.
        .env("MINOS_REGISTRY_PROBE_INTERVAL_MS", "600000")
        .env("MINOS_REGISTRY_LEASE_TTL_MS", "600000")
        .env("MINOS_REGISTRY_REFRESH_MS", "50");
    start(command, "discovery").await
}

/// `minos gateway --config` with `yaml`, pointed at the registry at `registry` (`host:port`).
async fn gateway(dir: &Path, registry: &str, yaml: &str) -> Process {
    let file = dir.join("gateway.yml");
    std::fs::write(&file, yaml).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_minos"));
    command
        .args(["gateway", "--port", "0", "--config"])
        .arg(&file)
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        .env("MINOS_DISCOVERY_URL", format!("http://{registry}"));
    start(command, "gateway").await
}

async fn register(registry: &Process, name: &str, addr: SocketAddr, endpoints: Value) {
    let body = json!({"address": "127.0.0.1", "port": addr.port(), "endpoints": endpoints});
    let answer = TestClient::new(&registry.addr)
        .post(&format!("/microservices/{name}"), body)
        .await
        .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.body);
}

// ---------------------------------------------------------------------------------------------
// Backends

type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_answer(status: u16, value: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        // End-to-end, and hop-by-hop ones the gateway must drop.
        .header("x-total", "5")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .body(full(value.to_string()))
        .unwrap()
}

/// `/big/{n}`: `n` bytes (`i % 251` each) in 64 KiB chunks, with a pause after the first one.
fn big(n: usize) -> Response<Body> {
    let chunks = stream::unfold(0usize, move |sent| async move {
        if sent >= n {
            return None;
        }
        if sent > 0 && sent <= 64 * 1024 {
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let end = (sent + 64 * 1024).min(n);
        let chunk: Vec<u8> = (sent..end).map(|i| (i % 251) as u8).collect();
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))), end))
    });
    Response::new(StreamBody::new(chunks).boxed())
}

/// What a backend answers: its name and what it received, and a few special paths.
async fn answer(name: &'static str, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let headers: serde_json::Map<String, Value> = request
        .headers()
        .keys()
        .map(|name| {
            let all: Vec<&str> = request
                .headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (name.to_string(), json!(all.join(" | ")))
        })
        .collect();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let mut echo = json!({"backend": name, "method": method, "path": path, "query": query,
                          "headers": headers, "body_len": body.len()});
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["slow", ..] => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json_answer(200, echo)
        }
        ["big", n] => big(n.parse().unwrap()),
        ["foos", "missing"] => {
            json_answer(404, json!({"error": "no foo `missing`", "status": 404}))
        }
        ["foos", uuid] if method == "GET" => {
            // A foo, with what was received.
            echo["uuid"] = json!(uuid);
            echo["foobar"] = match *uuid {
                "lonely" => Value::Null,
                other => json!(format!("fb-{other}")),
            };
            echo["authorization"] = echo["headers"]["authorization"].clone();
            json_answer(200, echo)
        }
        ["foobars", "fb-broken"] => {
            json_answer(500, json!({"error": "internal error", "status": 500}))
        }
        ["foobars", id] => json_answer(200, json!({"id": id})),
        ["pause", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            json_answer(200, json!({"paused": ms}))
        }
        _ => json_answer(200, echo),
    }
}

/// An HTTP backend named `name` on a free port.
async fn backend(name: &'static str) -> SocketAddr {
    backend_with(name, true).await
}

/// A backend that closes each connection after one answer when `keep_alive` is false.
async fn backend_with(name: &'static str, keep_alive: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| async move {
                    Ok::<_, Infallible>(answer(name, request).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A backend that reads the request, starts an answer and closes the connection halfway.
async fn closing_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
            });
        }
    });
    addr
}

/// An address where nothing listens.
async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The caller

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    /// Time to the response head.
    head_after: Duration,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Caller {
    client: Client<HttpConnector, Body>,
    base: String,
}

impl Caller {
    fn new(gateway: &Process) -> Caller {
        Caller {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{}", gateway.addr),
        }
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let begun = Instant::now();
        let response = tokio::time::timeout(
            Duration::from_secs(20),
            self.client.request(request.body(body).unwrap()),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let head_after = begun.elapsed();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
            head_after,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], full(Bytes::new())).await
    }
}

/// Checks `{"error": …, "status": status}`.
fn assert_error(answer: &Answer, status: u16, says: &str) {
    let body = answer.json();
    assert_eq!(
        answer.status,
        status,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(body["status"], json!(status), "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains(says), "`{message}` does not say `{says}`");
    assert_eq!(answer.header("content-type"), Some("application/json"));
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_routed_spread_and_failures_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path()).await;
    let foo_endpoints = json!([
        ["GET", "/foos/{uuid}"],
        ["PUT", "/foos/{uuid}"],
        ["POST", "/foos"],
        ["GET", "/foos/example"],
        ["GET", "/big/{n}"]
    ]);
    let (a, b) = (backend("a").await, backend("b").await);
    register(&registry, "foo", a, foo_endpoints.clone()).await;
    register(&registry, "foo", b, foo_endpoints).await;
    register(
        &registry,
        "slow",
        backend("slow").await,
        json!([["GET", "/slow"], ["GET", "/slow/{x}"]]),
    )
    .await;
    register(
        &registry,
        "broken",
        closing_backend().await,
        json!([["GET", "/broken"], ["POST", "/broken"], ["GET", "/flaky"]]),
    )
    .await;
    register(
        &registry,
        "gone",
        dead_address().await,
        json!([["GET", "/gone"], ["POST", "/mixed"]]),
    )
    .await;
    // Beside the instance that refuses connections, and the one that fails mid-request.
    register(
        &registry,
        "retry",
        backend("c").await,
        json!([["POST", "/mixed"], ["GET", "/flaky"]]),
    )
    .await;
    // Registered as not serving: its route is known, with no instance to send to.
    let body = json!({"address": "127.0.0.1", "port": a.port(), "status": false,
                      "instance": "down-1", "endpoints": [["GET", "/down"]]});
    let answer = TestClient::new(&registry.addr)
        .post("/microservices/down", body)
        .await
        .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.body);
    // Closes every connection after one answer: kept connections must not fail requests.
    register(
        &registry,
        "oneshot",
        backend_with("oneshot", false).await,
        json!([["POST", "/oneshot"]]),
    )
    .await;
    let yaml = r#"
http: {body_limit: 1024}
gateway: {timeout_ms: 5000, timeouts: {"GET /slow": 300}}
"#;
    let gateway = gateway(dir.path(), &registry.addr, yaml).await;
    let caller = Caller::new(&gateway);

    // Routed with the query string; spread over both instances.
    let mut seen = BTreeSet::new();
    for i in 0..6 {
        let answer = caller.get(&format!("/foos/{i}?x=1&y=%20")).await;
        assert_eq!(answer.status, 200);
        let body = answer.json();
        assert_eq!(body["path"], json!(format!("/foos/{i}")));
        assert_eq!(body["query"], json!("x=1&y=%20"));
        seen.insert(body["backend"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, BTreeSet::from(["a".to_owned(), "b".to_owned()]));

    // Health.
    let health = caller.get("/system/health").await.json();
    assert_eq!(health["status"], json!("ok"));
    assert_eq!(health["registry"], json!("ok"));
    assert_eq!(health["routes"], json!(14));
    assert!(health["version"].as_u64().is_some(), "{health}");
    assert_eq!(caller.get("/system/live").await.status, 200);

    // Unknown route, known path with another method.
    assert_error(
        &caller.get("/nothing/here").await,
        404,
        "no route for GET /nothing/here",
    );
    let other = caller
        .send("DELETE", "/foos/1", &[], full(Bytes::new()))
        .await;
    assert_error(&other, 405, "DELETE is not allowed");
    assert_eq!(other.header("allow"), Some("GET, PUT"));

    // Bodies: passed on; too large, announced or streamed, 413.
    let posted = caller
        .send(
            "POST",
            "/foos",
            &[("content-type", "application/json")],
            full(vec![b'x'; 1000]),
        )
        .await;
    assert_eq!(posted.status, 200);
    assert_eq!(posted.json()["body_len"], json!(1000));
    assert_eq!(
        posted.json()["headers"]["content-type"],
        json!("application/json")
    );
    let too_large = caller
        .send("POST", "/foos", &[], full(vec![b'x'; 2048]))
        .await;
    assert_error(&too_large, 413, "larger than the limit of 1024 bytes");
    // The body was not read: the connection is not used again.
    assert_eq!(too_large.header("connection"), Some("close"));
    let chunks = stream::iter(
        (0..4).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'y'; 400])))),
    );
    let streamed = caller
        .send("PUT", "/foos/1", &[], StreamBody::new(chunks).boxed())
        .await;
    assert_error(&streamed, 413, "larger than the limit");

    // A refused connection goes to the next instance, whatever the method; a failure after sending,
    // for idempotent methods only.
    for _ in 0..4 {
        let mixed = caller.send("POST", "/mixed", &[], full("{}")).await;
        assert_eq!(
            mixed.status,
            200,
            "{}",
            String::from_utf8_lossy(&mixed.body)
        );
        assert_eq!(mixed.json()["backend"], json!("c"));
        let flaky = caller.get("/flaky").await;
        assert_eq!(
            flaky.status,
            200,
            "{}",
            String::from_utf8_lossy(&flaky.body)
        );
    }

    // An instance closing its connections after each answer: no request fails for it.
    for _ in 0..5 {
        let answer = caller.send("POST", "/oneshot", &[], full("{}")).await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }

    // Nothing listens: 503. The instance fails mid-request: 502, retried or not. No head in time:
    // 504.
    assert_error(
        &caller.get("/gone").await,
        503,
        "no instance can serve GET /gone",
    );
    assert_error(&caller.get("/gone").await, 503, "GET /gone");
    assert_error(&caller.get("/down").await, 503, "no healthy instance");
    let broken = caller.send("POST", "/broken", &[], full("{}")).await;
    assert_error(&broken, 502, "the service failed on POST /broken");
    assert_error(&caller.get("/broken").await, 502, "GET /broken");
    let slow = caller.get("/slow").await;
    assert_error(&slow, 504, "did not answer GET /slow within 300 ms");
    assert!(
        slow.head_after < Duration::from_secs(2),
        "{:?}",
        slow.head_after
    );

    // Headers: X-Forwarded-*, hop-by-hop dropped both ways, Authorization passed on.
    let answer = caller
        .send(
            "GET",
            "/foos/headers",
            &[
                ("authorization", "Bearer abc"),
                ("x-forwarded-for", "203.0.113.9"),
                ("connection", "keep-alive, x-private"),
                ("x-private", "secret"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "Basic eA=="),
                ("te", "trailers"),
                ("x-custom", "kept"),
            ],
            full(Bytes::new()),
        )
        .await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    let seen = &body["headers"];
    assert_eq!(
        seen["x-forwarded-for"],
        json!("203.0.113.9, 127.0.0.1"),
        "{seen}"
    );
    assert_eq!(seen["x-forwarded-proto"], json!("http"));
    assert_eq!(seen["x-forwarded-host"], json!(gateway.addr));
    assert_eq!(seen["authorization"], json!("Bearer abc"));
    assert_eq!(seen["x-custom"], json!("kept"));
    for dropped in ["x-private", "keep-alive", "proxy-authorization", "te"] {
        assert!(
            seen.get(dropped).is_none(),
            "{dropped} reached the service: {seen}"
        );
    }
    assert_eq!(answer.header("x-total"), Some("5"));
    assert!(answer.header("x-hop").is_none() && answer.header("keep-alive").is_none());
    assert_ne!(answer.header("connection"), Some("x-hop"));

    // A large response streams through: the head arrives before the body is complete, the body
    // whole.
    let size = 3 * 1024 * 1024 + 17;
    let big = caller.get(&format!("/big/{size}")).await;
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), size);
    assert!(
        big.body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8),
        "the body is intact"
    );
    assert!(
        big.head_after < Duration::from_millis(500),
        "head after {:?}: buffered?",
        big.head_after
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_and_answers_marked() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path()).await;
    register(
        &registry,
        "foo",
        backend("a").await,
        json!([["GET", "/foos/{uuid}"], ["PUT", "/foos/{uuid}"]]),
    )
    .await;
    let yaml = r#"
gateway:
  cors:
    allow_origins: ["https://app.example"]
    expose_headers: [X-Total]
    allow_credentials: true
    max_age_secs: 120
"#;
    let gateway = gateway(dir.path(), &registry.addr, yaml).await;
    let caller = Caller::new(&gateway);
    let app = "https://app.example";

    let preflight = caller
        .send(
            "OPTIONS",
            "/foos/1",
            &[
                ("origin", app),
                ("access-control-request-method", "PUT"),
                (
                    "access-control-request-headers",
                    "authorization, content-type",
                ),
            ],
            full(Bytes::new()),
        )
        .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some(app));
    assert!(preflight
        .header("access-control-allow-methods")
        .unwrap()
        .contains("PUT"));
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(preflight.header("access-control-max-age"), Some("120"));
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(preflight.header("vary"), Some("Origin"));
    assert!(preflight.body.is_empty());

    let refused = caller
        .send(
            "OPTIONS",
            "/foos/1",
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ],
            full(Bytes::new()),
        )
        .await;
    assert_error(&refused, 403, "origin https://evil.example is not allowed");

    let answer = caller
        .send("GET", "/foos/1", &[("origin", app)], full(Bytes::new()))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("access-control-allow-origin"), Some(app));
    assert_eq!(
        answer.header("access-control-expose-headers"),
        Some("X-Total")
    );
    assert_eq!(
        answer.header("access-control-allow-credentials"),
        Some("true")
    );
    let foreign = caller
        .send(
            "GET",
            "/foos/1",
            &[("origin", "https://evil.example")],
            full(Bytes::new()),
        )
        .await;
    assert_eq!(foreign.status, 200);
    assert!(foreign.header("access-control-allow-origin").is_none());
    // The gateway's own errors are readable by the page too.
    let missing = caller
        .send("GET", "/nothing", &[("origin", app)], full(Bytes::new()))
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("access-control-allow-origin"), Some(app));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_follows_the_registry_and_outlives_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = registry(dir.path()).await;
    register(
        &registry,
        "foo",
        backend("a").await,
        json!([["GET", "/foos/{uuid}"]]),
    )
    .await;
    let gateway = gateway(
        dir.path(),
        &registry.addr,
        "gateway: {poll_wait_ms: 20000}\n",
    )
    .await;
    let caller = Caller::new(&gateway);
    assert_eq!(caller.get("/foos/1").await.status, 200);
    assert_eq!(caller.get("/bars/1").await.status, 404);

    // A new instance with a new route: routable as soon as the long poll returns.
    let registered = Instant::now();
    register(
        &registry,
        "bar",
        backend("bar").await,
        json!([["GET", "/bars/{id}"]]),
    )
    .await;
    eventually(
        "the new route is routed",
        Duration::from_secs(5),
        || async { caller.get("/bars/1").await.status == 200 },
    )
    .await;
    assert!(
        registered.elapsed() < Duration::from_secs(2),
        "took {:?}",
        registered.elapsed()
    );
    assert_eq!(caller.get("/bars/1").await.json()["backend"], json!("bar"));

    // The registry goes away: the gateway keeps routing with the table it has.
    let _ = registry.child.kill();
    let _ = registry.child.wait();
    eventually(
        "the health says the registry is unreachable",
        Duration::from_secs(5),
        || async { caller.get("/system/health").await.json()["registry"] == json!("unreachable") },
    )
    .await;
    for path in ["/foos/1", "/bars/2", "/foos/3"] {
        assert_eq!(caller.get(path).await.status, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composed_routes_gather_their_parts() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path()).await;
    register(
        &registry,
        "foo",
        backend("foo").await,
        json!([["GET", "/foos/{uuid}"], ["GET", "/pause/{ms}"]]),
    )
    .await;
    register(
        &registry,
        "foobar",
        backend("foobar").await,
        json!([["GET", "/foobars/{id}"]]),
    )
    .await;
    let yaml = r#"
gateway:
  compose:
    - route: GET /foos/{uuid}/full
      timeout_ms: 3000
      parts:
        foo: GET /foos/{uuid}
        foobar: {call: "GET /foobars/{foo.foobar}", optional: true}
    - route: GET /pauses
      parts:
        first: GET /pause/400
        second: GET /pause/400
        then: GET /foobars/{first.paused}
    - route: GET /strict/{uuid}
      parts:
        foo: GET /foos/{uuid}
        foobar: GET /foobars/{foo.foobar}
"#;
    let gateway = gateway(dir.path(), &registry.addr, yaml).await;
    let caller = Caller::new(&gateway);

    // Both parts, the second with a field of the first; the caller's Authorization passed on.
    let full_answer = caller
        .send(
            "GET",
            "/foos/1/full",
            &[("authorization", "Bearer t")],
            full(Bytes::new()),
        )
        .await;
    assert_eq!(
        full_answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&full_answer.body)
    );
    let body = full_answer.json();
    assert_eq!(body["foo"]["uuid"], json!("1"));
    assert_eq!(body["foo"]["authorization"], json!("Bearer t"));
    assert_eq!(body["foobar"], json!({"id": "fb-1"}));
    assert!(body.get("_partial").is_none(), "{body}");

    // An optional part that fails, or has no input: null, and the reason in `_partial`.
    let body = caller.get("/foos/broken/full").await.json();
    assert_eq!(body["foo"]["uuid"], json!("broken"));
    assert_eq!(body["foobar"], Value::Null);
    let reason = body["_partial"]["foobar"].as_str().unwrap();
    assert!(
        reason.contains("GET /foobars/fb-broken answered 500"),
        "{reason}"
    );
    let body = caller.get("/foos/lonely/full").await.json();
    assert_eq!(body["foobar"], Value::Null);
    assert!(
        body["_partial"]["foobar"]
            .as_str()
            .unwrap()
            .contains("`foo` has no `foobar`"),
        "{body}"
    );

    // A required part that fails: its 4xx, else 502.
    let missing = caller.get("/foos/missing/full").await;
    assert_error(
        &missing,
        404,
        "part `foo`: GET /foos/missing answered 404: no foo `missing`",
    );
    let strict = caller.get("/strict/broken").await;
    assert_error(
        &strict,
        502,
        "part `foobar`: GET /foobars/fb-broken answered 500",
    );

    // Parts that need nothing run at once; a part waits for the one it uses.
    let begun = Instant::now();
    let pauses = caller.get("/pauses").await;
    let took = begun.elapsed();
    assert_eq!(pauses.status, 200);
    assert_eq!(pauses.json()["then"], json!({"id": "400"}));
    assert!(
        took < Duration::from_millis(750),
        "the parts took {took:?}: not concurrent?"
    );
}

/// A token from `minos token`, signed with `secret`.
fn token(secret: &str, subject: &str, roles: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_minos"))
        .args([
            "token", "--sub", subject, "--secret", secret, "--roles", roles,
        ])
        .output()
        .expect("minos token runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_auth_section_tokens_are_checked_at_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path()).await;
    let endpoints = json!([
        ["GET", "/open/{x}"],
        ["GET", "/foos/{uuid}", {"auth": true}],
        ["GET", "/admin/{x}", {"auth": true, "roles": ["admin"]}],
    ]);
    register(&registry, "foo", backend("foo").await, endpoints).await;
    let yaml = r#"
auth: {secret: "gateway-test-secret"}
gateway:
  compose:
    - route: GET /both/{uuid}
      parts:
        foo: GET /foos/{uuid}
        admin: GET /admin/{uuid}
"#;
    let gateway = gateway(dir.path(), &registry.addr, yaml).await;
    let caller = Caller::new(&gateway);
    let user = format!("Bearer {}", token("gateway-test-secret", "alice", ""));
    let admin = format!("Bearer {}", token("gateway-test-secret", "root", "admin"));
    let forged = format!("Bearer {}", token("another-secret", "mallory", "admin"));
    let get = |path: &'static str, authorization: Option<String>| {
        let caller = &caller;
        async move {
            let headers: Vec<(&str, &str)> = match &authorization {
                Some(value) => vec![("authorization", value.as_str())],
                None => vec![],
            };
            caller.send("GET", path, &headers, full(Bytes::new())).await
        }
    };

    assert_eq!(get("/open/1", None).await.status, 200);
    let anonymous = get("/foos/1", None).await;
    assert_error(&anonymous, 401, "needs an access token");
    assert!(anonymous
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));
    // A bad token is refused even on an open route.
    let bad = get("/open/1", Some(forged)).await;
    assert_error(&bad, 401, "invalid access token");
    assert!(bad
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    // A valid token: passed on unchanged; roles enforced.
    let allowed = get("/foos/1", Some(user.clone())).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.json()["authorization"], json!(user));
    assert_error(&get("/admin/1", Some(user.clone())).await, 403, "admin");
    assert_eq!(get("/admin/1", Some(admin.clone())).await.status, 200);

    // Each part's requirement is enforced with the caller's token.
    let composed = get("/both/1", Some(user)).await;
    assert_error(&composed, 403, "part `admin`");
    assert_error(&get("/both/1", None).await, 401, "part ");
    let composed = get("/both/1", Some(admin.clone())).await;
    assert_eq!(composed.status, 200);
    assert_eq!(composed.json()["foo"]["authorization"], json!(admin));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_starts_without_the_registry_and_routes_once_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let port = dead_address().await.port();
    let gateway = gateway(dir.path(), &format!("127.0.0.1:{port}"), "gateway: {}\n").await;
    let caller = Caller::new(&gateway);
    let health = caller.get("/system/health").await.json();
    assert_eq!(health["registry"], json!("unreachable"), "{health}");
    assert_eq!(health["routes"], json!(0));
    assert_error(&caller.get("/foos/1").await, 404, "no route");

    let registry = registry_on(dir.path(), port).await;
    register(
        &registry,
        "foo",
        backend("a").await,
        json!([["GET", "/foos/{uuid}"]]),
    )
    .await;
    eventually(
        "routed once the registry answers",
        Duration::from_secs(6),
        || async { caller.get("/foos/1").await.status == 200 },
    )
    .await;
    assert_eq!(
        caller.get("/system/health").await.json()["registry"],
        json!("ok")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_gateway_binds_answers_and_stops() {
    use minos_runtime::gateway::{serve_gateway, GatewayConfig, GatewaySettings};
    let settings = |port: u16| GatewaySettings {
        host: "127.0.0.1".into(),
        port,
        body_limit: 1024,
        // Nothing listens there: the gateway starts all the same.
        registry_url: "http://127.0.0.1:1".into(),
        config: GatewayConfig {
            workers: Some(1),
            ..GatewayConfig::default()
        },
        auth: None,
        metrics: true,
    };
    let server = serve_gateway(settings(0)).await.unwrap();
    let port = server.addr().port();
    let live = TestClient::new(server.addr())
        .get("/system/live")
        .await
        .unwrap();
    assert_eq!(live.status, 200, "{}", live.body);
    let taken = serve_gateway(settings(port)).await.unwrap_err();
    assert!(matches!(taken, minos::Error::Bind { .. }), "{taken}");
    let stopping = Instant::now();
    server.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopping.elapsed()
    );
    assert!(TestClient::new(format!("127.0.0.1:{port}"))
        .get("/system/live")
        .await
        .is_err());

    let mut bad = settings(0);
    bad.registry_url = "127.0.0.1:5567".into();
    let error = serve_gateway(bad).await.unwrap_err().to_string();
    assert!(error.contains("http://HOST:PORT"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_and_the_gateway_show_their_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path()).await;
    let a = backend("a").await;
    register(&registry, "foo", a, json!([["GET", "/foos/{uuid}"]])).await;
    let gateway = gateway(dir.path(), &registry.addr, "name: gateway\n").await;
    let caller = Caller::new(&gateway);
    eventually("the route to be known", Duration::from_secs(10), || async {
        caller.get("/foos/1").await.status == 200
    })
    .await;
    caller.get("/foos/2").await;
    caller.get("/nowhere").await;
    let metrics = caller.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = String::from_utf8_lossy(&metrics.body);
    for expected in [
        "minos_http_requests_total{method=\"GET\",route=\"/foos/{uuid}\",status=\"200\"}",
        "minos_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
        "minos_http_request_duration_seconds_bucket{",
    ] {
        assert!(text.contains(expected), "no `{expected}` in\n{text}");
    }
    // The service-only metrics are not the gateway's.
    assert!(!text.contains("minos_outbox_backlog_messages"), "{text}");

    let answer = TestClient::new(&registry.addr)
        .get("/metrics")
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.contains(
            "minos_http_requests_total{method=\"POST\",route=\"/microservices/{name}\",status=\"201\"} 1"
        ),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("# EOF"), "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporting_spans_the_gateway_is_a_hop_of_the_trace() {
    let collector = minos_support::otlp::Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path()).await;
    let a = backend("a").await;
    register(&registry, "foo", a, json!([["GET", "/foos/{uuid}"]])).await;
    let file = dir.path().join("gateway.yml");
    std::fs::write(
        &file,
        // Spans are exported whatever the log filter; metrics can be switched off.
        format!(
            "log: warn\ntelemetry: {{otlp: \"http://127.0.0.1:{}\", metrics: false}}\n",
            collector.port
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_minos"));
    command
        .args(["gateway", "--port", "0", "--config"])
        .arg(&file)
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        .env("MINOS_DISCOVERY_URL", format!("http://{}", registry.addr))
        .env("OTEL_BSP_SCHEDULE_DELAY", "200");
    let gateway = start(command, "gateway").await;
    let caller = Caller::new(&gateway);
    eventually("the route to be known", Duration::from_secs(10), || async {
        caller.get("/foos/1").await.status == 200
    })
    .await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let answer = caller
        .send(
            "GET",
            "/foos/7",
            &[("traceparent", &format!("00-{trace}-b7ad6b7169203331-01"))],
            full(Bytes::new()),
        )
        .await;
    assert_eq!(answer.status, 200);
    // The instance's parent is the gateway's span, of the caller's trace.
    let forwarded = answer.json()["headers"]["traceparent"]
        .as_str()
        .expect("a traceparent forwarded")
        .to_owned();
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts[1], trace, "{forwarded}");
    assert_ne!(parts[2], "b7ad6b7169203331", "{forwarded}");
    let find = || {
        collector
            .spans()
            .into_iter()
            .find(|s| s.trace_id == trace && s.name == "gateway GET /foos/{uuid}")
    };
    eventually("the gateway's span", Duration::from_secs(20), || {
        let found = find().is_some();
        async move { found }
    })
    .await;
    let span = find().unwrap();
    assert_eq!(span.parent, "b7ad6b7169203331", "{span:?}");
    assert_eq!(span.span_id, parts[2], "{span:?}");
    assert!(span.service.contains("gateway"), "{span:?}");
    assert_eq!(caller.get("/metrics").await.status, 404);
}
