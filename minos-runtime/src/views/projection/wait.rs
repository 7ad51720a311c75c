//! Read your writes: waiting until the views have applied a request's events.

use std::time::{Duration, Instant};

use super::Projections;
use crate::error::{Error, Result};
use crate::store::Position;
use crate::views::{positions, Consistency};

impl Projections {
    /// Waits until every view fed by a type in `wanted` has applied that type's events up to the
    /// position given, at most `views.wait_timeout_ms`.
    pub(crate) async fn wait(&self, wanted: &Consistency) -> Result<()> {
        let timeout = self.inner.wait_timeout;
        let targets: Vec<(&'static str, &String, Position)> = wanted
            .positions
            .iter()
            .flat_map(|(source, position)| {
                self.inner
                    .followers
                    .keys()
                    .filter(move |(_, s)| s == source)
                    .map(move |(view, s)| (*view, s, *position))
            })
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let mut progress = self.inner.progress.subscribe();
        loop {
            let mut lagging = Vec::new();
            for (view, source, position) in &targets {
                // This process's own progress when it knows the stored position (its follower, woken
                // below, finds out when another replica moved it); else the database.
                let known = self
                    .inner
                    .followers
                    .get(&(*view, (*source).clone()))
                    .and_then(|f| f.known_position());
                let reached = match known {
                    Some(known) => known,
                    None => self.stored_position(view, source).await?,
                };
                if reached < *position {
                    lagging.push((*view, *source, reached, *position));
                }
            }
            let Some((view, source, reached, position)) = lagging.first().copied() else {
                return Ok(());
            };
            // A view stopped at a failing event: have it try again now (someone waits for it).
            let mut failing = None;
            for (view, source, ..) in &lagging {
                if let Some(follower) = self.inner.followers.get(&(*view, (*source).clone())) {
                    let error = follower
                        .status
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .error
                        .clone();
                    if let Some(error) = error {
                        follower.retry.notify_one();
                        failing = Some(error);
                    }
                }
            }
            for (view, source, ..) in &lagging {
                if let Some(follower) = self.inner.followers.get(&(*view, (*source).clone())) {
                    follower.wake.notify_one();
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let failing = failing
                    .map(|error| format!("; it is stopped at a failing event: {error}"))
                    .unwrap_or_default();
                return Err(Error::with_status(
                    503,
                    format!(
                        "view {view} has applied the {source} events up to {reached}, not yet up to {position} \
                         (waited {} ms){failing}: retry later",
                        timeout.as_millis()
                    ),
                ));
            }
            // Another process may move the position: look again at least every 20 ms.
            let wait = (deadline - now).min(Duration::from_millis(20));
            let _ = tokio::time::timeout(wait, progress.changed()).await;
        }
    }

    pub(super) async fn stored_position(&self, view: &str, source: &str) -> Result<Position> {
        let mut tx = self.inner.views.read().await?;
        Ok(positions::position(tx.as_mut(), view, source)
            .await?
            .unwrap_or_default())
    }
}
