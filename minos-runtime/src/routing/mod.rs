//! Routing: the route entries the service macros register, the route table built from them, requests,
//! responses, middleware and the per-task service context.

mod context;
mod dispatcher;
mod refs;
mod request;
mod table;

pub(crate) use context::service_entries;
pub use context::{
    service_instance, BuildFuture, Context, DeadLetters, Service, ServiceEntry, ServiceExt,
    ServiceInit,
};
pub use dispatcher::{expired_requests, Outcome};
pub(crate) use dispatcher::{Dispatcher, DispatcherHandle, SystemHandler};
pub use refs::resolve_all;
pub use request::{IntoResponse, Origin, Request, Response};
pub use table::{BrokerKind, Route, RouteEntry, RouteTable, ServiceKind};

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;

use crate::error::{Error, Result};

/// The future a handler returns once boxed.
#[doc(hidden)]
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Response>> + Send>>;

/// A handler as registered by the service macros.
#[doc(hidden)]
pub type HandlerFn = fn(Request) -> HandlerFuture;

/// A middleware: `async fn(request, next) -> Result<Response>`; calls `next.run(request)` to go on.
pub(crate) type Middleware = Arc<dyn Fn(Request, Next) -> HandlerFuture + Send + Sync>;

/// Wraps an `async fn(Request, Next) -> Result<Response>` as a [`Middleware`].
pub(crate) fn middleware<F, Fut>(f: F) -> Middleware
where
    F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response>> + Send + 'static,
{
    Arc::new(move |request, next| Box::pin(f(request, next)))
}

/// A middleware registered with `#[middleware]`, to be named in the configuration.
#[doc(hidden)]
#[derive(Debug)]
pub struct MiddlewareEntry {
    /// The name used in `middleware:` of the configuration (the function's name).
    pub name: &'static str,
    /// The function.
    pub func: fn(Request, Next) -> HandlerFuture,
    /// Where it was declared.
    pub file: &'static str,
    /// The line of the declaration.
    pub line: u32,
}

inventory::collect!(MiddlewareEntry);

/// The registered middleware with this name.
pub(crate) fn registered_middleware(name: &str) -> Option<Middleware> {
    inventory::iter::<MiddlewareEntry>
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| Arc::new(m.func) as Middleware)
}

/// The rest of a middleware chain.
#[derive(Clone)]
pub struct Next {
    chain: Arc<[Middleware]>,
    index: usize,
    handler: HandlerFn,
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field("remaining", &(self.chain.len() - self.index))
            .finish()
    }
}

impl Next {
    /// Runs the rest of the chain, ending with the handler.
    pub async fn run(self, request: Request) -> Result<Response> {
        match self.chain.get(self.index).cloned() {
            Some(middleware) => {
                let next = Next {
                    index: self.index + 1,
                    ..self
                };
                middleware(request, next).await
            }
            None => (self.handler)(request).await,
        }
    }
}

/// Runs `handler` behind `chain` (first listed outermost), inside the request's context. A panicking
/// handler becomes a 500 error instead of taking the service down.
pub(crate) fn invoke(
    chain: &Arc<[Middleware]>,
    handler: HandlerFn,
    request: Request,
    context: &Context,
) -> impl Future<Output = Result<Response>> {
    let next = Next {
        chain: Arc::clone(chain),
        index: 0,
        handler,
    };
    let run = context.clone().scope(next.run(request));
    AssertUnwindSafe(run)
        .catch_unwind()
        .map(|caught| match caught {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "handler panicked");
                Err(Error::with_status(500, "internal error"))
            }
        })
}
