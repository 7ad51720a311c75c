//! Service configuration: defaults, then a YAML file, then `MINOS_*` environment variables.

use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use super::kafka_config::{KafkaConfig, Secret};
pub use crate::auth::AuthConfig;
pub use crate::discovery::{DiscoveryConfig, RegistryConfig};
use crate::error::{Error, Result};
use crate::gateway::GatewayConfig;
use crate::http::HttpSettings;
pub use crate::retention::RetentionConfig;
pub use crate::saga::SagaConfig;
pub use crate::telemetry::{LogConfig, LogFormat, TelemetryConfig};

/// The configuration of a service. Every key has a default, so a service runs with no file at all.
///
/// ```yaml
/// name: foo                       # consumer group and topic prefix of replies
/// storage: sqlite://.minos/foo.db # or `memory`, or `postgres://user@host/db`
/// broker: memory                  # the in-process broker, or kafka://HOST:PORT
/// kafka: { partitions: 3, replication: 1, publish_timeout_ms: 10000, fetch_wait_ms: 5 }
/// http: { host: 0.0.0.0, port: 4545, body_limit: 1048576 }
/// handlers: { retries: 3, request_timeout_ms: 10000 }
/// relay: { batch: 256, poll_interval_ms: 500 }
/// retention: { outbox_ms: 86400000, inbox_ms: 691200000 } # how long finished rows are kept
/// middleware: [log_requests]      # functions marked #[middleware], first listed outermost
/// root_entities: [Foo]            # the root entities it owns (default: all of the binary's)
/// log: info                       # tracing filter, or {filter: info, format: json, aggregate: true}
/// telemetry: { spans: true, metrics: true, otlp: "http://127.0.0.1:4318" }
/// app: { partner_url: "https://…" } # your own settings: `context.settings::<MySettings>()`
/// ```
///
/// Environment variables override the file: `MINOS_NAME`, `MINOS_STORAGE`, `MINOS_BROKER`,
/// `MINOS_HTTP_HOST`, `MINOS_HTTP_PORT`, `MINOS_HTTP_BODY_LIMIT`, `MINOS_HANDLERS_RETRIES`, … (the key
/// path in upper case, joined by `_`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The service's name.
    pub name: String,
    /// Where events, snapshots and the outbox live: `postgres://…`, `sqlite://PATH` or `memory`. Empty: an SQLite file
    /// `.minos/{name}.db` in the working directory.
    pub storage: String,
    /// The broker: `memory` (in-process) or `kafka://HOST:PORT[,HOST:PORT]`.
    pub broker: String,
    /// The view database (CQRS read models): `views: sqlite://PATH`, or a section
    /// `views: {url: …, wait_timeout_ms: …, poll_interval_ms: …}`. By default beside the store: an
    /// SQLite file `NAME.views.db` next to an SQLite store, memory with a memory store, the same
    /// database with a PostgreSQL store.
    pub views: ViewsConfig,
    /// HTTP interface.
    pub http: HttpConfig,
    /// Handler behaviour.
    pub handlers: HandlersConfig,
    /// Outbox relay.
    pub relay: RelayConfig,
    /// Kafka settings, for `broker: kafka://HOST:PORT`.
    pub kafka: KafkaConfig,
    /// How long published outbox messages, inbox entries, ended sagas and transactions are kept.
    pub retention: RetentionConfig,
    /// Sagas and application transactions.
    pub saga: SagaConfig,
    /// Middleware registered with `#[middleware]`, by name, first listed outermost.
    pub middleware: Vec<String>,
    /// The service types (`#[command_service]`/`#[query_service]` impls, by type name) this service
    /// serves; empty: every one linked into the binary. Lets one binary run several services.
    pub services: Vec<String>,
    /// The root entities this service owns (by the name used in events, `Foo`): it answers
    /// `_Get{Type}Snapshots` for them and for no other type. Empty: every `#[root_entity]` of the binary
    /// when the binary runs one service (`services` empty); none when it runs several, which must each
    /// list theirs.
    pub root_entities: Vec<String>,
    /// Logging: a filter (`log: info`, overridden by `RUST_LOG`) or the section `{filter, format:
    /// text|json, aggregate, buffer}` (see [`LogConfig`]).
    pub log: LogConfig,
    /// Spans and trace context, metrics, and the export of spans over OTLP (see [`TelemetryConfig`]).
    pub telemetry: TelemetryConfig,
    /// The registry's settings, when this process runs `minos discovery`.
    pub registry: RegistryConfig,
    /// Registration with a registry (`discovery: {url: http://127.0.0.1:5567}`); off without a URL.
    pub discovery: DiscoveryConfig,
    /// The API gateway's settings, when this process runs `minos gateway` (timeouts, CORS, composed
    /// routes: see [`crate::gateway`]).
    pub gateway: GatewayConfig,
    /// Access tokens (`auth: {secret: …}` or `{jwks: https://…}`): the service verifies the token of
    /// every request and enforces the routes' `auth`/`roles`. Without it nothing is checked
    /// (development only).
    pub auth: AuthConfig,
    /// The application's own settings, free-form (`app: {partner_url: …, pool_size: 4}`), read as a
    /// type of your own with [`Context::settings`](crate::Context::settings). Environment variables
    /// `MINOS_APP_*` override them (`MINOS_APP_PARTNER_URL`). Every other key is the framework's, and a
    /// misspelled one is refused.
    pub app: serde_json::Value,
}

