//! The retention soak: broker commands and sagas through one service on PostgreSQL, with every kind of
//! finished row kept for one second. While the load runs, the outbox, inbox, saga-execution and
//! transaction tables stay bounded; after it, they empty; the events stay. `MINOS_SOAK_MESSAGES` sets
//! the number of commands (default 20,000; the figures in the README come from 200,000), one saga per
//! 20 commands.
#![allow(missing_docs, unreachable_pub)]

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use minos::prelude::*;
use minos::saga::{ExecutionStatus, SagaManager};
use minos::store::PostgresStore;
use minos::testing::{test_config, TestService};

#[root_entity]
pub struct SoakNote {
    pub n: i64,
}

pub struct SoakCommands;

#[command_service]
impl SoakCommands {
    #[enroute(broker = "SoakNote")]
    async fn note(&self, request: Request) -> Result<Response> {
        let n = request.json()["n"].as_i64().unwrap_or_default();
        let note = SoakNote::create(SoakNote { n }).await?;
        Ok(Response::json(json!({"uuid": note.uuid()})))
    }
}

pub struct SoakReactions;

#[query_service]
impl SoakReactions {
    /// Every note's creation comes back through the outbox, the relay and the inbox.
    #[enroute(event = "SoakNoteCreated")]
    async fn seen(&self, _request: Request) -> Result<()> {
        Ok(())
    }
}

async fn send_note(ctx: SagaContext) -> Result<SagaRequest> {
    Ok(SagaRequest::new(
        "SoakNote",
        json!({"n": ctx.get::<i64>("n")?}),
    ))
}

minos::saga! {
    pub static SOAK_SAGA = Saga::builder().remote_step(send_note).commit();
}

const TABLES: [&str; 4] = ["outbox", "inbox", "saga_executions", "transactions"];

/// The rows of each retained table, then the events.
async fn rows(tables: &PostgresStore) -> ([i64; 4], i64) {
    let client = tables.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM inbox), \
             (SELECT count(*) FROM saga_executions), (SELECT count(*) FROM transactions), \
             (SELECT count(*) FROM events)",
            &[],
        )
        .await
        .unwrap();
    ([row.get(0), row.get(1), row.get(2), row.get(3)], row.get(4))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_rows_stay_bounded_under_load_and_events_stay() {
    let commands: usize = std::env::var("MINOS_SOAK_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let sagas = commands / 20;
    let mut config = test_config("soak");
    config.storage = minos_support::postgres::fresh_schema_url();
    config.retention.interval_ms = 200;
    config.retention.batch = 2_000;
    config.retention.outbox_ms = 1_000;
    config.retention.inbox_ms = 1_000;
    config.retention.sagas_ms = 1_000;
    config.retention.transactions_ms = 1_000;
    let storage = config.storage.clone();
    let service = TestService::start(config).await.unwrap();
    // The service's own tables, read beside it.
    let tables = Arc::new(PostgresStore::connect(&storage).await.unwrap());

    // Sample the tables while the load runs.
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let running = Arc::clone(&running);
        let tables = Arc::clone(&tables);
        tokio::spawn(async move {
            let mut peak = [0i64; 4];
            while running.load(AtomicOrdering::Relaxed) {
                let (now, _) = rows(&tables).await;
                for (p, n) in peak.iter_mut().zip(now) {
                    *p = (*p).max(n);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            peak
        })
    };

    let started = Instant::now();
    let manager = SagaManager::new(service.context().clone());
    let saga_runs = stream::iter(0..sagas)
        .map(|n| {
            let manager = manager.clone();
            async move {
                let execution = manager
                    .run(&SOAK_SAGA, json!({"n": -(n as i64) - 1}))
                    .await
                    .unwrap();
                manager
                    .wait(execution.uuid, Duration::from_secs(60))
                    .await
                    .unwrap()
                    .status
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    let command_runs = stream::iter(0..commands)
        .map(|n| {
            let service = &service;
            async move {
                service
                    .send("SoakNote", json!({"n": n}))
                    .await
                    .map(|reply| reply.is_success())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>();
    let (statuses, replies) = tokio::join!(saga_runs, command_runs);
    let took = started.elapsed();
    running.store(false, AtomicOrdering::Relaxed);
    let peak = sampler.await.unwrap();

    let answered = replies.iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(answered, commands, "every command answered");
    let finished = statuses
        .iter()
        .filter(|s| **s == ExecutionStatus::Finished)
        .count();
    assert_eq!(finished, sagas, "every saga finished");
    // The events are never removed: one per command and one per saga.
    let (_, events) = rows(&tables).await;
    assert_eq!(events as usize, commands + sagas);

    // Once the load ends, what is finished goes within a few sweeps.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let (now, _) = rows(&tables).await;
        if now.iter().all(|n| *n == 0) || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let metrics = service.context().metrics().render();
    let removed: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("minos_retention_removed_rows_total"))
        .collect();
    println!(
        "retention soak: {commands} commands and {sagas} sagas in {:.1} s ({:.0} messages/s)",
        took.as_secs_f64(),
        (commands + sagas) as f64 / took.as_secs_f64()
    );
    for (i, table) in TABLES.iter().enumerate() {
        println!(
            "  {table:<16} peak during the load {:>7}, after {:>3}",
            peak[i], after[i]
        );
    }
    println!("  events kept: {events}; removed: {}", removed.join(", "));
    assert_eq!(after, [0; 4], "every finished row removed after the load");
    // Without retention the tables would hold every row: `commands + sagas` outbox messages, twice as
    // many inbox entries. With rows kept one second they never come near.
    let bound = 10_000.min(commands as i64 / 2).max(1_000);
    for (i, table) in TABLES.iter().enumerate() {
        assert!(
            peak[i] <= bound,
            "{table} grew to {} rows (bound {bound})",
            peak[i]
        );
    }
    let inbox_removed: u64 = removed
        .iter()
        .find(|l| l.contains("kind=\"inbox\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        inbox_removed as usize >= 2 * commands,
        "the inbox entries of every command and every event were removed and counted: {inbox_removed}"
    );
    service.stop().await;
}
