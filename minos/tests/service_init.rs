//! Services built from their context: constructors that read the application's settings, one instance
//! per running service (two services in one process each keep their own), and a failing constructor
//! stopping the start.
#![allow(missing_docs, unreachable_pub)]

use minos::prelude::*;
use minos::{Config, Launcher};
use serde::Deserialize;

#[derive(Deserialize)]
struct GreeterSettings {
    greeting: String,
    #[serde(default)]
    punctuation: Option<String>,
}

pub struct Greeter {
    greeting: String,
    service: String,
}

impl Greeter {
    async fn new(context: Context) -> Result<Self> {
        let settings: GreeterSettings = context.settings()?;
        Ok(Greeter {
            greeting: format!(
                "{}{}",
                settings.greeting,
                settings.punctuation.unwrap_or_default()
            ),
            service: context.name().to_owned(),
        })
    }
}

#[command_service(init = "Greeter::new")]
impl Greeter {
    #[enroute(broker = "Greet")]
    async fn greet(&self, request: Request) -> Result<Response> {
        let name: String = request.content()?;
        Ok(Response::json(
            json!({"text": format!("{} {name}", self.greeting), "by": self.service}),
        ))
    }
}

pub struct Counter {
    start: u64,
}

fn counter() -> Counter {
    Counter { start: 7 }
}

#[query_service(init = "counter")]
impl Counter {
    #[enroute(broker = "Start")]
    async fn start(&self, _request: Request) -> Result<Response> {
        Ok(Response::json(self.start))
    }
}

pub struct Broken;

impl Broken {
    async fn new(context: Context) -> Result<Self> {
        let _: GreeterSettings = context.settings()?;
        Ok(Broken)
    }
}

#[query_service(init = "Broken::new")]
impl Broken {
    #[enroute(broker = "Never")]
    async fn never(&self, _request: Request) -> Result<()> {
        Ok(())
    }
}

fn config(name: &str, services: &[&str], yaml: &str) -> Config {
    let mut config = Config::from_yaml(yaml).unwrap();
    config.name = name.into();
    config.storage = "memory".into();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.services = services.iter().map(|s| s.to_string()).collect();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_builds_its_own_instance_from_its_settings() {
    let broker: minos::messaging::SharedBroker =
        std::sync::Arc::new(minos::messaging::MemoryBroker::new());
    let english = Launcher::with_config(config(
        "english",
        &["Greeter", "Counter"],
        "app: {greeting: Hello, punctuation: '!'}",
    ))
    .broker(std::sync::Arc::clone(&broker))
    .start()
    .await
    .unwrap();
    let client = english.context().client().clone();
    let reply = client.send("Greet", json!("Ada")).await.unwrap();
    assert_eq!(
        reply.content,
        json!({"text": "Hello! Ada", "by": "english"})
    );
    let reply = client.send("Start", json!(null)).await.unwrap();
    assert_eq!(reply.content, json!(7));

    // A second service of the same type in the same process keeps its own instance.
    let french = Launcher::with_config(config("french", &["Greeter"], "app: {greeting: Bonjour}"))
        .start()
        .await
        .unwrap();
    let reply = french
        .context()
        .client()
        .send("Greet", json!("Ada"))
        .await
        .unwrap();
    assert_eq!(
        reply.content,
        json!({"text": "Bonjour Ada", "by": "french"})
    );
    let again = client.send("Greet", json!("Bob")).await.unwrap();
    assert_eq!(
        again.content,
        json!({"text": "Hello! Bob", "by": "english"})
    );
    assert!(english.context().instance::<Greeter>().is_some());
    assert!(french.context().instance::<Counter>().is_none());
    french.stop().await;
    english.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_constructor_stops_the_start_and_says_why() {
    let error = Launcher::with_config(config("broken", &["Broken"], ""))
        .start()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::ServiceInit { .. }), "{text}");
    assert!(text.contains("`Broken`"), "{text}");
    assert!(text.contains("greeting"), "{text}");
}

#[test]
fn the_app_section_is_free_and_framework_keys_are_checked() {
    let config = Config::from_yaml("app: {greeting: Hi, nested: {any: [1, 2]}}").unwrap();
    assert_eq!(config.app["nested"]["any"], json!([1, 2]));
    let error = Config::from_yaml("htp: {port: 1}").unwrap_err();
    assert!(error.to_string().contains("htp"), "{error}");
    let error = Config::from_yaml("http: {prot: 1}").unwrap_err();
    assert!(error.to_string().contains("prot"), "{error}");
}
