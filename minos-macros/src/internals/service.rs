//! Service AST: `#[command_service]` / `#[query_service]` impl blocks and their `#[enroute]` handlers.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, ImplItem, ImplItemFn, ItemImpl, LitStr, Path, ReturnType, Type};

use super::ctxt::Ctxt;
use super::spec::{check_periodic, check_topic, parse_rest};

/// Which service attribute.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceKind {
    Command,
    Query,
}

impl ServiceKind {
    pub(crate) fn attribute(self) -> &'static str {
        match self {
            ServiceKind::Command => "#[command_service]",
            ServiceKind::Query => "#[query_service]",
        }
    }
}

/// One route of a handler.
pub(crate) enum RouteSpec {
    Broker(String),
    Event(String),
    Rest { method: String, path: String },
    Periodic(String),
}

impl RouteSpec {
    /// Command/query routes (broker, rest) vs event routes (event, periodic).
    fn is_event_kind(&self) -> bool {
        matches!(self, RouteSpec::Event(_) | RouteSpec::Periodic(_))
    }
}

/// What a handler requires of its caller: `auth` (any valid token) or `roles = ["admin"]`.
#[derive(Default)]
pub(crate) struct AccessSpec {
    pub(crate) auth: bool,
    pub(crate) roles: Vec<String>,
    /// Where it was written, for errors about the handler's routes.
    pub(crate) span: Option<Span>,
}

pub(crate) struct Handler {
    pub(crate) access: AccessSpec,
    /// `view = FooSummary`: the view the handler writes.
    pub(crate) view: Option<Path>,
    pub(crate) ident: syn::Ident,
    pub(crate) span: Span,
    pub(crate) routes: Vec<RouteSpec>,
    /// The type of the request parameter, for spanning type errors on it.
    pub(crate) request_ty: Option<Type>,
    /// `request = CreateFoo`: the type of the request's content, for the API descriptions.
    pub(crate) request_schema: Option<Type>,
    /// `response = FooId`: the type of the response's content, for the API descriptions.
    pub(crate) response_schema: Option<Type>,
    pub(crate) output_span: Span,
}

pub(crate) struct ServiceArgs {
    pub(crate) init: Option<Path>,
    pub(crate) krate: Option<Path>,
}

pub(crate) fn parse_args(
    cx: &Ctxt,
    kind: ServiceKind,
    args: proc_macro2::TokenStream,
) -> ServiceArgs {
    let mut init = super::attr::Attr::none(cx, super::symbol::INIT);
    let mut krate = super::attr::Attr::none(cx, super::symbol::CRATE);
    let parser = syn::meta::parser(|meta| {
        if meta.path == super::symbol::INIT || meta.path == super::symbol::CRATE {
            let lit: LitStr = meta.value()?.parse()?;
            match lit.parse::<Path>() {
                Ok(path) if meta.path == super::symbol::INIT => init.set(&meta.path, path),
                Ok(path) => krate.set(&meta.path, path),
                Err(_) => {
                    cx.error_spanned_by(&lit, "expected a path, like `init = \"FooService::new\"`")
                }
            }
        } else {
            let key = quote::ToTokens::to_token_stream(&meta.path)
                .to_string()
                .replace(' ', "");
            cx.error_spanned_by(
                &meta.path,
                format!(
                    "unknown minos {} attribute `{key}`; expected `init = \"path::to::constructor\"` or `crate = \"...\"`",
                    kind.attribute()
                ),
            );
            if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<syn::Expr>()?;
            }
        }
        Ok(())
    });
    if let Err(error) = syn::parse::Parser::parse2(parser, args) {
        cx.syn_error(error);
    }
    ServiceArgs {
        init: init.get(),
        krate: krate.get(),
    }
}

pub(crate) fn is_enroute(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "enroute")
}

