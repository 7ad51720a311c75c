//! Given/when/then: a service's behaviour stated as what happened before, what arrives, and what it
//! stored, published and answered.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{test_config, TestService};
use crate::messaging::{Broker, BrokerMessage, MemoryBroker, SharedBroker, Subscription, Tracked};
use crate::store::EventFilter;
use crate::views::{Consistency, POSITION_HEADER};
use crate::{Config, Error, Event, Result, Root, RootEntity};

/// How long a `then_…` check waits for what handlers do in the background (the outbox relay, event
/// handlers, sagas) before it fails.
const SETTLE: Duration = Duration::from_secs(5);

/// One service on the memory store and an in-process broker that records every message published on
/// it, for given/when/then tests:
///
/// ```no_run
/// use minos::prelude::*;
/// use minos::testing::Scenario;
///
/// # #[root_entity] pub struct Foo { pub bar: String }
/// # async fn example() -> minos::Result<()> {
/// let foo = Scenario::named("foo").await?;
/// // Given: what happened before (roots created, or events as another writer stored them).
/// let existing = foo.given(Foo { bar: "old".into() }).await?;
/// // When: a request, a command or query over the broker, or an event arrives.
/// let created = foo.when_post("/foos", json!({"bar": "new"})).await;
/// // Then: the answer, the events stored and the domain messages published because of it.
/// created.then_status(200);
/// created.then_events(&["FooCreated"]).await;
/// created.then_published(&["FooCreated"]).await;
///
/// let refused = foo.when_post("/foos", json!({"bar": ""})).await;
/// refused.then_error(400, "must not be empty");
/// refused.then_no_events().await;
/// # let _ = existing;
/// # Ok(())
/// # }
/// ```
///
/// Events are named as their domain messages are (`FooCreated`, `FooUpdated`, `FooDeleted`); the
/// published messages by topic, with `FooUpdated.bar` for each changed field. The `then_…` checks
/// wait up to 5 s for the background (the outbox relay publishing, event handlers and sagas
/// storing their own events), then fail showing what did happen.
#[derive(Debug)]
pub struct Scenario {
    service: TestService,
    broker: Arc<RecordingBroker>,
    /// Where the events stored so far (givens, answers) stand: sent with every request, so queries
    /// of views wait until the views have applied them.
    written: Mutex<Consistency>,
    /// The id of the last event seen in the store: the next `when` reads on from it, not from the
    /// start.
    last_event: std::sync::atomic::AtomicI64,
}

impl Scenario {
    /// The binary's services as `name`, on [`test_config`]: memory store, in-process broker.
    pub async fn named(name: &str) -> Result<Self> {
        Self::start(test_config(name)).await
    }

