//! Attribute arguments: `#[root_entity(name = "Foo", crate = "::minos")]`.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{LitStr, Path};

use super::ctxt::Ctxt;
use super::symbol::{Symbol, CRATE, NAME};

/// One attribute value that may be given at most once.
pub(crate) struct Attr<'c, T> {
    cx: &'c Ctxt,
    name: Symbol,
    tokens: TokenStream,
    value: Option<T>,
}

impl<'c, T> Attr<'c, T> {
    pub(crate) fn none(cx: &'c Ctxt, name: Symbol) -> Self {
        Attr {
            cx,
            name,
            tokens: TokenStream::new(),
            value: None,
        }
    }

    /// Sets the value, reporting a duplicate on the second key's tokens.
    pub(crate) fn set<A: ToTokens>(&mut self, obj: A, value: T) {
        let tokens = obj.into_token_stream();
        if self.value.is_some() {
            self.cx.error_spanned_by(
                tokens,
                format!("duplicate minos attribute `{}`: give it once", self.name),
            );
        } else {
            self.tokens = tokens;
            self.value = Some(value);
        }
    }

    pub(crate) fn get(self) -> Option<T> {
        self.value
    }
}

/// The arguments every model attribute takes.
pub(crate) struct ModelArgs {
    /// `name = "Foo"`: the type name in events and topics (default: the struct's name).
    pub(crate) name: Option<LitStr>,
    /// `crate = "path"`: where the minos facade is (default `::minos`).
    pub(crate) krate: Option<Path>,
}

impl ModelArgs {
    pub(crate) fn parse(cx: &Ctxt, attribute: &str, args: TokenStream) -> ModelArgs {
        let mut name = Attr::none(cx, NAME);
        let mut krate = Attr::none(cx, CRATE);
        let parser = syn::meta::parser(|meta: ParseNestedMeta<'_>| {
            if meta.path == NAME {
                let lit: LitStr = meta.value()?.parse()?;
                name.set(&meta.path, lit);
            } else if meta.path == CRATE {
                if let Some(path) = crate_path(cx, &meta)? {
                    krate.set(&meta.path, path);
                }
            } else {
                let key = meta.path.to_token_stream().to_string().replace(' ', "");
                cx.error_spanned_by(
                    &meta.path,
                    format!("unknown minos {attribute} attribute `{key}`; expected `name = \"...\"` or `crate = \"...\"`"),
                );
                skip_value(&meta)?;
            }
            Ok(())
        });
        if let Err(error) = syn::parse::Parser::parse2(parser, args) {
            cx.syn_error(error);
        }
        ModelArgs {
            name: name.get(),
            krate: krate.get(),
        }
    }
}

/// The arguments of `#[schema]`: only `crate = "path"` (schemars' and serde's options go in their own
/// attributes, which the derive reads).
pub(crate) fn parse_schema_args(cx: &Ctxt, args: TokenStream) -> Option<Path> {
    let mut krate = Attr::none(cx, CRATE);
    let parser = syn::meta::parser(|meta: ParseNestedMeta<'_>| {
        if meta.path == CRATE {
            if let Some(path) = crate_path(cx, &meta)? {
                krate.set(&meta.path, path);
            }
        } else {
            let key = meta.path.to_token_stream().to_string().replace(' ', "");
            cx.error_spanned_by(
                &meta.path,
                format!(
                    "unknown minos schema attribute `{key}`; expected `crate = \"...\"`\n\
                     help: schemars' options (`rename`, `description`, ..) go in `#[schemars(..)]` on the \
                     item or its fields, serde's in `#[serde(..)]`"
                ),
            );
            skip_value(&meta)?;
        }
        Ok(())
    });
    if let Err(error) = syn::parse::Parser::parse2(parser, args) {
        cx.syn_error(error);
    }
    krate.get()
}

/// Skips an unknown key's value (`key = expr` or `key(..)`), so the keys after it are still checked.
pub(crate) fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
        meta.parse_nested_meta(|_| Ok(()))?;
    }
    Ok(())
}

/// The path of `crate = "path"`; `None` after reporting a literal that is not a path.
pub(crate) fn crate_path(cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<Path>> {
    let lit: LitStr = meta.value()?.parse()?;
    match lit.parse::<Path>() {
        Ok(path) => Ok(Some(path)),
        Err(_) => {
            cx.error_spanned_by(&lit, "`crate` takes a path, like `crate = \"::minos\"`");
            Ok(None)
        }
    }
}
