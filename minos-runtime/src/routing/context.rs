//! The service context: what a handler can reach without globals of its own.

use std::future::Future;
use std::sync::Arc;

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
            }),
        }
    }

    /// The context of the current handler.
    pub fn current() -> Result<Context> {
        CURRENT.try_with(Context::clone).map_err(|_| {
            Error::Config("no service context: this runs outside a minos handler".into())
        })
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
