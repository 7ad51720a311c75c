//! The state machine of an execution: runs steps from its cursor, pauses on a remote step until its
//! reply, and goes on from the reply.

use uuid::Uuid;

use super::definition::Step;
use super::{ExecutionStatus, Saga, SagaExecution, SagaManager, SagaResponse, Waiting};
use crate::error::{Error, Result};
use crate::messaging::{headers, BrokerMessage};
use crate::store::now;
use crate::transaction::TransactionScope;

/// What became of a step.
pub(super) enum Progress {
    Next(super::SagaContext),
    Paused,
}

impl SagaManager {
    /// Runs steps from the cursor until a pause or the end.
    pub(super) async fn drive(
        &self,
        saga: &Saga,
        mut execution: SagaExecution,
        scope: &TransactionScope,
    ) -> Result<SagaExecution> {
        loop {
            let Some(step) = saga.step_at(&execution.cursor) else {
                if execution.cursor.len() <= 1 {
                    return self.finish(saga, execution).await;
                }
                // The end of a branch: continue after its conditional step.
                let len = execution.cursor.len();
                execution.cursor.truncate(len - 2);
                advance(&mut execution.cursor);
                continue;
            };
            let result = match step {
                Step::Conditional(conditional) => {
                    match conditional.choose(&execution.context) {
                        Some(branch) => {
                            execution.cursor.extend([branch, 0]);
                        }
                        None => advance(&mut execution.cursor),
                    }
                    continue;
                }
                Step::Local { on_execute, .. } => {
                    let context = execution.context.clone();
                    self.in_transaction(scope, on_execute(context))
                        .await
                        .map(Progress::Next)
                }
                Step::Remote { on_execute, .. } => {
                    let context = execution.context.clone();
                    match self.in_transaction(scope, on_execute(context)).await {
                        Ok(request) => self.send(&mut execution, request).await,
                        Err(error) => Err(error),
                    }
                }
            };
            match result {
                Ok(Progress::Next(context)) => {
                    execution.context = context;
                    execution.done.push(execution.cursor.clone());
                    advance(&mut execution.cursor);
                }
                Ok(Progress::Paused) => return Ok(execution),
                Err(error) => return self.fail(saga, execution, error.to_string()).await,
            }
        }
    }

    /// Sends a remote step's request with the saga headers and pauses (stored before it is sent, so a
    /// reply can never find the execution running).
    async fn send(
        &self,
        execution: &mut SagaExecution,
        request: super::SagaRequest,
    ) -> Result<Progress> {
        let (topic, content) = request.into_parts()?;
        let mut message = BrokerMessage::new(topic.clone(), content);
        message.reply_topic = Some(self.reply_topic());
        message.key = Some(execution.uuid.to_string());
        // Once the saga has given up waiting, the step must not run.
        message.set_deadline(execution.deadline);
        let headers = &mut message.payload.headers;
        headers.insert(headers::SAGA.into(), execution.uuid.to_string());
        headers.insert(headers::TRANSACTIONS.into(), self.scope(execution).header());
        if let Some(caller) = &execution.caller {
            caller.add_to(headers);
        }
        if let Some(user) = &execution.user {
            headers.insert(headers::USER.into(), user.clone());
        }
        trace_step(headers, execution);
        execution.waiting = Some(Waiting {
            identifier: message.identifier,
            topic,
        });
        execution.status = ExecutionStatus::Paused;
        execution.updated_at = now();
        self.save(execution).await?;
        self.context.broker().publish(message).await?;
        Ok(Progress::Paused)
    }

