//! The registry: resolutions/s with 1,000 services × 10 endpoints registered (in process, and over HTTP
//! with concurrent clients), and registration churn/s (register + unregister) on each store.
//!
//! `cargo bench -p minos --bench discovery` (`MINOS_BENCH_SCALE=0.1` for a quick run; the PostgreSQL
//! run uses `MINOS_TEST_POSTGRES_URL`).
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use minos::discovery::{serve_registry, Registry, RegistryConfig};
use minos::prelude::*;
use minos::testing::TestClient;
use minos_support::bench::{percentile, scale};

const SERVICES: usize = 1_000;
const ENDPOINTS: usize = 10;

fn config() -> RegistryConfig {
    RegistryConfig {
        // No probes or expiry during the run: the instances are not real.
        lease_ttl_ms: 3_600_000,
        probe_interval_ms: 3_600_000,
        ..RegistryConfig::default()
    }
}

fn body(service: usize) -> Value {
    let endpoints: Vec<Value> = (0..ENDPOINTS)
        .map(|e| match e % 2 {
            0 => json!(["GET", format!("/s{service}/r{e}/{{uuid}}")]),
            _ => json!(["POST", format!("/s{service}/r{e}")]),
        })
        .collect();
    json!({"address": "127.0.0.1", "port": 10_000 + service, "endpoints": endpoints})
}

async fn fill(registry: &Registry) -> Duration {
    let start = Instant::now();
    for service in 0..SERVICES {
        registry
            .register(&format!("service-{service}"), &body(service))
            .await
            .expect("register");
    }
    start.elapsed()
}

async fn resolutions(registry: &Registry, n: usize) -> (Duration, Vec<Duration>) {
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let service = (i * 7919) % SERVICES;
        let path = format!("/s{service}/r{}/{}", (i % 5) * 2, i);
        let begun = Instant::now();
        let found = registry.resolve("GET", &path).await.expect("resolve");
        latencies.push(begun.elapsed());
        assert_eq!(found["name"], json!(format!("service-{service}")));
    }
    latencies.sort();
    (start.elapsed(), latencies)
}

async fn over_http(registry: Registry, n: usize, clients: usize) -> Duration {
    let server = serve_registry(registry, "127.0.0.1", 0)
        .await
        .expect("serve");
    let client = TestClient::new(server.addr());
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..n / clients {
                    let service = (c * 31 + i * 7919) % SERVICES;
                    let path = format!("/microservices?verb=GET&path=/s{service}/r0/{i}");
                    let found = client.get(&path).await.expect("resolve");
                    assert_eq!(found.status, 200, "{}", found.body);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client");
    }
    let elapsed = start.elapsed();
    server.stop().await;
    elapsed
}

async fn churn(registry: &Registry, n: usize) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        let name = format!("churn-{}", i % 50);
        registry
            .register(&name, &body(i % SERVICES))
            .await
            .expect("register");
        registry.unregister(&name, None).await.expect("unregister");
    }
    start.elapsed()
}

fn per_second(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

async fn run(label: &str, repository: Repository) {
    let registry = Registry::new(repository.store().clone(), config());
    let filled = fill(&registry).await;
    let n = scale(20_000, 500);
    let (elapsed, latencies) = resolutions(&registry, n).await;
    println!(
        "{label:>8} fill {SERVICES} services x {ENDPOINTS} endpoints in {filled:>8.2?}; resolve {:>8.0}/s (p50 {:.1?}, p99 {:.1?})",
        per_second(n, elapsed),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );
    let http_n = scale(4_000, 200);
    let http = over_http(registry.clone(), http_n, 8).await;
    println!(
        "{label:>8} resolve over HTTP, 8 clients: {:>8.0}/s",
        per_second(http_n, http)
    );
    let churn_n = scale(2_000, 100);
    let churned = churn(&registry, churn_n).await;
    println!(
        "{label:>8} churn (register + unregister): {:>8.0}/s",
        per_second(churn_n, churned)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "registry, {} cores",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        run("memory", Repository::memory()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        run(
            "sqlite",
            Repository::sqlite(dir.path().join("registry.db")).expect("sqlite"),
        )
        .await;
        let url = minos_support::postgres::fresh_schema_url();
        run(
            "postgres",
            Repository::postgres(&url).await.expect("postgres"),
        )
        .await;
        minos_support::postgres::drop_schema(&url).await;
    });
}
