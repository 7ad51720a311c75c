//! Set-valued fields whose events carry one member at a time.

use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, Deserializer};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::field::{from_json, to_json};
use super::{
    DomainError, Entity, Field, FieldDiff, SetAction, ValueObject, ENTITY_SET_TYPE_PREFIX,
};

/// Entities keyed by uuid, in insertion order. Its events add, update or remove single members
/// (`FooUpdated.items.create`), never the whole set.
///
/// Stored as a JSON array of the members' fields plus their `uuid`.
#[derive(Clone, PartialEq)]
pub struct EntitySet<T> {
    members: IndexMap<Uuid, T>,
}

impl<T> Default for EntitySet<T> {
    fn default() -> Self {
        EntitySet {
            members: IndexMap::new(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for EntitySet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.members.iter()).finish()
    }
}

impl<T> EntitySet<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entity with a new uuid and returns that uuid.
    pub fn add(&mut self, entity: T) -> Uuid {
        let uuid = Uuid::now_v7();
        self.members.insert(uuid, entity);
        uuid
    }

    /// Adds or replaces the entity with the given uuid.
    pub fn insert(&mut self, uuid: Uuid, entity: T) -> Option<T> {
        self.members.insert(uuid, entity)
    }

    /// The entity with this uuid.
    pub fn get(&self, uuid: &Uuid) -> Option<&T> {
        self.members.get(uuid)
    }

    /// The entity with this uuid, to change it.
    pub fn get_mut(&mut self, uuid: &Uuid) -> Option<&mut T> {
        self.members.get_mut(uuid)
    }

    /// Removes the entity with this uuid (the original's `discard`).
    pub fn remove(&mut self, uuid: &Uuid) -> Option<T> {
        self.members.shift_remove(uuid)
    }

    /// Whether an entity with this uuid is in the set.
    pub fn contains(&self, uuid: &Uuid) -> bool {
        self.members.contains_key(uuid)
    }

    /// Number of entities.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The entities with their uuids, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&Uuid, &T)> {
        self.members.iter()
    }
}

impl<T> FromIterator<T> for EntitySet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut set = EntitySet::new();
        for entity in iter {
            set.add(entity);
        }
        set
    }
}

fn member_json<T: Serialize>(field: &str, uuid: &Uuid, entity: &T) -> Result<Value, DomainError> {
    let mut value = to_json(field, entity)?;
    match &mut value {
        Value::Object(map) => {
            map.insert("uuid".into(), Value::String(uuid.to_string()));
            Ok(value)
        }
        _ => Err(DomainError::InvalidDiff {
            field: field.to_owned(),
            reason: "an entity must serialize to a JSON object".into(),
        }),
    }
}

fn member_from_json<T: serde::de::DeserializeOwned>(
    field: &str,
    value: Value,
) -> Result<(Uuid, T), DomainError> {
    let Value::Object(mut map) = value else {
        return Err(DomainError::InvalidDiff {
            field: field.to_owned(),
            reason: "an entity set member must be a JSON object".into(),
        });
    };
    let uuid = take_uuid(&mut map).ok_or_else(|| DomainError::InvalidDiff {
        field: field.to_owned(),
        reason: "an entity set member needs a `uuid`".into(),
    })?;
    Ok((uuid, from_json(field, Value::Object(map))?))
}

fn take_uuid(map: &mut Map<String, Value>) -> Option<Uuid> {
    match map.remove("uuid") {
        Some(Value::String(s)) => Uuid::parse_str(&s).ok(),
        _ => None,
    }
}

impl<T: Serialize> Serialize for EntitySet<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.members.len()))?;
        for (uuid, entity) in &self.members {
            let value = member_json("member", uuid, entity).map_err(serde::ser::Error::custom)?;
            seq.serialize_element(&value)?;
        }
        seq.end()
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for EntitySet<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let values = Vec::<Value>::deserialize(deserializer)?;
        let mut members = IndexMap::with_capacity(values.len());
        for value in values {
            let (uuid, entity) = member_from_json("member", value).map_err(de::Error::custom)?;
            members.insert(uuid, entity);
        }
        Ok(EntitySet { members })
    }
}

