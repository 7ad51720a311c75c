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
