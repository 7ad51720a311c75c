//! The gateway's HTTP server: hyper over HTTP/1.1 with keep-alive, each request answered by the
//! gateway itself (health, CORS preflight, composed routes, errors) or forwarded to a service.
//!
//! Connections are accepted in one place and handed in turn to worker threads, one per core, each
//! with a single-threaded runtime and a client pool of its own: a request, the connection it goes
//! out on and its answer stay on one thread (as in nginx's worker processes), never waking another.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN,
    WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::compose::ComposePlan;
use super::cors::{Cors, Preflight};
use super::pool::{Pool, SWEEP_PERIOD};
use super::proxy::{self, GatewayBody, Outgoing, Peer};
use super::table::{Index, Table, Timeouts};
use crate::auth::{AuthError, Authenticator};

/// What every request reads: the route table (swapped whole when the registry changes) and the
/// configuration, checked once.
pub(crate) struct State {
    /// The route table, one copy per worker thread: requests on one thread never write to memory
    /// another thread's requests use (reference counts, round-robin counters, ejections).
    tables: Box<[Slot]>,
    /// Whether the last call to the registry succeeded.
    pub(crate) registry_reachable: AtomicBool,
    pub(crate) body_limit: usize,
    pub(crate) cors: Option<Cors>,
    pub(crate) compose: Index<ComposePlan>,
    pub(crate) auth: Option<Authenticator>,
    pub(crate) timeouts: Timeouts,
    /// Requests answered, by route template and status (`GET /metrics`).
    pub(crate) metrics: crate::telemetry::Metrics,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("routes", &self.table().len())
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

/// One worker's table, alone on its cache lines.
#[repr(align(128))]
struct Slot(RwLock<Arc<Table>>);

impl State {
    pub(crate) fn new(
        workers: usize,
        body_limit: usize,
        cors: Option<Cors>,
        compose: Index<ComposePlan>,
        auth: Option<Authenticator>,
        timeouts: Timeouts,
    ) -> State {
        State {
            tables: (0..workers.max(1))
                .map(|_| Slot(RwLock::new(Arc::new(Table::default()))))
                .collect(),
            registry_reachable: AtomicBool::new(false),
            body_limit,
            cors,
            compose,
            auth,
            timeouts,
            metrics: crate::telemetry::Metrics::http_only(),
        }
    }

    /// The current route table (the first worker's copy).
    pub(crate) fn table(&self) -> Arc<Table> {
        self.worker_table(0)
    }

