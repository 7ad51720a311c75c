//! The service context: what a handler can reach without globals of its own.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::messaging::{BrokerClient, SharedBroker};
use crate::repository::Repository;

tokio::task_local! {
    static CURRENT: Context;
}

/// The running service's components: its name, repository, broker and configuration.
#[derive(Clone, Debug)]
pub struct Context {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    repository: Repository,
    broker: SharedBroker,
    client: BrokerClient,
    config: Value,
    /// State the runtime keeps once per service, by type (e.g. the saga manager's locks).
    shared: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Context {
    /// A context for the service `name`.
    pub fn new(
        name: impl Into<String>,
        repository: Repository,
        broker: SharedBroker,
        config: Value,
    ) -> Self {
        let name = name.into();
        let client = BrokerClient::new(Arc::clone(&broker), &name);
        Context {
            inner: Arc::new(Inner {
                name,
                repository,
                broker,
                client,
                config,
                shared: Mutex::default(),
            }),
        }
    }

    /// The context of the current handler.
    pub fn current() -> Result<Context> {
        CURRENT
            .try_with(Context::clone)
            .map_err(|_| Error::NoContext)
    }

    /// Runs `future` with this context, and its repository, as the current ones.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        let repository = self.inner.repository.clone();
        CURRENT.scope(self, repository.scope(future)).await
    }

    /// The service's name (its consumer group on the broker).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The service's repository.
    pub fn repository(&self) -> &Repository {
        &self.inner.repository
    }

    /// The broker.
    pub fn broker(&self) -> &SharedBroker {
        &self.inner.broker
    }

    /// The request/reply client of this service.
    pub fn client(&self) -> &BrokerClient {
        &self.inner.client
    }

    /// The service's one `T`, made on first use: state the runtime keeps per service rather than per
    /// process, so that several services in one process never share it.
    pub(crate) fn shared<T: Any + Default + Send + Sync>(&self) -> Arc<T> {
        let mut shared = self
            .inner
            .shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = shared
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()));
        // The entry under `T`'s id is always a `T`.
        Arc::clone(entry)
            .downcast::<T>()
            .unwrap_or_else(|_| Arc::new(T::default()))
    }

    /// The effective configuration, as JSON.
    pub fn config(&self) -> &Value {
        &self.inner.config
    }
}

/// Marks a type declared with `#[command_service]` or `#[query_service]`. Generated.
pub trait Service: Send + Sync + 'static {}

/// What a service's handlers reach through `self`: `self.broker().send("GetBar", json!({..}))`.
pub trait ServiceExt: Service {
    /// The current service context.
    fn context(&self) -> Result<Context> {
        Context::current()
    }

    /// The request/reply client of this service.
    fn broker(&self) -> Result<BrokerClient> {
        Ok(Context::current()?.client().clone())
    }

    /// The repository of this service.
    fn repository(&self) -> Result<Repository> {
        Ok(Context::current()?.repository().clone())
    }
}

impl<T: Service> ServiceExt for T {}