/// Validates the impl block and reads its handlers.
pub(crate) fn handlers(cx: &Ctxt, kind: ServiceKind, item: &ItemImpl) -> Vec<Handler> {
    if let Some((_, path, _)) = &item.trait_ {
        cx.error_spanned_by(
            path,
            format!(
                "{} goes on an inherent impl block: `impl MyService {{ .. }}`, not a trait impl",
                kind.attribute()
            ),
        );
    }
    if !item.generics.params.is_empty() {
        cx.error_spanned_by(
            &item.generics,
            format!("{} does not support generic services: the runtime makes one instance of a concrete type", kind.attribute()),
        );
    }
    let mut out = Vec::new();
    for member in &item.items {
        let ImplItem::Fn(function) = member else {
            continue;
        };
        let attrs: Vec<&Attribute> = function.attrs.iter().filter(|a| is_enroute(a)).collect();
        if attrs.is_empty() {
            continue;
        }
        let mut routes: Vec<(RouteSpec, Span)> = Vec::new();
        let mut access = AccessSpec::default();
        let mut view = None;
        let mut bodies = Bodies::default();
        for attr in attrs {
            parse_enroute(
                cx,
                kind,
                attr,
                &mut routes,
                &mut access,
                &mut view,
                &mut bodies,
            );
        }
        check_access(cx, &access, &routes);
        check_bodies(cx, &bodies, &routes);
        check_view(cx, kind, view.as_ref(), &routes);
        if let Some((first, _)) = routes.first() {
            for (route, span) in &routes[1..] {
                if route.is_event_kind() != first.is_event_kind() {
                    cx.syn_error(syn::Error::new(
                        *span,
                        "a handler's routes must be of one kind: broker and rest routes answer commands or queries, \
                         event and periodic routes react to events\nhelp: split this route into its own handler",
                    ));
                }
            }
        }
        let request_ty = check_signature(cx, function);
        out.push(Handler {
            access,
            view,
            ident: function.sig.ident.clone(),
            span: function.sig.fn_token.span,
            routes: routes.into_iter().map(|(r, _)| r).collect(),
            request_ty,
            request_schema: bodies.request.map(|(ty, _)| ty),
            response_schema: bodies.response.map(|(ty, _)| ty),
            output_span: match &function.sig.output {
                ReturnType::Default => function.sig.paren_token.span.join(),
                ReturnType::Type(_, ty) => ty.span(),
            },
        });
    }
    out
}

/// `auth` and `roles` need a REST route to guard: they are enforced by the gateway and the service's
/// HTTP entry (and on broker requests to a handler that also has a REST route).
fn check_access(cx: &Ctxt, access: &AccessSpec, routes: &[(RouteSpec, Span)]) {
    let Some(span) = access.span else {
        return;
    };
    if routes.is_empty() {
        // "needs a route" says it already.
        return;
    }
    let what = if access.roles.is_empty() {
        "auth"
    } else {
        "roles"
    };
    if routes.iter().any(|(r, _)| r.is_event_kind()) {
        cx.syn_error(syn::Error::new(
            span,
            format!(
                "`{what}` guards a request from a caller; event and periodic handlers have no caller\n\
                 help: remove `{what}`, or put it on the command or query that changes the state"
            ),
        ));
    } else if !routes
        .iter()
        .any(|(r, _)| matches!(r, RouteSpec::Rest { .. }))
    {
        cx.syn_error(syn::Error::new(
            span,
            format!(
                "`{what}` needs a `rest` route on this handler: a requirement travels with the route's \
                 registration, so the gateway and the service's HTTP entry enforce it\n\
                 help: add `rest = \"POST /path\"` to this #[enroute], or check the caller in the handler \
                 with `request.principal()`"
            ),
        ));
    }
}

