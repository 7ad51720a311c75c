//! The event log views are built from: a page of a root type's events in commit order, read from this
//! service's own store, or asked of the type's owner with `_Get{Type}Events` (which every service
//! answers for the types it owns).

use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::messaging::{topics, BrokerMessage};
use crate::routing::Context;
use crate::store::{EventStore, Position, StoreError, StoredEvent};

/// Events per page when a request names no limit.
pub(crate) const PAGE: usize = 256;

/// The events of `name` after `after` (at most `limit`), and how many follow them: 0 when the page is
/// not full, counted when `count`, else unknown.
pub(crate) async fn local_page(
    store: &(impl EventStore + ?Sized),
    name: &str,
    after: Position,
    limit: usize,
    count: bool,
) -> Result<(Vec<StoredEvent>, Option<u64>)> {
    let events = store.log(name, after, limit).await?;
    let behind = match events.last() {
        _ if events.len() < limit => Some(0),
        Some(last) if count => Some(store.log_behind(name, last.position()).await?),
        _ => None,
    };
    Ok((events, behind))
}

/// [`local_page`] of the service that owns `name`, over the broker.
pub(crate) async fn remote_page(
    context: &Context,
    name: &str,
    after: Position,
    limit: usize,
    count: bool,
) -> Result<(Vec<StoredEvent>, Option<u64>)> {
    let message = BrokerMessage::new(
        topics::events(name),
        json!({"after": after, "limit": limit, "count": count}),
    );
    let reply = context
        .client()
        .request(message, Duration::from_secs(10))
        .await?;
    let page: EventPage = reply.into_content()?;
    let events = page
        .events
        .into_iter()
        .map(|e| StoredEvent {
            id: e.position.id,
            commit: e.position.commit,
            event: e.event,
        })
        .collect();
    Ok((events, page.behind))
}

#[derive(serde::Deserialize)]
struct EventPage {
    events: Vec<PagedEvent>,
    behind: Option<u64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PagedEvent {
    position: Position,
    event: crate::domain::Event,
}

/// Answers `_Get{Type}Events` for a root type this service owns: `{"after": "COMMIT.ID", "limit": N}`
/// → `{"events": [{"position", "event"}], "behind": N}` in commit order (the log views are built from).
pub(crate) async fn answer_events(
    name: &'static str,
    message: BrokerMessage,
) -> Result<crate::routing::Response> {
    #[derive(serde::Deserialize)]
    struct Wanted {
        #[serde(default)]
        after: Position,
        limit: Option<usize>,
        #[serde(default)]
        count: bool,
    }
    let wanted: Wanted = serde_json::from_value(message.payload.content).map_err(|e| {
        Error::bad_request(format!(
            "`{}` takes {{\"after\": \"COMMIT.ID\", \"limit\": N}}: {e}",
            message.topic
        ))
    })?;
    let limit = wanted.limit.unwrap_or(PAGE).clamp(1, 1000);
    let repository = crate::repository::Repository::current()?;
    let store = repository.store();
    let (events, behind) =
        local_page(store.as_ref(), name, wanted.after, limit, wanted.count).await?;
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            serde_json::to_value(PagedEvent {
                position: e.position(),
                event: e.event,
            })
        })
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Store(StoreError::Domain(crate::domain::DomainError::Json(e))))?;
    Ok(crate::routing::Response::json(
        json!({"events": events, "behind": behind}),
    ))
}
