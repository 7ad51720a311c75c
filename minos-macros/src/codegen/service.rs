//! Expansion of `#[command_service]` / `#[query_service]` and `#[middleware]`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::{ItemFn, ItemImpl, Path};

use crate::internals::service::{is_enroute, Handler, RouteSpec, ServiceKind};

pub(crate) fn expand(
    kind: ServiceKind,
    item: &ItemImpl,
    handlers: &[Handler],
    init: Option<&Path>,
    krate: &Path,
) -> TokenStream {
    let private = quote!(#krate::__private);
    let self_ty = &item.self_ty;
    let mut stripped = item.clone();
    for member in stripped.items.iter_mut() {
        if let syn::ImplItem::Fn(function) = member {
            function.attrs.retain(|a| !is_enroute(a));
        }
    }
    let service_name = quote!(#self_ty).to_string().replace(' ', "");
    // A unit struct is its own value; other services name a constructor with `init = "..."`, spanned
    // there so a constructor of the wrong shape is reported on the user's path.
    let constructor = match init {
        Some(path) => quote_spanned!(syn::spanned::Spanned::span(path)=> #path),
        None => quote_spanned!(syn::spanned::Spanned::span(self_ty)=> || #self_ty),
    };
    let build = match init {
        Some(path) => quote_spanned! {syn::spanned::Spanned::span(path)=>
            #private::ServiceInit::<#self_ty, _>::build(#constructor, __minos_context)
        },
        None => quote!(#private::ServiceInit::<#self_ty, _>::build(#constructor, __minos_context)),
    };
    let (broker_kind, rest_kind) = match kind {
        ServiceKind::Command => (quote!(Command), quote!(Command)),
        ServiceKind::Query => (quote!(Query), quote!(Query)),
    };
    let mut items = Vec::new();
    for handler in handlers {
        let method = &handler.ident;
        let shim = format_ident!("__minos_handle_{}", method);
        let request = match &handler.request_ty {
            Some(ty) => {
                quote_spanned!(syn::spanned::Spanned::span(ty)=> __minos_request)
            }
            None => quote!(__minos_request),
        };
        // Spanned at the return type, so an unsupported return type is reported there.
        let into_response = quote_spanned! {handler.output_span=>
            #private::IntoResponse::into_response(__minos_output)
        };
        items.push(quote! {
            fn #shim(__minos_request: #private::Request) -> #private::HandlerFuture {
                ::std::boxed::Box::pin(async move {
                    let __minos_service = #private::service_instance::<#self_ty>()?;
                    let __minos_output = <#self_ty>::#method(&__minos_service, #request).await;
                    #into_response
                })
            }
        });
        let mut schema_fn = |ty: Option<&syn::Type>, which: &str| match ty {
            Some(ty) => {
                let upper = method.to_string().trim_start_matches("r#").to_uppercase();
                let name = format_ident!("__MINOS_{}_SCHEMA_{}", which, upper);
                // Through the probe: any type may be named, `JsonSchema` ones are described in full. A
                // const closure rather than a fn, so rustc does not suggest a type parameter for an
                // unknown type.
                items.push(quote! {
                    const #name: #private::SchemaFn = |__minos_generator| {
                        #[allow(unused_imports)]
                        use #private::{ViaAny as _, ViaSchema as _};
                        (&#private::Probe::<#ty>::new()).schema(__minos_generator)
                    };
                });
                quote!(::core::option::Option::Some(#name))
            }
            None => quote!(::core::option::Option::None),
        };
        let request_schema = schema_fn(handler.request_schema.as_ref(), "REQUEST");
        let response_schema = schema_fn(handler.response_schema.as_ref(), "RESPONSE");
        let function = method.to_string();
        let roles = &handler.access.roles;
        let access = if !roles.is_empty() {
            quote!(#private::Access::Roles(&[#(#roles),*]))
        } else if handler.access.auth {
            quote!(#private::Access::Token)
        } else {
            quote!(#private::Access::Open)
        };
        let line = quote_spanned!(handler.span=> ::core::line!());
        // Spanned at the user's type, so a type that is not a #[view] is reported there.
        let view = match &handler.view {
            Some(path) => quote_spanned! {syn::spanned::Spanned::span(path)=>
                ::core::option::Option::Some(<#path as #private::View>::NAME)
            },
            None => quote!(::core::option::Option::None),
        };
        for route in &handler.routes {
            let route = match route {
                RouteSpec::Broker(topic) => quote! {
                    #private::Route::Broker { kind: #private::BrokerKind::#broker_kind, topic: #topic }
                },
                RouteSpec::Event(topic) => quote! {
                    #private::Route::Broker { kind: #private::BrokerKind::Event, topic: #topic }
                },
                RouteSpec::Rest { method, path } => quote! {
                    #private::Route::Rest { kind: #private::ServiceKind::#rest_kind, method: #method, path: #path }
                },
                RouteSpec::Periodic(cron) => quote! { #private::Route::Periodic { cron: #cron } },
            };
            items.push(quote! {
                #private::inventory::submit! {
                    #private::RouteEntry {
                        route: #route,
                        access: #access,
                        view: #view,
                        handler: #shim,
                        request: #request_schema,
                        response: #response_schema,
                        service: #service_name,
                        function: #function,
                        file: ::core::file!(),
                        line: #line,
                    }
                }
            });
        }
    }
    quote! {
        #stripped

        const _: () = {
            impl #private::Service for #self_ty {}

            fn __minos_build(__minos_context: #private::Context) -> #private::BuildFuture {
                ::std::boxed::Box::pin(async move {
                    let __minos_instance: #self_ty = #build.await?;
                    ::core::result::Result::Ok(::std::sync::Arc::new(__minos_instance)
                        as ::std::sync::Arc<dyn ::core::any::Any + ::core::marker::Send + ::core::marker::Sync>)
                })
            }

            #private::inventory::submit! {
                #private::ServiceEntry { name: #service_name, build: __minos_build }
            }

            #(#items)*
        };
    }
}

pub(crate) fn expand_middleware(function: &ItemFn, name: &str, krate: &Path) -> TokenStream {
    let private = quote!(#krate::__private);
    let ident = &function.sig.ident;
    let line = quote_spanned!(function.sig.fn_token.span=> ::core::line!());
    quote! {
        #function

        const _: () = {
            fn __minos_middleware(
                request: #private::Request,
                next: #private::Next,
            ) -> #private::HandlerFuture {
                ::std::boxed::Box::pin(#ident(request, next))
            }

            #private::inventory::submit! {
                #private::MiddlewareEntry {
                    name: #name,
                    func: __minos_middleware,
                    file: ::core::file!(),
                    line: #line,
                }
            }
        };
    }
}
