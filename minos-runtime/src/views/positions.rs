//! The bookkeeping of the view database: each view's fingerprint, each projection's position, and
//! emptying a view to build it again.

use crate::store::{format_time, Position, StoreError};

use super::database::{CommitFailed, Dialect, Tx};
use super::sql::{create_table, drop_table, placeholder, SqlValue};
use super::ViewDef;

/// The bookkeeping tables: each view's fingerprint and state, each projection's position.
pub(crate) fn bookkeeping(dialect: Dialect) -> Vec<String> {
    let big = match dialect {
        Dialect::Sqlite => "INTEGER",
        Dialect::Postgres => "BIGINT",
    };
    vec![
        "CREATE TABLE IF NOT EXISTS minos_views (name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, built_at TEXT NOT NULL)".into(),
        format!(
            "CREATE TABLE IF NOT EXISTS minos_view_positions (view TEXT NOT NULL, source TEXT NOT NULL, \
             commit_no {big} NOT NULL, event_id {big} NOT NULL, PRIMARY KEY (view, source))"
        ),
    ]
}

/// The projection's position (the start when it has none yet).
pub(crate) async fn position(
    tx: &mut dyn Tx,
    view: &str,
    source: &str,
) -> Result<Option<Position>, StoreError> {
    let d = tx.dialect();
    let sql = format!(
        "SELECT commit_no, event_id FROM minos_view_positions WHERE view = {} AND source = {}",
        placeholder(d, 1),
        placeholder(d, 2)
    );
    let rows = tx.query(&sql, &[view.into(), source.into()]).await?;
    Ok(rows.first().map(|row| Position {
        commit: row.first().and_then(SqlValue::as_i64).unwrap_or(0),
        id: row.get(1).and_then(SqlValue::as_i64).unwrap_or(0),
    }))
}

/// Writes the view rows waiting in `tx`, moves the positions of views in `source` to `to`, each from
/// the position it names, and commits the transaction, in one round trip where the database allows it
/// (PostgreSQL pipelines the rows and the move with the commit); `false`, with the transaction rolled
/// back, when one position was not there (another process moved it, or the view was rebuilt). A row
/// that cannot be written fails it, naming its view.
pub(crate) async fn advance_and_commit(
    tx: Box<dyn Tx>,
    moves: &[(&str, Position)],
    source: &str,
    to: Position,
) -> Result<bool, CommitFailed> {
    let d = tx.dialect();
    let p = |n| placeholder(d, n);
    let rows: Vec<String> = (0..moves.len())
        .map(|i| format!("({}, {}, {})", p(4 + 3 * i), p(5 + 3 * i), p(6 + 3 * i)))
        .collect();
    let sql = format!(
        "UPDATE minos_view_positions SET commit_no = {}, event_id = {} \
         WHERE source = {} AND (view, commit_no, event_id) IN ({})",
        p(1),
        p(2),
        p(3),
        rows.join(", ")
    );
    let mut params = vec![
        SqlValue::Integer(to.commit),
        SqlValue::Integer(to.id),
        source.into(),
    ];
    for (view, from) in moves {
        params.extend([
            SqlValue::from(*view),
            SqlValue::Integer(from.commit),
            SqlValue::Integer(from.id),
        ]);
    }
    tx.commit_after(Vec::new(), &sql, &params, moves.len() as u64)
        .await
}

/// Starts the view's projection of `source` at the beginning, unless it has a position.
pub(crate) async fn start_position(
    tx: &mut dyn Tx,
    view: &str,
    source: &str,
) -> Result<(), StoreError> {
    let d = tx.dialect();
    let sql = format!(
        "INSERT INTO minos_view_positions (view, source, commit_no, event_id) VALUES ({}, {}, 0, 0) \
         ON CONFLICT (view, source) DO NOTHING",
        placeholder(d, 1),
        placeholder(d, 2)
    );
    tx.execute(&sql, &[view.into(), source.into()])
        .await
        .map(|_| ())
}

/// The fingerprint stored for `view`.
pub(crate) async fn stored_fingerprint(
    tx: &mut dyn Tx,
    view: &str,
) -> Result<Option<String>, StoreError> {
    let sql = format!(
        "SELECT fingerprint FROM minos_views WHERE name = {}",
        placeholder(tx.dialect(), 1)
    );
    let rows = tx.query(&sql, &[view.into()]).await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .and_then(SqlValue::into_text))
}

/// (Re)creates the view's table empty, records its fingerprint and sets its positions to the start.
pub(crate) async fn reset(
    tx: &mut dyn Tx,
    def: &ViewDef,
    fingerprint: &str,
) -> Result<(), StoreError> {
    let d = tx.dialect();
    tx.execute(&drop_table(def), &[]).await?;
    for statement in create_table(d, def) {
        tx.execute(&statement, &[]).await?;
    }
    let p = |n| placeholder(d, n);
    tx.execute(
        &format!(
            "INSERT INTO minos_views (name, fingerprint, built_at) VALUES ({}, {}, {}) \
             ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint, built_at = excluded.built_at",
            p(1),
            p(2),
            p(3)
        ),
        &[
            def.name.into(),
            fingerprint.into(),
            format_time(chrono::Utc::now()).into(),
        ],
    )
    .await?;
    tx.execute(
        &format!(
            "UPDATE minos_view_positions SET commit_no = 0, event_id = 0 WHERE view = {}",
            p(1)
        ),
        &[def.name.into()],
    )
    .await?;
    Ok(())
}
