//! Forwarding one request to the instances of its route: hop-by-hop headers dropped,
//! `X-Forwarded-*` added, instances taken in turn, retries where nothing reached a service or the
//! method is idempotent, and the outcome mapped to 502, 503 or 504.

use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::header::{Entry, HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, TE, TRAILER};
use hyper::header::{EXPECT, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TRANSFER_ENCODING, UPGRADE};
use hyper::http::request::Parts;
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::pool::{Pool, SendError, UpstreamBody};
use super::table::Route;

/// The pooled client the gateway follows the registry with.
pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive client connecting within `connect_timeout`.
pub(crate) fn client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// The body of the gateway's answers: a service's, streamed as it arrives, or the gateway's own.
#[derive(Debug)]
pub(crate) enum GatewayBody {
    /// Written by the gateway (errors, health, composed answers).
    Full(Option<Bytes>),
    /// A service's, passed on frame by frame.
    Upstream(UpstreamBody),
}

impl GatewayBody {
    /// A body of these bytes.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        GatewayBody::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            GatewayBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            GatewayBody::Upstream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full(bytes) => bytes.is_none(),
            GatewayBody::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            GatewayBody::Upstream(body) => body.size_hint(),
        }
    }
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), besides those the
/// `Connection` header names.
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Drops the hop-by-hop headers, and those `Connection` names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one look at each name is cheaper than a lookup of each of them.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The caller at the other end of a connection, with its `X-Forwarded-For` value built once.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    forwarded_for: HeaderValue,
}

impl Peer {
    /// The caller at `ip`.
    pub(crate) fn new(ip: IpAddr) -> Peer {
        let forwarded_for = HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Peer { forwarded_for }
    }
}

/// Adds the caller's address to `X-Forwarded-For` (after any proxies before the gateway), and
/// `X-Forwarded-Proto` and `X-Forwarded-Host` unless a proxy before the gateway set them. Call
/// before `Host` is replaced.
pub(crate) fn add_forwarded(headers: &mut HeaderMap, peer: &Peer) {
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(entry) => {
            entry.insert(peer.forwarded_for.clone());
        }
        Entry::Occupied(mut entry) => {
            let mut chain = entry
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ");
            chain.push_str(", ");
            chain.push_str(peer.forwarded_for.to_str().unwrap_or_default());
            if let Ok(value) = HeaderValue::from_str(&chain) {
                entry.insert(value);
            }
        }
    }
    headers
        .entry(&X_FORWARDED_PROTO)
        .or_insert_with(|| HeaderValue::from_static("http"));
    if let Some(host) = headers.get(HOST).cloned() {
        headers.entry(&X_FORWARDED_HOST).or_insert(host);
    }
}

/// Prepares the headers of an incoming request to go to a service.
pub(crate) fn outgoing_headers(headers: &mut HeaderMap, peer: &Peer) {
    strip_hop_by_hop(headers);
    // The body is read already: a service need not ask for it.
    headers.remove(EXPECT);
    // Room for X-Forwarded-* and Host at once, rather than growing twice.
    headers.reserve(4);
    add_forwarded(headers, peer);
}

/// Why a request got no answer from a service.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No instance to send it to: none healthy, or all refused the connection (503).
    Unavailable(String),
    /// An instance failed while the request was under way (502).
    Upstream(String),
    /// No response head in time (504).
    Timeout(Duration),
}

impl Failure {
    /// The status the caller gets.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Failure::Unavailable(_) => 503,
            Failure::Upstream(_) => 502,
            Failure::Timeout(_) => 504,
        }
    }

    /// What the caller is told.
    pub(crate) fn message(&self, method: &Method, path: &str) -> String {
        match self {
            Failure::Unavailable(why) => format!("no instance can serve {method} {path}: {why}"),
            Failure::Upstream(why) => format!("the service failed on {method} {path}: {why}"),
            Failure::Timeout(after) => format!(
                "the service did not answer {method} {path} within {} ms",
                after.as_millis()
            ),
        }
    }
}

/// Whether a failed request may be sent again elsewhere: it does the same however often it runs.
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// What a request to a service is made of; taken again for each attempt.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The method.
    pub(crate) method: Method,
    /// Path and query, as the caller sent them.
    pub(crate) path_and_query: PathAndQuery,
    /// Prepared with [`outgoing_headers`].
    pub(crate) headers: HeaderMap,
    /// The whole body.
    pub(crate) body: Bytes,
}

