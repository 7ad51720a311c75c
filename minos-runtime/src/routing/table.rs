//! Route entries (registered by the service macros) and the route table the runtime executes.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use super::HandlerFn;
use crate::error::{Error, Result};

/// Which kind of service declared a route (a REST route answers a command or a query by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ServiceKind {
    /// `#[command_service]`
    Command,
    /// `#[query_service]`
    Query,
}

/// What a broker route answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BrokerKind {
    /// A command (one handler per topic, replies).
    Command,
    /// A query (one handler per topic, replies).
    Query,
    /// A domain event (every handler of the topic runs).
    Event,
}

/// One route of a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// A broker topic.
    Broker {
        /// Command, query or event.
        kind: BrokerKind,
        /// The topic.
        topic: &'static str,
    },
    /// An HTTP method and path (`/foos/{uuid}`).
    Rest {
        /// Command or query.
        kind: ServiceKind,
        /// Upper-case method.
        method: &'static str,
        /// The path pattern.
        path: &'static str,
    },
    /// A cron schedule, or `@reboot` (once at start).
    Periodic {
        /// The expression.
        cron: &'static str,
    },
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Broker { kind, topic } => write!(f, "broker {kind:?} {topic}"),
            Route::Rest { method, path, .. } => write!(f, "rest {method} {path}"),
            Route::Periodic { cron } => write!(f, "periodic {cron}"),
        }
    }
}

/// A route and its handler, as submitted by `#[enroute]`.
#[derive(Debug)]
pub struct RouteEntry {
    /// The route.
    pub route: Route,
    /// What the handler requires of its caller (`auth`, `roles = [..]`).
    pub access: crate::auth::Access,
    /// The view it writes (`view = FooSummary`): run by the view's projection, in the commit order
    /// of the events' owner, not by the broker dispatcher.
    pub view: Option<&'static str>,
    /// The handler.
    pub handler: HandlerFn,
    /// The schema of the request's content (`request = CreateFoo`), for the API descriptions.
    pub request: Option<crate::schema::SchemaFn>,
    /// The schema of the response's content (`response = FooId`), for the API descriptions.
    pub response: Option<crate::schema::SchemaFn>,
    /// The service type.
    pub service: &'static str,
    /// The handler method.
    pub function: &'static str,
    /// The file of the handler.
    pub file: &'static str,
    /// The line of the handler.
    pub line: u32,
}

inventory::collect!(RouteEntry);

impl Route {
    /// The topic of a broker route.
    pub fn topic(&self) -> Option<&'static str> {
        match self {
            Route::Broker { topic, .. } => Some(topic),
            _ => None,
        }
    }
}

impl RouteEntry {
    /// `Service::function (file:line)`, for logs and errors.
    pub fn location(&self) -> String {
        format!(
            "{}::{} ({}:{})",
            self.service, self.function, self.file, self.line
        )
    }
}

