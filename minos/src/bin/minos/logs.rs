//! `minos logs`: follows the log records services ship to the broker (`log.aggregate`), filtered.

use minos::telemetry::ship::{parse_time, LogBatch, LogFilter, LOG_TOPIC};

/// Options of `minos logs`.
#[derive(clap::Args)]
pub(crate) struct LogsArgs {
    /// The broker the services ship their records to (`kafka://HOST:PORT`).
    #[arg(long, env = "MINOS_BROKER", default_value = "kafka://127.0.0.1:9092")]
    broker: String,
    /// Only this service's records (repeat for several).
    #[arg(long, short)]
    service: Vec<String>,
    /// Only records at this level or more severe: error, warn, info, debug, trace.
    #[arg(long, short)]
    level: Option<String>,
    /// Only the records of this trace (the 32 hex digits of a `traceparent`'s trace id).
    #[arg(long, short)]
    trace: Option<String>,
    /// Only records written at or after this time: RFC 3339, or an age such as 10m, 2h, 1d.
    #[arg(long)]
    since: Option<String>,
    /// Only records written before this time: RFC 3339, or an age such as 10m.
    #[arg(long)]
    until: Option<String>,
    /// Print what the broker keeps and stop, instead of following new records.
    #[arg(long)]
    no_follow: bool,
    /// Print each record as a JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) fn logs(args: LogsArgs) -> minos::Result<()> {
    let now = minos::chrono::Utc::now();
    let time = |text: &Option<String>| {
        text.as_deref()
            .map(|text| parse_time(text, now).map_err(minos::Error::Config))
            .transpose()
    };
    if let Some(level) = &args.level {
        if minos::telemetry::ship::level_rank(level) == 0 {
            return Err(minos::Error::Config(format!(
                "--level `{level}`: expected error, warn, info, debug or trace"
            )));
        }
    }
    let filter = LogFilter {
        services: args.service.clone(),
        level: args.level.clone(),
        trace_id: args.trace.as_ref().map(|t| t.to_ascii_lowercase()),
        since: time(&args.since)?,
        until: time(&args.until)?,
    };
    let Some(bootstrap) = args.broker.strip_prefix("kafka://") else {
        return Err(minos::Error::Config(format!(
            "--broker `{}`: logs are shipped through Kafka; write kafka://HOST:PORT (the in-process \
             broker cannot be followed from another process)",
            args.broker
        )));
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let broker = minos::messaging::KafkaBroker::connect(
            bootstrap,
            minos::messaging::KafkaOptions::from_env()?,
        )?;
        let mut messages = broker.tail(LOG_TOPIC, !args.no_follow).await?;
        loop {
            let message = tokio::select! {
                message = messages.recv() => message,
                _ = minos::launcher::shutdown_signal() => None,
            };
            let Some(message) = message else {
                return Ok(());
            };
            let Ok(batch) = minos::serde_json::from_value::<LogBatch>(message.payload.content)
            else {
                continue;
            };
            let watched = filter.services.is_empty() || filter.services.contains(&batch.service);
            if batch.dropped > 0 && filter.trace_id.is_none() && watched {
                eprintln!(
                    "minos logs: {} could not ship {} records (its log buffer was full or the broker away)",
                    batch.service, batch.dropped
                );
            }
            for record in batch.records.iter().filter(|r| filter.matches(r)) {
                if args.json {
                    println!(
                        "{}",
                        minos::serde_json::to_string(record).unwrap_or_default()
                    );
                } else {
                    println!("{record}");
                }
            }
        }
    })
}
