//! `Condition` and `Ordering` as SQL over the JSONB snapshot column, every value a bind parameter.
//!
//! Comparisons follow the in-memory and SQLite semantics: a missing value or JSON null never compares;
//! values of different kinds order as null < numbers and booleans < strings < arrays and objects; strings
//! compare byte-wise (`COLLATE "C"`), whatever the database's collation.

use serde_json::Value;
use tokio_postgres::types::ToSql;

use crate::domain::{Comparison, Condition, Direction, FieldPath, Ordering};

pub(super) type Param = Box<dyn ToSql + Sync + Send>;

#[derive(Default)]
pub(super) struct Builder {
    pub(super) params: Vec<Param>,
}

fn rank_of(value: &Value) -> u8 {
    match value {
        Value::Null => 0,
        Value::Bool(_) | Value::Number(_) => 1,
        Value::String(_) => 2,
        Value::Array(_) | Value::Object(_) => 3,
    }
}

fn rank(x: &str) -> String {
    format!(
        "(CASE WHEN {x} IS NULL OR jsonb_typeof({x}) = 'null' THEN 0 \
         WHEN jsonb_typeof({x}) IN ('number', 'boolean') THEN 1 \
         WHEN jsonb_typeof({x}) = 'string' THEN 2 ELSE 3 END)"
    )
}

fn number(x: &str) -> String {
    format!(
        "(CASE jsonb_typeof({x}) WHEN 'number' THEN ({x} #>> '{{}}')::float8 \
         WHEN 'boolean' THEN (CASE WHEN {x} = 'true'::jsonb THEN 1.0 ELSE 0.0 END) END)"
    )
}

fn text(x: &str) -> String {
    format!("((CASE WHEN jsonb_typeof({x}) IN ('string', 'array', 'object') THEN {x} #>> '{{}}' END) COLLATE \"C\")")
}

impl Builder {
    pub(super) fn bind<T: ToSql + Sync + Send + 'static>(&mut self, value: T) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// A JSONB expression for the path: a data field, or a meta column converted to the JSON the other
    /// stores see (uuid and times as text).
    fn field(&mut self, path: &FieldPath) -> String {
        match path.meta() {
            Some("uuid") => "to_jsonb(uuid::text)".into(),
            Some("version") => "to_jsonb(version)".into(),
            Some(column) => format!(
                "to_jsonb(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))"
            ),
            None => {
                let segments: Vec<String> = path.as_str().split('.').map(str::to_owned).collect();
                let p = self.bind(segments);
                format!("(data #> {p}::text[])")
            }
        }
    }

    pub(super) fn condition(&mut self, condition: &Condition) -> String {
        match condition {
            Condition::True => "TRUE".into(),
            Condition::False => "FALSE".into(),
            Condition::And { all } if all.is_empty() => "TRUE".into(),
            Condition::Or { any } if any.is_empty() => "FALSE".into(),
            Condition::And { all } => self.join(all, " AND "),
            Condition::Or { any } => self.join(any, " OR "),
            Condition::Not { inner } => format!("(NOT {})", self.condition(inner)),
            Condition::Compare { field, cmp, value } => self.compare(field, *cmp, value),
            Condition::In { field, values } => {
                let values: Vec<Value> = values.iter().filter(|v| !v.is_null()).cloned().collect();
                if values.is_empty() {
                    return "FALSE".into();
                }
                let x = self.field(field);
                let v = self.bind(values);
                format!("COALESCE({x} = ANY({v}::jsonb[]), FALSE)")
            }
            Condition::Contains { field, value } => {
                let x = self.field(field);
                let v = self.bind(value.clone());
                format!(
                    "(jsonb_typeof({x}) = 'array' AND EXISTS (SELECT 1 FROM jsonb_array_elements({x}) AS item(value) WHERE item.value = {v}::jsonb))"
                )
            }
            Condition::Like { field, pattern } => {
                let x = self.field(field);
                let p = self.bind(pattern.clone());
                format!(
                    "(jsonb_typeof({x}) = 'string' AND ({x} #>> '{{}}') LIKE {p}::text ESCAPE '')"
                )
            }
        }
    }

    /// `field cmp value`: a missing value or null never compares; values of different kinds order by kind.
    fn compare(&mut self, field: &FieldPath, cmp: Comparison, value: &Value) -> String {
        let x = self.field(field);
        if value.is_null() {
            return match cmp {
                Comparison::Equal => format!("({x} IS NULL OR {x} = 'null'::jsonb)"),
                _ => "FALSE".into(),
            };
        }
        match cmp {
            Comparison::Equal => {
                let v = self.bind(value.clone());
                format!("COALESCE({x} = {v}::jsonb, FALSE)")
            }
            Comparison::NotEqual => {
                let v = self.bind(value.clone());
                format!("({x} IS NOT NULL AND {x} <> 'null'::jsonb AND {x} <> {v}::jsonb)")
            }
            _ => {
                let op = match cmp {
                    Comparison::Lower => "<",
                    Comparison::LowerEqual => "<=",
                    Comparison::Greater => ">",
                    _ => ">=",
                };
                let r = rank_of(value);
                let typed = match value {
                    Value::Bool(b) => format!(
                        "{} {op} {}::float8",
                        number(&x),
                        self.bind(f64::from(u8::from(*b)))
                    ),
                    Value::Number(n) => {
                        format!(
                            "{} {op} {}::float8",
                            number(&x),
                            self.bind(n.as_f64().unwrap_or(f64::NAN))
                        )
                    }
                    Value::String(s) => {
                        format!("{} {op} {}::text", text(&x), self.bind(s.clone()))
                    }
                    other => {
                        format!("{} {op} {}::text", text(&x), self.bind(other.to_string()))
                    }
                };
                let rx = rank(&x);
                format!("COALESCE(CASE WHEN {rx} = 0 THEN FALSE WHEN {rx} <> {r} THEN {rx} {op} {r} ELSE {typed} END, FALSE)")
            }
        }
    }

    fn join(&mut self, items: &[Condition], separator: &str) -> String {
        let parts: Vec<String> = items.iter().map(|c| self.condition(c)).collect();
        format!("({})", parts.join(separator))
    }

    /// ORDER BY keys for `ordering`, same order as the other stores.
    pub(super) fn ordering(&mut self, ordering: &Ordering) -> String {
        let x = self.field(&ordering.field);
        let dir = match ordering.direction {
            Direction::Asc => "ASC",
            Direction::Desc => "DESC",
        };
        format!(
            "{} {dir}, {} {dir}, {} {dir}, ",
            rank(&x),
            number(&x),
            text(&x)
        )
    }
}
