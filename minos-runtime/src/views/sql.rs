//! The SQL of views, for SQLite and PostgreSQL: tables with one column per scalar field and the JSON
//! of the whole view, real indexes, and reading and writing one row. Finding rows is in `query`, the
//! bookkeeping (fingerprints, positions) in `positions`. Text compares byte-wise.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde_json::Value;

use crate::store::{format_time, StoreError};

use super::database::{Dialect, PendingWrite, Tx};
use super::{ColumnKind, ViewColumn, ViewDef};

/// A value bound to, or read from, a statement.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// An integer (also booleans on SQLite).
    Integer(i64),
    /// A float.
    Real(f64),
    /// Text (also uuids, times, and JSON).
    Text(String),
    /// A boolean.
    Bool(bool),
}

impl From<&str> for SqlValue {
    fn from(value: &str) -> Self {
        SqlValue::Text(value.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(value: String) -> Self {
        SqlValue::Text(value)
    }
}

impl From<i64> for SqlValue {
    fn from(value: i64) -> Self {
        SqlValue::Integer(value)
    }
}

impl From<f64> for SqlValue {
    fn from(value: f64) -> Self {
        SqlValue::Real(value)
    }
}

impl From<bool> for SqlValue {
    fn from(value: bool) -> Self {
        SqlValue::Bool(value)
    }
}

impl SqlValue {
    /// As JSON (text that is not JSON stays a string).
    pub fn to_json(&self) -> Value {
        match self {
            SqlValue::Null => Value::Null,
            SqlValue::Integer(i) => Value::from(*i),
            SqlValue::Real(f) => Value::from(*f),
            SqlValue::Text(t) => Value::String(t.clone()),
            SqlValue::Bool(b) => Value::Bool(*b),
        }
    }

    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            SqlValue::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub(crate) fn into_text(self) -> Option<String> {
        match self {
            SqlValue::Text(t) => Some(t),
            _ => None,
        }
    }
}

pub(super) fn invalid(message: String) -> StoreError {
    StoreError::InvalidQuery(message)
}

pub(super) fn kind_name(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Text => "a string",
        ColumnKind::Integer => "an integer",
        ColumnKind::Real => "a number",
        ColumnKind::Bool => "a boolean",
        ColumnKind::Uuid => "a uuid",
        ColumnKind::Timestamp => "a time",
        ColumnKind::Json => "JSON",
    }
}

/// The column value of a field's JSON, checked against its kind.
pub(crate) fn column_value(
    view: &str,
    column: &ViewColumn,
    value: &Value,
) -> Result<SqlValue, StoreError> {
    let wrong = || {
        invalid(format!(
            "view {view}: field `{}` is {}, not `{value}`",
            column.name,
            kind_name(column.kind)
        ))
    };
    Ok(match (column.kind, value) {
        (_, Value::Null) => SqlValue::Null,
        (ColumnKind::Text, Value::String(s)) => SqlValue::Text(s.clone()),
        (ColumnKind::Integer, Value::Number(n)) => {
            SqlValue::Integer(n.as_i64().ok_or_else(|| {
                invalid(format!(
                    "view {view}: field `{}` holds {n}, beyond the 64-bit signed integers a column keeps",
                    column.name
                ))
            })?)
        }
        (ColumnKind::Real, Value::Number(n)) => SqlValue::Real(n.as_f64().ok_or_else(wrong)?),
        (ColumnKind::Bool, Value::Bool(b)) => SqlValue::Bool(*b),
        (ColumnKind::Uuid, Value::String(s)) => {
            let uuid: uuid::Uuid = s.parse().map_err(|_| wrong())?;
            SqlValue::Text(uuid.to_string())
        }
        (ColumnKind::Timestamp, Value::String(s)) => {
            let time = chrono::DateTime::parse_from_rfc3339(s).map_err(|_| wrong())?;
            SqlValue::Text(format_time(time.with_timezone(&chrono::Utc)))
        }
        _ => return Err(wrong()),
    })
}

/// The key's column value.
pub(crate) fn key_value(def: &ViewDef, key: &Value) -> Result<SqlValue, StoreError> {
    let column = def.key_column().ok_or_else(|| {
        invalid(format!(
            "view {}: its key `{}` is not one of its fields",
            def.name, def.key
        ))
    })?;
    let value = column_value(def.name, column, key)?;
    if value == SqlValue::Null {
        return Err(invalid(format!(
            "view {}: the key cannot be null",
            def.name
        )));
    }
    Ok(value)
}

/// A view's row: its columns' values and its JSON.
pub(crate) struct Row {
    values: Vec<SqlValue>,
    json: String,
}

impl Row {
    pub(crate) fn of(def: &ViewDef, json: Value) -> Result<Row, StoreError> {
        let Value::Object(fields) = &json else {
            return Err(invalid(format!(
                "view {} does not serialize to a JSON object",
                def.name
            )));
        };
        let mut values = Vec::new();
        for column in def.scalar_columns() {
            let value = fields.get(column.name).unwrap_or(&Value::Null);
            values.push(column_value(def.name, column, value)?);
        }
        if values
            .get(key_index(def))
            .is_none_or(|v| *v == SqlValue::Null)
        {
            return Err(invalid(format!(
                "view {}: the key cannot be null",
                def.name
            )));
        }
        Ok(Row {
            values,
            json: json.to_string(),
        })
    }
}

impl Row {
    /// The row's key.
    fn key(&self, def: &ViewDef) -> &SqlValue {
        &self.values[key_index(def)]
    }
}

fn key_index(def: &ViewDef) -> usize {
    def.scalar_columns()
        .position(|c| c.name == def.key)
        .unwrap_or(0)
}

pub(super) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub(super) const DATA: &str = "\"_minos_data\"";

fn column_type(dialect: Dialect, kind: ColumnKind) -> &'static str {
    match (dialect, kind) {
        (Dialect::Sqlite, ColumnKind::Integer | ColumnKind::Bool) => "INTEGER",
        (Dialect::Sqlite, ColumnKind::Real) => "REAL",
        (Dialect::Sqlite, _) => "TEXT",
        (Dialect::Postgres, ColumnKind::Integer) => "BIGINT",
        (Dialect::Postgres, ColumnKind::Real) => "DOUBLE PRECISION",
        (Dialect::Postgres, ColumnKind::Bool) => "BOOLEAN",
        (Dialect::Postgres, _) => "TEXT COLLATE \"C\"",
    }
}

