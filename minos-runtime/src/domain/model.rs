//! Traits the attribute macros implement.

use super::{DomainError, Field, FieldDiff};

/// What kind of model a type is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// `#[root_entity]`: event-sourced, stored as a stream of events.
    RootEntity,
    /// `#[entity]`: has an identity inside its root (member of an `EntitySet`).
    Entity,
    /// `#[value_object]`: identified by its value, replaced rather than changed.
    ValueObject,
    /// `#[external_entity]`: a local read copy of another service's root entity.
    ExternalEntity,
}

impl ModelKind {
    /// The attribute that declares this kind.
    pub fn attribute(self) -> &'static str {
        match self {
            ModelKind::RootEntity => "#[root_entity]",
            ModelKind::Entity => "#[entity]",
            ModelKind::ValueObject => "#[value_object]",
            ModelKind::ExternalEntity => "#[external_entity]",
        }
    }
}

/// A struct declared with one of the minos model attributes. Generated; do not implement by hand.
pub trait Model: Field {
    /// The type name used in events and topics (`Foo` → `FooCreated`).
    const NAME: &'static str;
    /// Which attribute declared it.
    const KIND: ModelKind;
    /// Names of the fields, in declaration order.
    const FIELDS: &'static [&'static str];

    /// Pushes the diffs of every field that differs between `self` and `new`.
    fn diff_fields(&self, new: &Self, out: &mut Vec<FieldDiff>) -> Result<(), DomainError>;

    /// Pushes one whole-value diff per field (a creation's diff).
    fn all_fields(&self, out: &mut Vec<FieldDiff>) -> Result<(), DomainError>;

    /// Applies one field diff.
    fn apply_field(&mut self, diff: &FieldDiff) -> Result<(), DomainError>;
}

/// An event-sourced root entity (`#[root_entity]`). Its operations live on [`crate::RootEntityExt`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a root entity",
    note = "declare it with #[root_entity]"
)]
pub trait RootEntity: Model {}

/// An entity inside a root (`#[entity]`), the member type of [`crate::EntitySet`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an entity",
    label = "EntitySet<T> holds #[entity] structs",
    note = "declare it with #[entity], or use ValueObjectSet<T> for #[value_object] members"
)]
pub trait Entity: Model {}

/// A value object (`#[value_object]`), the member type of [`crate::ValueObjectSet`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a value object",
    label = "ValueObjectSet<T> holds #[value_object] structs",
    note = "declare it with #[value_object], or use EntitySet<T> for #[entity] members"
)]
pub trait ValueObject: Model {}

/// A local read copy of another service's root entity (`#[external_entity]`).
pub trait ExternalEntity: Model {}

/// What a [`crate::Ref`] may point to: a root entity of this service or an external entity.
#[diagnostic::on_unimplemented(
    message = "`Ref<{Self}>` needs a root entity or an external entity",
    note = "declare `{Self}` with #[root_entity] or #[external_entity]"
)]
pub trait Referable: Model {}
