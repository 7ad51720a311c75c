//! `minos events`, `minos sagas` and `minos dead-letters`: what a service stored and parked, read from
//! its store and its broker.

use std::path::PathBuf;
use std::time::Duration;

use minos::messaging::{headers, topics, BrokerMessage, KafkaBroker, KafkaOptions};
use minos::saga::ExecutionStatus;
use minos::serde_json;
use minos::store::EventFilter;
use minos::{Config, Error, Repository, Result, Uuid};

/// Where a command finds the store: `--storage`, else `--config`'s, else `MINOS_STORAGE`, else
/// `./config.yml`'s.
#[derive(clap::Args)]
pub(crate) struct StoreArgs {
    /// The store: `postgresql://…`, `sqlite://PATH` (default: the configuration's `storage`).
    #[arg(long, global = true)]
    storage: Option<String>,
    /// The service's configuration file (default `./config.yml` when there is one).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

impl StoreArgs {
    fn storage(&self) -> Result<String> {
        if let Some(storage) = &self.storage {
            return Ok(storage.clone());
        }
        let config = match &self.config {
            Some(path) => Config::load(path)?,
            None if std::path::Path::new("config.yml").is_file() => Config::load("config.yml")?,
            None => Config::from_env()?,
        };
        if config.storage.is_empty() || config.storage == "memory" {
            return Err(Error::Config(
                "no store to read: give --storage postgresql://… or sqlite://PATH, or --config with a service's config.yml (a memory store lives only inside its process)".into(),
            ));
        }
        Ok(config.storage)
    }

    async fn open(&self) -> Result<Repository> {
        let storage = self.storage()?;
        if let Some(path) = storage.strip_prefix("sqlite://") {
            // Reading must not create an empty store where the user mistyped the path.
            if !std::path::Path::new(path).is_file() {
                return Err(Error::Config(format!(
                    "no SQLite store at `{path}` (from `{storage}`): give the path the service uses"
                )));
            }
        }
        Repository::open(&storage).await
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Options of `minos events`.
#[derive(clap::Args)]
pub(crate) struct EventsArgs {
    /// The root entity's type, as its events name it (`Foo`).
    name: String,
    /// The root's uuid.
    uuid: Uuid,
    #[command(flatten)]
    store: StoreArgs,
}

pub(crate) fn events(args: EventsArgs) -> Result<()> {
    runtime()?.block_on(async {
        let repository = args.store.open().await?;
        let filter = EventFilter {
            uuid: Some(args.uuid),
            ..EventFilter::default()
        };
        let stored = repository.store().events(&filter).await?;
        if stored.is_empty() {
            return Err(Error::not_found(format!(
                "no events for {} {} in this store",
                args.name, args.uuid
            )));
        }
        if let Some(other) = stored.iter().find(|s| s.event.name != args.name) {
            return Err(Error::bad_request(format!(
                "{} is a {}, not a {}: run `minos events {} {}`",
                args.uuid, other.event.name, args.name, other.event.name, args.uuid
            )));
        }
        for stored in &stored {
            let event = &stored.event;
            if args.store.json {
                println!("{}", serde_json::to_string(event).unwrap_or_default());
                continue;
            }
            let action = match event.action {
                minos::Action::Create => "Created",
                minos::Action::Update => "Updated",
                minos::Action::Delete => "Deleted",
            };
            println!(
                "v{:<3} {}{action:<8} {}",
                event.version,
                event.name,
                minos::store::format_time(event.created_at)
            );
            for diff in &event.fields_diff {
                let set = diff
                    .action
                    .map(|a| format!(" ({})", a.as_str()))
                    .unwrap_or_default();
                println!("       {}{set} = {}", diff.name, diff.value);
            }
        }
        Ok(())
    })
}

/// Options of `minos sagas`.
#[derive(clap::Args)]
pub(crate) struct SagasArgs {
    #[command(subcommand)]
    action: Option<SagasAction>,
    /// Only executions in this status: created, running, paused, finished, errored.
    #[arg(long, short)]
    status: Option<String>,
    /// At most this many, newest change first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(clap::Subcommand)]
enum SagasAction {
    /// The executions, newest change first (the default).
    List,
    /// One execution: its status, steps done, participants, context and error.
    Show {
        /// The execution's uuid.
        uuid: Uuid,
    },
}

pub(crate) fn sagas(args: SagasArgs) -> Result<()> {
    let status = args
        .status
        .as_deref()
        .map(|text| {
            ExecutionStatus::parse(text).ok_or_else(|| {
                Error::Config(format!(
                    "--status `{text}`: expected created, running, paused, finished or errored"
                ))
            })
        })
        .transpose()?;
    runtime()?.block_on(async {
        let repository = args.store.open().await?;
        let store = repository.store();
        match args.action {
            None | Some(SagasAction::List) => {
                let records = store.executions(status, args.limit).await?;
                for record in records {
                    let summary = minos::saga::SagaExecution::from_record(record)?.summary();
                    if args.store.json {
                        println!("{summary}");
                        continue;
                    }
                    let error = summary["error"]
                        .as_str()
                        .map(|e| format!("  error: {e}"))
                        .unwrap_or_default();
                    println!(
                        "{}  {:<9} {}  {}{error}",
                        summary["uuid"].as_str().unwrap_or_default(),
                        summary["status"].as_str().unwrap_or_default(),
                        summary["updated_at"].as_str().unwrap_or_default(),
                        summary["saga"].as_str().unwrap_or_default(),
                    );
                }
            }
            Some(SagasAction::Show { uuid }) => {
                let record = store.execution(uuid).await?.ok_or_else(|| {
                    Error::not_found(format!("no saga execution {uuid} in this store"))
                })?;
                let summary = minos::saga::SagaExecution::from_record(record)?.summary();
                if args.store.json {
                    println!("{summary}");
                } else {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&summary).unwrap_or_default()
                    );
                }
            }
        }
        Ok(())
    })
}

/// Options of `minos dead-letters`.
#[derive(clap::Args)]
pub(crate) struct DeadLettersArgs {
    /// The service whose dead letters to read (its `{service}.dead-letter` topic).
    #[arg(long, short, global = true)]
    service: Option<String>,
    /// The broker (`kafka://HOST:PORT`).
    #[arg(
        long,
        env = "MINOS_BROKER",
        default_value = "kafka://127.0.0.1:9092",
        global = true
    )]
    broker: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Option<DeadLettersAction>,
}

