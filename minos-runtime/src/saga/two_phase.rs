//! The end of an execution: two-phase commit across its participants, or rejection and compensation.

use futures_util::future::join_all;
use serde_json::{json, Value};

use super::definition::Step;
use super::{ExecutionStatus, Saga, SagaExecution, SagaManager};
use crate::error::{Error, Result};
use crate::messaging::{headers, topics, BrokerMessage};
use crate::store::now;
use crate::transaction::TransactionCommand;

impl SagaManager {
    /// Sends one transaction command to every participant (this service directly), concurrently;
    /// returns the failures, each as `service: error`.
    async fn command_all(
        &self,
        execution: &SagaExecution,
        command: TransactionCommand,
    ) -> Vec<String> {
        described(self.command_each(execution, command, None).await)
    }

    /// Sends one transaction command to every participant, or to those of `only`; the failures.
    async fn command_each(
        &self,
        execution: &SagaExecution,
        command: TransactionCommand,
        only: Option<&[String]>,
    ) -> Vec<(String, Error)> {
        let own = self.context.name();
        let mut remote = Vec::new();
        // Services that hold only new roots have nothing to reserve: they are only committed.
        let skip = |service: &str| {
            (command == TransactionCommand::Reserve && execution.one_phase.contains(service))
                || only.is_some_and(|only| !only.iter().any(|s| s == service))
        };
        for service in execution
            .related_services
            .iter()
            .filter(|s| *s != own && !skip(s))
        {
            let mut message = BrokerMessage::new(
                topics::transaction_command(command, service),
                json!(execution.uuid.to_string()),
            );
            message.key = Some(execution.uuid.to_string());
            let service = service.clone();
            remote.push(async move { (service, self.request(message).await) });
        }
        let local = async {
            if skip(own) {
                return Ok(());
            }
            self.context
                .repository()
                .transactions()
                .run(command, execution.uuid)
                .await
                .map(|_| ())
        };
        // This service's own part runs while the others answer.
        let (mut results, local) = futures_util::future::join(join_all(remote), local).await;
        results.push((own.to_owned(), local));
        results
            .into_iter()
            .filter_map(|(service, result)| result.err().map(|e| (service, e)))
            .collect()
    }

