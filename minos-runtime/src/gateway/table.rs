//! The route table the gateway resolves every request with, built from the registry's listing.
//!
//! Templates are checked by [`PathTemplate::parse`] (the rule the services and the registry use)
//! and kept pre-split, so that matching a request walks its path once without allocating. Routes
//! are indexed like the registry's [`Routes`](crate::discovery::Routes): by method, segment count
//! and literal first segment.

use std::cmp::Ordering as Order;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hyper::http::uri::Authority;
use hyper::http::{HeaderValue, Method};
use serde_json::Value;

use crate::auth::Requirement;
use crate::discovery::PathTemplate;

/// How long an instance that refused a connection is passed over.
pub(crate) const EJECTION: Duration = Duration::from_secs(2);

/// A path template split into segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    text: String,
    segments: Box<[Segment]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `{name}`: any one non-empty segment.
    Parameter(Box<str>),
}

/// The segments of a request path (without its query): `/` has none.
fn segments(path: &str) -> impl Iterator<Item = &str> + Clone {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').filter(move |_| !rest.is_empty())
}

impl Template {
    /// Parses `text` with the services' rule for path templates.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        PathTemplate::parse(text).map_err(|e| e.to_string())?;
        let segments = segments(text)
            .map(|segment| match segment.strip_prefix('{') {
                Some(name) => Segment::Parameter(name.trim_end_matches('}').into()),
                None => Segment::Literal(segment.into()),
            })
            .collect();
        Ok(Template {
            text: text.to_owned(),
            segments,
        })
    }

    /// The template as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The names of its parameters, in order.
    pub(crate) fn parameters(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Parameter(name) => Some(&**name),
            Segment::Literal(_) => None,
        })
    }

    fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Literal(literal)) => Some(literal),
            _ => None,
        }
    }

    /// Whether the request path `path` (no query) fits.
    pub(crate) fn matches(&self, path: &str) -> bool {
        if !path.starts_with('/') {
            return false;
        }
        let mut parts = segments(path);
        for segment in self.segments.iter() {
            let Some(part) = parts.next() else {
                return false;
            };
            let fits = match segment {
                Segment::Literal(literal) => **literal == *part,
                Segment::Parameter(_) => !part.is_empty(),
            };
            if !fits {
                return false;
            }
        }
        parts.next().is_none()
    }

    /// The parameters' values in `path`, in order (call only when [`matches`](Self::matches)).
    pub(crate) fn captures<'p>(&self, path: &'p str) -> Vec<&'p str> {
        self.segments
            .iter()
            .zip(segments(path))
            .filter(|(segment, _)| matches!(segment, Segment::Parameter(_)))
            .map(|(_, part)| part)
            .collect()
    }

    /// Which of two templates matching one path is more specific: at the first segment where they
    /// differ, a literal beats a parameter (the registry's rule).
    pub(crate) fn specificity(&self, other: &Template) -> Order {
        for (mine, theirs) in self.segments.iter().zip(other.segments.iter()) {
            match (mine, theirs) {
                (Segment::Literal(_), Segment::Parameter(_)) => return Order::Greater,
                (Segment::Parameter(_), Segment::Literal(_)) => return Order::Less,
                _ => {}
            }
        }
        Order::Equal
    }
}

/// Routes indexed by method, segment count and first literal segment; resolution allocates nothing.
#[derive(Debug)]
pub(crate) struct Index<T> {
    entries: Vec<(Method, Template, T)>,
    groups: FastMap<(Method, usize), Group>,
}

#[derive(Debug, Default)]
struct Group {
    by_first: FastMap<Box<str>, Vec<usize>>,
    parameter_first: Vec<usize>,
}

/// A map with FNV-1a hashing: the keys are short and come from the route table, so the DoS-proof
/// hashing of the standard map buys nothing here and costs on every request.
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// FNV-1a, 64 bits.
#[derive(Debug)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Index {
            entries: Vec::new(),
            groups: FastMap::default(),
        }
    }
}

impl<T> Index<T> {
    /// Adds `method template → value`.
    pub(crate) fn add(&mut self, method: Method, template: Template, value: T) {
        let group = self
            .groups
            .entry((method.clone(), template.segments.len()))
            .or_default();
        let position = self.entries.len();
        match template.first_literal() {
            Some(first) => group
                .by_first
                .entry(first.into())
                .or_default()
                .push(position),
            None => group.parameter_first.push(position),
        }
        self.entries.push((method, template, value));
    }

