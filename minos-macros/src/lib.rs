//! Attribute macros of Minos for Rust. Use them through the `minos` crate: `use minos::prelude::*;`.
//!
//! Their documentation, examples included, is shown on the `minos` crate's re-exports
//! (`minos::root_entity`, …); the examples are compiled and run as this crate's doctests.
//!
//! Each macro checks the item and reports mistakes on the user's own tokens, with what to write instead.
//! Set `MINOS_MACROS_DEBUG=1` while building to print every expansion.

mod codegen;
mod fallback;
mod internals;

use proc_macro::TokenStream;

use internals::ast::Kind;

/// An event-sourced root entity: the struct's fields are stored as a stream of events.
///
/// Stored roots are [`Root<T>`](../minos/struct.Root.html), which carries the uuid, version and timestamps
/// and derefs to the struct. Type operations come from `minos::prelude::RootEntityExt`.
///
/// ```rust
/// use minos::prelude::*;
///
/// #[root_entity]
/// pub struct Foo {
///     pub bar: String,
/// }
///
/// # #[tokio::main]
/// # async fn main() -> minos::Result<()> {
/// # let repository = Repository::memory();
/// # repository.clone().scope(async {
/// let mut foo = Foo::create(Foo { bar: "x".into() }).await?; // FooCreated
/// foo.bar = "y".into();
/// foo.save().await?; // FooUpdated, FooUpdated.bar
///
/// let read = Foo::get(foo.uuid()).await?;
/// assert_eq!((read.bar.as_str(), read.version()), ("y", 2));
/// # Ok::<(), minos::Error>(())
/// # }).await?;
/// # let topics: Vec<String> = repository.store().pending(10).await?
/// #     .into_iter().map(|r| r.message.topic).collect();
/// # assert_eq!(topics, ["FooCreated", "FooUpdated", "FooUpdated.bar"]);
/// # Ok(())
/// # }
/// ```
///
/// Operations run on the repository of the running service, or of the enclosing
/// `Repository::scope` (as in tests).
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
/// ```rust
/// use minos::prelude::*;
///
/// #[root_entity]
/// pub struct Order {
///     pub lines: EntitySet<Line>,
/// }
///
/// #[entity]
/// pub struct Line {
///     pub product: String,
///     pub amount: i64,
/// }
///
/// # #[tokio::main]
/// # async fn main() -> minos::Result<()> {
/// # Repository::memory().scope(async {
/// let mut order = Order::create(Order { lines: EntitySet::new() }).await?;
/// let line = order.lines.add(Line { product: "pen".into(), amount: 2 });
/// order.save().await?; // OrderUpdated, OrderUpdated.lines.create
///
/// if let Some(line) = order.lines.get_mut(&line) {
///     line.amount = 3;
/// }
/// order.save().await?; // OrderUpdated, OrderUpdated.lines.update
///
/// let read = Order::get(order.uuid()).await?;
/// assert_eq!(read.lines.get(&line).map(|l| l.amount), Some(3));
/// # Ok(())
/// # }).await
/// # }
/// ```
///
/// Takes the same arguments as [`macro@root_entity`].
#[proc_macro_attribute]
pub fn entity(args: TokenStream, input: TokenStream) -> TokenStream {
    expand(Kind::Entity, args, input)
}

