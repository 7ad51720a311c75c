//! Composed routes: one request answered by calling several services through the gateway's own
//! routing, parts without dependencies at once, a part using another's answer after it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{join_all, FutureExt, Shared};
use http_body_util::{BodyExt, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, HOST};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Response};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::config::{ComposeConfig, GatewayConfig};
use super::proxy::{self, GatewayBody, Outgoing, Peer};
use super::server::{auth_error, json_error, json_response, Worker};
use super::table::{parse_method, parse_route, Index, Table, Template};
use crate::auth::Principal;

/// The largest answer of one part that is read.
const PART_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// A composed route, checked and ordered when the gateway starts.
#[derive(Debug)]
pub(crate) struct ComposePlan {
    /// `METHOD /template`, as configured.
    route: String,
    /// How long each part may take.
    timeout: Duration,
    /// The parts, each after those it depends on.
    parts: Vec<PartPlan>,
}

#[derive(Debug)]
struct PartPlan {
    name: String,
    method: Method,
    pieces: Vec<Piece>,
    /// Positions in [`ComposePlan::parts`] of the parts it needs.
    needs: Vec<usize>,
    optional: bool,
}

/// A piece of a part's path: text as written, the composed route's parameter, or another part's
/// field.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Parameter(usize),
    Field {
        /// The part's name.
        part: String,
        /// Its position in [`ComposePlan::parts`], known once the parts are ordered.
        position: usize,
        /// The field, `a.b` for `{"a": {"b": ...}}`.
        path: Vec<String>,
    },
}

/// Reads every `gateway.compose` entry: the routes, their parts' calls, and an order of the parts
/// that respects their dependencies. An unknown name or a cycle is an error naming it.
pub(crate) fn plans(config: &GatewayConfig) -> Result<Index<ComposePlan>, String> {
    let mut index = Index::default();
    let mut seen: Vec<(Method, String)> = Vec::new();
    for (position, entry) in config.compose.iter().enumerate() {
        let (method, template, plan) = plan(entry, config.timeout_ms)
            .map_err(|e| format!("gateway.compose[{position}] ({}): {e}", entry.route))?;
        let key = (method.clone(), template.as_str().to_owned());
        if seen.contains(&key) {
            return Err(format!(
                "gateway.compose[{position}]: `{}` is composed twice",
                entry.route
            ));
        }
        seen.push(key);
        index.add(method, template, plan);
    }
    Ok(index)
}

fn plan(entry: &ComposeConfig, default_ms: u64) -> Result<(Method, Template, ComposePlan), String> {
    let (method, template) = parse_route(&entry.route)?;
    if entry.parts.is_empty() {
        return Err("no parts: list the calls under `parts`".into());
    }
    let parameters: Vec<&str> = template.parameters().collect();
    let mut unordered: BTreeMap<&str, PartPlan> = BTreeMap::new();
    for (name, part) in &entry.parts {
        if name.is_empty() || name.starts_with('_') || name.contains(['.', '{', '}']) {
            return Err(format!(
                "part `{name}`: a name is not empty, does not start with `_` and has no `.`, `{{` or `}}`"
            ));
        }
        let (part_method, pieces) =
            parse_call(part.call(), &parameters).map_err(|e| format!("part `{name}`: {e}"))?;
        for piece in &pieces {
            if let Piece::Field { part: other, .. } = piece {
                if !entry.parts.contains_key(other) {
                    let known: Vec<&str> = entry.parts.keys().map(String::as_str).collect();
                    return Err(format!(
                        "part `{name}` uses `{{{other}.…}}`, but there is no part `{other}` (parts: {})",
                        known.join(", ")
                    ));
                }
                if other == name {
                    return Err(format!("part `{name}` uses its own answer"));
                }
            }
        }
        unordered.insert(
            name,
            PartPlan {
                name: name.clone(),
                method: part_method,
                pieces,
                needs: Vec::new(),
                optional: part.optional(),
            },
        );
    }
    let order = order(&unordered)?;
    let positions: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, i))
        .collect();
    let mut parts: Vec<PartPlan> = Vec::with_capacity(order.len());
    for name in &order {
        let mut part = unordered.remove(name).expect("ordered parts are planned");
        for piece in &mut part.pieces {
            if let Piece::Field { part, position, .. } = piece {
                *position = positions[part.as_str()];
            }
        }
        let mut needs: Vec<usize> = part
            .pieces
            .iter()
            .filter_map(|piece| match piece {
                Piece::Field { position, .. } => Some(*position),
                _ => None,
            })
            .collect();
        needs.sort_unstable();
        needs.dedup();
        part.needs = needs;
        parts.push(part);
    }
    let timeout = Duration::from_millis(entry.timeout_ms.unwrap_or(default_ms));
    let plan = ComposePlan {
        route: entry.route.trim().to_owned(),
        timeout,
        parts,
    };
    Ok((method, template, plan))
}

