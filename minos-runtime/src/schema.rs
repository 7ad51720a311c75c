//! JSON Schemas of models, request and response bodies, for `GET /spec/openapi` and `GET /spec/asyncapi`.
//!
//! The macros describe every field and every `request = T` / `response = T` type through a [`Probe`]:
//! a type implementing [`JsonSchema`] gives its full schema, any other type gives `{}` (any value), so
//! users never have to implement `JsonSchema` to use a type in a model or a handler. `#[schema]`
//! derives it for their own request and response types.

use std::borrow::Cow;
use std::marker::PhantomData;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

use crate::domain::{EntitySet, Ref, Root, ValueObjectSet};

/// Generates the schema of one type (a model, a request or a response body).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// Selects a type's schema in generated code: `(&Probe::<T>::new()).schema(generator)` is `T`'s schema
/// when `T: JsonSchema` ([`ViaSchema`]), else `{}` ([`ViaAny`]). Method resolution tries the receiver
/// `&Probe<T>` before auto-referencing it to `&&Probe<T>`, so the first impl wins whenever it applies;
/// this only works on concrete types, which the macros always have.
pub struct Probe<T: ?Sized>(PhantomData<T>);

impl<T: ?Sized> Probe<T> {
    /// A probe of `T`.
    pub const fn new() -> Self {
        Probe(PhantomData)
    }
}

impl<T: ?Sized> Default for Probe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The schema of a type that implements [`JsonSchema`].
pub trait ViaSchema {
    /// `T`'s schema (a `$ref` to a component for named types).
    fn schema(&self, generator: &mut SchemaGenerator) -> Schema;
}

impl<T: JsonSchema + ?Sized> ViaSchema for Probe<T> {
    fn schema(&self, generator: &mut SchemaGenerator) -> Schema {
        generator.subschema_for::<T>()
    }
}

/// The schema of any other type: any value.
pub trait ViaAny {
    /// `{}`.
    fn schema(&self, generator: &mut SchemaGenerator) -> Schema;
}

impl<T: ?Sized> ViaAny for &Probe<T> {
    fn schema(&self, _generator: &mut SchemaGenerator) -> Schema {
        Schema::default()
    }
}

/// The object schema of a model's fields, built by the code `#[root_entity]`, `#[entity]`,
/// `#[value_object]` and `#[external_entity]` generate.
#[derive(Debug)]
pub struct ModelSchema {
    description: Option<&'static str>,
    properties: Map<String, Value>,
    required: Vec<Value>,
}

impl ModelSchema {
    /// A model with this doc comment (empty: none).
    pub fn new(description: &'static str) -> Self {
        ModelSchema {
            description: (!description.is_empty()).then_some(description),
            properties: Map::new(),
            required: Vec::new(),
        }
    }

    /// Adds a field with its doc comment (empty: none).
    pub fn field(
        mut self,
        name: &'static str,
        description: &'static str,
        required: bool,
        schema: Schema,
    ) -> Self {
        let mut schema = schema;
        if !description.is_empty() {
            if let Some(object) = schema.as_object_mut() {
                object.insert("description".into(), description.into());
            } else {
                schema = json_schema!({ "description": description });
            }
        }
        self.properties.insert(name.into(), schema.to_value());
        if required {
            self.required.push(name.into());
        }
        self
    }

    /// The schema: `{"type": "object", "properties": .., "required": ..}`.
    pub fn build(self) -> Schema {
        let mut schema = json_schema!({
            "type": "object",
            "properties": self.properties,
            "required": self.required,
        });
        if let Some(description) = self.description {
            schema.insert("description".into(), description.into());
        }
        schema
    }
}

fn uuid_schema() -> Schema {
    json_schema!({ "type": "string", "format": "uuid" })
}

/// A reference is written as the referenced root's uuid.
impl<T> JsonSchema for Ref<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Ref".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        let mut schema = uuid_schema();
        schema.insert(
            "description".into(),
            "the uuid of the referenced root entity".into(),
        );
        schema
    }
}

/// An array of the members' fields, each with its `uuid`.
impl<T: JsonSchema> JsonSchema for EntitySet<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("EntitySet_of_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let member = generator.subschema_for::<T>();
        json_schema!({
            "type": "array",
            "items": {
                "allOf": [
                    member,
                    { "type": "object", "properties": { "uuid": uuid_schema() }, "required": ["uuid"] }
                ]
            }
        })
    }
}

/// An array of distinct members.
impl<T: JsonSchema> JsonSchema for ValueObjectSet<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("ValueObjectSet_of_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "items": generator.subschema_for::<T>(),
            "uniqueItems": true,
        })
    }
}

/// A stored root entity: its fields plus `uuid`, `version`, `created_at` and `updated_at`.
impl<T: JsonSchema> JsonSchema for Root<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Root_of_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "allOf": [
                generator.subschema_for::<T>(),
                {
                    "type": "object",
                    "properties": {
                        "uuid": uuid_schema(),
                        "version": { "type": "integer", "minimum": 1 },
                        "created_at": { "type": "string", "format": "date-time" },
                        "updated_at": { "type": "string", "format": "date-time" },
                    },
                    "required": ["uuid", "version", "created_at", "updated_at"],
                }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Opaque;

    #[test]
    // The borrow is the point: it makes `ViaAny` the fallback.
    #[allow(clippy::needless_borrow)]
    fn probes_pick_the_schema_when_there_is_one() {
        #[allow(unused_imports)]
        use super::{ViaAny as _, ViaSchema as _};
        let mut generator = SchemaGenerator::default();
        let text = (&Probe::<String>::new()).schema(&mut generator);
        assert_eq!(text.get("type"), Some(&Value::from("string")));
        let any = (&Probe::<Opaque>::new()).schema(&mut generator);
        assert_eq!(any, Schema::default());
        let reference = (&Probe::<Ref<Opaque>>::new()).schema(&mut generator);
        assert_eq!(reference.get("format"), Some(&Value::from("uuid")));
    }
}
