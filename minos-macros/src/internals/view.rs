//! `#[view]`: a read model struct, its `#[key]` and `#[index]` fields, checked.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Field, Fields, GenericArgument, ItemStruct, LitInt, LitStr, Path, PathArguments, Type};

use super::attr::crate_path;
use super::ctxt::Ctxt;

/// How a field is stored (mirrors the runtime's `ColumnKind`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Integer,
    Real,
    Bool,
    Uuid,
    Timestamp,
    Json,
}

impl Kind {
    pub(crate) fn variant(self) -> &'static str {
        match self {
            Kind::Text => "Text",
            Kind::Integer => "Integer",
            Kind::Real => "Real",
            Kind::Bool => "Bool",
            Kind::Uuid => "Uuid",
            Kind::Timestamp => "Timestamp",
            Kind::Json => "Json",
        }
    }
}

pub(crate) struct ViewField<'a> {
    pub(crate) field: &'a Field,
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) nullable: bool,
    pub(crate) key: bool,
    pub(crate) indexed: bool,
}

pub(crate) struct ViewArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: u32,
    pub(crate) krate: Option<Path>,
}

pub(crate) struct ViewModel<'a> {
    pub(crate) item: &'a ItemStruct,
    pub(crate) args: ViewArgs,
    pub(crate) fields: Vec<ViewField<'a>>,
}

pub(crate) fn parse_args(cx: &Ctxt, args: TokenStream) -> ViewArgs {
    let mut out = ViewArgs {
        name: None,
        version: 1,
        krate: None,
    };
    let parser = syn::meta::parser(|meta: ParseNestedMeta<'_>| {
        if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            let valid = lit
                .value()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && lit
                    .value()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                cx.error_spanned_by(
                    &lit,
                    "a view's name is letters, digits and `_`, like `name = \"FooSummary\"`",
                );
            }
            out.name = Some(lit);
        } else if meta.path.is_ident("version") {
            let lit: LitInt = meta.value()?.parse()?;
            match lit.base10_parse::<u32>() {
                Ok(v) if v >= 1 => out.version = v,
                _ => cx.error_spanned_by(
                    &lit,
                    "`version` is a whole number from 1, like `version = 2`",
                ),
            }
        } else if meta.path.is_ident("crate") {
            if let Some(path) = crate_path(cx, &meta)? {
                out.krate = Some(path);
            }
        } else {
            let key = meta.path.to_token_stream().to_string().replace(' ', "");
            cx.error_spanned_by(
                &meta.path,
                format!("unknown minos #[view] attribute `{key}`; expected `name = \"...\"`, `version = N` or `crate = \"...\"`"),
            );
            if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<syn::Expr>()?;
            }
        }
        Ok(())
    });
    if let Err(error) = syn::parse::Parser::parse2(parser, args) {
        cx.syn_error(error);
    }
    out
}

fn last_segment(ty: &Type) -> Option<(&syn::Ident, &PathArguments)> {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().map(|s| (&s.ident, &s.arguments))
        }
        Type::Group(group) => last_segment(&group.elem),
        Type::Paren(paren) => last_segment(&paren.elem),
        _ => None,
    }
}

/// The kind of a type, and whether it is an `Option`.
fn kind_of(ty: &Type) -> (Kind, bool) {
    let Some((ident, arguments)) = last_segment(ty) else {
        return (Kind::Json, false);
    };
    let name = ident.to_string();
    if name == "Option" {
        if let PathArguments::AngleBracketed(args) = arguments {
            if let Some(GenericArgument::Type(inner)) = args.args.first() {
                let (kind, nested) = kind_of(inner);
                return if nested {
                    (Kind::Json, true)
                } else {
                    (kind, true)
                };
            }
        }
        return (Kind::Json, true);
    }
    let kind = match name.as_str() {
        "String" | "char" => Kind::Text,
        "i8" | "i16" | "i32" | "i64" | "isize" | "u8" | "u16" | "u32" | "u64" | "usize" => {
            Kind::Integer
        }
        "f32" | "f64" => Kind::Real,
        "bool" => Kind::Bool,
        "Uuid" => Kind::Uuid,
        "DateTime" => Kind::Timestamp,
        _ => Kind::Json,
    };
    (kind, false)
}