/// `roles = ["admin", "owner"]`: a non-empty list of distinct, non-empty role names.
fn parse_roles(cx: &Ctxt, meta: &syn::meta::ParseNestedMeta) -> syn::Result<Option<Vec<String>>> {
    let help = "expected a list of role names, like `roles = [\"admin\"]`";
    let expr: syn::Expr = meta.value()?.parse()?;
    let syn::Expr::Array(array) = &expr else {
        cx.error_spanned_by(&expr, help);
        return Ok(None);
    };
    if array.elems.is_empty() {
        cx.error_spanned_by(
            &expr,
            "empty `roles` would let no one in: list at least one role, like `roles = [\"admin\"]`, \
             or write `auth` to accept any valid token",
        );
        return Ok(None);
    }
    let mut roles = Vec::new();
    for element in &array.elems {
        match element {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(role),
                ..
            }) => {
                let name = role.value();
                if name.trim().is_empty() || name.chars().any(char::is_whitespace) {
                    cx.error_spanned_by(role, "a role name is one non-empty word, like \"admin\"");
                } else if roles.contains(&name) {
                    cx.error_spanned_by(role, format!("role `{name}` is listed twice"));
                } else {
                    roles.push(name);
                }
            }
            other => cx.error_spanned_by(other, help),
        }
    }
    Ok(Some(roles))
}

/// `view = FooSummary` goes on a query service's handler of domain events, and nothing else.
fn check_view(cx: &Ctxt, kind: ServiceKind, view: Option<&Path>, routes: &[(RouteSpec, Span)]) {
    let Some(view) = view else { return };
    if kind == ServiceKind::Command {
        cx.error_spanned_by(
            view,
            "views are written by the event handlers of a #[query_service]: a command service changes \
             roots, a query service keeps views\nhelp: move this handler to the #[query_service] impl",
        );
        return;
    }
    for (route, span) in routes {
        match route {
            RouteSpec::Event(topic) if !is_domain_event(topic) => cx.syn_error(syn::Error::new(
                *span,
                format!(
                    "a view follows the domain events of a root entity: `FooCreated`, `FooUpdated`, \
                     `FooUpdated.field` or `FooDeleted`, not `{topic}`\nhelp: handle `{topic}` in a handler without `view`"
                ),
            )),
            RouteSpec::Event(_) => {}
            _ => cx.syn_error(syn::Error::new(
                *span,
                "`view` goes with `event = \"FooCreated\"` routes only: the view is built from events\n\
                 help: split this route into a handler of its own, without `view`",
            )),
        }
    }
}

/// `FooCreated`, `FooUpdated`, `FooUpdated.bar`, `FooDeleted`.
fn is_domain_event(topic: &str) -> bool {
    let (head, rest) = match topic.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (topic, None),
    };
    let stem = ["Created", "Updated", "Deleted"]
        .iter()
        .find_map(|suffix| head.strip_suffix(suffix).map(|stem| (stem, *suffix)));
    match (stem, rest) {
        (Some((stem, _)), None) => !stem.is_empty(),
        (Some((stem, "Updated")), Some(rest)) => !stem.is_empty() && !rest.is_empty(),
        _ => false,
    }
}

/// `request = T` and `response = T`, with where their keys were written.
#[derive(Default)]
struct Bodies {
    request: Option<(Type, Span)>,
    response: Option<(Type, Span)>,
}

