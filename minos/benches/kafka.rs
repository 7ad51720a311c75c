//! Messaging over Kafka: domain events per second from the outbox through Kafka to an event handler, the
//! round trip of a broker command (request, handler, reply) with p50/p99, and commands per second with 64
//! in flight.
//!
//! `cargo bench -p minos --bench kafka` (broker: `MINOS_TEST_KAFKA`, default 127.0.0.1:9092;
//! `scripts/kafka-dev.sh start` runs one; `MINOS_BENCH_SCALE=0.1` for a quick run).
#![allow(missing_docs, unreachable_pub)]

use minos_support::bench::{percentile, scale};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minos::prelude::*;
use minos::{Config, Launcher};
use minos_support::kafka::{bootstrap, unique};

#[root_entity]
pub struct BenchItem {
    pub n: i64,
}

static HANDLED: AtomicUsize = AtomicUsize::new(0);

pub struct BenchCommands;

#[command_service]
impl BenchCommands {
    #[enroute(broker = "BenchPing")]
    async fn ping(&self, request: Request) -> Result<Response> {
        Ok(Response::json(request.json().clone()))
    }
}

pub struct BenchReactions;

#[query_service]
impl BenchReactions {
    #[enroute(event = "BenchItemCreated")]
    async fn created(&self, _request: Request) -> Result<()> {
        HANDLED.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn main() {
    minos::launcher::init_logging("warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // The environment's settings apply (`MINOS_KAFKA_FETCH_WAIT_MS=1`, say); the bench sets the rest.
        let mut config = Config::from_env().expect("config");
        config.name = unique("bench");
        config.storage = "memory".into();
        config.broker = format!("kafka://{}", bootstrap());
        config.http.host = "127.0.0.1".into();
        config.http.port = 0;
        let service = Launcher::with_config(config)
            .start()
            .await
            .expect("start on Kafka");
        let repository = service.context().repository().clone();

        // Warm up: topics exist, the consumer group is joined.
        repository
            .create(BenchItem { n: -1 })
            .await
            .expect("create");
        let warm = Instant::now();
        while HANDLED.load(Ordering::SeqCst) < 1 && warm.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Events left on the topic by earlier runs reach this new group too: let them drain first.
        let mut last = HANDLED.load(Ordering::SeqCst);
        loop {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let now = HANDLED.load(Ordering::SeqCst);
            if now == last {
                break;
            }
            last = now;
        }

        let events = scale(5000, 20);
        let before = HANDLED.load(Ordering::SeqCst);
        let start = Instant::now();
        let repository = Arc::new(repository);
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let repository = Arc::clone(&repository);
                tokio::spawn(async move {
                    for i in 0..events / 8 {
                        repository
                            .create(BenchItem {
                                n: (w * 1_000_000 + i) as i64,
                            })
                            .await
                            .expect("create");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.expect("writer");
        }
        let expected = before + (events / 8) * 8;
        while HANDLED.load(Ordering::SeqCst) < expected
            && start.elapsed() < Duration::from_secs(300)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = start.elapsed();
        let handled = HANDLED.load(Ordering::SeqCst) - before;
        println!(
            "Kafka at {}, {} cores",
            bootstrap(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        println!(
            "outbox -> Kafka -> handler: {handled} events in {elapsed:.2?} = {:.0} events/s",
            handled as f64 / elapsed.as_secs_f64()
        );

        let client = service.context().client().clone();
        let rounds = scale(1000, 20);
        let mut latencies = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let sent = Instant::now();
            let reply = client
                .send("BenchPing", json!({"i": i}))
                .await
                .expect("reply");
            latencies.push(sent.elapsed());
            assert_eq!(reply.status, 200);
        }
        latencies.sort();
        let at = |p: f64| percentile(&latencies, p);
        println!(
            "command round trip (sequential, {rounds}): p50 {:.2?}, p99 {:.2?}",
            at(0.5),
            at(0.99)
        );

        // Pipelined: many commands in flight at once, each reply checked against its request.
        let in_flight = 64;
        let total = scale(20_000, in_flight * 4) / in_flight * in_flight;
        let started = Instant::now();
        let senders: Vec<_> = (0..in_flight)
            .map(|s| {
                let client = client.clone();
                tokio::spawn(async move {
                    for i in 0..total / in_flight {
                        let n = s * 1_000_000 + i;
                        let reply = client
                            .send("BenchPing", json!({"i": n}))
                            .await
                            .expect("reply");
                        assert_eq!(reply.status, 200);
                        assert_eq!(reply.content["i"], json!(n), "the reply to this command");
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.await.expect("sender");
        }
        let elapsed = started.elapsed();
        println!(
            "commands pipelined ({in_flight} in flight): {total} in {elapsed:.2?} = {:.0} commands/s",
            total as f64 / elapsed.as_secs_f64()
        );
        service.stop().await;
    });
}