/// The parts a part uses the answers of.
fn uses(part: &PartPlan) -> impl Iterator<Item = &str> {
    part.pieces.iter().filter_map(|piece| match piece {
        Piece::Field { part, .. } => Some(part.as_str()),
        _ => None,
    })
}

/// The parts in an order where each comes after those it uses; a cycle is an error naming it.
fn order<'a>(parts: &BTreeMap<&'a str, PartPlan>) -> Result<Vec<&'a str>, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit<'a>(
        name: &'a str,
        parts: &BTreeMap<&'a str, PartPlan>,
        marks: &mut HashMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        order: &mut Vec<&'a str>,
    ) -> Result<(), String> {
        match marks.get(name).copied().unwrap_or(Mark::New) {
            Mark::Done => return Ok(()),
            Mark::Visiting => {
                let start = stack.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle: Vec<&str> = stack[start..].to_vec();
                cycle.push(name);
                return Err(format!(
                    "parts {} use each other's answers in a cycle",
                    cycle
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(" → ")
                ));
            }
            Mark::New => {}
        }
        marks.insert(name, Mark::Visiting);
        stack.push(name);
        let part = &parts[name];
        for used in uses(part) {
            let (used, _) = parts
                .get_key_value(used)
                .ok_or_else(|| format!("part `{name}` uses `{used}`, which is no part"))?;
            visit(used, parts, marks, stack, order)?;
        }
        stack.pop();
        marks.insert(name, Mark::Done);
        order.push(name);
        Ok(())
    }
    let mut marks = HashMap::new();
    let mut stack = Vec::new();
    let mut ordered = Vec::with_capacity(parts.len());
    for name in parts.keys() {
        visit(name, parts, &mut marks, &mut stack, &mut ordered)?;
    }
    Ok(ordered)
}

/// Reads `METHOD /path/{param}/{part.field}` into the method and the path's pieces.
fn parse_call(call: &str, parameters: &[&str]) -> Result<(Method, Vec<Piece>), String> {
    let call = call.trim();
    let Some((method, path)) = call.split_once(char::is_whitespace) else {
        return Err(format!(
            "`{call}` must be `METHOD /path`, like `GET /foos/{{uuid}}`"
        ));
    };
    let method = parse_method(method)?;
    let path = path.trim();
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        return Err(format!("`{path}` must be a path starting with `/`"));
    }
    let mut pieces = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("`{path}`: a `{{` is not closed"))?;
        let name = &after[..close];
        if name.is_empty() || name.contains('{') {
            return Err(format!("`{path}`: `{{{name}}}` is not a placeholder"));
        }
        let piece = match name.split_once('.') {
            Some((part, field)) => {
                let path: Vec<String> = field.split('.').map(str::to_owned).collect();
                if part.is_empty() || path.iter().any(String::is_empty) {
                    return Err(format!("`{{{name}}}` must be `{{part.field}}`"));
                }
                Piece::Field {
                    part: part.to_owned(),
                    position: 0,
                    path,
                }
            }
            None => match parameters.iter().position(|p| *p == name) {
                Some(position) => Piece::Parameter(position),
                None => {
                    return Err(format!(
                        "`{{{name}}}` is neither a parameter of the composed route ({}) nor \
                         `{{part.field}}` of another part",
                        match parameters.is_empty() {
                            true => "it has none".to_owned(),
                            false => parameters
                                .iter()
                                .map(|p| format!("{{{p}}}"))
                                .collect::<Vec<_>>()
                                .join(", "),
                        }
                    ))
                }
            },
        };
        pieces.push(piece);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("`{path}`: a `}}` has no `{{`"));
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok((method, pieces))
}

