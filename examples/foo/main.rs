//! The `foo` service of the two-service example: the `Foo` root entity with a reference to the `foobar`
//! service's `FooBar`, its commands (`CreateFoo`, `POST /foos`, `DELETE /foos/{uuid}` for admins, and
//! `POST /foos/add-foobar`, which runs the `ADD_FOOBAR_SAGA`), and its queries (the `FooCreated` event
//! handler, the `FoobarLink` view kept from `FooUpdated.foobar`, `GET /foos/example`, `GET /foos/events`,
//! `GET /foos/{uuid}`, `GET /foos/{uuid}/foobar`). PostgreSQL and Kafka:
//!
//! ```sh
//! scripts/postgres-dev.sh start && scripts/kafka-dev.sh start
//! cargo run --bin foobar &    # port 4546
//! cargo run --bin foo         # port 4545
//! curl -X POST localhost:4545/foos -d '{"bar": "test"}'
//! curl -X POST localhost:4545/foos/add-foobar -d '{"uuid": "<the uuid>", "something": "hello"}'
//! curl localhost:4545/saga/executions/<the execution uuid>
//! ```

use minos::prelude::*;
use serde::{Deserialize, Serialize};

#[root_entity]
pub struct Foo {
    /// Free text.
    pub bar: String,
    /// The FooBar of the `foobar` service linked by `ADD_FOOBAR_SAGA`.
    pub foobar: Option<Ref<FooBar>>,
}

/// The `foobar` service's `FooBar`, as this service reads it (resolved over the broker).
#[external_entity]
pub struct FooBar {
    pub something: String,
}

/// The content of `CreateFoo` and the body of `POST /foos`.
#[schema]
#[derive(Deserialize)]
struct CreateFoo {
    bar: String,
}

/// The answer to `CreateFoo`.
#[schema]
#[derive(Serialize)]
struct FooId {
    uuid: Uuid,
}

/// The body of `POST /foos/add-foobar`.
#[schema]
#[derive(Deserialize)]
#[allow(dead_code)] // read as JSON into the saga's context; described for the API specs
struct AddFoobar {
    /// The Foo.
    uuid: Uuid,
    /// The new FooBar's text.
    something: String,
}

pub struct FooCommandService;

#[command_service]
impl FooCommandService {
    /// Creates a Foo: stores `FooCreated`, which the relay publishes to Kafka.
    #[enroute(broker = "CreateFoo", rest = "POST /foos", auth, request = CreateFoo, response = FooId)]
    async fn create_foo(&self, request: Request) -> Result<Response> {
        let CreateFoo { bar } = request.content()?;
        let foo = Foo::create(Foo { bar, foobar: None }).await?;
        minos::tracing::info!("Foo {} created", foo.uuid());
        Ok(Response::json(FooId { uuid: foo.uuid() }))
    }

    /// Deletes a Foo; with an `auth:` section only for a token with the `admin` role (403 otherwise).
    #[enroute(rest = "DELETE /foos/{uuid}", roles = ["admin"])]
    async fn delete_foo(&self, request: Request) -> Result<Response> {
        Foo::get(request.param("uuid")?).await?.delete().await?;
        Ok(Response::json(
            json!({ "deleted": request.param::<Uuid>("uuid")? }),
        ))
    }

    /// Runs `ADD_FOOBAR_SAGA` with `{"uuid": <foo>, "something": <text>}`; answers the execution
    /// (follow it at `GET /saga/executions/{uuid}`).
    #[enroute(rest = "POST /foos/add-foobar", auth, request = AddFoobar)]
    async fn add_foobar(&self, request: Request) -> Result<Response> {
        let content: Value = request.content()?;
        let context = SagaContext::new()
            .with("uuid", &content["uuid"])
            .with("something", &content["something"]);
        let execution = self.sagas()?.run(&ADD_FOOBAR_SAGA, context).await?;
        Ok(Response::json(execution.summary()))
    }
}

