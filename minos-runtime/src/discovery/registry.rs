//! The registry: a database of service instances that resolves a request to a healthy instance of the
//! service serving it. Instances register (each replica with an id of its own), heartbeat to keep their
//! lease, and are probed on `GET /system/health`; the most specific route wins, and resolution spreads
//! over the healthy instances.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{Notify, RwLock};

use super::{PathTemplate, Registration, Routes};
use crate::error::{Error, Result};
use crate::store::{now, InstanceRecord, SharedStore};

/// Registry settings (`minos discovery`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// An instance that neither registers again nor heartbeats for this long is dropped.
    pub lease_ttl_ms: u64,
    /// How often each instance's `GET /system/health` is probed; instances failing it are not
    /// resolved to until a probe passes again.
    pub probe_interval_ms: u64,
    /// How long one probe waits.
    pub probe_timeout_ms: u64,
    /// How old the resolution table may be before it is read again from the store (replicas sharing
    /// one database see each other's changes within this time; their own at once).
    pub refresh_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            lease_ttl_ms: 30_000,
            probe_interval_ms: 10_000,
            probe_timeout_ms: 2_000,
            refresh_ms: 500,
        }
    }
}

/// A registry over a store (SQLite by default; PostgreSQL lets several registry processes share one
/// table).
#[derive(Clone, Debug)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: SharedStore,
    config: RegistryConfig,
    /// Signalled after every change made here, for readers waiting on the listing.
    changed: Notify,
    /// Set by changes made here: the next resolution reads the store again.
    stale: AtomicBool,
    table: RwLock<Option<Table>>,
    next: AtomicUsize,
    /// Checks the tokens of writes (register, heartbeat, unregister) when set.
    auth: std::sync::OnceLock<crate::auth::Authenticator>,
    /// Requests answered (`GET /metrics`).
    metrics: crate::telemetry::Metrics,
}

/// The resolution table as last read from the store.
#[derive(Debug)]
struct Table {
    loaded_at: Instant,
    instances: Vec<InstanceRecord>,
    /// Method and template → the indexes of the instances serving it.
    routes: Routes<usize>,
}

impl Registry {
    /// A registry keeping its instances in `store`.
    pub fn new(store: SharedStore, config: RegistryConfig) -> Self {
        Registry {
            inner: Arc::new(Inner {
                store,
                config,
                changed: Notify::new(),
                stale: AtomicBool::new(true),
                table: RwLock::new(None),
                next: AtomicUsize::new(0),
                auth: std::sync::OnceLock::new(),
                metrics: crate::telemetry::Metrics::http_only(),
            }),
        }
    }

    /// Records its requests for `GET /metrics` (on by default), or not (`telemetry.metrics: false`:
    /// `/metrics` answers 404).
    pub fn with_metrics(self, enabled: bool) -> Self {
        self.inner.metrics.set_enabled(enabled);
        self
    }

    /// Its requests, by route template and status.
    pub fn metrics(&self) -> &crate::telemetry::Metrics {
        &self.inner.metrics
    }

    /// Makes writes (register, heartbeat, unregister) need a token with the admin role of `auth`;
    /// reads stay open (a gateway follows the listing).
    pub fn with_auth(self, auth: Option<crate::auth::Authenticator>) -> Self {
        if let Some(auth) = auth {
            let _ = self.inner.auth.set(auth);
        }
        self
    }

    /// The token verifier of writes, when set.
    pub fn auth(&self) -> Option<&crate::auth::Authenticator> {
        self.inner.auth.get()
    }

    fn changed(&self) {
        self.inner.stale.store(true, Ordering::SeqCst);
        self.inner.changed.notify_waiters();
    }

    /// Registers (or registers again) an instance of `name` from a body shaped like the original
    /// registry's (`{"address", "port", "endpoints", "status"?}`), plus an optional `"instance"` id
    /// (default `address:port`, so each replica is its own instance). Answers the instance as stored.
    pub async fn register(&self, name: &str, body: &Value) -> Result<Value> {
        let registration = Registration::from_json(name, body)
            .map_err(|error| Error::bad_request(error.to_string()))?;
        let instance = match body.get("instance") {
            None | Some(Value::Null) => format!("{}:{}", registration.address, registration.port),
            Some(Value::String(id)) if !id.trim().is_empty() => id.trim().to_owned(),
            Some(_) => return Err(Error::bad_request("`instance` must be a non-empty string")),
        };
        let at = now();
        let record = InstanceRecord {
            service: registration.name.clone(),
            instance,
            address: registration.address.clone(),
            port: registration.port,
            endpoints: registration.to_json()["endpoints"].clone(),
            status: registration.status,
            healthy: true,
            registered_at: at,
            last_seen: at,
        };
        let version = self.inner.store.register_instance(&record).await?;
        self.changed();
        tracing::info!(service = %record.service, instance = %record.instance, address = %record.address, port = record.port, "registered");
        let mut answer = instance_json(&record);
        answer["version"] = json!(version);
        Ok(answer)
    }

