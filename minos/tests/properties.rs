//! Property tests of every parser of outside input: the broker envelope, conditions and orderings from
//! JSON, path templates and registrations, configuration, access tokens, and whole HTTP requests to a
//! running service. Each property runs `MINOS_PROPTEST_CASES` cases (default 200,000: a million
//! over the six parser properties; HTTP requests a tenth of that); nothing may panic, and an HTTP request
//! is never answered 500.
#![allow(missing_docs, unreachable_pub)]

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{json, Map, Value};

use minos::domain::{Condition, Ordering};
use minos::messaging::BrokerMessage;
use minos::prelude::*;

fn cases() -> u32 {
    std::env::var("MINOS_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

/// Strings that reach the corners: NUL, lone-surrogate escapes are impossible in Rust strings but their
/// JSON spelling is tried by [`json_text`]; control characters, `%`, `_`, dots, braces, very long runs.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_.%{}/ \\\\\u{0}\u{1f}é€😀-]{0,12}",
        Just(String::new()),
        (1usize..20_000).prop_map(|n| "a".repeat(n)),
        (1usize..200).prop_map(|n| "%_".repeat(n)),
    ]
}

/// Any JSON value, nested up to a few levels, with extreme numbers.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Object keys: the names the parsers look for, and anything else.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "op",
            "all",
            "any",
            "inner",
            "field",
            "cmp",
            "value",
            "values",
            "pattern",
            "direction",
            "topic",
            "identifier",
            "version",
            "payload",
            "content",
            "status",
            "headers",
            "key",
            "strategy",
            "reply_topic",
            "name",
            "address",
            "port",
            "endpoints",
            "uuid",
        ])
        .prop_map(str::to_owned),
        text(),
    ]
}

/// Condition-shaped JSON: the right tags and fields, with arbitrary paths and values.
fn condition_json() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        prop::sample::select(vec![
            "name",
            "a.b",
            "uuid",
            "version",
            "created_at",
            "x.0.y",
            ""
        ])
        .prop_map(str::to_owned),
        text(),
    ];
    let leaf = prop_oneof![
        Just(json!({"op": "true"})),
        Just(json!({"op": "false"})),
        (
            field.clone(),
            prop::sample::select(vec![
                "equal",
                "not_equal",
                "lower",
                "lower_equal",
                "greater",
                "greater_equal",
                "nope"
            ]),
            json_value()
        )
            .prop_map(|(f, c, v)| json!({"op": "compare", "field": f, "cmp": c, "value": v})),
        (field.clone(), prop::collection::vec(json_value(), 0..4))
            .prop_map(|(f, v)| json!({"op": "in", "field": f, "values": v})),
        (field.clone(), json_value())
            .prop_map(|(f, v)| json!({"op": "contains", "field": f, "value": v})),
        (field, text()).prop_map(|(f, p)| json!({"op": "like", "field": f, "pattern": p})),
        json_value(),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|all| json!({"op": "and", "all": all})),
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|any| json!({"op": "or", "any": any})),
            inner.prop_map(|c| json!({"op": "not", "inner": c})),
        ]
    })
}

