//! W3C trace context: taken from an incoming request or message (`traceparent`), or started there;
//! carried on every message a handler sends (the outbox keeps it with the rows it writes, so an event
//! carries the trace of the command that caused it), through saga steps and replies.
//!
//! Each request or message a service handles runs in a span named after what it handles, with the
//! fields `service`, `trace_id` and the message's id; each handler in a span with `handler`. Every log
//! line written inside carries them. With `telemetry.otlp` set the spans are also exported (see
//! [`super::TelemetryConfig`]); without it the ids are made here, so the trace id still travels and
//! still tags the logs.

use std::collections::BTreeMap;
use std::future::Future;

use futures_util::future::Either;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing::Instrument;

/// The W3C `traceparent` header (HTTP and broker messages): `00-{trace id}-{parent span id}-{flags}`.
pub const TRACEPARENT: &str = "traceparent";

/// The W3C `tracestate` header, passed on unchanged.
pub const TRACESTATE: &str = "tracestate";

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Whether the runtime makes spans and carries trace context (`telemetry.spans`, on by default).
static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether spans are exported (`telemetry.otlp`): only then do spans get their `otel.*` names.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg_attr(not(feature = "otlp"), allow(dead_code))]
pub(crate) fn set_exporting(exporting: bool) {
    EXPORTING.store(exporting, std::sync::atomic::Ordering::Relaxed);
}

/// Whether this process exports spans (`telemetry.otlp`).
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed) && enabled()
}

/// Names an exported span (`otel.name`, `otel.kind`: declared empty on the span, so logs don't show
/// them when nothing is exported).
pub(crate) fn name_span(span: &tracing::Span, name: std::fmt::Arguments<'_>, kind: &'static str) {
    if EXPORTING.load(std::sync::atomic::Ordering::Relaxed) {
        span.record("otel.name", tracing::field::display(name));
        span.record("otel.kind", kind);
    }
}

/// Turns spans and trace propagation on or off for the process (`telemetry.spans`).
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

/// Whether spans and trace propagation are on.
pub fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// One position in a trace: the trace's id and the span that is running (the parent of what it sends).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceContext(SpanContext);

/// The trace headers a request or message carries: `traceparent` and `tracestate`.
struct Carried<'a>([Option<&'a str>; 2]);

impl Extractor for Carried<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.0[0],
            TRACESTATE => self.0[1],
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        [TRACEPARENT, TRACESTATE]
            .into_iter()
            .zip(self.0)
            .filter_map(|(name, value)| value.map(|_| name))
            .collect()
    }
}

struct HeadersMut<'a>(&'a mut BTreeMap<String, String>);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator sets `tracestate` even when it is empty: a header that says nothing.
        if key == TRACESTATE && value.is_empty() {
            return;
        }
        self.0.insert(key.to_owned(), value);
    }
}

impl TraceContext {
    /// The context a message carries (`traceparent`, `tracestate`), if it carries a valid one.
    pub fn extract(headers: &BTreeMap<String, String>) -> Option<TraceContext> {
        TraceContext::from_headers(|name| headers.get(name).map(String::as_str))
    }

    /// The context of headers read with `header(name)` (an HTTP request's), if they carry a valid
    /// `traceparent`.
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<TraceContext> {
        let carried = Carried([Some(header(TRACEPARENT)?), header(TRACESTATE)]);
        let context = TraceContextPropagator::new().extract(&carried);
        let span = context.span().span_context().clone();
        span.is_valid().then_some(TraceContext(span))
    }

    /// A new trace (sampled).
    pub fn root() -> TraceContext {
        let ids = RandomIdGenerator::default();
        TraceContext(SpanContext::new(
            ids.new_trace_id(),
            ids.new_span_id(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ))
    }

    /// A new span of the same trace, below this one.
    pub fn child(&self) -> TraceContext {
        TraceContext(SpanContext::new(
            self.0.trace_id(),
            RandomIdGenerator::default().new_span_id(),
            self.0.trace_flags(),
            false,
            self.0.trace_state().clone(),
        ))
    }

    /// The trace's id: 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        self.0.trace_id().to_string()
    }

    /// The span's id: 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        self.0.span_id().to_string()
    }

    /// The `traceparent` value naming this span as the parent.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.0.trace_id(),
            self.0.span_id(),
            self.0.trace_flags().to_u8()
        )
    }

    /// Sets `traceparent` (and `tracestate` when there is one) in `headers`, naming this span as the
    /// parent.
    pub fn inject(&self, headers: &mut BTreeMap<String, String>) {
        let context = opentelemetry::Context::new().with_remote_span_context(self.0.clone());
        TraceContextPropagator::new().inject_context(&context, &mut HeadersMut(headers));
    }

    /// The running span's context: the exported span's when spans are exported, else the handler's.
    pub fn current() -> Option<TraceContext> {
        if !enabled() {
            return None;
        }
        #[cfg(feature = "otlp")]
        {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let context = tracing::Span::current().context();
            let span = context.span().span_context().clone();
            if span.is_valid() {
                return Some(TraceContext(span));
            }
        }
        CURRENT.try_with(TraceContext::clone).ok()
    }

    /// Runs `future` in this context (what [`current`](Self::current) answers inside when spans are not
    /// exported).
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }

    fn otel(&self) -> opentelemetry::Context {
        opentelemetry::Context::new().with_remote_span_context(self.0.clone())
    }

    /// From a trace id and span id in hex (tests and tools).
    pub fn from_ids(trace_id: &str, span_id: &str) -> Option<TraceContext> {
        let trace_id = TraceId::from_hex(trace_id).ok()?;
        let span_id = SpanId::from_hex(span_id).ok()?;
        let span = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        span.is_valid().then_some(TraceContext(span))
    }
}

