//! The {{name}} microservice: the `{{Entity}}` root entity, its command service (`Create{{Entity}}`
//! on the broker and `POST /{{path}}`) and its query service (the `{{Entity}}Listing` view kept
//! from the `{{Entity}}` events, `GET /{{path}}` and `GET /{{path}}/{uuid}`).
//!
//! ```sh
//! cargo run -p {{name}}
//! curl -X POST localhost:{{port}}/{{path}} -H 'Content-Type: application/json' -d '{"name": "first"}'
//! curl localhost:{{port}}/{{path}}
//! ```

use minos::prelude::*;
use serde::{Deserialize, Serialize};

/// The `{{Entity}}` root entity: its fields are its state; each change is stored as an event (`{{Entity}}Created`,
/// `{{Entity}}Updated`, `{{Entity}}Deleted`) and published to the broker.
#[root_entity]
pub struct {{Entity}} {
    /// What it is called.
    pub name: String,
}

/// The body of `POST /{{path}}` and of the `Create{{Entity}}` command. `#[schema]` describes it in
/// the API specs (`GET /spec/openapi`, `GET /spec/asyncapi`).
#[schema]
#[derive(Deserialize)]
struct Create{{Entity}} {
    /// What it is called (not blank).
    name: String,
}

/// The answer to `Create{{Entity}}`: the new root's uuid.
#[schema]
#[derive(Serialize)]
pub struct {{Entity}}Id {
    /// The root's uuid.
    pub uuid: Uuid,
}

/// Writes: commands change roots, which store and publish their events.
pub struct {{Entity}}CommandService;

#[command_service]
impl {{Entity}}CommandService {
    /// Creates one {{entity_words}} and answers its uuid.
    #[enroute(
        broker = "Create{{Entity}}",
        rest = "POST /{{path}}",
        request = Create{{Entity}},
        response = {{Entity}}Id
    )]
    async fn create_{{snake}}(&self, request: Request) -> Result<Response> {
        let Create{{Entity}} { name } = request.content()?;
        if name.trim().is_empty() {
            return Err(Error::bad_request("`name` must not be empty"));
        }
        let created = {{Entity}}::create({{Entity}} { name }).await?;
        Ok(Response::json({{Entity}}Id {
            uuid: created.uuid(),
        }))
    }
}

/// The query side's list of the {{entity_words}} roots, kept from the events.
#[view]
pub struct {{Entity}}Listing {
    /// The root's uuid.
    #[key]
    pub uuid: Uuid,
    /// Its name.
    #[index]
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Reads: event handlers keep the views, REST routes read them.
pub struct {{Entity}}QueryService;

#[query_service]
impl {{Entity}}QueryService {
    #[enroute(event = "{{Entity}}Created", view = {{Entity}}Listing)]
    async fn list_{{snake}}(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let created: {{Entity}} = event.decode_fields()?;
        {{Entity}}Listing::upsert(&{{Entity}}Listing {
            uuid: event.uuid,
            name: created.name,
            created_at: event.created_at,
        })
        .await
    }

    #[enroute(event = "{{Entity}}Deleted", view = {{Entity}}Listing)]
    async fn unlist_{{snake}}(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        {{Entity}}Listing::delete(&event.uuid).await?;
        Ok(())
    }

    /// `GET /{{path}}`: every {{entity_words}}, newest first.
    #[enroute(rest = "GET /{{path}}")]
    async fn list_{{path_snake}}(&self, _request: Request) -> Result<Response> {
        let listed = {{Entity}}Listing::find(Condition::True)
            .order_by(Ordering::desc("created_at"))
            .await?;
        Ok(Response::json(listed))
    }

    /// `GET /{{path}}/{uuid}`: one {{entity_words}}, read from its events.
    #[enroute(rest = "GET /{{path}}/{uuid}", response = Root<{{Entity}}>)]
    async fn get_{{snake}}(&self, request: Request) -> Result<Response> {
        let found = {{Entity}}::get(request.param("uuid")?).await?;
        Ok(Response::json(found))
    }
}
