// The quickstart service: the `Foo` root entity, its command service (`CreateFoo` on the broker and
// `POST /foos`) and its query service (the `FooCreated` event handler, `GET /foos/example`,
// `GET /foos/{uuid}`). Runs with nothing installed: embedded SQLite store, in-process broker, port 4545.
//
// ```sh
// cargo run --example quickstart
// curl -X POST localhost:4545/foos -H 'Content-Type: application/json' -d '{"bar": "test"}'
// curl localhost:4545/foos/example
// ```

use std::sync::atomic::{AtomicU64, Ordering};

use minos::prelude::*;
use serde::Deserialize;

#[root_entity]
pub struct Foo {
    pub bar: String,
}

#[derive(Deserialize)]
struct CreateFoo {
    bar: String,
}

pub struct FooCommandService;

#[command_service]
impl FooCommandService {
    /// Creates a Foo: stores `FooCreated`, which the relay publishes to the broker.
    #[enroute(broker = "CreateFoo", rest = "POST /foos", auth)]
    async fn create_foo(&self, request: Request) -> Result<Response> {
        let CreateFoo { bar } = request.content()?;
        if bar.trim().is_empty() {
            return Err(Error::bad_request("`bar` must not be empty"));
        }
        let foo = Foo::create(Foo { bar }).await?;
        Ok(Response::json(json!({ "uuid": foo.uuid() })))
    }
}

/// How many `FooCreated` events this process has handled.
static FOOS_CREATED: AtomicU64 = AtomicU64::new(0);

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(event = "FooCreated")]
    async fn foo_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        FOOS_CREATED.fetch_add(1, Ordering::SeqCst);
        println!(
            "A Foo was created: {} (version {})",
            event.uuid, event.version
        );
        Ok(())
    }

    #[enroute(rest = "GET /foos/example")]
    async fn example(&self, _request: Request) -> Result<Response> {
        Ok(Response::json(json!({
            "message": "This is an example response!",
            "foos_created_seen": FOOS_CREATED.load(Ordering::SeqCst),
        })))
    }

    #[enroute(rest = "GET /foos/{uuid}")]
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
