//! Saga definitions: steps, callbacks, and the checks a definition passes when it is built.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use super::{SagaContext, SagaRequest, SagaResponse};
use crate::error::{Error, Result};

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;
pub(crate) type LocalFn = Arc<dyn Fn(SagaContext) -> BoxFuture<SagaContext> + Send + Sync>;
pub(crate) type RequestFn = Arc<dyn Fn(SagaContext) -> BoxFuture<SagaRequest> + Send + Sync>;
pub(crate) type ResponseFn =
    Arc<dyn Fn(SagaContext, SagaResponse) -> BoxFuture<SagaContext> + Send + Sync>;
pub(crate) type ConditionFn = Arc<dyn Fn(&SagaContext) -> bool + Send + Sync>;

/// One step of a saga.
pub(crate) enum Step {
    Local {
        on_execute: LocalFn,
        on_failure: Option<LocalFn>,
    },
    Remote {
        on_execute: RequestFn,
        on_success: Option<ResponseFn>,
        on_error: Option<ResponseFn>,
        on_failure: Option<RequestFn>,
    },
    Conditional(Conditional),
}

impl Step {
    fn kind(&self) -> &'static str {
        match self {
            Step::Local { .. } => "local step",
            Step::Remote { .. } => "remote step",
            Step::Conditional(_) => "conditional step",
        }
    }
}

/// A definition that cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid saga definition: {}", problems.join("; "))]
pub struct SagaDefinitionError {
    /// Every problem found, each saying what to write instead.
    pub problems: Vec<String>,
}

/// A checked saga: its steps run in order; see [`Saga::builder`].
pub struct Saga {
    pub(crate) steps: Vec<Step>,
}

impl fmt::Debug for Saga {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(Step::kind))
            .finish()
    }
}

impl Saga {
    /// Starts a definition:
    ///
    /// ```
    /// # use minos_runtime::saga::{Saga, SagaContext, SagaRequest, SagaResponse};
    /// # use minos_runtime::Result;
    /// async fn create_bar(ctx: SagaContext) -> Result<SagaRequest> {
    ///     Ok(SagaRequest::new("CreateBar", ctx.get::<String>("name")?))
    /// }
    /// async fn bar_created(mut ctx: SagaContext, reply: SagaResponse) -> Result<SagaContext> {
    ///     ctx.set("bar", reply.json().clone());
    ///     Ok(ctx)
    /// }
    /// async fn link(ctx: SagaContext) -> Result<SagaContext> { Ok(ctx) }
    ///
    /// let saga = Saga::builder()
    ///     .remote_step(create_bar)
    ///     .on_success(bar_created)
    ///     .local_step(link)
    ///     .commit()
    ///     .unwrap();
    /// # let _ = saga;
    /// ```
    pub fn builder() -> SagaBuilder {
        SagaBuilder::default()
    }

    /// How many steps it has at the top level.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether it has no step (never true of a committed saga).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The step at `path`: `[i]` is top-level step `i`; `[i, b, j, ..]` is step `j` of branch `b` of the
    /// conditional step `i` (the branch after the last `if_then` is `else_then`).
    pub(crate) fn step_at(&self, path: &[usize]) -> Option<&Step> {
        let (first, rest) = path.split_first()?;
        let step = self.steps.get(*first)?;
        if rest.is_empty() {
            return Some(step);
        }
        let Step::Conditional(conditional) = step else {
            return None;
        };
        let (branch, rest) = rest.split_first()?;
        conditional.branch(*branch)?.step_at(rest)
    }
}

/// A conditional step: the first branch whose condition holds runs, else the `else_then` saga, else
/// nothing.
#[derive(Default)]
pub struct Conditional {
    branches: Vec<(ConditionFn, SagaBuilder)>,
    otherwise: Option<SagaBuilder>,
    problems: Vec<String>,
    built: Vec<(ConditionFn, Saga)>,
    built_otherwise: Option<Saga>,
}

impl Conditional {
    /// A conditional step with no branch yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `saga` when `condition` holds (and no earlier branch's did).
    pub fn if_then(
        mut self,
        condition: impl Fn(&SagaContext) -> bool + Send + Sync + 'static,
        saga: SagaBuilder,
    ) -> Self {
        if self.otherwise.is_some() {
            self.problems
                .push("`if_then` after `else_then`: write every `if_then` first".into());
        }
        self.branches.push((Arc::new(condition), saga));
        self
    }

    /// Runs `saga` when no condition holds.
    pub fn else_then(mut self, saga: SagaBuilder) -> Self {
        if self.otherwise.is_some() {
            self.problems
                .push("a conditional step has two `else_then`: keep one".into());
        }
        self.otherwise = Some(saga);
        self
    }

    /// The index of the branch to run.
    pub(crate) fn choose(&self, context: &SagaContext) -> Option<usize> {
        self.built
            .iter()
            .position(|(condition, _)| condition(context))
            .or_else(|| self.built_otherwise.as_ref().map(|_| self.built.len()))
    }

