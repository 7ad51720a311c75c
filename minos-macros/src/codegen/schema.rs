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
