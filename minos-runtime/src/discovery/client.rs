//! Self-registration: a service with a `discovery:` section registers with the registry once it
//! serves, renews its lease with heartbeats, registers again when the registry lost it, and
//! unregisters when it stops. A registry that is down never stops the service: it retries with
//! backoff and says so in the log.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `discovery:` of a service's configuration. An empty `url` (the default) turns registration off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// The registry: `http://HOST:PORT` (`MINOS_DISCOVERY_URL`).
    pub url: String,
    /// The address other processes reach this service at (default: `http.host`, or `127.0.0.1` when
    /// that is `0.0.0.0`).
    pub address: String,
    /// The port other processes reach it at (default: the port HTTP listens on).
    pub port: Option<u16>,
    /// This instance's id among its service's replicas (default: `address:port`).
    pub instance: String,
    /// How often the lease is renewed; keep it well below the registry's `lease_ttl_ms`.
    pub heartbeat_ms: u64,
    /// The token sent to a registry that checks tokens (its write API needs the admin role;
    /// `MINOS_DISCOVERY_TOKEN`). Without it, a service with an `auth.secret` signs one itself.
    pub token: String,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            url: String::new(),
            address: String::new(),
            port: None,
            instance: String::new(),
            heartbeat_ms: 10_000,
            token: String::new(),
        }
    }
}

/// What one instance registers.
#[derive(Clone, Debug)]
pub(crate) struct SelfRegistration {
    registry: String,
    name: String,
    instance: String,
    body: Value,
    heartbeat: Duration,
    token: String,
    auth: Option<crate::auth::Authenticator>,
}

/// The running registration: stop it to unregister.
#[derive(Debug)]
pub(crate) struct RegistrationHandle {
    task: tokio::task::JoinHandle<()>,
    registration: SelfRegistration,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl SelfRegistration {
    /// The registration of service `name` listening on `http_host:bound_port` with `endpoints`; `None`
    /// when `config` has no registry URL.
    pub(crate) fn new(
        config: &DiscoveryConfig,
        name: &str,
        http_host: &str,
        bound_port: u16,
        endpoints: Vec<(String, String, crate::auth::Requirement)>,
        auth: Option<crate::auth::Authenticator>,
    ) -> crate::Result<Option<Self>> {
        if config.url.trim().is_empty() {
            return Ok(None);
        }
        let registry = config
            .url
            .trim()
            .strip_prefix("http://")
            .ok_or_else(|| {
                crate::Error::Config(format!(
                    "discovery.url `{}` must be http://HOST:PORT",
                    config.url
                ))
            })?
            .trim_end_matches('/')
            .to_owned();
        let address = match config.address.trim() {
            "" if http_host == "0.0.0.0" || http_host == "::" => "127.0.0.1".to_owned(),
            "" => http_host.to_owned(),
            address => address.to_owned(),
        };
        let port = config.port.unwrap_or(bound_port);
        let instance = match config.instance.trim() {
            "" => format!("{address}:{port}"),
            instance => instance.to_owned(),
        };
        // `[method, path]`, with the route's requirement third when it has one (the gateway enforces it).
        let endpoints: Vec<Value> = endpoints
            .into_iter()
            .map(|(m, p, requirement)| match requirement.to_json() {
                Some(requirement) => json!([m, p, requirement]),
                None => json!([m, p]),
            })
            .collect();
        Ok(Some(SelfRegistration {
            registry,
            name: name.to_owned(),
            body: json!({"address": address, "port": port, "endpoints": endpoints, "instance": instance}),
            instance,
            heartbeat: Duration::from_millis(config.heartbeat_ms.max(10)),
            token: config.token.trim().to_owned(),
            auth,
        }))
    }

    /// The `Authorization` value for the registry: the configured token, or one signed with the
    /// service's secret for the admin role.
    fn authorization(&self) -> Option<String> {
        if !self.token.is_empty() {
            return Some(format!("Bearer {}", self.token));
        }
        let auth = self.auth.as_ref()?;
        let role = auth.config().admin_role.clone();
        auth.mint_with_secret(&self.name, &[role], Duration::from_secs(300))
            .map(|token| format!("Bearer {token}"))
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<crate::net::HttpAnswer, String> {
        let authorization = self.authorization();
        let headers: Vec<(&str, &str)> = authorization
            .as_deref()
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        crate::net::request_with(&self.registry, method, path, &headers, body, TIMEOUT).await
    }

    async fn register(&self) -> Result<(), String> {
        let path = format!("/microservices/{}", self.name);
        let answer = self
            .call("POST", &path, Some(self.body.to_string()))
            .await?;
        match answer.status {
            200..=299 => Ok(()),
            status => Err(format!("the registry answered {status}: {}", answer.text())),
        }
    }

    /// `Ok(true)` renewed, `Ok(false)` the registry does not know this instance.
    async fn heartbeat(&self) -> Result<bool, String> {
        let path = format!(
            "/microservices/{}/instances/{}/heartbeat",
            self.name, self.instance
        );
        let answer = self.call("PUT", &path, None).await?;
        match answer.status {
            200..=299 => Ok(true),
            404 => Ok(false),
            status => Err(format!("the registry answered {status}: {}", answer.text())),
        }
    }

    /// Registers (retrying with backoff up to 30 s while the registry is down), then heartbeats.
    pub(crate) fn spawn(self) -> RegistrationHandle {
        let registration = self.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                match self.register().await {
                    Ok(()) => {
                        tracing::info!(registry = %self.registry, instance = %self.instance, "registered with the registry");
                        backoff = Duration::from_millis(500);
                    }
                    Err(error) => {
                        tracing::warn!(registry = %self.registry, %error, retry_in = ?backoff, "could not register; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                }
                // Renew the lease until the registry forgets this instance, then register again.
                loop {
                    tokio::time::sleep(self.heartbeat).await;
                    match self.heartbeat().await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(registry = %self.registry, "the registry does not know this instance any more: registering again");
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(registry = %self.registry, %error, "heartbeat failed")
                        }
                    }
                }
            }
        });
        RegistrationHandle { task, registration }
    }
}

impl RegistrationHandle {
    /// Stops heartbeating and unregisters this instance (a registry that does not answer is logged;
    /// its lease will run out).
    pub(crate) async fn stop(self) {
        self.task.abort();
        let r = &self.registration;
        let path = format!("/microservices/{}/instances/{}", r.name, r.instance);
        match r.call("DELETE", &path, None).await {
            Ok(answer) if answer.status < 300 || answer.status == 404 => {
                tracing::info!(registry = %r.registry, "unregistered from the registry")
            }
            Ok(answer) => {
                tracing::warn!(registry = %r.registry, status = answer.status, "could not unregister")
            }
            Err(error) => tracing::warn!(registry = %r.registry, %error, "could not unregister"),
        }
    }
}
