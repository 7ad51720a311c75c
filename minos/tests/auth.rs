//! Access tokens in services: routes declared `auth` or `roles`, the token matrix over HTTP, the
//! framework's own data endpoints, the verified user, tokens carried over the broker (commands and a
//! saga's remote step, verified as of when the request was accepted), and events naming their author.
#![allow(missing_docs, unreachable_pub)]

use std::sync::Mutex;
use std::time::Duration;

use minos::auth::{mint, AuthConfig, Caller, SigningKey, TokenSpec};
use minos::prelude::*;
use minos::testing::{eventually, test_config, TestService};
use minos::Config;

const SECRET: &str = "s3cret";

#[root_entity]
pub struct Order {
    pub item: String,
}

/// Authors of the `OrderCreated` events this process handled.
static AUTHORS: Mutex<Vec<Option<String>>> = Mutex::new(Vec::new());

pub struct Orders;

#[command_service]
impl Orders {
    #[enroute(rest = "GET /orders/open")]
    async fn open(&self, request: Request) -> Result<Response> {
        Ok(Response::json(json!({"user": request.user()})))
    }

    #[enroute(broker = "CreateOrder", rest = "POST /orders", auth)]
    async fn create(&self, request: Request) -> Result<Response> {
        let item: String = request.json()["item"].as_str().unwrap_or("").to_owned();
        let order = Order::create(Order { item }).await?;
        let roles = request.principal().map(|p| p.roles.clone());
        Ok(Response::json(
            json!({"uuid": order.uuid(), "user": request.user(), "roles": roles}),
        ))
    }

    #[enroute(rest = "DELETE /orders/{uuid}", roles = ["admin", "manager"])]
    async fn delete(&self, request: Request) -> Result<Response> {
        Ok(Response::json(
            json!({"deleted": request.param::<Uuid>("uuid")?}),
        ))
    }

    #[enroute(rest = "POST /orders/via-saga", auth)]
    async fn via_saga(&self, request: Request) -> Result<Response> {
        let item = request.json()["item"].clone();
        let execution = self
            .sagas()?
            .run(&REMOTE_ORDER_SAGA, SagaContext::new().with("item", item))
            .await?;
        Ok(Response::json(execution.summary()))
    }

    #[enroute(rest = "POST /orders/forward", auth)]
    async fn forward(&self, request: Request) -> Result<Response> {
        // A command sent from a handler carries the caller's token.
        let reply = self
            .context()?
            .client()
            .send("CreateOrder", request.json())
            .await?;
        Ok(Response::json(
            json!({"status": reply.status, "content": reply.content}),
        ))
    }
}

pub struct OrderEvents;

#[query_service]
impl OrderEvents {
    #[enroute(event = "OrderCreated")]
    async fn created(&self, request: Request) -> Result<()> {
        AUTHORS
            .lock()
            .unwrap()
            .push(request.user().map(str::to_owned));
        Ok(())
    }
}

async fn send_create(ctx: SagaContext) -> Result<SagaRequest> {
    Ok(SagaRequest::new(
        "CreateOrder",
        json!({"item": ctx.get::<String>("item")?}),
    ))
}

async fn created(mut ctx: SagaContext, reply: SagaResponse) -> Result<SagaContext> {
    let content: Value = reply.content()?;
    ctx.set("created_by", &content["user"]);
    Ok(ctx)
}

async fn refused(_ctx: SagaContext, reply: SagaResponse) -> Result<SagaContext> {
    Err(Error::with_status(reply.status, reply.message()))
}

minos::saga! {
    pub static REMOTE_ORDER_SAGA = Saga::builder()
        .remote_step(send_create)
        .on_success(created)
        .on_error(refused)
        .commit();
}

fn auth_config() -> AuthConfig {
    AuthConfig {
        secret: SECRET.into(),
        issuer: "shop".into(),
        ..AuthConfig::default()
    }
}

fn secured(name: &str) -> Config {
    let mut config = test_config(name);
    config.auth = auth_config();
    config
}

