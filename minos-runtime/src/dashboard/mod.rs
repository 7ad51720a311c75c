//! The dashboard (`minos dashboard`, port 5568): one page that shows the system — the services and
//! instances the registry knows with their health and routes, each instance's saga executions (steps,
//! participants, errors), dead letters, outbox backlog and view lag, and the log lines of one trace
//! across services (read from the log topic the services ship to with `log.aggregate`).
//!
//! The page is served by the dashboard itself (no CDN: it works offline). With an `auth:` section its
//! data needs an access token with the admin role, which it passes on to the services.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, App, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::auth::{Access, Authenticator};
use crate::error::{Error, Result};
#[cfg(feature = "kafka")]
use crate::telemetry::ship::LogBatch;
use crate::telemetry::ship::{LogFilter, LogRecord};

/// The page.
const PAGE: &str = include_str!("page.html");

/// How long the dashboard waits for the registry and for each instance.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// What the dashboard needs.
#[derive(Clone, Debug)]
pub struct DashboardSettings {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on (0 picks a free one).
    pub port: u16,
    /// The registry (`http://127.0.0.1:5567`).
    pub registry_url: String,
    /// The Kafka broker the services ship their log records to (`kafka://HOST:PORT`); none: no logs.
    pub broker: Option<String>,
    /// Checks the admin token of every data request when set.
    pub auth: Option<Authenticator>,
    /// Log records kept in memory (the newest).
    pub log_buffer: usize,
}

/// A running dashboard.
#[derive(Debug)]
pub struct DashboardServer {
    server: crate::http::HttpServer,
    logs: Option<tokio::task::JoinHandle<()>>,
}

impl DashboardServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.server.stop().await;
        if let Some(logs) = self.logs {
            logs.abort();
        }
    }
}

struct State {
    registry: String,
    auth: Option<Authenticator>,
    logs: Option<Mutex<VecDeque<LogRecord>>>,
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    capacity: usize,
}

/// Starts the dashboard; with a broker, it also starts reading the log topic from its beginning.
pub async fn serve_dashboard(settings: DashboardSettings) -> Result<DashboardServer> {
    let registry = crate::gateway::registry_authority(&settings.registry_url)?;
    let capacity = settings.log_buffer.max(1);
    let state = Arc::new(State {
        registry,
        auth: settings.auth.clone(),
        logs: settings
            .broker
            .as_ref()
            .map(|_| Mutex::new(VecDeque::with_capacity(capacity.min(4096)))),
        capacity,
    });
    let logs = match &settings.broker {
        None => None,
        Some(broker) => Some(follow_logs(broker, Arc::clone(&state)).await?),
    };
    let data = web::Data::from(Arc::clone(&state));
    let server = actix_web::HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route(
                "/",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("text/html; charset=utf-8")
                        .body(PAGE)
                }),
            )
            .route("/api/overview", web::get().to(overview))
            .route("/api/logs", web::get().to(logs_endpoint))
            .route(
                "/system/health",
                web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "ok"})) }),
            )
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2);
    let server = crate::http::HttpServer::run(&settings.host, settings.port, || {
        let server = server.bind((settings.host.as_str(), settings.port))?;
        Ok((server.addrs(), move || server.run()))
    })?;
    tracing::info!("dashboard listening on http://{}", server.addr());
    Ok(DashboardServer { server, logs })
}

/// Keeps the newest records of the log topic in memory, from the oldest the broker keeps.
async fn follow_logs(broker: &str, state: Arc<State>) -> Result<tokio::task::JoinHandle<()>> {
    #[cfg(feature = "kafka")]
    if let Some(bootstrap) = broker.strip_prefix("kafka://") {
        let kafka = crate::messaging::KafkaBroker::connect(
            bootstrap,
            crate::messaging::KafkaOptions::from_env()?,
        )?;
        let mut messages = kafka.tail(crate::telemetry::LOG_TOPIC, true).await?;
        return Ok(tokio::spawn(async move {
            while let Some(message) = messages.recv().await {
                let Ok(batch) = serde_json::from_value::<LogBatch>(message.payload.content) else {
                    continue;
                };
                if let Some(logs) = &state.logs {
                    let mut logs = logs.lock().unwrap_or_else(|p| p.into_inner());
                    for record in batch.records {
                        if logs.len() == state.capacity {
                            logs.pop_front();
                        }
                        logs.push_back(record);
                    }
                }
            }
        }));
    }
    let _ = &state;
    Err(Error::Config(format!(
        "--broker `{broker}`: the dashboard reads log records from Kafka: write kafka://HOST:PORT"
    )))
}