/// Types a view cannot own.
fn unsupported(ty: &Type) -> Option<&'static str> {
    match ty {
        Type::Reference(_) => Some("a reference: a view owns its data (write `String` for `&str`)"),
        Type::Ptr(_) => Some("a raw pointer"),
        Type::BareFn(_) => Some("a function pointer"),
        Type::ImplTrait(_) | Type::TraitObject(_) => Some("a trait object"),
        Type::Never(_) => Some("`!`"),
        Type::Infer(_) => Some("`_`"),
        _ => None,
    }
}

fn is_attr(attr: &syn::Attribute, name: &str) -> bool {
    attr.path().is_ident(name)
}

pub(crate) fn parse<'a>(cx: &Ctxt, item: &'a ItemStruct, args: ViewArgs) -> Option<ViewModel<'a>> {
    if !item.generics.params.is_empty() {
        cx.error_spanned_by(
            &item.generics,
            "a #[view] cannot be generic: each view is one table",
        );
    }
    for attr in item.attrs.iter().filter(|a| is_attr(a, "serde")) {
        cx.error_spanned_by(
            attr,
            "#[view] keeps each field under its Rust name (its column): remove `#[serde(..)]` here",
        );
    }
    let Fields::Named(named) = &item.fields else {
        cx.error_spanned_by(
            &item.ident,
            "a #[view] is a struct with named fields, one of them marked `#[key]`",
        );
        return None;
    };
    let mut fields = Vec::new();
    let mut key_seen = false;
    for field in &named.named {
        let ident = field.ident.as_ref()?;
        let name = ident.to_string().trim_start_matches("r#").to_owned();
        let key_attr = field.attrs.iter().find(|a| is_attr(a, "key"));
        let index_attr = field.attrs.iter().find(|a| is_attr(a, "index"));
        for attr in field.attrs.iter().filter(|a| is_attr(a, "serde")) {
            cx.error_spanned_by(
                attr,
                "#[view] keeps each field under its Rust name (its column): remove `#[serde(..)]`",
            );
        }
        for attr in [key_attr, index_attr].into_iter().flatten() {
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                cx.error_spanned_by(
                    attr,
                    format!("`#[{}]` takes no arguments", attr.path().to_token_stream()),
                );
            }
        }
        if name.starts_with("_minos") {
            cx.error_spanned_by(ident, "field names starting with `_minos` are reserved");
        }
        if let Some(reason) = unsupported(&field.ty) {
            cx.error_spanned_by(&field.ty, format!("a view field cannot be {reason}"));
            continue;
        }
        let (kind, nullable) = kind_of(&field.ty);
        if let Some(attr) = key_attr {
            if key_seen {
                cx.error_spanned_by(
                    attr,
                    "a view has one `#[key]`: keep it on one field, and mark fields you look up by with `#[index]`",
                );
            }
            key_seen = true;
            if nullable || !matches!(kind, Kind::Text | Kind::Integer | Kind::Uuid) {
                cx.error_spanned_by(
                    &field.ty,
                    "a view's key is a `String`, an integer or a `Uuid` (not an `Option`): \
                     it names one row",
                );
            }
            if let Some(index) = index_attr {
                cx.error_spanned_by(index, "the key is indexed already: remove `#[index]`");
            }
        }
        if let (Some(attr), Kind::Json) = (index_attr, kind) {
            let _ = attr;
            cx.error_spanned_by(
                &field.ty,
                "`#[index]` needs a scalar field (`String`, an integer, a float, `bool`, `Uuid`, \
                 `DateTime<Utc>`, or an `Option` of one): lists and nested values have no column to index",
            );
        }
        fields.push(ViewField {
            field,
            name,
            kind,
            nullable,
            key: key_attr.is_some(),
            indexed: index_attr.is_some(),
        });
    }
    if !key_seen {
        cx.error_spanned_by(
            &item.ident,
            "a view needs a key: mark the field that names a row `#[key]`, like `#[key] uuid: Uuid`",
        );
    }
    let _ = item.span();
    Some(ViewModel { item, args, fields })
}
