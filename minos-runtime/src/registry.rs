//! The registry of models declared with the attribute macros, collected at link time.

use crate::domain::ModelKind;

/// One model declared with `#[root_entity]`, `#[entity]`, `#[value_object]` or `#[external_entity]`.
#[derive(Debug)]
pub struct ModelRegistration {
    /// The type name used in events and topics.
    pub name: &'static str,
    /// Which attribute declared it.
    pub kind: ModelKind,
    /// The Rust path of the type.
    pub rust_type: &'static str,
    /// Where it was declared.
    pub file: &'static str,
    /// The line of the declaration.
    pub line: u32,
    /// The schema of its fields (`{"type": "object", "properties": ..}`).
    pub schema: crate::schema::SchemaFn,
    /// Its fields, in declaration order.
    pub fields: &'static [FieldSpec],
}

/// One field of a registered model.
#[derive(Debug)]
pub struct FieldSpec {
    /// The field's name in events and topics.
    pub name: &'static str,
    /// The field's type as written (the `type` of its diffs).
    pub type_name: &'static str,
    /// The member actions of a set-valued field's incremental diffs (`FooUpdated.items.create`);
    /// empty for a field whose diffs replace the whole value.
    pub set_actions: &'static [crate::domain::SetAction],
}

inventory::collect!(ModelRegistration);

/// Every registered model, sorted by name.
pub fn models() -> Vec<&'static ModelRegistration> {
    // The conformance suite's sample models (`minos::testing::models`, in any binary built with the
    // `testing` feature, as a service's binary is when its tests run) belong to no service: a service
    // must not own a `Customer` or an `Order` it never declared.
    let mut all: Vec<_> = inventory::iter::<ModelRegistration>
        .into_iter()
        .filter(|m| !m.rust_type.starts_with(TEST_KIT_MODELS))
        .collect();
    all.sort_by_key(|m| (m.name, m.rust_type));
    all
}

/// Where the test kit's sample models live.
const TEST_KIT_MODELS: &str = "minos::testing::";

/// The registered root entities' names, sorted.
pub fn root_entity_names() -> Vec<&'static str> {
    models()
        .into_iter()
        .filter(|m| m.kind == ModelKind::RootEntity)
        .map(|m| m.name)
        .collect()
}
