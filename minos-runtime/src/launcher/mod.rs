//! The launcher: builds a service from its configuration and runs it until SIGINT or SIGTERM.

mod config;
mod kafka_config;

#[cfg(feature = "kafka")]
pub(crate) use kafka_config::masked;

pub use config::{
    AuthConfig, Config, DiscoveryConfig, HandlersConfig, HttpConfig, KafkaConfig, LogConfig,
    LogFormat, RegistryConfig, RelayConfig, RetentionConfig, SagaConfig, Secret, TelemetryConfig,
};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::discovery::{RegistrationHandle, SelfRegistration};
use crate::error::{Error, Result};
use crate::http::HttpServer;
use crate::messaging::topics;
use crate::messaging::{MemoryBroker, OutboxRelay, RelayHandle, SharedBroker};
use crate::repository::Repository;
use crate::routing::{
    middleware, registered_middleware, Context, Dispatcher, DispatcherHandle, Middleware, Next,
    Request, Response, RouteTable, SystemHandler,
};
use crate::saga::SagaManager;
use crate::scheduler::SchedulerHandle;
use crate::transaction::{TransactionCommand, Transactions};

/// Builds and runs a service: storage, broker, outbox relay, broker dispatcher, scheduler and HTTP.
///
/// ```no_run
/// fn main() -> minos_runtime::Result<()> {
///     minos_runtime::Launcher::new()?.run()
/// }
/// ```
pub struct Launcher {
    config: Config,
    middleware: Vec<Middleware>,
    broker: Option<SharedBroker>,
    repository: Option<Repository>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("config", &self.config)
            .finish()
    }
}

impl Launcher {
    /// Default configuration with `MINOS_*` environment overrides.
    pub fn new() -> Result<Self> {
        Ok(Self::with_config(Config::from_env()?))
    }

    /// The configuration file at `path` with `MINOS_*` environment overrides.
    pub fn from_config(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Ok(Self::with_config(Config::load(path)?))
    }

    /// Exactly this configuration.
    pub fn with_config(config: Config) -> Self {
        Launcher {
            config,
            middleware: Vec::new(),
            broker: None,
            repository: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Changes the configuration.
    pub fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// Adds a middleware: `async fn(Request, Next) -> Result<Response>`. Middleware added here run
    /// outside the ones named in the configuration, in the order added.
    pub fn middleware<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response>> + Send + 'static,
    {
        self.middleware.push(middleware(f));
        self
    }

    /// Shares a broker with other services of this process (instead of `broker:` of the configuration).
    pub fn broker(mut self, broker: SharedBroker) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Uses this repository (instead of `storage:` of the configuration).
    pub fn repository(mut self, repository: Repository) -> Self {
        self.repository = Some(repository);
        self
    }

    /// Starts the service on a new runtime and runs it until SIGINT or SIGTERM, then shuts down cleanly.
    pub fn run(self) -> Result<()> {
        let telemetry =
            crate::telemetry::init(&self.config.name, &self.config.log, &self.config.telemetry)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let service = self.start().await?;
            service.wait_for_signal().await?;
            service.stop().await;
            telemetry.flush();
            Ok(())
        })
    }

    fn open_broker(&self) -> Result<SharedBroker> {
        let broker = self.config.broker.as_str();
        if broker == "memory" {
            return Ok(Arc::new(MemoryBroker::new()));
        }
        #[cfg(feature = "kafka")]
        if let Some(bootstrap) = broker.strip_prefix("kafka://") {
            return Ok(Arc::new(crate::messaging::KafkaBroker::connect(
                bootstrap,
                (&self.config.kafka).into(),
            )?));
        }
        Err(Error::Config(format!(
            "unsupported broker `{broker}`: use `kafka://HOST:PORT` or `memory`"
        )))
    }

    fn middleware_chain(&self) -> Result<Arc<[Middleware]>> {
        let mut chain = self.middleware.clone();
        for name in &self.config.middleware {
            let found = registered_middleware(name).ok_or_else(|| {
                Error::Config(format!(
                    "middleware `{name}` is not registered: mark an async fn with #[middleware]"
                ))
            })?;
            chain.push(found);
        }
        Ok(chain.into())
    }

