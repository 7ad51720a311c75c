//! Projections: one task per view and source type, following the source's event log in commit order
//! and running the view's handlers on each event, a page at a time in one view-database transaction
//! that also moves the position.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::messaging::BrokerMessage;
use crate::routing::{Context, Middleware, RouteEntry, RouteTable};
use crate::store::Position;

use super::{Consistency, SourceStatus, ViewDef, ViewStatus, Views};

use super::log::{self, PAGE};

mod page;
mod wait;

/// Where the store's log put the event a message carries, as its outbox row recorded it (header
/// `position`).
fn position_header(message: &BrokerMessage) -> Option<Position> {
    message
        .payload
        .headers
        .get(crate::messaging::headers::POSITION)?
        .parse()
        .ok()
}

/// The root and version of the event a live message carries.
fn event_of(message: &BrokerMessage) -> Option<(uuid::Uuid, u64)> {
    let content = &message.payload.content;
    let uuid = content.get("uuid")?.as_str()?.parse().ok()?;
    Some((uuid, content.get("version")?.as_u64()?))
}

/// The root type whose events a topic carries: `FooCreated`, `FooUpdated`, `FooUpdated.bar` and
/// `FooDeleted` → `Foo`.
pub(crate) fn source_of(topic: &str) -> Option<&str> {
    let head = topic.split('.').next().unwrap_or(topic);
    ["Created", "Updated", "Deleted"]
        .iter()
        .find_map(|suffix| head.strip_suffix(suffix))
        .filter(|name| !name.is_empty())
        .filter(|_| !topic.contains('.') || head.ends_with("Updated"))
}

/// What one step of a projection did.
enum Step {
    /// Applied a page (or found its position moved by someone else): look for the next one.
    Applied,
    /// Applied a page read just now that held the rest of the log: wait for new events.
    AppliedAll,
    /// No event after the position.
    CaughtUp,
    /// Another process holds the projection.
    Busy,
}

/// A view with the handlers that write it.
#[derive(Debug)]
pub(crate) struct ViewPlan {
    pub(crate) def: &'static ViewDef,
    pub(crate) handlers: Vec<&'static RouteEntry>,
    pub(crate) sources: Vec<String>,
    pub(crate) fingerprint: String,
}

impl ViewPlan {
    /// The views the table's handlers write, with their handlers.
    pub(crate) fn collect(table: &RouteTable) -> Result<Vec<ViewPlan>> {
        let mut plans: BTreeMap<&'static str, ViewPlan> = BTreeMap::new();
        for entry in table.entries() {
            let Some(view) = entry.view else { continue };
            let def = super::definition(view).ok_or_else(|| {
                Error::Routes(format!(
                    "{} declares `view = {view}`, but no #[view] of that name is linked in",
                    entry.location()
                ))
            })?;
            let topic = entry.route.topic().unwrap_or_default();
            let source = source_of(topic).ok_or_else(|| {
                Error::Routes(format!(
                    "{}: a view handler follows domain events (`FooCreated`, `FooUpdated`, `FooUpdated.field`, `FooDeleted`), not `{topic}`",
                    entry.location()
                ))
            })?;
            let plan = plans.entry(def.name).or_insert_with(|| ViewPlan {
                def,
                handlers: Vec::new(),
                sources: Vec::new(),
                fingerprint: String::new(),
            });
            plan.handlers.push(entry);
            if !plan.sources.iter().any(|s| s == source) {
                plan.sources.push(source.to_owned());
            }
        }
        Ok(plans
            .into_values()
            .map(|mut plan| {
                let mut topics: Vec<&str> = plan
                    .handlers
                    .iter()
                    .filter_map(|e| e.route.topic())
                    .collect();
                topics.sort_unstable();
                topics.dedup();
                plan.sources.sort();
                plan.fingerprint = format!(
                    "{:016x}",
                    crate::hash::stable_hash(&format!(
                        "{}|v{}|{}",
                        plan.def.shape,
                        plan.def.version,
                        topics.join(",")
                    ))
                );
                plan
            })
            .collect())
    }
}

/// The running projections of a service.
#[derive(Clone)]
pub(crate) struct Projections {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Projections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projections")
            .field("views", &self.inner.plans.len())
            .finish()
    }
}

