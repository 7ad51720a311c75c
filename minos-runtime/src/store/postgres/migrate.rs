//! Schema migrations: the versioned SQL files under `sql/`, applied in order by one process at a time.

use crate::store::StoreError;

use super::{db_error, lock_key, PostgresStore};

/// Versioned schema migrations, applied in order and recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("sql/0001_init.sql")),
    (2, include_str!("sql/0002_inbox.sql")),
    (3, include_str!("sql/0003_transactions.sql")),
    (4, include_str!("sql/0004_saga_executions.sql")),
    (5, include_str!("sql/0005_transaction_claims.sql")),
    (6, include_str!("sql/0006_registry.sql")),
    (7, include_str!("sql/0007_commit_order.sql")),
    (8, include_str!("sql/0008_outbox_headers.sql")),
    (9, include_str!("sql/0009_retention.sql")),
    (10, include_str!("sql/0010_inbox_reply.sql")),
];

impl PostgresStore {
    /// Applies pending migrations (idempotent; one process at a time through an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let key = lock_key(&format!(
            "minos:migrations:{}",
            self.schema.as_deref().unwrap_or("public")
        ));
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .await
            .map_err(db_error)?;
        let result = async {
            if let Some(schema) = &self.schema {
                // The name is validated (lower-case letters, digits, `_`): safe to quote into DDL.
                client
                    .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                    .await
                    .map_err(db_error)?;
            }
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                         version BIGINT PRIMARY KEY,
                         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                )
                .await
                .map_err(db_error)?;
            let applied: Vec<i64> = client
                .query("SELECT version FROM schema_migrations", &[])
                .await
                .map_err(db_error)?
                .iter()
                .map(|row| row.get(0))
                .collect();
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !applied.contains(v)) {
                let tx = client.transaction().await.map_err(db_error)?;
                tx.batch_execute(sql).await.map_err(db_error)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
            }
            Ok::<(), StoreError>(())
        }
        .await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&key])
            .await;
        result?;
        unlocked.map_err(db_error)?;
        Ok(())
    }
}
