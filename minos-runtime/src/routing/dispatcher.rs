//! The broker dispatcher: runs the handlers of each received message and publishes replies.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{invoke, BrokerKind, Context, Middleware, Origin, Request, Response, RouteTable};
use std::collections::BTreeMap;

use crate::auth::{accepted_at, bearer, Caller, Principal};
use crate::error::Error;
use crate::hash::stable_hash;
use crate::messaging::{headers, topics, BrokerMessage, Delivery, Subscription};
use crate::store::needs_claims;
use crate::store::{InboxEntry, StoreError};
use crate::transaction::TransactionScope;

mod replies;
use replies::with_reply;

/// A handler the runtime itself registers for a topic (transaction commands, saga replies). Its result
/// is the reply when the message asks for one.
pub(crate) type SystemHandler = Arc<
    dyn Fn(
            BrokerMessage,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Error>> + Send>>
        + Send
        + Sync,
>;

/// Runs broker handlers. Messages with the same key (one root's events) are handled one at a time in
/// arrival order; different keys run in parallel on a few workers.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    table: Arc<RouteTable>,
    chain: Arc<[Middleware]>,
    context: Context,
    retries: u32,
    workers: usize,
    system: Arc<std::collections::HashMap<String, SystemHandler>>,
}

/// What became of a received message.
#[derive(Debug)]
pub enum Outcome {
    /// Handled (a refused command was answered with its error).
    Handled,
    /// Already handled before: skipped.
    Duplicate,
    /// A re-driven dead letter for another service: skipped.
    NotOurs,
    /// No handler for its topic.
    NoHandler,
    /// A command or query past its deadline: not run, not answered.
    Expired,
    /// Event handling failed after retries; the message is on the dead-letter topic.
    DeadLettered(Error),
    /// Event handling failed and the message could not be parked either: it must be delivered again.
    Failed(Error),
}

/// Requests this process did not run because their deadline had passed.
static EXPIRED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many commands and queries arrived past their deadline and were not run, since the process
/// started.
pub fn expired_requests() -> u64 {
    EXPIRED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A running dispatcher.
#[derive(Debug)]
pub(crate) struct DispatcherHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl DispatcherHandle {
    /// Stops taking messages and waits for the ones being handled.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("routes", &self.table.entries().len())
            .field("middleware", &self.chain.len())
            .field("retries", &self.retries)
            .finish()
    }
}

impl Dispatcher {
    /// A dispatcher of `table`'s broker routes.
    pub(crate) fn new(table: Arc<RouteTable>, chain: Arc<[Middleware]>, context: Context) -> Self {
        Dispatcher {
            table,
            chain,
            context,
            retries: 3,
            workers: 4,
            system: Arc::default(),
        }
    }

