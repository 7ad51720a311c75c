//! [`RetentionStore`] for SQLite: finished rows removed in batches, each batch one statement on the
//! writer thread.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;

use crate::store::{format_time, Retained, RetentionStore, StoreError};

use super::{sql_err, SqliteStore};

const OUTBOX: &str = "DELETE FROM outbox WHERE id IN (\
     SELECT id FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?1 ORDER BY id LIMIT ?2)";

const INBOX: &str = "DELETE FROM inbox WHERE rowid IN (\
     SELECT rowid FROM inbox WHERE processed_at < ?1 LIMIT ?2)";

const SAGAS: &str = "DELETE FROM saga_executions WHERE uuid IN (\
     SELECT uuid FROM saga_executions WHERE status IN ('finished', 'errored') AND updated_at < ?1 \
     LIMIT ?2)";

const TRANSACTIONS: &str = "SELECT uuid FROM transactions \
     WHERE status IN ('committed', 'rejected') AND updated_at < ?1 LIMIT ?2";

#[async_trait]
impl RetentionStore for SqliteStore {
    async fn purge(
        &self,
        kind: Retained,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let before = format_time(before);
        let limit = limit.min(i64::MAX as usize) as i64;
        self.write(move |tx| {
            let removed = match kind {
                Retained::Outbox | Retained::Inbox | Retained::Sagas => {
                    let sql = match kind {
                        Retained::Outbox => OUTBOX,
                        Retained::Inbox => INBOX,
                        _ => SAGAS,
                    };
                    tx.prepare_cached(sql)
                        .map_err(sql_err)?
                        .execute(params![before, limit])
                        .map_err(sql_err)?
                }
                Retained::Transactions => {
                    let uuids = tx
                        .prepare_cached(TRANSACTIONS)
                        .map_err(sql_err)?
                        .query_map(params![before, limit], |row| row.get::<_, String>(0))
                        .map_err(sql_err)?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(sql_err)?;
                    // An ended transaction normally holds nothing; whatever an interrupted end left
                    // behind goes with its entry.
                    for sql in [
                        "DELETE FROM transaction_writes WHERE transaction_uuid = ?1",
                        "DELETE FROM transaction_claims WHERE transaction_uuid = ?1",
                        "DELETE FROM transactions WHERE uuid = ?1",
                    ] {
                        let mut statement = tx.prepare_cached(sql).map_err(sql_err)?;
                        for uuid in &uuids {
                            statement.execute(params![uuid]).map_err(sql_err)?;
                        }
                    }
                    uuids.len()
                }
            };
            Ok(removed as u64)
        })
        .await
    }
}