/// The statements creating the view's table and indexes.
pub(crate) fn create_table(dialect: Dialect, def: &ViewDef) -> Vec<String> {
    let table = def.table();
    let mut columns: Vec<String> = def
        .scalar_columns()
        .map(|c| {
            let mut sql = format!("{} {}", quote(c.name), column_type(dialect, c.kind));
            if c.name == def.key {
                sql.push_str(" NOT NULL PRIMARY KEY");
            }
            sql
        })
        .collect();
    columns.push(format!(
        "{DATA} {} NOT NULL",
        match dialect {
            Dialect::Sqlite => "TEXT",
            Dialect::Postgres => "JSONB",
        }
    ));
    let mut out = vec![format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        quote(&table),
        columns.join(", ")
    )];
    for column in def
        .scalar_columns()
        .filter(|c| c.indexed && c.name != def.key)
    {
        out.push(format!(
            "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
            quote(&format!("{table}__{}", column.name)),
            quote(&table),
            quote(column.name)
        ));
    }
    out
}

/// The statement dropping the view's table.
pub(crate) fn drop_table(def: &ViewDef) -> String {
    format!("DROP TABLE IF EXISTS {}", quote(&def.table()))
}

pub(super) fn placeholder(dialect: Dialect, n: usize) -> String {
    match dialect {
        Dialect::Sqlite => format!("?{n}"),
        Dialect::Postgres => format!("${n}"),
    }
}

pub(super) fn data_text(dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => DATA.to_owned(),
        Dialect::Postgres => format!("{DATA}::text"),
    }
}

