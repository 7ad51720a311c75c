//! The `minos` command: creating projects and services, looking inside them, and the infrastructure a
//! Minos system runs beside its services.
//!
//! `minos new project NAME [--minos-path DIR]` writes a Cargo workspace for microservices; `minos new
//! microservice NAME` adds a service crate to it (root entity, command and query services, a view,
//! config.yml, given/when/then tests). `minos set database|broker BACKEND` edits services'
//! `config.yml`; `minos deploy [compose|kubernetes]` writes Dockerfiles and a compose file or manifests.
//!
//! `minos events TYPE UUID`, `minos sagas [show UUID]` read a service's store (`--storage`, `--config`);
//! `minos dead-letters [list|show ID|redrive ID…]` reads and re-drives a service's parked messages.
//!
//! `minos discovery` runs the service registry (port 5567 by default), configured like any service:
//! `--config config.yml`, then `MINOS_*` environment variables (`MINOS_STORAGE`, `MINOS_HTTP_PORT`,
//! `MINOS_REGISTRY_LEASE_TTL_MS`, …).
//!
//! `minos views` shows a running service's views (state, positions, lag) and rebuilds one from
//! history: `minos views --url http://localhost:4545`, `minos views rebuild FooListing`.
//!
//! `minos logs` follows the log records services ship to the broker (`log.aggregate`):
//! `minos logs --trace 4bf92f35… --no-follow`, `minos logs --service foo --level warn --since 10m`.
//!
//! `minos dashboard` serves the dashboard (port 5568): the registry's services with their health,
//! sagas, dead letters, outbox backlog, view lag and one trace's log lines.
//!
//! `minos gateway` runs the API gateway (port 5566 by default), configured the same way: the registry
//! from `discovery.url` (`MINOS_DISCOVERY_URL`, default `http://127.0.0.1:5567`), the `gateway:` section
//! (`MINOS_GATEWAY_TIMEOUT_MS`, …), `http.body_limit`, and `auth:` to check tokens at the edge.

mod deploy;
mod logs;
mod ops;
mod project;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use minos::discovery::{serve_registry, Registry};
use minos::{Config, Repository};

#[derive(Parser)]
#[command(
    name = "minos",
    version,
    about = "Create Minos projects and microservices, and run the infrastructure of a Minos system"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a project (a Cargo workspace for microservices) or a microservice in the current
    /// project.
    #[command(subcommand)]
    New(project::New),
    /// Switch a microservice's database or broker (edits its `config.yml`).
    #[command(subcommand)]
    Set(project::Set),
    /// Write what deploying the project needs: a Dockerfile per service and a compose file
    /// (`compose`, the default) or Kubernetes manifests (`kubernetes`), under `deploy/`.
    Deploy {
        /// What to write.
        #[arg(value_enum, default_value_t)]
        target: deploy::Target,
    },
    /// Print a root entity's events, oldest first, from a service's store: `minos events Foo
    /// 1a2b… --config config.yml`.
    Events(ops::EventsArgs),
    /// List the saga executions of a service's store, or show one with its steps and error.
    Sagas(ops::SagasArgs),
    /// List, show and re-drive the messages a service parked after its handlers failed (its
    /// `{service}.dead-letter` topic on Kafka).
    DeadLetters(ops::DeadLettersArgs),
    /// Print a signed access token (JWT) for development and scripts: with the `auth.secret` of the
    /// configuration (`MINOS_AUTH_SECRET`) or `--secret` (HS256), or a private key file (`--key`).
    Token(TokenArgs),
    /// Run the service registry: services register their REST endpoints with it and it resolves a
    /// request to a healthy instance (HTTP API compatible with the original Minos registry).
    Discovery {
        /// The configuration file (YAML); without it, defaults and `MINOS_*` variables.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen on this port (default 5567; overrides the configuration).
        #[arg(long, short)]
        port: Option<u16>,
        /// Where registrations are kept (default `sqlite://.minos/discovery.db`; `postgres://…` lets
        /// several registry processes share them).
        #[arg(long)]
        storage: Option<String>,
    },
    /// Follow the log records services ship to the broker (`log: {aggregate: true}`), filtered by
    /// service, level, trace and time.
    Logs(logs::LogsArgs),
    /// Serve the dashboard (port 5568 by default): services and instances from the registry with
    /// their health and routes, sagas, dead letters, outbox backlog, view lag, and one trace's log
    /// lines (read from the broker's log topic).
    Dashboard {
        /// The configuration file (YAML); without it, defaults and `MINOS_*` variables (`auth:` makes
        /// the dashboard ask for an admin token).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen on this port (default 5568; overrides the configuration).
        #[arg(long, short)]
        port: Option<u16>,
        /// The registry (default `discovery.url`, else http://127.0.0.1:5567).
        #[arg(long)]
        registry: Option<String>,
        /// The Kafka broker services ship their log records to (default the configuration's
        /// `broker` when it is Kafka; without one the dashboard shows no log lines).
        #[arg(long)]
        broker: Option<String>,
    },
    /// Show a running service's views (state, position and lag per source), or rebuild one from
    /// history.
    Views(ViewsArgs),
    /// Run the API gateway: one address for every service's REST routes, routed with the registry's
    /// table (kept by long-polling it), with retries, timeouts, CORS, token checks and composed routes
    /// (the `gateway:` section).
    Gateway {
        /// The configuration file (YAML); without it, defaults and `MINOS_*` variables.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen on this port (default 5566; overrides the configuration).
        #[arg(long, short)]
        port: Option<u16>,
    },
}

