//! Finding views: conditions and orderings on the view's columns as SQL (every value a parameter),
//! written so that a condition is true or false, never NULL (a missing value is unequal to everything
//! and neither lower nor greater than anything), and so that an index on the column serves it.

use serde_json::Value;

use crate::domain::{Comparison, Condition, Direction, FieldPath};
use crate::store::StoreError;

use super::database::{Dialect, Tx};
use super::sql::{column_value, data_text, invalid, kind_name, placeholder, quote, SqlValue, DATA};
use super::{ColumnKind, ViewColumn, ViewDef, ViewQuery};

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