    /// The binary's services with `config` (its broker is replaced by the recording in-process
    /// one; its store is kept, so a scenario can run on SQLite or PostgreSQL too).
    pub async fn start(config: Config) -> Result<Self> {
        let broker = Arc::new(RecordingBroker::default());
        let shared: SharedBroker = broker.clone();
        let service = TestService::start_on(config, Some(shared)).await?;
        Ok(Scenario {
            service,
            broker,
            written: Mutex::default(),
            last_event: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// The running service: its HTTP client, context and broker client.
    pub fn service(&self) -> &TestService {
        &self.service
    }

    /// Given: a root that already exists (created with the usual events and domain messages, which
    /// the service's own handlers see). Waits until its messages are published.
    pub async fn given<T: RootEntity>(&self, value: T) -> Result<Root<T>> {
        let repository = self.service.context().repository().clone();
        let root = repository.create(value).await?;
        let filter = EventFilter {
            uuid: Some(root.uuid()),
            ..EventFilter::default()
        };
        for stored in repository.store().events(&filter).await? {
            self.wrote(&stored.event.name, stored.position());
        }
        self.settle().await?;
        Ok(root)
    }

    /// Given: events already stored, as a writer of the root would have stored them (each must
    /// follow the root's previous version: version 1 creates). Their domain messages are published
    /// as the relay would; the method waits until they are.
    pub async fn given_events(&self, events: impl IntoIterator<Item = Event>) -> Result<()> {
        let store = self.service.context().repository().store().clone();
        for event in events {
            let messages = event.domain_messages()?;
            let stored = store.append(&event, &messages).await?;
            self.wrote(&stored.event.name, stored.position());
        }
        self.settle().await
    }

    /// When: an HTTP request (`"POST"`, `"/foos"`, a JSON body or none).
    pub async fn when_request(&self, method: &str, path: &str, body: Option<Value>) -> Outcome<'_> {
        let mark = self.mark().await;
        let written = self.lock_written().to_string();
        let mut client = self.service.http().clone();
        if !written.is_empty() {
            client = client.with_header(POSITION_HEADER, written);
        }
        let response = client
            .request(method, path, body.map(|b| b.to_string()))
            .await
            .unwrap_or_else(|e| panic!("when {method} {path}: the request failed: {e}"));
        if let Some(Ok(positions)) = response.header(POSITION_HEADER).map(Consistency::parse) {
            let mut written = self.lock_written();
            for (name, position) in positions.positions {
                written.record(&name, position);
            }
        }
        let body = match response.body.trim() {
            "" => Value::Null,
            text => serde_json::from_str(text).unwrap_or(Value::String(response.body)),
        };
        self.outcome(format!("{method} {path}"), response.status, body, mark)
    }

    /// When: `GET path`.
    pub async fn when_get(&self, path: &str) -> Outcome<'_> {
        self.when_request("GET", path, None).await
    }

    /// When: `POST path` with a JSON body.
    pub async fn when_post(&self, path: &str, body: Value) -> Outcome<'_> {
        self.when_request("POST", path, Some(body)).await
    }

