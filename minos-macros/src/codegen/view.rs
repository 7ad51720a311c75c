//! Expansion of `#[view]`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{LitStr, Path};

use crate::internals::view::ViewModel;

fn path_string(krate: &Path, rest: &str) -> String {
    format!(
        "{}::{rest}",
        krate.to_token_stream().to_string().replace(' ', "")
    )
}

/// The derives the user did not write.
fn missing_derives(model: &ViewModel<'_>) -> Vec<&'static str> {
    let mut have = Vec::new();
    for attr in model
        .item
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("derive"))
    {
        let _ = attr.parse_nested_meta(|meta| {
            if let Some(last) = meta.path.segments.last() {
                have.push(last.ident.to_string());
            }
            Ok(())
        });
    }
    ["Clone", "Debug", "PartialEq", "Serialize", "Deserialize"]
        .into_iter()
        .filter(|d| !have.iter().any(|h| h == d))
        .collect()
}

pub(crate) fn expand(model: &ViewModel<'_>) -> TokenStream {
    let krate = model
        .args
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::minos));
    let private = quote!(#krate::__private);
    let ident = &model.item.ident;
    let name = model
        .args
        .name
        .as_ref()
        .map_or_else(|| ident.to_string(), LitStr::value);
    let version = model.args.version;

    let mut item = model.item.clone();
    for field in item.fields.iter_mut() {
        field
            .attrs
            .retain(|a| !a.path().is_ident("key") && !a.path().is_ident("index"));
    }
    let missing = missing_derives(model);
    let derives: Vec<TokenStream> = missing
        .iter()
        .map(|d| match *d {
            "Serialize" => quote!(#private::serde::Serialize),
            "Deserialize" => quote!(#private::serde::Deserialize),
            "Clone" => quote!(::core::clone::Clone),
            "Debug" => quote!(::core::fmt::Debug),
            _ => quote!(::core::cmp::PartialEq),
        })
        .collect();
    let serde_crate = if missing.contains(&"Serialize") || missing.contains(&"Deserialize") {
        let path = LitStr::new(&path_string(&krate, "__private::serde"), Span::call_site());
        quote!(#[serde(crate = #path)])
    } else {
        TokenStream::new()
    };

    let key = model
        .fields
        .iter()
        .find(|f| f.key)
        .expect("checked: one key");
    let key_ty = &key.field.ty;
    let key_name = &key.name;
    let mut shape = format!("{name}|key={key_name}");
    let columns = model.fields.iter().map(|f| {
        let field_name = &f.name;
        let kind = syn::Ident::new(f.kind.variant(), Span::call_site());
        let (nullable, indexed) = (f.nullable, f.indexed);
        quote! {
            #private::ViewColumn {
                name: #field_name,
                kind: #private::ColumnKind::#kind,
                nullable: #nullable,
                indexed: #indexed,
            }
        }
    });
    for f in &model.fields {
        shape.push_str(&format!(
            "|{}:{}:{}{}",
            f.name,
            f.field.ty.to_token_stream().to_string().replace(' ', ""),
            f.kind.variant(),
            if f.indexed { ":index" } else { "" }
        ));
    }
    let line = quote_spanned!(model.item.ident.span()=> ::core::line!());
    let key_ty_spanned = quote_spanned!(key_ty.span()=> #key_ty);

    quote! {
        #[derive(#(#derives),*)]
        #serde_crate
        #item

        const _: () = {
            impl #private::View for #ident {
                type Key = #key_ty_spanned;
                const NAME: &'static str = #name;
                const DEF: &'static #private::ViewDef = &#private::ViewDef {
                    name: #name,
                    key: #key_name,
                    columns: &[#(#columns),*],
                    version: #version,
                    shape: #shape,
                    file: ::core::file!(),
                    line: #line,
                };
            }

            #private::inventory::submit! {
                #private::ViewEntry { def: <#ident as #private::View>::DEF }
            }
        };
    }
}