/// `request = CreateFoo` / `response = FooId`: a type (any type; those implementing `JsonSchema`, as
/// with `#[schema]`, are described in full).
fn parse_body(
    cx: &Ctxt,
    meta: &syn::meta::ParseNestedMeta,
    key: &str,
    bodies: &mut Bodies,
) -> syn::Result<()> {
    let what = if key == "request" {
        "the request's content"
    } else {
        "the response's content"
    };
    let example = if key == "request" {
        "request = CreateFoo"
    } else {
        "response = FooId"
    };
    if !meta.input.peek(syn::Token![=]) {
        cx.error_spanned_by(
            &meta.path,
            format!("`{key}` names the type of {what}: write `{example}`"),
        );
        if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
            meta.parse_nested_meta(|_| Ok(()))?;
        }
        return Ok(());
    }
    let value = meta.value()?;
    if value.peek(LitStr) {
        let lit: LitStr = value.parse()?;
        let written = lit.value();
        let instead = if syn::parse_str::<Type>(&written).is_ok() {
            format!("{key} = {written}")
        } else {
            example.to_owned()
        };
        cx.error_spanned_by(
            &lit,
            format!("`{key}` takes the type of {what}, not a string: write `{instead}`"),
        );
        return Ok(());
    }
    let ty: Type = value.parse()?;
    if matches!(
        ty,
        Type::Infer(_) | Type::ImplTrait(_) | Type::TraitObject(_) | Type::Never(_)
    ) {
        cx.error_spanned_by(
            &ty,
            format!("`{key}` names one concrete type, the type of {what}: write `{example}`"),
        );
        return Ok(());
    }
    let slot = if key == "request" {
        &mut bodies.request
    } else {
        &mut bodies.response
    };
    if slot.is_some() {
        cx.error_spanned_by(
            &meta.path,
            format!("duplicate minos enroute attribute `{key}`: a handler's routes share one {key} type"),
        );
    } else {
        *slot = Some((ty, meta.path.span()));
    }
    Ok(())
}

/// `request` and `response` describe commands and queries: an event handler receives the event
/// envelope, and a periodic one nothing.
fn check_bodies(cx: &Ctxt, bodies: &Bodies, routes: &[(RouteSpec, Span)]) {
    if !routes.iter().any(|(r, _)| r.is_event_kind()) {
        return;
    }
    for (key, body) in [("request", &bodies.request), ("response", &bodies.response)] {
        if let Some((_, span)) = body {
            cx.syn_error(syn::Error::new(
                *span,
                format!(
                    "`{key}` describes a command or query; event and periodic handlers answer no one, and an \
                     event's content (`minos::Event`) is described from its #[root_entity]\n\
                     help: remove `{key}`"
                ),
            ));
        }
    }
}