/// HTTP interface settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    pub host: String,
    /// Port (0 picks a free one).
    pub port: u16,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Worker threads (default: one per core).
    pub workers: Option<usize>,
    /// Seconds shutdown waits for requests in flight.
    pub shutdown_timeout_secs: u64,
}

/// View database settings (`views:`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct ViewsConfig {
    /// `sqlite://PATH`, `postgres://USER@HOST/DB[?schema=NAME]` or `memory`; empty: beside the store.
    pub url: String,
    /// How long a query presenting a `minos-position` header waits for the views to catch up before
    /// answering 503.
    pub wait_timeout_ms: u64,
    /// How often a projection looks for new events when no message woke it up (events of other
    /// processes, missed wake-ups).
    pub poll_interval_ms: u64,
}

impl Default for ViewsConfig {
    fn default() -> Self {
        ViewsConfig {
            url: String::new(),
            wait_timeout_ms: 5_000,
            poll_interval_ms: 1_000,
        }
    }
}

/// `views:` as written: a URL, or the whole section (unknown keys refused, as everywhere).
impl TryFrom<serde_json::Value> for ViewsConfig {
    type Error = String;

    fn try_from(value: serde_json::Value) -> std::result::Result<Self, String> {
        let mut config = ViewsConfig::default();
        match value {
            serde_json::Value::String(url) => config.url = url,
            serde_json::Value::Object(section) => {
                for (key, value) in section {
                    let number = || {
                        value.as_u64().ok_or_else(|| {
                            format!("views.{key}: expected a whole number of milliseconds, found {value}")
                        })
                    };
                    match key.as_str() {
                        "url" => {
                            config.url = value
                                .as_str()
                                .ok_or_else(|| format!("views.url: expected a URL, found {value}"))?
                                .to_owned()
                        }
                        "wait_timeout_ms" => config.wait_timeout_ms = number()?,
                        "poll_interval_ms" => config.poll_interval_ms = number()?,
                        _ => {
                            return Err(format!(
                                "unknown key `views.{key}`: expected `url`, `wait_timeout_ms` or `poll_interval_ms`"
                            ))
                        }
                    }
                }
            }
            other => {
                return Err(format!(
                    "views: expected a URL or a section {{url, wait_timeout_ms, poll_interval_ms}}, found {other}"
                ))
            }
        }
        Ok(config)
    }
}

/// Handler settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandlersConfig {
    /// Retries of a failing event handler before the failure is logged.
    pub retries: u32,
    /// How long a request through the broker waits for its reply.
    pub request_timeout_ms: u64,
    /// Broker messages handled at once (messages with one key, e.g. one root's events, stay in order).
    pub workers: usize,
}

