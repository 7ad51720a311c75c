//! The view database's transactions: a projection's buffered rows, and the commit that moves a
//! position (on SQLite, and on PostgreSQL with the `postgres` feature).

use serde_json::json;

use super::*;
use crate::views::{ColumnKind, ViewColumn};

static COUNTER: ViewDef = ViewDef {
    name: "BufferedCounter",
    key: "id",
    columns: &[
        ViewColumn {
            name: "id",
            kind: ColumnKind::Text,
            nullable: false,
            indexed: false,
        },
        ViewColumn {
            name: "n",
            kind: ColumnKind::Integer,
            nullable: false,
            indexed: false,
        },
    ],
    version: 1,
    shape: "id: String (key), n: i64",
    file: file!(),
    line: line!(),
};

fn n_of(json: Option<String>) -> Option<i64> {
    let value: Value = serde_json::from_str(&json?).unwrap();
    value["n"].as_i64()
}

#[tokio::test]
async fn a_projection_transaction_writes_each_row_once_and_reads_its_own_writes() {
    let views = Views::memory().await.unwrap();
    let mut setup = views.begin().await.unwrap();
    for statement in sql::create_table(setup.dialect(), &COUNTER) {
        setup.execute(&statement, &[]).await.unwrap();
    }
    setup.commit().await.unwrap();

    let mut tx: Box<dyn Tx> = Box::new(Buffered::new(views.begin().await.unwrap()));
    let row = |n: i64| sql::Row::of(&COUNTER, json!({"id": "a", "n": n})).unwrap();
    let key = SqlValue::Text("a".into());
    assert_eq!(
        n_of(sql::get(tx.as_mut(), &COUNTER, &key).await.unwrap()),
        None
    );
    for n in 1..=3 {
        sql::upsert(tx.as_mut(), &COUNTER, row(n)).await.unwrap();
    }
    // The handler reads its own last write; one write waits for the row.
    assert_eq!(
        n_of(sql::get(tx.as_mut(), &COUNTER, &key).await.unwrap()),
        Some(3)
    );
    assert_eq!(tx.buffered().unwrap().0.writes.len(), 1);
    // Deleted in the transaction: gone for its reads, and a second delete finds nothing.
    assert!(sql::delete(tx.as_mut(), &COUNTER, &key).await.unwrap());
    assert_eq!(
        n_of(sql::get(tx.as_mut(), &COUNTER, &key).await.unwrap()),
        None
    );
    assert!(!sql::delete(tx.as_mut(), &COUNTER, &key).await.unwrap());
    sql::upsert(tx.as_mut(), &COUNTER, row(7)).await.unwrap();
    // Any other statement sees the rows written so far.
    let rows = tx
        .query("SELECT n FROM view_buffered_counter", &[])
        .await
        .unwrap();
    assert_eq!(rows, [[SqlValue::Integer(7)]]);
    assert!(tx.buffered().unwrap().0.writes.is_empty());
    sql::upsert(tx.as_mut(), &COUNTER, row(8)).await.unwrap();
    // Rolled back: nothing of it stays.
    drop(tx);
    let mut read = views.read().await.unwrap();
    assert_eq!(
        n_of(sql::get(read.as_mut(), &COUNTER, &key).await.unwrap()),
        None
    );
    drop(read);

    // Committed: the last write of each row is stored.
    let mut tx: Box<dyn Tx> = Box::new(Buffered::new(views.begin().await.unwrap()));
    for n in 1..=5 {
        sql::upsert(tx.as_mut(), &COUNTER, row(n)).await.unwrap();
    }
    let other = sql::Row::of(&COUNTER, json!({"id": "b", "n": 1})).unwrap();
    sql::upsert(tx.as_mut(), &COUNTER, other).await.unwrap();
    tx.commit().await.unwrap();
    let mut read = views.read().await.unwrap();
    assert_eq!(
        n_of(sql::get(read.as_mut(), &COUNTER, &key).await.unwrap()),
        Some(5)
    );
    let b = SqlValue::Text("b".into());
    assert_eq!(
        n_of(sql::get(read.as_mut(), &COUNTER, &b).await.unwrap()),
        Some(1)
    );
}

