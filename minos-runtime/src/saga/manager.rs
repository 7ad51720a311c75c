//! The saga manager: starts executions, finds them, and waits for them to end. The state machine that
//! drives them is in `execution`, the two-phase commit and compensation in `two_phase`, the periodic
//! jobs in `jobs` and the status endpoints in `http`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::{ExecutionStatus, SagaConfig, SagaContext, SagaDefinition, SagaExecution};
use crate::error::{Error, Result};
use crate::messaging::topics;
use crate::routing::{Context, Service};
use crate::store::now;
use crate::transaction::TransactionScope;

/// Runs the sagas of one service. Reach it from a handler with `self.sagas()?`.
#[derive(Clone, Debug)]
pub struct SagaManager {
    pub(super) context: Context,
    pub(super) timeout: Duration,
    pub(super) command_timeout: Duration,
    /// How long a commit that got no reply is sent again (`saga.reserved_max_ms`: a participant
    /// rejects a reservation left longer than that).
    pub(super) commit_for: Duration,
    state: Arc<SagaState>,
}

/// What one service's manager keeps in memory, shared by every handle on it (kept in the service's
/// context, so two services in one process never share it).
#[derive(Debug, Default)]
pub(crate) struct SagaState {
    /// Executions are driven one step at a time: a reply and a timeout for the same execution never run
    /// at once in this service. One lock per execution (not shared stripes), so a saga started from
    /// another one's step never waits on itself.
    locks: crate::keyed_lock::KeyedLocks<Uuid>,
    /// Callers waiting for executions to end.
    watchers: Mutex<HashMap<Uuid, Vec<oneshot::Sender<SagaExecution>>>>,
    /// The `saga:` section of the service's configuration.
    config: std::sync::OnceLock<SagaConfig>,
    /// The executions that ended here last, newest at the back: a caller that starts waiting after
    /// its execution ended finds it without a read.
    ended: Mutex<std::collections::VecDeque<SagaExecution>>,
}

/// How many ended executions [`SagaState::ended`] keeps.
const ENDED_KEPT: usize = 128;

