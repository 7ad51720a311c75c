//! `Condition` and `Ordering` as SQL over the JSONB snapshot column, every value a bind parameter.
//!
//! Conditions follow the rule every store follows (see `Condition`): each is true or false, never NULL;
//! `eq` needs the same JSON kind (jsonb equality); ordering comparisons hold only between values of one
//! kind, strings byte-wise (`COLLATE "C"`), whatever the database's collation. Orderings sort values of
//! different kinds as null < numbers and booleans < strings < arrays and objects.

use serde_json::Value;
use tokio_postgres::types::ToSql;

use crate::domain::{Comparison, Condition, Direction, FieldPath, Ordering};

pub(super) type Param = Box<dyn ToSql + Sync + Send>;

#[derive(Default)]
pub(super) struct Builder {
    pub(super) params: Vec<Param>,
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
                if values.is_empty() {
                    return "FALSE".into();
                }
                let x = self.field(field);
                let any: Vec<String> = values.iter().map(|v| self.equal(&x, v)).collect();
                format!("({})", any.join(" OR "))
            }
            Condition::Contains { field, value } => {
                let x = self.field(field);
                let equal = self.equal("item.value", value);
                format!(
                    "COALESCE(jsonb_typeof({x}) = 'array' AND EXISTS (SELECT 1 FROM jsonb_array_elements({x}) AS item(value) WHERE {equal}), FALSE)"
                )
            }
            Condition::Like { field, pattern } => {
                let x = self.field(field);
                let p = self.bind(pattern.clone());
                format!(
                    "COALESCE(jsonb_typeof({x}) = 'string' AND ({x} #>> '{{}}') LIKE {p}::text ESCAPE '', FALSE)"
                )
            }
        }
    }

    /// `x = value`: the same JSON kind and value (jsonb equality); null matches a missing or null
    /// value. Never NULL.
    fn equal(&mut self, x: &str, value: &Value) -> String {
        if value.is_null() {
            return format!("({x} IS NULL OR jsonb_typeof({x}) = 'null')");
        }
        let v = self.bind(value.clone());
        format!("COALESCE({x} = {v}::jsonb, FALSE)")
    }

    /// `field cmp value` by the rule every store follows (see `Condition`): never NULL.
    fn compare(&mut self, field: &FieldPath, cmp: Comparison, value: &Value) -> String {
        let op = match cmp {
            Comparison::Equal => {
                let x = self.field(field);
                return self.equal(&x, value);
            }
            Comparison::NotEqual => {
                let x = self.field(field);
                return format!("(NOT {})", self.equal(&x, value));
            }
            Comparison::Lower => "<",
            Comparison::LowerEqual => "<=",
            Comparison::Greater => ">",
            Comparison::GreaterEqual => ">=",
        };
        match value {
            Value::Number(n) => {
                let x = self.field(field);
                let v = self.bind(n.as_f64().unwrap_or(f64::NAN));
                format!(
                    "COALESCE((CASE WHEN jsonb_typeof({x}) = 'number' THEN ({x} #>> '{{}}')::float8 END) {op} {v}::float8, FALSE)"
                )
            }
            Value::String(s) => {
                let x = self.field(field);
                let v = self.bind(s.clone());
                format!(
                    "COALESCE(((CASE WHEN jsonb_typeof({x}) = 'string' THEN {x} #>> '{{}}' END) COLLATE \"C\") {op} {v}::text, FALSE)"
                )
            }
            Value::Bool(b) => {
                let x = self.field(field);
                let v = self.bind(*b);
                format!(
                    "COALESCE((CASE WHEN jsonb_typeof({x}) = 'boolean' THEN {x} = 'true'::jsonb END) {op} {v}::boolean, FALSE)"
                )
            }
            // Nulls, arrays and objects have no order.
            _ => "FALSE".into(),
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
