//! Keeping the route table: a long poll of the registry's versioned listing, the table rebuilt and
//! swapped whole on each change. While the registry is unreachable the gateway routes with the
//! table it has, and asks again with backoff.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::pool::describe;
use super::proxy::HttpClient;
use super::server::State;
use super::table::Table;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The largest listing read (a registry of thousands of services stays far below).
const LISTING_LIMIT: usize = 256 * 1024 * 1024;

/// The registry's address from `discovery.url`: `http://HOST:PORT`.
pub(crate) fn registry_authority(url: &str) -> crate::Result<String> {
    let url = url.trim();
    let authority = url
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .ok_or_else(|| {
            crate::Error::Config(format!(
                "the registry URL `{url}` must be http://HOST:PORT \
                 (discovery.url, MINOS_DISCOVERY_URL)"
            ))
        })?;
    hyper::http::uri::Authority::try_from(authority)
        .map_err(|e| crate::Error::Config(format!("the registry URL `{url}`: {e}")))?;
    Ok(authority.to_owned())
}

/// One call to the listing: at once without `since`, else when the version moves past it (or after
/// `wait`).
async fn listing(
    client: &HttpClient,
    registry: &str,
    since: Option<u64>,
    wait: Duration,
) -> Result<Value, String> {
    let path = match since {
        Some(version) => format!(
            "/microservices?since={version}&wait_ms={}",
            wait.as_millis()
        ),
        None => "/microservices".to_owned(),
    };
    let uri: Uri = format!("http://{registry}{path}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let request = Request::get(uri)
        .header(hyper::header::HOST, registry)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| describe(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), LISTING_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("reading the listing: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "the registry answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice::<Value>(&body).map_err(|e| format!("the listing is not JSON: {e}"))
    };
    // The registry holds the request up to `wait`: allow that and a margin.
    let limit = wait + Duration::from_secs(10);
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("no answer within {limit:?}"))?
}

/// Keeps `state`'s table in step with the registry until aborted; `loaded` fires after the first
/// attempt, whether it succeeded or not.
pub(crate) async fn watch(
    state: Arc<State>,
    client: HttpClient,
    registry: String,
    wait: Duration,
    loaded: oneshot::Sender<()>,
) {
    let mut loaded = Some(loaded);
    let mut backoff = FIRST_BACKOFF;
    // Whether the registry answered last time (`None`: not asked yet), so each outage is logged
    // once.
    let mut reachable: Option<bool> = None;
    loop {
        let current = state.table();
        let begun = Instant::now();
        match listing(&client, &registry, current.version, wait).await {
            Ok(listing) => {
                if reachable == Some(false) {
                    tracing::info!(%registry, "the registry answers again");
                }
                reachable = Some(true);
                state.registry_reachable.store(true, Ordering::Relaxed);
                backoff = FIRST_BACKOFF;
                let version = listing.get("version").and_then(Value::as_u64);
                if version.is_some() && version != current.version {
                    let built = state.set_tables(|previous| {
                        Table::from_listing(&listing, &state.timeouts, previous)
                    });
                    match built {
                        Ok(()) => {
                            let table = state.table();
                            tracing::info!(version = ?table.version, routes = table.len(), "route table loaded");
                        }
                        Err(error) => {
                            tracing::warn!(%registry, %error, "the registry's listing is unusable: keeping the last table")
                        }
                    }
                } else if begun.elapsed() < Duration::from_millis(50) {
                    // An answer that did not wait for a change: don't ask again at once.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if let Some(loaded) = loaded.take() {
                    let _ = loaded.send(());
                }
            }
            Err(error) => {
                state.registry_reachable.store(false, Ordering::Relaxed);
                if reachable != Some(false) {
                    tracing::warn!(%registry, %error, routes = current.len(), "the registry does not answer: routing with the last table; retrying");
                } else {
                    tracing::debug!(%registry, %error, retry_in = ?backoff, "the registry still does not answer");
                }
                reachable = Some(false);
                if let Some(loaded) = loaded.take() {
                    let _ = loaded.send(());
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_url_is_http_host_port() {
        assert_eq!(
            registry_authority("http://127.0.0.1:5567/").unwrap(),
            "127.0.0.1:5567"
        );
        for bad in ["127.0.0.1:5567", "https://x:1", "http://", "http://x:1/api"] {
            assert!(registry_authority(bad).is_err(), "{bad}");
        }
    }
}
