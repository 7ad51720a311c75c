//! The SQL of views, for SQLite and PostgreSQL: tables with one column per scalar field and the JSON
//! of the whole view, real indexes, conditions and orderings on the columns (every value a parameter),
//! positions.
//!
//! Conditions follow the rule of every store: each is true or false, never NULL (a missing value is
//! unequal to everything and neither lower nor greater than anything). Text compares byte-wise.

use serde_json::Value;

use crate::domain::{Comparison, Condition, Direction, FieldPath};
use crate::store::{format_time, Position, StoreError};

use super::database::{Dialect, Tx};
use super::{ColumnKind, ViewColumn, ViewDef, ViewQuery};

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

fn invalid(message: String) -> StoreError {
    StoreError::InvalidQuery(message)
}

fn kind_name(kind: ColumnKind) -> &'static str {
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
    let value = column_value(def.name, def.key_column(), key)?;
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

fn key_index(def: &ViewDef) -> usize {
    def.scalar_columns()
        .position(|c| c.name == def.key)
        .unwrap_or(0)
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

const DATA: &str = "\"_minos_data\"";

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

fn placeholder(dialect: Dialect, n: usize) -> String {
    match dialect {
        Dialect::Sqlite => format!("?{n}"),
        Dialect::Postgres => format!("${n}"),
    }
}

fn data_text(dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => DATA.to_owned(),
        Dialect::Postgres => format!("{DATA}::text"),
    }
}

pub(crate) async fn upsert(tx: &mut dyn Tx, def: &ViewDef, row: &Row) -> Result<(), StoreError> {
    let dialect = tx.dialect();
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
        .filter(|n| **n != quote(def.key))
        .map(|n| format!("{n} = excluded.{n}"))
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
        quote(&def.table()),
        names.join(", "),
        marks.join(", "),
        quote(def.key),
        updates.join(", ")
    );
    let mut params = row.values.clone();
    params.push(SqlValue::Text(row.json.clone()));
    tx.execute(&sql, &params).await.map(|_| ())
}

pub(crate) async fn get(
    tx: &mut dyn Tx,
    def: &ViewDef,
    key: &SqlValue,
) -> Result<Option<String>, StoreError> {
    let dialect = tx.dialect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = {}",
        data_text(dialect),
        quote(&def.table()),
        quote(def.key),
        placeholder(dialect, 1)
    );
    let rows = tx.query(&sql, std::slice::from_ref(key)).await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next())
        .and_then(SqlValue::into_text))
}

pub(crate) async fn delete(
    tx: &mut dyn Tx,
    def: &ViewDef,
    key: &SqlValue,
) -> Result<bool, StoreError> {
    let sql = format!(
        "DELETE FROM {} WHERE {} = {}",
        quote(&def.table()),
        quote(def.key),
        placeholder(tx.dialect(), 1)
    );
    Ok(tx.execute(&sql, std::slice::from_ref(key)).await? > 0)
}

/// `SELECT <what> FROM table WHERE … ORDER BY … LIMIT … OFFSET …` and its parameters.
fn select(
    dialect: Dialect,
    def: &ViewDef,
    what: &str,
    query: &ViewQuery,
) -> Result<(String, Vec<SqlValue>), StoreError> {
    let mut builder = Builder {
        dialect,
        def,
        params: Vec::new(),
    };
    let condition = builder.condition(&query.condition)?;
    let mut sql = format!(
        "SELECT {what} FROM {} WHERE {condition}",
        quote(&def.table())
    );
    let mut order = Vec::new();
    for ordering in &query.ordering {
        let column = builder.column(&ordering.field)?;
        order.push(match ordering.direction {
            Direction::Asc => format!("{} ASC NULLS FIRST", quote(column.name)),
            Direction::Desc => format!("{} DESC NULLS LAST", quote(column.name)),
        });
    }
    order.push(format!("{} ASC", quote(def.key)));
    sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    if let Some(limit) = query.limit {
        builder
            .params
            .push(SqlValue::Integer(limit.min(i64::MAX as u64) as i64));
        sql.push_str(&format!(" LIMIT {}", builder.mark()));
    } else if query.offset > 0 && dialect == Dialect::Sqlite {
        sql.push_str(" LIMIT -1");
    }
    if query.offset > 0 {
        builder
            .params
            .push(SqlValue::Integer(query.offset.min(i64::MAX as u64) as i64));
        sql.push_str(&format!(" OFFSET {}", builder.mark()));
    }
    Ok((sql, builder.params))
}

pub(crate) async fn find(
    tx: &mut dyn Tx,
    def: &ViewDef,
    query: &ViewQuery,
) -> Result<Vec<String>, StoreError> {
    let (sql, params) = select(tx.dialect(), def, &data_text(tx.dialect()), query)?;
    let rows = tx.query(&sql, &params).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| row.into_iter().next().and_then(SqlValue::into_text))
        .collect())
}