    /// The most specific route for `method path` (the first added among equally specific ones).
    pub(crate) fn resolve(&self, method: &Method, path: &str) -> Option<(&Template, &T)> {
        if self.entries.is_empty() {
            return None;
        }
        let mut parts = segments(path);
        let first = parts.clone().next().unwrap_or_default();
        let count = parts.by_ref().count();
        let group = self.groups.get(&(method.clone(), count))?;
        let literal = group.by_first.get(first).map(Vec::as_slice).unwrap_or(&[]);
        let mut best: Option<usize> = None;
        for &position in literal.iter().chain(&group.parameter_first) {
            let template = &self.entries[position].1;
            if !template.matches(path) {
                continue;
            }
            best = match best {
                None => Some(position),
                Some(current) => {
                    let current_template = &self.entries[current].1;
                    match template.specificity(current_template) {
                        Order::Greater => Some(position),
                        Order::Equal if position < current => Some(position),
                        _ => Some(current),
                    }
                }
            };
        }
        best.map(|position| {
            let (_, template, value) = &self.entries[position];
            (template, value)
        })
    }

    /// The methods with a route matching `path` (for `405` and `Allow`).
    pub(crate) fn methods_for(&self, path: &str) -> Vec<Method> {
        let mut methods: Vec<Method> = Vec::new();
        for (method, template, _) in &self.entries {
            if !methods.contains(method) && template.matches(path) {
                methods.push(method.clone());
            }
        }
        methods
    }

    /// How many routes there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The values, in the order they were added.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(_, _, value)| value)
    }
}

/// Milliseconds since the first call, for ejection deadlines kept in atomics.
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One service instance as the gateway reaches it.
#[derive(Debug)]
pub(crate) struct Instance {
    /// `name/instance`, for the log.
    pub(crate) label: String,
    /// `host:port`.
    pub(crate) authority: Authority,
    /// The `Host` header sent to it.
    pub(crate) host: HeaderValue,
    /// Passed over until this [`now_ms`] (0: never refused).
    ejected_until: AtomicU64,
}

impl Instance {
    fn new(label: String, address: &str, port: u16) -> Option<Instance> {
        let text = if address.contains(':') && !address.starts_with('[') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        };
        let authority = Authority::try_from(text.as_str()).ok()?;
        let host = HeaderValue::from_str(&text).ok()?;
        Some(Instance {
            label,
            authority,
            host,
            ejected_until: AtomicU64::new(0),
        })
    }

    /// Whether it may be tried now.
    pub(crate) fn available(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    /// Passes it over for [`EJECTION`] (it refused a connection).
    pub(crate) fn eject(&self) {
        let until = now_ms() + EJECTION.as_millis() as u64;
        self.ejected_until.store(until, Ordering::Relaxed);
    }
}

/// A method and template with the instances serving it.
#[derive(Debug)]
pub(crate) struct Route {
    /// The healthy instances, taken in turn.
    pub(crate) instances: Vec<Arc<Instance>>,
    /// Who may call it.
    pub(crate) requirement: Requirement,
    /// How long a request waits for the response head.
    pub(crate) timeout: Duration,
    next: AtomicUsize,
}

impl Route {
    /// Where the next request starts among [`instances`](Self::instances) (round robin).
    pub(crate) fn start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

/// The registry's table as the gateway routes with it.
#[derive(Debug, Default)]
pub(crate) struct Table {
    /// The registry's version it was built from (`None`: never loaded).
    pub(crate) version: Option<u64>,
    /// The routes.
    pub(crate) routes: Index<Route>,
}

/// Timeouts by route, for building tables.
#[derive(Clone, Debug)]
pub(crate) struct Timeouts {
    /// `gateway.timeout_ms`.
    pub(crate) default: Duration,
    /// `gateway.timeouts`, keys normalized to `METHOD /template`.
    pub(crate) routes: BTreeMap<String, Duration>,
}

impl Timeouts {
    /// Reads `gateway.timeout_ms` and `gateway.timeouts`, refusing keys that are not a route.
    pub(crate) fn new(default_ms: u64, routes: &BTreeMap<String, u64>) -> Result<Self, String> {
        let mut normalized = BTreeMap::new();
        for (key, ms) in routes {
            let (method, template) = parse_route(key)
                .map_err(|reason| format!("gateway.timeouts: `{key}`: {reason}"))?;
            normalized.insert(
                format!("{method} {}", template.as_str()),
                Duration::from_millis(*ms),
            );
        }
        Ok(Timeouts {
            default: Duration::from_millis(default_ms),
            routes: normalized,
        })
    }