impl Outgoing {
    /// The request's own parts, with its body read.
    pub(crate) fn from_parts(parts: Parts, body: Bytes) -> Outgoing {
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Outgoing {
            method: parts.method,
            path_and_query,
            headers: parts.headers,
            body,
        }
    }
}

/// Sends `request` to the instances of `route` in turn until one answers with a response head
/// before `deadline`. A connection refused moves to the next instance (and ejects the refusing one
/// for a moment); a failure after sending moves on only for idempotent methods.
pub(crate) async fn forward(
    pool: &Pool,
    route: &Route,
    mut request: Outgoing,
    deadline: Instant,
    timeout: Duration,
) -> Result<Response<UpstreamBody>, Failure> {
    let count = route.instances.len();
    if count == 0 {
        return Err(Failure::Unavailable(
            "no healthy instance is registered".into(),
        ));
    }
    let start = route.start();
    let mut last_error: Option<String> = None;
    let mut upstream_failed = false;
    for attempt in 0..count {
        let instance = &route.instances[(start + attempt) % count];
        if !instance.available() {
            continue;
        }
        let last = attempt + 1 == count;
        let headers = match last {
            true => std::mem::take(&mut request.headers),
            false => request.headers.clone(),
        };
        let mut outgoing = Request::new(Full::new(request.body.clone()));
        *outgoing.method_mut() = request.method.clone();
        *outgoing.uri_mut() = Uri::from(request.path_and_query.clone());
        *outgoing.headers_mut() = headers;
        outgoing.headers_mut().insert(HOST, instance.host.clone());
        match tokio::time::timeout_at(deadline, pool.send(&instance.authority, outgoing)).await {
            Ok(Ok(response)) => return Ok(response),
            Err(_) => {
                tracing::warn!(instance = %instance.label, method = %request.method, path = %request.path_and_query, ?timeout, "no response head in time");
                return Err(Failure::Timeout(timeout));
            }
            Ok(Err(SendError::Connect(error))) => {
                // Nothing was sent: any method may go to the next instance.
                tracing::warn!(instance = %instance.label, %error, "connection refused: instance passed over for a moment");
                instance.eject();
                last_error = Some(error);
            }
            Ok(Err(SendError::NotSent(error))) => {
                // Nothing was sent either, but the instance did accept the connection.
                tracing::warn!(instance = %instance.label, %error, "instance closed a new connection");
                upstream_failed = true;
                last_error = Some(error);
            }
            Ok(Err(SendError::Failed(error))) => {
                tracing::warn!(instance = %instance.label, method = %request.method, path = %request.path_and_query, %error, "instance failed");
                upstream_failed = true;
                last_error = Some(error);
                if !idempotent(&request.method) {
                    break;
                }
            }
        }
    }
    let why =
        last_error.unwrap_or_else(|| "every instance refused a connection a moment ago".into());
    match upstream_failed {
        true => Err(Failure::Upstream(why)),
        false => Err(Failure::Unavailable(why)),
    }
}

/// A service's answer made the gateway's: hop-by-hop headers dropped, the body streamed.
pub(crate) fn incoming_response(response: Response<UpstreamBody>) -> Response<GatewayBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, GatewayBody::Upstream(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut map = headers(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut map);
        let mut left: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-type"]);
    }

    #[test]
    fn forwarded_headers_are_added_and_the_chain_appended() {
        let mut map = headers(&[("host", "api.example:5566"), ("expect", "100-continue")]);
        outgoing_headers(&mut map, &Peer::new("10.0.0.7".parse().unwrap()));
        assert_eq!(map["x-forwarded-for"], "10.0.0.7");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "api.example:5566");
        assert!(!map.contains_key("expect"));

        let mut map = headers(&[
            ("host", "gateway"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example"),
        ]);
        add_forwarded(&mut map, &Peer::new("::1".parse().unwrap()));
        assert_eq!(map["x-forwarded-for"], "1.1.1.1, 2.2.2.2, ::1");
        assert_eq!(map.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["x-forwarded-host"], "api.example");
    }

    #[test]
    fn only_idempotent_methods_are_retried_after_sending() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(idempotent(&method), "{method}");
        }
        for method in [Method::POST, Method::PATCH] {
            assert!(!idempotent(&method), "{method}");
        }
        let failures = [
            Failure::Unavailable("x".into()),
            Failure::Upstream("x".into()),
            Failure::Timeout(Duration::from_millis(5)),
        ];
        let statuses: Vec<u16> = failures.iter().map(Failure::status).collect();
        assert_eq!(statuses, [503, 502, 504]);
    }
}
