//! `Condition` and `Ordering`: queries over stored snapshots, evaluated in SQL by the SQL stores and in
//! memory by the in-memory store, with the same results.
//!
//! The rule every store follows: a condition is true or false for each root, never unknown, and `!c`
//! is exactly its negation. A missing field is null. `eq` needs the same JSON kind and value (numbers
//! by value, so `1` equals `1.0`; `"1"` is not `1` and `true` is not `1`); `eq(f, null)` matches a
//! missing or null field. `ne` is `!eq`, so it also matches roots whose field is missing or null.
//! `lt`, `le`, `gt`, `ge` compare values of one kind (numbers, strings byte-wise, booleans
//! `false < true`) and are false for nulls, arrays, objects and mixed kinds. `is_in` is any `eq`.

use std::borrow::Cow;
use std::cmp::Ordering as CmpOrdering;
use std::fmt;
use std::ops::{BitAnd, BitOr, Not};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A dotted path into a snapshot's fields (`address.city`). `uuid`, `version`, `created_at` and
/// `updated_at` name the root's meta.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FieldPath(String);

impl FieldPath {
    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, if every one is a non-empty run of ASCII letters, digits and `_`.
    pub fn segments(&self) -> Option<Vec<&str>> {
        let segments: Vec<&str> = self.0.split('.').collect();
        let valid = segments
            .iter()
            .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        valid.then_some(segments)
    }