/// A value object: identified by its value and replaced rather than changed; the member type of
/// `ValueObjectSet<T>`, or a plain field of a model.
///
/// ```rust
/// use minos::prelude::*;
///
/// #[root_entity]
/// pub struct Parcel {
///     pub to: Address,
///     pub labels: ValueObjectSet<Label>,
/// }
///
/// #[value_object]
/// pub struct Address {
///     pub city: String,
/// }
///
/// #[value_object]
/// pub struct Label {
///     pub text: String,
/// }
///
/// # #[tokio::main]
/// # async fn main() -> minos::Result<()> {
/// # Repository::memory().scope(async {
/// let mut parcel = Parcel::create(Parcel {
///     to: Address { city: "Lyon".into() },
///     labels: ValueObjectSet::new(),
/// })
/// .await?;
/// parcel.to = Address { city: "Paris".into() }; // replaced, not changed
/// assert!(parcel.labels.insert(Label { text: "fragile".into() }));
/// assert!(!parcel.labels.insert(Label { text: "fragile".into() })); // already there: same value
/// parcel.save().await?; // ParcelUpdated, ParcelUpdated.to, ParcelUpdated.labels.create
/// # let read = Parcel::get(parcel.uuid()).await?;
/// # assert_eq!(read.to.city, "Paris");
/// # assert_eq!(read.labels.len(), 1);
/// # Ok(())
/// # }).await
/// # }
/// ```
///
/// A value object cannot hold an `EntitySet` (entities have an identity and change, value objects do
/// not); the macro refuses it, saying to use a `ValueObjectSet` or make the struct an `#[entity]`:
///
/// ```compile_fail
/// use minos::prelude::*;
///
/// #[entity]
/// pub struct Line {
///     pub product: String,
/// }
///
/// #[value_object]
/// pub struct Basket {
///     pub lines: EntitySet<Line>,
/// }
/// # fn main() {}
/// ```
///
/// Takes the same arguments as [`macro@root_entity`].
#[proc_macro_attribute]
pub fn value_object(args: TokenStream, input: TokenStream) -> TokenStream {
    expand(Kind::ValueObject, args, input)
}

/// A local read copy of another service's root entity, the target of a `Ref<T>` across services.
///
/// The struct lists the fields this service reads; `name = "..."` is the root entity's name in the service
/// that owns it (default: the struct's name). A `Ref<T>` stores only the uuid, and `resolve()` fetches the
/// model from its owner with one `_Get{Name}Snapshots` request over the broker.
///
/// ```rust
/// use minos::prelude::*;
///
/// /// The `Customer` root entity of the customers service, as this service reads it.
/// #[external_entity(name = "Customer")]
/// pub struct RemoteCustomer {
///     pub name: String,
/// }
///
/// #[root_entity]
/// pub struct Order {
///     pub customer: Ref<RemoteCustomer>,
/// }
///
/// # #[tokio::main]
/// # async fn main() -> minos::Result<()> {
/// # Repository::memory().scope(async {
/// let customer = Uuid::new_v4(); // known from the customers service
/// let order = Order::create(Order { customer: Ref::new(customer) }).await?;
/// let read = Order::get(order.uuid()).await?;
/// assert_eq!(read.customer.uuid(), customer);
/// assert!(!read.customer.is_resolved()); // `read.customer.resolve().await?` asks the owner
/// # Ok(())
/// # }).await
/// # }
/// ```
///
/// Takes the same arguments as [`macro@root_entity`].
#[proc_macro_attribute]
pub fn external_entity(args: TokenStream, input: TokenStream) -> TokenStream {
    expand(Kind::ExternalEntity, args, input)
}