/// The statements a view's handlers and reads run for each event or request (upsert, get by key,
/// delete by key), built once per view and dialect instead of formatted for every row.
struct Statements {
    upsert: String,
    get: String,
    delete: String,
    /// The parts of an upsert of many rows: `INSERT INTO {table} ({columns}) VALUES`, the rows, then
    /// the conflict clause; each row has `width` values.
    insert_head: String,
    on_conflict: String,
    width: usize,
    /// `DELETE FROM {table} WHERE {key}`: a delete of many rows adds `IN (…)`.
    delete_head: String,
}

/// How many rows one statement of a batch writes: a batch is split into chunks of these sizes, largest
/// first (at most one of each below the largest), so a view has a handful of statement texts to
/// prepare whatever its pages' sizes.
const CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// Splits `n` rows into chunk sizes from [`CHUNKS`].
pub(super) fn chunk_sizes(mut n: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    for size in CHUNKS {
        while n >= size {
            sizes.push(size);
            n -= size;
        }
    }
    sizes
}

impl Statements {
    fn build(def: &ViewDef, dialect: Dialect) -> Statements {
        let table = quote(&def.table());
        let key = quote(def.key);
        let names: Vec<String> = def
            .scalar_columns()
            .map(|c| quote(c.name))
            .chain([DATA.to_owned()])
            .collect();
        let marks: Vec<String> = (1..=names.len())
            .map(|n| {
                let mark = placeholder(dialect, n);
                if n == names.len() && dialect == Dialect::Postgres {
                    format!("{mark}::jsonb")
                } else {
                    mark
                }
            })
            .collect();
        let updates: Vec<String> = names
            .iter()
            .filter(|n| **n != key)
            .map(|n| format!("{n} = excluded.{n}"))
            .collect();
        let insert_head = format!("INSERT INTO {table} ({}) VALUES", names.join(", "));
        let delete_head = format!("DELETE FROM {table} WHERE {key}");
        let on_conflict = format!("ON CONFLICT ({key}) DO UPDATE SET {}", updates.join(", "));
        Statements {
            upsert: format!("{insert_head} ({}) {on_conflict}", marks.join(", ")),
            get: format!(
                "SELECT {} FROM {table} WHERE {key} = {}",
                data_text(dialect),
                placeholder(dialect, 1)
            ),
            delete: format!("{delete_head} = {}", placeholder(dialect, 1)),
            insert_head,
            on_conflict,
            width: names.len(),
            delete_head,
        }
    }

    /// The upsert of `rows` rows with distinct keys in one statement.
    fn upsert_rows(&self, dialect: Dialect, rows: usize) -> String {
        if rows == 1 {
            return self.upsert.clone();
        }
        let values: Vec<String> = (0..rows)
            .map(|row| {
                let marks: Vec<String> = (1..=self.width)
                    .map(|column| {
                        let mark = placeholder(dialect, row * self.width + column);
                        match column == self.width && dialect == Dialect::Postgres {
                            true => format!("{mark}::jsonb"),
                            false => mark,
                        }
                    })
                    .collect();
                format!("({})", marks.join(", "))
            })
            .collect();
        format!(
            "{} {} {}",
            self.insert_head,
            values.join(", "),
            self.on_conflict
        )
    }

    /// The delete of the rows with `rows` keys in one statement.
    fn delete_rows(&self, dialect: Dialect, rows: usize) -> String {
        if rows == 1 {
            return self.delete.clone();
        }
        let marks: Vec<String> = (1..=rows).map(|n| placeholder(dialect, n)).collect();
        format!("{} IN ({})", self.delete_head, marks.join(", "))
    }

    /// The statements of `def` in `dialect`. A view is known by its name and its shape (fields, types,
    /// key and indexes), which are all its statements depend on.
    fn of(def: &ViewDef, dialect: Dialect) -> Arc<Statements> {
        type Built = HashMap<(&'static str, &'static str, &'static str, Dialect), Arc<Statements>>;
        static BUILT: OnceLock<RwLock<Built>> = OnceLock::new();
        let built = BUILT.get_or_init(Default::default);
        let id = (def.name, def.shape, def.key, dialect);
        if let Some(found) = built
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&id)
        {
            return Arc::clone(found);
        }
        Arc::clone(
            built
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .entry(id)
                .or_insert_with(|| Arc::new(Statements::build(def, dialect))),
        )
    }
}