    /// The meta column this path names, if it is one of `uuid`, `version`, `created_at`, `updated_at`.
    pub fn meta(&self) -> Option<&'static str> {
        match self.0.as_str() {
            "uuid" => Some("uuid"),
            "version" => Some("version"),
            "created_at" => Some("created_at"),
            "updated_at" => Some("updated_at"),
            _ => None,
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for FieldPath {
    fn from(s: &str) -> Self {
        FieldPath(s.to_owned())
    }
}

impl From<String> for FieldPath {
    fn from(s: String) -> Self {
        FieldPath(s)
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// `=`
    Equal,
    /// `≠`
    NotEqual,
    /// `<`
    Lower,
    /// `≤`
    LowerEqual,
    /// `>`
    Greater,
    /// `≥`
    GreaterEqual,
}

/// A filter over snapshots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Condition {
    /// Every snapshot.
    True,
    /// No snapshot.
    False,
    /// All of these.
    And {
        /// The operands.
        all: Vec<Condition>,
    },
    /// Any of these.
    Or {
        /// The operands.
        any: Vec<Condition>,
    },
    /// Not this.
    Not {
        /// The operand.
        inner: Box<Condition>,
    },
    /// `field <op> value`.
    Compare {
        /// The field.
        field: FieldPath,
        /// The operator.
        cmp: Comparison,
        /// The value.
        value: Value,
    },
    /// The field's value is one of these.
    In {
        /// The field.
        field: FieldPath,
        /// The candidates.
        values: Vec<Value>,
    },
    /// The field is an array containing this value.
    Contains {
        /// The field.
        field: FieldPath,
        /// The member looked for.
        value: Value,
    },
    /// The field is a string fully matching the pattern: `%` any run, `_` one character; case-sensitive.
    Like {
        /// The field.
        field: FieldPath,
        /// The pattern.
        pattern: String,
    },
}

/// A value a condition compares a field with: anything a model field holds — numbers, `bool`, `char`,
/// strings, `Uuid`, `DateTime<Utc>`, `NaiveDate`, `Ref<T>`, `Option<T>`, `Vec<T>`, `Box<T>`,
/// `BTreeSet<T>`, maps with string keys, `serde_json::Value` —
/// as the stores keep it (a uuid as its text, a time in the RFC 3339 form of `created_at`).
pub trait QueryValue {
    /// The JSON the stores compare.
    fn into_query_value(self) -> Value;
}

macro_rules! json_query_values {
    ($($t:ty),* $(,)?) => {
        $(impl QueryValue for $t {
            fn into_query_value(self) -> Value {
                Value::from(self)
            }
        })*
    };
}

json_query_values!(
    i8, i16, i32, i64, u8, u16, u32, u64, isize, usize, f32, f64, bool, String, &str, Value
);

impl QueryValue for char {
    fn into_query_value(self) -> Value {
        Value::String(self.to_string())
    }
}

impl QueryValue for &String {
    fn into_query_value(self) -> Value {
        Value::String(self.clone())
    }
}

impl QueryValue for uuid::Uuid {
    fn into_query_value(self) -> Value {
        Value::String(self.to_string())
    }
}

impl QueryValue for &uuid::Uuid {
    fn into_query_value(self) -> Value {
        Value::String(self.to_string())
    }
}

impl QueryValue for chrono::DateTime<chrono::Utc> {
    /// The form stores keep `created_at` and `updated_at` in: RFC 3339, UTC, microseconds.
    fn into_query_value(self) -> Value {
        Value::String(self.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    }
}

impl QueryValue for chrono::NaiveDate {
    fn into_query_value(self) -> Value {
        Value::String(self.to_string())
    }
}

impl<T> QueryValue for super::Ref<T> {
    fn into_query_value(self) -> Value {
        Value::String(self.uuid().to_string())
    }
}

impl<T: QueryValue> QueryValue for Option<T> {
    fn into_query_value(self) -> Value {
        self.map_or(Value::Null, QueryValue::into_query_value)
    }
}

impl<T: QueryValue> QueryValue for Vec<T> {
    fn into_query_value(self) -> Value {
        Value::Array(self.into_iter().map(QueryValue::into_query_value).collect())
    }
}

impl<T: QueryValue> QueryValue for Box<T> {
    fn into_query_value(self) -> Value {
        (*self).into_query_value()
    }
}

impl<T: QueryValue> QueryValue for std::collections::BTreeSet<T> {
    fn into_query_value(self) -> Value {
        Value::Array(self.into_iter().map(QueryValue::into_query_value).collect())
    }
}

impl<T: QueryValue> QueryValue for std::collections::BTreeMap<String, T> {
    fn into_query_value(self) -> Value {
        Value::Object(
            self.into_iter()
                .map(|(key, value)| (key, value.into_query_value()))
                .collect(),
        )
    }
}

impl<T: QueryValue> QueryValue for std::collections::HashMap<String, T> {
    fn into_query_value(self) -> Value {
        Value::Object(
            self.into_iter()
                .map(|(key, value)| (key, value.into_query_value()))
                .collect(),
        )
    }
}

fn compare(field: impl Into<FieldPath>, cmp: Comparison, value: impl QueryValue) -> Condition {
    Condition::Compare {
        field: field.into(),
        cmp,
        value: value.into_query_value(),
    }
}

impl Condition {
    /// `field = value`: the same JSON kind and value (`eq(f, Value::Null)`: missing or null).
    pub fn eq(field: impl Into<FieldPath>, value: impl QueryValue) -> Self {
        compare(field, Comparison::Equal, value)
    }
    /// `field ≠ value`: exactly `!eq(field, value)`, so also true where the field is missing or null.
    pub fn ne(field: impl Into<FieldPath>, value: impl QueryValue) -> Self {
        compare(field, Comparison::NotEqual, value)
    }
    /// `field < value`
    pub fn lt(field: impl Into<FieldPath>, value: impl QueryValue) -> Self {
        compare(field, Comparison::Lower, value)
    }
    /// `field ≤ value`
    pub fn le(field: impl Into<FieldPath>, value: impl QueryValue) -> Self {
        compare(field, Comparison::LowerEqual, value)
    }
    /// `field > value`
    pub fn gt(field: impl Into<FieldPath>, value: impl QueryValue) -> Self {
        compare(field, Comparison::Greater, value)
    }
    /// `field ≥ value`
    pub fn ge(field: impl Into<FieldPath>, value: impl QueryValue) -> Self {
        compare(field, Comparison::GreaterEqual, value)
    }
    /// `field IN values`: any of `eq(field, value)`.
    pub fn is_in<V: QueryValue>(
        field: impl Into<FieldPath>,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        Condition::In {
            field: field.into(),
            values: values
                .into_iter()
                .map(QueryValue::into_query_value)
                .collect(),
        }
    }
    /// The array at `field` contains `value`.
    pub fn contains(field: impl Into<FieldPath>, value: impl QueryValue) -> Self {
        Condition::Contains {
            field: field.into(),
            value: value.into_query_value(),
        }
    }
    /// The string at `field` fully matches `pattern` (`%` any run, `_` one character).
    pub fn like(field: impl Into<FieldPath>, pattern: impl Into<String>) -> Self {
        Condition::Like {
            field: field.into(),
            pattern: pattern.into(),
        }
    }
    /// All of the conditions (TRUE when empty).
    pub fn and(all: impl IntoIterator<Item = Condition>) -> Self {
        Condition::And {
            all: all.into_iter().collect(),
        }
    }
    /// Any of the conditions (FALSE when empty).
    pub fn or(any: impl IntoIterator<Item = Condition>) -> Self {
        Condition::Or {
            any: any.into_iter().collect(),
        }
    }
    /// The negation.
    pub fn negate(inner: Condition) -> Self {
        Condition::Not {
            inner: Box::new(inner),
        }
    }

    /// Every field path the condition reads.
    pub fn fields(&self) -> Vec<&FieldPath> {
        let mut out = Vec::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields<'a>(&'a self, out: &mut Vec<&'a FieldPath>) {
        match self {
            Condition::True | Condition::False => {}
            Condition::And { all: items } | Condition::Or { any: items } => {
                items.iter().for_each(|c| c.collect_fields(out))
            }
            Condition::Not { inner } => inner.collect_fields(out),
            Condition::Compare { field, .. }
            | Condition::In { field, .. }
            | Condition::Contains { field, .. }
            | Condition::Like { field, .. } => out.push(field),
        }
    }

    /// Evaluates the condition on a document (a snapshot's fields plus meta keys).
    pub fn matches<D: Document + ?Sized>(&self, doc: &D) -> bool {
        match self {
            Condition::True => true,
            Condition::False => false,
            Condition::And { all } => all.iter().all(|c| c.matches(doc)),
            Condition::Or { any } => any.iter().any(|c| c.matches(doc)),
            Condition::Not { inner } => !inner.matches(doc),
            Condition::Compare { field, cmp, value } => {
                let actual = doc.field(field);
                let actual = actual.as_ref();
                match cmp {
                    Comparison::Equal => json_eq(actual, value),
                    // Exactly the negation of `eq`: a missing or null field differs from any value.
                    Comparison::NotEqual => !json_eq(actual, value),
                    _ => match same_kind_order(actual, value) {
                        Some(ord) => match cmp {
                            Comparison::Lower => ord == CmpOrdering::Less,
                            Comparison::LowerEqual => ord != CmpOrdering::Greater,
                            Comparison::Greater => ord == CmpOrdering::Greater,
                            _ => ord != CmpOrdering::Less,
                        },
                        None => false,
                    },
                }
            }
            Condition::In { field, values } => {
                let actual = doc.field(field);
                values.iter().any(|v| json_eq(actual.as_ref(), v))
            }
            Condition::Contains { field, value } => match doc.field(field).as_ref() {
                Value::Array(items) => items.iter().any(|item| json_eq(item, value)),
                _ => false,
            },
            Condition::Like { field, pattern } => match doc.field(field).as_ref() {
                Value::String(s) => like_match(s.as_bytes(), pattern.as_bytes()),
                _ => false,
            },
        }
    }
}

impl BitAnd for Condition {
    type Output = Condition;
    fn bitand(self, rhs: Condition) -> Condition {
        Condition::and([self, rhs])
    }
}

impl BitOr for Condition {
    type Output = Condition;
    fn bitor(self, rhs: Condition) -> Condition {
        Condition::or([self, rhs])
    }
}

impl Not for Condition {
    type Output = Condition;
    fn not(self) -> Condition {
        Condition::negate(self)
    }
}

/// Something conditions and orderings read fields from.
pub trait Document {
    /// The value at a dotted path (`Null` when absent).
    fn field(&self, path: &FieldPath) -> Cow<'_, Value>;
}

impl Document for Value {
    fn field(&self, path: &FieldPath) -> Cow<'_, Value> {
        Cow::Borrowed(lookup(self, path))
    }
}

static NULL: Value = Value::Null;

/// The value at a dotted path (`Null` when absent).
pub(crate) fn lookup<'a>(doc: &'a Value, path: &FieldPath) -> &'a Value {
    lookup_segments(doc, path.as_str().split('.'))
}