/// A command service: `#[enroute]` methods answer commands on the broker (`broker = "CreateFoo"`) and
/// over HTTP (`rest = "POST /foos"`); periodic handlers (`periodic = "0 */5 * * * *"`) are allowed too.
///
/// ```rust
/// use minos::prelude::*;
/// use serde::Deserialize;
///
/// #[root_entity]
/// pub struct Foo {
///     pub bar: String,
/// }
///
/// #[derive(Deserialize)]
/// struct CreateFoo {
///     bar: String,
/// }
///
/// pub struct FooCommandService;
///
/// #[command_service]
/// impl FooCommandService {
///     #[enroute(broker = "CreateFoo", rest = "POST /foos")]
///     async fn create_foo(&self, request: Request) -> Result<Response> {
///         let CreateFoo { bar } = request.content()?;
///         let foo = Foo::create(Foo { bar }).await?;
///         Ok(Response::json(json!({ "uuid": foo.uuid() })))
///     }
/// }
///
/// // `minos::Launcher::new()?.run()` serves it; a handler is also a plain method, for tests:
/// # #[tokio::main]
/// # async fn main() -> minos::Result<()> {
/// # Repository::memory().scope(async {
/// let response = FooCommandService
///     .create_foo(Request::new(json!({ "bar": "x" })))
///     .await?;
/// let uuid: Uuid = response.content()["uuid"].as_str().unwrap().parse().unwrap();
/// assert_eq!(Foo::get(uuid).await?.bar, "x");
/// # Ok(())
/// # }).await
/// # }
/// ```
///
/// A handler is `async fn name(&self, request: Request) -> R` where `R` is `Result<Response>`,
/// `Result<()>`, `Response` or `()`. The service is a unit struct, or names its constructor with
/// `init = "FooService::new"`: `fn() -> Self`, or `async fn(Context) -> minos::Result<Self>` for a service
/// holding something built from its settings (`context.settings::<MySettings>()?`, the `app:` section of
/// the configuration), repository or broker. Each running service builds its own instance when it starts
/// (a failing constructor stops the start, saying why); two services in one process never share one.
/// Equivalent code: the impl block unchanged (without the `#[enroute]` attributes), a `Service`
/// implementation, a registered constructor, and one `RouteEntry` per route registered for the runtime's
/// route table.
#[proc_macro_attribute]
pub fn command_service(args: TokenStream, input: TokenStream) -> TokenStream {
    expand_service(internals::service::ServiceKind::Command, args, input)
}

/// A query service: `#[enroute]` methods answer queries on the broker and over HTTP
/// (`rest = "GET /foos/{uuid}"`), react to domain events (`event = "FooCreated"`), or run periodically
/// (`periodic = "*/5 * * * *"`, `periodic = "@reboot"`). See [`macro@command_service`].
///
/// ```rust,no_run
/// use minos::prelude::*;
///
/// #[root_entity]
/// pub struct Foo {
///     pub bar: String,
/// }
///
/// pub struct FooQueryService;
///
/// #[query_service]
/// impl FooQueryService {
///     #[enroute(broker = "GetFoo", rest = "GET /foos/{uuid}")]
///     async fn get_foo(&self, request: Request) -> Result<Response> {
///         Ok(Response::json(Foo::get(request.param("uuid")?).await?))
///     }
///
///     #[enroute(event = "FooCreated")]
///     async fn foo_created(&self, request: Request) -> Result<()> {
///         let event: minos::Event = request.content()?;
///         println!("A Foo was created: {}", event.uuid);
///         Ok(())
///     }
///
///     #[enroute(periodic = "*/5 * * * *")]
///     async fn tidy(&self, _request: Request) {}
/// }
///
/// fn main() -> minos::Result<()> {
///     minos::Launcher::new()?.run() // HTTP, the broker dispatcher and the scheduler
/// }
/// ```
#[proc_macro_attribute]
pub fn query_service(args: TokenStream, input: TokenStream) -> TokenStream {
    expand_service(internals::service::ServiceKind::Query, args, input)
}

