//! The inbox batchers: concurrent handlers' look-ups of the inbox, and the inbox entries of handlers
//! that wrote nothing, each answered a batch at a time (see [`Batcher`]).

use std::collections::HashSet;
use std::sync::Arc;

use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::store::InboxEntry;

use super::batch::Batcher;
use super::{db_error, pool_error, prepared};

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

/// The two inbox batchers of a store.
#[derive(Clone)]
pub(super) struct InboxBatchers {
    /// Whether the inbox has an entry.
    pub(super) found: Batcher<(String, Uuid), bool>,
    /// Records an entry (with its reply); `false` when the inbox had it already.
    pub(super) record: Batcher<(String, Uuid, Option<String>), bool>,
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
        let record = Batcher::spawn(move |entries: Vec<(String, Uuid, Option<String>)>| {
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
                let client = pool.get().await.map_err(pool_error)?;
                let rows = client
                    .query(
                        &prepared(&client, RECORD).await?,
                        &[&consumers, &identifiers, &replies],
                    )
                    .await
                    .map_err(db_error)?;
                let recorded: HashSet<(String, Uuid)> =
                    rows.iter().map(|row| (row.get(0), row.get(1))).collect();
                Ok(entries
                    .iter()
                    .zip(firsts)
                    .map(|((c, i, _), first)| first && recorded.contains(&(c.clone(), *i)))
                    .collect())
            }
        });
        InboxBatchers { found, record }
    }
}

/// The batcher request for `entry`.
pub(super) fn record_request(entry: &InboxEntry) -> (String, Uuid, Option<String>) {
    (
        entry.consumer.clone(),
        entry.identifier,
        crate::store::stored_reply_text(entry),
    )
}
