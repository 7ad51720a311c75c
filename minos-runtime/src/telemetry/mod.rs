//! Observability: one trace across services (W3C trace context in HTTP and broker headers, spans on
//! every handler), logs as text or JSON, log records shipped to a broker topic (`log.aggregate`),
//! Prometheus metrics (`GET /metrics`) and, optionally, spans exported over OTLP.

pub mod metrics;
#[cfg(feature = "otlp")]
mod otlp;
pub mod ship;
pub mod trace;

use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

pub use metrics::{MessageOutcome, Metrics};
pub use ship::{LogRecord, LOG_TOPIC};
pub use trace::TraceContext;

/// How log lines are written to stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per record, with the spans' fields (`trace_id`, `service`, `handler`).
    #[default]
    Text,
    /// One JSON object per line, for a platform's log collector: `time`, `level`, `service`,
    /// `trace_id`, `target`, `message` and `fields` (the event's and its spans': `handler`,
    /// `message_id`, `request_id`, `route`, `topic`, …), as `log.aggregate` ships them.
    Json,
}

/// Logging (`log:`): a filter (`log: info`), or the section `{filter, format, aggregate, buffer}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct LogConfig {
    /// The tracing filter, e.g. `info,minos_runtime=debug` (`RUST_LOG` overrides it).
    pub filter: String,
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// Also ship every record to the broker topic `_minos.logs`, for `minos logs` and the dashboard.
    pub aggregate: bool,
    /// Records waiting to be shipped at most; more are dropped (and counted) while the broker is away.
    pub buffer: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
            format: LogFormat::Text,
            aggregate: false,
            buffer: 10_000,
        }
    }
}

impl From<&str> for LogConfig {
    fn from(filter: &str) -> Self {
        LogConfig {
            filter: filter.to_owned(),
            ..LogConfig::default()
        }
    }
}

impl TryFrom<serde_json::Value> for LogConfig {
    type Error = String;

    fn try_from(value: serde_json::Value) -> Result<Self, String> {
        let mut config = LogConfig::default();
        match value {
            serde_json::Value::String(filter) => config.filter = filter,
            serde_json::Value::Object(section) => {
                for (key, value) in section {
                    match key.as_str() {
                        "filter" => {
                            config.filter = value
                                .as_str()
                                .ok_or_else(|| {
                                    format!("log.filter: expected a filter such as `info`, found {value}")
                                })?
                                .to_owned()
                        }
                        "format" => {
                            config.format = match value.as_str() {
                                Some("text") => LogFormat::Text,
                                Some("json") => LogFormat::Json,
                                _ => {
                                    return Err(format!(
                                        "log.format: expected `text` or `json`, found {value}"
                                    ))
                                }
                            }
                        }
                        "aggregate" => config.aggregate = flag("log.aggregate", &value)?,
                        "buffer" => {
                            config.buffer = value
                                .as_u64()
                                .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                                .and_then(|n| usize::try_from(n).ok())
                                .filter(|n| *n > 0)
                                .ok_or_else(|| {
                                    format!("log.buffer: expected a positive number of records, found {value}")
                                })?
                        }
                        _ => {
                            return Err(format!(
                                "unknown key `log.{key}`: expected `filter`, `format`, `aggregate` or `buffer`"
                            ))
                        }
                    }
                }
            }
            other => {
                return Err(format!(
                    "log: expected a filter such as `info` or a section {{filter, format, aggregate, buffer}}, found {other}"
                ))
            }
        }
        Ok(config)
    }
}

/// A boolean written as `true`/`false` or, from the environment, as text.
fn flag(key: &str, value: &serde_json::Value) -> Result<bool, String> {
    match value {
        serde_json::Value::Bool(b) => Ok(*b),
        serde_json::Value::String(s) if s == "true" || s == "1" => Ok(true),
        serde_json::Value::String(s) if s == "false" || s == "0" => Ok(false),
        other => Err(format!("{key}: expected true or false, found {other}")),
    }
}

/// Telemetry (`telemetry:`): spans and trace context, metrics, and the export of spans over OTLP.
///
/// ```yaml
/// telemetry:
///   spans: true                          # spans with trace ids on every handler, trace context sent on
///   metrics: true                        # GET /metrics
///   otlp: http://127.0.0.1:4318          # export spans to an OpenTelemetry collector (off when empty)
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Spans with trace ids on every request, message and handler, and the trace context sent with
    /// every message (W3C `traceparent`).
    pub spans: bool,
    /// Prometheus metrics at `GET /metrics`.
    pub metrics: bool,
    /// The base URL of an OpenTelemetry collector's OTLP/HTTP receiver (`http://HOST:4318`): spans
    /// are exported to `{otlp}/v1/traces`. Empty: nothing is exported.
    pub otlp: String,
    /// The `service.name` resource of exported spans; empty: the service's name.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            spans: true,
            metrics: true,
            otlp: String::new(),
            service_name: String::new(),
        }
    }
}

/// What [`init`] set up that must be flushed before the process ends.
#[must_use = "flush() the exported spans before the process ends"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports the spans still buffered (with spans exported; does nothing otherwise).
    pub fn flush(&self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the process's log subscriber: stdout as text or JSON with `RUST_LOG`, else `log.filter`;
/// the shipping of records when `log.aggregate` is on (it starts once [`ship::start`] gives it a
/// broker); the export of spans when `telemetry.otlp` is set. Does nothing when a subscriber is already
/// installed.
pub fn init(
    service: &str,
    log: &LogConfig,
    telemetry: &TelemetryConfig,
) -> crate::Result<TelemetryGuard> {
    trace::set_enabled(telemetry.spans);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // Text lines with the spans' fields; JSON lines are the records `log.aggregate` ships.
    let stdout = (log.format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .with_filter(layer_filter(&log.filter))
    });
    let shipping = ship::layer(
        service,
        log.buffer,
        log.format == LogFormat::Json,
        log.aggregate,
    )
    .map(|layer| layer.with_filter(layer_filter(&log.filter)));
    #[cfg(feature = "otlp")]
    {
        let mut guard = TelemetryGuard::default();
        let export = if telemetry.otlp.is_empty() || !telemetry.spans {
            None
        } else {
            let name = match telemetry.service_name.as_str() {
                "" => service,
                name => name,
            };
            let (provider, layer) = otlp::layer(&telemetry.otlp, name)?;
            guard.provider = Some(provider);
            trace::set_exporting(true);
            Some(layer.with_filter(layer_filter(&log.filter)))
        };
        let _ = tracing_subscriber::registry()
            .with(stdout)
            .with(shipping)
            .with(export)
            .try_init();
        Ok(guard)
    }
    #[cfg(not(feature = "otlp"))]
    {
        if !telemetry.otlp.is_empty() {
            return Err(crate::Error::Config(
                "telemetry.otlp needs the `otlp` feature of minos".into(),
            ));
        }
        let _ = tracing_subscriber::registry()
            .with(stdout)
            .with(shipping)
            .try_init();
        Ok(TelemetryGuard::default())
    }
}

/// A layer's filter: `RUST_LOG`, else `filter`, for events; the runtime's own spans always (so that a
/// warning written with `log: warn` still names its trace, service and handler, and spans are still
/// exported).
fn layer_filter<S>(filter: &str) -> impl tracing_subscriber::layer::Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::filter::FilterExt;
    let events = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    events.or(tracing_subscriber::filter::filter_fn(|metadata| {
        metadata.is_span() && metadata.target().starts_with("minos_runtime")
    }))
}
