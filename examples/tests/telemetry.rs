//! Observability as a user meets it: one request is one trace, in the logs (text, JSON, shipped to
//! the broker and read back with `minos logs`), in the metrics, and in the spans exported to an
//! OpenTelemetry collector, across `foo` → Kafka → `foobar` inside a saga.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use minos_support::http::Client;
use minos_support::otlp::{Collector, Span};
use minos_support::postgres::fresh_schema_url;
use minos_support::process::{eventually, minos_binary, spawn_listening};
use serde_json::{json, Value};

struct Service {
    child: Child,
    http: Client,
    lines: mpsc::Receiver<String>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn start(binary: &str, name: &str, env: &[(&str, String)]) -> Service {
        let mut command = Command::new(binary);
        command
            .env("MINOS_NAME", name)
            .env("MINOS_HTTP_HOST", "127.0.0.1")
            .env("MINOS_HTTP_PORT", "0")
            .env_remove("RUST_LOG")
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let started = spawn_listening(&mut command, name, Duration::from_secs(90));
        Service {
            child: started.child,
            http: Client::new(format!("http://{}", started.addr)),
            lines: started.lines,
        }
    }

    /// The next output line containing `text`.
    fn wait_for_line(&self, text: &str) -> String {
        minos_support::process::next_line_containing(&self.lines, text, Duration::from_secs(20))
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-{CALLER_SPAN}-01")
}

#[test]
fn a_request_is_one_trace_in_json_logs_and_is_counted_in_the_metrics() {
    let service = Service::start(
        env!("CARGO_BIN_EXE_quickstart"),
        "telemetry-quickstart",
        &[
            ("MINOS_STORAGE", "memory".into()),
            ("MINOS_LOG_FORMAT", "json".into()),
        ],
    );
    let traced = service
        .http
        .clone()
        .with_header("traceparent", &traceparent(TRACE));
    let created = traced.post("/foos", r#"{"bar": "traced"}"#).unwrap();
    assert_eq!(created.status, 200, "{}", created.body);
    let uuid = created.json()["uuid"].as_str().unwrap().to_owned();
    // The answer names the trace, with the service's own span as the parent.
    let response = &created.headers["traceresponse"];
    assert!(response.starts_with(&format!("00-{TRACE}-")), "{response}");
    assert!(!response.contains(CALLER_SPAN), "{response}");
    // Without an `x-request-id` of the caller's, the request gets one.
    assert_eq!(
        created.headers["x-request-id"].len(),
        36,
        "{:?}",
        created.headers
    );

    // The FooCreated handler ran after the outbox and the broker, still in the request's trace: its
    // JSON log line carries the trace id, the service, the handler and the message id.
    let line = service.wait_for_line("A Foo was created");
    let record: Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(record["level"], json!("INFO"), "{record}");
    assert!(
        record["message"].as_str().unwrap().contains(&uuid),
        "{record}"
    );
    assert!(record["time"].as_str().unwrap().ends_with('Z'), "{record}");
    assert_eq!(record["trace_id"], json!(TRACE), "{record}");
    assert_eq!(record["service"], json!("telemetry-quickstart"), "{record}");
    let fields = &record["fields"];
    assert_eq!(fields["topic"], json!("FooCreated"), "{record}");
    assert!(
        fields["message_id"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "{record}"
    );
    assert_eq!(
        fields["handler"],
        json!("FooQueryService::foo_created"),
        "{record}"
    );

    // A request without a traceparent starts a trace of its own.
    let other = service.http.post("/foos", r#"{"bar": "other"}"#).unwrap();
    let other_trace = other.headers["traceresponse"].clone();
    assert!(!other_trace.contains(TRACE), "{other_trace}");
    assert_eq!(other_trace.len(), 55, "{other_trace}");

    // Metrics, in the Prometheus text format.
    // Handled, and (marked once handled) out of the outbox.
    eventually("FooCreated counted", Duration::from_secs(10), || {
        let metrics = service.http.get("/metrics").unwrap();
        metrics
            .body
            .contains("minos_broker_messages_total{topic=\"FooCreated\",outcome=\"handled\"} 2")
            && metrics.body.contains("minos_outbox_backlog_messages 0")
    });
    let metrics = service.http.get("/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers["content-type"].starts_with("application/openmetrics-text"),
        "{:?}",
        metrics.headers
    );
    for expected in [
        "minos_http_requests_total{method=\"POST\",route=\"/foos\",status=\"200\"} 2",
        "# TYPE minos_http_request_duration_seconds histogram",
        "minos_http_request_duration_seconds_count{method=\"POST\",route=\"/foos\"} 2",
        "minos_outbox_backlog_messages 0",
        "minos_outbox_published_messages_total 2",
        "minos_store_operation_duration_seconds_count{operation=\"commit\"}",
        "minos_view_lag_events{view=\"FooListing\",source=\"Foo\"} 0",
        "# EOF",
    ] {
        assert!(
            metrics.body.contains(expected),
            "no `{expected}` in\n{}",
            metrics.body
        );
    }
}

#[test]
fn metrics_and_spans_can_be_switched_off() {
    let service = Service::start(
        env!("CARGO_BIN_EXE_quickstart"),
        "telemetry-off",
        &[
            ("MINOS_STORAGE", "memory".into()),
            ("MINOS_TELEMETRY_METRICS", "false".into()),
            ("MINOS_TELEMETRY_SPANS", "false".into()),
        ],
    );
    let created = service
        .http
        .clone()
        .with_header("traceparent", &traceparent(TRACE))
        .post("/foos", r#"{"bar": "quiet"}"#)
        .unwrap();
    assert_eq!(created.status, 200);
    assert!(!created.headers.contains_key("traceresponse"));
    let line = service.wait_for_line("A Foo was created");
    assert!(!line.contains(TRACE), "{line}");
    let metrics = service.http.get("/metrics").unwrap();
    assert_eq!(metrics.status, 404, "{}", metrics.body);
    assert!(
        metrics.body.contains("telemetry.metrics"),
        "{}",
        metrics.body
    );
}

/// `minos logs ARGS`: its standard output, or its standard error when it fails.
fn minos_logs(minos: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new(minos).arg("logs").args(args).output().unwrap();
    match output.status.success() {
        true => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

#[test]
fn minos_logs_refuses_the_in_process_broker_and_bad_filters() {
    let minos = minos_binary(env!("CARGO_BIN_EXE_quickstart"));
    for (args, says) in [
        (&["--broker", "memory"][..], "kafka://HOST:PORT"),
        (&["--level", "loud"][..], "--level `loud`"),
        (&["--since", "yesterday"][..], "10m"),
        (&["--since", "999999999999d"][..], "10m"),
    ] {
        let refused = minos_logs(&minos, args).expect_err("refused");
        assert!(refused.contains(says), "{args:?}: {refused}");
    }
}

#[test]
fn a_saga_across_kafka_is_one_trace_in_the_collector_and_in_minos_logs() {
    let bootstrap = std::env::var("MINOS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let collector = Collector::start();
    let suffix = &minos::Uuid::new_v4().simple().to_string()[..8];
    let (foo_name, foobar_name) = (format!("foo-{suffix}"), format!("foobar-{suffix}"));
    let env = |storage: String| {
        vec![
            ("MINOS_STORAGE", storage),
            ("MINOS_BROKER", format!("kafka://{bootstrap}")),
            (
                "MINOS_TELEMETRY_OTLP",
                format!("http://127.0.0.1:{}", collector.port),
            ),
            ("MINOS_LOG_AGGREGATE", "true".to_owned()),
            // Export every half second instead of every five.
            ("OTEL_BSP_SCHEDULE_DELAY", "500".to_owned()),
        ]
    };
    let foobar = Service::start(
        env!("CARGO_BIN_EXE_foobar"),
        &foobar_name,
        &env(fresh_schema_url()),
    );
    let foo = Service::start(
        env!("CARGO_BIN_EXE_foo"),
        &foo_name,
        &env(fresh_schema_url()),
    );

    let created = foo
        .http
        .clone()
        .with_header("x-request-id", &format!("req-{suffix}"))
        .post("/foos", r#"{"bar": "traced"}"#)
        .unwrap();
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.headers["x-request-id"], format!("req-{suffix}"));
    let uuid = created.json()["uuid"].clone();
    let trace = minos::Uuid::new_v4().simple().to_string();
    let started = foo
        .http
        .clone()
        .with_header("traceparent", &traceparent(&trace))
        .post(
            "/foos/add-foobar",
            &json!({"uuid": uuid, "something": "traced"}).to_string(),
        )
        .unwrap();
    assert_eq!(started.status, 200, "{}", started.body);
    let execution = started.json()["uuid"].as_str().unwrap().to_owned();
    eventually("the saga to finish", Duration::from_secs(60), || {
        let answer = foo
            .http
            .get(&format!("/saga/executions/{execution}"))
            .unwrap();
        answer.json()["status"] == json!("finished")
    });

    // The collector has one trace: foo's request span below the caller's span, foobar's handling of
    // CreateFooBar below a span of foo, and foo's handling of the reply below a span of foobar.
    let mut spans = Vec::new();
    // foo handling the step's reply (not its own events, which the commit publishes meanwhile).
    let is_reply = |s: &Span| {
        s.service.contains(&foo_name) && s.name.starts_with("handle ") && s.name.ends_with("Reply")
    };
    eventually(
        "the spans of both services",
        Duration::from_secs(30),
        || {
            spans = collector
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace)
                .collect();
            // Every span the checks below look for: each service exports in batches of its own.
            let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
            let named = |name: &str| spans.iter().any(|s| s.name == name);
            services.len() == 2
                && named("POST /foos/add-foobar")
                && named("saga")
                && named("handle CreateFooBar")
                && spans
                    .iter()
                    .any(|s| s.name == "handler" && s.service.contains(&foobar_name))
                && spans.iter().any(&is_reply)
        },
    );
    let by_id: BTreeMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let request = spans
        .iter()
        .find(|s| s.name == "POST /foos/add-foobar")
        .unwrap_or_else(|| panic!("no request span in {spans:#?}"));
    assert_eq!(request.parent, CALLER_SPAN, "{request:?}");
    assert!(request.service.contains(&foo_name), "{request:?}");
    let saga = spans
        .iter()
        .find(|s| s.name == "saga")
        .unwrap_or_else(|| panic!("no saga span in {spans:#?}"));
    assert_eq!(saga.parent, request.span_id, "{saga:?}");
    let step = spans
        .iter()
        .find(|s| s.name == "handle CreateFooBar")
        .unwrap_or_else(|| panic!("no CreateFooBar span in {spans:#?}"));
    assert!(step.service.contains(&foobar_name), "{step:?}");
    let sender = by_id
        .get(step.parent.as_str())
        .unwrap_or_else(|| panic!("the step's parent is not in the trace: {spans:#?}"));
    assert!(sender.service.contains(&foo_name), "{sender:?}");
    let handler = spans
        .iter()
        .find(|s| s.name == "handler" && s.parent == step.span_id)
        .unwrap_or_else(|| panic!("no handler span below the step in {spans:#?}"));
    assert!(handler.service.contains(&foobar_name), "{handler:?}");
    let reply = spans
        .iter()
        .find(|s| is_reply(s))
        .unwrap_or_else(|| panic!("no reply span in {spans:#?}"));
    let replier = by_id
        .get(reply.parent.as_str())
        .unwrap_or_else(|| panic!("the reply's parent is not in the trace: {spans:#?}"));
    assert!(replier.service.contains(&foobar_name), "{replier:?}");

    // `minos logs` reads the records both services shipped, for that trace only.
    let minos = minos_binary(env!("CARGO_BIN_EXE_foo"));
    let broker = format!("kafka://{bootstrap}");
    let mut printed = String::new();
    eventually(
        "foobar's log line in minos logs",
        Duration::from_secs(30),
        || {
            printed = minos_logs(
                &minos,
                &["--broker", &broker, "--trace", &trace, "--no-follow"],
            )
            .expect("minos logs");
            printed.contains("created") && printed.contains(&foobar_name)
        },
    );
    for line in printed.lines() {
        assert!(line.contains(&trace), "a line of another trace: {line}");
    }
    let printed = minos_logs(
        &minos,
        &[
            "--broker",
            &broker,
            "--service",
            &foobar_name,
            "--level",
            "info",
            "--no-follow",
            "--json",
        ],
    )
    .unwrap();
    let records: Vec<Value> = printed
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON record"))
        .collect();
    assert!(!records.is_empty());
    assert!(records.iter().all(|r| r["service"] == json!(foobar_name)));
    assert!(records.iter().any(|r| r["trace_id"] == json!(trace)
        && r["fields"]["handler"] == json!("FooBarCommandService::create_foobar")));
    // A line written by an HTTP handler names the request, the route and the handler.
    let printed = minos_logs(
        &minos,
        &[
            "--broker",
            &broker,
            "--service",
            &foo_name,
            "--no-follow",
            "--json",
        ],
    )
    .unwrap();
    let created_line = printed
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON record"))
        .find(|r| r["fields"]["request_id"] == json!(format!("req-{suffix}")))
        .expect("the create's log line");
    assert_eq!(
        created_line["fields"]["route"],
        json!("POST /foos"),
        "{created_line}"
    );
    assert_eq!(
        created_line["fields"]["handler"],
        json!("FooCommandService::create_foo"),
        "{created_line}"
    );
    assert!(created_line["message"]
        .as_str()
        .unwrap()
        .ends_with(" created"));

    // Stopped with SIGTERM, a service ships its last lines before it exits.
    minos_support::process::signal(&foobar.child, "-TERM");
    eventually(
        "foobar's last line in minos logs",
        Duration::from_secs(30),
        || {
            minos_logs(
                &minos,
                &[
                    "--broker",
                    &broker,
                    "--service",
                    &foobar_name,
                    "--no-follow",
                ],
            )
            .unwrap()
            .contains(&format!("service `{foobar_name}` stopped"))
        },
    );
}
