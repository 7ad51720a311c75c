//! The API specs of the example services, as their users fetch them, checked by the standard validators:
//! `GET /spec/openapi` (OpenAPI 3.1) by Python's openapi-spec-validator, `GET /spec/asyncapi` (AsyncAPI
//! 3.0) by the reference parser @asyncapi/parser (scripts/asyncapi/validate.mjs). scripts/test.sh
//! installs both; without them these tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use minos_support::http::Client;
use minos_support::process::spawn_listening;
use serde_json::{json, Value};

struct Service {
    child: Child,
    client: Client,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts an example binary on a free port, in memory (no database, in-process broker).
fn start(binary: &str, label: &str) -> Service {
    let mut command = Command::new(binary);
    command
        .env("MINOS_HTTP_PORT", "0")
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        .env("MINOS_STORAGE", "memory")
        .env("MINOS_BROKER", "memory");
    let started = spawn_listening(&mut command, label, Duration::from_secs(30));
    Service {
        child: started.child,
        client: Client::new(format!("http://{}", started.addr)),
    }
}

fn asyncapi_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/asyncapi")
}

/// Fails, saying how to install them, when a validator is missing.
fn require_validators() {
    let python = Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "Python's openapi-spec-validator is not installed: run scripts/test.sh, which installs it \
         (or `python3 -m pip install openapi-spec-validator`)"
    );
    let parser = asyncapi_dir().join("node_modules/@asyncapi/parser");
    assert!(
        parser.is_dir() && Command::new("node").arg("--version").output().is_ok(),
        "the AsyncAPI validator is not installed ({} is missing, or node is): run scripts/test.sh, which \
         runs `npm ci` in scripts/asyncapi",
        parser.display()
    );
}

/// Runs a validator on `document` written to a file; panics with its output when it refuses it.
fn validate(document: &Value, file: &str, program: &str, args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    std::fs::write(&path, serde_json::to_string_pretty(document).unwrap()).unwrap();
    let output = Command::new(program)
        .args(args)
        .arg(&path)
        .current_dir(asyncapi_dir())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} refuses the document: {text}\n{document:#}"
    );
}

/// Both documents of a service, checked by the validators.
fn valid_specs(client: &Client) -> (Value, Value) {
    let openapi = client.get("/spec/openapi").unwrap();
    assert_eq!(openapi.status, 200, "{}", openapi.body);
    let openapi = openapi.json();
    let asyncapi = client.get("/spec/asyncapi").unwrap();
    assert_eq!(asyncapi.status, 200, "{}", asyncapi.body);
    let asyncapi = asyncapi.json();
    validate(
        &openapi,
        "openapi.json",
        "python3",
        &["-m", "openapi_spec_validator"],
    );
    validate(&asyncapi, "asyncapi.json", "node", &["validate.mjs"]);
    assert_eq!(openapi["openapi"], json!("3.1.0"));
    assert_eq!(asyncapi["asyncapi"], json!("3.0.0"));
    (openapi, asyncapi)
}

/// `value`, or what its `$ref` (a local JSON pointer) points at, followed until it is not a reference.
fn resolve<'a>(document: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference.strip_prefix('#').expect("a local reference");
        value = document
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling {reference}"));
    }
    value
}

/// The content schema of the (only) message of channel `id`, resolved.
fn channel_content<'a>(asyncapi: &'a Value, id: &str) -> &'a Value {
    let channel = &asyncapi["channels"][id];
    assert_eq!(channel["address"], json!(id), "{channel}");
    let messages = channel["messages"].as_object().expect("messages");
    let message = resolve(asyncapi, messages.values().next().expect("a message"));
    // The envelope (`minos.BrokerMessage`), with the topic's content in `payload.content`.
    let payload = &message["payload"]["allOf"];
    assert_eq!(
        resolve(asyncapi, &payload[0])["properties"]["payload"]["required"],
        json!(["content"])
    );
    resolve(
        asyncapi,
        &payload[1]["properties"]["payload"]["properties"]["content"],
    )
}

/// The diff of `field` in the single-field event of channel `FooUpdated.{field}`.
fn single_field_diff<'a>(asyncapi: &'a Value, field: &str) -> &'a Value {
    let event = channel_content(asyncapi, &format!("FooUpdated.{field}"));
    assert_eq!(event["properties"]["action"]["const"], json!("update"));
    let list = &event["properties"]["fields_diff"];
    assert_eq!(
        (&list["minItems"], &list["maxItems"]),
        (&json!(1), &json!(1))
    );
    let diff = resolve(asyncapi, &list["items"]);
    assert_eq!(diff["properties"]["name"]["const"], json!(field), "{diff}");
    diff
}