    /// Unregisters every instance of `name`, or one. 404 when there was none.
    pub async fn unregister(&self, name: &str, instance: Option<&str>) -> Result<Value> {
        let removed = self.inner.store.remove_instances(name, instance).await?;
        if removed == 0 {
            return Err(Error::not_found(match instance {
                Some(id) => format!("service `{name}` has no instance `{id}`"),
                None => format!("no service `{name}` is registered"),
            }));
        }
        self.changed();
        tracing::info!(service = %name, instance = instance.unwrap_or("*"), removed, "unregistered");
        Ok(json!({"name": name, "removed": removed}))
    }

    /// Renews the lease of one instance. 404 when it is not registered (its lease ran out, or the
    /// registry lost it): the instance registers again.
    pub async fn heartbeat(&self, name: &str, instance: &str) -> Result<Value> {
        if !self
            .inner
            .store
            .touch_instance(name, instance, now())
            .await?
        {
            return Err(Error::not_found(format!(
                "service `{name}` has no instance `{instance}`: register again"
            )));
        }
        Ok(json!({"name": name, "instance": instance}))
    }

    /// The instance to send `verb path` to: among the healthy instances serving the most specific
    /// matching route, the next in turn. 404 when none serves it.
    pub async fn resolve(&self, verb: &str, path: &str) -> Result<Value> {
        if path
            .split('/')
            .any(|s| s.starts_with('{') && s.ends_with('}'))
        {
            return Err(Error::bad_request(
                "the path to resolve is a request's path: it cannot have `{...}` segments",
            ));
        }
        self.refresh().await?;
        let table = self.inner.table.read().await;
        let Some(table) = table.as_ref() else {
            return Err(Error::not_found(format!("no service serves {verb} {path}")));
        };
        let candidates: Vec<&InstanceRecord> = table
            .routes
            .resolve(verb, path)
            .into_iter()
            .map(|&i| &table.instances[i])
            .filter(|r| r.status && r.healthy)
            .collect();
        if candidates.is_empty() {
            return Err(Error::not_found(format!(
                "no healthy service serves {verb} {path}"
            )));
        }
        let turn = self.inner.next.fetch_add(1, Ordering::Relaxed) % candidates.len();
        Ok(instance_json(candidates[turn]))
    }

