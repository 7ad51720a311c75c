//! The API gateway (`minos gateway`): one address for every service's REST routes, routed with the
//! registry's table and answered the way the services answer.
//!
//! # Routing
//!
//! A background task long-polls the registry's listing (`GET /microservices?since=V&wait_ms=N`) and
//! rebuilds the route table whenever the registry's version moves: each registered `[method, path]`
//! (or `[method, path, {"auth": true, "roles": [...]}]`) becomes a route to the instances that are
//! up (`status` and `healthy`). No request asks the registry anything: it is resolved against the
//! table in memory, to the most specific template (`/foos/example` before `/foos/{uuid}`), and the
//! route's instances are taken in turn. When the registry does not answer, the gateway keeps
//! routing with the table it has and asks again with backoff; at start it waits briefly for the
//! first table, and starts without one when the registry is down.
//!
//! # Forwarding
//!
//! Requests go over pooled keep-alive connections. The request body is read first (up to
//! `http.body_limit`, else `413`), so that it can be sent again: a connection that is refused moves
//! the request to the next instance whatever its method (nothing reached a service), and the
//! refusing instance is passed over for two seconds; a failure after sending moves it on only for
//! idempotent methods (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`). The response streams back as it
//! arrives. Hop-by-hop headers (`Connection` and those it names, `Keep-Alive`, `Proxy-*`, `TE`,
//! `Trailer`, `Transfer-Encoding`, `Upgrade`) are dropped both ways; the caller's address is
//! appended to `X-Forwarded-For`, and `X-Forwarded-Proto` and `X-Forwarded-Host` are added unless a
//! proxy before the gateway set them. `Authorization` is passed on unchanged: the services verify
//! it again.
//!
//! Failures are JSON like the services' errors, `{"error": "...", "status": N}`:
//!
//! | status | when |
//! | --- | --- |
//! | 404 | no route matches the path |
//! | 405 | the path has routes, for other methods (with `Allow`) |
//! | 401, 403 | with an `auth:` section: the token does not verify, or lacks the route's roles |
//! | 413 | the body is larger than `http.body_limit` |
//! | 502 | an instance failed while the request was under way |
//! | 503 | the route has no instance up, or all refused the connection |
//! | 504 | no response head within the route's timeout (`gateway.timeout_ms`, `gateway.timeouts`) |
//!
//! Connections are accepted on one task and handed in turn to worker threads (`gateway.workers`,
//! default one per core), each a single-threaded runtime with its own copy of
//! the route table and its own keep-alive connections to the instances. A request, the connection
//! it goes out on and its answer stay on one thread, and the upstream connection is driven by the
//! request's own task (no task per connection, no hand-over between tasks), as nginx's worker
//! processes do.
//!
//! The gateway answers `GET /system/health` itself (`{"status": "ok", "routes", "registry": "ok" |
//! "unreachable", "version"}`) and `GET /system/live`.
//!
//! # CORS
//!
//! With `gateway.cors.allow_origins`, preflight requests (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) are answered by the gateway: `204` with the allowed methods and
//! headers, or `403` for an origin or method not allowed. Answers to allowed origins carry
//! `Access-Control-Allow-Origin` (and `Expose-Headers`, `Allow-Credentials` as configured).
//!
//! # Composed routes
//!
//! A composed route is answered by the gateway from several calls to the services:
//!
//! ```yaml
//! gateway:
//!   compose:
//!     - route: GET /foos/{uuid}/full
//!       timeout_ms: 3000            # each part's, answer included (default gateway.timeout_ms)
//!       parts:
//!         foo: GET /foos/{uuid}     # {uuid} from the composed route's path
//!         foobar: {call: "GET /foobars/{foo.foobar}", optional: true}
//! ```
//!
//! - Each part is a call `METHOD /path`. `{name}` is a parameter of the composed route;
//!   `{part.field}` (or `{part.a.b}`) is a field of another part's JSON answer, and makes the part
//!   wait for that one. Parts that wait for nothing run at once, concurrently. Unknown names and
//!   cycles are refused when the gateway starts.
//! - Each call goes through the gateway's own routing, with the caller's `Authorization`, and the
//!   part's route requirement is enforced as for any request.
//! - The answer is `{"foo": <foo's JSON>, "foobar": <foobar's JSON>}`.
//! - A required part that fails fails the whole answer: with the part's status when it is a 4xx
//!   (`404` for a missing field too), else `502`, as `{"error": "part `foo`: ...", "status": 404}`.
//! - An optional part that fails (or whose input is missing) is `null`, and the reason is listed in
//!   `"_partial": {"foobar": "..."}`.