fn operation<'a>(asyncapi: &'a Value, id: &str) -> &'a Value {
    let operation = &asyncapi["operations"][id];
    assert!(operation.is_object(), "no operation {id}: {asyncapi:#}");
    operation
}

#[test]
fn the_quickstart_specs_are_valid_and_describe_bodies_and_events() {
    require_validators();
    let service = start(env!("CARGO_BIN_EXE_quickstart"), "quickstart");
    let (openapi, asyncapi) = valid_specs(&service.client);

    // `request = CreateFoo, response = FooId` on POST /foos.
    let post = &openapi["paths"]["/foos"]["post"];
    let body = resolve(
        &openapi,
        &post["requestBody"]["content"]["application/json"]["schema"],
    );
    assert_eq!(body["required"], json!(["bar"]), "{body}");
    assert_eq!(body["properties"]["bar"]["type"], json!("string"));
    let answer = resolve(
        &openapi,
        &post["responses"]["200"]["content"]["application/json"]["schema"],
    );
    assert_eq!(answer["properties"]["uuid"]["format"], json!("uuid"));
    let error = resolve(
        &openapi,
        &post["responses"]["default"]["content"]["application/json"]["schema"],
    );
    assert_eq!(error["required"], json!(["error", "status"]));
    assert_eq!(post["security"], json!([{"bearer": []}]));
    // `response = Root<Foo>`: the fields and the root's metadata.
    let get = &openapi["paths"]["/foos/{uuid}"]["get"];
    let root = &get["responses"]["200"]["content"]["application/json"]["schema"]["allOf"];
    assert_eq!(
        resolve(&openapi, &root[0])["properties"]["bar"]["type"],
        json!("string")
    );
    assert!(root[1]["required"]
        .as_array()
        .unwrap()
        .contains(&json!("version")));
    assert_eq!(get["parameters"][0]["name"], json!("uuid"));
    // No types named: the path and errors only.
    let example = &openapi["paths"]["/foos/example"]["get"];
    assert!(example.get("requestBody").is_none());
    assert!(example["responses"]["200"].get("content").is_none());

    // The command it answers, with its content and reply.
    let create = operation(&asyncapi, "receive.CreateFoo");
    assert_eq!(create["action"], json!("receive"));
    assert_eq!(
        create["reply"]["address"]["location"],
        json!("$message.payload#/reply_topic")
    );
    assert_eq!(
        channel_content(&asyncapi, "CreateFoo")["required"],
        json!(["bar"])
    );
    // The events it publishes, described from `#[root_entity] struct Foo { bar: String }`.
    for topic in ["FooCreated", "FooUpdated", "FooUpdated.bar", "FooDeleted"] {
        let send = operation(&asyncapi, &format!("send.{topic}"));
        assert_eq!(send["action"], json!("send"));
        assert_eq!(
            send["channel"]["$ref"],
            json!(format!("#/channels/{topic}"))
        );
        let event = channel_content(&asyncapi, topic);
        assert_eq!(event["properties"]["name"]["const"], json!("Foo"));
        assert_eq!(
            event["properties"]["uuid"]["format"],
            json!("uuid"),
            "{event}"
        );
    }
    let created = channel_content(&asyncapi, "FooCreated");
    assert_eq!(
        created["properties"]["fields_diff"]["items"]["properties"]["value"]["type"],
        json!("string")
    );
    let bar = single_field_diff(&asyncapi, "bar");
    assert_eq!(bar["properties"]["value"]["type"], json!("string"), "{bar}");
    assert_eq!(
        channel_content(&asyncapi, "FooDeleted")["properties"]["fields_diff"]["maxItems"],
        json!(0)
    );
    // The events it subscribes to share the channel.
    assert!(operation(&asyncapi, "receive.FooCreated")["summary"]
        .as_str()
        .unwrap()
        .contains("FooQueryService::foo_created"));
}

