//! The service the Kafka tests run: models, handlers and helpers shared by the Kafka test binaries.
#![allow(dead_code)]

use std::time::Duration;

use minos::prelude::*;
use minos::{Config, Launcher, RunningService};
use minos_support::kafka::{bootstrap, broker};

#[root_entity]
pub struct Tally {
    pub tag: String,
}

pub struct KafkaCommands;

#[command_service]
impl KafkaCommands {
    /// Answers after `delay_ms`, so replies can come back in another order than requests went out.
    #[enroute(broker = "KSlowEcho")]
    async fn slow_echo(&self, request: Request) -> Result<Response> {
        let delay = request.json()["delay_ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Ok(Response::json(request.json().clone()))
    }

    /// Counts a command: a `counted:{tag}` tally per run.
    #[enroute(broker = "KCount")]
    async fn count(&self, request: Request) -> Result<Response> {
        let tag = request.json()["tag"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Tally::create(Tally {
            tag: format!("counted:{tag}"),
        })
        .await?;
        Ok(Response::json(json!({"counted": tag})))
    }

    #[enroute(rest = "POST /ktallies")]
    async fn create(&self, request: Request) -> Result<Response> {
        let tag = request.json()["tag"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let tally = Tally::create(Tally { tag }).await?;
        Ok(Response::json(json!({"uuid": tally.uuid()})))
    }
}

pub struct KafkaReactions;

#[query_service]
impl KafkaReactions {
    /// Records the tag of every `KRecord` event as a `Tally`.
    #[enroute(event = "KRecord")]
    async fn record(&self, request: Request) -> Result<()> {
        let tag = request.json()["tag"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Tally::create(Tally {
            tag: format!("recorded:{tag}"),
        })
        .await?;
        Ok(())
    }

    /// Records `flaky:{tag}` for a `KFlaky` event, or fails while [`fail_for`] names this service
    /// and the tag.
    #[enroute(event = "KFlaky")]
    async fn flaky(&self, request: Request) -> Result<()> {
        let tag = request.json()["tag"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let service = Context::current()?.name().to_owned();
        if FAILING.lock().unwrap().contains(&(service, tag.clone())) {
            return Err(Error::with_status(500, "flaky: failing on purpose"));
        }
        Tally::create(Tally {
            tag: format!("flaky:{tag}"),
        })
        .await?;
        Ok(())
    }

    #[enroute(event = "KPoison")]
    async fn poison(&self, _request: Request) -> Result<()> {
        Err(Error::bad_request("indigestible"))
    }

    /// Every created tally, seen through the outbox, the relay and Kafka.
    #[enroute(event = "TallyCreated")]
    async fn tally_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let tag = event
            .fields_diff
            .iter()
            .find(|d| d.name == "tag")
            .and_then(|d| d.value.as_str())
            .unwrap_or_default()
            .to_owned();
        if !tag.starts_with("seen:") && !tag.starts_with("recorded:") {
            Tally::create(Tally {
                tag: format!("seen:{tag}"),
            })
            .await?;
        }
        Ok(())
    }
}

/// (service, tag) pairs whose `KFlaky` events fail.
static FAILING: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Makes `service` fail the `KFlaky` events tagged `tag` (`false`: succeed again).
pub fn fail_for(service: &str, tag: &str, failing: bool) {
    let mut list = FAILING.lock().unwrap();
    list.retain(|(s, t)| !(s == service && t == tag));
    if failing {
        list.push((service.to_owned(), tag.to_owned()));
    }
}

pub async fn start(name: &str) -> RunningService {
    broker().await; // fails loudly when Kafka is down
    let mut config = Config::from_yaml("").unwrap();
    config.name = name.to_owned();
    config.storage = minos_support::postgres::fresh_schema_url();
    config.broker = format!("kafka://{}", bootstrap());
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.handlers.retries = 1;
    config.relay.poll_interval_ms = 100;
    Launcher::with_config(config)
        .start()
        .await
        .expect("start the service on Kafka")
}

pub async fn tallies(service: &RunningService, tag: &str) -> usize {
    Tally::find(Condition::eq("tag", tag))
        .on(service.context().repository())
        .await
        .unwrap()
        .len()
}

pub use minos::testing::eventually;

/// The broker's process id from `MINOS_TEST_KAFKA_PID`, for tests that pause it; `None` (and a note
/// saying the test did not run) without it.
pub fn broker_pid() -> Option<String> {
    let pid = std::env::var("MINOS_TEST_KAFKA_PID")
        .ok()
        .filter(|p| !p.is_empty());
    if pid.is_none() {
        eprintln!("not run: set MINOS_TEST_KAFKA_PID to the broker's process id to let this test pause it");
    }
    pid
}

/// Sends `sig` (`-STOP`, `-CONT`) to the broker's process.
pub fn signal_broker(pid: &str, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}