/// Sets `traceparent` in the headers of a message being sent from the running handler (kept when
/// the message already has one).
pub fn inject_current(headers: &mut BTreeMap<String, String>) {
    if headers.contains_key(TRACEPARENT) {
        return;
    }
    if let Some(context) = TraceContext::current() {
        context.inject(headers);
    }
}

/// Sets `traceparent` to the running span (replacing what the headers carried): for a reply, whose
/// parent is the handler that answered rather than the request's sender.
pub fn inject_replacing(headers: &mut BTreeMap<String, String>) {
    if let Some(context) = TraceContext::current() {
        headers.remove(TRACESTATE);
        context.inject(headers);
    }
}

/// Runs `future` in `span`, a child of `parent` (or of a new trace): the span gets its `trace_id`
/// field, and everything the future sends carries the trace.
///
/// A plain function returning the wrapped future, like every wrapper on a message's or request's path
/// (`scope`, `staged_in`, `recording`, `invoke`): an `async fn` keeps its argument beside the future it
/// builds from it, so each layer doubled the size of what it wraps. As `async fn`s they made a
/// message's handling future 220 KB, copied at every layer for every message; it is 8 KB.
pub(crate) fn run_in<F: Future>(
    span: tracing::Span,
    parent: Option<TraceContext>,
    future: F,
) -> impl Future<Output = F::Output> {
    if !enabled() {
        return Either::Left(future);
    }
    let context = start(&span, parent);
    span.record("trace_id", tracing::field::display(context.trace_id()));
    Either::Right(CURRENT.scope(context, future.instrument(span)))
}

/// Runs `future` in `span`, below the running span (a handler inside a request, a saga inside a
/// handler).
pub(crate) fn run_below<F: Future>(
    span: tracing::Span,
    future: F,
) -> impl Future<Output = F::Output> {
    if !enabled() {
        return Either::Left(future);
    }
    let parent = CURRENT.try_with(TraceContext::clone).ok();
    let context = match parent {
        // Inside a span that names the trace already: the new span does not repeat it.
        Some(parent) => {
            #[cfg(feature = "otlp")]
            let parent = own_context(&span).unwrap_or_else(|| parent.child());
            #[cfg(not(feature = "otlp"))]
            let parent = parent.child();
            parent
        }
        None => {
            let context = start(&span, None);
            span.record("trace_id", tracing::field::display(context.trace_id()));
            context
        }
    };
    Either::Right(CURRENT.scope(context, future.instrument(span)))
}

/// The span's context: the exporter's ids when spans are exported (with `parent` as the remote
/// parent), else a child of `parent` or a new trace.
fn start(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
    #[cfg(feature = "otlp")]
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        if let Some(parent) = &parent {
            let _ = span.set_parent(parent.otel());
        }
        if let Some(own) = own_context(span) {
            return own;
        }
    }
    #[cfg(not(feature = "otlp"))]
    let _ = (span, TraceContext::otel);
    match parent {
        Some(parent) => parent.child(),
        None => TraceContext::root(),
    }
}

#[cfg(feature = "otlp")]
fn own_context(span: &tracing::Span) -> Option<TraceContext> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    let own = context.span().span_context().clone();
    own.is_valid().then_some(TraceContext(own))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_garbage_is_refused() {
        let root = TraceContext::root();
        let mut headers = BTreeMap::new();
        root.inject(&mut headers);
        assert_eq!(headers[TRACEPARENT], root.traceparent());
        assert!(
            !headers.contains_key(TRACESTATE),
            "an empty tracestate is not sent: {headers:?}"
        );
        let back = TraceContext::extract(&headers).unwrap();
        assert_eq!(back.trace_id(), root.trace_id());
        assert_eq!(back.span_id(), root.span_id());
        let child = back.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.span_id(), root.span_id());
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-0000000000000001-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        ] {
            let headers = BTreeMap::from([(TRACEPARENT.to_owned(), bad.to_owned())]);
            assert!(TraceContext::extract(&headers).is_none(), "{bad}");
        }
        let headers = BTreeMap::from([(
            TRACEPARENT.to_owned(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
        )]);
        let known = TraceContext::extract(&headers).unwrap();
        assert_eq!(known.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(known.span_id(), "b7ad6b7169203331");
        // A tracestate the caller sent travels on.
        let mut carried = headers.clone();
        carried.insert(TRACESTATE.to_owned(), "vendor=x".to_owned());
        let mut sent = BTreeMap::new();
        TraceContext::extract(&carried).unwrap().inject(&mut sent);
        assert_eq!(sent[TRACESTATE], "vendor=x");
    }

    #[tokio::test]
    async fn what_a_handler_sends_carries_its_trace() {
        let parent =
            TraceContext::from_ids("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331").unwrap();
        let span = tracing::info_span!("test", trace_id = tracing::field::Empty);
        let sent = run_in(span, Some(parent), async {
            let mut headers = BTreeMap::new();
            inject_current(&mut headers);
            headers
        })
        .await;
        let sent = TraceContext::extract(&sent).unwrap();
        assert_eq!(sent.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        assert_ne!(sent.span_id(), "b7ad6b7169203331");
        let mut outside = BTreeMap::new();
        inject_current(&mut outside);
        assert!(outside.is_empty());
    }
}
