//! The PostgreSQL view database: a pool; a transaction holds one pooled connection until it ends.

use std::error::Error as StdError;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::BytesMut;
use deadpool_postgres::{Object, Pool};
use futures_util::future::{join_all, maybe_done, MaybeDone};
use futures_util::FutureExt;
use serde_json::{Map, Value};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::{Backend, CommitFailed, Dialect, Tx, Write};
use crate::store::StoreError;
use crate::views::sql::SqlValue;

pub(super) struct PostgresViews {
    pool: Pool,
    describe: String,
}

impl PostgresViews {
    pub(super) async fn connect(url: &str) -> Result<Self, StoreError> {
        let (pool, schema) = crate::store::postgres::pool_for(url).await?;
        Ok(PostgresViews {
            pool,
            describe: match schema {
                Some(schema) => format!("postgres (schema {schema})"),
                None => "postgres".into(),
            },
        })
    }
}

fn err(error: tokio_postgres::Error) -> StoreError {
    crate::store::postgres::db_error(error)
}

/// How a view transaction begins. A view is derived from the event store: its transactions do not
/// wait for the WAL flush. A database crash can lose only the last ones, rows and position together,
/// and the view applies those events again.
const BEGIN: &str = "BEGIN; SET LOCAL synchronous_commit TO OFF";

impl PostgresViews {
    async fn connection(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(crate::store::postgres::pool_error)
    }
}

#[async_trait]
impl Backend for PostgresViews {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError> {
        let client = self.connection().await?;
        client.batch_execute(BEGIN).await.map_err(err)?;
        Ok(Box::new(PostgresTx {
            client: Some(client),
            open: true,
        }))
    }

    async fn begin_locked(
        &self,
        names: &[String],
    ) -> Result<Option<(Box<dyn Tx>, Vec<bool>)>, StoreError> {
        let client = self.connection().await?;
        // One round trip: the transaction and the locks, whose keys are integers written into the
        // statement as quoted literals (so that even i64::MIN parses).
        let tries: Vec<String> = names
            .iter()
            .map(|name| {
                format!(
                    "pg_try_advisory_xact_lock('{}'::bigint)",
                    super::lock_key(name)
                )
            })
            .collect();
        let answers = match client
            .simple_query(&format!("{BEGIN}; SELECT {}", tries.join(", ")))
            .await
        {
            Ok(answers) => answers,
            Err(error) => {
                // The transaction may have begun: this connection does not go back to the pool.
                let _ = Object::take(client);
                return Err(err(error));
            }
        };
        let taken: Vec<bool> = answers
            .iter()
            .find_map(|answer| match answer {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some((0..names.len()).map(|i| row.get(i) == Some("t")).collect())
                }
                _ => None,
            })
            .unwrap_or_default();
        let tx = Box::new(PostgresTx {
            client: Some(client),
            open: true,
        });
        // The first lock not taken: dropping the transaction rolls it back (and lets the others go).
        Ok((taken.first() == Some(&true)).then_some((tx as Box<dyn Tx>, taken)))
    }

    async fn read(&self) -> Result<Box<dyn Tx>, StoreError> {
        let client = self.connection().await?;
        Ok(Box::new(PostgresTx {
            client: Some(client),
            open: false,
        }))
    }
}

struct PostgresTx {
    client: Option<Object>,
    open: bool,
}

impl Drop for PostgresTx {
    fn drop(&mut self) {
        let Some(client) = self.client.take().filter(|_| self.open) else {
            return;
        };
        // Pooled connections are recycled as they are: end the transaction before it goes back,
        // or, without a runtime to do it on, take the connection out of the pool.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        let _ = Object::take(client);
                    }
                });
            }
            Err(_) => {
                let _ = Object::take(client);
            }
        }
    }
}

