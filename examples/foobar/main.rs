//! The `foobar` service of the two-service example: the `FooBar` root entity and the `CreateFooBar`
//! command that the `foo` service's saga sends. Inside a saga the FooBar is written in the saga's
//! transaction: stored and published (`FooBarCreated`) only when the saga commits, gone if it fails.
//!
//! ```sh
//! cargo run --bin foobar      # port 4546, PostgreSQL and Kafka (see foobar/config.yml)
//! ```

use minos::prelude::*;
use serde::Deserialize;

#[root_entity]
pub struct FooBar {
    pub something: String,
}

#[derive(Deserialize)]
struct CreateFooBar {
    #[allow(dead_code)]
    number: i64,
    text: String,
}

pub struct FooBarCommandService;

#[command_service]
impl FooBarCommandService {
    /// Creates a FooBar from `{"number": 56, "text": "..."}`; an empty text is refused (400). With an
    /// `auth:` section it needs a token: the `foo` saga's step carries the token of the request that
    /// started it.
    #[enroute(broker = "CreateFooBar", rest = "POST /foobars", auth)]
    async fn create_foobar(&self, request: Request) -> Result<Response> {
        let CreateFooBar { text, .. } = request.content()?;
        if text.trim().is_empty() {
            return Err(Error::bad_request("`text` must not be empty"));
        }
        let foobar = FooBar::create(FooBar { something: text }).await?;
        minos::tracing::info!("FooBar {} created", foobar.uuid());
        Ok(Response::json(foobar.uuid()))
    }
}

pub struct FooBarQueryService;

#[query_service]
impl FooBarQueryService {
    #[enroute(rest = "GET /foobars")]
    async fn list(&self, _request: Request) -> Result<Response> {
        Ok(Response::json(FooBar::get_all().await?))
    }

    #[enroute(rest = "GET /foobars/{uuid}")]
    async fn get(&self, request: Request) -> Result<Response> {
        Ok(Response::json(FooBar::get(request.param("uuid")?).await?))
    }
}

fn main() -> minos::Result<()> {
    let config = std::env::var("FOOBAR_CONFIG")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/foobar/config.yml").into());
    minos::Launcher::from_config(config)?.run()
}
