//! A stand-in OpenTelemetry collector: receives OTLP/HTTP (protobuf) exports of spans, as a collector
//! does, so tests can check the traces services export.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// Receives OTLP/HTTP exports as a collector does, keeping each request's body.
pub struct Collector {
    /// The port it listens on (127.0.0.1): export to `http://127.0.0.1:{port}`.
    pub port: u16,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Collector {
    /// Listens on a free port, answering every export with 200.
    pub fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let kept = Arc::clone(&kept);
                std::thread::spawn(move || {
                    let Ok(read_half) = stream.try_clone() else {
                        return;
                    };
                    let mut reader = BufReader::new(read_half);
                    let mut stream = stream;
                    loop {
                        let mut length = 0usize;
                        let mut request_line = String::new();
                        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                                return;
                            }
                            let header = header.trim_end();
                            if header.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':') {
                                if name.eq_ignore_ascii_case("content-length") {
                                    length = value.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        if request_line.starts_with("POST /v1/traces") {
                            kept.lock().unwrap_or_else(|p| p.into_inner()).push(body);
                        }
                        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                        if stream.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Collector { port, bodies }
    }

    /// Every span received: (service.name, span).
    pub fn spans(&self) -> Vec<Span> {
        let bodies = self
            .bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut spans = Vec::new();
        for body in bodies {
            let request = ExportTraceServiceRequest::decode(&body[..]).expect("an OTLP export");
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| a.value.as_ref())
                    .map(|v| format!("{:?}", v.value))
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        spans.push(Span {
                            service: service.clone(),
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent: hex(&span.parent_span_id),
                            name: span.name,
                        });
                    }
                }
            }
        }
        spans
    }
}

/// One exported span.
#[derive(Clone, Debug)]
pub struct Span {
    /// The exporting service's `service.name`, as the protobuf value's debug text.
    pub service: String,
    /// The trace id, in hex.
    pub trace_id: String,
    /// The span id, in hex.
    pub span_id: String,
    /// The parent span's id, in hex (empty for a root).
    pub parent: String,
    /// The span's name.
    pub name: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