/// The exit of a developer command: its message alone on failure.
fn finish(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("minos: {message}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::New(what) => return finish(project::new(what)),
        Command::Set(what) => return finish(project::set(what)),
        Command::Deploy { target } => return finish(deploy::deploy(target)),
        Command::Events(args) => ops::events(args),
        Command::Sagas(args) => ops::sagas(args),
        Command::DeadLetters(args) => ops::dead_letters(args),
        Command::Discovery {
            config,
            port,
            storage,
        } => discovery(config, port, storage),
        Command::Token(args) => token(args),
        Command::Gateway { config, port } => gateway(config, port),
        Command::Views(args) => views(args),
        Command::Logs(args) => logs::logs(args),
        Command::Dashboard {
            config,
            port,
            registry,
            broker,
        } => dashboard(config, port, registry, broker),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("minos: {error}");
            ExitCode::FAILURE
        }
    }
}

#[derive(clap::Args)]
struct ViewsArgs {
    /// The service (default `http://127.0.0.1:4545`).
    #[arg(long, default_value = "http://127.0.0.1:4545", global = true)]
    url: String,
    /// An access token with the admin role, when the service checks tokens (default
    /// `MINOS_TOKEN`).
    #[arg(long, env = "MINOS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    action: Option<ViewsAction>,
}

#[derive(Subcommand)]
enum ViewsAction {
    /// Each view's state, position and lag (the default).
    List,
    /// Empty a view and build it again from the whole history.
    Rebuild {
        /// The view's name (`FooListing`).
        name: String,
    },
}

