//! The saga manager: runs executions, pauses them on remote steps, resumes them on replies, commits or
//! rejects their participants' transactions at the end, and compensates failures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::definition::Step;
use super::{
    ExecutionStatus, Saga, SagaConfig, SagaContext, SagaDefinition, SagaExecution, SagaResponse,
    Waiting,
};
use crate::error::{Error, Result};
use crate::messaging::BrokerMessage;
use crate::routing::{Context, Service};
use crate::store::now;
use crate::transaction::{command_topic, upper_camel, TransactionCommand, TransactionScope};

/// Runs the sagas of one service. Reach it from a handler with `self.sagas()?`.
#[derive(Clone, Debug)]
pub struct SagaManager {
    context: Context,
    timeout: Duration,
    command_timeout: Duration,
}

/// Executions are driven one step at a time: a reply and a timeout for the same execution never run at
/// once in this process. One lock per execution (not shared stripes), so a saga started from another
/// one's step never waits on itself.
type Locks = HashMap<Uuid, Weak<tokio::sync::Mutex<()>>>;
static LOCKS: Mutex<Option<Locks>> = Mutex::new(None);

/// Callers waiting for executions to end.
static WATCHERS: Mutex<Option<HashMap<Uuid, Vec<oneshot::Sender<SagaExecution>>>>> =
    Mutex::new(None);

async fn lock_execution(uuid: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
    let lock = {
        let mut locks = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
        let locks = locks.get_or_insert_with(HashMap::new);
        match locks.get(&uuid).and_then(Weak::upgrade) {
            Some(lock) => lock,
            None => {
                if locks.len() >= 1024 {
                    locks.retain(|_, lock| lock.strong_count() > 0);
                }
                let lock = Arc::new(tokio::sync::Mutex::new(()));
                locks.insert(uuid, Arc::downgrade(&lock));
                lock
            }
        }
    };
    lock.lock_owned().await
}

fn watchers(
) -> std::sync::MutexGuard<'static, Option<HashMap<Uuid, Vec<oneshot::Sender<SagaExecution>>>>> {
    WATCHERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// What became of a step.
enum Progress {
    Next(SagaContext),
    Paused,
}

impl SagaManager {
    /// The manager of the service whose context this is, with the configuration's `saga:` section.
    pub fn new(context: Context) -> Self {
        let config = context
            .config()
            .get("saga")
            .and_then(|section| serde_json::from_value::<SagaConfig>(section.clone()).ok())
            .unwrap_or_default();
        SagaManager {
            timeout: Duration::from_millis(config.timeout_ms),
            command_timeout: Duration::from_millis(config.command_timeout_ms),
            context,
        }
    }

    /// The service context it runs in.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The manager of the current handler's service.
    pub fn current() -> Result<Self> {
        Ok(Self::new(Context::current()?))
    }

    /// Changes the time an execution may take before it fails and compensates.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The topic replies to this service's remote steps come back on: `{Service}Reply`.
    pub fn reply_topic(&self) -> String {
        reply_topic(self.context.name())
    }

    /// Starts an execution of `definition` with `context` and runs it until it pauses on a remote step or
    /// ends. Started inside a transaction (a handler of another saga's remote step), it runs nested in
    /// that transaction.
    pub async fn run(
        &self,
        definition: &SagaDefinition,
        context: impl Into<SagaContext>,
    ) -> Result<SagaExecution> {
        self.run_for(definition, context, None).await
    }

    /// [`run`](Self::run) on behalf of `user` (sent in the `user` header of remote steps).
    pub async fn run_for(
        &self,
        definition: &SagaDefinition,
        context: impl Into<SagaContext>,
        user: Option<Uuid>,
    ) -> Result<SagaExecution> {
        let saga = definition.saga()?;
        let started = now();
        let execution = SagaExecution {
            uuid: Uuid::new_v4(),
            saga: definition.name().to_owned(),
            status: ExecutionStatus::Running,
            context: context.into(),
            cursor: vec![0],
            done: Vec::new(),
            waiting: None,
            related_services: Default::default(),
            inherited: TransactionScope::current()
                .map(|s| s.chain().to_vec())
                .unwrap_or_default(),
            user,
            error: None,
            deadline: started
                + chrono::Duration::from_std(self.timeout).unwrap_or(chrono::Duration::MAX),
            created_at: started,
            updated_at: started,
        };
        let _guard = lock_execution(execution.uuid).await;
        self.save(&execution).await?;
        let scope = self.scope(&execution);
        self.drive(saga, execution, &scope).await
    }

    /// The execution with this uuid (404 when unknown).
    pub async fn get(&self, uuid: Uuid) -> Result<SagaExecution> {
        let record = self
            .context
            .repository()
            .store()
            .execution(uuid)
            .await?
            .ok_or_else(|| Error::not_found(format!("no saga execution {uuid}")))?;
        SagaExecution::from_record(record)
    }