struct Inner {
    views: Views,
    context: Context,
    chain: Arc<[Middleware]>,
    plans: Vec<ViewPlan>,
    owned: BTreeSet<String>,
    poll: Duration,
    wait_timeout: Duration,
    /// (view, source) → its status and its wake-up.
    followers: BTreeMap<(&'static str, String), Follower>,
    /// Bumped after every page committed.
    progress: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The pages read, shared by the views of one source.
    pages: log::SharedPages,
    /// Held while a task takes its turn and chooses the views it takes along (see `step`).
    choosing: Mutex<()>,
}

struct Follower {
    status: Mutex<SourceStatus>,
    /// Whether it has read the whole log once since it started (or was rebuilt).
    caught_up: AtomicBool,
    /// Whether `status.position` is the stored position: this process read it or moved it last. Each
    /// step then starts from memory instead of reading it; another replica moving it makes this
    /// process's next advance fail, which clears this and reads it again.
    trusted: AtomicBool,
    /// Counts rebuilds: a step that began before one does not trust the position it reached.
    rebuilds: std::sync::atomic::AtomicU64,
    wake: Notify,
    /// Cuts a failed projection's backoff short (a query waits for the view).
    retry: Notify,
    /// Held while a page is applied to this view: by its own task, or by the task of another view of
    /// the source that takes this one along (see [`Projections::step`]).
    busy: tokio::sync::Mutex<()>,
    /// The count of this service's commits (`Repository::appended`) seen before the last page another
    /// view's task applied to this one along with its own, when that page was the whole log: a wake-up
    /// for those commits finds nothing new, so this view's task does not read the log for it.
    covered: AtomicU64,
}

impl Follower {
    /// The stored position, when this process knows it (see `trusted`).
    fn known_position(&self) -> Option<Position> {
        self.trusted.load(AtomicOrdering::SeqCst).then(|| {
            self.status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .position
        })
    }

    /// The stored position of a view that follows live events without error, as this process knows
    /// it: such a view can be carried by another's task, or taken along by it (see `page`).
    fn live_position(&self) -> Option<Position> {
        let failing = || {
            self.status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .error
                .is_some()
        };
        match self.caught_up.load(AtomicOrdering::SeqCst) && !failing() {
            true => self.known_position(),
            false => None,
        }
    }

    /// Trusts the position just read or reached, unless a rebuild came after `rebuilds` was read.
    fn trust_unless_rebuilt_since(&self, rebuilds: u64) {
        let current = self.rebuilds.load(AtomicOrdering::SeqCst) == rebuilds;
        self.trusted.store(current, AtomicOrdering::SeqCst);
    }
}

impl Projections {
    /// Prepares the views' tables (building anew those whose definition changed) and starts one
    /// projection per view and source type. `owned` are the root types whose events are in this
    /// service's own store; the others are asked of their owner with `_Get{Type}Events`.
    pub(crate) async fn start(
        views: Views,
        context: Context,
        chain: Arc<[Middleware]>,
        plans: Vec<ViewPlan>,
        owned: BTreeSet<String>,
        poll: Duration,
        wait_timeout: Duration,
    ) -> Result<Projections> {
        let mut followers = BTreeMap::new();
        for plan in &plans {
            // Empty when new or when its definition changed: it is then built from the whole history.
            let emptied = views
                .prepare(plan.def, &plan.fingerprint, &plan.sources)
                .await?;
            tracing::info!(
                view = plan.def.name,
                database = %views.describe(),
                sources = ?plan.sources,
                "view ready{}",
                if emptied { "; building it from history" } else { "" }
            );
            for source in &plan.sources {
                followers.insert(
                    (plan.def.name, source.clone()),
                    Follower {
                        status: Mutex::new(SourceStatus {
                            source: source.clone(),
                            position: Position::START,
                            behind: 0,
                            applied: 0,
                            error: None,
                        }),
                        caught_up: AtomicBool::new(false),
                        trusted: AtomicBool::new(false),
                        rebuilds: Default::default(),
                        wake: Notify::new(),
                        retry: Notify::new(),
                        busy: tokio::sync::Mutex::new(()),
                        covered: AtomicU64::new(0),
                    },
                );
            }
        }
        let projections = Projections {
            inner: Arc::new(Inner {
                views,
                context,
                chain,
                plans,
                owned,
                poll,
                wait_timeout,
                followers,
                progress: watch::channel(0).0,
                stop: watch::channel(false).0,
                tasks: Mutex::default(),
                pages: log::SharedPages::default(),
                choosing: Mutex::new(()),
            }),
        };
        let mut tasks = Vec::new();
        for (index, plan) in projections.inner.plans.iter().enumerate() {
            for source in &plan.sources {
                let this = projections.clone();
                let source = source.clone();
                tasks.push(tokio::spawn(
                    async move { this.follow(index, source).await },
                ));
            }
        }
        *projections
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = tasks;
        Ok(projections)
    }