    /// Commits every participant (those of `only`, when given) once all reserved. The decision is
    /// taken, so a participant that did not answer in time (killed and restarting, the broker paused)
    /// is sent the commit again, which is idempotent, for up to `saga.reserved_max_ms`; a refusal is
    /// not retried.
    async fn commit_all(&self, execution: &SagaExecution, only: Option<&[String]>) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + self.commit_for;
        let mut failed = self
            .command_each(execution, TransactionCommand::Commit, only)
            .await;
        while !failed.is_empty()
            && failed
                .iter()
                .all(|(_, e)| matches!(e, Error::Timeout { .. }))
            && tokio::time::Instant::now() + self.command_timeout <= deadline
        {
            let again: Vec<String> = failed.iter().map(|(service, _)| service.clone()).collect();
            tracing::warn!(saga = %execution.uuid, services = ?again, "no reply to the commit in time: sending it again");
            failed = self
                .command_each(execution, TransactionCommand::Commit, Some(&again))
                .await;
        }
        described(failed)
    }

    /// Commits this service's part of the execution. An error whose outcome is unknown (the store
    /// went away during the commit) is looked up: a transaction found committed counts as committed.
    async fn commit_own(&self, execution: &SagaExecution) -> Result<()> {
        let repository = self.context.repository();
        let error = match repository.transactions().commit(execution.uuid).await {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        match repository.store().transaction(execution.uuid).await {
            Ok(Some(entry)) if entry.status == crate::domain::TransactionStatus::Committed => {
                Ok(())
            }
            _ => Err(error),
        }
    }

    /// Sends `message` and waits for its reply: `Ok` for a 2xx reply, else an error with the reply's
    /// status and error text.
    async fn request(&self, message: BrokerMessage) -> Result<()> {
        let reply = self
            .context
            .client()
            .request(message, self.command_timeout)
            .await?;
        if reply.is_success() {
            return Ok(());
        }
        let text = reply
            .content
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| reply.content.to_string(), str::to_owned);
        Err(Error::with_status(reply.status, text))
    }

    /// Sends a remote step's compensation: outside any transaction, with the `saga` and `user` headers.
    async fn send_compensation(
        &self,
        execution: &SagaExecution,
        request: super::SagaRequest,
    ) -> Result<()> {
        let (topic, content) = request.into_parts()?;
        let mut message = BrokerMessage::new(topic, content);
        // Undoing a step is worth doing however late it arrives: no deadline.
        message.set_deadline(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        let headers = &mut message.payload.headers;
        headers.insert(headers::SAGA.into(), execution.uuid.to_string());
        if let Some(caller) = &execution.caller {
            caller.add_to(headers);
        }
        if let Some(user) = &execution.user {
            headers.insert(headers::USER.into(), user.clone());
        }
        super::execution::trace_step(headers, execution);
        self.request(message).await
    }

    /// Two-phase commit: every participant reserves, then all commit; a refusal rejects every
    /// participant and compensates the steps. When no other participant has anything to reserve (each
    /// holds only new roots), this service's part needs no reservation round either: it commits first,
    /// its commit checking and claiming what a reservation would, and then the others commit.
    pub(super) async fn finish(
        &self,
        saga: &Saga,
        mut execution: SagaExecution,
    ) -> Result<SagaExecution> {
        let own = self.context.name().to_owned();
        let others: Vec<String> = execution
            .related_services
            .iter()
            .filter(|s| **s != own)
            .cloned()
            .collect();
        let failed = if others.iter().all(|s| execution.one_phase.contains(s)) {
            if let Err(error) = self.commit_own(&execution).await {
                let error = format!("reservation refused: {own}: {error}");
                return self.fail(saga, execution, error).await;
            }
            self.commit_all(&execution, Some(&others)).await
        } else {
            let refused = self
                .command_all(&execution, TransactionCommand::Reserve)
                .await;
            if !refused.is_empty() {
                let error = format!("reservation refused: {}", refused.join("; "));
                return self.fail(saga, execution, error).await;
            }
            self.commit_all(&execution, None).await
        };
        execution.updated_at = now();
        if failed.is_empty() {
            execution.status = ExecutionStatus::Finished;
        } else {
            // Reserved participants that fail to commit cannot be compensated safely: report it.
            tracing::error!(saga = %execution.uuid, "commit failed after every participant reserved: {}", failed.join("; "));
            execution.status = ExecutionStatus::Errored;
            execution.error = Some(format!("commit failed: {}", failed.join("; ")));
        }
        self.save(&execution).await?;
        Ok(execution)
    }

    /// Compensates the steps that ran, newest first, rejects every participant's transaction, and
    /// stores the execution as errored.
    pub(super) async fn fail(
        &self,
        saga: &Saga,
        mut execution: SagaExecution,
        error: String,
    ) -> Result<SagaExecution> {
        tracing::warn!(saga = %execution.uuid, name = %execution.saga, %error, "saga failed: compensating");
        let mut problems: Vec<String> = self
            .command_all(&execution, TransactionCommand::Reject)
            .await
            .into_iter()
            .map(|problem| format!("reject in {problem}"))
            .collect();
        for path in execution.done.clone().into_iter().rev() {
            let context = execution.context.clone();
            match saga.step_at(&path) {
                Some(Step::Local {
                    on_failure: Some(compensate),
                    ..
                }) => match self.context.clone().scope(compensate(context)).await {
                    Ok(context) => execution.context = context,
                    Err(e) => problems.push(format!("compensation of step {path:?}: {e}")),
                },
                Some(Step::Remote {
                    on_failure: Some(compensate),
                    ..
                }) => {
                    let sent = match self.context.clone().scope(compensate(context)).await {
                        Ok(request) => self.send_compensation(&execution, request).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = sent {
                        problems.push(format!("compensation of step {path:?}: {e}"));
                    }
                }
                _ => {}
            }
        }
        execution.status = ExecutionStatus::Errored;
        execution.waiting = None;
        execution.error = Some(if problems.is_empty() {
            error
        } else {
            format!("{error} (then: {})", problems.join("; "))
        });
        execution.updated_at = now();
        self.save(&execution).await?;
        Ok(execution)
    }

    /// Fails the execution, compensating when its definition is known; without it (the saga is not in
    /// this binary any more) the participants still reject and the execution is stored as errored.
    pub(super) async fn fail_or_abandon(
        &self,
        mut execution: SagaExecution,
        reason: String,
    ) -> Result<SagaExecution> {
        if let Ok(saga) = self.definition(&execution) {
            return self.fail(saga, execution, reason).await;
        }
        let problems = self
            .command_all(&execution, TransactionCommand::Reject)
            .await;
        execution.status = ExecutionStatus::Errored;
        execution.waiting = None;
        execution.error = Some(format!(
            "{reason}; saga `{}` is not registered here, so nothing was compensated{}",
            execution.saga,
            if problems.is_empty() {
                String::new()
            } else {
                format!(" (then: {})", problems.join("; "))
            }
        ));
        execution.updated_at = now();
        self.save(&execution).await?;
        Ok(execution)
    }
}

/// Failures as `service: error`.
fn described(failed: Vec<(String, Error)>) -> Vec<String> {
    failed
        .into_iter()
        .map(|(service, e)| format!("{service}: {e}"))
        .collect()
}