fn token(subject: &str, roles: &[&str]) -> String {
    let mut spec = TokenSpec::for_config(&auth_config());
    spec.subject = subject.into();
    spec.roles = roles.iter().map(|r| (*r).to_owned()).collect();
    mint(&SigningKey::Secret(SECRET.into()), &spec).unwrap()
}

#[tokio::test]
async fn without_an_auth_section_routes_are_open_and_the_user_header_is_read() {
    let service = TestService::start(test_config("orders-dev")).await.unwrap();
    let answer = service
        .http()
        .post("/orders", json!({"item": "pen"}))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = service
        .http()
        .clone()
        .with_header("user", "dev")
        .get("/orders/open")
        .await
        .unwrap();
    assert_eq!(answer.json()["user"], json!("dev"));
    service.stop().await;
}

#[tokio::test]
async fn the_token_matrix_over_http() {
    let service = TestService::start(secured("orders-http")).await.unwrap();
    let http = service.http().clone();

    // An `auth` route: no token, a bad one, a token for another issuer → 401 with WWW-Authenticate.
    let answer = http.post("/orders", json!({"item": "pen"})).await.unwrap();
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(answer.json()["status"], json!(401));
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer realm=\"minos\"")
    );
    let forged = token("alice", &[]).replace('.', ".x");
    let answer = http
        .clone()
        .with_token(&forged)
        .post("/orders", json!({"item": "pen"}))
        .await
        .unwrap();
    assert_eq!(answer.status, 401);
    assert!(answer
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    let mut elsewhere = TokenSpec::for_config(&auth_config());
    elsewhere.subject = "alice".into();
    elsewhere.issuer = "evil".into();
    let foreign = mint(&SigningKey::Secret(SECRET.into()), &elsewhere).unwrap();
    let answer = http
        .clone()
        .with_token(foreign)
        .post("/orders", json!({"item": "pen"}))
        .await
        .unwrap();
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(answer.body.contains("issuer"), "{}", answer.body);

    // A valid token: the user is its subject, whatever `user` header the client sends.
    let alice = http
        .clone()
        .with_token(token("alice", &["clerk"]))
        .with_header("user", "mallory");
    let answer = alice.post("/orders", json!({"item": "pen"})).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["user"], json!("alice"));
    assert_eq!(answer.json()["roles"], json!(["clerk"]));
    let uuid = answer.json()["uuid"].as_str().unwrap().to_owned();

    // An open route: no token is fine, a raw `user` header is ignored, a bad token is still refused.
    let answer = http
        .clone()
        .with_header("user", "mallory")
        .get("/orders/open")
        .await
        .unwrap();
    assert_eq!(
        (answer.status, answer.json()["user"].clone()),
        (200, Value::Null)
    );
    let answer = http
        .clone()
        .with_token("not.a.token")
        .get("/orders/open")
        .await
        .unwrap();
    assert_eq!(answer.status, 401);

    // A roles route: 403 without one of the roles, 200 with one.
    let path = format!("/orders/{uuid}");
    let answer = alice.delete(&path).await.unwrap();
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("admin, manager"), "{}", answer.body);
    assert!(answer
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
    let manager = http.clone().with_token(token("bob", &["manager"]));
    assert_eq!(manager.delete(&path).await.unwrap().status, 200);
    assert_eq!(http.delete(&path).await.unwrap().status, 401);

    // The framework's data endpoints need the admin role; health stays open.
    for path in ["/saga/executions", "/spec/openapi", "/spec/asyncapi"] {
        assert_eq!(http.get(path).await.unwrap().status, 401, "{path}");
        assert_eq!(alice.get(path).await.unwrap().status, 403, "{path}");
        let admin = http.clone().with_token(token("root", &["admin"]));
        assert_eq!(admin.get(path).await.unwrap().status, 200, "{path}");
    }
    // The OpenAPI document says which operations need a token, and which roles.
    let admin = http.clone().with_token(token("root", &["admin"]));
    let spec = admin.get("/spec/openapi").await.unwrap().json();
    assert_eq!(
        spec["paths"]["/orders"]["post"]["security"],
        json!([{"bearer": []}])
    );
    assert_eq!(
        spec["paths"]["/orders/{uuid}"]["delete"]["security"],
        json!([{"bearer": ["admin", "manager"]}])
    );
    assert!(spec["paths"]["/orders/open"]["get"]
        .get("security")
        .is_none());
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        json!("bearer")
    );
    assert_eq!(http.get("/system/health").await.unwrap().status, 200);
    assert_eq!(http.get("/system/live").await.unwrap().status, 200);
    service.stop().await;
}