    /// Answers `_Get{Type}Snapshots` for each of `root_entities` (the ones this service owns).
    pub(crate) fn snapshots_of(self, root_entities: &[&'static str]) -> Self {
        root_entities.iter().fold(self, |dispatcher, name| {
            let name: &'static str = name;
            dispatcher.system(
                topics::snapshots(name),
                Arc::new(move |message| Box::pin(super::refs::answer_snapshots(name, message))),
            )
        })
    }

    /// Answers `_Get{Type}Events` for each of `root_entities` (the ones this service owns): the log
    /// other services build their views from.
    pub(crate) fn events_of(self, root_entities: &[&'static str]) -> Self {
        root_entities.iter().fold(self, |dispatcher, name| {
            let name: &'static str = name;
            dispatcher.system(
                topics::events(name),
                Arc::new(move |message| Box::pin(crate::views::log::answer_events(name, message))),
            )
        })
    }

    /// The runtime's own topics this dispatcher answers (to subscribe to with the routes' topics).
    pub(crate) fn system_topics(&self) -> Vec<String> {
        self.system.keys().cloned().collect()
    }

    /// Answers `topic` with `handler` instead of a route (the runtime's own topics).
    pub(crate) fn system(mut self, topic: impl Into<String>, handler: SystemHandler) -> Self {
        Arc::make_mut(&mut self.system).insert(topic.into(), handler);
        self
    }

    /// How often a failing event handler is retried (with backoff) before the failure is logged.
    pub(crate) fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// How many messages are handled at once (at least one); one key's messages stay in order.
    pub(crate) fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The topic failing messages are parked on: `{service}.dead-letter`.
    pub(crate) fn dead_letter_topic(&self) -> String {
        topics::dead_letter(self.context.name())
    }

    /// Handles one message: skips it if this service already handled it (inbox), runs its handlers with
    /// their writes held back, commits the writes together with the inbox entry, then replies when a
    /// reply topic is set. A failing event handler is retried with backoff, then the message is parked on
    /// the dead-letter topic with the error and original topic in its headers.
    ///
    /// `first` when the delivery is provably the message's first here
    /// ([`crate::messaging::Broker::publish_relayed`]): then it needs no inbox look-up.
    pub(crate) async fn dispatch(&self, message: BrokerMessage, first: bool) -> Outcome {
        use crate::telemetry::MessageOutcome;
        let started = std::time::Instant::now();
        let topic = message.topic.clone();
        // One future awaited in both cases, built in place: this is every message's hot path.
        let traced = crate::telemetry::trace::enabled().then(|| {
            let span = tracing::info_span!(
                "message",
                service = %self.context.name(),
                topic = %topic,
                message_id = %message.identifier,
                trace_id = tracing::field::Empty,
                otel.name = tracing::field::Empty,
                otel.kind = tracing::field::Empty,
            );
            crate::telemetry::trace::name_span(&span, format_args!("handle {topic}"), "consumer");
            let parent = crate::telemetry::TraceContext::extract(&message.payload.headers);
            (span, parent)
        });
        let outcome = match traced {
            Some((span, parent)) => Either::Left(crate::telemetry::trace::run_in(
                span,
                parent,
                self.dispatch_message(message, first),
            )),
            None => Either::Right(self.dispatch_message(message, first)),
        }
        .await;
        let (counted, took) = match &outcome {
            Outcome::Handled => (MessageOutcome::Handled, Some(started.elapsed())),
            Outcome::Duplicate => (MessageOutcome::Duplicate, None),
            Outcome::NotOurs => (MessageOutcome::NotOurs, None),
            Outcome::NoHandler => (MessageOutcome::NoHandler, None),
            Outcome::Expired => (MessageOutcome::Expired, None),
            Outcome::DeadLettered(_) => (MessageOutcome::DeadLettered, Some(started.elapsed())),
            Outcome::Failed(_) => (MessageOutcome::Failed, None),
        };
        self.context.metrics().message(&topic, counted, took);
        outcome
    }

    async fn dispatch_message(&self, message: BrokerMessage, first: bool) -> Outcome {
        crate::memory::busy();
        tracing::trace!(service = self.context.name(), topic = %message.topic, identifier = %message.identifier, "dispatching");
        if let Some(handler) = self.system.get(&message.topic) {
            return self.dispatch_system(handler, message).await;
        }
        if let Some(service) = message.payload.headers.get(headers::REDRIVEN_FOR) {
            if service != self.context.name() {
                return Outcome::NotOurs;
            }
        }
        let mut handlers = self.table.broker_handlers(&message.topic);
        if handlers.iter().any(|(entry, _)| entry.view.is_some()) {
            // View handlers run in their projection, in the commit order of the events' owner: the
            // message only tells it that there is something new.
            handlers.retain(|(entry, _)| entry.view.is_none());
            if let Some(projections) = self.context.projections() {
                projections.nudge(&message);
                if !handlers.is_empty() {
                    // The other handlers of a service's own event run once its views have it.
                    projections.settle(&message).await;
                }
            }
            if handlers.is_empty() {
                return Outcome::Handled;
            }
        }
        let Some((_, kind)) = handlers.first().copied() else {
            tracing::warn!(topic = %message.topic, "no handler for this topic");
            let error = Error::not_found(format!("no handler for topic `{}`", message.topic));
            self.reply(&message, Err(error)).await;
            return Outcome::NoHandler;
        };
        if kind != BrokerKind::Event {
            if let Some(deadline) = message.deadline().filter(|d| *d < chrono::Utc::now()) {
                let total = EXPIRED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                tracing::warn!(
                    topic = %message.topic,
                    identifier = %message.identifier,
                    %deadline,
                    expired_requests = total,
                    "request past its deadline: not run (its sender gave up)"
                );
                return Outcome::Expired;
            }
        }
        let inbox = InboxEntry::new(self.context.name().to_owned(), message.identifier);
        // A first delivery cannot have been handled: no look-up (the commit checks the inbox anyway).
        if !first && self.already_handled(&inbox).await {
            tracing::debug!(identifier = %message.identifier, topic = %message.topic, "already handled: skipped");
            self.reply_again(&message, &inbox).await;
            return Outcome::Duplicate;
        }
        // A command sent by a saga step runs inside the saga's (nested) transactions.
        let transaction = match self.transaction_of(&message, kind) {
            Ok(transaction) => transaction,
            Err(error) => {
                self.reply(&message, Err(error)).await;
                return Outcome::Handled;
            }
        };
        let attempts = match kind {
            BrokerKind::Event => self.retries + 1,
            _ => 1,
        };
        let mut last_error = None;
        for attempt in 1..=attempts {
            let error = match self
                .handle_once(&handlers, &message, transaction.as_ref(), &inbox)
                .await
            {
                Ok(response) => {
                    self.reply(&message, Ok(response)).await;
                    return Outcome::Handled;
                }
                Err(Error::Store(StoreError::AlreadyProcessed { .. })) => {
                    return Outcome::Duplicate
                }
                Err(error) => error,
            };
            if kind != BrokerKind::Event {
                match error.status() {
                    500.. => tracing::warn!(%error, "request failed"),
                    _ => tracing::info!(%error, "request refused"),
                }
                // A refused command is answered, and counts as handled: a redelivery is not run again
                // (it is answered again, with the refusal kept in the inbox).
                let refusal = Response::from_error(&error);
                let recorded = with_reply(&message, inbox.clone(), &refusal);
                self.record_handled(&recorded, "refused command").await;
                self.reply(&message, Ok(refusal)).await;
                return Outcome::Handled;
            }
            if attempt < attempts {
                self.context.metrics().message(
                    &message.topic,
                    crate::telemetry::MessageOutcome::Retried,
                    None,
                );
                let wait = Duration::from_millis(50 << attempt.min(8));
                tracing::warn!(%error, topic = %message.topic, attempt, retry_in = ?wait, "event handler failed; retrying");
                tokio::time::sleep(wait).await;
            }
            last_error = Some(error);
        }
        let error = last_error.unwrap_or_else(|| Error::broker_message("handler failed"));
        self.park(message, &inbox, error).await
    }

    /// A runtime topic (transaction commands, saga replies, snapshot requests): its handler's result is
    /// the reply.
    async fn dispatch_system(&self, handler: &SystemHandler, message: BrokerMessage) -> Outcome {
        let result = self.context.clone().scope(handler(message.clone())).await;
        match result {
            // The store is down and nobody waits for an answer: have the message delivered again.
            Err(error) if message.reply_topic.is_none() && error.is_unavailable() => {
                tracing::warn!(%error, topic = %message.topic, "runtime topic: store unavailable; will retry");
                Outcome::Failed(error)
            }
            result => {
                self.reply(&message, result).await;
                Outcome::Handled
            }
        }
    }

    /// Whether the inbox already records the message (a redelivery). When the inbox cannot be read the
    /// message is handled: the commit checks the inbox again, atomically.
    async fn already_handled(&self, inbox: &InboxEntry) -> bool {
        match self.context.repository().store().is_processed(inbox).await {
            Ok(processed) => processed,
            Err(error) => {
                tracing::warn!(%error, "could not read the inbox");
                false
            }
        }
    }

    /// The transactions named by the message's `transactions` header (commands only).
    fn transaction_of(
        &self,
        message: &BrokerMessage,
        kind: BrokerKind,
    ) -> Result<Option<TransactionScope>, Error> {
        match message.payload.headers.get(headers::TRANSACTIONS) {
            Some(header) if kind != BrokerKind::Event => TransactionScope::from_header(header)
                .map_err(|error| {
                    Error::bad_request(format!("`{}` header: {error}", headers::TRANSACTIONS))
                }),
            _ => Ok(None),
        }
    }

    /// Runs the handlers once with their writes staged, then stores the writes with the inbox entry,
    /// all or nothing (held under the transaction when the message runs inside one).
    async fn handle_once(
        &self,
        handlers: &[(&'static super::RouteEntry, BrokerKind)],
        message: &BrokerMessage,
        transaction: Option<&TransactionScope>,
        inbox: &InboxEntry,
    ) -> Result<Response, Error> {
        let repository = self.context.repository();
        let (result, writes) = repository
            .staged_in(transaction.cloned(), self.run_handlers(handlers, message))
            .await;
        let response = result?;
        // The reply is kept with the inbox entry, committed with the writes: a command redelivered after
        // a crash that lost the reply is answered again.
        let inbox = with_reply(message, inbox.clone(), &response);
        // Only new roots held in a top-level transaction: nothing a reservation could refuse. What it
        // holds counts, not only this handler's writes (earlier steps, sagas run inside this one): the
        // store answers that with the hold.
        let may_be_one_phase =
            matches!(transaction, Some(t) if t.destination().is_none() && !needs_claims(&writes));
        // The reply carries the positions of the events committed here (read your writes).
        let flush = async {
            match transaction {
                Some(t) if may_be_one_phase => t
                    .hold(repository.store().as_ref(), &writes, Some(&inbox), true)
                    .await
                    .map(|claims| !claims),
                _ => repository
                    .flush(transaction, &writes, Some(&inbox))
                    .await
                    .map(|()| false),
            }
        };
        let (flushed, written) = crate::views::recording(self.context.clone().scope(flush)).await;
        let one_phase = flushed?;
        let response = match one_phase {
            true => response.with_header(headers::ONE_PHASE, self.context.name()),
            false => response,
        };
        Ok(match written.positions.is_empty() {
            true => response,
            false => response.with_header(crate::views::POSITION_HEADER, written.to_string()),
        })
    }

    /// Records the message as handled without writes (a refused command, a parked event).
    async fn record_handled(&self, inbox: &InboxEntry, what: &str) {
        let repository = self.context.repository();
        if let Err(error) = repository.commit_unit(&Vec::new(), Some(inbox)).await {
            tracing::debug!(%error, "could not record the {what} in the inbox");
        }
    }

    /// Parks a message whose handling failed after retries on the dead-letter topic, with the error and
    /// its original topic in its headers, and records it as handled so the partition moves on.
    async fn park(&self, message: BrokerMessage, inbox: &InboxEntry, error: Error) -> Outcome {
        tracing::error!(%error, topic = %message.topic, identifier = %message.identifier, "event handling failed after retries; parking the message on {}", self.dead_letter_topic());
        let mut parked = message.clone();
        parked
            .payload
            .headers
            .insert(headers::ERROR.into(), error.to_string());
        parked
            .payload
            .headers
            .insert(headers::ORIGINAL_TOPIC.into(), message.topic.clone());
        parked.topic = self.dead_letter_topic();
        parked.reply_topic = None;
        if let Err(publish_error) = self.context.broker().publish(parked).await {
            tracing::error!(error = %publish_error, "could not publish to the dead-letter topic");
            return Outcome::Failed(error);
        }
        self.record_handled(inbox, "parked message").await;
        self.context
            .note_dead_letter(&message.topic, message.identifier, &error.to_string());
        Outcome::DeadLettered(error)
    }

    async fn run_handlers(
        &self,
        handlers: &[(&'static super::RouteEntry, BrokerKind)],
        message: &BrokerMessage,
    ) -> Result<Response, Error> {
        let is_event = handlers
            .first()
            .is_some_and(|(_, kind)| *kind == BrokerKind::Event);
        let (principal, caller, headers) = self.caller_of(message, is_event).await?;
        let mut last = Response::empty();
        for (entry, _) in handlers {
            if let Some(auth) = self.context.auth() {
                let requirement = entry.access.requirement(&auth.config().admin_role);
                auth.authorize(principal.as_deref(), &requirement)?;
            }
            let request = Request::from_parts(
                message.payload.content.clone(),
                Default::default(),
                headers.clone(),
                Origin::Broker {
                    topic: message.topic.clone(),
                    identifier: message.identifier,
                    reply_topic: message.reply_topic.clone(),
                },
            )
            .with_principal(principal.clone());
            let run = invoke(&self.chain, entry.handler, request, &self.context);
            let run = match caller.clone() {
                Some(caller) => Either::Left(caller.scope(run)),
                None => Either::Right(run),
            };
            last = match crate::telemetry::trace::enabled() {
                true => {
                    let span = tracing::info_span!(
                        "handler",
                        handler = %format_args!("{}::{}", entry.service, entry.function),
                        trace_id = tracing::field::Empty,
                    );
                    crate::telemetry::trace::run_below(span, run).await?
                }
                false => run.await?,
            };
        }
        Ok(last)
    }

    /// The caller a message carries. When the service checks tokens, its token is verified as of when
    /// the request that started the work was accepted (`auth_at`), and the `user` header becomes the
    /// token's subject; a message without a token has no user.
    async fn caller_of(
        &self,
        message: &BrokerMessage,
        is_event: bool,
    ) -> Result<
        (
            Option<Arc<Principal>>,
            Option<Caller>,
            BTreeMap<String, String>,
        ),
        Error,
    > {
        let mut headers = message.payload.headers.clone();
        // A domain event names who made the change (written by the service that made it).
        let author = message
            .payload
            .content
            .get(crate::repository::USER_KEY)
            .and_then(serde_json::Value::as_str)
            .filter(|_| is_event);
        let Some(auth) = self.context.auth() else {
            if let Some(author) = author {
                headers.insert(headers::USER.into(), author.to_owned());
            }
            return Ok((None, Caller::from_headers(&headers), headers));
        };
        headers.remove(headers::USER);
        if let Some(author) = author {
            headers.insert(headers::USER.into(), author.to_owned());
        }
        let Some(value) = message.payload.headers.get(headers::AUTHORIZATION) else {
            return Ok((None, None, headers));
        };
        let at = accepted_at(&message.payload.headers);
        let principal = auth.verify(bearer(value)?, at).await?;
        headers.insert(headers::USER.into(), principal.subject.clone());
        let caller = Caller {
            token: principal.token.clone(),
            subject: principal.subject.clone(),
            accepted_at: at,
        };
        Ok((Some(Arc::new(principal)), Some(caller), headers))
    }

    /// Handles `subscription` in the background until stopped.
    pub(crate) fn spawn(self, mut subscription: Subscription) -> DispatcherHandle {
        let (stop, mut stopped) = watch::channel(false);
        let this = Arc::new(self);
        let task = tokio::spawn(async move {
            let mut senders = Vec::new();
            let mut workers = Vec::new();
            for _ in 0..this.workers {
                let (sender, mut receiver) = mpsc::unbounded_channel::<Delivery>();
                let this = Arc::clone(&this);
                senders.push(sender);
                workers.push(tokio::spawn(async move {
                    while let Some(delivery) = receiver.recv().await {
                        let (message, first, acknowledge) = delivery.into_parts();
                        match this.dispatch(message, first).await {
                            // Not acknowledged: the broker delivers it again.
                            Outcome::Failed(_) => drop(acknowledge),
                            _ => acknowledge.ack(),
                        }
                    }
                }));
            }
            loop {
                tokio::select! {
                    delivery = subscription.next() => match delivery {
                        // The runtime's own topics (transaction commands, saga replies) need no order
                        // and must not wait behind a backlog of other messages.
                        Some(delivery) if this.system.contains_key(&delivery.message.topic) => {
                            let this = Arc::clone(&this);
                            // Boxed: the task starts small instead of moving the whole handling
                            // future (tens of kilobytes) into its cell at every message.
                            tokio::spawn(async move {
                                let (message, first, acknowledge) = delivery.into_parts();
                                match Box::pin(this.dispatch(message, first)).await {
                                    Outcome::Failed(_) => drop(acknowledge),
                                    _ => acknowledge.ack(),
                                }
                            });
                        }
                        Some(delivery) => {
                            let key = delivery
                                .message
                                .key
                                .clone()
                                .unwrap_or_else(|| delivery.message.identifier.to_string());
                            let _ = senders[stable_hash(&key) as usize % senders.len()].send(delivery);
                        }
                        None => break,
                    },
                    _ = stopped.changed() => break,
                }
            }
            drop(senders);
            for worker in workers {
                let _ = worker.await;
            }
        });
        DispatcherHandle { stop, task }
    }
}
