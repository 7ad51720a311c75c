//! Log aggregation on the broker: with `log.aggregate` on, every log record (with the fields of the
//! spans it was written in: `service`, `trace_id`, `handler`, …) also goes to the topic `_minos.logs`,
//! in batches. `minos logs` follows that topic and the dashboard shows it.
//!
//! Shipping never blocks or slows a handler: a record is put in a bounded buffer or, when the buffer is
//! full (the broker is away), dropped and counted; the count is logged and exported as
//! `minos_log_records_dropped_total`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::messaging::{BrokerMessage, SharedBroker};

/// The topic log records are shipped to.
pub const LOG_TOPIC: &str = "_minos.logs";

/// Records per message at most.
const BATCH: usize = 256;

/// One log record as shipped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// When it was written (RFC 3339, microseconds).
    pub time: chrono::DateTime<chrono::Utc>,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The service that wrote it (its span's `service`, else the process's service).
    pub service: String,
    /// The trace it was written in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The module that wrote it.
    pub target: String,
    /// The message.
    pub message: String,
    /// The record's other fields and its spans' fields (`handler`, `topic`, `message_id`, …).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
}

impl LogRecord {
    /// The level's rank: 1 (`ERROR`) to 5 (`TRACE`); 0 for an unknown level.
    pub fn severity(&self) -> u8 {
        level_rank(&self.level)
    }
}

impl std::fmt::Display for LogRecord {
    /// `2026-12-02T13:00:00.123456Z  INFO foo [4bf92f35…] message key=value …`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:>5} {}",
            self.time
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            self.level,
            self.service
        )?;
        if let Some(trace) = &self.trace_id {
            write!(f, " [{}]", Printable(trace))?;
        }
        write!(f, " {}", Printable(&self.message))?;
        for (key, value) in &self.fields {
            match value {
                Value::String(text) => write!(f, " {}={}", Printable(key), Printable(text))?,
                other => write!(f, " {}={other}", Printable(key))?,
            }
        }
        Ok(())
    }
}

/// Text with its control characters escaped (`\n`, `\u{1b}`): a record cannot move the cursor or
/// recolour the terminal it is printed on.
struct Printable<'a>(&'a str);

impl std::fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Which shipped records to show (`minos logs`, the dashboard).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogFilter {
    /// Only these services (all when empty).
    pub services: Vec<String>,
    /// Only records at this level or more severe (`warn`: warnings and errors).
    pub level: Option<String>,
    /// Only this trace.
    pub trace_id: Option<String>,
    /// Only records written at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only records written before this time.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl LogFilter {
    /// Whether `record` passes.
    pub fn matches(&self, record: &LogRecord) -> bool {
        (self.services.is_empty() || self.services.contains(&record.service))
            && self.level.as_deref().is_none_or(|level| {
                record.severity() != 0 && record.severity() <= level_rank(level)
            })
            && self
                .trace_id
                .as_deref()
                .is_none_or(|trace| record.trace_id.as_deref() == Some(trace))
            && self.since.is_none_or(|since| record.time >= since)
            && self.until.is_none_or(|until| record.time < until)
    }
}

/// A point in time as written on the command line: RFC 3339 (`2026-12-02T13:00:00Z`) or an age
/// (`90s`, `10m`, `2h`, `1d`: that long before `now`).
pub fn parse_time(
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    // An age needs its unit: a bare number is more likely a mistyped time.
    let age = text
        .ends_with(|c: char| c.is_ascii_alphabetic())
        .then(|| crate::launcher::parse_duration(text).ok())
        .flatten()
        .and_then(|age| chrono::TimeDelta::from_std(age).ok())
        .and_then(|age| now.checked_sub_signed(age));
    age.ok_or_else(|| {
        format!("`{text}`: write a time as 2026-12-02T13:00:00Z or an age such as 90s, 10m, 2h, 1d")
    })
}

/// `ERROR` = 1 … `TRACE` = 5 (case-insensitive); 0 for anything else.
pub fn level_rank(level: &str) -> u8 {
    match level.to_ascii_uppercase().as_str() {
        "ERROR" => 1,
        "WARN" | "WARNING" => 2,
        "INFO" => 3,
        "DEBUG" => 4,
        "TRACE" => 5,
        _ => 0,
    }
}

/// A shipped batch, the content of a message on [`LOG_TOPIC`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    /// The service of the instance that shipped it.
    #[serde(default)]
    pub service: String,
    /// The records, oldest first.
    pub records: Vec<LogRecord>,
    /// Records the instance had to drop since its previous batch.
    #[serde(default)]
    pub dropped: u64,
}

struct Sink {
    sender: mpsc::Sender<LogRecord>,
    receiver: std::sync::Mutex<Option<mpsc::Receiver<LogRecord>>>,
    dropped: AtomicU64,
    service: String,
}

static SINK: OnceLock<Sink> = OnceLock::new();

tokio::task_local! {
    /// Set in the shipping task: what it logs itself is not shipped (no loop while the broker is away).
    static SHIPPING: ();
}