#[test]
fn the_foo_specs_are_valid_and_describe_references() {
    require_validators();
    let service = start(env!("CARGO_BIN_EXE_foo"), "foo");
    let (openapi, asyncapi) = valid_specs(&service.client);

    let add = &openapi["paths"]["/foos/add-foobar"]["post"];
    let body = resolve(
        &openapi,
        &add["requestBody"]["content"]["application/json"]["schema"],
    );
    assert_eq!(body["required"], json!(["uuid", "something"]), "{body}");
    // Only admins delete: the role is the scheme's scope.
    assert_eq!(
        openapi["paths"]["/foos/{uuid}"]["delete"]["security"],
        json!([{"bearer": ["admin"]}])
    );

    // `foobar: Option<Ref<FooBar>>`: a uuid or null, published and handled.
    let foobar = single_field_diff(&asyncapi, "foobar");
    let value = foobar["properties"]["value"].to_string();
    assert!(
        value.contains("\"uuid\"") && value.contains("null"),
        "{value}"
    );
    operation(&asyncapi, "send.FooUpdated.foobar");
    operation(&asyncapi, "receive.FooUpdated.foobar");
    assert_eq!(
        single_field_diff(&asyncapi, "bar")["properties"]["value"]["type"],
        json!("string")
    );
}

/// A service with every kind of field, run in this process: sets, nested models, an optional field and
/// a field type without a schema.
mod orders {
    use minos::prelude::*;
    use serde::{Deserialize, Serialize};

    /// A field type of the application's own: described as any value.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Money(pub i64);

    impl minos::domain::Field for Money {}

    #[root_entity]
    pub struct Order {
        pub customer: String,
        pub lines: EntitySet<Line>,
        pub tags: ValueObjectSet<Tag>,
        pub note: Option<String>,
        pub total: Money,
    }

    #[entity]
    pub struct Line {
        pub product: String,
        pub amount: i64,
    }

    #[value_object]
    pub struct Tag {
        pub label: String,
    }

    pub struct Orders;

    #[command_service]
    impl Orders {
        #[enroute(broker = "CreateOrder", rest = "POST /orders", request = Order, response = Root<Order>)]
        async fn create(&self, _request: Request) -> Result<Response> {
            Ok(Response::empty())
        }
    }

    pub struct OrderLog;

    #[query_service]
    impl OrderLog {
        #[enroute(event = "OrderUpdated.lines.create")]
        async fn line_added(&self, _request: Request) -> Result<()> {
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_nested_models_and_types_without_a_schema_are_described() {
    require_validators();
    let mut config = minos::Config::from_yaml("").unwrap();
    config.name = "orders".into();
    config.storage = "memory".into();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    let service = minos::Launcher::with_config(config).start().await.unwrap();
    let addr = service.addr();
    let (openapi, asyncapi) =
        tokio::task::spawn_blocking(move || valid_specs(&Client::new(format!("http://{addr}"))))
            .await
            .unwrap();
    service.stop().await;

    let order = resolve(
        &openapi,
        &openapi["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"],
    );
    // `note` is optional, the others are required; `total` is any value.
    assert_eq!(
        order["required"],
        json!(["customer", "lines", "tags", "total"]),
        "{order}"
    );
    assert_eq!(order["properties"]["total"], json!({}));
    let lines = &order["properties"]["lines"];
    assert_eq!(lines["type"], json!("array"));
    let line = resolve(&openapi, &lines["items"]["allOf"][0]);
    assert_eq!(line["required"], json!(["product", "amount"]));
    assert_eq!(
        lines["items"]["allOf"][1]["required"],
        json!(["uuid"]),
        "{lines}"
    );
    assert_eq!(order["properties"]["tags"]["uniqueItems"], json!(true));

    // Set fields publish one topic per member action; entity sets have updates, value object sets not.
    for topic in [
        "OrderUpdated.lines.create",
        "OrderUpdated.lines.update",
        "OrderUpdated.lines.delete",
        "OrderUpdated.tags.create",
        "OrderUpdated.tags.delete",
        "OrderUpdated.customer",
        "OrderUpdated.total",
    ] {
        operation(&asyncapi, &format!("send.{topic}"));
    }
    assert!(asyncapi["channels"]["OrderUpdated.tags.update"].is_null());
    assert!(asyncapi["channels"]["OrderUpdated.lines"].is_null());
    operation(&asyncapi, "receive.OrderUpdated.lines.create");
    let event = channel_content(&asyncapi, "OrderUpdated.lines.create");
    let diff = resolve(&asyncapi, &event["properties"]["fields_diff"]["items"]);
    assert_eq!(diff["properties"]["action"]["const"], json!("create"));
    assert_eq!(
        resolve(&asyncapi, &diff["properties"]["value"]["allOf"][0])["required"],
        json!(["product", "amount"]),
        "{diff}"
    );
}
