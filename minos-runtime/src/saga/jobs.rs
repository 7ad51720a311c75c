//! The periodic jobs of a service's sagas and transactions: executions past their deadline fail and
//! compensate, executions interrupted by a stop are resumed, transactions left behind are tidied.

use std::time::Duration;

use super::{ExecutionStatus, SagaConfig, SagaExecution, SagaManager};
use crate::error::Result;
use crate::store::now;
use crate::transaction::Transactions;

impl SagaManager {
    /// Up to 1000 executions in `status` unchanged since before `before`, oldest first.
    async fn stale(
        &self,
        status: ExecutionStatus,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<SagaExecution>> {
        let records = self
            .context
            .repository()
            .store()
            .stale_executions(status, before, 1000)
            .await?;
        records
            .into_iter()
            .map(SagaExecution::from_record)
            .collect()
    }

    /// Fails and compensates paused executions past their deadline. Returns how many.
    pub async fn expire(&self) -> Result<usize> {
        let current = now();
        // Paused longest first: those are the ones past their deadline.
        let paused = self.stale(ExecutionStatus::Paused, current).await?;
        let mut expired = 0;
        for candidate in paused.into_iter().filter(|e| e.deadline < current) {
            let _guard = self.lock(candidate.uuid).await;
            let outcome = async {
                let execution = self.get(candidate.uuid).await?;
                if execution.status != ExecutionStatus::Paused || execution.deadline >= current {
                    return Ok(false);
                }
                let topic = execution
                    .waiting
                    .as_ref()
                    .map_or_else(String::new, |w| w.topic.clone());
                let reason = format!("timed out waiting for the reply of `{topic}`");
                self.fail_or_abandon(execution, reason).await.map(|_| true)
            }
            .await;
            match outcome {
                Ok(true) => expired += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(saga = %candidate.uuid, %error, "could not time out the execution")
                }
            }
        }
        Ok(expired)
    }

    /// Continues executions left `running` and unchanged for longer than `idle` (their service stopped
    /// mid-step; paused ones wait for their replies, which the broker still holds). Returns how many.
    pub async fn resume(&self, idle: Duration) -> Result<usize> {
        let before = now() - chrono::Duration::from_std(idle).unwrap_or(chrono::Duration::MAX);
        let mut resumed = 0;
        for candidate in self.stale(ExecutionStatus::Running, before).await? {
            let _guard = self.lock(candidate.uuid).await;
            let outcome = async {
                let execution = self.get(candidate.uuid).await?;
                if execution.status != ExecutionStatus::Running || execution.updated_at >= before {
                    return Ok(false);
                }
                tracing::info!(saga = %execution.uuid, name = %execution.saga, "resuming an interrupted execution");
                match self.definition(&execution) {
                    Ok(saga) => {
                        let scope = self.scope(&execution);
                        self.drive(saga, execution, &scope).await.map(|_| true)
                    }
                    Err(error) => self
                        .fail_or_abandon(execution, error.to_string())
                        .await
                        .map(|_| true),
                }
            }
            .await;
            match outcome {
                Ok(true) => resumed += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(saga = %candidate.uuid, %error, "could not resume the execution")
                }
            }
        }
        Ok(resumed)
    }
}

/// Runs the jobs every `tidy_interval_ms` until aborted: rejects transactions left reserved (or
/// pending) too long and finishes interrupted commits, fails executions past their deadline, resumes
/// executions interrupted by a stop.
pub(crate) fn spawn_jobs(
    transactions: Transactions,
    sagas: SagaManager,
    config: &SagaConfig,
) -> tokio::task::JoinHandle<()> {
    let interval = Duration::from_millis(config.tidy_interval_ms.max(10));
    let max_age = Duration::from_millis(config.reserved_max_ms);
    let pending_max_age = Duration::from_millis(config.pending_max_ms);
    let resume_after = Duration::from_millis(config.resume_after_ms);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = transactions.tidy(max_age, pending_max_age).await {
                tracing::warn!(%error, "could not tidy transactions");
            }
            if let Err(error) = sagas.expire().await {
                tracing::warn!(%error, "could not time out saga executions");
            }
            match sagas.resume(resume_after).await {
                Ok(0) => {}
                Ok(resumed) => tracing::info!(resumed, "resumed interrupted saga executions"),
                Err(error) => tracing::warn!(%error, "could not resume saga executions"),
            }
        }
    })
}
