//! Giving memory back after a burst: a service that has handled a burst of requests or messages and is
//! now idle returns the allocator's free pages to the operating system, so its footprint falls back
//! instead of staying at the burst's peak.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Requests and messages handled since the start (only compared, never shown).
static ACTIVITY: AtomicU64 = AtomicU64::new(0);

/// How often the service looks whether it went idle.
const TICK: Duration = Duration::from_secs(2);

/// Counts one request or message.
pub(crate) fn busy() {
    ACTIVITY.fetch_add(1, Ordering::Relaxed);
}

/// Starts the task that trims the heap once the service has been idle for a whole tick after some
/// work (never twice for the same work, never while busy).
pub(crate) fn spawn() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut last, mut trimmed) = (0, 0);
        loop {
            ticks.tick().await;
            let now = ACTIVITY.load(Ordering::Relaxed);
            if now == last && now != trimmed {
                trimmed = now;
                // malloc_trim walks every arena: off the async workers.
                let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
                tracing::debug!(released, "idle: free heap pages returned to the system");
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
