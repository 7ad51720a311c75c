//! Views of another service's events over Kafka and PostgreSQL: built from the owner's log
//! (`_Get{Type}Events` through Kafka), then kept live; two replicas of the reader sharing one view
//! database apply each event once; a query presenting the owner's `minos-position` reads its write.
#![allow(missing_docs, unreachable_pub)]

use std::time::Duration;

use minos::prelude::*;
use minos::testing::{eventually, TestClient};
use minos::views::POSITION_HEADER;
use minos::{Config, Launcher, RunningService};
use minos_support::kafka::{bootstrap, broker, unique};

#[root_entity]
pub struct Parcel {
    pub city: String,
}

/// Parcels per city, in the reader service.
#[view]
pub struct CityCount {
    #[key]
    pub city: String,
    pub parcels: u64,
}

pub struct ParcelCommands;

#[command_service]
impl ParcelCommands {
    #[enroute(rest = "POST /parcels")]
    async fn create(&self, request: Request) -> Result<Response> {
        let city = request.json()["city"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let parcel = Parcel::create(Parcel { city }).await?;
        Ok(Response::json(json!({"uuid": parcel.uuid()})))
    }
}

pub struct CityQueries;

#[query_service]
impl CityQueries {
    #[enroute(event = "ParcelCreated", view = CityCount)]
    async fn count(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let city: String = event.field("city")?.unwrap_or_default();
        let mut count = CityCount::get(&city)
            .await?
            .unwrap_or(CityCount { city, parcels: 0 });
        count.parcels += 1;
        CityCount::upsert(&count).await
    }

    #[enroute(rest = "GET /cities")]
    async fn cities(&self, _request: Request) -> Result<Response> {
        Ok(Response::json(
            CityCount::all().order_by(Ordering::asc("city")).await?,
        ))
    }
}

fn config(name: &str, services: &str, storage: &str) -> Config {
    let mut config = Config::from_yaml("").unwrap();
    config.name = name.to_owned();
    config.storage = storage.to_owned();
    config.broker = format!("kafka://{}", bootstrap());
    config.services = vec![services.into()];
    config.root_entities = if services == "ParcelCommands" {
        vec!["Parcel".into()]
    } else {
        vec![]
    };
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.relay.poll_interval_ms = 100;
    config.views.poll_interval_ms = 200;
    config
}

async fn start(config: Config) -> (RunningService, TestClient) {
    let running = Launcher::with_config(config).start().await.unwrap();
    let client = TestClient::new(running.addr());
    (running, client)
}

async fn post(owner: &TestClient, city: &str) -> String {
    let answer = owner.post("/parcels", json!({"city": city})).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.header(POSITION_HEADER).unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_of_another_services_events_over_kafka() {
    broker().await; // fails loudly when Kafka is down
    let (owner, owner_http) = start(config(
        &unique("kv-owner"),
        "ParcelCommands",
        &minos_support::postgres::fresh_schema_url(),
    ))
    .await;
    // History before the reader exists.
    for i in 0..30 {
        post(&owner_http, ["lyon", "oslo", "lima"][i % 3]).await;
    }
    // Two replicas of the reader: one consumer group, one store and view database.
    let reader_name = unique("kv-reader");
    let reader_storage = minos_support::postgres::fresh_schema_url();
    let (first, first_http) = start(config(&reader_name, "CityQueries", &reader_storage)).await;
    let (second, second_http) = start(config(&reader_name, "CityQueries", &reader_storage)).await;
    eventually(
        "the view to be built from history",
        Duration::from_secs(60),
        || {
            let client = first_http.clone();
            async move {
                let cities = client.get("/cities").await.unwrap().json();
                cities
                    == json!([
                        {"city": "lima", "parcels": 10},
                        {"city": "lyon", "parcels": 10},
                        {"city": "oslo", "parcels": 10}
                    ])
            }
        },
    )
    .await;
    // Live: each new parcel, read through either replica with the owner's position.
    for (i, client) in [&first_http, &second_http]
        .into_iter()
        .cycle()
        .take(6)
        .enumerate()
    {
        let position = post(&owner_http, "lyon").await;
        let cities = client
            .clone()
            .with_header(POSITION_HEADER, position)
            .get("/cities")
            .await
            .unwrap();
        assert_eq!(cities.status, 200, "{}", cities.body);
        assert_eq!(
            cities.json()[1]["parcels"],
            11 + i as u64,
            "{}",
            cities.body
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cities = second_http.get("/cities").await.unwrap().json();
    assert_eq!(
        cities[1],
        json!({"city": "lyon", "parcels": 16}),
        "each event once"
    );
    let views = first_http.get("/views").await.unwrap().json();
    assert_eq!(views[0]["state"], "live", "{views}");
    assert_eq!(views[0]["sources"][0]["source"], "Parcel");
    for service in [second, first, owner] {
        service.stop().await;
    }
}
