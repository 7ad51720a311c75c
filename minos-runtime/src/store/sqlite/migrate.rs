//! Schema migrations: the versioned SQL files under `sql/`, applied in order when the store opens.

use rusqlite::Connection;

use crate::store::StoreError;

use super::sql_err;

/// Versioned schema migrations, applied in order; `PRAGMA user_version` records the last one applied.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("sql/0001_init.sql")),
    (2, include_str!("sql/0002_inbox.sql")),
    (3, include_str!("sql/0003_transactions.sql")),
    (4, include_str!("sql/0004_saga_executions.sql")),
    (5, include_str!("sql/0005_transaction_claims.sql")),
    (6, include_str!("sql/0006_registry.sql")),
    (7, include_str!("sql/0007_outbox_headers.sql")),
    (8, include_str!("sql/0008_retention.sql")),
    (9, include_str!("sql/0009_inbox_reply.sql")),
];

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sql_err)?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction().map_err(sql_err)?;
        tx.execute_batch(sql).map_err(sql_err)?;
        // PRAGMA takes no bound parameters; the version is one of our constants.
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))
            .map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.last().unwrap().0);
    }
}
