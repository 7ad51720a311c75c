//! Helpers shared by the benchmark binaries.

use std::time::Duration;

/// `n` scaled by `MINOS_BENCH_SCALE` (default 1; `0.1` for a quick run), at least `min`.
pub fn scale(n: usize, min: usize) -> usize {
    let factor: f64 = std::env::var("MINOS_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * factor) as usize).max(min)
}

/// The `p` percentile (0–1) of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// One round of `requests` `POST /foos` (`{"bar": …}`, each answered 200) to the service at `addr`
/// (`host:port`) from `concurrency` keep-alive clients: requests/s and every latency, unsorted.
pub fn post_foos(addr: &str, concurrency: usize, requests: usize) -> (f64, Vec<Duration>) {
    let per_client = requests / concurrency.max(1);
    let start = std::time::Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|c| {
            let client = crate::http::Client::new(format!("http://{addr}"));
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let body = format!(r#"{{"bar": "bench-{c}-{i}"}}"#);
                    let sent = std::time::Instant::now();
                    let answer = client.post("/foos", &body).expect("request");
                    latencies.push(sent.elapsed());
                    assert_eq!(answer.status, 200, "{}", answer.body);
                }
                latencies
            })
        })
        .collect();
    let latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("client thread"))
        .collect();
    (
        latencies.len() as f64 / start.elapsed().as_secs_f64(),
        latencies,
    )
}
