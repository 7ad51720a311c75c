//! [`RetentionStore`] for PostgreSQL: finished rows removed in batches, each batch one statement. Rows
//! another process is removing at the same moment are skipped (`SKIP LOCKED`), so replicas sharing the
//! database never wait on each other.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::store::{Retained, RetentionStore, StoreError};

use super::{db_error, prepared, PostgresStore};

const OUTBOX: &str = "WITH gone AS (DELETE FROM outbox WHERE id IN (\
     SELECT id FROM outbox WHERE sent_at < $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING 1) \
     SELECT count(*) FROM gone";

const INBOX: &str = "WITH gone AS (DELETE FROM inbox WHERE (consumer, identifier) IN (\
     SELECT consumer, identifier FROM inbox WHERE processed_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) \
     RETURNING 1) SELECT count(*) FROM gone";

const SAGAS: &str = "WITH gone AS (DELETE FROM saga_executions WHERE uuid IN (\
     SELECT uuid FROM saga_executions WHERE status IN ('finished', 'errored') AND updated_at < $1 \
     LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING 1) SELECT count(*) FROM gone";

// An ended transaction normally holds nothing (its writes and claims go when it ends); whatever an
// interrupted end left behind goes with its entry.
const TRANSACTIONS: &str = "WITH gone AS (DELETE FROM transactions WHERE uuid IN (\
     SELECT uuid FROM transactions WHERE status IN ('committed', 'rejected') AND updated_at < $1 \
     LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING uuid), \
     writes AS (DELETE FROM transaction_writes WHERE transaction_uuid IN (SELECT uuid FROM gone)), \
     claims AS (DELETE FROM transaction_claims WHERE transaction_uuid IN (SELECT uuid FROM gone)) \
     SELECT count(*) FROM gone";

#[async_trait]
impl RetentionStore for PostgresStore {
    async fn purge(
        &self,
        kind: Retained,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let sql = match kind {
            Retained::Outbox => OUTBOX,
            Retained::Inbox => INBOX,
            Retained::Sagas => SAGAS,
            Retained::Transactions => TRANSACTIONS,
        };
        let limit = limit.min(i64::MAX as usize) as i64;
        if kind == Retained::Inbox {
            // The entries held back are recorded first, so the cut-off applies to them too.
            self.inbox.deferred.settle().await?;
        }
        let client = self.client().await?;
        let row = client
            .query_one(&prepared(&client, sql).await?, &[&before, &limit])
            .await
            .map_err(db_error)?;
        if kind == Retained::Inbox {
            // What was removed is not refused from memory any more.
            self.inbox.deferred.forget_recorded();
        }
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }
}