    /// Every instance by service, with the registry's version: `{"version", "services": [{"name",
    /// "instances": [...]}]}`. With `since` equal to the current version, waits up to `wait` for a
    /// change first, so a cache learns of changes without asking on every request.
    pub async fn listing(&self, since: Option<u64>, wait: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (version, instances) = self.inner.store.registry().await?;
            let unchanged = since == Some(version);
            if !unchanged || tokio::time::Instant::now() >= deadline {
                return Ok(listing_json(version, &instances));
            }
            // Woken by a change here, or after a moment for changes made by other replicas.
            let pause = Duration::from_millis(self.inner.config.refresh_ms.max(50));
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + pause),
                self.inner.changed.notified(),
            )
            .await;
        }
    }

    /// Every instance as the original registry's `GET /endpoints` lists services.
    pub async fn endpoints(&self) -> Result<Value> {
        let (_, instances) = self.inner.store.registry().await?;
        Ok(Value::Array(instances.iter().map(instance_json).collect()))
    }

    /// Reads the table again when a change was made here or it is older than `refresh_ms`.
    async fn refresh(&self) -> Result<()> {
        let max_age = Duration::from_millis(self.inner.config.refresh_ms);
        {
            let table = self.inner.table.read().await;
            let fresh = table
                .as_ref()
                .is_some_and(|t| t.loaded_at.elapsed() < max_age);
            if fresh && !self.inner.stale.load(Ordering::SeqCst) {
                return Ok(());
            }
        }
        self.inner.stale.store(false, Ordering::SeqCst);
        let (_, instances) = self.inner.store.registry().await?;
        let mut routes = Routes::new();
        for (index, instance) in instances.iter().enumerate() {
            for endpoint in instance.endpoints.as_array().into_iter().flatten() {
                let (Some(method), Some(path)) = (
                    endpoint.get(0).and_then(Value::as_str),
                    endpoint.get(1).and_then(Value::as_str),
                ) else {
                    continue;
                };
                if let Ok(template) = PathTemplate::parse(path) {
                    routes.add(method, template, index);
                }
            }
        }
        *self.inner.table.write().await = Some(Table {
            loaded_at: Instant::now(),
            instances,
            routes,
        });
        Ok(())
    }

    /// Drops instances whose lease ran out. Returns how many.
    pub async fn expire(&self) -> Result<usize> {
        let ttl = chrono::Duration::milliseconds(self.inner.config.lease_ttl_ms as i64);
        let expired = self.inner.store.expire_instances(now() - ttl).await?;
        for record in &expired {
            tracing::warn!(service = %record.service, instance = %record.instance, "lease ran out: dropped");
        }
        if !expired.is_empty() {
            self.changed();
        }
        Ok(expired.len())
    }

    /// Probes every instance's `GET /system/health` once, concurrently, and records the verdicts.
    pub async fn probe(&self) -> Result<()> {
        let (_, instances) = self.inner.store.registry().await?;
        let timeout = Duration::from_millis(self.inner.config.probe_timeout_ms);
        let probes = instances.iter().map(|record| async move {
            let authority = format!("{}:{}", record.address, record.port);
            let healthy =
                match crate::net::request(&authority, "GET", "/system/health", None, timeout).await
                {
                    Ok(answer) => answer.status < 400,
                    Err(error) => {
                        tracing::debug!(%error, "health probe failed");
                        false
                    }
                };
            (record, healthy)
        });
        for (record, healthy) in futures_util::future::join_all(probes).await {
            if record.healthy != healthy {
                tracing::warn!(service = %record.service, instance = %record.instance, healthy, "health changed");
                if self
                    .inner
                    .store
                    .set_instance_health(&record.service, &record.instance, healthy)
                    .await?
                {
                    self.changed();
                }
            }
        }
        Ok(())
    }

    /// Runs lease expiry (every third of the TTL) and health probes (every `probe_interval_ms`) until
    /// aborted.
    pub fn spawn_jobs(&self) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        tokio::spawn(async move {
            let config = &registry.inner.config;
            // The first round after one period: instances just registered are healthy until probed.
            let every = |ms: u64| {
                let period = Duration::from_millis(ms.max(10));
                tokio::time::interval_at(tokio::time::Instant::now() + period, period)
            };
            let mut expiry = every(config.lease_ttl_ms / 3);
            let mut probes = every(config.probe_interval_ms);
            expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = expiry.tick() => {
                        if let Err(error) = registry.expire().await {
                            tracing::warn!(%error, "could not expire leases");
                        }
                    }
                    _ = probes.tick() => {
                        if let Err(error) = registry.probe().await {
                            tracing::warn!(%error, "could not probe instances");
                        }
                    }
                }
            }
        })
    }

    /// The store's health, for the registry's own `GET /system/health`.
    pub(crate) fn store(&self) -> &SharedStore {
        &self.inner.store
    }
}

/// An instance as the original registry answers a service: `{"name", "address", "port", "endpoints",
/// "status"}`, plus its `instance` id, `healthy` and `last_seen`.
fn instance_json(record: &InstanceRecord) -> Value {
    json!({
        "name": record.service,
        "instance": record.instance,
        "address": record.address,
        "port": record.port,
        "endpoints": record.endpoints,
        "status": record.status && record.healthy,
        "healthy": record.healthy,
        "last_seen": crate::store::format_time(record.last_seen),
    })
}

fn listing_json(version: u64, instances: &[InstanceRecord]) -> Value {
    let mut services: Vec<Value> = Vec::new();
    for record in instances {
        let is_new = services
            .last()
            .is_none_or(|s| s["name"] != json!(record.service));
        if is_new {
            services.push(json!({"name": record.service, "instances": []}));
        }
        if let Some(Value::Array(list)) = services.last_mut().map(|s| &mut s["instances"]) {
            list.push(instance_json(record));
        }
    }
    json!({"version": version, "services": services})
}
