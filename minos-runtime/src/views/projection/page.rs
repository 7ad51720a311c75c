//! Applying a page of a source's log: to one view, or to the live views of the source that stand
//! at one position, in one view-database transaction.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;

use super::{Follower, Projections, Step, ViewPlan};
use crate::error::{Error, Result};
use crate::routing::{invoke, Origin, Request};
use crate::store::{Position, StoredEvent};
use crate::views::positions;

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

impl Projections {
    /// Applies the next page, to this view and to the other views of the source that stand at the
    /// same position (live, without error, not busy): one view-database transaction, one read of the
    /// log and one lock round trip for all of them. `woken` is the count of commits seen when the
    /// task was woken by them alone: a page applied along with another view since then covers them.
    pub(super) async fn step(
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
            whole: fresh && events.len() < crate::views::log::PAGE,
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
        let Some(position) = follower.live_position() else {
            return false;
        };
        self.inner.plans[..index].iter().any(|plan| {
            plan.sources.iter().any(|s| s == source)
                && self
                    .inner
                    .followers
                    .get(&(plan.def.name, source.to_owned()))
                    .is_some_and(|leader| leader.live_position() == Some(position))
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
            let Ok(busy) = follower.busy.try_lock() else {
                continue;
            };
            let rebuilds = follower.rebuilds.load(AtomicOrdering::SeqCst);
            match follower.live_position() {
                Some(position) if position <= from => along.push(Applying {
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
        let tx: Box<dyn crate::views::Tx> = Box::new(crate::views::database::Buffered::new(tx));
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
            // With other views after it in the page, this one's rows go out now: a row it cannot
            // write is its failure, not the next view's (whose first read would write it). The last
            // view's rows go out with the commit, which names the view whose row failed.
            if at + 1 < views.len() {
                if let Err(error) = tx.lock().await.flush().await {
                    return Err(blame(error.into()));
                }
            }
        }
        let tx = Arc::try_unwrap(tx)
            .map_err(|_| Error::broker_message("a view handler kept the projection's transaction"))?
            .into_inner();
        let moves: Vec<(&str, Position)> = views
            .iter()
            .map(|v| (plans[v.index].def.name, v.from))
            .collect();
        let committed = match positions::advance_and_commit(tx, &moves, page.source, last).await {
            Ok(committed) => committed,
            Err(failed) => {
                let at = failed.view.and_then(|name| {
                    page.views
                        .iter()
                        .position(|view| plans[view.index].def.name == name)
                });
                return Err(match at {
                    Some(at) if at > 0 => Failed::Along(at, failed.error.into()),
                    _ => Failed::Own(failed.error.into()),
                });
            }
        };
        if !committed {
            // Another process applied this page first, or a view was reset: start again from
            // wherever the positions are now (this transaction rolled back).
            views.iter().for_each(|view| view.distrust());
            return Ok(Step::Applied);
        }
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
        tx: &Arc<tokio::sync::Mutex<Box<dyn crate::views::Tx>>>,
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
                    crate::views::POSITION_HEADER.to_owned(),
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
                let run = crate::views::writing(
                    self.inner.views.clone(),
                    Arc::clone(tx),
                    plan.def.name,
                    run,
                );
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