pub(crate) async fn count(
    tx: &mut dyn Tx,
    def: &ViewDef,
    condition: &Condition,
) -> Result<u64, StoreError> {
    let mut builder = Builder {
        dialect: tx.dialect(),
        def,
        params: Vec::new(),
    };
    let condition = builder.condition(condition)?;
    let sql = format!(
        "SELECT COUNT(*) FROM {} WHERE {condition}",
        quote(&def.table())
    );
    let rows = tx.query(&sql, &builder.params).await?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .and_then(SqlValue::as_i64)
        .unwrap_or(0) as u64)
}

pub(crate) async fn explain(
    tx: &mut dyn Tx,
    def: &ViewDef,
    query: &ViewQuery,
) -> Result<String, StoreError> {
    let (sql, params) = select(tx.dialect(), def, &data_text(tx.dialect()), query)?;
    let prefix = match tx.dialect() {
        Dialect::Sqlite => "EXPLAIN QUERY PLAN ",
        Dialect::Postgres => "EXPLAIN ",
    };
    let rows = tx.query(&format!("{prefix}{sql}"), &params).await?;
    let plan: Vec<String> = rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .filter_map(SqlValue::into_text)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    Ok(format!("{sql}\n{}", plan.join("\n")))
}

struct Builder<'a> {
    dialect: Dialect,
    def: &'a ViewDef,
    params: Vec<SqlValue>,
}

