//! `Condition` and `Ordering` as SQL over the JSON snapshot column (`json_extract`), every value a bind
//! parameter.

use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use crate::domain::{Comparison, Condition, Direction, FieldPath, Ordering};

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

    pub(super) fn condition(&mut self, condition: &Condition) -> String {
        match condition {
            Condition::True => "1".into(),
            Condition::False => "0".into(),
            Condition::And { all } if all.is_empty() => "1".into(),
            Condition::Or { any } if any.is_empty() => "0".into(),
            Condition::And { all } => self.join(all, " AND "),
            Condition::Or { any } => self.join(any, " OR "),
            Condition::Not { inner } => format!("(NOT COALESCE({}, 0))", self.condition(inner)),
            Condition::Compare { field, cmp, value } => self.compare(field, *cmp, value),
            Condition::In { field, values } => {
                let values: Vec<&Value> = values.iter().filter(|v| !v.is_null()).collect();
                if values.is_empty() {
                    return "0".into();
                }
                let (expr, _) = self.field(field);
                let list: Vec<String> = values.into_iter().map(|v| self.bind_json(v)).collect();
                format!("COALESCE({expr} IN ({}), 0)", list.join(", "))
            }
            Condition::Contains { field, value } => {
                let Some(path) = self.field(field).1 else {
                    return "0".into();
                };
                let v = self.bind_json(value);
                format!(
                    "(json_type(data, {path}) = 'array' AND EXISTS (SELECT 1 FROM json_each(data, {path}) AS item WHERE item.value = {v}))"
                )
            }
            Condition::Like { field, pattern } => {
                let (expr, path) = self.field(field);
                let glob = self.bind(SqlValue::Text(like_to_glob(pattern)));
                let is_text = match path {
                    Some(p) => format!("json_type(data, {p}) = 'text'"),
                    None => format!("typeof({expr}) = 'text'"),
                };
                format!("({is_text} AND {expr} GLOB {glob})")
            }
        }
    }

    /// `field cmp value`: a missing value or null never compares.
    fn compare(&mut self, field: &FieldPath, cmp: Comparison, value: &Value) -> String {
        let (expr, _) = self.field(field);
        if value.is_null() {
            return match cmp {
                Comparison::Equal => format!("({expr} IS NULL)"),
                _ => "0".into(),
            };
        }
        let v = self.bind_json(value);
        let op = match cmp {
            Comparison::Equal => "=",
            Comparison::NotEqual => "<>",
            Comparison::Lower => "<",
            Comparison::LowerEqual => "<=",
            Comparison::Greater => ">",
            Comparison::GreaterEqual => ">=",
        };
        format!("COALESCE({expr} {op} {v}, 0)")
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
