//! The `minos` command: the infrastructure a Minos system runs beside its services.
//!
//! `minos discovery` runs the service registry (port 5567 by default), configured like any service:
//! `--config config.yml`, then `MINOS_*` environment variables (`MINOS_STORAGE`, `MINOS_HTTP_PORT`,
//! `MINOS_REGISTRY_LEASE_TTL_MS`, …).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use minos::discovery::{serve_registry, Registry};
use minos::{Config, Repository};

#[derive(Parser)]
#[command(
    name = "minos",
    version,
    about = "Run the infrastructure of a Minos system"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Discovery {
            config,
            port,
            storage,
        } => discovery(config, port, storage),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("minos: {error}");
            ExitCode::FAILURE
        }
    }
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
    minos::launcher::init_logging(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let repository = Repository::open(&config.storage).await?;
        let registry = Registry::new(repository.store().clone(), config.registry.clone());
        let server = serve_registry(registry, &config.http.host, config.http.port).await?;
        println!("minos discovery listening on http://{}", server.addr());
        minos::launcher::shutdown_signal().await?;
        server.stop().await;
        Ok(())
    })
}