#[tokio::test]
async fn a_page_writes_its_rows_in_a_few_multi_row_statements() {
    let views = Views::memory().await.unwrap();
    let mut setup = views.begin().await.unwrap();
    for statement in sql::create_table(setup.dialect(), &COUNTER) {
        setup.execute(&statement, &[]).await.unwrap();
    }
    for id in ["old1", "old2", "old3"] {
        let row = sql::Row::of(&COUNTER, json!({"id": id, "n": 0})).unwrap();
        sql::upsert_now(setup.as_mut(), &COUNTER, row)
            .await
            .unwrap();
    }
    setup.commit().await.unwrap();

    // 100 new rows, one stored row replaced, two deleted, and 27 more rows after the deletes.
    let mut tx: Box<dyn Tx> = Box::new(Buffered::new(views.begin().await.unwrap()));
    for n in 0..100 {
        let row = sql::Row::of(&COUNTER, json!({"id": format!("r{n}"), "n": n})).unwrap();
        sql::upsert(tx.as_mut(), &COUNTER, row).await.unwrap();
    }
    let replaced = sql::Row::of(&COUNTER, json!({"id": "old1", "n": 41})).unwrap();
    sql::upsert(tx.as_mut(), &COUNTER, replaced).await.unwrap();
    for id in ["old2", "old3"] {
        let key = SqlValue::Text(id.into());
        assert!(sql::delete(tx.as_mut(), &COUNTER, &key).await.unwrap());
    }
    for n in 100..127 {
        let row = sql::Row::of(&COUNTER, json!({"id": format!("r{n}"), "n": n})).unwrap();
        sql::upsert(tx.as_mut(), &COUNTER, row).await.unwrap();
    }
    tx.commit().await.unwrap();

    let mut read = views.read().await.unwrap();
    let rows = read
        .query(
            "SELECT count(*), sum(n) FROM view_buffered_counter WHERE id LIKE 'r%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        rows,
        [[SqlValue::Integer(127), SqlValue::Integer((0..127).sum())]]
    );
    for (id, n) in [("old1", Some(41)), ("old2", None), ("old3", None)] {
        let key = SqlValue::Text(id.into());
        assert_eq!(
            n_of(sql::get(read.as_mut(), &COUNTER, &key).await.unwrap()),
            n,
            "{id}"
        );
    }
    assert_eq!(sql::chunk_sizes(127), [64, 32, 16, 8, 4, 2, 1]);
    assert_eq!(sql::chunk_sizes(200), [64, 64, 64, 8]);
    assert_eq!(sql::chunk_sizes(0), [] as [usize; 0]);
}

#[tokio::test]
async fn a_failed_row_write_fails_the_rest_of_the_page() {
    let views = Views::memory().await.unwrap();
    // No table: the write fails when the rows are flushed.
    let mut tx: Box<dyn Tx> = Box::new(Buffered::new(views.begin().await.unwrap()));
    let row = sql::Row::of(&COUNTER, json!({"id": "a", "n": 1})).unwrap();
    sql::upsert(tx.as_mut(), &COUNTER, row).await.unwrap();
    let error = tx.query("SELECT 1", &[]).await.unwrap_err().to_string();
    assert!(error.contains("view BufferedCounter row"), "{error}");
    // Whoever ignores that error, the page cannot go on or commit.
    let again = tx.execute("SELECT 1", &[]).await.unwrap_err().to_string();
    assert!(again.contains("an earlier view row write"), "{again}");
    assert!(tx.commit().await.is_err());
}

#[cfg(feature = "postgres")]
mod conditional_commit {
    use super::*;

