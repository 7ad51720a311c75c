//! Export of spans over OTLP/HTTP (protobuf) to an OpenTelemetry collector, with the OpenTelemetry
//! SDK's batch processor (its own thread) and the blocking HTTP client the runtime already uses.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

use crate::error::{Error, Result};

/// Sends the exporter's requests with ureq (the batch processor runs on a thread of its own, so a
/// blocking client fits; it speaks HTTPS with rustls).
#[derive(Debug)]
struct Client(ureq::Agent);

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(
        &self,
        request: Request<Bytes>,
    ) -> std::result::Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = ureq::http::Request::from_parts(parts, body.to_vec());
        let mut response = self.0.run(request)?;
        let status = response.status();
        let body = response.body_mut().read_to_vec()?;
        let mut answer = Response::builder().status(status);
        for (name, value) in response.headers() {
            answer = answer.header(name, value);
        }
        Ok(answer.body(Bytes::from(body))?)
    }
}

/// The tracer provider exporting to `{endpoint}/v1/traces`, and the layer that turns spans into
/// exported spans.
pub(super) fn layer<S>(
    endpoint: &str,
    service: &str,
) -> Result<(SdkTracerProvider, OpenTelemetryLayer<S, SdkTracer>)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::Config(format!(
            "telemetry.otlp: expected the collector's OTLP/HTTP URL such as http://127.0.0.1:4318, found `{endpoint}`"
        )));
    }
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .new_agent();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Client(agent))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|e| Error::Config(format!("telemetry.otlp: cannot build the exporter: {e}")))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer("minos");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false);
    Ok((provider, layer))
}