    /// Starts everything and returns the running service.
    pub async fn start(self) -> Result<RunningService> {
        // Refuse to start with an invalid saga definition.
        crate::saga::registered()?;
        let table = Arc::new(RouteTable::collect_for(&self.config.services)?);
        let chain = self.middleware_chain()?;
        let context = self.open_context().await?;
        context.metrics().set_enabled(self.config.telemetry.metrics);
        crate::telemetry::trace::set_enabled(self.config.telemetry.spans);
        crate::telemetry::ship::start(
            Arc::clone(context.broker()),
            Some(context.metrics().clone()),
        );
        let auth = crate::auth::Authenticator::from_config(&self.config.auth)?;
        match &auth {
            Some(auth) => context.set_auth(auth.clone()),
            None if table.entries().iter().any(|e| e.access.needs_token()) => tracing::warn!(
                service = %self.config.name,
                "no `auth:` section: access tokens are not checked and routes declared `auth` or `roles` are open \
                 (development only)"
            ),
            None => {}
        }
        build_services(&table, &context).await?;
        tracing::info!(service = %self.config.name, storage = %self.config.storage, broker = %self.config.broker, "starting; routes:\n{}", table.describe());
        let sagas = SagaManager::new(context.clone());
        // Checked (and warned about) once: the types whose snapshots and events this service answers.
        let owned = self.config.owned_root_entities()?;
        let dispatcher = self
            .start_dispatcher(&table, &chain, &context, &sagas, &owned)
            .await?;
        let projections = self.start_views(&table, &chain, &context, &owned).await?;
        let repository = context.repository();
        let tidy =
            crate::saga::spawn_jobs(repository.transactions(), sagas.clone(), &self.config.saga);
        let relay = OutboxRelay::new(
            repository.store().clone(),
            Arc::clone(context.broker()),
            repository.commits(),
        )
        .batch(self.config.relay.batch)
        .poll_interval(Duration::from_millis(self.config.relay.poll_interval_ms))
        .metrics(context.metrics().clone())
        .spawn();
        let scheduler = crate::scheduler::spawn(&table, Arc::clone(&chain), context.clone())
            .map_err(Error::Routes)?;
        let trimmer = crate::memory::spawn();
        let retention = crate::retention::spawn(
            repository.store().clone(),
            &self.config.retention,
            context.metrics().clone(),
        );
        let mut system_routes = crate::saga::http_routes().to_vec();
        system_routes.extend(crate::views::http_routes());
        system_routes.extend(crate::messaging::dead_letters::http_routes());
        let http = crate::http::serve(
            Arc::clone(&table),
            chain,
            context.clone(),
            self.config.http_settings(),
            &system_routes,
            &owned,
        )
        .await?;
        tracing::info!(
            "service `{}` listening on http://{}",
            self.config.name,
            http.addr()
        );
        // Ready to serve: tell the registry, if there is one.
        let admin_role = &self.config.auth.admin_role;
        let endpoints = table
            .rest_routes()
            .map(|(method, path, entry)| {
                (
                    method.to_owned(),
                    path.to_owned(),
                    entry.access.requirement(admin_role),
                )
            })
            .collect();
        let registration = SelfRegistration::new(
            &self.config.discovery,
            &self.config.name,
            &self.config.http.host,
            http.addr().port(),
            endpoints,
            auth,
        )?
        .map(SelfRegistration::spawn);
        Ok(RunningService {
            context,
            registration,
            http,
            dispatcher: Some(dispatcher),
            projections,
            relay,
            scheduler,
            tidy,
            trimmer,
            retention,
        })
    }

