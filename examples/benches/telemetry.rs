//! The cost of telemetry: POST /foos requests/s of the quickstart service with spans, trace context and
//! metrics on (the default) and off (`telemetry: {spans: false, metrics: false}`), in one run. Both
//! services run side by side and are driven in interleaved rounds at concurrency 8, on the in-process
//! store (where the framework's own costs show most) and on the embedded default (SQLite).
//!
//! `cargo bench -p minos-examples --bench telemetry` (`MINOS_BENCH_SCALE=0.1` for a quick run).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use minos_support::bench::{percentile, post_foos, scale};
use minos_support::process::spawn_listening;

struct Service {
    child: Child,
    addr: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(storage: &str, on: bool) -> Service {
    let flag = if on { "true" } else { "false" };
    let mut command = Command::new(env!("CARGO_BIN_EXE_quickstart"));
    command
        .env("MINOS_HTTP_PORT", "0")
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        .env("MINOS_STORAGE", storage)
        .env("MINOS_TELEMETRY_SPANS", flag)
        .env("MINOS_TELEMETRY_METRICS", flag)
        .env("RUST_LOG", "info")
        .stderr(Stdio::inherit());
    let started = spawn_listening(&mut command, "quickstart", Duration::from_secs(30));
    let lines = started.lines;
    // Drain the service's output (one INFO line per created Foo) so it never blocks.
    std::thread::spawn(move || while lines.recv().is_ok() {});
    Service {
        child: started.child,
        addr: started.addr,
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let concurrency = 8;
    let requests = scale(4000, 80);
    let rounds = 3;
    println!(
        "POST /foos at concurrency {concurrency}, {requests} requests per round, {rounds} interleaved rounds"
    );
    println!(
        "{:<8} {:<9} {:>11} {:>9} {:>9}",
        "store", "telemetry", "requests/s", "p50", "p99"
    );
    for (label, storage) in [
        ("memory", "memory".to_owned()),
        (
            "sqlite",
            format!("sqlite://{}", dir.path().join("bench-{}.db").display()),
        ),
    ] {
        let on = start(&storage.replace("{}", "on"), true);
        let off = start(&storage.replace("{}", "off"), false);
        // Warm both.
        post_foos(&on.addr, concurrency, requests / 10);
        post_foos(&off.addr, concurrency, requests / 10);
        let mut results = [(0.0, Vec::new()), (0.0, Vec::new())];
        for _ in 0..rounds {
            for (slot, service) in [&on, &off].into_iter().enumerate() {
                let (rate, latencies) = post_foos(&service.addr, concurrency, requests);
                results[slot].0 += rate / rounds as f64;
                results[slot].1.extend(latencies);
            }
        }
        for (slot, name) in ["on", "off"].into_iter().enumerate() {
            let (rate, latencies) = &mut results[slot];
            latencies.sort();
            println!(
                "{label:<8} {name:<9} {rate:>11.0} {:>9.2?} {:>9.2?}",
                percentile(latencies, 0.50),
                percentile(latencies, 0.99),
            );
        }
        let cost = 1.0 - results[0].0 / results[1].0;
        println!(
            "{label:<8} cost of telemetry: {:.1}% of requests/s",
            cost * 100.0
        );
    }
}
