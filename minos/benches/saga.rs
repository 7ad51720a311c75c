//! Sagas per second and p50/p99 of the two-step saga (a remote step creating an entity in another service,
//! then a local step updating one here, then reserve and commit in both), with two services in one
//! process, at 1, 8 and 32 sagas in flight.
//!
//! `cargo bench -p minos --bench saga [memory] [postgres] [kafka]` (default: all three):
//! - `memory`: in-process broker, in-memory stores;
//! - `postgres`: in-process broker, PostgreSQL stores (`MINOS_TEST_POSTGRES_URL`);
//! - `kafka`: Kafka (`MINOS_TEST_KAFKA`) and PostgreSQL, as in production.
//!
//! `MINOS_BENCH_SCALE=0.1` for a quick run.
#![allow(missing_docs, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minos::messaging::{MemoryBroker, SharedBroker};
use minos::prelude::*;
use minos::saga::{ExecutionStatus, SagaManager};
use minos::{Config, Launcher, RunningService};
use minos_support::bench::{percentile, scale};

#[root_entity]
pub struct BenchFoo {
    pub n: i64,
    pub bar: Option<Ref<BenchBar>>,
}

#[root_entity]
pub struct BenchBar {
    pub n: i64,
}

static BARS_CREATED: AtomicUsize = AtomicUsize::new(0);

pub struct BarCommands;

#[command_service]
impl BarCommands {
    #[enroute(broker = "CreateBenchBar")]
    async fn create(&self, request: Request) -> Result<Response> {
        let n: i64 = request.json()["n"].as_i64().unwrap_or(0);
        let bar = BenchBar::create(BenchBar { n }).await?;
        BARS_CREATED.fetch_add(1, Ordering::SeqCst);
        Ok(Response::json(bar.uuid()))
    }
}

pub struct FooCommands;

#[command_service]
impl FooCommands {
    #[enroute(rest = "GET /bench")]
    async fn ping(&self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }
}

async fn create_bar(ctx: SagaContext) -> Result<SagaRequest> {
    Ok(SagaRequest::new(
        "CreateBenchBar",
        json!({"n": ctx.get::<i64>("n")?}),
    ))
}

async fn bar_created(mut ctx: SagaContext, reply: SagaResponse) -> Result<SagaContext> {
    ctx.set("bar", reply.content::<Uuid>()?);
    Ok(ctx)
}

async fn link(ctx: SagaContext) -> Result<SagaContext> {
    let mut foo = BenchFoo::get(ctx.get("foo")?).await?;
    foo.bar = Some(Ref::new(ctx.get("bar")?));
    foo.save().await?;
    Ok(ctx)
}

minos::saga! {
    pub static TWO_STEPS = Saga::builder()
        .remote_step(create_bar)
        .on_success(bar_created)
        .local_step(link)
        .commit();
}

fn config(name: &str, storage: &str, broker: &str, services: &[&str]) -> Config {
    // The environment's settings apply (`MINOS_KAFKA_FETCH_WAIT_MS=1`, say); the bench sets the rest.
    let mut config = Config::from_env().expect("config");
    config.name = name.into();
    config.storage = storage.into();
    config.broker = broker.into();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.services = services.iter().map(|s| s.to_string()).collect();
    config
}

