//! POST /foos throughput and latency of the quickstart service on its embedded defaults (SQLite store,
//! in-process broker), run as a separate process and driven over loopback HTTP with keep-alive.
//!
//! `cargo bench -p minos-examples --bench http` (`MINOS_BENCH_SCALE=0.1` for a quick run).

use minos_support::bench::{percentile, post_foos, scale};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut child = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .env("MINOS_HTTP_PORT", "0")
        .env("MINOS_HTTP_HOST", "127.0.0.1")
        .env(
            "MINOS_STORAGE",
            format!("sqlite://{}", dir.path().join("bench.db").display()),
        )
        .env("RUST_LOG", "warn,minos_runtime=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the quickstart binary");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the service exited")
            .expect("read stdout");
        if let Some(at) = line.find("listening on http://") {
            break line[at + "listening on ".len()..].trim().to_owned();
        }
    };
    // Keep draining the service's output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    println!(
        "POST /foos on the embedded default (SQLite + in-process broker), {} cores",
        num_cpus()
    );
    println!(
        "{:>11} {:>9} {:>11} {:>9} {:>9}",
        "concurrency", "requests", "requests/s", "p50", "p99"
    );
    for concurrency in [1usize, 8, 32] {
        let authority = addr.trim_start_matches("http://");
        let (rate, mut latencies) = post_foos(authority, concurrency, scale(4000, 20));
        latencies.sort();
        println!(
            "{concurrency:>11} {:>9} {:>11.0} {:>9.2?} {:>9.2?}",
            latencies.len(),
            rate,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