/// A value put into a path: characters outside a path segment's own are percent-encoded.
fn encode_segment(text: &str, into: &mut String) {
    for byte in text.bytes() {
        let plain = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        match plain {
            true => into.push(byte as char),
            false => into.push_str(&format!("%{byte:02X}")),
        }
    }
}

/// Why a part has no answer.
#[derive(Clone, Debug)]
struct PartError {
    /// The status the failure would be answered with (4xx passed on, anything else 502).
    status: u16,
    message: String,
    www_authenticate: Option<String>,
}

impl PartError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        PartError {
            status,
            message: message.into(),
            www_authenticate: None,
        }
    }
}

type Outcome = Arc<Result<Value, PartError>>;
type PartFuture<'a> = Shared<Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>>;

/// The path of `part`, with the composed route's parameters and the answers it uses filled in.
fn fill(
    part: &PartPlan,
    captures: &[&str],
    answers: &[(usize, Outcome)],
) -> Result<String, PartError> {
    let mut path = String::new();
    for piece in &part.pieces {
        match piece {
            Piece::Text(text) => path.push_str(text),
            Piece::Parameter(position) => {
                path.push_str(captures.get(*position).copied().unwrap_or_default())
            }
            Piece::Field {
                part: used,
                position,
                path: field,
            } => {
                let outcome = answers
                    .iter()
                    .find(|(p, _)| p == position)
                    .map(|(_, outcome)| outcome.as_ref());
                let answer = match outcome {
                    Some(Ok(answer)) => answer,
                    Some(Err(error)) => {
                        return Err(PartError {
                            message: format!("needs `{used}`, which failed: {}", error.message),
                            ..error.clone()
                        })
                    }
                    None => {
                        return Err(PartError::new(
                            502,
                            format!("needs `{used}`, which did not run"),
                        ))
                    }
                };
                let field_text = field.join(".");
                match field
                    .iter()
                    .try_fold(answer, |value, key| value.get(key.as_str()))
                {
                    Some(Value::String(text)) => encode_segment(text, &mut path),
                    Some(Value::Number(number)) => path.push_str(&number.to_string()),
                    Some(Value::Bool(flag)) => path.push_str(if *flag { "true" } else { "false" }),
                    Some(Value::Null) | None => {
                        return Err(PartError::new(
                            404,
                            format!("`{used}` has no `{field_text}`"),
                        ))
                    }
                    Some(_) => {
                        return Err(PartError::new(
                            502,
                            format!("`{used}.{field_text}` is neither a string nor a number"),
                        ))
                    }
                }
            }
        }
    }
    Ok(path)
}

/// Headers of the caller's that each part passes on (the services check `Authorization` again).
static PASSED_ON: [&str; 9] = [
    "authorization",
    "accept-language",
    "traceparent",
    "tracestate",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "host",
];

/// The headers every part is sent with.
fn part_headers(incoming: &HeaderMap, peer: &Peer) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in PASSED_ON {
        for value in incoming.get_all(name) {
            headers.append(name, value.clone());
        }
    }
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    proxy::add_forwarded(&mut headers, peer);
    // Set for each instance.
    headers.remove(HOST);
    headers
}

/// Sends one part's call through the gateway's routing and reads its JSON answer.
async fn call(
    worker: &Worker,
    table: &Table,
    principal: Option<&Principal>,
    method: &Method,
    path: String,
    headers: &HeaderMap,
    timeout: Duration,
) -> Result<Value, PartError> {
    let bare = path.split(['?', '#']).next().unwrap_or_default();
    let Some((_, route)) = table.routes.resolve(method, bare) else {
        return Err(PartError::new(404, format!("no route for {method} {bare}")));
    };
    if let Some(auth) = &worker.state.auth {
        if let Err(error) = auth.authorize(principal, &route.requirement) {
            let status = error.status();
            return Err(PartError {
                status,
                message: error.message(),
                www_authenticate: (status == 401).then(|| error.www_authenticate()),
            });
        }
    }
    let path_and_query = PathAndQuery::try_from(path.as_str())
        .map_err(|e| PartError::new(502, format!("`{path}` is not a path: {e}")))?;
    let deadline = Instant::now() + timeout;
    let outgoing = Outgoing {
        method: method.clone(),
        path_and_query,
        headers: headers.clone(),
        body: Bytes::new(),
    };
    let response = proxy::forward(&worker.pool, route, outgoing, deadline, timeout)
        .await
        .map_err(|failure| PartError::new(failure.status(), failure.message(method, &path)))?;
    let status = response.status().as_u16();
    let read = Limited::new(response.into_body(), PART_BODY_LIMIT).collect();
    let body = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(error)) => {
            return Err(PartError::new(
                502,
                format!("reading the answer of {method} {path}: {error}"),
            ))
        }
        Err(_) => {
            return Err(PartError::new(
                504,
                format!(
                    "the answer of {method} {path} did not arrive within {} ms",
                    timeout.as_millis()
                ),
            ))
        }
    };
    if (200..300).contains(&status) {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        return serde_json::from_slice(&body).map_err(|error| {
            PartError::new(502, format!("{method} {path} answered no JSON: {error}"))
        });
    }
    let said = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
    Err(PartError::new(
        status,
        format!("{method} {path} answered {status}: {said}"),
    ))
}