    /// Worker `index`'s copy of the route table.
    pub(crate) fn worker_table(&self, index: usize) -> Arc<Table> {
        let slot = &self.tables[index % self.tables.len()].0;
        Arc::clone(&slot.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces every worker's table with one built by `build` from that worker's previous one.
    pub(crate) fn set_tables(
        &self,
        mut build: impl FnMut(&Table) -> Result<Table, String>,
    ) -> Result<(), String> {
        for slot in self.tables.iter() {
            let previous = Arc::clone(&slot.0.read().unwrap_or_else(|e| e.into_inner()));
            let table = Arc::new(build(&previous)?);
            *slot.0.write().unwrap_or_else(|e| e.into_inner()) = table;
        }
        Ok(())
    }
}

/// One worker thread's view: the shared state and the thread's own connections to the instances.
pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) state: Arc<State>,
    pub(crate) pool: Pool,
}

/// An answer with a JSON body.
pub(crate) fn json_response(status: u16, body: &Value) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(body.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An error the way the services answer theirs: `{"error": message, "status": status}`.
pub(crate) fn json_error(status: u16, message: impl Into<String>) -> Response<GatewayBody> {
    json_response(status, &json!({"error": message.into(), "status": status}))
}

/// A refused caller: 401 (with `WWW-Authenticate`) or 403.
pub(crate) fn auth_error(error: &AuthError) -> Response<GatewayBody> {
    let status = error.status();
    let mut response = json_error(status, error.message());
    if status == 401 {
        if let Ok(challenge) = HeaderValue::from_str(&error.www_authenticate()) {
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
    }
    response
}

/// The `Authorization` header as the authenticator reads it (a value that is not text is sent as an
/// empty one, which does not verify).
fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or_default())
}

/// Reads the whole request body, refusing more than `limit` bytes with 413 (announced or sent).
async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, Response<GatewayBody>> {
    let too_large = || {
        json_error(
            413,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => Err(json_error(
            400,
            format!("the request body could not be read: {error}"),
        )),
    }
}

/// `GET /system/health`: the gateway serves; how many routes it knows and whether the registry
/// answered last time.
fn health(state: &State) -> Response<GatewayBody> {
    let table = state.table();
    let reachable = state.registry_reachable.load(Ordering::Relaxed);
    json_response(
        200,
        &json!({
            "status": "ok",
            "routes": table.len() + state.compose.len(),
            "registry": if reachable { "ok" } else { "unreachable" },
            "version": table.version,
        }),
    )
}

/// Answers one request, counted and timed in the metrics by the route template it matched.
pub(crate) async fn handle(
    worker: &Worker,
    peer: &Peer,
    request: Request<Incoming>,
) -> Response<GatewayBody> {
    let metrics = &worker.state.metrics;
    // The route template the request matched (`/foos/{uuid}`), set where it is resolved; `unmatched`
    // otherwise (bounded label values).
    let mut route = Cow::Borrowed("unmatched");
    if !metrics.enabled() {
        return answer(worker, peer, request, &mut route).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let response = answer(worker, peer, request, &mut route).await;
    metrics.http_request(
        method.as_str(),
        route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The route template of `method path` (compositions first), for a request the gateway answers
/// itself (a CORS preflight).
fn template_of(worker: &Worker, method: &Method, path: &str) -> Option<String> {
    let state = &*worker.state;
    if let Some((template, _)) = state.compose.resolve(method, path) {
        return Some(template.as_str().to_owned());
    }
    let table = state.worker_table(worker.index);
    let found = table.routes.resolve(method, path);
    found.map(|(template, _)| template.as_str().to_owned())
}

async fn answer(
    worker: &Worker,
    peer: &Peer,
    request: Request<Incoming>,
    route: &mut Cow<'static, str>,
) -> Response<GatewayBody> {
    let Some(cors) = &worker.state.cors else {
        return dispatch(worker, peer, request, route).await;
    };
    if Cors::is_preflight(request.method(), request.headers()) {
        if let Some(template) = template_of(worker, request.method(), request.uri().path()) {
            *route = Cow::Owned(template);
        }
        return match cors.preflight(request.headers()) {
            Preflight::Allowed(headers) => {
                let mut response = Response::new(GatewayBody::full(Bytes::new()));
                *response.status_mut() = StatusCode::NO_CONTENT;
                *response.headers_mut() = headers;
                response
            }
            Preflight::Refused(reason) => json_error(403, format!("CORS: {reason}")),
        };
    }
    let origin = request.headers().get(ORIGIN).cloned();
    let mut response = dispatch(worker, peer, request, route).await;
    if let Some(origin) = origin {
        cors.decorate(&origin, response.headers_mut());
    }
    response
}

async fn dispatch(
    worker: &Worker,
    peer: &Peer,
    request: Request<Incoming>,
    label: &mut Cow<'static, str>,
) -> Response<GatewayBody> {
    let state = &*worker.state;
    let method = request.method();
    let path = request.uri().path();
    if let Some(own) = ["/system/health", "/system/live", "/metrics"]
        .into_iter()
        .find(|own| *own == path)
    {
        *label = Cow::Borrowed(own);
    }
    // Answered without reading a body the caller sends: the connection cannot carry another
    // request.
    let unread = !request.body().is_end_stream();
    let early = |response| match unread {
        true => closing(response),
        false => response,
    };
    if path.starts_with("/system/") && (method == Method::GET || method == Method::HEAD) {
        match path {
            "/system/health" => return early(health(state)),
            "/system/live" => return early(json_response(200, &json!({"status": "ok"}))),
            _ => {}
        }
    }
    if path == "/metrics"
        && method == Method::GET
        && state.metrics.enabled()
        && state.table().routes.resolve(method, path).is_none()
    {
        let mut response = Response::new(GatewayBody::full(Bytes::from(state.metrics.render())));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static(crate::telemetry::metrics::CONTENT_TYPE),
        );
        return early(response);
    }
    if let Some((template, plan)) = state.compose.resolve(method, path) {
        *label = Cow::Owned(template.as_str().to_owned());
        let path = path.to_owned();
        let headers = request.headers();
        // Boxed, like the other rare paths below, to keep the future of every request small.
        let composed = Box::pin(super::compose::run(
            worker, plan, template, &path, headers, peer,
        ));
        return early(composed.await);
    }
    let table = state.worker_table(worker.index);
    let Some((template, route)) = table.routes.resolve(method, path) else {
        return early(no_route(state, &table, method, path));
    };
    *label = Cow::Owned(template.as_str().to_owned());
    if let Some(auth) = &state.auth {
        let verdict = match Box::pin(auth.authenticate(authorization(request.headers()))).await {
            Ok(principal) => auth.authorize(principal.as_ref(), &route.requirement),
            Err(error) => Err(error),
        };
        if let Err(error) = verdict {
            return early(auth_error(&error));
        }
    }
    let (mut parts, body) = request.into_parts();
    let body = match unread {
        false => Bytes::new(),
        true => match Box::pin(read_body(body, &parts.headers, state.body_limit)).await {
            Ok(body) => body,
            Err(response) => return closing(response),
        },
    };
    proxy::outgoing_headers(&mut parts.headers, peer);
    let forward = |mut parts: hyper::http::request::Parts| async move {
        // Exporting spans, the gateway is a hop of the trace: the instance's parent is its span.
        if let Some(trace) = crate::telemetry::TraceContext::current() {
            if let Ok(value) = HeaderValue::try_from(trace.traceparent()) {
                parts.headers.insert(TRACEPARENT, value);
            }
        }
        let outgoing = Outgoing::from_parts(parts, body);
        let (method, path) = (outgoing.method.clone(), outgoing.path_and_query.clone());
        let deadline = Instant::now() + route.timeout;
        match proxy::forward(&worker.pool, route, outgoing, deadline, route.timeout).await {
            Ok(response) => proxy::incoming_response(response),
            Err(failure) => json_error(failure.status(), failure.message(&method, path.path())),
        }
    };
    if !crate::telemetry::trace::exporting() {
        return forward(parts).await;
    }
    Box::pin(traced(parts, template.as_str(), forward)).await
}

const TRACEPARENT: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static(crate::telemetry::trace::TRACEPARENT);

/// Runs `forward` in a span of the gateway's, below the caller's `traceparent` (or a new trace), when
/// spans are exported.
async fn traced<F, Fut>(
    parts: hyper::http::request::Parts,
    template: &str,
    forward: F,
) -> Response<GatewayBody>
where
    F: FnOnce(hyper::http::request::Parts) -> Fut,
    Fut: std::future::Future<Output = Response<GatewayBody>>,
{
    let parent = crate::telemetry::TraceContext::from_headers(|name| {
        parts.headers.get(name).and_then(|v| v.to_str().ok())
    });
    let span = tracing::info_span!(
        "gateway",
        route = %format_args!("{} {template}", parts.method),
        trace_id = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    crate::telemetry::trace::name_span(
        &span,
        format_args!("gateway {} {template}", parts.method),
        "server",
    );
    crate::telemetry::trace::run_in(span, parent, forward(parts)).await
}

/// Marks an answer as the connection's last, so that the caller opens another for its next request.
fn closing(mut response: Response<GatewayBody>) -> Response<GatewayBody> {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 405 with `Allow` when the path has routes for other methods, else 404.
fn no_route(state: &State, table: &Table, method: &Method, path: &str) -> Response<GatewayBody> {
    let mut allowed = table.routes.methods_for(path);
    for other in state.compose.methods_for(path) {
        if !allowed.contains(&other) {
            allowed.push(other);
        }
    }
    if allowed.is_empty() {
        return json_error(404, format!("no route for {method} {path}"));
    }
    let allow = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut response = json_error(
        405,
        format!("{method} is not allowed on {path}; allowed: {allow}"),
    );
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

/// Where the acceptor hands a connection (and the caller's address) to a worker.
pub(crate) type Handoff = mpsc::UnboundedSender<(std::net::TcpStream, IpAddr)>;

/// A worker thread: serves the connections handed to it until the acceptor stops, then lets the
/// requests in flight finish (up to `grace`).
pub(crate) fn spawn_worker(
    index: usize,
    state: Arc<State>,
    connect_timeout: Duration,
    grace: Duration,
) -> std::io::Result<(Handoff, oneshot::Receiver<()>)> {
    let (streams, mut incoming) = mpsc::unbounded_channel();
    let (done, finished) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("minos-gateway-{index}"))
        .spawn(move || {
            runtime.block_on(async move {
                let pool = Pool::new(connect_timeout);
                let sweeper = tokio::spawn({
                    let pool = pool.clone();
                    async move {
                        let mut every = tokio::time::interval(SWEEP_PERIOD);
                        loop {
                            every.tick().await;
                            pool.sweep();
                        }
                    }
                });
                let worker = Arc::new(Worker { index, state, pool });
                let graceful = GracefulShutdown::new();
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .header_read_timeout(Duration::from_secs(30));
                while let Some((stream, client)) = incoming.recv().await {
                    let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                        continue;
                    };
                    let worker = Arc::clone(&worker);
                    let peer = Arc::new(Peer::new(client));
                    let service = service_fn(move |request| {
                        let (worker, peer) = (Arc::clone(&worker), Arc::clone(&peer));
                        async move { Ok::<_, Infallible>(handle(&worker, &peer, request).await) }
                    });
                    let connection =
                        graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                    // Unconstrained: hyper yields between requests by itself, and tokio's
                    // cooperative budget would only add bookkeeping to every read and write.
                    tokio::spawn(tokio::task::unconstrained(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "connection closed with an error");
                        }
                    }));
                }
                if tokio::time::timeout(grace, graceful.shutdown())
                    .await
                    .is_err()
                {
                    tracing::warn!(?grace, "requests still in flight at shutdown were cut");
                }
                sweeper.abort();
            });
            let _ = done.send(());
        })?;
    Ok((streams, finished))
}

/// Accepts connections until `stop` fires, handing them to `workers` in turn.
pub(crate) async fn accept(
    listener: TcpListener,
    workers: Vec<Handoff>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut next = 0usize;
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, usually: give connections a moment to close.
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        next = next.wrapping_add(1);
        if workers[next % workers.len()]
            .send((stream, remote.ip()))
            .is_err()
        {
            tracing::error!("a gateway worker thread is gone");
        }
    }
}

/// The address a listener got.
pub(crate) fn local_addr(listener: &TcpListener, address: &str) -> crate::Result<SocketAddr> {
    listener.local_addr().map_err(|source| crate::Error::Bind {
        address: address.to_owned(),
        source,
    })
}
