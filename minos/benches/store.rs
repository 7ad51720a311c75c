//! Store throughput: appends/s (event + snapshot + outbox in one transaction) and snapshot replay
//! events/s, for the in-memory and embedded SQLite stores.
//!
//! `cargo bench -p minos --bench store` (set `MINOS_BENCH_SCALE=0.1` for a quick run).

use minos_support::bench::scale;
use std::sync::Arc;
use std::time::{Duration, Instant};

use minos::prelude::*;
use minos::store::SqliteStore;
use minos::testing::models::Order;

fn rate(count: usize, elapsed: Duration) -> String {
    format!("{:>10.0}", count as f64 / elapsed.as_secs_f64())
}

/// Creates `n` roots from `writers` concurrent tasks.
async fn creates(repo: &Repository, n: usize, writers: usize) -> Duration {
    let repo = Arc::new(repo.clone());
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let repo = Arc::clone(&repo);
            tokio::spawn(async move {
                for i in 0..n / writers {
                    repo.create(Order::sample(&format!("c{w}-{i}"), i as f64))
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer task");
    }
    start.elapsed()
}

/// Saves `n` one-field updates of one root, then replays its stream.
async fn updates_and_replay(repo: &Repository, n: usize) -> (Duration, Duration, Duration, usize) {
    let mut order = repo
        .create(Order::sample("replay", 0.0))
        .await
        .expect("create");
    let start = Instant::now();
    for i in 0..n {
        order.quantity = i as i64 + 1;
        repo.save(&mut order).await.expect("save");
    }
    let updates = start.elapsed();
    let start = Instant::now();
    let events = repo.events(order.uuid()).await.expect("read events");
    let read = start.elapsed();
    let start = Instant::now();
    let replayed = Root::<Order>::replay(&events)
        .expect("replay")
        .expect("not deleted");
    let fold = start.elapsed();
    assert_eq!(replayed.quantity, n as i64);
    (updates, read, fold, events.len())
}

async fn run(label: &str, make: impl Fn() -> Repository) {
    let n = scale(20_000, 10);
    for writers in [1, 8] {
        let repo = make();
        let elapsed = creates(&repo, n, writers).await;
        println!(
            "{label:<8} creates, {writers} writer(s)     {} appends/s  ({n} in {elapsed:.2?})",
            rate(n, elapsed)
        );
    }
    let repo = make();
    let (updates, read, fold, events) = updates_and_replay(&repo, scale(20_000, 10)).await;
    println!(
        "{label:<8} updates of one root       {} appends/s",
        rate(events - 1, updates)
    );
    println!(
        "{label:<8} replay (read + fold)      {} events/s   (read {read:.2?}, fold {fold:.2?}, {events} events)",
        rate(events, read + fold)
    );
    let query_repo = make();
    creates(&query_repo, scale(10_000, 10), 1).await;
    let queries = scale(500, 10);
    let start = Instant::now();
    for i in 0..queries {
        let condition = Condition::eq("customer", format!("c0-{}", i * 7 % scale(10_000, 10)))
            & Condition::ge("total", 0);
        let found = Order::find(condition)
            .on(&query_repo)
            .limit(1)
            .await
            .expect("query");
        assert_eq!(found.len(), 1);
    }
    let elapsed = start.elapsed();
    println!(
        "{label:<8} find over {} roots   {} queries/s",
        scale(10_000, 10),
        rate(queries, elapsed)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        println!(
            "store benchmark ({} cores)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        run("memory", Repository::memory).await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let counter = std::sync::atomic::AtomicUsize::new(0);
        run("sqlite", || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Repository::new(
                SqliteStore::open(dir.path().join(format!("bench-{n}.db"))).expect("open"),
            )
        })
        .await;
    });
}
