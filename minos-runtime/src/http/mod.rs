//! HTTP: an actix-web server built from the route table, with JSON errors for every failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::routing::{
    invoke, Context, HandlerFn, Middleware, Origin, Request, Response, RouteTable,
};

/// HTTP settings.
#[derive(Clone, Debug)]
pub struct HttpSettings {
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

/// A started HTTP server.
pub struct HttpServer {
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
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and waits for requests in flight (up to the shutdown timeout).
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

#[derive(Clone)]
struct Shared {
    chain: Arc<[Middleware]>,
    context: Context,
    body_limit: usize,
}

fn error_response(status: u16, message: impl Into<String>) -> HttpResponse {
    let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status_code).json(json!({"error": message.into(), "status": status}))
}

fn to_http(response: Response) -> HttpResponse {
    let status =
        StatusCode::from_u16(response.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = HttpResponse::build(status);
    for (name, value) in response.headers() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            builder.insert_header((name, value));
        }
    }
    match response.content() {
        Value::Null => builder.finish(),
        content => builder
            .insert_header((CONTENT_TYPE, "application/json"))
            .body(content.to_string()),
    }
}

async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Value, HttpResponse> {
    let too_large = || {
        error_response(
            413,
            format!("request body larger than the {limit}-byte limit (http.body_limit)"),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| error_response(400, format!("unreadable request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body)
        .map_err(|e| error_response(400, format!("malformed JSON body: {e}")))
}

async fn handle(
    shared: Shared,
    handler: HandlerFn,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let content = match read_body(&request, payload, shared.body_limit).await {
        Ok(content) => content,
        Err(response) => return response,
    };
    let mut params: BTreeMap<String, String> =
        match web::Query::<BTreeMap<String, String>>::from_query(request.query_string()) {
            Ok(query) => query.into_inner(),
            Err(e) => return error_response(400, format!("malformed query string: {e}")),
        };
    for (name, value) in request.match_info().iter() {
        params.insert(name.to_owned(), value.to_owned());
    }
    let headers = request
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let origin = Origin::Http {
        method: request.method().to_string(),
        path: request.path().to_owned(),
    };
    let minos_request = Request::from_parts(content, params, headers, origin);
    match invoke(&shared.chain, handler, minos_request, &shared.context).await {
        Ok(response) => to_http(response),
        Err(error) => to_http(Response::from_error(&error)),
    }
}

/// `GET /spec/openapi`: the REST routes as an OpenAPI 3 document (paths, methods, path parameters,
/// the handler of each).
pub fn openapi(name: &str, table: &RouteTable) -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, entry) in table.rest_routes() {
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|param| json!({"name": param, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let operation = json!({
            "operationId": format!("{}::{}", entry.service, entry.function),
            "parameters": parameters,
            "responses": {"200": {"description": "success"}, "default": {"description": "an error: {\"error\", \"status\"}"}},
        });
        let item = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
        if let Value::Object(item) = item {
            item.insert(method.to_ascii_lowercase(), operation);
        }
    }
    json!({"openapi": "3.0.3", "info": {"title": name, "version": "1"}, "paths": paths})
}

/// `GET /spec/asyncapi`: the broker channels as an AsyncAPI 2 document (commands and queries it answers,
/// events it subscribes to).
pub fn asyncapi(name: &str, table: &RouteTable) -> Value {
    let mut channels = serde_json::Map::new();
    for entry in table.entries() {
        if let crate::routing::Route::Broker { kind, topic } = entry.route {
            channels.insert(
                topic.to_owned(),
                json!({"subscribe": {"operationId": format!("{}::{}", entry.service, entry.function), "description": format!("{kind:?}")}}),
            );
        }
    }
    json!({"asyncapi": "2.6.0", "info": {"title": name, "version": "1"}, "channels": channels})
}

fn health(name: String, addr: SocketAddr) -> HttpResponse {
    HttpResponse::Ok().json(
        json!({"status": "ok", "name": name, "host": addr.ip().to_string(), "port": addr.port()}),
    )
}

/// Starts the HTTP server for `table`'s REST routes and `GET /system/health`.
pub async fn serve(
    table: Arc<RouteTable>,
    chain: Arc<[Middleware]>,
    context: Context,
    settings: HttpSettings,
    system_routes: &[(&'static str, &'static str, HandlerFn)],
) -> Result<HttpServer> {
    let shared = Shared {
        chain,
        context,
        body_limit: settings.body_limit,
    };
    // Routes grouped by path, so a known path with another method answers 405 with `Allow`.
    let mut by_path: BTreeMap<&'static str, Vec<(&'static str, HandlerFn)>> = BTreeMap::new();
    for (method, path, entry) in table.rest_routes() {
        by_path
            .entry(path)
            .or_default()
            .push((method, entry.handler));
    }
    for (method, path, handler) in system_routes {
        by_path.entry(path).or_default().push((method, *handler));
    }
    let by_path = Arc::new(by_path);
    let name = shared.context.name().to_owned();
    let openapi_doc = Arc::new(openapi(&name, &table));
    let asyncapi_doc = Arc::new(asyncapi(&name, &table));
    let addr_cell: Arc<std::sync::OnceLock<SocketAddr>> = Arc::default();
    let addr_for_app = Arc::clone(&addr_cell);
    let factory = move || {
        let mut app = App::new();
        let addr = addr_for_app
            .get()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let health_name = name.clone();
        let (openapi_doc, asyncapi_doc) = (Arc::clone(&openapi_doc), Arc::clone(&asyncapi_doc));
        app = app
            .route(
                "/spec/openapi",
                web::get().to(move || {
                    let doc = Arc::clone(&openapi_doc);
                    async move { HttpResponse::Ok().json(&*doc) }
                }),
            )
            .route(
                "/spec/asyncapi",
                web::get().to(move || {
                    let doc = Arc::clone(&asyncapi_doc);
                    async move { HttpResponse::Ok().json(&*doc) }
                }),
            );
        app = app.route(
            "/system/health",
            web::get().to(move || {
                let name = health_name.clone();
                async move { health(name, addr) }
            }),
        );
        for (path, methods) in by_path.iter() {
            let mut resource = web::resource(*path);
            let allow = methods
                .iter()
                .map(|(m, _)| *m)
                .collect::<Vec<_>>()
                .join(", ");
            for (method, handler) in methods {
                let shared = shared.clone();
                let handler = *handler;
                let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
                resource = resource.route(web::method(method).to(
                    move |request: HttpRequest, payload: web::Payload| {
                        handle(shared.clone(), handler, request, payload)
                    },
                ));
            }
            resource = resource.default_service(web::to(move |request: HttpRequest| {
                let allow = allow.clone();
                async move {
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
            }));
            app = app.service(resource);
        }
        app.default_service(web::to(|request: HttpRequest| async move {
            error_response(
                404,
                format!("no route for {} {}", request.method(), request.path()),
            )
        }))
    };
    let mut server = actix_web::HttpServer::new(factory)
        .disable_signals()
        .shutdown_timeout(settings.shutdown_timeout.as_secs().max(1));
    if let Some(workers) = settings.workers {
        server = server.workers(workers.max(1));
    }
    let server = server
        .bind((settings.host.as_str(), settings.port))
        .map_err(|source| Error::Bind {
            address: format!("{}:{}", settings.host, settings.port),
            source,
        })?;
    let addr = server.addrs().first().copied().ok_or_else(|| Error::Bind {
        address: format!("{}:{}", settings.host, settings.port),
        source: std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "the server bound no address",
        ),
    })?;
    let _ = addr_cell.set(addr);
    let running = server.run();
    let handle = running.handle();
    let task = tokio::spawn(running);
    Ok(HttpServer { handle, task, addr })
}
