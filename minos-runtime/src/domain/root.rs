//! `Root<T>`: a stored root entity with its identity, version and timestamps beside the user's fields.

use std::fmt;
use std::ops::{Deref, DerefMut};

use chrono::{DateTime, Utc};
use serde::ser::{Serialize, Serializer};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::field::{from_json, to_json};
use super::{Action, DomainError, Event, Model};

/// Identity, version and timestamps of a stored root entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Identity, generated on creation.
    pub uuid: Uuid,
    /// Version: 1 after creation, +1 for each stored change.
    pub version: u64,
    /// When the root was created.
    pub created_at: DateTime<Utc>,
    /// When the root was last changed.
    pub updated_at: DateTime<Utc>,
}

/// A stored model: `T` plus its [`Meta`]. Derefs to `T`, so fields read and write as usual; `save()`
/// stores the changed fields as one event.
#[derive(Clone)]
pub struct Root<T> {
    meta: Meta,
    state: T,
    // The last stored state: `save` diffs against it, so only changed fields become an event.
    stored: T,
}

impl<T: Model> Root<T> {
    /// Wraps a state read from storage.
    pub fn from_parts(meta: Meta, state: T) -> Self {
        Root {
            meta,
            stored: state.clone(),
            state,
        }
    }

    /// Builds a root from its JSON state (without the meta keys).
    pub fn from_json(meta: Meta, data: Map<String, Value>) -> Result<Self, DomainError> {
        let state: T = from_json(T::NAME, Value::Object(data))?;
        Ok(Self::from_parts(meta, state))
    }

    /// Rebuilds a root from its events, oldest first; `Ok(None)` when the last event deleted it.
    pub fn replay<'a>(
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Option<Self>, DomainError> {
        let mut root: Option<Self> = None;
        let mut deleted = false;
        for event in events {
            if deleted {
                return Err(DomainError::EventAfterDelete { uuid: event.uuid });
            }
            match (&mut root, event.action) {
                (None, Action::Create) => {
                    let mut data = Map::new();
                    event.apply_json(&mut data)?;
                    let meta = Meta {
                        uuid: event.uuid,
                        version: event.version,
                        created_at: event.created_at,
                        updated_at: event.created_at,
                    };
                    root = Some(Self::from_json(meta, data)?);
                }
                (None, _) => return Err(DomainError::MissingCreate { uuid: event.uuid }),
                (Some(_), Action::Delete) => deleted = true,
                (Some(current), _) => current.apply(event)?,
            }
        }
        Ok(if deleted { None } else { root })
    }

    /// Applies a stored update event of this root.
    pub fn apply(&mut self, event: &Event) -> Result<(), DomainError> {
        if event.uuid != self.meta.uuid || event.version != self.meta.version + 1 {
            return Err(DomainError::OutOfOrder {
                uuid: event.uuid,
                version: event.version,
                expected: self.meta.version + 1,
            });
        }
        for diff in &event.fields_diff {
            self.state.apply_field(diff)?;
        }
        self.stored = self.state.clone();
        self.meta.version = event.version;
        self.meta.updated_at = event.created_at;
        Ok(())
    }

    /// The diffs between the stored state and the current one.
    pub fn pending_diffs(&self) -> Result<Vec<super::FieldDiff>, DomainError> {
        let mut out = Vec::new();
        self.stored.diff_fields(&self.state, &mut out)?;
        Ok(out)
    }

    /// Whether fields were changed since the root was loaded or saved.
    pub fn is_changed(&self) -> bool {
        self.state != self.stored
    }

    /// Marks the current state as stored with the given meta (after a successful append).
    pub fn mark_stored(&mut self, meta: Meta) {
        self.meta = meta;
        self.stored = self.state.clone();
    }

    /// Replaces meta and state with a fresher copy.
    pub fn replace_with(&mut self, other: Root<T>) {
        *self = other;
    }

    /// The root's JSON representation: its fields plus `uuid`, `version`, `created_at`, `updated_at`.
    pub fn to_json(&self) -> Result<Value, DomainError> {
        let mut value = to_json(T::NAME, &self.state)?;
        if let Value::Object(map) = &mut value {
            map.insert("uuid".into(), Value::String(self.meta.uuid.to_string()));
            map.insert("version".into(), Value::from(self.meta.version));
            map.insert(
                "created_at".into(),
                to_json("created_at", &self.meta.created_at)?,
            );
            map.insert(
                "updated_at".into(),
                to_json("updated_at", &self.meta.updated_at)?,
            );
        }
        Ok(value)
    }
}

impl<T> Root<T> {
    /// The identity.
    pub fn uuid(&self) -> Uuid {
        self.meta.uuid
    }

    /// The stored version.
    pub fn version(&self) -> u64 {
        self.meta.version
    }

    /// Creation time.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.meta.created_at
    }

    /// Time of the last stored change.
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.meta.updated_at
    }

    /// Identity, version and timestamps.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The fields, dropping the meta.
    pub fn into_inner(self) -> T {
        self.state
    }
}

impl<T> Deref for Root<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.state
    }
}

impl<T> DerefMut for Root<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.state
    }
}

impl<T: fmt::Debug> fmt::Debug for Root<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Root")
            .field("uuid", &self.meta.uuid)
            .field("version", &self.meta.version)
            .field("created_at", &self.meta.created_at)
            .field("updated_at", &self.meta.updated_at)
            .field("state", &self.state)
            .finish()
    }
}

impl<T: PartialEq> PartialEq for Root<T> {
    fn eq(&self, other: &Self) -> bool {
        self.meta == other.meta && self.state == other.state
    }
}

impl<T: Model> Serialize for Root<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de, T: Model> Deserialize<'de> for Root<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = Map::<String, Value>::deserialize(deserializer)?;
        let mut take = |key: &str| {
            map.remove(key)
                .ok_or_else(|| D::Error::missing_field_owned(key))
        };
        let uuid: Uuid = serde_json::from_value(take("uuid")?).map_err(D::Error::custom)?;
        let version: u64 = serde_json::from_value(take("version")?).map_err(D::Error::custom)?;
        let created_at = serde_json::from_value(take("created_at")?).map_err(D::Error::custom)?;
        let updated_at = serde_json::from_value(take("updated_at")?).map_err(D::Error::custom)?;
        let meta = Meta {
            uuid,
            version,
            created_at,
            updated_at,
        };
        Root::from_json(meta, map).map_err(D::Error::custom)
    }
}

trait MissingFieldOwned {
    fn missing_field_owned(key: &str) -> Self;
}

impl<E: serde::de::Error> MissingFieldOwned for E {
    fn missing_field_owned(key: &str) -> Self {
        E::custom(format_args!("missing field `{key}`"))
    }
}
