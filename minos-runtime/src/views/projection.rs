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
use crate::routing::{invoke, Context, Middleware, Origin, Request, RouteEntry, RouteTable};
use crate::store::{Position, StoredEvent};

use super::{positions, Consistency, SourceStatus, ViewDef, ViewStatus, Views};

use super::log::{self, PAGE};

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

/// A page of a source's log being applied to one view or more.
struct Page<'a> {
    source: &'a str,
    /// The events after the position of the view furthest behind.
    events: &'a [StoredEvent],
    behind: Option<u64>,
    /// Whether the page is the whole log as of its read.
    whole: bool,
    /// This service's commits counted before the page was read (its own events only).
    seen: Option<u64>,
    /// Pages the first view's task applied before.
    pages: u64,
    /// The views, the one whose task applies it first.
    views: Vec<Applying<'a>>,
}

/// A view a page is applied to.
struct Applying<'a> {
    index: usize,
    follower: &'a Follower,
    /// Its position: it applies the page's events after it.
    from: Position,
    /// Its rebuild count when the page was read.
    rebuilds: u64,
    /// Another view's task applying it: held until done.
    _busy: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl Applying<'_> {
    /// Forgets its position, and has its task read it: a view carried by another's task goes on
    /// by itself until it is trusted again (see `Projections::carried`).
    fn distrust(&self) {
        self.follower.trusted.store(false, AtomicOrdering::SeqCst);
        self.follower.covered.store(0, AtomicOrdering::SeqCst);
        self.follower.wake.notify_one();
    }
}

/// Why applying a page failed.
enum Failed {
    /// The first view's handler, the database, or the transaction.
    Own(Error),
    /// The handler of the view at this index of [`Page::views`], another than the first.
    Along(usize, Error),
}

impl Failed {
    fn into_error(self) -> Error {
        match self {
            Failed::Own(error) | Failed::Along(_, error) => error,
        }
    }
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed::Own(error)
    }
}

impl From<crate::store::StoreError> for Failed {
    fn from(error: crate::store::StoreError) -> Self {
        Failed::Own(error.into())
    }
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

