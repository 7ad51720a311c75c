//! The service context: what a handler can reach without globals of its own.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::messaging::{BrokerClient, SharedBroker};
use crate::repository::Repository;

tokio::task_local! {
    static CURRENT: Context;
}

/// The messages of one topic an instance parked on its dead-letter topic (`{service}.dead-letter`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct DeadLetters {
    /// How many since the instance started.
    pub count: u64,
    /// Why the last one failed.
    pub last_error: String,
    /// The last one's message id.
    pub last_identifier: Option<uuid::Uuid>,
    /// When the last one was parked.
    pub last_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The running service's components: its name, repository, broker and configuration.
#[derive(Clone, Debug)]
pub struct Context {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    repository: Repository,
    broker: SharedBroker,
    client: BrokerClient,
    config: Value,
    /// Verifies callers' tokens, when the service has an `auth:` section.
    auth: std::sync::OnceLock<crate::auth::Authenticator>,
    /// The view database.
    views: std::sync::OnceLock<crate::views::Views>,
    /// The projections keeping the views up to date.
    projections: std::sync::OnceLock<crate::views::Projections>,
    /// The service's metrics (`GET /metrics`).
    metrics: crate::telemetry::Metrics,
    /// The messages this instance parked on the dead-letter topic since it started, per original topic.
    dead_letters: std::sync::Mutex<std::collections::BTreeMap<String, DeadLetters>>,
    /// One value per type, kept for the service: the instances of the service types it serves (built
    /// at start, read by every handler call) and the runtime's own state (e.g. the saga manager's
    /// locks, made on first use).
    values: RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Context {
    /// A context for the service `name`.
    pub fn new(
        name: impl Into<String>,
        repository: Repository,
        broker: SharedBroker,
        config: Value,
    ) -> Self {
        let name = name.into();
        let client = BrokerClient::new(Arc::clone(&broker), &name);
        Context {
            inner: Arc::new(Inner {
                name,
                repository,
                broker,
                client,
                config,
                auth: std::sync::OnceLock::new(),
                views: std::sync::OnceLock::new(),
                projections: std::sync::OnceLock::new(),
                metrics: crate::telemetry::Metrics::new(),
                dead_letters: Default::default(),
                values: RwLock::default(),
            }),
        }
    }

    /// The context of the current handler.
    pub fn current() -> Result<Context> {
        CURRENT
            .try_with(Context::clone)
            .map_err(|_| Error::NoContext)
    }

    /// Runs `future` with this context, and its repository, as the current ones.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        let repository = self.inner.repository.clone();
        CURRENT.scope(self, repository.scope(future))
    }

    /// Uses `views` as the service's view database (the launcher sets it from `views:`; set once).
    pub fn set_views(&self, views: crate::views::Views) {
        let _ = self.inner.views.set(views);
    }

    /// The service's view database.
    pub fn views(&self) -> Option<&crate::views::Views> {
        self.inner.views.get()
    }

    pub(crate) fn set_projections(&self, projections: crate::views::Projections) {
        let _ = self.inner.projections.set(projections);
    }

    pub(crate) fn projections(&self) -> Option<&crate::views::Projections> {
        self.inner.projections.get()
    }

    /// Verifies callers' tokens from now on (the launcher sets it from `auth:`; set once).
    pub fn set_auth(&self, auth: crate::auth::Authenticator) {
        let _ = self.inner.auth.set(auth);
    }

    /// The token verifier, when the service checks tokens.
    pub fn auth(&self) -> Option<&crate::auth::Authenticator> {
        self.inner.auth.get()
    }

    /// The service's metrics: what `GET /metrics` shows.
    pub fn metrics(&self) -> &crate::telemetry::Metrics {
        &self.inner.metrics
    }

    /// Notes a message of `topic` parked on the dead-letter topic because of `error`.
    pub(crate) fn note_dead_letter(&self, topic: &str, identifier: uuid::Uuid, error: &str) {
        let mut parked = self
            .inner
            .dead_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let entry = parked.entry(topic.to_owned()).or_default();
        entry.count += 1;
        entry.last_error = error.to_owned();
        entry.last_identifier = Some(identifier);
        entry.last_at = Some(chrono::Utc::now());
    }

