//! What an attribute leaves of the item when it fails: the item without the helper attributes that
//! would be errors of their own without the expansion, so the rest of the crate still type-checks.

/// The struct without `#[key]`, `#[index]` and `#[serde]` attributes, which would each be errors of
/// their own.
pub(crate) fn without_view_attributes(input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    let Ok(mut item) = syn::parse2::<syn::ItemStruct>(input.clone()) else {
        return input;
    };
    let ours = |a: &syn::Attribute| {
        a.path().is_ident("key") || a.path().is_ident("index") || a.path().is_ident("serde")
    };
    item.attrs.retain(|a| !ours(a));
    for field in item.fields.iter_mut() {
        field.attrs.retain(|a| !ours(a));
    }
    quote::ToTokens::into_token_stream(item)
}

/// The impl block without `#[enroute]` attributes, which would each add an error of their own.
pub(crate) fn without_enroute_attributes(
    input: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let Ok(mut item) = syn::parse2::<syn::ItemImpl>(input.clone()) else {
        return input;
    };
    for member in item.items.iter_mut() {
        if let syn::ImplItem::Fn(function) = member {
            function
                .attrs
                .retain(|a| !crate::internals::service::is_enroute(a));
        }
    }
    quote::ToTokens::into_token_stream(item)
}

/// The item without `#[serde(..)]` attributes, which would be errors of their own without the serde derive.
pub(crate) fn without_serde_attributes(
    input: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let Ok(mut item) = syn::parse2::<syn::Item>(input.clone()) else {
        return input;
    };
    let is_serde = |attr: &syn::Attribute| attr.path().is_ident("serde");
    if let syn::Item::Struct(item) = &mut item {
        item.attrs.retain(|a| !is_serde(a));
        for field in item.fields.iter_mut() {
            field.attrs.retain(|a| !is_serde(a));
        }
    }
    quote::ToTokens::into_token_stream(item)
}
