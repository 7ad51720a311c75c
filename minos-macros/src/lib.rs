//! Attribute macros of Minos for Rust. Use them through the `minos` crate: `use minos::prelude::*;`.
//!
//! Each macro checks the item and reports mistakes on the user's own tokens, with what to write instead.
//! Set `MINOS_MACROS_DEBUG=1` while building to print every expansion.

mod codegen;
mod internals;

use proc_macro::TokenStream;

use internals::ast::Kind;

/// An event-sourced root entity: the struct's fields are stored as a stream of events.
///
/// Stored roots are [`Root<T>`](../minos/struct.Root.html), which carries the uuid, version and timestamps
/// and derefs to the struct. Type operations come from `minos::prelude::RootEntityExt`.
///
/// ```text
/// use minos::prelude::*;
///
/// #[root_entity]
/// pub struct Foo {
///     pub bar: String,
/// }
///
/// # async fn demo() -> minos::Result<()> {
/// let mut foo = Foo::create(Foo { bar: "x".into() }).await?;  // FooCreated
/// foo.bar = "y".into();
/// foo.save().await?;                                             // FooUpdated, FooUpdated.bar
/// # Ok(()) }
/// ```
///
/// Arguments: `name = "Foo"` sets the name used in events and topics (default: the struct's name);
/// `crate = "path"` names the minos facade when it is re-exported under another path.
///
/// Equivalent code: the struct gains `#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]` (those it
/// does not derive already), and implementations of `Field`, `Model` (field diffs, applying diffs),
/// `RootEntity` and `Referable`, plus a registration in the model registry.
#[proc_macro_attribute]
pub fn root_entity(args: TokenStream, input: TokenStream) -> TokenStream {
    expand(Kind::RootEntity, args, input)
}

/// An entity inside a root entity: the member type of `EntitySet<T>`, identified by its uuid there.
///
/// Takes the same arguments as [`macro@root_entity`].
#[proc_macro_attribute]
pub fn entity(args: TokenStream, input: TokenStream) -> TokenStream {
    expand(Kind::Entity, args, input)
}

/// A value object: identified by its value and replaced rather than changed; the member type of
/// `ValueObjectSet<T>`. It cannot hold an `EntitySet`.
///
/// Takes the same arguments as [`macro@root_entity`].
#[proc_macro_attribute]
pub fn value_object(args: TokenStream, input: TokenStream) -> TokenStream {
    expand(Kind::ValueObject, args, input)
}

/// A local read copy of another service's root entity, the target of a `Ref<T>` across services.
///
/// Takes the same arguments as [`macro@root_entity`].
#[proc_macro_attribute]
pub fn external_entity(args: TokenStream, input: TokenStream) -> TokenStream {
    expand(Kind::ExternalEntity, args, input)
}

fn expand(kind: Kind, args: TokenStream, input: TokenStream) -> TokenStream {
    let input2: proc_macro2::TokenStream = input.clone().into();
    let output = model(kind, args.into(), input2.clone()).unwrap_or_else(|error| {
        // Re-emit the item with the errors so the rest of the crate still type-checks and IDEs keep working.
        let mut tokens = error.into_compile_error();
        tokens.extend(without_serde_attributes(input2));
        tokens
    });
    debug_print(kind, &output);
    output.into()
}

fn model(
    kind: Kind,
    args: proc_macro2::TokenStream,
    input: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let item: syn::Item = syn::parse2(input)?;
    let cx = internals::ctxt::Ctxt::new();
    let args = internals::attr::ModelArgs::parse(&cx, kind.attribute(), args);
    let parsed = internals::ast::Model::from_item(&cx, kind, args, &item);
    if let Some(model) = &parsed {
        internals::check::check(&cx, model);
    }
    cx.check()?;
    match parsed {
        Some(model) => Ok(codegen::model::expand(&model)),
        // `from_item` reports every case where it returns `None`, so `check()` has returned above.
        None => Err(syn::Error::new(
            proc_macro2::Span::call_site(),
            "invalid model",
        )),
    }
}

/// The item without `#[serde(..)]` attributes, which would be errors of their own without the serde derive.
fn without_serde_attributes(input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
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

fn debug_print(kind: Kind, tokens: &proc_macro2::TokenStream) {
    if std::env::var_os("MINOS_MACROS_DEBUG").is_none_or(|v| v.is_empty() || v == "0") {
        return;
    }
    let text = match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(_) => tokens.to_string(),
    };
    eprintln!("// ---- {} expansion ----\n{text}", kind.attribute());
}
