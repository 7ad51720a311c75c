//! [`TransactionStore`] for SQLite: transaction entries, the writes each one holds, and the claims on
//! roots that keep two transactions of one destination apart.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use uuid::Uuid;

use crate::domain::{DomainMessage, Event, TransactionEntry, TransactionStatus};
use crate::store::{format_time, HeldWrites, InboxEntry, StoreError, TransactionStore};

use super::outbox::record_inbox;
use super::{from_text, parse_time, parse_uuid, sql_err, to_text, SqliteStore, BACKEND};

fn decode_transaction(
    row: (String, String, Option<String>, String),
) -> Result<TransactionEntry, StoreError> {
    let (uuid, status, destination, updated_at) = row;
    Ok(TransactionEntry {
        uuid: parse_uuid(&uuid)?,
        status: TransactionStatus::parse(&status).ok_or_else(|| {
            StoreError::backend(BACKEND, format!("unknown transaction status `{status}`"))
        })?,
        destination: destination.as_deref().map(parse_uuid).transpose()?,
        updated_at: parse_time(&updated_at)?,
    })
}

type TransactionRow = (String, String, Option<String>, String);

fn transaction_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TransactionRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

/// Saves `entry` (inside the writer).
fn save_entry(conn: &rusqlite::Connection, entry: &TransactionEntry) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO transactions (uuid, status, destination, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (uuid) DO UPDATE SET status = excluded.status, destination = excluded.destination, \
         updated_at = excluded.updated_at",
    )
    .map_err(sql_err)?
    .execute(params![
        entry.uuid.to_string(),
        entry.status.as_str(),
        entry.destination.map(|d| d.to_string()),
        format_time(entry.updated_at)
    ])
    .map_err(sql_err)?;
    Ok(())
}

/// Forgets the writes and claims `transaction` holds (inside the writer).
fn release_in(conn: &rusqlite::Connection, transaction: Uuid) -> Result<(), StoreError> {
    for table in ["transaction_writes", "transaction_claims"] {
        conn.prepare_cached(&format!("DELETE FROM {table} WHERE transaction_uuid = ?1"))
            .and_then(|mut delete| delete.execute([transaction.to_string()]))
            .map_err(sql_err)?;
    }
    Ok(())
}

#[async_trait]
impl TransactionStore for SqliteStore {
    async fn save_transaction(&self, entry: &TransactionEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        self.write(move |conn| save_entry(conn, &entry)).await
    }

    async fn settle_transaction(&self, entry: &TransactionEntry) -> Result<(), StoreError> {
        // One writer job, as holds are: a hold lands before (and is forgotten) or after (and is
        // refused).
        let entry = entry.clone();
        self.write(move |conn| {
            release_in(conn, entry.uuid)?;
            save_entry(conn, &entry)
        })
        .await
    }

    async fn transaction(&self, uuid: Uuid) -> Result<Option<TransactionEntry>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT uuid, status, destination, updated_at FROM transactions WHERE uuid = ?1",
            )
            .map_err(sql_err)?
            .query_row([uuid.to_string()], transaction_row)
            .optional()
            .map_err(sql_err)?
            .map(decode_transaction)
            .transpose()
        })
        .await
    }

    async fn transactions_in(
        &self,
        statuses: &[TransactionStatus],
        before: DateTime<Utc>,
    ) -> Result<Vec<TransactionEntry>, StoreError> {
        // The six status names are the only values: a JSON array of them is matched with json_each.
        let statuses =
            serde_json::to_string(&statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>())
                .map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))?;
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT uuid, status, destination, updated_at FROM transactions \
                     WHERE status IN (SELECT value FROM json_each(?1)) AND updated_at < ?2 \
                     ORDER BY updated_at, uuid",
                )
                .map_err(sql_err)?;
            let rows = statement
                .query_map(params![statuses, format_time(before)], transaction_row)
                .map_err(sql_err)?;
            rows.map(|row| decode_transaction(row.map_err(sql_err)?))
                .collect()
        })
        .await
    }

    async fn hold(
        &self,
        transaction: Uuid,
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<(), StoreError> {
        let (writes, inbox) = (writes.to_vec(), inbox.cloned());
        self.write(move |tx| {
            if !writes.is_empty() {
                // In the writer, as the commands that end a transaction are: a write held here is
                // either seen by its commit or refused.
                let status: Option<String> = tx
                    .prepare_cached("SELECT status FROM transactions WHERE uuid = ?1")
                    .map_err(sql_err)?
                    .query_row([transaction.to_string()], |row| row.get(0))
                    .optional()
                    .map_err(sql_err)?;
                match status.as_deref().map(TransactionStatus::parse) {
                    None => return Err(StoreError::UnknownTransaction { transaction }),
                    Some(Some(TransactionStatus::Pending)) => {}
                    Some(status) => {
                        return Err(StoreError::TransactionClosed {
                            transaction,
                            status: status.ok_or_else(|| {
                                StoreError::backend(BACKEND, "unknown transaction status")
                            })?,
                        })
                    }
                }
            }
            if let Some(entry) = &inbox {
                record_inbox(tx, entry)?;
            }
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO transaction_writes (transaction_uuid, event, messages) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(sql_err)?;
                for (event, messages) in &writes {
                    insert
                        .execute(params![transaction.to_string(), to_text(event)?, to_text(messages)?])
                        .map_err(sql_err)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn held(&self, transaction: Uuid) -> Result<HeldWrites, StoreError> {
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT event, messages FROM transaction_writes WHERE transaction_uuid = ?1 ORDER BY id",
                )
                .map_err(sql_err)?;
            let rows = statement
                .query_map([transaction.to_string()], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
                .map_err(sql_err)?;
            rows.map(|row| {
                let (event, messages) = row.map_err(sql_err)?;
                Ok((from_text(&event)?, from_text(&messages)?))
            })
            .collect()
        })
        .await
    }

    async fn release(&self, transaction: Uuid) -> Result<(), StoreError> {
        self.write(move |conn| release_in(conn, transaction)).await
    }

    async fn claim(
        &self,
        destination: Option<Uuid>,
        transaction: Uuid,
        roots: &[Uuid],
    ) -> Result<Option<(Uuid, Uuid)>, StoreError> {
        let destination = destination.unwrap_or(Uuid::nil()).to_string();
        let roots = roots.to_vec();
        self.write(move |tx| {
            {
                let mut holder = tx
                    .prepare_cached(
                        "SELECT transaction_uuid FROM transaction_claims WHERE destination = ?1 AND root = ?2",
                    )
                    .map_err(sql_err)?;
                for root in &roots {
                    let held: Option<String> = holder
                        .query_row(params![destination, root.to_string()], |row| row.get(0))
                        .optional()
                        .map_err(sql_err)?;
                    if let Some(held) = held {
                        let held = parse_uuid(&held)?;
                        if held != transaction {
                            return Ok(Some((*root, held)));
                        }
                    }
                }
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO transaction_claims (destination, root, transaction_uuid) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (destination, root) DO NOTHING",
                    )
                    .map_err(sql_err)?;
                for root in &roots {
                    insert
                        .execute(params![destination, root.to_string(), transaction.to_string()])
                        .map_err(sql_err)?;
                }
            }
            Ok(None)
        })
        .await
    }
}