    fn branch(&self, index: usize) -> Option<&Saga> {
        match self.built.get(index) {
            Some((_, saga)) => Some(saga),
            None if index == self.built.len() => self.built_otherwise.as_ref(),
            None => None,
        }
    }

    fn build(mut self, at: &str, problems: &mut Vec<String>) -> Conditional {
        problems.extend(self.problems.drain(..).map(|p| format!("{at}: {p}")));
        if self.branches.is_empty() {
            problems.push(format!(
                "{at}: a conditional step needs at least one `if_then(condition, saga)`"
            ));
        }
        for (i, (condition, saga)) in std::mem::take(&mut self.branches).into_iter().enumerate() {
            let saga = saga.check(&format!("{at}, branch {}", i + 1), problems);
            self.built.push((condition, saga));
        }
        if let Some(saga) = self.otherwise.take() {
            self.built_otherwise = Some(saga.check(&format!("{at}, else branch"), problems));
        }
        self
    }
}

/// A saga being defined. Each `on_*` call applies to the step added last; [`commit`](Self::commit)
/// checks the whole definition.
#[derive(Default)]
pub struct SagaBuilder {
    steps: Vec<Step>,
    problems: Vec<String>,
}

impl SagaBuilder {
    fn last_step_name(&self) -> String {
        match self.steps.last() {
            Some(step) => format!("step {} ({})", self.steps.len(), step.kind()),
            None => "the saga (before any step)".into(),
        }
    }

    /// Adds a local step: `on_execute(context) -> Result<SagaContext>` runs in this service, inside the
    /// execution's transaction (its entity writes publish only when the saga commits).
    pub fn local_step<F, Fut>(mut self, on_execute: F) -> Self
    where
        F: Fn(SagaContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SagaContext>> + Send + 'static,
    {
        self.steps.push(Step::Local {
            on_execute: Arc::new(move |ctx| Box::pin(on_execute(ctx))),
            on_failure: None,
        });
        self
    }

    /// Adds a remote step: `on_execute(context) -> Result<SagaRequest>` names the command to send to
    /// another service; the execution pauses until its reply.
    pub fn remote_step<F, Fut>(mut self, on_execute: F) -> Self
    where
        F: Fn(SagaContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SagaRequest>> + Send + 'static,
    {
        self.steps.push(Step::Remote {
            on_execute: Arc::new(move |ctx| Box::pin(on_execute(ctx))),
            on_success: None,
            on_error: None,
            on_failure: None,
        });
        self
    }

    /// Adds a conditional step (see [`Conditional`]).
    pub fn conditional_step(mut self, conditional: Conditional) -> Self {
        self.steps.push(Step::Conditional(conditional));
        self
    }

    /// The remote step's reply had status 2xx: `on_success(context, reply) -> Result<SagaContext>`.
    pub fn on_success<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn(SagaContext, SagaResponse) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SagaContext>> + Send + 'static,
    {
        let at = self.last_step_name();
        match self.steps.last_mut() {
            Some(Step::Remote { on_success, .. }) if on_success.is_none() => {
                *on_success = Some(Arc::new(move |ctx, reply| Box::pin(callback(ctx, reply))));
            }
            Some(Step::Remote { .. }) => self
                .problems
                .push(format!("{at}: `on_success` is set twice: keep one")),
            _ => self
                .problems
                .push(format!("{at}: `on_success` follows only a `remote_step`")),
        }
        self
    }

    /// The remote step's reply had status 4xx: `on_error(context, reply) -> Result<SagaContext>`; an
    /// `Err` fails the saga. Without it, such a reply simply finishes the step.
    pub fn on_error<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn(SagaContext, SagaResponse) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SagaContext>> + Send + 'static,
    {
        let at = self.last_step_name();
        match self.steps.last_mut() {
            Some(Step::Remote { on_error, .. }) if on_error.is_none() => {
                *on_error = Some(Arc::new(move |ctx, reply| Box::pin(callback(ctx, reply))));
            }
            Some(Step::Remote { .. }) => self
                .problems
                .push(format!("{at}: `on_error` is set twice: keep one")),
            _ => self
                .problems
                .push(format!("{at}: `on_error` follows only a `remote_step`")),
        }
        self
    }

    /// Compensation of a local step, run (outside the transaction) when a later step fails:
    /// `on_failure(context) -> Result<SagaContext>`.
    pub fn on_failure<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn(SagaContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SagaContext>> + Send + 'static,
    {
        let at = self.last_step_name();
        match self.steps.last_mut() {
            Some(Step::Local { on_failure, .. }) if on_failure.is_none() => {
                *on_failure = Some(Arc::new(move |ctx| Box::pin(callback(ctx))));
            }
            Some(Step::Local { .. }) => self
                .problems
                .push(format!("{at}: `on_failure` is set twice: keep one")),
            Some(Step::Remote { .. }) => self.problems.push(format!(
                "{at}: a remote step's compensation is a request: use `on_failure_send`"
            )),
            _ => self
                .problems
                .push(format!("{at}: `on_failure` follows only a `local_step`")),
        }
        self
    }

    /// Compensation of a remote step, sent when a later step fails: `on_failure_send(context) ->
    /// Result<SagaRequest>`.
    pub fn on_failure_send<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn(SagaContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SagaRequest>> + Send + 'static,
    {
        let at = self.last_step_name();
        match self.steps.last_mut() {
            Some(Step::Remote { on_failure, .. }) if on_failure.is_none() => {
                *on_failure = Some(Arc::new(move |ctx| Box::pin(callback(ctx))));
            }
            Some(Step::Remote { .. }) => self
                .problems
                .push(format!("{at}: `on_failure_send` is set twice: keep one")),
            _ => self.problems.push(format!(
                "{at}: `on_failure_send` follows only a `remote_step` (a local step takes `on_failure`)"
            )),
        }
        self
    }

    fn check(mut self, at: &str, problems: &mut Vec<String>) -> Saga {
        problems.extend(self.problems.drain(..).map(|p| format!("{at}: {p}")));
        if self.steps.is_empty() {
            problems.push(format!(
                "{at}: a saga needs at least one step (`local_step`, `remote_step` or `conditional_step`)"
            ));
        }
        let steps = self
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, step)| match step {
                Step::Conditional(conditional) => {
                    Step::Conditional(conditional.build(&format!("{at}, step {}", i + 1), problems))
                }
                other => other,
            })
            .collect();
        Saga { steps }
    }

    /// Checks the definition: no empty saga or branch, every callback on a step that takes it, none
    /// twice.
    pub fn commit(self) -> Result<Saga, SagaDefinitionError> {
        let mut problems = Vec::new();
        let saga = self.check("saga", &mut problems);
        if problems.is_empty() {
            Ok(saga)
        } else {
            Err(SagaDefinitionError { problems })
        }
    }
}

/// A named saga, built on first use and registered so that a restarted service can resume its
/// executions. Declare one with [`saga!`](crate::saga!).
pub struct SagaDefinition {
    name: &'static str,
    build: fn() -> Result<Saga, SagaDefinitionError>,
    saga: OnceLock<Result<Saga, SagaDefinitionError>>,
}

impl fmt::Debug for SagaDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaDefinition")
            .field("name", &self.name)
            .finish()
    }
}

