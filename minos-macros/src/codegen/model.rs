//! Expansion of `#[root_entity]`, `#[entity]`, `#[value_object]` and `#[external_entity]`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{LitStr, Path};

use crate::internals::ast::{Kind, Model, SetKind};
use crate::internals::symbol::{DERIVE, SERDE};

/// The derives a model needs, and whether the user already wrote them.
struct Derives {
    clone: bool,
    debug: bool,
    partial_eq: bool,
    serialize: bool,
    deserialize: bool,
    json_schema: bool,
}

fn existing_derives(model: &Model<'_>) -> Derives {
    let mut found = Derives {
        clone: false,
        debug: false,
        partial_eq: false,
        serialize: false,
        deserialize: false,
        json_schema: false,
    };
    for attr in model.item.attrs.iter().filter(|a| a.path() == DERIVE) {
        // Unparsable derive lists are left for rustc to report.
        let _ = attr.parse_nested_meta(|meta| {
            if let Some(last) = meta.path.segments.last() {
                match last.ident.to_string().as_str() {
                    "Clone" => found.clone = true,
                    "Debug" => found.debug = true,
                    "PartialEq" => found.partial_eq = true,
                    "Serialize" => found.serialize = true,
                    "Deserialize" => found.deserialize = true,
                    "JsonSchema" => found.json_schema = true,
                    _ => {}
                }
            }
            Ok(())
        });
    }
    found
}