fn parse_enroute(
    cx: &Ctxt,
    kind: ServiceKind,
    attr: &Attribute,
    routes: &mut Vec<(RouteSpec, Span)>,
    access: &mut AccessSpec,
    view: &mut Option<Path>,
    bodies: &mut Bodies,
) {
    let needs_route = "#[enroute] needs a route: `broker = \"Topic\"`, `event = \"FooCreated\"`, \
                       `rest = \"GET /path\"` or `periodic = \"cron\"`";
    if matches!(attr.meta, syn::Meta::Path(_)) {
        cx.error_spanned_by(attr, needs_route);
        return;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut keys = 0;
    let result = attr.parse_nested_meta(|meta| {
        let key = meta.path.get_ident().map(ToString::to_string).unwrap_or_default();
        if key == "auth" {
            if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                cx.error_spanned_by(
                    &meta.path,
                    "`auth` is a flag: write `#[enroute(rest = \"POST /foos\", auth)]` (any valid token), \
                     or `roles = [\"admin\"]` for a role",
                );
                if meta.input.peek(syn::Token![=]) {
                    meta.value()?.parse::<syn::Expr>()?;
                }
                return Ok(());
            }
            if access.auth {
                cx.error_spanned_by(&meta.path, "duplicate minos enroute attribute `auth`");
            }
            access.auth = true;
            access.span.get_or_insert(meta.path.span());
            return Ok(());
        }
        if key == "view" {
            let value = meta.value()?;
            if value.peek(LitStr) {
                let lit: LitStr = value.parse()?;
                cx.error_spanned_by(
                    &lit,
                    format!("`view` takes the view's type, not a string: write `view = {}`", lit.value()),
                );
                return Ok(());
            }
            let path: Path = value.parse()?;
            if view.is_some() {
                cx.error_spanned_by(
                    &meta.path,
                    "duplicate minos enroute attribute `view`: a handler writes one view; write one handler per view",
                );
            } else {
                *view = Some(path);
            }
            return Ok(());
        }
        if key == "roles" {
            let span = meta.path.span();
            let duplicate = !access.roles.is_empty();
            if let Some(roles) = parse_roles(cx, &meta)? {
                if duplicate {
                    cx.error_spanned_by(
                        &meta.path,
                        "duplicate minos enroute attribute `roles`: list every role in one `roles = [..]`",
                    );
                } else {
                    access.roles = roles;
                    access.span = Some(span);
                }
            }
            return Ok(());
        }
        if key == "request" || key == "response" {
            return parse_body(cx, &meta, &key, bodies);
        }
        keys += 1;
        if !["broker", "event", "rest", "periodic"].contains(&key.as_str()) {
            let shown = quote::ToTokens::to_token_stream(&meta.path).to_string().replace(' ', "");
            cx.error_spanned_by(
                &meta.path,
                format!("unknown minos enroute attribute `{shown}`; expected `broker`, `event`, `rest` or `periodic`, \
                         and optionally `auth`, `roles = [\"..\"]`, `view = ViewType`, `request = Type` or `response = Type`"),
            );
            if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<syn::Expr>()?;
            }
            return Ok(());
        }
        let lit: LitStr = meta.value()?.parse()?;
        if seen.contains(&key) {
            cx.error_spanned_by(
                &meta.path,
                format!("duplicate minos enroute attribute `{key}`: add a second #[enroute({key} = \"..\")] for another route"),
            );
            return Ok(());
        }
        seen.push(key.clone());
        let text = lit.value();
        let span = meta.path.span();
        let spec = match key.as_str() {
            "broker" => check_topic(&text).map(|_| RouteSpec::Broker(text.clone())),
            "event" => {
                if kind == ServiceKind::Command {
                    cx.error_spanned_by(
                        &meta.path,
                        "event handlers go in a #[query_service]: a command service changes state, a query service \
                         reacts to events\nhelp: move this handler to the service's #[query_service] impl",
                    );
                    return Ok(());
                }
                check_topic(&text).map(|_| RouteSpec::Event(text.clone()))
            }
            "rest" => parse_rest(&text).map(|spec| RouteSpec::Rest {
                method: spec.method,
                path: spec.path,
            }),
            _ => check_periodic(&text).map(|_| RouteSpec::Periodic(text.clone())),
        };
        match spec {
            Ok(spec) => routes.push((spec, span)),
            Err(error) => cx.error_spanned_by(&lit, error.render(&text)),
        }
        Ok(())
    });
    if let Err(error) = result {
        cx.syn_error(error);
    } else if keys == 0 {
        cx.error_spanned_by(attr, needs_route);
    }
}

/// Checks `async fn name(&self, request: Request)`; returns the request parameter's type.
fn check_signature(cx: &Ctxt, function: &ImplItemFn) -> Option<Type> {
    let sig = &function.sig;
    let shape = "write `async fn name(&self, request: Request) -> Result<Response>`";
    if sig.asyncness.is_none() {
        cx.error_spanned_by(
            sig.fn_token,
            format!("a minos handler must be async\nhelp: {shape}"),
        );
    }
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics,
            format!("a minos handler cannot be generic\nhelp: {shape}"),
        );
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver))
            if receiver.reference.is_some() && receiver.mutability.is_none() => {}
        Some(FnArg::Receiver(receiver)) => {
            cx.error_spanned_by(
                receiver,
                format!("a minos handler takes `&self`: one service instance serves every request at once\nhelp: {shape}"),
            );
        }
        _ => {
            cx.syn_error(syn::Error::new(
                sig.paren_token.span.join(),
                format!(
                    "a minos handler is a method taking `&self` and the request\nhelp: {shape}"
                ),
            ));
            return None;
        }
    }
    let request = inputs.next();
    if inputs.next().is_some() || request.is_none() {
        cx.syn_error(syn::Error::new(
            sig.paren_token.span.join(),
            format!("a minos handler takes exactly one argument besides `&self`: the request\nhelp: {shape}"),
        ));
        return None;
    }
    match request {
        Some(FnArg::Typed(pat)) => Some((*pat.ty).clone()),
        _ => None,
    }
}
