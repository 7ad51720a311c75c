//! The inbox batchers: concurrent handlers' look-ups of the inbox, and the inbox entries of handlers
//! that wrote nothing, wait in a channel; a task takes what is waiting and runs one statement for all
//! of it. Idle, a request goes out from its caller's task after one turn of the scheduler (handlers
//! woken together ask together: when others arrived in that turn, it joins them in the task's next
//! statement); busy, the requests that arrived meanwhile share the next statement.
//!
//! The entry of a handler that wrote nothing and owes no reply (an event's) is not waited for at all:
//! it is held in memory, where the inbox's look-ups see it, and recorded with the others that arrived
//! within a few milliseconds in one statement ([`Deferred`]).

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::store::{InboxEntry, StoreError};

pub(super) use super::deferred::Deferred;

use super::{db_error, pool_error, prepared, BACKEND};

/// Most requests in one statement.
pub(super) const MAX_BATCH: usize = 256;

/// Which of the `(consumer, identifier)` pairs `$1`, `$2` the inbox has: one primary-key probe per
/// pair (the lateral `LIMIT 1` keeps a plan made while the inbox was small from scanning it whole
/// once it is large).
const FOUND: &str = "SELECT q.consumer, q.identifier \
     FROM UNNEST($1::text[], $2::uuid[]) AS q(consumer, identifier) \
     CROSS JOIN LATERAL (SELECT 1 FROM inbox i \
         WHERE i.consumer = q.consumer AND i.identifier = q.identifier LIMIT 1) AS found";

/// Records the entries `$1`..`$3` the inbox does not have yet, in the statement's own transaction,
/// without waiting for the WAL flush (`synchronous_commit` off for that transaction only); answers
/// those it recorded.
const RECORD: &str = "INSERT INTO inbox (consumer, identifier, reply) \
     SELECT q.consumer, q.identifier, q.reply \
     FROM UNNEST($1::text[], $2::uuid[], $3::text[]) AS q(consumer, identifier, reply), \
     (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed \
     ON CONFLICT DO NOTHING RETURNING consumer, identifier";

type Request<Q, A> = (Q, oneshot::Sender<Result<A, StoreError>>);

/// Answers a batch, one answer per request in order, or fails it whole.
type Run<Q, A> =
    Arc<dyn Fn(Vec<Q>) -> BoxFuture<'static, Result<Vec<A>, StoreError>> + Send + Sync>;

/// Requests of one kind, answered a batch at a time by one task; a request while no other is
/// waiting or running goes out from its caller's task instead (see the module's documentation).
pub(super) struct Batcher<Q, A> {
    sender: mpsc::UnboundedSender<Request<Q, A>>,
    run: Run<Q, A>,
    /// Requests being answered, on either path.
    active: Arc<AtomicUsize>,
}

impl<Q, A> Clone for Batcher<Q, A> {
    fn clone(&self) -> Self {
        Batcher {
            sender: self.sender.clone(),
            run: Arc::clone(&self.run),
            active: Arc::clone(&self.active),
        }
    }
}