/// JSON text with the spellings serde_json must refuse or keep: lone surrogates, NUL, huge numbers, deep
/// nesting.
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        Just(r#"{"a": "\ud800"}"#.to_owned()),
        Just(r#"{"a": "a\u0000b"}"#.to_owned()),
        (1usize..400).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        (1usize..400).prop_map(|n| format!("1{}", "0".repeat(n))),
        (1usize..50).prop_map(|n| format!("1e{}", "9".repeat(n))),
        any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

#[test]
fn the_broker_envelope_never_panics_and_round_trips() {
    let mut runner = runner(cases());
    let strategy = prop_oneof![
        any::<Vec<u8>>(),
        json_text().prop_map(String::into_bytes),
        json_value().prop_map(|v| {
            json!({"topic": "T", "identifier": Uuid::nil(), "version": 1, "payload": v})
                .to_string()
                .into_bytes()
        }),
    ];
    runner
        .run(&strategy, |bytes| {
            let _ = BrokerMessage::from_json(&bytes);
            Ok(())
        })
        .unwrap();
    let mut runner = runner_for_round_trips();
    runner
        .run(&(text(), json_value()), |(topic, content)| {
            let message = BrokerMessage::new(&topic, content);
            let back = BrokerMessage::from_json(&message.to_json()).unwrap();
            prop_assert_eq!(back, message);
            Ok(())
        })
        .unwrap();
}

fn runner_for_round_trips() -> TestRunner {
    runner((cases() / 10).max(1))
}

#[test]
fn conditions_and_orderings_from_json_never_panic() {
    let mut runner = runner(cases());
    let documents = prop::collection::vec(json_value(), 1..4);
    runner
        .run(
            &(condition_json(), json_value(), documents),
            |(condition, ordering, documents)| {
                if let Ok(condition) = serde_json::from_value::<Condition>(condition) {
                    let query = minos::store::Query {
                        condition: condition.clone(),
                        ..Default::default()
                    };
                    if query.validate().is_ok() {
                        for document in &documents {
                            let _ = condition.matches(document);
                        }
                    }
                    // What parsed serialises back to itself.
                    let again: Condition =
                        serde_json::from_value(serde_json::to_value(&condition).unwrap()).unwrap();
                    prop_assert_eq!(again, condition);
                }
                if let Ok(ordering) = serde_json::from_value::<Ordering>(ordering) {
                    let _ = ordering.compare(&documents[0], &documents[documents.len() - 1]);
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn path_templates_and_registrations_never_panic() {
    let mut runner = runner(cases());
    let path = prop_oneof![
        text(),
        prop::collection::vec(
            prop_oneof![text(), Just("{uuid}".to_owned()), Just("{".to_owned())],
            0..6
        )
        .prop_map(|segments| format!("/{}", segments.join("/"))),
    ];
    runner
        .run(&(path, json_value()), |(path, body)| {
            let _ = minos::discovery::PathTemplate::parse(&path);
            let _ = minos::discovery::Registration::from_json("svc", &body);
            let endpoints = json!({"name": "svc", "address": "127.0.0.1", "port": 1, "endpoints": [["GET", path]]});
            let _ = minos::discovery::Registration::from_json("svc", &endpoints);
            Ok(())
        })
        .unwrap();
}

#[test]
fn configuration_text_never_panics() {
    let mut runner = runner(cases());
    let yaml = prop_oneof![
        text(),
        json_value().prop_map(|v| v.to_string()),
        (key(), json_value()).prop_map(|(k, v)| format!("{k}: {v}")),
        (
            prop::sample::select(vec![
                "http",
                "kafka",
                "retention",
                "saga",
                "relay",
                "auth",
                "views",
                "log"
            ]),
            key(),
            json_value()
        )
            .prop_map(|(section, k, v)| format!("{section}: {{{k}: {v}}}")),
    ];
    runner
        .run(&yaml, |yaml| {
            let _ = minos::Config::from_yaml(&yaml);
            Ok(())
        })
        .unwrap();
}

#[test]
fn access_tokens_never_panic_and_forgeries_fail() {
    let config = minos::auth::AuthConfig {
        secret: "a-secret-long-enough-for-hs256-0123456789".into(),
        ..Default::default()
    };
    let auth = minos::auth::Authenticator::from_config(&config)
        .unwrap()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let segment = prop_oneof![
        "[A-Za-z0-9_-]{0,40}",
        json_value().prop_map(|v| base64url(v.to_string().as_bytes())),
        Just(base64url(br#"{"alg":"none","typ":"JWT"}"#)),
        Just(base64url(br#"{"alg":"HS256","typ":"JWT"}"#)),
    ];
    let token = prop_oneof![
        text(),
        prop::collection::vec(segment, 1..5).prop_map(|parts| parts.join(".")),
    ];
    let mut runner = runner(cases());
    runner
        .run(&token, |token| {
            let verdict = rt.block_on(auth.verify(&token, 0));
            prop_assert!(
                verdict.is_err(),
                "a token nobody signed was accepted: {token}"
            );
            Ok(())
        })
        .unwrap();
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[root_entity]
pub struct Probe {
    pub name: String,
    pub size: Option<i64>,
}

pub struct ProbeCommands;

#[command_service]
impl ProbeCommands {
    #[enroute(rest = "POST /probes")]
    async fn create(&self, request: Request) -> Result<Response> {
        let probe: Probe = request.content()?;
        let created = Probe::create(probe).await?;
        Ok(Response::json(json!({"uuid": created.uuid()})))
    }

    #[enroute(rest = "GET /probes/{uuid}")]
    async fn get(&self, request: Request) -> Result<Response> {
        let probe = Probe::get(request.param("uuid")?).await?;
        Ok(Response::json(json!({"name": probe.name})))
    }

    #[enroute(rest = "GET /probes")]
    async fn list(&self, request: Request) -> Result<Response> {
        let limit: usize = match request.params().get("limit") {
            Some(_) => request.param("limit")?,
            None => 10,
        };
        let found = Probe::find(Condition::True).limit(limit).await?;
        Ok(Response::json(json!({"count": found.len()})))
    }
}

#[test]
fn http_requests_are_never_answered_500() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let service = rt
        .block_on(minos::testing::TestService::start(
            minos::testing::test_config("probes"),
        ))
        .unwrap();
    let segment = prop_oneof![
        Just("probes".to_owned()),
        Just("system".to_owned()),
        Just("saga".to_owned()),
        Just("dead-letters".to_owned()),
        Just(Uuid::nil().to_string()),
        "[a-zA-Z0-9%._~-]{0,12}",
        text().prop_map(|t| t.bytes().map(|b| format!("%{b:02X}")).collect::<String>()),
    ];
    let path = (
        prop::collection::vec(segment, 0..4),
        prop::option::of("[a-z=&%0-9-]{0,20}"),
    )
        .prop_map(|(segments, query)| {
            let mut path = format!("/{}", segments.join("/"));
            if let Some(query) = query {
                path.push('?');
                path.push_str(&query);
            }
            path
        });
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]);
    let body = prop::option::of(prop_oneof![
        json_text(),
        json_value().prop_map(|v| json!({"name": v, "size": v}).to_string()),
    ]);
    let mut runner = runner((cases() / 10).max(1));
    let client = service.http().clone();
    runner
        .run(&(method, path, body), |(method, path, body)| {
            let answer = rt.block_on(client.request(method, &path, body.clone()));
            // A request line past the server's header limit may be cut off without an answer.
            if answer.is_err() && path.len() > 8 * 1024 {
                return Ok(());
            }
            let answer =
                answer.map_err(|e| TestCaseError::fail(format!("{method} {path:.200}: {e}")))?;
            prop_assert!(
                answer.status != 500 && (200..600).contains(&answer.status),
                "{} {:.200} {:.200?} → {} {}",
                method,
                path,
                body,
                answer.status,
                answer.body
            );
            Ok(())
        })
        .unwrap();
    rt.block_on(service.stop());
}
