//! Prometheus metrics of one service (`GET /metrics`): HTTP requests, broker messages, sagas, store
//! operations, and, read when scraped, the outbox backlog and the views' lag.
//!
//! Each service keeps its own registry (several services in one process keep apart). Names follow
//! Prometheus conventions: a `minos_` prefix, units in names, `_total` counters.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: Cow<'static, str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    topic: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SagaLabels {
    saga: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SagaNameLabels {
    saga: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewLabels {
    view: String,
    source: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 100 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

fn long_latency() -> Histogram {
    // 1 ms to ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// What a broker message came to, for `minos_broker_messages_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Its handlers ran and their writes committed (a refused command, answered, counts too).
    Handled,
    /// An event handler failed and is retried.
    Retried,
    /// Handling failed and the message will be delivered again.
    Failed,
    /// Parked on the dead-letter topic after its retries.
    DeadLettered,
    /// Already handled: skipped by the inbox.
    Duplicate,
    /// A re-driven dead letter meant for another service: skipped.
    NotOurs,
    /// A request past its deadline: not run.
    Expired,
    /// No handler for its topic.
    NoHandler,
}

impl MessageOutcome {
    fn label(self) -> &'static str {
        match self {
            MessageOutcome::Handled => "handled",
            MessageOutcome::Retried => "retried",
            MessageOutcome::Failed => "failed",
            MessageOutcome::DeadLettered => "dead_lettered",
            MessageOutcome::Duplicate => "duplicate",
            MessageOutcome::NotOurs => "not_ours",
            MessageOutcome::Expired => "expired",
            MessageOutcome::NoHandler => "no_handler",
        }
    }
}

struct Inner {
    registry: Registry,
    enabled: AtomicBool,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Histograms<RouteLabels>,
    messages: Family<MessageLabels, Counter>,
    message_duration: Histograms<TopicLabels>,
    sagas: Family<SagaLabels, Counter>,
    saga_duration: Histograms<SagaNameLabels>,
    store_duration: Histograms<OperationLabels>,
    outbox_backlog: Gauge,
    outbox_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    outbox_published: Counter,
    view_lag: Family<ViewLabels, Gauge>,
    logs_dropped: Counter,
    retention_removed: Family<KindLabels, Counter>,
}

/// One service's metrics. Cheap to clone; recording is a few atomic operations.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric of a service, recording.
    pub fn new() -> Metrics {
        Metrics::build(true)
    }

    /// A registry with the HTTP metrics only: what the registry and the gateway show.
    pub fn http_only() -> Metrics {
        Metrics::build(false)
    }

    fn build(service: bool) -> Metrics {
        let mut registry = Registry::with_prefix("minos");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template and status",
            http_requests.clone(),
        );
        let http_duration: Histograms<RouteLabels> = Family::new_with_constructor(latency);
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route template",
            Unit::Seconds,
            http_duration.clone(),
        );
        // The service-only metrics are made either way (recording into them is harmless) and shown only
        // by a service.
        let messages = Family::<MessageLabels, Counter>::default();
        register(&mut registry, service,
            "broker_messages",
            "Broker messages received, by topic and outcome (handled, retried, failed, dead_lettered, \
             duplicate: skipped by the inbox, expired, no_handler)",
            messages.clone(),
        );
        let message_duration: Histograms<TopicLabels> = Family::new_with_constructor(latency);
        register_with_unit(
            &mut registry,
            service,
            "broker_message_duration",
            "Time to handle a broker message, by topic",
            Unit::Seconds,
            message_duration.clone(),
        );
        let sagas = Family::<SagaLabels, Counter>::default();
        register(
            &mut registry,
            service,
            "saga_executions",
            "Saga executions that ended, by saga and status (finished, errored)",
            sagas.clone(),
        );
        let saga_duration: Histograms<SagaNameLabels> = Family::new_with_constructor(long_latency);
        register_with_unit(
            &mut registry,
            service,
            "saga_duration",
            "Time from a saga's start to its end, by saga",
            Unit::Seconds,
            saga_duration.clone(),
        );
        let store_duration: Histograms<OperationLabels> = Family::new_with_constructor(latency);
        register_with_unit(
            &mut registry,
            service,
            "store_operation_duration",
            "Time of event store operations (commit, read)",
            Unit::Seconds,
            store_duration.clone(),
        );
        let outbox_backlog = Gauge::default();
        register(
            &mut registry,
            service,
            "outbox_backlog_messages",
            "Messages committed to the outbox and not yet published (read when scraped)",
            outbox_backlog.clone(),
        );
        let outbox_lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        register_with_unit(
            &mut registry,
            service,
            "outbox_relay_lag",
            "Age of the oldest unpublished outbox message (read when scraped)",
            Unit::Seconds,
            outbox_lag.clone(),
        );
        let outbox_published = Counter::default();
        register(
            &mut registry,
            service,
            "outbox_published_messages",
            "Outbox messages the relay of this instance published",
            outbox_published.clone(),
        );
        let view_lag = Family::<ViewLabels, Gauge>::default();
        register(
            &mut registry,
            service,
            "view_lag_events",
            "Events of a source type a view has not applied yet (read when scraped)",
            view_lag.clone(),
        );
        let logs_dropped = Counter::default();
        register(
            &mut registry,
            service,
            "log_records_dropped",
            "Log records not shipped to the log topic (buffer full while the broker was away)",
            logs_dropped.clone(),
        );
        let retention_removed = Family::<KindLabels, Counter>::default();
        register(
            &mut registry,
            service,
            "retention_removed_rows",
            "Finished rows removed by retention, by kind (outbox, inbox, sagas, transactions)",
            retention_removed.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                enabled: AtomicBool::new(true),
                http_requests,
                http_duration,
                messages,
                message_duration,
                sagas,
                saga_duration,
                store_duration,
                outbox_backlog,
                outbox_lag,
                outbox_published,
                view_lag,
                logs_dropped,
                retention_removed,
            }),
        }
    }

    /// Turns recording on or off (`telemetry.metrics`); `GET /metrics` answers 404 when off.
    pub fn set_enabled(&self, enabled: bool) {
        self.inner.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether metrics are recorded.
    pub fn enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::Relaxed)
    }

    /// An HTTP request answered, by route template (a service's are `'static`: nothing is allocated
    /// for them). A method other than the standard ones counts as `OTHER` (label values stay bounded
    /// whatever clients send).
    pub fn http_request(
        &self,
        method: &str,
        route: impl Into<Cow<'static, str>>,
        status: u16,
        took: Duration,
    ) {
        if !self.enabled() {
            return;
        }
        let method = match method {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "POST" => "POST",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            "OPTIONS" => "OPTIONS",
            "TRACE" => "TRACE",
            "CONNECT" => "CONNECT",
            _ => "OTHER",
        };
        let route = route.into();
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                method,
                route: route.clone(),
                status,
            })
            .inc();
        self.inner
            .http_duration
            .get_or_create(&RouteLabels { method, route })
            .observe(took.as_secs_f64());
    }

    /// A broker message's outcome (and, once handled, how long it took).
    pub fn message(&self, topic: &str, outcome: MessageOutcome, took: Option<Duration>) {
        if !self.enabled() {
            return;
        }
        self.inner
            .messages
            .get_or_create(&MessageLabels {
                topic: topic.to_owned(),
                outcome: outcome.label(),
            })
            .inc();
        if let Some(took) = took {
            self.inner
                .message_duration
                .get_or_create(&TopicLabels {
                    topic: topic.to_owned(),
                })
                .observe(took.as_secs_f64());
        }
    }

    /// A saga execution ended with `status` after `took`.
    pub fn saga_ended(&self, saga: &str, status: &str, took: Duration) {
        if !self.enabled() {
            return;
        }
        self.inner
            .sagas
            .get_or_create(&SagaLabels {
                saga: saga.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        self.inner
            .saga_duration
            .get_or_create(&SagaNameLabels {
                saga: saga.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// A store operation (`commit`, `read`) took `took`.
    pub fn store_operation(&self, operation: &'static str, took: Duration) {
        if !self.enabled() {
            return;
        }
        self.inner
            .store_duration
            .get_or_create(&OperationLabels { operation })
            .observe(took.as_secs_f64());
    }

    /// The relay published `count` outbox messages.
    pub fn outbox_published(&self, count: usize) {
        self.inner.outbox_published.inc_by(count as u64);
    }

    /// The outbox's unpublished messages and the age of the oldest, as read now.
    pub fn outbox_backlog(&self, messages: usize, oldest: Duration) {
        self.inner
            .outbox_backlog
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
        self.inner.outbox_lag.set(oldest.as_secs_f64());
    }

    /// How many events of `source` the view `view` has not applied yet.
    pub fn view_lag(&self, view: &str, source: &str, behind: u64) {
        self.inner
            .view_lag
            .get_or_create(&ViewLabels {
                view: view.to_owned(),
                source: source.to_owned(),
            })
            .set(i64::try_from(behind).unwrap_or(i64::MAX));
    }

    /// Retention removed `count` finished rows of `kind` (`outbox`, `inbox`, `sagas`,
    /// `transactions`).
    pub fn retention_removed(&self, kind: &'static str, count: u64) {
        self.inner
            .retention_removed
            .get_or_create(&KindLabels { kind })
            .inc_by(count);
    }

    /// Log records that could not be shipped.
    pub fn logs_dropped(&self, count: u64) {
        self.inner.logs_dropped.inc_by(count);
    }

    /// The text exposition ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }
}

fn register(
    registry: &mut Registry,
    shown: bool,
    name: &str,
    help: &str,
    metric: impl prometheus_client::registry::Metric,
) {
    if shown {
        registry.register(name, help, metric);
    }
}

fn register_with_unit(
    registry: &mut Registry,
    shown: bool,
    name: &str,
    help: &str,
    unit: Unit,
    metric: impl prometheus_client::registry::Metric,
) {
    if shown {
        registry.register_with_unit(name, help, unit, metric);
    }
}

/// Times `future` as the store operation `operation` when `metrics` is given.
pub(crate) async fn timed<F: std::future::Future>(
    metrics: Option<&Metrics>,
    operation: &'static str,
    future: F,
) -> F::Output {
    match metrics {
        Some(metrics) if metrics.enabled() => {
            let started = std::time::Instant::now();
            let output = future.await;
            metrics.store_operation(operation, started.elapsed());
            output
        }
        _ => future.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_units_and_totals() {
        let metrics = Metrics::new();
        metrics.http_request("POST", "/foos", 201, Duration::from_millis(3));
        metrics.message(
            "FooCreated",
            MessageOutcome::Handled,
            Some(Duration::from_millis(1)),
        );
        metrics.message("FooCreated", MessageOutcome::Duplicate, None);
        metrics.saga_ended("CreateFooBar", "finished", Duration::from_millis(40));
        metrics.outbox_backlog(3, Duration::from_millis(1500));
        metrics.view_lag("FooListing", "Foo", 7);
        let text = metrics.render();
        for line in [
            "minos_http_requests_total{method=\"POST\",route=\"/foos\",status=\"201\"} 1",
            "minos_broker_messages_total{topic=\"FooCreated\",outcome=\"duplicate\"} 1",
            "minos_saga_executions_total{saga=\"CreateFooBar\",status=\"finished\"} 1",
            "minos_outbox_backlog_messages 3",
            "minos_outbox_relay_lag_seconds 1.5",
            "minos_view_lag_events{view=\"FooListing\",source=\"Foo\"} 7",
            "# TYPE minos_http_request_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
        metrics.http_request("BREW", "/foos", 404, Duration::from_millis(1));
        assert!(metrics.render().contains(
            "minos_http_requests_total{method=\"OTHER\",route=\"/foos\",status=\"404\"} 1"
        ));
        metrics.set_enabled(false);
        metrics.http_request("POST", "/foos", 201, Duration::from_millis(3));
        assert!(metrics.render().contains(
            "minos_http_requests_total{method=\"POST\",route=\"/foos\",status=\"201\"} 1"
        ));
    }
}
