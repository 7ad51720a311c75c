//! Two services in one process over the in-process broker: a saga with a local step, a remote step and
//! a final local step; success, a remote refusal, a local failure after the remote write, a timeout,
//! conditional steps, and the status endpoints.
#![allow(missing_docs, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use minos::messaging::MemoryBroker;
use minos::prelude::*;
use minos::saga::{ExecutionStatus, SagaManager};
use minos::testing::{TestClient as Client, TestResponse as Answer};
use minos::{Config, Launcher, RunningService};

#[root_entity]
pub struct Foo {
    pub bar: String,
    pub foobar: Option<Ref<FooBar>>,
}

#[root_entity]
pub struct FooBar {
    pub something: String,
}

static SEEN: Mutex<Vec<Value>> = Mutex::new(Vec::new());
static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());
use minos::serde_json::Value;

pub struct FooCommands;

#[command_service]
impl FooCommands {
    #[enroute(rest = "POST /foos")]
    async fn create_foo(&self, request: Request) -> Result<Response> {
        let bar: String = request.json()["bar"].as_str().unwrap_or("").to_owned();
        let foo = Foo::create(Foo { bar, foobar: None }).await?;
        Ok(Response::json(json!({"uuid": foo.uuid()})))
    }

    #[enroute(rest = "GET /foos/{uuid}")]
    async fn get_foo(&self, request: Request) -> Result<Response> {
        Ok(Response::json(Foo::get(request.param("uuid")?).await?))
    }

    #[enroute(rest = "POST /foos/add-foobar")]
    async fn add_foobar(&self, request: Request) -> Result<Response> {
        let context = SagaContext::from(request.content::<Value>()?);
        let execution = self.sagas()?.run(&ADD_FOOBAR_SAGA, context).await?;
        Ok(Response::json(execution.summary()))
    }
}

pub struct FooQueries;

#[query_service]
impl FooQueries {
    #[enroute(event = "FooUpdated.foobar")]
    async fn foobar_updated(&self, request: Request) -> Result<()> {
        SEEN.lock().unwrap().push(request.json().clone());
        Ok(())
    }
}

pub struct FooBarCommands;