fn views(args: ViewsArgs) -> minos::Result<()> {
    let authority = args
        .url
        .trim_end_matches('/')
        .strip_prefix("http://")
        .ok_or_else(|| {
            minos::Error::Config(format!(
                "--url `{}`: write the service's address as http://HOST:PORT",
                args.url
            ))
        })?
        .to_owned();
    let (method, path) = match &args.action {
        None | Some(ViewsAction::List) => ("GET", "/views".to_owned()),
        Some(ViewsAction::Rebuild { name }) => ("POST", format!("/views/{name}/rebuild")),
    };
    let authorization = args.token.as_ref().map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = authorization
        .as_deref()
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime
        .block_on(minos_runtime::net::request_with(
            &authority,
            method,
            &path,
            &headers,
            None,
            std::time::Duration::from_secs(30),
        ))
        .map_err(|e| {
            minos::Error::Config(format!("{e} (is the service running at {}?)", args.url))
        })?;
    let body: minos::serde_json::Value =
        minos::serde_json::from_slice(&answer.body).unwrap_or(minos::serde_json::Value::Null);
    if answer.status >= 400 {
        let message = body["error"]
            .as_str()
            .map_or_else(|| answer.text(), str::to_owned);
        return Err(minos::Error::with_status(
            answer.status,
            format!("{method} {path}: {} {message}", answer.status),
        ));
    }
    let views = match &body {
        minos::serde_json::Value::Array(views) => views.clone(),
        view => vec![view.clone()],
    };
    if views.is_empty() {
        println!("{} keeps no views", args.url);
    }
    for view in views {
        println!(
            "{:<24} {:<9} table {}",
            view["name"].as_str().unwrap_or("?"),
            view["state"].as_str().unwrap_or("?"),
            view["table"].as_str().unwrap_or("?")
        );
        for source in view["sources"].as_array().into_iter().flatten() {
            let error = source["error"]
                .as_str()
                .map(|e| format!("  error: {e}"))
                .unwrap_or_default();
            println!(
                "  {:<22} position {:<14} behind {:<8} applied {}{error}",
                source["source"].as_str().unwrap_or("?"),
                source["position"].as_str().unwrap_or("?"),
                source["behind"],
                source["applied"],
            );
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The subject (`sub`): who the token speaks for.
    #[arg(long)]
    sub: String,
    /// Roles, comma-separated (`--roles admin,sales`), written under `auth.roles_claim`.
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// How long it is valid: `90s`, `30m`, `12h`, `7d` (default 1h).
    #[arg(long, default_value = "1h", value_parser = parse_lifetime)]
    lifetime: std::time::Duration,
    /// The shared secret (default: `auth.secret` of the configuration, `MINOS_AUTH_SECRET`).
    #[arg(long, conflicts_with = "key")]
    secret: Option<String>,
    /// A private key file (PEM: RSA, EC or Ed25519) to sign with instead of a secret.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The algorithm for `--key` (RS256, PS256, ES256, ES384, EdDSA …; default by the key).
    #[arg(long, requires = "key")]
    alg: Option<String>,
    /// The `kid` header for `--key` (the key's id in your JWKS).
    #[arg(long, requires = "key")]
    kid: Option<String>,
    /// `iss` (default: `auth.issuer`).
    #[arg(long)]
    issuer: Option<String>,
    /// `aud` (default: `auth.audience`).
    #[arg(long)]
    audience: Option<String>,
    /// The configuration file to read `auth:` from.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    match minos::launcher::parse_duration(text)? {
        std::time::Duration::ZERO => Err("a token's lifetime must be above zero".into()),
        lifetime => Ok(lifetime),
    }
}

fn token(args: TokenArgs) -> minos::Result<()> {
    use minos::auth::{mint, SigningKey, TokenSpec};
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::from_env()?,
    };
    let key = match (&args.key, &args.secret) {
        (Some(path), _) => SigningKey::Pem {
            pem: std::fs::read(path).map_err(|e| {
                minos::Error::Config(format!("cannot read the key {}: {e}", path.display()))
            })?,
            algorithm: match &args.alg {
                Some(alg) => Some(alg.parse().map_err(|_| {
                    minos::Error::Config(format!(
                        "unknown algorithm `{alg}`: use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
                    ))
                })?),
                None => None,
            },
            kid: args.kid.clone(),
        },
        (None, Some(secret)) => SigningKey::Secret(secret.clone()),
        (None, None) if !config.auth.secret.is_empty() => {
            SigningKey::Secret(config.auth.secret.clone())
        }
        (None, None) => {
            return Err(minos::Error::Config(
                "nothing to sign with: set MINOS_AUTH_SECRET (or `auth.secret`), or pass --secret or --key"
                    .into(),
            ))
        }
    };
    let mut spec = TokenSpec::for_config(&config.auth);
    spec.subject = args.sub;
    spec.roles = args.roles.into_iter().filter(|r| !r.is_empty()).collect();
    spec.lifetime = args.lifetime;
    if let Some(issuer) = args.issuer {
        spec.issuer = issuer;
    }
    if let Some(audience) = args.audience {
        spec.audience = audience;
    }
    println!("{}", mint(&key, &spec)?);
    Ok(())
}

fn discovery(
    path: Option<PathBuf>,
    port: Option<u16>,
    storage: Option<String>,
) -> minos::Result<()> {
    let mut config = match path {
        Some(path) => Config::load(path)?,
        None => Config::from_env()?,
    };
    // The registry's own defaults where the file and the environment left a service's.
    let defaults = Config::default();
    if config.name == defaults.name {
        if config.storage == format!("sqlite://.minos/{}.db", defaults.name) {
            config.storage = "sqlite://.minos/discovery.db".into();
        }
        config.name = "discovery".into();
    }
    if config.http.port == defaults.http.port {
        config.http.port = 5567;
    }
    if let Some(port) = port {
        config.http.port = port;
    }
    if let Some(storage) = storage {
        config.storage = storage;
    }
    let _telemetry = minos::telemetry::init(&config.name, &config.log, &config.telemetry)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let repository = Repository::open(&config.storage).await?;
        let auth = minos::auth::Authenticator::from_config(&config.auth)?;
        let registry = Registry::new(repository.store().clone(), config.registry.clone())
            .with_auth(auth)
            .with_metrics(config.telemetry.metrics);
        ship_logs(&config).await?;
        let server = serve_registry(registry, &config.http.host, config.http.port).await?;
        println!("minos discovery listening on http://{}", server.addr());
        minos::launcher::shutdown_signal().await?;
        server.stop().await;
        Ok(())
    })
}

