//! The whole system as a user runs it, each part its own process: `minos discovery`, two `foo`
//! instances and `foobar` over the real PostgreSQL and Kafka, and `minos gateway` in front, all with one
//! `auth:` secret. Through the gateway: the token matrix (and the same directly against a service), a
//! role-protected route, a saga whose remote step carries the caller's token from foo to foobar over the
//! broker, the composed route joining a Foo and its FooBar, and 1,000 GETs that all succeed while one foo
//! instance is killed with SIGKILL.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use minos_support::postgres::fresh_schema_url;
use minos_support::process::{eventually, minos_binary, signal, start_process, Process};
use serde_json::{json, Value};

const SECRET: &str = "gateway-test-secret";

fn spawn(mut command: Command, label: &str) -> Process {
    command.env("MINOS_AUTH_SECRET", SECRET);
    start_process(command, label)
}

fn minos() -> Command {
    Command::new(minos_binary(env!("CARGO_BIN_EXE_quickstart")))
}

fn service(binary: &str, name: &str, storage: &str, registry: &Process) -> Process {
    let kafka = std::env::var("MINOS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let mut command = Command::new(binary);
    command
        .env("MINOS_NAME", name)
        .env("MINOS_STORAGE", storage)
        .env("MINOS_BROKER", format!("kafka://{kafka}"))
        .env("MINOS_SAGA_TIMEOUT_MS", "120000")
        .env("MINOS_DISCOVERY_URL", format!("http://{}", registry.addr))
        .env("MINOS_DISCOVERY_HEARTBEAT_MS", "300");
    spawn(command, name)
}

fn token(sub: &str, roles: &str) -> String {
    let output = minos()
        .args(["token", "--sub", sub, "--roles", roles])
        .env("MINOS_AUTH_SECRET", SECRET)
        .output()
        .expect("minos token runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_gateway_routes_checks_tokens_composes_and_survives_a_killed_instance() {
    let dir = tempfile::tempdir().unwrap();
    let suffix = &minos::Uuid::new_v4().simple().to_string()[..8];
    let (foo_name, foobar_name) = (format!("foo-{suffix}"), format!("foobar-{suffix}"));

    let mut command = minos();
    command.args([
        "discovery",
        "--port",
        "0",
        "--storage",
        &format!("sqlite://{}", dir.path().join("discovery.db").display()),
    ]);
    command
        .env("MINOS_REGISTRY_PROBE_INTERVAL_MS", "300")
        .env("MINOS_REGISTRY_REFRESH_MS", "50");
    let registry = spawn(command, "discovery");

    let (foo_storage, foobar_storage) = (fresh_schema_url(), fresh_schema_url());
    let _foobar = service(
        env!("CARGO_BIN_EXE_foobar"),
        &foobar_name,
        &foobar_storage,
        &registry,
    );
    let mut foo_1 = service(
        env!("CARGO_BIN_EXE_foo"),
        &foo_name,
        &foo_storage,
        &registry,
    );
    let foo_2 = service(
        env!("CARGO_BIN_EXE_foo"),
        &foo_name,
        &foo_storage,
        &registry,
    );

    let config = dir.path().join("gateway.yml");
    std::fs::write(
        &config,
        "gateway:\n  timeout_ms: 20000\n  compose:\n    - route: GET /foos/{uuid}/full\n      parts:\n        \
         foo: GET /foos/{uuid}\n        foobar: {call: \"GET /foobars/{foo.foobar}\", optional: true}\n",
    )
    .unwrap();
    let mut command = minos();
    command
        .args(["gateway", "--port", "0", "--config"])
        .arg(&config)
        .env("MINOS_DISCOVERY_URL", format!("http://{}", registry.addr));
    let gateway = spawn(command, "gateway");
    let through = gateway.client();

    // Both foo instances and foobar are routable once registered.
    eventually("the gateway routes to foo", Duration::from_secs(30), || {
        through
            .get("/foos/example")
            .is_ok_and(|answer| answer.status == 200)
    });

    // The token matrix, at the gateway and directly at a service.
    let alice = token("alice", "clerk");
    let admin = token("root", "admin");
    let body = json!({"bar": "through the gateway"}).to_string();
    for client in [through.clone(), foo_1.client()] {
        let answer = client.post("/foos", &body).unwrap();
        assert_eq!(answer.status, 401, "{}", answer.body);
        assert_eq!(answer.json()["status"], json!(401), "{}", answer.body);
        assert!(answer
            .www_authenticate
            .as_deref()
            .is_some_and(|h| h.starts_with("Bearer")));
        let forged = client
            .clone()
            .with_token(&format!("{alice}x"))
            .post("/foos", &body)
            .unwrap();
        assert_eq!(forged.status, 401, "{}", forged.body);
    }
    let answer = through
        .clone()
        .with_token(&alice)
        .post("/foos", &body)
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let uuid = answer.json()["uuid"].as_str().unwrap().to_owned();
    // The position of the command's events comes back through the gateway (read your writes).
    assert!(
        answer
            .headers
            .get("minos-position")
            .is_some_and(|p| p.starts_with("Foo@")),
        "{:?}",
        answer.headers
    );

    // A role-protected route: 403 without the role, at the gateway and at the service.
    let delete = format!("/foos/{uuid}");
    for client in [through.clone(), foo_2.client()] {
        let answer = client.clone().with_token(&alice).delete(&delete).unwrap();
        assert_eq!(answer.status, 403, "{}", answer.body);
    }

    // The saga: foo's remote step carries alice's token to foobar (whose CreateFooBar needs one).
    let started = through
        .clone()
        .with_token(&alice)
        .post(
            "/foos/add-foobar",
            &json!({"uuid": uuid, "something": "hello"}).to_string(),
        )
        .unwrap();
    assert_eq!(started.status, 200, "{}", started.body);
    let execution = started.json()["uuid"].as_str().unwrap().to_owned();
    let as_admin = foo_2.client().with_token(&admin);
    let mut finished = Value::Null;
    eventually("the saga ends", Duration::from_secs(90), || {
        let answer = as_admin
            .get(&format!("/saga/executions/{execution}"))
            .unwrap();
        finished = answer.json();
        finished["status"] == json!("finished") || finished["status"] == json!("errored")
    });
    assert_eq!(finished["status"], json!("finished"), "{finished}");
    // The saga endpoints need the admin role.
    let answer = foo_2
        .client()
        .with_token(&alice)
        .get(&format!("/saga/executions/{execution}"))
        .unwrap();
    assert_eq!(answer.status, 403);

    // The composed route joins the Foo and its FooBar, with the caller's token passed on.
    let full = format!("/foos/{uuid}/full");
    let mut joined = Value::Null;
    eventually("the Foo links its FooBar", Duration::from_secs(30), || {
        let answer = through.clone().with_token(&alice).get(&full).unwrap();
        joined = answer.json();
        answer.status == 200 && joined["foobar"]["something"] == json!("hello")
    });
    assert_eq!(
        joined["foo"]["bar"],
        json!("through the gateway"),
        "{joined}"
    );
    assert_eq!(joined["foo"]["foobar"], finished["context"]["foobar_uuid"]);
    // foo's FoobarLink view (kept by whichever replica, in one PostgreSQL view database) has the link.
    let links = format!(
        "/foos/events?foobar={}",
        finished["context"]["foobar_uuid"].as_str().unwrap()
    );
    eventually(
        "the FoobarLink view has the link",
        Duration::from_secs(30),
        || {
            let answer = through.get(&links).unwrap();
            answer.status == 200
                && answer
                    .json()
                    .as_array()
                    .is_some_and(|l| l.len() == 1 && l[0]["uuid"] == json!(uuid))
        },
    );

    // 1,000 GETs through the gateway while one foo instance is killed: none fails.
    let sent = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (client, path, sent) = (through.clone(), delete.clone(), Arc::clone(&sent));
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for _ in 0..250 {
                    match client.get(&path) {
                        Ok(answer) if answer.status == 200 => {}
                        Ok(answer) => failures.push(format!("{}: {}", answer.status, answer.body)),
                        Err(error) => failures.push(error),
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                failures
            })
        })
        .collect();
    eventually("the load is under way", Duration::from_secs(30), || {
        sent.load(Ordering::SeqCst) >= 100
    });
    signal(&foo_1.child, "-KILL");
    let _ = foo_1.child.wait();
    let failures: Vec<String> = workers
        .into_iter()
        .flat_map(|worker| worker.join().unwrap())
        .collect();
    assert_eq!(sent.load(Ordering::SeqCst), 1000);
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );

    // An admin may delete.
    let answer = through.clone().with_token(&admin).delete(&delete).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
}
