//! `Ref<T>`: a reference to a root entity, possibly of another service.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

use super::{Field, Referable, Root};

/// A reference to a root entity (of this service or, through an `#[external_entity]`, another one).
///
/// Only the uuid is stored and compared. Once resolved it also holds the referenced model.
pub struct Ref<T> {
    uuid: Uuid,
    model: Option<Box<Root<T>>>,
}

impl<T> Ref<T> {
    /// An unresolved reference.
    pub fn new(uuid: Uuid) -> Self {
        Ref { uuid, model: None }
    }

    /// A resolved reference to `model`.
    pub fn resolved(model: Root<T>) -> Self {
        Ref {
            uuid: model.uuid(),
            model: Some(Box::new(model)),
        }
    }

    /// The referenced uuid.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// Whether the model is here.
    pub fn is_resolved(&self) -> bool {
        self.model.is_some()
    }

    /// The model, once resolved.
    pub fn model(&self) -> Option<&Root<T>> {
        self.model.as_deref()
    }

    /// Sets the resolved model; its uuid must be the referenced one, or the model is handed back.
    pub fn set_model(&mut self, model: Root<T>) -> Result<(), Root<T>> {
        if model.uuid() != self.uuid {
            return Err(model);
        }
        self.model = Some(Box::new(model));
        Ok(())
    }
}

impl<T> From<Uuid> for Ref<T> {
    fn from(uuid: Uuid) -> Self {
        Ref::new(uuid)
    }
}

impl<T> From<&Root<T>> for Ref<T> {
    fn from(root: &Root<T>) -> Self {
        Ref::new(root.uuid())
    }
}

impl<T: Clone> Clone for Ref<T> {
    fn clone(&self) -> Self {
        Ref {
            uuid: self.uuid,
            model: self.model.clone(),
        }
    }
}

impl<T> PartialEq for Ref<T> {
    fn eq(&self, other: &Self) -> bool {
        self.uuid == other.uuid
    }
}

impl<T: fmt::Debug> fmt::Debug for Ref<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.model {
            None => write!(f, "Ref({})", self.uuid),
            Some(model) => f.debug_tuple("Ref").field(model).finish(),
        }
    }
}

impl<T> Serialize for Ref<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.uuid.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Ref<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // A bare uuid, or any object with a `uuid` key (a resolved model written by another service).
        let value = Value::deserialize(deserializer)?;
        let text = match &value {
            Value::String(s) => s.as_str(),
            Value::Object(map) => map
                .get("uuid")
                .and_then(Value::as_str)
                .ok_or_else(|| D::Error::custom("a Ref object needs a `uuid` string"))?,
            _ => return Err(D::Error::custom("a Ref is a uuid string")),
        };
        Ok(Ref::new(Uuid::parse_str(text).map_err(D::Error::custom)?))
    }
}

impl<T: Referable> Field for Ref<T> {}
