//! Retention: a service removes the rows it keeps only for a while — published outbox messages, inbox
//! entries, ended saga executions and ended transactions — once they are older than the configured
//! ages, in batches, every `retention.interval_ms`. Events and snapshots are never removed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{now, Retained, SharedStore, StoreError};
use crate::telemetry::Metrics;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// How long finished rows are kept (`retention:` in the configuration). An age of 0 keeps that kind
/// for ever; an interval of 0 turns retention off.
///
/// ```yaml
/// retention:
///   interval_ms: 60000          # how often the service looks (default: every minute)
///   batch: 5000                 # rows removed per statement
///   outbox_ms: 86400000         # published outbox messages: 1 day
///   inbox_ms: 691200000         # inbox entries: 8 days, longer than Kafka's default 7-day retention
///   sagas_ms: 604800000         # finished and errored saga executions: 7 days
///   transactions_ms: 604800000  # committed and rejected transaction entries: 7 days
/// ```
///
/// The inbox is what recognises a redelivered message: keep its entries longer than any message can
/// come back — the topics' retention when a consumer group may be reset to its earliest offsets
/// (Kafka's default is 7 days), the longest outage you would replay otherwise. An ended transaction's
/// entry refuses writes that arrive after the end; keep it longer than a request can be delayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How often the service removes what is old enough; 0 turns retention off.
    pub interval_ms: u64,
    /// Rows removed per statement (a sweep repeats until fewer are left).
    pub batch: usize,
    /// Age at which published outbox messages are removed; 0 keeps them.
    pub outbox_ms: u64,
    /// Age at which inbox entries are removed; 0 keeps them.
    pub inbox_ms: u64,
    /// Age at which finished and errored saga executions are removed; 0 keeps them.
    pub sagas_ms: u64,
    /// Age at which committed and rejected transaction entries are removed; 0 keeps them.
    pub transactions_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval_ms: 60_000,
            batch: 5_000,
            outbox_ms: DAY_MS,
            inbox_ms: 8 * DAY_MS,
            sagas_ms: 7 * DAY_MS,
            transactions_ms: 7 * DAY_MS,
        }
    }
}

impl RetentionConfig {
    /// How long rows of `kind` are kept; `None` for ever.
    pub fn age(&self, kind: Retained) -> Option<Duration> {
        let ms = match kind {
            Retained::Outbox => self.outbox_ms,
            Retained::Inbox => self.inbox_ms,
            Retained::Sagas => self.sagas_ms,
            Retained::Transactions => self.transactions_ms,
        };
        (ms > 0).then(|| Duration::from_millis(ms))
    }
}

/// Removes every row older than its kind's age, batch after batch, and answers how many of each kind
/// it removed. What a service runs every `retention.interval_ms`; callable from code (an admin task, a test). Safe
/// while other replicas sweep the same store.
pub async fn sweep(
    store: &SharedStore,
    config: &RetentionConfig,
) -> Result<Vec<(Retained, u64)>, StoreError> {
    let batch = config.batch.max(1);
    let mut removed = Vec::new();
    for kind in Retained::ALL {
        let Some(age) = config.age(kind) else {
            continue;
        };
        let before = now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        let mut total = 0;
        loop {
            let count = store.purge(kind, before, batch).await?;
            total += count;
            if count < batch as u64 {
                break;
            }
            // Let the service's own statements through between batches.
            tokio::task::yield_now().await;
        }
        removed.push((kind, total));
    }
    Ok(removed)
}

/// Runs [`sweep`] every `interval_ms` until aborted, logging and counting what it removed
/// (`minos_retention_removed_rows_total{kind}`). `None` when retention is off.
pub(crate) fn spawn(
    store: SharedStore,
    config: &RetentionConfig,
    metrics: Metrics,
) -> Option<tokio::task::JoinHandle<()>> {
    if config.interval_ms == 0 {
        return None;
    }
    let config = config.clone();
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(config.interval_ms));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match sweep(&store, &config).await {
                Ok(removed) => {
                    for (kind, count) in removed.into_iter().filter(|(_, count)| *count > 0) {
                        metrics.retention_removed(kind.as_str(), count);
                        tracing::info!(
                            kind = kind.as_str(),
                            removed = count,
                            "retention: removed finished rows"
                        );
                    }
                }
                Err(error) => tracing::warn!(%error, "retention: could not remove finished rows"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_of_zero_keep_for_ever() {
        let config = RetentionConfig {
            inbox_ms: 0,
            ..RetentionConfig::default()
        };
        assert_eq!(config.age(Retained::Inbox), None);
        assert_eq!(
            config.age(Retained::Outbox),
            Some(Duration::from_millis(DAY_MS))
        );
        // The inbox outlives Kafka's default 7-day retention by default.
        assert!(RetentionConfig::default().inbox_ms > 7 * DAY_MS);
    }
}