/// The value at the given path segments (`Null` when absent).
pub(crate) fn lookup_segments<'a, 's>(
    doc: &'a Value,
    segments: impl Iterator<Item = &'s str>,
) -> &'a Value {
    let mut current = doc;
    for segment in segments {
        match current.get(segment) {
            Some(next) => current = next,
            None => return &NULL,
        }
    }
    current
}

/// Equality of a field's value and a query value: the same JSON kind and the same value (numbers by
/// value: `1` equals `1.0`); a missing field is null. Values of different kinds are never equal: `"1"` is
/// not `1`, `true` is not `1`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// The order of a field's value and a query value of the same kind (numbers, strings byte-wise,
/// booleans `false < true`); `None` for nulls, arrays, objects and values of different kinds, which
/// never satisfy `<`, `≤`, `>` or `≥`.
fn same_kind_order(a: &Value, b: &Value) -> Option<CmpOrdering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// A total order of JSON values matching SQLite's: NULL < numbers < text < compound.
pub(crate) fn total_order(a: &Value, b: &Value) -> CmpOrdering {
    let rank = |v: &Value| match v {
        Value::Null => 0,
        Value::Bool(_) | Value::Number(_) => 1,
        Value::String(_) => 2,
        Value::Array(_) | Value::Object(_) => 3,
    };
    match rank(a).cmp(&rank(b)) {
        CmpOrdering::Equal => match (a, b) {
            (Value::String(x), Value::String(y)) => x.cmp(y),
            _ => match (as_number(a), as_number(b)) {
                (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(CmpOrdering::Equal),
                _ => a.to_string().cmp(&b.to_string()),
            },
        },
        other => other,
    }
}

/// SQL LIKE over bytes, case-sensitive, full match.
fn like_match(text: &[u8], pattern: &[u8]) -> bool {
    let (mut t, mut p) = (0, 0);
    let (mut star_p, mut star_t) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'%' {
            star_p = Some(p);
            star_t = t;
            p += 1;
        } else if p < pattern.len() && (pattern[p] == b'_' || pattern[p] == text[t]) {
            // `_` stands for one character: skip a whole UTF-8 sequence.
            if pattern[p] == b'_' {
                t += utf8_len(text[t]);
            } else {
                t += 1;
            }
            p += 1;
        } else if let Some(sp) = star_p {
            p = sp + 1;
            star_t += utf8_len(text[star_t]);
            t = star_t;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'%')
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Ascending or descending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Smallest first (missing values first).
    Asc,
    /// Largest first (missing values last).
    Desc,
}

/// Sort order of a query.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ordering {
    /// The field sorted by.
    pub field: FieldPath,
    /// The direction.
    pub direction: Direction,
}

