//! Expansion of `#[schema]`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::{LitStr, Path};

/// The item with schemars' derive, reached through the facade so users need no schemars dependency.
pub(crate) fn expand(item: &syn::Item, krate: &Path) -> TokenStream {
    let path = format!(
        "{}::__private::schemars",
        krate.to_token_stream().to_string().replace(' ', "")
    );
    let path_lit = LitStr::new(&path, Span::call_site());
    quote! {
        #[derive(#krate::__private::schemars::JsonSchema)]
        #[schemars(crate = #path_lit)]
        #item
    }
}

/// `#[schema]`: checks the arguments and the item, then derives `JsonSchema` through the facade.
pub(crate) fn expand_attribute(
    args: proc_macro2::TokenStream,
    input: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let item: syn::Item = syn::parse2(input)?;
    let cx = crate::internals::ctxt::Ctxt::new();
    let krate = crate::internals::attr::parse_schema_args(&cx, args);
    if !matches!(item, syn::Item::Struct(_) | syn::Item::Enum(_)) {
        cx.syn_error(syn::Error::new(
            crate::internals::ast::item_span(&item),
            "#[schema] goes on a struct or an enum: the type of a request's or a response's content\n\
             help: name that type in `#[enroute(.., request = CreateFoo, response = FooId)]`",
        ));
    }
    cx.check()?;
    let krate = krate.unwrap_or_else(|| syn::parse_quote!(::minos));
    Ok(expand(&item, &krate))
}
