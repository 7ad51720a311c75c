//! Handlers declared in a library crate. A service binary links them with `use minos_example_handlers as _;`
//! (a crate that is never referenced is not linked, and its routes would be missing).

use minos::prelude::*;

/// A query service living outside the service's own crate.
pub struct SharedQueries;

#[query_service]
impl SharedQueries {
    #[enroute(rest = "GET /shared/ping")]
    async fn ping(&self, _request: Request) -> Result<Response> {
        Ok(Response::json(json!({"pong": true})))
    }
}