impl SagaState {
    fn watchers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<oneshot::Sender<SagaExecution>>>> {
        // The map holds no invariant a panic could break halfway.
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ended(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<SagaExecution>> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SagaManager {
    /// The manager of the service whose context this is, with the configuration's `saga:` section.
    pub fn new(context: Context) -> Self {
        let state = context.shared::<SagaState>();
        // Read from the configuration once per service (a handler makes a manager per call).
        let config = state
            .config
            .get_or_init(|| {
                context
                    .config()
                    .get("saga")
                    .and_then(|section| serde_json::from_value::<SagaConfig>(section.clone()).ok())
                    .unwrap_or_default()
            })
            .clone();
        SagaManager {
            timeout: Duration::from_millis(config.timeout_ms),
            command_timeout: Duration::from_millis(config.command_timeout_ms),
            commit_for: Duration::from_millis(config.reserved_max_ms),
            state,
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
        topics::saga_reply(self.context.name())
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

    /// [`run`](Self::run) on behalf of `user` (sent in the `user` header of remote steps). Without a
    /// user, it runs for the caller of the handler that starts it, whose token goes with its remote steps.
    pub async fn run_for(
        &self,
        definition: &SagaDefinition,
        context: impl Into<SagaContext>,
        user: Option<String>,
    ) -> Result<SagaExecution> {
        let caller = crate::auth::Caller::current();
        let user = user.or_else(|| {
            caller
                .as_ref()
                .map(|c| c.subject.clone())
                .filter(|s| !s.is_empty())
        });
        let saga = definition.saga()?;
        let started = now();
        let execution = SagaExecution {
            uuid: Uuid::now_v7(),
            saga: definition.name().to_owned(),
            status: ExecutionStatus::Running,
            context: context.into(),
            cursor: vec![0],
            done: Vec::new(),
            waiting: None,
            related_services: Default::default(),
            one_phase: Default::default(),
            inherited: TransactionScope::current()
                .map(|s| s.chain().to_vec())
                .unwrap_or_default(),
            user,
            caller,
            trace: crate::telemetry::TraceContext::current().map(|t| t.traceparent()),
            error: None,
            deadline: started
                + chrono::Duration::from_std(self.timeout).unwrap_or(chrono::Duration::MAX),
            created_at: started,
            updated_at: started,
        };
        let _guard = self.lock(execution.uuid).await;
        // Stored running so that a stop midway is resumed; a saga that starts with a remote step is
        // first stored paused, before its request goes out (nothing runs before that to resume).
        if !matches!(
            saga.step_at(&execution.cursor),
            Some(super::definition::Step::Remote { .. })
        ) {
            self.save(&execution).await?;
        }
        let scope = self.scope(&execution);
        if !crate::telemetry::trace::enabled() {
            return self.drive(saga, execution, &scope).await;
        }
        let span = tracing::info_span!(
            "saga",
            saga = %execution.saga,
            execution = %execution.uuid,
            trace_id = tracing::field::Empty,
        );
        crate::telemetry::trace::run_below(span, self.drive(saga, execution, &scope)).await
    }

    /// The execution with this uuid (404 when unknown).
    pub async fn get(&self, uuid: Uuid) -> Result<SagaExecution> {
        self.find(uuid)
            .await?
            .ok_or_else(|| Error::not_found(format!("no saga execution {uuid}")))
    }

    /// The execution with this uuid, if the store has it.
    pub(super) async fn find(&self, uuid: Uuid) -> Result<Option<SagaExecution>> {
        self.context
            .repository()
            .store()
            .execution(uuid)
            .await?
            .map(SagaExecution::from_record)
            .transpose()
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
        self.state.watchers().entry(uuid).or_default().push(sender);
        // It may have ended before the watcher was in place: kept when it ended here, else read.
        let kept = self
            .state
            .ended()
            .iter()
            .rev()
            .find(|e| e.uuid == uuid)
            .cloned();
        let now = match kept {
            Some(ended) => Ok(ended),
            None => self.get(uuid).await,
        };
        match now {
            Ok(current) if !current.status.is_final() => {}
            // Nothing will take the watcher out now.
            done => {
                drop(receiver);
                self.forget_watchers(uuid);
                return done;
            }
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(execution)) => Ok(execution),
            _ => {
                self.forget_watchers(uuid);
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

    pub(super) async fn save(&self, execution: &SagaExecution) -> Result<()> {
        self.context
            .repository()
            .store()
            .save_execution(&execution.to_record())
            .await?;
        if execution.status.is_final() {
            let took = (execution.updated_at - execution.created_at)
                .to_std()
                .unwrap_or_default();
            self.context
                .metrics()
                .saga_ended(&execution.saga, execution.status.as_str(), took);
            {
                let mut ended = self.state.ended();
                if ended.len() == ENDED_KEPT {
                    ended.pop_front();
                }
                ended.push_back(execution.clone());
            }
            let waiting = self.state.watchers().remove(&execution.uuid);
            for sender in waiting.into_iter().flatten() {
                let _ = sender.send(execution.clone());
            }
        }
        Ok(())
    }

    pub(super) fn scope(&self, execution: &SagaExecution) -> TransactionScope {
        let mut chain = execution.inherited.clone();
        chain.push(execution.uuid);
        TransactionScope::new(chain).unwrap_or_else(|| TransactionScope::top(execution.uuid))
    }

    /// Runs a callback in the service's context, inside the execution's transaction.
    pub(super) fn in_transaction<F: std::future::Future>(
        &self,
        scope: &TransactionScope,
        future: F,
    ) -> impl std::future::Future<Output = F::Output> {
        self.context.clone().scope(scope.clone().run(future))
    }

    /// Drops the closed watchers of execution `uuid`.
    fn forget_watchers(&self, uuid: Uuid) {
        let mut watchers = self.state.watchers();
        if let Some(senders) = watchers.get_mut(&uuid) {
            senders.retain(|s| !s.is_closed());
            if senders.is_empty() {
                watchers.remove(&uuid);
            }
        }
    }

    /// Holds execution `uuid` for one step.
    pub(super) async fn lock(&self, uuid: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
        self.state.locks.lock(uuid).await
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
