//! The quickstart service as a user meets it: a separate process driven over HTTP.

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use minos_support::http::Client;
use minos_support::process::spawn_listening;
use serde_json::json;

struct Service {
    child: Child,
    lines: mpsc::Receiver<String>,
    client: Client,
}

impl Service {
    /// Starts the quickstart binary on a free port with its own store, and waits until it listens.
    fn start(db: &std::path::Path) -> Service {
        Self::start_with(&format!("sqlite://{}", db.display()))
    }

    /// Starts the quickstart binary with `MINOS_STORAGE=storage`.
    fn start_with(storage: &str) -> Service {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quickstart"));
        command
            .env("MINOS_HTTP_PORT", "0")
            .env("MINOS_HTTP_HOST", "127.0.0.1")
            .env("MINOS_STORAGE", storage)
            .env("RUST_LOG", "info")
            .stderr(Stdio::inherit());
        let started = spawn_listening(&mut command, "quickstart", Duration::from_secs(30));
        Service {
            child: started.child,
            lines: started.lines,
            client: Client::new(format!("http://{}", started.addr)),
        }
    }

    /// Waits for a line of output containing `text`.
    fn wait_for_line(&self, text: &str) -> String {
        minos_support::process::next_line_containing(&self.lines, text, Duration::from_secs(10))
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        minos_support::process::signal(&self.child, "-TERM");
        self.child.wait().expect("wait for the service")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn quickstart_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foo.db");
    let service = Service::start(&db);
    let client = &service.client;

    let health = client.get("/system/health").unwrap();
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, json!("ok"))
    );

    let created = client.post("/foos", r#"{"bar": "test"}"#).unwrap();
    assert_eq!(created.status, 200, "{}", created.body);
    let uuid = created.json()["uuid"].as_str().expect("a uuid").to_owned();

    let read = client.get(&format!("/foos/{uuid}")).unwrap();
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["bar"], json!("test"));
    assert_eq!(read.json()["version"], json!(1));

    // The FooCreated event went through the outbox and the broker to the query service.
    let handled = service.wait_for_line("A Foo was created");
    assert!(handled.contains(&uuid), "{handled}");
    let example = client.get("/foos/example").unwrap();
    assert_eq!(
        example.json()["message"],
        json!("This is an example response!")
    );
    assert!(example.json()["foos_created_seen"].as_u64().unwrap() >= 1);

    // The listing view: a query presenting the position the command answered sees the new Foo.
    let position = created
        .headers
        .get("minos-position")
        .expect("a command's response carries the positions of the events it wrote")
        .clone();
    let listed = client
        .clone()
        .with_header("minos-position", &position)
        .get("/foos?bar=test")
        .unwrap();
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(
        listed
            .json()
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["uuid"] == uuid.as_str()),
        "{}",
        listed.body
    );
    let views = client.get("/views").unwrap();
    assert_eq!(views.json()[0]["name"], "FooListing", "{}", views.body);

    let bad_json = client.post("/foos", r#"{"bar": "#).unwrap();
    assert_eq!(bad_json.status, 400);
    assert!(bad_json.json()["error"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));
    let wrong_content = client.post("/foos", r#"{"baz": 1}"#).unwrap();
    assert_eq!(wrong_content.status, 400);
    assert!(
        wrong_content.body.contains("missing field `bar`"),
        "{}",
        wrong_content.body
    );
    let empty_bar = client.post("/foos", r#"{"bar": " "}"#).unwrap();
    assert_eq!(empty_bar.status, 400);
    // A NUL character is refused the same way on every backend (PostgreSQL cannot store it).
    let nul = client.post("/foos", r#"{"bar": "a\u0000b"}"#).unwrap();
    assert_eq!(nul.status, 400, "{}", nul.body);
    assert!(nul.body.contains("NUL character"), "{}", nul.body);
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for hostile in [r#"{"bar": "\ud800"}"#, r#"{"bar": 1e400}"#, deep.as_str()] {
        let refused = client.post("/foos", hostile).unwrap();
        assert_eq!(refused.status, 400, "{hostile:.40}: {}", refused.body);
        assert!(refused.body.contains("malformed JSON"), "{}", refused.body);
    }
    let escaped = client.post("/foos", r#"{"bar": "a\\u0000b"}"#).unwrap();
    assert_eq!(
        escaped.status, 200,
        "a backslash and `u0000` are text: {}",
        escaped.body
    );

    let unknown = client.get("/bars").unwrap();
    assert_eq!(unknown.status, 404);
    let unknown_foo = client
        .get(&format!("/foos/{}", "00000000-0000-0000-0000-000000000001"))
        .unwrap();
    assert_eq!(unknown_foo.status, 404);
    let wrong_method = client.request("DELETE", "/foos", None).unwrap();
    assert_eq!(wrong_method.status, 405);
    let huge = format!(r#"{{"bar": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let too_large = client.post("/foos", &huge).unwrap();
    assert_eq!(too_large.status, 413);

    let status = service.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");

    // What was stored is still there after a restart.
    let again = Service::start(&db);
    let read = again.client.get(&format!("/foos/{uuid}")).unwrap();
    assert_eq!(read.json()["bar"], json!("test"));
    assert!(again.terminate().success());
}

#[test]
fn quickstart_runs_unchanged_on_postgres() {
    let storage = minos_support::postgres::fresh_schema_url();
    let service = Service::start_with(&storage);
    let created = service
        .client
        .post("/foos", r#"{"bar": "on postgres"}"#)
        .unwrap();
    assert_eq!(created.status, 200, "{}", created.body);
    let uuid = created.json()["uuid"].as_str().expect("a uuid").to_owned();
    let handled = service.wait_for_line("A Foo was created");
    assert!(handled.contains(&uuid), "{handled}");
    let nul = service
        .client
        .post("/foos", r#"{"bar": "a\u0000b", "note\u0000": 1}"#)
        .unwrap();
    assert_eq!(nul.status, 400, "a clear refusal, not a 500: {}", nul.body);
    assert!(nul.body.contains("NUL character"), "{}", nul.body);
    assert!(service.terminate().success());

    let again = Service::start_with(&storage);
    let read = again.client.get(&format!("/foos/{uuid}")).unwrap();
    assert_eq!(
        (read.status, read.json()["bar"].clone()),
        (200, json!("on postgres"))
    );
    assert!(again.terminate().success());
}

/// Killed (SIGKILL) right after a burst of creates, while `FooCreated` messages still wait in the
/// in-process broker's memory for their handler: none is lost. Their outbox rows are marked sent only
/// once handled, so the next start publishes what was in flight and the handler sees every Foo.
#[test]
fn events_in_flight_when_the_process_is_killed_are_handled_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foo.db");
    let note = |handled: &mut std::collections::HashSet<String>, line: String| {
        if let Some((_, rest)) = line.split_once("A Foo was created: ") {
            handled.insert(rest.split_whitespace().next().unwrap_or("").to_owned());
        }
    };
    let mut created = Vec::new();
    let mut handled = std::collections::HashSet::new();
    // A burst, then SIGKILL at once; again if the handler happened to keep up with every create.
    for _ in 0..5 {
        let mut service = Service::start(&db);
        let burst: Vec<String> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|w| {
                    let client = service.client.clone();
                    scope.spawn(move || {
                        (0..40)
                            .map(|i| {
                                let answer = client
                                    .post("/foos", &format!(r#"{{"bar": "b{w}-{i}"}}"#))
                                    .unwrap();
                                assert_eq!(answer.status, 200, "{}", answer.body);
                                answer.json()["uuid"].as_str().unwrap().to_owned()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().unwrap())
                .collect()
        });
        service.child.kill().unwrap();
        service.child.wait().unwrap();
        // What the killed run printed, to the end of its output.
        while let Ok(line) = service.lines.recv_timeout(Duration::from_secs(5)) {
            note(&mut handled, line);
        }
        created.extend(burst);
        if created.iter().any(|uuid| !handled.contains(uuid)) {
            break;
        }
    }
    let before = handled.len();
    assert!(
        before < created.len(),
        "some FooCreated messages were still unhandled at the kill"
    );
    let again = Service::start(&db);
    minos_support::process::eventually(
        "every created Foo handled",
        Duration::from_secs(30),
        || {
            while let Ok(line) = again.lines.try_recv() {
                note(&mut handled, line);
            }
            created.iter().all(|uuid| handled.contains(uuid))
        },
    );
    eprintln!(
        "{} creates; {before} handled before the kill, the rest after the restart",
        created.len()
    );
}