#[derive(Debug)]
struct Param<'a>(&'a SqlValue);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Integer(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT4 | Type::FLOAT8 => (*i as f64).to_sql(&Type::FLOAT8, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                    i.to_string().to_sql(ty, out)
                }
                _ => i.to_sql(ty, out),
            },
            SqlValue::Real(f) => match *ty {
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => f.to_sql(ty, out),
            },
            SqlValue::Bool(b) => b.to_sql(ty, out),
            SqlValue::Text(t) => match *ty {
                Type::JSON | Type::JSONB => serde_json::from_str::<Value>(t)?.to_sql(ty, out),
                Type::UUID => t.parse::<uuid::Uuid>()?.to_sql(ty, out),
                _ => t.as_str().to_sql(ty, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn value(row: &tokio_postgres::Row, i: usize) -> Result<SqlValue, StoreError> {
    let ty = row.columns()[i].type_().clone();
    let decode = |e: tokio_postgres::Error| err(e);
    Ok(match ty {
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(decode)?
            .map_or(SqlValue::Null, |v| SqlValue::Integer(v.into())),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(decode)?
            .map_or(SqlValue::Null, |v| SqlValue::Integer(v.into())),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(decode)?
            .map_or(SqlValue::Null, SqlValue::Integer),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map_err(decode)?
            .map_or(SqlValue::Null, |v| SqlValue::Real(v.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map_err(decode)?
            .map_or(SqlValue::Null, SqlValue::Real),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(decode)?
            .map_or(SqlValue::Null, SqlValue::Bool),
        Type::JSON | Type::JSONB => row
            .try_get::<_, Option<Value>>(i)
            .map_err(decode)?
            .map_or(SqlValue::Null, |v| SqlValue::Text(v.to_string())),
        Type::UUID => row
            .try_get::<_, Option<uuid::Uuid>>(i)
            .map_err(decode)?
            .map_or(SqlValue::Null, |v| SqlValue::Text(v.to_string())),
        Type::TIMESTAMPTZ => row
            .try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)
            .map_err(decode)?
            .map_or(SqlValue::Null, |v| {
                SqlValue::Text(crate::store::format_time(v))
            }),
        _ => match row.try_get::<_, Option<String>>(i) {
            Ok(v) => v.map_or(SqlValue::Null, SqlValue::Text),
            Err(_) => {
                return Err(StoreError::InvalidQuery(format!(
                    "column `{}` has type {ty}, which views cannot read: cast it to text",
                    row.columns()[i].name()
                )))
            }
        },
    })
}

/// Sends a statement (its first poll), and the error it failed with before going out (no answer
/// from the server: a parameter that does not encode, the connection gone), taken out of it.
fn send<F, T>(statement: &mut MaybeDone<F>) -> Option<tokio_postgres::Error>
where
    F: std::future::Future<Output = Result<T, tokio_postgres::Error>> + Unpin,
{
    let _ = Pin::new(&mut *statement).now_or_never();
    if matches!(&*statement, MaybeDone::Done(Err(error)) if error.as_db_error().is_none()) {
        Pin::new(statement).take_output().and_then(Result::err)
    } else {
        None
    }
}

/// A failed row write as its view's failure: not when it only says that the transaction is aborted
/// (an earlier statement failed), nor when the database is out of reach.
fn refusal(write: &Write, error: tokio_postgres::Error) -> CommitFailed {
    let aborted = error.code() == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION);
    let mut failed = write.refused(err(error));
    if aborted {
        failed.view = None;
    }
    failed
}

impl PostgresTx {
    /// Ends the transaction now, before an error goes back (its locks go with it), or takes the
    /// connection out of the pool when that fails.
    async fn roll_back(&mut self) {
        if let Some(client) = self.client.take().filter(|_| self.open) {
            self.open = false;
            if client.batch_execute("ROLLBACK").await.is_err() {
                let _ = Object::take(client);
            }
        }
    }

    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("the connection is kept until the transaction is dropped")
    }

    async fn rows(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let statement = self.client().prepare_cached(sql).await.map_err(err)?;
        self.client().query(&statement, &refs).await.map_err(err)
    }
}

#[async_trait]
impl Tx for PostgresTx {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        if refs.is_empty() && !sql.trim_start().to_ascii_uppercase().starts_with("SELECT") {
            // DDL: no statement to prepare and cache.
            self.client().batch_execute(sql).await.map_err(err)?;
            return Ok(0);
        }
        let statement = self.client().prepare_cached(sql).await.map_err(err)?;
        self.client().execute(&statement, &refs).await.map_err(err)
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Vec<SqlValue>>, StoreError> {
        let rows = self.rows(sql, params).await?;
        rows.iter()
            .map(|row| (0..row.len()).map(|i| value(row, i)).collect())
            .collect()
    }

    async fn query_json(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        let rows = self.rows(sql, params).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut object = Map::new();
            for (i, column) in row.columns().iter().enumerate() {
                let json = match column.type_() {
                    &Type::JSON | &Type::JSONB => row
                        .try_get::<_, Option<Value>>(i)
                        .map_err(err)?
                        .unwrap_or(Value::Null),
                    _ => value(row, i)?.to_json(),
                };
                object.insert(column.name().to_owned(), json);
            }
            out.push(object);
        }
        Ok(out)
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        if self.open {
            self.open = false;
            self.client().batch_execute("COMMIT").await.map_err(err)?;
        }
        Ok(())
    }

    /// The writes and the statement, made to fail (division by zero) unless it changed `expected`
    /// rows, go out pipelined with `COMMIT`: a failed statement leaves the transaction aborted, and
    /// the server answers that `COMMIT` by rolling it back.
    async fn commit_after(
        mut self: Box<Self>,
        writes: Vec<Write>,
        sql: &str,
        params: &[SqlValue],
        expected: u64,
    ) -> Result<bool, CommitFailed> {
        if !self.open {
            super::execute_all(self.as_mut(), writes).await?;
            return Ok(self.execute(sql, params).await? == expected);
        }
        let checked = format!(
            "WITH changed AS ({sql} RETURNING 1) \
             SELECT 1 / (CASE WHEN count(*) = ${} THEN 1 ELSE 0 END) FROM changed",
            params.len() + 1
        );
        let expected = SqlValue::Integer(i64::try_from(expected).unwrap_or(i64::MAX));
        let params: Vec<Param<'_>> = params.iter().chain([&expected]).map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let mut prepared = Vec::with_capacity(writes.len());
        for write in &writes {
            match self.client().prepare_cached(&write.sql).await {
                Ok(statement) => prepared.push(statement),
                Err(error) => {
                    let failed = refusal(write, error);
                    self.roll_back().await;
                    return Err(failed);
                }
            }
        }
        let statement = match self.client().prepare_cached(&checked).await {
            Ok(statement) => statement,
            Err(error) => {
                self.roll_back().await;
                return Err(err(error).into());
            }
        };
        let write_params: Vec<Vec<Param<'_>>> = writes
            .iter()
            .map(|write| write.params.iter().map(Param).collect())
            .collect();
        let write_refs: Vec<Vec<&(dyn ToSql + Sync)>> = write_params
            .iter()
            .map(|params| params.iter().map(|p| p as &(dyn ToSql + Sync)).collect())
            .collect();
        // This ends the transaction: the connection leaves its keeping.
        let Some(client) = self.client.take() else {
            return Err(
                StoreError::backend("view database", "the transaction has no connection").into(),
            );
        };
        self.open = false;
        // Each statement goes out at its first poll, in this order. One that fails before it goes
        // out (a parameter that does not encode, the connection gone: no answer from the server)
        // must not be followed by a `COMMIT` of what the page wrote; one the server answered already
        // (even with an error: the transaction is then aborted, and `COMMIT` rolls it back) may.
        // (tokio-postgres sends a request when its future is first polled.)
        let mut rows: Vec<_> = prepared
            .iter()
            .zip(&write_refs)
            .map(|(statement, refs)| maybe_done(Box::pin(client.execute(statement, refs))))
            .collect();
        let mut changed = maybe_done(Box::pin(client.query(&statement, &refs)));
        // The first row the server refused, among those answered.
        let first_refused = |rows: &mut Vec<MaybeDone<_>>| {
            rows.iter_mut()
                .enumerate()
                .find_map(|(at, row)| match Pin::new(row).take_output() {
                    Some(Err(error)) => Some(refusal(&writes[at], error)),
                    _ => None,
                })
        };
        let unsent = rows
            .iter_mut()
            .enumerate()
            .find_map(|(at, row)| send(row).map(|error| refusal(&writes[at], error)))
            .or_else(|| send(&mut changed).map(|error| err(error).into()));
        if let Some(unsent) = unsent {
            // A row the server refused already is the page's failure, rather than what followed it.
            let refused = first_refused(&mut rows);
            drop((rows, changed));
            if client.batch_execute("ROLLBACK").await.is_err() {
                let _ = Object::take(client);
            }
            return Err(refused.unwrap_or(unsent));
        }
        let (_, (), committed) = futures_util::join!(
            join_all(rows.iter_mut()),
            &mut changed,
            client.batch_execute("COMMIT")
        );
        // A row the server refused left the transaction aborted: that `COMMIT` rolled it back.
        let refused = first_refused(&mut rows);
        if let Some(refused) = refused {
            return Err(refused);
        }
        match Pin::new(&mut changed).take_output() {
            Some(Ok(_)) => Ok(committed.map(|()| true).map_err(err)?),
            // Not the rows it expected: the statement failed, and `COMMIT` rolled it back.
            Some(Err(error))
                if error.code() == Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO) =>
            {
                Ok(committed.map(|()| false).map_err(err)?)
            }
            Some(Err(error)) => Err(err(error).into()),
            None => Err(StoreError::backend(
                "view database",
                "the position statement has no answer",
            )
            .into()),
        }
    }
}