    /// The messages this instance parked since it started, per original topic.
    pub fn dead_letters(&self) -> std::collections::BTreeMap<String, DeadLetters> {
        self.inner
            .dead_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The service's name (its consumer group on the broker).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The service's repository.
    pub fn repository(&self) -> &Repository {
        &self.inner.repository
    }

    /// The broker.
    pub fn broker(&self) -> &SharedBroker {
        &self.inner.broker
    }

    /// The request/reply client of this service.
    pub fn client(&self) -> &BrokerClient {
        &self.inner.client
    }

    /// The service's one `T`, made on first use: state the runtime keeps per service rather than per
    /// process, so that several services in one process never share it.
    pub(crate) fn shared<T: Any + Default + Send + Sync>(&self) -> Arc<T> {
        if let Some(value) = self.instance::<T>() {
            return value;
        }
        let mut values = self
            .inner
            .values
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = values
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()));
        // The entry under `T`'s id is always a `T`.
        Arc::clone(entry)
            .downcast::<T>()
            .unwrap_or_else(|_| Arc::new(T::default()))
    }

    /// Keeps a built service instance (see [`ServiceEntry`]).
    pub(crate) fn add_instance(&self, instance: Arc<dyn Any + Send + Sync>) {
        let type_id = (*instance).type_id();
        self.inner
            .values
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(type_id, instance);
    }

    /// The instance of service type `T` built when this service started.
    pub fn instance<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        // Read by every handler call: a read lock, shared between concurrent calls.
        let values = self
            .inner
            .values
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let value = values.get(&TypeId::of::<T>())?;
        Arc::clone(value).downcast::<T>().ok()
    }

    /// The application's own settings: the `app:` section of the configuration (with `MINOS_APP_*`
    /// environment overrides), decoded as `T`. A missing section decodes as an empty one, so fields
    /// with defaults or `Option` types need nothing in the file.
    ///
    /// ```
    /// # use minos_runtime as minos;
    /// #[derive(serde::Deserialize)]
    /// struct Partner {
    ///     url: String,
    ///     #[serde(default)]
    ///     pool_size: Option<usize>,
    /// }
    /// # let config = minos::Config::from_yaml("app: {url: 'https://partner.example'}").unwrap();
    /// # let context = minos::Context::new("foo", minos::Repository::memory(),
    /// #     std::sync::Arc::new(minos::messaging::MemoryBroker::new()),
    /// #     serde_json::to_value(&config).unwrap());
    /// let partner: Partner = context.settings()?;
    /// assert_eq!(partner.url, "https://partner.example");
    /// # Ok::<(), minos::Error>(())
    /// ```
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let section = match self.inner.config.get("app") {
            Some(Value::Null) | None => Value::Object(serde_json::Map::new()),
            Some(section) => section.clone(),
        };
        serde_json::from_value(section)
            .map_err(|e| Error::Config(format!("app settings (the `app:` section): {e}")))
    }

    /// The effective configuration, as JSON.
    pub fn config(&self) -> &Value {
        &self.inner.config
    }
}

/// Marks a type declared with `#[command_service]` or `#[query_service]`. Generated.
pub trait Service: Send + Sync + 'static {}

/// What a service's handlers reach through `self`: `self.broker().send("GetBar", json!({..}))`.
pub trait ServiceExt: Service {
    /// The current service context.
    fn context(&self) -> Result<Context> {
        Context::current()
    }

    /// The request/reply client of this service.
    fn broker(&self) -> Result<BrokerClient> {
        Ok(Context::current()?.client().clone())
    }

    /// The repository of this service.
    fn repository(&self) -> Result<Repository> {
        Ok(Context::current()?.repository().clone())
    }
}

impl<T: Service> ServiceExt for T {}

/// The future that builds one service instance.
#[doc(hidden)]
pub type BuildFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<Arc<dyn Any + Send + Sync>>> + Send>>;

/// How a `#[command_service]`/`#[query_service]` type is built when a service serving it starts.
/// Generated.
#[doc(hidden)]
#[derive(Debug)]
pub struct ServiceEntry {
    /// The type's name, as `services:` of the configuration names it.
    pub name: &'static str,
    /// Builds the instance from the service's context.
    pub build: fn(Context) -> BuildFuture,
}

inventory::collect!(ServiceEntry);

/// The registered service types, by name.
pub(crate) fn service_entries() -> impl Iterator<Item = &'static ServiceEntry> {
    inventory::iter::<ServiceEntry>.into_iter()
}

/// A constructor of a service type: `fn() -> Self`, or `async fn(Context) -> Result<Self>` for a
/// service that holds something built from its configuration, repository or broker (possibly failing,
/// which stops the service from starting).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot build a minos service",
    label = "not a service constructor",
    note = "a constructor is `fn() -> Self`, or `async fn(Context) -> minos::Result<Self>` to read the service's settings, repository or broker"
)]
pub trait ServiceInit<T, Args> {
    /// Builds the instance.
    fn build(self, context: Context) -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send>>;
}

impl<F, T> ServiceInit<T, ()> for F
where
    F: FnOnce() -> T,
    T: Send + 'static,
{
    fn build(self, _context: Context) -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send>> {
        let instance = self();
        Box::pin(async move { Ok(instance) })
    }
}

impl<F, Fut, T> ServiceInit<T, (Context,)> for F
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    fn build(self, context: Context) -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send>> {
        Box::pin(self(context))
    }
}

/// The instance of service type `T` of the current handler's service. Generated handlers call it.
#[doc(hidden)]
pub fn service_instance<T: Any + Send + Sync>() -> Result<Arc<T>> {
    Context::current()?.instance::<T>().ok_or_else(|| {
        Error::with_status(
            500,
            format!(
                "`{}` was not built when this service started",
                std::any::type_name::<T>()
            ),
        )
    })
}
