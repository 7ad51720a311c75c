//! The `Field` trait: what may be stored in a field of a minos model, and how it is diffed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{DomainError, FieldDiff};

/// A type that can be a field of a `#[root_entity]`, `#[entity]`, `#[value_object]` or `#[external_entity]`.
///
/// The default diff replaces the whole value when it changed; set-valued fields (`EntitySet`,
/// `ValueObjectSet`) diff member by member instead.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a field of a minos model",
    label = "unsupported field type",
    note = "supported field types: integers, floats, bool, char, String, Uuid, DateTime<Utc>, NaiveDate, serde_json::Value, \
            Option<T>, Vec<T>, Box<T>, BTreeSet<T>, HashMap<String, T>, BTreeMap<String, T>, Ref<T>, EntitySet<T>, ValueObjectSet<T>, \
            and structs marked #[entity], #[value_object] or #[external_entity]"
)]
pub trait Field: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Pushes the diffs turning `old` into `new` (nothing when they are equal).
    fn diff(
        name: &str,
        type_name: &str,
        old: &Self,
        new: &Self,
        out: &mut Vec<FieldDiff>,
    ) -> Result<(), DomainError> {
        if old != new {
            out.push(FieldDiff::whole(name, type_name, to_json(name, new)?));
        }
        Ok(())
    }

    /// Applies one diff of this field.
    fn apply(&mut self, diff: &FieldDiff) -> Result<(), DomainError> {
        if diff.action.is_some() {
            return Err(DomainError::InvalidDiff {
                field: diff.name.clone(),
                reason: "an incremental diff on a field that is not a set".into(),
            });
        }
        *self = from_json(&diff.name, diff.value.clone())?;
        Ok(())
    }
}

/// Serializes a field value, naming the field on failure.
pub fn to_json<T: Serialize>(field: &str, value: &T) -> Result<Value, DomainError> {
    serde_json::to_value(value).map_err(|source| DomainError::Field {
        field: field.to_owned(),
        source,
    })
}

/// Deserializes a field value, naming the field on failure.
pub fn from_json<T: DeserializeOwned>(field: &str, value: Value) -> Result<T, DomainError> {
    serde_json::from_value(value).map_err(|source| DomainError::Field {
        field: field.to_owned(),
        source,
    })
}

macro_rules! plain_fields {
    ($($t:ty),* $(,)?) => { $(impl Field for $t {})* };
}

plain_fields!(
    i8,
    i16,
    i32,
    i64,
    u8,
    u16,
    u32,
    u64,
    isize,
    usize,
    f32,
    f64,
    bool,
    char,
    String,
    Uuid,
    DateTime<Utc>,
    NaiveDate,
    Value,
);

impl<T: Field> Field for Option<T> {}
impl<T: Field> Field for Vec<T> {}
impl<T: Field> Field for Box<T> {}
impl<T: Field + Ord> Field for BTreeSet<T> {}
impl<T: Field> Field for HashMap<String, T> {}
impl<T: Field> Field for BTreeMap<String, T> {}
