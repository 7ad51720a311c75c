//! HTTP: an actix-web server built from the route table, with JSON errors for every failure.

mod handler;
mod spec;

pub(crate) use spec::{asyncapi, openapi};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::http::header::{HeaderValue, ALLOW};
use actix_web::http::Method;
use actix_web::{web, App, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::auth::Access;
use crate::error::{Error, Result};
use crate::routing::{Context, HandlerFn, Middleware, RouteTable};
pub(crate) use handler::{admit, to_http};
use handler::{error_response, handle, Shared};

/// HTTP settings.
#[derive(Clone, Debug)]
pub(crate) struct HttpSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// Largest accepted body, in bytes.
    pub body_limit: usize,
    /// Worker threads (default: one per core).
    pub workers: Option<usize>,
    /// How long shutdown waits for requests in flight.
    pub shutdown_timeout: Duration,
}

/// A started actix-web server (a service's, the registry's, the dashboard's).
pub(crate) struct HttpServer {
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl HttpServer {
    /// Runs a server bound (by `bind`, which answers its addresses or why it could not bind) to
    /// `host:port`, in the background.
    pub(crate) fn run<S>(
        host: &str,
        port: u16,
        bind: impl FnOnce() -> std::io::Result<(Vec<SocketAddr>, S)>,
    ) -> Result<HttpServer>
    where
        S: FnOnce() -> actix_web::dev::Server,
    {
        let address = format!("{host}:{port}");
        let (addrs, run) = bind().map_err(|source| Error::Bind {
            address: address.clone(),
            source,
        })?;
        let addr = addrs.first().copied().ok_or_else(|| Error::Bind {
            address,
            source: std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                "the server bound no address",
            ),
        })?;
        let running = run();
        let handle = running.handle();
        let task = tokio::spawn(running);
        Ok(HttpServer { handle, task, addr })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and waits for requests in flight (up to the shutdown timeout).
    pub(crate) async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

/// The routes of each path (REST routes and the runtime's own), so that a known path with another
/// method answers 405 with `Allow`.
/// Each route: method, handler, access, and the handler's service type and function (for its span).
type RoutesByPath = BTreeMap<
    &'static str,
    Vec<(
        &'static str,
        HandlerFn,
        Access,
        (&'static str, &'static str),
    )>,
>;

fn routes_by_path(
    table: &RouteTable,
    system_routes: &[(&'static str, &'static str, HandlerFn)],
) -> RoutesByPath {
    let mut by_path = RoutesByPath::new();
    for (method, path, entry) in table.rest_routes() {
        by_path.entry(path).or_default().push((
            method,
            entry.handler,
            entry.access,
            (entry.service, entry.function),
        ));
    }
    // The runtime's own routes reveal data (saga executions and their contexts): admins only.
    for (method, path, handler) in system_routes {
        by_path
            .entry(path)
            .or_default()
            .push((method, *handler, Access::Admin, ("minos", path)));
    }
    by_path
}

/// What the built-in endpoints answer: the service's name and address, its API descriptions (made
/// when first asked for, not at every start).
struct Built {
    name: String,
    addr: OnceLock<SocketAddr>,
    table: Arc<RouteTable>,
    owned: Vec<&'static str>,
    openapi: OnceLock<Value>,
    asyncapi: OnceLock<Value>,
}

impl Built {
    fn openapi(&self) -> &Value {
        self.openapi
            .get_or_init(|| openapi(&self.name, &self.table))
    }

    fn asyncapi(&self) -> &Value {
        self.asyncapi
            .get_or_init(|| asyncapi(&self.name, &self.table, &self.owned))
    }
}

/// How long the health check waits for the store and for the broker.
pub(crate) const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /system/health` (readiness: the store and the broker answer), `GET /system/live` (liveness: the
/// process serves HTTP), `GET /spec/openapi`, `GET /spec/asyncapi`.
fn built_in_endpoints(config: &mut web::ServiceConfig, built: &Arc<Built>, context: &Context) {
    let (health, openapi, asyncapi) = (Arc::clone(built), Arc::clone(built), Arc::clone(built));
    let (spec_context, asyncapi_context) = (context.clone(), context.clone());
    let metrics_context = context.clone();
    let overview_context = context.clone();
    let context = context.clone();
    config
        .route(
            "/system/health",
            web::get().to(move || health_response(Arc::clone(&health), context.clone())),
        )
        .route(
            "/system/overview",
            web::get().to(move |request: HttpRequest| {
                let context = overview_context.clone();
                async move {
                    match handler::admit(context.auth(), &request, Access::Admin).await {
                        Ok(_) => overview_response(context).await,
                        Err(refused) => refused,
                    }
                }
            }),
        )
        .route(
            "/metrics",
            web::get().to(move || metrics_response(metrics_context.clone())),
        )
        .route(
            "/system/live",
            web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "ok"})) }),
        )
        .route(
            "/spec/openapi",
            web::get().to(move |request: HttpRequest| {
                let built = Arc::clone(&openapi);
                let context = spec_context.clone();
                async move {
                    match handler::admit(context.auth(), &request, Access::Admin).await {
                        Ok(_) => HttpResponse::Ok().json(built.openapi()),
                        Err(refused) => refused,
                    }
                }
            }),
        )
        .route(
            "/spec/asyncapi",
            web::get().to(move |request: HttpRequest| {
                let built = Arc::clone(&asyncapi);
                let context = asyncapi_context.clone();
                async move {
                    match handler::admit(context.auth(), &request, Access::Admin).await {
                        Ok(_) => HttpResponse::Ok().json(built.asyncapi()),
                        Err(refused) => refused,
                    }
                }
            }),
        );
}

/// `GET /metrics`: the service's metrics in the Prometheus text format (OpenMetrics), with the outbox
/// backlog and the views' lag read now. 404 when `telemetry.metrics` is off.
async fn metrics_response(context: Context) -> HttpResponse {
    let metrics = context.metrics();
    if !metrics.enabled() {
        return error_response(404, "metrics are off (telemetry.metrics: false)");
    }
    match tokio::time::timeout(HEALTH_TIMEOUT, context.repository().store().backlog()).await {
        Ok(Ok((messages, oldest))) => {
            let age = oldest
                .and_then(|at| (chrono::Utc::now() - at).to_std().ok())
                .unwrap_or_default();
            metrics.outbox_backlog(messages as usize, age);
        }
        Ok(Err(error)) => tracing::debug!(%error, "metrics: could not read the outbox backlog"),
        Err(_) => tracing::debug!("metrics: the outbox backlog took too long to read"),
    }
    if let Some(projections) = context.projections() {
        for view in projections.status() {
            for source in &view.sources {
                metrics.view_lag(&view.name, &source.source, source.behind);
            }
        }
    }
    HttpResponse::Ok()
        .content_type(crate::telemetry::metrics::CONTENT_TYPE)
        .body(metrics.render())
}

/// `GET /system/overview` (admins only when tokens are checked): what the dashboard shows of an
/// instance — its outbox backlog, its latest saga executions (steps, participants, errors), the messages
/// it parked on its dead-letter topic since it started, and its views' state and lag.
async fn overview_response(context: Context) -> HttpResponse {
    let store = context.repository().store();
    let read = async {
        let (backlog, oldest) = store.backlog().await?;
        let executions = store.executions(None, 50).await?;
        Ok::<_, crate::store::StoreError>((backlog, oldest, executions))
    };
    let (outbox, sagas) = match tokio::time::timeout(HEALTH_TIMEOUT, read).await {
        Ok(Ok((backlog, oldest, executions))) => {
            let age = oldest.and_then(|at| (chrono::Utc::now() - at).to_std().ok());
            let sagas: Vec<Value> = executions
                .into_iter()
                .filter_map(|record| crate::saga::SagaExecution::from_record(record).ok())
                .map(|execution| execution.summary())
                .collect();
            (
                json!({"backlog": backlog, "oldest_age_seconds": age.map(|a| a.as_secs_f64())}),
                json!(sagas),
            )
        }
        Ok(Err(error)) => (json!({"error": error.to_string()}), json!([])),
        Err(_) => (
            json!({"error": "the store did not answer in time"}),
            json!([]),
        ),
    };
    let views = context
        .projections()
        .map(crate::views::Projections::status)
        .unwrap_or_default();
    HttpResponse::Ok().json(json!({
        "name": context.name(),
        "outbox": outbox,
        "sagas": sagas,
        "dead_letters": context.dead_letters(),
        "views": views,
    }))
}

/// 200 when the store and the broker both answer within [`HEALTH_TIMEOUT`], else 503; each check's
/// outcome and duration in `checks`.
async fn health_response(built: Arc<Built>, context: Context) -> HttpResponse {
    let store = context.repository().store();
    let (store, broker) = tokio::join!(check(store.ping()), check(context.broker().ping()));
    let healthy = store.0 && broker.0;
    let addr = built
        .addr
        .get()
        .copied()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "name": built.name,
        "host": addr.ip().to_string(),
        "port": addr.port(),
        "checks": {"store": store.1, "broker": broker.1},
        "expired_requests": crate::routing::expired_requests(),
    });
    match healthy {
        true => HttpResponse::Ok().json(body),
        false => HttpResponse::ServiceUnavailable().json(body),
    }
}

/// Runs one check within [`HEALTH_TIMEOUT`]: whether it passed, and `{"status", "ms", "error"?}`.
pub(crate) async fn check<E: std::fmt::Display>(
    probe: impl std::future::Future<Output = std::result::Result<(), E>>,
) -> (bool, Value) {
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(HEALTH_TIMEOUT, probe).await;
    let ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(Ok(())) => (true, json!({"status": "ok", "ms": ms})),
        Ok(Err(error)) => (
            false,
            json!({"status": "unavailable", "ms": ms, "error": error.to_string()}),
        ),
        Err(_) => (
            false,
            json!({"status": "unavailable", "ms": ms, "error": format!("no answer within {HEALTH_TIMEOUT:?}")}),
        ),
    }
}

/// One resource per path: a route per method, and 405 with `Allow` for any other method.
fn rest_resources(config: &mut web::ServiceConfig, by_path: &RoutesByPath, shared: &Shared) {
    for (path, methods) in by_path {
        let mut resource = web::resource(*path);
        for (method, handler, access, (service, function)) in methods {
            let shared = shared.clone();
            let (handler, access) = (*handler, *access);
            let route = handler::RouteInfo {
                method,
                path,
                service,
                function,
            };
            let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
            resource = resource.route(web::method(method).to(
                move |request: HttpRequest, payload: web::Payload| {
                    handle(shared.clone(), handler, access, route, request, payload)
                },
            ));
        }
        let allow = methods
            .iter()
            .map(|(method, _, _, _)| *method)
            .collect::<Vec<_>>()
            .join(", ");
        resource = resource.default_service(web::to(move |request: HttpRequest| {
            let allow = allow.clone();
            async move { method_not_allowed(&request, allow) }
        }));
        config.service(resource);
    }
}

fn method_not_allowed(request: &HttpRequest, allow: String) -> HttpResponse {
    let mut response = error_response(
        405,
        format!(
            "{} is not allowed on {}; allowed: {allow}",
            request.method(),
            request.path()
        ),
    );
    if let Ok(value) = HeaderValue::try_from(allow) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

async fn no_route(request: HttpRequest) -> HttpResponse {
    error_response(
        404,
        format!("no route for {} {}", request.method(), request.path()),
    )
}

/// Starts the HTTP server for `table`'s REST routes, `system_routes` and the built-in endpoints.
pub(crate) async fn serve(
    table: Arc<RouteTable>,
    chain: Arc<[Middleware]>,
    context: Context,
    settings: HttpSettings,
    system_routes: &[(&'static str, &'static str, HandlerFn)],
    owned: &[&'static str],
) -> Result<HttpServer> {
    let name = context.name().to_owned();
    let built = Arc::new(Built {
        table: Arc::clone(&table),
        owned: owned.to_vec(),
        openapi: OnceLock::new(),
        asyncapi: OnceLock::new(),
        addr: OnceLock::new(),
        name,
    });
    let shared = Shared {
        chain,
        context,
        body_limit: settings.body_limit,
    };
    let by_path = Arc::new(routes_by_path(&table, system_routes));
    let factory = {
        let built = Arc::clone(&built);
        move || {
            App::new()
                .configure(|config| built_in_endpoints(config, &built, &shared.context))
                .configure(|config| rest_resources(config, &by_path, &shared))
                .default_service(web::to(no_route))
        }
    };
    let mut server = actix_web::HttpServer::new(factory)
        .disable_signals()
        .shutdown_timeout(settings.shutdown_timeout.as_secs().max(1));
    if let Some(workers) = settings.workers {
        server = server.workers(workers.max(1));
    }
    let running = HttpServer::run(&settings.host, settings.port, || {
        let server = server.bind((settings.host.as_str(), settings.port))?;
        Ok((server.addrs(), move || server.run()))
    })?;
    let _ = built.addr.set(running.addr());
    Ok(running)
}