    /// A live message arrived: the projections of its event's source type look for new events, unless
    /// they already applied that event (one this process committed: its commit woke them already).
    pub(crate) fn nudge(&self, message: &BrokerMessage) {
        let Some(source) = source_of(&message.topic) else {
            return;
        };
        let position = position_header(message).or_else(|| {
            let (uuid, version) = event_of(message)?;
            self.inner
                .context
                .repository()
                .recent_position(uuid, version)
        });
        for ((_, s), follower) in &self.inner.followers {
            if s != source {
                continue;
            }
            let reached = position.is_some_and(|position| {
                let status = follower.status.lock().unwrap_or_else(|p| p.into_inner());
                status.position >= position
            });
            if !reached {
                follower.wake.notify_one();
            }
        }
    }

    /// Waits (at most `views.wait_timeout_ms`) until the views fed by the event a live message
    /// carries have applied it, when the event is this service's own; other handlers of the message
    /// then see its effect in the views. A view that does not catch up in time is logged, not waited
    /// for longer.
    pub(crate) async fn settle(&self, message: &BrokerMessage) {
        let Some(source) = source_of(&message.topic) else {
            return;
        };
        if !self.inner.owned.contains(source) {
            return;
        }
        // A view being built from history, or stopped at a failing event, would hold every message
        // up: wait only for views that follow live events.
        let lagging = self.inner.followers.iter().any(|((_, s), follower)| {
            if s != source {
                return false;
            }
            let status = follower.status.lock().unwrap_or_else(|p| p.into_inner());
            let building =
                !follower.caught_up.load(AtomicOrdering::SeqCst) && status.behind > PAGE as u64;
            status.error.is_some() || building
        });
        if lagging {
            return;
        }
        // The position the outbox row recorded, else this process's recent commits, else the log.
        let position = match (position_header(message), event_of(message)) {
            (Some(position), _) => Some(position),
            (None, Some((uuid, version))) => {
                let repository = self.inner.context.repository();
                repository.position_of(uuid, version).await
            }
            (None, None) => None,
        };
        let Some(position) = position else {
            return;
        };
        let mut wanted = Consistency::default();
        wanted.record(source, position);
        if let Err(error) = self.wait(&wanted).await {
            tracing::warn!(topic = %message.topic, %error, "running the event's handlers before its views caught up");
        }
    }

    /// Stops the projections (the page in progress rolls back).
    pub(crate) async fn stop(&self) {
        let _ = self.inner.stop.send(true);
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }

    /// Each view's state.
    pub(crate) fn status(&self) -> Vec<ViewStatus> {
        self.inner
            .plans
            .iter()
            .map(|plan| self.status_of(plan))
            .collect()
    }

    fn status_of(&self, plan: &ViewPlan) -> ViewStatus {
        let mut failed = false;
        let mut building = false;
        let sources = plan
            .sources
            .iter()
            .filter_map(|source| self.inner.followers.get(&(plan.def.name, source.clone())))
            .map(|follower| {
                let status = follower
                    .status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                failed |= status.error.is_some();
                building |= !follower.caught_up.load(AtomicOrdering::SeqCst);
                status
            })
            .collect();
        ViewStatus {
            name: plan.def.name.to_owned(),
            table: plan.def.table(),
            state: if failed {
                "failed"
            } else if building {
                "building"
            } else {
                "live"
            },
            fingerprint: plan.fingerprint.clone(),
            sources,
        }
    }