    fn of(&self, method: &Method, template: &Template) -> Duration {
        if self.routes.is_empty() {
            return self.default;
        }
        let key = format!("{method} {}", template.as_str());
        self.routes.get(&key).copied().unwrap_or(self.default)
    }
}

/// Parses `METHOD /template` (`GET /foos/{uuid}`).
pub(crate) fn parse_route(text: &str) -> Result<(Method, Template), String> {
    let mut words = text.split_whitespace();
    let (Some(method), Some(path), None) = (words.next(), words.next(), words.next()) else {
        return Err("must be `METHOD /path`, like `GET /foos/{uuid}`".into());
    };
    Ok((parse_method(method)?, Template::parse(path)?))
}

/// An HTTP method the services may register.
pub(crate) fn parse_method(text: &str) -> Result<Method, String> {
    let upper = text.to_ascii_uppercase();
    if !minos_rules::HTTP_METHODS.contains(&upper.as_str()) {
        return Err(format!(
            "`{text}` is not an HTTP method ({})",
            minos_rules::HTTP_METHODS.join(", ")
        ));
    }
    Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())
}

/// An endpoint of a registration: `[method, path]`, `[method, path, {"auth", "roles"}]`, or an
/// object `{"method", "path", "auth"?, "roles"?}`.
fn endpoint(value: &Value) -> Option<(&str, &str, Requirement)> {
    match value {
        Value::Array(items) => {
            let method = items.first()?.as_str()?;
            let path = items.get(1)?.as_str()?;
            let requirement = items.get(2).map(Requirement::from_json).unwrap_or_default();
            Some((method, path, requirement))
        }
        Value::Object(object) => {
            let method = object.get("method")?.as_str()?;
            let path = object.get("path").or_else(|| object.get("url"))?.as_str()?;
            Some((method, path, Requirement::from_json(value)))
        }
        _ => None,
    }
}

/// Whether `a` asks more of a caller than `b` (authentication first, then roles).
fn stricter(a: &Requirement, b: &Requirement) -> bool {
    (a.auth, a.roles.len()) > (b.auth, b.roles.len())
}

