// The quickstart service: the `Foo` root entity, its command service (`CreateFoo` on the broker and
// `POST /foos`) and its query service (the `FooCreated` event handler, two views kept from the Foo
// events, `GET /foos`, `GET /foos/example`, `GET /foos/{uuid}`). Runs with nothing installed: embedded
// SQLite store and view database, in-process broker, port 4545.
//
// ```sh
// cargo run --example quickstart
// curl -X POST localhost:4545/foos -H 'Content-Type: application/json' -d '{"bar": "test"}'
// curl localhost:4545/foos/example
// curl 'localhost:4545/foos?bar=test'
// ```

use minos::prelude::*;
use serde::{Deserialize, Serialize};

#[root_entity]
pub struct Foo {
    /// Any text but blank.
    pub bar: String,
}

/// The content of `CreateFoo` and the body of `POST /foos`. `#[schema]` describes it in the API specs
/// (`GET /spec/openapi`, `GET /spec/asyncapi`).
#[schema]
#[derive(Deserialize)]
struct CreateFoo {
    /// Any text but blank.
    bar: String,
}

/// The answer to `CreateFoo`: the new Foo's uuid.
#[schema]
#[derive(Serialize)]
struct FooId {
    uuid: Uuid,
}

pub struct FooCommandService;

#[command_service]
impl FooCommandService {
    /// Creates a Foo: stores `FooCreated`, which the relay publishes to the broker.
    #[enroute(broker = "CreateFoo", rest = "POST /foos", auth, request = CreateFoo, response = FooId)]
    async fn create_foo(&self, request: Request) -> Result<Response> {
        let CreateFoo { bar } = request.content()?;
        if bar.trim().is_empty() {
            return Err(Error::bad_request("`bar` must not be empty"));
        }
        let foo = Foo::create(Foo { bar }).await?;
        Ok(Response::json(FooId { uuid: foo.uuid() }))
    }
}

/// The query side's list of Foos: one row per live Foo, in the view database, kept from the Foo events.
#[view]
pub struct FooListing {
    #[key]
    pub uuid: Uuid,
    #[index]
    pub bar: String,
    pub created_at: DateTime<Utc>,
}

/// How many Foos were ever created: one row.
#[view]
pub struct FooTotals {
    #[key]
    pub id: String,
    pub created: u64,
}

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(event = "FooCreated")]
    async fn foo_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        minos::tracing::info!(
            "A Foo was created: {} (version {})",
            event.uuid,
            event.version
        );
        Ok(())
    }

    /// Keeps `FooListing`: run in the order the events were committed, each event once, the row and
    /// the view's position written in one transaction.
    #[enroute(event = "FooCreated", view = FooListing)]
    async fn list_foo(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let foo: Foo = event.decode_fields()?;
        FooListing::upsert(&FooListing {
            uuid: event.uuid,
            bar: foo.bar,
            created_at: event.created_at,
        })
        .await
    }

    #[enroute(event = "FooDeleted", view = FooListing)]
    async fn unlist_foo(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        FooListing::delete(&event.uuid).await?;
        Ok(())
    }

    #[enroute(event = "FooCreated", view = FooTotals)]
    async fn count_foo(&self, _request: Request) -> Result<()> {
        let key = "foos".to_owned();
        let mut totals = FooTotals::get(&key).await?.unwrap_or(FooTotals {
            id: key,
            created: 0,
        });
        totals.created += 1;
        FooTotals::upsert(&totals).await
    }

    #[enroute(rest = "GET /foos/example")]
    async fn example(&self, _request: Request) -> Result<Response> {
        let totals = FooTotals::get(&"foos".to_owned()).await?;
        Ok(Response::json(json!({
            "message": "This is an example response!",
            "foos_created_seen": totals.map_or(0, |t| t.created),
        })))
    }

    /// `GET /foos?bar=test&limit=10&offset=0`: the listing, newest first.
    #[enroute(rest = "GET /foos")]
    async fn list_foos(&self, request: Request) -> Result<Response> {
        let condition = match request.params().get("bar") {
            Some(bar) => Condition::eq("bar", bar.as_str()),
            None => Condition::True,
        };
        let limit = match request.params().get("limit") {
            Some(_) => request.param("limit")?,
            None => 100,
        };
        let offset = match request.params().get("offset") {
            Some(_) => request.param("offset")?,
            None => 0,
        };
        let foos = FooListing::find(condition)
            .order_by(Ordering::desc("created_at"))
            .limit(limit)
            .offset(offset)
            .await?;
        Ok(Response::json(foos))
    }

    #[enroute(rest = "GET /foos/{uuid}", response = Root<Foo>)]
    async fn get_foo(&self, request: Request) -> Result<Response> {
        let foo = Foo::get(request.param("uuid")?).await?;
        Ok(Response::json(foo))
    }
}

fn main() -> minos::Result<()> {
    // `quickstart.yml` beside this file if present, else the defaults; `MINOS_*` variables override both.
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/quickstart/config.yml");
    let launcher = if std::path::Path::new(config).is_file() {
        minos::Launcher::from_config(config)?
    } else {
        minos::Launcher::new()?
    };
    launcher.run()
}
