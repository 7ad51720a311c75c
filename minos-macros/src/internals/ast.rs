//! The model AST: borrows the user's tokens so every later error can point at them.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Fields, Ident, Item, ItemStruct, LitStr, Path, Type};

use super::attr::ModelArgs;
use super::ctxt::Ctxt;

/// Which attribute is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    RootEntity,
    Entity,
    ValueObject,
    ExternalEntity,
}

impl Kind {
    pub(crate) fn attribute(self) -> &'static str {
        match self {
            Kind::RootEntity => "#[root_entity]",
            Kind::Entity => "#[entity]",
            Kind::ValueObject => "#[value_object]",
            Kind::ExternalEntity => "#[external_entity]",
        }
    }

    /// Field names minos manages for this kind, with where the value lives instead.
    pub(crate) fn reserved(self) -> Vec<(&'static str, String)> {
        match self {
            // Every reserved key of a stored root has an accessor of the same name.
            Kind::RootEntity | Kind::ExternalEntity => minos_rules::RESERVED_FIELDS
                .iter()
                .map(|name| (*name, format!("`.{name}()`")))
                .collect(),
            Kind::Entity => vec![("uuid", "the key of its `EntitySet`".to_owned())],
            Kind::ValueObject => Vec::new(),
        }
    }
}

/// A set-valued field whose diffs are incremental.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetKind {
    Entity,
    ValueObject,
}

pub(crate) struct FieldDef<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) ty: &'a Type,
    pub(crate) set: Option<SetKind>,
    pub(crate) original: &'a syn::Field,
}

pub(crate) struct Model<'a> {
    pub(crate) kind: Kind,
    pub(crate) item: &'a ItemStruct,
    pub(crate) name: String,
    pub(crate) name_lit: Option<LitStr>,
    pub(crate) fields: Vec<FieldDef<'a>>,
    pub(crate) krate: Path,
}

impl<'a> Model<'a> {
    /// Reads the item; reports (and returns `None` for) anything that is not a struct with named fields.
    pub(crate) fn from_item(
        cx: &Ctxt,
        kind: Kind,
        args: ModelArgs,
        item: &'a Item,
    ) -> Option<Self> {
        let attribute = kind.attribute();
        let item = match item {
            Item::Struct(item) => item,
            Item::Enum(e) => {
                cx.error_spanned_by(
                    e.enum_token,
                    format!(
                        "{attribute} goes on a struct with named fields, not an enum\n\
                         help: keep the variant in a field, e.g. `status: String`, or model each case as a #[value_object]"
                    ),
                );
                return None;
            }
            Item::Union(u) => {
                cx.error_spanned_by(
                    u.union_token,
                    format!("{attribute} goes on a struct with named fields, not a union"),
                );
                return None;
            }
            other => {
                cx.syn_error(syn::Error::new(
                    item_span(other),
                    format!("{attribute} goes on a struct with named fields"),
                ));
                return None;
            }
        };
        let named = match &item.fields {
            Fields::Named(named) => named,
            Fields::Unnamed(unnamed) => {
                cx.error_spanned_by(
                    unnamed,
                    format!(
                        "{attribute} needs named fields: events record changes by field name\n\
                         help: write `struct {} {{ name: Type, .. }}`",
                        item.ident
                    ),
                );
                return None;
            }
            Fields::Unit => {
                cx.error_spanned_by(
                    &item.ident,
                    format!(
                        "{attribute} needs a struct with braces: a unit struct has no fields to store\n\
                         help: write `struct {} {{}}`",
                        item.ident
                    ),
                );
                return None;
            }
        };
        let fields = named
            .named
            .iter()
            .filter_map(|field| {
                Some(FieldDef {
                    ident: field.ident.as_ref()?,
                    ty: &field.ty,
                    set: set_kind(&field.ty),
                    original: field,
                })
            })
            .collect();
        Some(Model {
            kind,
            item,
            name: args
                .name
                .as_ref()
                .map_or_else(|| item.ident.to_string(), LitStr::value),
            name_lit: args.name,
            fields,
            krate: args.krate.unwrap_or_else(|| syn::parse_quote!(::minos)),
        })
    }
}

/// Recognises `EntitySet<T>` and `ValueObjectSet<T>` by their last path segment.
fn set_kind(ty: &Type) -> Option<SetKind> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident == "EntitySet" {
        Some(SetKind::Entity)
    } else if last.ident == "ValueObjectSet" {
        Some(SetKind::ValueObject)
    } else {
        None
    }
}

pub(crate) fn item_span(item: &Item) -> Span {
    match item {
        Item::Fn(f) => f.sig.fn_token.span,
        Item::Impl(i) => i.impl_token.span,
        Item::Trait(t) => t.trait_token.span,
        Item::Mod(m) => m.mod_token.span,
        Item::Type(t) => t.type_token.span,
        other => other.span(),
    }
}