mod compose;
mod config;
mod cors;
mod pool;
mod proxy;
mod server;
mod table;
mod watch;

pub(crate) use watch::registry_authority;

pub use config::{ComposeConfig, CorsConfig, GatewayConfig, PartConfig, PartSpec};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::auth::Authenticator;
use crate::error::{Error, Result};
use server::State;

/// How long the gateway waits for the registry's first table before it serves anyway.
const FIRST_TABLE_WAIT: Duration = Duration::from_secs(3);
/// How long stopping waits for the requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Where and how a gateway runs.
#[derive(Clone)]
pub struct GatewaySettings {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on (0 picks a free one).
    pub port: u16,
    /// Largest accepted request body, in bytes (`http.body_limit`).
    pub body_limit: usize,
    /// The registry: `http://HOST:PORT` (`discovery.url`).
    pub registry_url: String,
    /// The `gateway:` section.
    pub config: GatewayConfig,
    /// Token verification (the `auth:` section); `None` forwards every request as it is.
    pub auth: Option<Authenticator>,
    /// Requests counted for `GET /metrics` (`telemetry.metrics`); off: `/metrics` answers 404.
    pub metrics: bool,
}

impl std::fmt::Debug for GatewaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("body_limit", &self.body_limit)
            .field("registry_url", &self.registry_url)
            .field("config", &self.config)
            .field("auth", &self.auth.is_some())
            .field("metrics", &self.metrics)
            .finish()
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct GatewayServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    workers: Vec<oneshot::Receiver<()>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl GatewayServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, lets the requests in flight finish (up to ten seconds), and
    /// stops following the registry.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        // The acceptor ends, dropping its hand-offs: each worker drains its connections and ends.
        let _ = self.server.await;
        for worker in self.workers {
            let _ = worker.await;
        }
        self.watcher.abort();
        let _ = self.watcher.await;
    }
}

/// Starts a gateway: checks the configuration (composed routes, timeouts, CORS), binds
/// `host:port`, waits briefly for the registry's first table, and serves.
pub async fn serve_gateway(settings: GatewaySettings) -> Result<GatewayServer> {
    let config = &settings.config;
    if settings.body_limit == 0 {
        return Err(Error::Config("http.body_limit must be above 0".into()));
    }
    let registry = watch::registry_authority(&settings.registry_url)?;
    let timeouts =
        table::Timeouts::new(config.timeout_ms, &config.timeouts).map_err(Error::Config)?;
    let cors = cors::Cors::new(&config.cors).map_err(Error::Config)?;
    let compose = compose::plans(config).map_err(Error::Config)?;
    let connect_timeout = Duration::from_millis(config.connect_timeout_ms.max(1));
    let address = format!("{}:{}", settings.host, settings.port);
    let listener = TcpListener::bind((settings.host.as_str(), settings.port))
        .await
        .map_err(|source| Error::Bind {
            address: address.clone(),
            source,
        })?;
    let addr = server::local_addr(&listener, &address)?;
    let count = config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let state = Arc::new(State::new(
        count,
        settings.body_limit,
        cors,
        compose,
        settings.auth,
        timeouts,
    ));
    state.metrics.set_enabled(settings.metrics);
    let (loaded, first) = oneshot::channel();
    let watcher = tokio::spawn(watch::watch(
        Arc::clone(&state),
        proxy::client(connect_timeout),
        registry.clone(),
        Duration::from_millis(config.poll_wait_ms.max(1)),
        loaded,
    ));
    let _ = tokio::time::timeout(FIRST_TABLE_WAIT, first).await;
    let mut handoffs = Vec::with_capacity(count);
    let mut workers = Vec::with_capacity(count);
    for index in 0..count {
        let (handoff, finished) =
            server::spawn_worker(index, Arc::clone(&state), connect_timeout, SHUTDOWN_GRACE)?;
        handoffs.push(handoff);
        workers.push(finished);
    }
    let (stop, stopped) = oneshot::channel();
    let server = tokio::spawn(server::accept(listener, handoffs, stopped));
    tracing::info!(%registry, routes = state.table().len(), "gateway listening on http://{addr}");
    Ok(GatewayServer {
        addr,
        stop,
        server,
        workers,
        watcher,
    })
}