/// Which FooBar each Foo was linked to, and when: a view kept from the `FooUpdated.foobar` events
/// (`GET /foos/events`), in the view database (by default the store's PostgreSQL database).
#[view]
pub struct FoobarLink {
    /// The Foo.
    #[key]
    pub uuid: Uuid,
    /// Its FooBar.
    #[index]
    pub foobar: Option<Uuid>,
    /// The Foo's version that linked it.
    pub version: i64,
    /// When.
    pub linked_at: DateTime<Utc>,
}

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(event = "FooCreated")]
    async fn foo_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        minos::tracing::info!("A Foo was created: {}", event.uuid);
        Ok(())
    }

    #[enroute(event = "FooUpdated.foobar", view = FoobarLink)]
    async fn foo_foobar_updated(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let foobar: Option<Ref<FooBar>> = event.field("foobar")?.flatten();
        FoobarLink::upsert(&FoobarLink {
            uuid: event.uuid,
            foobar: foobar.map(|r| r.uuid()),
            version: event.version as i64,
            linked_at: event.created_at,
        })
        .await
    }

    #[enroute(rest = "GET /foos/example")]
    async fn example(&self, _request: Request) -> Result<Response> {
        Ok(Response::json("This is an example response!"))
    }

    /// The Foos linked to a FooBar, latest first (`?foobar=<uuid>` for one FooBar's).
    #[enroute(rest = "GET /foos/events")]
    async fn foobar_events(&self, request: Request) -> Result<Response> {
        let condition = match request.params().get("foobar") {
            Some(_) => Condition::eq("foobar", request.param::<Uuid>("foobar")?),
            None => Condition::True,
        };
        let links = FoobarLink::find(condition)
            .order_by(Ordering::desc("linked_at"))
            .limit(1000)
            .await?;
        Ok(Response::json(links))
    }

    #[enroute(rest = "GET /foos/{uuid}", response = Root<Foo>)]
    async fn get_foo(&self, request: Request) -> Result<Response> {
        Ok(Response::json(Foo::get(request.param("uuid")?).await?))
    }

    /// The Foo's FooBar, fetched from the `foobar` service (`_GetFooBarSnapshots`).
    #[enroute(rest = "GET /foos/{uuid}/foobar")]
    async fn get_foobar(&self, request: Request) -> Result<Response> {
        let mut foo = Foo::get(request.param("uuid")?).await?;
        let foobar = foo
            .foobar
            .as_mut()
            .ok_or_else(|| Error::not_found("this Foo has no foobar yet"))?;
        Ok(Response::json(foobar.resolve().await?))
    }
}

/// Step 1 (local): the Foo must exist; remembers its `bar`.
async fn check_foo(mut ctx: SagaContext) -> Result<SagaContext> {
    let foo = Foo::get(ctx.get("uuid")?).await?;
    ctx.set("bar", &foo.bar);
    Ok(ctx)
}

/// Compensation of step 1, when a later step fails. The saga's writes in this service vanish with its
/// transaction; this notes the failure in the context (shown by the status endpoint).
async fn release_foo(ctx: SagaContext) -> Result<SagaContext> {
    Ok(ctx.with("compensated", true))
}

/// Step 2 (remote): asks the `foobar` service to create a FooBar.
async fn create_foobar(ctx: SagaContext) -> Result<SagaRequest> {
    let something: String = ctx.get("something")?;
    Ok(SagaRequest::new(
        "CreateFooBar",
        json!({ "number": 56, "text": something }),
    ))
}

async fn success_foobar(mut ctx: SagaContext, response: SagaResponse) -> Result<SagaContext> {
    ctx.set("foobar_uuid", response.content::<Uuid>()?);
    Ok(ctx)
}

async fn error_foobar(_ctx: SagaContext, response: SagaResponse) -> Result<SagaContext> {
    Err(Error::bad_request(format!(
        "The foobar could not be created: {}",
        response.message()
    )))
}

/// Step 3 (local): links the FooBar to the Foo. Published as `FooUpdated` and `FooUpdated.foobar` when
/// the saga commits.
async fn update_foo(ctx: SagaContext) -> Result<SagaContext> {
    let mut foo = Foo::get(ctx.get("uuid")?).await?;
    foo.foobar = Some(Ref::new(ctx.get("foobar_uuid")?));
    foo.save().await?;
    Ok(ctx)
}

minos::saga! {
    /// Creates a FooBar in the `foobar` service and links it to a Foo, all or nothing.
    pub static ADD_FOOBAR_SAGA = Saga::builder()
        .local_step(check_foo)
        .on_failure(release_foo)
        .remote_step(create_foobar)
        .on_success(success_foobar)
        .on_error(error_foobar)
        .local_step(update_foo)
        .commit();
}

fn main() -> minos::Result<()> {
    let config = std::env::var("FOO_CONFIG")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/foo/config.yml").into());
    minos::Launcher::from_config(config)?.run()
}