/// The layer that makes a [`LogRecord`] of each event: written to stdout as one JSON object per line
/// with `json`, put in the shipping buffer with `aggregate` (installed by [`super::init`]).
pub(crate) fn layer(
    service: &str,
    buffer: usize,
    json: bool,
    aggregate: bool,
) -> Option<RecordLayer> {
    if aggregate {
        let (sender, receiver) = mpsc::channel(buffer.max(1));
        let _ = SINK.set(Sink {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
            dropped: AtomicU64::new(0),
            service: service.to_owned(),
        });
    }
    (json || aggregate).then(|| RecordLayer {
        json,
        service: service.to_owned(),
    })
}

/// Records put in the buffer and not yet published (or given up on): what [`flush`] waits for.
static PENDING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A message's worth of records at most, in bytes of their text (well under Kafka's 1 MB default).
const BATCH_BYTES: usize = 512 * 1024;

/// The longest message and field text kept in a record (longer ones are cut, saying so).
const TEXT_LIMIT: usize = 16 * 1024;

/// Starts shipping the buffered records to `broker` (once per process; later calls do nothing).
pub fn start(broker: SharedBroker, metrics: Option<super::Metrics>) {
    let Some(sink) = SINK.get() else {
        return;
    };
    let Some(mut receiver) = sink.receiver.lock().ok().and_then(|mut r| r.take()) else {
        return;
    };
    tokio::spawn(SHIPPING.scope((), async move {
        let mut records = Vec::with_capacity(BATCH);
        // Records of batches the broker refused: reported with the next batch.
        let mut lost = 0;
        loop {
            if receiver.recv_many(&mut records, BATCH).await == 0 {
                return;
            }
            // A moment for more records of the same burst to join the batch.
            if records.len() < BATCH {
                tokio::time::sleep(Duration::from_millis(20)).await;
                while records.len() < BATCH {
                    match receiver.try_recv() {
                        Ok(record) => records.push(record),
                        Err(_) => break,
                    }
                }
            }
            let full = sink.dropped.swap(0, Ordering::Relaxed);
            if let (Some(metrics), true) = (&metrics, full > 0) {
                metrics.logs_dropped(full);
            }
            let taken = records.len();
            // Dropped records are reported with the first message that reaches the broker.
            let mut report = full + std::mem::take(&mut lost);
            for chunk in chunks(std::mem::take(&mut records)) {
                let dropped = std::mem::take(&mut report);
                let batch = LogBatch {
                    service: sink.service.clone(),
                    dropped,
                    records: chunk,
                };
                let count = batch.records.len() as u64;
                let content = serde_json::to_value(&batch).unwrap_or_default();
                let mut message = BrokerMessage::new(LOG_TOPIC, content);
                message.key = Some(sink.service.clone());
                if let Err(error) = broker.publish(message).await {
                    lost += dropped + count;
                    if let Some(metrics) = &metrics {
                        metrics.logs_dropped(count);
                    }
                    tracing::warn!(%error, records = count, "could not ship log records to {LOG_TOPIC}; dropped");
                }
            }
            if full > 0 {
                tracing::warn!(
                    dropped = full,
                    "log records dropped while the log buffer was full (log.buffer)"
                );
            }
            PENDING.fetch_sub(taken, Ordering::Relaxed);
        }
    }));
}

/// Splits records into messages of at most [`BATCH_BYTES`] of text each.
fn chunks(records: Vec<LogRecord>) -> Vec<Vec<LogRecord>> {
    let mut chunks = vec![Vec::new()];
    let mut bytes = 0;
    for record in records {
        let size = 200
            + record.message.len()
            + record
                .fields
                .iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(32, str::len))
                .sum::<usize>();
        if bytes + size > BATCH_BYTES && !chunks.last().is_some_and(Vec::is_empty) {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(record);
        }
    }
    chunks
}

/// Waits (up to `timeout`) until the records buffered so far are shipped: what a service does as it
/// stops, so its last lines are not lost.
pub async fn flush(timeout: Duration) {
    if SINK.get().is_none() {
        return;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while PENDING.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `text` cut to [`TEXT_LIMIT`] bytes (on a character boundary), saying how much was cut.
fn bounded(mut text: String) -> String {
    if text.len() > TEXT_LIMIT {
        let mut end = TEXT_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let cut = text.len() - end;
        text.truncate(end);
        text.push_str(&format!("… ({cut} more bytes)"));
    }
    text
}

/// The fields of a span, kept for the records written inside it.
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a> {
    fields: &'a mut Map<String, Value>,
    message: Option<&'a mut String>,
}

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name == "message" {
            if let Some(message) = self.message.as_deref_mut() {
                *message = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                return;
            }
        }
        // `otel.*` fields name exported spans; they are not part of a record.
        if !name.starts_with("otel.") {
            self.fields.insert(name.to_owned(), value);
        }
    }
}

/// Makes a record of each event: one JSON line on stdout (`log.format: json`), and a record in the
/// shipping buffer (`log.aggregate`).
#[derive(Debug)]
pub(crate) struct RecordLayer {
    json: bool,
    service: String,
}

