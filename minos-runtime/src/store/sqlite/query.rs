//! `Condition` and `Ordering` as SQL over the JSON snapshot column (`json_extract`), every value a bind
//! parameter.

use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use crate::domain::{Comparison, Condition, Direction, FieldPath, Ordering};

/// A value read by a condition and the SQL expression of its JSON type.
struct Typed {
    value: String,
    kind: String,
}

/// Builds a WHERE clause with every value bound as a parameter.
#[derive(Default)]
pub(super) struct Builder {
    pub(super) args: Vec<SqlValue>,
}

impl Builder {
    pub(super) fn bind(&mut self, value: SqlValue) -> String {
        self.args.push(value);
        format!("?{}", self.args.len())
    }

    fn bind_json(&mut self, value: &Value) -> String {
        let bound = match value {
            Value::Null => SqlValue::Null,
            Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => SqlValue::Integer(i),
                None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => SqlValue::Text(s.clone()),
            compound => SqlValue::Text(compound.to_string()),
        };
        self.bind(bound)
    }

    /// The SQL expression reading `path`, and, for data fields, the bound JSON path parameter.
    fn field(&mut self, path: &FieldPath) -> (String, Option<String>) {
        if let Some(column) = path.meta() {
            return (column.to_owned(), None);
        }
        let json_path = path
            .as_str()
            .split('.')
            .fold(String::from("$"), |acc, segment| {
                format!("{acc}.\"{segment}\"")
            });
        let p = self.bind(SqlValue::Text(json_path));
        (format!("json_extract(data, {p})"), Some(p))
    }

    /// The value of `path` and its JSON type as SQLite names it (`null`, `true`, `false`, `integer`,
    /// `real`, `text`, `array`, `object`; SQL NULL when missing). Meta columns have fixed types.
    fn typed(&mut self, path: &FieldPath) -> Typed {
        let (value, json_path) = self.field(path);
        let kind = match (json_path, path.meta()) {
            (Some(p), _) => format!("json_type(data, {p})"),
            (None, Some("version")) => "'integer'".into(),
            (None, _) => "'text'".into(),
        };
        Typed { value, kind }
    }

    pub(super) fn condition(&mut self, condition: &Condition) -> String {
        match condition {
            Condition::True => "1".into(),
            Condition::False => "0".into(),
            Condition::And { all } if all.is_empty() => "1".into(),
            Condition::Or { any } if any.is_empty() => "0".into(),
            Condition::And { all } => self.join(all, " AND "),
            Condition::Or { any } => self.join(any, " OR "),
            Condition::Not { inner } => format!("(NOT {})", self.condition(inner)),
            Condition::Compare { field, cmp, value } => self.compare(field, *cmp, value),
            Condition::In { field, values } => {
                if values.is_empty() {
                    return "0".into();
                }
                let typed = self.typed(field);
                let any: Vec<String> = values.iter().map(|v| self.equal(&typed, v)).collect();
                format!("({})", any.join(" OR "))
            }
            Condition::Contains { field, value } => {
                let Some(path) = self.field(field).1 else {
                    return "0".into();
                };
                let item = Typed {
                    value: "item.value".into(),
                    kind: "item.type".into(),
                };
                let equal = self.equal(&item, value);
                format!(
                    "COALESCE(json_type(data, {path}) = 'array' AND EXISTS (SELECT 1 FROM json_each(data, {path}) AS item WHERE {equal}), 0)"
                )
            }
            Condition::Like { field, pattern } => {
                let typed = self.typed(field);
                let glob = self.bind(SqlValue::Text(like_to_glob(pattern)));
                format!(
                    "COALESCE({} = 'text' AND {} GLOB {glob}, 0)",
                    typed.kind, typed.value
                )
            }
        }
    }

    /// `field cmp value` by the rule every store follows (see `Condition`): never NULL.
    fn compare(&mut self, field: &FieldPath, cmp: Comparison, value: &Value) -> String {
        let op = match cmp {
            Comparison::Equal => {
                let typed = self.typed(field);
                return self.equal(&typed, value);
            }
            Comparison::NotEqual => {
                let typed = self.typed(field);
                return format!("(NOT {})", self.equal(&typed, value));
            }
            Comparison::Lower => "<",
            Comparison::LowerEqual => "<=",
            Comparison::Greater => ">",
            Comparison::GreaterEqual => ">=",
        };
        match value {
            Value::Number(_) => {
                let typed = self.typed(field);
                let v = self.bind_json(value);
                format!(
                    "COALESCE({} IN ('integer', 'real') AND {} {op} {v}, 0)",
                    typed.kind, typed.value
                )
            }
            Value::String(_) => {
                let typed = self.typed(field);
                let v = self.bind_json(value);
                format!(
                    "COALESCE({} = 'text' AND {} {op} {v}, 0)",
                    typed.kind, typed.value
                )
            }
            Value::Bool(_) => {
                let typed = self.typed(field);
                let v = self.bind_json(value);
                let kind = typed.kind;
                format!("COALESCE({kind} IN ('true', 'false') AND ({kind} = 'true') {op} {v}, 0)")
            }
            // Nulls, arrays and objects have no order.
            _ => "0".into(),
        }
    }

    /// `typed = value`: the same JSON kind and value; null matches a missing or null value. Never NULL.
    fn equal(&mut self, typed: &Typed, value: &Value) -> String {
        let Typed { value: x, kind } = typed;
        match value {
            Value::Null => format!("COALESCE({kind} = 'null', {kind} IS NULL)"),
            Value::Bool(true) => format!("COALESCE({kind} = 'true', 0)"),
            Value::Bool(false) => format!("COALESCE({kind} = 'false', 0)"),
            Value::Number(_) => {
                let v = self.bind_json(value);
                format!("COALESCE({kind} IN ('integer', 'real') AND {x} = {v}, 0)")
            }
            Value::String(_) => {
                let v = self.bind_json(value);
                format!("COALESCE({kind} = 'text' AND {x} = {v}, 0)")
            }
            Value::Array(_) | Value::Object(_) => {
                let expected = if value.is_array() { "array" } else { "object" };
                let v = self.bind_json(value);
                // CASE, not AND: `json()` of a text that is not JSON is an error, so it runs only on
                // values of the right kind.
                format!("COALESCE(CASE WHEN {kind} = '{expected}' THEN json({x}) = json({v}) ELSE 0 END, 0)")
            }
        }
    }

    fn join(&mut self, items: &[Condition], separator: &str) -> String {
        let parts: Vec<String> = items.iter().map(|c| self.condition(c)).collect();
        format!("({})", parts.join(separator))
    }

    /// The ORDER BY key for `ordering`, with its trailing separator.
    pub(super) fn ordering(&mut self, ordering: &Ordering) -> String {
        let (expr, _) = self.field(&ordering.field);
        let direction = match ordering.direction {
            Direction::Asc => "ASC",
            Direction::Desc => "DESC",
        };
        format!("{expr} {direction}, ")
    }
}

/// SQL LIKE (`%`, `_`) as a case-sensitive GLOB with the GLOB wildcards in the text escaped.
fn like_to_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        match c {
            '%' => out.push('*'),
            '_' => out.push('?'),
            '*' | '?' | '[' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_becomes_an_escaped_glob() {
        assert_eq!(like_to_glob("a%b_c"), "a*b?c");
        assert_eq!(like_to_glob("*?["), "[*][?][[]");
    }
}