    /// When: `PUT path` with a JSON body.
    pub async fn when_put(&self, path: &str, body: Value) -> Outcome<'_> {
        self.when_request("PUT", path, Some(body)).await
    }

    /// When: `PATCH path` with a JSON body.
    pub async fn when_patch(&self, path: &str, body: Value) -> Outcome<'_> {
        self.when_request("PATCH", path, Some(body)).await
    }

    /// When: `DELETE path`.
    pub async fn when_delete(&self, path: &str) -> Outcome<'_> {
        self.when_request("DELETE", path, None).await
    }

    /// When: a command or query arrives over the broker (as another service sends it); the outcome's
    /// status and body are its reply's.
    pub async fn when_command(&self, topic: &str, content: Value) -> Outcome<'_> {
        let mark = self.mark().await;
        let reply = self
            .service
            .send(topic, content)
            .await
            .unwrap_or_else(|e| panic!("when {topic}: no reply: {e}"));
        self.outcome(topic.to_owned(), reply.status, reply.content, mark)
    }

    /// When: an event arrives, as another service's relay would publish it (its domain messages:
    /// `FooCreated`, or `FooUpdated` and one `FooUpdated.field` per changed field). The outcome has
    /// no reply (status 200, body null); check what the handlers did with `then_events`,
    /// `then_published` or the service's own queries.
    pub async fn when_event(&self, event: &Event) -> Outcome<'_> {
        let mark = self.mark().await;
        let messages = event
            .domain_messages()
            .unwrap_or_else(|e| panic!("when {}: {e}", event.name));
        let name = messages
            .first()
            .map_or_else(String::new, |m| m.topic.clone());
        for message in messages {
            let mut published = BrokerMessage::new(message.topic, message.content);
            published.identifier = message.identifier;
            published.key = Some(message.key);
            published.strategy = crate::messaging::Strategy::Multicast;
            self.service
                .context()
                .broker()
                .publish(published)
                .await
                .unwrap_or_else(|e| panic!("when {name}: publishing failed: {e}"));
        }
        self.outcome(name, 200, Value::Null, mark)
    }

    /// Stops the service.
    pub async fn stop(self) {
        self.service.stop().await;
    }

    fn lock_written(&self) -> MutexGuard<'_, Consistency> {
        self.written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wrote(&self, name: &str, position: crate::store::Position) {
        self.lock_written().record(name, position);
    }

    async fn mark(&self) -> Mark {
        Mark {
            event: self.last_event_id().await,
            message: self.broker.len(),
        }
    }

    /// The id of the newest event in the store, read on from the last one seen.
    async fn last_event_id(&self) -> i64 {
        use std::sync::atomic::Ordering::Relaxed;
        let store = self.service.context().repository().store().clone();
        let mut after = self.last_event.load(Relaxed);
        loop {
            let filter = EventFilter {
                after_id: Some(after),
                limit: Some(1_000),
                ..EventFilter::default()
            };
            let events = store
                .events(&filter)
                .await
                .unwrap_or_else(|e| panic!("reading the event store: {e}"));
            match events.last() {
                Some(last) => after = last.id,
                None => {
                    self.last_event.store(after, Relaxed);
                    return after;
                }
            }
        }
    }

    fn outcome(&self, when: String, status: u16, body: Value, mark: Mark) -> Outcome<'_> {
        Outcome {
            scenario: self,
            when,
            status,
            body,
            mark,
        }
    }

    /// Waits until the outbox is empty (what the givens wrote is published).
    async fn settle(&self) -> Result<()> {
        let store = self.service.context().repository().store().clone();
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let (waiting, _) = store.backlog().await?;
            if waiting == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::with_status(
                    500,
                    format!("{waiting} domain messages still unpublished after {SETTLE:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Mark {
    event: i64,
    message: usize,
}

/// What one `when_…` led to: the answer at once, the events stored and the messages published as
/// they happen.
#[derive(Debug)]
pub struct Outcome<'a> {
    scenario: &'a Scenario,
    when: String,
    status: u16,
    body: Value,
    mark: Mark,
}

impl Outcome<'_> {
    /// The status of the answer: the HTTP status, or the reply's (200, 400, 500).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The answer's JSON body (null when there was none, as for an event; a string value when it was
    /// not JSON).
    pub fn body(&self) -> &Value {
        &self.body
    }

    /// Then: the answer has this status.
    #[track_caller]
    pub fn then_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "when {}: expected status {status}, got {}: {}",
            self.when, self.status, self.body
        );
        self
    }

    /// Then: the answer is a success with exactly this body.
    #[track_caller]
    pub fn then_reply(&self, body: Value) -> &Self {
        assert!(
            self.status < 400,
            "when {}: expected a success, got {}: {}",
            self.when,
            self.status,
            self.body
        );
        assert_eq!(self.body, body, "when {}: the reply", self.when);
        self
    }

    /// Then: the answer is an error with this status whose message contains `says`.
    #[track_caller]
    pub fn then_error(&self, status: u16, says: &str) -> &Self {
        self.then_status(status);
        let message = self.body["error"]
            .as_str()
            .map_or_else(|| self.body.to_string(), str::to_owned);
        assert!(
            message.contains(says),
            "when {}: expected an error saying `{says}`, got: {message}",
            self.when
        );
        self
    }

    /// The events stored since the `when` (by the handler and by what reacted to it), oldest first.
    pub async fn events(&self) -> Vec<Event> {
        let store = self.scenario.service.context().repository().store().clone();
        let filter = EventFilter {
            after_id: Some(self.mark.event),
            ..EventFilter::default()
        };
        store
            .events(&filter)
            .await
            .unwrap_or_else(|e| panic!("reading the event store: {e}"))
            .into_iter()
            .map(|stored| stored.event)
            .collect()
    }

    /// Then: exactly these events were stored since the `when`, in this order (`FooCreated`,
    /// `FooUpdated`, `FooDeleted`), waiting for the background up to 5 s. Returns them, to check
    /// their fields with [`Event::field`].
    pub async fn then_events(&self, expected: &[&str]) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let events = self.events().await;
            let names: Vec<String> = events.iter().map(event_name).collect();
            if names == expected {
                return events;
            }
            if tokio::time::Instant::now() >= deadline || names.len() > expected.len() {
                panic!(
                    "when {}: expected the events {expected:?} to be stored, found {names:?}",
                    self.when
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Then: nothing was stored because of the `when` (checked after the outbox has drained).
    pub async fn then_no_events(&self) {
        // Let anything already on its way land before looking.
        let _ = self.scenario.settle().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let names: Vec<String> = self.events().await.iter().map(event_name).collect();
        assert!(
            names.is_empty(),
            "when {}: expected no events, found {names:?}",
            self.when
        );
    }

    /// Every message published on the broker since the `when`: domain events, commands sent to other
    /// services, replies.
    pub fn messages(&self) -> Vec<BrokerMessage> {
        self.scenario.broker.since(self.mark.message)
    }

    /// Then: exactly these domain messages (events: `FooCreated`, `FooUpdated`, `FooUpdated.bar`,
    /// `FooDeleted`) were published since the `when`, in this order, waiting for the relay up to 5 s.
    /// Returns them.
    pub async fn then_published(&self, expected: &[&str]) -> Vec<BrokerMessage> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let published: Vec<BrokerMessage> = self
                .messages()
                .into_iter()
                .filter(|m| serde_json::from_value::<Event>(m.payload.content.clone()).is_ok())
                .collect();
            let topics: Vec<&str> = published.iter().map(|m| m.topic.as_str()).collect();
            if topics == expected {
                return published;
            }
            if tokio::time::Instant::now() >= deadline || topics.len() > expected.len() {
                panic!(
                    "when {}: expected the domain messages {expected:?} to be published, found {topics:?}",
                    self.when
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Then: a message was published on `topic` since the `when` (a command another service
    /// answers, a saga step), waiting up to 5 s. Returns the first.
    pub async fn then_sent(&self, topic: &str) -> BrokerMessage {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let messages = self.messages();
            if let Some(found) = messages.iter().find(|m| m.topic == topic) {
                return found.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                let topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
                panic!(
                    "when {}: expected a message on `{topic}`, found only {topics:?}",
                    self.when
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `FooCreated` for a creation of `Foo`, as its domain message is named.
fn event_name(event: &Event) -> String {
    let action = match event.action {
        crate::Action::Create => "Created",
        crate::Action::Update => "Updated",
        crate::Action::Delete => "Deleted",
    };
    format!("{}{action}", event.name)
}

/// The in-process broker, keeping a copy of everything published.
#[derive(Debug, Default)]
struct RecordingBroker {
    inner: MemoryBroker,
    published: Mutex<Vec<BrokerMessage>>,
}

impl RecordingBroker {
    fn log(&self) -> MutexGuard<'_, Vec<BrokerMessage>> {
        self.published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn len(&self) -> usize {
        self.log().len()
    }

    fn since(&self, mark: usize) -> Vec<BrokerMessage> {
        self.log()
            .get(mark..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }
}

#[async_trait]
impl Broker for RecordingBroker {
    async fn publish(&self, message: BrokerMessage) -> Result<()> {
        self.log().push(message.clone());
        self.inner.publish(message).await
    }

    async fn publish_relayed(
        &self,
        messages: Vec<BrokerMessage>,
        fresh: usize,
        tracked: Option<Vec<Tracked>>,
    ) -> Vec<Result<()>> {
        self.log().extend(messages.iter().cloned());
        self.inner.publish_relayed(messages, fresh, tracked).await
    }

    fn holds_until_handled(&self) -> bool {
        self.inner.holds_until_handled()
    }

    async fn ready_for_more(&self) {
        self.inner.ready_for_more().await
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Subscription> {
        self.inner.subscribe(group, topics).await
    }

    async fn listen(&self, topic: &str) -> Result<Subscription> {
        self.inner.listen(topic).await
    }

    async fn history(&self, topic: &str) -> Result<Option<Vec<BrokerMessage>>> {
        self.inner.history(topic).await
    }
}
