//! Validation of a model: every problem is reported on the user's tokens with what to write instead.

use syn::{Attribute, Type};

use super::ast::{Kind, Model, SetKind};
use super::ctxt::Ctxt;
use super::symbol::SERDE;

/// serde field attributes that keep the stored name and shape of a field.
const ALLOWED_SERDE_FIELD_KEYS: &[&str] = &["default", "alias"];

pub(crate) fn check(cx: &Ctxt, model: &Model<'_>) {
    check_generics(cx, model);
    check_name(cx, model);
    check_serde_container(cx, model);
    check_schema_attribute(cx, model);
    for field in &model.fields {
        check_reserved(cx, model, field.ident);
        check_type(cx, model.kind, field.ty);
        check_serde_field(cx, &field.original.attrs);
        if model.kind == Kind::ValueObject && field.set == Some(SetKind::Entity) {
            cx.error_spanned_by(
                field.ty,
                "a #[value_object] cannot hold an EntitySet: entities have an identity and change, value objects do not\n\
                 help: use ValueObjectSet<T> of value objects, or make this struct an #[entity]",
            );
        }
    }
}

fn check_generics(cx: &Ctxt, model: &Model<'_>) {
    let generics = &model.item.generics;
    if !generics.params.is_empty() || generics.where_clause.is_some() {
        cx.error_spanned_by(
            generics,
            format!(
                "{} does not support generic parameters: stored events name one concrete type\n\
                 help: write a concrete struct, e.g. `struct {} {{ .. }}` with concrete field types",
                model.kind.attribute(),
                model.item.ident
            ),
        );
    }
}

fn check_name(cx: &Ctxt, model: &Model<'_>) {
    let Some(lit) = &model.name_lit else { return };
    let name = lit.value();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        cx.error_spanned_by(
            lit,
            format!(
                "`{name}` cannot name a model: topic names such as `<name>Created` are built from it\n\
                 help: use letters, digits and `_`, starting with a letter, e.g. `name = \"Order\"`"
            ),
        );
    }
}

fn check_reserved(cx: &Ctxt, model: &Model<'_>, ident: &syn::Ident) {
    let unraw = ident.to_string();
    let unraw = unraw.trim_start_matches("r#");
    if let Some((_, instead)) = model
        .kind
        .reserved()
        .into_iter()
        .find(|(name, _)| *name == unraw)
    {
        cx.error_spanned_by(
            ident,
            format!(
                "the field `{unraw}` is managed by minos: every stored {} has {instead}\n\
                 help: remove this field",
                match model.kind {
                    Kind::Entity => "entity",
                    _ => "root",
                }
            ),
        );
    }
}

fn check_type(cx: &Ctxt, kind: Kind, ty: &Type) {
    let problem = match ty {
        Type::Reference(_) => "a reference cannot be stored: the model owns its data\nhelp: use an owned type, e.g. `String` instead of `&str`",
        Type::Ptr(_) => "a raw pointer cannot be stored\nhelp: use an owned type",
        Type::BareFn(_) => "a function pointer cannot be stored\nhelp: store data, not behaviour",
        Type::TraitObject(_) | Type::ImplTrait(_) => {
            "a trait object cannot be stored: events need one concrete type per field\nhelp: use a concrete type"
        }
        Type::Tuple(t) if !t.elems.is_empty() => {
            "a tuple cannot be stored: its parts would have no names in events\nhelp: use a #[value_object] struct with named fields"
        }
        Type::Tuple(_) | Type::Never(_) => "this type holds no data to store\nhelp: remove the field",
        Type::Group(g) => return check_type(cx, kind, &g.elem),
        Type::Paren(p) => return check_type(cx, kind, &p.elem),
        _ => return,
    };
    cx.error_spanned_by(
        ty,
        format!("unsupported field type in {}: {problem}", kind.attribute()),
    );
}

/// `#[schema]` below a model attribute would derive a second `JsonSchema`.
fn check_schema_attribute(cx: &Ctxt, model: &Model<'_>) {
    let is_schema = |attr: &&Attribute| {
        let segments = &attr.path().segments;
        segments.last().is_some_and(|s| s.ident == "schema")
            && (segments.len() == 1 || segments.first().is_some_and(|s| s.ident == "minos"))
    };
    for attr in model.item.attrs.iter().filter(is_schema) {
        cx.error_spanned_by(
            attr,
            format!(
                "{} already describes its fields in the API specs; `#[schema]` is for request and response types\n\
                 help: remove this attribute",
                model.kind.attribute()
            ),
        );
    }
}

fn check_serde_container(cx: &Ctxt, model: &Model<'_>) {
    for attr in model.item.attrs.iter().filter(|a| a.path() == SERDE) {
        cx.error_spanned_by(
            attr,
            format!(
                "{} decides how the model is stored; container serde attributes would change field names in events\n\
                 help: remove this attribute (field attributes `#[serde(default)]` and `#[serde(alias = \"..\")]` are allowed)",
                model.kind.attribute()
            ),
        );
    }
}

fn check_serde_field(cx: &Ctxt, attrs: &[Attribute]) {
    for attr in attrs.iter().filter(|a| a.path() == SERDE) {
        let result = attr.parse_nested_meta(|meta| {
            let allowed = ALLOWED_SERDE_FIELD_KEYS.iter().any(|k| meta.path.is_ident(k));
            if !allowed {
                cx.error_spanned_by(
                    &meta.path,
                    "this serde attribute would change how the field is stored and diffed\n\
                     help: only `#[serde(default)]` and `#[serde(alias = \"..\")]` are allowed on model fields",
                );
            }
            if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<syn::Expr>()?;
            }
            Ok(())
        });
        if let Err(error) = result {
            cx.syn_error(error);
        }
    }
}