    /// Views in a fresh schema of the test database, and what drops it.
    async fn fresh_schema() -> (Views, impl std::future::Future<Output = ()>) {
        let base = std::env::var("MINOS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("minos_t_{}", uuid::Uuid::new_v4().simple());
        let separator = if base.contains('?') { '&' } else { '?' };
        let views = Views::open(&format!("{base}{separator}schema={schema}"))
            .await
            .unwrap();
        let dropped = async move {
            let mut drop = Views::open(&base).await.unwrap().begin().await.unwrap();
            drop.execute(&format!("DROP SCHEMA {schema} CASCADE"), &[])
                .await
                .unwrap();
            drop.commit().await.unwrap();
        };
        (views, dropped)
    }

    async fn counted_n(views: &Views) -> i64 {
        let mut read = views.read().await.unwrap();
        let rows = read
            .query("SELECT n FROM counted WHERE id = 1", &[])
            .await
            .unwrap();
        rows[0][0].as_i64().unwrap()
    }

    /// A statement and the commit sent together: committed when the statement changed the rows it
    /// expected, rolled back whole (with what the transaction wrote before) when it did not, and the
    /// connection usable afterwards either way. The same on SQLite, one after the other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_conditional_commit_commits_only_when_the_rows_changed() {
        let (postgres, dropped) = fresh_schema().await;
        for views in [Views::memory().await.unwrap(), postgres] {
            let mut setup = views.begin().await.unwrap();
            setup
                .execute(
                    "CREATE TABLE counted (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, small SMALLINT)",
                    &[],
                )
                .await
                .unwrap();
            setup
                .execute("INSERT INTO counted (id, n) VALUES (1, 0)", &[])
                .await
                .unwrap();
            let dialect = setup.dialect();
            setup.commit().await.unwrap();
            let p = |i| crate::views::sql::placeholder(dialect, i);
            let bump = format!("UPDATE counted SET n = n + 1 WHERE id = {}", p(1));
            for round in 0..3 {
                let mut tx = views.begin().await.unwrap();
                tx.execute("UPDATE counted SET n = n + 10", &[])
                    .await
                    .unwrap();
                let committed = tx
                    .commit_after(Vec::new(), &bump, &[SqlValue::Integer(1)], 1)
                    .await
                    .unwrap();
                assert!(committed, "{views:?}");
                assert_eq!(counted_n(&views).await, 11 * (round + 1), "{views:?}");
            }
            for _ in 0..3 {
                let mut tx = views.begin().await.unwrap();
                tx.execute("UPDATE counted SET n = 1000", &[])
                    .await
                    .unwrap();
                let committed = tx
                    .commit_after(Vec::new(), &bump, &[SqlValue::Integer(2)], 1)
                    .await
                    .unwrap();
                assert!(!committed, "{views:?}");
                assert_eq!(counted_n(&views).await, 33, "rolled back whole: {views:?}");
            }
            // A failing statement is an error, and rolls back too.
            let mut tx = views.begin().await.unwrap();
            tx.execute("UPDATE counted SET n = 2000", &[])
                .await
                .unwrap();
            let failed = tx
                .commit_after(Vec::new(), "UPDATE counted SET n = NULL", &[], 1)
                .await;
            assert!(failed.is_err(), "{views:?}");
            assert_eq!(counted_n(&views).await, 33, "{views:?}");
            // A parameter PostgreSQL's client cannot send (too large for SMALLINT) fails the
            // statement before it goes out: nothing is committed either.
            let mut tx = views.begin().await.unwrap();
            tx.execute("UPDATE counted SET n = 3000", &[])
                .await
                .unwrap();
            let unsent = tx
                .commit_after(
                    Vec::new(),
                    &format!("UPDATE counted SET n = n + 1 WHERE small = {}", p(1)),
                    &[SqlValue::Integer(100_000)],
                    1,
                )
                .await;
            assert!(!matches!(unsent, Ok(true)), "{views:?}: {unsent:?}");
            assert_eq!(counted_n(&views).await, 33, "{views:?}");
            if dialect == Dialect::Postgres {
                assert!(unsent.is_err(), "{unsent:?}");
            }
            // The connections are fine afterwards.
            let tx = views.begin().await.unwrap();
            let committed = tx
                .commit_after(Vec::new(), &bump, &[SqlValue::Integer(1)], 1)
                .await
                .unwrap();
            assert!(committed);
            assert_eq!(counted_n(&views).await, 34, "{views:?}");
        }
        dropped.await;
    }