/// `GET /api/overview`: the registry's services, each instance with its health and overview.
async fn overview(state: web::Data<State>, request: HttpRequest) -> HttpResponse {
    if let Err(refused) = crate::http::admit(state.auth.as_ref(), &request, Access::Admin).await {
        return refused;
    }
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let listing = crate::net::request(&state.registry, "GET", "/microservices", None, CALL_TIMEOUT)
        .await
        .and_then(|answer| match answer.status {
            200 => serde_json::from_slice::<Value>(&answer.body).map_err(|e| e.to_string()),
            status => Err(format!("the registry answered {status}: {}", answer.text())),
        });
    let (reachable, error, mut services) = match listing {
        Ok(listing) => (
            true,
            None,
            listing["services"].as_array().cloned().unwrap_or_default(),
        ),
        Err(error) => (false, Some(error), Vec::new()),
    };
    // Every instance at once.
    let mut calls = Vec::new();
    for (s, service) in services.iter().enumerate() {
        for (i, instance) in service["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let authority = format!(
                "{}:{}",
                instance["address"].as_str().unwrap_or("127.0.0.1"),
                instance["port"].as_u64().unwrap_or(0)
            );
            let token = token.clone();
            calls.push(async move { ((s, i), instance_state(&authority, token).await) });
        }
    }
    let answers: BTreeMap<(usize, usize), Value> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .collect();
    for (s, service) in services.iter_mut().enumerate() {
        if let Some(instances) = service["instances"].as_array_mut() {
            for (i, instance) in instances.iter_mut().enumerate() {
                if let (Some(fields), Some(Value::Object(found))) =
                    (instance.as_object_mut(), answers.get(&(s, i)))
                {
                    fields.extend(found.clone());
                }
            }
        }
    }
    HttpResponse::Ok().json(json!({
        "registry": {"reachable": reachable, "error": error},
        "services": services,
        "logs": {"enabled": state.logs.is_some()},
    }))
}

/// One instance's `/system/health` and `/system/overview` (`error` says what failed).
async fn instance_state(authority: &str, token: Option<String>) -> Value {
    let headers: Vec<(&str, &str)> = token
        .as_deref()
        .map(|token| vec![("authorization", token)])
        .unwrap_or_default();
    let get = |path: &'static str| {
        let headers = headers.clone();
        async move {
            crate::net::request_with(authority, "GET", path, &headers, None, CALL_TIMEOUT)
                .await
                .and_then(|answer| {
                    let body: Value = serde_json::from_slice(&answer.body)
                        .map_err(|e| format!("{path}: not JSON: {e}"))?;
                    match answer.status {
                        200 | 503 if path == "/system/health" => Ok(body),
                        200 => Ok(body),
                        status => Err(format!(
                            "{path} answered {status}: {}",
                            body["error"].as_str().unwrap_or_default()
                        )),
                    }
                })
        }
    };
    let (health, overview) = tokio::join!(get("/system/health"), get("/system/overview"));
    let errors: Vec<&String> = [&health, &overview]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
        .collect();
    json!({
        "health": health.as_ref().ok(),
        "overview": overview.as_ref().ok(),
        "error": (!errors.is_empty()).then(|| errors.iter().map(|e| e.as_str()).collect::<Vec<_>>().join("; ")),
    })
}

/// `GET /api/logs?trace=&service=&level=&since=&limit=`: the kept records that match, oldest first.
async fn logs_endpoint(state: web::Data<State>, request: HttpRequest) -> HttpResponse {
    if let Err(refused) = crate::http::admit(state.auth.as_ref(), &request, Access::Admin).await {
        return refused;
    }
    let query = match web::Query::<BTreeMap<String, String>>::from_query(request.query_string()) {
        Ok(query) => query.into_inner(),
        Err(e) => {
            return crate::http::to_http(crate::routing::Response::from_error(&Error::bad_request(
                format!("malformed query string: {e}"),
            )))
        }
    };
    let now = chrono::Utc::now();
    let since = match query
        .get("since")
        .map(|s| crate::telemetry::ship::parse_time(s, now))
        .transpose()
    {
        Ok(since) => since,
        Err(error) => {
            return crate::http::to_http(crate::routing::Response::from_error(&Error::bad_request(
                error,
            )))
        }
    };
    let filter = LogFilter {
        services: query.get("service").cloned().into_iter().collect(),
        level: query.get("level").cloned(),
        trace_id: query.get("trace").map(|t| t.to_ascii_lowercase()),
        since,
        until: None,
    };
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(500);
    let Some(logs) = &state.logs else {
        return HttpResponse::Ok().json(json!({"enabled": false, "records": []}));
    };
    let records: Vec<LogRecord> = {
        let logs = logs.lock().unwrap_or_else(|p| p.into_inner());
        let mut matching: Vec<LogRecord> = logs
            .iter()
            .rev()
            .filter(|r| filter.matches(r))
            .take(limit)
            .cloned()
            .collect();
        matching.reverse();
        matching
    };
    HttpResponse::Ok().json(json!({"enabled": true, "records": records}))
}