impl<T: Entity> Field for EntitySet<T> {
    fn diff(
        name: &str,
        _type_name: &str,
        old: &Self,
        new: &Self,
        out: &mut Vec<FieldDiff>,
    ) -> Result<(), DomainError> {
        let type_name = format!("{ENTITY_SET_TYPE_PREFIX}{}>", T::NAME);
        for (uuid, entity) in &new.members {
            let action = match old.members.get(uuid) {
                None => SetAction::Create,
                Some(before) if before != entity => SetAction::Update,
                Some(_) => continue,
            };
            let value = member_json(name, uuid, entity)?;
            out.push(FieldDiff::incremental(
                name,
                type_name.clone(),
                value,
                action,
            ));
        }
        for (uuid, entity) in &old.members {
            if !new.members.contains_key(uuid) {
                let value = member_json(name, uuid, entity)?;
                out.push(FieldDiff::incremental(
                    name,
                    type_name.clone(),
                    value,
                    SetAction::Delete,
                ));
            }
        }
        Ok(())
    }

    fn apply(&mut self, diff: &FieldDiff) -> Result<(), DomainError> {
        match diff.action {
            None => *self = from_json(&diff.name, diff.value.clone())?,
            Some(SetAction::Create | SetAction::Update) => {
                let (uuid, entity) = member_from_json(&diff.name, diff.value.clone())?;
                self.members.insert(uuid, entity);
            }
            Some(SetAction::Delete) => {
                let uuid = diff
                    .value
                    .get("uuid")
                    .and_then(Value::as_str)
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or_else(|| DomainError::InvalidDiff {
                        field: diff.name.clone(),
                        reason: "a removed entity set member needs a `uuid`".into(),
                    })?;
                self.members.shift_remove(&uuid);
            }
        }
        Ok(())
    }
}

/// Value objects without duplicates, in insertion order. Members cannot be changed in place: remove one
/// and insert another. Its events add or remove single members (`FooUpdated.tags.delete`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ValueObjectSet<T> {
    members: Vec<T>,
}

impl<T> Default for ValueObjectSet<T> {
    fn default() -> Self {
        ValueObjectSet {
            members: Vec::new(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for ValueObjectSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.members.iter()).finish()
    }
}

impl<T: PartialEq> ValueObjectSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        ValueObjectSet {
            members: Vec::new(),
        }
    }

    /// Adds a value; returns false if an equal value was already there.
    pub fn insert(&mut self, value: T) -> bool {
        if self.members.contains(&value) {
            return false;
        }
        self.members.push(value);
        true
    }

    /// Removes an equal value; returns whether there was one.
    pub fn remove(&mut self, value: &T) -> bool {
        match self.members.iter().position(|m| m == value) {
            Some(i) => {
                self.members.remove(i);
                true
            }
            None => false,
        }
    }

    /// Whether an equal value is in the set.
    pub fn contains(&self, value: &T) -> bool {
        self.members.contains(value)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The values, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.members.iter()
    }
}

impl<T: PartialEq> FromIterator<T> for ValueObjectSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut set = ValueObjectSet::new();
        for value in iter {
            set.insert(value);
        }
        set
    }
}

impl<T: ValueObject> Field for ValueObjectSet<T> {
    fn diff(
        name: &str,
        _type_name: &str,
        old: &Self,
        new: &Self,
        out: &mut Vec<FieldDiff>,
    ) -> Result<(), DomainError> {
        let type_name = format!("ValueObjectSet<{}>", T::NAME);
        for value in new.members.iter().filter(|v| !old.contains(v)) {
            let json = to_json(name, value)?;
            out.push(FieldDiff::incremental(
                name,
                type_name.clone(),
                json,
                SetAction::Create,
            ));
        }
        for value in old.members.iter().filter(|v| !new.contains(v)) {
            let json = to_json(name, value)?;
            out.push(FieldDiff::incremental(
                name,
                type_name.clone(),
                json,
                SetAction::Delete,
            ));
        }
        Ok(())
    }

    fn apply(&mut self, diff: &FieldDiff) -> Result<(), DomainError> {
        match diff.action {
            None => *self = from_json(&diff.name, diff.value.clone())?,
            Some(SetAction::Create) => {
                self.insert(from_json(&diff.name, diff.value.clone())?);
            }
            Some(SetAction::Delete) => {
                self.remove(&from_json(&diff.name, diff.value.clone())?);
            }
            Some(SetAction::Update) => {
                return Err(DomainError::InvalidDiff {
                    field: diff.name.clone(),
                    reason: "value objects are never updated in place".into(),
                })
            }
        }
        Ok(())
    }
}