    /// Resumes the execution a reply belongs to. Replies nobody waits for (a duplicate, a late reply
    /// to an ended execution) are ignored.
    pub async fn handle_reply(&self, reply: BrokerMessage) -> Result<()> {
        let Some(uuid) = reply
            .payload
            .headers
            .get(headers::SAGA)
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            tracing::warn!(identifier = %reply.identifier, "saga reply without a `saga` header: ignored");
            return Ok(());
        };
        let _guard = self.lock(uuid).await;
        let Some(execution) = self.waiting_for(uuid, &reply).await? else {
            return Ok(());
        };
        match self.definition(&execution) {
            Ok(saga) => self.resume_with(saga, execution, reply).await,
            Err(error) => self.fail_or_abandon(execution, error.to_string()).await,
        }
        .map(|_| ())
    }

    /// Execution `uuid` if it is paused waiting for `reply`.
    async fn waiting_for(
        &self,
        uuid: Uuid,
        reply: &BrokerMessage,
    ) -> Result<Option<SagaExecution>> {
        let Some(execution) = self.find(uuid).await? else {
            tracing::warn!(saga = %uuid, "reply for an unknown saga execution: ignored");
            return Ok(None);
        };
        let waits_for_it = execution.status == ExecutionStatus::Paused
            && execution
                .waiting
                .as_ref()
                .is_some_and(|w| w.identifier == reply.identifier);
        if !waits_for_it {
            tracing::info!(saga = %uuid, status = execution.status.as_str(), "reply the execution does not wait for: ignored");
            return Ok(None);
        }
        Ok(Some(execution))
    }

    /// Runs the paused remote step's callback for `reply` (2xx `on_success`, 4xx `on_error`, 5xx a
    /// failure), then goes on with the next steps, or fails and compensates.
    async fn resume_with(
        &self,
        saga: &Saga,
        mut execution: SagaExecution,
        reply: BrokerMessage,
    ) -> Result<SagaExecution> {
        if let Some(services) = reply.payload.headers.get(headers::RELATED_SERVICES) {
            let services: Vec<&str> = services
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let one_phase = reply.payload.headers.get(headers::ONE_PHASE);
            for service in services.iter().copied() {
                let only_new_roots = services.len() == 1 && one_phase.is_some_and(|s| s == service);
                // One phase only while every step there wrote new roots alone.
                if !only_new_roots {
                    execution.one_phase.remove(service);
                } else if !execution.related_services.contains(service) {
                    execution.one_phase.insert(service.to_owned());
                }
                execution.related_services.insert(service.to_owned());
            }
        }
        let topic = execution
            .waiting
            .take()
            .map(|w| w.topic)
            .unwrap_or_default();
        execution.status = ExecutionStatus::Running;
        let Some(Step::Remote {
            on_success,
            on_error,
            ..
        }) = saga.step_at(&execution.cursor)
        else {
            let error = "the saga definition changed: no remote step at its position";
            return self.fail(saga, execution, error.into()).await;
        };
        let response = SagaResponse::new(
            reply.payload.status,
            reply.payload.content,
            reply.payload.headers,
        );
        let scope = self.scope(&execution);
        let callback = match response.status {
            200..=299 => on_success.as_ref(),
            400..=499 => on_error.as_ref(),
            status => {
                let error = format!(
                    "remote step `{topic}` failed ({status}): {}",
                    response.message()
                );
                return self.fail(saga, execution, error).await;
            }
        };
        let context = execution.context.clone();
        let outcome = match callback {
            Some(callback) => {
                self.in_transaction(&scope, callback(context, response))
                    .await
            }
            None => Ok(context),
        };
        match outcome {
            Ok(context) => {
                execution.context = context;
                execution.done.push(execution.cursor.clone());
                advance(&mut execution.cursor);
                self.drive(saga, execution, &scope).await
            }
            Err(error) => self.fail(saga, execution, error.to_string()).await,
        }
    }

    pub(super) fn definition(&self, execution: &SagaExecution) -> Result<&'static Saga> {
        super::find(&execution.saga)
            .ok_or_else(|| Error::UnknownSaga {
                saga: execution.saga.clone(),
            })?
            .saga()
    }
}

/// Moves the cursor to the next step of its branch.
pub(super) fn advance(cursor: &mut [usize]) {
    if let Some(last) = cursor.last_mut() {
        *last += 1;
    }
}

/// A step's trace context: the running span's, else the one the saga was started in.
pub(super) fn trace_step(
    headers: &mut std::collections::BTreeMap<String, String>,
    execution: &SagaExecution,
) {
    crate::telemetry::trace::inject_current(headers);
    if let Some(trace) = &execution.trace {
        headers
            .entry(crate::telemetry::trace::TRACEPARENT.to_owned())
            .or_insert_with(|| trace.clone());
    }
}
