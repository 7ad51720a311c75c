//! Views: how fast a projection builds a view from history (events/s), how long a query waits to read
//! its own write (POST, then GET with `minos-position`), and a find over 100,000 rows on an indexed
//! field against the same find on a field without an index — on the embedded default (SQLite) and on
//! PostgreSQL.
//!
//! `cargo bench -p minos --bench views` (`MINOS_BENCH_SCALE=0.1` for a quick run; PostgreSQL from
//! `MINOS_TEST_POSTGRES_URL`, skipped when it does not answer).
#![allow(missing_docs, unreachable_pub)]

use std::time::{Duration, Instant};

use minos::prelude::*;
use minos::testing::{test_config, TestClient};
use minos::views::POSITION_HEADER;
use minos::{Config, Launcher, RunningService};
use minos_support::bench::{percentile, scale};

#[root_entity]
pub struct Reading {
    pub sensor: String,
    pub value: i64,
}

#[view]
pub struct SensorReading {
    #[key]
    pub uuid: Uuid,
    #[index]
    pub sensor: String,
    pub value: i64,
    pub label: String,
}

#[view]
pub struct SensorTotals {
    #[key]
    pub sensor: String,
    pub readings: u64,
}

pub struct Commands;

#[command_service]
impl Commands {
    #[enroute(rest = "POST /readings")]
    async fn create(&self, request: Request) -> Result<Response> {
        let sensor = request.json()["sensor"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let reading = Reading::create(Reading { sensor, value: 1 }).await?;
        Ok(Response::json(json!({"uuid": reading.uuid()})))
    }
}

pub struct Queries;

#[query_service]
impl Queries {
    #[enroute(event = "ReadingCreated", view = SensorReading)]
    async fn reading(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let reading: Reading = event.decode_fields()?;
        SensorReading::upsert(&SensorReading {
            uuid: event.uuid,
            label: format!("{}-{}", reading.sensor, reading.value),
            sensor: reading.sensor,
            value: reading.value,
        })
        .await
    }

    #[enroute(event = "ReadingCreated", view = SensorTotals)]
    async fn total(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let sensor: String = event.field("sensor")?.unwrap_or_default();
        let mut totals = SensorTotals::get(&sensor).await?.unwrap_or(SensorTotals {
            sensor,
            readings: 0,
        });
        totals.readings += 1;
        SensorTotals::upsert(&totals).await
    }

    #[enroute(rest = "GET /sensors/{sensor}")]
    async fn sensor(&self, request: Request) -> Result<Response> {
        let sensor: String = request.param("sensor")?;
        Ok(Response::json(SensorTotals::get(&sensor).await?))
    }

    /// `?by=sensor` (indexed) or `?by=label` (no index): one lookup.
    #[enroute(rest = "GET /lookup")]
    async fn lookup(&self, request: Request) -> Result<Response> {
        let by: String = request.param("by")?;
        let value: String = request.param("value")?;
        let found = SensorReading::find(Condition::eq(by.as_str(), value))
            .limit(10)
            .await?;
        Ok(Response::json(found.len()))
    }