fn gateway(path: Option<PathBuf>, port: Option<u16>) -> minos::Result<()> {
    use minos_runtime::gateway::{serve_gateway, GatewaySettings};
    let (config, port) = infrastructure_config(path, port, 5566)?;
    let registry_url = registry_url(&config);
    let _telemetry = minos::telemetry::init("gateway", &config.log, &config.telemetry)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let auth = minos::auth::Authenticator::from_config(&config.auth)?;
        ship_logs(&config).await?;
        let server = serve_gateway(GatewaySettings {
            host: config.http.host.clone(),
            port,
            body_limit: config.http.body_limit,
            registry_url,
            config: minos_runtime::gateway::GatewayConfig {
                workers: config.gateway.workers.or(config.http.workers),
                ..config.gateway.clone()
            },
            auth,
            metrics: config.telemetry.metrics,
        })
        .await?;
        println!("minos gateway listening on http://{}", server.addr());
        minos::launcher::shutdown_signal().await?;
        server.stop().await;
        Ok(())
    })
}

fn dashboard(
    path: Option<PathBuf>,
    port: Option<u16>,
    registry: Option<String>,
    broker: Option<String>,
) -> minos::Result<()> {
    use minos::dashboard::{serve_dashboard, DashboardSettings};
    let (config, port) = infrastructure_config(path, port, 5568)?;
    let registry_url = registry.unwrap_or_else(|| registry_url(&config));
    let broker = broker.or_else(|| {
        config
            .broker
            .starts_with("kafka://")
            .then(|| config.broker.clone())
    });
    let _telemetry = minos::telemetry::init("dashboard", &config.log, &config.telemetry)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The dashboard shows saga contexts and log lines: on this machine only, unless told otherwise.
    let host = match config.http.host.as_str() {
        "0.0.0.0" => "127.0.0.1".to_owned(),
        host => host.to_owned(),
    };
    runtime.block_on(async {
        let auth = minos::auth::Authenticator::from_config(&config.auth)?;
        if auth.is_some() {
            eprintln!(
                "minos dashboard: the admin token of each request is passed on to the instances the \
                 registry lists; the registry must check tokens too (auth: on minos discovery)"
            );
        }
        ship_logs(&config).await?;
        let server = serve_dashboard(DashboardSettings {
            host,
            port,
            registry_url,
            broker,
            auth,
            log_buffer: 50_000,
        })
        .await?;
        println!("minos dashboard listening on http://{}", server.addr());
        minos::launcher::shutdown_signal().await?;
        server.stop().await;
        Ok(())
    })
}

/// The configuration of an infrastructure command (the file, else defaults and `MINOS_*`), and its port:
/// `--port`, else the configuration's when it sets one, else the command's own `default_port`.
fn infrastructure_config(
    path: Option<PathBuf>,
    port: Option<u16>,
    default_port: u16,
) -> minos::Result<(Config, u16)> {
    let config = match path {
        Some(path) => Config::load(path)?,
        None => Config::from_env()?,
    };
    let port = match (port, config.http.port == Config::default().http.port) {
        (Some(port), _) => port,
        (None, true) => default_port,
        (None, false) => config.http.port,
    };
    Ok((config, port))
}

/// The registry's URL: `discovery.url`, else the default registry's.
fn registry_url(config: &Config) -> String {
    match config.discovery.url.trim() {
        "" => "http://127.0.0.1:5567".to_owned(),
        url => url.to_owned(),
    }
}

/// With `log.aggregate`, ships this process's log records through the Kafka broker of `broker:`.
async fn ship_logs(config: &Config) -> minos::Result<()> {
    if !config.log.aggregate {
        return Ok(());
    }
    let Some(bootstrap) = config.broker.strip_prefix("kafka://") else {
        return Err(minos::Error::Config(format!(
            "log.aggregate ships log records through Kafka: set broker: kafka://HOST:PORT (found `{}`)",
            config.broker
        )));
    };
    let broker = minos::messaging::KafkaBroker::connect(bootstrap, (&config.kafka).into())?;
    minos::telemetry::ship::start(std::sync::Arc::new(broker), None);
    Ok(())
}