    /// Empties the view named `name` and builds it again from history.
    pub(crate) async fn rebuild(&self, name: &str) -> Result<ViewStatus> {
        let plan = self
            .inner
            .plans
            .iter()
            .find(|p| p.def.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.inner.plans.iter().map(|p| p.def.name).collect();
                Error::not_found(format!(
                    "no view `{name}` in this service (its views: {})",
                    known.join(", ")
                ))
            })?;
        self.inner.views.reset(plan.def, &plan.fingerprint).await?;
        tracing::info!(view = name, "rebuilding the view from history, on demand");
        for source in &plan.sources {
            if let Some(follower) = self.inner.followers.get(&(plan.def.name, source.clone())) {
                follower.caught_up.store(false, AtomicOrdering::SeqCst);
                {
                    let mut status = follower.status.lock().unwrap_or_else(|p| p.into_inner());
                    follower.rebuilds.fetch_add(1, AtomicOrdering::SeqCst);
                    follower.covered.store(0, AtomicOrdering::SeqCst);
                    follower.trusted.store(false, AtomicOrdering::SeqCst);
                    status.position = Position::START;
                    status.applied = 0;
                }
                follower.wake.notify_one();
            }
        }
        Ok(self.status_of(plan))
    }

    async fn follow(self, index: usize, source: String) {
        let plan = &self.inner.plans[index];
        let key = (plan.def.name, source.clone());
        let Some(follower) = self.inner.followers.get(&key) else {
            return;
        };
        let mut stop = self.inner.stop.subscribe();
        // The service's own events: woken by its own commits at once.
        let mut appended = self
            .inner
            .owned
            .contains(&source)
            .then(|| self.inner.context.repository().appended());
        let mut backoff = Duration::from_millis(100);
        let mut pages = 0u64;
        // Whether the last wake-up was this service's commits alone.
        let mut by_commit = false;
        loop {
            if *stop.borrow() {
                return;
            }
            // Commits from here on wake the follower after this step (a page read below sees them
            // or they wake it).
            let seen = appended
                .as_mut()
                .map_or(0, |appended| *appended.borrow_and_update());
            let woken = std::mem::take(&mut by_commit).then_some(seen);
            match self.step(index, &source, follower, pages, woken).await {
                Ok(Step::Busy) => {
                    // Another replica is applying this view's pages: look again later.
                    tokio::select! {
                        _ = follower.wake.notified() => {}
                        _ = tokio::time::sleep(self.inner.poll) => {}
                        _ = stop.changed() => return,
                    }
                }
                Ok(Step::Applied) => {
                    pages += 1;
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(step @ (Step::CaughtUp | Step::AppliedAll)) => {
                    if matches!(step, Step::AppliedAll) {
                        pages += 1;
                    }
                    backoff = Duration::from_millis(100);
                    let was = follower.caught_up.swap(true, AtomicOrdering::SeqCst);
                    if !was {
                        let status = follower
                            .status
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .clone();
                        tracing::info!(view = plan.def.name, source = %source, position = %status.position, applied = status.applied, "view caught up; following new events");
                    }
                    let committed = async {
                        match appended.as_mut() {
                            Some(appended) => {
                                if appended.changed().await.is_err() {
                                    std::future::pending::<()>().await;
                                }
                            }
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = follower.wake.notified() => {}
                        _ = committed => by_commit = true,
                        _ = tokio::time::sleep(self.inner.poll) => {}
                        _ = stop.changed() => return,
                    }
                }
                Err(error) => {
                    follower.trusted.store(false, AtomicOrdering::SeqCst);
                    // The views of the source it carried go on by themselves (see `carried`).
                    for ((_, s), other) in &self.inner.followers {
                        if *s == source && !std::ptr::eq(other, follower) {
                            other.wake.notify_one();
                        }
                    }
                    tracing::warn!(view = plan.def.name, source = %source, %error, retry_in = ?backoff, "view projection failed; retrying (the event is not skipped)");
                    follower
                        .status
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .error = Some(error.to_string());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = follower.retry.notified() => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::source_of;

    #[test]
    fn sources_of_topics() {
        assert_eq!(source_of("FooCreated"), Some("Foo"));
        assert_eq!(source_of("FooUpdated"), Some("Foo"));
        assert_eq!(source_of("FooUpdated.bar"), Some("Foo"));
        assert_eq!(source_of("FooUpdated.lines.create"), Some("Foo"));
        assert_eq!(source_of("FooDeleted"), Some("Foo"));
        assert_eq!(source_of("Created"), None);
        assert_eq!(source_of("CreateFoo"), None);
        assert_eq!(source_of("FooCreated.bar"), None);
    }
}