impl Ordering {
    /// Ascending by `field`.
    pub fn asc(field: impl Into<FieldPath>) -> Self {
        Ordering {
            field: field.into(),
            direction: Direction::Asc,
        }
    }

    /// Descending by `field`.
    pub fn desc(field: impl Into<FieldPath>) -> Self {
        Ordering {
            field: field.into(),
            direction: Direction::Desc,
        }
    }

    /// Compares two documents by this ordering.
    pub fn compare<D: Document + ?Sized>(&self, a: &D, b: &D) -> CmpOrdering {
        let ord = total_order(&a.field(&self.field), &b.field(&self.field));
        match self.direction {
            Direction::Asc => ord,
            Direction::Desc => ord.reverse(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn like_is_a_full_case_sensitive_match() {
        assert!(like_match(b"hello", b"h%o"));
        assert!(like_match(b"hello", b"h_llo"));
        assert!(!like_match(b"hello", b"h_lo"));
        assert!(!like_match(b"Hello", b"hello"));
        assert!(!like_match(b"hello world", b"hello"));
        assert!(like_match("héllo".as_bytes(), b"h_llo"));
        assert!(like_match(b"", b"%"));
        assert!(like_match(b"abcabc", b"%bc"));
    }

    #[test]
    fn conditions_read_dotted_paths() {
        let doc = json!({"a": {"b": 3}, "tags": ["x", "y"], "s": "abc"});
        assert!(Condition::eq("a.b", 3).matches(&doc));
        assert!(Condition::gt("a.b", 2.5).matches(&doc));
        assert!(!Condition::lt("a.b", 3).matches(&doc));
        assert!(Condition::contains("tags", "y").matches(&doc));
        assert!(!Condition::contains("tags", "z").matches(&doc));
        assert!(Condition::is_in("s", ["q", "abc"]).matches(&doc));
        assert!((Condition::eq("s", "abc") & !Condition::eq("a.b", 4)).matches(&doc));
        // `ne` is `!eq`: a missing field differs from any value.
        assert!(Condition::ne("missing", 1).matches(&doc));
        assert!(!Condition::ne("missing", Value::Null).matches(&doc));
        assert!(Condition::eq("missing", Value::Null).matches(&doc));
    }

    #[test]
    fn invalid_paths_are_detected() {
        assert!(FieldPath::from("a.b_c.d1").segments().is_some());
        assert!(FieldPath::from("a..b").segments().is_none());
        assert!(FieldPath::from("a') OR 1=1 --").segments().is_none());
    }
}