    /// The service's context: its repository and broker (given, or opened from the configuration).
    async fn open_context(&self) -> Result<Context> {
        let repository = match &self.repository {
            Some(repository) => repository.clone(),
            None => Repository::open(&self.config.storage).await?,
        };
        let broker = match &self.broker {
            Some(broker) => Arc::clone(broker),
            None => self.open_broker()?,
        };
        let config_json = serde_json::to_value(&self.config).unwrap_or_default();
        Ok(Context::new(
            self.config.name.clone(),
            repository,
            broker,
            config_json,
        ))
    }

    /// Opens the view database when the program has views, and starts the projections of the views
    /// this service's handlers write.
    async fn start_views(
        &self,
        table: &Arc<RouteTable>,
        chain: &Arc<[Middleware]>,
        context: &Context,
        owned: &[&'static str],
    ) -> Result<Option<crate::views::Projections>> {
        let plans = crate::views::ViewPlan::collect(table)?;
        if plans.is_empty() && crate::views::registered().next().is_none() {
            return Ok(None);
        }
        let views = crate::views::Views::open(&self.config.views_url()).await?;
        // Views of the program that no handler here writes can still be read (empty unless another
        // process writes them into a shared database).
        let planned: Vec<&str> = plans.iter().map(|p| p.def.name).collect();
        views.create_missing(&planned).await?;
        context.set_views(views.clone());
        if plans.is_empty() {
            return Ok(None);
        }
        let owned = owned.iter().map(|name| (*name).to_owned()).collect();
        let projections = crate::views::Projections::start(
            views,
            context.clone(),
            Arc::clone(chain),
            plans,
            owned,
            Duration::from_millis(self.config.views.poll_interval_ms.max(10)),
            Duration::from_millis(self.config.views.wait_timeout_ms),
        )
        .await?;
        context.set_projections(projections.clone());
        Ok(Some(projections))
    }

    /// Subscribes to the routes' topics and the runtime's own, and handles them in the background.
    /// Besides its routes, every service answers `_Get{Type}Snapshots` for its root entities
    /// (reference resolution), the commands of its application transactions, and the replies to its
    /// sagas' remote steps.
    async fn start_dispatcher(
        &self,
        table: &Arc<RouteTable>,
        chain: &Arc<[Middleware]>,
        context: &Context,
        sagas: &SagaManager,
        owned: &[&'static str],
    ) -> Result<DispatcherHandle> {
        let mut dispatcher = Dispatcher::new(Arc::clone(table), Arc::clone(chain), context.clone())
            .retries(self.config.handlers.retries)
            .workers(self.config.handlers.workers)
            .snapshots_of(owned)
            .events_of(owned);
        for command in TransactionCommand::ALL {
            let topic = topics::transaction_command(command, &self.config.name);
            let handler = transaction_command_handler(context.repository().transactions(), command);
            dispatcher = dispatcher.system(topic, handler);
        }
        let replies = sagas.clone();
        dispatcher = dispatcher.system(
            sagas.reply_topic(),
            Arc::new(move |message| {
                let sagas = replies.clone();
                Box::pin(async move {
                    sagas.handle_reply(message).await?;
                    Ok(Response::empty())
                })
            }),
        );
        // Sagas and reference resolution send requests: be ready for their replies from the start.
        context.client().prepare().await?;
        let mut topics = table.broker_topics();
        topics.extend(dispatcher.system_topics());
        topics.sort();
        let subscription = context
            .broker()
            .subscribe(&self.config.name, &topics)
            .await?;
        Ok(dispatcher.spawn(subscription))
    }
}

/// Builds one instance of each service type the table serves, with its constructor, into the context.
async fn build_services(table: &RouteTable, context: &Context) -> Result<()> {
    let served: std::collections::BTreeSet<&str> =
        table.entries().iter().map(|entry| entry.service).collect();
    let mut built = std::collections::BTreeSet::new();
    for entry in crate::routing::service_entries() {
        if !served.contains(entry.name) || !built.insert(entry.name) {
            continue;
        }
        let instance =
            (entry.build)(context.clone())
                .await
                .map_err(|error| Error::ServiceInit {
                    service: entry.name.to_owned(),
                    source: Box::new(error),
                })?;
        context.add_instance(instance);
    }
    Ok(())
}

/// Answers `_{Verb}{Service}Transaction`: runs the command, replies `{"uuid", "status"}`.
fn transaction_command_handler(
    transactions: Transactions,
    command: TransactionCommand,
) -> SystemHandler {
    Arc::new(move |message| {
        let transactions = transactions.clone();
        Box::pin(async move {
            let uuid = transaction_uuid(&message.payload.content)?;
            let status = transactions.run(command, uuid).await?;
            Ok(Response::json(
                serde_json::json!({"uuid": uuid, "status": status}),
            ))
        })
    })
}

/// The transaction a `_Reserve/_Commit/_Reject{Service}Transaction` command names: a uuid string, or
/// `{"uuid": ...}`.
fn transaction_uuid(content: &serde_json::Value) -> Result<uuid::Uuid> {
    let text = content
        .as_str()
        .or_else(|| content.get("uuid").and_then(serde_json::Value::as_str))
        .ok_or_else(|| {
            Error::bad_request("a transaction command takes the transaction's uuid as content")
        })?;
    uuid::Uuid::parse_str(text)
        .map_err(|e| Error::bad_request(format!("`{text}` is not a transaction uuid: {e}")))
}

/// A started service.
#[derive(Debug)]
pub struct RunningService {
    context: Context,
    registration: Option<RegistrationHandle>,
    http: HttpServer,
    dispatcher: Option<DispatcherHandle>,
    projections: Option<crate::views::Projections>,
    relay: RelayHandle,
    scheduler: SchedulerHandle,
    tidy: tokio::task::JoinHandle<()>,
    trimmer: tokio::task::JoinHandle<()>,
    retention: Option<tokio::task::JoinHandle<()>>,
}

impl RunningService {
    /// The HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// The service context.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Waits for SIGINT (Ctrl-C) or SIGTERM.
    pub async fn wait_for_signal(&self) -> Result<()> {
        shutdown_signal().await?;
        tracing::info!("shutting down");
        Ok(())
    }

    /// Stops accepting requests, lets the ones in flight finish, stops the schedules and the dispatcher,
    /// and publishes what is left in the outbox.
    pub async fn stop(self) {
        // Out of the registry first, so no new request is sent here while this instance drains.
        if let Some(registration) = self.registration {
            registration.stop().await;
        }
        self.http.stop().await;
        self.scheduler.stop();
        self.tidy.abort();
        self.trimmer.abort();
        if let Some(retention) = &self.retention {
            retention.abort();
        }
        // On the in-process broker nothing more goes out to consumers that are about to stop; what
        // is pending waits in the outbox for the next start.
        self.relay.hold().await;
        if let Some(dispatcher) = self.dispatcher {
            dispatcher.stop().await;
        }
        if let Some(projections) = self.projections {
            projections.stop().await;
        }
        // The inbox entries the store holds back are in the inbox before the service ends.
        if let Err(error) = self.context.repository().store().settle().await {
            tracing::warn!(%error, "could not record the last inbox entries");
        }
        self.relay.stop().await;
        tracing::info!("service `{}` stopped", self.context.name());
        // Its last log lines reach the log topic too (log.aggregate).
        crate::telemetry::ship::flush(Duration::from_secs(2)).await;
    }
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM, the signals a process is asked to stop with.
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Logs to stdout as text with `RUST_LOG`, else `filter`; does nothing if a subscriber is already set.
/// A service started by [`Launcher::run`] sets up logging from its `log:` and `telemetry:` sections
/// instead (see [`crate::telemetry::init`]).
pub fn init_logging(filter: &str) {
    let _ = crate::telemetry::init(
        "minos",
        &LogConfig::from(filter),
        &TelemetryConfig::default(),
    );
}

/// A duration as written on a command line: `90s`, `30m`, `12h`, `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{text}`: the unit is s, m, h or d (90s, 30m, 12h, 7d)"
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is not a duration like 90s, 30m, 12h or 7d"))
}
