//! The two-service example end to end: `foo` and `foobar` run as separate processes over the real
//! PostgreSQL and Kafka, driven over HTTP like a user with curl: the saga commits in both services; a
//! refusal by foobar compensates foo's step and leaves nothing; and foo killed (SIGKILL) while its saga
//! waits for foobar's reply finishes the saga once restarted.

use std::process::{Child, Command};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use minos_support::http::Client;
use minos_support::postgres::fresh_schema_url;
use minos_support::process::spawn_listening;
use serde_json::{json, Value};

struct Service {
    child: Child,
    http: Client,
    _lines: Receiver<String>,
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

fn start(binary: &str, name: &str, storage: &str) -> Service {
    let mut command = Command::new(binary);
    command
        .env("MINOS_NAME", name)
        .env("MINOS_STORAGE", storage)
        .env("MINOS_BROKER", format!("kafka://{}", bootstrap()))
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        .env("MINOS_HTTP_PORT", "0")
        .env("MINOS_SAGA_TIMEOUT_MS", "120000");
    // Starting against PostgreSQL and Kafka may take a while on a cold broker.
    let started = spawn_listening(&mut command, name, Duration::from_secs(90));
    Service {
        child: started.child,
        http: Client::new(format!("http://{}", started.addr)),
        _lines: started.lines,
    }
}

fn post(service: &Service, path: &str, body: Value) -> Value {
    let answer = service.http.post(path, &body.to_string()).unwrap();
    assert_eq!(answer.status, 200, "POST {path}: {}", answer.body);
    answer.json()
}

fn get(service: &Service, path: &str) -> (u16, Value) {
    let answer = service.http.get(path).unwrap();
    (answer.status, answer.json())
}

/// Polls the status endpoint until the execution ends.
fn wait_for_end(service: &Service, execution: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = get(service, &format!("/saga/executions/{execution}"));
        assert_eq!(status, 200, "{body}");
        if body["status"] == json!("finished") || body["status"] == json!("errored") {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "the saga did not end in time: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

use minos_support::process::signal;

#[test]
fn foo_and_foobar_run_the_saga_over_postgres_and_kafka() {
    let suffix = &minos::Uuid::new_v4().simple().to_string()[..8];
    let (foo_name, foobar_name) = (format!("foo-{suffix}"), format!("foobar-{suffix}"));
    let (foo_storage, foobar_storage) = (fresh_schema_url(), fresh_schema_url());
    let foobar = start(env!("CARGO_BIN_EXE_foobar"), &foobar_name, &foobar_storage);
    let mut foo = start(env!("CARGO_BIN_EXE_foo"), &foo_name, &foo_storage);

    // 1. Success: the Foo references the new FooBar, and FooUpdated.foobar is handled.
    let uuid = post(&foo, "/foos", json!({"bar": "test"}))["uuid"].clone();
    let started = post(
        &foo,
        "/foos/add-foobar",
        json!({"uuid": uuid, "something": "hello"}),
    );
    let execution = wait_for_end(
        &foo,
        started["uuid"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(execution["status"], json!("finished"), "{execution}");
    let foobar_uuid = execution["context"]["foobar_uuid"].clone();
    assert!(execution["related_services"]
        .as_array()
        .unwrap()
        .contains(&json!(foobar_name)));
    let (_, read) = get(&foo, &format!("/foos/{}", uuid.as_str().unwrap()));
    assert_eq!(read["foobar"], foobar_uuid, "{read}");
    let (status, stored) = get(
        &foobar,
        &format!("/foobars/{}", foobar_uuid.as_str().unwrap()),
    );
    assert_eq!(
        (status, &stored["something"]),
        (200, &json!("hello")),
        "{stored}"
    );
    // Resolved through `_GetFooBarSnapshots` over Kafka.
    let (status, resolved) = get(&foo, &format!("/foos/{}/foobar", uuid.as_str().unwrap()));
    assert_eq!(
        (status, &resolved["something"]),
        (200, &json!("hello")),
        "{resolved}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, events) = get(&foo, "/foos/events");
        if events.as_array().unwrap().iter().any(|e| e["uuid"] == uuid) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "FooUpdated.foobar was not handled: {events}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // 2. foobar refuses (400): the saga fails, foo's first step is compensated, nothing is stored.
    let refused_foo = post(&foo, "/foos", json!({"bar": "refused"}))["uuid"].clone();
    let started = post(
        &foo,
        "/foos/add-foobar",
        json!({"uuid": refused_foo, "something": ""}),
    );
    let execution = wait_for_end(
        &foo,
        started["uuid"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(execution["status"], json!("errored"), "{execution}");
    assert_eq!(
        execution["context"]["compensated"],
        json!(true),
        "{execution}"
    );
    assert!(execution["error"]
        .as_str()
        .unwrap()
        .contains("must not be empty"));
    let (_, read) = get(&foo, &format!("/foos/{}", refused_foo.as_str().unwrap()));
    assert_eq!(read["foobar"], Value::Null);
    assert_eq!(read["version"], json!(1));
    let (_, all) = get(&foobar, "/foobars");
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");

    // 3. foo is killed while the saga waits for foobar's reply; restarted, it finishes the saga.
    let later_foo = post(&foo, "/foos", json!({"bar": "restarted"}))["uuid"].clone();
    signal(&foobar.child, "-STOP");
    let started = post(
        &foo,
        "/foos/add-foobar",
        json!({"uuid": later_foo, "something": "after restart"}),
    );
    assert_eq!(started["status"], json!("paused"), "{started}");
    let execution_uuid = started["uuid"].as_str().unwrap().to_owned();
    foo.child.kill().expect("SIGKILL foo");
    foo.child.wait().expect("foo exits");
    signal(&foobar.child, "-CONT");
    foo = start(env!("CARGO_BIN_EXE_foo"), &foo_name, &foo_storage);
    let execution = wait_for_end(&foo, &execution_uuid, Duration::from_secs(120));
    assert_eq!(execution["status"], json!("finished"), "{execution}");
    let (_, read) = get(&foo, &format!("/foos/{}", later_foo.as_str().unwrap()));
    assert_eq!(
        read["foobar"], execution["context"]["foobar_uuid"],
        "{read}"
    );
    let (_, all) = get(&foobar, "/foobars");
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    drop(foo);
}