pub(crate) fn expand(model: &Model<'_>) -> TokenStream {
    let krate = &model.krate;
    let private = quote!(#krate::__private);
    let ident = &model.item.ident;
    let item = model.item;
    let name = &model.name;

    let have = existing_derives(model);
    let mut derives: Vec<TokenStream> = Vec::new();
    if !have.clone {
        derives.push(quote!(::core::clone::Clone));
    }
    if !have.debug {
        derives.push(quote!(::core::fmt::Debug));
    }
    if !have.partial_eq {
        derives.push(quote!(::core::cmp::PartialEq));
    }
    let mut serde_crate = TokenStream::new();
    if !have.serialize {
        derives.push(quote!(#private::serde::Serialize));
    }
    if !have.deserialize {
        derives.push(quote!(#private::serde::Deserialize));
    }
    if !have.serialize || !have.deserialize {
        let path = LitStr::new(&path_string(krate, "__private::serde"), Span::call_site());
        serde_crate = quote!(#[serde(crate = #path)]);
    }

    let field_names: Vec<String> = model.fields.iter().map(|f| unraw(f.ident)).collect();
    let diffs = model.fields.iter().zip(&field_names).map(|(f, fname)| {
        let (member, ty) = (f.ident, f.ty);
        let type_name = type_name(ty);
        // Spanned at the field type so an unsupported type is reported there, once: rustc merges the
        // identical error of the `apply` call below.
        quote_spanned! {ty.span()=>
            <#ty as #private::Field>::diff(#fname, #type_name, &self.#member, &__minos_new.#member, __minos_out)?;
        }
    });
    let alls = model.fields.iter().zip(&field_names).map(|(f, fname)| {
        let member = f.ident;
        let type_name = type_name(f.ty);
        quote! {
            __minos_out.push(#private::FieldDiff::whole(#fname, #type_name, #private::to_json(#fname, &self.#member)?));
        }
    });
    let applies = model.fields.iter().zip(&field_names).map(|(f, fname)| {
        let (member, ty) = (f.ident, f.ty);
        quote_spanned! {ty.span()=>
            #fname => <#ty as #private::Field>::apply(&mut self.#member, __minos_diff),
        }
    });

    let (kind, markers) = match model.kind {
        Kind::RootEntity => (
            quote!(RootEntity),
            vec![quote!(RootEntity), quote!(Referable)],
        ),
        Kind::Entity => (quote!(Entity), vec![quote!(Entity)]),
        Kind::ValueObject => (quote!(ValueObject), vec![quote!(ValueObject)]),
        Kind::ExternalEntity => (
            quote!(ExternalEntity),
            vec![quote!(ExternalEntity), quote!(Referable)],
        ),
    };
    let ident_str = ident.to_string();
    let schema = json_schema(model, &have, &field_names);
    let field_specs = model.fields.iter().zip(&field_names).map(|(f, fname)| {
        let type_name = type_name(f.ty);
        let actions = match f.set {
            None => quote!(),
            Some(SetKind::Entity) => quote! {
                #private::SetAction::Create, #private::SetAction::Update, #private::SetAction::Delete
            },
            Some(SetKind::ValueObject) => {
                quote!(#private::SetAction::Create, #private::SetAction::Delete)
            }
        };
        quote! {
            #private::FieldSpec { name: #fname, type_name: #type_name, set_actions: &[#actions] }
        }
    });

    quote! {
        #[derive(#(#derives),*)]
        #serde_crate
        #item

        const _: () = {
            impl #private::Field for #ident {}

            impl #private::Model for #ident {
                const NAME: &'static str = #name;
                const KIND: #private::ModelKind = #private::ModelKind::#kind;
                const FIELDS: &'static [&'static str] = &[#(#field_names),*];

                fn diff_fields(
                    &self,
                    __minos_new: &Self,
                    __minos_out: &mut ::std::vec::Vec<#private::FieldDiff>,
                ) -> ::core::result::Result<(), #private::DomainError> {
                    #(#diffs)*
                    ::core::result::Result::Ok(())
                }

                fn all_fields(
                    &self,
                    __minos_out: &mut ::std::vec::Vec<#private::FieldDiff>,
                ) -> ::core::result::Result<(), #private::DomainError> {
                    #(#alls)*
                    ::core::result::Result::Ok(())
                }

                fn apply_field(
                    &mut self,
                    __minos_diff: &#private::FieldDiff,
                ) -> ::core::result::Result<(), #private::DomainError> {
                    match __minos_diff.name.as_str() {
                        #(#applies)*
                        _ => ::core::result::Result::Err(#private::DomainError::UnknownField {
                            model: #name,
                            field: ::std::string::ToString::to_string(&__minos_diff.name),
                        }),
                    }
                }
            }

            #(impl #private::#markers for #ident {})*

            #schema

            #private::inventory::submit! {
                #private::ModelRegistration {
                    name: #name,
                    kind: #private::ModelKind::#kind,
                    rust_type: ::core::concat!(::core::module_path!(), "::", #ident_str),
                    file: ::core::file!(),
                    line: ::core::line!(),
                    schema: <#ident as #private::schemars::JsonSchema>::json_schema,
                    fields: &[#(#field_specs),*],
                }
            }
        };
    }
}

/// `impl JsonSchema`: an object of the fields, each described through a probe so that a field type
/// without a schema is "any value" instead of an error. Left out when the user derives `JsonSchema`.
fn json_schema(model: &Model<'_>, have: &Derives, field_names: &[String]) -> TokenStream {
    if have.json_schema {
        return TokenStream::new();
    }
    let krate = &model.krate;
    let private = quote!(#krate::__private);
    let schemars = quote!(#private::schemars);
    let ident = &model.item.ident;
    let name = &model.name;
    let description = doc_string(&model.item.attrs);
    let fields = model.fields.iter().zip(field_names).map(|(f, fname)| {
        let ty = f.ty;
        let description = doc_string(&f.original.attrs);
        let required = !is_option(ty) && !has_serde_default(&f.original.attrs);
        quote! {
            .field(#fname, #description, #required, (&#private::Probe::<#ty>::new()).schema(__minos_generator))
        }
    });
    quote! {
        impl #schemars::JsonSchema for #ident {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                ::std::borrow::Cow::Borrowed(#name)
            }

            fn schema_id() -> ::std::borrow::Cow<'static, str> {
                ::std::borrow::Cow::Borrowed(::core::concat!(::core::module_path!(), "::", #name))
            }

            fn json_schema(__minos_generator: &mut #schemars::SchemaGenerator) -> #schemars::Schema {
                #[allow(unused_imports)]
                use #private::{ViaAny as _, ViaSchema as _};
                #private::ModelSchema::new(#description)
                    #(#fields)*
                    .build()
            }
        }
    }
}

/// The doc comment of an item, lines joined (empty: none).
fn doc_string(attrs: &[syn::Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(syn::MetaNameValue {
                value:
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(text),
                        ..
                    }),
                ..
            }) => Some(text.value().trim().to_owned()),
            _ => None,
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

/// `Option<T>`: serde accepts the field missing.
fn is_option(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "Option"),
        syn::Type::Group(group) => is_option(&group.elem),
        syn::Type::Paren(paren) => is_option(&paren.elem),
        _ => false,
    }
}

/// `#[serde(default)]` on a field: it may be missing.
fn has_serde_default(attrs: &[syn::Attribute]) -> bool {
    let mut found = false;
    for attr in attrs.iter().filter(|a| a.path() == SERDE) {
        // Malformed serde attributes are reported by the model's checks.
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("default") {
                found = true;
            }
            if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<syn::Expr>()?;
            }
            Ok(())
        });
    }
    found
}

fn unraw(ident: &syn::Ident) -> String {
    ident.to_string().trim_start_matches("r#").to_owned()
}

/// The field's type as written, without spaces: `Option<String>`.
fn type_name(ty: &syn::Type) -> String {
    ty.to_token_stream().to_string().replace(' ', "")
}

fn path_string(krate: &Path, rest: &str) -> String {
    format!(
        "{}::{rest}",
        krate.to_token_stream().to_string().replace(' ', "")
    )
}