/// Stores `row`, replacing the one with its key: in a projection's transaction, when it flushes.
pub(crate) async fn upsert(
    tx: &mut dyn Tx,
    def: &'static ViewDef,
    row: Row,
) -> Result<(), StoreError> {
    if let Some((pending, _)) = tx.buffered() {
        let key = row.key(def).clone();
        pending.put(def, &key, PendingWrite::Upsert(row));
        return Ok(());
    }
    upsert_now(tx, def, row).await
}

pub(crate) async fn upsert_now(tx: &mut dyn Tx, def: &ViewDef, row: Row) -> Result<(), StoreError> {
    let statements = Statements::of(def, tx.dialect());
    let mut params = row.values;
    params.push(SqlValue::Text(row.json));
    tx.execute(&statements.upsert, &params).await.map(|_| ())
}

/// The statements that store `rows` (distinct keys, in this order), replacing those with their keys,
/// a chunk of rows per statement (see [`CHUNKS`]): how a projection's page writes the rows its
/// handlers left.
pub(crate) fn upsert_statements(
    def: &ViewDef,
    dialect: Dialect,
    rows: Vec<Row>,
) -> Vec<(String, Vec<SqlValue>)> {
    let statements = Statements::of(def, dialect);
    let mut rows = rows.into_iter();
    chunk_sizes(rows.len())
        .into_iter()
        .map(|size| {
            let mut params = Vec::with_capacity(size * statements.width);
            for row in rows.by_ref().take(size) {
                params.extend(row.values);
                params.push(SqlValue::Text(row.json));
            }
            (statements.upsert_rows(dialect, size), params)
        })
        .collect()
}

/// The statements deleting the rows with `keys` (distinct), a chunk of keys per statement.
pub(crate) fn delete_statements(
    def: &ViewDef,
    dialect: Dialect,
    keys: Vec<SqlValue>,
) -> Vec<(String, Vec<SqlValue>)> {
    let statements = Statements::of(def, dialect);
    let mut keys = keys.into_iter();
    chunk_sizes(keys.len())
        .into_iter()
        .map(|size| {
            let params: Vec<SqlValue> = keys.by_ref().take(size).collect();
            (statements.delete_rows(dialect, size), params)
        })
        .collect()
}

/// The stored JSON of the row with `key`: in a projection's transaction, as its handlers left it.
pub(crate) async fn get(
    tx: &mut dyn Tx,
    def: &ViewDef,
    key: &SqlValue,
) -> Result<Option<String>, StoreError> {
    let tx = match tx.buffered() {
        Some((pending, inner)) => match pending.get(def, key) {
            Some(PendingWrite::Upsert(row)) => return Ok(Some(row.json.clone())),
            Some(PendingWrite::Delete(_)) => return Ok(None),
            // The rows waiting have other keys: this one reads the same before or after them.
            None => inner,
        },
        None => tx,
    };
    let statements = Statements::of(def, tx.dialect());
    let rows = tx.query(&statements.get, std::slice::from_ref(key)).await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next())
        .and_then(SqlValue::into_text))
}

/// Deletes the row with `key`; whether there was one. In a projection's transaction a row written
/// there is deleted when it flushes.
pub(crate) async fn delete(
    tx: &mut dyn Tx,
    def: &'static ViewDef,
    key: &SqlValue,
) -> Result<bool, StoreError> {
    let tx = match tx.buffered() {
        Some((pending, inner)) => match pending.get(def, key) {
            Some(PendingWrite::Upsert(_)) => {
                pending.put(def, key, PendingWrite::Delete(key.clone()));
                return Ok(true);
            }
            Some(PendingWrite::Delete(_)) => return Ok(false),
            None => inner,
        },
        None => tx,
    };
    delete_now(tx, def, key).await
}

pub(crate) async fn delete_now(
    tx: &mut dyn Tx,
    def: &ViewDef,
    key: &SqlValue,
) -> Result<bool, StoreError> {
    let statements = Statements::of(def, tx.dialect());
    Ok(tx
        .execute(&statements.delete, std::slice::from_ref(key))
        .await?
        > 0)
}