    #[enroute(rest = "POST /fill")]
    async fn fill(&self, request: Request) -> Result<Response> {
        let rows: i64 = request.param("rows")?;
        let postgres = request.param::<String>("dialect")? == "postgres";
        let sql = if postgres {
            "INSERT INTO view_sensor_reading (uuid, sensor, value, label, _minos_data) \
             SELECT u, s, g, l, jsonb_build_object('uuid', u, 'sensor', s, 'value', g, 'label', l) \
             FROM (SELECT gen_random_uuid()::text AS u, 's' || (g % 5000) AS s, g, 'l' || g AS l \
                   FROM generate_series(1, $1) AS g) AS rows"
        } else {
            "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < $1), \
             rows AS (SELECT lower(hex(randomblob(16))) AS u, 's' || (x % 5000) AS s, x, 'l' || x AS l FROM g) \
             INSERT INTO view_sensor_reading (uuid, sensor, value, label, _minos_data) \
             SELECT u, s, x, l, json_object('uuid', u, 'sensor', s, 'value', x, 'label', l) FROM rows"
        };
        minos::views::sql(sql, &[rows.into()]).await?;
        let analyze = if postgres {
            "ANALYZE view_sensor_reading"
        } else {
            "ANALYZE"
        };
        minos::views::sql(analyze, &[]).await?;
        Ok(Response::empty())
    }
}

fn config(name: &str, storage: &str, views: &str) -> Config {
    let mut config = test_config(name);
    config.storage = storage.into();
    config.views.url = views.into();
    config.views.poll_interval_ms = 100;
    config
}

async fn wait_caught_up(client: &TestClient, events: u64) {
    loop {
        let views = client.get("/views").await.unwrap().json();
        let done = views.as_array().is_some_and(|views| {
            views
                .iter()
                .all(|v| v["sources"][0]["applied"].as_u64() == Some(events))
        });
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(label: &str, storage: &str, views: &str, dialect: &str) {
    let events = scale(20_000, 500) as u64;
    // History first, through the store alone.
    let repository = Repository::open(storage).await.unwrap();
    let started = Instant::now();
    repository
        .clone()
        .scope(async {
            for i in 0..events {
                Reading::create(Reading {
                    sensor: format!("s{}", i % 100),
                    value: i as i64,
                })
                .await?;
            }
            Ok::<(), Error>(())
        })
        .await
        .unwrap();
    let written = started.elapsed();
    let started = Instant::now();
    let service: RunningService =
        Launcher::with_config(config(&format!("bench-{label}"), storage, views))
            .repository(repository)
            .start()
            .await
            .unwrap();
    let client = TestClient::new(service.addr());
    wait_caught_up(&client, events).await;
    let built = started.elapsed();
    println!(
        "{label:<10} build two views from {events} events: {:>8.0} events/s per view ({:.2} s; writing them took {:.2} s)",
        events as f64 / built.as_secs_f64(),
        built.as_secs_f64(),
        written.as_secs_f64()
    );

    // Read your writes: a POST, then a GET presenting its position, one after the other.
    let rounds = scale(300, 20);
    let mut latencies = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let posted = client
            .post("/readings", json!({"sensor": "rw"}))
            .await
            .unwrap();
        let position = posted.header(POSITION_HEADER).unwrap().to_owned();
        let read = client
            .clone()
            .with_header(POSITION_HEADER, position)
            .get("/sensors/rw")
            .await
            .unwrap();
        assert_eq!(read.status, 200);
        latencies.push(start.elapsed());
    }
    latencies.sort();
    println!(
        "{label:<10} POST + GET reading its own write ({rounds} rounds): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );

    // 100,000 more rows, then lookups by an indexed field and by a field without an index.
    let rows = scale(100_000, 10_000) as i64;
    let filled = client
        .post(&format!("/fill?rows={rows}&dialect={dialect}"), json!({}))
        .await
        .unwrap();
    assert_eq!(filled.status, 200, "{}", filled.body);
    for by in ["sensor", "label"] {
        let lookups = if by == "sensor" { 500 } else { 20 };
        let mut latencies = Vec::with_capacity(lookups);
        for i in 0..lookups {
            let start = Instant::now();
            let found = client
                .get(&format!(
                    "/lookup?by={by}&value={}{}",
                    &by[..1],
                    i * 7 % 5000
                ))
                .await
                .unwrap();
            assert_eq!(found.status, 200, "{}", found.body);
            latencies.push(start.elapsed());
        }
        latencies.sort();
        println!(
            "{label:<10} find by {by:<6} ({}) over {} rows: p50 {:.3} ms, p99 {:.3} ms (HTTP round trip included)",
            if by == "sensor" { "#[index]" } else { "no index" },
            rows + events as i64,
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3
        );
    }
    service.stop().await;
}

fn main() {
    minos::launcher::init_logging("warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}", dir.path().join("bench.db").display());
        let views = format!("sqlite://{}", dir.path().join("bench.views.db").display());
        run("sqlite", &store, &views, "sqlite").await;
        let url = minos_support::postgres::fresh_schema_url();
        if Repository::open(&url).await.is_ok() {
            run("postgres", &url, &url, "postgres").await;
            minos_support::postgres::drop_schema(&url).await;
        } else {
            println!("postgres   skipped: no server at {url}");
        }
    });
}