#[tokio::test]
async fn broker_commands_carry_and_verify_the_callers_token() {
    let service = TestService::start(secured("orders-broker")).await.unwrap();

    // Without a token, a command whose handler needs one is refused with a 401 reply.
    let reply = service
        .send("CreateOrder", json!({"item": "pen"}))
        .await
        .unwrap();
    assert_eq!(reply.status, 401, "{:?}", reply.content);

    // Sent for a caller, the command carries the token and runs as its subject.
    let caller = Caller {
        token: token("carol", &[]),
        subject: "carol".into(),
        accepted_at: minos::chrono::Utc::now().timestamp(),
    };
    let reply = caller
        .clone()
        .scope(service.send("CreateOrder", json!({"item": "pen"})))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.content);
    assert_eq!(reply.content["user"], json!("carol"));

    // A token that expired after the request that carries it was accepted still counts.
    let now = minos::chrono::Utc::now().timestamp();
    let mut spec = TokenSpec::for_config(&auth_config());
    spec.subject = "dave".into();
    spec.lifetime = Duration::from_secs(1);
    let short = mint(&SigningKey::Secret(SECRET.into()), &spec).unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = Caller {
        token: short.clone(),
        subject: "dave".into(),
        accepted_at: now,
    };
    // A leeway of zero makes the expiry exact.
    let strict = {
        let mut config = secured("orders-strict");
        config.auth.leeway_secs = 0;
        TestService::start(config).await.unwrap()
    };
    let reply = late
        .scope(strict.send("CreateOrder", json!({"item": "ink"})))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.content);
    // The same token, accepted now, is refused.
    let answer = strict
        .http()
        .clone()
        .with_token(&short)
        .post("/orders", json!({"item": "ink"}))
        .await
        .unwrap();
    assert_eq!(answer.status, 401, "{}", answer.body);

    // A handler's own commands carry its caller's token.
    let answer = service
        .http()
        .clone()
        .with_token(token("erin", &[]))
        .post("/orders/forward", json!({"item": "cup"}))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["status"], json!(200), "{}", answer.body);
    assert_eq!(answer.json()["content"]["user"], json!("erin"));
    strict.stop().await;
    service.stop().await;
}

#[tokio::test]
async fn a_sagas_remote_steps_carry_the_token_of_the_request_that_started_it() {
    let service = TestService::start(secured("orders-saga")).await.unwrap();
    let admin = service
        .http()
        .clone()
        .with_token(token("frank", &["admin"]));
    let answer = admin
        .post("/orders/via-saga", json!({"item": "lamp"}))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let uuid = answer.json()["uuid"].as_str().unwrap().to_owned();
    let path = format!("/saga/executions/{uuid}");
    eventually("the saga finishes", Duration::from_secs(10), || {
        let (admin, path) = (admin.clone(), path.clone());
        async move { admin.get(&path).await.unwrap().json()["status"] != json!("paused") }
    })
    .await;
    let execution = admin.get(&path).await.unwrap().json();
    assert_eq!(execution["status"], json!("finished"), "{execution}");
    assert_eq!(execution["context"]["created_by"], json!("frank"));
    service.stop().await;
}

#[tokio::test]
async fn published_events_name_who_made_the_change() {
    let service = TestService::start(secured("orders-events")).await.unwrap();
    let answer = service
        .http()
        .clone()
        .with_token(token("grace", &[]))
        .post("/orders", json!({"item": "desk"}))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    eventually("the event is handled", Duration::from_secs(10), || async {
        AUTHORS.lock().unwrap().contains(&Some("grace".to_owned()))
    })
    .await;
    service.stop().await;
}