/// Path patterns that name the same route whatever their parameters are called: `/foos/{}`.
fn path_shape(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "{}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Routes the runtime itself answers.
const SYSTEM_ROUTES: &[(&str, &str)] = &[
    ("GET", "/system/health"),
    ("GET", "/system/live"),
    ("GET", "/system/overview"),
    ("GET", "/metrics"),
    ("GET", "/views"),
    ("POST", "/views/{name}/rebuild"),
    ("GET", "/spec/openapi"),
    ("GET", "/spec/asyncapi"),
    ("GET", "/saga/executions"),
    ("GET", "/saga/executions/{uuid}"),
];

/// The checked, sorted routes of a service.
#[derive(Debug)]
pub struct RouteTable {
    entries: Vec<&'static RouteEntry>,
}

impl RouteTable {
    /// Every route registered in the binary.
    pub fn collect() -> Result<Self> {
        Self::from_entries(inventory::iter::<RouteEntry>.into_iter().collect())
    }

    /// The routes of these service types (every one when `services` is empty); naming a type that
    /// has no route is an error.
    pub fn collect_for(services: &[String]) -> Result<Self> {
        if services.is_empty() {
            return Self::collect();
        }
        let all: Vec<&'static RouteEntry> = inventory::iter::<RouteEntry>.into_iter().collect();
        for wanted in services {
            if !all.iter().any(|e| e.service == wanted) {
                let mut known: Vec<&str> = all.iter().map(|e| e.service).collect();
                known.sort_unstable();
                known.dedup();
                return Err(Error::Routes(format!(
                    "`services` names `{wanted}`, which has no route in this binary; known: {}",
                    known.join(", ")
                )));
            }
        }
        Self::from_entries(
            all.into_iter()
                .filter(|e| services.iter().any(|s| s == e.service))
                .collect(),
        )
    }

    /// A table of these routes: refuses an empty table and duplicate command/query topics or REST
    /// routes, naming both handlers.
    pub fn from_entries(mut entries: Vec<&'static RouteEntry>) -> Result<Self> {
        if entries.is_empty() {
            return Err(Error::Routes(
                "no handler is registered: declare #[enroute] handlers in a #[command_service] or #[query_service] \
                 impl, and make sure the crate holding them is linked (`use my_handlers as _;`)"
                    .into(),
            ));
        }
        entries.sort_by(|a, b| {
            (a.route, a.service, a.function).cmp(&(b.route, b.service, b.function))
        });
        let mut topics: BTreeMap<&str, &RouteEntry> = BTreeMap::new();
        let mut events: BTreeMap<&str, &RouteEntry> = BTreeMap::new();
        let mut rest: BTreeMap<(&str, String), &RouteEntry> = BTreeMap::new();
        let mut problems = Vec::new();
        for entry in &entries {
            match entry.route {
                Route::Broker {
                    kind: BrokerKind::Event,
                    topic,
                } => {
                    events.entry(topic).or_insert(entry);
                }
                Route::Broker { topic, .. } => {
                    if let Some(first) = topics.insert(topic, entry) {
                        problems.push(format!(
                            "topic `{topic}` has two handlers: {} and {}",
                            first.location(),
                            entry.location()
                        ));
                    }
                }
                Route::Rest { method, path, .. } => {
                    if SYSTEM_ROUTES
                        .iter()
                        .any(|(m, p)| *m == method && path_shape(p) == path_shape(path))
                    {
                        problems.push(format!(
                            "`{method} {path}` is answered by minos itself: {}",
                            entry.location()
                        ));
                    }
                    if let Some(first) = rest.insert((method, path_shape(path)), entry) {
                        problems.push(format!(
                            "`{method} {path}` has two handlers: {} and {}",
                            first.location(),
                            entry.location()
                        ));
                    }
                }
                Route::Periodic { .. } => {}
            }
        }
        for (topic, event) in &events {
            if let Some(command) = topics.get(topic) {
                problems.push(format!(
                    "topic `{topic}` is both a command/query ({}) and an event ({})",
                    command.location(),
                    event.location()
                ));
            }
        }
        if !problems.is_empty() {
            return Err(Error::Routes(problems.join("; ")));
        }
        Ok(RouteTable { entries })
    }

    /// Every entry, sorted.
    pub fn entries(&self) -> &[&'static RouteEntry] {
        &self.entries
    }

    /// The broker topics to subscribe to.
    pub fn broker_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .entries
            .iter()
            .filter_map(|e| match e.route {
                Route::Broker { topic, .. } => Some(topic.to_owned()),
                _ => None,
            })
            .collect();
        topics.dedup();
        topics
    }

    /// The handlers of a broker topic: one command/query handler, or every event handler.
    pub fn broker_handlers(&self, topic: &str) -> Vec<(&'static RouteEntry, BrokerKind)> {
        self.entries
            .iter()
            .filter_map(|e| match e.route {
                Route::Broker { kind, topic: t } if t == topic => Some((*e, kind)),
                _ => None,
            })
            .collect()
    }

    /// REST routes: method, path and entry.
    pub fn rest_routes(
        &self,
    ) -> impl Iterator<Item = (&'static str, &'static str, &'static RouteEntry)> + '_ {
        self.entries.iter().filter_map(|e| match e.route {
            Route::Rest { method, path, .. } => Some((method, path, *e)),
            _ => None,
        })
    }

    /// Periodic routes: cron expression and entry.
    pub fn periodic_routes(
        &self,
    ) -> impl Iterator<Item = (&'static str, &'static RouteEntry)> + '_ {
        self.entries.iter().filter_map(|e| match e.route {
            Route::Periodic { cron } => Some((cron, *e)),
            _ => None,
        })
    }

    /// One line per route, for the start-up log.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            let _ = writeln!(
                out,
                "  {:<40} -> {}",
                entry.route.to_string(),
                entry.location()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{HandlerFuture, Request, Response};

    fn ok(_: Request) -> HandlerFuture {
        Box::pin(async { Ok(Response::empty()) })
    }

    fn entry(route: Route, function: &'static str, line: u32) -> &'static RouteEntry {
        Box::leak(Box::new(RouteEntry {
            route,
            access: crate::auth::Access::Open,
            view: None,
            handler: ok,
            request: None,
            response: None,
            service: "S",
            function,
            file: "s.rs",
            line,
        }))
    }

    #[test]
    fn an_empty_table_is_refused() {
        let error = RouteTable::from_entries(Vec::new()).unwrap_err();
        assert!(
            error.to_string().contains("no handler is registered"),
            "{error}"
        );
    }

    #[test]
    fn duplicates_name_both_handlers() {
        let a = entry(
            Route::Broker {
                kind: BrokerKind::Command,
                topic: "CreateFoo",
            },
            "a",
            1,
        );
        let b = entry(
            Route::Broker {
                kind: BrokerKind::Command,
                topic: "CreateFoo",
            },
            "b",
            2,
        );
        let error = RouteTable::from_entries(vec![a, b])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("S::a (s.rs:1)") && error.contains("S::b (s.rs:2)"),
            "{error}"
        );

        let c = entry(
            Route::Rest {
                kind: ServiceKind::Query,
                method: "GET",
                path: "/foos/{id}",
            },
            "c",
            3,
        );
        let d = entry(
            Route::Rest {
                kind: ServiceKind::Query,
                method: "GET",
                path: "/foos/{uuid}",
            },
            "d",
            4,
        );
        let error = RouteTable::from_entries(vec![c, d])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("GET /foos/{uuid}") && error.contains("S::c"),
            "{error}"
        );

        let e = entry(
            Route::Rest {
                kind: ServiceKind::Query,
                method: "GET",
                path: "/system/health",
            },
            "e",
            5,
        );
        assert!(RouteTable::from_entries(vec![e]).is_err());
        let e = entry(
            Route::Rest {
                kind: ServiceKind::Command,
                method: "POST",
                path: "/views/{view}/rebuild",
            },
            "e",
            6,
        );
        let error = RouteTable::from_entries(vec![e]).unwrap_err().to_string();
        assert!(error.contains("answered by minos itself"), "{error}");
    }

    #[test]
    fn event_handlers_share_topics_and_tables_sort() {
        let a = entry(
            Route::Broker {
                kind: BrokerKind::Event,
                topic: "FooCreated",
            },
            "a",
            1,
        );
        let b = entry(
            Route::Broker {
                kind: BrokerKind::Event,
                topic: "FooCreated",
            },
            "b",
            2,
        );
        let c = entry(
            Route::Rest {
                kind: ServiceKind::Command,
                method: "POST",
                path: "/foos",
            },
            "c",
            3,
        );
        let table = RouteTable::from_entries(vec![c, b, a]).unwrap();
        assert_eq!(table.broker_handlers("FooCreated").len(), 2);
        assert_eq!(table.broker_topics(), ["FooCreated"]);
        assert_eq!(table.entries()[0].function, "a");
        assert!(table.describe().contains("rest POST /foos"));
    }
}