/// Answers a composed route: authenticates the caller once, runs the parts (each as soon as the
/// parts it uses have answered), and assembles `{"part": answer, ..., "_partial"?: {"part":
/// reason}}`.
pub(crate) async fn run(
    worker: &Worker,
    plan: &ComposePlan,
    template: &Template,
    path: &str,
    headers: &HeaderMap,
    peer: &Peer,
) -> Response<GatewayBody> {
    let principal = match &worker.state.auth {
        Some(auth) => {
            let authorization = headers
                .get(AUTHORIZATION)
                .map(|value| value.to_str().unwrap_or_default());
            match auth.authenticate(authorization).await {
                Ok(principal) => principal,
                Err(error) => return auth_error(&error),
            }
        }
        None => None,
    };
    let captures = template.captures(path);
    let part_headers = part_headers(headers, peer);
    let table = worker.state.worker_table(worker.index);
    let mut futures: Vec<PartFuture<'_>> = Vec::with_capacity(plan.parts.len());
    for part in &plan.parts {
        let needs: Vec<(usize, PartFuture<'_>)> = part
            .needs
            .iter()
            .map(|&position| (position, futures[position].clone()))
            .collect();
        let (table, captures, part_headers, principal) =
            (&*table, &captures, &part_headers, principal.as_ref());
        let future: Pin<Box<dyn Future<Output = Outcome> + Send + '_>> = Box::pin(async move {
            let mut answers = Vec::with_capacity(needs.len());
            for (position, need) in needs {
                answers.push((position, need.await));
            }
            let result = match fill(part, captures, &answers) {
                Ok(path) => {
                    call(
                        worker,
                        table,
                        principal,
                        &part.method,
                        path,
                        part_headers,
                        plan.timeout,
                    )
                    .await
                }
                Err(error) => Err(error),
            };
            Arc::new(result)
        });
        futures.push(future.shared());
    }
    let outcomes = join_all(futures).await;
    let mut answer = Map::new();
    let mut partial = Map::new();
    for (part, outcome) in plan.parts.iter().zip(outcomes) {
        let outcome = Arc::try_unwrap(outcome).unwrap_or_else(|shared| (*shared).clone());
        match outcome {
            Ok(value) => {
                answer.insert(part.name.clone(), value);
            }
            Err(error) if part.optional => {
                tracing::debug!(route = %plan.route, part = %part.name, error = %error.message, "optional part failed");
                answer.insert(part.name.clone(), Value::Null);
                partial.insert(part.name.clone(), Value::String(error.message));
            }
            Err(error) => {
                // The parts run in dependency order: the first failure is the cause of the others.
                let status = match error.status {
                    400..=499 => error.status,
                    _ => 502,
                };
                tracing::debug!(route = %plan.route, part = %part.name, error = %error.message, "required part failed");
                let mut response =
                    json_error(status, format!("part `{}`: {}", part.name, error.message));
                if let Some(challenge) = error
                    .www_authenticate
                    .filter(|_| status == 401)
                    .and_then(|c| HeaderValue::from_str(&c).ok())
                {
                    response
                        .headers_mut()
                        .insert(hyper::header::WWW_AUTHENTICATE, challenge);
                }
                return response;
            }
        }
    }
    if !partial.is_empty() {
        answer.insert("_partial".into(), Value::Object(partial));
    }
    json_response(200, &Value::Object(answer))
}

#[cfg(test)]
mod tests;
