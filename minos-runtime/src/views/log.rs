//! The event log views are built from: a page of a root type's events in commit order, read from this
//! service's own store, or asked of the type's owner with `_Get{Type}Events` (which every service
//! answers for the types it owns).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::messaging::{topics, BrokerMessage};
use crate::routing::Context;
use crate::store::{EventStore, Position, StoreError, StoredEvent};

/// Events per page when a request names no limit.
pub(crate) const PAGE: usize = 256;

/// The last non-empty page read of each source, for the other views of that source: several views of
/// one type read the same pages, with one read (of the store, or of the owner) between them.
#[derive(Default)]
pub(crate) struct SharedPages(Mutex<BTreeMap<String, SharedPage>>);

/// A page of a source's log: the position it was read after, its events, how many followed.
struct SharedPage {
    after: Position,
    events: Arc<Vec<StoredEvent>>,
    behind: Option<u64>,
}

impl SharedPages {
    /// The page of `source` after `after` ([`PAGE`] events at most), from this service's store when
    /// `owned`, else from the owner; and how many follow it (see [`local_page`]). Another view of this
    /// source that read this very page shares it: the page is a prefix of what a read now would give
    /// (the log only grows after a position), so at worst this view moves less far this step. An
    /// empty page is never shared: it would hide events written since. The last item says whether the
    /// page was read just now (not shared): only such a page, shorter than [`PAGE`], shows the end of
    /// the log as of this call.
    pub(crate) async fn page(
        &self,
        context: &Context,
        owned: bool,
        source: &str,
        after: Position,
        count: bool,
    ) -> Result<(Arc<Vec<StoredEvent>>, Option<u64>, bool)> {
        if let Some(page) = self.lock().get(source).filter(|page| page.after == after) {
            return Ok((Arc::clone(&page.events), page.behind, false));
        }
        let (events, behind) = match owned {
            true => {
                local_page(
                    context.repository().store().as_ref(),
                    source,
                    after,
                    PAGE,
                    count,
                )
                .await?
            }
            false => remote_page(context, source, after, PAGE, count).await?,
        };
        let events = Arc::new(events);
        if !events.is_empty() {
            let events = Arc::clone(&events);
            self.lock().insert(
                source.to_owned(),
                SharedPage {
                    after,
                    events,
                    behind,
                },
            );
        }
        Ok((events, behind, true))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SharedPage>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

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
