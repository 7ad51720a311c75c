//! Giving memory back after a burst: a service that has handled a burst of requests or messages and is
//! now quiet (idle, or a few requests a second) returns the allocator's free pages to the operating
//! system, so its footprint falls back instead of staying at the burst's peak.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Requests and messages handled since the start (only compared, never shown).
static ACTIVITY: AtomicU64 = AtomicU64::new(0);

/// How often the service looks whether it went quiet.
const TICK: Duration = Duration::from_secs(2);

/// A tick with fewer requests and messages than this is quiet: light steady traffic (a client polling
/// a route every second) does not keep a service at the peak of its last burst.
const QUIET: u64 = 20;

/// Requests and messages since the last trim that make the next quiet tick trim again: a trim walks
/// every arena, so a handful of requests now and then does not call for one each time.
const WORK: u64 = 200;

/// Counts one request or message.
pub(crate) fn busy() {
    ACTIVITY.fetch_add(1, Ordering::Relaxed);
}

/// Whether to trim now: this tick was quiet (`now` against `last`, the count a tick ago) and enough
/// work came since the last trim (`trimmed`).
fn due(now: u64, last: u64, trimmed: u64) -> bool {
    now.saturating_sub(last) < QUIET && now.saturating_sub(trimmed) >= WORK
}

/// Starts the task that trims the heap at the first quiet tick after some work (never while busy).
pub(crate) fn spawn() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut last, mut trimmed) = (0, 0);
        loop {
            ticks.tick().await;
            let now = ACTIVITY.load(Ordering::Relaxed);
            if due(now, last, trimmed) {
                trimmed = now;
                // malloc_trim walks every arena: off the async workers.
                let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
                tracing::debug!(released, "quiet: free heap pages returned to the system");
            }
            last = now;
        }
    })
}

/// Returns the free pages of every allocator arena to the system (glibc); whether any were returned.
///
/// The one `unsafe` block of the workspace (whose lint denies it everywhere else): a foreign call with
/// no arguments to uphold.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    // SAFETY: malloc_trim only reads and changes the allocator's own state, under its locks.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators return memory by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_tick_after_a_burst_trims_once() {
        // A burst of 10,000, then a quiet tick: trim.
        assert!(due(10_000, 10_000, 0));
        // Still busy: no trim.
        assert!(!due(10_000, 5_000, 0));
        // Light traffic after the burst (5 in the tick) is quiet.
        assert!(due(10_005, 10_000, 0));
        // Once trimmed, a few requests later do not trim again …
        assert!(!due(10_050, 10_040, 10_005));
        // … until enough work came since.
        assert!(due(10_300, 10_290, 10_005));
        // A service that did next to nothing never trims.
        assert!(!due(3, 3, 0));
    }
}
