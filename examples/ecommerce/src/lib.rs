//! What the ecommerce services share: the JSON shapes the original application's clients expect.
//!
//! The original serialises an aggregate as its fields plus `uuid`, `version`, and `created_at` /
//! `updated_at` as integers (microseconds since the Unix epoch, UTC); clients written for it (its
//! tavern tests, its front-end) read them so.

use minos::chrono::{DateTime, Utc};
use minos::serde_json::Value;
use minos::{Root, RootEntity};

/// Microseconds since the Unix epoch: how the original writes times.
pub fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// A stored root as the original answers it: its fields, `uuid`, `version`, and the two times in
/// microseconds.
pub fn aggregate<T: RootEntity>(root: &Root<T>) -> minos::Result<Value> {
    let mut out = minos::serde_json::to_value(root)
        .map_err(|e| minos::Error::with_status(500, format!("encoding {}: {e}", T::NAME)))?;
    if let Value::Object(map) = &mut out {
        map.insert("created_at".into(), micros(root.created_at()).into());
        map.insert("updated_at".into(), micros(root.updated_at()).into());
    }
    Ok(out)
}

/// Refuses (403) a caller who is neither the customer `owner` (the token's subject) nor an admin.
pub fn own_or_admin(request: &minos::Request, owner: minos::Uuid) -> minos::Result<()> {
    match request.principal() {
        Some(caller) if caller.subject == owner.to_string() || caller.has_role("admin") => Ok(()),
        Some(_) => Err(minos::Error::with_status(
            403,
            "this belongs to another customer",
        )),
        None => Err(minos::Error::with_status(
            401,
            "this route needs the customer's access token: log in with GET /login",
        )),
    }
}

/// How long a request waits for the saga it started to end.
pub const SAGA_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `saga` with `context` for the caller and waits for its end: the finished execution, or a 400
/// carrying the reason it failed (a step's refusal, a refused reservation), as the original answered a
/// failed saga with an error.
pub async fn run_saga(
    sagas: &minos::saga::SagaManager,
    saga: &minos::saga::SagaDefinition,
    context: minos::saga::SagaContext,
) -> minos::Result<minos::saga::SagaExecution> {
    let started = sagas.run(saga, context).await?;
    let execution = sagas.wait(started.uuid, SAGA_WAIT).await?;
    if execution.status != minos::saga::ExecutionStatus::Finished {
        return Err(minos::Error::bad_request(
            execution
                .error
                .unwrap_or_else(|| format!("the saga {} failed", saga.name())),
        ));
    }
    Ok(execution)
}

/// The uuid a command acts on: the `{uuid}` of its REST path, or `uuid` in the content of its broker
/// message (as the original's broker commands carry it).
pub fn target(request: &minos::Request) -> minos::Result<minos::Uuid> {
    if request.params().contains_key("uuid") {
        return request.param("uuid");
    }
    request
        .json()
        .get("uuid")
        .and_then(Value::as_str)
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| minos::Error::bad_request("`uuid` must be the uuid this command acts on"))
}

/// A uuid field of a JSON body.
pub fn uuid_field(content: &Value, name: &str) -> minos::Result<minos::Uuid> {
    content
        .get(name)
        .and_then(Value::as_str)
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| minos::Error::bad_request(format!("`{name}` must be a uuid")))
}

/// The customer the caller is (the verified token's subject), as a uuid. Never a `user` header: a
/// service without the auth secret cannot tell who calls.
pub fn caller(request: &minos::Request) -> minos::Result<minos::Uuid> {
    request
        .principal()
        .and_then(|p| p.subject.parse().ok())
        .ok_or_else(|| {
            minos::Error::with_status(
                401,
                "this route needs the customer's access token: log in with GET /login",
            )
        })
}

/// Query-string parameter `name`, else the same key of the JSON body (where the original read it), else
/// `default`.
pub fn option<T: std::str::FromStr + serde::de::DeserializeOwned>(
    request: &minos::Request,
    name: &str,
    default: T,
) -> minos::Result<T> {
    if let Some(text) = request.params().get(name) {
        return text.parse().map_err(|_| {
            minos::Error::bad_request(format!("`{name}`: `{text}` is not valid here"))
        });
    }
    match request.json().get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => serde_json::from_value(value.clone()).map_err(|_| {
            minos::Error::bad_request(format!("`{name}`: `{value}` is not valid here"))
        }),
    }
}

/// Waits (up to 5 s) until `caught_up` holds, then returns. A query side follows the events a moment
/// after the command that made them answered; the shop's query routes first wait for their view to
/// reach what the write side already holds, so a client reads its own writes without polling.
pub async fn caught_up<F, Fut>(mut caught_up: F) -> minos::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = minos::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !caught_up().await? && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The version the write side holds of a root: `None` when there is none or it was deleted.
pub async fn written<T: RootEntity>(uuid: minos::Uuid) -> minos::Result<Option<u64>> {
    use minos::RootEntityExt;
    match T::get(uuid).await {
        Ok(root) => Ok(Some(root.version())),
        Err(error) if error.is_not_found() || error.is_deleted() => Ok(None),
        Err(error) => Err(error),
    }
}