impl<S> Layer<S> for RecordLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor {
            fields: &mut fields,
            message: None,
        });
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            values.record(&mut JsonVisitor {
                fields,
                message: None,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let target = event.metadata().target();
        // What the shipping task and the Kafka client say is not shipped (no loop while the broker is
        // away).
        let sink = SINK.get().filter(|_| {
            SHIPPING.try_with(|_| ()).is_err()
                && !target.starts_with("rdkafka")
                && !target.starts_with("librdkafka")
        });
        if sink.is_none() && !self.json {
            return;
        }
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(span_fields)) = span.extensions().get::<SpanFields>() {
                    for (key, value) in span_fields {
                        fields.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        let mut message = String::new();
        event.record(&mut JsonVisitor {
            fields: &mut fields,
            message: Some(&mut message),
        });
        let service = match fields.remove("service") {
            Some(Value::String(service)) => service,
            _ => self.service.clone(),
        };
        let trace_id = match fields.remove("trace_id") {
            Some(Value::String(id)) if !id.is_empty() => Some(id),
            _ => None,
        };
        for value in fields.values_mut() {
            if let Value::String(text) = value {
                if text.len() > TEXT_LIMIT {
                    *text = bounded(std::mem::take(text));
                }
            }
        }
        let record = LogRecord {
            time: chrono::Utc::now(),
            level: event.metadata().level().to_string(),
            service,
            trace_id,
            target: target.to_owned(),
            message: bounded(message),
            fields,
        };
        if self.json {
            use std::io::Write;
            let mut line = serde_json::to_vec(&record).unwrap_or_default();
            line.push(b'\n');
            let _ = std::io::stdout().lock().write_all(&line);
        }
        if let Some(sink) = sink {
            match sink.sender.try_send(record) {
                Ok(()) => {
                    PENDING.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    sink.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(service: &str, level: &str, trace: Option<&str>, minutes_ago: i64) -> LogRecord {
        LogRecord {
            time: chrono::Utc::now() - chrono::Duration::minutes(minutes_ago),
            level: level.into(),
            service: service.into(),
            trace_id: trace.map(str::to_owned),
            target: "t".into(),
            message: "m".into(),
            fields: Map::from_iter([("handler".to_owned(), Value::from("Foo::bar"))]),
        }
    }

    #[test]
    fn filters_by_service_level_trace_and_time() {
        let now = chrono::Utc::now();
        let filter = LogFilter {
            services: vec!["foo".into()],
            level: Some("warn".into()),
            trace_id: Some("abc".into()),
            since: Some(parse_time("10m", now).unwrap()),
            until: None,
        };
        assert!(filter.matches(&record("foo", "ERROR", Some("abc"), 1)));
        assert!(filter.matches(&record("foo", "WARN", Some("abc"), 1)));
        assert!(!filter.matches(&record("foo", "INFO", Some("abc"), 1)));
        assert!(!filter.matches(&record("bar", "ERROR", Some("abc"), 1)));
        assert!(!filter.matches(&record("foo", "ERROR", Some("abd"), 1)));
        assert!(!filter.matches(&record("foo", "ERROR", None, 1)));
        assert!(!filter.matches(&record("foo", "ERROR", Some("abc"), 20)));
        assert!(LogFilter::default().matches(&record("x", "TRACE", None, 100)));
        let mut hostile = record("foo", "INFO", Some("abc"), 0);
        hostile.message = "red \u{1b}[31m\nnext".into();
        assert_eq!(
            hostile.to_string().split_once(" [abc] ").unwrap().1,
            "red \\u{1b}[31m\\nnext handler=Foo::bar"
        );
        let line = record("foo", "INFO", Some("abc"), 0).to_string();
        assert!(
            line.contains(" INFO foo [abc] m handler=Foo::bar"),
            "{line}"
        );
        assert!(parse_time("2026-12-02T13:00:00Z", now).is_ok());
        assert!(parse_time("ten minutes", now).is_err());
        assert!(parse_time("5y", now).is_err());
        assert!(parse_time("99999999999999999d", now).is_err());
        assert!(parse_time("999999999999d", now).is_err());
    }

    #[test]
    fn long_texts_are_cut_and_batches_stay_under_the_message_size() {
        let long = "é".repeat(20_000);
        let cut = bounded(long.clone());
        assert!(cut.len() < TEXT_LIMIT + 40, "{}", cut.len());
        assert!(cut.ends_with("more bytes)"), "{}", &cut[cut.len() - 30..]);
        assert_eq!(bounded("short".into()), "short");
        let mut big = record("foo", "INFO", None, 0);
        big.message = "x".repeat(TEXT_LIMIT);
        let split = chunks(vec![big; 100]);
        assert!(split.len() >= 4, "{}", split.len());
        assert_eq!(split.iter().map(Vec::len).sum::<usize>(), 100);
        assert!(split.iter().all(|c| !c.is_empty()));
        assert_eq!(chunks(Vec::new()).len(), 1);
    }

    #[test]
    fn levels_rank_from_error_to_trace() {
        assert_eq!(level_rank("error"), 1);
        assert_eq!(level_rank("WARN"), 2);
        assert_eq!(level_rank("Info"), 3);
        assert_eq!(level_rank("trace"), 5);
        assert_eq!(level_rank("loud"), 0);
    }
}