/// Declares the routes of a handler inside a `#[command_service]` or `#[query_service]` impl block:
/// `broker = "Topic"`, `event = "FooCreated"`, `rest = "METHOD /path/{param}"`, `periodic = "cron"`.
/// Several routes of one kind may share a handler; repeat the attribute for several routes of one key.
///
/// Commands and queries may name the types of their content and answer for the API specs:
/// `request = CreateFoo`, `response = FooId` (any type; one implementing `JsonSchema`, as with
/// [`macro@schema`], is described in full, others as "any value"). They describe, they do not check.
///
/// ```rust
/// use minos::prelude::*;
///
/// pub struct FooQueryService;
///
/// #[query_service]
/// impl FooQueryService {
///     // A broker route and an HTTP route on one handler, and a second HTTP route.
///     #[enroute(broker = "GetFoos", rest = "GET /foos")]
///     #[enroute(rest = "GET /foos/all")]
///     async fn list(&self, _request: Request) -> Result<Response> {
///         Ok(Response::json(json!([])))
///     }
///
///     // Cron with seconds first: at second 0 of every fifth minute.
///     #[enroute(periodic = "0 */5 * * * *")]
///     async fn tidy(&self, _request: Request) -> Result<()> {
///         Ok(())
///     }
/// }
/// # fn main() {}
/// ```
///
/// On its own, outside such an impl block, it is an error that says where to put the handler:
///
/// ```compile_fail
/// use minos::prelude::*;
///
/// #[enroute(broker = "CreateFoo")]
/// async fn create_foo(_request: Request) -> Result<Response> {
///     Ok(Response::empty())
/// }
/// # fn main() {}
/// ```
#[proc_macro_attribute]
pub fn enroute(_args: TokenStream, input: TokenStream) -> TokenStream {
    let input: proc_macro2::TokenStream = input.into();
    let span = syn::parse2::<syn::ItemFn>(input.clone())
        .map(|f| f.sig.fn_token.span)
        .unwrap_or_else(|_| proc_macro2::Span::call_site());
    let mut tokens = syn::Error::new(
        span,
        "#[enroute] only works on methods of a #[command_service] or #[query_service] impl block
         help: put the handler in `#[command_service] impl MyService { .. }`",
    )
    .into_compile_error();
    tokens.extend(input);
    tokens.into()
}

/// A read model (CQRS view) kept in the service's view database: one `#[key]` field names a row,
/// scalar fields (`String`, integers, floats, `bool`, `Uuid`, `DateTime<Utc>`, `Option`s of them)
/// become columns — `#[index]` ones indexed — and the whole value is kept as JSON (lists and nested
/// values too). It is written by the query service's event handlers that declare it
/// (`#[enroute(event = "FooCreated", view = FooSummary)]`) and read anywhere with
/// `FooSummary::get(&key)`, `FooSummary::find(condition)` and `FooSummary::count(condition)`.
///
/// ```rust
/// use minos::prelude::*;
///
/// #[view]
/// pub struct FooSummary {
///     #[key]
///     pub uuid: Uuid,
///     #[index]
///     pub bar: String,
///     pub updates: u64,
/// }
///
/// # #[tokio::main]
/// # async fn main() -> minos::Result<()> {
/// # let views = Views::memory().await?;
/// # views.create_all().await?;
/// # views.scope(async {
/// let found = FooSummary::find(Condition::eq("bar", "x"))
///     .order_by(Ordering::desc("updates"))
///     .limit(10)
///     .await?;
/// assert!(found.is_empty());
/// # Ok::<(), minos::Error>(())
/// # }).await
/// # }
/// ```
///
/// Arguments: `name = "..."` (default: the struct's name; the table is `view_` and its snake case),
/// `version = N` (raise it to rebuild the view from history after changing its handlers; a change of
/// fields, types or indexes rebuilds it by itself) and `crate = "..."`.
///
/// Equivalent code: the struct gains `#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]`
/// (those it lacks) and an implementation of `minos::View` with its definition, registered for the
/// runtime.
#[proc_macro_attribute]
pub fn view(args: TokenStream, input: TokenStream) -> TokenStream {
    attribute(
        "#[view]",
        args,
        input,
        expand_view,
        fallback::without_view_attributes,
    )
}

fn expand_view(
    args: proc_macro2::TokenStream,
    input: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let item: syn::Item = syn::parse2(input)?;
    let cx = internals::ctxt::Ctxt::new();
    let args = internals::view::parse_args(&cx, args);
    let syn::Item::Struct(item) = &item else {
        return Err(syn::Error::new_spanned(
            &item,
            "#[view] goes on a struct with named fields, one of them marked `#[key]`",
        ));
    };
    let model = internals::view::parse(&cx, item, args);
    cx.check()?;
    let model = model.ok_or_else(|| syn::Error::new_spanned(item, "invalid view"))?;
    Ok(codegen::view::expand(&model))
}

