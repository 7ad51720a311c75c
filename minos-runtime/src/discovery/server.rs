//! The registry's HTTP API: the original registry's routes, so minos-python services register too,
//! plus instances, heartbeats and a versioned listing.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::Registry;
use crate::error::{Error, Result};

/// A running registry: its HTTP server and its background jobs.
#[derive(Debug)]
pub struct RegistryServer {
    server: crate::http::HttpServer,
    jobs: tokio::task::JoinHandle<()>,
}

impl RegistryServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops serving (requests in flight finish) and stops the jobs.
    pub async fn stop(self) {
        self.jobs.abort();
        self.server.stop().await;
    }
}

fn answer(result: Result<Value>, created: bool) -> HttpResponse {
    match result {
        Ok(body) if created => HttpResponse::Created().json(body),
        Ok(body) => HttpResponse::Ok().json(body),
        Err(error) => {
            if error.status() >= 500 {
                tracing::error!(%error, "registry request failed");
            }
            crate::http::to_http(crate::routing::Response::from_error(&error))
        }
    }
}

/// The request body as JSON: a 400 naming the problem when it is empty or malformed.
fn json_body(body: &web::Bytes) -> Result<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::bad_request(
            "empty body: send {\"address\", \"port\", \"endpoints\": [[\"GET\", \"/path\"], ...]}",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("malformed JSON body: {e}")))
}

/// A write needs the admin role when the registry checks tokens.
async fn admit(registry: &Registry, request: &HttpRequest) -> Result<()> {
    let Some(auth) = registry.auth() else {
        return Ok(());
    };
    let header = match request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
    {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            crate::auth::AuthError::Invalid("the Authorization header is not text".into())
        })?),
    };
    let principal = auth.authenticate(header).await?;
    let admin = crate::auth::Access::Admin.requirement(&auth.config().admin_role);
    auth.authorize(principal.as_ref(), &admin)?;
    Ok(())
}

async fn register(
    registry: web::Data<Registry>,
    name: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(error) = admit(&registry, &request).await {
        return answer(Err(error), false);
    }
    let result = match json_body(&body) {
        Ok(body) => registry.register(&name, &body).await,
        Err(error) => Err(error),
    };
    answer(result, true)
}

async fn unregister(
    registry: web::Data<Registry>,
    name: web::Path<String>,
    request: HttpRequest,
) -> HttpResponse {
    if let Err(error) = admit(&registry, &request).await {
        return answer(Err(error), false);
    }
    answer(registry.unregister(&name, None).await, false)
}

async fn unregister_instance(
    registry: web::Data<Registry>,
    path: web::Path<(String, String)>,
    request: HttpRequest,
) -> HttpResponse {
    if let Err(error) = admit(&registry, &request).await {
        return answer(Err(error), false);
    }
    let (name, instance) = path.into_inner();
    answer(registry.unregister(&name, Some(&instance)).await, false)
}

async fn heartbeat(
    registry: web::Data<Registry>,
    path: web::Path<(String, String)>,
    request: HttpRequest,
) -> HttpResponse {
    if let Err(error) = admit(&registry, &request).await {
        return answer(Err(error), false);
    }
    let (name, instance) = path.into_inner();
    answer(registry.heartbeat(&name, &instance).await, false)
}

