//! [`TransactionStore`] for PostgreSQL: transaction entries, the writes each one holds, and the claims on
//! roots that keep two transactions of one destination apart.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::domain::{DomainMessage, Event, TransactionEntry, TransactionStatus};
use crate::store::{HeldWrites, InboxEntry, StoreError, TransactionStore};

use super::{db_error, prepared, PostgresStore, BACKEND};

fn decode_transaction(row: &Row) -> Result<TransactionEntry, StoreError> {
    let status: String = row.get("status");
    Ok(TransactionEntry {
        uuid: row.get("uuid"),
        status: TransactionStatus::parse(&status).ok_or_else(|| {
            StoreError::backend(BACKEND, format!("unknown transaction status `{status}`"))
        })?,
        destination: row.get("destination"),
        updated_at: row.get("updated_at"),
    })
}

#[async_trait]
impl TransactionStore for PostgresStore {
    async fn save_transaction(&self, entry: &TransactionEntry) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                &prepared(&client, "INSERT INTO transactions (uuid, status, destination, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (uuid) DO UPDATE SET status = EXCLUDED.status, destination = EXCLUDED.destination, \
                 updated_at = EXCLUDED.updated_at").await?,
                &[&entry.uuid, &entry.status.as_str(), &entry.destination, &entry.updated_at],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn transaction(&self, uuid: Uuid) -> Result<Option<TransactionEntry>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &prepared(&client, "SELECT uuid, status, destination, updated_at FROM transactions WHERE uuid = $1").await?,
                &[&uuid],
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(decode_transaction).transpose()
    }

    async fn transactions_in(
        &self,
        statuses: &[TransactionStatus],
        before: DateTime<Utc>,
    ) -> Result<Vec<TransactionEntry>, StoreError> {
        let client = self.client().await?;
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let rows = client
            .query(
                &prepared(
                    &client,
                    "SELECT uuid, status, destination, updated_at FROM transactions \
                 WHERE status = ANY($1) AND updated_at < $2 ORDER BY updated_at, uuid",
                )
                .await?,
                &[&statuses, &before],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(decode_transaction).collect()
    }

    async fn hold(
        &self,
        transaction: Uuid,
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<(), StoreError> {
        let events: Vec<Value> = writes
            .iter()
            .map(|(e, _)| serde_json::to_value(e))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))?;
        let messages: Vec<Value> = writes
            .iter()
            .map(|(_, m)| serde_json::to_value(m))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))?;
        let client = self.client().await?;
        let insert_writes = "INSERT INTO transaction_writes (transaction_uuid, event, messages) \
             SELECT $1, e, m FROM UNNEST($2::jsonb[], $3::jsonb[]) WITH ORDINALITY AS w(e, m, position) \
             ORDER BY position";
        let Some(entry) = inbox else {
            client
                .execute(
                    &prepared(&client, insert_writes).await?,
                    &[&transaction, &events, &messages],
                )
                .await
                .map_err(db_error)?;
            return Ok(());
        };
        // One statement: the writes are added only if the inbox row is new.
        let row = client
            .query_one(
                &prepared(&client, "WITH recorded AS ( \
                     INSERT INTO inbox (consumer, identifier, reply) VALUES ($4, $5, $6) ON CONFLICT DO NOTHING \
                     RETURNING 1), \
                 held AS ( \
                     INSERT INTO transaction_writes (transaction_uuid, event, messages) \
                     SELECT $1, e, m FROM UNNEST($2::jsonb[], $3::jsonb[]) WITH ORDINALITY AS w(e, m, position) \
                     WHERE EXISTS (SELECT 1 FROM recorded) ORDER BY position) \
                 SELECT count(*) FROM recorded").await?,
                &[
                    &transaction,
                    &events,
                    &messages,
                    &entry.consumer,
                    &entry.identifier,
                    &crate::store::stored_reply_text(entry),
                ],
            )
            .await
            .map_err(db_error)?;
        let recorded: i64 = row.get(0);
        if recorded == 0 {
            return Err(StoreError::AlreadyProcessed {
                consumer: entry.consumer.clone(),
                identifier: entry.identifier,
            });
        }
        Ok(())
    }

    async fn held(&self, transaction: Uuid) -> Result<HeldWrites, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &prepared(&client, "SELECT event, messages FROM transaction_writes WHERE transaction_uuid = $1 ORDER BY id").await?,
                &[&transaction],
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let event: Event = serde_json::from_value(row.get("event"))
                    .map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))?;
                let messages: Vec<DomainMessage> = serde_json::from_value(row.get("messages"))
                    .map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))?;
                Ok((event, messages))
            })
            .collect()
    }

    async fn release(&self, transaction: Uuid) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                &prepared(
                    &client,
                    "WITH claims AS (DELETE FROM transaction_claims WHERE transaction_uuid = $1) \
                 DELETE FROM transaction_writes WHERE transaction_uuid = $1",
                )
                .await?,
                &[&transaction],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn claim(
        &self,
        destination: Option<Uuid>,
        transaction: Uuid,
        roots: &[Uuid],
    ) -> Result<Option<(Uuid, Uuid)>, StoreError> {
        let destination = destination.unwrap_or(Uuid::nil());
        let mut roots = roots.to_vec();
        // One order for every claimer: two claims never wait on each other in a cycle.
        roots.sort();
        roots.dedup();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // A concurrent claimer of the same root waits for this transaction, then sees the row.
        tx.execute(
            &prepared(&tx, "INSERT INTO transaction_claims (destination, root, transaction_uuid) \
             SELECT $1, r, $2 FROM UNNEST($3::uuid[]) WITH ORDINALITY AS c(r, position) ORDER BY position \
             ON CONFLICT (destination, root) DO NOTHING").await?,
            &[&destination, &transaction, &roots],
        )
        .await
        .map_err(db_error)?;
        let other = tx
            .query_opt(
                &prepared(
                    &tx,
                    "SELECT root, transaction_uuid FROM transaction_claims \
                 WHERE destination = $1 AND root = ANY($3) AND transaction_uuid <> $2 LIMIT 1",
                )
                .await?,
                &[&destination, &transaction, &roots],
            )
            .await
            .map_err(db_error)?;
        match other {
            // Dropping `tx` rolls this claim back: none of the roots stay claimed.
            Some(row) => Ok(Some((row.get(0), row.get(1)))),
            None => {
                tx.commit().await.map_err(db_error)?;
                Ok(None)
            }
        }
    }
}