    /// Applies the next page, to this view and to the other views of the source that stand at the
    /// same position (live, without error, not busy): one view-database transaction, one read of the
    /// log and one lock round trip for all of them. `woken` is the count of commits seen when the
    /// task was woken by them alone: a page applied along with another view since then covers them.
    async fn step(
        &self,
        index: usize,
        source: &str,
        follower: &Follower,
        pages: u64,
        woken: Option<u64>,
    ) -> Result<Step> {
        if self.carried(index, source, follower) {
            return Ok(Step::CaughtUp);
        }
        let covered = || {
            woken.is_some_and(|seen| follower.covered.load(AtomicOrdering::SeqCst) >= seen)
                && follower.known_position().is_some()
        };
        // The other views to take along are chosen with this one's turn, in one critical section:
        // the tasks of the views of a source, woken by the same commit, would otherwise each take
        // their own turn at once (on several threads) and none could take another along. The ones
        // that come second find the page applied when they get their turn.
        let chosen = {
            let _choosing = self
                .inner
                .choosing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            follower.busy.try_lock().ok().map(|busy| {
                let along = match (covered(), follower.known_position()) {
                    (false, Some(from)) => self.companions(index, source, from),
                    _ => Vec::new(),
                };
                (busy, along)
            })
        };
        let (_busy, mut along) = match chosen {
            Some(chosen) => chosen,
            None => (follower.busy.lock().await, Vec::new()),
        };
        if covered() {
            return Ok(Step::CaughtUp);
        }
        let rebuilds = follower.rebuilds.load(AtomicOrdering::SeqCst);
        let from = match follower.known_position() {
            Some(position) => position,
            None => {
                self.stored_position(self.inner.plans[index].def.name, source)
                    .await?
            }
        };
        // (A rebuild may have moved one since it was chosen.)
        along.retain(|view| view.follower.known_position() == Some(view.from) && view.from <= from);
        // The page starts after the position of the view furthest behind; each applies what follows
        // its own.
        let mut after = along.iter().map(|view| view.from).fold(from, Position::min);
        let seen = self
            .inner
            .owned
            .contains(source)
            .then(|| *self.inner.context.repository().appended().borrow());
        let (events, behind, fresh) = loop {
            let read = self.read(source, after, pages).await?;
            if after < from && read.0.last().is_some_and(|last| last.position() <= from) {
                // Nothing for this view in it: it goes alone (the others, from their own tasks).
                along
                    .drain(..)
                    .for_each(|view| view.follower.wake.notify_one());
                after = from;
                continue;
            }
            break read;
        };
        if events.is_empty() {
            // Nothing after their position either, as of this read.
            for view in &along {
                if let Some(seen) = seen {
                    view.follower
                        .covered
                        .fetch_max(seen, AtomicOrdering::SeqCst);
                }
            }
            let mut status = follower.status.lock().unwrap_or_else(|p| p.into_inner());
            status.position = from;
            status.behind = 0;
            status.error = None;
            follower.trust_unless_rebuilt_since(rebuilds);
            return Ok(Step::CaughtUp);
        }
        let mut page = Page {
            source,
            events: &events,
            behind,
            // A short page read just now was the whole log (events written since woke this follower).
            whole: fresh && events.len() < super::log::PAGE,
            seen,
            pages,
            views: vec![Applying {
                index,
                follower,
                from,
                rebuilds,
                _busy: None,
            }],
        };
        page.views.extend(along);
        if page.views.len() > 1 {
            match self.apply_page(&page).await {
                Err(Failed::Along(at, error)) => {
                    // Another view's handler failed: that view goes on alone, from its own task (which
                    // retries it), and this one applies the page without it.
                    let failed = page.views.remove(at);
                    failed
                        .follower
                        .status
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .error = Some(error.to_string());
                    failed.distrust();
                }
                other => return other.map_err(Failed::into_error),
            }
        }
        // The others go on from their own tasks.
        page.views
            .drain(1..)
            .for_each(|view| view.follower.wake.notify_one());
        self.apply_page(&page).await.map_err(Failed::into_error)
    }

    /// Whether the view follows live events without error, as does a view of `source` before it at
    /// the same position: that view's task then applies the pages to both (see `companions`), and this
    /// one's leaves them to it. A view ahead or behind goes by itself until they meet.
    fn carried(&self, index: usize, source: &str, follower: &Follower) -> bool {
        let live = |follower: &Follower| {
            follower.caught_up.load(AtomicOrdering::SeqCst)
                && follower.known_position().is_some()
                && follower
                    .status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .error
                    .is_none()
        };
        let Some(position) = follower.known_position().filter(|_| live(follower)) else {
            return false;
        };
        self.inner.plans[..index].iter().any(|plan| {
            plan.sources.iter().any(|s| s == source)
                && self
                    .inner
                    .followers
                    .get(&(plan.def.name, source.to_owned()))
                    .is_some_and(|leader| live(leader) && leader.known_position() == Some(position))
        })
    }