impl Table {
    /// Builds the table from the registry's listing (`{"version", "services": [{"name",
    /// "instances": [...]}]}`). Instances known from `previous` keep their ejection.
    pub(crate) fn from_listing(
        listing: &Value,
        timeouts: &Timeouts,
        previous: &Table,
    ) -> Result<Table, String> {
        let version = listing
            .get("version")
            .and_then(Value::as_u64)
            .ok_or("the registry's listing has no `version`")?;
        let services = listing
            .get("services")
            .and_then(Value::as_array)
            .ok_or("the registry's listing has no `services`")?;
        let known: HashMap<&Authority, &Arc<Instance>> = previous
            .routes
            .values()
            .flat_map(|route| &route.instances)
            .map(|instance| (&instance.authority, instance))
            .collect();
        // Method and template → instances and requirement, in the order the listing gives them.
        type Pending = (Method, Template, Vec<Arc<Instance>>, Requirement);
        let mut pending: Vec<Pending> = Vec::new();
        let mut positions: HashMap<(Method, String), usize> = HashMap::new();
        for service in services {
            let name = service.get("name").and_then(Value::as_str).unwrap_or("?");
            for record in service
                .get("instances")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let serving = record.get("status").and_then(Value::as_bool) != Some(false)
                    && record.get("healthy").and_then(Value::as_bool) != Some(false);
                let address = record.get("address").and_then(Value::as_str);
                let port = record
                    .get("port")
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok());
                let id = record
                    .get("instance")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                let instance = match (address, port) {
                    (Some(address), Some(port)) => {
                        Instance::new(format!("{name}/{id}"), address, port)
                    }
                    _ => None,
                };
                let Some(instance) = instance else {
                    tracing::warn!(
                        service = name,
                        instance = id,
                        "listed instance has no usable address and port: skipped"
                    );
                    continue;
                };
                let instance = match known.get(&instance.authority) {
                    Some(previous) => Arc::clone(previous),
                    None => Arc::new(instance),
                };
                for endpoint in record
                    .get("endpoints")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(endpoint)
                {
                    let (method, path, requirement) = endpoint;
                    let (Ok(method), Ok(template)) = (parse_method(method), Template::parse(path))
                    else {
                        tracing::debug!(service = name, method, path, "unusable endpoint skipped");
                        continue;
                    };
                    let key = (method.clone(), template.as_str().to_owned());
                    let position = *positions.entry(key).or_insert_with(|| {
                        pending.push((method, template, Vec::new(), requirement.clone()));
                        pending.len() - 1
                    });
                    let entry = &mut pending[position];
                    if stricter(&requirement, &entry.3) {
                        tracing::warn!(service = name, route = %format!("{} {}", entry.0, entry.1.as_str()), "instances of one route declare different access requirements: the strictest applies");
                        entry.3 = requirement;
                    }
                    let duplicate = entry.2.iter().any(|i| i.authority == instance.authority);
                    if serving && !duplicate {
                        entry.2.push(Arc::clone(&instance));
                    }
                }
            }
        }
        let mut routes = Index::default();
        for (method, template, instances, requirement) in pending {
            let timeout = timeouts.of(&method, &template);
            let route = Route {
                instances,
                requirement,
                timeout,
                next: AtomicUsize::new(0),
            };
            routes.add(method, template, route);
        }
        Ok(Table {
            version: Some(version),
            routes,
        })
    }

    /// How many routes there are.
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(text: &str) -> Template {
        Template::parse(text).unwrap()
    }

    #[test]
    fn templates_match_whole_segments_without_allocating() {
        let t = template("/foos/{uuid}");
        assert!(t.matches("/foos/1"));
        assert!(!t.matches("/foos"));
        assert!(!t.matches("/foos/"));
        assert!(!t.matches("/foos/1/bars"));
        assert!(!t.matches("foos/1"));
        assert!(template("/").matches("/"));
        assert!(!template("/").matches("/x"));
        assert_eq!(t.captures("/foos/42"), ["42"]);
        assert_eq!(t.parameters().collect::<Vec<_>>(), ["uuid"]);
        assert!(Template::parse("/foos/{uuid").is_err());
    }

    #[test]
    fn the_index_picks_the_most_specific_route() {
        let mut index = Index::default();
        index.add(Method::GET, template("/{kind}/example"), "any-kind");
        index.add(Method::GET, template("/foos/{uuid}"), "by-uuid");
        index.add(Method::GET, template("/foos/example"), "example");
        index.add(Method::GET, template("/"), "root");
        index.add(Method::POST, template("/foos"), "create");
        let found = |method: &Method, path: &str| index.resolve(method, path).map(|(_, v)| *v);
        assert_eq!(found(&Method::GET, "/foos/example"), Some("example"));
        assert_eq!(found(&Method::GET, "/foos/42"), Some("by-uuid"));
        assert_eq!(found(&Method::GET, "/bars/example"), Some("any-kind"));
        assert_eq!(found(&Method::GET, "/"), Some("root"));
        assert_eq!(found(&Method::POST, "/foos/42"), None);
        assert_eq!(found(&Method::GET, "/foos/1/2"), None);
        assert_eq!(index.methods_for("/foos"), [Method::POST]);
    }

    #[test]
    fn a_listing_becomes_routes_of_healthy_instances_with_requirements() {
        let listing = json!({"version": 7, "services": [
            {"name": "foo", "instances": [
                {"name": "foo", "instance": "a", "address": "127.0.0.1", "port": 7001, "status": true, "healthy": true,
                 "endpoints": [["GET", "/foos/{uuid}"], ["POST", "/foos", {"auth": true, "roles": ["admin"]}]]},
                {"name": "foo", "instance": "b", "address": "127.0.0.1", "port": 7002, "status": false, "healthy": false,
                 "endpoints": [["GET", "/foos/{uuid}"], ["POST", "/foos"]]},
                {"name": "foo", "instance": "c", "address": "::1", "port": 7003, "status": true, "healthy": true,
                 "endpoints": [{"method": "get", "path": "/foos/{uuid}"}, ["FETCH", "/x"], ["GET", "/bad/{x"]]},
            ]},
        ]});
        let timeouts =
            Timeouts::new(1000, &BTreeMap::from([("post /foos".to_owned(), 5u64)])).unwrap();
        let table = Table::from_listing(&listing, &timeouts, &Table::default()).unwrap();
        assert_eq!((table.version, table.len()), (Some(7), 2));
        let (_, get) = table.routes.resolve(&Method::GET, "/foos/1").unwrap();
        let authorities: Vec<String> = get
            .instances
            .iter()
            .map(|i| i.authority.to_string())
            .collect();
        assert_eq!(authorities, ["127.0.0.1:7001", "[::1]:7003"]);
        assert!(!get.requirement.auth);
        assert_eq!(get.timeout, Duration::from_millis(1000));
        let (_, post) = table.routes.resolve(&Method::POST, "/foos").unwrap();
        assert!(post.requirement.auth && post.requirement.roles == ["admin"]);
        assert_eq!(post.timeout, Duration::from_millis(5));
        // Ejections survive a rebuild.
        get.instances[0].eject();
        let rebuilt = Table::from_listing(&listing, &timeouts, &table).unwrap();
        let (_, get) = rebuilt.routes.resolve(&Method::GET, "/foos/1").unwrap();
        assert!(!get.instances[0].available() && get.instances[1].available());
        assert!(Table::from_listing(&json!({}), &timeouts, &table).is_err());
        assert!(Timeouts::new(1, &BTreeMap::from([("/foos".to_owned(), 5u64)])).is_err());
    }
}