/// A middleware that the configuration can name: `middleware: [log_requests]`.
///
/// ```rust,no_run
/// use minos::prelude::*;
///
/// #[middleware]
/// async fn log_requests(request: Request, next: Next) -> Result<Response> {
///     let response = next.run(request).await;
///     eprintln!("answered: {}", if response.is_ok() { "ok" } else { "an error" });
///     response
/// }
///
/// fn main() -> minos::Result<()> {
///     // Usually in config.yml; every middleware named here runs around every handler.
///     let config = minos::Config::from_yaml("name: foo\nmiddleware: [log_requests]\n")?;
///     minos::Launcher::with_config(config).run()
/// }
/// ```
///
/// Takes `name = "..."` (default: the function's name) and `crate = "..."`.
#[proc_macro_attribute]
pub fn middleware(args: TokenStream, input: TokenStream) -> TokenStream {
    attribute("#[middleware]", args, input, expand_middleware, |item| item)
}

/// Describes a request or response type in the service's API specs (`GET /spec/openapi`,
/// `GET /spec/asyncapi`): derives `JsonSchema` through the facade, so the crate needs no schemars
/// dependency of its own. Name the type in `#[enroute(.., request = T, response = T)]`.
///
/// ```rust
/// use minos::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// /// The content of `CreateFoo`.
/// #[schema]
/// #[derive(Deserialize)]
/// pub struct CreateFoo {
///     /// Any text but blank.
///     pub bar: String,
/// }
///
/// #[schema]
/// #[derive(Serialize)]
/// pub struct FooId {
///     pub uuid: Uuid,
/// }
///
/// pub struct FooCommandService;
///
/// #[command_service]
/// impl FooCommandService {
///     #[enroute(broker = "CreateFoo", rest = "POST /foos", request = CreateFoo, response = FooId)]
///     async fn create_foo(&self, request: Request) -> Result<Response> {
///         let CreateFoo { bar } = request.content()?;
///         Ok(Response::json(FooId { uuid: Uuid::new_v4() }))
///     }
/// }
///
/// use minos::schemars::JsonSchema;
/// let schema = minos::schemars::schema_for!(CreateFoo);
/// assert_eq!(schema.get("required"), Some(&json!(["bar"])));
/// # let _ = <FooId as JsonSchema>::schema_name();
/// ```
///
/// schemars' attributes (`#[schemars(..)]`) and serde's (`#[serde(rename_all = "..")]`, …) shape the
/// schema as usual. Every field's type must implement `JsonSchema` (std types, `Uuid`, `DateTime<Utc>`,
/// `serde_json::Value`, minos' `Ref<T>`, `Root<T>`, models, other `#[schema]` types). Models
/// (`#[root_entity]`, `#[entity]`, `#[value_object]`, `#[external_entity]`) need no `#[schema]`: they
/// describe their fields themselves, a field type without a schema as "any value".
///
/// Argument: `crate = "path"` names the minos facade when it is re-exported under another path.
///
/// Equivalent code: `#[derive(::minos::schemars::JsonSchema)] #[schemars(crate = "::minos::schemars")]`.
#[proc_macro_attribute]
pub fn schema(args: TokenStream, input: TokenStream) -> TokenStream {
    attribute(
        "#[schema]",
        args,
        input,
        codegen::schema::expand_attribute,
        |item| item,
    )
}

