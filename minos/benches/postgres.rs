//! The PostgreSQL store against raw PostgreSQL, in one run on the same server:
//! raw single-row INSERT transactions into an event-shaped table, and root-entity creates through the
//! framework (event + snapshot + outbox, with the version check), at 1, 8 and 32 concurrent clients.
//!
//! `cargo bench -p minos --bench postgres` (server: `MINOS_TEST_POSTGRES_URL`, default
//! `postgresql://postgres@127.0.0.1:5432/test`; `MINOS_BENCH_SCALE=0.1` for a quick run).

use minos_support::bench::{percentile, scale};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minos::prelude::*;
use minos::store::{PostgresOptions, PostgresStore};
use minos::testing::models::Customer;
use minos_support::postgres::{fresh_schema_url, url};
use tokio_postgres::NoTls;

struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn summarize(mut latencies: Vec<Duration>, elapsed: Duration) -> Run {
    latencies.sort();
    let at = |p: f64| percentile(&latencies, p);
    Run {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

async fn raw(concurrency: usize, total: usize) -> Run {
    let schema = format!("minos_bench_raw_{}", Uuid::new_v4().simple());
    let (setup, connection) = tokio_postgres::connect(&url(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    setup
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.events (id BIGSERIAL PRIMARY KEY, uuid UUID NOT NULL, \
             name TEXT NOT NULL, version BIGINT NOT NULL, action TEXT NOT NULL, data JSONB NOT NULL, \
             created_at TIMESTAMPTZ NOT NULL, UNIQUE (uuid, version))"
        ))
        .await
        .expect("create the raw table");
    let per_client = total / concurrency;
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let (client, connection) = tokio_postgres::connect(&url(), NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let statement = client
            .prepare(&format!(
                "INSERT INTO {schema}.events (uuid, name, version, action, data, created_at) VALUES ($1, 'Customer', 1, 'create', $2, now())"
            ))
            .await
            .expect("prepare");
        clients.push((client, statement));
    }
    let data = serde_json::json!([{"name": "name", "type": "String", "value": "x"}]);
    let run = drive(
        clients,
        per_client,
        move |pair: Arc<(tokio_postgres::Client, tokio_postgres::Statement)>, _| {
            let data = data.clone();
            async move {
                pair.0
                    .execute(&pair.1, &[&Uuid::new_v4(), &data])
                    .await
                    .expect("insert");
            }
        },
    )
    .await;

    setup
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop");
    run
}

async fn framework(concurrency: usize, total: usize) -> Run {
    let url = fresh_schema_url();
    let options = PostgresOptions {
        pool_size: 40,
        ..PostgresOptions::default()
    };
    let repository = Arc::new(Repository::new(
        PostgresStore::connect_with(&url, options)
            .await
            .expect("connect"),
    ));
    let per_client = total / concurrency;
    let clients: Vec<(usize, Arc<Repository>)> = (0..concurrency)
        .map(|c| (c, Arc::clone(&repository)))
        .collect();
    let run = drive(
        clients,
        per_client,
        |pair: Arc<(usize, Arc<Repository>)>, i| async move {
            let c = pair.0;
            pair.1
                .create(Customer {
                    name: format!("c{c}-{i}"),
                })
                .await
                .expect("create");
        },
    )
    .await;

    let schema = url.rsplit("schema=").next().unwrap_or_default().to_owned();
    let client = connect().await;
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop");
    run
}

async fn connect() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Runs `per_client` operations on every client at once; their latencies and the rate.
async fn drive<C, F, Fut>(clients: Vec<C>, per_client: usize, op: F) -> Run
where
    C: Send + Sync + 'static,
    F: Fn(Arc<C>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let (op, client) = (op.clone(), Arc::new(client));
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let sent = Instant::now();
                    op(Arc::clone(&client), i).await;
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    summarize(latencies, start.elapsed())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let total = scale(8000, 64);
        println!("PostgreSQL at {} — {total} operations per row, {} cores", url(), std::thread::available_parallelism().map_or(1, |n| n.get()));
        println!(
            "{:>5} | {:>12} {:>9} {:>9} | {:>15} {:>9} {:>9} | {:>6}",
            "conc", "raw INSERT/s", "p50", "p99", "minos creates/s", "p50", "p99", "ratio"
        );
        for concurrency in [1usize, 8, 32] {
            let raw = raw(concurrency, total).await;
            let minos = framework(concurrency, total).await;
            println!(
                "{concurrency:>5} | {:>12.0} {:>9.2?} {:>9.2?} | {:>15.0} {:>9.2?} {:>9.2?} | {:>5.2}x",
                raw.per_second,
                raw.p50,
                raw.p99,
                minos.per_second,
                minos.p50,
                minos.p99,
                minos.per_second / raw.per_second
            );
        }
    });
}