#[derive(clap::Subcommand)]
enum DeadLettersAction {
    /// The parked messages: identifier, original topic, error (the default).
    List,
    /// One parked message whole.
    Show {
        /// Its identifier.
        identifier: Uuid,
    },
    /// Send parked messages back to their original topic, for this service alone. Re-driving one
    /// twice sends the same message, which the service handles once.
    Redrive {
        /// The identifiers to re-drive.
        identifiers: Vec<Uuid>,
        /// Every message parked on the topic.
        #[arg(long, conflicts_with = "identifiers")]
        all: bool,
    },
}

pub(crate) fn dead_letters(args: DeadLettersArgs) -> Result<()> {
    let Some(service) = args.service.clone() else {
        return Err(Error::Config(
            "--service NAME: the service whose dead letters to read".into(),
        ));
    };
    let Some(bootstrap) = args.broker.strip_prefix("kafka://") else {
        return Err(Error::Config(format!(
            "--broker `{}`: dead letters are kept by Kafka; write kafka://HOST:PORT (the in-process broker's \
             live only inside its process: see the service's /system/overview)",
            args.broker
        )));
    };
    runtime()?.block_on(async {
        let broker = KafkaBroker::connect(bootstrap, KafkaOptions::from_env()?)?;
        let topic = topics::dead_letter(&service);
        let mut parked = Vec::new();
        let mut tail = tokio::time::timeout(Duration::from_secs(30), broker.tail(&topic, false))
            .await
            .map_err(|_| Error::Config(format!("the broker at {bootstrap} did not answer")))??;
        while let Some(message) = tail.recv().await {
            parked.push(message);
        }
        let find = |identifier: Uuid| {
            parked
                .iter()
                .find(|m| m.identifier == identifier)
                .ok_or_else(|| {
                    Error::not_found(format!("no dead letter {identifier} on `{topic}`"))
                })
        };
        match &args.action {
            None | Some(DeadLettersAction::List) => {
                if parked.is_empty() && !args.json {
                    println!("no dead letters on `{topic}`");
                }
                for message in &parked {
                    if args.json {
                        println!("{}", minos::messaging::dead_letters::details(message));
                        continue;
                    }
                    let header = |name: &str| {
                        message
                            .payload
                            .headers
                            .get(name)
                            .cloned()
                            .unwrap_or_default()
                    };
                    println!(
                        "{}  {}  {}",
                        message.identifier,
                        header(headers::ORIGINAL_TOPIC),
                        header(headers::ERROR)
                    );
                }
            }
            Some(DeadLettersAction::Show { identifier }) => {
                let message = find(*identifier)?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&minos::messaging::dead_letters::details(message)).unwrap_or_default()
                );
            }
            Some(DeadLettersAction::Redrive { identifiers, all }) => {
                let chosen: Vec<&BrokerMessage> = if *all {
                    parked.iter().collect()
                } else if identifiers.is_empty() {
                    return Err(Error::Config(
                        "name the dead letters to re-drive (their identifiers, from `minos dead-letters list`) or give --all".into(),
                    ));
                } else {
                    identifiers.iter().map(|id| find(*id)).collect::<Result<_>>()?
                };
                // Every one is checked before any is sent.
                let again = chosen
                    .iter()
                    .map(|message| minos::messaging::redrive(message, &service))
                    .collect::<Result<Vec<_>>>()?;
                use minos::messaging::Broker as _;
                for (message, parked) in again.into_iter().zip(&chosen) {
                    let (topic, identifier) = (message.topic.clone(), message.identifier);
                    broker.publish(message).await?;
                    println!(
                        "re-drove {} to `{topic}` for {service} as {identifier}",
                        parked.identifier
                    );
                }
            }
        }
        Ok(())
    })
}