fn expand_middleware(
    args: proc_macro2::TokenStream,
    input: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let function: syn::ItemFn = syn::parse2(input)?;
    let cx = internals::ctxt::Ctxt::new();
    let args = internals::attr::ModelArgs::parse(&cx, "#[middleware]", args);
    if function.sig.asyncness.is_none() {
        cx.error_spanned_by(
            function.sig.fn_token,
            "a middleware must be async
help: write `async fn name(request: Request, next: Next) -> Result<Response>`",
        );
    }
    if function.sig.inputs.len() != 2 {
        cx.syn_error(syn::Error::new(
            function.sig.paren_token.span.join(),
            "a middleware takes the request and the rest of the chain
help: write `async fn name(request: Request, next: Next) -> Result<Response>`",
        ));
    }
    cx.check()?;
    let name = args
        .name
        .map_or_else(|| function.sig.ident.to_string(), |lit| lit.value());
    let krate = args.krate.unwrap_or_else(|| syn::parse_quote!(::minos));
    Ok(codegen::service::expand_middleware(
        &function, &name, &krate,
    ))
}

fn expand_service(
    kind: internals::service::ServiceKind,
    args: TokenStream,
    input: TokenStream,
) -> TokenStream {
    let input2: proc_macro2::TokenStream = input.into();
    let output = service(kind, args.into(), input2.clone()).unwrap_or_else(|error| {
        let mut tokens = error.into_compile_error();
        tokens.extend(fallback::without_enroute_attributes(input2));
        tokens
    });
    debug_print(kind.attribute(), &output);
    output.into()
}

fn service(
    kind: internals::service::ServiceKind,
    args: proc_macro2::TokenStream,
    input: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let item: syn::Item = syn::parse2(input)?;
    let syn::Item::Impl(item) = item else {
        return Err(syn::Error::new_spanned(
            &item,
            format!(
                "{} goes on an impl block: `#[{}] impl MyService {{ .. }}`",
                kind.attribute(),
                &kind.attribute()[2..kind.attribute().len() - 1]
            ),
        ));
    };
    let cx = internals::ctxt::Ctxt::new();
    let args = internals::service::parse_args(&cx, kind, args);
    let handlers = internals::service::handlers(&cx, kind, &item);
    cx.check()?;
    let krate = args.krate.unwrap_or_else(|| syn::parse_quote!(::minos));
    Ok(codegen::service::expand(
        kind,
        &item,
        &handlers,
        args.init.as_ref(),
        &krate,
    ))
}

fn expand(kind: Kind, args: TokenStream, input: TokenStream) -> TokenStream {
    let input2: proc_macro2::TokenStream = input.clone().into();
    let output = model(kind, args.into(), input2.clone()).unwrap_or_else(|error| {
        // Re-emit the item with the errors so the rest of the crate still type-checks and IDEs keep working.
        let mut tokens = error.into_compile_error();
        tokens.extend(fallback::without_serde_attributes(input2));
        tokens
    });
    debug_print(kind.attribute(), &output);
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

/// Runs `expand` on an attribute's arguments and item. On errors: the errors, then the item as
/// `fallback` leaves it, so the rest of the crate still type-checks and IDEs keep working.
fn attribute(
    name: &str,
    args: TokenStream,
    input: TokenStream,
    expand: fn(
        proc_macro2::TokenStream,
        proc_macro2::TokenStream,
    ) -> syn::Result<proc_macro2::TokenStream>,
    fallback: fn(proc_macro2::TokenStream) -> proc_macro2::TokenStream,
) -> TokenStream {
    let input: proc_macro2::TokenStream = input.into();
    let output = expand(args.into(), input.clone()).unwrap_or_else(|error| {
        let mut tokens = error.into_compile_error();
        tokens.extend(fallback(input));
        tokens
    });
    debug_print(name, &output);
    output.into()
}

fn debug_print(attribute: &str, tokens: &proc_macro2::TokenStream) {
    if std::env::var_os("MINOS_MACROS_DEBUG").is_none_or(|v| v.is_empty() || v == "0") {
        return;
    }
    let text = match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(_) => tokens.to_string(),
    };
    eprintln!("// ---- {attribute} expansion ----\n{text}");
}