/// Outbox relay settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Rows published per round.
    pub batch: usize,
    /// How often the relay looks for rows written by other processes.
    pub poll_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "minos".into(),
            storage: String::new(),
            broker: "memory".into(),
            views: ViewsConfig::default(),
            http: HttpConfig::default(),
            handlers: HandlersConfig::default(),
            relay: RelayConfig::default(),
            kafka: KafkaConfig::default(),
            retention: RetentionConfig::default(),
            saga: SagaConfig::default(),
            middleware: Vec::new(),
            services: Vec::new(),
            root_entities: Vec::new(),
            log: LogConfig::default(),
            telemetry: TelemetryConfig::default(),
            registry: RegistryConfig::default(),
            discovery: DiscoveryConfig::default(),
            gateway: GatewayConfig::default(),
            auth: AuthConfig::default(),
            app: serde_json::Value::Object(serde_json::Map::new()),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            host: "0.0.0.0".into(),
            port: 4545,
            body_limit: 1024 * 1024,
            workers: None,
            shutdown_timeout_secs: 30,
        }
    }
}

impl Default for HandlersConfig {
    fn default() -> Self {
        HandlersConfig {
            retries: 3,
            request_timeout_ms: 10_000,
            workers: 8,
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch: 256,
            poll_interval_ms: 500,
        }
    }
}

const SECTIONS: &[&str] = &[
    "views",
    "log",
    "telemetry",
    "http",
    "handlers",
    "relay",
    "kafka",
    "retention",
    "saga",
    "registry",
    "discovery",
    "gateway",
    "auth",
    "app",
];

/// `MINOS_HTTP_BODY_LIMIT` → `http.body_limit`; `None` for variables that are not configuration keys.
fn env_key(var: &str) -> Option<String> {
    let key = var.to_ascii_lowercase();
    for section in SECTIONS {
        if let Some(rest) = key.strip_prefix(&format!("{section}_")) {
            return Some(format!("{section}.{rest}"));
        }
    }
    [
        "name",
        "storage",
        "broker",
        "views",
        "middleware",
        "services",
        "root_entities",
        "log",
    ]
    .contains(&key.as_str())
    .then_some(key)
}

/// The view database beside `storage`: `sqlite://a/foo.db` → `sqlite://a/foo.views.db`, `memory` →
/// `memory`, a PostgreSQL URL → the same database.
fn default_views(storage: &str) -> String {
    match storage.strip_prefix("sqlite://") {
        Some(path) => {
            let stem = path.strip_suffix(".db").unwrap_or(path);
            format!("sqlite://{stem}.views.db")
        }
        None => storage.to_owned(),
    }
}

impl Config {
    /// Defaults, overridden by the environment.
    pub fn from_env() -> Result<Self> {
        Self::extract(Figment::from(Serialized::defaults(Config::default())))
    }

