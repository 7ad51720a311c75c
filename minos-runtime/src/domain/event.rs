//! Events: what a root entity's change looks like once committed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::DomainError;

/// What an event did to its root entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The root entity was created; the diff lists every field.
    Create,
    /// Some fields changed; the diff lists only those.
    Update,
    /// The root entity was deleted; the diff is empty.
    Delete,
}

impl Action {
    /// The lowercase name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "create" => Some(Action::Create),
            "update" => Some(Action::Update),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// What an incremental diff did to one member of an `EntitySet` or `ValueObjectSet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetAction {
    /// A member was added.
    Create,
    /// A member (of an `EntitySet`, matched by uuid) changed.
    Update,
    /// A member was removed.
    Delete,
}

impl SetAction {
    /// The lowercase name used in topics (`FooUpdated.items.create`).
    pub fn as_str(self) -> &'static str {
        match self {
            SetAction::Create => "create",
            SetAction::Update => "update",
            SetAction::Delete => "delete",
        }
    }
}

/// The change of one field. With `action` set it is incremental: it adds, updates or removes one member
/// of a set-valued field instead of replacing the whole value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldDiff {
    /// The field's name, as written in the struct.
    pub name: String,
    /// The field's declared type, for readers of the stored event.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The new value (for incremental diffs: the member concerned).
    pub value: Value,
    /// The member action of an incremental diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<SetAction>,
}

/// Type names of incremental diffs on entity sets start with this, so a reader knows members are matched by uuid.
pub(crate) const ENTITY_SET_TYPE_PREFIX: &str = "EntitySet<";

impl FieldDiff {
    /// A diff that replaces the whole value of a field.
    pub fn whole(name: &str, type_name: &str, value: Value) -> Self {
        FieldDiff {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
            value,
            action: None,
        }
    }

    /// An incremental diff on one member of a set-valued field.
    pub fn incremental(name: &str, type_name: String, value: Value, action: SetAction) -> Self {
        FieldDiff {
            name: name.to_owned(),
            type_name,
            value,
            action: Some(action),
        }
    }

    /// The topic suffix of this diff: `field` or `field.create|update|delete`.
    pub fn topic_suffix(&self) -> String {
        match self.action {
            None => self.name.clone(),
            Some(action) => format!("{}.{}", self.name, action.as_str()),
        }
    }

    /// Applies this diff to the JSON state of a model.
    pub fn apply_json(&self, state: &mut Map<String, Value>) -> Result<(), DomainError> {
        let Some(action) = self.action else {
            state.insert(self.name.clone(), self.value.clone());
            return Ok(());
        };
        let slot = state
            .entry(self.name.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(members) = slot else {
            return Err(DomainError::InvalidDiff {
                field: self.name.clone(),
                reason: "an incremental diff needs an array-valued field".into(),
            });
        };
        let by_uuid = self.type_name.starts_with(ENTITY_SET_TYPE_PREFIX);
        let key = self.value.get("uuid").cloned();
        let position = members.iter().position(|m| {
            if by_uuid {
                m.get("uuid") == key.as_ref() && key.is_some()
            } else {
                *m == self.value
            }
        });
        match (action, position) {
            (SetAction::Create, None) => members.push(self.value.clone()),
            (SetAction::Create, Some(i)) | (SetAction::Update, Some(i)) => {
                members[i] = self.value.clone()
            }
            (SetAction::Update, None) => {
                return Err(DomainError::InvalidDiff {
                    field: self.name.clone(),
                    reason: "update of a member that is not in the set".into(),
                })
            }
            (SetAction::Delete, Some(i)) => {
                members.remove(i);
            }
            // Removing an absent member leaves the set as the diff wants it.
            (SetAction::Delete, None) => {}
        }
        Ok(())
    }
}

/// One committed change of a root entity: the unit of event sourcing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The root entity's identity.
    pub uuid: Uuid,
    /// The root entity's type name (`Foo`).
    pub name: String,
    /// The version this event gives the root entity (1 for the creation).
    pub version: u64,
    /// What the event did.
    pub action: Action,
    /// When the event was made.
    pub created_at: DateTime<Utc>,
    /// The changed fields (every field for a creation, none for a deletion).
    pub fields_diff: Vec<FieldDiff>,
}

