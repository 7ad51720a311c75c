//! The HTTP routes of the views: `GET /views` and `POST /views/{name}/rebuild`.

use crate::error::Error;
use crate::routing::{Context, Request};

use super::Projections;

/// `GET /views`: each view's state, positions and lag.
fn views_endpoint(_request: Request) -> crate::routing::HandlerFuture {
    Box::pin(async move {
        let context = Context::current()?;
        let status = context
            .projections()
            .map(Projections::status)
            .unwrap_or_default();
        Ok(crate::routing::Response::json(status))
    })
}

/// `POST /views/{name}/rebuild`: empties the view and builds it again from history.
fn rebuild_endpoint(request: Request) -> crate::routing::HandlerFuture {
    Box::pin(async move {
        let name: String = request.param("name")?;
        let context = Context::current()?;
        let projections = context
            .projections()
            .ok_or_else(|| Error::not_found("this service keeps no views"))?;
        let status = projections.rebuild(&name).await?;
        Ok(crate::routing::Response::json(status).with_status(202))
    })
}

/// The HTTP routes of the views (admins only when tokens are checked).
pub(crate) fn http_routes() -> [(&'static str, &'static str, crate::routing::HandlerFn); 2] {
    [
        ("GET", "/views", views_endpoint),
        ("POST", "/views/{name}/rebuild", rebuild_endpoint),
    ]
}
