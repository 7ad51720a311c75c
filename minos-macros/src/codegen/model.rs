//! Expansion of `#[root_entity]`, `#[entity]`, `#[value_object]` and `#[external_entity]`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{LitStr, Path};

use crate::internals::ast::{Kind, Model};
use crate::internals::symbol::DERIVE;

/// The derives a model needs, and whether the user already wrote them.
struct Derives {
    clone: bool,
    debug: bool,
    partial_eq: bool,
    serialize: bool,
    deserialize: bool,
}

fn existing_derives(model: &Model<'_>) -> Derives {
    let mut found = Derives {
        clone: false,
        debug: false,
        partial_eq: false,
        serialize: false,
        deserialize: false,
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

            #private::inventory::submit! {
                #private::ModelRegistration {
                    name: #name,
                    kind: #private::ModelKind::#kind,
                    rust_type: ::core::concat!(::core::module_path!(), "::", #ident_str),
                    file: ::core::file!(),
                    line: ::core::line!(),
                }
            }
        };
    }
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