    /// The other views of `source` that follow live events without error, that no task is applying a
    /// page to, and whose position (as this process knows it) is `from` or a few events behind it:
    /// held until the page is applied.
    fn companions<'a>(&'a self, index: usize, source: &str, from: Position) -> Vec<Applying<'a>> {
        let mut along = Vec::new();
        for (other, plan) in self.inner.plans.iter().enumerate() {
            if other == index || !plan.sources.iter().any(|s| s == source) {
                continue;
            }
            let Some(follower) = self
                .inner
                .followers
                .get(&(plan.def.name, source.to_owned()))
            else {
                continue;
            };
            if !follower.caught_up.load(AtomicOrdering::SeqCst) {
                continue;
            }
            let Ok(busy) = follower.busy.try_lock() else {
                continue;
            };
            let rebuilds = follower.rebuilds.load(AtomicOrdering::SeqCst);
            let ready = follower
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .error
                .is_none();
            match follower.known_position() {
                Some(position) if ready && position <= from => along.push(Applying {
                    index: other,
                    follower,
                    from: position,
                    rebuilds,
                    _busy: Some(busy),
                }),
                _ => {}
            }
        }
        along
    }

    /// Applies `page` to its views in one transaction holding their locks (a view whose lock another
    /// process holds is left out, as is the page for all of them when the first view's is), and moves
    /// their positions with it.
    async fn apply_page(&self, page: &Page<'_>) -> std::result::Result<Step, Failed> {
        let plans = &self.inner.plans;
        let first = &page.views[0];
        let Some(last) = page.events.last().map(StoredEvent::position) else {
            return Ok(Step::CaughtUp);
        };
        // Replicas sharing the view database: one applies the page, the others leave it (the position
        // check below keeps each page applied once even without this).
        let locks: Vec<String> = page
            .views
            .iter()
            .map(|view| {
                format!(
                    "minos:projection:{}:{}",
                    plans[view.index].def.name, page.source
                )
            })
            .collect();
        let Some((tx, taken)) = self.inner.views.begin_locked(&locks).await? else {
            first.follower.trusted.store(false, AtomicOrdering::SeqCst);
            page.views[1..].iter().for_each(Applying::distrust);
            return Ok(Step::Busy);
        };
        let views: Vec<&Applying<'_>> = page
            .views
            .iter()
            .zip(taken)
            .filter(|(view, taken)| {
                if !taken {
                    // Another process applies this view's pages: its own task finds out where.
                    view.distrust();
                }
                *taken
            })
            .map(|(view, _)| view)
            .collect();
        // The rows the handlers write wait in memory until the page is applied: one write per row.
        let tx: Box<dyn super::Tx> = Box::new(super::database::Buffered::new(tx));
        let tx = Arc::new(tokio::sync::Mutex::new(tx));
        // View by view (each view's rows then go out together).
        for (at, view) in views.iter().enumerate() {
            let plan = &plans[view.index];
            let blame = |error: Error| match at {
                0 => Failed::Own(error),
                _ => Failed::Along(
                    page.views
                        .iter()
                        .position(|v| v.index == view.index)
                        .unwrap_or(at),
                    error,
                ),
            };
            for stored in page.events.iter().filter(|e| e.position() > view.from) {
                if let Err(error) = self.apply(plan, &tx, stored).await {
                    return Err(blame(Error::with_status(
                        500,
                        format!(
                            "{} {} version {} (position {}): {error}",
                            stored.event.name,
                            stored.event.uuid,
                            stored.event.version,
                            stored.position()
                        ),
                    )));
                }
            }
            // With other views in the page, this one's rows go out now: a row it cannot write is
            // its failure, not the next view's (whose first read would write it).
            if views.len() > 1 {
                if let Err(error) = tx.lock().await.flush().await {
                    return Err(blame(error.into()));
                }
            }
        }
        let tx = Arc::try_unwrap(tx)
            .map_err(|_| Error::broker_message("a view handler kept the projection's transaction"))?
            .into_inner();
        let mut tx = tx;
        let moves: Vec<(&str, Position)> = views
            .iter()
            .map(|v| (plans[v.index].def.name, v.from))
            .collect();
        if !positions::advance(tx.as_mut(), &moves, page.source, last).await? {
            // Another process applied this page first, or a view was reset: start again from
            // wherever the positions are now (this transaction rolls back).
            views.iter().for_each(|view| view.distrust());
            return Ok(Step::Applied);
        }
        tx.commit().await?;
        for (at, view) in views.iter().enumerate() {
            let follower = view.follower;
            let mut status = follower.status.lock().unwrap_or_else(|p| p.into_inner());
            status.position = last;
            // (A rebuild since this step began reset the stored position.)
            follower.trust_unless_rebuilt_since(view.rebuilds);
            let applied = page
                .events
                .iter()
                .filter(|e| e.position() > view.from)
                .count() as u64;
            status.applied += applied;
            if let Some(behind) = page.behind {
                status.behind = behind;
            } else {
                status.behind = status.behind.saturating_sub(applied);
            }
            status.error = None;
            if at > 0 && page.whole {
                if let Some(seen) = page.seen {
                    follower.covered.fetch_max(seen, AtomicOrdering::SeqCst);
                }
            }
            let name = plans[view.index].def.name;
            if page.pages % 40 == 39 && !follower.caught_up.load(AtomicOrdering::SeqCst) {
                tracing::info!(view = name, source = page.source, position = %last, applied = status.applied, behind = status.behind, "building the view");
            }
        }
        // A view of the source left out of this page (busy, failing, ahead, or chosen before it
        // fell behind) now stands elsewhere than the page's end: its own task looks again.
        for (other, plan) in plans.iter().enumerate() {
            if views.iter().any(|v| v.index == other) {
                continue;
            }
            if let Some(follower) = self
                .inner
                .followers
                .get(&(plan.def.name, page.source.to_owned()))
            {
                if follower.known_position() != Some(last) {
                    follower.wake.notify_one();
                }
            }
        }
        self.inner.progress.send_modify(|n| *n += 1);
        Ok(match page.whole {
            true => Step::AppliedAll,
            false => Step::Applied,
        })
    }

    /// The next page of `source`'s log after `after`, and (now and then) how many events follow it.
    async fn read(
        &self,
        source: &str,
        after: Position,
        pages: u64,
    ) -> Result<(Arc<Vec<StoredEvent>>, Option<u64>, bool)> {
        let owned = self.inner.owned.contains(source);
        let count = pages % 20 == 0;
        let page = self
            .inner
            .pages
            .page(&self.inner.context, owned, source, after, count);
        page.await
    }

    /// Runs the view's handlers on each message `stored` published.
    async fn apply(
        &self,
        plan: &ViewPlan,
        tx: &Arc<tokio::sync::Mutex<Box<dyn super::Tx>>>,
        stored: &StoredEvent,
    ) -> Result<()> {
        for message in stored.event.domain_messages()? {
            let topic = Some(message.topic.as_str());
            let mut left = plan
                .handlers
                .iter()
                .filter(|e| e.route.topic() == topic)
                .count();
            // A copy of the content for each handler but the last, which takes it.
            let mut content = Some(message.content);
            for entry in plan.handlers.iter() {
                if entry.route.topic() != topic {
                    continue;
                }
                left -= 1;
                let content = match left {
                    0 => content.take(),
                    _ => content.clone(),
                }
                .unwrap_or_default();
                let mut headers = BTreeMap::new();
                headers.insert(
                    super::POSITION_HEADER.to_owned(),
                    format!("{}@{}", stored.event.name, stored.position()),
                );
                let request = Request::from_parts(
                    content,
                    BTreeMap::new(),
                    headers,
                    Origin::Broker {
                        topic: message.topic.clone(),
                        identifier: message.identifier,
                        reply_topic: None,
                    },
                );
                let run = invoke(
                    &self.inner.chain,
                    entry.handler,
                    request,
                    &self.inner.context,
                );
                let run =
                    super::writing(self.inner.views.clone(), Arc::clone(tx), plan.def.name, run);
                // Log lines of a view handler name the view, the handler and the event applied (a
                // view applies events in commit order, in pages: it carries no request's trace).
                let span = tracing::info_span!(
                    "view",
                    service = %self.inner.context.name(),
                    view = plan.def.name,
                    handler = %format_args!("{}::{}", entry.service, entry.function),
                    topic = %message.topic,
                    position = %stored.position(),
                );
                tracing::Instrument::instrument(self.inner.context.clone().scope(run), span)
                    .await?;
            }
        }
        Ok(())
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