/// A message for the outbox: a topic, the partitioning key and the JSON content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainMessage {
    /// Unique id, kept when the relay publishes it, so a consumer can drop a redelivery.
    pub identifier: Uuid,
    /// Topic, e.g. `FooUpdated.bar`.
    pub topic: String,
    /// Partitioning key: the root entity's uuid, so that one entity's messages keep their order.
    pub key: String,
    /// The event (or decomposed single-field event) as JSON.
    pub content: Value,
    /// Headers published with it: the trace context (`traceparent`) of the handler that wrote it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Event {
    /// One event per field diff, each with this event's uuid, name, version, action and time.
    pub fn decompose(&self) -> Vec<Event> {
        self.fields_diff
            .iter()
            .map(|diff| Event {
                fields_diff: vec![diff.clone()],
                ..self.without_diffs()
            })
            .collect()
    }

    fn without_diffs(&self) -> Event {
        Event {
            uuid: self.uuid,
            name: self.name.clone(),
            version: self.version,
            action: self.action,
            created_at: self.created_at,
            fields_diff: Vec::new(),
        }
    }

    /// The domain messages this event publishes once committed: `{Name}Created`, `{Name}Deleted`, or
    /// `{Name}Updated` followed by one `{Name}Updated.{field}` per changed field.
    pub fn domain_messages(&self) -> Result<Vec<DomainMessage>, DomainError> {
        let key = self.uuid.to_string();
        let whole = |topic: String, event: &Event| -> Result<DomainMessage, DomainError> {
            Ok(DomainMessage {
                identifier: Uuid::now_v7(),
                topic,
                key: key.clone(),
                content: serde_json::to_value(event).map_err(DomainError::Json)?,
                headers: Default::default(),
            })
        };
        match self.action {
            Action::Create => Ok(vec![whole(format!("{}Created", self.name), self)?]),
            Action::Delete => Ok(vec![whole(format!("{}Deleted", self.name), self)?]),
            Action::Update => {
                let mut out = Vec::with_capacity(1 + self.fields_diff.len());
                out.push(whole(format!("{}Updated", self.name), self)?);
                for single in self.decompose() {
                    let topic = format!(
                        "{}Updated.{}",
                        self.name,
                        single.fields_diff[0].topic_suffix()
                    );
                    out.push(whole(topic, &single)?);
                }
                Ok(out)
            }
        }
    }

    /// The new value this event gives field `name` (`None` when it does not change it), decoded; for
    /// an incremental diff, the member concerned.
    ///
    /// ```
    /// # use minos_runtime::{Event, Action, FieldDiff};
    /// # let event = Event { uuid: uuid::Uuid::nil(), name: "Foo".into(), version: 2, action: Action::Update,
    /// #     created_at: chrono::Utc::now(), fields_diff: vec![FieldDiff::whole("bar", "String", "y".into())] };
    /// let bar: Option<String> = event.field("bar")?;
    /// assert_eq!(bar.as_deref(), Some("y"));
    /// # Ok::<(), minos_runtime::domain::DomainError>(())
    /// ```
    pub fn field<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, DomainError> {
        self.fields_diff
            .iter()
            .rev()
            .find(|diff| diff.name == name)
            .map(|diff| serde_json::from_value(diff.value.clone()).map_err(DomainError::Json))
            .transpose()
    }

    /// The fields this event sets, as `T`: for a creation, the whole root entity
    /// (`let foo: Foo = event.decode_fields()?`); for an update, a type with the changed fields.
    pub fn decode_fields<T: serde::de::DeserializeOwned>(&self) -> Result<T, DomainError> {
        let mut state = Map::new();
        self.apply_json(&mut state)?;
        serde_json::from_value(Value::Object(state)).map_err(DomainError::Json)
    }

    /// Applies this event's diffs to the JSON state of a root entity.
    pub fn apply_json(&self, state: &mut Map<String, Value>) -> Result<(), DomainError> {
        for diff in &self.fields_diff {
            diff.apply_json(state)?;
        }
        Ok(())
    }
}