    /// Executions, newest change first, only those in `status` when given.
    pub async fn list(
        &self,
        status: Option<ExecutionStatus>,
        limit: usize,
    ) -> Result<Vec<SagaExecution>> {
        let records = self
            .context
            .repository()
            .store()
            .executions(status, limit)
            .await?;
        records
            .into_iter()
            .map(SagaExecution::from_record)
            .collect()
    }

    /// Waits up to `timeout` for the execution to finish or error, and returns it.
    pub async fn wait(&self, uuid: Uuid, timeout: Duration) -> Result<SagaExecution> {
        let (sender, receiver) = oneshot::channel();
        watchers()
            .get_or_insert_with(HashMap::new)
            .entry(uuid)
            .or_default()
            .push(sender);
        let current = self.get(uuid).await?;
        if current.status.is_final() {
            return Ok(current);
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(execution)) => Ok(execution),
            _ => {
                if let Some(map) = watchers().as_mut() {
                    if let Some(senders) = map.get_mut(&uuid) {
                        senders.retain(|s| !s.is_closed());
                        if senders.is_empty() {
                            map.remove(&uuid);
                        }
                    }
                }
                let current = self.get(uuid).await?;
                if current.status.is_final() {
                    return Ok(current);
                }
                Err(Error::Timeout {
                    topic: format!("saga execution {uuid}"),
                    timeout_ms: timeout.as_millis() as u64,
                })
            }
        }
    }

    async fn save(&self, execution: &SagaExecution) -> Result<()> {
        self.context
            .repository()
            .store()
            .save_execution(&execution.to_record())
            .await?;
        if execution.status.is_final() {
            let waiting = watchers().as_mut().and_then(|w| w.remove(&execution.uuid));
            for sender in waiting.into_iter().flatten() {
                let _ = sender.send(execution.clone());
            }
        }
        Ok(())
    }

    fn scope(&self, execution: &SagaExecution) -> TransactionScope {
        let mut chain = execution.inherited.clone();
        chain.push(execution.uuid);
        TransactionScope::new(chain).unwrap_or_else(|| TransactionScope::top(execution.uuid))
    }

    /// Runs a callback in the service's context, inside the execution's transaction.
    async fn in_transaction<F: std::future::Future>(
        &self,
        scope: &TransactionScope,
        future: F,
    ) -> F::Output {
        self.context.clone().scope(scope.clone().run(future)).await
    }

    /// Runs steps from the cursor until a pause or the end.
    async fn drive(
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
        let headers = &mut message.payload.headers;
        headers.insert("saga".into(), execution.uuid.to_string());
        headers.insert("transactions".into(), self.scope(execution).header());
        if let Some(user) = execution.user {
            headers.insert("user".into(), user.to_string());
        }
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
            .get("saga")
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            tracing::warn!(identifier = %reply.identifier, "saga reply without a `saga` header: ignored");
            return Ok(());
        };
        let _guard = lock_execution(uuid).await;
        let mut execution = match self.get(uuid).await {
            Ok(execution) => execution,
            Err(error) if error.status() == 404 => {
                tracing::warn!(saga = %uuid, "reply for an unknown saga execution: ignored");
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let waits_for_it = execution.status == ExecutionStatus::Paused
            && execution
                .waiting
                .as_ref()
                .is_some_and(|w| w.identifier == reply.identifier);
        if !waits_for_it {
            tracing::info!(saga = %uuid, status = execution.status.as_str(), "reply the execution does not wait for: ignored");
            return Ok(());
        }
        let saga = match self.definition(&execution) {
            Ok(saga) => saga,
            Err(error) => {
                return self
                    .fail_or_abandon(execution, error.to_string())
                    .await
                    .map(|_| ())
            }
        };
        if let Some(services) = reply.payload.headers.get("related_services") {
            execution.related_services.extend(
                services
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        let topic = execution
            .waiting
            .take()
            .map(|w| w.topic)
            .unwrap_or_default();
        execution.status = ExecutionStatus::Running;
        let response = SagaResponse::new(
            reply.payload.status,
            reply.payload.content,
            reply.payload.headers,
        );
        let Some(Step::Remote {
            on_success,
            on_error,
            ..
        }) = saga.step_at(&execution.cursor)
        else {
            return self
                .fail(
                    saga,
                    execution,
                    "the saga definition changed: no remote step at its position".into(),
                )
                .await
                .map(|_| ());
        };
        let context = execution.context.clone();
        let scope = self.scope(&execution);
        let outcome = match response.status {
            200..=299 => match on_success {
                Some(callback) => {
                    self.in_transaction(&scope, callback(context, response))
                        .await
                }
                None => Ok(context),
            },
            400..=499 => match on_error {
                Some(callback) => {
                    self.in_transaction(&scope, callback(context, response))
                        .await
                }
                None => Ok(context),
            },
            status => Err(Error::with_status(
                status,
                format!(
                    "remote step `{topic}` failed ({status}): {}",
                    response.message()
                ),
            )),
        };
        match outcome {
            Ok(context) => {
                execution.context = context;
                execution.done.push(execution.cursor.clone());
                advance(&mut execution.cursor);
                self.drive(saga, execution, &scope).await.map(|_| ())
            }
            Err(error) => self
                .fail(saga, execution, error.to_string())
                .await
                .map(|_| ()),
        }
    }

    fn definition(&self, execution: &SagaExecution) -> Result<&'static Saga> {
        super::find(&execution.saga)
            .ok_or_else(|| {
                Error::Config(format!(
                    "saga `{}` is not registered in this binary: declare it with `saga!`",
                    execution.saga
                ))
            })?
            .saga()
    }

    /// Sends one transaction command to every participant (this service directly), concurrently;
    /// returns the failures, each as `service: error`.
    async fn command_all(
        &self,
        execution: &SagaExecution,
        command: TransactionCommand,
    ) -> Vec<String> {
        let own = self.context.name();
        let mut remote = Vec::new();
        for service in execution.related_services.iter().filter(|s| *s != own) {
            let mut message = BrokerMessage::new(
                command_topic(command, service),
                json!(execution.uuid.to_string()),
            );
            message.key = Some(execution.uuid.to_string());
            let service = service.clone();
            remote.push(async move { (service, self.request(message).await) });
        }
        let mut results = join_all(remote).await;
        let local = self
            .context
            .repository()
            .transactions()
            .run(command, execution.uuid)
            .await
            .map(|_| ());
        results.push((own.to_owned(), local));
        results
            .into_iter()
            .filter_map(|(service, result)| result.err().map(|e| format!("{service}: {e}")))
            .collect()
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
        let headers = &mut message.payload.headers;
        headers.insert("saga".into(), execution.uuid.to_string());
        if let Some(user) = execution.user {
            headers.insert("user".into(), user.to_string());
        }
        self.request(message).await
    }

    /// Two-phase commit: every participant reserves; then all commit, or all reject and the steps are
    /// compensated.
    async fn finish(&self, saga: &Saga, mut execution: SagaExecution) -> Result<SagaExecution> {
        let refused = self
            .command_all(&execution, TransactionCommand::Reserve)
            .await;
        if !refused.is_empty() {
            let error = format!("reservation refused: {}", refused.join("; "));
            return self.fail(saga, execution, error).await;
        }
        let failed = self
            .command_all(&execution, TransactionCommand::Commit)
            .await;
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
    async fn fail(
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
            let _guard = lock_execution(candidate.uuid).await;
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
            let _guard = lock_execution(candidate.uuid).await;
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

    /// Fails the execution, compensating when its definition is known; without it (the saga is not in
    /// this binary any more) the participants still reject and the execution is stored as errored.
    async fn fail_or_abandon(
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

/// The topic the replies to a service's remote steps come back on: `{Service}Reply`.
pub fn reply_topic(service: &str) -> String {
    format!("{}Reply", upper_camel(service))
}

fn advance(cursor: &mut [usize]) {
    if let Some(last) = cursor.last_mut() {
        *last += 1;
    }
}

/// `self.sagas()?` in a service's handlers.
pub trait SagaServiceExt: Service {
    /// The saga manager of this service.
    fn sagas(&self) -> Result<SagaManager> {
        SagaManager::current()
    }
}

impl<T: Service> SagaServiceExt for T {}

/// `GET /saga/executions/{uuid}`: the execution's uuid, saga, status, context and error.
fn execution_endpoint(request: crate::routing::Request) -> crate::routing::HandlerFuture {
    Box::pin(async move {
        let uuid: Uuid = request.param("uuid")?;
        let execution = SagaManager::current()?.get(uuid).await?;
        Ok(crate::routing::Response::json(execution.summary()))
    })
}

/// `GET /saga/executions[?status=paused&limit=100]`: executions, newest change first.
fn executions_endpoint(request: crate::routing::Request) -> crate::routing::HandlerFuture {
    Box::pin(async move {
        let status = match request.params().get("status") {
            Some(text) => Some(
                serde_json::from_value::<ExecutionStatus>(Value::String(text.clone())).map_err(
                    |_| {
                        Error::bad_request(format!(
                        "unknown status `{text}`: use created, running, paused, finished or errored"
                    ))
                    },
                )?,
            ),
            None => None,
        };
        let limit = match request.params().get("limit") {
            Some(_) => request.param::<usize>("limit")?,
            None => 100,
        };
        let executions = SagaManager::current()?.list(status, limit).await?;
        let summaries: Vec<Value> = executions.iter().map(SagaExecution::summary).collect();
        Ok(crate::routing::Response::json(summaries))
    })
}

/// The HTTP routes of the saga manager.
pub fn http_routes() -> [(&'static str, &'static str, crate::routing::HandlerFn); 2] {
    [
        ("GET", "/saga/executions", executions_endpoint),
        ("GET", "/saga/executions/{uuid}", execution_endpoint),
    ]
}