    /// A page's rows go out with its position's statement and the commit: committed together, or
    /// (the position moved elsewhere, a row refused by the server, a value the client cannot send)
    /// none of them, with an error naming the rows, and the connection usable afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pages_rows_are_committed_with_its_position_or_not_at_all() {
        let (postgres, dropped) = fresh_schema().await;
        for views in [Views::memory().await.unwrap(), postgres] {
            let mut setup = views.begin().await.unwrap();
            let dialect = setup.dialect();
            for statement in sql::create_table(dialect, &COUNTER) {
                setup.execute(&statement, &[]).await.unwrap();
            }
            setup
                .execute(
                    "CREATE TABLE counted (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
                    &[],
                )
                .await
                .unwrap();
            setup
                .execute("INSERT INTO counted (id, n) VALUES (1, 0)", &[])
                .await
                .unwrap();
            if dialect == Dialect::Postgres {
                let table = COUNTER.table();
                setup
                    .execute(
                        &format!(
                            "ALTER TABLE \"{table}\" ALTER COLUMN n TYPE SMALLINT, \
                             ADD CONSTRAINT small CHECK (n < 100)"
                        ),
                        &[],
                    )
                    .await
                    .unwrap();
            }
            setup.commit().await.unwrap();
            let p = |i| crate::views::sql::placeholder(dialect, i);
            let bump = format!("UPDATE counted SET n = n + 1 WHERE id = {}", p(1));
            let stored = |id: &'static str| {
                let views = &views;
                async move {
                    let mut read = views.read().await.unwrap();
                    let key = SqlValue::Text(id.into());
                    n_of(sql::get(read.as_mut(), &COUNTER, &key).await.unwrap())
                }
            };
            // Rows, position and commit in one go.
            let page = |rows: &[(&str, i64)], at: i64| {
                let views = &views;
                let rows: Vec<sql::Row> = rows
                    .iter()
                    .map(|(id, n)| sql::Row::of(&COUNTER, json!({"id": id, "n": n})).unwrap())
                    .collect();
                let bump = bump.clone();
                async move {
                    let mut tx: Box<dyn Tx> = Box::new(Buffered::new(views.begin().await.unwrap()));
                    for row in rows {
                        sql::upsert(tx.as_mut(), &COUNTER, row).await.unwrap();
                    }
                    tx.commit_after(Vec::new(), &bump, &[SqlValue::Integer(at)], 1)
                        .await
                }
            };
            assert!(page(&[("a", 1), ("b", 2)], 1).await.unwrap(), "{views:?}");
            assert_eq!((stored("a").await, stored("b").await), (Some(1), Some(2)));
            assert_eq!(counted_n(&views).await, 1);
            // The position is elsewhere: the rows are not written.
            assert!(!page(&[("c", 3)], 2).await.unwrap(), "{views:?}");
            assert_eq!(stored("c").await, None, "{views:?}");
            if dialect == Dialect::Postgres {
                // A row the server refuses: the error names the rows, and nothing is committed.
                let refused = page(&[("d", 5), ("e", 500)], 1).await.unwrap_err();
                // The failure is the view's, for a page of several views to blame it.
                assert_eq!(refused.view, Some("BufferedCounter"), "{refused:?}");
                let refused = refused.error.to_string();
                assert!(refused.contains("view BufferedCounter rows"), "{refused}");
                assert!(refused.contains("check constraint"), "{refused}");
                assert_eq!((stored("d").await, counted_n(&views).await), (None, 1));
                // A value the client cannot send (too large for SMALLINT): nothing goes out.
                let unsent = page(&[("f", 100_000)], 1).await.unwrap_err();
                assert_eq!(unsent.view, Some("BufferedCounter"), "{unsent:?}");
                let unsent = unsent.error.to_string();
                assert!(unsent.contains("view BufferedCounter row"), "{unsent}");
                assert!(unsent.contains("error serializing parameter"), "{unsent}");
                assert_eq!((stored("f").await, counted_n(&views).await), (None, 1));
                // Two statements (2 rows, then 1): the first went out when the second cannot.
                let unsent = page(&[("f1", 1), ("f2", 2), ("f3", 100_000)], 1)
                    .await
                    .unwrap_err()
                    .error
                    .to_string();
                assert!(unsent.contains("error serializing parameter"), "{unsent}");
                assert_eq!((stored("f1").await, counted_n(&views).await), (None, 1));
                // The first statement refused, the second answered only that the transaction is
                // aborted: the error is the first's.
                let refused = page(&[("h1", 5), ("h2", 500), ("h3", 6)], 1)
                    .await
                    .unwrap_err()
                    .error
                    .to_string();
                assert!(refused.contains("check constraint"), "{refused}");
                assert!(
                    refused.contains("\"h2\"") && !refused.contains("\"h3\""),
                    "{refused}"
                );
                assert!(!refused.contains("DETAIL"), "{refused}");
                assert_eq!((stored("h3").await, counted_n(&views).await), (None, 1));
            }
            // The connections are fine afterwards.
            assert!(page(&[("g", 7)], 1).await.unwrap(), "{views:?}");
            assert_eq!((stored("g").await, counted_n(&views).await), (Some(7), 2));
        }
        dropped.await;
    }
}
