//! Services started inside a test.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::TestClient;
use crate::messaging::{MemoryBroker, SharedBroker};
use crate::{Config, Context, Launcher, Reply, Result, RunningService};

/// A configuration for a test service: in-memory store, in-process broker, `127.0.0.1` on a free port,
/// a short shutdown. Change what the test needs: `let mut config = test_config("foo");
/// config.services = vec!["FooCommands".into()];`.
pub fn test_config(name: &str) -> Config {
    let mut config = Config {
        name: name.into(),
        storage: "memory".into(),
        broker: "memory".into(),
        ..Config::default()
    };
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.http.shutdown_timeout_secs = 1;
    config
}

/// A service running inside a test, with an HTTP client pointed at it.
#[derive(Debug)]
pub struct TestService {
    running: RunningService,
    http: TestClient,
}

impl TestService {
    /// Starts the binary's services as `name` with [`test_config`].
    pub async fn named(name: &str) -> Result<Self> {
        Self::start(test_config(name)).await
    }

    /// Starts a service with `config`.
    pub async fn start(config: Config) -> Result<Self> {
        Self::start_on(config, None).await
    }

    /// Starts several services sharing one in-process broker, in order (commands, events, sagas and
    /// reference resolution flow between them as between processes).
    pub async fn start_together(configs: impl IntoIterator<Item = Config>) -> Result<Vec<Self>> {
        let broker: SharedBroker = Arc::new(MemoryBroker::new());
        let mut started = Vec::new();
        for config in configs {
            started.push(Self::start_on(config, Some(Arc::clone(&broker))).await?);
        }
        Ok(started)
    }

    pub(super) async fn start_on(config: Config, broker: Option<SharedBroker>) -> Result<Self> {
        let mut launcher = Launcher::with_config(config);
        if let Some(broker) = broker {
            launcher = launcher.broker(broker);
        }
        let running = launcher.start().await?;
        let http = TestClient::new(running.addr());
        Ok(TestService { running, http })
    }

    /// The HTTP client of this service.
    pub fn http(&self) -> &TestClient {
        &self.http
    }

    /// The service's context: its repository, broker client and configuration. Run code as one of
    /// its handlers would with `service.context().clone().scope(async { … })`.
    pub fn context(&self) -> &Context {
        self.running.context()
    }

    /// The HTTP address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.running.addr()
    }

    /// Sends a command or query over the broker, as another service would, and waits for the reply.
    pub async fn send(&self, topic: &str, content: Value) -> Result<Reply> {
        self.context().client().send(topic, content).await
    }

    /// Stops the service cleanly (requests in flight finish, the outbox is published).
    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// Waits until `check` answers true, trying every 20 ms for up to `timeout`; panics naming `what`
/// when it never does (for what handlers do in the background: events, sagas, the relay).
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
