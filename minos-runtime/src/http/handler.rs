//! One REST request: its body (size limit, JSON), query and path parameters, the handler behind the
//! middleware chain, and the response or the JSON error.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE,
};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::auth::{Access, AuthError, Caller, Principal};
use crate::error::Error;
use crate::messaging::headers::USER;
use crate::routing::{invoke, Context, HandlerFn, Middleware, Origin, Request, Response};
use crate::views::{Consistency, POSITION_HEADER};

#[derive(Clone)]
pub(super) struct Shared {
    pub(super) chain: Arc<[Middleware]>,
    pub(super) context: Context,
    pub(super) body_limit: usize,
}

pub(super) fn error_response(status: u16, message: impl Into<String>) -> HttpResponse {
    let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status_code).json(json!({"error": message.into(), "status": status}))
}

pub(crate) fn to_http(response: Response) -> HttpResponse {
    let status =
        StatusCode::from_u16(response.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = HttpResponse::build(status);
    for (name, value) in response.headers() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            builder.insert_header((name, value));
        }
    }
    match response.content() {
        Value::Null if response.is_empty() => builder.finish(),
        content => builder
            .insert_header((CONTENT_TYPE, "application/json"))
            .body(content.to_string()),
    }
}

async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Value, HttpResponse> {
    let too_large = || {
        error_response(
            413,
            format!("request body larger than the {limit}-byte limit (http.body_limit)"),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| error_response(400, format!("unreadable request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| error_response(400, format!("malformed JSON body: {e}")))?;
    // In valid JSON a NUL character can only come from the escape `\u0000`: look for it only then.
    if body.windows(6).any(|w| w == b"\\u0000") && holds_nul(&value) {
        return Err(error_response(
            400,
            "a JSON string or key contains the NUL character (\\u0000), which PostgreSQL cannot \
             store, so no backend accepts it: remove it",
        ));
    }
    Ok(value)
}

/// Whether a string or key anywhere in `value` contains `\0`.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, item)| key.contains('\0') || holds_nul(item)),
        _ => false,
    }
}

/// Checks the caller against `access` when the service checks tokens: the verified principal (or
/// `None` for a request without a token), or the 401/403 answer with `WWW-Authenticate`. Without an
/// `auth:` section every request is admitted.
pub(crate) async fn admit(
    auth: Option<&crate::auth::Authenticator>,
    request: &HttpRequest,
    access: Access,
) -> Result<Option<Principal>, HttpResponse> {
    let Some(auth) = auth else {
        return Ok(None);
    };
    let checked = async {
        let header =
            match request.headers().get(AUTHORIZATION) {
                None => None,
                Some(value) => Some(value.to_str().map_err(|_| {
                    AuthError::Invalid("the Authorization header is not text".into())
                })?),
            };
        let principal = auth.authenticate(header).await?;
        auth.authorize(
            principal.as_ref(),
            &access.requirement(&auth.config().admin_role),
        )?;
        Ok::<_, AuthError>(principal)
    };
    checked
        .await
        .map_err(|error| to_http(Response::from_error(&Error::Auth(error))))
}

/// The header naming a request (sent back with the answer, and a field of the request's span).
const REQUEST_ID: &str = "x-request-id";

/// Which route a request matched: its method, path template and handler function.
#[derive(Clone, Copy, Debug)]
pub(super) struct RouteInfo {
    pub(super) method: &'static str,
    pub(super) path: &'static str,
    pub(super) service: &'static str,
    pub(super) function: &'static str,
}

/// One request in its span (a child of the caller's `traceparent`, or a new trace), counted and timed
/// in the metrics; the answer carries `traceresponse` naming the trace.
pub(super) async fn handle(
    shared: Shared,
    handler: HandlerFn,
    access: Access,
    route: RouteInfo,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let started = std::time::Instant::now();
    crate::memory::busy();
    let metrics = shared.context.metrics().clone();
    let response = if crate::telemetry::trace::enabled() {
        // The request's id: the caller's `x-request-id` (up to 128 characters), else a new one.
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| !id.is_empty() && id.len() <= 128)
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let span = tracing::info_span!(
            "request",
            request_id = %request_id,
            service = %shared.context.name(),
            route = %format_args!("{} {}", route.method, route.path),
            handler = %format_args!("{}::{}", route.service, route.function),
            trace_id = tracing::field::Empty,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
        );
        crate::telemetry::trace::name_span(
            &span,
            format_args!("{} {}", route.method, route.path),
            "server",
        );
        let parent = crate::telemetry::TraceContext::from_headers(|name| {
            request.headers().get(name).and_then(|v| v.to_str().ok())
        });
        crate::telemetry::trace::run_in(span, parent, async {
            let mut response = handle_request(shared, handler, access, request, payload).await;
            if let Some(trace) = crate::telemetry::TraceContext::current() {
                if let Ok(value) = HeaderValue::try_from(trace.traceparent()) {
                    response
                        .headers_mut()
                        .insert(HeaderName::from_static("traceresponse"), value);
                }
            }
            if let Ok(value) = HeaderValue::try_from(request_id.as_str()) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(REQUEST_ID), value);
            }
            response
        })
        .await
    } else {
        handle_request(shared, handler, access, request, payload).await
    };
    metrics.http_request(
        route.method,
        route.path,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn handle_request(
    shared: Shared,
    handler: HandlerFn,
    access: Access,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    // Who is calling, before the body is read.
    let principal = match admit(shared.context.auth(), &request, access).await {
        Ok(principal) => principal.map(Arc::new),
        Err(refused) => return refused,
    };
    let content = match read_body(&request, payload, shared.body_limit).await {
        Ok(content) => content,
        Err(response) => return response,
    };
    let mut params: BTreeMap<String, String> =
        match web::Query::<BTreeMap<String, String>>::from_query(request.query_string()) {
            Ok(query) => query.into_inner(),
            Err(e) => return error_response(400, format!("malformed query string: {e}")),
        };
    for (name, value) in request.match_info().iter() {
        params.insert(name.to_owned(), value.to_owned());
    }
    let mut headers: BTreeMap<String, String> = request
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    // With tokens checked, the user is the token's subject, never a header a client sent.
    let caller = if shared.context.auth().is_some() {
        headers.remove(USER);
        principal.as_ref().map(|principal| {
            headers.insert(USER.to_owned(), principal.subject.clone());
            Caller {
                token: principal.token.clone(),
                subject: principal.subject.clone(),
                accepted_at: crate::auth::unix_now(),
            }
        })
    } else {
        Caller::from_headers(&headers)
    };
    let origin = Origin::Http {
        method: request.method().to_string(),
        path: request.path().to_owned(),
    };
    // Read your writes: a request presenting the positions a command answered waits until the
    // views fed by those events have caught up.
    if let Some(value) = headers.get(POSITION_HEADER) {
        let waited = async {
            let wanted = Consistency::parse(value)?;
            match shared.context.projections() {
                Some(projections) => projections.wait(&wanted).await,
                None => Ok(()),
            }
        };
        if let Err(error) = waited.await {
            let mut refused = to_http(Response::from_error(&error));
            if error.status() == 503 {
                // Not caught up yet: worth asking again shortly.
                refused.headers_mut().insert(
                    actix_web::http::header::RETRY_AFTER,
                    HeaderValue::from_static("1"),
                );
            }
            return refused;
        }
    }
    let minos_request =
        Request::from_parts(content, params, headers, origin).with_principal(principal);
    let run = invoke(&shared.chain, handler, minos_request, &shared.context);
    let run = crate::views::recording(run);
    let (result, written) = match caller {
        Some(caller) => caller.scope(run).await,
        None => run.await,
    };
    let mut response = match result {
        Ok(response) => to_http(response),
        Err(error) => to_http(Response::from_error(&error)),
    };
    if !written.positions.is_empty() {
        if let Ok(value) = HeaderValue::try_from(written.to_string()) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(POSITION_HEADER), value);
        }
    }
    response
}