/// `GET /microservices?verb=GET&path=/foos/1` resolves a request; without `verb` and `path` it lists
/// every instance (`?since=VERSION&wait_ms=N` waits for a change).
async fn microservices(registry: web::Data<Registry>, request: HttpRequest) -> HttpResponse {
    let query = web::Query::<std::collections::BTreeMap<String, String>>::from_query(
        request.query_string(),
    );
    let query = match query {
        Ok(query) => query.into_inner(),
        Err(e) => {
            return answer(
                Err(Error::bad_request(format!("malformed query string: {e}"))),
                false,
            )
        }
    };
    match (query.get("verb"), query.get("path")) {
        (Some(verb), Some(path)) => answer(registry.resolve(verb, path).await, false),
        (None, None) => {
            let since = match query.get("since").map(|s| s.parse::<u64>()) {
                None => None,
                Some(Ok(since)) => Some(since),
                Some(Err(_)) => {
                    return answer(
                        Err(Error::bad_request("`since` is a version number")),
                        false,
                    )
                }
            };
            let wait = match query.get("wait_ms").map(|s| s.parse::<u64>()) {
                None => Duration::ZERO,
                Some(Ok(ms)) => Duration::from_millis(ms.min(60_000)),
                Some(Err(_)) => {
                    return answer(
                        Err(Error::bad_request("`wait_ms` is a number of milliseconds")),
                        false,
                    )
                }
            };
            answer(registry.listing(since, wait).await, false)
        }
        _ => answer(
            Err(Error::bad_request(
                "Missing either 'verb' or 'path' query params",
            )),
            false,
        ),
    }
}

async fn endpoints(registry: web::Data<Registry>) -> HttpResponse {
    answer(registry.endpoints().await, false)
}

/// The registry's own health: its store answers within the services' health timeout.
async fn health(registry: web::Data<Registry>) -> HttpResponse {
    let (healthy, store) = crate::http::check(registry.store().ping()).await;
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "checks": {"store": store},
    });
    match healthy {
        true => HttpResponse::Ok().json(body),
        false => HttpResponse::ServiceUnavailable().json(body),
    }
}

async fn not_found(request: HttpRequest) -> HttpResponse {
    answer(
        Err(Error::not_found(format!(
            "no route for {} {}",
            request.method(),
            request.path()
        ))),
        false,
    )
}

/// Serves `registry` on `host:port` (0 picks a free port) and runs its jobs.
pub async fn serve_registry(registry: Registry, host: &str, port: u16) -> Result<RegistryServer> {
    let jobs = registry.spawn_jobs();
    let metrics = registry.metrics().clone();
    let data = web::Data::new(registry);
    let server = actix_web::HttpServer::new(move || {
        let counted = metrics.clone();
        let shown = metrics.clone();
        App::new()
            .app_data(data.clone())
            // Every answer counted and timed by route template (`/microservices/{name}`).
            .wrap_fn(move |request, service| {
                use actix_web::dev::Service;
                let started = std::time::Instant::now();
                let method = request.method().to_string();
                let route = request.match_pattern();
                let metrics = counted.clone();
                let answer = service.call(request);
                async move {
                    let response = answer.await?;
                    if let Some(route) = route {
                        metrics.http_request(
                            &method,
                            route,
                            response.status().as_u16(),
                            started.elapsed(),
                        );
                    }
                    Ok(response)
                }
            })
            .route(
                "/metrics",
                web::get().to(move || {
                    let metrics = shown.clone();
                    async move {
                        if !metrics.enabled() {
                            return crate::http::to_http(crate::routing::Response::from_error(
                                &Error::not_found("metrics are off (telemetry.metrics: false)"),
                            ));
                        }
                        HttpResponse::Ok()
                            .content_type(crate::telemetry::metrics::CONTENT_TYPE)
                            .body(metrics.render())
                    }
                }),
            )
            .app_data(web::PayloadConfig::new(1024 * 1024))
            .route("/microservices", web::get().to(microservices))
            .route("/microservices/{name}", web::post().to(register))
            .route("/microservices/{name}", web::delete().to(unregister))
            .route(
                "/microservices/{name}/instances/{instance}",
                web::delete().to(unregister_instance),
            )
            .route(
                "/microservices/{name}/instances/{instance}/heartbeat",
                web::put().to(heartbeat),
            )
            .route("/endpoints", web::get().to(endpoints))
            .route("/system/health", web::get().to(health))
            .route(
                "/system/live",
                web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "ok"})) }),
            )
            .default_service(web::to(not_found))
    })
    .disable_signals()
    .shutdown_timeout(5);
    let server = crate::http::HttpServer::run(host, port, || {
        let server = server.bind((host, port))?;
        Ok((server.addrs(), move || server.run()))
    })?;
    tracing::info!("registry listening on http://{}", server.addr());
    Ok(RegistryServer { server, jobs })
}