    /// Defaults, then the YAML file at `path` (which must exist), then the environment.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(Error::Config(format!(
                "no configuration file at {}",
                path.display()
            )));
        }
        Self::extract(
            Figment::from(Serialized::defaults(Config::default())).merge(Yaml::file(path)),
        )
    }

    /// Parses YAML text on top of the defaults (no environment).
    pub fn from_yaml(text: &str) -> Result<Self> {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Yaml::string(text))
            .extract::<Config>()
            .map_err(|e| Error::Config(e.to_string()))?
            .validated()
    }

    fn extract(figment: Figment) -> Result<Self> {
        let env = Env::prefixed("MINOS_").filter_map(|key| env_key(key.as_str()).map(Into::into));
        figment
            .merge(env)
            .extract::<Config>()
            .map_err(|e| Error::Config(e.to_string()))?
            .validated()
    }

    fn validated(mut self) -> Result<Self> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return Err(Error::Config(format!(
                "name `{}` must be letters, digits, `_` or `-` (it names the consumer group and reply topics)",
                self.name
            )));
        }
        if self.storage.is_empty() {
            self.storage = format!("sqlite://.minos/{}.db", self.name);
        }
        if self.http.body_limit == 0 {
            return Err(Error::Config("http.body_limit must be above 0".into()));
        }
        Ok(self)
    }

    /// The view database's URL: `views.url`, else beside the store (see [`views`](Self::views)).
    pub fn views_url(&self) -> String {
        if !self.views.url.is_empty() {
            return self.views.url.clone();
        }
        match self.storage.as_str() {
            "" | "memory" => "memory".into(),
            storage => default_views(storage),
        }
    }

    /// The root entities this service owns (see [`root_entities`](Self::root_entities)), checked
    /// against the binary's `#[root_entity]` types.
    pub fn owned_root_entities(&self) -> Result<Vec<&'static str>> {
        let declared = crate::registry::root_entity_names();
        if self.root_entities.is_empty() {
            if self.services.is_empty() {
                return Ok(declared);
            }
            tracing::warn!(
                service = %self.name,
                "`services` picks some of the binary's services but `root_entities` lists none: \
                 this service answers no snapshot queries"
            );
            return Ok(Vec::new());
        }
        self.root_entities
            .iter()
            .map(|name| {
                declared
                    .iter()
                    .find(|declared| **declared == name.as_str())
                    .copied()
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "root_entities: `{name}` is not a #[root_entity] of this binary (it has: {})",
                            declared.join(", ")
                        ))
                    })
            })
            .collect()
    }

    /// The HTTP settings.
    pub(crate) fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            host: self.http.host.clone(),
            port: self.http.port,
            body_limit: self.http.body_limit,
            workers: self.http.workers,
            shutdown_timeout: Duration::from_secs(self.http.shutdown_timeout_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_database_is_beside_the_store_unless_set() {
        let mut config = Config::from_yaml("name: foo").unwrap();
        assert_eq!(config.views_url(), "sqlite://.minos/foo.views.db");
        // Follows the store when it is changed after loading.
        config.storage = "postgres://u@h/db?schema=s".into();
        assert_eq!(config.views_url(), "postgres://u@h/db?schema=s");
        config.storage = "memory".into();
        assert_eq!(config.views_url(), "memory");
        let config = Config::from_yaml("views: sqlite://v.db").unwrap();
        assert_eq!(config.views_url(), "sqlite://v.db");
        let config = Config::from_yaml("views: {url: memory, wait_timeout_ms: 10}").unwrap();
        assert_eq!(
            (
                config.views_url().as_str(),
                config.views.wait_timeout_ms,
                config.views.poll_interval_ms
            ),
            ("memory", 10, 1000)
        );
        assert!(Config::from_yaml("views: {url: memory, wait: 1}").is_err());
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::from_yaml("").unwrap();
        assert_eq!(config.http.port, 4545);
        assert_eq!(config.storage, "sqlite://.minos/minos.db");
        assert_eq!(config.broker, "memory");
    }

    #[test]
    fn yaml_sets_nested_keys_and_unknown_keys_are_errors() {
        let config =
            Config::from_yaml("name: foo\nhttp:\n  port: 8080\nmiddleware: [a, b]\n").unwrap();
        assert_eq!((config.name.as_str(), config.http.port), ("foo", 8080));
        assert_eq!(config.storage, "sqlite://.minos/foo.db");
        assert_eq!(config.middleware, ["a", "b"]);
        let error = Config::from_yaml("htp:\n  port: 1\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("htp"), "{error}");
        assert!(Config::from_yaml("name: 'a b'").is_err());
        assert!(Config::from_yaml("http:\n  port: not-a-port\n").is_err());
    }

    #[test]
    fn environment_names_map_to_keys() {
        assert_eq!(
            env_key("HTTP_BODY_LIMIT").as_deref(),
            Some("http.body_limit")
        );
        assert_eq!(env_key("NAME").as_deref(), Some("name"));
        assert_eq!(env_key("MACROS_DEBUG"), None);
        assert_eq!(env_key("ROOT_ENTITIES").as_deref(), Some("root_entities"));
    }

    #[test]
    fn the_app_section_is_free_and_takes_environment_overrides() {
        assert_eq!(
            env_key("APP_PARTNER_URL").as_deref(),
            Some("app.partner_url")
        );
        let config = Config::from_yaml("app: {partner_url: x, pool: {size: 4}}").unwrap();
        assert_eq!(config.app["pool"]["size"], serde_json::json!(4));
        // A variable only this test sets.
        std::env::set_var("MINOS_APP_PARTNER_URL", "https://partner.example");
        let config = Config::from_env();
        std::env::remove_var("MINOS_APP_PARTNER_URL");
        assert_eq!(
            config.unwrap().app["partner_url"],
            serde_json::json!("https://partner.example")
        );
    }
}