#[command_service]
impl FooBarCommands {
    #[enroute(broker = "CreateFooBar")]
    async fn create_foobar(&self, request: Request) -> Result<Response> {
        let something: String = request.content::<Value>()?["text"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        match something.as_str() {
            "" => return Err(Error::bad_request("`text` is empty")),
            "crash" => return Err(Error::with_status(500, "the foobar store is on fire")),
            "slow" => tokio::time::sleep(Duration::from_millis(800)).await,
            _ => {}
        }
        let foobar = FooBar::create(FooBar { something }).await?;
        Ok(Response::json(foobar.uuid()))
    }

    /// Runs a saga of its own inside the caller's saga transaction (nested).
    #[enroute(broker = "CreateFooBarBySaga")]
    async fn create_by_saga(&self, request: Request) -> Result<Response> {
        let context = SagaContext::from(request.content::<Value>()?);
        let execution = self.sagas()?.run(&INNER_SAGA, context).await?;
        if execution.status != minos::saga::ExecutionStatus::Finished {
            return Err(Error::bad_request(format!(
                "inner saga: {:?}",
                execution.error
            )));
        }
        Ok(Response::json(
            execution.context.get::<Uuid>("foobar_uuid")?,
        ))
    }

    /// Changes an existing foobar (a write a reservation must check).
    #[enroute(broker = "RenameFooBar")]
    async fn rename_foobar(&self, request: Request) -> Result<Response> {
        let content = request.content::<Value>()?;
        let uuid: Uuid = minos::serde_json::from_value(content["uuid"].clone())
            .map_err(|e| Error::bad_request(format!("`uuid`: {e}")))?;
        let mut foobar = FooBar::get(uuid).await?;
        foobar.something = content["text"].as_str().unwrap_or("").to_owned();
        foobar.save().await?;
        Ok(Response::json(foobar.uuid()))
    }

    /// A side effect outside any transaction (e.g. an email): undone only by a compensation.
    #[enroute(broker = "Note")]
    async fn note(&self, request: Request) -> Result<Response> {
        NOTES
            .lock()
            .unwrap()
            .push(format!("note {}", request.json()["n"]));
        Ok(Response::empty())
    }

    #[enroute(broker = "Unnote")]
    async fn unnote(&self, request: Request) -> Result<Response> {
        NOTES
            .lock()
            .unwrap()
            .push(format!("unnote {}", request.json()["n"]));
        Ok(Response::empty())
    }

    #[enroute(rest = "GET /foobars")]
    async fn list_foobars(&self, _request: Request) -> Result<Response> {
        Ok(Response::json(FooBar::get_all().await?))
    }
}

async fn check_foo(mut ctx: SagaContext) -> Result<SagaContext> {
    let foo = Foo::get(ctx.get("uuid")?).await?;
    ctx.set("bar_before", &foo.bar);
    Ok(ctx)
}

async fn forget_check(ctx: SagaContext) -> Result<SagaContext> {
    Ok(ctx.with("compensated", true))
}

async fn create_foobar(ctx: SagaContext) -> Result<SagaRequest> {
    let text: String = ctx.get("something")?;
    Ok(SagaRequest::new(
        "CreateFooBar",
        json!({"number": 56, "text": text}),
    ))
}

async fn foobar_created(mut ctx: SagaContext, reply: SagaResponse) -> Result<SagaContext> {
    ctx.set("foobar_uuid", reply.content::<Uuid>()?);
    Ok(ctx)
}

async fn foobar_refused(_ctx: SagaContext, reply: SagaResponse) -> Result<SagaContext> {
    Err(Error::bad_request(format!(
        "the foobar could not be created: {}",
        reply.message()
    )))
}

async fn update_foo(ctx: SagaContext) -> Result<SagaContext> {
    if ctx.contains("fail_locally") {
        return Err(Error::bad_request("asked to fail after the remote step"));
    }
    let mut foo = Foo::get(ctx.get("uuid")?).await?;
    foo.foobar = Some(Ref::new(ctx.get("foobar_uuid")?));
    foo.save().await?;
    Ok(ctx)
}

minos::saga! {
    pub static ADD_FOOBAR_SAGA = Saga::builder()
        .local_step(check_foo)
        .on_failure(forget_check)
        .remote_step(create_foobar)
        .on_success(foobar_created)
        .on_error(foobar_refused)
        .local_step(update_foo)
        .commit();
}

async fn mark(label: &'static str, ctx: SagaContext) -> Result<SagaContext> {
    let mut path: Vec<String> = ctx.get("path").unwrap_or_default();
    path.push(label.to_owned());
    Ok(ctx.with("path", path))
}

minos::saga! {
    pub static BRANCHING_SAGA = Saga::builder()
        .local_step(|ctx| mark("start", ctx))
        .conditional_step(
            Conditional::new()
                .if_then(
                    |ctx| ctx.get::<i64>("n").unwrap_or(0) > 10,
                    Saga::builder().local_step(|ctx| mark("big", ctx)),
                )
                .if_then(
                    |ctx| ctx.get::<i64>("n").unwrap_or(0) > 0,
                    Saga::builder()
                        .local_step(|ctx| mark("small", ctx))
                        .local_step(|ctx| mark("small-2", ctx)),
                )
                .else_then(Saga::builder().local_step(|ctx| mark("none", ctx))),
        )
        .local_step(|ctx| mark("end", ctx))
        .commit();
}

async fn undo(label: &'static str, ctx: SagaContext) -> Result<SagaContext> {
    let mut undone: Vec<String> = ctx.get("undone").unwrap_or_default();
    undone.push(label.to_owned());
    Ok(ctx.with("undone", undone))
}

async fn send_note(ctx: SagaContext) -> Result<SagaRequest> {
    Ok(SagaRequest::new("Note", json!({"n": ctx.get::<i64>("n")?})))
}

async fn send_unnote(ctx: SagaContext) -> Result<SagaRequest> {
    Ok(SagaRequest::new(
        "Unnote",
        json!({"n": ctx.get::<i64>("n")?}),
    ))
}

async fn fail(_ctx: SagaContext) -> Result<SagaContext> {
    Err(Error::bad_request("the last step fails"))
}

minos::saga! {
    pub static COMPENSATED_SAGA = Saga::builder()
        .local_step(|ctx| mark("a", ctx))
        .on_failure(|ctx| undo("a", ctx))
        .remote_step(send_note)
        .on_failure_send(send_unnote)
        .local_step(|ctx| mark("b", ctx))
        .on_failure(|ctx| undo("b", ctx))
        .local_step(fail)
        .commit();
}

async fn inner_create(ctx: SagaContext) -> Result<SagaContext> {
    let something: String = ctx.get("text")?;
    let foobar = FooBar::create(FooBar { something }).await?;
    Ok(ctx.with("foobar_uuid", foobar.uuid()))
}

minos::saga! {
    pub static INNER_SAGA = Saga::builder().local_step(inner_create).commit();
}

async fn create_by_saga(ctx: SagaContext) -> Result<SagaRequest> {
    Ok(SagaRequest::new(
        "CreateFooBarBySaga",
        json!({"text": ctx.get::<String>("something")?}),
    ))
}

minos::saga! {
    pub static OUTER_SAGA = Saga::builder()
        .remote_step(create_by_saga)
        .on_success(foobar_created)
        .local_step(update_foo)
        .commit();
}

async fn rename_foobar(ctx: SagaContext) -> Result<SagaRequest> {
    Ok(SagaRequest::new(
        "RenameFooBar",
        json!({"uuid": ctx.get::<Uuid>("foobar_uuid")?, "text": ctx.get::<String>("text")?}),
    ))
}

minos::saga! {
    pub static RENAME_SAGA = Saga::builder().remote_step(rename_foobar).commit();
}

/// `update_foo`, then a write to the same foo straight to the store (outside the saga's transaction),
/// as another request would make it before the saga commits.
async fn update_foo_then_race(ctx: SagaContext) -> Result<SagaContext> {
    let ctx = update_foo(ctx).await?;
    let uuid: Uuid = ctx.get("uuid")?;
    let repository = Repository::current()?;
    tokio::spawn(async move {
        let mut foo = repository.get::<Foo>(uuid).await?;
        foo.bar = "raced".into();
        repository.save(&mut foo).await
    })
    .await
    .map_err(|e| Error::bad_request(e.to_string()))??;
    Ok(ctx)
}

minos::saga! {
    pub static RACED_SAGA = Saga::builder()
        .remote_step(create_foobar)
        .on_success(foobar_created)
        .local_step(update_foo_then_race)
        .commit();
}

fn config(name: &str, services: &[&str]) -> Config {
    let mut config = Config::from_yaml("").unwrap();
    config.name = name.into();
    config.storage = "memory".into();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.services = services.iter().map(|s| s.to_string()).collect();
    config.saga.timeout_ms = 5_000;
    config.saga.tidy_interval_ms = 50;
    config
}

struct Pair {
    foo: RunningService,
    foobar: RunningService,
    foo_http: Client,
    foobar_http: Client,
}

async fn start(timeout_ms: u64) -> Pair {
    start_with(timeout_ms, "memory").await
}

/// The pair with foo's store at `foo_storage`.
async fn start_with(timeout_ms: u64, foo_storage: &str) -> Pair {
    let broker: minos::messaging::SharedBroker = Arc::new(MemoryBroker::new());
    let foobar = Launcher::with_config(config("foobar", &["FooBarCommands"]))
        .configure(|c| c.root_entities = vec!["FooBar".into()])
        .broker(Arc::clone(&broker))
        .start()
        .await
        .unwrap();
    let foo = Launcher::with_config(config("foo", &["FooCommands", "FooQueries"]))
        .configure(|c| {
            c.saga.timeout_ms = timeout_ms;
            c.root_entities = vec!["Foo".into()];
            c.storage = foo_storage.into();
        })
        .broker(broker)
        .start()
        .await
        .unwrap();
    Pair {
        foo_http: Client::new(format!("http://{}", foo.addr())),
        foobar_http: Client::new(format!("http://{}", foobar.addr())),
        foo,
        foobar,
    }
}

async fn call(client: &Client, method: &'static str, path: &str, body: Option<Value>) -> Answer {
    client
        .request(method, path, body.map(|b| b.to_string()))
        .await
        .unwrap()
}

async fn create_foo(pair: &Pair) -> Uuid {
    let created = call(&pair.foo_http, "POST", "/foos", Some(json!({"bar": "b"}))).await;
    assert_eq!(created.status, 200, "{}", created.body);
    created.json()["uuid"].as_str().unwrap().parse().unwrap()
}

async fn run_saga(pair: &Pair, content: Value) -> minos::saga::SagaExecution {
    let started = call(&pair.foo_http, "POST", "/foos/add-foobar", Some(content)).await;
    assert_eq!(started.status, 200, "{}", started.body);
    let uuid: Uuid = started.json()["uuid"].as_str().unwrap().parse().unwrap();
    SagaManager::new(pair.foo.context().clone())
        .wait(uuid, Duration::from_secs(10))
        .await
        .unwrap()
}

/// The status of transaction `uuid` in foo and in foobar.
async fn statuses(pair: &Pair, uuid: Uuid) -> Vec<TransactionStatus> {
    let mut statuses = Vec::new();
    for service in [&pair.foo, &pair.foobar] {
        let store = service.context().repository().store().clone();
        let entry = store.transaction(uuid).await.unwrap();
        statuses.push(entry.expect("an entry in each participant").status);
    }
    statuses
}

/// Runs `saga` in foo with `context` and waits for it to end.
async fn run_in_foo(
    pair: &Pair,
    saga: &minos::saga::SagaDefinition,
    context: SagaContext,
) -> minos::saga::SagaExecution {
    let manager = SagaManager::new(pair.foo.context().clone());
    let started = manager.run(saga, context).await.unwrap();
    manager
        .wait(started.uuid, Duration::from_secs(10))
        .await
        .unwrap()
}

async fn foobars(pair: &Pair) -> Vec<Value> {
    let listed = call(&pair.foobar_http, "GET", "/foobars", None).await;
    listed.json().as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_commits_both_services_and_publishes_at_the_end() {
    let pair = start(5_000).await;
    let foo = create_foo(&pair).await;
    let execution = run_saga(&pair, json!({"uuid": foo, "something": "hello"})).await;
    assert_eq!(
        execution.status,
        ExecutionStatus::Finished,
        "{:?}",
        execution.error
    );
    assert!(execution.related_services.contains("foobar"));
    let foobar_uuid: Uuid = execution.context.get("foobar_uuid").unwrap();
    // Both writes are committed: the Foo references the FooBar, which the foobar service stores.
    let read = call(&pair.foo_http, "GET", &format!("/foos/{foo}"), None).await;
    assert_eq!(read.json()["foobar"], json!(foobar_uuid.to_string()));
    assert_eq!(read.json()["version"], json!(2));
    let stored = foobars(&pair).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["something"], json!("hello"));
    // The domain event was published at commit and handled.
    for _ in 0..200 {
        if SEEN
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["uuid"] == json!(foo.to_string()))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(SEEN
        .lock()
        .unwrap()
        .iter()
        .any(|e| e["uuid"] == json!(foo.to_string())));
    // The status endpoint and the list.
    let status = call(
        &pair.foo_http,
        "GET",
        &format!("/saga/executions/{}", execution.uuid),
        None,
    )
    .await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["status"], json!("finished"));
    assert_eq!(status.json()["context"]["something"], json!("hello"));
    let listed = call(
        &pair.foo_http,
        "GET",
        "/saga/executions?status=finished",
        None,
    )
    .await;
    assert!(listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["uuid"] == json!(execution.uuid.to_string())));
    let bad = call(
        &pair.foo_http,
        "GET",
        "/saga/executions?status=sleeping",
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
    let unknown = call(
        &pair.foo_http,
        "GET",
        &format!("/saga/executions/{}", Uuid::new_v4()),
        None,
    )
    .await;
    assert_eq!(unknown.status, 404);
    pair.foo.stop().await;
    pair.foobar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_remote_step_compensates_and_leaves_nothing() {
    let pair = start(5_000).await;
    let foo = create_foo(&pair).await;
    let execution = run_saga(&pair, json!({"uuid": foo, "something": ""})).await;
    assert_eq!(execution.status, ExecutionStatus::Errored);
    let error = execution.error.clone().unwrap();
    assert!(
        error.contains("could not be created") && error.contains("`text` is empty"),
        "{error}"
    );
    assert!(execution.context.get::<bool>("compensated").unwrap());
    let read = call(&pair.foo_http, "GET", &format!("/foos/{foo}"), None).await;
    assert_eq!(read.json()["foobar"], Value::Null);
    assert!(foobars(&pair).await.is_empty());

    // A 5xx reply fails the step without on_error.
    let execution = run_saga(&pair, json!({"uuid": foo, "something": "crash"})).await;
    assert_eq!(execution.status, ExecutionStatus::Errored);
    assert!(execution.error.unwrap().contains("on fire"));
    pair.foo.stop().await;
    pair.foobar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_failure_after_the_remote_write_rejects_it_in_the_other_service() {
    let pair = start(5_000).await;
    let foo = create_foo(&pair).await;
    let execution = run_saga(
        &pair,
        json!({"uuid": foo, "something": "kept?", "fail_locally": true}),
    )
    .await;
    assert_eq!(execution.status, ExecutionStatus::Errored);
    assert!(execution.related_services.contains("foobar"));
    // The FooBar was written inside the saga's transaction in foobar, then rejected: never visible.
    assert!(foobars(&pair).await.is_empty());
    let transaction = pair
        .foobar
        .context()
        .repository()
        .store()
        .transaction(execution.uuid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(transaction.status.as_str(), "rejected");
    assert!(execution.context.get::<bool>("compensated").unwrap());
    pair.foo.stop().await;
    pair.foobar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_waiting_too_long_times_out_and_compensates() {
    let pair = start(300).await;
    let foo = create_foo(&pair).await;
    let execution = run_saga(&pair, json!({"uuid": foo, "something": "slow"})).await;
    assert_eq!(execution.status, ExecutionStatus::Errored);
    assert!(
        execution.error.clone().unwrap().contains("timed out"),
        "{:?}",
        execution.error
    );
    assert!(execution.context.get::<bool>("compensated").unwrap());
    // The late reply is ignored, and the late write in foobar was rejected.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let again = SagaManager::new(pair.foo.context().clone())
        .get(execution.uuid)
        .await
        .unwrap();
    assert_eq!(again.status, ExecutionStatus::Errored);
    assert!(foobars(&pair).await.is_empty());
    pair.foo.stop().await;
    pair.foobar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_steps_take_the_first_true_branch() {
    let pair = start(5_000).await;
    let manager = SagaManager::new(pair.foo.context().clone());
    for (n, expected) in [
        (50, vec!["start", "big", "end"]),
        (5, vec!["start", "small", "small-2", "end"]),
        (0, vec!["start", "none", "end"]),
    ] {
        let execution = manager
            .run(&BRANCHING_SAGA, SagaContext::new().with("n", n))
            .await
            .unwrap();
        assert_eq!(
            execution.status,
            ExecutionStatus::Finished,
            "{:?}",
            execution.error
        );
        assert_eq!(
            execution.context.get::<Vec<String>>("path").unwrap(),
            expected
        );
    }
    pair.foo.stop().await;
    pair.foobar.stop().await;
}

#[test]
fn invalid_definitions_are_refused_when_built() {
    async fn step(ctx: SagaContext) -> Result<SagaContext> {
        Ok(ctx)
    }
    async fn reply(ctx: SagaContext, _r: SagaResponse) -> Result<SagaContext> {
        Ok(ctx)
    }
    let empty = Saga::builder().commit().unwrap_err();
    assert!(empty.to_string().contains("at least one step"), "{empty}");
    let misplaced = Saga::builder()
        .local_step(step)
        .on_success(reply)
        .commit()
        .unwrap_err();
    assert!(
        misplaced
            .to_string()
            .contains("`on_success` follows only a `remote_step`"),
        "{misplaced}"
    );
    let twice = Saga::builder()
        .local_step(step)
        .on_failure(step)
        .on_failure(step)
        .commit()
        .unwrap_err();
    assert!(twice.to_string().contains("set twice"), "{twice}");
    let empty_branch = Saga::builder()
        .conditional_step(Conditional::new().if_then(|_| true, Saga::builder()))
        .commit()
        .unwrap_err();
    assert!(
        empty_branch.to_string().contains("branch 1"),
        "{empty_branch}"
    );
    let no_branch = Saga::builder()
        .conditional_step(Conditional::new())
        .commit()
        .unwrap_err();
    assert!(
        no_branch.to_string().contains("at least one `if_then("),
        "{no_branch}"
    );
    assert!(ADD_FOOBAR_SAGA.saga().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensations_run_newest_first_remote_ones_as_requests() {
    let pair = start(5_000).await;
    let execution = run_in_foo(&pair, &COMPENSATED_SAGA, SagaContext::new().with("n", 7)).await;
    assert_eq!(execution.status, ExecutionStatus::Errored);
    assert!(execution
        .error
        .clone()
        .unwrap()
        .contains("the last step fails"));
    assert_eq!(
        execution.context.get::<Vec<String>>("path").unwrap(),
        ["a", "b"]
    );
    // b, then the remote step's compensation request, then a.
    assert_eq!(
        execution.context.get::<Vec<String>>("undone").unwrap(),
        ["b", "a"]
    );
    let notes = NOTES.lock().unwrap().clone();
    assert_eq!(notes, ["note 7", "unnote 7"]);
    // Running a finished or errored execution's reply again changes nothing.
    let again = SagaManager::new(pair.foo.context().clone())
        .get(execution.uuid)
        .await
        .unwrap();
    assert_eq!(again, execution);
    pair.foo.stop().await;
    pair.foobar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_answers_its_transaction_commands() {
    let pair = start(5_000).await;
    let client = pair.foo.context().client().clone();
    let bad = client
        .send("_ReserveFoobarTransaction", "not-a-uuid")
        .await
        .unwrap();
    assert_eq!(bad.status, 400, "{}", bad.content);
    assert!(bad.content["error"]
        .as_str()
        .unwrap()
        .contains("not a transaction uuid"));
    // A transaction nobody wrote in here: answered at once, and the outcome is kept.
    let uuid = Uuid::new_v4();
    let reserved = client
        .send("_ReserveFoobarTransaction", uuid.to_string())
        .await
        .unwrap();
    assert_eq!(
        (reserved.status, &reserved.content["status"]),
        (200, &json!("reserved"))
    );
    let committed = client
        .send("_CommitFoobarTransaction", json!({"uuid": uuid}))
        .await
        .unwrap();
    assert_eq!(committed.content["status"], json!("committed"));
    let again = client
        .send("_CommitFoobarTransaction", uuid.to_string())
        .await
        .unwrap();
    assert_eq!(again.content["status"], json!("committed"));
    let refused = client
        .send("_RejectFoobarTransaction", uuid.to_string())
        .await
        .unwrap();
    assert_eq!(refused.status, 409, "{}", refused.content);
    let other = Uuid::new_v4();
    let rejected = client
        .send("_RejectFoobarTransaction", other.to_string())
        .await
        .unwrap();
    assert_eq!(rejected.content["status"], json!("rejected"));
    // foo answers its own.
    let own = client
        .send("_ReserveFooTransaction", Uuid::new_v4().to_string())
        .await
        .unwrap();
    assert_eq!(own.status, 200);
    pair.foo.stop().await;
    pair.foobar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_saga_command_is_held_once() {
    let pair = start(5_000).await;
    let transaction = Uuid::new_v4();
    let mut message =
        minos::BrokerMessage::new("CreateFooBar", json!({"number": 1, "text": "once"}));
    message
        .payload
        .headers
        .insert("transactions".into(), transaction.to_string());
    let broker = pair.foo.context().broker().clone();
    broker.publish(message.clone()).await.unwrap();
    broker.publish(message).await.unwrap();
    let store = pair.foobar.context().repository().store().clone();
    for _ in 0..100 {
        if !store.held(transaction).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = store.held(transaction).await.unwrap();
    assert_eq!(held.len(), 1, "the second delivery was skipped");
    assert_eq!(held[0].0.name, "FooBar");
    // Held, not stored: nothing visible until the transaction commits.
    assert!(foobars(&pair).await.is_empty());
    pair.foobar
        .context()
        .repository()
        .transactions()
        .commit(transaction)
        .await
        .unwrap();
    assert_eq!(foobars(&pair).await.len(), 1);
    pair.foo.stop().await;
    pair.foobar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_run_by_a_saga_step_commits_into_the_outer_transaction() {
    let pair = start(5_000).await;
    let foo = create_foo(&pair).await;
    let context = SagaContext::new()
        .with("uuid", foo)
        .with("something", "nested");
    let execution = run_in_foo(&pair, &OUTER_SAGA, context).await;
    assert_eq!(
        execution.status,
        ExecutionStatus::Finished,
        "{:?}",
        execution.error
    );
    let stored = foobars(&pair).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["something"], json!("nested"));
    // The inner execution ran in foobar, nested in the outer transaction, and finished first.
    let inner = SagaManager::new(pair.foobar.context().clone())
        .list(Some(ExecutionStatus::Finished), 10)
        .await
        .unwrap();
    assert_eq!(inner.len(), 1);
    assert_eq!(inner[0].inherited, [execution.uuid]);
    let read = call(&pair.foo_http, "GET", &format!("/foos/{foo}"), None).await;
    assert_eq!(read.json()["foobar"], json!(stored[0]["uuid"]));
    pair.foo.stop().await;
    pair.foobar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_interrupted_mid_step_is_resumed() {
    use minos::saga::SagaExecution;
    use minos::store::ExecutionRecord;
    let pair = start(5_000).await;
    let long_ago = minos::chrono::Utc::now() - minos::chrono::Duration::hours(1);
    // As a process killed during the conditional step would have left it.
    let interrupted = SagaExecution {
        uuid: Uuid::new_v4(),
        saga: "BRANCHING_SAGA".into(),
        status: ExecutionStatus::Running,
        context: SagaContext::new().with("n", 50).with("path", ["start"]),
        cursor: vec![1],
        done: vec![vec![0]],
        waiting: None,
        related_services: Default::default(),
        one_phase: Default::default(),
        inherited: Vec::new(),
        user: None,
        caller: None,
        trace: None,
        error: None,
        deadline: minos::chrono::Utc::now() + minos::chrono::Duration::hours(1),
        created_at: long_ago,
        updated_at: long_ago,
    };
    let forgotten = SagaExecution {
        uuid: Uuid::new_v4(),
        saga: "NO_LONGER_HERE".into(),
        ..interrupted.clone()
    };
    let store = pair.foo.context().repository().store().clone();
    for execution in [&interrupted, &forgotten] {
        store
            .save_execution(&ExecutionRecord {
                uuid: execution.uuid,
                saga: execution.saga.clone(),
                status: ExecutionStatus::Running,
                data: minos::serde_json::to_value(execution).unwrap(),
                created_at: long_ago,
                updated_at: long_ago,
            })
            .await
            .unwrap();
    }
    let manager = SagaManager::new(pair.foo.context().clone());
    // The service's periodic job picks both up.
    let resumed = manager
        .wait(interrupted.uuid, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        resumed.status,
        ExecutionStatus::Finished,
        "{:?}",
        resumed.error
    );
    assert_eq!(
        resumed.context.get::<Vec<String>>("path").unwrap(),
        ["start", "big", "end"]
    );
    let abandoned = manager
        .wait(forgotten.uuid, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(abandoned.status, ExecutionStatus::Errored);
    assert!(abandoned.error.unwrap().contains("not registered"));
    pair.foo.stop().await;
    pair.foobar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_answers_snapshot_queries_only_for_its_own_root_entities() {
    let pair = start(5_000).await;
    let foobar = pair
        .foobar
        .context()
        .clone()
        .scope(FooBar::create(FooBar {
            something: "mine".into(),
        }))
        .await
        .unwrap();
    let foo = create_foo(&pair).await;
    // Both services share one binary and one broker; only the owner of each type answers for it, so
    // every answer is the owner's, never another service's 404.
    let client = pair.foo.context().client().clone();
    for _ in 0..20 {
        let reply = client
            .send("_GetFooBarSnapshots", json!({"uuids": [foobar.uuid()]}))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.content);
        assert_eq!(reply.content[0]["something"], json!("mine"));
        let reply = client
            .send("_GetFooSnapshots", json!({"uuids": [foo]}))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.content);
        assert_eq!(reply.content[0]["uuid"], json!(foo));
    }
    // A type no service of the binary owns is refused at start.
    let error = Launcher::with_config(config("other", &["FooCommands"]))
        .configure(|c| c.root_entities = vec!["Nope".into()])
        .start()
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("`Nope` is not a #[root_entity]"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_started_together_run_a_saga_between_them() {
    use minos::testing::{test_config, TestService};
    let mut foobar = test_config("foobar");
    foobar.services = vec!["FooBarCommands".into()];
    foobar.root_entities = vec!["FooBar".into()];
    let mut foo = test_config("foo");
    foo.services = vec!["FooCommands".into(), "FooQueries".into()];
    foo.root_entities = vec!["Foo".into()];
    let started = TestService::start_together([foobar, foo]).await.unwrap();
    let foo = &started[1];
    let created = foo.http().post("/foos", json!({"bar": "b"})).await.unwrap();
    let uuid = created.json()["uuid"].clone();
    let running = foo
        .http()
        .post(
            "/foos/add-foobar",
            json!({"uuid": uuid, "something": "together"}),
        )
        .await
        .unwrap();
    assert_eq!(running.status, 200, "{}", running.body);
    let execution: Uuid = running.json()["uuid"].as_str().unwrap().parse().unwrap();
    let done = SagaManager::new(foo.context().clone())
        .wait(execution, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(done.status, ExecutionStatus::Finished, "{:?}", done.error);
    for service in started {
        service.stop().await;
    }
}

/// `minos sagas` and `minos events` read a service's store: executions with their status and error,
/// one execution whole, a root's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_executions_and_prints_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foo.db");
    let storage = format!("sqlite://{}", path.display());
    let pair = start_with(5_000, &storage).await;
    let foo = create_foo(&pair).await;
    let finished = run_saga(&pair, json!({"uuid": foo, "something": "hello"})).await;
    assert_eq!(finished.status, ExecutionStatus::Finished);
    let errored = run_saga(&pair, json!({"uuid": foo, "something": ""})).await;
    assert_eq!(errored.status, ExecutionStatus::Errored);

    let minos = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_minos"))
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, listed) = minos(&["sagas", "--storage", &storage]);
    assert!(ok, "{listed}");
    let line = |uuid: Uuid| {
        listed
            .lines()
            .find(|l| l.starts_with(&uuid.to_string()))
            .unwrap_or_else(|| panic!("{uuid} not listed: {listed}"))
            .to_owned()
    };
    assert!(line(finished.uuid).contains("finished"), "{listed}");
    let errored_line = line(errored.uuid);
    assert!(
        errored_line.contains("errored") && errored_line.contains("`text` is empty"),
        "{listed}"
    );

    let (ok, only) = minos(&[
        "sagas",
        "--storage",
        &storage,
        "--status",
        "errored",
        "--json",
    ]);
    assert!(ok, "{only}");
    let rows: Vec<Value> = only
        .lines()
        .map(|l| minos::serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{only}");
    assert_eq!(rows[0]["uuid"], json!(errored.uuid));

    let (ok, shown) = minos(&[
        "sagas",
        "show",
        &finished.uuid.to_string(),
        "--storage",
        &storage,
    ]);
    assert!(ok, "{shown}");
    let shown: Value = minos::serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["status"], "finished");
    assert_eq!(shown["related_services"], json!(["foobar"]));
    assert!(shown["context"]["foobar_uuid"].is_string(), "{shown}");

    let (ok, events) = minos(&["events", "Foo", &foo.to_string(), "--storage", &storage]);
    assert!(ok, "{events}");
    let lines: Vec<&str> = events.lines().collect();
    assert!(
        lines[0].starts_with("v1") && lines[0].contains("FooCreated"),
        "{events}"
    );
    assert!(events.contains("bar = \"b\""), "{events}");
    assert!(
        events.contains("FooUpdated") && events.contains("foobar = \""),
        "{events}"
    );
    let (ok, json_events) = minos(&[
        "events",
        "Foo",
        &foo.to_string(),
        "--storage",
        &storage,
        "--json",
    ]);
    assert!(ok);
    let first: Value = minos::serde_json::from_str(json_events.lines().next().unwrap()).unwrap();
    assert_eq!(first["version"], 1);

    // Mistakes say what to do.
    let (ok, said) = minos(&["events", "FooBar", &foo.to_string(), "--storage", &storage]);
    assert!(!ok && said.contains("is a Foo, not a FooBar"), "{said}");
    let (ok, said) = minos(&[
        "events",
        "Foo",
        &Uuid::new_v4().to_string(),
        "--storage",
        &storage,
    ]);
    assert!(!ok && said.contains("no events"), "{said}");
    let (ok, said) = minos(&["events", "Foo", "not-a-uuid", "--storage", &storage]);
    assert!(!ok && said.contains("not-a-uuid"), "{said}");
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let (ok, said) = minos(&["sagas", "--storage", &missing]);
    assert!(!ok && said.contains("no SQLite store"), "{said}");
    assert!(
        !dir.path().join("nope.db").exists(),
        "reading created a store"
    );
    let (ok, said) = minos(&["sagas", "--storage", &storage, "--status", "stuck"]);
    assert!(
        !ok && said.contains("expected created, running, paused, finished or errored"),
        "{said}"
    );
    let (ok, said) = minos(&[
        "sagas",
        "show",
        &Uuid::new_v4().to_string(),
        "--storage",
        &storage,
    ]);
    assert!(!ok && said.contains("no saga execution"), "{said}");
    pair.foo.stop().await;
    pair.foobar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_only_created_roots_is_committed_without_a_reservation_round() {
    let pair = start(5_000).await;
    let uuid = create_foo(&pair).await;
    let ended = run_saga(&pair, json!({"uuid": uuid, "something": "one phase"})).await;
    assert_eq!(ended.status, ExecutionStatus::Finished, "{:?}", ended.error);
    // foobar only created a root: nothing to reserve there. foo changed one: reserved first.
    assert!(ended.related_services.contains("foobar"), "{ended:?}");
    assert_eq!(
        ended.one_phase.iter().collect::<Vec<_>>(),
        ["foobar"],
        "{ended:?}"
    );
    assert_eq!(
        statuses(&pair, ended.uuid).await,
        [TransactionStatus::Committed; 2]
    );
    let created: Uuid = ended.context.get("foobar_uuid").unwrap();
    let listed = foobars(&pair).await;
    assert_eq!(
        listed
            .iter()
            .filter(|f| f["uuid"] == json!(created) && f["something"] == "one phase")
            .count(),
        1,
        "{listed:?}"
    );

    // A step that changes an existing root there makes it a two-phase participant again.
    let context = SagaContext::new()
        .with("foobar_uuid", created)
        .with("text", "renamed");
    let renamed = run_in_foo(&pair, &RENAME_SAGA, context).await;
    assert_eq!(
        renamed.status,
        ExecutionStatus::Finished,
        "{:?}",
        renamed.error
    );
    assert!(renamed.related_services.contains("foobar"), "{renamed:?}");
    assert!(renamed.one_phase.is_empty(), "{renamed:?}");
    let listed = foobars(&pair).await;
    assert!(
        listed
            .iter()
            .any(|f| f["uuid"] == json!(created) && f["something"] == "renamed"),
        "{listed:?}"
    );
}

/// When the other participants only created roots, this service commits its part without a
/// reservation round; a change made meanwhile to a root it changed still refuses the commit: the saga
/// errs, the other service's new root is rejected, and the write made meanwhile stays. On each store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_changed_before_the_commit_refuses_it_and_rejects_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let storages = [
        "memory".to_owned(),
        format!("sqlite://{}", dir.path().join("foo.db").display()),
        minos_support::postgres::fresh_schema_url(),
    ];
    for storage in storages {
        let pair = start_with(5_000, &storage).await;
        let uuid = create_foo(&pair).await;
        let context = SagaContext::new()
            .with("uuid", uuid)
            .with("something", "raced");
        let ended = run_in_foo(&pair, &RACED_SAGA, context).await;
        assert_eq!(
            ended.status,
            ExecutionStatus::Errored,
            "{storage}: {ended:?}"
        );
        let error = ended.error.clone().unwrap_or_default();
        assert!(
            error.contains("reservation refused: foo:") && error.contains("version"),
            "{storage}: {error}"
        );
        assert_eq!(ended.one_phase.iter().collect::<Vec<_>>(), ["foobar"]);
        assert_eq!(
            statuses(&pair, ended.uuid).await,
            [TransactionStatus::Rejected; 2],
            "{storage}"
        );
        let foo = call(&pair.foo_http, "GET", &format!("/foos/{uuid}"), None).await;
        assert_eq!(foo.json()["bar"], "raced", "{storage}: {}", foo.body);
        assert_eq!(foo.json()["foobar"], Value::Null, "{storage}: {}", foo.body);
        let listed = foobars(&pair).await;
        assert!(
            listed.iter().all(|f| f["something"] != "raced"),
            "{storage}: {listed:?}"
        );
        pair.foo.stop().await;
        pair.foobar.stop().await;
    }
}