/// The two services, and the stores they write (dropped at the end of the run).
async fn start(mode: &str) -> (RunningService, RunningService, [String; 2]) {
    // Over Kafka the names stay the same from run to run: the consumer groups keep their offsets, so a
    // run does not first re-read every command earlier runs sent.
    let suffix = match mode {
        "kafka" => "kafka".to_owned(),
        _ => Uuid::new_v4().simple().to_string()[..8].to_owned(),
    };
    let (storage_foo, storage_bar, broker_url) = match mode {
        "memory" => (
            "memory".to_owned(),
            "memory".to_owned(),
            "memory".to_owned(),
        ),
        "postgres" => (
            minos_support::postgres::fresh_schema_url().replace("minos_t_", "minos_bench_"),
            minos_support::postgres::fresh_schema_url().replace("minos_t_", "minos_bench_"),
            "memory".to_owned(),
        ),
        _ => (
            minos_support::postgres::fresh_schema_url().replace("minos_t_", "minos_bench_"),
            minos_support::postgres::fresh_schema_url().replace("minos_t_", "minos_bench_"),
            format!("kafka://{}", minos_support::kafka::bootstrap()),
        ),
    };
    let shared: Option<SharedBroker> =
        (broker_url == "memory").then(|| Arc::new(MemoryBroker::new()) as SharedBroker);
    let mut bar = Launcher::with_config(config(
        &format!("bar-{suffix}"),
        &storage_bar,
        &broker_url,
        &["BarCommands"],
    ))
    .configure(|c| c.root_entities = vec!["BenchBar".into()]);
    let mut foo = Launcher::with_config(config(
        &format!("foo-{suffix}"),
        &storage_foo,
        &broker_url,
        &["FooCommands"],
    ))
    .configure(|c| c.root_entities = vec!["BenchFoo".into()]);
    if let Some(broker) = shared {
        bar = bar.broker(Arc::clone(&broker));
        foo = foo.broker(broker);
    }
    let bar = bar.start().await.expect("start the bar service");
    let foo = foo.start().await.expect("start the foo service");
    (foo, bar, [storage_foo, storage_bar])
}

async fn one_saga(manager: &SagaManager, n: i64) -> Duration {
    let started = Instant::now();
    let foo = manager
        .context()
        .repository()
        .create(BenchFoo { n, bar: None })
        .await
        .expect("create");
    let execution = manager
        .run(
            &TWO_STEPS,
            SagaContext::new().with("n", n).with("foo", foo.uuid()),
        )
        .await
        .expect("run");
    let ended = manager
        .wait(execution.uuid, Duration::from_secs(120))
        .await
        .expect("the saga ends");
    assert_eq!(ended.status, ExecutionStatus::Finished, "{:?}", ended.error);
    started.elapsed()
}

fn main() {
    minos::launcher::init_logging("warn");
    let modes: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| ["memory", "postgres", "kafka"].contains(&a.as_str()))
        .collect();
    let modes = if modes.is_empty() {
        vec![
            "memory".to_owned(),
            "postgres".to_owned(),
            "kafka".to_owned(),
        ]
    } else {
        modes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "two-step saga (remote create + local update + reserve/commit in both services), {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    runtime.block_on(async {
        for mode in modes {
            let (foo, bar, stores) = start(&mode).await;
            let manager = SagaManager::new(foo.context().clone());
            // Warm up (Kafka: topics, consumer groups), then let commands left by earlier runs drain.
            one_saga(&manager, -1).await;
            let mut last = BARS_CREATED.load(Ordering::SeqCst);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = BARS_CREATED.load(Ordering::SeqCst);
                if now == last {
                    break;
                }
                last = now;
            }
            for concurrency in [1usize, 8, 32] {
                let total = scale(if concurrency == 1 { 300 } else { 1500 }, concurrency * 2);
                let per_task = total / concurrency;
                let started = Instant::now();
                let tasks: Vec<_> = (0..concurrency)
                    .map(|t| {
                        let manager = manager.clone();
                        tokio::spawn(async move {
                            let mut latencies = Vec::with_capacity(per_task);
                            for i in 0..per_task {
                                latencies.push(one_saga(&manager, (t * per_task + i) as i64).await);
                            }
                            latencies
                        })
                    })
                    .collect();
                let mut latencies = Vec::new();
                for task in tasks {
                    latencies.extend(task.await.expect("task"));
                }
                let elapsed = started.elapsed();
                latencies.sort();
                println!(
                    "{mode:>8} c{concurrency:<3} {:>5} sagas in {elapsed:>8.2?} = {:>7.0} sagas/s, p50 {:.2?}, p99 {:.2?}",
                    latencies.len(),
                    latencies.len() as f64 / elapsed.as_secs_f64(),
                    percentile(&latencies, 0.5),
                    percentile(&latencies, 0.99),
                );
            }
            foo.stop().await;
            bar.stop().await;
            for store in stores {
                minos_support::postgres::drop_schema(&store).await;
            }
        }
    });
}