impl SagaDefinition {
    /// A definition named `name`, built by `build` on first use.
    pub const fn new(name: &'static str, build: fn() -> Result<Saga, SagaDefinitionError>) -> Self {
        SagaDefinition {
            name,
            build,
            saga: OnceLock::new(),
        }
    }

    /// Its name (stored with each execution).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The checked saga, or why it is invalid.
    pub fn saga(&self) -> Result<&Saga> {
        self.saga
            .get_or_init(self.build)
            .as_ref()
            .map_err(|e| Error::InvalidSaga {
                saga: self.name.to_owned(),
                source: Box::new(e.clone()),
            })
    }
}

/// A definition declared with [`saga!`](crate::saga!), collected at link time.
#[derive(Debug)]
pub struct SagaRegistration(pub &'static SagaDefinition);

inventory::collect!(SagaRegistration);

/// Every saga definition of the binary, checked: an invalid one, or two with one name, is an error.
pub fn registered() -> Result<Vec<&'static SagaDefinition>> {
    let mut found: Vec<&'static SagaDefinition> = Vec::new();
    for registration in inventory::iter::<SagaRegistration> {
        let definition = registration.0;
        definition.saga()?;
        if found.iter().any(|d| d.name() == definition.name()) {
            return Err(Error::InvalidSaga {
                saga: definition.name().to_owned(),
                source: "two sagas have this name: give each `saga!` its own name".into(),
            });
        }
        found.push(definition);
    }
    Ok(found)
}

/// The registered definition named `name`.
pub fn find(name: &str) -> Option<&'static SagaDefinition> {
    inventory::iter::<SagaRegistration>
        .into_iter()
        .map(|r| r.0)
        .find(|d| d.name() == name)
}

/// Declares a saga and registers it, so executions left paused or running resume after a restart:
///
/// ```
/// # use minos_runtime::saga::{Saga, SagaContext};
/// # use minos_runtime::Result;
/// async fn step(ctx: SagaContext) -> Result<SagaContext> { Ok(ctx) }
///
/// minos_runtime::saga! {
///     /// Does one local step.
///     pub static ONE_STEP = Saga::builder().local_step(step).commit();
/// }
/// assert_eq!(ONE_STEP.name(), "ONE_STEP");
/// ```
#[macro_export]
macro_rules! saga {
    ($(#[$attr:meta])* $vis:vis static $name:ident = $definition:expr;) => {
        $(#[$attr])*
        $vis static $name: $crate::saga::SagaDefinition =
            $crate::saga::SagaDefinition::new(::core::stringify!($name), || $definition);
        $crate::__private::inventory::submit! {
            $crate::saga::SagaRegistration(&$name)
        }
    };
}