/// Counts a request as active until dropped.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<Q: Send + 'static, A: Send + 'static> Batcher<Q, A> {
    /// Starts the task: `run` answers a batch, one answer per request in order, or fails it whole.
    fn spawn<F, Fut>(run: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<A>, StoreError>> + Send + 'static,
    {
        let run: Run<Q, A> = Arc::new(move |batch| Box::pin(run(batch)));
        let (sender, mut receiver) = mpsc::unbounded_channel::<Request<Q, A>>();
        let task_run = Arc::clone(&run);
        tokio::spawn(async move {
            let run = task_run;
            while let Some(first) = receiver.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                let (queries, replies): (Vec<Q>, Vec<_>) = batch.into_iter().unzip();
                match run(queries).await {
                    Ok(answers) => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    Err(error) => {
                        let unavailable = matches!(error, StoreError::Unavailable { .. });
                        let text = error.to_string();
                        let mut first = Some(error);
                        for reply in replies {
                            let error = first.take().unwrap_or_else(|| match unavailable {
                                true => StoreError::Unavailable {
                                    backend: BACKEND,
                                    source: text.clone().into(),
                                },
                                false => StoreError::backend(BACKEND, text.clone()),
                            });
                            let _ = reply.send(Err(error));
                        }
                    }
                }
            }
        });
        Batcher {
            sender,
            run,
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Waits for the answer to `query`.
    pub(super) async fn call(&self, query: Q) -> Result<A, StoreError> {
        let mut alone = self.active.fetch_add(1, Ordering::SeqCst) == 0;
        let _active = Active(Arc::clone(&self.active));
        if alone {
            // Handlers woken together (by one relay page, one view page) ask together: give them a
            // turn to arrive, and share the task's next statement with them if they did.
            tokio::task::yield_now().await;
            alone = self.active.load(Ordering::SeqCst) == 1;
        }
        if alone {
            // Nothing to share a statement with: no hop through the task.
            let mut answers = (self.run)(vec![query]).await?;
            return answers
                .pop()
                .ok_or_else(|| StoreError::backend(BACKEND, "the inbox batch gave no answer"));
        }
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((query, reply))
            .map_err(|_| StoreError::backend(BACKEND, "the inbox batcher stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::backend(BACKEND, "the inbox batcher dropped the request"))?
    }
}

/// The two inbox batchers of a store, and the entries it records a moment later.
#[derive(Clone)]
pub(super) struct InboxBatchers {
    /// Whether the inbox has an entry.
    pub(super) found: Batcher<(String, Uuid), bool>,
    /// Records an entry (with its reply); `false` when the inbox had it already.
    pub(super) record: Batcher<(String, Uuid, Option<String>), bool>,
    /// The entries of handlers that wrote nothing and owe no reply.
    pub(super) deferred: Deferred,
}

impl InboxBatchers {
    pub(super) fn spawn(pool: &Pool) -> Self {
        let pool = Arc::new(pool.clone());
        let found = {
            let pool = Arc::clone(&pool);
            Batcher::spawn(move |queries: Vec<(String, Uuid)>| {
                let pool = Arc::clone(&pool);
                async move {
                    let (consumers, identifiers): (Vec<&str>, Vec<Uuid>) =
                        queries.iter().map(|(c, i)| (c.as_str(), *i)).unzip();
                    let client = pool.get().await.map_err(pool_error)?;
                    let rows = client
                        .query(
                            &prepared(&client, FOUND).await?,
                            &[&consumers, &identifiers],
                        )
                        .await
                        .map_err(db_error)?;
                    let found: HashSet<(String, Uuid)> =
                        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
                    Ok(queries.iter().map(|q| found.contains(q)).collect())
                }
            })
        };
        let record = {
            let pool = Arc::clone(&pool);
            Batcher::spawn(move |entries: Vec<(String, Uuid, Option<String>)>| {
                let pool = Arc::clone(&pool);
                async move {
                    // One row per entry: a second request for the same entry in the batch finds it
                    // recorded by the first.
                    let mut seen = HashSet::new();
                    let firsts: Vec<bool> = entries
                        .iter()
                        .map(|(c, i, _)| seen.insert((c.as_str(), *i)))
                        .collect();
                    let (mut consumers, mut identifiers, mut replies) = (vec![], vec![], vec![]);
                    for ((consumer, identifier, reply), first) in entries.iter().zip(&firsts) {
                        if *first {
                            consumers.push(consumer.as_str());
                            identifiers.push(*identifier);
                            replies.push(reply.as_deref());
                        }
                    }
                    let recorded = insert(&pool, &consumers, &identifiers, &replies).await?;
                    Ok(entries
                        .iter()
                        .zip(firsts)
                        .map(|((c, i, _), first)| first && recorded.contains(&(c.clone(), *i)))
                        .collect())
                }
            })
        };
        InboxBatchers {
            found,
            record,
            deferred: Deferred::spawn(pool),
        }
    }
}

/// Runs [`RECORD`] for the entries: answers those it recorded (the others were recorded already).
pub(super) async fn insert(
    pool: &Pool,
    consumers: &[&str],
    identifiers: &[Uuid],
    replies: &[Option<&str>],
) -> Result<HashSet<(String, Uuid)>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let rows = client
        .query(
            &prepared(&client, RECORD).await?,
            &[&consumers, &identifiers, &replies],
        )
        .await
        .map_err(db_error)?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// The batcher request for `entry`.
pub(super) fn record_request(entry: &InboxEntry) -> (String, Uuid, Option<String>) {
    (
        entry.consumer.clone(),
        entry.identifier,
        crate::store::stored_reply_text(entry),
    )
}