impl Builder<'_> {
    fn mark(&self) -> String {
        placeholder(self.dialect, self.params.len())
    }

    fn bind(&mut self, value: SqlValue) -> String {
        self.params.push(value);
        self.mark()
    }

    fn column(&self, path: &FieldPath) -> Result<&'static ViewColumn, StoreError> {
        let name = path.as_str();
        let column = self.def.column(name).ok_or_else(|| {
            let fields: Vec<&str> = self
                .def
                .scalar_columns()
                .map(|c| c.name)
                .collect();
            invalid(format!(
                "view {} has no field `{name}`; conditions and orderings name one of its scalar fields: {}",
                self.def.name,
                fields.join(", ")
            ))
        })?;
        if !column.kind.is_scalar() {
            return Err(invalid(format!(
                "view {}: field `{name}` is not a scalar (string, number, boolean, uuid or time), so it \
                 has no column: only `contains` applies to it",
                self.def.name
            )));
        }
        Ok(column)
    }

    fn value(&self, column: &ViewColumn, value: &Value) -> Result<SqlValue, StoreError> {
        match (column.kind, value) {
            // A whole-number float compares with an integer column; other floats do not fit one.
            (ColumnKind::Integer, Value::Number(n)) if n.as_i64().is_none() => {
                Ok(SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)))
            }
            (ColumnKind::Real, Value::Number(n)) => Ok(SqlValue::Real(n.as_f64().unwrap_or(0.0))),
            _ => column_value(self.def.name, column, value),
        }
    }

    fn condition(&mut self, condition: &Condition) -> Result<String, StoreError> {
        Ok(match condition {
            Condition::True => "1 = 1".into(),
            Condition::False => "1 = 0".into(),
            Condition::And { all } if all.is_empty() => "1 = 1".into(),
            Condition::Or { any } if any.is_empty() => "1 = 0".into(),
            Condition::And { all } => self.join(all, " AND ")?,
            Condition::Or { any } => self.join(any, " OR ")?,
            Condition::Not { inner } => format!("(NOT {})", self.condition(inner)?),
            Condition::Compare { field, cmp, value } => {
                let column = self.column(field)?;
                let name = quote(column.name);
                let value = self.value(column, value)?;
                if value == SqlValue::Null {
                    return Ok(match cmp {
                        Comparison::Equal => format!("({name} IS NULL)"),
                        Comparison::NotEqual => format!("({name} IS NOT NULL)"),
                        // Nothing is lower or greater than a missing value.
                        _ => "1 = 0".into(),
                    });
                }
                let value = self.cast(value, column.kind);
                // Written so that the result is never NULL (a missing value is unequal to
                // everything) and an index on the column still serves the comparison.
                let op = match cmp {
                    Comparison::Equal => "=",
                    Comparison::NotEqual => {
                        return Ok(format!("({name} <> {value} OR {name} IS NULL)"));
                    }
                    Comparison::Lower => "<",
                    Comparison::LowerEqual => "<=",
                    Comparison::Greater => ">",
                    Comparison::GreaterEqual => ">=",
                };
                format!("({name} {op} {value} AND {name} IS NOT NULL)")
            }
            Condition::In { field, values } => {
                if values.is_empty() {
                    return Ok("1 = 0".into());
                }
                let column = self.column(field)?;
                let name = quote(column.name);
                let mut marks = Vec::new();
                let mut null = false;
                for value in values {
                    match self.value(column, value)? {
                        SqlValue::Null => null = true,
                        value => marks.push(self.cast(value, column.kind)),
                    }
                }
                let mut any = Vec::new();
                if !marks.is_empty() {
                    any.push(format!(
                        "({name} IN ({}) AND {name} IS NOT NULL)",
                        marks.join(", ")
                    ));
                }
                if null {
                    any.push(format!("{name} IS NULL"));
                }
                format!("({})", any.join(" OR "))
            }
            Condition::Like { field, pattern } => {
                let column = self.column(field)?;
                if column.kind != ColumnKind::Text {
                    return Err(invalid(format!(
                        "view {}: `like` needs a string field; `{}` is {}",
                        self.def.name,
                        column.name,
                        kind_name(column.kind)
                    )));
                }
                let name = quote(column.name);
                let mark = self.bind(SqlValue::Text(pattern.clone()));
                match self.dialect {
                    // GLOB is case-sensitive; the pattern is translated by the database itself.
                    Dialect::Sqlite => format!(
                        "({name} GLOB replace(replace(replace(replace(replace({mark}, '[', '[[]'), '*', '[*]'), '?', '[?]'), '%', '*'), '_', '?') AND {name} IS NOT NULL)"
                    ),
                    Dialect::Postgres => format!("({name} LIKE {mark} AND {name} IS NOT NULL)"),
                }
            }
            Condition::Contains { field, value } => {
                let name = field.as_str();
                let column = self.def.column(name).ok_or_else(|| {
                    invalid(format!("view {} has no field `{name}`", self.def.name))
                })?;
                if column.kind.is_scalar() {
                    return Err(invalid(format!(
                        "view {}: `contains` needs a list field; `{name}` is {}",
                        self.def.name,
                        kind_name(column.kind)
                    )));
                }
                match self.dialect {
                    Dialect::Sqlite => {
                        let path = self.bind(SqlValue::Text(format!("$.\"{name}\"")));
                        let member = self.bind(SqlValue::Text(value.to_string()));
                        format!(
                            "EXISTS (SELECT 1 FROM json_each({DATA}, {path}) AS m \
                             WHERE json_quote(m.value) = json({member}) OR (m.type IN ('object', 'array') AND json(m.value) = json({member})))"
                        )
                    }
                    Dialect::Postgres => {
                        let key = self.bind(SqlValue::Text(name.to_owned()));
                        let member = self.bind(SqlValue::Text(
                            Value::Array(vec![value.clone()]).to_string(),
                        ));
                        format!(
                            "COALESCE(jsonb_typeof({DATA} -> {key}) = 'array' AND ({DATA} -> {key}) @> ({member})::jsonb, FALSE)"
                        )
                    }
                }
            }
        })
    }

    /// A bound value, cast on PostgreSQL so the column's type decides the comparison.
    fn cast(&mut self, value: SqlValue, kind: ColumnKind) -> String {
        let real = matches!(value, SqlValue::Real(_));
        let mark = self.bind(value);
        match (self.dialect, kind) {
            (Dialect::Postgres, ColumnKind::Integer) if real => format!("{mark}::float8"),
            (Dialect::Postgres, ColumnKind::Integer) => format!("{mark}::int8"),
            (Dialect::Postgres, ColumnKind::Real) => format!("{mark}::float8"),
            (Dialect::Postgres, ColumnKind::Bool) => format!("{mark}::boolean"),
            (Dialect::Postgres, _) => format!("{mark}::text"),
            (Dialect::Sqlite, _) => mark,
        }
    }

    fn join(&mut self, parts: &[Condition], separator: &str) -> Result<String, StoreError> {
        let parts: Vec<String> = parts
            .iter()
            .map(|c| self.condition(c))
            .collect::<Result<_, _>>()?;
        Ok(format!("({})", parts.join(separator)))
    }
}

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

/// Moves the position from `from` to `to`; `false` when it was not at `from` (another process moved
/// it, or the view was rebuilt).
pub(crate) async fn advance(
    tx: &mut dyn Tx,
    view: &str,
    source: &str,
    from: Position,
    to: Position,
) -> Result<bool, StoreError> {
    let d = tx.dialect();
    let p = |n| placeholder(d, n);
    let sql = format!(
        "UPDATE minos_view_positions SET commit_no = {}, event_id = {} \
         WHERE view = {} AND source = {} AND commit_no = {} AND event_id = {}",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6)
    );
    let params = [
        SqlValue::Integer(to.commit),
        SqlValue::Integer(to.id),
        view.into(),
        source.into(),
        SqlValue::Integer(from.commit),
        SqlValue::Integer(from.id),
    ];
    Ok(tx.execute(&sql, &params).await? == 1)
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
